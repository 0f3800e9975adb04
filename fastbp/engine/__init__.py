"""Whole training epochs in compiled code for a plain stack of dense layers, and each step's
passes through the dense layers of any other network.

:func:`make_trainer` returns a :class:`FusedTrainer` for a ``fastbp.nn.Sequential`` made only of
``Dense`` layers (and ``Dropout`` layers between them or before the first), float32 or float64, on the
compiled backend; otherwise None, and the caller trains with ``fastbp.training.LayerwiseTrainer``,
recording why: :func:`engine_decline` names the reason (it returns None exactly when
make_trainer makes a trainer).  ``USE_FUSED = False`` switches the engine off for training and
prediction alike (tests compare the two paths with it).

:func:`make_stack_passes` serves every other network (the VAE's, the GAN's, a network with a
layer of the user's own): a :class:`StackPasses` per run of Dense layers
(``fastbp.nn.Sequential.engine_runs``), whose training forward pass and backward pass are one
engine call each (the same C code as the epochs' phases, rows split over the engine's threads),
and whose backward pass can take the optimizer's step of its parameters too, in the same fused
pass as the epochs (:meth:`StackPasses.bind`).  The network runs them in place of those layers'
own passes while an epoch of ``LayerwiseTrainer`` runs; its other layers run in Python.

The two are interchangeable at any epoch: the trainer works on the network's own
``W``/``b``/``dW``/``db`` arrays and the optimizer's own state arrays, in place, with the
semantics of ``fastbp.training.train_epoch`` (read it for the exact definition of an epoch, its
returned objective and the gradient norms).

``trainer.train_epoch(X, Y, order, grad_norms_out)`` runs the epoch in one call of the engine
(``fastbp/engine/_train_engine.h`` through ``fastbp.engine._c_train``) with the GIL released: it gathers each
minibatch, runs forward, loss, backward and the optimizer update, minibatch after minibatch,
without coming back to Python.  Networks with dropout come back to Python once per chunk of
minibatches (about ``DRAW_BUDGET`` random numbers) to draw the dropout masks with the layers' own
generators, in the order the layer-by-layer path draws them, so both paths give the same masks.

Buffers.  Everything (activations, gradients, dropout draws, prediction workspaces) is allocated
when the trainer is made (the draws on the first epoch) and reused: a warm epoch allocates no
array, only a few small Python objects per epoch.  The weight gradients of all minibatches but the
last go to a per-thread scratch that stays in cache; the last minibatch's land in the layers'
``dW``/``db``, as after the layer-by-layer path.

BLAS.  The products go to NumPy's own OpenBLAS when NumPy has one (see :func:`engine_blas`),
else to SciPy's ``cython_blas``.

Threads.  The engine runs its own threads (SPMD over the rows of each minibatch; see the header),
with its BLAS held at one thread for the duration of a call.  How many: the fewest of
``n_threads`` (default: the CPUs this process may use), that BLAS's current thread limit (so
``threadpoolctl.threadpool_limits`` caps fastbp too), and what the work per minibatch is worth
(``MIN_FLOPS_PER_THREAD``): small networks run on one thread, where a second would cost more in
synchronisation than it saves.

``trainer.predict(X, out=None)`` is the forward pass (inference: dropout off) on the same engine,
in chunks of ``PREDICT_CHUNK`` rows per thread (more for narrow networks) so that its cost per
row does not grow with the number of rows; a second thread from ``MIN_PREDICT_ROWS_PER_THREAD`` rows per thread.

Ctrl-C.  Both call the engine in pieces of at most ``SIGNAL_FLOPS`` of work (minibatches, or rows),
so that Python runs its signal handlers between them: a KeyboardInterrupt arrives within a fraction
of a second, with no engine work left running, the finished minibatches' updates kept and the
optimizer's step count matching them.

Fork.  A forked child works as a new process would: the engine's pools forget the parent's
workers (fb_pool_adopt in the header), and the child releases the locks and BLAS holds of the
parent's other threads (``_after_fork_in_child``).
"""
import os
import threading
import warnings
import weakref

import numpy as np

from fastbp import _backend
from fastbp.engine import layout
from fastbp.kernels import _checks, registry
from fastbp._platform._blas_threads import (SingleThreadBlas, blas_choice, numpy_openblas, scipy_blas,
                            thread_entry_points)

__all__ = ["make_trainer", "engine_decline", "make_predictor", "make_stack_passes", "StackPasses",
           "USE_FUSED", "FusedTrainer",
           "MIN_FLOPS_PER_THREAD",
           "MIN_PREDICT_ROWS_PER_THREAD", "DRAW_BUDGET", "SIGNAL_FLOPS", "PREDICT_CHUNK",
           "cpu_count"]

ACTIVATION_CODES = {name: entry.code for name, entry in registry.ACTIVATIONS.items()}
LOSS_CODES = {name: entry.code for name, entry in registry.LOSSES.items()}

# A second thread pays off once a minibatch step does about this many floating-point operations
# per thread (measured on 2-core Zen 2: 64-32-10 at batch 32, ~0.4 MFLOP, is fastest on one).
MIN_FLOPS_PER_THREAD = 4e6
MIN_ROWS_PER_THREAD = 8
# A forward pass splits its rows over threads from this many rows per thread (each thread packs
# every weight matrix for its own rows, which fewer rows do not amortise: 2 x 128 rows of the
# hourglass measured 11.8 ms, 1 x 256 rows with a two-thread BLAS 10.3-10.8 ms, 2 x 256+ rows
# 9.1-9.5 ms per 256).  Below that, one engine thread leaves the products to the BLAS's threads.
MIN_PREDICT_ROWS_PER_THREAD = 256
DRAW_BUDGET = 1 << 22          # dropout draws per chunk of minibatches (16 MiB in float32)
# Floating-point work of one engine call at most: Python runs its signal handlers (Ctrl-C's
# KeyboardInterrupt) between calls, not while the engine holds the thread with the GIL released.
# 2 GFLOP is ~0.05 s on one core of a laptop and well under a second on slow machines; a call
# costs a few microseconds, well under 0.1% of that.
SIGNAL_FLOPS = 2e9
PREDICT_CHUNK = 256            # rows per thread and pass of the forward-only path (at least)
PREDICT_BUFFER = 1 << 16       # entries of a work buffer of the forward-only path (at most)
SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # float64: if built (_c_train.DOUBLE)
USE_FUSED = True  # False switches the engine off (tests compare it with the layer-by-layer path)


def cpu_count():
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------ BLAS and threads
def engine_blas():
    """The BLAS for the engine's products, as ({"sgemm", "sgemm64", "sgemv", "sgemv64", "dgemm",
    "dgemm64": address or 0 -- the LP64 or the ILP64 functions}, its thread controls, name): NumPy's own
    OpenBLAS unless ``FASTBP_BLAS`` says otherwise or NumPy has none (see
    fastbp._platform._blas_threads.blas_choice), else SciPy's (cython_blas, the engine's built-in
    ones: all 0)."""
    if blas_choice() == "numpy":
        found = numpy_openblas()
        suffix = "64" if found.ilp64 else ""
        return ({f"sgemm{suffix}": found.sgemm, f"sgemv{suffix}": found.sgemv,
                 f"dgemm{suffix}": found.dgemm}, [found.threads], "numpy")
    return {}, scipy_blas(), "scipy"


