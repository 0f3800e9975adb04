"""The public kernels: check the input once, then run the active backend (compiled or NumPy).

Every function accepts float32 or float64 arrays in any layout (non-contiguous, Fortran-ordered
and read-only inputs are copied to C order only where needed); the result has the input's dtype.
``out`` buffers, when given, must have the exact shape and dtype, be writeable and C-contiguous,
and are returned.  Which ``out`` may overlap which input is one table, ``fastbp.kernels._checks.ALIASES``:
the documented in-place uses (an activation with ``out=Z``, a loss gradient with ``out=output``,
...) work on the very same buffer; a product input (X, W, dY, ...) that an output overlaps is
read as it was before the call (copied first, as NumPy's matmul does); any other overlap raises
ValueError naming both arguments, on both backends.  Bad input raises TypeError (dtype) or
ValueError (anything else) before any compiled loop runs; see ``fastbp.kernels._checks``.

Shapes: X is n x d (one example per row), W is d x k, b has k entries (or is None: no bias);
Z = X W + b and A = f(Z).

Backends.  Each kernel runs the implementation the current thread or asyncio task chose
(``fastbp.use_backend``, see ``fastbp._backend``): its NumPy twin (``_reference``) or its compiled
op (``_compiled``).  The compiled backend is a set of ops: one that is missing (not compiled, or
in a compiled module that failed to import while others loaded) runs on its twin, with one
RuntimeWarning at its first call naming the op and the reason; ``implementations()`` tells which
runs.  ``ops()`` gives the current context's unchecked implementations, for the layers' hot paths.
"""
import inspect
import operator
import threading
import warnings
from types import SimpleNamespace

import numpy as np

from fastbp import _backend
from fastbp.kernels import _reference, registry
from fastbp.kernels._checks import (ACTIVATIONS, FLOAT_DTYPES, LOSSES, activation_alpha,
                                    class_labels, float_array, hyperparameter,
                                    loss_name, out_array, out_tuple, same_dtype, shapes_match,
                                    unaliased)

STEPS = tuple(registry.STEPS)  # the optimizer steps' names

# the kernels: one name per public function here, per twin in _reference, per compiled op
KERNELS = ("linear_forward", "linear_backward", "activation", "activation_grad", "dense_forward",
           "dense_backward", "loss", "step_update")
# and one public kernel per optimizer step of the registry: <name>_update (step_update for it)
__all__ = ["ACTIVATIONS", "LOSSES", "KERNELS", "STEPS", *KERNELS,
           *(f"{name}_update" for name in registry.STEPS), "implementations", "ops"]


def _compiled_table():
    """The compiled backend's ops, a twin in place of each missing one ({kernel: reason}), and why
    none is compiled (None when some is)."""
    try:
        from fastbp.kernels import _compiled
    except Exception as error:  # _compiled itself (it catches its compiled modules' errors)
        reason = f"{type(error).__name__}: {error}"
        return _reference, dict.fromkeys(KERNELS, reason), reason
    table, missing = SimpleNamespace(), {}
    for kernel in KERNELS:
        function, missing[kernel] = _compiled.find(kernel)
        setattr(table, kernel, function or _twin_saying_once(table, kernel, missing[kernel]))
    missing = {kernel: reason for kernel, reason in missing.items() if reason is not None}
    none = len(missing) == len(KERNELS)
    return table, missing, ("; ".join(dict.fromkeys(missing.values())) if none else None)


_said = threading.Lock()


def _twin_saying_once(table, kernel, reason):
    """The twin of a missing compiled op, which warns at its first call and then leaves the table
    (the twin itself takes its place: no cost after)."""
    twin = getattr(_reference, kernel)

    def first_call(*args):
        with _said:
            first = getattr(table, kernel) is first_call
            setattr(table, kernel, twin)
        if first:
            warnings.warn(f"fastbp: compiled kernel {kernel} is missing ({reason}); it runs on its "
                          f"NumPy twin", RuntimeWarning, stacklevel=3)
        return twin(*args)
    return first_call


