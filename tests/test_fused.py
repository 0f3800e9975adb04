"""The compiled trainer (fastbp.engine) against the layer-by-layer path (fastbp.training).

Same network, same optimizer, same minibatch order: after a few epochs both paths must hold the
same weights, optimizer state, epoch objectives and gradient norms (float tolerance), for every
activation, loss (label and matrix targets) and optimizer flavour, with L2 decay and dropout,
on one thread and on several; the two paths are interchangeable between epochs; a warm epoch
allocates nothing per step; ``predict`` matches the network's forward pass.
"""
import gc
import os
import tracemalloc

import numpy as np
import pytest

import fastbp
from fastbp import _backend
from fastbp.kernels import registry
from fastbp import training as _training
from fastbp import engine as fused
from fastbp.nn import Dense, Dropout, Sequential, make_mlp
from fastbp.optim import SGD, Adam, RMSprop

ACTIVATIONS = list(registry.ACTIVATIONS)  # every one the registry names, a new one included
# every optimizer step of the registry, in each layout of its state arrays
OPTIMIZER_KINDS = {
    "sgd": lambda p, d: SGD(p, lr=0.1, weight_decay=d),
    "momentum": lambda p, d: SGD(p, lr=0.05, momentum=0.9, weight_decay=d),
    "nesterov": lambda p, d: SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=d),
    "adam": lambda p, d: Adam(p, lr=1e-2, weight_decay=d),
    "rmsprop": lambda p, d: RMSprop(p, lr=1e-2, weight_decay=d),
    "rmsprop_centered": lambda p, d: RMSprop(p, lr=1e-2, centered=True, weight_decay=d),
    "rmsprop_momentum": lambda p, d: RMSprop(p, lr=1e-2, momentum=0.5, weight_decay=d),
    "rmsprop_centered_momentum": lambda p, d: RMSprop(p, lr=1e-2, momentum=0.5, centered=True,
                                                      weight_decay=d),
}
OPTIMIZERS = list(OPTIMIZER_KINDS)
RTOL = 2e-5  # float32, a few epochs: products summed in another order by BLAS
RTOL64 = 1e-10  # float64 (the double engine)


def rtol(dtype):
    return RTOL if np.dtype(dtype) == np.float32 else RTOL64


@pytest.fixture(autouse=True, params=["numpy", "scipy"], ids=["numpy-blas", "scipy-blas"])
def _compiled_engine(compiled, request, monkeypatch):
    """Every test on the compiled backend, once with the engine's products on NumPy's OpenBLAS
    and once on SciPy's (the fallback when NumPy has none)."""
    if fused._c_train is None:
        pytest.skip("fastbp.engine._c_train is not built")
    if request.param == "numpy" and fused.numpy_openblas() is None:
        pytest.skip("NumPy has no OpenBLAS that fastbp can call")
    monkeypatch.setenv("FASTBP_BLAS", request.param)
    with fastbp.use_backend("compiled"):
        yield request.param


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, monkeypatch):
    """Run on one thread, or force several even for tiny networks."""
    if request.param > 1:
        monkeypatch.setattr(fused, "MIN_FLOPS_PER_THREAD", 1.0)
        monkeypatch.setattr(fused, "MIN_ROWS_PER_THREAD", 1)
        monkeypatch.setattr(fused, "MIN_PREDICT_ROWS_PER_THREAD", 1)
        monkeypatch.setattr(fused, "cpu_count", lambda: request.param)
    return request.param


def make_optimizer(net, kind, decay):
    decays = [decay if i % 2 == 0 else 0.0 for i in range(len(net.params()))]
    return OPTIMIZER_KINDS[kind](net.params(), decays)


def test_every_registry_step_is_tried():
    """A new optimizer step of the registry is in OPTIMIZERS, so the engine is held to it."""
    made = {make_optimizer(make_mlp(2, [], 1, rng=0), kind, 0.0).step_name for kind in OPTIMIZERS}
    assert made == set(registry.STEPS)


def layerwise_predict(net, X):
    """The network's output computed layer by layer: the reference for the engine's forward."""
    return net._forward(np.ascontiguousarray(X, net.dtype), False, keep=False)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    """The network's type: the float engine and the double one."""
    return request.param


def make_data(loss, n, d, k, rng, labels=True, dtype=np.float32):
    X, Y = _make_data(loss, n, d, k, rng, labels)
    return X.astype(dtype), (Y if Y.dtype == np.intp else Y.astype(dtype))


