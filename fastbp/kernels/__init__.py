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
import operator
import threading
import warnings
from types import SimpleNamespace

import numpy as np

from fastbp import _backend
from fastbp.kernels import _reference
from fastbp.kernels._checks import (ACTIVATIONS, FLOAT_DTYPES, LOSSES, activation_alpha, class_labels, finite_scalar,
                      float_array, loss_name, out_array, out_tuple, same_dtype, shapes_match,
                      unaliased)

# the kernels: one name per public function here, per twin in _reference, per compiled op
KERNELS = ("linear_forward", "linear_backward", "activation", "activation_grad", "dense_forward",
           "dense_backward", "loss", "sgd_update", "adam_update", "rmsprop_update")
__all__ = ["ACTIVATIONS", "LOSSES", "KERNELS", *KERNELS, "implementations", "ops"]


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
    """Z = X @ W + b (n x k).  ``out`` may overlap X or W (read as before the call), not b."""
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
    """Gradients of Y = X @ W + b given dY = dL/dY: returns (dX, dW, db).

    dX is None when ``need_dX`` is False (the first layer needs no gradient for its input).
    ``out`` = (dX, dW, db) buffers, any of them None; each may overlap X, W or dY (read as
    before the call), not another buffer (ValueError).
    """
    X, W, _ = _layer_inputs(X, W, None)
    dY = _upstream(dY, "dY", X, W)
    dX, dW, db = _backward_buffers(X, W, need_dX, out_tuple(out, 3))
    X, W, dY = unaliased("linear_backward", dict(X=X, W=W, dY=dY), dict(dX=dX, dW=dW, db=db))
    return _TABLES[_get(_backend.default)].linear_backward(X, W, dY, dX, dW, db)


def activation(name, Z, out=None, **params):
    """A = f(Z), elementwise (softmax: row-wise).  ``out`` may be Z itself (in place), not a part
    of it (ValueError).

    Parameters: ``alpha`` for leaky_relu (slope for z < 0, default 0.01) and elu (default 1.0).
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
    """dL/dZ = f'(Z) * dL/dA, given Z, A = f(Z) and dA.  For softmax this is the Jacobian-vector
    product A * (dA - <dA, A>) row by row, not a diagonal.  ``out`` may be dA itself, and must not
    overlap Z or A (ValueError)."""
    alpha = activation_alpha(name, params)
    Z = float_array(Z, "Z", 2)
    A = _same_shape(Z, "Z", A, "A")
    dA = _same_shape(Z, "Z", dA, "dA")
    out = out_array(out, "out", Z.shape, Z.dtype)
    Z, A, dA = unaliased("activation_grad", dict(Z=Z, A=A, dA=dA), dict(out=out))
    return _TABLES[_get(_backend.default)].activation_grad(name, Z, A, dA, out, alpha)


def dense_forward(X, W, b, activation="identity", out=None, **params):
    """Fused dense layer: Z = X @ W + b and A = f(Z) in one pass over the output; returns (Z, A).

    ``out`` = (Z, A) buffers, any of them None: A may be Z itself, both may overlap X or W (read
    as before the call), neither b (ValueError).
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
    backward.  Returns (dX, dW, db); ``out`` = (dX, dW, db, dZ) buffers (dZ is a workspace and
    may be dA itself), any of them None.  dX, dW and db may overlap the inputs (read as before the
    call); any other overlap is a ValueError."""
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
    """Return (value, dL/d(output)) for a batch of n rows; the value is a mean over rows.

    - squared_error: 1/(2n) sum_i ||o_i - t_i||^2 (summed over the k outputs).
    - softmax_cross_entropy: from logits; target is a 1-D array of integer class labels in
      [0, k), or an n x k matrix of probabilities (one-hot).
    - sigmoid_cross_entropy: from logits, multilabel; target is an n x k 0/1 (or [0, 1]) matrix.

    Stable for logits of any finite size.  ``out`` is the gradient buffer: it may be ``output``
    itself, and must not overlap ``target`` (ValueError).
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


