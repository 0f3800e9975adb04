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

Sample weights (``sample_weight`` of :func:`fit_network`: one weight w_i >= 0 per row, as
scikit-learn's MLP takes them).  The weighted objective of a minibatch B, with W_B = sum_{i in B} w_i,

    F_B(w) = sum_{i in B} w_i l_i / W_B + n_B / W_B * 1/2 * sum_i lambda_i ||p_i||^2

is the weighted mean data loss (its gradient with respect to the output is the unweighted one with
row i scaled by v_i = n_B w_i / W_B: ``fastbp.nn.row_weights``, whose docstring says why that is
the whole backward; a penalty layer weights its per-row terms alike) plus the L2 term over the
batch's weight instead of its row count (lambda_i n_B / W_B = alpha / W_B for the weights, as
scikit-learn divides by the batch's weight sum).  Unit weights give exactly the unweighted F_B;
integer weights give, for a batch holding every row (solver 'gd', or ``batch_size`` >= n), the
objective of the data with row i repeated w_i times.  A batch of weight 0 takes no step.  The
epoch's value is sum_B W_B F_B / sum_B W_B.  Weighted epochs run on the compiled engine when every
weight is > 0 (and, data-parallel, the rows are replicated), else on the engine's passes
within each step (``fit_path`` ``"engine steps (sample_weight with zero weights ...)"``);
data-parallel, W_B is the global
minibatch's weight (:func:`data_parallel_epoch`).

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
Where the engine declines whole epochs of a network that is not one plain stack (the VAE's
sampling layer, a layer of the user's own) or of a setting its epochs do not take (weights of 0,
an optimizer of the user's own), the :class:`LayerwiseTrainer` runs each step's forward and
backward passes through the network's runs of Dense layers on the engine
(``fastbp.engine.StackPasses``, :func:`stack_passes`; one engine call per run and pass, GIL
released), the other layers in Python; in one process the optimizer's step of those layers'
parameters is taken in the same call, as the engine's epochs take it (:func:`optimizer_step`
steps the rest).  Which path ran, and why, is never silent: ``TrainState.fit_path`` records it,
the estimators publish it as ``fit_path_`` and the first verbose line says it.  It is
``"engine"`` (the compiled training engine's epochs: a float32 or float64 plain Dense/Dropout
stack on the compiled backend), ``"engine steps (<why not whole epochs>)"``, for example
``"engine steps (not a plain Dense/Dropout stack (Reparameterize layer))"``, or
``"layerwise: <reason>"``, for example ``"layerwise: numpy backend"``, ``"layerwise: Armijo line
search (learning_rate='backtracking')"``, ``"layerwise: engine unavailable (ImportError: ...)"``
(``fastbp.engine.engine_decline`` and ``make_stack_passes`` give the engine's reasons).  A model
whose epoch is not one network's backprop (the GAN) brings its own epoch trainer through the
``trainer`` hook of :func:`fit_network`: the loop around it is this one.

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
``DIVERGENCE_RISE * max(|first epoch's loss|, |that best|)``) (the first epoch of the model's whole
history, so a warm start keeps the scale of the original fit; and the epochs before, so that a
loss still falling when early stopping ends the fit is no rise), or if the best loss exceeds the
loss F at the weights the fit
started from (:func:`start_loss`, on the first minibatch of rows) by more than ``max(tol, |F|)``,
training diverged: it stops with a :class:`ConvergenceWarning` saying so and ``converged`` False.

L-BFGS (solver 'lbfgs', :func:`fit_lbfgs`): no epochs of steps, but SciPy's L-BFGS-B on the
objective F above for one batch of all rows (the L2 term alpha / (2 n), or over the weight sum),
as scikit-learn's MLP does it: ``max_iter`` iterations, ``max_fun`` evaluations, converged when
no gradient entry exceeds ``tol`` in magnitude, a ``ConvergenceWarning`` otherwise.  Each evaluation
is one forward, loss and backward of the network (:class:`LbfgsObjective`; random draws, such as
the VAE's noise, fixed for the whole run), on the engine's passes (:func:`lbfgs_passes`;
``fit_path`` :data:`LBFGS_PATH`) on the compiled backend.  The schedules,
minibatches, shuffling, ``n_iter_no_change`` and early stopping do not apply (a validation score
is only recorded); a partial fit, data-parallel training, dropout and a ``trainer`` hook (the
GAN's game) are refused with a ValueError.

Vanishing and exploding gradients (:func:`gradient_imbalance`): when the first Dense layer's
gradient norm stays below ``VANISHING_RATIO`` times the last's (or above ``EXPLODING_RATIO``
times it) for ``GRADIENT_EPOCHS`` epochs in a row, a ``fastbp.exceptions.GradientWarning`` names
the two layers and the activation and suggests a relu-family activation or another step length;
once per model (``TrainState.gradient_warned``).  Training goes on.

Non-finite values (:func:`check_finite`, the one check of every training loop, the GAN's too):
after every epoch the loss, the gradient norms and the parameters must be finite; otherwise
training stops with a ValueError naming the epoch, the learning rate and the input's scale.  The
network is then left as the failed epoch made it: the estimators put back their state from
before the call (see ``fastbp.models.mlp``).
"""
import contextlib
import importlib
import inspect
import logging
import math
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from fastbp import _backend, distributed, exceptions
from fastbp._platform import _blas_threads
from fastbp.nn import Dense, Dropout
from fastbp.optim import OPTIMIZERS

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

__all__ = ["TrainConfig", "TrainState", "fit_network", "train_epoch",
           "check_finite", "divergence", "start_loss", "LayerwiseTrainer", "weight_decays",
           "resolve_batch_size", "SOLVERS", "STEP_SOLVERS", "LEARNING_RATES", "CONFIG_NAMES",
           "LbfgsObjective", "fit_lbfgs", "stack_passes", "engine_passes", "optimizer_step",
           "lbfgs_passes"]

# The solvers that take steps, epoch by epoch: 'gd' (full-batch SGD) and the optimizers of
# fastbp.optim by their steps' names.  'lbfgs' is no elementwise step: SciPy's L-BFGS-B minimises
# the whole full-batch objective (fit_lbfgs); it has no learning rate and no partial fit.
STEP_SOLVERS = ("gd", *OPTIMIZERS)
SOLVERS = (*STEP_SOLVERS, "lbfgs")
# the optimizers' hyperparameters as TrainConfig names them (scikit-learn's); RMSprop's smoothing
# constant alpha is beta_2, as Adam's second-moment decay (TrainConfig's alpha is the L2 penalty)
CONFIG_NAMES = {"lr": "learning_rate_init", "momentum": "momentum",
                "nesterov": "nesterovs_momentum", "beta1": "beta_1", "beta2": "beta_2",
                "eps": "epsilon", "alpha": "beta_2"}
LEARNING_RATES = ("constant", "invscaling", "adaptive", "backtracking")
ARMIJO_C = 1e-4
ARMIJO_MAX_HALVINGS = 50
ADAPTIVE_MIN_LR = 1e-6
DIVERGENCE_RISE = 0.1  # a rise of the loss by this fraction of its scale is divergence, not noise
VANISHING_RATIO, EXPLODING_RATIO = 1e-4, 1e4  # first / last layer gradient norm (grad_norms_)
GRADIENT_EPOCHS = 5  # epochs in a row beyond one of them before a GradientWarning
MAX_ITER_WARNING = ("Stochastic Optimizer: Maximum iterations ({}) reached and the optimization "
                    "hasn't converged yet.")  # scikit-learn's words
LBFGS_PATH = ("engine steps (lbfgs: each evaluation is one forward and backward pass over all the "
              "rows)")  # on the compiled backend, else "layerwise: <why>" (lbfgs_passes)

@dataclass
class TrainConfig:
    """Optimisation settings (scikit-learn's names and defaults).

    Every field is also an attribute of the same name.  The solvers' hyperparameters reach the
    optimizer by ``CONFIG_NAMES`` (:func:`make_optimizer`); the schedules, convergence and the
    objective are described in the module docstring.

    Parameters
    ----------
    solver : {'adam', 'sgd', 'rmsprop', 'gd', 'lbfgs'}, default 'adam'
        One of ``SOLVERS``: an optimizer of ``fastbp.optim`` by its step's name, 'gd' (full
        batch SGD: one batch of all rows in order, no shuffling), or 'lbfgs' (SciPy's L-BFGS-B on
        the full-batch objective, :func:`fit_lbfgs`: ``max_iter`` counts its iterations; the
        schedules, batches, shuffling, ``n_iter_no_change`` and early stopping do not apply).
    learning_rate : {'constant', 'invscaling', 'adaptive', 'backtracking'}, default 'constant'
        The schedule of the learning rate ('backtracking': an Armijo line search, 'gd' only).
    learning_rate_init : float > 0, default 1e-3
        The first epoch's learning rate (the optimizer's ``lr``).
    power_t : float >= 0, default 0.5
        The exponent of 'invscaling'.
    momentum : float in [0, 1), default 0.9
        SGD's and RMSprop's momentum.
    nesterovs_momentum : bool, default True
        Nesterov's momentum for SGD.
    beta_1 : float in [0, 1), default 0.9
        Adam's first-moment decay.
    beta_2 : float in [0, 1), default 0.999
        Adam's second-moment decay; RMSprop's smoothing constant ``alpha``.
    epsilon : float > 0, default 1e-8
        Adam's and RMSprop's ``eps``.
    alpha : float >= 0, default 1e-4
        The L2 penalty: weight decay alpha / batch_size on every weight matrix (not the
        biases), see :func:`weight_decays`.
    batch_size : int >= 1 or 'auto', default 'auto'
        Rows per minibatch, see :func:`resolve_batch_size`.
    max_iter : int >= 1, default 200
        The most epochs of a fit ('lbfgs': the most iterations).
    shuffle : bool, default True
        Whether each epoch visits the rows in a new random order.
    tol : float >= 0, default 1e-4
        The improvement of the loss (or validation score) an epoch must make to count.
    n_iter_no_change : int >= 1, default 10
        Epochs without improvement before training stops (or 'adaptive' divides the rate).
    verbose : bool, default False
        Progress lines, one per epoch (the first names the fit path).
    max_fun : int >= 1, default 15000
        'lbfgs' only: the most evaluations of the objective (scikit-learn's ``max_fun``).
    """

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
    max_fun: int = 15000

    def validate(self):
        """Check every field's value.

        Returns
        -------
        TrainConfig
            This object.

        Raises
        ------
        ValueError
            Any field outside its domain (the message shows the whole configuration), an
            unknown solver or schedule, or 'backtracking' with a solver other than 'gd'.
        """
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
            (self.max_fun >= 1, "max_fun must be >= 1"),
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

    Made empty (no parameters); :func:`fit_network` fills it.

    Attributes
    ----------
    loss_curve : list of float
        Per epoch, the mean objective (data loss plus the L2 penalty) over the rows.
    validation_scores : list of float
        Per epoch, the validation score (with a ``validation_score`` callable).
    grad_norms : list of ndarray of float64, shape (n_dense,)
        Per epoch, the mean over its minibatches of ||dW||_F of each Dense layer.
    learning_rates : list of float
        Per epoch, the learning rate it used.
    epoch_times : list of float
        Per epoch, its wall-clock time in seconds.
    line_search : list of tuple of 4 floats
        For 'backtracking', per epoch: F(w), the accepted step, ||g||^2, F(w - step g).
    n_iter : int
        Epochs trained, over every fit call.
    t : int
        Training rows seen (n per epoch), over every fit call.
    best_loss : float
        The lowest epoch loss (inf before any).
    best_validation_score : float
        The highest validation score (-inf before any).
    no_improvement_count : int
        Consecutive epochs without improvement, so far.
    optimizer : fastbp.optim.Optimizer or None
        The optimizer, carried on by a partial fit; None before any fit.
    lr : float or None
        The learning rate the next epoch uses (the schedule's state).
    best_params : list of ndarray or None
        With early stopping, the weights of the best validation score.
    converged : bool
        Whether the last fit stopped by convergence.
    fit_path : str or None
        Which path trained the last fit call (``"engine"`` or ``"layerwise: <reason>"``, see
        :func:`make_trainer`); None before any.
    gradient_warned : bool
        Whether a GradientWarning was given (:func:`gradient_imbalance`: once per state).
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
        self.gradient_warned = False


def resolve_batch_size(batch_size, n, solver):
    """Rows per minibatch, as scikit-learn's MLP chooses them.

    Parameters
    ----------
    batch_size : int or 'auto'
        The configured size (``TrainConfig.batch_size``).
    n : int
        The training rows.
    solver : str
        The solver ('gd' takes all rows at once).

    Returns
    -------
    int
        n for 'gd' and 'lbfgs', min(200, n) for 'auto', else ``batch_size`` clipped to [1, n].

    Warns
    -----
    UserWarning
        When ``batch_size`` is clipped (scikit-learn's words).
    """
    if solver in ("gd", "lbfgs"):
        return n
    if batch_size == "auto":
        return min(200, n)
    if not 1 <= batch_size <= n:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                      "It is going to be clipped", UserWarning, stacklevel=3)
    return int(np.clip(batch_size, 1, n))


def weight_decays(network, alpha, batch_size):
    """Per-parameter L2 coefficients: scikit-learn's penalty alpha / (2 batch_size) ||W||^2 as
    weight decays.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network; its layers' ``param_names`` tell weights ("W") from biases.
    alpha : float >= 0
        The L2 penalty (``TrainConfig.alpha``).
    batch_size : int >= 1
        Rows per minibatch.

    Returns
    -------
    list of float
        In ``network.params()`` order: alpha / batch_size for the weights W of every Dense
        layer, 0.0 for the biases.
    """
    decays = []
    for layer in network.layers:
        for name in layer.param_names:
            decays.append(alpha / batch_size if name == "W" else 0.0)
    return decays


def make_optimizer(network, config, batch_size):
    """The solver's optimizer over the network's parameters.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network whose ``params()`` the optimizer updates.
    config : TrainConfig
        The solver ('gd': SGD) and its hyperparameters by ``CONFIG_NAMES`` (the others at the
        optimizer's defaults; 'backtracking' takes plain steps, momentum 0).
    batch_size : int >= 1
        Rows per minibatch (the weight decays are alpha / batch_size).

    Returns
    -------
    fastbp.optim.Optimizer
        A new optimizer, the L2 penalty as its weight decays (:func:`weight_decays`).
    """
    optimizer = OPTIMIZERS["sgd" if config.solver == "gd" else config.solver]
    settings = {}
    for name in inspect.signature(optimizer).parameters:
        if name in CONFIG_NAMES:
            settings[name] = getattr(config, CONFIG_NAMES[name])
    if config.learning_rate == "backtracking":  # the Armijo line search takes plain steps
        settings["momentum"] = 0.0
    try:
        return optimizer(network.params(),
                         weight_decay=weight_decays(network, config.alpha, batch_size), **settings)
    except (TypeError, ValueError) as error:  # in the estimator's names (eps: epsilon, ...)
        message = str(error)
        for name in sorted(settings, key=len, reverse=True):
            if message.startswith(f"{name} "):
                message = CONFIG_NAMES[name] + message[len(name):]
        raise type(error)(message) from None


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


def train_epoch(network, loss, optimizer, X, Y, order, batch_size, grad_norms_out, work=None,
                sample_weight=None):
    """One epoch of minibatch backprop, layer by layer.

    See the module docstring for the exact definition (what a compiled trainer reproduces):
    per minibatch the forward pass, the loss, the backward pass ("CS771 Deep Learning III",
    slides 14-19) and one optimizer step.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network, trained in place (training mode: dropout on).
    loss : str
        One of ``fastbp.kernels.LOSSES``, on the network's output.
    optimizer : fastbp.optim.Optimizer
        Over ``network.params()``; stepped once per minibatch (``optimizer.t`` advances).
    X : ndarray, shape (n, d)
        The inputs, C-contiguous, of the network's dtype.
    Y : ndarray, shape (n, k), or shape (n,) of intp
        The targets, of the network's dtype (intp class labels for softmax cross-entropy).
    order : ndarray of intp, shape (m,)
        The rows of the epoch, in visiting order (a permutation of range(n), or a subset).
    batch_size : int >= 1
        Rows per minibatch (the last may be shorter).
    grad_norms_out : ndarray of float64, shape (n_dense,)
        Written: the mean over the minibatches of ||dW||_F of each Dense layer.
    work : object, optional
        The buffers of an earlier call on the same network and target layout, reused; None
        (default): made here.
    sample_weight : ndarray of float64, shape (n,), optional
        One weight >= 0 per row of X: the weighted epoch of the module docstring; None (default):
        unweighted.

    Returns
    -------
    float
        sum_B n_B F_B / m, the rows' mean of the minibatch objectives F_B (data loss plus the L2
        penalty, at the parameters before each step; weighted: the weight-averaged batch
        objective); 0.0 for no rows.
    """
    if work is None:
        work = _Workspace(network, Y)
    n = order.shape[0]
    grads = work.grads
    decays = list(optimizer.weight_decay)
    decayed = [(param, 0.5 * decay) for param, decay in zip(work.params, decays) if decay]
    vdot = np.vdot
    loss_and_grad = network._loss_and_grad
    grad_norms_out[:] = 0.0
    total = total_weight = 0.0
    n_batches = 0
    w_b, ratio = None, 1.0
    try:
        for start in range(0, n, batch_size):
            rows = order[start:start + batch_size]
            n_b = rows.shape[0]
            weight = n_b
            if sample_weight is not None:
                w_b = sample_weight[rows]
                weight = float(w_b.sum())
                if weight == 0.0:
                    continue  # a batch of weight 0 counts for nothing: no step
                ratio = n_b / weight  # the L2 term is over the batch's weight, not its rows
                optimizer.weight_decay = [decay * ratio for decay in decays]
            x_b, y_b = work.batch(n_b)
            np.take(X, rows, axis=0, out=x_b, mode="clip")
            np.take(Y, rows, axis=0, out=y_b, mode="clip")
            penalty = 0.0  # 1/2 sum_i lambda_i ||p_i||^2 (over the weight), before the step
            for param, half_decay in decayed:
                penalty += ratio * half_decay * float(vdot(param, param))
            value = loss_and_grad(loss, x_b, y_b, True, w_b) + penalty
            total += value * weight
            total_weight += weight
            network.add_gradient_norms(grad_norms_out)
            optimizer_step(optimizer, network, grads)
            n_batches += 1
    finally:
        optimizer.weight_decay = decays
    if n_batches:
        grad_norms_out /= n_batches
    return total / total_weight if total_weight else 0.0


class LayerwiseTrainer:
    """The Python epoch behind the compiled trainer's interface: :func:`train_epoch` with its
    workspace kept between epochs.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network it trains.
    loss : str
        One of ``fastbp.kernels.LOSSES``.
    optimizer : fastbp.optim.Optimizer
        Over ``network.params()``.
    batch_size : int >= 1
        Rows per minibatch.
    sample_weight : ndarray of float64, shape (n,), optional
        One weight per row of the X it trains on (the weighted epoch); None: unweighted.
    parallel : fastbp.distributed.DataParallel, optional
        A data-parallel context: the epochs are :func:`data_parallel_epoch`'s (weighted by
        ``sample_weight`` alike).
    engine_passes : list, optional
        The compiled engine's passes of the network's runs of Dense layers
        (``fastbp.engine.make_stack_passes``), which the network's forward and backward passes
        run on while an epoch runs (``fastbp.nn.Sequential.engine_passes``); None: every layer
        runs itself.

    Attributes
    ----------
    network, loss, optimizer, batch_size, sample_weight, parallel, engine_passes
        As given.
    """

    def __init__(self, network, loss, optimizer, batch_size, sample_weight=None, parallel=None,
                 engine_passes=None):
        self.network, self.loss, self.optimizer, self.batch_size = network, loss, optimizer, batch_size
        self.sample_weight = sample_weight
        self.parallel = parallel
        self.engine_passes = engine_passes
        self._work = None

    def train_epoch(self, X, Y, order, grad_norms_out):
        """One epoch: :func:`train_epoch` with this trainer's network, loss, optimizer and batch
        size.

        Parameters
        ----------
        X, Y, order, grad_norms_out
            As for :func:`train_epoch`.

        Returns
        -------
        float
            The epoch's mean objective.
        """
        if self._work is None or self._work.y_tail != Y.shape[1:] or self._work.y_dtype != Y.dtype:
            self._work = _Workspace(self.network, Y)
        with engine_passes(self.network, self.engine_passes):
            if self.parallel is not None:
                return data_parallel_epoch(self.network, self.loss, self.optimizer, X, Y, order,
                                           self.batch_size, grad_norms_out, self._work,
                                           self.parallel, self.sample_weight)
            return train_epoch(self.network, self.loss, self.optimizer, X, Y, order,
                               self.batch_size, grad_norms_out, self._work, self.sample_weight)


def optimizer_step(optimizer, network, grads=None):
    """The optimizer's step after the network's backward pass, of the parameters whose step the
    engine's passes did not take already (``fastbp.nn.Sequential.engine_stepped``).

    Parameters
    ----------
    optimizer : fastbp.optim.Optimizer
        Over ``network.params()``; its ``t`` advances by one.
    network : fastbp.nn.Sequential
        After its backward pass.
    grads : list of ndarray, optional
        ``network.grads()``, if the caller holds them.
    """
    stepped = network.engine_stepped()
    grads = network.grads() if grads is None else grads
    optimizer.step(grads, skip=stepped) if stepped else optimizer.step(grads)


def stack_passes(network, optimizer=None):
    """The compiled engine's passes of the network's runs of Dense layers inside each training
    step (``fastbp.engine.make_stack_passes``), for :class:`LayerwiseTrainer` and
    :func:`engine_passes`.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network (``engine_runs`` says where its runs are).
    optimizer : fastbp.optim.Optimizer, optional
        The passes then take its steps of their layers' parameters where they can
        (``fastbp.engine.StackPasses.bind``; the caller steps the others:
        :func:`optimizer_step`).

    Returns
    -------
    passes : list or None
        ``[(start, stop, fastbp.engine.StackPasses)]``, or None when the engine runs none.
    why_not : str or None
        None, or why not (the backend, the switch, the build, a run's reason).
    """
    try:
        engine = importlib.import_module("fastbp.engine")
    except ImportError as error:
        return None, f"engine unavailable ({type(error).__name__}: {error})"
    return engine.make_stack_passes(network, optimizer)


@contextlib.contextmanager
def engine_passes(network, passes):
    """Run the network's training passes on the engine's passes inside the block (see
    :class:`LayerwiseTrainer`); they are taken off after it, whatever happened.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network.
    passes : list or None
        As :func:`stack_passes` returns them; None leaves the network as it is.
    """
    if passes is None:
        yield
        return
    network.engine_passes = passes
    try:
        yield
    finally:
        network.engine_passes = None
        network._on_engine = False


def data_parallel_epoch(network, loss, optimizer, X, Y, order, batch_size, grad_norms_out, work,
                        parallel, sample_weight=None):
    """One epoch of data-parallel minibatch backprop (``fastbp.distributed``): returns the mean
    objective over the rows of every rank, the same on every rank.

    Each step: this rank's share of the global minibatch (replicated data: the contiguous share of
    the rows one process would take; sharded: the next ``share`` rows of its own ``order``), the
    objective and its gradient over those rows (a mean, weighted by ``sample_weight`` when given),
    times this rank's weight W_r (its rows' weights summed, or its row count), one allreduce of
    [gradients, objective, W_r, rows] over the ranks, then every rank divides by the global
    weight W_B and takes the same optimizer step (the L2 term over W_B as in :func:`train_epoch`):
    the exact weighted minibatch mean, an uneven or empty share included.  A minibatch of weight 0
    takes no step (replicated: skipped before its draws, as one process skips it).

    Layers with a ``rows`` attribute (Dropout, the VAE's sampling) draw the whole global
    minibatch's noise and use the share's rows (replicated data); layers, and the network, with a
    ``share`` attribute get this rank's :class:`fastbp.distributed.Share` for the step, through
    which a statistic over the whole minibatch (a mean activation, a learned variance) is reduced
    over the ranks inside the forward pass.  The value of such a non-separable term is the same on
    every rank, so weighting it by W_r / W_B and summing gives it once.
    """
    P, rank = parallel.size, parallel.rank
    n = order.shape[0]
    grads, dense = work.grads, work.dense
    drawing = [layer for layer in network.layers if hasattr(layer, "rows")]
    sharing = [part for part in (network, *network.layers) if hasattr(part, "share")]
    flat = work.flat if getattr(work, "flat", None) is not None else None
    if flat is None:
        flat = work.flat = np.empty(sum(g.size for g in grads) + 3, network.dtype)
    if parallel.sharded:
        step_rows = parallel.step_rows(batch_size)
        steps = parallel.maximum(-(-n // step_rows))
    else:
        steps = -(-n // batch_size)
    decays = list(optimizer.weight_decay)
    decayed = [(param, 0.5 * decay) for param, decay in zip(work.params, decays) if decay]
    grad_norms_out[:] = 0.0
    total = total_weight = 0.0
    taken = 0
    try:
        for step in range(steps):
            if parallel.sharded:
                rows = order[step * step_rows:(step + 1) * step_rows]
            else:
                whole = order[step * batch_size:(step + 1) * batch_size]
                if sample_weight is not None and not sample_weight[whole].sum() > 0:
                    continue  # a batch of weight 0 counts for nothing: no draws, no step
                lo, hi = distributed.share(whole.shape[0], rank, P)
                rows = whole[lo:hi]
            n_b = rows.shape[0]
            w_b, mine = None, float(n_b)
            if sample_weight is not None:
                w_b = sample_weight[rows]
                mine = float(w_b.sum())
                if mine == 0.0:  # rows of weight 0 only: their terms count for nothing (times
                    w_b = None   # W_r = 0), yet they are rows (a plain mean over the rows counts them)
            if not parallel.sharded:
                for layer in drawing:
                    layer.rows = (lo, hi, whole.shape[0])
            for part in sharing:
                part.share = distributed.Share(parallel, mine, n_b)
            x_b, y_b = work.batch(n_b)
            np.take(X, rows, axis=0, out=x_b, mode="clip")
            np.take(Y, rows, axis=0, out=y_b, mode="clip")
            value = network._loss_and_grad(loss, x_b, y_b, True, w_b)  # means over this rank's rows
            offset = 0
            for grad in grads:  # sums over this rank's rows (weighted)
                np.multiply(grad.reshape(-1), mine, out=flat[offset:offset + grad.size])
                offset += grad.size
            if not mine:  # nothing (not even 0 times a non-finite value)
                flat[:-3] = 0.0
            flat[-3], flat[-2], flat[-1] = value * mine if mine else 0.0, mine, n_b
            parallel.allreduce(flat)
            weight = float(flat[-2])
            if not weight > 0:  # sharded: a minibatch of weight 0 on every rank takes no step
                continue
            offset = 0
            for grad in grads:  # means over the global minibatch
                np.multiply(flat[offset:offset + grad.size], 1.0 / weight, out=grad.reshape(-1))
                offset += grad.size
            ratio = 1.0 if sample_weight is None else float(flat[-1]) / weight
            value = float(flat[-3]) / weight
            for param, half_decay in decayed:  # the L2 term over the batch's weight
                value += ratio * half_decay * float(np.vdot(param, param))
            total += value * weight
            total_weight += weight
            for j, layer in enumerate(dense):
                grad_norms_out[j] += math.sqrt(float(np.vdot(layer.dW, layer.dW)))
            if sample_weight is not None:
                optimizer.weight_decay = [decay * ratio for decay in decays]
            optimizer.step(grads)
            taken += 1
    finally:
        optimizer.weight_decay = decays
        for layer in drawing:
            layer.rows = None
        for part in sharing:
            part.share = None
    if taken:
        grad_norms_out /= taken
    return total / total_weight if total_weight else 0.0


_engine_warned = False


def make_trainer(network, loss, optimizer, batch_size, sample_weight=None, parallel=None):
    """The epoch trainer of one fit: the compiled engine where it can, else layer by layer.

    Parameters
    ----------
    network, loss, optimizer, batch_size
        As for :class:`LayerwiseTrainer`.
    sample_weight : ndarray of float64, shape (n,), optional
        One weight per row of the X the epochs take: the weighted epoch, on the engine when every
        weight is > 0 (a batch of weight 0 takes no step: the layer-by-layer epoch runs those)
        and, data-parallel, the rows are replicated (the engine divides by the weight of the
        minibatch's rows it holds: sharded rows hold only their own).
    parallel : fastbp.distributed.DataParallel, optional
        Data-parallel epochs: the engine's (one MPI_Allreduce per step, in the engine), else
        :func:`data_parallel_epoch`'s.

    Returns
    -------
    trainer : object
        Its ``train_epoch(X, Y, order, grad_norms_out)`` runs one epoch (as :func:`train_epoch`):
        the compiled trainer when ``fastbp.engine`` accepts this network, loss and optimizer,
        else a :class:`LayerwiseTrainer`.
    fit_path : str
        ``"engine"``, ``"engine steps ("`` and the reason for not whole epochs then ``")"``
        (the :class:`LayerwiseTrainer` on the engine's passes), or ``"layerwise: "`` and the
        engine's reason
        (``fastbp.engine.engine_decline``: "numpy backend", "not a plain
        Dense/Dropout stack (SparsityPenalty layer)", ...; "engine unavailable (ImportError:
        ...)" when the module cannot be imported).

    Warns
    -----
    RuntimeWarning
        Once per process, when ``fastbp.engine`` exists but cannot be imported.
    """
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
        reason = engine.engine_decline(network, loss, optimizer, batch_size, parallel)
        trainer = engine.make_trainer(network, loss, optimizer, batch_size,  # may warn: unavailable
                                      parallel=parallel)
        if reason is None and sample_weight is not None and not (sample_weight > 0).all():
            reason = "sample_weight with zero weights (a batch of weight 0 takes no step)"
            trainer = None
        elif reason is None and sample_weight is not None and parallel is not None \
                and parallel.sharded:
            reason = ("sample_weight with sharded rows (the engine divides by its own rows' "
                      "weight, not the global minibatch's)")
            trainer = None
        if trainer is not None:
            trainer.sample_weight = sample_weight
            return trainer, "engine"
        reason = reason or "the engine made no trainer"
        # not whole epochs: each step's passes through the runs of Dense layers, when it can,
        # with their steps too in one process (data-parallel: the ranks' gradients are summed
        # before any step)
        passes, _ = stack_passes(network, optimizer if parallel is None else None)
        if passes is not None:
            return (LayerwiseTrainer(network, loss, optimizer, batch_size, sample_weight, parallel,
                                     passes), f"engine steps ({reason})")
    return (LayerwiseTrainer(network, loss, optimizer, batch_size, sample_weight, parallel),
            f"layerwise: {reason}")


# ---------------------------------------------------------------------------- Armijo line search
class _LineSearch:
    """Buffers of the full-batch line search: the starting point and the full gradient."""

    def __init__(self, network):
        self.start = [np.empty_like(p) for p in network.params()]
        self.gradient = [np.empty_like(p) for p in network.params()]


def _objective(network, loss, X, Y, decays, sample_weight=None):
    """F(w) on (X, Y) without a backward pass (no dropout: the objective must be deterministic)."""
    value, _ = network._objective(loss, X, Y, False, sample_weight)
    return value + _penalty(network.params(), decays)


def armijo_step(network, loss, X, Y, decays, lr_start, grad_norms_out, search=None,
                c=ARMIJO_C, max_halvings=ARMIJO_MAX_HALVINGS, sample_weight=None):
    """One full-batch gradient step with Armijo backtracking (on the weighted objective with
    ``sample_weight``, whose ``decays`` the caller scales: see the module docstring).

    Halve the step from ``lr_start`` until F(w - lr g) <= F(w) - c lr ||g||^2 (Armijo's
    sufficient-decrease condition; Nocedal & Wright, "Numerical Optimization", 2nd ed., 3.1).

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network, updated in place (no dropout: the objective must be deterministic).
    loss : str
        One of ``fastbp.kernels.LOSSES``.
    X : ndarray, shape (n, d)
        All training inputs.
    Y : ndarray, shape (n, k), or shape (n,) of intp
        Their targets.
    decays : list of float
        The weight decays, in ``network.params()`` order (:func:`weight_decays`).
    lr_start : float > 0
        The first step length tried.
    grad_norms_out : ndarray of float64, shape (n_dense,)
        Written: ||dW||_F of each Dense layer.
    search : object, optional
        Buffers of an earlier call on this network, reused; None: made here.
    c : float, default ARMIJO_C
        The sufficient-decrease constant.
    max_halvings : int, default ARMIJO_MAX_HALVINGS
        The most step lengths tried.

    Returns
    -------
    tuple of 4 floats
        (F(w), accepted step, ||g||^2, F(w_new)); an accepted step of 0.0 means none of
        ``max_halvings`` halvings of ``lr_start`` decreased F enough (the weights are
        unchanged).
    """
    search = search or _LineSearch(network)
    params, grads = network.params(), network.grads()
    f0 = network._loss_and_grad(loss, X, Y, True, sample_weight) + _penalty(params, decays)
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
        f1 = _objective(network, loss, X, Y, decays, sample_weight)
        if f1 <= f0 - c * lr * sq_norm:
            return f0, lr, sq_norm, f1
        lr *= 0.5
    for param, start in zip(params, search.start):
        np.copyto(param, start)
    return f0, 0.0, sq_norm, f0


# ------------------------------------------------------------------------------- health checks
def check_finite(epoch, lr, learning_rate_init, params, X=None, name="training", **values):
    """Raise ValueError unless every value and parameter of a finished epoch is finite.

    A NaN parameter makes every later loss NaN, so checking each epoch is enough.

    Parameters
    ----------
    epoch : int
        The epoch's number (for the message).
    lr : float
        The learning rate it used.
    learning_rate_init : float
        The configured initial rate (for the message's advice).
    params : iterable of ndarray
        The parameter arrays.
    X : ndarray, optional
        The training inputs: the message then gives their largest magnitude (large inputs
        overflow as surely as a large step).  Default None.
    name : str, default 'training'
        The model's name, first in the message.
    **values
        Named losses and gradient norms (floats or arrays; None is skipped), e.g.
        ``loss=value, gradient_norms=norms``.

    Raises
    ------
    ValueError
        When any value or parameter is not finite: the message names what became
        non-finite, the epoch, ``lr``, ``learning_rate_init`` and the advice.
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


def gradient_imbalance(grad_norms, dense_layers, epochs=GRADIENT_EPOCHS):
    """Vanishing or exploding gradients (module docstring), as a message naming the layers and
    the activation and saying what to try; None when the last ``epochs`` entries of
    ``grad_norms`` (per epoch, one ||dW||_F per Dense layer) look healthy or are too few."""
    if len(grad_norms) < epochs or len(dense_layers) < 2:
        return None
    recent = np.array(grad_norms[-epochs:])
    first, last = recent[:, 0], recent[:, -1]
    if not (np.isfinite(recent).all() and (last > 0).all()):
        return None
    ratio = first / last
    if (ratio < VANISHING_RATIO).all():
        what, bound, advice = ("vanishing", f"below {VANISHING_RATIO:g}",
                               "the first layers barely learn. Try a relu-family activation "
                               "(relu, leaky_relu, elu, gelu, silu), fewer layers, or a larger "
                               "learning_rate_init")
    elif (ratio > EXPLODING_RATIO).all():
        what, bound, advice = ("exploding", f"above {EXPLODING_RATIO:g}",
                               "training is unstable. Try a smaller learning_rate_init, or a "
                               "relu-family activation (relu, leaky_relu, elu, gelu, silu)")
    else:
        return None
    head, tail = dense_layers[0], dense_layers[-1]
    return (f"{what} gradients: the gradient norm of the first Dense layer ({head.n_in} -> "
            f"{head.n_out}, activation {head.activation!r}) stayed {bound} times that of the last "
            f"Dense layer (the {len(dense_layers)}th, {tail.n_in} -> {tail.n_out}) for {epochs} "
            f"epochs (ratio {ratio[-1]:.2g} in the last epoch): {advice}.")


def layer_generators(network):
    """The distinct numpy Generators the network's layers draw from in training (dropout masks,
    the VAE's noise), in layer order."""
    return list({id(layer.rng): layer.rng for layer in network.layers
                 if isinstance(getattr(layer, "rng", None), np.random.Generator)}.values())


def start_loss(network, loss, X, Y, decays, rows, sample_weight=None):
    """The objective F at the current weights on the first rows of (X, Y), as an epoch computes
    it (training mode: dropout and sampling on).

    Every layer's random generator is put back: the training that follows draws what it would
    have drawn.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network (not changed).
    loss : str
        One of ``fastbp.kernels.LOSSES``.
    X : ndarray, shape (n, d)
        The inputs.
    Y : ndarray, shape (n, k), or shape (n,) of intp
        Their targets.
    decays : list of float
        The weight decays, in ``network.params()`` order.
    rows : int
        How many leading rows to use (a first minibatch).
    sample_weight : ndarray of float64, shape (n,), optional
        One weight per row of X: the weighted objective, when not all 0 on those rows.

    Returns
    -------
    float
        The mean data loss over those rows plus the L2 penalty 1/2 sum_i decays_i ||p_i||^2.
    """
    weights = None if sample_weight is None else sample_weight[:rows]
    if weights is not None and weights.sum() > 0:
        decays = [decay * rows / weights.sum() for decay in decays]
    else:
        weights = None
    generators = layer_generators(network)
    states = [generator.bit_generator.state for generator in generators]
    try:
        value, _ = network._objective(loss, X[:rows], Y[:rows], True, weights)
    finally:
        for generator, state in zip(generators, states):
            generator.bit_generator.state = state
    return value + _penalty(network.params(), decays)


def divergence(state, start, tol, window):
    """Why a stop for want of improvement is not convergence (module docstring), or None.

    Parameters
    ----------
    state : TrainState
        The training so far (its ``loss_curve`` and ``best_loss``).
    start : float or None
        The loss at the start of the fit (:func:`start_loss`); None: unknown.
    tol : float
        The configured tolerance.
    window : int
        The epochs without improvement that stopped training (``n_iter_no_change``).

    Returns
    -------
    str or None
        The reason, for the warning: the loss of the last ``window`` epochs rose above the best
        before them on average (by more than max(tol, ``DIVERGENCE_RISE`` times the loss's
        scale)), or the best loss exceeds ``start`` by more than ``max(tol, abs(start))`` (for a positive
        start: over twice it); None when neither holds.
    """
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


# ------------------------------------------------------------------------------------- L-BFGS
class LbfgsObjective:
    """The full-batch objective F(w) and its gradient as SciPy's ``minimize(jac=True)`` takes
    them: a function of one flat float64 vector w (the network's ``params()`` in order, each
    C-flattened) returning ``(F(w), gradient)``.

    F is the objective of the module docstring for one batch of all n rows: the (weighted) mean
    data loss, plus the terms of any penalty layer (a sparse code's, the VAE's KL), plus
    alpha / (2 n) sum_l ||W^l||_F^2 (alpha / (2 sum_i w_i) with ``sample_weight``).  Each call
    copies w into the parameters (cast to the network's dtype), runs the network's forward, loss
    and backward once (compiled kernels on the compiled backend, their NumPy twins on the other)
    and writes the gradient into one float64 buffer, the same array every call.

    A layer that draws random numbers in training (the VAE's eps) draws the same numbers at
    every call: every layer's Generator is put back to its state at construction before each
    evaluation.  F is then one deterministic sample-average approximation of the expected
    objective (one draw per row, fixed for the whole run), which a quasi-Newton method needs:
    its line search and curvature pairs compare values and gradients across evaluations.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network; its parameters are overwritten by every call.
    loss : str
        One of ``fastbp.kernels.LOSSES``.
    X : ndarray, shape (n, d)
        All training inputs, C-contiguous, of the network's dtype.
    Y : ndarray, shape (n, k), or shape (n,) of intp
        Their targets.
    alpha : float >= 0
        The L2 penalty.
    sample_weight : ndarray of float64, shape (n,), optional
        One weight >= 0 per row, not all 0.

    Attributes
    ----------
    gradient : ndarray of float64, shape (n_params,)
        The buffer every call returns (the gradient at the last w evaluated).
    evaluations : int
        Calls so far.
    """

    def __init__(self, network, loss, X, Y, alpha, sample_weight=None):
        self.network, self.loss, self.X, self.Y = network, loss, X, Y
        self.sample_weight = sample_weight
        n = X.shape[0]
        decays = weight_decays(network, alpha, n)
        if sample_weight is not None:  # the L2 term over the batch's weight
            decays = [decay * n / float(sample_weight.sum()) for decay in decays]
        self.params, self.grads = network.params(), network.grads()
        self.decays = [network.dtype.type(decay) for decay in decays]
        bounds = np.cumsum([0] + [param.size for param in self.params])
        self.slices = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        self.gradient = np.empty(int(bounds[-1]))
        self._gradient_views = [self.gradient[part].reshape(param.shape)
                                for part, param in zip(self.slices, self.params)]
        self.generators = layer_generators(network)
        self._draws = [generator.bit_generator.state for generator in self.generators]
        self.evaluations = 0

    def x0(self):
        """The current parameters as one flat vector.

        Returns
        -------
        ndarray of float64, shape (n_params,)
            A new array: ``params()`` in order, each C-flattened.
        """
        x = np.empty_like(self.gradient)
        for part, param in zip(self.slices, self.params):
            x[part] = param.reshape(-1)
        return x

    def load(self, x):
        """Copy a flat vector into the network's parameters.

        Parameters
        ----------
        x : ndarray of float64, shape (n_params,)
            As :meth:`x0` lays them out (cast to the network's dtype).
        """
        for part, param in zip(self.slices, self.params):
            np.copyto(param, x[part].reshape(param.shape), casting="same_kind")

    def __call__(self, x):
        """The objective and its gradient at x (the parameters are left at x).

        Parameters
        ----------
        x : ndarray of float64, shape (n_params,)
            The parameters, as :meth:`x0` lays them out.

        Returns
        -------
        value : float
            F(x).
        gradient : ndarray of float64, shape (n_params,)
            The ``gradient`` buffer, overwritten by the next call.
        """
        self.load(x)
        for generator, draws in zip(self.generators, self._draws):
            generator.bit_generator.state = draws
        value = self.network._loss_and_grad(self.loss, self.X, self.Y, True, self.sample_weight)
        for param, grad, out, decay in zip(self.params, self.grads, self._gradient_views,
                                           self.decays):
            if decay:
                np.multiply(param, decay, out=out)
                out += grad
                value += 0.5 * float(decay) * float(np.vdot(param, param))
            else:
                np.copyto(out, grad)
        self.evaluations += 1
        return value, self.gradient


def _lbfgs_blas():
    """SciPy's BLAS held at one thread for an L-BFGS run, unless fastbp's compiled products use it
    too (``FASTBP_BLAS=scipy``): L-BFGS-B's own products are of vectors of the parameters' length
    and m x m matrices, for which threads only cost (its runs took 14x longer with SciPy's
    OpenBLAS at 2 threads on 2 busy cores)."""
    if _backend.backend() == "compiled" and _blas_threads.blas_choice() == "scipy":
        return contextlib.nullcontext()
    return _blas_threads.SingleThreadBlas(_blas_threads.scipy_blas())


def lbfgs_passes(network):
    """The engine's passes for L-BFGS's evaluations (gradients only: SciPy takes the steps) and
    the fit path.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network.

    Returns
    -------
    passes : list or None
        As :func:`stack_passes` returns them.
    fit_path : str
        :data:`LBFGS_PATH`, or ``"layerwise: <why not>"``.
    """
    passes, why = stack_passes(network)
    return passes, LBFGS_PATH if passes is not None else f"layerwise: {why}"


def fit_lbfgs(network, loss, X, Y, config, state, *, validation_score=None, callback=None,
              say=None, name="training", stacklevel=2, sample_weight=None):
    """Minimise the full-batch objective by SciPy's L-BFGS-B (scikit-learn's ``solver='lbfgs'``).

    ``scipy.optimize.minimize(method='L-BFGS-B', jac=True)`` on :class:`LbfgsObjective` from the
    network's current weights, with ``maxiter=max_iter``, ``maxfun=max_fun`` and
    ``gtol=tol`` (converged when no gradient entry exceeds it in magnitude), as scikit-learn's MLP
    runs it; the network ends at SciPy's answer.  Every L-BFGS iteration is one entry of the
    records (``loss_curve``: F at the new iterate; ``grad_norms``: its ||dW||_F per Dense layer;
    ``learning_rates``: the length ||w_k - w_(k-1)|| of the iteration's step, L-BFGS having no
    learning rate; ``t`` grows by n rows per evaluation), then the ``validation_score`` (recorded
    only: there is no early stopping), the verbose line, the non-finite check, the gradient
    health check and ``callback(state)`` (a true value stops) run as after an epoch.  A run that
    stops at its start (its gradient already within ``tol``) records one iteration of length 0.

    Parameters
    ----------
    network, loss, X, Y, config, state, validation_score, callback, name, stacklevel, sample_weight
        As for :func:`fit_network` (``config.solver`` is 'lbfgs'; ``state`` is updated).
    say : callable, optional
        ``say(line, **progress)`` writes a verbose line (:func:`fit_network`'s); None: silent.

    Returns
    -------
    TrainState
        ``state``, with ``converged`` True when SciPy reports convergence (status 0) and
        ``fit_path`` :data:`LBFGS_PATH` (or ``"layerwise: <why>"``, :func:`lbfgs_passes`).

    Raises
    ------
    ValueError
        A non-finite loss, gradient norm or parameter after an iteration (:func:`check_finite`).

    Warns
    -----
    ConvergenceWarning
        When SciPy stops without converging: ``max_iter`` iterations or ``max_fun`` evaluations
        ran out (status 1), or its line search found no lower objective (status 2).
    """
    from scipy.optimize import minimize

    objective = LbfgsObjective(network, loss, X, Y, config.alpha, sample_weight)
    passes, state.fit_path = lbfgs_passes(network)
    state.optimizer, state.converged = None, False
    dense = network.dense_layers
    n, first = X.shape[0], state.n_iter
    previous, step = objective.x0(), np.empty_like(objective.gradient)
    counted, clock, interrupted, imbalance = 0, time.perf_counter(), False, None

    def record(x, value):
        nonlocal counted, clock, imbalance
        norms = np.array([math.sqrt(float(np.vdot(layer.dW, layer.dW))) for layer in dense])
        np.subtract(x, previous, out=step)
        length = float(np.linalg.norm(step))
        np.copyto(previous, x)
        now = time.perf_counter()
        elapsed, clock = now - clock, now
        state.n_iter += 1
        state.t += n * max(objective.evaluations - counted, 1)
        counted = objective.evaluations
        state.loss_curve.append(value)
        state.grad_norms.append(norms)
        state.learning_rates.append(length)
        state.epoch_times.append(elapsed)
        state.best_loss = min(state.best_loss, value)
        score = None
        if validation_score is not None:
            score = float(validation_score(network))
            state.validation_scores.append(score)
            state.best_validation_score = max(state.best_validation_score, score)
        if say is not None and config.verbose:
            line = f"{name}: iteration {state.n_iter:4d}  loss {value:.6f}"
            if score is not None:
                line += f"  validation score {score:.4f}"
            say(f"{line}  step {length:.3g}  {elapsed:.3f} s", epoch=state.n_iter - first,
                epochs=config.max_iter, lr=length, values={"loss": value},
                validation_score=score, seconds=elapsed)
        check_finite(state.n_iter, length, config.learning_rate_init, network.params(), X, name,
                     loss=value, gradient_norms=norms)
        if not state.gradient_warned and imbalance is None:
            imbalance = gradient_imbalance(state.grad_norms, dense)

    def iteration(intermediate_result):  # SciPy's callback after every iteration
        nonlocal interrupted
        # the network holds the last evaluation: the point L-BFGS-B accepted as this iterate
        record(intermediate_result.x, float(intermediate_result.fun))
        if callback is not None and callback(state):
            interrupted = True
            raise StopIteration  # SciPy ends the run

    with _lbfgs_blas(), engine_passes(network, passes):
        result = minimize(objective, previous.copy(), method="L-BFGS-B", jac=True,
                          callback=iteration, options={"maxiter": config.max_iter,
                                                       "maxfun": config.max_fun,
                                                       "gtol": config.tol})
    if state.n_iter == first:  # converged at the start: one iteration of length 0
        record(previous, float(result.fun))
    objective.load(result.x)
    if imbalance is not None:
        state.gradient_warned = True
        warnings.warn(f"{name}: {imbalance}", exceptions.GradientWarning,
                      stacklevel=stacklevel + 2)
    state.converged = result.status == 0
    if not state.converged and not interrupted:
        advice = {1: f"increase max_iter (now {config.max_iter}) or max_fun (now "
                     f"{config.max_fun})",
                  2: "its line search found no lower objective: "
                     + ("float32 limits how close L-BFGS gets, use dtype='float64', or "
                        if network.dtype == np.float32 else "")
                     + "scale the inputs or raise tol"}.get(result.status, "see SciPy's message")
        warnings.warn(f"{name}: lbfgs failed to converge after {state.n_iter - first} "
                      f"iteration(s) ({result.nfev} evaluations, status={result.status}: "
                      f"{result.message}); {advice}.", exceptions.ConvergenceWarning,
                      stacklevel=stacklevel + 2)
    elif say is not None and config.verbose:
        say(f"{name}: lbfgs stopped: {result.message}", stop=str(result.message))
    return state


# ---------------------------------------------------------------------------------- the fit loop
def fit_network(network, loss, X, Y, config, state=None, *, rng=None, validation_score=None,
                early_stopping=True, incremental=False, callback=None, log=None, name="training",
                stacklevel=2, trainer=None, converge=True, sample_weight=None):
    """Train ``network`` on (X, Y): the one training loop of every model.

    Epochs of minibatch backprop (the engine or layer by layer, :func:`make_trainer`) with
    shuffling, learning-rate schedules, convergence, early stopping and the per-epoch records;
    the module docstring gives the exact rules.

    Parameters
    ----------
    network : fastbp.nn.Sequential
        The network, trained in place.
    loss : str
        One of ``fastbp.kernels.LOSSES``, on the network's output.
    X : ndarray, shape (n, d)
        The inputs, C-contiguous, of the network's dtype.
    Y : ndarray, shape (n, k), or shape (n,) of intp
        The targets, of the network's dtype; for softmax cross-entropy a 1-D intp label vector.
    config : TrainConfig
        The settings (validated here).
    state : TrainState, optional
        A previous state to continue (warm start / partial fit), updated in place; None
        (default): a new one.
    rng : numpy.random.Generator or int or None, optional
        For shuffling (``numpy.random.default_rng(rng)``).
    validation_score : callable, optional
        ``validation_score(network) -> float``, higher is better, scored after every epoch
        (``state.validation_scores``, shown in the progress lines).
    early_stopping : bool, default True
        With a ``validation_score``: it drives convergence (no improvement of the score) and the
        best weights are restored at the end; False: the score is only recorded and convergence
        is judged on the loss.
    incremental : bool, default False
        One epoch (partial fit): keep the optimizer, no convergence test, no warning.
    callback : callable, optional
        ``callback(state)`` after every epoch; a true return value stops training.
    log : callable or None, default None
        Where verbose progress lines go (the first names the fit path): None for INFO records of
        the ``fastbp.training`` logger (see ``logger``), or a callable taking each line.
    name : str, default 'training'
        The model's name in the progress lines, warnings and errors.
    stacklevel : int, default 2
        Of the warnings, as seen from the caller of ``fit_network`` (estimators pass the depth
        of their public method's caller).
    trainer : callable, optional
        The step hook, for models whose epoch is not the network's own minibatch backprop (the
        GAN's alternating discriminator and generator steps): None (the engine or the layer-by-
        layer epoch, :func:`make_trainer`), or ``trainer(optimizer, batch_size, fresh) ->
        (epoch trainer, fit path)``, called once per fit with the network's optimizer
        (``fresh``: made by this call, not carried on by a partial fit).  The epoch trainer runs
        each epoch as ``train_epoch(X, Y, order, grad_norms_out) -> loss`` (as
        :class:`LayerwiseTrainer`: reading ``optimizer.lr``, writing one gradient norm per Dense
        layer of ``network``) and may define ``epoch_values(loss, grad_norms) -> dict`` (the
        named values checked finite and shown in the verbose line; default ``loss`` and
        ``gradient_norms``) and ``params()`` (the arrays checked finite; default
        ``network.params()``).  Everything around the epochs -- shuffling, schedules,
        bookkeeping, ``max_iter``, the non-finite check, verbose lines -- is this loop's.  In a
        data-parallel fit (``fastbp.distributed``) the hook must have ``data_parallel = True``:
        its epochs reduce their steps over the ranks themselves (ValueError otherwise); the
        loop broadcasts ``network``'s weights and ``rng`` from rank 0, the hook anything else.
    converge : bool, default True
        False for an objective with no minimum to settle at (a GAN's): no start loss, no
        convergence or divergence test, no ConvergenceWarning; ``max_iter`` epochs run.
    sample_weight : ndarray of float64, shape (n,), optional
        One weight >= 0 per row of X (not all 0): every batch's objective is weighted (the module
        docstring), on the engine when every weight is > 0 (:func:`make_trainer`).  A ``trainer``
        hook weights its own steps.

    Returns
    -------
    TrainState
        ``state`` (or the new one), updated; its ``fit_path`` names the path that trained
        (``"engine"``, or ``"layerwise: <reason>"``; see :func:`make_trainer`).

    Raises
    ------
    ValueError
        A configuration outside its domains (:meth:`TrainConfig.validate`); 'backtracking' with
        dropout; a non-finite loss, gradient norm or parameter after an epoch
        (:func:`check_finite`; the network is left as that epoch made it).

    Warns
    -----
    ConvergenceWarning
        When ``max_iter`` epochs run out before convergence, or when training stopped because
        the loss rose (:func:`divergence`).
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
    parallel = distributed.current()
    if config.solver == "lbfgs":
        _lbfgs_ready(network, parallel, trainer, incremental, name)
        if config.verbose:
            path = lbfgs_passes(network)[1]
            say(f"{name}: training path: {path}", fit_path=path)
        return fit_lbfgs(network, loss, X, Y, config, state, validation_score=validation_score,
                         callback=callback, say=say, name=name, stacklevel=stacklevel,
                         sample_weight=sample_weight)
    rows = n if parallel is None or not parallel.sharded else parallel.comm.allreduce(n)
    batch_size = resolve_batch_size(config.batch_size, rows, config.solver)
    backtracking = config.learning_rate == "backtracking"
    if parallel is not None:
        _data_parallel_ready(network, trainer, backtracking, name)
        parallel.start(network, X, Y, rng, sample_weight)
        if parallel.rank != 0:
            log = _silent
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
        line_decays = optimizer.weight_decay  # the full batch's L2 term, over its weight
        if sample_weight is not None:
            line_decays = [decay * n / sample_weight.sum() for decay in line_decays]
    elif trainer is not None:
        epochs_by, state.fit_path = trainer(optimizer, batch_size, fresh)
    else:
        epochs_by, state.fit_path = make_trainer(network, loss, optimizer, batch_size,
                                                 sample_weight, parallel)
    if config.verbose:
        ranks = "" if parallel is None else f", data-parallel over {parallel.size} ranks"
        say(f"{name}: training path: {state.fit_path}{ranks}", fit_path=state.fit_path)
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
             start_loss(network, loss, X, Y, optimizer.weight_decay, min(n, batch_size),
                        sample_weight))
    if parallel is not None:  # every figure that decides when to stop is rank 0's
        start = parallel.broadcast(start)

    epochs = 1 if incremental else config.max_iter
    stopped = False
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        norms = np.zeros(n_dense)
        if backtracking:
            f0, lr, sq_norm, f1 = armijo_step(network, loss, X, Y, line_decays, state.lr, norms,
                                              search, sample_weight=sample_weight)
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
        state.t += rows
        state.loss_curve.append(value)
        state.grad_norms.append(norms)
        state.learning_rates.append(lr)
        state.epoch_times.append(elapsed)
        score = None
        if scoring:
            score = float(validation_score(network))
            if parallel is not None:
                score = parallel.broadcast(score)
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
        if not state.gradient_warned:
            message = gradient_imbalance(state.grad_norms, network.dense_layers)
            if message is not None:
                state.gradient_warned = True
                warnings.warn(f"{name}: {message}", exceptions.GradientWarning,
                              stacklevel=stacklevel + 1)
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
        if callback is not None and (callback(state) if parallel is None
                                     else parallel.broadcast(bool(callback(state)))):
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
                              "learning_rate_init.", exceptions.ConvergenceWarning,
                              stacklevel=stacklevel + 1)
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
        warnings.warn(MAX_ITER_WARNING.format(config.max_iter), exceptions.ConvergenceWarning,
                      stacklevel=stacklevel + 1)
    return state


def _silent(*args):
    """The progress log of ranks other than 0 in a data-parallel fit (rank 0 says it once)."""


def _data_parallel_ready(network, trainer, backtracking, name):
    """ValueError (on every rank alike) for what does not train data-parallel yet.  A layer takes
    part when it is Dense or Dropout or has a ``share`` attribute (its way of saying that its
    terms are per row, or reduce their statistics over the ranks through the epoch's
    ``fastbp.distributed.Share``; see :func:`data_parallel_epoch`); a ``trainer`` hook when it
    has ``data_parallel = True`` (its epochs reduce over the ranks themselves: the GAN's)."""
    why = None
    if trainer is not None and not getattr(trainer, "data_parallel", False):
        why = "a model with its own epoch whose steps do not reduce over the ranks"
    elif backtracking:
        why = "learning_rate='backtracking'"
    else:
        other = [type(layer).__name__ for layer in network.layers
                 if type(layer) not in (Dense, Dropout) and not hasattr(layer, "share")]
        if other:
            why = f"a network with {other[0]} layers"
    if why is not None:
        raise ValueError(f"{name}: {why} does not train data-parallel yet; fastbp.distributed "
                         "trains networks of Dense and Dropout layers and of layers with a "
                         "'share' attribute (the generative models')")


def _lbfgs_ready(network, parallel, trainer, incremental, name):
    """ValueError for what solver='lbfgs' does not train (on every rank alike)."""
    why = None
    if trainer is not None:
        why = ("minimises one objective, and a model with its own epoch has none to give it (the "
               "GAN's is a two-player game: D maximises what G minimises)")
    elif incremental:
        why = ("minimises the whole objective over all the rows: it has no one-epoch partial "
               "fit; call fit, or use a solver that takes steps")
    elif parallel is not None:
        why = "does not train data-parallel yet (fastbp.distributed takes the stepping solvers)"
    elif any(getattr(layer, "rate", 0.0) > 0 for layer in network.layers):
        why = ("needs dropout=0: L-BFGS needs a deterministic objective, and a dropout mask "
               "fixed for the whole run would train one thinned network")
    if why is not None:
        raise ValueError(f"{name}: solver='lbfgs' {why}")


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
