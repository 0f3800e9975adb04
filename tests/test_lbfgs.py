"""solver='lbfgs' (SciPy's L-BFGS-B on the full-batch objective, fastbp.training.fit_lbfgs) and the
autoencoders' overcomplete warning.

Truths: finite differences of the very function handed to SciPy; scikit-learn's own lbfgs MLPs
(the same optimum where the objective is convex); PCA's reconstruction error from numpy's SVD.
"""
import argparse
import pickle
import warnings

import numpy as np
import pytest
import scipy.optimize
from sklearn.exceptions import DataDimensionalityWarning
from sklearn.neural_network import MLPClassifier as SkClassifier, MLPRegressor as SkRegressor

import fastbp
from fastbp import GAN, VAE, Autoencoder, MLPClassifier, MLPRegressor
from fastbp.cli import train_job
from fastbp.training import LBFGS_PATH, SOLVERS, STEP_SOLVERS, TrainConfig, fit_network

from _helpers import one_blas_thread  # noqa: F401  (fixture)


def _data(n=40, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, d))
    return X, rng.uniform(0.2, 3.0, n), rng


def _targets(kind, X, rng):
    n = X.shape[0]
    if kind == "regression":
        return np.sin(3 * X[:, 0]) + X[:, 1]
    if kind == "multi-output":
        return np.c_[X[:, 0] * X[:, 1], np.cos(X[:, 2])]
    if kind == "binary":
        return (X[:, 0] > X[:, 1]).astype(int)
    if kind == "multiclass":
        return rng.integers(0, 3, n)
    return (rng.uniform(size=(n, 3)) > 0.5).astype(int)  # multilabel


MODELS = {  # every estimator kind that takes lbfgs, with alpha and a hidden layer
    **{f"mlp {kind}": (lambda kind=kind: (MLPRegressor if "regression" in kind or "output" in kind
                                          else MLPClassifier)(hidden_layer_sizes=(6,),
                                                              activation="tanh"), kind)
       for kind in ("regression", "multi-output", "binary", "multiclass", "multilabel")},
    "autoencoder": (lambda: Autoencoder(3, (6,), activation="tanh"), None),
    "denoising": (lambda: Autoencoder(3, (6,), activation="tanh", noise="gaussian",
                                      noise_level=0.3), None),
    "sparse l1": (lambda: Autoencoder(3, (6,), activation="tanh", sparsity="l1",
                                      sparsity_weight=0.1), None),
    "sparse kl": (lambda: Autoencoder(3, (6,), activation="tanh", sparsity="kl",
                                      sparsity_weight=0.1, sparsity_target=0.2), None),
    "vae": (lambda: VAE(2, (6,), activation="tanh"), None),
    "vae fixed mixture prior": (lambda: VAE(2, (6,), activation="tanh", prior="fixed",
                                            prior_means=[[-1.0, 0.0], [1.0, 0.5]], prior_std=0.7),
                                None),
    "vae learned mixture prior": (lambda: VAE(2, (6,), activation="tanh", prior="mixture",
                                              n_prior_components=2), None),
    "vae fixed decoder std": (lambda: VAE(2, (6,), activation="tanh", decoder_std=0.5), None),
    "vae cross-entropy": (lambda: VAE(2, (6,), activation="tanh", loss="cross_entropy"), None),
}


