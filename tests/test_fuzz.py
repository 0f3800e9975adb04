"""Fuzz: every kernel and every estimator on both backends with bad and edge input.

The claim held here: the same outcome on both backends -- the same exception type, TypeError or
ValueError only (never anything else, never a crash or a hang), or results equal to the NumPy
twin's (NaN where the twin has NaN, the same infinities, finite values within rounding).

Kernels get every dtype (float32/64, byte-swapped, int, bool, float16, complex, object, a
list), shapes with 0 rows, 1 row, 1 column, mismatched or of the wrong dimension, every layout
(C, Fortran, strided, reversed, read-only, misaligned: a float view one byte into a uint8
buffer), values normal, NaN/inf, huge (1e38, float64 1e300), tiny (subnormal) or zero, ``out``
buffers right, wrong or overlapping an input or each other, and bad names and settings.  A
product's (or a loss value's) entry is compared where the magnitudes of its finite terms sum to
a finite number -- NaN and infinite terms then give the same NaN or infinity in any order;
elsewhere the value depends on the summation order.  Elementwise results are compared
everywhere.

Estimators (MLPClassifier, MLPRegressor, Autoencoder, VAE, GAN) get fit / partial_fit / predict /
score / transform / sample with bad or edge X, y and parameters; each outcome must be success,
ValueError or TypeError, the same on both backends (the exception type; for a success, whether
the fitted weights or the returned values are finite).

CI runs a few dozen examples of each (about a second).  The long run: 20,000 kernel cases and
3,000 estimator cases (each case calls both backends: 40,000 and 6,000 calls, about two minutes),
with the counts printed at the end (-s shows them):

    FASTBP_FUZZ_EXAMPLES=20000 FASTBP_FUZZ_ESTIMATOR_EXAMPLES=3000 FASTBP_FUZZ_RECORD=1 \\
        FASTBP_FUZZ_RANDOM=1 PYTHONPATH=. pytest -q -p no:cacheprovider -s -W ignore \\
        tests/test_fuzz.py

(FASTBP_FUZZ_RECORD=1 records disagreements instead of failing at the first, and prints one
reproducer per kind; the examples are the same every run unless FASTBP_FUZZ_RANDOM=1.)
"""
import os
import warnings
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbp
from conftest import require_compiled
from fastbp import kernels
from fastbp.kernels import _reference

KERNEL_EXAMPLES = int(os.environ.get("FASTBP_FUZZ_EXAMPLES", "60"))
ESTIMATOR_EXAMPLES = int(os.environ.get("FASTBP_FUZZ_ESTIMATOR_EXAMPLES", "12"))
RECORD = os.environ.get("FASTBP_FUZZ_RECORD", "") not in ("", "0")
# the same examples every run (CI is reproducible); FASTBP_FUZZ_RANDOM=1 draws new ones
DERANDOMIZE = os.environ.get("FASTBP_FUZZ_RANDOM", "") in ("", "0")
COUNTS = Counter()  # what the run saw, printed at the end (see the fixture below)
DISAGREEMENTS = {}  # kind -> first reproducer (recording mode)

# ------------------------------------------------------------------------------------ kernels
# kernel -> (its array arguments: name -> shape letters, its out slots: name -> shape letters)
# n rows, d features, k outputs; "L": a 1-D label vector of n entries
KERNELS = {
    "linear_forward": (dict(X="nd", W="dk", b="k"), dict(out="nk")),
    "linear_backward": (dict(X="nd", W="dk", dY="nk"), dict(dX="nd", dW="dk", db="k")),
    "activation": (dict(Z="nk"), dict(out="nk")),
    "activation_grad": (dict(Z="nk", A="nk", dA="nk"), dict(out="nk")),
    "dense_forward": (dict(X="nd", W="dk", b="k"), dict(Z="nk", A="nk")),
    "dense_backward": (dict(X="nd", W="dk", Z="nk", A="nk", dA="nk"),
                       dict(dX="nd", dW="dk", db="k", dZ="nk")),
    "loss": (dict(output="nk", target="nk"), dict(out="nk")),
    "sgd_update": (dict(grad="dk"), dict(param="dk", velocity="dk")),
    "adam_update": (dict(grad="dk"), dict(param="dk", m="dk", v="dk")),
    "rmsprop_update": (dict(grad="dk"), dict(param="dk", square_avg="dk", grad_avg="dk",
                                             momentum_buffer="dk")),
}
OUT_TUPLES = {"linear_backward": ("dX", "dW", "db"), "dense_forward": ("Z", "A"),
              "dense_backward": ("dX", "dW", "db", "dZ")}
IN_PLACE = {"sgd_update": ("param", "velocity"), "adam_update": ("param", "m", "v"),
            "rmsprop_update": ("param", "square_avg", "grad_avg", "momentum_buffer")}

BAD_DTYPES = ["int64", "int32", "bool", "float16", "complex64", "complex128", "object", ">f8",
              ">f4", "uint8", "list"]
