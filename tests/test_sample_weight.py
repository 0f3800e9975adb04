"""sample_weight for every estimator, held to repeated rows (where the objective allows it: the
whole data in one batch, the noise fixed) and to a weighted NumPy reference of the objective."""
import copy
import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

import fastbp
from fastbp.nn import make_mlp
from _helpers import blobs, one_blas_thread, quiet_fit  # noqa: F401

X, y = blobs(40, d=4, k=3, seed=1)
W_INT = np.random.default_rng(2).integers(0, 4, 40)
W_INT[:6] = [1, 2, 3, 1, 2, 3]
assert all(W_INT[y == label].sum() > 0 for label in np.unique(y))  # every class keeps weight


def _pairs():
    """(weighted model, unweighted model, fit arguments weighted, fit arguments repeated)."""
    full = dict(solver="gd", dtype="float64", max_iter=6, alpha=1e-2, random_state=0,
                learning_rate_init=0.05)
    U = np.clip((X - X.min(0)) / np.ptp(X, 0), 0, 1)
    repeat = np.repeat(np.arange(len(X)), W_INT)
    return [
        (lambda: fastbp.MLPClassifier((5,), **full), (X, y), (X[repeat], y[repeat])),
        (lambda: fastbp.MLPRegressor((5,), **full), (X, X[:, :2] ** 2),
         (X[repeat], X[repeat, :2] ** 2)),
        (lambda: fastbp.Autoencoder(2, (5,), **full), (X, None), (X[repeat], None)),
        (lambda: fastbp.Autoencoder(2, (5,), sparsity="l1", sparsity_weight=0.1, **full), (X, None),
         (X[repeat], None)),
        (lambda: fastbp.Autoencoder(3, (5,), sparsity="kl", sparsity_weight=0.1, loss="cross_entropy",
                                    **full), (U, None), (U[repeat], None)),
    ]


@pytest.mark.parametrize("make, weighted, repeated", _pairs(),
                         ids=["classifier", "regressor", "autoencoder", "sparse_l1", "sparse_kl"])
