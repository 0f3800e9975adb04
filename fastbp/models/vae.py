"""Variational autoencoder (Kingma & Welling 2013), trained by backprop through the sampling.

The lecture's "Method 3": the encoder maps x to the parameters of a Gaussian q(z | x) =
N(mu(x), diag sigma^2(x)) -- its last Dense layer outputs [mu, log sigma^2] -- and the latent
code is sampled by the reparameterisation z = mu + sigma * eps, eps ~ N(0, I), so that the
gradient reaches mu and sigma by plain backprop (dz/dmu = 1, dz/d log sigma^2 = eps sigma / 2).
Above log sigma^2 = 10 the encoder's output s is bent (log sigma^2 = 10 + log(1 + s - 10), the
same value and slope at 10, see ``fastbp.models._generative.log_variance``): sigma^2 then grows linearly
in s, so large inputs (whose first log-variances can be in the hundreds) cannot overflow exp.
The decoder d maps z to the data.  Training maximises the evidence lower bound per sample

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))

estimated with one z per sample and minibatch, i.e. minimises (per row, averaged over a batch)

    ||x - d(z)||^2 / (2 decoder_std^2) + KL   loss='squared_error': p(x | z) = N(d(z), decoder_std^2 I)
    sum_j [softplus(o_j) - x_j o_j] + KL      loss='cross_entropy': Bernoulli, logits o = d(z)

plus alpha / (2 batch_size) sum ||W||^2.  ``loss_curve_`` holds that objective: minus the ELBO up
to the constant D/2 log(2 pi decoder_std^2) of the Gaussian.

The prior p(z) is N(0, I) (KL in closed form) or, with ``prior_means`` (C lists of
``n_components`` numbers), the equal-weight mixture of Gaussians sum_c N(m_c, prior_std^2 I) / C:
the lecture's "more powerful" variant, whose KL has no closed form and is estimated by Monte Carlo
(log q(z | x) - log p(z) at the sampled z).

With ``solver='lbfgs'`` the objective's noise is fixed: each row draws its eps once and keeps it
for the whole run (the sample-average approximation of the expected objective, deterministic as a
quasi-Newton method needs; ``fastbp.training.LbfgsObjective``), and its gradient is that of this
fixed-noise objective exactly (held to finite differences in ``tests/test_lbfgs.py``).

New data points (lecture: "sample z_new from the prior and use the decoder d(z_new)"):
``sample(n)`` returns d(z) for z ~ p(z) -- the decoder's mean (probabilities for cross-entropy),
without the observation noise.
"""
import math

import numpy as np

from fastbp.models._generative import (EncoderDecoder, PenalisedSequential, Reparameterize, check_n_components,
                          check_nonnegative, decoded, log_variance, row_errors, store_params)
from fastbp.models._validation import check_is_fitted
from fastbp.models.mlp import _make_rng
from fastbp.nn import make_mlp
from fastbp.models.persist import register
from fastbp.models._docs import MLP_ATTRIBUTES, numpydoc

__all__ = ["VAE"]

SCORE_SEED, SCORE_NOISE_DRAWS = 0, 8  # score_samples' noise: the same draws for every call