_COMPILED, _MISSING, _NONE_COMPILED = _compiled_table()
_TABLES = {"numpy": _reference, "compiled": _COMPILED}
_get = _backend._choice.get


def ops():
    """The implementations the current thread or asyncio task runs, without the checks.

    For the layers' and optimizers' hot paths, whose arrays are trusted (made by the network).

    Returns
    -------
    object
        One function per name in ``KERNELS``, taking the twins' positional arguments
        (fastbp/kernels/_reference.py): the twins for ``'numpy'``; for ``'compiled'``, the
        compiled ops, with a twin for each missing one (see ``implementations``).
    """
    return _TABLES[_get(_backend.default)]  # inlined in the kernels below: a call costs ~25 ns


def implementations(backend=None):
    """Which implementation each kernel runs.

    Parameters
    ----------
    backend : {'compiled', 'numpy'} or None, default None
        The backend to describe; None: the current thread's or asyncio task's.

    Returns
    -------
    dict
        {kernel name (in ``KERNELS`` order): ``'compiled'``, ``'numpy'``, or ``'numpy (reason)'``
        for a compiled op that is missing (not compiled, or its compiled module failed to import;
        where no compiled kernel imports at all, every op has the reason)}.

    Raises
    ------
    ValueError
        For another backend name.
    """
    backend = _backend.backend() if backend is None else backend
    if backend not in _TABLES:
        raise ValueError(f"unknown backend {backend!r}; expected one of {_backend.BACKENDS}")
    if backend == "numpy":
        return dict.fromkeys(KERNELS, "numpy")
    return {k: f"numpy ({_MISSING[k]})" if k in _MISSING else "compiled" for k in KERNELS}


def _layer_inputs(X, W, b):
    X = float_array(X, "X", 2)
    W = float_array(W, "W", 2)
    same_dtype(X, "X", W, "W")
    shapes_match(X, "X", W, "W", 1, 0)
    if b is not None:
        b = float_array(b, "b", 1)
        same_dtype(X, "X", b, "b")
        shapes_match(W, "W", b, "b", 1, 0)
    return X, W, b


def linear_forward(X, W, b, out=None):
    """The linear map of a dense layer: Z = X @ W + b.

    The lecture's pre-activation a = (W^l)^T h^(l-1) ("CS771 Deep Learning III", slides 7 and
    17), one example per row of X: the product runs through BLAS (gemm) in the inputs' dtype.

    Parameters
    ----------
    X : array_like of float32 or float64, shape (n, d)
        The inputs, one example per row.
    W : array_like of X's dtype, shape (d, k)
        The weights: column j is unit j's weight vector.
    b : array_like of X's dtype, shape (k,), or None
        The biases; None: no bias.
    out : ndarray of X's dtype, shape (n, k), optional
        The result buffer (writeable, C-contiguous); may overlap X or W (they are read as
        before the call), not b.  Default None: a new array.

    Returns
    -------
    Z : ndarray of X's dtype, shape (n, k)
        ``out`` when given.

    Raises
    ------
    TypeError
        X is not float32/float64, or W, b or ``out`` has another dtype than X.
    ValueError
        X or W is not 2-D or b not 1-D; the shapes do not match (both named); ``out`` has the
        wrong shape, is read-only or not C-contiguous, or overlaps b.
    """
    X, W, b = _layer_inputs(X, W, b)
    out = out_array(out, "out", (X.shape[0], W.shape[1]), X.dtype)
    X, W, b = unaliased("linear_forward", dict(X=X, W=W, b=b), dict(out=out))
    return _TABLES[_get(_backend.default)].linear_forward(X, W, b, out)


def _backward_buffers(X, W, need_dX, out):
    dX, dW, db = out
    dX = out_array(dX, "dX", X.shape, X.dtype) if need_dX else None
    dW = out_array(dW, "dW", W.shape, X.dtype)
    db = out_array(db, "db", (W.shape[1],), X.dtype)
    return dX, dW, db


