"""The network layer: Dense, Dropout, Sequential, make_mlp."""
import pickle
import tracemalloc

import numpy as np
import pytest
from _helpers import one_blas_thread  # noqa: F401  (autouse fixture)

import fastbp
from fastbp import kernels
from fastbp.kernels import _reference
from fastbp.training import LayerwiseTrainer, make_optimizer, TrainConfig
from fastbp.nn import Dense, Dropout, Sequential, make_mlp

ACTIVATIONS = sorted(kernels.ACTIVATIONS)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_forward_backward_match_formulas(backend, activation, dtype):
    rng = np.random.default_rng(1)
    layer = Dense(4, 3, activation, dtype=dtype, rng=rng)
    X = rng.standard_normal((5, 4)).astype(dtype)
    A = layer.forward(X, training=True)
    Z = X.astype(np.float64) @ layer.W + layer.b
    expected = _reference.activation(activation, Z, np.empty_like(Z), layer._alpha())
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(A, expected, rtol=tol, atol=tol)
    assert A.dtype == dtype

    dA = rng.standard_normal((5, 3)).astype(dtype)
    dA_before = dA.copy()
    dX = layer.backward(dA)
    dZ = _reference.activation_grad(activation, Z, expected, dA.astype(np.float64),
                                    np.empty_like(Z), layer._alpha())
    np.testing.assert_allclose(layer.dW, X.T.astype(np.float64) @ dZ, rtol=10 * tol, atol=10 * tol)
    np.testing.assert_allclose(layer.db, dZ.sum(axis=0), rtol=10 * tol, atol=10 * tol)
    np.testing.assert_allclose(dX, dZ @ layer.W.T.astype(np.float64), rtol=10 * tol, atol=10 * tol)
    np.testing.assert_array_equal(dA, dA_before)  # dA is not overwritten
    assert layer.backward(dA, need_dX=False) is None


def test_dense_shapes_alpha_and_init():
    layer = Dense(6, 4, "leaky_relu", alpha=0.2, rng=0)
    assert layer.W.shape == (6, 4) and layer.b.shape == (4,)
    assert layer.W.flags.c_contiguous and layer.W.dtype == np.float32
    assert layer.alpha == 0.2
    assert Dense(6, 4, "relu").alpha is None
    assert Dense(6, 4, "logistic").activation == "sigmoid"  # scikit-learn's name
    bound = np.sqrt(6 / 10)
    assert np.all(np.abs(layer.W) <= bound) and np.abs(layer.W).max() > bound / 2
    assert np.all(np.abs(Dense(6, 4, "sigmoid", rng=0).W) <= np.sqrt(2 / 10))
    np.testing.assert_array_equal(Dense(6, 4, rng=3).W, Dense(6, 4, rng=3).W)
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(2, 2, "swish")
    with pytest.raises(ValueError):
        Dense(0, 2)
    with pytest.raises(TypeError):
        Dense(2, 2, dtype=np.int32)
    with pytest.raises(ValueError, match="columns"):
        layer.forward(np.zeros((3, 5)))
    with pytest.raises(RuntimeError):
        Dense(2, 2).backward(np.zeros((1, 2)))


def test_buffers_are_reused_per_batch_size():
    layer = Dense(3, 2, "relu", rng=0)
    X = np.ones((4, 3), np.float32)
    first = layer.forward(X)
    assert layer.forward(X * 2) is first            # same buffer, new values
    assert layer.forward(np.ones((5, 3), np.float32)) is not first
    dX = layer.backward(np.ones((5, 2), np.float32))
    assert layer.backward(np.ones((5, 2), np.float32)) is dX


