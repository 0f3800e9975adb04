"""fastbp.VAE: the reparameterised gradient, the ELBO, samples of a known Gaussian, save/load,
bad input.  Training tests run on the active backend, seeded and small."""
import math
import pickle

import numpy as np
import pytest

import fastbp
from _helpers import assert_refit_fails_unchanged, one_blas_thread  # noqa: F401  (autouse fixture)
from conftest import numeric_gradient
from fastbp.models._generative import LOG_VARIANCE_KNEE, PenalisedSequential, log_variance
from fastbp.models.vae import VAE

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


def _worst_gradient_error(vae, X, rng, h=1e-6):
    """Backprop through z = mu + sigma * eps (eps fixed) and the KL term, against central
    differences (step h) in float64: the worst norm-wise relative error over all weights and
    biases."""
    network, kernel_loss = vae.network_, vae.loss_
    network.layers[2].noise = rng.standard_normal((len(X), 2))  # the sampling layer, fixed eps

    def objective():
        return network.loss_and_grad(kernel_loss, X, X)

    objective()
    analytic = [g.copy() for g in network.grads()]
    worst = 0.0
    for param, grad in zip(network.params(), analytic):
        numeric = numeric_gradient(objective, param, h)
        worst = max(worst, np.linalg.norm(grad - numeric) / max(np.linalg.norm(grad),
                                                                 np.linalg.norm(numeric)))
    return worst


FIXED_MIXTURE = dict(prior="fixed", prior_means=[[1.5, 0.0], [-1.5, 0.5], [0.0, -1.0]],
                     prior_std=0.8)
PRIORS = {"normal_prior": dict(prior="fixed"), "fixed_mixture_prior": FIXED_MIXTURE,
          "gaussian_prior": dict(prior="gaussian"),
          "mixture_prior": dict(prior="mixture", n_prior_components=3)}


def _move_prior(vae, rng):
    """Set a learned prior's parameters to generic values (off-diagonal L, unequal weights)."""
    for name in vae._sampler.param_names:
        param = getattr(vae._sampler, name)
        param[...] = 0.5 * rng.standard_normal(param.shape)


@pytest.mark.parametrize("loss", ["squared_error", "cross_entropy"])
@pytest.mark.parametrize("prior", PRIORS.values(), ids=PRIORS.keys())
@pytest.mark.parametrize("decoder_std", [0.7, "learned"])
def test_reparameterised_loss_gradient_matches_finite_differences(loss, prior, decoder_std, rng):
    X = rng.random((7, 5))
    vae = small(loss=loss, decoder_std=decoder_std, dtype="float64", encoder_layer_sizes=(6,),
                decoder_layer_sizes=(4,), max_iter=1, **prior).fit(X)
    _move_prior(vae, rng)
    assert _worst_gradient_error(vae, X, rng) <= 1e-6


@pytest.mark.parametrize("prior", PRIORS.values(), ids=PRIORS.keys())
def test_gradcheck_covers_the_learned_prior_on_both_backends(prior, backend, rng):
    """fastbp.gradcheck (float64 central differences) names every prior parameter and holds the
    KL's gradients in them (closed form for the Gaussian, Monte Carlo for the mixture) to ~1e-9;
    learned decoder variance."""
    X = rng.random((12, 5))
    vae = small(dtype="float64", encoder_layer_sizes=(6,), max_iter=2, **prior).fit(X)
    _move_prior(vae, rng)
    worst, details = fastbp.gradcheck(vae, X, return_details=True)
    prior_params = {name for name in details if name.startswith("Reparameterize")}
    assert prior_params == {f"Reparameterize3.{name}" for name in vae._sampler.param_names}
    assert worst <= 1e-6, details


