"""Input checks shared by both backends: run before any kernel, so no unchecked C loop sees bad input.

Exception types: TypeError for a dtype that is not float32/float64 or that disagrees with the
others; ValueError for everything else (dimensions, shapes -- both named in the message --, out
buffers that are read-only or not C-contiguous, unknown names, labels out of range).
"""
import math

import numpy as np

from fastbp.kernels import registry

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_F32, _F64 = FLOAT_DTYPES  # NumPy hands out these very objects for native arrays: `is` is enough

# Activation name -> default of its one parameter ``alpha`` (None: takes no parameter), and the
# loss names: from the one table, fastbp/kernels/registry.py.
ACTIVATIONS = {name: entry.alpha for name, entry in registry.ACTIVATIONS.items()}
LOSSES = tuple(registry.LOSSES)


def float_array(x, name, ndim):
    """``x`` as a C-contiguous float32/float64 array of ``ndim`` dimensions (copied only if needed)."""
    if type(x) is not np.ndarray:
        x = np.asarray(x)
    dtype = x.dtype
    if dtype is not _F32 and dtype is not _F64 and dtype not in FLOAT_DTYPES:
        if x.dtype.kind != "f" or x.dtype.newbyteorder("=") not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
        x = x.astype(x.dtype.newbyteorder("="))  # a byte-swapped float: native copy
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    flags = x.flags
    if not (flags.c_contiguous and flags.aligned):
        x = np.array(x, order="C")  # a fresh copy is aligned; ascontiguousarray may not be
    return x


def same_dtype(a, a_name, b, b_name):
    """TypeError unless ``b`` has ``a``'s dtype."""
    if b.dtype != a.dtype:
        raise TypeError(f"{b_name} has dtype {b.dtype} but {a_name} has {a.dtype}")


def shapes_match(a, a_name, b, b_name, a_axis, b_axis):
    if a.shape[a_axis] != b.shape[b_axis]:
        raise ValueError(
            f"shapes do not match: {a_name} {a.shape} (axis {a_axis}) vs {b_name} {b.shape} (axis {b_axis})")


def out_array(out, name, shape, dtype):
    """A writeable C-contiguous result buffer: ``out`` checked, or a new one when it is None."""
    if out is None:
        return np.empty(shape, dtype)
    if type(out) is not np.ndarray:
        raise ValueError(f"{name} must be a NumPy array, got {type(out).__name__}")
    if out.dtype is not dtype and out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {dtype}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    flags = out.flags
    if not flags.carray:  # C-contiguous, aligned and writeable, in one test
        if not flags.writeable:
            raise ValueError(f"{name} is read-only")
        raise ValueError(f"{name} must be C-contiguous and aligned")
    return out


def out_tuple(out, count, name="out"):
    """``out`` as a tuple of ``count`` buffers (entries may be None)."""
    if out is None:
        return (None,) * count
    if not isinstance(out, (tuple, list)) or len(out) != count:
        raise ValueError(f"{name} must be a tuple of {count} arrays (or None entries)")
    return tuple(out)


def activation_alpha(name, params):
    """The activation's ``alpha`` from ``params`` (or its default); ValueError for unknown names."""
    try:
        default = ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None
    if not params:
        return 0.0 if default is None else default
    unexpected = set(params) - ({"alpha"} if default is not None else set())
    if unexpected:
        raise ValueError(f"activation {name!r} takes no parameter(s) {sorted(unexpected)}")
    alpha = float(params["alpha"])
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    return alpha


def loss_name(name):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {list(LOSSES)}")
    return name


def class_labels(target, n, k):
    """1-D integer labels as a C-contiguous intp array, each in [0, k)."""
    if target.ndim != 1 or target.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {target.shape}")
    labels = np.require(target, np.intp, "CA")
    if n and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k}), got range [{labels.min()}, {labels.max()}]")
    return labels


def finite_scalar(value, name, low=None):
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low):
        raise ValueError(f"{name} must be a finite number" + (f" >= {low}" if low is not None else "")
                         + f", got {value}")
    return value