def _make_data(loss, n, d, k, rng, labels):
    X = rng.standard_normal((n, d)).astype(np.float32)
    if loss == "softmax_cross_entropy" and labels:
        Y = rng.integers(0, k, n).astype(np.intp)
    elif loss == "softmax_cross_entropy":
        Y = rng.dirichlet(np.ones(k), n).astype(np.float32)
    elif loss == "sigmoid_cross_entropy":
        Y = (rng.random((n, k)) < 0.5).astype(np.float32)
    else:
        Y = rng.standard_normal((n, k)).astype(np.float32)
    return X, Y


def twin_setups(build, loss, optimizer, decay, batch_size):
    """Two identical networks + optimizers: one trained layer by layer, one by the fused trainer."""
    nets = [build(), build()]
    opts = [make_optimizer(net, optimizer, decay) for net in nets]
    reference = _training.LayerwiseTrainer(nets[0], loss, opts[0], batch_size)
    trainer = fused.make_trainer(nets[1], loss, opts[1], batch_size)
    assert trainer is not None
    return nets, opts, reference, trainer


def assert_same_state(nets, opts):
    tol = rtol(nets[0].dtype)
    for a, b in zip(nets[0].params(), nets[1].params()):
        np.testing.assert_allclose(b, a, rtol=tol, atol=tol * max(1.0, float(np.abs(a).max())))
    assert opts[0].t == opts[1].t
    states = [o.state_arrays() for o in opts]
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        for a, b in zip(states[0][name], states[1][name]):
            if a is None:
                assert b is None
                continue
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * max(1e-6, float(np.abs(a).max())))


def train_both(nets, opts, reference, trainer, X, Y, epochs, batch_size, rng):
    n = X.shape[0]
    L = len(nets[0].dense_layers)
    for epoch in range(epochs):
        order = rng.permutation(n).astype(np.intp) if epoch % 2 == 0 else np.arange(n, dtype=np.intp)
        norms = [np.zeros(L), np.zeros(L)]
        want = reference.train_epoch(X, Y, order, norms[0])
        got = trainer.train_epoch(X, Y, order, norms[1])
        assert isinstance(got, float)
        tol = 1.0 if nets[0].dtype == np.float32 else 1e-5  # float64: 1e-5 times tighter
        assert got == pytest.approx(want, rel=1e-5 * tol, abs=1e-7 * tol)
        np.testing.assert_allclose(norms[1], norms[0], rtol=1e-4 * tol, atol=1e-7 * tol)
    assert_same_state(nets, opts)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_matches_layer_by_layer(activation, threads, rng, dtype):
    build = lambda: make_mlp(11, [9, 8], 5, activation=activation, rng=7, dtype=dtype)  # noqa: E731
    nets, opts, reference, trainer = twin_setups(build, "softmax_cross_entropy", "sgd", 1e-3, 16)
    X, Y = make_data("softmax_cross_entropy", 70, 11, 5, rng, dtype=dtype)
    train_both(nets, opts, reference, trainer, X, Y, 3, 16, rng)


@pytest.mark.parametrize("alpha", [-0.5, 0.0, 0.3])
@pytest.mark.parametrize("activation", ["leaky_relu", "elu"])
def test_activation_parameter_of_either_sign(activation, alpha, threads, rng):
    build = lambda: make_mlp(6, [7], 3, activation=activation, activation_alpha=alpha, rng=3)  # noqa: E731
    nets, opts, reference, trainer = twin_setups(build, "squared_error", "momentum", 0.0, 8)
    X, Y = make_data("squared_error", 30, 6, 3, rng)
    train_both(nets, opts, reference, trainer, X, Y, 3, 8, rng)


@pytest.mark.parametrize("output", ["identity", "sigmoid", "softmax", "tanh"])
@pytest.mark.parametrize("loss,labels", [("squared_error", False), ("softmax_cross_entropy", True),
                                         ("softmax_cross_entropy", False),
                                         ("sigmoid_cross_entropy", False)])
def test_every_loss_matches_layer_by_layer(loss, labels, output, threads, rng, dtype):
    build = lambda: make_mlp(8, [10], 4, activation="tanh", output_activation=output, rng=5,  # noqa: E731
                             dtype=dtype)
    nets, opts, reference, trainer = twin_setups(build, loss, "adam", 1e-3, 12)
    X, Y = make_data(loss, 50, 8, 4, rng, labels, dtype)
    train_both(nets, opts, reference, trainer, X, Y, 3, 12, rng)