LAYOUTS = ["C", "C", "C", "fortran", "strided", "reversed", "read_only", "misaligned"]
VALUES = ["normal", "normal", "nonfinite", "huge", "tiny", "zeros"]

array_spec = st.fixed_dictionaries({
    "dtype": st.one_of(st.just("main"), st.just("main"), st.just("main"), st.just("main"),
                       st.just("other_float"), st.sampled_from(BAD_DTYPES)),
    "shape": st.sampled_from(["ok"] * 8 + ["plus_row", "plus_col", "drop_dim", "add_dim"]),
    "layout": st.sampled_from(LAYOUTS),
    "values": st.sampled_from(VALUES),
})
valid_spec = st.fixed_dictionaries({  # an argument the checks accept (any layout and values)
    "dtype": st.just("main"), "shape": st.just("ok"), "layout": st.sampled_from(LAYOUTS),
    "values": st.sampled_from(VALUES)})
out_spec = st.one_of(
    *[st.just(None)] * 4, *[valid_spec.map(lambda spec: dict(spec, layout="C"))] * 3,
    st.sampled_from(["alias:0", "alias:1", "alias:2", "alias:out0"]))
bad_out_spec = st.one_of(array_spec, st.just("not_an_array"))


def _mostly(good, bad):
    """A setting: one of ``good`` three times in four, else one of ``bad``."""
    return st.sampled_from(list(good) * (3 * len(bad)) + list(bad) * len(good))


@st.composite
def kernel_cases(draw):
    kernel = draw(st.sampled_from(list(KERNELS)))
    inputs, outs = KERNELS[kernel]
    case = dict(
        kernel=kernel, seed=draw(st.integers(0, 2**32 - 1)),
        dtype=draw(st.sampled_from(["float32", "float64"])),
        n=draw(st.sampled_from([0, 1, 2, 3, 7])), d=draw(st.sampled_from([0, 1, 3, 5])),
        k=draw(st.sampled_from([0, 1, 2, 4])),
        arrays={name: draw(valid_spec) for name in inputs},
        outs={name: draw(out_spec) for name in outs},
        options={})
    for name in IN_PLACE.get(kernel, ()):  # the parameter and state: mostly given and valid
        if draw(st.integers(0, 3)) > 0:
            case["outs"][name] = draw(valid_spec)
    if draw(st.integers(0, 2)) == 0:  # one argument bad (or at least unusual)
        name = draw(st.sampled_from([*inputs, *outs]))
        if name in inputs:
            case["arrays"][name] = draw(array_spec)
        else:
            case["outs"][name] = draw(bad_out_spec)
    opts = case["options"]
    if kernel in ("activation", "activation_grad", "dense_forward", "dense_backward"):
        opts["name"] = draw(_mostly(list(kernels.ACTIVATIONS), ["swish", None, 3]))
        takes_alpha = kernels.ACTIVATIONS.get(opts["name"]) is not None
        if draw(st.integers(0, 3 if takes_alpha else 15)) == 1:
            opts["alpha"] = draw(_mostly([0.0, 0.3, 1.0, -2.0, 1e30], [float("nan"), "x"]))
    if kernel in ("linear_backward", "dense_backward"):
        opts["need_dX"] = draw(st.booleans())
    if kernel == "linear_forward" or kernel == "dense_forward":
        opts["bias"] = draw(st.sampled_from([True, True, True, False]))
    if kernel == "loss":
        opts["name"] = draw(_mostly(list(kernels.LOSSES), ["hinge", None]))
        opts["labels"] = draw(_mostly([None, "ok"], ["big", "negative", "uint8", "float", "2d",
                                                     "short", "bool"]))
    if kernel == "sgd_update":
        opts.update(lr=draw(_mostly([0.1, 0.0, 1e30], [-1.0, float("nan"), None])),
                    momentum=draw(_mostly([0.0, 0.9, 1e10], [-0.5])),
                    nesterov=draw(st.booleans()),
                    weight_decay=draw(_mostly([0.0, 0.1], [float("inf")])))
    if kernel == "adam_update":
        opts.update(step=draw(_mostly([1, 2, 1000], [0, -1, 1.5])),
                    lr=draw(_mostly([1e-3, 0.0, 1e30], [-1.0])),
                    beta1=draw(_mostly([0.9, 0.0, 0.999999], [1.0])),
                    beta2=draw(_mostly([0.999, 0.0], [1.5])),
                    eps=draw(_mostly([1e-8, 1e-300, 1e30], [0.0])),
                    weight_decay=draw(st.sampled_from([0.0, 0.1])))
    if kernel == "rmsprop_update":
        opts.update(lr=draw(_mostly([1e-2, 0.0, 1e30], [-1.0])),
                    alpha=draw(_mostly([0.99, 0.0, 0.999999], [1.0])),
                    eps=draw(_mostly([1e-8, 1e-30, 1e30], [0.0, 1e-300])),
                    weight_decay=draw(st.sampled_from([0.0, 0.1])),
                    momentum=draw(_mostly([0.0, 0.9], [-0.5])),
                    centered=draw(st.booleans()))
    return case


