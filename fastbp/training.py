"""The generic training loop: epochs of minibatch backprop over a ``fastbp.nn.Sequential``.

It knows nothing about classifiers: it takes a network, a loss name (one of
``fastbp.kernels.LOSSES``, computed from the network output), the inputs X and a target Y, and
optional callbacks (a validation score for early stopping, a per-epoch hook).  The estimators of
``fastbp.models.mlp`` and the autoencoders build on :func:`fit_network`.

Objective.  For a minibatch B of n_B rows (at most ``batch_size``), with the optimizer's per-parameter
``weight_decay`` lambda_i (alpha / batch_size for weights, 0 for biases, see :func:`weight_decays`):

    F_B(w) = loss(net(X_B), Y_B) + 1/2 * sum_i lambda_i ||p_i||^2
           = mean data loss over the batch + alpha / (2 * batch_size) * sum_l ||W^l||_F^2

which is scikit-learn's MLP objective; the optimizer steps along grad_B + lambda_i p_i.

One epoch (:func:`train_epoch`, the function a compiled trainer replaces) walks ``order``, an intp
permutation of the rows of X, in consecutive slices of ``batch_size`` (the last may be shorter).
For each slice, in this order:

1. gather X_B = X[order[s]], Y_B = Y[order[s]] into buffers (rows in slice order);
2. forward in training mode (each Dropout layer, in layer order, draws its mask with
   ``rng.random(dtype=dtype, out=u)``), loss kernel on the output, backward through all layers;
3. the batch value F_B = data loss + 1/2 sum_i lambda_i ||p_i||^2, at the parameters before the step;
4. ||dW^l||_F of every Dense layer (data-loss gradient, without the decay term);
5. ``optimizer.step(network.grads())`` (which advances ``optimizer.t`` by one).

It returns sum_B n_B F_B / n (the mean over the rows of the batch values, scikit-learn's
``loss_curve_`` entry) and writes into ``grad_norms_out`` the plain mean over the minibatches of
||dW^l||_F, one float64 entry per Dense layer.

A compiled fast path: at the start of every fit call the loop calls
``fastbp.engine.make_trainer(network, loss, optimizer, batch_size)`` (if that module exists); a
trainer it returns (not None) runs each epoch as ``trainer.train_epoch(X, Y, order,
grad_norms_out) -> mean loss`` with exactly the semantics above, reading ``optimizer.lr`` at the
start of each epoch (schedules change it between epochs; everything else about the optimizer,
including ``weight_decay``, is fixed for the trainer's life, one fit call), and leaving the
network's W/b/dW/db, the optimizer's state arrays and ``optimizer.t`` as the layer-by-layer epoch
would.  X and Y are C-contiguous arrays of the network's dtype; for softmax cross-entropy Y is a
1-D intp label vector; ``order`` is an intp array (a permutation of the rows, or arange when not
shuffling); ``grad_norms_out`` a float64 array with one entry per Dense layer.  The factory
returns None for what it does not handle (other layer kinds, dtypes, backends; ``engine_decline``
says why) and the :class:`LayerwiseTrainer` (a thin wrapper of :func:`train_epoch`) runs instead.
Which of the two ran, and why, is never silent: ``TrainState.fit_path`` records it, the
estimators publish it as ``fit_path_`` and the first verbose line says it.  It is ``"engine"``
(the compiled training engine: a float32 plain Dense/Dropout stack on the compiled backend) or
``"layerwise: <reason>"``, for example ``"layerwise: float64"``, ``"layerwise: numpy backend"``,
``"layerwise: not a plain Dense/Dropout stack (SparsityPenalty layer)"``, ``"layerwise: Armijo
line search (learning_rate='backtracking')"``, ``"layerwise: engine unavailable (ImportError:
...)"`` (``fastbp.engine.engine_decline`` gives the engine's reasons).  A model whose epoch is not one network's backprop (the GAN) brings
its own epoch trainer through the ``trainer`` hook of :func:`fit_network`: the loop around it is
this one.

Around the epochs :func:`fit_network` does what scikit-learn's MLP does: shuffling with the given
generator (one ``rng.permutation(n)`` per epoch when ``shuffle``; 'gd' never shuffles: its one
batch is all rows in order), learning-rate schedules,
convergence by ``tol``/``n_iter_no_change``, early stopping on a validation score that restores
the best weights, per-epoch records in a :class:`TrainState`, verbose progress lines and a
:class:`ConvergenceWarning` when ``max_iter`` runs out first.

Learning-rate schedules (the rate used by an epoch is recorded in ``TrainState.learning_rates``):

- 'constant': ``learning_rate_init`` throughout.
- 'invscaling': epoch e+1 uses ``learning_rate_init / (t + 1) ** power_t`` with t the number of
  training rows seen so far (scikit-learn's rule); the first epoch of a fit uses
  ``learning_rate_init``; a partial fit's epoch continues the schedule.
- 'adaptive': constant while the epochs improve; each time ``n_iter_no_change`` consecutive
  epochs fail to improve (training loss down by ``tol``, or validation score up by ``tol`` with
  early stopping) the rate is divided by 5 and the count restarts; training stops when such an
  event finds the rate already <= 1e-6.
- 'backtracking' (solver 'gd' only, no dropout): each epoch is one full-batch gradient step whose
  length is found by an Armijo line search: start at twice the previous epoch's accepted step
  (``learning_rate_init`` for the first epoch of a fit), halve until F(w - lr g) <= F(w) - c lr ||g||^2
  (g the full gradient with the decay term, c = ``ARMIJO_C``).  No acceptable step within
  ``ARMIJO_MAX_HALVINGS`` halvings means a stationary point (to float precision): training stops
  as converged, the weights left as they were.

Convergence (every schedule): an epoch "does not improve" when its loss is > best loss - tol (or,
with early stopping, its validation score < best score + tol); the first epoch of a fresh fit
always improves (on an infinite best loss).  After ``n_iter_no_change`` such epochs in a row training
stops (for 'adaptive', see above); running out of ``max_iter`` epochs first warns.  A stop for want
of improvement is convergence only when the loss has not risen (:func:`divergence`): if the mean
loss of those last ``n_iter_no_change`` epochs (a mean, so that the noise of a stochastic objective
is not taken for a rise) exceeds the best loss of the epochs before them by more than max(tol,
``DIVERGENCE_RISE`` * max(|first epoch's loss|, |that best|)) (the first epoch of the model's whole
history, so a warm start keeps the scale of the original fit; and the epochs before, so that a
loss still falling when early stopping ends the fit is no rise), or if the best loss exceeds the
loss F at the weights the fit
started from (:func:`start_loss`, on the first minibatch of rows) by more than max(tol, |F|),
training diverged: it stops with a :class:`ConvergenceWarning` saying so and ``converged`` False.

Non-finite values (:func:`check_finite`, the one check of every training loop, the GAN's too):
after every epoch the loss, the gradient norms and the parameters must be finite; otherwise
training stops with a ValueError naming the epoch, the learning rate and the input's scale.  The
network is then left as the failed epoch made it: the estimators put back their state from
before the call (see ``fastbp.models.mlp``).
"""
import importlib
import logging
import math
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from fastbp.exceptions import ConvergenceWarning
from fastbp.optim import SGD, Adam, RMSprop