def _upstream(G, name, X, W):
    G = float_array(G, name, 2)
    same_dtype(X, "X", G, name)
    shapes_match(X, "X", G, name, 0, 0)
    shapes_match(W, "W", G, name, 1, 1)
    return G


def linear_backward(X, W, dY, need_dX=True, out=None):
    """The gradients of Y = X @ W + b given dY = dL/dY: dX = dY W^T, dW = X^T dY, db = sum_i dY_i.

    The chain rule through the linear map ("CS771 Deep Learning III", slides 15-19: dL/dW from
    dL/da and da/dW, the row convention for gradients), summed over the n rows; the products run
    through BLAS in the inputs' dtype.

    Parameters
    ----------
    X : array_like of float32 or float64, shape (n, d)
        The layer's inputs of the forward pass.
    W : array_like of X's dtype, shape (d, k)
        The weights.
    dY : array_like of X's dtype, shape (n, k)
        The gradient of the loss with respect to Y.
    need_dX : bool, default True
        Whether to compute dX (the first layer needs no gradient for its input).
    out : tuple of 3 ndarrays or None, optional
        (dX, dW, db) buffers of shapes (n, d), (d, k), (k,), any of them None (a new array).
        Each may overlap X, W or dY (read as before the call), not another buffer.

    Returns
    -------
    dX : ndarray of X's dtype, shape (n, d), or None
        None when ``need_dX`` is False.
    dW : ndarray of X's dtype, shape (d, k)
    db : ndarray of X's dtype, shape (k,)

    Raises
    ------
    TypeError
        A dtype that is not float32/float64 or differs from X's.
    ValueError
        Wrong dimensions or shapes (both named); ``out`` not a tuple of 3; a buffer of the
        wrong shape, read-only or not C-contiguous; buffers that overlap each other.
    """
    X, W, _ = _layer_inputs(X, W, None)
    dY = _upstream(dY, "dY", X, W)
    dX, dW, db = _backward_buffers(X, W, need_dX, out_tuple(out, 3))
    X, W, dY = unaliased("linear_backward", dict(X=X, W=W, dY=dY), dict(dX=dX, dW=dW, db=db))
    return _TABLES[_get(_backend.default)].linear_backward(X, W, dY, dX, dW, db)


def activation(name, Z, out=None, **params):
    """A = f(Z), elementwise (softmax: row-wise).

    The lecture's h = f(a) ("CS771 Deep Learning III", slide 7; softmax z_i = exp(t_i) /
    sum_j exp(t_j), slide 6).  Computed from forms that do not overflow at any finite z
    (softmax shifted by the row maximum; GELU as z Phi(z) through erfc); the formulas are the
    NumPy twins' (``fastbp.kernels._reference``).

    Parameters
    ----------
    name : str
        One of ``ACTIVATIONS``: identity, sigmoid, tanh, relu, leaky_relu, softplus, elu, gelu
        (exact, through the normal CDF), silu (z sigmoid(z), PyTorch's ``nn.SiLU``), softmax.
    Z : array_like of float32 or float64, shape (n, k)
        The pre-activations.
    out : ndarray of Z's dtype, shape (n, k), optional
        The result buffer; may be Z itself (in place), not a part of it.  Default None: a new
        array.
    **params
        ``alpha`` (float, finite) for leaky_relu (the slope for z < 0, default 0.01) and elu
        (the limit -alpha for z -> -inf, default 1.0); no other activation takes a parameter.

    Returns
    -------
    A : ndarray of Z's dtype, shape (n, k)
        ``out`` when given.

    Raises
    ------
    TypeError
        Z is not float32/float64, or ``out`` has another dtype.
    ValueError
        An unknown activation, a parameter it does not take, a non-finite alpha; Z not 2-D;
        ``out`` of the wrong shape, read-only, not C-contiguous, or overlapping Z without being
        Z.
    """
    alpha = activation_alpha(name, params)
    Z = float_array(Z, "Z", 2)
    out = out_array(out, "out", Z.shape, Z.dtype)
    Z, = unaliased("activation", dict(Z=Z), dict(out=out))
    return _TABLES[_get(_backend.default)].activation(name, Z, out, alpha)