def _captured_objective(model, X, y, sample_weight, monkeypatch):
    """The function and start point fit hands to scipy.optimize.minimize (which then runs)."""
    seen = {}
    real = scipy.optimize.minimize

    def spy(fun, x0, **kwargs):
        seen.update(fun=fun, x0=np.array(x0), options=kwargs["options"], method=kwargs["method"],
                    jac=kwargs["jac"])
        return real(fun, x0, **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        model.fit(X, y, sample_weight=sample_weight)
    return seen


def _path(backend):
    """L-BFGS's evaluations run on the engine's passes on the compiled backend."""
    return LBFGS_PATH if backend == "compiled" else "layerwise: numpy backend"


@pytest.mark.parametrize("name", MODELS)
def test_gradient_handed_to_scipy_equals_finite_differences(name, backend, monkeypatch):
    make, kind = MODELS[name]
    X, weights, rng = _data()
    y = None if kind is None else _targets(kind, X, rng)
    model = make().set_params(solver="lbfgs", alpha=0.3, max_iter=3, dtype="float64",
                              random_state=0)
    seen = _captured_objective(model, X, y, weights, monkeypatch)
    assert seen["method"] == "L-BFGS-B" and seen["jac"] is True
    assert seen["options"] == {"maxiter": 3, "maxfun": 15000, "gtol": 1e-4}
    assert model.fit_path_ == _path(backend)
    fun = seen["fun"]
    x = seen["x0"] + 0.1 * rng.standard_normal(seen["x0"].shape)  # a generic point
    value, gradient = fun(x)
    gradient = gradient.copy()
    assert gradient.dtype == np.float64 and gradient.shape == x.shape
    again, _ = fun(x)
    assert again == value  # the same noise draws at every evaluation: a deterministic objective
    h = 1e-6
    for direction in [*np.eye(x.size)[rng.choice(x.size, 6, replace=False)],
                      *rng.standard_normal((4, x.size))]:
        numeric = (fun(x + h * direction)[0] - fun(x - h * direction)[0]) / (2 * h)
        assert numeric == pytest.approx(gradient @ direction, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("hidden", [(), (8,)])
@pytest.mark.parametrize("kind", ["regression", "binary", "multiclass"])
def test_reaches_scikit_learns_lbfgs_loss(kind, hidden, backend):
    """The same objective as scikit-learn's lbfgs MLP (L2 over the weight sum, weighted mean
    loss): with no hidden layer it is convex and both reach the same minimum; with one, a
    comparable one."""
    X, weights, rng = _data(n=120)
    X = (X - 0.5) * 4
    y = _targets(kind, X, rng) if kind != "multiclass" else np.digitize(
        X[:, 0] + X[:, 1] + 0.5 * rng.standard_normal(120), [-1, 1])
    params = dict(hidden_layer_sizes=hidden, solver="lbfgs", alpha=1e-2, max_iter=3000,
                  tol=1e-8, activation="tanh", random_state=0)
    ours_cls, theirs_cls = ((MLPRegressor, SkRegressor) if kind == "regression"
                            else (MLPClassifier, SkClassifier))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's may stop on max_iter
        theirs = theirs_cls(**params).fit(X, y, sample_weight=weights)
        ours = ours_cls(**params, dtype="float64").fit(X, y, sample_weight=weights)
    if not hidden:
        assert ours.loss_curve_[-1] == pytest.approx(theirs.loss_, rel=1e-6)
    else:
        assert ours.loss_curve_[-1] < 1.5 * theirs.loss_ + 1e-3
    assert ours.best_loss_ == min(ours.loss_curve_)
    assert np.all(np.diff(ours.loss_curve_) <= 1e-12)  # every iterate lowers F
    assert len(ours.loss_curve_) == len(ours.learning_rates_) == ours.n_iter_ == len(ours.grad_norms_)


@pytest.mark.parametrize("limit", ["max_iter", "max_fun"])
def test_running_out_of_iterations_or_evaluations_warns(limit, backend):
    X, _, rng = _data(n=60)
    y = _targets("regression", X, rng)
    model = MLPRegressor((8,), solver="lbfgs", dtype="float64", random_state=0, tol=0.0,
                         **{"max_iter" if limit == "max_iter" else "max_fun": 4})
    with pytest.warns(fastbp.ConvergenceWarning, match=f"lbfgs failed to converge.*status=1.*"
                                                        f"{limit} \\(now 4\\)") as caught:
        model.fit(X, y)
    assert caught[0].filename == __file__  # pointed at the caller
    if limit == "max_iter":
        assert model.n_iter_ == 4 and model.t_ >= 4 * 60
    else:  # SciPy stops at the end of the iteration that passed max_fun evaluations
        assert model.n_iter_ <= 4 and model.t_ >= 5 * 60


@pytest.mark.parametrize("name", ["mlp multiclass", "sparse l1"])
def test_integer_weights_give_the_objective_of_repeated_rows(name, monkeypatch):
    make, kind = MODELS[name]
    X, _, rng = _data(n=30)
    y = None if kind is None else _targets(kind, X, rng)
    counts = rng.integers(1, 4, X.shape[0])
    repeated = np.repeat(np.arange(X.shape[0]), counts)
    funs = []
    for data, target, weights in [(X, y, counts.astype(float)),
                                  (X[repeated], None if y is None else y[repeated], None)]:
        model = make().set_params(solver="lbfgs", alpha=0.5, max_iter=1, dtype="float64",
                                  random_state=0)
        seen = _captured_objective(model, data, target, weights, monkeypatch)
        funs.append((seen["fun"], seen["x0"]))
    (weighted, x0), (plain, x0_plain) = funs
    np.testing.assert_array_equal(x0, x0_plain)
    value, gradient = weighted(x0)
    gradient = gradient.copy()
    expected, expected_gradient = plain(x0)
    assert value == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-10, atol=1e-13)


def test_data_parallel_lbfgs_is_refused(monkeypatch):
    from fastbp import distributed
    monkeypatch.setattr(distributed, "current", lambda: object())  # as inside data_parallel()
    X, _, rng = _data(n=30)
    with pytest.raises(ValueError, match="solver='lbfgs' does not train data-parallel yet"):
        MLPRegressor((4,), solver="lbfgs").fit(X, _targets("regression", X, rng))


def test_converged_fit_is_silent_and_float32_works(backend):
    X, _, rng = _data(n=60)
    y = _targets("binary", X, rng)
    for dtype in ("float32", "float64"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model = MLPClassifier((), solver="lbfgs", dtype=dtype, tol=1e-3, random_state=0).fit(X, y)
        assert model.coefs_[0].dtype == dtype and model.fit_path_ == _path(backend)
        assert model.score(X, y) > 0.8


def test_what_lbfgs_refuses_or_ignores(backend):
    X, _, rng = _data(n=60)
    y = _targets("binary", X, rng)
    model = MLPClassifier((4,), solver="lbfgs", max_iter=5, random_state=0)
    assert not hasattr(model, "partial_fit")  # as scikit-learn's: no one-epoch step
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as refused:
        model.partial_fit(X, y, classes=[0, 1])
    assert "not available with solver='lbfgs'" in str(refused.value.__cause__)  # the why
    assert not hasattr(Autoencoder(solver="lbfgs"), "partial_fit")
    assert hasattr(MLPClassifier(), "partial_fit")
    with pytest.raises(ValueError, match="two-player game"):
        GAN(solver="lbfgs").fit(X)
    with pytest.raises(ValueError, match="solver='lbfgs' needs dropout=0"):
        MLPClassifier((4,), solver="lbfgs", dropout=0.2).fit(X, y)
    with pytest.raises(ValueError, match="max_fun must be >= 1"):
        MLPClassifier(solver="lbfgs", max_fun=0).fit(X, y)
    with pytest.raises(ValueError, match="no one-epoch partial fit"):
        fit_network(fastbp.make_mlp(5, (4,), 1, dtype=np.float64, rng=0), "squared_error", X,
                    y.reshape(-1, 1).astype(float), TrainConfig(solver="lbfgs"), incremental=True)
    # early stopping is ignored, as by scikit-learn: every row trains, no validation split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        stopped = MLPClassifier((4,), solver="lbfgs", early_stopping=True, max_iter=5,
                                random_state=0).fit(X, y)
    assert stopped.validation_scores_ is None and stopped.n_iter_ == 5


def test_lbfgs_is_one_of_the_solvers_everywhere():
    assert SOLVERS == (*STEP_SOLVERS, "lbfgs")
    assert "'lbfgs'" in MLPClassifier.__doc__ and "max_fun" in VAE.__doc__
    parser = argparse.ArgumentParser()
    train_job.add_arguments(parser)
    solver = next(action for action in parser._actions if "--solver" in action.option_strings)
    assert tuple(solver.choices) == SOLVERS


def test_fitted_lbfgs_model_saves_loads_and_pickles(backend, tmp_path):
    X, weights, rng = _data(n=60)
    model = Autoencoder(2, (), activation="identity", solver="lbfgs", dtype="float64",
                        random_state=0).fit(X)
    model.save(tmp_path / "ae.npz")
    loaded = fastbp.load(tmp_path / "ae.npz")
    assert loaded.solver == "lbfgs" and loaded.max_fun == 15000
    assert loaded.loss_curve_ == model.loss_curve_ and loaded.n_iter_ == model.n_iter_
    np.testing.assert_array_equal(loaded.transform(X), model.transform(X))
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).transform(X), model.transform(X))
    # a warm start continues from the weights (L-BFGS never rises above where it starts)
    before = model.loss_curve_[-1]
    model.set_params(warm_start=True).fit(X)
    assert model.loss_curve_[-1] <= before + 1e-12


