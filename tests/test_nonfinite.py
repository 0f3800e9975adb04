"""No silent garbage models (issue 11, section 3): training whose parameters or loss become
non-finite raises ValueError naming the epoch and the learning rate, in every model, on both
backends and both training paths (the compiled engine and the layer-by-layer loop), and leaves the
estimator as it was before the call; a rising loss is never called convergence."""
import re
import warnings

import numpy as np
import pytest
from _helpers import assert_refit_fails_unchanged, one_blas_thread  # noqa: F401  (autouse fixture)
from conftest import require_compiled

import fastbp
import fastbp.engine
from fastbp import training as _training
from fastbp.exceptions import NotFittedError
from fastbp.models._validation import check_is_fitted

PATHS = ("numpy", "compiled-engine", "compiled-layerwise")
SANE = dict(solver="adam", learning_rate_init=1e-3, max_iter=2)


def divergent(lr=1e20):
    """SGD settings that overflow within a few epochs, and the message they must give."""
    exponent = f"1e\\+{round(np.log10(lr)):02d}"
    return (dict(solver="sgd", learning_rate_init=lr, max_iter=20),
            rf"non-finite .* at epoch \d+ \(learning rate {exponent}, "
            rf"learning_rate_init={exponent}\)")


DIVERGENT, NON_FINITE = divergent()


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    """Each backend and, on the compiled one, each training path; the value lists the kinds of
    trainer ``fit_network`` made (to check that the path asked for is the one that ran)."""
    backend, _, how = request.param.partition("-")
    if backend == "compiled":
        require_compiled()
    monkeypatch.setattr(fastbp.engine, "USE_FUSED", how != "layerwise")
    made, make = [], _training.make_trainer

    def recording(*args):
        trainer, fit_path = make(*args)
        made.append(type(trainer).__name__)
        return trainer, fit_path

    monkeypatch.setattr(_training, "make_trainer", recording)
    with fastbp.use_backend(backend):
        yield request.param, made


def _assert_path_ran(path, plain_stack):
    """A network the engine runs trains on it exactly on the 'compiled-engine' path."""
    name, made = path
    engine = name == "compiled-engine" and plain_stack
    assert made and set(made) == {"FusedTrainer" if engine else "LayerwiseTrainer"}, (name, made)


def _data():
    rng = np.random.default_rng(0)
    X = rng.random((40, 5))
    return X, X @ rng.standard_normal((5, 2)), (X[:, 0] > 0.5).astype(int)


# name -> (constructor, the y its fit takes: None, 'labels' or 'targets', on the engine)
MODELS = {
    "MLPClassifier": (lambda **p: fastbp.MLPClassifier((3,), random_state=0, **p), "labels", True),
    "MLPRegressor": (lambda **p: fastbp.MLPRegressor((3,), random_state=0, **p), "targets", True),
    "Autoencoder": (lambda **p: fastbp.Autoencoder(2, (4,), random_state=0, **p), None, True),
    "sparse Autoencoder": (lambda **p: fastbp.Autoencoder(2, (4,), sparsity="l1", random_state=0,
                                                          **p), None, True),
    "VAE": (lambda **p: fastbp.VAE(2, (4,), random_state=0, **p), None, False),
    "GAN": (lambda **p: fastbp.GAN(2, (4,), (4,), random_state=0, **p), None, None),
}


def _fit_args(kind):
    X, targets, labels = _data()
    return (X,) if kind is None else (X, labels if kind == "labels" else targets)


def _weights(model):
    return [a.copy() for a in model.coefs_ + model.intercepts_
            + getattr(model, "discriminator_coefs_", [])]


def test_issue_example_raises_and_leaves_no_fitted_model(path):
    X, y = [[1.0], [-1.0], [2.0], [-2.0]], [0, 1, 0, 1]
    model = fastbp.MLPClassifier((2,), solver="sgd", learning_rate_init=1e20, max_iter=20,
                                 random_state=0)
    with pytest.raises(ValueError, match=NON_FINITE):
        model.fit(X, y)
    _assert_path_ran(path, True)
    assert not hasattr(model, "coefs_") and not hasattr(model, "classes_")
    with pytest.raises(NotFittedError):
        model.predict(X)
    # the same estimator fits normally afterwards
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        model.set_params(learning_rate_init=1e-2, solver="adam").fit(X, y)
    assert all(np.isfinite(W).all() for W in model.coefs_)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", ["fit", "partial_fit"])
