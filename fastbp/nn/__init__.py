"""The network layer: dense layers, dropout and ``Sequential``, trained by backprop over the kernels.

In the lecture's notation a deep net computes h^l = f((W^l)^T h^(l-1)) for l = 1..L (h^0 = x)
and outputs g(V^T h^L).  Here a batch of n examples is a matrix with one example per row, so a
:class:`Dense` layer computes, for the whole batch at once::

    Z = X W + b        (X = h^(l-1) is n x d, W = W^l is d x k: column j of W is the weight
                        vector w_j of unit j; b is the bias the lecture folds into W)
    A = f(Z)           (A = h^l, n x k)

The output layer is a Dense layer too (W = V); estimators give it the identity activation and let
the loss apply g (softmax or sigmoid) from the logits, which is both stabler and cheaper.

Backprop is the chain rule plus bookkeeping: ``forward`` caches X, Z and A (the "bookkeeping" of
the lecture), ``backward`` takes dA = dL/dA and, using the cached values, computes
dZ = f'(Z) * dA, dW = X^T dZ, db = sum of the rows of dZ and, for every layer but the first,
dX = dZ W^T, which is the dA of the layer below.

Memory: every layer keeps its work buffers (Z, A, dZ, dX) per batch size, made the first time a
batch of that size is seen and reused afterwards, and runs the active backend's kernels
(``fastbp.kernels.ops()``) directly into them: a training step allocates no array once warm.
The arrays returned by ``forward``/``backward`` are those buffers: they are valid until the next
call with the same batch size (copy them to keep them).  At most ``MAX_CACHED_SIZES`` batch sizes
are kept per layer; ``Sequential.predict`` uses fresh arrays and caches nothing.  A network with
``checkpoint_segments`` trades time for memory instead: it keeps only a few layers' values and
computes the others again in the backward pass (see :class:`Sequential`).

A network built by hand::

    from fastbp.nn import Dense, Dropout, Sequential
    from fastbp.optim import Adam
    rng = np.random.default_rng(0)
    net = Sequential([Dense(64, 128, "relu", rng=rng), Dropout(0.2, rng=rng),
                      Dense(128, 10, "identity", rng=rng)])
    opt = Adam(net.params(), lr=1e-3)
    for xb, yb in batches:                       # xb float32 (n, 64), yb intp labels (n,)
        value = net.loss_and_grad("softmax_cross_entropy", xb, yb)   # forward + loss + backward
        opt.step(net.grads())
    proba = net.predict(X, "softmax")            # the output layer's softmax in the same pass

``fastbp.training.fit_network`` is the generic training loop over such a network.
"""
import contextvars
import math
import weakref
from contextlib import contextmanager

import numpy as np

from fastbp import _backend
from fastbp.kernels import ops, registry
from fastbp.kernels._checks import ACTIVATIONS, LOSSES, activation_alpha

__all__ = ["Layer", "Dense", "Dropout", "Sequential", "make_mlp", "parameter_budget", "row_losses",
           "row_weights", "check_checkpoint_segments", "MAX_CACHED_SIZES"]

MAX_CACHED_SIZES = 4

# Activations whose derivative needs only A (not Z): their A may share Z's memory.
_GRAD_FROM_A = frozenset(name for name, a in registry.ACTIVATIONS.items() if a.slope_from_a)

ACTIVATION_ALIASES = {"logistic": "sigmoid"}  # scikit-learn's name


def activation_name(name):
    """The kernel name of an activation (scikit-learn's 'logistic' is 'sigmoid'); ValueError if unknown."""
    name = ACTIVATION_ALIASES.get(name, name)
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{sorted(set(ACTIVATIONS) | set(ACTIVATION_ALIASES))}")
    return name


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


_budget = contextvars.ContextVar("fastbp_parameter_budget", default=None)


@contextmanager
def parameter_budget(nbytes, source):
    """Inside this block the Dense layers built may hold at most ``nbytes`` bytes of parameters
    (W and b) in all: a layer beyond raises ValueError naming ``source`` before it allocates.

    ``fastbp.load`` builds a file's network under the bytes of arrays the file declares, so that
    parameters claiming a huge network cannot exhaust the memory.

    Parameters
    ----------
    nbytes : int
        The budget, in bytes, for all the parameters built in the block.
    source : str
        What declared the budget (e.g. the file), named by the error.

    Raises
    ------
    ValueError
        When a Dense layer built in the block would exceed what is left of the budget.
    """
    token = _budget.set([int(nbytes), source])
    try:
        yield
    finally:
        _budget.reset(token)


def _spend(n_in, n_out, dtype):
    budget = _budget.get()
    if budget is None:
        return
    nbytes = (n_in * n_out + n_out) * dtype.itemsize
    if nbytes > budget[0]:
        raise ValueError(f"a Dense layer {n_in} x {n_out} of {dtype} needs {nbytes} bytes, more "
                         f"than {budget[1]} holds ({budget[0]} bytes left)")
    budget[0] -= nbytes


class _BufferCache:
    """Work buffers per batch size (at most MAX_CACHED_SIZES sizes; the oldest is dropped)."""

    __slots__ = ("_make", "_by_size")

    def __init__(self, make):
        # the owner's bound method, held weakly: the owner holds this cache, and a strong reference
        # back would make every layer and network a reference cycle, freed only by the cyclic
        # garbage collector (with a network's engine threads, see Sequential.predict)
        self._make = weakref.WeakMethod(make)
        self._by_size = {}

    def get(self, n):
        buffers = self._by_size.get(n)
        if buffers is None:
            if len(self._by_size) >= MAX_CACHED_SIZES:
                del self._by_size[next(iter(self._by_size))]
            buffers = self._by_size[n] = self._make()(n)
        return buffers

    def clear(self):
        self._by_size.clear()

    def nbytes(self):
        """The bytes of the arrays held (each once; views into them are not counted)."""
        held = {}
        pending = list(self._by_size.values())
        while pending:
            value = pending.pop()
            if isinstance(value, np.ndarray):
                if value.base is None:
                    held[id(value)] = value.nbytes
            elif isinstance(value, (tuple, list)):
                pending.extend(value)
            elif isinstance(value, dict):
                pending.extend(value.values())
        return sum(held.values())


