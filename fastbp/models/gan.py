"""Generative adversarial network (Goodfellow et al. 2014) of dense networks.

The lecture's game: a generator G maps noise z ~ N(0, I) (``n_components`` numbers) to a sample
G(z); a discriminator D maps a point x to the probability D(x) that it is real training data.
With the single loss function

    L(D, G) = log D(x) + log(1 - D(G(z)))        (averaged over a minibatch of x and of z)

D takes steps to maximise L and G steps to minimise it.  Minimising log(1 - D(G(z))) saturates
early in training (when D rejects G's samples confidently its gradient vanishes), so by default
(``generator_loss='non_saturating'``) G minimises -log D(G(z)) instead, which has the same fixed
points and strong gradients where G is poor; ``generator_loss='minimax'`` is the game as written.
"The discriminator supplies the generator with the gradients it needs": G's gradient is D's
gradient with respect to its input, backpropagated through G (see :meth:`GAN.input_gradient`).

Training (``fit``) alternates, walking the shuffled data in minibatches of ``batch_size``: each
minibatch of real points with as many fresh G(z) makes one discriminator step; after every
``n_discriminator_steps`` of those, ``n_generator_steps`` generator steps each on ``batch_size``
fresh z.  Each player has its own optimizer (``solver``, same settings; D's learning rate is
``discriminator_learning_rate`` when given).  An epoch is one pass over the data; there is no
convergence test (a GAN's losses do not settle to a minimum): training runs ``max_iter`` epochs.
The epochs are those of the one training loop, ``fastbp.training.fit_network``, with the
alternating steps as its step hook: shuffling, the learning-rate schedule, the per-epoch records,
verbose lines and the non-finite check are the loop's.  After every epoch both players' losses and
parameters must be finite (``fastbp.training.check_finite``): otherwise ``fit``/``partial_fit``
raise ValueError and leave the model as it was before the call.  ``fit_path_`` is always
``"layerwise: GAN (...)"``: the compiled engine trains one network's plain backprop, not a game.
Data-parallel (``with fastbp.distributed.data_parallel(): GAN(...).fit(X)``, every rank with
the same X): each D and G step is split over the ranks and reduced (see
:meth:`GAN._discriminator_step`), the same model as one process's fit; with
``data_parallel(sharded=True)`` each rank passes its own rows, contributes its next rows and its
own noise to every step, and the ranks train one model on all of them.

Against mode collapse (G covering some modes of the data only), measured on the standard toy
problems by ``benchmarks/bench_gan_modes.py`` (1-D mixtures of 2 and 3 Gaussians, the ring of 8
and the 5 x 5 grid of 2-D Gaussians), the defaults combine: minibatches of 64 rows
(``batch_size='auto'``: min(64, n); more, smaller steps), Adam with beta_1 = 0.5 (Radford et al.
2016, DCGAN) and a learning rate of 0.002 for both players, the non-saturating G loss, a
minibatch-standard-deviation feature in D (``minibatch_std``) and samples from an exponential
moving average of G's weights (``generator_average``).  Each can be switched off by its
parameter.

Loss curves, one entry per epoch: ``discriminator_loss_curve_`` (mean -L over D's steps, i.e.
-log D(x) - log(1 - D(G(z)))), ``generator_loss_curve_`` (= ``loss_curve_``: mean of G's
objective, -log D(G(z)) or log(1 - D(G(z)))).  ``coefs_``/``intercepts_`` are G's
(``generator_``, as trained; ``sample`` draws from ``average_generator_`` when there is one),
``discriminator_coefs_``/``discriminator_intercepts_`` D's (``discriminator_``).
"""
import contextlib
import copy
import dataclasses

import numpy as np
from scipy import special

from fastbp import distributed
from fastbp.kernels import ops
from fastbp.models import export
from fastbp.models._generative import (GenerativeBase, PenalisedSequential, check_fraction,
                                       check_n_components, check_sizes, store_params)