@pytest.mark.parametrize("decay", [0.0, 1e-2])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_matches_layer_by_layer(optimizer, decay, threads, rng, dtype):
    build = lambda: make_mlp(12, [16, 9], 6, activation="relu", rng=11, dtype=dtype)  # noqa: E731
    nets, opts, reference, trainer = twin_setups(build, "softmax_cross_entropy", optimizer, decay, 20)
    X, Y = make_data("softmax_cross_entropy", 93, 12, 6, rng, dtype=dtype)
    train_both(nets, opts, reference, trainer, X, Y, 4, 20, rng)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_dropout_draws_the_same_masks(optimizer, threads, rng, dtype):
    build = lambda: make_mlp(10, [12, 9], 4, activation="relu", dropout=0.3, rng=13,  # noqa: E731
                             dtype=dtype)
    nets, opts, reference, trainer = twin_setups(build, "squared_error", optimizer, 1e-3, 16)
    X, Y = make_data("squared_error", 75, 10, 4, rng, dtype=dtype)
    train_both(nets, opts, reference, trainer, X, Y, 3, 16, rng)
    # the generators advanced alike
    for a, b in zip(nets[0].layers, nets[1].layers):
        if isinstance(a, Dropout):
            assert a.rng.random() == b.rng.random()


@pytest.mark.parametrize("kind, code_activation", [("l1", "relu"), ("kl", "sigmoid")])
def test_sparsity_penalty_matches_layer_by_layer(kind, code_activation, threads, rng, dtype):
    """The sparse autoencoder's penalty on the code (fastbp.models._generative.SparsityPenalty),
    computed by the engine itself: L1 row by row, KL from the minibatch's mean activations summed
    over the threads' rows."""
    from fastbp.models._generative import PenalisedSequential, SparsityPenalty

    def build():
        encoder = make_mlp(10, [8], 4, activation="tanh", output_activation=code_activation,
                           rng=17, dtype=dtype)
        decoder = make_mlp(4, [8], 10, activation="tanh", rng=18, dtype=dtype)
        return PenalisedSequential(encoder.layers + [SparsityPenalty(kind, 0.3, 0.1)]
                                   + decoder.layers)
    nets, opts, reference, trainer = twin_setups(build, "squared_error", "adam", 1e-3, 16)
    X, _ = make_data("squared_error", 75, 10, 10, rng, dtype=dtype)
    train_both(nets, opts, reference, trainer, X, X, 3, 16, rng)


@pytest.mark.parametrize("kind, code_activation", [("l1", "relu"), ("kl", "sigmoid")])
def test_weighted_sparse_autoencoder_matches_layer_by_layer(kind, code_activation, threads, rng,
                                                             monkeypatch):
    """Sample weights weigh the penalty's rows (L1) and the mean activations (KL) as the
    layer-by-layer path does."""
    X = rng.random((90, 12)).astype(np.float32)
    weights = rng.uniform(0.2, 3.0, 90)
    fits = []
    for use in (True, False):
        monkeypatch.setattr(fused, "USE_FUSED", use)
        model = fastbp.Autoencoder(3, (7,), sparsity=kind, code_activation=code_activation,
                                   sparsity_weight=0.5, batch_size=16, max_iter=3,
                                   random_state=0, tol=0.0)
        with pytest.warns(fastbp.ConvergenceWarning):
            model.fit(X, sample_weight=weights)
        fits.append(model)
    assert fits[0].fit_path_ == "engine" and fits[1].fit_path_.startswith("layerwise")
    np.testing.assert_allclose(fits[0].loss_curve_, fits[1].loss_curve_, rtol=1e-5)
    for a, b in zip(fits[0]._network.params(), fits[1]._network.params()):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=RTOL)


def test_input_dropout_and_shared_generator(threads, rng):
    def build():
        gen = np.random.default_rng(99)
        r = np.random.default_rng(4)
        return Sequential([Dropout(0.2, rng=gen), Dense(7, 9, "sigmoid", rng=r),
                           Dropout(0.5, rng=gen), Dense(9, 6, "relu", rng=r),
                           Dropout(0.0, rng=gen), Dense(6, 3, "identity", rng=r)])
    nets, opts, reference, trainer = twin_setups(build, "sigmoid_cross_entropy", "nesterov", 0.0, 9)
    X, Y = make_data("sigmoid_cross_entropy", 40, 7, 3, rng)
    train_both(nets, opts, reference, trainer, X, Y, 3, 9, rng)