def _shape(letters, case, variant):
    dims = [case[c] for c in letters.replace("L", "n")]
    if variant == "plus_row" and dims:
        dims[0] += 1
    elif variant == "plus_col" and dims:
        dims[-1] += 1
    elif variant == "drop_dim" and dims:
        dims = dims[1:]
    elif variant == "add_dim":
        dims = [1] + dims
    return tuple(dims)


def _values(rng, shape, kind, dtype):
    size = int(np.prod(shape))
    big = 1e300 if dtype == np.float64 else 1e38
    x = rng.standard_normal(size)
    if kind == "nonfinite":
        x[rng.random(size) < 0.3] = np.nan
        x[rng.random(size) < 0.2] = np.inf
        x[rng.random(size) < 0.2] = -np.inf
    elif kind == "huge":
        x = np.where(rng.random(size) < 0.5, np.sign(x) * big * rng.uniform(0.1, 3.0, size), x)
    elif kind == "tiny":
        x = x * 1e-310 if dtype == np.float64 else x * 1e-42
    elif kind == "zeros":
        x[:] = 0
    with np.errstate(over="ignore"):
        return x.reshape(shape)


def _array(spec, letters, case, rng):
    """One argument: a fresh array (or list) built from its spec, the same on every call."""
    main = np.dtype(case["dtype"])
    shape = _shape(letters, case, spec["shape"])
    values = _values(rng, shape, spec["values"], main)
    dtype = spec["dtype"]
    if dtype == "list":
        return values.tolist()
    if dtype == "main":
        dtype = main
    elif dtype == "other_float":
        dtype = np.float64 if main == np.float32 else np.float32
    dtype = np.dtype(dtype)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dtype.kind in "iub":
            a = np.nan_to_num(values, posinf=7, neginf=-7).clip(-1e6, 1e6).astype(dtype)
        else:
            a = values.astype(dtype)
    layout = spec["layout"]
    if layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "strided":
        base = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        base[tuple(slice(1, None, 2) for _ in a.shape)] = a
        a = base[tuple(slice(1, None, 2) for _ in a.shape)]
    elif layout == "reversed":
        flipped = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
        a = flipped[tuple(slice(None, None, -1) for _ in a.shape)]
    elif layout == "read_only":
        a = a.copy()
        a.setflags(write=False)
    elif layout == "misaligned" and dtype != object:
        buffer = np.zeros(a.nbytes + 1, np.uint8)[1:]
        view = buffer.view(a.dtype).reshape(a.shape)
        view[...] = a
        a = view
    return a


def _labels(kind, case, rng):
    n, k = case["n"], case["k"]
    labels = rng.integers(0, max(k, 1), n)
    return {"ok": labels, "big": labels + k, "negative": labels - 1,
            "uint8": labels.astype(np.uint8), "float": labels.astype(float),
            "2d": labels[:, None], "short": labels[:-1], "bool": labels > 0}[kind]


def build(case):
    """The call's keyword arguments, freshly built (identical for every call with the case)."""
    rng = np.random.default_rng(case["seed"])
    inputs, outs = KERNELS[case["kernel"]]
    opts = case["options"]
    args = {name: _array(case["arrays"][name], letters, case, rng)
            for name, letters in inputs.items()}
    if case["kernel"] == "loss" and opts.get("labels"):
        args["target"] = _labels(opts["labels"], case, rng)
    if not opts.get("bias", True):
        args["b"] = None
    order = list(inputs)
    made = {}
    for i, (name, letters) in enumerate(outs.items()):
        spec = case["outs"][name]
        if isinstance(spec, dict):
            made[name] = _array(spec, letters, case, rng)
        elif spec == "not_an_array":
            made[name] = np.zeros(_shape(letters, case, "ok")).tolist()
        elif spec and spec.startswith("alias:"):
            target = spec[6:]
            if target == "out0":
                made[name] = made.get(next(iter(outs)))
            else:
                made[name] = args.get(order[int(target) % len(order)])
        else:
            made[name] = None
    return args, made


