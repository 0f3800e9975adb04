"""The generic training loop: the epoch definition, schedules, convergence, early stopping,
the Armijo line search and the compiled-trainer hook."""
import copy
import math
import re
import sys
import types
import warnings

import numpy as np
import pytest
from _helpers import blobs, one_blas_thread  # noqa: F401  (autouse fixture)

import fastbp
import fastbp.engine
from fastbp import kernels
from fastbp import training as _training
from fastbp.exceptions import ConvergenceWarning
from fastbp.training import (LayerwiseTrainer, TrainConfig, armijo_step,
                              fit_network, make_optimizer, train_epoch, weight_decays)
from fastbp.nn import make_mlp


def _data(dtype=np.float64, n=50, d=4, k=3, seed=0):
    X, y = blobs(n, d, k, seed=seed)
    return np.ascontiguousarray(X, dtype=dtype), y.astype(np.intp)


def _reference_epoch(network, loss, X, Y, order, batch_size, lr, alpha, momentum):
    """The documented epoch, written with the public kernels only (SGD with momentum)."""
    dense = network.dense_layers
    velocities = [np.zeros_like(p) for p in network.params()]
    total, norms, batches = 0.0, np.zeros(len(dense)), 0
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        h, cache = X[rows], []
        for layer in dense:
            Z, A = kernels.dense_forward(h, layer.W, layer.b, layer.activation)
            cache.append((h, Z, A))
            h = A
        value, grad = kernels.loss(loss, h, Y[rows])
        penalty = sum(0.5 * alpha / batch_size * float(np.vdot(layer.W, layer.W)) for layer in dense)
        total += (value + penalty) * len(rows)
        grads = []
        for i in range(len(dense) - 1, -1, -1):
            layer, (h_in, Z, A) = dense[i], cache[i]
            grad, dW, db = kernels.dense_backward(h_in, layer.W, Z, A, grad, layer.activation,
                                                  need_dX=i > 0)
            norms[i] += np.linalg.norm(dW)
            grads[:0] = [dW, db]
        for param, g, v, decay in zip(network.params(), grads, velocities,
                                      weight_decays(network, alpha, batch_size)):
            kernels.sgd_update(param, g, v, lr=lr, momentum=momentum, weight_decay=decay)
        batches += 1
    return total / len(order), norms / batches


def test_epoch_matches_its_definition(backend):
    X, y = _data()
    net = make_mlp(4, (6, 5), 3, activation="tanh", dtype=np.float64, rng=0)
    twin = copy.deepcopy(net)
    config = TrainConfig(solver="sgd", learning_rate_init=0.1, momentum=0.5, nesterovs_momentum=False,
                         alpha=0.01, batch_size=16)
    optimizer = make_optimizer(net, config, 16)
    order = np.random.default_rng(3).permutation(len(X))
    norms = np.zeros(3)
    value = train_epoch(net, "softmax_cross_entropy", optimizer, X, y, order, 16, norms)
    expected_value, expected_norms = _reference_epoch(twin, "softmax_cross_entropy", X, y, order, 16,
                                                      0.1, 0.01, 0.5)
    assert value == pytest.approx(expected_value, rel=1e-12)
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-12)
    for p, q in zip(net.params(), twin.params()):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
    assert optimizer.t == 4  # ceil(50 / 16) steps


def test_fit_records_per_epoch():
    X, y = _data()
    net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
    with pytest.warns(ConvergenceWarning):
        state = fit_network(net, "softmax_cross_entropy", X, y, TrainConfig(max_iter=4, tol=0.0), rng=0)
    assert state.n_iter == 4 and state.t == 4 * len(X)
    assert len(state.loss_curve) == len(state.grad_norms) == len(state.learning_rates) == 4
    assert all(norms.shape == (2,) and np.all(norms > 0) for norms in state.grad_norms)
    assert state.best_loss == min(state.loss_curve)
    assert state.optimizer.t == 4 * math.ceil(len(X) / 50)


def test_same_generator_same_result_and_shuffle():
    X, y = _data()
    results = []
    for shuffle in (True, True, False):
        net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
        config = TrainConfig(max_iter=3, batch_size=10, shuffle=shuffle, tol=0.0)
        with pytest.warns(ConvergenceWarning):
            fit_network(net, "softmax_cross_entropy", X, y, config, rng=5)
        results.append(net.params()[0].copy())
    np.testing.assert_array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])