def test_dropout_draws_in_several_chunks(monkeypatch, rng):
    monkeypatch.setattr(fused, "DRAW_BUDGET", 64)  # a few minibatches per chunk of draws
    build = lambda: make_mlp(5, [8], 2, dropout=0.4, rng=21)  # noqa: E731
    nets, opts, reference, trainer = twin_setups(build, "squared_error", "adam", 0.0, 4)
    X, Y = make_data("squared_error", 41, 5, 2, rng)
    assert trainer._chunk < -(-41 // 4)
    train_both(nets, opts, reference, trainer, X, Y, 2, 4, rng)


def test_paths_are_interchangeable_between_epochs(rng):
    """fused, layer-by-layer, fused on one network == layer-by-layer three times on its twin."""
    nets = [make_mlp(9, [14], 4, activation="tanh", rng=2) for _ in range(2)]
    opts = [make_optimizer(net, "adam", 1e-3) for net in nets]
    X, Y = make_data("softmax_cross_entropy", 60, 9, 4, rng)
    reference = _training.LayerwiseTrainer(nets[0], "softmax_cross_entropy", opts[0], 10)
    mixed = [fused.make_trainer(nets[1], "softmax_cross_entropy", opts[1], 10),
             _training.LayerwiseTrainer(nets[1], "softmax_cross_entropy", opts[1], 10)]
    for epoch in range(3):
        order = rng.permutation(60).astype(np.intp)
        reference.train_epoch(X, Y, order, np.zeros(2))
        mixed[epoch % 2].train_epoch(X, Y, order, np.zeros(2))
    assert_same_state(nets, opts)


def test_learning_rate_and_decay_are_read_every_epoch(rng):
    nets = [make_mlp(6, [5], 2, rng=8) for _ in range(2)]
    opts = [make_optimizer(net, "momentum", 0.0) for net in nets]
    X, Y = make_data("squared_error", 20, 6, 2, rng)
    reference = _training.LayerwiseTrainer(nets[0], "squared_error", opts[0], 5)
    trainer = fused.make_trainer(nets[1], "squared_error", opts[1], 5)
    for epoch, (lr, decay) in enumerate([(0.1, 0.0), (0.01, 0.1), (0.5, 0.01)]):
        for opt in opts:
            opt.lr = lr
            opt.weight_decay = [decay, 0.0, decay, 0.0]
        order = rng.permutation(20).astype(np.intp)
        a = reference.train_epoch(X, Y, order, np.zeros(2))
        b = trainer.train_epoch(X, Y, order, np.zeros(2))
        assert b == pytest.approx(a, rel=1e-5)
    assert_same_state(nets, opts)


def test_fit_network_uses_the_fused_trainer(rng):
    from fastbp.training import make_trainer
    net = make_mlp(4, [6], 3, rng=0)
    opt = make_optimizer(net, "sgd", 0.0)
    trainer, fit_path = make_trainer(net, "softmax_cross_entropy", opt, 8)
    assert isinstance(trainer, fused.FusedTrainer) and fit_path == "engine"


def test_unsupported_networks_get_no_trainer():
    net = make_mlp(4, [6], 3, rng=0)
    opt = make_optimizer(net, "sgd", 0.0)
    assert fused.make_trainer(net, "hinge", opt, 8) is None
    with fastbp.use_backend("numpy"):
        assert fused.make_trainer(net, "squared_error", opt, 8) is None
    trailing = Sequential([Dense(4, 3, rng=0), Dropout(0.5, rng=0)])
    assert fused.make_trainer(trailing, "squared_error", make_optimizer(trailing, "sgd", 0.0), 8) is None

    class Custom(Dense):
        pass

    custom = Sequential([Custom(4, 3, rng=0)])
    assert fused.make_trainer(custom, "squared_error", make_optimizer(custom, "sgd", 0.0), 8) is None
    other = make_mlp(4, [6], 3, rng=1)  # an optimizer over another network's parameters
    assert fused.make_trainer(net, "squared_error", make_optimizer(other, "sgd", 0.0), 8) is None


def test_bad_epoch_input_is_refused(rng):
    net = make_mlp(4, [6], 3, rng=0)
    trainer = fused.make_trainer(net, "softmax_cross_entropy", make_optimizer(net, "sgd", 0.0), 8)
    X, Y = make_data("softmax_cross_entropy", 10, 4, 3, rng)
    norms = np.zeros(2)
    with pytest.raises(ValueError):
        trainer.train_epoch(X, Y, np.array([0, 10], np.intp), norms)  # row out of range
    with pytest.raises(ValueError):
        trainer.train_epoch(X, np.full(10, 3, np.intp), np.arange(10), norms)  # label out of range
    with pytest.raises(ValueError):
        trainer.train_epoch(X.astype(np.float64), Y, np.arange(10), norms)
    with pytest.raises(ValueError):
        trainer.train_epoch(X, Y, np.arange(10), np.zeros(3))
    assert trainer.train_epoch(X, Y, np.arange(0, dtype=np.intp), norms) == 0.0


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_warm_epochs_allocate_nothing_per_step(dropout, rng):
    """tracemalloc: a warm epoch of 4 or of 64 minibatches allocates the same few bytes (nothing
    per step, nothing that scales with the data), and nothing stays allocated."""
    net = make_mlp(32, [64, 32], 10, dropout=dropout, rng=0)
    opt = make_optimizer(net, "adam", 1e-3)
    trainer = fused.make_trainer(net, "softmax_cross_entropy", opt, 16)
    X, Y = make_data("softmax_cross_entropy", 64 * 16, 32, 10, rng)
    norms = np.zeros(3)
    orders = {m: rng.permutation(m * 16).astype(np.intp) for m in (4, 64)}
    for m in (4, 64, 4, 64):  # warm: buffers for both sizes made
        trainer.train_epoch(X, Y, orders[m], norms)
    peaks = {}
    gc.collect()
    tracemalloc.start()
    try:
        for m in (4, 64):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            trainer.train_epoch(X, Y, orders[m], norms)
            current, peak = tracemalloc.get_traced_memory()
            peaks[m] = peak - before
            assert current - before <= 1024, "memory left allocated after a warm epoch"
    finally:
        tracemalloc.stop()
    assert peaks[64] <= 4096, peaks
    assert peaks[64] <= peaks[4] + 256, f"allocation grows with the number of steps: {peaks}"


@pytest.mark.parametrize("n", [1, 7, 300, 1000])
def test_predict_matches_the_network(n, threads, rng, dtype):
    net = make_mlp(13, [40, 17], 6, activation="gelu", dropout=0.5, rng=3, dtype=dtype)
    trainer = fused.make_trainer(net, "squared_error", make_optimizer(net, "sgd", 0.0), 32)
    X = rng.standard_normal((n, 13)).astype(dtype)
    want = layerwise_predict(net, X)
    got = trainer.predict(X)
    tol = 1.0 if np.dtype(dtype) == np.float32 else 1e-8
    np.testing.assert_allclose(got, want, rtol=1e-5 * tol, atol=1e-6 * tol)
    out = np.empty_like(want)
    assert trainer.predict(X, out) is out
    np.testing.assert_allclose(out, want, rtol=1e-5 * tol, atol=1e-6 * tol)


def test_predict_into_out_takes_any_layout_and_refuses_bad_arrays(rng):
    """The serving path (X and out given) runs only on C-contiguous float32 arrays of the right
    shape; any other X is converted first, and a bad out or X is refused with a ValueError."""
    net = make_mlp(9, [12], 4, rng=2)
    trainer = fused.make_trainer(net, "squared_error", make_optimizer(net, "sgd", 0.0), 8)
    X = rng.standard_normal((20, 9))
    want = layerwise_predict(net, X.astype(np.float32))
    out = np.full((20, 4), np.nan, np.float32)
    variants = [X.astype(np.float32), X, np.asfortranarray(X, dtype=np.float32),
                X.astype(np.float32)[:, ::1][::-1][::-1], X.astype(np.float32).tolist()]
    readonly = X.astype(np.float32)
    readonly.flags.writeable = False
    variants.append(readonly)
    for Xv in variants:
        out.fill(np.nan)
        assert trainer.predict(Xv, out) is out
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
    bad_outs = [np.empty((20, 4)), np.empty((20, 5), np.float32), np.empty((19, 4), np.float32),
                np.empty((4, 20), np.float32).T]
    frozen = np.empty((20, 4), np.float32)
    frozen.flags.writeable = False
    for bad in bad_outs + [frozen]:
        with pytest.raises(ValueError, match="out must be"):
            trainer.predict(X.astype(np.float32), bad)
    for bad in (np.zeros((20, 8), np.float32), np.zeros(9, np.float32), np.zeros((20, 9, 1))):
        with pytest.raises(ValueError, match="X must"):
            trainer.predict(bad, out)


def test_predict_refuses_out_sharing_memory_with_x_and_takes_unaligned_x(rng):
    net = Sequential([Dense(6, 6, "relu", rng=1)])  # d == k: out could be X itself
    trainer = fused.make_trainer(net, "squared_error", make_optimizer(net, "sgd", 0.0), 4)
    X = rng.standard_normal((10, 6)).astype(np.float32)
    want = layerwise_predict(net, X)
    for out in (X, X[:, :]):
        with pytest.raises(ValueError, match="share memory"):
            trainer.predict(X, out)
    np.testing.assert_array_equal(X, X.copy())
    raw = np.zeros(X.nbytes + 1, np.uint8)
    unaligned = raw[1:].view(np.float32).reshape(X.shape)
    unaligned[...] = X
    assert not unaligned.flags.aligned
    out = np.empty((10, 6), np.float32)
    np.testing.assert_allclose(trainer.predict(unaligned, out), want, rtol=1e-5, atol=1e-6)
    raw_out = np.zeros(out.nbytes + 1, np.uint8)
    with pytest.raises(ValueError, match="aligned"):
        trainer.predict(X, raw_out[1:].view(np.float32).reshape(out.shape))


@pytest.mark.parametrize("n", [1, 7, 300])
def test_sequential_predict_runs_the_engine_where_it_can(n, rng, monkeypatch):
    """Sequential.predict: the engine's forward pass for a plain float32 stack on the compiled
    backend (same values as layer by layer), layer by layer otherwise; never pickled."""
    import pickle
    net = make_mlp(13, [40, 17], 6, activation="tanh", dropout=0.3, rng=3)
    X = rng.standard_normal((n, 13)).astype(np.float32)
    np.testing.assert_allclose(net.predict(X), layerwise_predict(net, X), rtol=1e-5, atol=1e-6)
    assert isinstance(net._engine_predictor(), fused.FusedTrainer)
    assert net._engine_predictor()._dw_scratch.size == 0  # forward only: no gradient scratch
    assert pickle.loads(pickle.dumps(net))._predictors == {}
    with fastbp.use_backend("numpy"):
        assert net._engine_predictor() is None
    monkeypatch.setattr(fused, "USE_FUSED", False)
    assert net._engine_predictor() is None
    monkeypatch.setattr(fused, "USE_FUSED", True)
    wide = make_mlp(13, [40], 6, dtype="float64", rng=3)  # the float64 engine
    assert isinstance(wide._engine_predictor(), fused.FusedTrainer)
    np.testing.assert_allclose(wide.predict(X), layerwise_predict(wide, X), rtol=1e-12)


def test_predict_single_layer_and_softmax_output(rng):
    net = Sequential([Dense(5, 4, "softmax", rng=1)])
    trainer = fused.make_trainer(net, "squared_error", make_optimizer(net, "sgd", 0.0), 8)
    X = rng.standard_normal((33, 5)).astype(np.float32)
    np.testing.assert_allclose(trainer.predict(X), layerwise_predict(net, X), rtol=1e-5, atol=1e-7)


def test_thread_count_follows_work_cap_and_blas_limit(rng):
    from threadpoolctl import threadpool_limits
    small = make_mlp(64, [32], 10, rng=0)
    big = make_mlp(256, [256, 256], 10, rng=0)
    t_small = fused.make_trainer(small, "softmax_cross_entropy", make_optimizer(small, "sgd", 0.0), 32)
    t_big = fused.make_trainer(big, "softmax_cross_entropy", make_optimizer(big, "sgd", 0.0), 256)
    assert t_small.threads_for(32, t_small.train_flops_per_row) == 1
    most = min(fused.cpu_count(), fused.MAX_THREADS)
    assert t_big.threads_for(256, t_big.train_flops_per_row) == most
    X, Y = make_data("softmax_cross_entropy", 512, 256, 10, rng)
    norms = np.zeros(3)
    t_big.train_epoch(X, Y, np.arange(512), norms)
    assert t_big.last_threads == most
    t_big.predict(X)
    assert t_big.last_threads == most
    t_big.n_threads = 1
    assert t_big.threads_for(256, t_big.train_flops_per_row) == 1
    t_big.train_epoch(X, Y, np.arange(512), norms)
    assert t_big.last_threads == 1
    t_big.n_threads = None
    with threadpool_limits(limits=1, user_api="blas"):  # threadpoolctl caps fastbp too
        t_big.train_epoch(X, Y, np.arange(512), norms)
        assert t_big.last_threads == 1
        t_big.predict(X)
        assert t_big.last_threads == 1


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_pool_starts_one_thread_per_cpu_at_most(monkeypatch, rng):
    """The engine's pool: the caller plus one worker per further CPU, no more (a pool sized by
    MAX_THREADS once made every call wait for 15 workers to wake on a 2-core machine)."""
    monkeypatch.setattr(fused, "cpu_count", lambda: 2)
    monkeypatch.setattr(fused, "MIN_FLOPS_PER_THREAD", 1.0)
    net = make_mlp(16, [8], 3, rng=0)
    trainer = fused.make_trainer(net, "softmax_cross_entropy", make_optimizer(net, "sgd", 0.0), 16)
    from threadpoolctl import threadpool_limits
    X, Y = make_data("softmax_cross_entropy", 64, 16, 3, rng)
    gc.collect()  # no earlier trainer joins its workers in the middle of the count
    before = len(os.listdir("/proc/self/task"))
    with threadpool_limits(limits=2, user_api="blas"):  # the engine takes no more than BLAS may
        trainer.train_epoch(X, Y, np.arange(64), np.zeros(2))
        assert trainer.last_threads == 2
        assert len(os.listdir("/proc/self/task")) - before == 1
        for _ in range(3):  # later jobs reuse the pool
            trainer.predict(X)
            trainer.train_epoch(X, Y, np.arange(64), np.zeros(2))
    assert len(os.listdir("/proc/self/task")) - before == 1


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
def test_a_dropped_network_takes_its_engine_threads_along(monkeypatch, rng):
    """A network keeps its predictor (and its pool of threads): with no reference cycle through
    the network, dropping it stops the threads at once, without the cyclic garbage collector."""
    monkeypatch.setattr(fused, "cpu_count", lambda: 2)
    monkeypatch.setattr(fused, "MIN_FLOPS_PER_THREAD", 1.0)
    monkeypatch.setattr(fused, "MIN_PREDICT_ROWS_PER_THREAD", 1)
    X = rng.standard_normal((64, 16)).astype(np.float32)
    gc.collect()
    before = len(os.listdir("/proc/self/task"))
    gc.disable()
    try:
        for seed in range(5):
            net = make_mlp(16, [32], 4, rng=seed)
            net.predict(X)
            assert net._engine_predictor().last_threads == 2
            del net
        assert len(os.listdir("/proc/self/task")) == before
    finally:
        gc.enable()


def test_concurrent_trainers_leave_blas_threads_as_they_were(monkeypatch, rng):
    """Engine calls release the GIL, so two trainers may run at once: the BLAS thread count (one
    setting per library) is held at one thread by the first and restored by the last, and a call
    that starts while another holds it still sees the limit in force before (not the 1 set)."""
    import threading as python_threading

    from threadpoolctl import threadpool_info, threadpool_limits

    def counts():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    monkeypatch.setattr(fused, "MIN_FLOPS_PER_THREAD", 1.0)  # threads for every call
    nets = [make_mlp(128, [128], 10, rng=i) for i in range(2)]
    trainers = [fused.make_trainer(net, "softmax_cross_entropy", make_optimizer(net, "sgd", 0.0),
                                   64) for net in nets]
    X, Y = make_data("softmax_cross_entropy", 256, 128, 10, rng)
    with threadpool_limits(limits=2, user_api="blas"):
        before = counts()
        errors, threads_seen = [], set()

        def work(trainer):
            try:
                for _ in range(40):
                    trainer.train_epoch(X, Y, np.arange(256), np.zeros(2))
                    threads_seen.add(trainer.last_threads)
                    trainer.predict(X)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)
        workers = [python_threading.Thread(target=work, args=(t,)) for t in trainers]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors
        assert counts() == before
        assert threads_seen == {min(2, fused.cpu_count())}