def call(case, args, made):
    kernel, opts = case["kernel"], case["options"]
    act = {k: v for k, v in opts.items() if k == "alpha"}
    if kernel == "linear_forward":
        return kernels.linear_forward(args["X"], args["W"], args["b"], out=made["out"])
    if kernel == "linear_backward":
        return kernels.linear_backward(args["X"], args["W"], args["dY"], need_dX=opts["need_dX"],
                                       out=tuple(made[n] for n in OUT_TUPLES[kernel]))
    if kernel == "activation":
        return kernels.activation(opts["name"], args["Z"], out=made["out"], **act)
    if kernel == "activation_grad":
        return kernels.activation_grad(opts["name"], args["Z"], args["A"], args["dA"],
                                       out=made["out"], **act)
    if kernel == "dense_forward":
        return kernels.dense_forward(args["X"], args["W"], args["b"], opts["name"],
                                     out=tuple(made[n] for n in OUT_TUPLES[kernel]), **act)
    if kernel == "dense_backward":
        return kernels.dense_backward(args["X"], args["W"], args["Z"], args["A"], args["dA"],
                                      opts["name"], need_dX=opts["need_dX"],
                                      out=tuple(made[n] for n in OUT_TUPLES[kernel]), **act)
    if kernel == "loss":
        return kernels.loss(opts["name"], args["output"], args["target"], out=made["out"])
    settings_ = {k: v for k, v in opts.items()}
    if kernel == "sgd_update":
        return kernels.sgd_update(made["param"], args["grad"], made["velocity"], **settings_)
    if kernel == "rmsprop_update":
        return kernels.rmsprop_update(made["param"], args["grad"], made["square_avg"],
                                      made["grad_avg"], made["momentum_buffer"], **settings_)
    return kernels.adam_update(made["param"], args["grad"], made["m"], made["v"], **settings_)


def outcome(case, backend):
    """("error", type name, message) or ("ok", result, every array the call could write)."""
    args, made = build(case)
    with fastbp.use_backend(backend), np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = call(case, args, made)
        except (TypeError, ValueError) as error:
            return ("error", type(error).__name__, str(error))
    return ("ok", result, args, made)


# -------------------------------------------------------------------------- result comparison
def _mag(a):
    """|a| in float64 with every non-finite entry 0: the bounds below are sums of the finite
    terms.  Where such a sum is finite, a result entry does not depend on the order of its sum
    (NaN and infinite terms give NaN or the same infinity in any order), so it is compared."""
    a = np.abs(np.asarray(a, np.float64))
    a[~np.isfinite(a)] = 0
    return a


def _matmul_bound(a, b):
    """sum_j |a_ij| |b_jk| of finite magnitudes (inf where it overflows)."""
    with np.errstate(all="ignore"):
        if a.shape[1] == 0:
            return np.zeros((a.shape[0], b.shape[1]))
        return np.einsum("ij,jk->ik", a, b)


def scales(case, args):
    """name -> per-entry scale of the rounding error each result may carry (non-finite: the
    entry depends on the summation order and is not compared)."""
    kernel, opts = case["kernel"], case["options"]
    eps = float(np.finfo(np.dtype(case["dtype"])).eps)
    if kernel in ("linear_forward", "dense_forward"):
        X, W = _mag(args["X"]), _mag(args["W"])
        b = 0 if args["b"] is None else _mag(args["b"])
        with np.errstate(all="ignore"):
            bound = _matmul_bound(X, W) + b
        names = ("out",) if kernel == "linear_forward" else ("Z", "A")
        result = {names[0]: bound * (X.shape[1] + 2)}
        if kernel == "dense_forward":
            alpha = opts.get("alpha", 1.0)
            lip = 2 * max(1.0, abs(float(alpha)) if isinstance(alpha, float) else 1.0)
            a_scale = bound * (X.shape[1] + 2) * lip + 1
            if opts["name"] == "softmax":
                a_scale = np.broadcast_to(a_scale.max(axis=1, initial=0, keepdims=True),
                                          bound.shape)
            result["A"] = a_scale
        return result
    if kernel in ("linear_backward", "dense_backward"):
        X, W = _mag(args["X"]), _mag(args["W"])
        if kernel == "linear_backward":
            dz = _mag(args["dY"])
        else:
            dz = _mag(_twin_dz(case, args))
        with np.errstate(all="ignore"):
            result = {"dX": _matmul_bound(dz, W.T) * (W.shape[1] + 2),
                      "dW": _matmul_bound(X.T, dz) * (X.shape[0] + 2),
                      "db": dz.sum(axis=0) * (X.shape[0] + 2)}
        if kernel == "dense_backward":
            result["dZ"] = dz + 1
        return result
    return None  # elementwise: compared entry by entry against the twin's own magnitude


def _twin_dz(case, args):
    Z, A, dA = (np.array(args[n], np.float64) for n in ("Z", "A", "dA"))
    out = np.empty_like(dA)
    alpha = case["options"].get("alpha", kernels.ACTIVATIONS[case["options"]["name"]] or 0.0)
    with np.errstate(all="ignore"):
        return _reference.activation_grad(case["options"]["name"], Z, A, dA, out, float(alpha))


def _tolerance(dtype):
    return 3e-5 if dtype == np.float32 else 1e-11