@pytest.mark.parametrize("prior", PRIORS.values(), ids=PRIORS.keys())
def test_gradient_matches_finite_differences_across_the_variance_knee(prior, rng):
    """The bent log-variance (above LOG_VARIANCE_KNEE) backpropagates consistently: variance
    outputs on both sides of the knee.  (sigma > 100 there: identity activations keep the decoder
    from saturating, where its gradients would be below the differences' round-off.)"""
    X = rng.random((7, 5))
    vae = small(dtype="float64", encoder_layer_sizes=(6,), decoder_layer_sizes=(4,),
                activation="identity", decoder_std=1.0, max_iter=1, **prior).fit(X)
    _move_prior(vae, rng)
    vae.network_.layers[1].b[2:] += [LOG_VARIANCE_KNEE - 0.8, LOG_VARIANCE_KNEE + 1.5]
    s = vae._posterior(X)[1]
    assert (s[:, 0] < LOG_VARIANCE_KNEE - 1e-3).all() and (s[:, 1] > LOG_VARIANCE_KNEE + 1e-3).all()
    # the objective is ~1e5 here: a larger step keeps its round-off (~1e5 * 1e-16 / h) small
    assert _worst_gradient_error(vae, X, rng, h=1e-4) <= 1e-6


def test_log_variance_is_s_below_the_knee_and_bends_smoothly_above():
    knee = LOG_VARIANCE_KNEE
    below = np.array([-50.0, 0.0, knee])
    assert log_variance(below) is below  # unchanged (the same array) where nothing exceeds it
    s = np.array([-50.0, knee, knee + 1e-3, 20.0, 337.0, 1e30])
    expected = [v if v <= knee else knee + math.log1p(v - knee) for v in s]
    np.testing.assert_allclose(log_variance(s), expected, rtol=1e-15)
    h = 1e-7  # value and slope continue through the knee
    left, mid, right = log_variance(np.array([knee - h, knee, knee + h]))
    assert (mid - left) / h == pytest.approx(1.0)
    assert (right - mid) / h == pytest.approx(1.0, abs=1e-6)
    huge = log_variance(np.array([337.0, 1e30, 3e38], dtype=np.float32))
    assert huge.dtype == np.float32 and np.isfinite(np.exp(0.5 * huge)).all()


def test_large_inputs_give_a_finite_loss_and_a_usable_model():
    """Issue 11: inputs of 1000 gave a first log-variance of ~337, which overflowed float32's
    exp (a NaN loss blamed on the learning rate).  Now the objective is finite and equals the
    float64 formula with the bent log-variance."""
    X = np.full((2, 4), 1000.0)
    vae = VAE(n_components=1, encoder_layer_sizes=(4,), max_iter=1, learning_rate_init=1e-7,
              decoder_std=1.0, prior="fixed", random_state=2).fit(X)
    mu, s = (a.astype(np.float64) for a in vae._posterior(X))
    assert (s > 100).all()  # far above the knee: exp(s) overflows float32
    assert np.isfinite(vae.loss_curve_).all() and np.isfinite(vae.score(X))
    assert np.isfinite(vae.transform(X)).all() and np.isfinite(vae.sample(5)).all()
    eps = np.array([[0.7], [-1.3]])  # the objective at fixed noise, against float64
    vae.network_.layers[2].noise = eps
    value = vae.network_.loss_and_grad("squared_error", X.astype(np.float32), X.astype(np.float32))
    logvar = LOG_VARIANCE_KNEE + np.log1p(s - LOG_VARIANCE_KNEE)
    z = mu + np.exp(0.5 * logvar) * eps
    r = vae.decoder_.predict(z.astype(np.float32)).astype(np.float64)
    expected = np.mean(0.5 * np.sum((r - X) ** 2, axis=1)
                       + 0.5 * np.sum(mu ** 2 + np.exp(logvar) - logvar - 1, axis=1))
    assert value == pytest.approx(expected, rel=1e-4)
    # the README's settings on the bundled digits scaled to 0-255
    digits = fastbp.load_digits()[0] * 255
    vae = VAE(encoder_layer_sizes=(64,), n_components=4, max_iter=5, random_state=0).fit(digits)
    assert np.isfinite(vae.loss_curve_).all() and vae.loss_curve_[-1] < 0.5 * vae.loss_curve_[0]
    assert np.isfinite(vae.score(digits)) and np.isfinite(vae.sample(5)).all()