class Layer:
    """Base class of the network's layers, and the extension point for layers of your own.

    A layer implements

    - ``forward(X, training=False)`` -> its output for a batch X (n x d, the network's dtype),
      keeping what ``backward`` needs (``training``: dropout-like behaviour on);
    - ``backward(dA, need_dX=True)`` -> dL/dX, given dA = dL/d(output) of the last forward (None
      when ``need_dX`` is False), after writing the gradients of its parameters;
    - ``param_names`` / ``grad_names``: the names of the attributes holding its trainable arrays
      and their gradients, in the same order (``Sequential.params()`` / ``grads()`` collect them
      and optimizers update them in place: ``backward`` writes into those same arrays).

    Such a layer trains in any :class:`Sequential` by ``fastbp.training.fit_network`` (the
    compiled engine runs the Dense layers before and after it in each step, the layer runs
    itself, and ``fit_path`` says ``"engine steps (...)"``), and ``fastbp.gradcheck`` holds its
    backward to finite differences.  It may keep the width of
    its input or, between Dense layers whose sizes match it, change it.  For example a learnable
    scale and shift of every unit (``gamma * x + beta``, a normalisation layer's affine part):

    >>> import numpy as np
    >>> import fastbp
    >>> from fastbp.nn import Dense, Layer, Sequential
    >>> from fastbp.training import TrainConfig, fit_network
    >>> class Affine(Layer):
    ...     param_names, grad_names = ("gamma", "beta"), ("dgamma", "dbeta")
    ...     def __init__(self, n, dtype=np.float32):
    ...         self.gamma, self.beta = np.ones(n, dtype), np.zeros(n, dtype)
    ...         self.dgamma, self.dbeta = np.zeros(n, dtype), np.zeros(n, dtype)
    ...     def forward(self, X, training=False):
    ...         self.X = X
    ...         return X * self.gamma + self.beta
    ...     def backward(self, dA, need_dX=True):
    ...         np.sum(dA * self.X, axis=0, out=self.dgamma)
    ...         np.sum(dA, axis=0, out=self.dbeta)
    ...         return dA * self.gamma if need_dX else None
    >>> rng = np.random.default_rng(0)
    >>> net = Sequential([Dense(4, 8, "tanh", rng=rng), Affine(8), Dense(8, 3, "identity", rng=rng)])
    >>> X = rng.standard_normal((64, 4)).astype(np.float32)
    >>> y = ((X[:, 0] > 0).astype(np.intp) + (X[:, 1] > 0))       # 3 classes
    >>> state = fit_network(net, "softmax_cross_entropy", X, y,
    ...                     TrainConfig(max_iter=60, learning_rate_init=0.05, tol=0.0), rng=0)
    >>> bool(state.loss_curve[-1] < 0.5 * state.loss_curve[0])
    True
    >>> bool(fastbp.gradcheck(net, X[:8], y[:8], loss="softmax_cross_entropy") < 1e-6)
    True
    """

    param_names = ()  # names of the trainable arrays, e.g. ("W", "b")
    grad_names = ()   # names of their gradients, same order, e.g. ("dW", "db")

    def _forward(self, X, training=False, keep=True):
        """What ``Sequential`` calls: the layer's ``forward`` (fastbp's layers bypass their input
        checks here; ``keep=False``, inference without caching, is a hint)."""
        return self.forward(X, training)

    def _backward(self, dA, need_dX):
        return self.backward(dA, need_dX)

    def _reset_cache(self):
        pass

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in getattr(self, "_transient", ()):
            state[key] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset_cache()


class Dense(Layer):
    """Fully connected layer A = f(X W + b): the lecture's h^l = f((W^l)^T h^(l-1)), batched.

    Parameters
    ----------
    n_in, n_out : int
        The sizes d (inputs) and k (units), each >= 1.
    activation : str, default='relu'
        One of ``fastbp.kernels.ACTIVATIONS`` (``'logistic'`` is accepted for ``'sigmoid'``);
        'identity' for an output layer whose g is applied by the loss.
    alpha : float or None, default=None
        The activation's parameter (leaky_relu slope, elu scale); None: its default.
    dtype : numpy dtype, default=numpy.float32
        float32 or float64.
    rng : numpy.random.Generator, int or None, default=None
        Generator (or seed) of the initial weights.
    init_factor : float or None, default=None
        Glorot-uniform factor: W and b drawn from U(-r, r), r = sqrt(factor / (d + k)), as
        scikit-learn does; None: 2 for sigmoid, else 6.

    Attributes
    ----------
    W : ndarray of shape (d, k)
        The weights (C-contiguous, of ``dtype``).
    b : ndarray of shape (k,)
        The biases.
    dW, db : ndarray
        Their gradients, written by ``backward``.
    activation : str
        The activation's kernel name.
    alpha : float or None
        Its parameter (None for activations without one).
    X, Z, A : ndarray or None
        After ``forward``: the cached input, pre-activation and output of the last batch (in a
        Sequential with ``checkpoint_segments``: views of its shared buffers, Z holding A where
        f' is had from A or from the sign of z).

    Raises
    ------
    ValueError
        For sizes below 1, an unknown activation or a bad ``alpha``.
    TypeError
        For a dtype other than float32 and float64.
    """

    param_names = ("W", "b")
    grad_names = ("dW", "db")
    _transient = ("_cache", "X", "Z", "A")

    def __init__(self, n_in, n_out, activation="relu", alpha=None, dtype=np.float32, rng=None,
                 init_factor=None):
        n_in, n_out = int(n_in), int(n_out)
        if n_in < 1 or n_out < 1:
            raise ValueError(f"a Dense layer needs n_in >= 1 and n_out >= 1, got {n_in}, {n_out}")
        self.activation = activation_name(activation)
        self.alpha = activation_alpha(self.activation, {} if alpha is None else {"alpha": alpha})
        if ACTIVATIONS[self.activation] is None:
            self.alpha = None
        dtype = _float_dtype(dtype)
        _spend(n_in, n_out, dtype)
        self.W = np.zeros((n_in, n_out), dtype)
        self.b = np.zeros(n_out, dtype)
        self.dW = np.zeros_like(self.W)
        self.db = np.zeros_like(self.b)
        self.reset_parameters(rng, init_factor)
        self._reset_cache()

    @property
    def n_in(self):
        return self.W.shape[0]

    @property
    def n_out(self):
        return self.W.shape[1]

    @property
    def dtype(self):
        return self.W.dtype

    def reset_parameters(self, rng=None, init_factor=None):
        """Glorot-uniform initialisation (scikit-learn's MLP): W, then b, from U(-r, r).

        Parameters
        ----------
        rng : numpy.random.Generator, int or None, default=None
            Generator (or seed) of the draws.
        init_factor : float or None, default=None
            r = sqrt(init_factor / (d + k)); None: 2 for sigmoid, else 6.
        """
        rng = np.random.default_rng(rng)
        if init_factor is None:
            init_factor = 2.0 if self.activation == "sigmoid" else 6.0
        bound = math.sqrt(init_factor / (self.n_in + self.n_out))
        self.W[...] = rng.uniform(-bound, bound, self.W.shape)
        self.b[...] = rng.uniform(-bound, bound, self.b.shape)

    def _reset_cache(self):
        self._cache = _BufferCache(self._make_buffers)
        self.X = self.Z = self.A = None

    def _make_buffers(self, n):
        shape, dtype = (n, self.n_out), self.dtype
        Z = np.empty(shape, dtype)
        A = Z if self.activation in _GRAD_FROM_A else np.empty(shape, dtype)
        dZ = np.empty(shape, dtype)
        dX = np.empty((n, self.n_in), dtype)
        return Z, A, dZ, dX

    def _alpha(self):
        return 0.0 if self.alpha is None else self.alpha

    def forward(self, X, training=False, keep=True):
        """A = f(X W + b); caches X, Z, A for ``backward``.

        Parameters
        ----------
        X : array-like of shape (n, d)
            The inputs (converted to a C-contiguous array of the layer's dtype if needed).
        training : bool, default=False
            Accepted for a uniform layer interface (a Dense layer ignores it).
        keep : bool, default=True
            False: compute into fresh arrays and cache nothing (no backward possible).

        Returns
        -------
        ndarray of shape (n, k)
            A: a work buffer of the layer when ``keep`` (valid until the next forward with the
            same batch size).

        Raises
        ------
        ValueError
            When X is not 2-D with d columns.
        """
        X = _as_input(X, self.dtype, self.n_in)
        return self._forward(X, training, keep)

    def _forward(self, X, training=False, keep=True):
        if keep:
            Z, A, _, _ = self._cache.get(X.shape[0])
            return self._run(X, Z, A)
        Z = np.empty((X.shape[0], self.n_out), self.dtype)
        A = Z if self.activation in _GRAD_FROM_A else np.empty_like(Z)
        ops().dense_forward(self.activation, X, self.W, self.b, Z, A, self._alpha())
        return A

    def _run(self, X, Z, A):
        """The forward pass into the buffers Z and A (A may be Z, see ``_make_buffers``), kept
        for ``backward``."""
        ops().dense_forward(self.activation, X, self.W, self.b, Z, A, self._alpha())
        self.X, self.Z, self.A = X, Z, A
        return A

    def backward(self, dA, need_dX=True):
        """Given dA = dL/dA for the last forward batch, set dW, db and return dX.

        Parameters
        ----------
        dA : array-like of shape (n, k)
            The gradient of the loss with respect to the last forward's output (not modified).
        need_dX : bool, default=True
            Whether to compute dX = dL/dX.

        Returns
        -------
        ndarray of shape (n, d) or None
            dX (a buffer of this layer, valid until the next backward with the same batch size),
            or None when not needed.

        Raises
        ------
        RuntimeError
            Before any forward pass.
        ValueError
            When dA is not shaped like the last forward's output.
        """
        if self.A is None:
            raise RuntimeError("backward needs a forward pass first")
        dA = _as_input(dA, self.dtype, self.n_out)
        if dA.shape != self.A.shape:
            raise ValueError(f"dA has shape {dA.shape}, the last forward output has {self.A.shape}")
        return self._backward(dA, need_dX)

    def _backward(self, dA, need_dX):
        _, _, dZ, dX = self._cache.get(dA.shape[0])
        return self._backprop(dA, dZ, dX if need_dX else None)

    def _backprop(self, dA, dZ, dX):
        """The backward pass of the kept forward, through the buffers dZ and dX (None: dX not
        needed); writes dW, db and returns dX."""
        if self.activation == "identity":  # dZ = dA: skip the copy
            ops().linear_backward(self.X, self.W, dA, dX, self.dW, self.db)
        else:
            ops().dense_backward(self.activation, self.X, self.W, self.Z, self.A, dA, dZ,
                                            dX, self.dW, self.db, self._alpha())
        return dX

    def __repr__(self):
        extra = "" if self.alpha is None else f", alpha={self.alpha}"
        return f"Dense({self.n_in}, {self.n_out}, {self.activation!r}{extra}, dtype={self.dtype.name})"