def test_dropout_masks_scaling_and_predict_identity():
    rate = 0.25
    drop = Dropout(rate, rng=7)
    X = np.ones((400, 50), np.float32)
    assert drop.forward(X, training=False) is X
    out = drop.forward(X, training=True)
    u = np.random.default_rng(7).random(dtype=np.float32, size=X.shape)  # the documented draw
    np.testing.assert_array_equal(out > 0, u >= np.float32(rate))
    np.testing.assert_allclose(out[out > 0], 1 / (1 - rate), rtol=1e-6)
    assert abs((out == 0).mean() - rate) < 0.02
    dX = drop.backward(np.full_like(X, 2.0))
    np.testing.assert_allclose(dX, 2 * out)  # the same mask, the same scale
    with pytest.raises(ValueError):
        Dropout(1.0)


def test_sequential_params_grads_and_chaining():
    net = make_mlp(5, (7, 6), 3, activation="tanh", dropout=0.1, rng=0)
    kinds = [type(layer).__name__ for layer in net.layers]
    assert kinds == ["Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert net.layers[-1].activation == "identity"
    params, grads = net.params(), net.grads()
    assert [p.shape for p in params] == [(5, 7), (7,), (7, 6), (6,), (6, 3), (3,)]
    assert all(p is q for p, q in zip(params, net.params()))   # the same arrays every call
    assert [g.shape for g in grads] == [p.shape for p in params]
    with pytest.raises(ValueError, match="do not chain"):
        Sequential([Dense(3, 4), Dense(5, 2)])
    with pytest.raises(TypeError):
        Sequential([Dense(3, 4), Dense(4, 2, dtype=np.float64)])


def test_sequential_predict_equals_forward_and_caches_nothing():
    net = make_mlp(4, (8,), 2, dropout=0.5, rng=1)
    X = np.random.default_rng(0).standard_normal((6, 4))
    predicted = net.predict(X)
    assert not any(layer._cache._by_size for layer in net.layers)
    assert predicted.dtype == np.float32
    np.testing.assert_array_equal(predicted, net.forward(X, training=False))
    assert net.predict(X) is not net.predict(X)  # fresh arrays


def test_sequential_backward_returns_input_gradient():
    net = make_mlp(3, (4,), 2, activation="tanh", dtype=np.float64, rng=2)
    X = np.random.default_rng(0).standard_normal((5, 3))
    out = net.forward(X, training=True)
    assert net.backward(np.ones_like(out)) is None
    dX = net.backward(np.ones_like(out), need_dX=True)
    eps = 1e-6
    X2 = X.copy()
    X2[1, 2] += eps
    numeric = (net.predict(X2).sum() - net.predict(X).sum()) / eps
    assert dX[1, 2] == pytest.approx(numeric, rel=1e-4)


def test_get_set_weights_and_pickle():
    net = make_mlp(3, (4,), 2, dropout=0.2, rng=0)
    X = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    net.forward(X, training=True)  # fill the caches
    clone = pickle.loads(pickle.dumps(net))
    assert clone.dense_layers[0].X is None  # buffers are not pickled
    np.testing.assert_array_equal(clone.predict(X), net.predict(X))
    weights = net.get_weights()
    for p in net.params():
        p += 1
    net.set_weights(weights)
    np.testing.assert_array_equal(net.predict(X), clone.predict(X))
    with pytest.raises(ValueError):
        net.set_weights(weights[:-1])


def test_make_mlp_is_reproducible():
    a, b = make_mlp(4, (5,), 3, rng=11), make_mlp(4, (5,), 3, rng=11)
    for p, q in zip(a.params(), b.params()):
        np.testing.assert_array_equal(p, q)


def test_loss_and_grad_validates_targets():
    net = make_mlp(3, (4,), 3, rng=0)
    X = np.zeros((2, 3))
    assert net.loss_and_grad("softmax_cross_entropy", X, np.array([0, 2])) > 0
    with pytest.raises(ValueError):
        net.loss_and_grad("softmax_cross_entropy", X, np.array([0, 3]))
    with pytest.raises(ValueError):
        net.loss_and_grad("squared_error", X, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="unknown loss"):
        net.loss_and_grad("hinge", X, np.zeros((2, 3)))


def test_training_step_allocates_nothing_once_warm(compiled):
    """The layer-by-layer path on the compiled kernels: no array allocated per minibatch."""
    import fastbp

    with fastbp.use_backend("compiled"):
        net = make_mlp(32, (64, 32), 10, dropout=0.1, rng=0)
        rng = np.random.default_rng(0)
        X = rng.random((256, 32), dtype=np.float32)
        y = rng.integers(0, 10, 256).astype(np.intp)
        config = TrainConfig(solver="sgd", momentum=0.9, batch_size=32)
        optimizer = make_optimizer(net, config, 32)
        trainer = LayerwiseTrainer(net, "softmax_cross_entropy", optimizer, 32)
        norms = np.zeros(3)
        order = np.arange(256, dtype=np.intp)
        trainer.train_epoch(X, y, order, norms)  # warm up
        tracemalloc.start()
        try:
            trainer.train_epoch(X, y, order, norms)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # a few small Python objects per step (views, floats) but no batch-sized array (32 x 64 x 4 B)
        assert peak < 4096, peak


def test_layer_extension_example_trains_and_gradchecks(backend):
    """fastbp.nn.Layer's documented example runs as written (a doctest): a subclass implementing
    forward/backward trains by fit_network and passes gradcheck."""
    import doctest
    import warnings
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        for test in doctest.DocTestFinder().find(fastbp.nn.Layer, "Layer", globs={}):
            runner.run(test)
    assert runner.tries >= 10 and runner.failures == 0


def test_gradcheck_catches_a_wrong_custom_backward():
    """The check that holds a custom layer can fail: a backward whose bias gradient is off by a
    factor 2 is caught."""
    class Shift(fastbp.nn.Layer):
        param_names, grad_names = ("beta",), ("dbeta",)

        def __init__(self, n):
            self.beta, self.dbeta = np.full(n, 0.3), np.zeros(n)

        def forward(self, X, training=False):
            return X + self.beta

        def backward(self, dA, need_dX=True):
            np.multiply(dA.sum(axis=0), 2.0, out=self.dbeta)  # wrong: the factor 2
            return dA

    rng = np.random.default_rng(0)
    net = Sequential([Dense(3, 4, "tanh", dtype=np.float64, rng=rng), Shift(4),
                      Dense(4, 2, "identity", dtype=np.float64, rng=rng)])
    X = rng.standard_normal((6, 3))
    worst, details = fastbp.gradcheck(net, X, rng.standard_normal((6, 2)), return_details=True)
    assert list(details) == ["W1", "b1", "Shift2.beta", "W2", "b2"]
    assert worst == details["Shift2.beta"] > 0.1
    assert max(error for name, error in details.items() if name != "Shift2.beta") < 1e-6


@pytest.mark.parametrize("loss", ["squared_error", "sigmoid_cross_entropy", "softmax_cross_entropy"])
def test_row_losses_are_the_terms_of_the_kernels_mean(backend, loss):
    """fastbp.nn.row_losses (the weighted objective's per-row terms) average to the loss kernel's
    value, at ordinary and at huge logits."""
    rng = np.random.default_rng(0)
    for scale in (1.0, 1e4):
        output = rng.standard_normal((7, 3)) * scale
        target = rng.integers(0, 3, 7) if loss == "softmax_cross_entropy" else rng.uniform(0, 1, (7, 3))
        value, _ = kernels.loss(loss, output, target)
        np.testing.assert_allclose(fastbp.nn.row_losses(loss, output, target).mean(), value,
                                   rtol=1e-12)


def test_loss_and_grad_refuses_bad_sample_weight():
    net = make_mlp(3, (4,), 2, "tanh", dtype=np.float64, rng=0)
    X, Y = np.ones((5, 3)), np.zeros((5, 2))
    for weights in (np.ones(4), -np.ones(5), np.zeros(5), np.full(5, np.nan)):
        with pytest.raises(ValueError, match="sample_weight must be 5 finite weights"):
            net.loss_and_grad("squared_error", X, Y, sample_weight=weights)
