"""fastbp.VAE: the reparameterised gradient, the ELBO, samples of a known Gaussian, save/load,
bad input.  Training tests run on the active backend, seeded and small."""
import importlib.util
import pickle

import numpy as np
import pytest

import fastbp
from _helpers import assert_refit_fails_unchanged, one_blas_thread  # noqa: F401  (autouse fixture)
from conftest import numeric_gradient
from fastbp.vae import VAE

pytestmark = pytest.mark.filterwarnings("ignore::fastbp.ConvergenceWarning")

# Samples of a VAE fitted to x = A z + mu + noise (z ~ N(0, I_2) in R^5) match the data:
MEAN_TOLERANCE = 0.1  # max |mean difference| per feature, in units of the largest data std
COV_TOLERANCE = 0.1   # ||cov(samples) - cov(data)||_F / ||cov(data)||_F


def gaussian_data(n=2000, d=5, k=2, seed=0):
    rng = np.random.default_rng(seed)
    A, mu = rng.standard_normal((k, d)), rng.standard_normal(d)
    return rng.standard_normal((n, k)) @ A + mu + 0.05 * rng.standard_normal((n, d))


def small(**params):
    defaults = dict(n_components=2, encoder_layer_sizes=(16,), activation="tanh", max_iter=20,
                    learning_rate_init=0.01, random_state=0)
    return VAE(**{**defaults, **params})


@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
@pytest.mark.parametrize("prior", [None, [[1.5, 0.0], [-1.5, 0.5], [0.0, -1.0]]],
                         ids=["normal_prior", "mixture_prior"])
def test_reparameterised_loss_gradient_matches_finite_differences(loss, prior, rng):
    """Backprop through z = mu + sigma * eps (eps fixed) and the KL term, against central
    differences in float64: worst norm-wise relative error over all weights and biases."""
    X = rng.random((7, 5))
    vae = small(loss=loss, prior_means=prior, prior_std=0.8, decoder_std=0.7, dtype="float64",
                encoder_layer_sizes=(6,), decoder_layer_sizes=(4,), max_iter=1).fit(X)
    network, kernel_loss = vae.network_, vae.loss_
    network.layers[2].noise = rng.standard_normal((7, 2))  # the sampling layer, fixed eps

    def objective():
        return network.loss_and_grad(kernel_loss, X, X)

    objective()
    analytic = [g.copy() for g in network.grads()]
    worst = 0.0
    for param, grad in zip(network.params(), analytic):
        numeric = numeric_gradient(objective, param)
        worst = max(worst, np.linalg.norm(grad - numeric) / max(np.linalg.norm(grad),
                                                                 np.linalg.norm(numeric)))
    assert worst <= 1e-6, worst


def test_elbo_improves_during_training():
    X = gaussian_data(n=500)
    first = small(max_iter=1).fit(X)
    trained = small(max_iter=60).fit(X)
    assert trained.score(X) > first.score(X) + 1.0
    assert trained.loss_curve_[-1] < 0.5 * trained.loss_curve_[0]
    # loss_curve_ is -ELBO up to the Gaussian's constant (and the L2 term, small here)
    constant = 0.5 * X.shape[1] * np.log(2 * np.pi)
    assert -trained.score(X) == pytest.approx(trained.loss_curve_[-1] + constant, rel=0.1)


def test_samples_match_a_low_dimensional_gaussian():
    X = gaussian_data()
    vae = small(decoder_std=0.2, max_iter=200).fit(X)
    samples = vae.sample(20000, random_state=1)
    scale = np.sqrt(np.cov(X.T).diagonal().max())
    assert np.max(np.abs(samples.mean(axis=0) - X.mean(axis=0))) / scale < MEAN_TOLERANCE
    cov_error = np.linalg.norm(np.cov(samples.T) - np.cov(X.T)) / np.linalg.norm(np.cov(X.T))
    assert cov_error < COV_TOLERANCE, cov_error
    codes = vae.transform(X)  # the aggregate posterior is close to the prior N(0, I)
    np.testing.assert_allclose(codes.mean(axis=0), 0, atol=0.15)
    np.testing.assert_allclose(codes.std(axis=0), 1, atol=0.2)


def test_mixture_prior_trains_and_samples_from_the_mixture():
    X = gaussian_data(n=400)
    means = [[3.0, 0.0], [-3.0, 0.0]]
    vae = small(prior_means=means, prior_std=0.5, max_iter=20).fit(X)
    z = vae._sampler.sample_prior(4000, np.random.default_rng(0), np.float64)
    assert np.mean(z[:, 0] > 0) == pytest.approx(0.5, abs=0.05)
    assert np.std(z[z[:, 0] > 0], axis=0) == pytest.approx([0.5, 0.5], rel=0.1)
    assert vae.sample(10, random_state=0).shape == (10, 5) and np.isfinite(vae.score(X))
    assert vae.loss_curve_[-1] < vae.loss_curve_[0]


