"""Pieces shared by the generative models (``Autoencoder``, ``VAE``, ``GAN``).

Lecture notation: an encoder e maps x to a code h = e(x) (the bottleneck, or the latent z of a
VAE); a decoder d maps the code back to a reconstruction r = d(h); training lowers
l(d(e(x)), x) by backprop.

The regularisers that act on the code -- the sparse autoencoder's penalty on e(x) and the VAE's
reparameterisation with its KL term -- are written as :class:`fastbp.nn.Layer` s sitting between
the encoder's and the decoder's Dense layers.  Their backward adds the penalty's gradient to the
gradient that arrives from the decoder, so a whole model stays one network that
``fastbp.training.fit_network`` trains like any other (:class:`PenalisedSequential` adds the
penalty values to the loss).  The compiled fast path (``fastbp.engine``) takes plain stacks of
Dense layers only; a network with one of these layers trains layer by layer, and its
``fit_path_`` says so ("layerwise: not a plain Dense/Dropout stack (SparsityPenalty layer)").
"""
import dataclasses
import math

import numpy as np
from scipy import special

from sklearn import cluster
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin

from fastbp.models import export

from fastbp.models._docs import sections
from fastbp.models._validation import check_data, check_is_fitted, check_X
from fastbp.models.mlp import _BaseMLP, partial_fit_available
from fastbp.nn import Layer, Sequential, _BufferCache, make_mlp, row_losses, row_weights

__all__ = ["GenerativeBase", "EncoderDecoder", "SparsityPenalty", "Reparameterize", "PRIORS",
           "log_variance", "LOG_VARIANCE_KNEE", "decoder_variance", "residual_variance",
           "PenalisedSequential", "hourglass", "store_params",
           "check_fraction", "check_nonnegative", "check_sizes", "check_n_components"]


def store_params(estimator, arguments):
    """scikit-learn style: every ``__init__`` argument stored unchanged under its own name."""
    for name, value in arguments.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