def test_elbo_improves_during_training():
    X = gaussian_data(n=500)
    first = small(max_iter=1).fit(X)
    trained = small(max_iter=60).fit(X)
    assert trained.score(X) > first.score(X) + 1.0
    assert trained.loss_curve_[-1] < trained.loss_curve_[0] - 1.0
    # loss_curve_ is -ELBO up to the Gaussian's constant D/2 log(2 pi) (and the L2 term, small
    # here), averaged over the last epoch with each minibatch's own optimal decoder variance;
    # score is at the end, with the training rows' (decoder_std_)
    constant = 0.5 * X.shape[1] * np.log(2 * np.pi)
    assert -trained.score(X) == pytest.approx(trained.loss_curve_[-1] + constant, abs=0.5)


def embedded_gaussian(n=2000, seed=0):
    """A 2-D Gaussian embedded in 8-D: x = z A + b + 0.05 noise, z ~ N(0, I_2)."""
    return gaussian_data(n=n, d=8, seed=seed)


def test_samples_match_a_gaussian_embedded_in_8d_at_the_default_settings():
    """Issue 14: the default VAE's samples have the data's mean and covariance within 10% (with
    decoder_std=1.0 and N(0, I), the defaults before, their variance was 0.6-0.9 of the data's).
    The learned decoder std finds the noise (0.05), the learned Gaussian prior the codes'
    moments: at its optimum m = mean mu(x), S = cov mu(x) + mean diag sigma^2(x)."""
    X = embedded_gaussian()
    vae = VAE(random_state=0).fit(X)
    samples = vae.sample(20000, random_state=1)
    scale = np.sqrt(np.cov(X.T).diagonal().max())
    assert np.max(np.abs(samples.mean(axis=0) - X.mean(axis=0))) / scale < MEAN_TOLERANCE
    cov, cov_samples = np.cov(X.T), np.cov(samples.T)
    assert np.linalg.norm(cov_samples - cov) / np.linalg.norm(cov) < COV_TOLERANCE
    assert np.trace(cov_samples) / np.trace(cov) == pytest.approx(1, abs=0.1)
    assert vae.decoder_std_.shape == (8,) and np.all((vae.decoder_std_ > 0.035)
                                                     & (vae.decoder_std_ < 0.1))
    mu, s = (a.astype(np.float64) for a in vae._posterior(X.astype(np.float32)))
    aggregate = np.cov(mu.T) + np.diag(np.exp(log_variance(s)).mean(axis=0))
    assert vae.prior_weights_.tolist() == [1.0]
    np.testing.assert_allclose(vae.prior_means_[0], mu.mean(axis=0), atol=0.1)
    assert (np.linalg.norm(vae.prior_covariances_[0] - aggregate) / np.linalg.norm(aggregate)
            < 0.1)


def test_the_fixed_standard_prior_pulls_the_codes_to_n01():
    X = gaussian_data()
    vae = small(prior="fixed", decoder_std=0.2, max_iter=200, n_iter_no_change=10).fit(X)
    codes = vae.transform(X)  # the aggregate posterior is close to the prior N(0, I)
    np.testing.assert_allclose(codes.mean(axis=0), 0, atol=0.15)
    np.testing.assert_allclose(codes.std(axis=0), 1, atol=0.2)
    np.testing.assert_array_equal(vae.prior_covariances_, np.eye(2)[None])


