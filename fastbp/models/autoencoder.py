"""Autoencoders: hourglass, overcomplete, denoising and sparse, trained by backprop.

In the lecture's notation an encoder e maps x to a code h = e(x) and a decoder d maps it back to
a reconstruction r = d(h); training lowers l(d(e(x)), x), here ||d(e(x)) - x||^2 (``loss=
'squared_error'``) or, for inputs in [0, 1], the sigmoid cross-entropy of the decoder's logits
(``loss='cross_entropy'``).  PCA is the linear autoencoder: with identity activations the decoder
spans the top-``n_components`` principal subspace.

Both e and d are stacks of Dense layers: d -> ``encoder_layer_sizes`` -> ``n_components`` (the
bottleneck, with ``code_activation``) -> ``decoder_layer_sizes`` (default: the encoder's mirror,
the "hourglass") -> d.  E.g. Hinton & Salakhutdinov's 784-1000-500-250-30-250-500-1000-784 is
``Autoencoder(encoder_layer_sizes=(1000, 500, 250), n_components=30)``; a code wider than the input
(overcomplete) is allowed.

Regularised variants (lecture: "Regularized Autoencoders"):

- denoising, ``noise='gaussian'`` (x + eps, eps ~ N(0, ``noise_level``^2 I)) or ``noise='mask'``
  (each input set to 0 with probability ``noise_level``): trained on l(d(e(x + eps)), x), with
  fresh noise every epoch;
- sparse, ``sparsity='l1'`` (adds ``sparsity_weight`` * mean_i ||e(x_i)||_1) or ``sparsity='kl'``
  (adds ``sparsity_weight`` * sum_j KL(rho || rho_hat_j), rho = ``sparsity_target``, rho_hat_j the
  mean activation of code unit j over the minibatch; the code is then a sigmoid).

An overcomplete autoencoder without either (every hidden layer, the code included, at least as
wide as the input; no input noise, no sparsity penalty) can reach zero reconstruction error by
learning the identity -- with identity activations, W^i = I -- and so learns nothing useful (CS771
Deep Learning III, slides 25-26: "some autoencoders do not decrease dim at all"; "Regularized
Autoencoders", whose denoising and sparsity "can allow even overcomplete AE to be trained without
risk of overfitting").  ``fit`` then warns, once per fit, with scikit-learn's
``DataDimensionalityWarning`` (``fastbp.DataDimensionalityWarning``: its warning for a code no
smaller than the data, which ``warnings.filterwarnings`` can silence), suggesting denoising or
sparsity.

Training is the MLP estimators' (same parameters: solvers, schedules, early stopping on the
validation reconstruction error, warm start, ``partial_fit``, ``save``): each minibatch minimises
the mean reconstruction loss (1/2 ||r - x||^2 per row for squared error, as the kernel defines
it) + the sparsity term + alpha / (2 batch_size) sum ||W||^2.  A plain or denoising autoencoder is
a plain stack of Dense layers and runs on the compiled fast path when it is there.

PCA is the linear autoencoder's optimum, and ``solver='lbfgs'`` (full batch,
``fastbp.training.fit_lbfgs``) reaches it: ``Autoencoder(2, (), activation='identity',
solver='lbfgs')`` on 500 rows of 8-D data with two dominant directions (std 3 and 2 over noise of
std 0.1) comes within 0.01% of PCA's reconstruction error at the defaults (about 150 iterations,
float32 or float64; ``tests/test_lbfgs.py``).  Adam at its defaults (``learning_rate_init=0.001``,
minibatches of 200 rows) is far slower on the same problem: after the default 200 epochs the error
is about 12 times PCA's; with a larger ``max_iter`` the default ``tol=1e-4`` stops it on a plateau
(epoch 458, 2.2 times PCA's); with ``tol=0`` it comes within 2% of PCA's after about 2500 epochs
(within 2% at 560 epochs with ``learning_rate_init=0.01``, 255 with 0.03; no default that suits
deeper autoencoders gets there in 200).  With 'lbfgs' the denoising corruption is drawn once and
fixed for the whole run (a deterministic objective).
"""
import warnings

import numpy as np

from fastbp.exceptions import DataDimensionalityWarning
from fastbp.models.mlp import user_stacklevel
from fastbp.models._generative import (EncoderDecoder, PenalisedSequential, SparsityPenalty, check_fraction,
                          check_nonnegative, hourglass, row_errors, store_params)
from fastbp.nn import Sequential, activation_name
from fastbp.models.persist import register
from fastbp.models._docs import MLP_ATTRIBUTES, numpydoc, sections

__all__ = ["Autoencoder"]