def _same_shape(first, first_name, other, other_name):
    other = float_array(other, other_name, 2)
    same_dtype(first, first_name, other, other_name)
    if other.shape != first.shape:
        raise ValueError(f"shapes do not match: {first_name} {first.shape} vs {other_name} {other.shape}")
    return other


def activation_grad(name, Z, A, dA, out=None, **params):
    """dL/dZ = f'(Z) * dL/dA, given Z, A = f(Z) and dA.

    The lecture's dh/da = diag(f'(a)) ("CS771 Deep Learning III", slides 17-19) applied to the
    upstream gradient, elementwise.  For softmax it is the Jacobian-vector product
    A * (dA - <dA, A>) row by row, not a diagonal.

    Parameters
    ----------
    name : str
        One of ``ACTIVATIONS`` (see ``activation``).
    Z : array_like of float32 or float64, shape (n, k)
        The pre-activations.
    A : array_like of Z's dtype, shape (n, k)
        f(Z), as ``activation`` returned it (sigmoid's, tanh's and softmax's derivatives are
        read from A).
    dA : array_like of Z's dtype, shape (n, k)
        The gradient of the loss with respect to A.
    out : ndarray of Z's dtype, shape (n, k), optional
        The result buffer; may be dA itself, must not overlap Z or A.  Default None: a new
        array.
    **params
        ``alpha`` for leaky_relu and elu, as for ``activation``.

    Returns
    -------
    dZ : ndarray of Z's dtype, shape (n, k)
        ``out`` when given.

    Raises
    ------
    TypeError
        A dtype that is not float32/float64 or differs from Z's.
    ValueError
        An unknown activation or parameter; shapes that differ from Z's (both named); ``out``
        of the wrong shape, read-only, not C-contiguous, overlapping Z or A, or overlapping dA
        without being dA.
    """
    alpha = activation_alpha(name, params)
    Z = float_array(Z, "Z", 2)
    A = _same_shape(Z, "Z", A, "A")
    dA = _same_shape(Z, "Z", dA, "dA")
    out = out_array(out, "out", Z.shape, Z.dtype)
    Z, A, dA = unaliased("activation_grad", dict(Z=Z, A=A, dA=dA), dict(out=out))
    return _TABLES[_get(_backend.default)].activation_grad(name, Z, A, dA, out, alpha)


def dense_forward(X, W, b, activation="identity", out=None, **params):
    """Fused dense layer: Z = X @ W + b and A = f(Z) in one pass over the output.

    ``linear_forward`` then ``activation`` ("CS771 Deep Learning III", slide 7:
    h^l = f((W^l)^T h^(l-1))), with the activation applied while Z is in cache.

    Parameters
    ----------
    X : array_like of float32 or float64, shape (n, d)
        The inputs, one example per row.
    W : array_like of X's dtype, shape (d, k)
        The weights.
    b : array_like of X's dtype, shape (k,), or None
        The biases; None: no bias.
    activation : str, default 'identity'
        One of ``ACTIVATIONS`` (see ``activation``).
    out : tuple of 2 ndarrays or None, optional
        (Z, A) buffers of shape (n, k), any of them None (a new array): A may be Z itself (then
        Z holds A on return); both may overlap X or W (read as before the call), neither b.
    **params
        ``alpha`` for leaky_relu and elu, as for ``activation``.

    Returns
    -------
    Z : ndarray of X's dtype, shape (n, k)
        The pre-activations.
    A : ndarray of X's dtype, shape (n, k)
        f(Z).

    Raises
    ------
    TypeError
        A dtype that is not float32/float64 or differs from X's.
    ValueError
        An unknown activation or parameter; wrong dimensions or shapes (both named); ``out``
        not a tuple of 2; a buffer of the wrong shape, read-only, not C-contiguous, or
        overlapping b or (partly) the other buffer.
    """
    alpha = activation_alpha(activation, params)
    X, W, b = _layer_inputs(X, W, b)
    Z, A = out_tuple(out, 2)
    shape = (X.shape[0], W.shape[1])
    Z = out_array(Z, "Z", shape, X.dtype)
    A = out_array(A, "A", shape, X.dtype)
    X, W, b = unaliased("dense_forward", dict(X=X, W=W, b=b), dict(Z=Z, A=A))
    return _TABLES[_get(_backend.default)].dense_forward(activation, X, W, b, Z, A, alpha)