def hyperparameter(entry, value, dtype=None):
    """``value`` of an optimizer step's hyperparameter (a registry.Hyper: name, default, domain)
    checked against its domain: "bool" (any truth value), or an interval such as "[0, 1)" of
    finite numbers, whose bound "tiny" is the smallest normal number of ``dtype`` (a smaller eps
    vanishes in the divisor: 0 / 0), or just > 0 without a dtype.  ValueError naming it (TypeError
    for a value that is no real number)."""
    if entry.domain == "bool":
        return bool(value)
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{entry.name} must be a real number, got {value!r}") from None
    low, high = (part.strip() for part in entry.domain[1:-1].split(","))
    closed_low = entry.domain[0] == "["
    if low == "tiny":
        low, closed_low = (float(np.finfo(dtype).tiny), True) if dtype is not None else (0.0, False)
    low, high = float(low), float(high)
    if not (math.isfinite(value) and (value >= low if closed_low else value > low)
            and (value <= high if entry.domain[-1] == "]" else value < high)):
        shown = f"{'[' if closed_low else '('}{low:g}, {high:g}{entry.domain[-1]}"
        where = f" for {np.dtype(dtype)} params (a smaller eps vanishes in the divisor)" \
            if entry.domain.startswith("[tiny") and dtype is not None else ""
        raise ValueError(f"{entry.name} must be in {shown}{where}, got {value}")
    return value


# Which output buffer may overlap which argument, per kernel: the one home of the aliasing rules,
# checked by fastbp.kernels before either backend runs (so both see the same arrays).
#   "same": the very same buffer works in place (an elementwise kernel reads each entry before it
#           writes it); a partial overlap is refused.
#   "copy": any overlap; the input is copied first, so it is read as it was before the call (what
#           NumPy's matmul does with an ``out`` that overlaps its operands).
# Any other overlap -- an output with another output, or with an argument not listed (a bias, a
# loss target, an optimizer's gradient or state) -- is a ValueError naming both arguments.
# Optimizers list the parameter (updated in place by design) and their state buffers as outputs.
_PRODUCT_INPUTS = {"X": "copy", "W": "copy"}
ALIASES = {
    "linear_forward": {"out": _PRODUCT_INPUTS},
    "dense_forward": {"Z": _PRODUCT_INPUTS, "A": {**_PRODUCT_INPUTS, "Z": "same"}},
    "linear_backward": dict.fromkeys(("dX", "dW", "db"), {**_PRODUCT_INPUTS, "dY": "copy"}),
    "dense_backward": {**dict.fromkeys(("dX", "dW", "db"),
                                       {**_PRODUCT_INPUTS, "Z": "copy", "A": "copy", "dA": "copy"}),
                       "dZ": {"dA": "same"}},
    "activation": {"out": {"Z": "same"}},
    "activation_grad": {"out": {"dA": "same"}},
    "loss": {"out": {"output": "same"}},
    # an optimizer step writes its parameter and state arrays, each only where it reads it
    **{f"{name}_update": dict.fromkeys(("param", *step.state), {})
       for name, step in registry.STEPS.items()},
}


def _same_buffer(a, b):
    return (a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
            and a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype)


def unaliased(kernel, inputs, outputs):
    """The ``inputs`` (name -> checked array or None, in call order) as a tuple, each copied where
    an output overlaps it and ``ALIASES[kernel]`` says "copy"; ValueError for an overlap the
    table does not allow.  ``outputs`` (name -> checked buffer or None) are the arrays the kernel
    writes; all arrays are C-contiguous here, so overlapping bounds mean shared memory."""
    rules = ALIASES[kernel]
    result = dict(inputs)
    seen = dict(inputs)  # what each output is checked against: the inputs, then earlier outputs
    for out_name, out in outputs.items():
        if out is None:
            continue
        for name, other in seen.items():
            if other is None or not np.may_share_memory(out, other):
                continue
            rule = rules[out_name].get(name)
            if rule == "copy" and name in inputs:
                if result[name] is other:
                    result[name] = other.copy()
            elif rule == "same" and _same_buffer(out, other):
                pass
            elif rule == "same":
                raise ValueError(f"{out_name} overlaps {name} without being the same array: "
                                 f"{kernel} works in place only on the very same buffer")
            else:
                raise ValueError(f"{out_name} overlaps {name}: {kernel} cannot write {out_name} "
                                 f"into memory it reads as {name}; pass a separate buffer")
        seen[out_name] = out
    return tuple(result.values())