def latent_mixture(n=1500, seed=0):
    """2-D codes from 3 well-separated Gaussians (weights 0.5, 0.3, 0.2, centres 4 apart from the
    origin, std 0.5) mapped into 8-D by a fixed linear map plus noise of std 0.05: the data, the
    labels, the centres in data space, the weights."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * np.array([[1.0, 0.0], [-0.5, 0.866], [-0.5, -0.866]])
    weights = np.array([0.5, 0.3, 0.2])
    labels = rng.choice(3, n, p=weights)
    z = centres[labels] + 0.5 * rng.standard_normal((n, 2))
    A, b = rng.standard_normal((2, 8)), rng.standard_normal(8)
    return z @ A + b + 0.05 * rng.standard_normal((n, 8)), labels, centres @ A + b, weights


def test_a_learned_mixture_prior_finds_the_latent_mixture():
    """The latent space is identified only up to an affine map, so the learned components are
    compared where that map is undone: their means decoded into data space against the true
    centres (matched by the Hungarian method), their weights against the true ones, and the
    components the codes fall into (largest responsibility) against the true labels."""
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score

    X, labels, centres, weights = latent_mixture()
    vae = VAE(prior="mixture", n_prior_components=3, learning_rate_init=0.003,
              random_state=0).fit(X)
    distances = np.linalg.norm(vae.inverse_transform(vae.prior_means_)[:, None] - centres[None],
                               axis=2)
    found, true = linear_sum_assignment(distances)
    separation = np.linalg.norm(centres[0] - centres[1])
    assert distances[found, true].max() < 0.1 * separation
    np.testing.assert_allclose(vae.prior_weights_[found], weights[true], atol=0.03)
    codes = vae.transform(X).astype(np.float64)
    variances = np.diagonal(vae.prior_covariances_, axis1=1, axis2=2)
    log_joint = np.log(vae.prior_weights_) - 0.5 * np.sum(
        (codes[:, None] - vae.prior_means_) ** 2 / variances + np.log(variances), axis=2)
    assert adjusted_rand_score(labels, log_joint.argmax(axis=1)) > 0.95


def test_mixture_prior_trains_and_samples_from_the_mixture():
    X = gaussian_data(n=400)
    means = [[3.0, 0.0], [-3.0, 0.0]]
    vae = small(prior="fixed", prior_means=means, prior_std=0.5, max_iter=20).fit(X)
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


def _sigma_to_zero(vae):
    """The encoder's variance outputs at s = -60 for every x (sigma = e^-30): z = mu(x) up to
    ~1e-13, so that a training step's residuals are x - reconstruct(x) at that step's weights."""
    last, k = vae.encoder_.dense_layers[-1], vae.n_components
    last.W[:, k:] = 0.0
    last.b[k:] = -60.0


@pytest.mark.parametrize("weighted", [False, True])
def test_learned_decoder_std_is_the_ml_value_of_the_epochs_residuals(weighted):
    """After partial_fit, decoder_std_ is the maximum-likelihood std of the epoch's training
    residuals, pooled over its minibatches with the rows' weights.  The weights held still (a
    learning rate below float64's resolution) and sigma(x) ~ 0 make every residual
    x - reconstruct(x): NumPy's weighted mean of their squares is the truth.  300 rows in
    batches of 64 (the last of 44) whose total weights differ, zeros included."""
    X = gaussian_data(n=300)
    weights = (np.random.default_rng(1).uniform(0, 2, 300) * np.repeat([1, 5, 0, 1, 3], 60)
               if weighted else None)
    vae = small(dtype="float64", batch_size=64, learning_rate_init=1e-300)
    vae.partial_fit(X, sample_weight=weights)
    _sigma_to_zero(vae)
    vae.partial_fit(X, sample_weight=weights)
    truth = np.sqrt(np.average((X - vae.reconstruct(X)) ** 2, axis=0, weights=weights))
    np.testing.assert_allclose(vae.decoder_std_, truth, rtol=1e-9)


def test_a_fit_keeps_the_residuals_of_its_last_epoch():
    """Moving weights: one full-batch step per epoch, so the last epoch's residuals are those at
    the weights the epoch before it left (kept by a callback), not the final weights' nor the
    earlier epochs'."""
    X = gaussian_data(n=200)
    vae = small(dtype="float64", batch_size=200, max_iter=1).fit(X)
    _sigma_to_zero(vae)
    seen = []
    vae.set_params(warm_start=True, max_iter=4)
    vae.fit(X, callbacks=[lambda state: seen.append(vae._network.get_weights())])
    final = np.sqrt(np.mean((X - vae.reconstruct(X)) ** 2, axis=0))
    vae._network.set_weights(seen[-2])  # before the last epoch's step
    truth = np.sqrt(np.mean((X - vae.reconstruct(X)) ** 2, axis=0))
    np.testing.assert_allclose(vae.decoder_std_, truth, rtol=1e-9)
    assert np.abs(truth / final - 1).max() > 1e-4  # the step moved them: the test can tell