def dense_backward(X, W, Z, A, dA, activation="identity", need_dX=True, out=None, **params):
    """Fused backward of a dense layer: the activation's derivative folded into the linear
    backward.

    dZ = f'(Z) * dA (``activation_grad``), then dX = dZ W^T, dW = X^T dZ, db = sum_i dZ_i
    (``linear_backward``): one layer of backprop ("CS771 Deep Learning III", slides 15-19).

    Parameters
    ----------
    X : array_like of float32 or float64, shape (n, d)
        The layer's inputs of the forward pass.
    W : array_like of X's dtype, shape (d, k)
        The weights.
    Z : array_like of X's dtype, shape (n, k)
        The pre-activations of the forward pass.
    A : array_like of X's dtype, shape (n, k)
        f(Z) of the forward pass.
    dA : array_like of X's dtype, shape (n, k)
        The gradient of the loss with respect to A.
    activation : str, default 'identity'
        One of ``ACTIVATIONS``: the forward pass's.
    need_dX : bool, default True
        Whether to compute dX (the first layer needs none).
    out : tuple of 4 ndarrays or None, optional
        (dX, dW, db, dZ) buffers of shapes (n, d), (d, k), (k,), (n, k), any of them None (a
        new array).  dZ is a workspace and may be dA itself; dX, dW and db may overlap the
        inputs (read as before the call); any other overlap is refused.
    **params
        ``alpha`` for leaky_relu and elu, as for ``activation``.

    Returns
    -------
    dX, dW, db
        As :func:`linear_backward`'s (dX None when ``need_dX`` is False).

    Raises
    ------
    TypeError
        A dtype that is not float32/float64 or differs from X's.
    ValueError
        An unknown activation or parameter; wrong dimensions or shapes (both named); ``out``
        not a tuple of 4; a buffer of the wrong shape, read-only or not C-contiguous; an
        overlap the rules above do not allow.
    """
    alpha = activation_alpha(activation, params)
    X, W, _ = _layer_inputs(X, W, None)
    dA = _upstream(dA, "dA", X, W)
    Z = _same_shape(dA, "dA", Z, "Z")
    A = _same_shape(dA, "dA", A, "A")
    buffers = out_tuple(out, 4)
    dX, dW, db = _backward_buffers(X, W, need_dX, buffers[:3])
    dZ = out_array(buffers[3], "dZ", dA.shape, X.dtype)
    X, W, Z, A, dA = unaliased("dense_backward", dict(X=X, W=W, Z=Z, A=A, dA=dA),
                               dict(dX=dX, dW=dW, db=db, dZ=dZ))
    return _TABLES[_get(_backend.default)].dense_backward(activation, X, W, Z, A, dA, dZ, dX, dW,
                                                          db, alpha)