def compare_arrays(name, got, want, scale, product, dtype):
    """None, or a short description of the first disagreement.  ``scale``: the size of the
    rounding error allowed per entry (None: relative to the twin's value); with ``product``,
    entries whose scale is not finite are not compared (their value depends on the order of a
    sum)."""
    if type(got) is not type(want):
        return f"{name}: {type(got).__name__} vs twin {type(want).__name__}"
    if want is None:
        return None
    if isinstance(want, float):
        got, want = np.array([got]), np.array([want])
    if isinstance(want, list):
        return None  # a list argument (never written)
    if got.shape != want.shape or got.dtype != want.dtype:
        return f"{name}: {got.shape} {got.dtype} vs twin {want.shape} {want.dtype}"
    if want.dtype.kind not in "fc":
        return None if np.array_equal(got, want) else f"{name}: changed"
    g, w = got.astype(np.float64), want.astype(np.float64)
    tiny = float(np.finfo(want.dtype).tiny) if want.dtype.kind == "f" else 1e-300
    rtol = _tolerance(np.dtype(dtype))  # the call's: a loss value is a float64 from float32 data
    bound = np.abs(w) if scale is None else np.broadcast_to(np.asarray(scale, np.float64), w.shape)
    check = np.ones(w.shape, bool)
    if product:
        check = np.isfinite(bound) & (bound < float(np.finfo(want.dtype).max) / 8)
    nan_g, nan_w = np.isnan(g), np.isnan(w)
    if (check & (nan_g != nan_w)).any():
        return f"{name}: NaN pattern differs"
    with np.errstate(all="ignore"):
        inf_mismatch = check & (np.isinf(g) | np.isinf(w)) & (g != w) & ~nan_w
        if inf_mismatch.any():
            return f"{name}: infinities differ"
        finite = check & np.isfinite(g) & np.isfinite(w)
        bad = finite & (np.abs(g - w) > rtol * bound + 64 * tiny)
    if bad.any():
        i = np.flatnonzero(bad)[0]
        return f"{name}: {g.flat[i]!r} vs twin {w.flat[i]!r}"
    return None


def _elementwise_scale(case, name, want, args, made_before):
    """Where an elementwise result may legitimately carry more than a relative rounding error:
    the gradients of the cross-entropies (p - t cancels), the softmax's derivative (a row sum),
    the optimizers (the old values and the step add up)."""
    kernel = case["kernel"]
    w = np.abs(np.asarray(want, np.float64))
    if kernel == "loss" and name != "value":
        n = max(case["n"], 1)
        t = args["target"]
        t = 1.0 if np.ndim(t) != 2 else _mag(t)
        return w + (1 + t) / n
    if kernel == "loss":
        o = _mag(args["output"])
        t = args["target"]
        t = 1.0 if np.ndim(t) != 2 else _mag(t)
        with np.errstate(all="ignore"):
            return w + float(((o + 1) * (1 + t)).sum() * (o.shape[1] + 2)) / max(case["n"], 1)
    if kernel == "activation_grad" and case["options"]["name"] == "softmax":
        A, dA = _mag(args["A"]), _mag(args["dA"])
        with np.errstate(all="ignore"):
            return w + A * (dA + (A * dA).sum(axis=1, keepdims=True)) * (A.shape[1] + 2)
    if kernel in IN_PLACE:
        opts = case["options"]
        g = _mag(args["grad"])
        with np.errstate(all="ignore"):
            extra = sum(_mag(a) for a in made_before.values()
                        if isinstance(a, np.ndarray) and a.shape == w.shape)
            return w + extra + g * (1 + g) + abs(float(opts.get("lr") or 0)) * (1 + g + extra)
    return w


def compare(case, twin, got):
    """None, or a description of how the compiled outcome differs from the twin's."""
    if twin[0] != got[0] or (twin[0] == "error" and twin[1] != got[1]):
        describe = {"error": lambda o: f"{o[1]}({o[2][:80]!r})", "ok": lambda o: "ok"}
        return f"outcome: compiled {describe[got[0]](got)} vs twin {describe[twin[0]](twin)}"
    if twin[0] == "error":
        return None
    kernel = case["kernel"]
    before_args, before_made = build(case)  # the values the call saw
    call_dtype = next((a.dtype for a in [*before_args.values(), *before_made.values()]
                       if isinstance(a, np.ndarray) and a.dtype.kind == "f"), case["dtype"])
    product = scales(case, before_args)
    results = {}
    want, have = twin[1], got[1]
    if kernel == "loss":
        results["value"] = (have[0], want[0])
    for name, array in twin[3].items():  # every out buffer or state, as written
        results[name] = (got[3][name], array)
    written = [a for a in twin[3].values() if isinstance(a, np.ndarray)]
    for name, array in twin[2].items():  # inputs: read only, unless an out aliases them
        if not any(np.may_share_memory(array, out) for out in written):
            results["input " + name] = (got[2][name], array)
    if kernel in OUT_TUPLES:
        for name, w_r, g_r in zip(OUT_TUPLES[kernel], want, have):
            results[name] = (g_r, w_r)
    elif kernel in ("linear_forward", "activation", "activation_grad"):
        results["out"] = (have, want)
    elif kernel == "loss":
        results["out"] = (have[1], want[1])
    for name, (g_r, w_r) in results.items():
        if isinstance(w_r, list) or w_r is None and g_r is None:
            continue
        is_product = product is not None and name in product
        if is_product:
            scale = product[name]
        elif name == "value":  # a sum: compared where its finite terms cannot overflow
            is_product = True
            scale = _elementwise_scale(case, name, w_r, before_args, before_made)
        elif name.startswith("input") or np.dtype(getattr(w_r, "dtype", float)).kind != "f":
            scale = None
        else:
            scale = _elementwise_scale(case, name, w_r, before_args, before_made)
        problem = compare_arrays(name, g_r, w_r, scale, is_product, call_dtype)
        if problem:
            return problem
    return None