class Dropout(Layer):
    """Inverted dropout with rate p: in training, each unit is kept with probability 1 - p and the
    kept ones are scaled by 1/(1 - p), so that nothing changes at predict time (identity there).

    The random draw of one training forward is exactly ``rng.random(dtype=dtype, out=u)`` with
    ``u`` of the input's shape and dtype; a unit is kept where ``u >= dtype(rate)`` and its output
    is ``x * dtype(1 / (1 - rate))``, the others are 0 (a compiled trainer reproduces the same
    masks from the same generator).  In a data-parallel epoch (``fastbp.distributed``) ``rows``
    is (lo, hi, total): the input is rows [lo, hi) of a minibatch of ``total`` rows, and ``u`` is
    those rows of the draw for the whole minibatch (the masks one process would draw).

    Parameters
    ----------
    rate : float
        The probability p of dropping a unit, in [0, 1).
    rng : numpy.random.Generator, int or None, default=None
        Generator (or seed) of the masks.

    Raises
    ------
    ValueError
        For a rate outside [0, 1).
    """

    _transient = ("_cache", "mask")
    rows = None  # (lo, hi, total) in a data-parallel epoch, see above

    def __init__(self, rate, rng=None):
        rate = float(rate)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate = rate
        self.rng = np.random.default_rng(rng)
        self._reset_cache()

    def _reset_cache(self):
        self._cache = _BufferCache(self._make_buffers)
        self.mask = None

    def _make_buffers(self, key):
        shape, dtype = key
        return np.empty(shape, dtype), np.empty(shape, bool), np.empty(shape, dtype), np.empty(shape, dtype)

    def forward(self, X, training=False, keep=True):
        X = np.ascontiguousarray(X)
        return self._forward(X, training, keep)

    def _forward(self, X, training, keep=True):
        if not training or self.rate == 0.0:
            self.mask = None
            return X
        u, mask, out, _ = self._cache.get((X.shape, X.dtype))
        return self._apply(X, self._draw(u, mask), out)

    def _draw(self, u, mask):
        """A new mask, drawn into ``mask`` through the scratch ``u`` (of the input's shape)."""
        if self.rows is None:
            self.rng.random(dtype=u.dtype, out=u)
        else:  # this rank's rows of the whole minibatch's draw
            lo, hi, total = self.rows
            whole = self._cache.get(((total, *u.shape[1:]), u.dtype))[0]
            self.rng.random(dtype=u.dtype, out=whole)
            u = whole[lo:hi]
        np.greater_equal(u, u.dtype.type(self.rate), out=mask)
        return mask

    def _apply(self, X, mask, out):
        """The training output for ``mask`` into ``out``; the mask is kept for ``backward``."""
        out.fill(0)  # (multiplying by the bool mask would cast through a temporary buffer)
        np.multiply(X, X.dtype.type(1.0 / (1.0 - self.rate)), out=out, where=mask)
        self.mask = mask
        return out

    def backward(self, dA, need_dX=True):
        return self._backward(np.ascontiguousarray(dA), need_dX)

    def _backward(self, dA, need_dX):
        if not need_dX:
            return None
        if self.mask is None:
            return dA
        return self._backprop(dA, self._cache.get((dA.shape, dA.dtype))[3])

    def _backprop(self, dA, dX):
        """dX = dL/dX through the kept mask, into the buffer dX."""
        dX.fill(0)
        np.multiply(dA, dA.dtype.type(1.0 / (1.0 - self.rate)), out=dX, where=self.mask)
        return dX

    def __repr__(self):
        return f"Dropout({self.rate})"


def _as_input(X, dtype, n_features):
    if type(X) is not np.ndarray or X.dtype != dtype or not (X.flags.c_contiguous and X.flags.aligned):
        X = np.require(X, dtype, "CAE")  # C order, aligned (compiled kernels), an ndarray
    if X.ndim != 2 or X.shape[1] != n_features:
        raise ValueError(f"expected a 2-D array with {n_features} columns, got shape {X.shape}")
    return X