def test_engine_blas_choice(_compiled_engine, monkeypatch):
    net = make_mlp(6, [5], 3, rng=0)
    trainer = fused.make_trainer(net, "squared_error", make_optimizer(net, "sgd", 0.0), 4)
    assert trainer.blas == _compiled_engine
    assert bool(trainer._blas_functions) == (_compiled_engine == "numpy")
    monkeypatch.setenv("FASTBP_BLAS", "mkl")
    with pytest.raises(ValueError, match="FASTBP_BLAS"):
        fused.make_trainer(net, "squared_error", make_optimizer(net, "sgd", 0.0), 4)


def test_blas_threads_are_restored(rng):
    from threadpoolctl import threadpool_info
    net = make_mlp(256, [256], 10, rng=0)
    trainer = fused.make_trainer(net, "softmax_cross_entropy", make_optimizer(net, "sgd", 0.0), 128)
    X, Y = make_data("softmax_cross_entropy", 256, 256, 10, rng)
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    trainer.train_epoch(X, Y, np.arange(256), np.zeros(2))
    trainer.predict(X)
    after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert before == after
    assert trainer._blas_get or trainer._blas_fallback is not None


def test_compiled_backend_switch_is_respected():
    net = make_mlp(4, [6], 3, rng=0)
    opt = make_optimizer(net, "sgd", 0.0)
    assert _backend.backend() == "compiled"
    assert fused.make_trainer(net, "squared_error", opt, 8) is not None