def _kind(case, problem):
    """A short key for a disagreement: kernel, what differed, and how."""
    head = problem.split(":")[0]
    detail = problem.split(":", 1)[1].split("(")[0].strip() if ":" in problem else ""
    if head == "outcome":
        return f"{case['kernel']} outcome {detail}"
    return f"{case['kernel']} {head} {detail.split()[0] if detail else ''}"


def check_kernel_case(case):
    twin = outcome(case, "numpy")
    got = outcome(case, "compiled")
    COUNTS["kernel calls"] += 2
    for side, o in (("twin", twin), ("compiled", got)):
        COUNTS[f"kernel {side} " + ("ok" if o[0] == "ok" else o[1])] += 1
    problem = compare(case, twin, got)
    if problem:
        COUNTS["kernel disagreements"] += 1
        kind = _kind(case, problem)
        if RECORD:
            DISAGREEMENTS.setdefault(kind, (problem, case))
            return
    assert problem is None, f"{problem}\ncase: {case}"


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if COUNTS:
        print("\nfuzz counts:", dict(sorted(COUNTS.items())))
    for kind, (problem, case) in DISAGREEMENTS.items():
        print(f"\nDISAGREEMENT {kind}: {problem}\n  case: {case}")


@settings(max_examples=KERNEL_EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck), derandomize=DERANDOMIZE)
@given(case=kernel_cases())
def test_kernels_same_outcome_on_both_backends(case):
    require_compiled()
    check_kernel_case(case)


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_every_kernel_is_fuzzed_with_misaligned_nonfinite_and_aliased_arguments(kernel):
    """A fixed case per kernel, so CI covers each whatever hypothesis draws."""
    require_compiled()
    inputs, outs = KERNELS[kernel]
    spec = dict(dtype="main", shape="ok", layout="misaligned", values="nonfinite")
    first_out = next(iter(outs))
    options = {"activation": dict(name="gelu"), "activation_grad": dict(name="softmax"),
               "dense_forward": dict(name="relu", bias=True),
               "dense_backward": dict(name="tanh", need_dX=True),
               "linear_backward": dict(need_dX=True), "linear_forward": dict(bias=True),
               "loss": dict(name="softmax_cross_entropy", labels=None),
               "sgd_update": dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
               "adam_update": dict(step=1, lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8,
                                   weight_decay=0.0),
               "rmsprop_update": dict(lr=0.1, alpha=0.9, eps=1e-8, weight_decay=0.1,
                                      momentum=0.9, centered=True)}[kernel]
    for dtype in ("float32", "float64"):
        for first in (dict(spec, layout="C"), "alias:0", "alias:1"):
            out_specs = {name: dict(spec, layout="C", values="normal") for name in outs}
            out_specs[first_out] = first
            case = dict(kernel=kernel, seed=1, dtype=dtype, n=3, d=3, k=3,
                        arrays={name: dict(spec) for name in inputs}, outs=out_specs,
                        options=options)
            check_kernel_case(case)


# Disagreements the long run found (fixed): each stays a case here.
FOUND = {
    # adam_update(m=None): the twin raised AttributeError, the compiled kernel TypeError
    "adam_without_state": dict(
        kernel="adam_update", seed=0, dtype="float32", n=0, d=0, k=0,
        arrays={"grad": dict(dtype="main", shape="ok", layout="C", values="normal")},
        outs={"param": dict(dtype="main", shape="ok", layout="C", values="normal"), "m": None,
              "v": None},
        options=dict(step=1, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-08, weight_decay=0.0)),
    # sigmoid's slope from an A of 1e38: float32 A (1 - A) overflowed where the result does not
    "sigmoid_slope_of_huge_A": dict(
        kernel="activation_grad", seed=166, dtype="float32", n=2, d=0, k=4,
        arrays={"Z": dict(dtype="main", shape="ok", layout="C", values="tiny"),
                "A": dict(dtype="main", shape="ok", layout="misaligned", values="huge"),
                "dA": dict(dtype="main", shape="ok", layout="fortran", values="tiny")},
        outs={"out": dict(dtype="main", shape="ok", layout="C", values="zeros")},
        options=dict(name="sigmoid")),
    # the softmax's Jacobian-vector product: <dA, A> of 1e38s overflowed a float32 sum
    "softmax_slope_of_huge_A": dict(
        kernel="activation_grad", seed=807, dtype="float32", n=3, d=5, k=4,
        arrays={"Z": dict(dtype="main", shape="ok", layout="strided", values="zeros"),
                "A": dict(dtype="main", shape="ok", layout="strided", values="huge"),
                "dA": dict(dtype="main", shape="ok", layout="C", values="huge")},
        outs={"out": dict(dtype="main", shape="ok", layout="C", values="nonfinite")},
        options=dict(name="softmax")),
    # softmax cross-entropy against targets of 1e38: their float32 row sum overflowed
    "softmax_cross_entropy_huge_targets": dict(
        kernel="loss", seed=675, dtype="float32", n=2, d=1, k=4,
        arrays={"output": dict(dtype="main", shape="ok", layout="C", values="huge"),
                "target": dict(dtype="main", shape="ok", layout="read_only", values="huge")},
        outs={"out": dict(dtype="main", shape="ok", layout="C", values="tiny")},
        options=dict(name="softmax_cross_entropy", labels=None)),
}