def loss(name, output, target, out=None):
    """The loss of a batch of n rows and its gradient; the value is a mean over rows.

    - squared_error: 1/(2n) sum_i ||o_i - t_i||^2 (summed over the k outputs); gradient
      (o - t) / n.
    - softmax_cross_entropy: -1/n sum_i sum_j t_ij log softmax(o_i)_j from logits (the
      lecture's multiclass output, "CS771 Deep Learning III", slide 6); gradient
      (softmax(o) - t) / n.
    - sigmoid_cross_entropy: 1/n sum_ij [softplus(o_ij) - t_ij o_ij], multilabel, from logits;
      gradient (sigmoid(o) - t) / n.

    Stable for logits of any finite size (log-sum-exp and softplus shifted); n = 0 gives 0.

    Parameters
    ----------
    name : str
        One of ``LOSSES``.
    output : array_like of float32 or float64, shape (n, k)
        The network's output (logits for the cross-entropies).
    target : array_like, shape (n, k), or shape (n,) of integers
        Of output's dtype and shape: the targets (softmax_cross_entropy: rows of probabilities,
        e.g. one-hot; sigmoid_cross_entropy: entries in [0, 1]); for softmax_cross_entropy
        also a 1-D array of integer class labels in [0, k).
    out : ndarray of output's dtype, shape (n, k), optional
        The gradient buffer; may be ``output`` itself, must not overlap ``target``.  Default
        None: a new array.

    Returns
    -------
    value : float
        The mean loss over the n rows.
    grad : ndarray of output's dtype, shape (n, k)
        dL/d(output) of that mean (``out`` when given).

    Raises
    ------
    TypeError
        output is not float32/float64, or target (a matrix) or ``out`` has another dtype.
    ValueError
        An unknown loss; output not 2-D; a target of another shape (both named); labels out of
        [0, k) or softmax_cross_entropy with k = 0; ``out`` of the wrong shape, read-only, not
        C-contiguous, overlapping target, or overlapping output without being output.
    """
    loss_name(name)
    output = float_array(output, "output", 2)
    n, k = output.shape
    if type(target) is not np.ndarray:
        target = np.asarray(target)
    if name == "softmax_cross_entropy" and k == 0 and n > 0:
        raise ValueError("softmax_cross_entropy needs at least one output (class), got shape "
                         f"{output.shape}")
    if name == "softmax_cross_entropy" and target.dtype.kind in "iub":
        target = class_labels(target, n, k)
    else:
        target = _same_shape(output, "output", target, "target")
    grad = out_array(out, "out", output.shape, output.dtype)
    output, target = unaliased("loss", dict(output=output, target=target), dict(out=grad))
    return _TABLES[_get(_backend.default)].loss(name, output, target, grad)


def _param_set(param, others):
    """The parameter (updated in place, so it must be a writeable float array) and its companions
    (gradient and optimizer state, same shape and dtype; state buffers must be writeable too)."""
    if type(param) is not np.ndarray or param.dtype not in FLOAT_DTYPES:
        raise TypeError("param must be a float32 or float64 NumPy array")
    if not param.flags.writeable:
        raise ValueError("param is read-only")
    work = param if param.flags.c_contiguous and param.flags.aligned else np.array(param, order="C")
    checked = []
    for array, name, writeable in others:
        if array is None:
            checked.append(None)
            continue
        if writeable:
            array = out_array(array, name, param.shape, param.dtype)
        else:
            array = _same_nd(work, array, name)
        checked.append(array)
    return work, checked


def _same_nd(param, array, name):
    array = float_array(array, name, param.ndim)
    same_dtype(param, "param", array, name)
    if array.shape != param.shape:
        raise ValueError(f"shapes do not match: param {param.shape} vs {name} {array.shape}")
    return array