def check_nonnegative(value, name):
    """A finite float >= 0 (noise levels, penalty weights); ValueError otherwise."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def check_fraction(value, name, closed_high=False):
    """A float in (0, 1) (or (0, 1]); ValueError otherwise."""
    value = check_nonnegative(value, name)
    if not (0 < value < 1 or (closed_high and value == 1)):
        raise ValueError(f"{name} must lie in (0, 1{']' if closed_high else ')'}, got {value!r}")
    return value


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_sizes(sizes, name):
    """A tuple of positive ints (layer widths); ValueError otherwise."""
    sizes = (sizes,) if _is_int(sizes) else sizes
    if not hasattr(sizes, "__iter__") or not all(_is_int(s) and s >= 1 for s in sizes):
        raise ValueError(f"{name} must be a sequence of positive ints, got {sizes!r}")
    return tuple(int(s) for s in sizes)


def check_n_components(n_components):
    """The code size: an int >= 1; ValueError otherwise."""
    if not _is_int(n_components) or n_components < 1:
        raise ValueError("n_components (the size of the code) must be an int >= 1, "
                         f"got {n_components!r}")
    return int(n_components)


# The reconstruction losses: parameter value -> kernel loss (computed from the output logits).
RECONSTRUCTION_LOSSES = {"squared_error": "squared_error", "cross_entropy": "sigmoid_cross_entropy"}


def reconstruction_loss(name):
    """The kernel loss of a ``loss`` parameter; ValueError if unknown."""
    if name not in RECONSTRUCTION_LOSSES:
        raise ValueError(f"loss must be one of {list(RECONSTRUCTION_LOSSES)}, got {name!r}")
    return RECONSTRUCTION_LOSSES[name]


def check_unit_interval(X, loss):
    """The cross-entropy loss models inputs in [0, 1] (e.g. pixel intensities)."""
    if loss == "sigmoid_cross_entropy" and X.size and (X.min() < 0 or X.max() > 1):
        raise ValueError("loss='cross_entropy' needs X in [0, 1]; got values in "
                         f"[{X.min()}, {X.max()}] (scale X, or use loss='squared_error')")


def row_errors(loss, output, X):
    """Per-row reconstruction error (float64): ||r - x||^2 for squared error, the binary
    cross-entropy sum_j [softplus(o_j) - x_j o_j] from the logits o for cross-entropy."""
    errors = row_losses(loss, output, X.astype(np.float64))
    return 2 * errors if loss == "squared_error" else errors


def hourglass(n_features, encoder_sizes, n_components, decoder_sizes, activation, code_activation,
              output_activation, dtype, rng, activation_alpha=None):
    """Encoder d -> encoder_sizes -> k and decoder k -> decoder_sizes -> d as two Sequentials
    (the layers are shared with any network built from their ``layers``)."""
    encoder = make_mlp(n_features, encoder_sizes, n_components, activation, code_activation,
                       dtype=dtype, rng=rng, activation_alpha=activation_alpha)
    decoder = make_mlp(n_components, decoder_sizes, n_features, activation, output_activation,
                       dtype=dtype, rng=rng, activation_alpha=activation_alpha)
    return encoder, decoder


class _Penalty(Layer):
    """A layer with no parameters that adds a term to the objective: ``value`` is that term for
    the last training forward (a mean over the rows, weighted by ``row_weights`` -- the batch's
    ``fastbp.nn.row_weights``, mean 1 -- when set), 0 otherwise.

    It trains data-parallel (``fastbp.distributed``): its terms are per row, scaled like the loss,
    and a statistic over the whole minibatch goes through ``share`` (a
    ``fastbp.distributed.Share`` that a data-parallel epoch sets for each step: this rank's rows
    are only part of the minibatch; None otherwise)."""

    value = 0.0
    row_weights = None
    share = None

    def _row_scale(self, n, dtype, coefficient=1.0):
        """``coefficient`` times the factor of row i in the mean over the rows: v_i / n as an
        (n, 1) column of ``dtype``, or 1 / n (a ``dtype`` scalar) without row weights."""
        if self.row_weights is None:
            return dtype.type(coefficient / max(n, 1))
        return (coefficient / max(n, 1) * self.row_weights).astype(dtype)[:, None]

    def _reset_cache(self):
        self._cache = _BufferCache(self._make_buffers)
        self.value = 0.0
        self.row_weights = None

    def forward(self, X, training=False, keep=True):
        return self._forward(np.ascontiguousarray(X), training, keep)

    def backward(self, dA, need_dX=True):
        return self._backward(np.ascontiguousarray(dA), need_dX)


class SparsityPenalty(_Penalty):
    """Identity on the code h = e(x), with a sparsity penalty on it (the lecture's sparse AE).

    - ``'l1'``: weight * mean_i ||h_i||_1, gradient weight * sign(h) / n;
    - ``'kl'``: weight * sum_j KL(rho || rho_hat_j) with rho_hat_j = mean_i h_ij the mean
      activation of unit j over the batch (h in (0, 1): a sigmoid code), gradient
      weight * (-rho / rho_hat_j + (1 - rho) / (1 - rho_hat_j)) / n.  In a data-parallel step
      rho_hat is the mean over the global minibatch (``share.mean``: a collective in the forward
      pass), so that the term and its gradient are one process's.
    """

    _transient = ("_cache", "H", "row_weights", "rho_hat")

    def __init__(self, kind, weight, rho=0.05):
        if kind not in ("l1", "kl"):
            raise ValueError(f"sparsity must be 'l1' or 'kl', got {kind!r}")
        self.kind, self.weight, self.rho = kind, float(weight), float(rho)
        self._reset_cache()

    def _reset_cache(self):
        super()._reset_cache()
        self.H = self.rho_hat = None

    def _make_buffers(self, key):
        return np.empty(key[0], key[1])

    def _forward(self, X, training, keep=True):
        if not (training and keep):
            return X
        self.H = X
        if self.kind == "l1":
            scratch = self._cache.get((X.shape, X.dtype))  # backward's buffer, free until then
            np.abs(X, out=scratch)
            if self.row_weights is None:
                self.value = self.weight * float(scratch.sum()) / max(X.shape[0], 1)
            else:
                scratch *= self._row_scale(X.shape[0], X.dtype)
                self.value = self.weight * float(scratch.sum())
        else:
            rho, rho_hat = self.rho, self._rho_hat(X)
            self.rho_hat = rho_hat  # for backward (a data-parallel step reduces it once)
            self.value = self.weight * float(np.sum(special.rel_entr(rho, rho_hat)
                                                    + special.rel_entr(1 - rho, 1 - rho_hat)))
        return X

    def _rho_hat(self, H):
        """The (weighted) mean activation of every code unit over the batch (over the global
        minibatch in a data-parallel step)."""
        eps = np.finfo(H.dtype).eps
        mean = (H.sum(axis=0, dtype=np.float64) if self.row_weights is None
                else self.row_weights @ H) / max(H.shape[0], 1)
        if self.share is not None:
            mean = self.share.mean(mean)
        return np.clip(mean, eps, 1 - eps)

    def _backward(self, dA, need_dX):
        H = self.H
        dX = self._cache.get((H.shape, H.dtype))
        if self.kind == "l1":
            np.sign(H, out=dX)
            dX *= self._row_scale(H.shape[0], H.dtype, self.weight)
        else:
            rho, rho_hat = self.rho, self.rho_hat
            scale = self._row_scale(H.shape[0], np.dtype(np.float64), self.weight)
            dX[...] = (scale * ((1 - rho) / (1 - rho_hat) - rho / rho_hat)).astype(H.dtype)
        dX += dA
        return dX

    def engine_penalty(self):
        """How the compiled engine computes this penalty itself (``fastbp.nn.Sequential.
        engine_stack``): (kind, weight, rho), the same formulas."""
        return self.kind, self.weight, self.rho

    def __repr__(self):
        return f"SparsityPenalty({self.kind!r}, weight={self.weight}, rho={self.rho})"


# The encoder's variance output s is log sigma^2 up to s = LOG_VARIANCE_KNEE; above, log sigma^2 =
# knee + log(1 + s - knee) (the same value and slope at the knee), so that sigma^2 grows only
# linearly in s: a huge s (large inputs at initialisation) cannot overflow exp.
LOG_VARIANCE_KNEE = 10.0


def log_variance(s, out=None):
    """log sigma^2 from the encoder's variance outputs s (see ``LOG_VARIANCE_KNEE``): s itself
    (the same array) when no entry exceeds the knee, else the bent values (in ``out`` if given)."""
    knee = s.dtype.type(LOG_VARIANCE_KNEE)
    if not s.size or s.max() <= knee:
        return s
    out = np.empty_like(s) if out is None else out
    np.subtract(s, knee, out=out)
    np.maximum(out, 0, out=out)
    np.log1p(out, out=out)
    np.add(out, np.minimum(s, knee), out=out)
    return out


PRIORS = ("fixed", "gaussian", "mixture")


class Reparameterize(_Penalty):
    """The VAE's sampling layer: input [mu, s] (n x 2k), output z (n x k); it holds the prior p(z).

    s is log sigma^2 (bent above ``LOG_VARIANCE_KNEE``, see :func:`log_variance`, so that sigma
    stays finite for any finite s).  Training: z = mu + sigma * eps with eps ~ N(0, I) drawn from
    ``rng`` (or the fixed array ``noise`` when set, for gradient checks), and ``value`` =
    mean_i KL(q(z | x_i) || p(z)).  Inference: z = mu.  Backward is the reparameterisation trick:
    dz flows to mu unchanged and to log sigma^2 as dz * eps * sigma / 2, plus the KL term's own
    gradient; then to s through d log sigma^2 / ds (1 below the knee, 1 / (1 + s - knee) above).

    The prior (``prior``; "CS771 Deep Learning III": find mu and Sigma so that the codes are well
    approximated by N(mu, Sigma), or by a mixture of Gaussians):

    - ``'fixed'``: N(0, I), KL in closed form, KL = 1/2 sum_j (mu_j^2 + sigma_j^2 - log sigma_j^2
      - 1); or, with ``prior_means`` (C x k) and ``prior_std`` s, the equal-weight mixture
      sum_c 1/C N(m_c, s^2 I).  Nothing is learned.
    - ``'gaussian'``: N(m, S), S = L L^T, learned.  Parameters ``prior_loc`` (m, shape (k,)) and
      ``prior_tril`` (k x k): L's entries below the diagonal as they are, its diagonal as
      log L_jj (so L_jj > 0), its upper triangle unused (gradient 0).  Starts at N(0, I).  KL in
      closed form, KL = 1/2 [tr(S^-1 diag sigma^2) + (mu - m)^T S^-1 (mu - m) - k + log det S
      - sum_j log sigma_j^2].
    - ``'mixture'``: sum_c pi_c N(m_c, diag v_c) over C = ``n_prior_components`` components,
      learned.  Parameters ``prior_means`` (C x k), ``prior_log_variances`` (C x k: log v_c)
      and ``prior_logits`` (C: pi = softmax), started by :meth:`start_mixture` from the codes
      (at construction: means drawn from N(0, I), unit variances, equal weights).
      Diagonal variances: one affine map of the code (which the encoder and decoder absorb) can
      not reshape every component alike, so each has its own axis lengths; they cost O(C k), like
      the posterior's diagonal, where full ones would need C factorisations per step.

    A mixture's KL has no closed form and is estimated by Monte Carlo with the same z:
    log q(z | x) - log p(z).  A learned prior's arrays are parameters of this layer
    (``param_names``, the network's ``params()``): the optimizer trains them with the networks'
    weights, from the gradients ``backward`` writes.

    Data-parallel (``fastbp.distributed``): ``rows`` is (lo, hi, total) in a data-parallel epoch
    over replicated rows, as for ``fastbp.nn.Dropout``: the input is rows [lo, hi) of a minibatch
    of ``total`` rows, and eps is those rows of the draw for the whole minibatch (one process's
    draw).  The KL term is per row and the prior's gradients are sums over the rows, so the
    ranks' sums add up to the minibatch's.
    """

    _transient = ("_cache", "saved", "row_weights")
    rows = None  # (lo, hi, total) in a data-parallel epoch, see above

    def __init__(self, n_components, rng=None, prior="fixed", prior_means=None, prior_std=1.0,
                 n_prior_components=1, dtype=np.float64):
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {list(PRIORS)}, got {prior!r}")
        self.k = k = int(n_components)
        self.rng = np.random.default_rng(rng)
        self.noise = None
        self.learned = prior != "fixed"
        self.kind = "mixture" if prior == "fixed" and prior_means is not None else prior
        if prior == "gaussian":
            self.prior_loc, self.prior_tril = np.zeros(k, dtype), np.zeros((k, k), dtype)
        elif prior == "mixture":
            c = int(n_prior_components)
            self.prior_means = self.rng.standard_normal((c, k)).astype(dtype)
            self.prior_log_variances = np.zeros((c, k), dtype)
            self.prior_logits = np.zeros(c, dtype)
        elif self.kind == "mixture":  # the fixed mixture, in float64
            self.prior_means = np.asarray(prior_means, np.float64)
            c = len(self.prior_means)
            self.prior_log_variances = np.full((c, k), 2 * math.log(float(prior_std)))
            self.prior_logits = np.zeros(c)
        else:
            self.kind = "standard"
        self.param_names = (("prior_loc", "prior_tril") if prior == "gaussian" else
                            ("prior_means", "prior_log_variances", "prior_logits")
                            if prior == "mixture" else ())
        self.grad_names = tuple(f"d_{name}" for name in self.param_names)
        for name, grad in zip(self.param_names, self.grad_names):
            setattr(self, grad, np.zeros_like(getattr(self, name)))
        self._reset_cache()

    def _reset_cache(self):
        super()._reset_cache()
        self.saved = None

    def start_mixture(self, codes, rng):
        """Start a learned mixture from the codes mu(x) of the untrained encoder (n x k), as
        scikit-learn's ``GaussianMixture`` starts: k-means (its ``KMeans``, one run seeded from
        ``rng``) splits them into C groups, whose means, variances per dimension and shares of
        the rows become the components' (the codes' variances for a group of one row).  Fewer
        than C rows: the start at construction stays."""
        codes = np.asarray(codes, np.float64)
        c = len(self.prior_means)
        if len(codes) < c:
            return
        labels = cluster.KMeans(c, n_init=1, random_state=int(rng.integers(np.iinfo(np.int32).max))
                                ).fit(codes).labels_
        floor = 1e-6 * (float(codes.var(axis=0).mean()) or 1.0)  # not 0: identical codes
        for j in range(c):
            group = codes[labels == j]
            self.prior_means[j] = group.mean(axis=0)
            self.prior_log_variances[j] = np.log(np.maximum(
                (group if len(group) > 1 else codes).var(axis=0), floor))
            self.prior_logits[j] = math.log(len(group) / len(codes))

    def _make_buffers(self, key):
        (n, _), dtype = key
        z, eps, sigma, work, bent = (np.empty((n, self.k), dtype) for _ in range(5))
        return z, eps, sigma, work, np.empty((n, 2 * self.k), dtype), bent

    def _split(self, X):
        if X.ndim != 2 or X.shape[1] != 2 * self.k:
            raise ValueError(f"expected {2 * self.k} columns (mean, log-variance), got {X.shape}")
        return X[:, :self.k], X[:, self.k:]

    # ------------------------------------------------------------------- the prior, in float64
    def _gaussian(self):
        """(m, L, L^-1) of the Gaussian prior (NumPy's inverse: its BLAS, not a second one).
        An L that training made singular (exp underflowing) has a NaN inverse, which the
        training loop's check of the objective reports."""
        raw = self.prior_tril.astype(np.float64)
        L = np.tril(raw, -1) + np.diag(np.exp(np.diagonal(raw)))
        try:
            inverse = np.linalg.inv(L)
        except np.linalg.LinAlgError:
            inverse = np.full_like(L, np.nan)
        return self.prior_loc.astype(np.float64), L, inverse

    def _mixture(self):
        """(means, log-variances, log-weights) of the mixture prior."""
        return (self.prior_means.astype(np.float64), self.prior_log_variances.astype(np.float64),
                special.log_softmax(self.prior_logits.astype(np.float64)))

    def _log_joint(self, z):
        """log pi_c + log N(z; m_c, diag v_c) for every row and component (n x C), and the
        scaled differences (z - m_c) / v_c (n x C x k)."""
        means, log_variances, log_weights = self._mixture()
        diff = z.astype(np.float64)[:, None, :] - means[None]
        scaled = diff * np.exp(-log_variances)
        return (log_weights - 0.5 * (np.einsum("nck,nck->nc", diff, scaled)
                                     + log_variances.sum(axis=1) + self.k * math.log(2 * math.pi)),
                diff, scaled)

    def components(self):
        """The prior as a mixture: (weights (C,), means (C, k), covariances (C, k, k)), float64
        (C = 1 for a Gaussian)."""
        if self.kind == "standard":
            return np.ones(1), np.zeros((1, self.k)), np.eye(self.k)[None]
        if self.kind == "gaussian":
            m, L, _ = self._gaussian()
            return np.ones(1), m[None], (L @ L.T)[None]
        means, log_variances, log_weights = self._mixture()
        variances = np.exp(log_variances)
        return (np.exp(log_weights), means,
                variances[:, :, None] * np.eye(self.k)[None])

    def log_prior(self, z):
        """log p(z) per row (float64)."""
        z = z.astype(np.float64)
        if self.kind == "standard":
            return -0.5 * np.sum(z * z + np.log(2 * np.pi), axis=1)
        if self.kind == "gaussian":
            m, L, M = self._gaussian()
            w = (z - m) @ M.T
            return (-0.5 * np.sum(w * w, axis=1) - np.log(np.diagonal(L)).sum()
                    - 0.5 * self.k * math.log(2 * math.pi))
        return special.logsumexp(self._log_joint(z)[0], axis=1)

    def kl(self, mu, logvar, z=None, eps=None):
        """Per-row KL(q || p) (float64): closed form for a Gaussian prior, else the estimate at
        z.  ``logvar``: log sigma^2 (:func:`log_variance` of the encoder's output)."""
        mu, logvar = mu.astype(np.float64), logvar.astype(np.float64)
        if self.kind == "standard":
            return 0.5 * np.sum(mu * mu + np.exp(logvar) - logvar - 1.0, axis=1)
        if self.kind == "gaussian":
            m, L, M = self._gaussian()  # S^-1 = M^T M
            delta = (mu - m) @ M.T
            return 0.5 * (np.exp(logvar) @ np.sum(M * M, axis=0) + np.sum(delta * delta, axis=1)
                          - self.k + 2 * np.log(np.diagonal(L)).sum() - logvar.sum(axis=1))
        log_q = -0.5 * np.sum(np.log(2 * np.pi) + logvar + eps.astype(np.float64) ** 2, axis=1)
        return log_q - self.log_prior(z)

    def sample_prior(self, n, rng, dtype):
        """n draws z ~ p(z)."""
        z = rng.standard_normal((n, self.k))
        if self.kind == "gaussian":
            m, L, _ = self._gaussian()
            z = m + z @ L.T
        elif self.kind == "mixture":
            means, log_variances, log_weights = self._mixture()
            c = rng.choice(len(means), n, p=np.exp(log_weights) if self.learned else None)
            z = means[c] + np.exp(0.5 * log_variances[c]) * z
        return z.astype(dtype)

    # --------------------------------------------------------------------------------- training
    def _row_factors(self, n):
        """Each row's factor in the mean over the rows, float64 (n,): v_i / n or 1 / n."""
        if self.row_weights is None:
            return np.full(n, 1.0 / max(n, 1))
        return self.row_weights / max(n, 1)

    def _forward(self, X, training, keep=True):
        mu, s = self._split(X)
        if not training:
            return np.ascontiguousarray(mu)
        z, eps, sigma, work, _, bent = self._cache.get((X.shape, X.dtype))
        if self.noise is not None:
            eps[...] = self.noise
        elif self.rows is None:
            self.rng.standard_normal(dtype=X.dtype, out=eps)
        else:  # this rank's rows of the whole minibatch's draw
            lo, hi, total = self.rows
            whole = self._cache.get(((total, 2 * self.k), X.dtype))[1]
            self.rng.standard_normal(dtype=X.dtype, out=whole)
            eps[...] = whole[lo:hi]
        logvar = log_variance(s, bent)
        np.multiply(logvar, X.dtype.type(0.5), out=sigma)
        np.exp(sigma, out=sigma)
        np.multiply(sigma, eps, out=z)
        z += mu
        self.saved = (mu, s, logvar, z, eps, sigma, work)
        n = X.shape[0]
        if self.kind == "standard" and self.row_weights is None:  # without temporaries
            self.value = 0.5 * float(np.einsum("ij,ij->", mu, mu) + np.vdot(sigma, sigma)
                                     - logvar.sum() - mu.size) / max(n, 1)
        else:
            self.value = float(self._row_factors(n) @ self.kl(mu, logvar, z, eps))
        return z

    def _backward(self, dA, need_dX):
        mu, s, logvar, z, eps, sigma, work = self.saved
        one = mu.dtype.type(1)
        n = mu.shape[0]
        dX = self._cache.get(((n, 2 * self.k), mu.dtype))[4]
        dmu, dlogvar = dX[:, :self.k], dX[:, self.k:]
        if self.kind == "standard":  # closed form: dKL/dmu = mu / n, dKL/dlogvar = (s^2 - 1) / 2n
            scale = self._row_scale(n, mu.dtype)  # each row's factor in the mean: 1/n
            np.multiply(mu, scale, out=dmu)
            dmu += dA
            np.multiply(sigma, sigma, out=work)
            work -= one
            work *= scale
            np.multiply(dA, eps, out=dlogvar)
            dlogvar *= sigma
            dlogvar += work
            dlogvar *= mu.dtype.type(0.5)
        else:
            factors = self._row_factors(n)
            if self.kind == "gaussian":
                self._gaussian_backward(mu, logvar, factors, dmu, dlogvar)
                np.multiply(dA, eps, out=work)
                work *= sigma
                work *= mu.dtype.type(0.5)
                dlogvar += work
                dmu += dA
            else:  # Monte Carlo: -log p(z) through z, and d log q / d logvar = -1/2
                self._mixture_backward(z, factors, dmu)
                dmu += dA
                np.multiply(dmu, eps, out=dlogvar)
                dlogvar *= sigma
                dlogvar -= factors.astype(mu.dtype)[:, None]
                dlogvar *= mu.dtype.type(0.5)
        if logvar is not s:  # through the bend: d log sigma^2 / ds = 1 / (1 + max(s - knee, 0))
            np.subtract(s, mu.dtype.type(LOG_VARIANCE_KNEE), out=work)
            np.maximum(work, 0, out=work)
            work += one
            dlogvar /= work
        return dX

    def _gaussian_backward(self, mu, logvar, factors, dmu, dlogvar):
        """The closed-form KL's gradients (rows weighted by ``factors``): dmu (before the
        decoder's), dlogvar (its KL part), and the prior's d_prior_loc, d_prior_tril."""
        m, L, M = self._gaussian()
        precision = M.T @ M  # S^-1
        delta = mu.astype(np.float64) - m
        variance = np.exp(logvar.astype(np.float64))
        grad_mu = delta @ precision  # dKL_i / dmu_i = S^-1 (mu_i - m)
        dmu[...] = factors[:, None] * grad_mu
        dlogvar[...] = 0.5 * factors[:, None] * (variance * np.diagonal(precision) - 1.0)
        self.d_prior_loc[...] = -(factors @ grad_mu)
        # sum_i f_i KL_i = 1/2 [tr(S^-1 W) + (sum_i f_i) log det S] + terms without S, where
        # W = sum_i f_i (diag sigma_i^2 + delta_i delta_i^T); its gradient in L is
        # (sum_i f_i) S^-1 L - S^-1 W S^-1 L = (sum_i f_i) M^T - S^-1 W M^T
        W = (factors[:, None] * delta).T @ delta + np.diag(factors @ variance)
        grad_L = factors.sum() * M.T - precision @ W @ M.T
        self.d_prior_tril[...] = np.tril(grad_L, -1) + np.diag(np.diagonal(grad_L)
                                                               * np.diagonal(L))

    def _mixture_backward(self, z, factors, dmu):
        """The gradient of -log p(z) (rows weighted by ``factors``): into dmu (dz/dmu = 1) and,
        for a learned mixture, d_prior_means, d_prior_log_variances, d_prior_logits."""
        joint, diff, scaled = self._log_joint(z)
        resp = special.softmax(joint, axis=1)  # responsibilities r_c(z)
        dmu[...] = factors[:, None] * np.einsum("nc,nck->nk", resp, scaled)
        if self.learned:
            weighted = factors[:, None] * resp
            self.d_prior_means[...] = -np.einsum("nc,nck->ck", weighted, scaled)
            self.d_prior_log_variances[...] = -0.5 * (np.einsum("nc,nck->ck", weighted,
                                                                diff * scaled)
                                                      - weighted.sum(axis=0)[:, None])
            self.d_prior_logits[...] = (factors.sum() * special.softmax(
                self.prior_logits.astype(np.float64)) - weighted.sum(axis=0))

    def __repr__(self):
        prior = {"standard": "N(0, I)", "gaussian": "learned Gaussian"}.get(
            self.kind, f"{'learned' if self.learned else 'fixed'} {len(self.prior_means)}-mixture")
        return f"Reparameterize({self.k}, prior={prior})"


def decoder_variance(mean_squares, data_mean_square, dtype):
    """The decoder's maximum-likelihood variance per feature: the mean squared residuals
    ``mean_squares`` (float64, one per feature), floored at the resolution of the data (the
    square of its ``dtype``'s eps times ``data_mean_square``, the mean of the data's squared
    entries; at least the smallest normal float64), so that a feature the decoder reproduces
    exactly keeps a finite likelihood."""
    floor = np.finfo(dtype).eps ** 2 * float(data_mean_square)
    return np.maximum(mean_squares, max(floor, np.finfo(np.float64).tiny))


def residual_variance(sums, dtype):
    """:func:`decoder_variance` from residual sums laid out as ``PenalisedSequential.
    record_residuals`` gives them (added over steps, rows or ranks): the weighted mean squared
    residual of each feature, floored by the data's mean square."""
    n_features = sums.shape[0] - 3
    weight, data_squares, entries = sums[n_features:]
    return decoder_variance(sums[:n_features] / weight, data_squares / max(entries, 1), dtype)


class PenalisedSequential(Sequential):
    """A Sequential whose objective is the data loss + the ``value`` of every penalty layer.  Its
    Dense layers need not chain directly (the VAE's sampling layer halves the width).

    With ``decoder_variance`` (squared error only) the data loss is the Gaussian's
    -log N(x; d(z), diag v) up to the constant D/2 log 2 pi, per row
    sum_j [(x_j - d_j(z))^2 / (2 v_j) + 1/2 log v_j]: v = ``decoder_variance`` for every
    feature when it is a number, or, for ``'learned'``, each minibatch's maximum-likelihood
    value (:func:`decoder_variance` of its mean squared residuals; the gradient in d(z) is then
    that with v held fixed, as v's own gradient is 0 at its optimum).  In a data-parallel step
    (``share``, a ``fastbp.distributed.Share``, set by the epoch as on the penalty layers) the
    mean squared residuals, and the data's mean square under the variance's floor, are the
    global minibatch's (a collective), so that v is one process's.

    ``record_residuals`` (a learned variance only; None by default) is called after every
    training step (``_loss_and_grad``: each minibatch of an epoch, each L-BFGS evaluation; not an
    evaluation of the objective alone, such as the training loop's start loss) with that step's
    sums over this process's rows, a float64 array of D + 3 numbers
    [sum_i w_i (x_ij - d_j(z_i))^2 for each feature j, sum_i w_i, sum_i ||x_i||^2, n D]: w_i the
    rows' sample weights (1 without; in a data-parallel step the share's rows weighted as the
    share is, ``fastbp.distributed.Share.weight``), n D the entries of x.  Sums, not means, so
    that steps and ranks add up: :func:`residual_variance` turns them into the variance.
    """

    share = None
    record_residuals = None  # see the class docstring
    _step_residuals = None  # the last step's sums, until _loss_and_grad hands them on

    def __init__(self, layers, decoder_variance=None):
        self.layers = list(layers)
        dtypes = {layer.dtype for layer in self.dense_layers}
        if len(dtypes) != 1:
            raise TypeError(
                f"all Dense layers must share one dtype, got {sorted(map(str, dtypes))}")
        self.decoder_variance = decoder_variance
        self.penalties = [layer for layer in self.layers if isinstance(layer, _Penalty)]
        self._loss_cache = _BufferCache(self._make_loss_buffer)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("record_residuals", None)  # a fit's hook (a closure), not part of the model
        state.pop("_step_residuals", None)
        return state

    def engine_stack(self):
        """As ``Sequential.engine_stack``; a Gaussian decoder variance is not in the engine."""
        stack = super().engine_stack()
        if self.decoder_variance is not None and not isinstance(stack, str):
            return "a Gaussian decoder variance"
        return stack

    def _objective(self, loss, X, Y, training, sample_weight=None):
        weights = None if sample_weight is None else row_weights(sample_weight)
        for layer in self.penalties:
            layer.row_weights = weights
        value, grad = super()._objective(loss, X, Y, training, sample_weight)
        if self.decoder_variance is not None:
            value, grad = self._gaussian(Y, weights, value, grad, sample_weight)
        for layer in self.penalties:
            value += layer.value
        return value, grad

    def _loss_and_grad(self, loss, X, Y, training, sample_weight=None):
        value = super()._loss_and_grad(loss, X, Y, training, sample_weight)
        sums, self._step_residuals = self._step_residuals, None
        if sums is not None and self.record_residuals is not None:
            self.record_residuals(sums)
        return value

    def _gaussian(self, Y, weights, value, grad, sample_weight=None):
        """The squared error's value and gradient as the Gaussian's (see the class docstring);
        ``weights`` are the batch's ``row_weights`` of its ``sample_weight``."""
        if self.decoder_variance == "learned":
            n = Y.shape[0]
            residual = self.output.astype(np.float64) - Y
            factors = np.full(n, 1.0 / max(n, 1)) if weights is None else weights / max(n, 1)
            mean_squares = factors @ (residual * residual)
            data_mean_square = float(np.square(Y, dtype=np.float64).sum()) / max(Y.size, 1)
            if self.record_residuals is not None:  # this step's sums (see the class docstring)
                weight = (self.share.weight if self.share is not None
                          else n if sample_weight is None else float(np.sum(sample_weight)))
                self._step_residuals = np.concatenate(
                    [mean_squares * weight if weight else np.zeros_like(mean_squares),
                     [weight, data_mean_square * Y.size, Y.size]])
            if self.share is not None:  # the global minibatch's
                mean_squares = self.share.mean(mean_squares)
                data_mean_square = self.share.mean(data_mean_square, weighted=False)
            variance = decoder_variance(mean_squares, data_mean_square, Y.dtype)
            value = float(np.sum(mean_squares / (2 * variance) + 0.5 * np.log(variance)))
            grad /= variance.astype(grad.dtype)
        else:
            variance = float(self.decoder_variance)
            value = value / variance + 0.5 * grad.shape[1] * math.log(variance)
            grad *= grad.dtype.type(1 / variance)
        return value, grad


class GenerativeBase(_BaseMLP):
    """The MLP estimators' machinery for models of X alone: parameters and their checks
    (``_config``), dtype, thread cap, fitting, validation split, fitted attributes, prediction
    checks, save/load.  The target is X itself (``n_outputs_ = n_features_in_``).

    A subclass builds its network in ``_build_network(n_features, dtype)`` (returning a Sequential
    whose output reconstructs X, and setting any parts it needs), checks its own parameters in
    ``_check_model_params`` and may train differently by overriding ``_train``.
    """

    dropout = 0.0  # the MLPs' dropout is not a parameter of the generative models

    @property
    def hidden_layer_sizes(self):
        """Every hidden width of the network (for the MLPs' checks)."""
        return self._layer_sizes()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False  # models of X alone
        return tags

    def _check_model_params(self):
        """Model parameters (ValueError); the training ones are checked by ``_BaseMLP._config``."""

    def _config(self):
        self._check_model_params()
        return super()._config()

    def _check_data(self, X):
        """Extra checks on validated training data (e.g. [0, 1] for a cross-entropy loss)."""

    @sections(["training X", "no y",
               ("sample_weight", "array-like of shape (n_samples,)",
                "Weights >= 0, not all 0: every per-row term of each minibatch's objective (the "
                "reconstruction error, a sparse code's penalty, the VAE's KL term; the GAN's real "
                "rows) is a weighted mean (``fastbp.training``).  Weighted fits train on the "
                "compiled engine where the network does and every weight is > 0 (``fit_path_`` "
                "says)."),
               "callbacks"],
              "self", ["bad fit", "sparse X"])
    def fit(self, X, y=None, sample_weight=None, *, callbacks=None):
        """Train on X for up to ``max_iter`` epochs."""
        return self._fit(X, None, incremental=False, sample_weight=sample_weight,
                         callbacks=callbacks)

    @partial_fit_available
    @sections(["training X", "no y", "sample_weight as fit"], "self", ["as fit"])
    def partial_fit(self, X, y=None, sample_weight=None):
        """One epoch over X, continuing from the current state (the first call initialises)."""
        return self._fit(X, None, incremental=True, sample_weight=sample_weight)

    # -------------------------------------------------------------- the target: X itself
    def _encode_targets(self, y, X, dtype, fresh, incremental, classes):
        self._check_data(X)
        return X, None

    def _encode_like(self, y, n, dtype, target):
        """The target of n rows given as ``y``: data rows like X (``fastbp.models.gradcheck``)."""
        Y = check_X(y, dtype, "y")
        if Y.shape != (n, self.n_features_in_):
            raise ValueError(f"the target must have shape {(n, self.n_features_in_)} (rows like "
                             f"X), got {Y.shape}")
        return Y

    def _set_target(self, target):
        self.n_outputs_ = self.n_features_in_

    def _target_meta(self):
        return None

    def _fitted_target(self):
        return None

    def _target_from_meta(self, meta, arrays):
        return None

    # -------------------------------------------------------------------------------- inference
    def _checked(self, X, n_columns=None):
        """X validated for a fitted model (n_features_in_ columns and the names seen in fit, or
        ``n_columns`` for what is not X: codes to decode)."""
        check_is_fitted(self)
        if n_columns is None:
            return check_data(self, X, self.coefs_[0].dtype, reset=False)
        X = check_X(X, self.coefs_[0].dtype)
        if X.shape[1] != n_columns:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {n_columns} features as input.")
        return X


class EncoderDecoder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, GenerativeBase):
    """What the autoencoder and the VAE share: the encoder's and decoder's widths (the decoder's
    default: the encoder's mirror), the reconstruction ``loss`` (cross-entropy needs X in [0, 1]),
    decoding, reconstruction and the mean score.  A subclass sets ``encoder_``/``decoder_``.

    scikit-learn's transformer API: ``fit_transform``, ``set_output`` (e.g. pandas DataFrames out
    of ``transform``), ``get_feature_names_out`` (the class name and the code unit:
    ``autoencoder0``, ``autoencoder1``, ... / ``vae0``, ...).
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [np.dtype(self.dtype).name]  # codes of that dtype
        return tags

    @property
    def _n_features_out(self):
        """The width of ``transform``'s output (AttributeError before fit)."""
        return self.decoder_.n_inputs

    def _sizes(self):
        encoder = check_sizes(self.encoder_layer_sizes, "encoder_layer_sizes")
        decoder = (encoder[::-1] if self.decoder_layer_sizes is None
                   else check_sizes(self.decoder_layer_sizes, "decoder_layer_sizes"))
        return encoder, check_n_components(self.n_components), decoder

    def _check_model_params(self):
        self._sizes()
        reconstruction_loss(self.loss)

    def _check_data(self, X):
        check_unit_interval(X, reconstruction_loss(self.loss))

    def _set_loss(self):
        """``loss_`` (the kernel loss) and ``out_activation_`` of a fresh network."""
        self.loss_ = reconstruction_loss(self.loss)
        self.out_activation_ = "logistic" if self.loss_ == "sigmoid_cross_entropy" else "identity"

    @sections([("H", "array-like of shape (n_samples, n_components)", "Codes.")],
              ("X", "ndarray of shape (n_samples, n_features)",
               "Probabilities for ``loss='cross_entropy'``; of the model's ``dtype``."),
              ["not fitted",
               ("ValueError", "H with NaN or infinity, or not n_components columns.")])
    def inverse_transform(self, H):
        """Decode codes: d(h) for every row of H."""
        check_is_fitted(self)  # NotFittedError, before decoder_ is read
        H = self._checked(H, self.decoder_.n_inputs)
        return self._predict(self.decoder_, H, self._decoder_output())

    @sections(["X"], (None, "ndarray of shape (n_samples, n_features)",
                      "The reconstructions, of the model's ``dtype`` (probabilities for the "
                      "cross-entropy loss)."),
              ["not fitted", "bad X"])
    def reconstruct(self, X):
        """d(code of x) for every row of X: d(e(x)) (the VAE: d(mu(x)))."""
        check_is_fitted(self)  # NotFittedError, before loss_ is read
        return self._forward(X, self._decoder_output())

    def _decoder_output(self):
        """The decoder's output as data, applied in its forward pass: the sigmoid of the logits
        for cross-entropy (``fastbp.nn.Sequential.predict``'s ``output``), else None."""
        return "sigmoid" if self.loss_ == "sigmoid_cross_entropy" else None

    def _exports(self):
        """transform, inverse_transform, reconstruct as dense paths (``fastbp.models.export``):
        the code is the encoder's first outputs, as many as the decoder takes (the VAE's mean)."""
        encoder = list(export.layer_steps(self.encoder_))
        encoder[-1] = dataclasses.replace(encoder[-1], n_out=self.decoder_.n_inputs)
        decoder = export.layer_steps(
            self.decoder_, "sigmoid" if self.loss_ == "sigmoid_cross_entropy" else None)
        return {"transform": export.Path(tuple(encoder), "transform"),
                "inverse_transform": export.Path(decoder, "inverse_transform", input="H"),
                "reconstruct": export.Path((*encoder, *decoder), "reconstruct")}

    @sections(["X", "no y"], (None, "float", "The mean score of a row."), ["not fitted", "bad X"])
    def score(self, X, y=None):
        """The mean of ``score_samples(X)`` (higher is better)."""
        return float(np.mean(self.score_samples(X)))