_pthreads = None


def _pthread_entry_points():
    """Addresses of pthread_create and pthread_join, resolved at run time (see fb_pool in the
    engine: a link-time reference would need glibc 2.34); (0, 0) if they cannot be found, and the
    engine then runs on the calling thread only."""
    global _pthreads
    if _pthreads is None:
        import ctypes
        try:
            libc = ctypes.CDLL(None)
            _pthreads = tuple(ctypes.cast(getattr(libc, name), ctypes.c_void_p).value or 0
                              for name in ("pthread_create", "pthread_join"))
        except (OSError, AttributeError):
            _pthreads = (0, 0)
        if 0 in _pthreads:
            _pthreads = (0, 0)
    return _pthreads



# ------------------------------------------------------------------------------ the trainer
# The network description the engine loads: fb_desc, named fields (fastbp/engine/layout.py)
DTYPES = {struct: np.dtype(layout.dtype_fields(fields)) for struct, fields in layout.STRUCTS}
DESC_DTYPE, CALL_DTYPE, RESULT_DTYPE = DTYPES["fb_desc"], DTYPES["fb_call"], DTYPES["fb_result"]
MAX_LAYERS, MAX_THREADS, MAX_GENERATORS = layout.MAX_LAYERS, layout.MAX_THREADS, layout.MAX_GENERATORS

try:
    from fastbp.engine import _c_train
    from fastbp.kernels import _c_step  # its optimizer loops, which the engine calls (STEP_SPAN)
    _STEP_SPAN = getattr(_c_step, "STEP_SPAN", None)
    if _STEP_SPAN is None:
        raise ImportError("fastbp.kernels._c_step has no STEP_SPAN (built from another fastbp)")
    _sizes = getattr(_c_train, "STRUCT_SIZES", None)
    _want = {struct: dtype.itemsize for struct, dtype in DTYPES.items()}
    if _sizes != _want or getattr(_c_train, "LIMITS", None) != (
            MAX_LAYERS, MAX_THREADS, MAX_GENERATORS):
        raise ImportError(f"fastbp.engine._c_train was built from another fastbp/engine/layout.py "
                          f"(structs of {_sizes} bytes, expected {_want})")
    _c_train_error = None
except ImportError as error:  # not built or damaged: every make_trainer call answers None
    _c_train = None
    _c_train_error = f"{type(error).__name__}: {error}"
_c_train_warned = False


# Fork.  A forked child has only the thread that forked: every trainer's lock may be held by a
# thread the child does not have, and the engine's BLAS holds may belong to one.  After a fork the
# child starts them afresh (the engine's pools reset themselves: fb_pool_adopt), so that it works
# as a new process would.
_trainers = weakref.WeakSet()
# The engine that every StackPasses of a dtype runs on, and its lock ({float64?: [engine, lock]}):
# one pool of threads for all of them (a pool per run, idle while the others work, would spin
# and yield on the cores they need: measured 2x slower GAN epochs).
_shared = {}


def _shared_engine(dtype):
    """[engine, lock] shared by the StackPasses of this dtype (made on first use; threads
    making it at once all get the first one stored)."""
    dbl = dtype == np.float64
    shared = _shared.get(dbl)
    if shared is None:
        shared = _shared.setdefault(dbl, [_c_train.Engine(dbl, min(cpu_count(), MAX_THREADS),
                                                          *_pthread_entry_points()),
                                          threading.Lock()])
    return shared


def _after_fork_in_child():
    for shared in _shared.values():
        shared[1] = threading.Lock()
    for trainer in list(_trainers):
        trainer._lock = threading.Lock()
    if _c_train is not None:
        _c_train.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _address(array):
    """Data address of a checked array (through the buffer protocol: ``ndarray.ctypes`` and
    ``__array_interface__`` leave a little memory behind on every call)."""
    return _c_train.address(array)


def _plain_stack(network):
    """(dense layers, {dense index: Dropout on its input}), or a phrase saying why the network is
    not a plain stack the engine runs (the network describes itself:
    fastbp.nn.Sequential.engine_stack)."""
    describe = getattr(network, "engine_stack", None)
    if not callable(describe):
        return f"{type(network).__name__} has no engine_stack()"
    stack = describe()
    if isinstance(stack, str):
        return stack
    if len(stack[0]) > MAX_LAYERS:
        return f"more than {MAX_LAYERS} Dense layers"
    return stack if len(stack) == 3 else (*stack, None)  # (dense, dropouts, penalty or None)


def _optimizer_ok(optimizer, params):
    """Whether the engine can run this optimizer's step (it describes itself: ``describe()`` of
    fastbp.optim's optimizers) on exactly these parameters, with its own state arrays."""
    step = _step(optimizer)
    if step is None or len(optimizer.params) != len(params):
        return False
    if any(a is not b for a, b in zip(optimizer.params, params)):
        return False
    if len(optimizer.weight_decay) != len(params):
        return False
    for state in step[1].values():
        if len(state) != len(params) or any(s is not None and not _own_array(s, p.shape, p.dtype)
                                            for s, p in zip(state, params)):
            return False
    return True


def _step(optimizer):
    """The optimizer's describe() when the engine has its step (a registry.STEPS name), else None."""
    describe = getattr(optimizer, "describe", None)
    step = describe() if callable(describe) else None
    return step if step is not None and step[0] in registry.STEPS else None


class _NoStep:
    """The optimizer of a forward-only trainer (make_predictor): SGD at lr 0, never stepped."""

    def __init__(self, params):
        self.params = list(params)
        self.weight_decay = [0.0] * len(self.params)
        self.t = 0
        for h in registry.STEPS["sgd"].hyper:  # the registry's defaults, lr 0
            if h.name != "weight_decay":
                setattr(self, h.name, h.default)
        self.lr = 0.0

    def describe(self):
        return "sgd", {name: [None] * len(self.params) for name in registry.STEPS["sgd"].state}


def _own_array(a, shape, dtype):
    return (type(a) is np.ndarray and a.shape == shape and a.dtype == dtype
            and a.flags.c_contiguous and a.flags.writeable and a.flags.aligned)


def make_predictor(network, output=None):
    """A :class:`FusedTrainer` for forward passes only (what ``fastbp.nn.Sequential.predict``
    runs on): the engine's prediction with one row of training buffers and no weight-gradient
    scratch; None when the engine cannot run the network (as for make_trainer).

    ``output``: an activation name (``registry.ACTIVATIONS``, at its default parameter) that the
    predictor applies to the last layer's pre-activation in place of that layer's own activation
    -- e.g. ``'softmax'`` on a classifier's logits layer gives its probabilities in the same
    pass.  The predictor reads the network's own weight arrays: none is copied."""
    if output is not None and output not in ACTIVATION_CODES:
        raise ValueError(f"unknown output activation {output!r}; expected one of "
                         f"{sorted(ACTIVATION_CODES)}")
    return make_trainer(network, "squared_error", _NoStep(network.params()), 1,
                        predict_only=True, output=output)