def test_transform_reconstruct_sample_and_score_are_consistent():
    X = gaussian_data(n=300)
    vae = small(max_iter=30).fit(X)
    means = vae.transform(X)
    assert means.shape == (300, 2)
    np.testing.assert_array_equal(means, vae.transform(X))  # the means: no sampling
    np.testing.assert_allclose(vae.reconstruct(X), vae.inverse_transform(means), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(vae.sample(5, random_state=3), vae.sample(5, random_state=3))
    assert vae.score(X) == vae.score(X) == pytest.approx(np.mean(vae.score_samples(X)))
    unit = small(loss="cross_entropy", max_iter=2).fit((X - X.min()) / np.ptp(X))
    samples = unit.sample(50, random_state=0)
    assert samples.min() > 0 and samples.max() < 1


def test_early_stopping_on_the_validation_elbo():
    X = gaussian_data(n=400)
    vae = small(max_iter=300, early_stopping=True, n_iter_no_change=3, tol=0.05).fit(X)
    assert vae.n_iter_ < 300 and len(vae.validation_scores_) == vae.n_iter_
    assert vae.best_validation_score_ == max(vae.validation_scores_)


@pytest.mark.parametrize("params", [{}, dict(prior_means=[[1.0, 0.0], [0.0, 1.0]], loss="cross_entropy")])
def test_save_load_and_pickle_round_trip(tmp_path, params):
    X = np.clip(gaussian_data(n=100) / 8 + 0.5, 0, 1)
    vae = small(max_iter=3, **params).fit(X)
    vae.save(tmp_path / "vae.npz")
    for twin in (fastbp.load(tmp_path / "vae.npz"), pickle.loads(pickle.dumps(vae))):
        assert type(twin) is VAE and twin.get_params() == vae.get_params()
        np.testing.assert_array_equal(twin.transform(X), vae.transform(X))
        np.testing.assert_array_equal(twin.sample(4, random_state=0), vae.sample(4, random_state=0))
        assert twin.score(X) == vae.score(X) and twin.loss_curve_ == vae.loss_curve_


def test_array_prior_means_round_trip(tmp_path):
    """An ndarray parameter is saved and comes back as an equal array of the same dtype."""
    X = gaussian_data(n=100)
    means = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=np.float32)
    vae = small(max_iter=3, prior_means=means).fit(X)
    vae.save(tmp_path / "vae.npz")
    twin = fastbp.load(tmp_path / "vae.npz")
    assert type(twin.prior_means) is np.ndarray and twin.prior_means.dtype == np.float32
    np.testing.assert_array_equal(twin.prior_means, means)
    assert twin.score(X) == vae.score(X)


@pytest.mark.parametrize("params, match", [
    (dict(n_components=0), "n_components"),
    (dict(decoder_std=0), "decoder_std"),
    (dict(decoder_std=-1), "decoder_std"),
    (dict(prior_std=float("inf")), "prior_std"),
    (dict(prior_means=[[1.0, 2.0, 3.0]]), "prior_means"),
    (dict(prior_means=[[np.nan, 0.0]]), "prior_means"),
    (dict(solver="gd", learning_rate="backtracking"), "backtracking"),
    (dict(loss="hinge"), "loss"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_parameters_raise_and_leave_the_model_alone(params, match):
    X = gaussian_data(n=40)
    assert_refit_fails_unchanged(small(max_iter=2).fit(X), X, params, match)


def test_bad_data_raise():
    vae = small(max_iter=2).fit(gaussian_data(n=40))
    for X, match in [(np.full((4, 5), np.nan), "NaN"), (np.full((4, 5), -np.inf), "infinity"),
                     (np.zeros((0, 5)), "0 sample"), (np.zeros((4, 3)), "3 features")]:
        for method in (vae.partial_fit, vae.transform, vae.score):
            with pytest.raises(ValueError, match=match):
                method(X)
    with pytest.raises(ValueError, match="expecting 2"):
        vae.inverse_transform(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        small(loss="cross_entropy").fit(gaussian_data(n=40))
    with pytest.raises(fastbp.NotFittedError):
        small().sample(3)


# ----------------------------------------------------------------------- scikit-learn's checks
if importlib.util.find_spec("sklearn"):  # a test-only dependency
    from sklearn.utils.estimator_checks import parametrize_with_checks

    @pytest.mark.filterwarnings("ignore::UserWarning")
    @parametrize_with_checks([VAE(encoder_layer_sizes=(8,), activation="tanh", max_iter=20,
                                  n_threads=1)])
    def test_sklearn_estimator_checks(estimator, check):
        check(estimator)