def test_early_stopping_keeps_the_residuals_of_its_best_epoch(monkeypatch):
    """With early stopping the fit ends with the best epoch's weights, and decoder_std_ is the
    maximum-likelihood value of that epoch's training residuals (recorded here, in NumPy, from
    every training step's output and rows)."""
    steps, ends = [], []
    objective = PenalisedSequential._objective

    def recording(self, loss, X, Y, training, sample_weight=None):
        result = objective(self, loss, X, Y, training, sample_weight)
        steps.append((np.square(self.output - Y).sum(axis=0), Y.shape[0]))
        return result

    monkeypatch.setattr(PenalisedSequential, "_objective", recording)
    vae = small(dtype="float64", max_iter=300, early_stopping=True, n_iter_no_change=3, tol=0.05)
    vae.fit(gaussian_data(n=400), callbacks=[lambda state: ends.append(len(steps))])
    best = int(np.argmax(vae.validation_scores_))
    assert 0 < best < vae.n_iter_ - 1  # neither the first epoch nor the last
    squares, rows = zip(*steps[ends[best - 1]:ends[best]])
    np.testing.assert_allclose(vae.decoder_std_, np.sqrt(np.sum(squares, axis=0) / sum(rows)),
                               rtol=1e-9)


def test_lbfgs_decoder_std_is_the_ml_value_at_its_last_iterate():
    """solver='lbfgs': decoder_std_ is the maximum-likelihood value of the last iterate's
    residuals (every row, at its fixed noise).  At that v the Gaussian's term of the objective is
    sum_j (1/2 + 1/2 log v_j) in closed form, so the last loss (alpha=0) is
    D/2 + sum_j log decoder_std_j + the KL term of the same evaluation."""
    X = gaussian_data(n=200)
    vae = small(solver="lbfgs", alpha=0.0, dtype="float64", max_iter=30, prior="fixed").fit(X)
    assert vae.loss_curve_[-1] == pytest.approx(
        X.shape[1] / 2 + np.log(vae.decoder_std_).sum() + vae._sampler.value, abs=1e-12)


def test_training_makes_no_pass_over_the_rows_for_decoder_std(monkeypatch):
    """The learned decoder std comes from the training steps' own residuals: neither partial_fit
    nor fit runs the network in inference mode (before: the encoder once and the decoder for 8
    noise draws over every training row, after every call)."""
    calls = []
    predict = fastbp.nn.Sequential.predict
    monkeypatch.setattr(fastbp.nn.Sequential, "predict",
                        lambda self, *args, **kwargs: calls.append(self) or predict(self, *args,
                                                                                     **kwargs))
    X = gaussian_data(n=300)
    vae = small(batch_size=64, max_iter=3)
    vae.partial_fit(X).partial_fit(X)
    vae.fit(X)
    assert calls == [] and vae.decoder_std_.shape == (5,)