def engine_decline(network, loss_name, optimizer, batch_size, parallel=None, predict_only=False):
    """Why the compiled engine cannot train this network with this loss and optimizer (a short
    phrase, e.g. ``"float64"``, ``"numpy backend"``, ``"not a plain Dense/Dropout stack
    (SparsityPenalty layer)"``), or None when it can: :func:`make_trainer` makes a trainer exactly
    when this returns None, and ``fastbp.training`` records the phrase as the fit's path.
    ``parallel``: a data-parallel context (``fastbp.distributed.DataParallel``), whose
    ``reduction(dtype)`` gives the engine its MPI_Allreduce, or says why it cannot.
    ``predict_only``: for forward passes only (:func:`make_predictor`), which a network's
    ``checkpoint_segments`` does not concern (the engine's training stores every layer's values
    for all rows: it declines that setting)."""
    if not USE_FUSED:
        return "engine switched off (fastbp.engine.USE_FUSED)"
    if _backend.backend() != "compiled":
        return "numpy backend"
    segments = getattr(network, "checkpoint_segments", None)
    if segments is not None and not predict_only:
        return (f"checkpoint_segments={segments!r} (the engine's epochs store every layer's "
                "values)")
    if loss_name not in LOSS_CODES:
        return f"loss {loss_name!r} not in the engine"
    if _c_train is None:
        return f"engine unavailable ({_c_train_error})"
    stack = _plain_stack(network)
    if isinstance(stack, str):
        return f"not a plain Dense/Dropout stack ({stack})"
    if int(batch_size) < 1:
        return f"batch_size {batch_size} < 1"
    dense, dropouts, penalty = stack
    if penalty is not None and penalty[1][0] not in layout.SPARSITY:
        return f"penalty {penalty[1][0]!r} not in the engine"
    if penalty is not None and penalty[1][0] == "kl" and parallel is not None:
        return "the KL sparsity penalty data-parallel (its mean activations span the ranks)"
    reason = _stack_decline(dense, dropouts)
    if reason is not None:
        return reason
    params = [a for layer in dense for a in (layer.W, layer.b)]
    if _step(optimizer) is None:
        return f"optimizer {type(optimizer).__name__} not in the engine"
    if not _optimizer_ok(optimizer, params):
        return (f"optimizer {type(optimizer).__name__} is not over this network's parameters "
                "with its own state arrays")
    if parallel is not None:
        dtype = dense[0].W.dtype
        hook = parallel.reduction(dtype)
        if isinstance(hook, str):
            return hook
        if sum(p.size for p in params) > np.iinfo(np.int32).max:
            return "more than 2**31 - 1 parameters for one MPI_Allreduce"
    return None


def _stack_decline(dense, dropouts):
    """Why the engine cannot run this stack of Dense layers (a phrase), or None: the dtype, the
    activations, the layers' arrays and the dropout generators."""
    dtype = dense[0].W.dtype
    if dtype not in SUPPORTED_DTYPES or (dtype == np.float64 and not _c_train.DOUBLE):
        return f"{dtype}"
    for layer in dense:
        if layer.activation not in ACTIVATION_CODES:
            return f"activation {layer.activation!r} not in the engine"
        for name, shape in (("W", (layer.n_in, layer.n_out)), ("b", (layer.n_out,))):
            for array in (getattr(layer, name), getattr(layer, "d" + name)):
                if not _own_array(array, shape, dtype):
                    return (f"a layer's {name} or d{name} is not an aligned, writeable, "
                            f"C-contiguous {dtype} ndarray of shape {shape}")
    if len({id(d.rng) for d in dropouts.values()}) > MAX_GENERATORS:
        return f"more than {MAX_GENERATORS} dropout generators"
    return None


def make_stack_passes(network, optimizer=None):
    """The engine's passes for the runs of Dense (and Dropout) layers of a network that is not
    one plain stack (:class:`StackPasses`; the network says where its runs are:
    ``fastbp.nn.Sequential.engine_runs``): ``(passes, None)``, or ``(None, reason)`` when the
    engine runs none of them (the backend, the switch, the build, ``checkpoint_segments``, or the
    first run's own reason).  Every run must be accepted: a network half on the engine and half
    layer by layer would report one path for two.  ``optimizer``: the passes' backward passes
    take its steps of their layers' parameters too (:meth:`StackPasses.bind`) where it can."""
    if not USE_FUSED:
        return None, "engine switched off (fastbp.engine.USE_FUSED)"
    if _backend.backend() != "compiled":
        return None, "numpy backend"
    if _c_train is None:
        return None, f"engine unavailable ({_c_train_error})"
    describe = getattr(network, "engine_runs", None)
    runs = describe() if callable(describe) else f"{type(network).__name__} has no engine_runs()"
    if isinstance(runs, str):
        return None, runs
    for start, stop, dense, dropouts in runs:
        if len(dense) > MAX_LAYERS:
            return None, f"more than {MAX_LAYERS} Dense layers in a run"
        reason = _stack_decline(dense, dropouts)
        if reason is not None:
            return None, reason
    params = network.params()
    index = {id(p): i for i, p in enumerate(params)}
    passes = []
    for start, stop, dense, dropouts in runs:
        run = StackPasses(dense, dropouts, [index[id(a)] for layer in dense
                                            for a in (layer.W, layer.b)])
        # the step taken in the backward pass only where no layer of the user's own runs after
        # it (before it in the network): one that raises there would leave the step half taken
        if optimizer is not None and all(type(layer).__module__.partition(".")[0] == "fastbp"
                                         for layer in network.layers[:start]):
            run.bind(optimizer)
        passes.append((start, stop, run))
    if network.checkpoint_segments is not None:  # the runs share their buffers: _SharedBuffers
        _SharedBuffers([run for _, _, run in passes])
    return passes, None