# ----------------------------------------------------------------------------------- NaN
def assert_same_nans(got, want):
    """NaN exactly where the NumPy twin has NaN, and the other entries close."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # (equal_nan)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("output", ["identity", "sigmoid", "softmax"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_propagates_through_every_activation_as_on_the_numpy_twin(activation, output, rng):
    """A NaN weight or input gives NaN outputs where the NumPy twin gives them (issue 11: the
    engine's relu mapped NaN to 0, so a NaN network predicted finite probabilities)."""
    net = make_mlp(6, [5], 4, activation=activation, output_activation=output, rng=2)
    trainer = fused.make_trainer(net, "squared_error", make_optimizer(net, "sgd", 0.0), 8)
    X = rng.standard_normal((9, 6)).astype(np.float32)
    X[2, 1] = np.nan
    net.dense_layers[0].W[:, 3] = np.nan  # hidden unit 3 is NaN on every row
    with fastbp.use_backend("numpy"):
        want = layerwise_predict(net, X)
    assert np.isnan(want).any()
    assert_same_nans(trainer.predict(X), want)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("loss,labels", [("squared_error", False), ("softmax_cross_entropy", True),
                                         ("softmax_cross_entropy", False),
                                         ("sigmoid_cross_entropy", False)])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu"])
def test_nan_input_reaches_every_loss_and_update_as_on_the_numpy_twin(activation, loss, labels,
                                                                        rng):
    build = lambda: make_mlp(5, [6], 3, activation=activation, rng=4)  # noqa: E731
    nets, opts, _, trainer = twin_setups(build, loss, "sgd", 0.0, 4)
    X, Y = make_data(loss, 12, 5, 3, rng, labels)
    X[5, 0] = np.nan
    order = np.arange(12, dtype=np.intp)
    norms = [np.zeros(2), np.zeros(2)]
    with fastbp.use_backend("numpy"):
        want = _training.LayerwiseTrainer(nets[0], loss, opts[0], 4).train_epoch(
            X, Y, order, norms[0])
    got = trainer.train_epoch(X, Y, order, norms[1])
    assert np.isnan(want) and np.isnan(got)
    for a, b in zip(nets[0].params(), nets[1].params()):
        assert_same_nans(b, a)


# ------------------------------------------------------------------------- calls of bounded work
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_work_in_calls_of_bounded_flops_gives_the_same_results(dropout, threads, monkeypatch,
                                                               rng):
    """An epoch or a predict in many engine calls (Python handles Ctrl-C between them) gives the
    layer-by-layer results."""
    monkeypatch.setattr(fused, "SIGNAL_FLOPS", 1.0)       # one minibatch per call
    monkeypatch.setattr(fused, "MIN_PREDICT_ROWS_PER_THREAD", 3)
    build = lambda: make_mlp(7, [9], 3, activation="relu", dropout=dropout, rng=6)  # noqa: E731
    nets, opts, reference, trainer = twin_setups(build, "softmax_cross_entropy", "adam", 1e-3, 8)
    X, Y = make_data("softmax_cross_entropy", 45, 7, 3, rng)
    train_both(nets, opts, reference, trainer, X, Y, 2, 8, rng)
    assert opts[1].t == 2 * 6
    X = rng.standard_normal((20, 7)).astype(np.float32)
    assert trainer._signal_rows < 20
    np.testing.assert_allclose(trainer.predict(X), layerwise_predict(nets[1], X), rtol=1e-5,
                               atol=1e-6)


def test_an_interrupted_epoch_counts_the_steps_taken(monkeypatch, rng):
    monkeypatch.setattr(fused, "SIGNAL_FLOPS", 1.0)
    net = make_mlp(5, [4], 2, rng=1)
    opt = make_optimizer(net, "adam", 0.0)
    trainer = fused.make_trainer(net, "squared_error", opt, 4)
    X, Y = make_data("squared_error", 40, 5, 2, rng)
    run, calls = trainer._run, []

    def interrupted_after_three(*args):
        run(*args)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_run", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_epoch(X, Y, np.arange(40, dtype=np.intp), np.zeros(2))
    assert opt.t == 3  # three minibatches of 4 rows ran: Adam's next step is the fourth
    monkeypatch.setattr(trainer, "_run", run)
    trainer.train_epoch(X, Y, np.arange(40, dtype=np.intp), np.zeros(2))  # usable: runs on
    assert opt.t == 13 and all(np.isfinite(p).all() for p in net.params())


@pytest.mark.parametrize("kind, replacement", [
    (kind, replacement) for kind in ("momentum", "adam", "rmsprop_centered_momentum")
    for replacement in ("small", "float64", "strided", "none")
    if not (kind == "momentum" and replacement == "none")])  # an optional state may be None
def test_replaced_state_arrays_are_refused_not_written_through(kind, replacement, rng):
    """A state array the user replaced between epochs (wrong shape, dtype or layout; None for a
    state the step always keeps) is checked before the engine writes through its address:
    ValueError naming the state, not a write out of bounds (a segfault before)."""
    net = make_mlp(6, [40], 3, rng=0)
    opt = make_optimizer(net, kind, 0.0)
    trainer = fused.make_trainer(net, "softmax_cross_entropy", opt, 8)
    X, Y = make_data("softmax_cross_entropy", 16, 6, 3, rng)
    trainer.train_epoch(X, Y, np.arange(16), np.zeros(2))
    name = next(iter(opt.state_arrays()))  # the first state: kept by these settings
    shape = net.params()[0].shape
    getattr(opt, name)[0] = {"small": lambda: np.zeros(3, np.float32),
                             "float64": lambda: np.zeros(shape),
                             "strided": lambda: np.zeros((shape[0], 2 * shape[1]), np.float32)[:, ::2],
                             "none": lambda: None}[replacement]()
    with pytest.raises(ValueError, match=name):
        trainer.train_epoch(X, Y, np.arange(16), np.zeros(2))