@pytest.mark.parametrize("name", FOUND)
def test_disagreements_found_by_the_long_run_stay_fixed(name):
    require_compiled()
    check_kernel_case(FOUND[name])


# --------------------------------------------------------------------------------- estimators
def _estimators():
    """name -> (class, its small settings), which a case's parameters override."""
    small = dict(max_iter=2, random_state=0)
    coder = dict(small, n_components=1, encoder_layer_sizes=(3,))
    return {
        "MLPClassifier": (fastbp.MLPClassifier, dict(small, hidden_layer_sizes=(3,))),
        "MLPRegressor": (fastbp.MLPRegressor, dict(small, hidden_layer_sizes=(3,))),
        "Autoencoder": (fastbp.Autoencoder, coder),
        "VAE": (fastbp.VAE, coder),
        "GAN": (fastbp.GAN, dict(small, n_components=1, generator_layer_sizes=(3,),
                                 discriminator_layer_sizes=(3,))),
    }


ESTIMATORS = list(_estimators())
X_KINDS = ["normal", "normal", "nan", "inf", "huge", "tiny", "zeros", "one_row", "no_rows",
           "one_col", "no_cols", "1d", "3d", "int", "bool", "complex", "object", "strings",
           "float16", "fortran", "misaligned", "list", "none"]
Y_KINDS = ["ok", "ok", "ok", "nan", "inf", "short", "2d", "strings", "mixed", "one_class",
           "float", "huge", "object", "none", "bool", "negative"]
PARAMS = [{}, dict(learning_rate_init=1e20), dict(learning_rate_init=-1.0),
          dict(learning_rate_init=float("nan")), dict(solver="sgd", learning_rate_init=1e3),
          dict(batch_size=0), dict(batch_size=1), dict(alpha=-1.0), dict(alpha=1e30),
          dict(dtype="float64"), dict(dtype="int32"), dict(activation="swish"),
          dict(activation="tanh"), dict(max_iter=0), dict(random_state="x"), dict(tol=-1.0),
          dict(momentum=2.0), dict(beta_1=1.0), dict(epsilon=0.0), dict(n_threads=0),
          dict(early_stopping=True), dict(validation_fraction=1.5)]
METHODS = ["fit", "fit", "partial_fit", "predict", "score", "transform", "sample"]


def _x(kind, rng, n=12, d=3):
    X = rng.standard_normal((n, d))
    extra = {
        "nan": lambda: np.where(rng.random((n, d)) < 0.2, np.nan, X),
        "inf": lambda: np.where(rng.random((n, d)) < 0.2, np.inf, X),
        "huge": lambda: X * 1e38, "tiny": lambda: X * 1e-310, "zeros": lambda: X * 0,
        "one_row": lambda: X[:1], "no_rows": lambda: X[:0], "one_col": lambda: X[:, :1],
        "no_cols": lambda: X[:, :0], "1d": lambda: X[:, 0], "3d": lambda: X[:, :, None],
        "int": lambda: (X * 3).astype(int), "bool": lambda: X > 0,
        "complex": lambda: X.astype(complex), "object": lambda: X.astype(object),
        "strings": lambda: X.astype(str), "float16": lambda: X.astype(np.float16),
        "fortran": lambda: np.asfortranarray(X),
        "misaligned": lambda: _misaligned(X), "list": lambda: X.tolist(), "none": lambda: None,
    }
    return extra[kind]() if kind in extra else X


def _misaligned(X):
    view = np.zeros(X.nbytes + 1, np.uint8)[1:].view(X.dtype).reshape(X.shape)
    view[...] = X
    return view


