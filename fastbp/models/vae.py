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

    sum_j [(x_j - d_j(z))^2 / (2 v_j) + 1/2 log v_j] + KL
                          loss='squared_error': p(x | z) = N(d(z), diag v)
    sum_j [softplus(o_j) - x_j o_j] + KL
                          loss='cross_entropy': Bernoulli, logits o = d(z)

plus alpha / (2 batch_size) sum ||W||^2.  ``loss_curve_`` holds that objective: minus the ELBO up
to the constant D/2 log(2 pi) of the Gaussian.

The decoder's variance v: ``decoder_std=s`` fixes v_j = s^2; ``decoder_std='learned'`` (the
default) sets v_j to its maximum-likelihood value, the mean squared residual of feature j -- in
training each minibatch's (Rybkin et al. 2021, "Simple and Effective VAE Training with Calibrated
Decoders": the ELBO at its optimum in v, whose gradient in the networks is that with v held
fixed).  A fixed default cannot suit every scale of data: the weight 1 / v of the reconstruction
against the KL term decides how much of the data the code keeps.  A variance learned by gradient
steps instead would move log v by about ``learning_rate_init`` per Adam step: from var(x) to the
noise's (a factor of ~1000) takes thousands of steps, more than the default fit takes.  The
decoder's output bias starts at the data's mean.

After training, ``decoder_std_`` (what ``score_samples`` uses) is the maximum-likelihood std of
the residuals x_i - d(z_i) that training computed in the epoch whose weights the fit ends with:
the last epoch (with early stopping the best one; when no epoch of the call beats the earlier
best, its weights and ``decoder_std_`` stay; ``solver='lbfgs'``: the last iterate's evaluation,
every row at its fixed noise).  Each row of that epoch counts once, at its one draw of eps and the
weights of its minibatch's step: v_j = sum_i w_i (x_ij - d_j(z_i))^2 / sum_i w_i with the rows'
sample weights w_i (data-parallel: every rank's rows), the v that maximises the epoch's summed
objective, floored as in training (``fastbp.models._generative.residual_variance``).

Why, by measurement: the estimate at the final weights that this replaces ran the encoder once
and the decoder for 8 noise draws over every training row after each ``fit``/``partial_fit``,
2x the epoch of a 784-1000-500-250-30 VAE on 4096 rows (batch 128, Adam), so streaming with
``partial_fit`` cost 3x; one draw would still cost an encoder and a decoder pass over the rows,
about 40% of an epoch, and a lazy estimate would need X, which is not kept.  The sums cost nothing: each
step computes the residuals for its own variance anyway (``PenalisedSequential.
record_residuals``).  The price is weights that move during the epoch.  At the default settings
the two estimates agree (the new std over the old, per feature: 0.90-1.18, medians 1.01-1.02 on
the 2-D Gaussian in 8-D below, 3 seeds; 1.000-1.04 after each of 5 ``partial_fit`` epochs of the
VAE above on uniform data); where the steps move the weights much (the mixture example below,
lr 0.003: 0.99-1.6x) the final weights' estimate jumps from call to call (one feature: 0.042,
0.071, 0.080, 0.045 over 4 further epochs) and the epoch's is the steadier (0.052-0.069).

The defaults (``decoder_std='learned'``, ``prior='gaussian'``, ``n_iter_no_change=50``: the
sampled objective's noise from epoch to epoch hides slow progress over 10 epochs) were chosen
by measurement on a 2-D Gaussian embedded in 8-D (x = z A + b + 0.05 noise, 2000 rows, 5 seeds):
the samples' total variance over the data's, and ||cov(samples) - cov(x)||_F / ||cov(x)||_F:

    decoder_std='learned', prior='gaussian' (the defaults)   0.96-0.98   0.02-0.05
    decoder_std='learned', prior='fixed' (N(0, I))           0.71-0.86   0.23-0.31
    decoder_std=1.0, prior='gaussian'                        0.67-0.91   0.08-0.30
    decoder_std=1.0, N(0, I), n_iter_no_change=10 (before)   0.66-0.86   0.14-0.31
    decoder_std=0.1, N(0, I), n_iter_no_change=10            0.41-0.75   0.31-0.64

With N(0, I) the codes' spread stays off the prior's (the KL's pull on it is weak against a
calibrated reconstruction), so decoded prior draws miss the data's spread; a learned Gaussian
moves to the codes' mean and covariance (at its optimum m = mean mu(x), S = cov mu(x) +
mean diag sigma^2(x)).