def step_update(name, param, grad, *states, step=None, **hyper):
    """In place: one step of the optimizer ``name`` on ``param`` and its state arrays.

    The same as ``<name>_update`` (``sgd_update``, ``adam_update``, ``rmsprop_update``), whose
    docstrings give each step's formula and its source; the lecture's gradient-descent update
    w <- w - eta dF/dw ("CS771 Deep Learning III", slide 14) is ``sgd_update`` without momentum.
    Each entry is computed in param's dtype by the compiled step, or in float64 and rounded once
    by the NumPy twin.

    Parameters
    ----------
    name : str
        A ``STEPS`` name (the registry's, ``fastbp.kernels.registry.STEPS``): 'sgd', 'adam',
        'rmsprop'.
    param : ndarray of float32 or float64, any shape
        Updated in place (a non-contiguous or misaligned one through a copy); writeable.
    grad : array_like of param's shape and dtype
        The gradient of the loss with respect to param (without the weight-decay term).
    *states : ndarrays of param's shape and dtype, writeable, C-contiguous, or None
        The step's state arrays in the registry's order (start at zero); each is needed when
        always kept or when the hyperparameter that asks for it is true or > 0 (ValueError if
        missing), checked when given, and left alone when not needed.
    step : int >= 1, optional
        This update's count (t of Adam's bias correction); required by the steps that count,
        refused by the others.
    **hyper
        The step's hyperparameters by name; missing ones take the registry's defaults.

    Returns
    -------
    None
        param and the state arrays are updated in place.

    Raises
    ------
    TypeError
        A non-float dtype, buffers whose dtype differs from param's, an unknown hyperparameter
        or one that is no real number, more state arrays than the step keeps, a missing ``step`` for a step that counts (or one
        given to a step that does not), a non-integer ``step``.
    ValueError
        An unknown step, a hyperparameter outside its domain, ``step`` < 1, a missing state
        array, a shape mismatch, a read-only param, a read-only or non-contiguous state array,
        or any overlap of param, grad and the state arrays.
    """
    entry = registry.STEPS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"unknown optimizer step {name!r}; expected one of {STEPS}")
    kernel = f"{name}_update"
    names = [h.name for h in entry.hyper]
    unknown = set(hyper) - set(names)
    if unknown:
        raise TypeError(f"{kernel} got unknown hyperparameters {sorted(unknown)}")
    if len(states) > len(entry.state):
        raise TypeError(f"{kernel} takes {len(entry.state)} state arrays "
                        f"({', '.join(entry.state)}), got {len(states)}")
    if entry.counts_steps:
        if step is None:
            raise TypeError(f"{kernel} needs step=t, the count of this update (t >= 1)")
        step = operator.index(step)
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
    elif step is not None:
        raise TypeError(f"{kernel} takes no step count")
    states = states + (None,) * (len(entry.state) - len(states))
    values = {h.name: hyperparameter(h, hyper.get(h.name, h.default))
              for h in entry.hyper if not h.domain.startswith("[tiny")}
    needed = [wanted_by is None or values[wanted_by] for wanted_by in entry.state.values()]
    for (state, wanted_by), array, need in zip(entry.state.items(), states, needed):
        if need and array is None:
            raise ValueError(f"{kernel} needs the {state} buffer (an array of param's shape)"
                             + ("" if wanted_by is None else f" when {wanted_by} is set"))
    work, checked = _param_set(param, [(grad, "grad", False),
                                       *((a, s, True) for a, s in zip(states, entry.state))])
    for h in entry.hyper:  # the eps-like bounds depend on param's dtype
        if h.domain.startswith("[tiny"):
            values[h.name] = hyperparameter(h, hyper.get(h.name, h.default), work.dtype)
    grad, = unaliased(kernel, dict(grad=checked[0]),
                      dict(param=work, **dict(zip(entry.state, checked[1:]))))
    states = tuple(a if need else None for a, need in zip(checked[1:], needed))
    _TABLES[_get(_backend.default)].step_update(name, work, grad, states,
                                                tuple(values[n] for n in names), step or 1)
    if work is not param:
        param[...] = work