class _SharedBuffers:
    """The buffers of the runs of a network with ``checkpoint_segments`` (each run a segment):
    every layer's values in one workspace that all runs share (the size of the largest run's),
    but for each run's output (the next run's input: its checkpoint, an array of its own; not
    the last run's), every dZ in a second one, and one dW scratch.  The forward pass leaves the
    last run's values in the workspace; the backward pass runs each other run again from its kept input (:meth:`StackPasses.replay`,
    with the dropout masks it drew) before going back through it.  Grown with the rows."""

    def __init__(self, runs):
        self.runs, self.rows = runs, 0
        self.flat = None
        for run in runs:
            run._group = self

    def _own_output(self, run):
        """Whether the run's output is an array of its own: the next run's input, its
        checkpoint (the network's output, which the loss reads before any other run is run
        again, stays in the workspace)."""
        return run is not self.runs[-1]

    def _where(self, run, kind, l):
        """Where a run's buffer goes: 0 the shared workspace, 1 the shared dZ buffer, or None
        (an array of its own: the run's output)."""
        if kind == "dZ":
            return 1
        if kind in ("Z", "A") and l == len(run._dense) - 1 and self._own_output(run):
            return None
        return 0

    @staticmethod
    def _rounded(count, item):
        """count entries of item bytes, rounded up to 64 bytes (each view on a cache line)."""
        return -(-count * item // 64) * 64 // item

    def _sizes(self, run, n):
        """The entries a run takes of the two shared buffers for n rows."""
        sizes, item = [0, 0], run._dense[0].W.dtype.itemsize
        for kind, l, (rows, width) in FusedTrainer.buffer_requests(run._dense, run._dropouts, n):
            where = self._where(run, kind, l)
            if where is not None:
                sizes[where] += self._rounded(rows * width, item)
        return sizes

    def ensure(self, n):
        """Room for n rows: every run's trainer made again on the grown buffers if needed."""
        if n <= self.rows:
            return False
        dtype = self.runs[0]._dense[0].W.dtype
        sizes = [self._sizes(run, n) for run in self.runs]
        self.flat = [np.empty(max(s[i] for s in sizes), dtype) for i in (0, 1)]
        # one dW scratch too (the calls run one at a time)
        scratch = [FusedTrainer.scratch_shape([run._dense[0].n_in] + [d.n_out for d in run._dense],
                                              run._optimizer is None) for run in self.runs]
        self.scratch = np.empty((scratch[0][0], max(entries for _, entries in scratch)), dtype)
        for run in self.runs:
            def take(kind, l, shape, offsets=[0, 0], run=run):
                if kind == "dWs":  # the largest run's: every run's fits in its rows
                    return self.scratch
                where = self._where(run, kind, l)
                if where is None:
                    return np.empty(shape, dtype)
                count = shape[0] * shape[1]
                view = self.flat[where][offsets[where]:offsets[where] + count].reshape(shape)
                offsets[where] += self._rounded(count, dtype.itemsize)
                return view
            run._make_trainer(n, take)
        self.rows = n
        return True


class _OptimizerPart:
    """An optimizer seen over some of its parameters (``index``), as the engine reads one."""

    def __init__(self, optimizer, index):
        self.whole, self.index = optimizer, index

    @property
    def params(self):
        return [self.whole.params[i] for i in self.index]

    @property
    def weight_decay(self):
        return [self.whole.weight_decay[i] for i in self.index]

    def describe(self):
        step = self.whole.describe()
        return step[0], {name: [arrays[i] for i in self.index] for name, arrays in step[1].items()}

    def hyperparameters(self):
        return self.whole.hyperparameters()

    def __getattr__(self, name):  # the hyperparameters by name, t
        return getattr(self.whole, name)


def make_trainer(network, loss_name, optimizer, batch_size, n_threads=None, predict_only=False,
                 parallel=None, output=None):
    """A :class:`FusedTrainer` for this network, loss and optimizer, or None when the compiled
    engine cannot run it (:func:`engine_decline` says why: backend 'numpy', engine not built or
    damaged -- one RuntimeWarning says so, naming the import error --, not a plain Dense/Dropout
    stack, dtype other than float32 and float64, unknown loss or optimizer).  ``n_threads`` caps the threads;
    ``predict_only`` leaves out the per-thread weight-gradient scratch and ``output`` replaces
    the last layer's activation in the forward pass (see make_predictor);
    ``parallel``, a ``fastbp.distributed.DataParallel``, makes the epochs data-parallel (see
    :meth:`FusedTrainer.train_epoch`)."""
    global _c_train_warned
    if output is not None and not predict_only:
        raise ValueError("output replaces the last activation of forward passes only "
                         "(predict_only=True)")
    if _c_train is None and USE_FUSED and _backend.backend() == "compiled" and not _c_train_warned:
        _c_train_warned = True  # said once, as for the compiled kernels (fastbp._backend)
        warnings.warn(f"fastbp: the compiled training engine is unavailable ({_c_train_error})"
                      f"; the compiled backend trains and predicts layer by layer",
                      RuntimeWarning, stacklevel=3)
    if engine_decline(network, loss_name, optimizer, batch_size, parallel,
                      predict_only) is not None:
        return None
    dense, dropouts, penalty = _plain_stack(network)
    return FusedTrainer(network, dense, dropouts, loss_name, optimizer, int(batch_size),
                        n_threads, predict_only, parallel, penalty, output)


class StackPasses:
    """The engine's training passes of one run of Dense layers (each optionally after a Dropout)
    inside a larger network's step -- the VAE's encoder and decoder around its sampling layer, the
    GAN's networks, any network with a layer of another kind --, which ``fastbp.nn.Sequential``
    runs in place of those layers' own forward and backward (made by
    :func:`make_stack_passes`).  Each pass is one engine call with the GIL released, the rows
    split over the engine's threads; the forward pass keeps every layer's values in the engine's
    buffers, the backward pass leaves the gradients in the layers' own ``dW``/``db`` (the
    optimizer steps them as after the layer-by-layer pass).  The Dropout layers' masks are drawn
    with their own generators, in the layer-by-layer order.  Buffers grow to the most rows seen.
    """

    # what a backward pass does with the parameters (``mode``): the engine's segment codes
    MODES = {"gradients": 2, "update": 3, "input": 4}

    def __init__(self, dense, dropouts, param_index):
        self._dense, self._dropouts = dense, dropouts
        self.param_index = param_index  # the positions of its parameters in the network's
        self._trainer = None
        self._group = None  # checkpoint segments: the runs' _SharedBuffers
        self._optimizer = None  # bound: an _OptimizerPart
        self.mode = "gradients"
        self._X = None   # the input of the last forward pass (the first layer's dW needs it)
        self._dX = np.empty((0, dense[0].n_in), dense[0].W.dtype)

    @property
    def _lock(self):
        """The shared engine's lock (replaced in a forked child)."""
        return _shared_engine(self._dense[0].W.dtype)[1]

    def bind(self, optimizer):
        """Let backward passes take ``optimizer``'s steps of this run's parameters (``mode =
        'update'``), in the engine as its whole epochs do: each slice of a weight gradient goes
        from the product to the update while it is in cache, and the layers' ``dW``/``db`` are
        not written.  Returns None, or why it cannot (the optimizer's step is not the engine's,
        or it does not hold these parameters with its own state arrays): the mode is then
        unchanged."""
        params = [a for layer in self._dense for a in (layer.W, layer.b)]
        where = {id(p): i for i, p in enumerate(optimizer.params)}
        if _step(optimizer) is None or any(id(p) not in where for p in params):
            return f"optimizer {type(optimizer).__name__} not in the engine for these layers"
        part = _OptimizerPart(optimizer, [where[id(p)] for p in params])
        if not _optimizer_ok(part, params):
            return f"optimizer {type(optimizer).__name__} without its own state arrays"
        self._optimizer, self._trainer, self.mode = part, None, "update"
        if self._group is not None:
            self._group.rows = 0  # every run's trainer made again, bound
        return None

    @property
    def dense(self):
        """The run's Dense layers."""
        return self._dense

    @property
    def dropout(self):
        """Whether a Dropout layer of the run draws masks (its forward pass is then for training
        only)."""
        return bool(self._dropouts)

    @property
    def grad_norms(self):
        """||dW||_F per Dense layer of the last backward pass that took a step (float64)."""
        return self._trainer._grad_norms

    @property
    def recompute(self):
        """Whether the run is a segment of ``checkpoint_segments``: its values are not kept
        (all runs share one workspace), and a backward pass needs :meth:`replay` first unless
        the run is the network's last."""
        return self._group is not None

    def _make_trainer(self, n, buffers=None):
        params = [a for layer in self._dense for a in (layer.W, layer.b)]
        optimizer = self._optimizer or _NoStep(params)
        self._trainer = FusedTrainer(None, self._dense, self._dropouts, "squared_error",
                                     optimizer, max(n, 1), predict_only=self._optimizer is None,
                                     shared=True, buffers=buffers)
        return self._trainer

    def _ready(self, n):
        """The trainer, with room for n rows and bound to the layers' current arrays (call it
        holding the shared engine's lock)."""
        trainer = self._trainer
        if self._group is not None:
            if self._group.ensure(max(n, 1)):
                return self._trainer
        elif trainer is None or trainer.batch_size < n:
            return self._make_trainer(n)
        trainer._refresh()
        return trainer

    def replay(self):
        """The last training forward pass again, from its kept input with the masks it drew
        (a segment of ``checkpoint_segments``, before its backward pass)."""
        with self._lock:
            trainer = self._trainer
            self._call(trainer, 1, _address(self._X), self._X.shape[0])

    def _call(self, trainer, segment, X, n, Y=0, dX=0):
        trainer._engine.load(_address(trainer._desc))  # the shared engine: this run's tables
        call = trainer._call
        call["segment"], call["X"], call["n"], call["Y"], call["pout"] = segment, X, n, Y, dX
        call["mb0"] = call["mb1"] = 0
        call["t"] = trainer.optimizer.t  # an update takes step t + 1
        call["order"] = call["sample_weight"] = call["dp_rows"] = 0
        call["dp_rank"], call["dp_size"] = 0, 1
        try:
            trainer._run(trainer._engine.train, "threads", n, trainer.flops_per_row)
        finally:
            call["segment"] = call["pout"] = 0

    def forward(self, X):
        """The training forward pass over the rows of X (n x the first layer's inputs, the
        layers' dtype; copied when not C-contiguous and aligned), which is also the inference
        pass of a run without dropout (:attr:`dropout`): the last layer's output, a view of the
        engine's buffer (valid until the next forward pass).  TypeError for another dtype,
        ValueError for another width (as the layers' own pass), before the engine reads X."""
        first = self._dense[0]
        X = _checks.float_array(X, "X", 2)
        _checks.same_dtype(first.W, "W", X, "X")
        _checks.shapes_match(X, "X", first.W, "W", 1, 0)
        n = X.shape[0]
        with self._lock:
            trainer = self._ready(n)
            if trainer._groups:
                self._draw(trainer, n)
            self._call(trainer, 1, _address(X), n)
        self._X = X
        return trainer._A[-1][:n]

    def _draw(self, trainer, n):
        """The Dropout layers' masks for n rows, as the layers draw them: in a data-parallel
        epoch (their ``rows`` = (lo, hi, total)) rows [lo, hi) of the draw for the whole
        minibatch, moved into place (each layer's block of n rows follows the last)."""
        rows = next(iter(self._dropouts.values())).rows
        if rows is None:
            trainer._draw(n)
            return
        lo, hi, total = rows
        trainer._draw(total)
        for (rng, _), u in zip(trainer._groups, trainer._draws):
            for l in sorted(self._dropouts):  # in the order of their blocks
                if self._dropouts[l].rng is rng:
                    at, d = trainer._draw_offset[l], trainer.widths[l]
                    u[n * at:n * (at + d)] = u[total * at + lo * d:total * at + hi * d]

    def backward(self, grad, need_dX):
        """The backward pass of the last forward from ``grad`` = dL/d(output) (n x outputs),
        and with the parameters what ``mode`` says: ``'gradients'`` into the layers'
        ``dW``/``db``; ``'update'``, the bound optimizer's step ``t + 1`` (see :meth:`bind`);
        ``'input'``, nothing (dL/dX only: a network trained through another's input, as the
        GAN's generator through its discriminator).  Returns dL/dX (a buffer) when ``need_dX``,
        else None.  TypeError for a ``grad`` of another dtype, ValueError for another shape than
        the last forward's output, before the engine reads it."""
        trainer, X = self._trainer, self._X
        if X is None:
            raise RuntimeError("backward needs a forward pass first")
        n = X.shape[0]
        grad = _checks.float_array(grad, "grad", 2)
        _checks.same_dtype(X, "X", grad, "grad")
        if grad.shape != (n, self._dense[-1].n_out):
            raise ValueError(f"grad has shape {grad.shape}, the last forward's output has "
                             f"{(n, self._dense[-1].n_out)}")
        dX = None
        if need_dX:
            if self._dX.shape[0] < n:
                self._dX = np.empty((n, X.shape[1]), X.dtype)
            dX = self._dX[:n]
        # (no rows: zero gradients, and an update's step from them: the decay, the momentum)
        with self._lock:
            self._call(trainer, self.MODES[self.mode], _address(X), n, _address(grad),
                       _address(dX) if need_dX else 0)
        return dX


def _in_place(layer):
    """Whether A may share Z's memory (registry.a_may_share_z): the derivative is then had from A
    or from the sign of A (the sign of Z when alpha >= 0)."""
    return registry.a_may_share_z(layer.activation, layer.alpha)


class FusedTrainer:
    """The compiled epoch (see the module docstring); made by :func:`make_trainer`."""

    def __init__(self, network, dense, dropouts, loss, optimizer, batch_size, n_threads=None,
                 predict_only=False, parallel=None, penalty=None, output=None, shared=False,
                 buffers=None):
        # no reference to the network itself: a network keeps its predictor (make_predictor),
        # and a cycle would keep the engine's threads alive until the garbage collector runs
        self.loss, self.optimizer = loss, optimizer
        self.parallel = parallel
        if parallel is not None and parallel.sharded:  # the engine walks this rank's own rows
            batch_size = parallel.step_rows(batch_size)
        self.batch_size = B = batch_size
        self._n_threads = n_threads
        self._dense, self._dropouts, self._code_penalty = dense, dropouts, penalty
        self._lock = threading.Lock()  # replaced in a forked child: see _after_fork_in_child
        _trainers.add(self)
        self.dtype = dtype = dense[0].W.dtype
        L = self.n_layers = len(dense)
        self.widths = [dense[0].n_in] + [layer.n_out for layer in dense]
        # floating-point work of one training row: 2 d k for each of forward, dW and dX
        self.flops_per_row = 2.0 * sum(d * k for d, k in zip(self.widths, self.widths[1:]))
        self.train_flops_per_row = 3 * self.flops_per_row - 2.0 * self.widths[0] * self.widths[1]
        # a pool of at most one thread per CPU: more could only queue for the cores (or the
        # engine that all StackPasses of the dtype share, loaded with this trainer's tables
        # before each call: StackPasses._call)
        self._engine = (_shared_engine(dtype)[0] if shared else
                        _c_train.Engine(dtype == np.float64, min(cpu_count(), MAX_THREADS),
                                        *_pthread_entry_points()))
        self._blas_functions, libraries, self.blas = engine_blas()
        self._blas_get, self._blas_set = thread_entry_points(libraries)
        self._blas_fallback = None if self._blas_get else SingleThreadBlas(libraries)

        # work buffers, made once: arrays of their own, or what ``buffers(kind, l, shape)``
        # gives (_SharedBuffers)
        take = buffers or (lambda kind, l, shape: np.empty(shape, dtype))
        # the gathered minibatch (a stack's passes take their rows as they are: none)
        self._Xb = np.empty((0 if shared else B, self.widths[0]), dtype)
        # per-thread scratch for the dW slices (the engine keeps dW in cache with it)
        self._dw_scratch = take("dWs", None, self.scratch_shape(self.widths, predict_only))
        # each layer's Z, A (Z itself where A may share it), dZ and dropped-out input D
        got = {(kind.split()[0], l): take(kind, l, shape)
               for kind, l, shape in self.buffer_requests(dense, dropouts, B)}
        layers = range(len(dense))
        self._Z = [got["Z", l] for l in layers]
        self._A = [got.get(("A", l), got["Z", l]) for l in layers]
        self._dZ = [got["dZ", l] for l in layers]
        self._D = [got.get(("D", l)) for l in layers]
        # dropout generators: one group of draws per distinct generator, layers in order
        self._groups = []      # [generator, total width]
        self._draw_offset = {}
        for l in sorted(dropouts):
            rng = dropouts[l].rng
            for group in self._groups:
                if group[0] is rng:
                    break
            else:
                group = [rng, 0]
                self._groups.append(group)
            self._draw_offset[l] = group[1]
            group[1] += self.widths[l]
        width = sum(g[1] for g in self._groups)
        self._chunk = max(1, DRAW_BUDGET // (B * width)) if width else 0
        self._draws = [np.empty(0, dtype) for _ in self._groups]
        # data-parallel: the flat gradients, this rank's and summed over the ranks
        self._hook = parallel.reduction(dtype) if parallel is not None else None
        count = sum(d * k + k for d, k in zip(self.widths, self.widths[1:])) if self._hook else 0
        self._gsend, self._grecv = np.empty(count, dtype), np.empty(count, dtype)
        self._dp_rows = np.empty(0, np.int64)
        # a penalty on a hidden layer's output: per thread, KL's column sums and mean activations
        code_width = self.widths[penalty[0] + 1] if penalty is not None else 0
        self._rho = np.zeros((2, min(cpu_count(), MAX_THREADS), code_width))
        # prediction workspace (grown on demand)
        self._pbuf = np.empty(0, dtype)
        self._pwidth = max(self.widths[1:-1], default=1)
        # rows of one forward call: SIGNAL_FLOPS, but enough for every thread (see _forward)
        self._signal_rows = max(int(SIGNAL_FLOPS // self.flops_per_row),
                                MIN_PREDICT_ROWS_PER_THREAD * min(cpu_count(), MAX_THREADS))

        # tables read by the engine (layout: fb_load and fb_run in _train_engine.h)
        self._call = np.zeros((), CALL_DTYPE)  # fb_call, filled by field name
        self._result = np.zeros((), RESULT_DTYPE)  # fb_result
        self._grad_norms = self._result["grad_norms"][:L]
        self._desc = np.zeros((), DESC_DTYPE)  # fb_desc, filled by field name
        self._pplan = (0, 1, 1)  # prediction: rows, threads, chunk of the last call
        self._bound = None
        self._labels = 0
        self._sample_weight = None
        self._output = output  # the last layer's activation in place of its own (make_predictor)
        self._bind()

    @staticmethod
    def buffer_requests(dense, dropouts, rows):
        """The buffers of every layer, in the order a trainer takes them: (kind, layer, shape)
        with kind "Z" (A lives in it), "Z only", "A", "dZ" or "D" (a Dropout's output)."""
        for l, layer in enumerate(dense):
            shared = _in_place(layer)
            yield "Z" if shared else "Z only", l, (rows, layer.n_out)
            if not shared:
                yield "A", l, (rows, layer.n_out)
            yield "dZ", l, (rows, layer.n_out)
            if l in dropouts:
                yield "D", l, (rows, layer.n_in)

    @staticmethod
    def scratch_shape(widths, predict_only=False):
        """(threads, entries) of the per-thread dW scratch for a stack of these widths."""
        threads = min(cpu_count(), MAX_THREADS)
        largest = max(d * k for d, k in zip(widths, widths[1:]))
        return threads, 0 if predict_only else largest // threads + 16 * max(widths[1:])

    # ------------------------------------------------------------------ tables
    def _current(self, step):
        """The arrays the engine points at, as they are now (rebinding when any was replaced);
        ``step``: the optimizer's describe()."""
        arrays = []
        for layer in self._dense:
            arrays += [layer.W, layer.b, layer.dW, layer.db]
        return arrays + [a for state in step[1].values() for a in state] + self._draws

    def _bind(self, step=None):
        dense, L, B = self._dense, self.n_layers, self.batch_size
        for layer in dense:
            for name in ("W", "b", "dW", "db"):
                array = getattr(layer, name)
                if not _own_array(array, array.shape, self.dtype):
                    raise ValueError(f"{name} of {layer!r} is no longer a writeable C-contiguous "
                                     f"{self.dtype} array")
        step = step or self.optimizer.describe()
        params = [a for layer in dense for a in (layer.W, layer.b)]
        for (name, arrays), always in zip(step[1].items(),
                                          registry.STEPS[step[0]].state.values()):
            # the C step writes through these addresses: each a writeable C-contiguous array of
            # its parameter's shape and dtype, None only for a state the settings leave out
            if len(arrays) != len(params) or any(
                    (a is None and always is None)
                    or (a is not None and not _own_array(a, p.shape, self.dtype))
                    for a, p in zip(arrays, params)):
                raise ValueError(f"the optimizer's {name} arrays are no longer one writeable "
                                 f"C-contiguous {self.dtype} array per parameter, of its shape")
        desc = self._desc
        desc["L"], desc["B"], desc["loss"], desc["labels"] = L, B, LOSS_CODES[self.loss], self._labels
        desc["groups"] = len(self._groups)
        desc["dws_threads"], desc["dws_size"] = self._dw_scratch.shape
        desc["d"][:L + 1] = self.widths
        for l, layer in enumerate(dense):
            dropout = self._dropouts.get(l)
            group = 0
            if dropout is not None:
                group = next(i for i, g in enumerate(self._groups) if g[0] is dropout.rng)
            desc["act"][l] = ACTIVATION_CODES[layer.activation]
            desc["drop"][l], desc["dgroup"][l] = int(dropout is not None), group
            desc["doff"][l] = self._draw_offset.get(l, 0)
            D = self._D[l]
            for name, array in (("W", layer.W), ("b", layer.b), ("dW", layer.dW), ("db", layer.db),
                                ("Z", self._Z[l]), ("A", self._A[l]), ("D", D), ("dZ", self._dZ[l])):
                desc[name][l] = 0 if array is None else _address(array)
        if self._output is not None:
            desc["act"][L - 1] = ACTIVATION_CODES[self._output]
        desc["gwidth"][:len(self._groups)] = [g[1] for g in self._groups]
        desc["U"][:len(self._draws)] = [_address(u) for u in self._draws]
        states = desc["state"].reshape(-1, layout.registry.MAX_STATE)
        states[:] = 0
        for j, arrays in enumerate(step[1].values()):  # registry order
            states[:2 * L, j] = [0 if a is None else _address(a) for a in arrays]
        desc["step_span"] = _STEP_SPAN
        for name, value in (("call", _address(self._call)), ("result", _address(self._result)),
                            ("blas_get", self._blas_get), ("blas_set", self._blas_set),
                            ("Xb", _address(self._Xb)), ("dWs", _address(self._dw_scratch))):
            desc[name] = value or 0
        hook = self._hook or {}
        desc["allreduce"], desc["mpi_width"] = hook.get("function", 0), hook.get("width", 0)
        desc["mpi_datatype"], desc["mpi_op"] = hook.get("datatype", 0), hook.get("op", 0)
        desc["mpi_comm"] = hook.get("comm", 0)
        desc["gsend"], desc["grecv"] = _address(self._gsend), _address(self._grecv)
        desc["code"], desc["sparsity"] = -1, 0
        if self._code_penalty is not None:
            code, (kind, weight, rho) = self._code_penalty
            desc["code"], desc["sparsity"] = code, layout.SPARSITY[kind]
            desc["sparsity_weight"], desc["sparsity_rho"] = weight, rho
        desc["rho_parts"], desc["rho_hat"] = _address(self._rho[0]), _address(self._rho[1])
        for name in ("sgemm", "sgemm64", "sgemv", "sgemv64", "dgemm", "dgemm64"):
            desc[name] = self._blas_functions.get(name, 0)
        self._call["pbuf"] = _address(self._pbuf)
        self._call["pwidth"] = self._pwidth
        self._bound = self._current(step)
        self._load_floats(step)

    def _load_floats(self, step):
        """The optimizer's kind and hyperparameters (``step``: its describe()), the layers' alpha
        and dropout rates, and the weight decays: read again before every epoch (they may change
        between epochs)."""
        opt, L, desc = self.optimizer, self.n_layers, self._desc
        entry = registry.STEPS[step[0]]
        names = [h.name for h in entry.hyper]
        checked = getattr(opt, "hyperparameters", None)  # fastbp.optim's: checked again
        desc["hyper"][:] = 0
        desc["hyper"][:len(names)] = (checked() if checked is not None else
                                      [0.0 if n == "weight_decay" else float(getattr(opt, n))
                                       for n in names])
        desc["wd_index"] = names.index("weight_decay")
        for l, layer in enumerate(self._dense):
            dropout = self._dropouts.get(l)
            desc["alpha"][l] = 0.0 if layer.alpha is None else layer.alpha
            desc["rate"][l] = 0.0 if dropout is None else dropout.rate
        if self._output is not None:
            desc["alpha"][L - 1] = registry.ACTIVATIONS[self._output].alpha or 0.0
        desc["wd"][:2 * L] = opt.weight_decay
        desc["opt"] = entry.code
        self._engine.load(_address(desc))

    def _refresh(self):
        step = self.optimizer.describe()
        current = self._current(step)
        for a, b in zip(current, self._bound):
            if a is not b:
                self._bind(step)
                return
        self._load_floats(step)

    # ------------------------------------------------------------------ threads
    @property
    def n_threads(self):
        """Cap on the threads (None: the CPUs this process may use)."""
        return self._n_threads

    @n_threads.setter
    def n_threads(self, value):
        self._n_threads = None if value is None else max(1, int(value))
        self._pplan = (0, 1, 1)

    @property
    def last_threads(self):
        """Threads that the last train_epoch or predict call ran on."""
        return int(self._result["threads"])

    def threads_for(self, rows, flops_per_row, limit=None, min_rows=None):
        """Threads for a call over ``rows`` rows of ``flops_per_row`` each (the engine also
        caps them by the BLAS's thread limit in force)."""
        cap = cpu_count() if self.n_threads is None else max(1, int(self.n_threads))
        if limit:
            cap = min(cap, limit)
        by_work = int(rows * flops_per_row // MIN_FLOPS_PER_THREAD)
        by_rows = rows // (MIN_ROWS_PER_THREAD if min_rows is None else min_rows)
        return max(1, min(cap, MAX_THREADS, by_work, by_rows))

    def _run(self, run, threads_slot, rows, flops_per_row):
        """Run the engine (train or predict) with the BLAS held at one thread."""
        call = self._call
        if self._blas_fallback is None:
            call[threads_slot] = self.threads_for(rows, flops_per_row)
            run()
            return
        with self._blas_fallback as blas:
            call[threads_slot] = self.threads_for(rows, flops_per_row, blas.limit)
            run()

    # ------------------------------------------------------------------ training
    def _check_epoch(self, X, Y, order, grad_norms_out):
        d, k = self.widths[0], self.widths[-1]
        if type(X) is not np.ndarray or X.dtype != self.dtype or X.ndim != 2 or X.shape[1] != d \
                or not X.flags.c_contiguous or not X.flags.aligned:
            raise ValueError(f"X must be a C-contiguous {self.dtype} array with {d} columns")
        n_rows = X.shape[0]
        labels = self.loss == "softmax_cross_entropy" and type(Y) is np.ndarray and Y.ndim == 1
        if labels:
            if Y.dtype != np.intp or Y.shape[0] != n_rows or not Y.flags.c_contiguous:
                raise ValueError(f"labels must be a C-contiguous intp array of {n_rows} entries")
            if n_rows and (Y.min() < 0 or Y.max() >= k):
                raise ValueError(f"labels must lie in [0, {k})")
        elif type(Y) is not np.ndarray or Y.dtype != self.dtype or Y.shape != (n_rows, k) \
                or not Y.flags.c_contiguous or not Y.flags.aligned:
            raise ValueError(f"Y must be a C-contiguous {self.dtype} array of shape {(n_rows, k)}")
        if type(order) is not np.ndarray or order.dtype != np.intp or order.ndim != 1 \
                or not order.flags.c_contiguous:
            raise ValueError("order must be a 1-D C-contiguous intp array")
        if order.shape[0] and (order.min() < 0 or order.max() >= n_rows):
            raise ValueError(f"order must index rows of X, in [0, {n_rows})")
        if type(grad_norms_out) is not np.ndarray or grad_norms_out.dtype != np.float64 \
                or grad_norms_out.shape != (self.n_layers,):
            raise ValueError(f"grad_norms_out must be a float64 array of {self.n_layers} entries")
        return labels

    def _penalty(self):
        total = 0.0
        for param, decay in zip(self.optimizer.params, self.optimizer.weight_decay):
            if decay:
                total += 0.5 * decay * float(np.vdot(param, param))
        return total

    def _draw(self, rows):
        """Draw the dropout masks of ``rows`` rows of minibatches, generator by generator."""
        for i, (rng, width) in enumerate(self._groups):
            need = rows * width
            u = self._draws[i]
            if u.shape[0] < need:
                u = self._draws[i] = np.empty(max(need, min(self._chunk * self.batch_size, rows)
                                                  * width), self.dtype)
                self._bind()
            rng.random(dtype=self.dtype, out=u if u.shape[0] == need else u[:need])

    @property
    def sample_weight(self):
        """One float64 weight > 0 per row of the X that ``train_epoch`` takes (the weighted epoch
        of fastbp.training), or None (unweighted).  A weight of 0 is refused: such a batch would
        take no step (the layer-by-layer epoch runs those)."""
        return self._sample_weight

    @sample_weight.setter
    def sample_weight(self, weights):
        if weights is not None:
            if (type(weights) is not np.ndarray or weights.dtype != np.float64
                    or weights.ndim != 1 or not weights.flags.c_contiguous):
                raise ValueError("sample_weight must be a 1-D C-contiguous float64 array")
            if not (np.isfinite(weights).all() and (weights > 0).all()):
                raise ValueError("the engine takes sample weights that are finite and > 0")
        self._sample_weight = weights

    def train_epoch(self, X, Y, order, grad_norms_out):
        """One epoch over ``order``; returns the mean objective (see fastbp.training).

        Data-parallel (``parallel``, see ``fastbp.distributed``), every rank calls it at once:
        with the same X, Y and order each takes its share of every minibatch, or (sharded) the
        minibatches of its own rows, ``step_rows`` at a time, for as many steps as the rank with
        the most; each step's gradients are summed over the ranks by the engine (one
        MPI_Allreduce) and every rank takes the same step.  The objective returned is the mean
        over all ranks' rows, the same on every rank.
        """
        with self._lock:
            labels = self._check_epoch(X, Y, order, grad_norms_out)
            weights = self._sample_weight
            if weights is not None and weights.shape[0] != X.shape[0]:
                raise ValueError(f"sample_weight has {weights.shape[0]} entries for "
                                 f"{X.shape[0]} rows of X")
            grad_norms_out.fill(0.0)
            n, B, parallel = order.shape[0], self.batch_size, self.parallel
            batches = -(-n // B)
            call, result = self._call, self._result
            call["dp_rank"], call["dp_size"], call["dp_rows"] = 0, 1, 0
            if parallel is not None and parallel.sharded:
                batches = parallel.maximum(batches)
                rows = self._global_rows(n, batches)
            elif parallel is not None:
                call["dp_rank"], call["dp_size"] = parallel.rank, parallel.size
            if batches == 0:
                return 0.0
            self._desc["labels"] = self._labels = int(labels)  # read by the engine at load (_refresh)
            self._refresh()
            call["X"], call["Y"], call["order"], call["n"] = (_address(X), _address(Y),
                                                              _address(order), n)
            call["sample_weight"] = 0 if weights is None else _address(weights)
            result["penalty"] = self._penalty()
            losses = penalties = total_weight = 0.0
            t0, trained = self.optimizer.t, self._engine.trained
            # calls of whole dropout chunks and at most SIGNAL_FLOPS each (Ctrl-C between them);
            # the same calls on every rank
            step_flops = (B if parallel is not None else min(n, B)) * self.train_flops_per_row
            chunk = min(self._chunk or batches, max(1, int(SIGNAL_FLOPS // step_flops)))
            try:
                for first in range(0, batches, chunk):
                    last = min(batches, first + chunk)
                    if self._groups:
                        self._draw(max(0, min(n, last * B) - first * B))
                    call["mb0"], call["mb1"], call["t"] = first, last, t0 + first
                    if parallel is not None and parallel.sharded:
                        call["dp_rows"] = _address(rows) + 8 * first
                    self._run(self._engine.train, "threads", min(n, B), self.train_flops_per_row)
                    if result["reduce_error"]:
                        raise RuntimeError(f"MPI_Allreduce failed with error code "
                                           f"{int(result['reduce_error'])} in a data-parallel step")
                    losses += float(result["loss_sum"])
                    penalties += float(result["penalty_sum"])
                    total_weight += float(result["weight_sum"])
                    np.add(grad_norms_out, self._grad_norms, out=grad_norms_out)
            finally:  # interrupted or not: the optimizer counts the steps the weights took
                self.optimizer.t = t0 + (self._engine.trained - trained)
            if parallel is not None:  # this rank's rows' losses: the sum over the ranks
                losses = parallel.sum(losses)
            grad_norms_out /= batches
            return (losses + penalties) / total_weight

    def _global_rows(self, n, batches):
        """Sharded rows: per minibatch of the epoch, the rows of all ranks (int64, summed over
        the ranks once per epoch), kept for the engine."""
        B = self.batch_size
        if self._dp_rows.shape[0] != batches:
            self._dp_rows = np.empty(batches, np.int64)
        mine = np.clip(n - B * np.arange(batches), 0, B)
        self._dp_rows[:] = self.parallel.sum(mine)
        return self._dp_rows

    # ------------------------------------------------------------------ prediction
    def _params_bound(self):
        bound = self._bound
        for l, layer in enumerate(self._dense):
            if layer.W is not bound[4 * l] or layer.b is not bound[4 * l + 1]:
                return False
        return True

    def _plan(self, n):
        """(threads, rows per chunk) of a forward pass over n rows; grows the workspace."""
        threads = self.threads_for(n, self.flops_per_row, None, MIN_PREDICT_ROWS_PER_THREAD)
        # rows per pass: PREDICT_CHUNK, or more for narrow networks (few large products beat many
        # small ones), keeping each thread's two work buffers at about PREDICT_BUFFER entries
        rows = max(PREDICT_CHUNK, PREDICT_BUFFER // self._pwidth)
        chunk = min(rows, -(-n // threads))
        # one engine thread, but work for more: the BLAS may thread the products itself
        self._call["pblas"] = int(threads == 1 and self.threads_for(n, self.flops_per_row) > 1)
        need = threads * 2 * chunk * self._pwidth
        if self._pbuf.shape[0] < need:
            self._pbuf = np.empty(need, self.dtype)
            self._call["pbuf"] = _address(self._pbuf)
        self._call["pchunk"], self._call["pthreads"] = chunk, threads
        self._pplan = (n, threads, chunk)
        return threads, chunk

    def predict(self, X, out=None):
        """The network output for the rows of X (inference: no dropout), into ``out`` if given
        (else a new array)."""
        if (type(X) is np.ndarray and X.ndim == 2 and X.dtype == self.dtype
                and (out is None or type(out) is np.ndarray) and self._blas_fallback is None):
            # serving path: a C-contiguous X and out of the engine's dtype run with the checks
            # in _c_train (~0.3 us instead of ~3 us); anything else goes the way below
            n = X.shape[0]
            into = np.empty((n, self.widths[-1]), self.dtype) if out is None else out
            if n > 0:
                with self._lock:
                    if not self._params_bound():
                        self._bind()
                    if n > self._signal_rows:
                        if self._forward(X, into, n):
                            return into
                    else:
                        if self._pplan[0] != n:
                            self._plan(n)
                        if self._engine.forward(X, into, n):
                            return into
        dtype, widths = self.dtype, self.widths
        if type(X) is not np.ndarray or X.dtype != dtype or not X.flags.c_contiguous:
            X = np.ascontiguousarray(X, dtype=dtype)
        if not X.flags.aligned:
            X = X.copy()
        if X.ndim != 2 or X.shape[1] != widths[0]:
            raise ValueError(f"X must have shape (n, {widths[0]}), got {X.shape}")
        n = X.shape[0]
        if out is None:
            out = np.empty((n, widths[-1]), dtype)
        elif type(out) is not np.ndarray or out.shape != (n, widths[-1]) or out.dtype != dtype \
                or not out.flags.c_contiguous or not out.flags.writeable or not out.flags.aligned:
            raise ValueError(f"out must be a writeable, aligned C-contiguous {dtype} array of "
                             f"shape {(n, widths[-1])}")
        elif np.shares_memory(X, out):
            raise ValueError("out must not share memory with X (layers write it before reading X)")
        if n == 0:
            return out
        with self._lock:
            if not self._params_bound():
                self._bind()
            if self._blas_fallback is None:
                ran = self._forward(X, out, n)
            else:
                with self._blas_fallback:
                    ran = self._forward(X, out, n)
        if not ran:  # X and out were checked above
            raise RuntimeError("the engine refused checked arrays")
        return out

    def _forward(self, X, out, n):
        """The engine's forward pass of X into out (n rows), in calls of at most SIGNAL_FLOPS
        (Ctrl-C between them); False when the engine refuses the arrays (see Engine.forward)."""
        step = self._signal_rows
        for start in range(0, n, step):
            rows = min(step, n - start)
            if self._pplan[0] != rows:
                self._plan(rows)
            if rows == n:
                return self._engine.forward(X, out, n)
            if not self._engine.forward(X[start:start + rows], out[start:start + rows], rows):
                return False
        return True