The prior p(z) (``prior``; "CS771 Deep Learning III": find mu and Sigma such that the codes
e(x^i) are well approximated by N(mu, Sigma), or, more powerful, by a mixture of Gaussians):

- ``'fixed'``: N(0, I) (KL in closed form), or, with ``prior_means`` (C lists of
  ``n_components`` numbers), the equal-weight mixture sum_c N(m_c, prior_std^2 I) / C;
- ``'gaussian'``: N(m, S) with m and the Cholesky factor L of S = L L^T (its diagonal through
  exp, so positive) learned with the networks; KL in closed form;
- ``'mixture'``: sum_c pi_c N(m_c, diag v_c) with the C = ``n_prior_components`` means,
  diagonal variances and weights (pi = softmax of logits) learned with the networks, started by
  k-means of the untrained encoder's codes (as ``GaussianMixture`` starts).  Measured on codes
  from 3 Gaussians (weights 0.5, 0.3, 0.2) mapped linearly into 8-D, ``n_prior_components=3``,
  ``learning_rate_init=0.003``: in 4 of 6 seeds the components match the mixture (decoded means
  within 2% of the clusters' separation, weights within 0.01, every code in its cluster's
  component); in the others a component holds two clusters that the untrained encoder had
  mapped onto each other, and another dies.

A mixture's KL has no closed form and is estimated by Monte Carlo (log q(z | x) - log p(z) at the
sampled z).  The learned prior's parameters are parameters of the network like the weights
(``fastbp.models._generative.Reparameterize``): the same optimizer trains them, ``gradcheck``
checks them, ``save`` keeps them; ``prior_weights_``, ``prior_means_`` and ``prior_covariances_``
show the prior as a mixture (one component for a Gaussian).  The latent space is identified only
up to an affine map (the networks can absorb one), so a learned prior is judged through the
decoder -- its components' means decoded into data space -- or by how its components split the
codes, not by its numbers.

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

from fastbp import distributed
from fastbp.models._generative import (PRIORS, EncoderDecoder, PenalisedSequential, Reparameterize,
                                       check_n_components, check_nonnegative,
                                       log_variance, residual_variance, row_errors, store_params)
from fastbp.models._validation import check_is_fitted
from fastbp.models.mlp import _make_rng
from fastbp.nn import make_mlp
from fastbp.models.persist import register
from fastbp.models._docs import MLP_ATTRIBUTES, numpydoc, sections

__all__ = ["VAE"]

SCORE_SEED, SCORE_NOISE_DRAWS = 0, 8  # score_samples' noise: the same draws for every call


@register("VAE")
@numpydoc(*MLP_ATTRIBUTES, "encoder_", "decoder_", "prior_weights_", "prior_means_",
          "prior_covariances_", "decoder_std_")