def check_checkpoint_segments(value):
    """``checkpoint_segments`` checked: None, 'sqrt' or an int >= 1 (see :class:`Sequential`).

    Parameters
    ----------
    value : object
        The setting.

    Returns
    -------
    None, 'sqrt' or int
        The setting (an int as a Python int).

    Raises
    ------
    ValueError
        For any other value, naming ``checkpoint_segments``.
    """
    if value is None or (isinstance(value, str) and value == "sqrt"):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ValueError("checkpoint_segments must be None (store every layer's activations), 'sqrt' "
                     f"or an int >= 1 (the number of segments), got {value!r}")


_ALIGN = 64  # bytes: each workspace view starts on a cache line, as a fresh array does


def segment_ends(layers, segments):
    """The positions of the Dense layers that end a segment of ``checkpoint_segments``
    (``segments``: 'sqrt' or an int; see :class:`Sequential`): the Dense layers in that many
    groups of consecutive ones, as equal as can be, the first groups one layer larger."""
    dense = [i for i, layer in enumerate(layers) if type(layer) is Dense]
    k = round(math.sqrt(len(dense))) if segments == "sqrt" else segments
    k = max(1, min(k, len(dense)))
    q, r = divmod(len(dense), k)
    ends, count = set(), 0
    for j in range(k - 1):
        count += q + (j < r)
        ends.add(dense[count - 1])
    return ends


def _view(flat, n, width, offset=0):
    """n x width entries of a flat buffer from ``offset``, as a C-contiguous matrix."""
    return flat[offset:offset + n * width].reshape(n, width)