# Verbose progress lines are INFO records of this logger, each with a ``progress`` attribute (a
# dict: ``fit_path``; or ``epoch``, ``epochs`` (this fit's maximum), ``values`` (the epoch's
# named losses), ``validation_score``, ``lr``, ``seconds``; or ``stop``) for a program to show
# them its own way (``fastbp train``'s progress bar).  The package logger "fastbp" prints them to
# the current sys.stdout, as scikit-learn's verbose output goes; silence them the usual ways
# (``logging.getLogger("fastbp").setLevel(logging.WARNING)``), or route them through your own
# logging set-up (remove fastbp's handler and set ``propagate = True`` on the "fastbp" logger).
logger = logging.getLogger(__name__)


class _CurrentStdout(logging.StreamHandler):
    """A handler writing bare messages to whatever ``sys.stdout`` is at the time (like ``print``:
    ``contextlib.redirect_stdout`` and captured output see the lines)."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stdout


_package_logger = logging.getLogger("fastbp")
if not _package_logger.handlers:
    _package_logger.addHandler(_CurrentStdout())
    _package_logger.setLevel(logging.INFO)
    _package_logger.propagate = False

__all__ = ["ConvergenceWarning", "TrainConfig", "TrainState", "fit_network", "train_epoch",
           "check_finite", "divergence", "start_loss", "LayerwiseTrainer", "weight_decays",
           "resolve_batch_size", "SOLVERS", "LEARNING_RATES"]

SOLVERS = ("sgd", "adam", "gd", "rmsprop")
LEARNING_RATES = ("constant", "invscaling", "adaptive", "backtracking")
ARMIJO_C = 1e-4
ARMIJO_MAX_HALVINGS = 50
ADAPTIVE_MIN_LR = 1e-6
DIVERGENCE_RISE = 0.1  # a rise of the loss by this fraction of its scale is divergence, not noise
MAX_ITER_WARNING = ("Stochastic Optimizer: Maximum iterations ({}) reached and the optimization "
                    "hasn't converged yet.")  # scikit-learn's words

@dataclass
class TrainConfig:
    """Optimisation settings (scikit-learn's names and defaults)."""

    solver: str = "adam"
    learning_rate: str = "constant"
    learning_rate_init: float = 1e-3
    power_t: float = 0.5
    momentum: float = 0.9
    nesterovs_momentum: bool = True
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    alpha: float = 1e-4
    batch_size: object = "auto"
    max_iter: int = 200
    shuffle: bool = True
    tol: float = 1e-4
    n_iter_no_change: int = 10
    verbose: bool = False

    def validate(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.learning_rate not in LEARNING_RATES:
            raise ValueError(f"learning_rate must be one of {LEARNING_RATES}, got {self.learning_rate!r}")
        if self.learning_rate == "backtracking" and self.solver != "gd":
            raise ValueError("learning_rate='backtracking' (Armijo line search) needs solver='gd'")
        checks = [
            (self.learning_rate_init > 0, "learning_rate_init must be > 0"),
            (self.power_t >= 0, "power_t must be >= 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (0 <= self.beta_1 < 1, "beta_1 must be in [0, 1)"),
            (0 <= self.beta_2 < 1, "beta_2 must be in [0, 1)"),
            (self.epsilon > 0, "epsilon must be > 0"),
            (self.alpha >= 0, "alpha must be >= 0"),
            (self.max_iter >= 1, "max_iter must be >= 1"),
            (self.tol >= 0, "tol must be >= 0"),
            (self.n_iter_no_change >= 1, "n_iter_no_change must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}, got {self}")
        if not (self.batch_size == "auto" or (isinstance(self.batch_size, (int, np.integer))
                                                and not isinstance(self.batch_size, bool))):
            raise ValueError(f"batch_size must be 'auto' or a positive int, got {self.batch_size!r}")
        if not isinstance(self.batch_size, str) and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        return self


class TrainState:
    """What training leaves behind and a later partial fit or warm start continues from.

    Per epoch: ``loss_curve`` (mean objective), ``validation_scores`` (with a validation score),
    ``grad_norms`` (float64 array per epoch: mean ||dW||_F of each Dense layer),
    ``learning_rates``, ``epoch_times`` (seconds) and, for 'backtracking', ``line_search``
    (tuples F(w), accepted step, ||g||^2, F(w - step g)).  Totals: ``n_iter`` epochs, ``t``
    training rows seen, ``best_loss``, ``best_validation_score``; ``optimizer`` and ``lr`` carry on.
    ``fit_path``: which path trained the last fit call (``"engine"`` or ``"layerwise: <reason>"``,
    see :func:`make_trainer`); None before any.
    """

    def __init__(self):
        self.loss_curve = []
        self.validation_scores = []
        self.grad_norms = []
        self.learning_rates = []
        self.epoch_times = []
        self.line_search = []
        self.n_iter = 0
        self.t = 0
        self.best_loss = math.inf
        self.best_validation_score = -math.inf
        self.no_improvement_count = 0
        self.optimizer = None
        self.lr = None
        self.best_params = None
        self.converged = False
        self.fit_path = None


def resolve_batch_size(batch_size, n, solver):
    """Rows per minibatch: n for 'gd', min(200, n) for 'auto', else clipped to [1, n] (warned)."""
    if solver == "gd":
        return n
    if batch_size == "auto":
        return min(200, n)
    if not 1 <= batch_size <= n:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                      "It is going to be clipped", UserWarning, stacklevel=3)
    return int(np.clip(batch_size, 1, n))


def weight_decays(network, alpha, batch_size):
    """Per-parameter L2 coefficients in ``network.params()`` order: alpha / batch_size for the
    weights W of every Dense layer, 0 for the biases."""
    decays = []
    for layer in network.layers:
        for name in layer.param_names:
            decays.append(alpha / batch_size if name == "W" else 0.0)
    return decays


def make_optimizer(network, config, batch_size):
    decays = weight_decays(network, config.alpha, batch_size)
    if config.solver == "adam":
        return Adam(network.params(), lr=config.learning_rate_init, beta1=config.beta_1,
                    beta2=config.beta_2, eps=config.epsilon, weight_decay=decays)
    if config.solver == "rmsprop":  # PyTorch's RMSprop; its alpha (smoothing) is beta_2
        return RMSprop(network.params(), lr=config.learning_rate_init, alpha=config.beta_2,
                       eps=config.epsilon, weight_decay=decays, momentum=config.momentum)
    momentum = 0.0 if config.learning_rate == "backtracking" else config.momentum
    return SGD(network.params(), lr=config.learning_rate_init, momentum=momentum,
               nesterov=config.nesterovs_momentum, weight_decay=decays)


def _penalty(params, decays):
    """1/2 sum_i lambda_i ||p_i||^2."""
    total = 0.0
    for param, decay in zip(params, decays):
        if decay:
            total += 0.5 * decay * float(np.vdot(param, param))
    return total


class _Workspace:
    """Batch buffers of one network / target layout, made once per batch size."""

    def __init__(self, network, Y):
        self.network = network
        self.dense = network.dense_layers
        self.params = network.params()
        self.grads = network.grads()
        self.x_width = network.n_inputs
        self.y_tail = Y.shape[1:]
        self.y_dtype = Y.dtype
        self.batches = {}

    def batch(self, n):
        buffers = self.batches.get(n)
        if buffers is None:
            buffers = self.batches[n] = (
                np.empty((n, self.x_width), self.network.dtype),
                np.empty((n, *self.y_tail), self.y_dtype))
        return buffers


def train_epoch(network, loss, optimizer, X, Y, order, batch_size, grad_norms_out, work=None):
    """One epoch of minibatch backprop, layer by layer; returns the mean objective.

    See the module docstring for the exact definition (what a compiled trainer reproduces).
    ``work`` is a workspace reused across epochs (made if None).
    """
    if work is None:
        work = _Workspace(network, Y)
    n = order.shape[0]
    dense, grads = work.dense, work.grads
    decayed = [(param, 0.5 * decay) for param, decay in zip(work.params, optimizer.weight_decay)
               if decay]
    vdot = np.vdot
    loss_and_grad = network._loss_and_grad
    grad_norms_out[:] = 0.0
    total = 0.0
    n_batches = 0
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        n_b = rows.shape[0]
        x_b, y_b = work.batch(n_b)
        np.take(X, rows, axis=0, out=x_b, mode="clip")
        np.take(Y, rows, axis=0, out=y_b, mode="clip")
        value = loss_and_grad(loss, x_b, y_b, True)
        for param, half_decay in decayed:  # 1/2 sum_i lambda_i ||p_i||^2
            value += half_decay * float(vdot(param, param))
        total += value * n_b
        for j, layer in enumerate(dense):
            grad_norms_out[j] += math.sqrt(float(vdot(layer.dW, layer.dW)))
        optimizer.step(grads)
        n_batches += 1
    if n_batches:
        grad_norms_out /= n_batches
    return total / n if n else 0.0


class LayerwiseTrainer:
    """The Python epoch behind the compiled trainer's interface."""

    def __init__(self, network, loss, optimizer, batch_size):
        self.network, self.loss, self.optimizer, self.batch_size = network, loss, optimizer, batch_size
        self._work = None

    def train_epoch(self, X, Y, order, grad_norms_out):
        if self._work is None or self._work.y_tail != Y.shape[1:] or self._work.y_dtype != Y.dtype:
            self._work = _Workspace(self.network, Y)
        return train_epoch(self.network, self.loss, self.optimizer, X, Y, order, self.batch_size,
                           grad_norms_out, self._work)


_engine_warned = False


def make_trainer(network, loss, optimizer, batch_size):
    """(trainer, fit path): the compiled trainer and ``"engine"`` when ``fastbp.engine`` accepts
    this network, loss and optimizer, else a :class:`LayerwiseTrainer` and ``"layerwise: "`` with
    the engine's reason (``fastbp.engine.engine_decline``: "float64", "numpy backend", "not a plain
    Dense/Dropout stack (SparsityPenalty layer)", ...; "engine unavailable (ImportError: ...)"
    when the module cannot be imported -- then also one RuntimeWarning, unless it is absent)."""
    global _engine_warned
    try:
        engine = importlib.import_module("fastbp.engine")
    except ImportError as error:
        reason = f"engine unavailable ({type(error).__name__}: {error})"
        absent = isinstance(error, ModuleNotFoundError) and error.name == "fastbp.engine"
        if not absent and not _engine_warned:
            _engine_warned = True
            warnings.warn(f"fastbp.engine cannot be imported ({error}); training layer by layer",
                          RuntimeWarning, stacklevel=3)
    else:
        reason = engine.engine_decline(network, loss, optimizer, batch_size)
        trainer = engine.make_trainer(network, loss, optimizer, batch_size)
        if trainer is not None:
            return trainer, "engine"
        reason = reason or "the engine made no trainer"
    return LayerwiseTrainer(network, loss, optimizer, batch_size), f"layerwise: {reason}"


# ---------------------------------------------------------------------------- Armijo line search
class _LineSearch:
    """Buffers of the full-batch line search: the starting point and the full gradient."""

    def __init__(self, network):
        self.start = [np.empty_like(p) for p in network.params()]
        self.gradient = [np.empty_like(p) for p in network.params()]


def _objective(network, loss, X, Y, decays):
    """F(w) on (X, Y) without a backward pass (no dropout: the objective must be deterministic)."""
    value, _ = network._objective(loss, X, Y, False)
    return value + _penalty(network.params(), decays)


def armijo_step(network, loss, X, Y, decays, lr_start, grad_norms_out, search=None,
                c=ARMIJO_C, max_halvings=ARMIJO_MAX_HALVINGS):
    """One full-batch gradient step with Armijo backtracking.

    Returns (F(w), accepted step, ||g||^2, F(w_new)); an accepted step of 0.0 means none of
    ``max_halvings`` halvings of ``lr_start`` decreased F enough (the weights are unchanged).
    """
    search = search or _LineSearch(network)
    params, grads = network.params(), network.grads()
    f0 = network._loss_and_grad(loss, X, Y, True) + _penalty(params, decays)
    for j, layer in enumerate(network.dense_layers):
        grad_norms_out[j] = math.sqrt(float(np.vdot(layer.dW, layer.dW)))
    sq_norm = 0.0
    for param, grad, start, full, decay in zip(params, grads, search.start, search.gradient, decays):
        np.copyto(start, param)
        np.multiply(param, param.dtype.type(decay), out=full)
        full += grad
        sq_norm += float(np.vdot(full, full))
    lr = lr_start
    for _ in range(max_halvings):
        for param, start, full in zip(params, search.start, search.gradient):
            np.multiply(full, param.dtype.type(-lr), out=param)
            param += start
        f1 = _objective(network, loss, X, Y, decays)
        if f1 <= f0 - c * lr * sq_norm:
            return f0, lr, sq_norm, f1
        lr *= 0.5
    for param, start in zip(params, search.start):
        np.copyto(param, start)
    return f0, 0.0, sq_norm, f0


# ------------------------------------------------------------------------------- health checks
def check_finite(epoch, lr, learning_rate_init, params, X=None, name="training", **values):
    """Raise ValueError unless every value and parameter of a finished epoch is finite.

    ``values``: named losses and gradient norms (floats or arrays; None is skipped), e.g.
    ``loss=value, gradient_norms=norms``; ``params``: the parameter arrays.  The message names
    what became non-finite, the ``epoch``, the learning rate ``lr`` it used, ``learning_rate_init``
    and, with the training inputs X, their largest magnitude (large inputs overflow as surely as a
    large step).  A NaN parameter makes every later loss NaN, so checking each epoch is enough.
    """
    bad = [name_.replace("_", " ") for name_, value in values.items()
           if value is not None and not np.isfinite(value).all()]
    if not all(np.isfinite(param).all() for param in params):
        bad.append("parameters")
    if not bad:
        return
    hint = "a smaller learning_rate_init"
    if X is not None and X.size:
        hint += f", or scaled inputs (the largest |x| is {float(np.max(np.abs(X))):.3g})"
    what = bad[0] if len(bad) == 1 else f"{', '.join(bad[:-1])} and {bad[-1]}"
    raise ValueError(f"{name}: training produced non-finite {what} at epoch {epoch} "
                     f"(learning rate {lr:.3g}, learning_rate_init={learning_rate_init:.3g}): "
                     f"the optimization diverged. Try {hint}.")


def start_loss(network, loss, X, Y, decays, rows):
    """The objective F at the current weights on the first ``rows`` rows of (X, Y), as an epoch
    computes it (training mode: dropout and sampling on), with every layer's generator put back:
    the training that follows draws what it would have drawn."""
    generators = list({id(layer.rng): layer.rng for layer in network.layers
                       if isinstance(getattr(layer, "rng", None), np.random.Generator)}.values())
    states = [generator.bit_generator.state for generator in generators]
    try:
        value, _ = network._objective(loss, X[:rows], Y[:rows], True)
    finally:
        for generator, state in zip(generators, states):
            generator.bit_generator.state = state
    return value + _penalty(network.params(), decays)


def divergence(state, start, tol, window):
    """Why a stop for want of improvement is not convergence (module docstring), or None: the
    loss of the last ``window`` epochs rose above the best before them on average, or the best is
    over twice the loss at the ``start`` of the fit (None: unknown)."""
    before, recent, best = state.loss_curve[:-window], state.loss_curve[-window:], state.best_loss
    if before:
        mean, best_before = math.fsum(recent) / len(recent), min(before)
        scale = max(abs(state.loss_curve[0]), abs(best_before))
        if mean - best_before > max(tol, DIVERGENCE_RISE * scale):
            return (f"the training loss rose from its best {best_before:.4g} to {mean:.4g} on "
                    f"average over the last {len(recent)} epochs")
    if start is not None and best - start > max(tol, abs(start)):
        return (f"the training loss never came below {best:.4g}, over twice the {start:.4g} it "
                "started from")
    return None


# ---------------------------------------------------------------------------------- the fit loop
def fit_network(network, loss, X, Y, config, state=None, *, rng=None, validation_score=None,
                early_stopping=True, incremental=False, callback=None, log=None, name="training",
                stacklevel=2, trainer=None, converge=True):
    """Train ``network`` on (X, Y) and return the :class:`TrainState` (``state`` updated in place).

    X: C-contiguous (n, d) array of the network's dtype; Y: (n, k) array of that dtype, or for
    softmax cross-entropy a 1-D intp label vector.  ``config``: :class:`TrainConfig`.
    ``state``: a previous state to continue (warm start / partial fit) or None.
    ``rng``: ``numpy.random.Generator`` for shuffling.
    ``validation_score``: callable(network) -> float, higher is better, scored after every epoch
    (``state.validation_scores``, shown in the progress lines).  With ``early_stopping`` (default)
    it drives convergence (no improvement of the score) and the best weights are restored at the
    end; with ``early_stopping=False`` it is only recorded and convergence is judged on the loss.
    ``incremental``: one epoch (partial fit): keep the optimizer, no convergence test, no warning.
    ``callback``: callable(state) after every epoch; a true return value stops training.
    ``log``: where verbose progress lines go (the first names the fit path): None (default) for
    INFO records of the ``fastbp.training`` logger (see ``logger``), or a callable taking each
    line.  ``stacklevel``: of
    the warnings, as seen from the caller of ``fit_network`` (estimators pass the depth of their
    public method's caller).

    ``trainer``: the step hook, for models whose epoch is not the network's own minibatch backprop
    (the GAN's alternating discriminator and generator steps): None (the engine or the layer-by-
    layer epoch, :func:`make_trainer`), or a callable ``trainer(optimizer, batch_size, fresh) ->
    (epoch trainer, fit path)``, called once per fit with the network's optimizer (``fresh``: made
    by this call, not carried on by a partial fit).  The epoch trainer runs each epoch as
    ``train_epoch(X, Y, order, grad_norms_out) -> loss`` (as :class:`LayerwiseTrainer`: reading
    ``optimizer.lr``, writing one gradient norm per Dense layer of ``network``) and may define
    ``epoch_values(loss, grad_norms) -> dict`` (the named values checked finite and shown in the
    verbose line; default ``loss`` and ``gradient_norms``) and ``params()`` (the arrays checked
    finite; default ``network.params()``).  Everything around the epochs -- shuffling, schedules,
    bookkeeping, ``max_iter``, the non-finite check, verbose lines -- is this loop's.
    ``converge``: False for an objective with no minimum to settle at (a GAN's): no start loss,
    no convergence or divergence test, no ConvergenceWarning; ``max_iter`` epochs run.

    The returned state's ``fit_path`` names the path that trained (``"engine"``, or
    ``"layerwise: <reason>"``; see :func:`make_trainer`).
    """
    config.validate()

    def say(line, **progress):
        if log is None:
            logger.info(line, extra={"progress": progress})
        else:
            log(line)

    state = TrainState() if state is None else state
    rng = np.random.default_rng(rng)
    n = X.shape[0]
    batch_size = resolve_batch_size(config.batch_size, n, config.solver)
    backtracking = config.learning_rate == "backtracking"
    if backtracking and any(getattr(layer, "rate", 0.0) > 0 for layer in network.layers):
        raise ValueError("learning_rate='backtracking' needs dropout=0: the line search needs a "
                         "deterministic objective")

    fresh = state.optimizer is None or not incremental
    if fresh:
        state.optimizer = make_optimizer(network, config, batch_size)
        state.lr = config.learning_rate_init
        state.no_improvement_count = 0
    optimizer = state.optimizer
    optimizer.weight_decay = weight_decays(network, config.alpha, batch_size)
    if backtracking:
        epochs_by, state.fit_path = None, "layerwise: Armijo line search (learning_rate='backtracking')"
    elif trainer is not None:
        epochs_by, state.fit_path = trainer(optimizer, batch_size, fresh)
    else:
        epochs_by, state.fit_path = make_trainer(network, loss, optimizer, batch_size)
    if config.verbose:
        say(f"{name}: training path: {state.fit_path}", fit_path=state.fit_path)
    epoch_values = getattr(epochs_by, "epoch_values", None)
    checked_params = getattr(epochs_by, "params", network.params)
    search = _LineSearch(network) if backtracking else None
    scoring = validation_score is not None and not incremental
    early_stopping = scoring and early_stopping
    if early_stopping and state.best_params is None:
        state.best_params = network.get_weights()
    n_dense = len(network.dense_layers)
    identity = np.arange(n, dtype=np.intp)
    start = (None if incremental or backtracking or not n or not converge else
             start_loss(network, loss, X, Y, optimizer.weight_decay, min(n, batch_size)))

    epochs = 1 if incremental else config.max_iter
    stopped = False
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        norms = np.zeros(n_dense)
        if backtracking:
            f0, lr, sq_norm, f1 = armijo_step(network, loss, X, Y, optimizer.weight_decay, state.lr,
                                              norms, search)
            state.line_search.append((f0, lr, sq_norm, f1))
            value = f0
            if lr > 0:
                state.lr = 2.0 * lr  # the next search starts at twice the accepted step
        else:
            optimizer.lr = lr = state.lr
            order = rng.permutation(n) if config.shuffle and config.solver != "gd" else identity
            value = float(epochs_by.train_epoch(X, Y, order, norms))
        elapsed = time.perf_counter() - started
        state.n_iter += 1
        state.t += n
        state.loss_curve.append(value)
        state.grad_norms.append(norms)
        state.learning_rates.append(lr)
        state.epoch_times.append(elapsed)
        score = None
        if scoring:
            score = float(validation_score(network))
            state.validation_scores.append(score)

        values = (epoch_values(value, norms) if epoch_values is not None else
                  {"loss": value, "gradient_norms": norms})
        if config.verbose:
            line = f"{name}: epoch {state.n_iter:4d}" + "".join(
                f"  {key.replace('_', ' ')} {item:.6f}" for key, item in values.items()
                if isinstance(item, float))
            if score is not None:
                line += f"  validation score {score:.4f}"
            say(f"{line}  lr {lr:.3g}  {elapsed:.3f} s", epoch=epoch, epochs=epochs, lr=lr,
                values={key: item for key, item in values.items() if isinstance(item, float)},
                validation_score=score, seconds=elapsed)

        check_finite(state.n_iter, lr, config.learning_rate_init, checked_params(), X, name,
                     **values)
        if config.learning_rate == "invscaling":  # after every epoch, a partial fit's too
            state.lr = config.learning_rate_init / (state.t + 1) ** config.power_t
        if incremental or not converge:
            state.best_loss = min(state.best_loss, value)
            if incremental:
                break
        else:
            _update_no_improvement(state, value, score if early_stopping else None, config.tol,
                                   network)
        if scoring and not early_stopping:
            state.best_validation_score = max(state.best_validation_score, score)
        if backtracking and lr == 0.0:
            state.converged = stopped = True
            if config.verbose:
                say(f"{name}: no step decreases the loss (line search): converged",
                    stop="no step decreases the loss (line search): converged")
            break
        if callback is not None and callback(state):
            stopped = True
            break
        if converge and state.no_improvement_count >= config.n_iter_no_change:
            what = "Validation score" if early_stopping else "Training loss"
            if config.learning_rate == "adaptive" and state.lr > ADAPTIVE_MIN_LR:
                state.lr /= 5.0
                state.no_improvement_count = 0
                if config.verbose:
                    say(f"{name}: {what} did not improve more than tol={config.tol} for "
                        f"{config.n_iter_no_change} consecutive epochs; learning rate now {state.lr:.3g}")
            elif (why := divergence(state, start, config.tol, config.n_iter_no_change)) is not None:
                stopped = True
                warnings.warn(f"{name}: {why} at epoch {state.n_iter} (learning rate {lr:.3g}): "
                              "training diverged and stopped without converging. Try a smaller "
                              "learning_rate_init.", ConvergenceWarning, stacklevel=stacklevel + 1)
                break
            else:
                state.converged = stopped = True
                if config.verbose:
                    reason = (f"{what.lower()} did not improve more than tol={config.tol} for "
                              f"{config.n_iter_no_change} consecutive epochs")
                    say(f"{name}: {what}{reason[len(what):]}. Stopping.", stop=reason)
                break

    if early_stopping:
        network.set_weights(state.best_params)
    if converge and not incremental and not stopped:
        warnings.warn(MAX_ITER_WARNING.format(config.max_iter), ConvergenceWarning,
                      stacklevel=stacklevel + 1)
    return state


def _update_no_improvement(state, value, score, tol, network):
    if score is not None:
        if score < state.best_validation_score + tol:
            state.no_improvement_count += 1
        else:
            state.no_improvement_count = 0
        if score > state.best_validation_score:
            state.best_validation_score = score
            for best, param in zip(state.best_params, network.params()):
                np.copyto(best, param)
    else:
        if value > state.best_loss - tol:
            state.no_improvement_count += 1
        else:
            state.no_improvement_count = 0
    state.best_loss = min(state.best_loss, value)