def test_integer_weights_train_as_repeated_rows(backend, make, weighted, repeated):
    """With the whole data in one batch (solver 'gd'), weights 0..3 train exactly as the data
    with each row repeated that many times (0: left out), the L2 term included."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        a = make().fit(*weighted, sample_weight=W_INT)
        b = make().fit(*repeated)
    # weights of 0: each step on the engine's passes at most, not its whole epochs
    assert a.fit_path_ in ("layerwise: numpy backend", "engine steps (sample_weight with zero "
                           "weights (a batch of weight 0 takes no step))")
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-10)
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(wa, wb, rtol=1e-9, atol=1e-12)


def test_vae_weights_its_kl_term_as_repeated_rows(backend):
    """The VAE's objective (reconstruction + KL, both per row) with the noise eps fixed: integer
    weights give the objective and every gradient of the repeated rows."""
    vae = quiet_fit(fastbp.VAE(2, (5,), max_iter=1, dtype="float64", random_state=0), X)
    net, sampler = vae._network, vae._sampler
    eps = np.random.default_rng(3).standard_normal((len(X), 2))
    repeat = np.repeat(np.arange(len(X)), W_INT)
    sampler.noise = eps
    value = net.loss_and_grad(vae.loss_, X, X, True, sample_weight=W_INT)
    grads = [g.copy() for g in net.grads()]
    sampler.noise = eps[repeat]
    assert value == pytest.approx(net.loss_and_grad(vae.loss_, X[repeat], X[repeat], True), rel=1e-12)
    for weighted, repeated in zip(grads, net.grads()):
        np.testing.assert_allclose(weighted, repeated, rtol=1e-10, atol=1e-14)


def _reference_objective(loss, params, X, T, w, activation=np.tanh):
    """The weighted mean loss sum_i w_i l_i / sum_i w_i of a one-hidden-layer net, from scratch."""
    W1, b1, W2, b2 = params
    O = activation(X @ W1 + b1) @ W2 + b2
    if loss == "squared_error":
        rows = 0.5 * ((O - T) ** 2).sum(1)
    elif loss == "sigmoid_cross_entropy":
        rows = (np.log1p(np.exp(-np.abs(O))) + np.maximum(O, 0) - T * O).sum(1)
    else:
        shifted = O - O.max(1, keepdims=True)
        rows = -(shifted[np.arange(len(T)), T] - np.log(np.exp(shifted).sum(1)))
    return float(w @ rows / w.sum())


@pytest.mark.parametrize("loss", ["squared_error", "sigmoid_cross_entropy", "softmax_cross_entropy"])
def test_weighted_objective_matches_a_numpy_reference(backend, loss):
    """Value and gradient of the weighted objective (real weights, a zero among them) against
    the objective computed from scratch and its central differences."""
    rng = np.random.default_rng(4)
    net = make_mlp(4, (5,), 3, "tanh", dtype=np.float64, rng=0)
    w = rng.uniform(0, 3, len(X))
    w[3] = 0.0
    T = y if loss == "softmax_cross_entropy" else rng.uniform(0, 1, (len(X), 3))
    value = net.loss_and_grad(loss, X, T, True, sample_weight=w)
    params = [p.copy() for p in net.params()]
    assert value == pytest.approx(_reference_objective(loss, params, X, T, w), rel=1e-12)
    h = 1e-6
    for param, grad in zip(params, net.grads()):
        numeric = np.empty_like(param)
        for index in np.ndindex(param.shape):
            saved = param[index]
            param[index] = saved + h
            up = _reference_objective(loss, params, X, T, w)
            param[index] = saved - h
            down = _reference_objective(loss, params, X, T, w)
            param[index] = saved
            numeric[index] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_gan_weights_the_real_rows_of_the_discriminator_step(backend):
    """One discriminator step with weights on the real rows: D's parameters move by -lr times
    the gradient of -L = sum_i w_i softplus(-D(x_i)) / sum w + mean softplus(D(G(z))), computed
    from scratch (central differences) with the same noise."""
    gan = quiet_fit(fastbp.GAN(2, (5,), (5,), discriminator_activation="tanh",
                               minibatch_std=False, solver="sgd", momentum=0.0, alpha=0.0, learning_rate_init=0.1, max_iter=1,
                               dtype="float64", random_state=0), X)
    rows = np.arange(10)
    w = np.random.default_rng(5).uniform(0, 2, 10)
    reference = copy.deepcopy(gan)
    noise = reference._rng.standard_normal((10, 2))
    fake = reference.generator_.predict(noise)
    D0 = [p.copy() for p in gan.discriminator_.params()]

    def minus_L(params):
        real_logits = _logits(params, X[rows])
        fake_logits = _logits(params, fake)
        return float(w @ np.logaddexp(0, -real_logits) / w.sum()
                     + np.mean(np.logaddexp(0, fake_logits)))

    gan._d_optimizer.lr = 0.1
    value = gan._discriminator_step(X, rows, len(rows), fastbp.nn.row_weights(w))  # v: mean 1
    assert value == pytest.approx(minus_L(D0), rel=1e-10)
    h = 1e-6
    for k, (before, after) in enumerate(zip(D0, gan.discriminator_.params())):
        numeric = np.empty_like(before)
        for index in np.ndindex(before.shape):
            up = [p.copy() for p in D0]
            up[k][index] += h
            down = [p.copy() for p in D0]
            down[k][index] -= h
            numeric[index] = (minus_L(up) - minus_L(down)) / (2 * h)
        np.testing.assert_allclose(after, before - 0.1 * numeric, rtol=1e-6, atol=1e-9)


def _logits(params, X):
    W1, b1, W2, b2 = params
    return (np.tanh(X @ W1 + b1) @ W2 + b2)[:, 0]


def test_unit_weights_change_nothing(backend):
    params = dict(hidden_layer_sizes=(6,), max_iter=4, dtype="float64", random_state=0)
    a = quiet_fit(fastbp.MLPClassifier(**params), X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        b = fastbp.MLPClassifier(**params).fit(X, y, sample_weight=np.ones(len(X)))
    for wa, wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(wa, wb)
    assert b.fit_path_ == a.fit_path_


@pytest.mark.parametrize("weights, match", [(-np.ones(40), "Negative values"),
                                            (np.ones(39), "shape"),
                                            (np.zeros(40), "zero")])
def test_bad_weights_are_refused_and_leave_the_model(weights, match):
    model = quiet_fit(fastbp.MLPClassifier((4,), max_iter=2, random_state=0), X, y)
    before = [w.copy() for w in model.coefs_]
    for fit in (model.fit, model.partial_fit):
        with pytest.raises(ValueError, match=match):
            fit(X, y, sample_weight=weights)
    assert all(np.array_equal(a, b) for a, b in zip(model.coefs_, before))


def test_score_takes_weights_like_sklearn():
    model = quiet_fit(fastbp.MLPClassifier((4,), max_iter=3, random_state=0), X, y)
    w = np.random.default_rng(6).uniform(0, 1, len(X))
    assert model.score(X, y, sample_weight=w) == pytest.approx(
        accuracy_score(y, model.predict(X), sample_weight=w))


def test_early_stopping_split_carries_the_weights(backend, monkeypatch):
    """The held-out rows keep their own weights, and the validation score is weighted by them."""
    captured = []
    scorer = fastbp.models.mlp._BaseMLP._scorer

    def spy(self, X_val, Y_val, sample_weight=None):
        captured.append((X_val, sample_weight))
        return scorer(self, X_val, Y_val, sample_weight)

    monkeypatch.setattr(fastbp.models.mlp._BaseMLP, "_scorer", spy)
    w = np.arange(1.0, len(X) + 1)  # a row's weight names the row
    model = quiet_fit(fastbp.MLPClassifier((4,), early_stopping=True, validation_fraction=0.25,
                                           max_iter=3, dtype="float64", random_state=0), X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        model.fit(X, y, sample_weight=w)
    X_val, w_val = captured[-1]
    rows = [int(np.flatnonzero((X == row).all(axis=1))[0]) for row in X_val]
    np.testing.assert_array_equal(w_val, w[rows])
    predicted = model.network_.predict(X_val).argmax(axis=1)  # the best weights, restored
    assert model.best_validation_score_ == pytest.approx(
        accuracy_score(y[rows], model.classes_[predicted], sample_weight=w_val))


@pytest.mark.parametrize("optimizer", ["adam", "nesterov", "rmsprop_centered_momentum"])
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "squared_error"])
def test_engine_weighted_epochs_match_layer_by_layer(compiled, loss, optimizer):
    """The compiled engine's weighted epoch (weights > 0, float32, minibatches with an uneven
    last one, L2, dropout) against the layer-by-layer one: the same weights, optimizer state,
    losses and gradient norms after the same steps."""
    from fastbp import engine, training
    from fastbp.nn import make_mlp
    from test_fused import assert_same_state, make_data, make_optimizer
    if engine._c_train is None:
        pytest.skip("fastbp.engine._c_train is not built")
    rng = np.random.default_rng(5)
    build = lambda: make_mlp(9, [12, 7], 4, activation="tanh", dropout=0.2, rng=8)  # noqa: E731
    nets = [build(), build()]
    opts = [make_optimizer(net, optimizer, 1e-2) for net in nets]
    X, Y = make_data(loss, 70, 9, 4, rng)
    weights = rng.uniform(0.1, 3.0, 70)
    with fastbp.use_backend("compiled"):
        reference = training.LayerwiseTrainer(nets[0], loss, opts[0], 16, weights)
        trainer, path = training.make_trainer(nets[1], loss, opts[1], 16, weights)
        assert path == "engine"
        for epoch in range(3):
            order = rng.permutation(70).astype(np.intp)
            norms = [np.zeros(3), np.zeros(3)]
            want = reference.train_epoch(X, Y, order, norms[0])
            got = trainer.train_epoch(X, Y, order, norms[1])
            assert got == pytest.approx(want, rel=1e-5)
            np.testing.assert_allclose(norms[1], norms[0], rtol=1e-4)
    assert_same_state(nets, opts)


def test_estimators_train_weighted_on_the_engine_and_zero_weights_say_why(compiled):
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(X))
    zero = weights.copy()
    zero[3] = 0.0
    with fastbp.use_backend("compiled"), warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        a = fastbp.MLPClassifier((6,), max_iter=3, random_state=0).fit(X, y, sample_weight=weights)
        b = fastbp.MLPClassifier((6,), max_iter=3, random_state=0).fit(X, y, sample_weight=zero)
    from fastbp import engine
    if engine._c_train is not None:
        assert a.fit_path_ == "engine"
    assert b.fit_path_.startswith("engine steps (sample_weight with zero weights"
                                  if engine._c_train is not None else "layerwise: ")