# --------------------------------------------------------------------------- the PCA optimum
def _spectral_gap(seed=0, n=500):
    """8-D data, two large directions (std 3 and 2) over a small isotropic noise (std 0.1),
    rotated at random; and PCA's mean squared reconstruction error from two components (numpy's
    SVD of the centred data: the sum of the other squared singular values over n)."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    X = (rng.standard_normal((n, 8)) * np.r_[3.0, 2.0, [0.1] * 6]) @ rotation.T
    singular = np.linalg.svd(X - X.mean(axis=0), compute_uv=False)
    return X, float(np.sum(singular[2:] ** 2) / n)


def _linear(**params):
    return Autoencoder(n_components=2, encoder_layer_sizes=(), activation="identity",
                       random_state=0, **params)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_autoencoder_with_lbfgs_reaches_pca(dtype, backend):
    X, pca_error = _spectral_gap()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and converges, at the defaults
        model = _linear(solver="lbfgs", dtype=dtype).fit(X)
    error = -model.score(X)  # mean ||d(e(x)) - x||^2
    assert pca_error <= error * (1 + 1e-6) and error < 1.001 * pca_error


def test_adams_default_path_towards_pca(backend):
    """The numbers the Autoencoder docstring gives: Adam at its defaults stops far above PCA
    (200 epochs: about 12 times its error), and comes within 2% only after about 2500 epochs with
    tol=0 (the default tol stops it on a plateau)."""
    X, pca_error = _spectral_gap()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fastbp.ConvergenceWarning)
        default = _linear().fit(X)
        plateau = _linear(max_iter=3000).fit(X)
        patient = _linear(max_iter=2600, tol=0.0).fit(X)
    assert -default.score(X) > 10 * pca_error
    assert plateau.n_iter_ < 600 and -plateau.score(X) > 2 * pca_error
    assert 2000 < patient.n_iter_ and -patient.score(X) < 1.02 * pca_error


# ------------------------------------------------------------------- the overcomplete warning
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_overcomplete_autoencoder_warns_that_it_can_learn_the_identity(backend):
    X, _ = fastbp.load_digits()
    X = X[:300]
    with pytest.warns(DataDimensionalityWarning, match="can learn the identity.*noise=.*"
                                                       "sparsity=") as caught:
        Autoencoder(n_components=128, encoder_layer_sizes=(), activation="identity",
                    max_iter=2, random_state=0).fit(X)  # the 64-128-64
    assert len([w for w in caught if w.category is DataDimensionalityWarning]) == 1
    assert caught[0].filename == __file__
    assert fastbp.DataDimensionalityWarning is DataDimensionalityWarning
    quiet = [dict(noise="gaussian", noise_level=0.2), dict(noise="mask", noise_level=0.2),
             dict(sparsity="l1", sparsity_weight=1e-3), dict(n_components=32),
             dict(encoder_layer_sizes=(32,))]
    for params in quiet:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DataDimensionalityWarning)
            Autoencoder(**{"n_components": 128, "encoder_layer_sizes": (), "max_iter": 1,
                           "random_state": 0, **params}).fit(X)
    with pytest.warns(DataDimensionalityWarning):  # noise of level 0 regularises nothing
        Autoencoder(n_components=64, encoder_layer_sizes=(80,), noise="gaussian",
                    noise_level=0.0, max_iter=1, random_state=0).fit(X)