class VAE(EncoderDecoder):
    """Variational autoencoder, scikit-learn style (see the module docstring).

    ``fit(X)``; ``transform(X)`` = the posterior means mu(x); ``inverse_transform(Z)`` = d(z);
    ``reconstruct(X)`` = d(mu(x)); ``sample(n)``; ``score_samples(X)`` = ELBO(x) per sample
    (E_q[log p(x | z)] averaged over 8 fixed draws of eps, so that it is repeatable; the KL term
    exact for a Gaussian prior, else estimated at the same z; the decoder's variance
    ``decoder_std_``), ``score(X)`` its mean.
    Training parameters and fitted attributes as for the MLP estimators, plus ``encoder_``
    (x -> [mu, log sigma^2]), ``decoder_``, the prior (``prior_weights_``, ``prior_means_``,
    ``prior_covariances_``) and ``decoder_std_``.

    """

    # files written before ``prior`` existed have N(0, I) or the fixed mixture (fastbp.load)
    _OLDER_DEFAULTS = {"prior": "fixed"}

    def __init__(self, n_components=2, encoder_layer_sizes=(100,), decoder_layer_sizes=None,
                 activation="relu", loss="squared_error", decoder_std="learned", prior_means=None,
                 prior_std=1.0, prior="gaussian", n_prior_components=10, *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=50, max_fun=15000,
                 activation_alpha=None, dtype="float32", n_threads=None,
                 checkpoint_segments=None):
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

    def _learned_std(self):
        """Whether the decoder's variance is learned (the squared error with 'learned')."""
        return isinstance(self.decoder_std, str) and self.decoder_std == "learned"

    def _check_model_params(self):
        super()._check_model_params()
        if not self._learned_std() and check_nonnegative(self.decoder_std, "decoder_std") == 0:
            raise ValueError(f"decoder_std must be > 0 or 'learned', got {self.decoder_std!r}")
        if check_nonnegative(self.prior_std, "prior_std") == 0:
            raise ValueError(f"prior_std must be > 0, got {self.prior_std!r}")
        if not isinstance(self.prior, str) or self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {list(PRIORS)}, got {self.prior!r}")
        c = self.n_prior_components
        if not isinstance(c, (int, np.integer)) or isinstance(c, bool) or c < 1:
            raise ValueError(f"n_prior_components must be an int >= 1, got {c!r}")
        if self._prior_means() is not None and self.prior != "fixed":
            raise ValueError(f"prior_means (and prior_std) give the fixed mixture prior: set "
                             f"prior='fixed' (prior={self.prior!r} learns its own)")
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
        self._sampler = Reparameterize(k, self._rng.spawn(1)[0], self.prior, self._prior_means(),
                                       float(self.prior_std), int(self.n_prior_components), dtype)
        variance = None
        if self.loss_ == "squared_error":
            variance = "learned" if self._learned_std() else float(self.decoder_std) ** 2
        return PenalisedSequential(self.encoder_.layers + [self._sampler] + self.decoder_.layers,
                                   decoder_variance=variance)

    def _train(self, X, Y, config, validation, incremental, sample_weight=None, callback=None):
        # data-parallel over sharded rows, the means over the training rows are over every
        # rank's (distributed.average); the mixture starts from rank 0's codes (the fit's start
        # broadcasts rank 0's parameters)
        if self._state.n_iter == 0:  # a fresh network: starts that depend on the data
            if self.loss_ == "squared_error":  # the decoder's output bias at the data's mean
                self.decoder_.dense_layers[-1].b[...] = distributed.average(X, sample_weight)
            if self._sampler.kind == "mixture" and self._sampler.learned:
                self._sampler.start_mixture(self._posterior(X)[0], self._rng)
        if not (self.loss_ == "squared_error" and self._learned_std()):
            super()._train(X, Y, config, validation, incremental, sample_weight, callback)
            return
        # decoder_std_ from the residuals training computes (the module docstring): those of the
        # epoch whose weights the fit ends with -- the last, or with early stopping the best
        # (none of this call's: the weights, and decoder_std_, stay the earlier ones)
        network, lbfgs = self._network, config.solver == "lbfgs"
        tally, kept = np.zeros(X.shape[1] + 3), None
        best = self._state.best_validation_score

        def record(sums):  # every training step's; an L-BFGS evaluation takes all the rows
            if lbfgs:
                tally[...] = sums
            else:
                np.add(tally, sums, out=tally)

        def epoch_end(state):  # after every epoch (L-BFGS: iteration) but a partial fit's one
            nonlocal kept, best
            if validation is None or state.best_validation_score > best:
                kept, best = tally.copy(), state.best_validation_score
            if not lbfgs:
                tally[...] = 0.0
            return callback is not None and callback(state)

        network.record_residuals = record
        try:
            super()._train(X, Y, config, validation, incremental, sample_weight, epoch_end)
        finally:
            network.record_residuals = None
        sums = kept if kept is not None else tally if validation is None else None
        if sums is not None:
            parallel = distributed.current()
            if parallel is not None:  # each rank holds its rows of every step
                parallel.allreduce(sums)
            self.decoder_std_ = np.sqrt(residual_variance(sums, X.dtype))

    def _publish(self):
        super()._publish()
        self.prior_weights_, self.prior_means_, self.prior_covariances_ = \
            self._sampler.components()
        if self.loss_ != "squared_error":
            self.decoder_std_ = None
        elif not self._learned_std():
            self.decoder_std_ = np.full(self.n_features_in_, float(self.decoder_std))

    # ------------------------------------------------------------------------------ persistence
    def _fitted_arrays(self):
        arrays = super()._fitted_arrays()
        if self.loss_ == "squared_error" and self._learned_std():
            arrays["decoder_std_"] = self.decoder_std_
        return arrays

    def _restore_state(self, arrays, meta):
        super()._restore_state(arrays, meta)
        try:
            with np.errstate(all="ignore"):
                covariances = self._sampler.components()[2]
                usable = (np.isfinite(covariances).all()
                          and np.linalg.eigvalsh(covariances).min() > 0
                          and np.isfinite(np.linalg.inv(covariances)).all())
        except np.linalg.LinAlgError:
            usable = False
        if not usable:
            raise ValueError("the learned prior's covariances must be finite and positive "
                             "definite, with a finite inverse")
        if self.loss_ == "squared_error" and self._learned_std():
            std = arrays["decoder_std_"]
            if (std.dtype != np.float64 or std.shape != (self.n_features_in_,)
                    or not (std > 0).all()):
                raise ValueError(f"decoder_std_ must be {self.n_features_in_} float64 numbers > 0, "
                                 f"got {std.dtype} of shape {std.shape}")
            self.decoder_std_ = std

    # ------------------------------------------------------------------------------- inference
    def _posterior(self, X):
        """mu and the variance output s (log sigma^2 below the knee) of q(z | x) for validated X."""
        H = self._predict(self.encoder_, X)
        k = self._sampler.k
        return H[:, :k], H[:, k:]

    @sections(["X"], "codes", ["not fitted", "bad X"])
    def transform(self, X):
        """The posterior means mu(x) of q(z | x)."""
        return np.ascontiguousarray(self._posterior(self._checked(X))[0])

    @sections(["n_samples", "random_state of z"],
              ("X", "ndarray of shape (n_samples, n_features)",
               "The decoder's mean (probabilities for ``loss='cross_entropy'``), of the model's "
               "``dtype``."),
              ["not fitted"])
    def sample(self, n_samples=1, random_state=None):
        """New data points d(z), z ~ p(z)."""
        check_is_fitted(self)
        rng = self._rng if random_state is None else _make_rng(random_state)
        z = self._sampler.sample_prior(int(n_samples), rng, self._network.dtype)
        return self._predict(self.decoder_, z, self._decoder_output())

    def _elbo_terms(self, X):
        """For validated X, over SCORE_NOISE_DRAWS fixed noise vectors eps, the same for every
        row (so a row's terms depend on that row alone), the means of: the squared residuals
        (x - d(z))^2 (n x D) for the squared error, else the row errors (n,); KL per row (n,)."""
        mu, s = self._posterior(X)
        logvar = log_variance(s)
        sigma = np.exp(0.5 * logvar)
        draws = np.random.default_rng(SCORE_SEED).standard_normal((SCORE_NOISE_DRAWS, mu.shape[1]))
        errors, kl = 0.0, 0.0
        for eps in draws.astype(mu.dtype):
            eps = np.broadcast_to(eps, mu.shape)
            z = mu + sigma * eps
            output = self.decoder_.predict(z)
            if self.loss_ == "squared_error":
                residual = output.astype(np.float64) - X
                errors = errors + residual * residual
            else:
                errors = errors + row_errors(self.loss_, output, X)
            kl = kl + self._sampler.kl(mu, logvar, z, eps)
        return errors / SCORE_NOISE_DRAWS, kl / SCORE_NOISE_DRAWS

    def _elbo(self, errors, kl, decoder_std=None):
        """ELBO(x) per row from its ``_elbo_terms`` (the decoder's std ``decoder_std``, else
        ``decoder_std_``)."""
        if self.loss_ != "squared_error":
            return -errors - kl
        variance = (self.decoder_std_ if decoder_std is None else decoder_std) ** 2
        return (-np.sum(errors / (2 * variance), axis=1)
                - 0.5 * np.sum(np.log(2 * math.pi * variance)) - kl)

    @sections(["X"], "row scores", ["not fitted", "bad X"])
    def score_samples(self, X):
        """ELBO(x) for every row (see the class docstring)."""
        X = self._checked(X)
        with self._threads():
            return self._elbo(*self._elbo_terms(X))

    def _score_output(self, output, X, sample_weight=None):
        """Early-stopping score: the (weighted) mean ELBO of the validation rows (a learned
        decoder variance at its maximum-likelihood value on them: training has not fixed it
        yet)."""
        errors, kl = self._elbo_terms(X)
        std = None
        if self.loss_ == "squared_error" and self._learned_std():
            w = np.ones(X.shape[0]) if sample_weight is None else sample_weight
            std = np.sqrt(residual_variance(np.concatenate(
                [w @ errors, [w.sum(), np.square(X, dtype=np.float64).sum(), X.size]]), X.dtype))
        return float(np.average(self._elbo(errors, kl, std), weights=sample_weight))