class _Segments:
    """The training passes of a Sequential with ``checkpoint_segments`` (see there): its
    segments, and their buffers per batch size.

    ``segments`` lists (lo, hi, recomputed) over the layers: runs of Dense and Dropout layers
    (those exact types; ``recomputed`` True) and every other layer alone (False: it runs once,
    on its own buffers).  A run's last layer writes its output to a checkpoint of its own unless
    the run ends the network; every other output goes to one workspace shared by the runs (the
    size of the largest), which after the forward pass still holds the last run's values, so
    that only the other runs are run again.  The backward pass writes every dZ into one shared
    buffer and every dX into one of two (the one its incoming gradient is not in).
    """

    def __init__(self, network, segments):
        layers = network.layers
        self.key = tuple(map(id, layers))
        self.dtype = network.dtype
        self.widths = network._widths()
        ends = segment_ends(layers, segments)
        self.segments, lo = [], None
        for i, layer in enumerate(layers):
            if type(layer) not in (Dense, Dropout):
                if lo is not None:
                    self.segments.append((lo, i, True))
                    lo = None
                self.segments.append((i, i + 1, False))
                continue
            lo = i if lo is None else lo
            if i in ends:
                self.segments.append((lo, i + 1, True))
                lo = None
        if lo is not None:
            self.segments.append((lo, len(layers), True))
        self.runs = [(lo, hi) for lo, hi, recomputed in self.segments if recomputed]
        self.n_layers = len(layers)
        self.kinds = [type(layer) for layer in layers]
        # A in Z's buffer wherever f' is had from A or from the sign of z that A keeps (relu,
        # as the engine does): the same gradients (tests/test_checkpoint.py), half the values
        self.shared = [type(layer) is Dense and registry.a_may_share_z(layer.activation,
                                                                     layer.alpha)
                       for layer in layers]
        self._cache = _BufferCache(self._make_buffers)
        self.buffers, self.inputs = None, {}

    def _places(self, i, hi):
        """Whether each forward output of layer i, in a run ending at hi, is a checkpoint (else a
        workspace view): a Dense layer's (Z, A) -- one array when A is Z --, a Dropout's out."""
        checkpoint = i == hi - 1 and hi != self.n_layers
        if self.kinds[i] is Dense and not self.shared[i]:
            return (False, checkpoint)
        return (checkpoint,)

    def _make_buffers(self, n):
        """(every array made, {layer: (Z, A) or (out, mask)}, the dZ buffer, the 2 dX buffers)."""
        dtype, widths = self.dtype, self.widths
        item = dtype.itemsize

        def step(width):  # workspace entries of an n x width view, rounded up to _ALIGN bytes
            return -(-n * width * item // _ALIGN) * _ALIGN // item
        workspace = max([sum(step(widths[i + 1]) for i in range(lo, hi)
                             for checkpoint in self._places(i, hi) if not checkpoint)
                         for lo, hi in self.runs], default=0)
        flat = np.empty(workspace, dtype)
        made, arrays, dz_width, dx_width = [flat], {}, 0, 0
        for lo, hi in self.runs:
            offset = 0
            for i in range(lo, hi):
                width, got = widths[i + 1], []
                for checkpoint in self._places(i, hi):
                    if checkpoint:
                        got.append(np.empty((n, width), dtype))
                        made.append(got[-1])
                    else:
                        got.append(_view(flat, n, width, offset))
                        offset += step(width)
                if self.kinds[i] is Dropout:
                    got.append(np.empty((n, width), bool))  # the mask: the draw, kept
                    made.append(got[-1])
                else:
                    dz_width = max(dz_width, width)
                arrays[i] = got if len(got) == 2 else got * 2
                dx_width = max(dx_width, widths[i])
        dZ = np.empty(n * dz_width, dtype)
        dX = (np.empty(n * dx_width, dtype), np.empty(n * dx_width, dtype))
        return made + [dZ, *dX], arrays, dZ, dX

    def forward(self, layers, X, training):
        """The training forward pass, keeping each run's input (its checkpoint)."""
        self.buffers = self._cache.get(X.shape[0])
        for lo, hi, recomputed in self.segments:
            if recomputed:
                self.inputs[lo] = X
                X = self._run(layers, lo, hi, X, training)
            else:
                X = layers[lo]._forward(X, training, True)
        return X

    def _run(self, layers, lo, hi, X, training, replay=False):
        """A run's forward pass into its buffers; ``replay``: again, with the kept masks."""
        _, arrays, _, dX = self.buffers
        for i in range(lo, hi):
            layer, (first, second) = layers[i], arrays[i]
            if self.kinds[i] is Dense:
                X = layer._run(X, first, second)
            elif replay:
                if layer.mask is not None:
                    X = layer._apply(X, layer.mask, first)
            elif training and layer.rate > 0.0:  # the draw's scratch: a dX buffer, free now
                X = layer._apply(X, layer._draw(_view(dX[0], *X.shape), second), first)
            else:
                layer.mask = None
        return X

    def backward(self, layers, grad, need_dX):
        """The backward pass, segment by segment from the last, each run but the last run again
        from its checkpoint first."""
        _, _, dZ, dX = self.buffers
        n = grad.shape[0]
        for lo, hi, recomputed in reversed(self.segments):
            if recomputed and (lo, hi) != self.runs[-1]:
                self._run(layers, lo, hi, self.inputs[lo], True, replay=True)
            for i in range(hi - 1, lo - 1, -1):
                layer, need = layers[i], need_dX or i > 0
                if not recomputed:
                    grad = layer._backward(grad, need)
                    continue
                out = None
                if need:
                    free = dX[1] if np.may_share_memory(grad, dX[0]) else dX[0]
                    out = _view(free, n, self.widths[i])
                if self.kinds[i] is Dense:
                    grad = layer._backprop(grad, _view(dZ, n, self.widths[i + 1]), out)
                elif not need:
                    grad = None
                elif layer.mask is not None:
                    grad = layer._backprop(grad, out)
        return grad


_engine = []  # fastbp.engine once imported: on first use, not by importing fastbp.nn


def _engine_module():
    """fastbp.engine (None if it cannot be imported), looked up once."""
    if not _engine:
        try:
            from fastbp import engine
        except ImportError:
            return None
        _engine.append(engine)
    return _engine[0]


def _output_activation(name, last):
    """``Sequential.predict``'s ``output``, checked against the ``last`` Dense layer: its kernel
    name."""
    name = activation_name(name)
    if last.activation != "identity":
        raise ValueError(f"output={name!r} applies to logits: the last Dense layer's activation "
                         f"must be the identity, not {last.activation!r}")
    return name


class Sequential:
    """Layers applied in order: the lecture's g(V^T f(... f((W^1)^T x))) with g left to the loss.

    ``forward(X, training)`` returns the last layer's output (a buffer, see the module docstring);
    ``backward(dOut)`` runs the layers backwards from dOut = dL/d(output) and fills every
    layer's gradients; ``params()`` = [W1, b1, W2, b2, ...] in layer order and ``grads()`` the
    matching [dW1, db1, ...] (the same array objects every call, so optimizers hold on to them).

    Memory (``checkpoint_segments``).  Storing every layer's values for the backward pass is the
    lecture's bookkeeping, which "saves time but also uses up a lot of memory" ("CS771 Deep
    Learning III", slide 19).  With ``checkpoint_segments`` set, the training forward pass keeps
    only the input of each of a few segments of layers -- a checkpoint -- and the backward pass
    runs each segment forward again from its checkpoint before going back through it (Chen et
    al. 2016, "Training Deep Nets with Sublinear Memory Cost"; Griewank's checkpointing; PyTorch's
    ``torch.utils.checkpoint.checkpoint_sequential(functions, segments, input)``).  The Dense
    layers are split into that many groups of consecutive layers, as equal as can be ('sqrt':
    round(sqrt(L)) of them for L Dense layers, Chen et al.'s choice; an int above L counts as L),
    each Dropout going with the Dense layer after it.  The last segment is not run again (its
    values are still there), so 1 segment recomputes nothing.  All segments share one workspace
    of the largest one's size, and all layers one dZ and two dX buffers for the backward pass,
    instead of the per-layer buffers (``buffer_nbytes`` counts them): with L segments, each
    segment's input is kept and little is saved; about sqrt(L) balances the two.  The gradients
    are those of the stored pass, bit for bit: the same kernels on the same values in the same
    order, every Dropout reusing the mask it drew (kept, one byte per unit), never drawing again.
    A layer of any other kind (the penalty layers of the sparse autoencoder and the VAE, a
    layer of your own) is never run again: it runs once on its own buffers (its random draws
    happen once), and segments end before it and start after it.  The compiled engine's whole
    epochs store every layer's values for all rows and decline ``checkpoint_segments``; on the
    compiled backend its passes inside each step take the segments instead (``engine_runs``:
    one run per segment, all runs sharing one workspace, each run but the last run again from
    its checkpoint before its backward pass, with the masks it drew), with the same gradients;
    prediction is unchanged.

    Parameters
    ----------
    layers : sequence of Layer
        The layers in order, at least one of them a :class:`Dense` layer; the Dense layers'
        sizes must chain and share one dtype.
    checkpoint_segments : None, 'sqrt' or int >= 1, default=None
        None: the training forward pass stores every layer's values (fastest); else the number
        of segments (see above).  Also an attribute, settable.

    Raises
    ------
    ValueError
        Without a Dense layer, when their sizes do not chain, or for a bad
        ``checkpoint_segments``.
    TypeError
        When the Dense layers' dtypes differ.
    """

    _checkpoint_segments = None  # class defaults (a subclass may build without __init__)
    _segments = None
    # the engine's passes of the runs of Dense layers ([(start, stop, fastbp.engine.StackPasses)],
    # see engine_runs), set by the training epoch (fastbp.training.make_trainer) while it runs;
    # and whether the last forward pass ran on them (its backward pass does too)
    engine_passes = None
    _on_engine = False
    _stepped = ()  # the parameters (positions in params()) the last backward pass stepped
    output = None  # the output of the last forward pass (a buffer)

    def __init__(self, layers, checkpoint_segments=None):
        self.layers = list(layers)
        if not self.dense_layers:
            raise ValueError("a Sequential needs at least one Dense layer")
        dtypes = {layer.dtype for layer in self.dense_layers}
        if len(dtypes) != 1:
            raise TypeError(f"all Dense layers must share one dtype, got {sorted(map(str, dtypes))}")
        for lower, upper in zip(self.dense_layers, self.dense_layers[1:]):
            if lower.n_out != upper.n_in:
                raise ValueError(f"layer sizes do not chain: {lower!r} then {upper!r}")
        self._loss_cache = _BufferCache(self._make_loss_buffer)
        self._predictor = None  # the engine's forward pass, made on the first predict (or False)
        self.checkpoint_segments = checkpoint_segments
        self._predictors = {}  # the engine's forward passes by output, made on first use (or False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_loss_cache"] = None
        state["_predictor"] = None
        state["_segments"] = None
        state["_predictors"] = {}
        state.pop("engine_passes", None)  # the engine's, set while an epoch runs
        state.pop("_on_engine", None)
        state.pop("_stepped", None)
        state.pop("output", None)
        return state

    def __setstate__(self, state):
        state.pop("_predictor", None)  # pickled by an older fastbp
        self.__dict__.update(state)
        self._loss_cache = _BufferCache(self._make_loss_buffer)
        self._predictor = None
        self._segments = None

    @property
    def checkpoint_segments(self):
        """None (store every layer's values for the backward pass) or the segments of the
        checkpointed passes ('sqrt' or an int >= 1; see the class docstring).  Setting another
        value drops the buffers of the old setting; ValueError for a bad one."""
        return self._checkpoint_segments

    @checkpoint_segments.setter
    def checkpoint_segments(self, value):
        value = check_checkpoint_segments(value)
        if value != self._checkpoint_segments:
            self._checkpoint_segments, self._segments = value, None
            for layer in self.layers:
                if type(layer) in (Dense, Dropout):
                    layer._reset_cache()

    def buffer_nbytes(self):
        """The bytes of the work buffers the network holds for training passes: every layer's
        per-batch-size buffers, the loss gradient's and, with ``checkpoint_segments``, the
        checkpoints, the kept dropout masks and the shared workspace and backward buffers
        (batch sizes seen last, at most ``MAX_CACHED_SIZES`` of them).

        Returns
        -------
        int
            The bytes (each array once).
        """
        caches = [getattr(layer, "_cache", None) for layer in self.layers]
        caches += [self._loss_cache, self._segments and self._segments._cache]
        return sum(cache.nbytes() for cache in caches if isinstance(cache, _BufferCache))


        self._predictors = {}

    @property
    def dense_layers(self):
        return [layer for layer in self.layers if isinstance(layer, Dense)]

    def engine_stack(self):
        """The network as the compiled engine runs it (fastbp.engine takes no layer types):
        (dense layers, {dense index: the Dropout on its input}, penalty) for a plain stack --
        Dense layers (not subclasses), each optionally preceded by one Dropout with a NumPy
        Generator, none after the last, and at most one penalty layer on a hidden Dense layer's
        output (a layer whose ``engine_penalty()`` describes it: penalty is then (that Dense
        layer's index, ``engine_penalty()``), else None) --, else a phrase saying why not (the
        engine reports it as the fit's path).  A rate-0 Dropout is the identity and is left out.

        Returns
        -------
        tuple (list of Dense, dict, tuple or None) or str
            The stack, or the reason it is not one.
        """
        dense, dropouts, pending, penalty = [], {}, None, None
        for layer in self.layers:
            describe = getattr(layer, "engine_penalty", None)
            if type(layer) is Dense:
                if pending is not None:
                    dropouts[len(dense)] = pending
                    pending = None
                dense.append(layer)
            elif callable(describe) and penalty is None and dense and pending is None:
                penalty = (len(dense) - 1, describe())
            elif type(layer) is Dropout:
                if pending is not None:
                    return "a Dropout doubled"
                if layer.rate > 0:  # a rate-0 dropout is the identity and draws nothing
                    if not isinstance(layer.rng, np.random.Generator):
                        return "a dropout generator that is not a numpy Generator"
                    pending = layer
            else:
                return f"{type(layer).__name__} layer"
        if pending is not None:
            return "a Dropout last"
        if not dense:
            return "no Dense layer"
        if penalty is not None and (penalty[0] == len(dense) - 1 or penalty[0] + 1 in dropouts):
            return "a penalty layer on the output or before a Dropout"
        return dense, dropouts, penalty

    def engine_runs(self):
        """Where the compiled engine can run this network inside a training step
        (``fastbp.engine.make_stack_passes``): the maximal runs of consecutive layers made of
        Dense layers (not subclasses), each optionally after one Dropout with a NumPy Generator,
        as ``(start, stop, dense, dropouts)`` -- ``layers[start:stop]``, its Dense layers and
        {index among them: the Dropout on its input} --, or a phrase saying why there is none.
        Every other layer (a penalty, the VAE's sampling layer, a layer of your own, a Dropout
        last or before such a layer) runs itself between the runs.  A rate-0 Dropout is the
        identity and is left out.  With ``checkpoint_segments`` a run also ends where a
        segment does (the engine's passes then run each segment again before its backward
        pass, as the layer-by-layer pass does).

        Returns
        -------
        list of tuple (int, int, list of Dense, dict) or str
        """
        segments = self._checkpoint_segments
        ends = segment_ends(self.layers, segments) if segments is not None else ()
        runs, run, pending = [], None, None  # run: [start, dense, dropouts]; pending: (i, Dropout)
        for i, layer in enumerate([*self.layers, None]):
            if type(layer) is Dense:
                if run is None:
                    run = [i if pending is None else pending[0], [], {}]
                if pending is not None and pending[1].rate > 0:
                    run[2][len(run[1])] = pending[1]
                run[1].append(layer)
                pending = None
                if i in ends:  # a checkpoint segment ends here
                    runs.append((run[0], i + 1, run[1], run[2]))
                    run = None
                continue
            dropout = type(layer) is Dropout and isinstance(layer.rng, np.random.Generator)
            if run is not None and (pending is not None or not dropout):
                runs.append((run[0], i if pending is None else pending[0], run[1], run[2]))
                run = None
            pending = (i, layer) if dropout else None
        return runs or "no Dense layer"

    @property
    def dtype(self):
        return self.dense_layers[0].dtype

    @property
    def n_inputs(self):
        return self.dense_layers[0].n_in

    @property
    def n_outputs(self):
        return self.dense_layers[-1].n_out

    def params(self):
        return [getattr(layer, name) for layer in self.layers for name in layer.param_names]

    def grads(self):
        return [getattr(layer, name) for layer in self.layers for name in layer.grad_names]

    def get_weights(self):
        """Copies of ``params()``.

        Returns
        -------
        list of ndarray
            [W1, b1, W2, b2, ...], copied.
        """
        return [p.copy() for p in self.params()]

    def set_weights(self, weights):
        """Copy ``weights`` into the parameters, in place.

        Parameters
        ----------
        weights : list of array-like
            Shaped like ``params()``: [W1, b1, W2, b2, ...].

        Raises
        ------
        ValueError
            For a wrong number of arrays or a wrong shape.
        """
        params = self.params()
        if len(weights) != len(params):
            raise ValueError(f"{len(weights)} arrays for {len(params)} parameters")
        for param, value in zip(params, weights):
            value = np.asarray(value)
            if value.shape != param.shape:
                raise ValueError(f"shape {value.shape} for a parameter of shape {param.shape}")
            np.copyto(param, value, casting="same_kind")

    def forward(self, X, training=False):
        """The network output for the rows of X, caching what ``backward`` needs.

        Parameters
        ----------
        X : array-like of shape (n, n_inputs)
            Converted to the network's dtype if needed.
        training : bool, default=False
            Training mode (dropout on).

        Returns
        -------
        ndarray of shape (n, n_outputs)
            The output: a work buffer (see the module docstring).

        Raises
        ------
        ValueError
            When X is not 2-D with ``n_inputs`` columns.
        """
        X = _as_input(X, self.dtype, self.n_inputs)
        return self._forward(X, training)

    def _forward(self, X, training, keep=True):
        self._on_engine = False
        layers, done, runs = self.layers, 0, self.engine_passes
        # on the engine's passes: training, or inference where no run has a dropout to switch
        # off (the GAN's fakes for D's step: a threaded BLAS call between engine calls would
        # leave its workers spinning on the cores the engine's threads need)
        if keep and runs is not None and (training or not any(p.dropout for _, _, p in runs)):
            for start, stop, passes in runs:
                for layer in layers[done:start]:
                    X = layer._forward(X, training, keep)
                X, done = passes.forward(X), stop
            self._on_engine = True
        elif keep and self._checkpoint_segments is not None:
            segments = self._segments
            if segments is None or segments.key != tuple(map(id, self.layers)):
                segments = self._segments = _Segments(self, self._checkpoint_segments)
            self.output = segments.forward(self.layers, X, training)
            return self.output
        for layer in layers[done:]:
            X = layer._forward(X, training, keep)
        self.output = X
        return X

    def predict(self, X, output=None):
        """The output for X in a fresh array (inference mode: dropout off; no layer keeps X, Z
        or A).  On the compiled backend a plain stack runs the training engine's forward pass
        (fastbp.engine.make_predictor: fused bias + activation, rows split over threads, chunks
        that stay in cache); anything else goes layer by layer.

        Parameters
        ----------
        X : array-like of shape (n, n_inputs)
            Converted to the network's dtype if needed.
        output : str or None, default=None
            An activation (see ``fastbp.kernels.activation``; at its default parameter) applied to
            the last Dense layer's output, which must be the identity: e.g. ``'softmax'`` turns a
            classifier's logits into its probabilities in the same pass.  None: the network's
            own output.

        Returns
        -------
        ndarray of shape (n, n_outputs)
            A fresh array of the network's dtype.

        Raises
        ------
        ValueError
            When X is not 2-D with ``n_inputs`` columns; for an unknown ``output``, or an
            ``output`` on a network whose last Dense layer is not the identity.
        """
        dense = self.dense_layers
        if output is not None:
            output = _output_activation(output, dense[-1])
        X = _as_input(X, dense[0].dtype, dense[0].n_in)
        predictor = self._engine_predictor(output)
        if predictor is not None:
            return predictor.predict(X)
        A = self._forward(X, False, keep=False)
        if output is not None:
            ops().activation(output, A, A, activation_alpha(output, {}))
        return A

    def _engine_predictor(self, output=None):
        """The engine's predictor for this network (made once per ``output``, not pickled), or
        None."""
        if _backend.backend() != "compiled":
            return None
        engine = _engine_module()
        if engine is None or not engine.USE_FUSED:
            return None
        predictors = self.__dict__.setdefault("_predictors", {})  # (a network built by __new__)
        predictor = predictors.get(output)
        if predictor is None:
            predictor = predictors[output] = engine.make_predictor(self, output) or False
        return predictor or None

    __call__ = predict

    def backward(self, dOut, need_dX=False):
        """Backprop the gradient of the loss through every layer of the last forward.

        Parameters
        ----------
        dOut : array-like of shape (n, n_outputs)
            dL/d(output) for the last forward batch.
        need_dX : bool, default=False
            Whether to return dL/dX.

        Returns
        -------
        ndarray of shape (n, n_inputs) or None
            dL/dX (a work buffer) when ``need_dX``, else None.  The gradients land in
            ``grads()``.

        Raises
        ------
        ValueError
            When dOut is not shaped like the last forward's output.
        """
        dOut = _as_input(dOut, self.dtype, self.n_outputs)
        last = self.dense_layers[-1]
        if last.A is None or dOut.shape != last.A.shape:
            raise ValueError("backward needs dOut shaped like the output of the last forward")
        return self._backward(dOut, need_dX)

    def _backward(self, grad, need_dX):
        self._stepped = ()
        if self._checkpoint_segments is not None and not self._on_engine:
            return self._segments.backward(self.layers, grad, need_dX)
        layers, done = self.layers, len(self.layers)
        if self._on_engine:
            runs = self.engine_passes
            for start, stop, passes in reversed(runs):
                for i in range(done - 1, stop - 1, -1):
                    grad = layers[i]._backward(grad, True)
                if passes.recompute and passes is not runs[-1][2]:
                    passes.replay()  # its values: run again from its checkpoint
                grad, done = passes.backward(grad, need_dX or start > 0), start
                if passes.mode == "update":
                    self._stepped += tuple(passes.param_index)
        for i in range(done - 1, -1, -1):
            grad = layers[i]._backward(grad, need_dX or i > 0)
        return grad

    def engine_stepped(self):
        """The positions in ``params()`` of the parameters whose optimizer step the last
        backward pass took already: those of the engine's passes bound to the optimizer
        (``fastbp.engine.StackPasses.bind``), whose gradients stay in the engine; the step of the
        others is the caller's (``Optimizer.step(grads, skip=...)``).

        Returns
        -------
        tuple of int
            Empty after a backward pass that took no step (layer by layer, or passes that
            leave the gradients in ``grads()``).
        """
        return self._stepped

    def add_gradient_norms(self, out):
        """Add ||dW||_F of every Dense layer of the last backward pass to ``out``: from the
        engine for the layers whose step it took (their gradients stay in the engine), else from
        the layers' ``dW``.

        Parameters
        ----------
        out : ndarray of float64, shape (n_dense,)
            One entry per Dense layer, in order; added to in place.
        """
        norms = {}
        if self._stepped:
            for _, _, passes in self.engine_passes:
                if passes.mode == "update":
                    norms.update(zip(map(id, passes.dense), passes.grad_norms))
        for j, layer in enumerate(self.dense_layers):
            norm = norms.get(id(layer))
            out[j] += math.sqrt(float(np.vdot(layer.dW, layer.dW))) if norm is None else norm

    def _make_loss_buffer(self, n):
        return np.empty((n, self.n_outputs), self.dtype)

    def loss_and_grad(self, loss, X, Y, training=True, sample_weight=None):
        """Forward, loss and backward on one batch; the gradients land in ``grads()``.

        Parameters
        ----------
        loss : str
            One of ``fastbp.kernels.LOSSES``, computed from the network output (logits for the
            cross-entropies).
        X : array-like of shape (n, n_inputs)
            The batch.
        Y : array-like
            The targets, as ``fastbp.kernels.loss`` takes them: (n, n_outputs), or n integer
            labels for softmax cross-entropy.
        training : bool, default=True
            Training mode (dropout on).
        sample_weight : array-like of shape (n,) or None, default=None
            Weights >= 0, not all 0: the value is then the weighted mean
            sum_i w_i l_i / sum_i w_i (see :func:`row_weights`).

        Returns
        -------
        float
            The loss value, a (weighted) mean over the rows.

        Raises
        ------
        ValueError
            For an unknown loss, misshapen X or Y, or bad weights.
        """
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; expected one of {list(LOSSES)}")
        X = _as_input(X, self.dtype, self.n_inputs)
        Y = _as_target(loss, Y, self.dtype, X.shape[0], self.n_outputs)
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if (sample_weight.shape != (X.shape[0],) or not np.isfinite(sample_weight).all()
                    or (sample_weight < 0).any() or not sample_weight.sum() > 0):
                raise ValueError(f"sample_weight must be {X.shape[0]} finite weights >= 0, not "
                                 f"all 0, got shape {sample_weight.shape}")
        return self._loss_and_grad(loss, X, Y, training, sample_weight)

    def _objective(self, loss, X, Y, training, sample_weight=None):
        """Forward and loss on one batch: (the objective's value, its gradient with respect to the
        output, a buffer); weighted by ``sample_weight`` when given (:func:`row_weights`).
        Subclasses with extra terms in the objective extend this."""
        output = self._forward(X, training)
        grad = self._loss_cache.get(X.shape[0])
        value, _ = ops().loss(loss, output, Y, grad)
        if sample_weight is not None:
            v = row_weights(sample_weight)
            value = float(np.dot(v, row_losses(loss, output, Y))) / v.shape[0]
            grad *= v.astype(grad.dtype)[:, None]
        return value, grad

    def _loss_and_grad(self, loss, X, Y, training, sample_weight=None):
        value, grad = self._objective(loss, X, Y, training, sample_weight)
        self._backward(grad, False)
        return value

    def summary(self, print_fn=print):
        """Print a table of the layers (Keras' ``model.summary()``): kind, widths in -> out,
        activation, parameter count, and the total.

        Parameters
        ----------
        print_fn : callable, default print
            Called with each line (a str), in order.
        """
        rows = [("#", "layer", "in -> out", "activation", "parameters")]
        widths = self._widths()
        total = 0
        for i, layer in enumerate(self.layers):
            count = sum(int(np.size(getattr(layer, name))) for name in layer.param_names)
            total += count
            rows.append((str(i + 1), type(layer).__name__, f"{widths[i]} -> {widths[i + 1]}",
                         getattr(layer, "activation", None) or "-", f"{count:,}"))
        sizes = [max(len(row[j]) for row in rows) for j in range(5)]
        for row in rows:
            print_fn("  ".join(cell.rjust(size) if j in (0, 4) else cell.ljust(size)
                               for j, (cell, size) in enumerate(zip(row, sizes))).rstrip())
        print_fn(f"{total:,} parameters ({self.dtype.name})")

    def _widths(self):
        """The width of every layer's input, then the last one's output: a Dense layer fixes
        its widths, another layer passes on the next Dense layer's input width (or its own)."""
        widths = [self.n_inputs] + [None] * len(self.layers)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Dense):
                widths[i], widths[i + 1] = layer.n_in, layer.n_out
            else:
                following = next((later.n_in for later in self.layers[i + 1:]
                                  if isinstance(later, Dense)), None)
                widths[i + 1] = following if following is not None else widths[i]
        return widths

    def __repr__(self):
        inner = ",\n    ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n    {inner}])"