from fastbp.models._validation import check_is_fitted
from fastbp.models.mlp import _make_rng, user_stacklevel
from fastbp.training import (engine_passes, fit_network, make_optimizer, optimizer_step,
                             stack_passes)
from fastbp.nn import (Dense, Layer, _BufferCache, activation_name, make_mlp, row_losses,
                       row_weights)
from fastbp.models.persist import register
from fastbp.models._docs import MLP_ATTRIBUTES, numpydoc, sections

__all__ = ["GAN"]

GENERATOR_LOSSES = ("non_saturating", "minimax")
AUTO_BATCH = 64  # batch_size='auto': minibatches of min(64, n) rows
# the GAN's epoch is its own (two networks, alternating steps): the engine runs each step's
# passes through their Dense layers (fastbp.training.stack_passes) when it can
FIT_PATH = "engine steps (GAN: alternating discriminator and generator steps on two networks)"


class _Buffers:
    """The arrays of one minibatch size m, made once: D's batch (m real rows, then m fake), its
    targets (1 then 0) and loss gradient, the noise z and G's loss gradient."""

    def __init__(self, m, n_features, k, dtype):
        self.batch = np.empty((2 * m, n_features), dtype)
        self.target = np.zeros((2 * m, 1), dtype)
        self.target[:m] = 1
        self.d_grad = np.empty((2 * m, 1), dtype)
        self.noise = np.empty((m, k), dtype)
        self.g_grad = np.empty((m, 1), dtype)