def test_invscaling_schedule():
    X, y = _data()
    net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
    config = TrainConfig(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5,
                         power_t=0.25, max_iter=5, tol=0.0, batch_size=10)
    with pytest.warns(ConvergenceWarning):
        state = fit_network(net, "softmax_cross_entropy", X, y, config, rng=0)
    expected = [0.5] + [0.5 / (e * len(X) + 1) ** 0.25 for e in range(1, 5)]
    np.testing.assert_allclose(state.learning_rates, expected, rtol=1e-15)


def test_adaptive_divides_by_five_after_n_iter_no_change_bad_epochs():
    X, y = _data()
    net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
    # tol so large that no epoch ever counts as an improvement
    config = TrainConfig(solver="sgd", learning_rate="adaptive", learning_rate_init=1e-4, tol=1e9,
                         n_iter_no_change=3, max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        state = fit_network(net, "softmax_cross_entropy", X, y, config, rng=0)
    # the first epoch improves on nothing (best loss inf); then every 3 bad epochs divide the rate
    # by 5 while it is > 1e-6: 1e-4, 2e-5, 4e-6, 8e-7, and the next such event stops
    expected = [1e-4] * 4 + [2e-5] * 3 + [4e-6] * 3 + [8e-7] * 3
    np.testing.assert_allclose(state.learning_rates, expected, rtol=1e-12)
    assert state.converged and state.n_iter == 13


def test_constant_rate_stops_after_n_iter_no_change_bad_epochs():
    X, y = _data()
    net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
    config = TrainConfig(tol=1e9, n_iter_no_change=4, max_iter=50)
    state = fit_network(net, "softmax_cross_entropy", X, y, config, rng=0)
    assert state.n_iter == 1 + 4 and state.converged  # the first epoch is an improvement


def test_convergence_warning_only_when_max_iter_runs_out():
    X, y = _data()
    net = make_mlp(4, (6,), 3, rng=0)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(2\\)"):
        fit_network(net, "softmax_cross_entropy", X.astype(np.float32), y, TrainConfig(max_iter=2), rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit_network(net, "softmax_cross_entropy", X.astype(np.float32), y, TrainConfig(max_iter=2),
                    incremental=True, rng=0)
    assert issubclass(fastbp.ConvergenceWarning, UserWarning)


def test_early_stopping_restores_best_weights():
    X, y = _data()
    net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
    scores = iter([0.2, 0.6, 0.5, 0.4, 0.3, 0.3, 0.1])
    snapshots = []

    def record(state):
        snapshots.append(net.get_weights())

    config = TrainConfig(max_iter=20, n_iter_no_change=4, tol=0.0)
    state = fit_network(net, "softmax_cross_entropy", X, y, config, rng=0,
                        validation_score=lambda network: next(scores), callback=record)
    assert state.validation_scores == [0.2, 0.6, 0.5, 0.4, 0.3, 0.3]
    assert state.n_iter == 6 and state.best_validation_score == 0.6
    for p, best in zip(net.params(), snapshots[1]):  # the weights after epoch 2, the best score
        np.testing.assert_array_equal(p, best)
    assert not np.array_equal(snapshots[1][0], snapshots[-1][0])


def test_callback_can_stop_and_verbose_lines():
    X, y = _data()
    net = make_mlp(4, (6,), 3, rng=0)
    lines = []
    config = TrainConfig(max_iter=10, verbose=True)
    state = fit_network(net, "softmax_cross_entropy", X.astype(np.float32), y, config, rng=0,
                        callback=lambda s: s.n_iter == 3, log=lines.append, name="net")
    assert state.n_iter == 3
    assert len(lines) == 4 and lines[0] == f"net: training path: {state.fit_path}"
    assert lines[1].startswith("net: epoch    1  loss ") and lines[1].endswith(" s")


@pytest.mark.parametrize("fused", [True, False], ids=["engine", "layerwise"])
def test_non_finite_training_raises_naming_epoch_rate_and_input_scale(backend, fused, monkeypatch):
    monkeypatch.setattr(fastbp.engine, "USE_FUSED", fused)
    X, y = _data()
    X = X * 1e30
    net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
    config = TrainConfig(solver="sgd", learning_rate_init=1e10, max_iter=50)
    largest = re.escape(f"(the largest |x| is {np.abs(X).max():.3g})")
    with pytest.raises(ValueError, match=r"net: training produced non-finite .* at epoch \d+ "
                       r"\(learning rate 1e\+10, learning_rate_init=1e\+10\).*" + largest):
        fit_network(net, "squared_error", X, np.ones((len(X), 3)) * 1e30, config, rng=0, name="net")


def test_check_finite_names_what_is_not_finite():
    params = [np.ones(3), np.array([1.0, np.nan])]
    _training.check_finite(1, 0.1, 0.1, [np.ones(3)], loss=1.0, gradient_norms=np.ones(2))
    with pytest.raises(ValueError, match="non-finite parameters at epoch 7 "):
        _training.check_finite(7, 0.1, 0.1, params, loss=1.0, gradient_norms=np.ones(2))
    with pytest.raises(ValueError, match="non-finite loss and gradient norms at epoch 2 "):
        _training.check_finite(2, 0.1, 0.1, [np.ones(3)], loss=np.inf,
                               gradient_norms=np.array([1.0, np.nan]), other=None)


class _ScriptedTrainer:
    """An epoch that returns the next loss of a script (the network is left alone)."""

    def __init__(self, losses):
        self.losses = iter(losses)

    def train_epoch(self, X, Y, order, grad_norms_out):
        return next(self.losses)


@pytest.mark.parametrize("losses, why", [
    # rising from the first epoch (the digits): the last 3 average 3
    ([1.0, 2.0, 3.0, 4.0], "rose from its best 1 to 3 on average over the last 3 epochs"),
    # down, then back up: the last 3 average 0.65, 0.15 > 0.1 * 1.0 above the best
    ([1.0, 0.5, 0.6, 0.65, 0.7], "rose from its best 0.5 to 0.65 on average over the last 3 epochs"),
    ([1.0, 0.5, 0.51, 0.52, 0.53], None),    # a plateau with noise: 0.02 < 0.1 * 1.0 above
    ([1.0, 0.5, 0.52, 0.51, 0.62], None),    # a last noisy epoch alone is not a rise
    ([1e-2, 1e-6, 3e-6, 2e-6, 5e-6], None),  # a tiny loss tripled: noise at the scale of the fit
    # never below twice the loss at the start (the initial weights' ~1.1 here)
    ([5.0, 4.0, 4.0, 4.0, 4.0], "never came below 4, over twice the"),
])
def test_a_rising_loss_is_divergence_not_convergence(monkeypatch, losses, why):
    """A stop for want of improvement is convergence only if the mean loss of the last
    n_iter_no_change epochs is within max(tol, DIVERGENCE_RISE * max(|first loss|, |best before|))
    of the best loss before them, and the best is below twice the loss at the start."""
    X, y = _data()
    net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
    start = _training.start_loss(net, "softmax_cross_entropy", X, y, [0.0] * 4, len(X))
    assert start == pytest.approx(kernels.loss("softmax_cross_entropy", net.predict(X), y)[0])
    assert 0.5 < start < 2
    monkeypatch.setattr(_training, "make_trainer", lambda *args: (_ScriptedTrainer(losses), "scripted"))
    config = TrainConfig(n_iter_no_change=3, max_iter=len(losses) + 5, alpha=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = fit_network(net, "softmax_cross_entropy", X, y, config, rng=0, name="net")
    assert state.n_iter == len(losses) and state.converged is (why is None)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    if why is None:
        assert messages == []
    else:
        assert len(messages) == 1 and messages[0].startswith(f"net: the training loss {why}")
        assert messages[0].endswith(f" at epoch {len(losses)} (learning rate 0.001): training "
                                    "diverged and stopped without converging. Try a smaller "
                                    "learning_rate_init.")


def test_config_is_validated():
    X, y = _data()
    net = make_mlp(4, (6,), 3, rng=0)
    for bad in (dict(solver="newton"), dict(learning_rate="cosine"), dict(learning_rate_init=0),
                dict(momentum=1.0), dict(batch_size=0), dict(batch_size="big"), dict(max_iter=0),
                dict(learning_rate="backtracking", solver="sgd"), dict(tol=-1)):
        with pytest.raises(ValueError):
            fit_network(net, "softmax_cross_entropy", X, y, TrainConfig(**bad))
    dropout_net = make_mlp(4, (6,), 3, dropout=0.5, rng=0)
    with pytest.raises(ValueError, match="dropout"):
        fit_network(dropout_net, "softmax_cross_entropy", X.astype(np.float32), y,
                    TrainConfig(solver="gd", learning_rate="backtracking"))


def test_gd_is_one_full_batch_step_per_epoch():
    X, y = _data()
    net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
    config = TrainConfig(solver="gd", learning_rate_init=0.5, momentum=0.0, max_iter=3, tol=0.0)
    with pytest.warns(ConvergenceWarning):
        state = fit_network(net, "softmax_cross_entropy", X, y, config, rng=0)
    assert state.optimizer.t == 3
    assert state.loss_curve[0] > state.loss_curve[1] > state.loss_curve[2]


def test_armijo_condition_holds_for_accepted_steps(backend):
    X, y = _data(n=60)
    net = make_mlp(4, (8,), 3, activation="tanh", dtype=np.float64, rng=0)
    config = TrainConfig(solver="gd", learning_rate="backtracking", learning_rate_init=64.0,
                         alpha=0.01, max_iter=15, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        state = fit_network(net, "softmax_cross_entropy", X, y, config, rng=0)
    assert len(state.line_search) == state.n_iter
    for e, (f0, lr, sq_norm, f1) in enumerate(state.line_search):
        assert lr > 0
        assert f1 <= f0 - _training.ARMIJO_C * lr * sq_norm
        assert state.loss_curve[e] == f0
        if e + 1 < state.n_iter:
            assert state.loss_curve[e + 1] == pytest.approx(f1, rel=1e-12)  # F at the new weights
    assert state.learning_rates[0] < 64.0  # the first trial was too long and got halved
    assert np.all(np.diff(state.loss_curve) < 0)


def test_armijo_accepts_the_first_halving_that_decreases_enough():
    X, y = _data(n=60)
    net = make_mlp(4, (8,), 3, activation="tanh", dtype=np.float64, rng=0)
    decays = weight_decays(net, 0.0, len(X))
    start = net.get_weights()
    f0, lr, sq_norm, f1 = armijo_step(net, "softmax_cross_entropy", X, y, decays, 256.0, np.zeros(2))
    assert 0 < lr < 256.0 and math.log2(256.0 / lr).is_integer()
    # the step twice as long (the previous trial) violates the condition
    net.set_weights(start)
    grads = [g.copy() for g in net.grads()]
    net.loss_and_grad("softmax_cross_entropy", X, y)
    grads = [g.copy() for g in net.grads()]
    for p, g in zip(net.params(), grads):
        p -= 2 * lr * g
    longer = _training._objective(net, "softmax_cross_entropy", X, y, decays)
    assert longer > f0 - _training.ARMIJO_C * 2 * lr * sq_norm


class _CountingTrainer:
    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def train_epoch(self, X, Y, order, grad_norms_out):
        self.calls += 1
        assert X.flags.c_contiguous and order.dtype == np.intp
        return self.inner.train_epoch(X, Y, order, grad_norms_out)


def test_compiled_trainer_hook(monkeypatch):
    """fit_network trains through whatever ``fastbp.engine`` makes, and when the engine declines
    it trains layer by layer and records the engine's reason as the fit path."""
    made, decline = [], [None]

    def make_trainer(network, loss, optimizer, batch_size, parallel=None):
        if decline[0] is not None:
            return None
        trainer = _CountingTrainer(LayerwiseTrainer(network, loss, optimizer, batch_size))
        made.append((loss, batch_size, trainer))
        return trainer

    engine = types.SimpleNamespace(make_trainer=make_trainer,
                                   engine_decline=lambda *args: decline[0],
                                   make_stack_passes=lambda network, optimizer=None: (None, "no passes"))
    monkeypatch.setitem(sys.modules, "fastbp.engine", engine)
    X, y = _data(dtype=np.float32)
    net = make_mlp(4, (6,), 3, rng=0)
    with pytest.warns(ConvergenceWarning):
        state = fit_network(net, "softmax_cross_entropy", X, y,
                            TrainConfig(max_iter=3, batch_size=20), rng=0)
    assert [(loss, size) for loss, size, _ in made] == [("softmax_cross_entropy", 20)]
    assert made[0][2].calls == 3 and state.fit_path == "engine"
    decline[0] = "a reason"
    with pytest.warns(ConvergenceWarning):
        state = fit_network(net, "softmax_cross_entropy", X, y, TrainConfig(max_iter=1), rng=0)
    assert len(made) == 1 and state.fit_path == "layerwise: a reason"


FUSED_CASES = [
    # (dtype, loss, solver, dropout, rtol, (n, d, hidden, batch_size))
    (np.float64, "softmax_cross_entropy", "adam", 0.2, 1e-9, (70, 4, (7, 5), 16)),
    (np.float32, "softmax_cross_entropy", "adam", 0.2, 2e-4, (70, 4, (7, 5), 16)),
    (np.float32, "sigmoid_cross_entropy", "sgd", 0.0, 2e-4, (70, 4, (7, 5), 16)),
    (np.float32, "squared_error", "sgd", 0.3, 2e-4, (70, 4, (7, 5), 16)),
    # big enough per minibatch for a multi-threaded compiled engine
    (np.float32, "softmax_cross_entropy", "adam", 0.1, 2e-4, (200, 32, (128, 128), 64)),
]


@pytest.mark.parametrize("dtype, loss, solver, dropout, rtol, size", FUSED_CASES)
def test_fused_and_layerwise_paths_agree(compiled, monkeypatch, dtype, loss, solver, dropout, rtol,
                                         size):
    """Whatever ``fastbp.engine`` provides must train like the layer-by-layer epoch: same
    objective, gradient norms, weights and optimizer steps (the same dropout masks)."""
    n, d, hidden, batch_size = size
    X, y = _data(dtype=dtype, n=n, d=d)
    Y = y if loss == "softmax_cross_entropy" else np.eye(3, dtype=dtype)[y]
    results = []
    for use_fused in (True, False):
        monkeypatch.setattr(fastbp.engine, "USE_FUSED", use_fused)
        with fastbp.use_backend("compiled"):
            net = make_mlp(d, hidden, 3, activation="tanh", dropout=dropout, dtype=dtype, rng=0)
            config = TrainConfig(solver=solver, max_iter=4, batch_size=batch_size, tol=0.0,
                                 alpha=0.01, learning_rate_init=0.01)
            with pytest.warns(ConvergenceWarning):
                state = fit_network(net, loss, X, Y, config, rng=1)
        results.append((net.get_weights(), state.loss_curve, np.array(state.grad_norms),
                        state.optimizer.t))
    (w1, l1, g1, t1), (w2, l2, g2, t2) = results
    assert t1 == t2
    np.testing.assert_allclose(l1, l2, rtol=rtol)
    np.testing.assert_allclose(g1, g2, rtol=rtol)
    for p, q in zip(w1, w2):
        np.testing.assert_allclose(p, q, rtol=rtol, atol=rtol / 10)


def test_jobs_note_max_iter_but_show_a_divergence():
    """The command-line jobs turn the max_iter warning into a short note; a diverging loss is a
    different story and is shown as it is."""
    from fastbp.cli._jobs import fit_noting_convergence

    def stops_at_max_iter():
        warnings.warn(_training.MAX_ITER_WARNING.format(3), ConvergenceWarning)

    def diverges():
        warnings.warn("net: the training loss rose ...: training diverged", ConvergenceWarning)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fit_noting_convergence(stops_at_max_iter) is True
        assert caught == []
        assert fit_noting_convergence(diverges) is False
    assert [str(w.message) for w in caught] == ["net: the training loss rose ...: training diverged"]


def test_early_stopping_of_a_still_falling_loss_is_no_divergence(monkeypatch):
    """Early stopping (a validation score that stops improving) ends a fit whose training loss
    still falls: the last epochs average above the best (0.2, the last) but below the best before
    them (1.0): no rise."""
    X, y = _data()
    net = make_mlp(4, (6,), 3, dtype=np.float64, rng=0)
    monkeypatch.setattr(_training, "make_trainer",
                        lambda *args: (_ScriptedTrainer([1.0, 0.5, 0.3, 0.2]), "scripted"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        state = fit_network(net, "softmax_cross_entropy", X, y, TrainConfig(n_iter_no_change=3),
                            rng=0, validation_score=lambda network: 0.5)
    assert state.n_iter == 4 and state.converged


def test_start_loss_is_a_training_batch_objective_that_draws_nothing():
    """With dropout the start objective uses masks (training mode), yet leaves the generator as
    it was: the fit that follows draws exactly what it would have drawn."""
    X, y = _data()
    net = make_mlp(4, (6,), 3, dropout=0.5, dtype=np.float64, rng=0)
    generator = net.layers[1].rng
    state = copy.deepcopy(generator.bit_generator.state)
    decays = weight_decays(net, 0.1, 20)
    value = _training.start_loss(net, "softmax_cross_entropy", X, y, decays, 20)
    assert generator.bit_generator.state == state
    penalty = sum(0.5 * 0.1 / 20 * float(np.vdot(layer.W, layer.W)) for layer in net.dense_layers)
    masked = net.loss_and_grad("softmax_cross_entropy", X[:20], y[:20]) + penalty  # same draws
    assert value == masked != net.loss_and_grad("softmax_cross_entropy", X[:20], y[:20], False) + penalty


def test_exceptions_have_one_public_home():
    """fastbp.exceptions is their home: scikit-learn's own NotFittedError and ConvergenceWarning
    (so that scikit-learn's filters and handlers see fastbp's), fastbp's InconsistentVersionWarning;
    the package's names are those."""
    import sklearn.exceptions
    from fastbp import exceptions
    from fastbp.models import _validation
    for name in ("NotFittedError", "ConvergenceWarning"):
        assert getattr(exceptions, name) is getattr(sklearn.exceptions, name)
    for name in ("NotFittedError", "ConvergenceWarning", "InconsistentVersionWarning"):
        assert getattr(fastbp, name) is getattr(exceptions, name)
    assert exceptions.InconsistentVersionWarning.__module__ == "fastbp.exceptions"
    assert issubclass(exceptions.InconsistentVersionWarning,
                      sklearn.exceptions.InconsistentVersionWarning)
    assert exceptions.InconsistentVersionWarning is exceptions.InconsistentVersionWarning
    assert issubclass(exceptions.NotFittedError, (ValueError, AttributeError))
    with pytest.raises(exceptions.NotFittedError, match="not fitted"):
        _validation.check_is_fitted(fastbp.MLPClassifier())


def test_vanishing_gradients_warn_naming_layers_and_activation():
    """The issue's case: a 10-layer sigmoid net on digits (first/last gradient-norm ratio ~1e-8)
    warns once, naming the first and last layers and the activation and suggesting relu; the same
    net with relu (ratio ~0.5) does not."""
    X, y = fastbp.load_digits()
    X, y = X[:300], y[:300]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", ConvergenceWarning)
        sigmoid = fastbp.MLPClassifier((32,) * 9, activation="logistic", max_iter=7,
                                       random_state=0).fit(X, y)
    ratios = sigmoid.grad_norms_[:, 0] / sigmoid.grad_norms_[:, -1]
    assert (ratios < 1e-4).all()  # the independent truth: the recorded norms
    found = [w for w in caught if issubclass(w.category, fastbp.GradientWarning)]
    assert len(found) == 1
    message = str(found[0].message)
    assert "vanishing" in message and "'sigmoid'" in message and "64 -> 32" in message
    assert "32 -> 10" in message and "relu" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error", fastbp.GradientWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        relu = fastbp.MLPClassifier((32,) * 9, max_iter=7, random_state=0).fit(X, y)
    assert ((relu.grad_norms_[:, 0] / relu.grad_norms_[:, -1]) > 1e-2).all()


def test_gradient_imbalance_thresholds():
    layers = make_mlp(3, (4, 4), 2, "tanh").dense_layers
    healthy = [np.array([1.0, 1.0, 1.0])] * 5
    vanishing = [np.array([1e-5, 1.0, 1.0])] * 5
    exploding = [np.array([2e4, 1.0, 1.0])] * 5
    assert _training.gradient_imbalance(healthy, layers) is None
    assert _training.gradient_imbalance(vanishing[:4], layers) is None  # too few epochs
    assert _training.gradient_imbalance(vanishing[:4] + healthy[:1], layers) is None
    assert "vanishing" in _training.gradient_imbalance(vanishing, layers)
    message = _training.gradient_imbalance(exploding, layers)
    assert "exploding" in message and "'tanh'" in message and "smaller learning_rate_init" in message
    assert _training.gradient_imbalance([np.array([1.0, 0.0, 0.0])] * 5, layers) is None