def row_weights(sample_weight, n=None, total=None):
    """The weights of a batch's rows scaled to mean 1: v_i = n w_i / sum_j w_j (float64).

    The weighted objective of a batch is the weighted mean sum_i w_i l_i / sum_i w_i = mean_i
    v_i l_i: its gradient with respect to the output is the unweighted one (l_i's gradient / n)
    with row i scaled by v_i -- backprop carries the scale to every layer, as the rows of a
    Dense layer are independent --, and a layer adding a per-row term to the objective (a
    penalty, ``row_weights`` attribute) weights its rows by v alike.  Unit weights give v = 1,
    the unweighted objective; integer weights give that of the batch with each row repeated
    w_i times.

    Parameters
    ----------
    sample_weight : array-like of shape (m,)
        The weights w >= 0 of a batch's rows, not all 0.
    n, total : int and float, optional
        The rows and the summed weight of the whole batch when ``sample_weight`` holds only some
        of its rows (a data-parallel rank's share); default: its own (m and sum w).  A whole
        batch of weight 0 gives v = 0.

    Returns
    -------
    ndarray of float64, shape (m,)
        v, with mean 1 over the whole batch.
    """
    w = np.asarray(sample_weight, dtype=np.float64)
    n = w.shape[0] if n is None else n
    total = w.sum() if total is None else total
    return w * (n / total) if total > 0 else np.zeros(w.shape[0])