@register("VAE")
@numpydoc(*MLP_ATTRIBUTES, "encoder_", "decoder_")
class VAE(EncoderDecoder):
    """Variational autoencoder, scikit-learn style (see the module docstring).

    ``fit(X)``; ``transform(X)`` = the posterior means mu(x); ``inverse_transform(Z)`` = d(z);
    ``reconstruct(X)`` = d(mu(x)); ``sample(n)``; ``score_samples(X)`` = ELBO(x) per sample
    (E_q[log p(x | z)] averaged over 8 fixed draws of eps, so that it is repeatable; the KL term
    exact for the N(0, I) prior, else estimated at the same z), ``score(X)`` its mean.
    Training parameters and fitted attributes as for the MLP estimators, plus ``encoder_``
    (x -> [mu, log sigma^2]) and ``decoder_``.

    """

    def __init__(self, n_components=2, encoder_layer_sizes=(100,), decoder_layer_sizes=None,
                 activation="relu", loss="squared_error", decoder_std=1.0, prior_means=None,
                 prior_std=1.0, *, solver="adam", alpha=0.0001, batch_size="auto",
                 learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, activation_alpha=None, dtype="float32",
                 n_threads=None):
        store_params(self, locals())

    # ------------------------------------------------------------------------------ parameters
    def _layer_sizes(self):
        encoder, k, decoder = self._sizes()
        return [*encoder, 2 * k, k, *decoder]

    def _prior_means(self):
        if self.prior_means is None:
            return None
        means = np.asarray(self.prior_means, dtype=np.float64)
        k = check_n_components(self.n_components)
        if means.ndim != 2 or len(means) < 1 or means.shape[1] != k or not np.isfinite(means).all():
            raise ValueError(f"prior_means must be C >= 1 finite rows of n_components={k} numbers, "
                             f"got shape {means.shape}")
        return means

    def _check_model_params(self):
        super()._check_model_params()
        for name in ("decoder_std", "prior_std"):
            if check_nonnegative(getattr(self, name), name) == 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        self._prior_means()
        if self.learning_rate == "backtracking":
            raise ValueError("learning_rate='backtracking' needs a deterministic objective; the "
                             "VAE's is sampled")

    # --------------------------------------------------------------------------------- training
    def _build_network(self, n_features, dtype):
        encoder_sizes, k, decoder_sizes = self._sizes()
        self._set_loss()
        self.encoder_ = make_mlp(n_features, encoder_sizes, 2 * k, self.activation, dtype=dtype,
                                 rng=self._rng, activation_alpha=self.activation_alpha)
        self.decoder_ = make_mlp(k, decoder_sizes, n_features, self.activation, dtype=dtype,
                                 rng=self._rng, activation_alpha=self.activation_alpha)
        self._sampler = Reparameterize(k, self._rng.spawn(1)[0], self._prior_means(),
                                       float(self.prior_std))
        scale = 1.0 / float(self.decoder_std) ** 2 if self.loss_ == "squared_error" else 1.0
        return PenalisedSequential(self.encoder_.layers + [self._sampler] + self.decoder_.layers,
                                   loss_scale=scale)

    # ------------------------------------------------------------------------------- inference
    def _posterior(self, X):
        """mu and the variance output s (log sigma^2 below the knee) of q(z | x) for validated X."""
        H = self.encoder_.predict(X)
        k = self._sampler.k
        return H[:, :k], H[:, k:]

    def transform(self, X):
        """The posterior means mu(x) of q(z | x).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)

        Returns
        -------
        Z : ndarray of shape (n_samples, n_components)
            Of the model's ``dtype`` (a DataFrame with columns ``get_feature_names_out()`` under
            ``set_output(transform="pandas")``).

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            X with NaN or infinity, or other columns than in ``fit`` (their number, or a
            DataFrame's names and order).
        """
        X = self._checked(X)
        with self._threads():
            return np.ascontiguousarray(self._posterior(X)[0])

    def sample(self, n_samples=1, random_state=None):
        """New data points d(z), z ~ p(z).

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, RandomState instance, numpy Generator or None, default=None
            The draws of z; None: the model's own generator (successive calls differ).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
            The decoder's mean: float64 probabilities for ``loss='cross_entropy'``, else of the
            model's ``dtype``.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        """
        check_is_fitted(self)
        rng = self._rng if random_state is None else _make_rng(random_state)
        z = self._sampler.sample_prior(int(n_samples), rng, self._network.dtype)
        with self._threads():
            return decoded(self.loss_, self.decoder_.predict(z))

    def _elbo(self, X):
        """ELBO(x) per row of validated X: the mean over SCORE_NOISE_DRAWS fixed noise vectors
        eps, the same for every row (so a row's score depends on that row alone)."""
        mu, s = self._posterior(X)
        logvar = log_variance(s)
        sigma = np.exp(0.5 * logvar)
        draws = np.random.default_rng(SCORE_SEED).standard_normal((SCORE_NOISE_DRAWS, mu.shape[1]))
        total = np.zeros(X.shape[0])
        for eps in draws.astype(mu.dtype):
            eps = np.broadcast_to(eps, mu.shape)
            z = mu + sigma * eps
            errors = row_errors(self.loss_, self.decoder_.predict(z), X)
            if self.loss_ == "squared_error":
                s2 = float(self.decoder_std) ** 2
                log_likelihood = -errors / (2 * s2) - 0.5 * X.shape[1] * math.log(2 * math.pi * s2)
            else:
                log_likelihood = -errors
            total += log_likelihood - self._sampler.kl(mu, logvar, z, eps)
        return total / SCORE_NOISE_DRAWS

    def score_samples(self, X):
        """ELBO(x) for every row (see the class docstring).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Rows with the columns of ``fit`` (their number, or a DataFrame's names and order).

        Returns
        -------
        ndarray of float64, shape (n_samples,)

        Raises
        ------
        NotFittedError
            Before ``fit``.
        ValueError
            X with NaN or infinity, or other columns than in ``fit``.
        """
        X = self._checked(X)
        with self._threads():
            return self._elbo(X)

    def _score_output(self, output, X, sample_weight=None):
        """Early-stopping score: the (weighted) mean ELBO of the validation rows."""
        return float(np.average(self._elbo(X), weights=sample_weight))