class _AlternatingSteps:
    """One GAN epoch for the training loop's step hook (``fastbp.training.fit_network``'s
    ``trainer``): walking ``order`` in minibatches of ``batch_size`` rows, one discriminator step
    per minibatch and, after every ``n_discriminator_steps`` of those (counted across epochs),
    ``n_generator_steps`` generator steps.  ``train_epoch`` returns the mean of G's objective over
    its steps (NaN if it took none), appends D's mean -L to ``gan._d_losses`` and writes the mean
    ||dW||_F of G's Dense layers; D's learning rate is G's (``optimizer.lr``, set by the loop's
    schedule) times ``discriminator_learning_rate / learning_rate_init``.  With ``sample_weight``
    (one weight per row of X) D's mean over the real rows of a minibatch is their weighted mean.
    ``parallel`` (a ``fastbp.distributed.DataParallel``): every step is data-parallel (see
    :meth:`GAN._discriminator_step` and :meth:`_minibatches`).
    """

    def __init__(self, gan, optimizer, batch_size, sample_weight=None, parallel=None):
        self.gan, self.optimizer, self.batch_size = gan, optimizer, batch_size
        self.sample_weight, self.parallel = sample_weight, parallel
        rate = gan.discriminator_learning_rate
        self.d_ratio = 1.0 if rate is None else rate / gan.learning_rate_init
        self.d_loss, self.g_steps = None, 0
        # the engine's passes of D's and G's Dense layers, or None: both, or neither (one path)
        # one process: the passes take the optimizers' steps too (data-parallel: the ranks'
        # gradients are summed before a step)
        solo = parallel is None
        d, why = stack_passes(gan.discriminator_, gan._d_optimizer if solo else None)
        g, why = stack_passes(gan.generator_, optimizer if solo else None) if d else (None, why)
        self.passes = None if g is None else (d, g)
        self.fit_path = FIT_PATH if g is not None else f"layerwise: {why}"

    def train_epoch(self, X, Y, order, grad_norms_out):
        gan, m = self.gan, self.batch_size
        gan._d_optimizer.lr = self.optimizer.lr * self.d_ratio
        d_losses, g_losses = [], []
        d, g = self.passes or (None, None)
        with engine_passes(gan.discriminator_, d), engine_passes(gan.generator_, g):
            for rows, size, weights in self._minibatches(order):
                d_losses.append(gan._discriminator_step(X, rows, size, weights, self.parallel))
                if gan._d_optimizer.t % gan.n_discriminator_steps == 0:
                    g_losses += [gan._generator_step(m, grad_norms_out, self.parallel)
                                 for _ in range(gan.n_generator_steps)]
        grad_norms_out /= max(len(g_losses), 1)
        self.d_loss, self.g_steps = float(np.mean(d_losses)), len(g_losses)
        gan._d_losses.append(self.d_loss)
        return float(np.mean(g_losses)) if g_losses else float("nan")

    def _minibatches(self, order):
        """Each D step's (real rows of this rank, rows of the global minibatch, their weights v).

        One process walks ``order`` in slices of ``batch_size``; a rank of replicated rows takes
        its contiguous share of each slice; a rank of sharded rows the next ``step_rows`` of its
        own ``order`` (none once it has run out), for the most steps of any rank (the sharded
        rules of ``fastbp.distributed``), the global minibatch's rows and weight summed over the
        ranks for every step of the epoch in one allreduce.  v: the rows' sample weights scaled
        to mean 1 over the global minibatch (``fastbp.nn.row_weights``; all 0 for a minibatch
        of weight 0), or None without ``sample_weight``.
        """
        parallel, w, m = self.parallel, self.sample_weight, self.batch_size
        if parallel is None or not parallel.sharded:
            for start in range(0, order.shape[0], m):
                whole = order[start:start + m]
                lo, hi = _part(whole.shape[0], parallel)
                v = None if w is None else row_weights(w[whole])
                yield whole[lo:hi], whole.shape[0], None if v is None else v[lo:hi]
            return
        step_rows = parallel.step_rows(m)
        steps = parallel.maximum(-(-order.shape[0] // step_rows))
        mine = [order[step * step_rows:(step + 1) * step_rows] for step in range(steps)]
        table = np.array([[rows.shape[0], 0.0 if w is None else w[rows].sum()] for rows in mine])
        for rows, (size, weight) in zip(mine, parallel.sum(table.reshape(steps, 2))):
            yield rows, int(size), None if w is None else row_weights(w[rows], size, weight)

    def epoch_values(self, loss, grad_norms):
        """What the loop checks finite and shows (an epoch without a G step has no G loss)."""
        return {"discriminator_loss": self.d_loss,
                "generator_loss": loss if self.g_steps else None,
                "generator_gradient_norms": grad_norms}

    def params(self):
        return self.gan.generator_.params() + self.gan.discriminator_.params()


@contextlib.contextmanager
def _input_gradient_only(network):
    """The engine's passes of the network (if it runs on them) compute dL/dX only inside."""
    passes = [p for _, _, p in network.engine_passes or ()]
    modes = [p.mode for p in passes]
    for p in passes:
        p.mode = "input"
    try:
        yield
    finally:
        for p, mode in zip(passes, modes):
            p.mode = mode


class MinibatchStd(Layer):
    """The minibatch-standard-deviation feature (Karras et al. 2018, "Progressive Growing of GANs
    for Improved Quality, Stability, and Variation", section 3): input A (n x k), output [A, s]
    (n x (k + 1)).  In training, with the rows split into ``n_groups`` equal contiguous groups, s
    of every row of a group is the mean over the k units of their standard deviation over the
    group's g rows, std_j = sqrt(mean_i (a_ij - mean_i a_ij)^2 + 1e-8): a discriminator that sees
    it can tell a batch of too-similar samples (a collapsed generator) from real data.  Backward:
    d s / d a_ij = (a_ij - mean_i a_ij) / (k g std_j).  ``track`` folds the first group's s into
    ``running`` (an exponential average, as batch normalisation keeps its statistics); inference
    uses that constant, so a row's output does not depend on the other rows.

    In a data-parallel step (``share``, a ``fastbp.distributed.Share`` that the GAN's step sets:
    this rank's rows of each group are its share of the global group's) the means over a group's
    rows -- of a_ij, of the squared deviations, and of the backward's d s -- are the global
    group's (collectives), so that s and the gradient are one process's."""

    _transient = ("_cache", "saved")
    n_groups = 1
    momentum = 0.1
    share = None

    def __init__(self):
        self.running = self.s = 0.0
        self._reset_cache()

    def _reset_cache(self):
        self._cache = _BufferCache(self._make_buffers)
        self.saved = None

    def _make_buffers(self, key):
        (n, k), dtype = key
        return np.empty((n, k + 1), dtype), np.empty((n, k), dtype), np.empty((n, k), dtype)

    def _forward(self, X, training=False, keep=True):
        n, k = X.shape
        out, centred, dX = (self._cache.get((X.shape, X.dtype)) if keep
                            else self._make_buffers((X.shape, X.dtype)))
        out[:, :k] = X
        if not training:
            out[:, k] = self.running
            self.saved = (None, None, dX) if keep else None
            return out
        g = n // self.n_groups
        groups = X.reshape(self.n_groups, g, k)
        c = centred.reshape(groups.shape)
        np.subtract(groups, self._over_group(groups.sum(axis=1), g)[:, None, :], out=c)
        std = np.sqrt(self._over_group(np.einsum("gij,gij->gj", c, c), g) + X.dtype.type(1e-8))
        s = std.mean(axis=1)
        out[:, k].reshape(self.n_groups, -1)[...] = s[:, None]
        self.saved = (c, std, dX) if keep else None
        self.s = float(s[0])
        return out

    def _over_group(self, sums, g):
        """Each group's mean from its sums over this rank's g rows of it: over the global
        group's rows in a data-parallel step (``share``)."""
        if self.share is None:
            return sums / g
        local = sums.astype(np.float64) / max(g, 1)  # ignored where g == 0 (no rows here)
        return self.share.mean(local, weighted=False).astype(sums.dtype)

    def track(self, first):
        """Fold the last training forward's s (of the first group) into ``running``; ``first``:
        start the average there."""
        self.running = self.s if first else self.running + self.momentum * (self.s - self.running)

    def forward(self, X, training=False):
        return self._forward(np.ascontiguousarray(X), training)

    def _backward(self, dA, need_dX):
        c, std, dX = self.saved
        k = dX.shape[1]
        if c is None:  # inference: s is a constant
            dX[...] = dA[:, :k]
            return dX
        n_groups, g, _ = c.shape
        # each group's s feeds all its rows: d s summed over them, here as its mean over them
        ds = self._over_group(dA[:, k].reshape(n_groups, g).sum(axis=1), g)
        np.multiply(c, (ds[:, None] / k / std)[:, None, :], out=dX.reshape(c.shape))
        dX += dA[:, :k]
        return dX

    def backward(self, dA, need_dX=True):
        return self._backward(np.ascontiguousarray(dA), need_dX)

    def __repr__(self):
        return f"MinibatchStd(running={self.running:.4g})"


def _std_layers(network):
    return [layer for layer in network.layers if isinstance(layer, MinibatchStd)]


@contextlib.contextmanager
def _groups(network, n_groups):
    """Within the block, ``network``'s MinibatchStd layers (if any) split their rows into
    ``n_groups`` groups; one group outside."""
    layers = _std_layers(network)
    for layer in layers:
        layer.n_groups = n_groups
    try:
        yield
    finally:
        for layer in layers:
            layer.n_groups = 1


@contextlib.contextmanager
def _shared(network, parallel, n):
    """Within the block, in a data-parallel step (``parallel`` not None), ``network``'s
    MinibatchStd layers take their statistics over the global minibatch, of which this rank holds
    n rows of each group (a ``fastbp.distributed.Share``); their own rows otherwise."""
    layers = [] if parallel is None else _std_layers(network)
    for layer in layers:
        layer.share = distributed.Share(parallel, n, n)
    try:
        yield
    finally:
        for layer in layers:
            layer.share = None


def _part(m, parallel):
    """This rank's rows [lo, hi) of a global minibatch of m rows; all of them in one process."""
    return (0, m) if parallel is None else distributed.share(m, parallel.rank, parallel.size)


@register("GAN")
@numpydoc(*(name for name in MLP_ATTRIBUTES if name != "out_activation_"), "generator_",
          "average_generator_", "discriminator_", "discriminator_coefs_",
          "discriminator_intercepts_", "generator_loss_curve_", "discriminator_loss_curve_")
class GAN(GenerativeBase):
    """Generative adversarial network, scikit-learn style (see the module docstring).

    G's last layer has ``output_activation`` (e.g. 'sigmoid' for data in [0, 1]).

    ``fit(X)``; ``sample(n)`` = G(z) for z ~ N(0, I); ``decision_function(X)`` = D's logit
    log D(x) / (1 - D(x)); ``input_gradient(X)`` = the gradient of G's objective with respect to a
    generated point x (what trains G).  Training parameters as for the MLP estimators except the
    convergence and early-stopping ones; ``learning_rate`` is 'constant' or 'invscaling'.

    """

    # No convergence test or validation split: fixed for the shared parameter checks.
    early_stopping = False
    validation_fraction = 0.1
    tol = 0.0
    n_iter_no_change = 1
    max_fun = 15000  # no 'lbfgs' (refused in _check_model_params)

    def __init__(self, n_components=2, generator_layer_sizes=(64, 64),
                 discriminator_layer_sizes=(64, 64), activation="relu",
                 discriminator_activation="leaky_relu", output_activation="identity",
                 generator_loss="non_saturating",
                 n_discriminator_steps=1, n_generator_steps=1, discriminator_learning_rate=None,
                 minibatch_std=True, generator_average=0.999, *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.002, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, beta_1=0.5, beta_2=0.999, epsilon=1e-8,
                 activation_alpha=None, dtype="float32", n_threads=None,
                 checkpoint_segments=None):
        store_params(self, locals())

    # ------------------------------------------------------------------------------ parameters
    def _layer_sizes(self):
        return [*check_sizes(self.generator_layer_sizes, "generator_layer_sizes"),
                *check_sizes(self.discriminator_layer_sizes, "discriminator_layer_sizes")]

    def _check_model_params(self):
        check_n_components(self.n_components)
        self._layer_sizes()
        activation_name(self.discriminator_activation)
        activation_name(self.output_activation)
        if self.generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"generator_loss must be one of {GENERATOR_LOSSES}, "
                             f"got {self.generator_loss!r}")
        for name in ("n_discriminator_steps", "n_generator_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        rate = self.discriminator_learning_rate
        if rate is not None and not (isinstance(rate, (int, float)) and 0 < rate < np.inf):
            raise ValueError(f"discriminator_learning_rate must be None or > 0, got {rate!r}")
        if self.solver == "lbfgs":
            raise ValueError("solver='lbfgs' minimises one objective, and a GAN is a two-player "
                             "game: D maximises what G minimises, so there is no single function "
                             "for L-BFGS to descend; use a solver that takes steps ('adam')")
        if not isinstance(self.minibatch_std, (bool, np.bool_)):
            raise ValueError(f"minibatch_std must be True or False, got {self.minibatch_std!r}")
        if self.generator_average != 0:
            check_fraction(self.generator_average, "generator_average")
        if self.learning_rate not in ("constant", "invscaling"):
            raise ValueError("a GAN has no objective to monitor: learning_rate must be "
                             f"'constant' or 'invscaling', got {self.learning_rate!r}")

    # --------------------------------------------------------------------------------- training
    def _build_network(self, n_features, dtype):
        k = check_n_components(self.n_components)
        self.loss_ = self.generator_loss
        self.generator_ = make_mlp(
            k, check_sizes(self.generator_layer_sizes, "generator_layer_sizes"), n_features,
            self.activation, activation_name(self.output_activation), dtype=dtype, rng=self._rng,
            activation_alpha=self.activation_alpha)
        sizes = check_sizes(self.discriminator_layer_sizes, "discriminator_layer_sizes")
        self.discriminator_ = make_mlp(
            n_features, sizes, 1, self.discriminator_activation, dtype=dtype, rng=self._rng,
            activation_alpha=self.activation_alpha)
        if self.minibatch_std:  # [last hidden layer, s] -> the output unit
            *hidden, last = self.discriminator_.layers
            output = Dense(last.n_in + 1, 1, "identity", dtype=dtype, rng=self._rng)
            self.discriminator_ = PenalisedSequential([*hidden, MinibatchStd(), output])
        self.average_generator_ = (copy.deepcopy(self.generator_) if self.generator_average
                                   else None)
        self._d_optimizer = None
        self._d_losses = []
        self._buffers = {}
        return self.generator_  # coefs_, loss_curve_ etc. are the generator's

    def _summary_networks(self):
        return [("generator", self.generator_), ("discriminator", self.discriminator_)]

    def __getstate__(self):
        state = super().__getstate__()
        state["_buffers"] = {}  # work arrays, made again on use
        return state

    def _buffer(self, m):
        buffers = self._buffers.get(m)
        if buffers is None:
            buffers = self._buffers[m] = _Buffers(m, self.n_features_in_, self.generator_.n_inputs,
                                                  self.generator_.dtype)
        return buffers

    def _noise(self, m, out, parallel=None):
        """Fresh z into ``out`` for this rank's rows of a minibatch of m rows: a rank of
        replicated rows takes its share (:func:`_part`) of one process's draw for all m; a rank
        of sharded rows draws its own rows only (from its own generator)."""
        whole = out
        if parallel is not None and not parallel.sharded and out.shape[0] != m:
            whole = self._buffer(m).noise
        self._rng.standard_normal(dtype=whole.dtype, out=whole)
        if whole is not out:
            lo, hi = _part(m, parallel)
            out[...] = whole[lo:hi]

    def _discriminator_step(self, X, rows, m, weights=None, parallel=None):
        """One step of D up L on the real rows X[rows] of a minibatch of m rows and as many
        fresh G(z); returns -L.  ``weights`` (v of the real rows, scaled to mean 1 over the
        minibatch: ``fastbp.nn.row_weights``; all 0 for a batch of weight 0, which keeps only
        the fake rows' term): L's mean over them is their weighted mean.

        Data-parallel (``parallel``, a ``fastbp.distributed.DataParallel``): ``rows`` are this
        rank's of the global minibatch of m rows (:meth:`_AlternatingSteps._minibatches`) and z
        its rows of the noise (:meth:`_noise`); it scales its rows' loss gradient by the global
        rows, the minibatch-std feature's statistics are the global minibatch's
        (:func:`_shared`), and one allreduce sums D's gradients and -L over the ranks before the
        step (L2 in the step, once)."""
        n = rows.shape[0]
        b = self._buffer(n)
        np.take(X, rows, axis=0, out=b.batch[:n], mode="clip")
        self._noise(m, b.noise, parallel)
        b.batch[n:] = self.generator_._forward(b.noise, False)
        D = self.discriminator_
        # the real and the fake rows' batch statistics apart (over the global minibatch's)
        with _groups(D, 2), _shared(D, parallel, n):
            logits = D._forward(b.batch, True)
            for layer in _std_layers(D):  # the real rows' s: D's constant at inference
                layer.track(first=self._d_optimizer.t == 0)
            value, _ = ops().loss("sigmoid_cross_entropy", logits, b.target, b.d_grad)
            # the kernel averages over 2n rows; -L = mean over the m real + over the m fake
            scale = 2 * n / m
            b.d_grad *= scale
            value *= scale
            if weights is not None:
                real = row_losses("sigmoid_cross_entropy", logits[:n], b.target[:n])
                b.d_grad[:n] *= weights.astype(b.d_grad.dtype)[:, None]
                value += float(weights @ real - real.sum()) / m
            D._backward(b.d_grad, False)
        if parallel is not None:
            value = parallel.sum_arrays(D.grads(), value)
        optimizer_step(self._d_optimizer, D)
        return value

    def _generator_step(self, m, norms, parallel=None):
        """One step of G on m fresh z, through D's input gradient; returns G's objective
        (data-parallel: as :meth:`_discriminator_step`, this rank's share of the m rows, G's
        gradients summed over the ranks)."""
        lo, hi = _part(m, parallel)
        n = hi - lo
        b = self._buffer(n)
        G, D = self.generator_, self.discriminator_
        self._noise(m, b.noise, parallel)
        with _shared(D, parallel, n):
            logits = D._forward(G._forward(b.noise, True), True)
            # -log D(G(z)) is the cross-entropy with target 1; log(1 - D(G(z))) minus that with 0
            saturating = self.generator_loss == "minimax"
            target = b.target[n:] if saturating else b.target[:n]
            value, _ = ops().loss("sigmoid_cross_entropy", logits, target, b.g_grad)
            value *= n / m  # this rank's part of the mean over the m rows
            b.g_grad *= n / m
            if saturating:
                value = -value
                np.negative(b.g_grad, out=b.g_grad)
            with _input_gradient_only(D):  # D's own gradients are not needed here
                dZ = D._backward(b.g_grad, True)
            G._backward(dZ, False)
        if parallel is not None:
            value = parallel.sum_arrays(G.grads(), value)
        G.add_gradient_norms(norms)
        optimizer_step(self._state.optimizer, G)
        if self.average_generator_ is not None:
            self._average(G)
        return value

    def _average(self, G):
        """One step of the average of G's weights: a <- a - (1 - beta_t) (a - w), beta_t =
        min(generator_average, (1 + t) / (10 + t)) after G's t-th step (the early steps, far from
        the equilibrium, fade fast); G's gradients, used already, hold a - w."""
        t = self._state.optimizer.t
        beta = min(self.generator_average, (1 + t) / (10 + t))
        for average, weight, scratch in zip(self.average_generator_.params(), G.params(),
                                            G.grads()):
            np.subtract(average, weight, out=scratch)
            scratch *= scratch.dtype.type(1 - beta)
            average -= scratch

    def _train(self, X, Y, config, validation, incremental, sample_weight=None, callback=None):
        """The training loop's epochs, bookkeeping and checks (``fastbp.training.fit_network``),
        with the alternating steps of :class:`_AlternatingSteps` as each epoch."""
        parallel = distributed.current()
        if self.batch_size == "auto":  # sharded: of every rank's rows
            rows = X.shape[0] if parallel is None or not parallel.sharded else parallel.sum(
                X.shape[0])
            config = dataclasses.replace(config, batch_size=min(AUTO_BATCH, rows))

        def trainer(optimizer, batch_size, fresh):
            if fresh or self._d_optimizer is None:
                self._d_optimizer = make_optimizer(self.discriminator_, config, batch_size)
            if parallel is not None:  # rank 0's D and G average, as the loop takes its G
                networks = [self.discriminator_, self.average_generator_]
                parallel.broadcast_arrays([array for network in networks if network is not None
                                           for array in network.params()])
            steps = _AlternatingSteps(self, optimizer, batch_size, sample_weight, parallel)
            return steps, steps.fit_path

        trainer.data_parallel = True  # its steps reduce over the ranks (fastbp.training)

        fit_network(self.generator_, self.loss_, X, X, config, self._state, rng=self._rng,
                    incremental=incremental, name="GAN", stacklevel=user_stacklevel(),
                    trainer=trainer, converge=False, callback=callback)

    def _publish(self):
        super()._publish()
        self.generator_loss_curve_ = self.loss_curve_
        self.discriminator_loss_curve_ = list(self._d_losses)
        self.discriminator_coefs_ = [layer.W for layer in self.discriminator_.dense_layers]
        self.discriminator_intercepts_ = [layer.b for layer in self.discriminator_.dense_layers]

    # ------------------------------------------------------------------------------- inference
    @sections(["n_samples", "random_state of z"],
              ("X", "ndarray of shape (n_samples, n_features)", "Of the model's ``dtype``."),
              ["not fitted"])
    def sample(self, n_samples=1, random_state=None):
        """New points G(z), z ~ N(0, I).

        G is ``average_generator_``, the average of G's weights, when there is one
        (``generator_average`` > 0), else ``generator_``."""
        check_is_fitted(self)
        rng = self._rng if random_state is None else _make_rng(random_state)
        z = rng.standard_normal((int(n_samples), self.generator_.n_inputs))
        return self._predict(self._sampler(), z.astype(self.generator_.dtype))

    def _sampler(self):
        """The network that samples: G's weight average when kept, else G."""
        return self.generator_ if self.average_generator_ is None else self.average_generator_

    @sections(["X"], (None, "ndarray of shape (n_samples,)", "Of the model's ``dtype``."),
              ["not fitted", "bad X"])
    def decision_function(self, X):
        """D's logit for every row: log(D(x) / (1 - D(x))); D(x) = sigmoid of it."""
        X = self._checked(X)
        return self._predict(self.discriminator_, X)[:, 0]

    @sections(["X"],
              (None, "ndarray of shape (n_samples, n_features)", "Of the model's ``dtype``."),
              ["not fitted", "bad X"])
    def input_gradient(self, X):
        """d/dx of G's objective at each row x taken as a generated point: of -log D(x)
        (non-saturating) or log(1 - D(x)) (minimax).  Backpropagated through G, this trains G."""
        X = self._checked(X)
        D = self.discriminator_
        with self._threads():
            logits = D.forward(X)
            upstream = special.expit(logits)  # d/dt log(1 - sigmoid t) = -sigmoid t
            if self.generator_loss == "non_saturating":  # d/dt -log sigmoid t = sigmoid t - 1
                upstream -= 1
            else:
                np.negative(upstream, out=upstream)
            return D.backward(upstream, need_dX=True).copy()

    def _exports(self):
        steps = export.layer_steps(self.discriminator_)
        if self.minibatch_std:  # the constant feature s folded into the output layer's bias
            (std,), last = _std_layers(self.discriminator_), steps[-1]
            W, b = last.W[:-1], last.b + std.running * last.W[-1]
            steps = (*steps[:-1], dataclasses.replace(last, W=W, b=b.astype(W.dtype)))
        return {"sample": export.Path(export.layer_steps(self._sampler()), "sample", input="z"),
                "decision_function": export.Path(steps, "decision_function", ravel=True)}

    # ---------------------------------------------------------------------------- persistence
    def _fitted_arrays(self):
        arrays = super()._fitted_arrays()
        for i, (W, b) in enumerate(zip(self.discriminator_coefs_, self.discriminator_intercepts_)):
            arrays[f"discriminator_coef_{i}"], arrays[f"discriminator_intercept_{i}"] = W, b
        arrays["discriminator_loss_curve_"] = np.asarray(self._d_losses, dtype=np.float64)
        for layer in _std_layers(self.discriminator_):
            arrays["discriminator_batch_std"] = np.float64(layer.running)
        if self.average_generator_ is not None:
            for i, array in enumerate(self.average_generator_.params()):
                arrays[f"average_generator_{i}"] = array
        return arrays

    def _restore_state(self, arrays, meta):
        super()._restore_state(arrays, meta)
        weights = []
        for i in range(len(self.discriminator_.dense_layers)):
            weights += [arrays[f"discriminator_coef_{i}"], arrays[f"discriminator_intercept_{i}"]]
        self.discriminator_.set_weights(weights)
        for layer in _std_layers(self.discriminator_):
            running = np.asarray(arrays["discriminator_batch_std"], dtype=np.float64)
            if running.shape != () or not 0 < running < np.inf:
                raise ValueError("inconsistent fastbp model file: discriminator_batch_std must be "
                                 f"one number > 0, got {running!r}")
            layer.running = float(running)
        if self.average_generator_ is not None:
            self.average_generator_.set_weights(
                [arrays[f"average_generator_{i}"]
                 for i in range(len(self.average_generator_.params()))])
        self._d_losses = [float(v) for v in arrays["discriminator_loss_curve_"]]