def row_losses(loss, output, target):
    """The loss of every row, the terms whose mean ``fastbp.kernels.loss`` returns:
    1/2 ||o_i - t_i||^2 (squared_error), -sum_j t_ij log softmax(o_i)_j (softmax_cross_entropy;
    t_i a label or a row of probabilities) or sum_j softplus(o_ij) - t_ij o_ij
    (sigmoid_cross_entropy), from the logits o, in stable forms.

    Parameters
    ----------
    loss : str
        One of ``fastbp.kernels.LOSSES``.
    output : array-like of shape (n, k)
        The network's output o (logits for the cross-entropies).
    target : ndarray of shape (n, k), or (n,) of intp labels for softmax_cross_entropy
        The targets t.

    Returns
    -------
    ndarray of float64, shape (n,)
        The row losses.
    """
    o = np.asarray(output, dtype=np.float64)
    if loss == "squared_error":
        return 0.5 * np.sum((o - target) ** 2, axis=1)
    if loss == "sigmoid_cross_entropy":
        return np.sum(np.logaddexp(0.0, o) - target * o, axis=1)
    top = o.max(axis=1, keepdims=True)
    log_p = o - top - np.log(np.exp(o - top).sum(axis=1, keepdims=True))
    np.maximum(log_p, -np.finfo(np.float64).max, out=log_p)  # 0 * log 0 is 0, as the kernel's
    if target.ndim == 1:  # labels
        return -log_p[np.arange(o.shape[0]), target]
    return -np.sum(target * log_p, axis=1)