def _y(kind, rng, n, estimator):
    regress = estimator == "MLPRegressor"
    y = rng.standard_normal(n) if regress else rng.integers(0, 3, n)
    extra = {
        "nan": lambda: np.where(rng.random(n) < 0.3, np.nan, y.astype(float)),
        "inf": lambda: np.where(rng.random(n) < 0.3, np.inf, y.astype(float)),
        "short": lambda: y[:-1], "2d": lambda: np.stack([y, y], 1),
        "strings": lambda: y.astype(str),
        "mixed": lambda: np.array([1, "a"] * (n // 2) + [1] * (n % 2), dtype=object),
        "one_class": lambda: np.zeros(n, int), "float": lambda: y + 0.5, "huge": lambda: y * 1e300,
        "object": lambda: y.astype(object), "none": lambda: None, "bool": lambda: y > 0,
        "negative": lambda: -np.abs(y) - 1,
    }
    return extra[kind]() if kind in extra else y


@st.composite
def estimator_cases(draw):
    return dict(estimator=draw(st.sampled_from(ESTIMATORS)), method=draw(st.sampled_from(METHODS)),
                x=draw(st.sampled_from(X_KINDS)), y=draw(st.sampled_from(Y_KINDS)),
                params=draw(st.one_of(st.just(0), st.integers(0, len(PARAMS) - 1))),
                seed=draw(st.integers(0, 99)),
                fitted=draw(st.booleans()))


def estimator_outcome(case, backend):
    """("ok", summary) or ("error", exception type name); anything but TypeError/ValueError
    propagates (a fuzz failure)."""
    rng = np.random.default_rng(case["seed"])
    name, method = case["estimator"], case["method"]
    cls, base = _estimators()[name]
    X = _x(case["x"], rng)
    n = len(X) if hasattr(X, "__len__") else 0
    y = _y(case["y"], rng, n, name)
    supervised = name in ("MLPClassifier", "MLPRegressor")
    with fastbp.use_backend(backend), warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            est = cls(**{**base, **PARAMS[case["params"]]})
            if case["fitted"] or method in ("predict", "score", "transform", "sample"):
                good = rng.standard_normal((12, 3))
                good_y = (rng.integers(0, 3, 12) if name == "MLPClassifier"
                          else rng.standard_normal(12))
                est.fit(good, good_y) if supervised else est.fit(good)
            if method == "fit":
                result = est.fit(X, y) if supervised else est.fit(X)
            elif method == "partial_fit":
                if name == "MLPClassifier" and not case["fitted"]:
                    result = est.partial_fit(X, y, classes=np.unique(y) if y is not None else None)
                else:
                    result = est.partial_fit(X, y) if supervised else est.partial_fit(X)
            elif method == "predict":
                result = est.predict(X) if supervised else est.inverse_transform(est.transform(X)) \
                    if name != "GAN" else est.sample(3)
            elif method == "score":
                result = est.score(X, y) if supervised else (est.score(X) if name != "GAN"
                                                             else est.sample(2))
            elif method == "transform":
                result = (est.transform(X) if name in ("Autoencoder", "VAE")
                          else est.predict_proba(X) if name == "MLPClassifier"
                          else est.predict(X) if supervised else est.sample(2))
            else:
                result = est.sample(int(case["seed"]) % 4) if name in ("VAE", "GAN") \
                    else est.predict(X) if supervised else est.transform(X)
        except (TypeError, ValueError) as error:
            return ("error", type(error).__name__, str(error)[:120])
    return ("ok", _summary(result))


def _summary(result):
    """What a successful call gave, in words both backends must agree on."""
    finite = {True: "finite", False: "non-finite"}
    if hasattr(result, "coefs_"):  # fit and partial_fit return the estimator
        return "fitted, " + finite[all(np.isfinite(W).all() for W in result.coefs_)] + " weights"
    if isinstance(result, float):
        return finite[np.isfinite(result)] + " number"
    if isinstance(result, np.ndarray):
        if result.dtype.kind in "fc":
            return finite[bool(np.isfinite(result).all())] + f" {result.ndim}-D array"
        return f"{result.dtype.kind} {result.ndim}-D array"
    return type(result).__name__


def check_estimator_case(case):
    twin = estimator_outcome(case, "numpy")
    got = estimator_outcome(case, "compiled")
    COUNTS["estimator calls"] += 2
    for o in (twin, got):
        COUNTS["estimator " + ("ok" if o[0] == "ok" else o[1])] += 1
    if twin[:2] == got[:2]:
        return
    COUNTS["estimator disagreements"] += 1
    problem = f"compiled {got[:2]} vs numpy {twin[:2]}"
    kind = f"{case['estimator']}.{case['method']} {got[:2]} vs {twin[:2]}"
    if RECORD:
        DISAGREEMENTS.setdefault(kind, (problem + f" {got[2:]} / {twin[2:]}", case))
        return
    assert False, f"{problem}\ncase: {case}"


@settings(max_examples=ESTIMATOR_EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck), derandomize=DERANDOMIZE)
@given(case=estimator_cases())
def test_estimators_same_outcome_on_both_backends(case):
    require_compiled()
    check_estimator_case(case)