def sgd_update(param, grad, velocity=None, *, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """In-place SGD step with optional (Nesterov) momentum and L2 decay (see the NumPy twin's
    docstring for the formula).  ``velocity`` (same shape as param) is required when momentum > 0.
    param, grad and velocity must not overlap (ValueError)."""
    lr = finite_scalar(lr, "lr", 0.0)
    momentum = finite_scalar(momentum, "momentum", 0.0)
    weight_decay = finite_scalar(weight_decay, "weight_decay", 0.0)
    if momentum > 0 and velocity is None:
        raise ValueError("momentum > 0 needs a velocity buffer")
    work, (grad, velocity) = _param_set(param, [(grad, "grad", False),
                                                (velocity, "velocity", True)])
    grad, = unaliased("sgd_update", dict(grad=grad), dict(param=work, velocity=velocity))
    velocity = velocity if momentum > 0 else None  # checked when given, used with momentum
    _TABLES[_get(_backend.default)].sgd_update(work, grad, velocity, lr, momentum, bool(nesterov),
                                               weight_decay)
    if work is not param:
        param[...] = work


def adam_update(param, grad, m, v, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0):
    """In-place Adam step with bias correction; ``step`` = t >= 1 counts this update; m and v are
    the first and second moment buffers (same shape as param, start at zero).  param, grad, m and
    v must not overlap (ValueError)."""
    step = operator.index(step)
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    lr = finite_scalar(lr, "lr", 0.0)
    eps = finite_scalar(eps, "eps", 0.0)
    if eps == 0:
        raise ValueError("eps must be > 0 (Adam divides by sqrt(v) + eps)")
    if m is None or v is None:
        raise ValueError("adam_update needs the m and v buffers (arrays of param's shape)")
    weight_decay = finite_scalar(weight_decay, "weight_decay", 0.0)
    for value, name in ((beta1, "beta1"), (beta2, "beta2")):
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    work, (grad, m, v) = _param_set(param, [(grad, "grad", False), (m, "m", True), (v, "v", True)])
    grad, = unaliased("adam_update", dict(grad=grad), dict(param=work, m=m, v=v))
    _TABLES[_get(_backend.default)].adam_update(work, grad, m, v, step, lr, float(beta1),
                                                float(beta2), eps, weight_decay)
    if work is not param:
        param[...] = work



def rmsprop_update(param, grad, square_avg, grad_avg=None, momentum_buffer=None, *, lr=0.01,
                   alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    """In-place RMSprop step with PyTorch's semantics (``torch.optim.RMSprop``; see the NumPy
    twin's docstring for the formula).

    Parameters
    ----------
    param : float32 or float64 array, any shape
        Updated in place.
    grad : array of param's shape and dtype
    square_avg : array of param's shape and dtype, writeable, C-contiguous
        The running mean of the squared gradient (starts at zero), updated in place.
    grad_avg : array like square_avg, or None
        The running mean of the gradient; required when ``centered``, unused otherwise.
    momentum_buffer : array like square_avg, or None
        Required when ``momentum > 0``, unused otherwise.
    lr : float >= 0, default 0.01
        0 leaves param unchanged (the state buffers still update).
    alpha : float in [0, 1), default 0.99
        Smoothing constant of the running means.
    eps : float > 0, default 1e-8
        Added to the root mean square (the divisor); at least the smallest normal number of
        param's dtype.
    weight_decay : float >= 0, default 0
        The step uses ``grad + weight_decay * param``.
    momentum : float >= 0, default 0
    centered : bool, default False
        Divide by the root of the estimated variance, ``square_avg - grad_avg**2``.

    Raises
    ------
    TypeError
        A non-float dtype, or buffers whose dtype differs from param's.
    ValueError
        A hyperparameter out of range, a missing buffer, a shape mismatch, a read-only or
        non-contiguous state buffer, or any overlap of param, grad and the buffers.
    """
    lr = finite_scalar(lr, "lr", 0.0)
    eps = finite_scalar(eps, "eps", 0.0)
    if eps == 0:
        raise ValueError("eps must be > 0 (RMSprop divides by sqrt(square_avg) + eps)")
    weight_decay = finite_scalar(weight_decay, "weight_decay", 0.0)
    momentum = finite_scalar(momentum, "momentum", 0.0)
    alpha = finite_scalar(alpha, "alpha", 0.0)
    if alpha >= 1:
        raise ValueError(f"alpha must be in [0, 1), got {alpha}")
    centered = bool(centered)
    for needed, array, name in ((True, square_avg, "square_avg"), (centered, grad_avg, "grad_avg"),
                                (momentum > 0, momentum_buffer, "momentum_buffer")):
        if needed and array is None:
            raise ValueError(f"rmsprop_update needs the {name} buffer (an array of param's shape)"
                             + ("" if name == "square_avg" else
                                " when " + ("centered" if name == "grad_avg" else "momentum > 0")))
    work, (grad, square_avg, grad_avg, momentum_buffer) = _param_set(
        param, [(grad, "grad", False), (square_avg, "square_avg", True), (grad_avg, "grad_avg", True),
                (momentum_buffer, "momentum_buffer", True)])
    tiny = float(np.finfo(work.dtype).tiny)
    if eps < tiny:
        raise ValueError(f"eps must be >= {tiny} for {work.dtype} params (a smaller eps vanishes "
                         f"in the divisor), got {eps}")
    grad, = unaliased("rmsprop_update", dict(grad=grad),
                      dict(param=work, square_avg=square_avg, grad_avg=grad_avg,
                           momentum_buffer=momentum_buffer))
    # checked when given, used when needed (as sgd_update's velocity)
    grad_avg = grad_avg if centered else None
    momentum_buffer = momentum_buffer if momentum > 0 else None
    _TABLES[_get(_backend.default)].rmsprop_update(work, grad, square_avg, grad_avg,
                                                   momentum_buffer, lr, alpha, eps, weight_decay,
                                                   momentum)
    if work is not param:
        param[...] = work


_backend.register_compiled(_NONE_COMPILED)  # last: the start may raise (FASTBP_BACKEND)