def _as_target(loss, Y, dtype, n, k):
    """Y as the kernels want it: intp labels (softmax CE with integer Y) or an n x k float matrix."""
    Y = np.asarray(Y)
    if loss == "softmax_cross_entropy" and Y.ndim == 1:
        if Y.dtype.kind not in "iu" or Y.shape[0] != n:
            raise ValueError(f"labels must be {n} integers, got dtype {Y.dtype} shape {Y.shape}")
        Y = np.ascontiguousarray(Y, dtype=np.intp)
        if n and (Y.min() < 0 or Y.max() >= k):
            raise ValueError(f"labels must lie in [0, {k})")
        return Y
    Y = np.ascontiguousarray(Y, dtype=dtype)
    if Y.shape != (n, k):
        raise ValueError(f"target must have shape {(n, k)}, got {Y.shape}")
    return Y


def make_mlp(n_inputs, hidden_layer_sizes, n_outputs, activation="relu", output_activation="identity",
             dropout=0.0, dtype=np.float32, rng=None, activation_alpha=None):
    """A multilayer perceptron d -> hidden... -> k as a Sequential, initialised like scikit-learn.

    Hidden Dense layers use ``activation``, the output layer ``output_activation``; when
    ``dropout`` > 0 a Dropout layer follows every hidden Dense layer (each with its own generator
    spawned from ``rng``).  The weights are drawn from ``rng`` layer by layer (W then b), with the
    Glorot factor of the hidden activation for every layer (2 for sigmoid, else 6).

    Parameters
    ----------
    n_inputs, n_outputs : int
        The sizes d and k.
    hidden_layer_sizes : sequence of int
        The hidden widths, input to output (empty: no hidden layer).
    activation : str, default='relu'
        The hidden layers' activation (one of ``fastbp.kernels.ACTIVATIONS``, or 'logistic').
    output_activation : str, default='identity'
        The output layer's.
    dropout : float, default=0.0
        Dropout rate after every hidden layer (0: no Dropout layers).
    dtype : numpy dtype, default=numpy.float32
        float32 or float64.
    rng : numpy.random.Generator, int or None, default=None
        Generator (or seed) of the weights.
    activation_alpha : float or None, default=None
        The hidden activation's parameter (leaky_relu slope, elu scale); None: its default.

    Returns
    -------
    Sequential
        The network.

    Raises
    ------
    ValueError
        For an unknown activation or bad sizes.
    """
    rng = np.random.default_rng(rng)
    activation = activation_name(activation)
    sizes = [int(n_inputs), *(int(h) for h in hidden_layer_sizes), int(n_outputs)]
    factor = 2.0 if activation == "sigmoid" else 6.0
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        hidden = i < len(sizes) - 2
        layers.append(Dense(n_in, n_out, activation if hidden else output_activation,
                            alpha=activation_alpha if hidden else None, dtype=dtype, rng=rng,
                            init_factor=factor))
        if hidden and dropout > 0:
            layers.append(Dropout(dropout, rng=rng.spawn(1)[0]))
    return Sequential(layers)