def test_fresh_fit_that_diverges_raises_and_leaves_no_fitted_model(path, name, method):
    make, kind, plain = MODELS[name]
    model = make(**DIVERGENT)
    extra = {"classes": [0, 1]} if method == "partial_fit" and kind == "labels" else {}
    succeeded = 0
    with pytest.raises(ValueError, match=NON_FINITE):
        for _ in range(1 if method == "fit" else 4):  # partial_fit: one epoch a call
            getattr(model, method)(*_fit_args(kind), **extra)
            succeeded += 1
    if plain is not None:
        _assert_path_ran(path, plain)
    if not succeeded:
        with pytest.raises(NotFittedError):
            check_is_fitted(model)
    else:  # the calls before the failing one were fine: their model is intact
        assert model.n_iter_ == succeeded and all(np.isfinite(W).all() for W in _weights(model))


def _assert_same_state(model, twin):
    """Everything a later call starts from: weights, records, optimizers, random generators."""
    for got, want in zip(_weights(model), _weights(twin), strict=True):
        np.testing.assert_array_equal(got, want)
    assert (model.n_iter_, model.t_, model.loss_curve_) == (twin.n_iter_, twin.t_, twin.loss_curve_)
    assert (getattr(model, "discriminator_loss_curve_", None)
            == getattr(twin, "discriminator_loss_curve_", None))
    optimizers = [(model._state.optimizer, twin._state.optimizer)]
    if hasattr(model, "_d_optimizer"):
        optimizers.append((model._d_optimizer, twin._d_optimizer))
    for got, want in optimizers:
        assert got.t == want.t and got.lr == want.lr
        for name in ("m", "v", "velocities"):
            for a, b in zip(getattr(got, name, None) or [], getattr(want, name, None) or [],
                            strict=True):
                np.testing.assert_array_equal(a, b)
    assert model._rng.bit_generator.state == twin._rng.bit_generator.state


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", ["fit", "warm_start"])
def test_failed_refit_keeps_the_fitted_model(path, name, method):
    """A refit (or warm-started fit) that diverges changes nothing: weights and ``n_iter_`` (the
    helper), records, optimizer state and random generators (a twin that never saw the failed call
    is the same), so that the next call continues as if the failed one had not happened."""
    make, kind, _ = MODELS[name]
    args = _fit_args(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        model, twin = make(**SANE).fit(*args), make(**SANE).fit(*args)
    params = dict(DIVERGENT, warm_start=method == "warm_start")
    assert_refit_fails_unchanged(model, args[0], params, NON_FINITE,
                                 y=args[1] if len(args) > 1 else None)
    _assert_same_state(model, twin)
    model.set_params(**SANE, warm_start=False)
    model.partial_fit(*args)
    twin.partial_fit(*args)
    _assert_same_state(model, twin)


@pytest.mark.parametrize("name", MODELS)
def test_failed_partial_fit_keeps_the_fitted_model(path, name):
    """partial_fit calls with a step size that overflows after a few epochs, beside a twin making
    the same calls: the call that fails leaves the model as the twin (which skips it)."""
    make, kind, _ = MODELS[name]
    args = _fit_args(kind)
    settings, message = divergent(1e3 if name == "GAN" else 1e20)  # a GAN overflows at once
    model, twin = make(**settings), make(**settings)
    extra = {"classes": [0, 1]} if kind == "labels" else {}
    for call in range(6):
        try:
            model.partial_fit(*args, **extra)
        except ValueError as error:
            assert call >= 1 and re.search(message, str(error)), (call, error)
            break
        twin.partial_fit(*args, **extra)
    else:
        pytest.fail("the partial fits never overflowed")
    _assert_same_state(model, twin)


def test_issue_digits_sgd_rising_loss_is_not_convergence(backend):
    """SGD at learning_rate_init=1e3 on the bundled digits: the loss climbs far above its first
    epoch; the fit must fail (non-finite) or warn that it diverged, never stop as converged."""
    X, y = fastbp.load_digits()
    model = fastbp.MLPClassifier(solver="sgd", learning_rate_init=1e3, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.fit(X, y)
        except ValueError as error:
            assert "non-finite" in str(error)
            return
    diverged = [w for w in caught if issubclass(w.category, fastbp.ConvergenceWarning)
                and "diverged" in str(w.message)]
    assert len(diverged) == 1, [str(w.message) for w in caught]
    assert model.loss_curve_[-1] > 2 * min(model.loss_curve_)  # the loss did rise


@pytest.mark.parametrize("name", MODELS)
def test_a_nan_weight_is_reported_at_the_next_epoch(path, name):
    """A NaN already in the weights (the compiled relu maps NaN to 0, so the loss can stay finite)
    is caught by the parameter check after the next epoch, whatever the path."""
    make, kind, _ = MODELS[name]
    args = _fit_args(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        model = make(**SANE, activation="relu").fit(*args)
    model.coefs_[0][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"non-finite .*parameters at epoch 3 "):
        model.partial_fit(*args)
    assert model.n_iter_ == 2 and np.isnan(model.coefs_[0][0, 0])  # as before the call