@register("Autoencoder")
@numpydoc(*MLP_ATTRIBUTES, "encoder_", "decoder_")
class Autoencoder(EncoderDecoder):
    """Autoencoder x -> h = e(x) -> r = d(h), scikit-learn style (see the module docstring).

    ``fit(X)``, ``transform(X)`` (codes h), ``inverse_transform(H)`` (decoded data),
    ``reconstruct(X)`` = d(e(x)), ``score(X)`` = minus the mean reconstruction error per sample
    (||r - x||^2, or the cross-entropy), ``score_samples(X)`` per sample.

    Fitted attributes as for the MLPs: ``coefs_``, ``intercepts_`` (encoder then decoder),
    ``loss_curve_``, ``validation_scores_``, ``n_iter_``, ``grad_norms_``, ..., and
    ``encoder_`` / ``decoder_`` (Sequentials sharing those arrays).

    """

    def __init__(self, n_components=2, encoder_layer_sizes=(100,), decoder_layer_sizes=None,
                 activation="relu", code_activation=None, loss="squared_error", noise=None,
                 noise_level=0.1, sparsity=None, sparsity_weight=1e-3, sparsity_target=0.05, *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 activation_alpha=None, dtype="float32", n_threads=None,
                 checkpoint_segments=None):
        store_params(self, locals())

    # ------------------------------------------------------------------------------ parameters
    def _layer_sizes(self):
        encoder, k, decoder = self._sizes()
        return [*encoder, k, *decoder]

    def _code_activation(self):
        """``code_activation``; by default identity (a linear code), sigmoid for sparsity='kl'."""
        if self.code_activation is None:
            return "sigmoid" if self.sparsity == "kl" else "identity"
        return activation_name(self.code_activation)

    def _check_model_params(self):
        super()._check_model_params()
        if self.noise not in (None, "gaussian", "mask"):
            raise ValueError(f"noise must be None, 'gaussian' or 'mask', got {self.noise!r}")
        if self.noise == "mask":
            check_fraction(self.noise_level, "noise_level (the masked fraction)")
        else:
            check_nonnegative(self.noise_level, "noise_level")
        if self.sparsity not in (None, "l1", "kl"):
            raise ValueError(f"sparsity must be None, 'l1' or 'kl', got {self.sparsity!r}")
        check_nonnegative(self.sparsity_weight, "sparsity_weight")
        check_fraction(self.sparsity_target, "sparsity_target")
        if self.sparsity == "kl" and self._code_activation() != "sigmoid":
            raise ValueError("sparsity='kl' compares mean code activations with sparsity_target in "
                             "(0, 1): it needs code_activation='sigmoid'")
        if self.sparsity is not None and self.learning_rate == "backtracking":
            raise ValueError("learning_rate='backtracking' does not see the sparsity penalty; use "
                             "another schedule with sparsity")

    # --------------------------------------------------------------------------------- training
    def _build_network(self, n_features, dtype):
        encoder_sizes, k, decoder_sizes = self._sizes()
        self._set_loss()
        self.encoder_, self.decoder_ = hourglass(
            n_features, encoder_sizes, k, decoder_sizes, self.activation, self._code_activation(),
            "identity", dtype, self._rng, self.activation_alpha)
        if self.sparsity is None:
            return Sequential(self.encoder_.layers + self.decoder_.layers)
        penalty = SparsityPenalty(self.sparsity, self.sparsity_weight, self.sparsity_target)
        return PenalisedSequential(self.encoder_.layers + [penalty] + self.decoder_.layers)

    def _identity_risk(self):
        """Why this network can learn the identity (module docstring), or None."""
        narrowest, d = min(self._layer_sizes()), self.n_features_in_
        if (narrowest < d or (self.noise is not None and self.noise_level > 0)
                or (self.sparsity is not None and self.sparsity_weight > 0)):
            return None
        return (f"every hidden layer of this autoencoder is at least as wide as its {d} inputs "
                f"(the narrowest has {narrowest} units) and nothing regularises the code (no "
                "input noise, no sparsity penalty): it can learn the identity map and reconstruct "
                "perfectly without learning any feature (CS771 Deep Learning III, slide 25). "
                "Make it a denoising autoencoder (noise='gaussian' or 'mask', noise_level > 0), "
                "a sparse one (sparsity='l1' or 'kl', sparsity_weight > 0), or use a code "
                "narrower than the input")

    def _train(self, X, Y, config, validation, incremental, sample_weight=None, callback=None):
        if not incremental or self._state.n_iter == 0:  # once per fit
            risk = self._identity_risk()
            if risk is not None:
                warnings.warn(risk, DataDimensionalityWarning, stacklevel=user_stacklevel())
        if self.noise is None or self.noise_level == 0:
            return super()._train(X, Y, config, validation, incremental, sample_weight, callback)
        noisy = np.empty_like(X)  # one buffer, fresh noise each epoch, clean targets X

        def corrupt(state=None):
            if self.noise == "gaussian":
                self._rng.standard_normal(dtype=X.dtype, out=noisy)
                np.multiply(noisy, X.dtype.type(self.noise_level), out=noisy)
                np.add(noisy, X, out=noisy)
            else:  # keep each input with probability 1 - noise_level
                self._rng.random(dtype=X.dtype, out=noisy)
                np.greater_equal(noisy, X.dtype.type(self.noise_level), out=noisy)
                np.multiply(noisy, X, out=noisy)
            return callback is not None and state is not None and callback(state)

        corrupt()  # lbfgs: this one corruption for the whole run (a deterministic objective)
        super()._train(noisy, Y, config, validation, incremental, sample_weight,
                       callback if config.solver == "lbfgs" else corrupt)

    # ------------------------------------------------------------------------------- inference
    @sections(["X"], "codes", ["not fitted", "bad X"])
    def transform(self, X):
        """The codes h = e(x)."""
        X = self._checked(X)
        return self._predict(self.encoder_, X)

    @sections(["X"], "row scores", ["not fitted", "bad X"])
    def score_samples(self, X):
        """Minus the reconstruction error of each row: -||d(e(x)) - x||^2 (or -cross-entropy)."""
        X = self._checked(X)
        return -row_errors(self.loss_, self._predict(self._network, X), X)

    def _score_output(self, output, X, sample_weight=None):
        """Early-stopping score: minus the (weighted) mean reconstruction error on the validation
        rows."""
        return -float(np.average(row_errors(self.loss_, output, X), weights=sample_weight))