def _named_step(name):
    """``fastbp.kernels.<name>_update``: step_update for one step, its signature and docstring
    made from the registry and the twin."""
    entry = registry.STEPS[name]

    def update(*args, **kwargs):
        try:
            given = update.__signature__.bind(*args, **kwargs).arguments
        except TypeError as error:  # Python's words, with the kernel's name
            raise TypeError(f"{update.__name__}(): {error}") from None
        return step_update(name, given.pop("param"), given.pop("grad"),
                           *(given.pop(s, None) for s in entry.state), **given)

    states = [inspect.Parameter(s, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default=inspect.Parameter.empty if wanted_by is None else None)
              for s, wanted_by in entry.state.items()]
    counts = [inspect.Parameter("step", inspect.Parameter.KEYWORD_ONLY)] if entry.counts_steps else []
    hyper = [inspect.Parameter(h.name, inspect.Parameter.KEYWORD_ONLY, default=h.default)
             for h in entry.hyper]
    update.__signature__ = inspect.Signature(
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("param", "grad")]
        + states + counts + hyper)
    update.__name__ = update.__qualname__ = f"{name}_update"
    lines = [f"In place: one {name} step on ``param`` and its state arrays.", "",
             f"``step_update('{name}', ...)`` with this step's arguments by name.  The formula and "
             "its source: the NumPy twin's, in Notes below; the meaning of each hyperparameter: "
             "the ``fastbp.optim`` class of this step.", "",
             "Parameters", "----------",
             "param : ndarray of float32 or float64, any shape",
             "    Updated in place (a non-contiguous or misaligned one through a copy); writeable.",
             "grad : array_like of param's shape and dtype",
             "    The gradient of the loss with respect to param (without the weight-decay term)."]
    by_name = {h.name: h for h in entry.hyper}
    for s, wanted_by in entry.state.items():
        lines += [f"{s} : ndarray of param's shape and dtype, writeable, C-contiguous"
                  + ("" if wanted_by is None else ", or None"),
                  "    State, updated in place (starts at zero)"
                  + ("." if wanted_by is None else
                     f"; needed when ``{wanted_by}`` is "
                     + ("True" if by_name[wanted_by].domain == "bool" else "> 0")
                     + " (ValueError if None then), left alone otherwise.")]
    if entry.counts_steps:
        lines += ["step : int >= 1", "    This update's count t (keyword only)."]
    for h in entry.hyper:
        lines += [f"{h.name} : {'bool' if h.domain == 'bool' else 'float in ' + h.domain}, "
                  f"default {h.default!r}",
                  f"    Keyword only: {h.name} of the formula (Notes)"
                  + (", the L2 coefficient: the step uses grad + weight_decay * param."
                     if h.name == "weight_decay" else ".")]
        if "tiny" in h.domain:
            lines += ["    tiny: the smallest normal number of param's dtype (a smaller value "
                      "vanishes in the divisor)."]
    twin = inspect.cleandoc(getattr(_reference, f"{name}_update").__doc__)
    lines += ["", "Returns", "-------", "None", "    param and the state arrays are updated in place.",
              "", "Raises", "------",
              "TypeError", "    A non-float dtype, arrays whose dtype differs from param's, an "
              "unknown hyperparameter or argument, a hyperparameter that is no real number" + (", a missing or non-integer ``step``"
                                                     if entry.counts_steps else "") + ".",
              "ValueError", "    A hyperparameter outside its domain"
              + (", ``step`` < 1" if entry.counts_steps else "") + ", a missing state array, a "
              "shape mismatch, a read-only param, a read-only or non-contiguous state array, or "
              "any overlap of param, grad and the state arrays (as ``step_update``).", "",
              "Notes", "-----", "The NumPy twin's formula (``fastbp.kernels._reference``), the "
              "specification the compiled step is held to::", "",
              *("    " + line for line in twin.splitlines())]
    update.__doc__ = "\n".join(lines)
    return update


for _name in registry.STEPS:
    globals()[f"{_name}_update"] = _named_step(_name)

_backend.register_compiled(_NONE_COMPILED)  # last: the start may raise (FASTBP_BACKEND)