def test_a_model_pickled_during_its_fit_leaves_the_fits_hook_behind():
    """A callback may pickle the model mid-fit (a checkpoint): the training's residual hook
    (a closure) is not part of the model, and the copy trains on (without it) like a fresh
    copy would."""
    X = gaussian_data(n=200)
    copies = []
    vae = small(max_iter=2)
    vae.fit(X, callbacks=[lambda state: copies.append(pickle.dumps(vae))])
    twin = pickle.loads(copies[-1])
    assert twin._network.record_residuals is None
    twin.partial_fit(X)
    assert twin._network.record_residuals is None and twin.decoder_std_.shape == (5,)


def test_early_stopping_on_the_validation_elbo():
    X = gaussian_data(n=400)
    vae = small(max_iter=300, early_stopping=True, n_iter_no_change=3, tol=0.05).fit(X)
    assert vae.n_iter_ < 300 and len(vae.validation_scores_) == vae.n_iter_
    assert vae.best_validation_score_ == max(vae.validation_scores_)


@pytest.mark.parametrize("params", [{}, dict(prior="mixture", n_prior_components=3),
                                    dict(prior="fixed", decoder_std=0.5),
                                    dict(prior="fixed", prior_means=[[1.0, 0.0], [0.0, 1.0]],
                                         loss="cross_entropy")])
def test_save_load_and_pickle_round_trip(tmp_path, params):
    """The learned prior's parameters and the learned decoder std are saved and come back."""
    X = np.clip(gaussian_data(n=100) / 8 + 0.5, 0, 1)
    vae = small(max_iter=3, **params).fit(X)
    vae.save(tmp_path / "vae.npz")
    for twin in (fastbp.load(tmp_path / "vae.npz"), pickle.loads(pickle.dumps(vae))):
        assert type(twin) is VAE and twin.get_params() == vae.get_params()
        np.testing.assert_array_equal(twin.transform(X), vae.transform(X))
        np.testing.assert_array_equal(twin.sample(4, random_state=0), vae.sample(4, random_state=0))
        assert twin.score(X) == vae.score(X) and twin.loss_curve_ == vae.loss_curve_
        for name in ("prior_weights_", "prior_means_", "prior_covariances_"):
            np.testing.assert_array_equal(getattr(twin, name), getattr(vae, name))
        if vae.decoder_std_ is None:
            assert twin.decoder_std_ is None
        else:
            np.testing.assert_array_equal(twin.decoder_std_, vae.decoder_std_)


def test_array_prior_means_round_trip(tmp_path):
    """An ndarray parameter is saved and comes back as an equal array of the same dtype."""
    X = gaussian_data(n=100)
    means = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=np.float32)
    vae = small(max_iter=3, prior="fixed", prior_means=means).fit(X)
    vae.save(tmp_path / "vae.npz")
    twin = fastbp.load(tmp_path / "vae.npz")
    assert type(twin.prior_means) is np.ndarray and twin.prior_means.dtype == np.float32
    np.testing.assert_array_equal(twin.prior_means, means)
    assert twin.score(X) == vae.score(X)


@pytest.mark.parametrize("params, match", [
    (dict(n_components=0), "n_components"),
    (dict(decoder_std=0), "decoder_std"),
    (dict(decoder_std=-1), "decoder_std"),
    (dict(decoder_std="learn"), "decoder_std"),
    (dict(prior_std=float("inf")), "prior_std"),
    (dict(prior="fixed", prior_means=[[1.0, 2.0, 3.0]]), "prior_means"),
    (dict(prior="fixed", prior_means=[[np.nan, 0.0]]), "prior_means"),
    (dict(prior_means=[[1.0, 0.0]]), "prior='fixed'"),
    (dict(prior="mixture", prior_means=[[1.0, 0.0]]), "prior='fixed'"),
    (dict(prior="uniform"), "prior must be one of"),
    (dict(prior="mixture", n_prior_components=0), "n_prior_components"),
    (dict(n_prior_components=2.5), "n_prior_components"),
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
