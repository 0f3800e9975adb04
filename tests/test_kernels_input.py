"""Bad input: every public kernel raises the documented exception (TypeError for dtypes, ValueError
for everything else, both shapes named in a shape mismatch) on both backends, before touching any
array.  Input that slips past the checks, and the compiled modules called directly without the
checks, must raise or compute the right thing -- never crash: those run in a child interpreter.
"""
from collections import Counter

import numpy as np
import pytest

from conftest import BACKENDS, ProbeOutcomes, require_compiled
from fastbp import kernels
from fastbp import _backend


class Arrays:
    """Valid float64 arguments for every kernel: X 4 x 3, W 3 x 2, b 2, Z/A/dA 4 x 2, param 3 x 2."""

    def __init__(self):
        rng = np.random.default_rng(7)
        for name, shape in dict(X=(4, 3), W=(3, 2), b=(2,), Z=(4, 2), A=(4, 2), dA=(4, 2),
                                param=(3, 2), grad=(3, 2), m=(3, 2), v=(3, 2)).items():
            setattr(self, name, rng.standard_normal(shape))
        self.labels = np.array([0, 1, 1, 0])


# kernel -> its valid keyword arguments, from an Arrays
VALID = {
    "linear_forward": lambda a: dict(X=a.X, W=a.W, b=a.b),
    "linear_backward": lambda a: dict(X=a.X, W=a.W, dY=a.dA),
    "activation": lambda a: dict(name="leaky_relu", Z=a.Z),
    "activation_grad": lambda a: dict(name="tanh", Z=a.Z, A=a.A, dA=a.dA),
    "dense_forward": lambda a: dict(X=a.X, W=a.W, b=a.b, activation="relu"),
    "dense_backward": lambda a: dict(X=a.X, W=a.W, Z=a.Z, A=a.A, dA=a.dA, activation="relu"),
    "loss": lambda a: dict(name="softmax_cross_entropy", output=a.Z, target=a.labels),
    "sgd_update": lambda a: dict(param=a.param, grad=a.grad, velocity=a.m, lr=0.1, momentum=0.9),
    "adam_update": lambda a: dict(param=a.param, grad=a.grad, m=a.m, v=a.v, step=1),
    "rmsprop_update": lambda a: dict(param=a.param, grad=a.grad, square_avg=a.v, grad_avg=a.m,
                                     centered=True),
}


def ones(*shape, dtype=np.float64, order="C"):
    return np.ones(shape, dtype, order=order)


def frozen(array):
    array = array.copy()
    array.setflags(write=False)
    return array


f32, i64 = np.float32, np.int64
# (kernel, argument, its bad value (or a function of the Arrays), error, fragments of the message)
BAD = [
    # dimensions and shapes: a shape mismatch names both shapes
    ("linear_forward", "X", lambda a: a.X[0], ValueError, "X", "(3,)"),
    ("linear_forward", "W", lambda a: a.W[None], ValueError, "W", "(1, 3, 2)"),
    ("linear_forward", "W", ones(5, 2), ValueError, "(4, 3)", "(5, 2)"),
    ("linear_forward", "b", ones(3), ValueError, "(3, 2)", "(3,)"),
    ("linear_forward", "b", ones(1, 2), ValueError, "b", "(1, 2)"),
    ("linear_backward", "dY", ones(5, 2), ValueError, "(4, 3)", "(5, 2)"),
    ("linear_backward", "dY", ones(4, 3), ValueError, "(3, 2)", "(4, 3)"),
    ("activation", "Z", lambda a: a.b, ValueError, "Z", "(2,)"),
    ("activation_grad", "A", ones(4, 3), ValueError, "(4, 2)", "(4, 3)"),
    ("activation_grad", "dA", ones(3, 2), ValueError, "(4, 2)", "(3, 2)"),
    ("dense_forward", "X", ones(4, 2), ValueError, "(4, 2)", "(3, 2)"),
    ("dense_backward", "dA", ones(5, 2), ValueError, "(4, 3)", "(5, 2)"),
    ("dense_backward", "Z", ones(4, 3), ValueError, "(4, 2)", "(4, 3)"),
    ("loss", "output", lambda a: a.b, ValueError, "output", "(2,)"),
    ("loss", "target", ones(4, 3), ValueError, "(4, 2)", "(4, 3)"),
    ("loss", "target", lambda a: a.labels[:3], ValueError, "(4,)", "(3,)"),
    ("loss", "target", ones(4, 2, dtype=i64), ValueError, "labels", "(4, 2)"),
    ("sgd_update", "grad", ones(2, 3), ValueError, "(3, 2)", "(2, 3)"),
    ("sgd_update", "grad", lambda a: a.b, ValueError, "grad"),
    ("sgd_update", "velocity", ones(2, 3), ValueError, "velocity", "(2, 3)"),
    ("adam_update", "m", ones(6), ValueError, "m", "(6,)"),
    # dtypes: not float32/float64, or not the same one
    ("linear_forward", "X", ones(4, 3, dtype=i64), TypeError, "X", "int64"),
    ("linear_forward", "X", ones(4, 3, dtype=np.float16), TypeError, "float16"),
    ("linear_forward", "X", ones(4, 3, dtype=bool), TypeError, "bool"),
    ("linear_forward", "X", [[1, 2, 3]] * 4, TypeError, "X", "int64"),
    ("linear_forward", "W", ones(3, 2, dtype=complex), TypeError, "W", "complex128"),
    ("linear_forward", "W", ones(3, 2, dtype=f32), TypeError, "float32", "float64"),
    ("linear_forward", "b", ones(2, dtype=f32), TypeError, "float32", "float64"),
    ("linear_backward", "dY", ones(4, 2, dtype=f32), TypeError, "float32", "float64"),
    ("linear_backward", "dY", ones(4, 2, dtype=np.int32), TypeError, "int32"),
    ("activation", "Z", ones(4, 2, dtype=i64), TypeError, "Z", "int64"),
    ("activation", "Z", ones(4, 2, dtype=np.complex64), TypeError, "complex64"),
    ("activation_grad", "dA", ones(4, 2, dtype=f32), TypeError, "float32", "float64"),
    ("dense_forward", "b", ones(2, dtype=i64), TypeError, "b", "int64"),
    ("dense_backward", "A", ones(4, 2, dtype=i64), TypeError, "A", "int64"),
    ("dense_backward", "W", ones(3, 2, dtype=f32), TypeError, "float32", "float64"),
    ("loss", "output", ones(4, 2, dtype=i64), TypeError, "output", "int64"),
    ("loss", "output", ones(4, 2, dtype=complex), TypeError, "complex128"),
    ("loss", "target", ones(4, 2, dtype=f32), TypeError, "float32", "float64"),
    ("sgd_update", "param", ones(3, 2, dtype=i64), TypeError, "param"),
    ("sgd_update", "param", [[1.0, 2.0]] * 3, TypeError, "param"),
    ("sgd_update", "grad", ones(3, 2, dtype=f32), TypeError, "float32", "float64"),
    ("adam_update", "param", ones(3, 2, dtype=complex), TypeError, "param"),
    ("adam_update", "grad", ones(3, 2, dtype=complex), TypeError, "grad", "complex128"),
    ("adam_update", "v", ones(3, 2, dtype=f32), TypeError, "v", "float32"),
    # out buffers and updated state: exact shape and dtype, writeable, C-contiguous, an ndarray
    ("linear_forward", "out", ones(4, 3), ValueError, "(4, 3)", "(4, 2)"),
    ("linear_forward", "out", ones(4, 2, dtype=f32), TypeError, "out", "float32"),
    ("linear_forward", "out", frozen(ones(4, 2)), ValueError, "out", "read-only"),
    ("linear_forward", "out", ones(4, 4)[:, ::2], ValueError, "out", "C-contiguous"),
    ("linear_forward", "out", ones(4, 2, order="F"), ValueError, "out", "C-contiguous"),
    ("linear_forward", "out", [[0.0] * 2] * 4, ValueError, "out", "list"),
    ("linear_backward", "out", (None, None), ValueError, "out"),
    ("linear_backward", "out", (None, ones(2, 3), None), ValueError, "dW", "(2, 3)"),
    ("linear_backward", "out", (None, None, ones(2, dtype=f32)), TypeError, "db", "float32"),
    ("linear_backward", "out", (frozen(ones(4, 3)), None, None), ValueError, "dX", "read-only"),
    ("activation", "out", ones(2, 4), ValueError, "(2, 4)", "(4, 2)"),
    ("activation", "out", frozen(ones(4, 2)), ValueError, "read-only"),
    ("activation_grad", "out", ones(8, 2)[::2], ValueError, "C-contiguous"),
    ("dense_forward", "out", (None, ones(4, 3)), ValueError, "A", "(4, 3)"),
    ("dense_forward", "out", (None,) * 3, ValueError, "out"),
    ("dense_backward", "out", (None, None, None, ones(4, 2, dtype=f32)), TypeError, "dZ"),
    ("dense_backward", "out", (None, None, None, ones(4, 3)), ValueError, "dZ", "(4, 3)"),
    ("dense_backward", "out", (None,) * 3, ValueError, "out"),
    ("loss", "out", ones(4, 3), ValueError, "out", "(4, 3)"),
    ("loss", "out", frozen(ones(4, 2)), ValueError, "read-only"),
    ("sgd_update", "param", frozen(ones(3, 2)), ValueError, "param", "read-only"),
    ("sgd_update", "velocity", ones(3, 4)[:, ::2], ValueError, "velocity", "C-contiguous"),
    ("sgd_update", "velocity", frozen(ones(3, 2)), ValueError, "velocity", "read-only"),
    ("sgd_update", "velocity", None, ValueError, "velocity"),  # momentum 0.9 needs one
    ("adam_update", "m", frozen(ones(3, 2)), ValueError, "m", "read-only"),
    # names and activation parameters
    ("activation", "name", "swish", ValueError, "swish"),
    ("activation", "name", None, ValueError, "None"),
    ("activation", "name", ["relu"], ValueError, "relu"),
    ("activation", "beta", 0.1, ValueError, "beta"),
    ("activation", "alpha", float("nan"), ValueError, "alpha", "nan"),
    ("activation_grad", "name", "swish", ValueError, "swish"),
    ("activation_grad", "alpha", 1.0, ValueError, "tanh", "alpha"),
    ("dense_forward", "activation", "swish", ValueError, "swish"),
    ("dense_forward", "alpha", 2.0, ValueError, "relu", "alpha"),
    ("dense_backward", "activation", "swish", ValueError, "swish"),
    ("loss", "name", "hinge", ValueError, "hinge"),
    # labels
    ("loss", "target", np.array([0, 1, 2, 0]), ValueError, "[0, 2)", "2"),
    ("loss", "target", np.array([0, -1, 1, 0]), ValueError, "[0, 2)", "-1"),
    # optimizer settings
    ("sgd_update", "lr", -0.1, ValueError, "lr", "-0.1"),
    ("sgd_update", "lr", float("nan"), ValueError, "lr"),
    ("sgd_update", "momentum", -0.5, ValueError, "momentum"),
    ("sgd_update", "weight_decay", -1.0, ValueError, "weight_decay"),
    ("adam_update", "step", 0, ValueError, "step", "0"),
    ("adam_update", "step", -3, ValueError, "step", "-3"),
    ("adam_update", "lr", -1e-3, ValueError, "lr"),
    ("adam_update", "beta1", 1.0, ValueError, "beta1"),
    ("adam_update", "beta2", -0.1, ValueError, "beta2"),
    ("adam_update", "eps", -1e-8, ValueError, "eps"),
    ("rmsprop_update", "alpha", 1.0, ValueError, "alpha"),
    # a hyperparameter that is no number: TypeError naming it
    ("sgd_update", "lr", None, TypeError, "lr", "None"),
    ("adam_update", "beta1", "fast", TypeError, "beta1", "fast"),
    ("rmsprop_update", "eps", [1e-8], TypeError, "eps"),
    ("rmsprop_update", "eps", 0.0, ValueError, "eps"),
    ("rmsprop_update", "momentum", -0.5, ValueError, "momentum"),
    ("rmsprop_update", "grad_avg", None, ValueError, "grad_avg", "centered"),
    ("rmsprop_update", "momentum", 0.9, ValueError, "momentum_buffer"),
    ("rmsprop_update", "square_avg", lambda a: a.v.astype(np.float32), TypeError, "square_avg"),
    ("rmsprop_update", "grad", lambda a: a.grad[:2], ValueError, "grad", "(3, 2)"),
    ("rmsprop_update", "square_avg", lambda a: a.grad, ValueError, "square_avg", "grad"),
]


def bad_params():
    count = Counter()
    for kernel, argument, value, error, *fragments in BAD:
        count[kernel, argument] += 1
        yield pytest.param(kernel, argument, value, error, fragments,
                           id=f"{kernel}-{argument}{count[kernel, argument]}")


@pytest.mark.parametrize("kernel, argument, value, error, fragments", list(bad_params()))
def test_bad_input_raises_and_touches_nothing(kernel, argument, value, error, fragments, backend):
    arrays = Arrays()
    before = {name: np.copy(array) for name, array in vars(arrays).items()}
    kwargs = VALID[kernel](arrays)
    kwargs[argument] = value(arrays) if callable(value) else value
    with pytest.raises(error) as raised:
        getattr(kernels, kernel)(**kwargs)
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    for name, array in vars(arrays).items():
        np.testing.assert_array_equal(array, before[name], err_msg=f"{name} changed by a rejected call")


# ----------------------------------------------------------------- inputs that reach the kernels
# Inputs the checks let through to a kernel; run in a child (see conftest.ProbeOutcomes), so a crash
# fails one test instead of killing the run.
CORNER_PROBES = r"""
import numpy as np
import fastbp
from fastbp import kernels
fastbp.use_backend(sys.argv[1])
X, W, b = np.ones((4, 3)), np.full((3, 2), 0.5), np.array([1.0, -1.0])
empty_k = np.ones((4, 0))
unaligned_out = np.zeros(8 * 8 + 1, np.uint8)[1:].view(np.float64).reshape(4, 2)


def summary(result):
    return None if result is None else np.asarray(result).tolist()


run_probes({name: (lambda call=call: summary(call())) for name, call in {
    "linear_forward_bias_none": lambda: kernels.linear_forward(X, W, None),
    "dense_forward_bias_none": lambda: kernels.dense_forward(X, W, None, "relu")[1],
    "linear_forward_no_features": lambda: kernels.linear_forward(np.ones((4, 0)), np.ones((0, 2)), b),
    "linear_backward_no_features": lambda: kernels.linear_backward(np.ones((4, 0)), np.ones((0, 2)),
                                                                   np.ones((4, 2)))[2],
    "linear_forward_no_outputs": lambda: kernels.linear_forward(X, np.ones((3, 0)), np.ones(0)),
    "softmax_no_outputs": lambda: kernels.activation("softmax", empty_k),
    "softmax_grad_no_outputs": lambda: kernels.activation_grad("softmax", empty_k, empty_k, empty_k),
    "squared_error_no_outputs": lambda: kernels.loss("squared_error", empty_k, empty_k)[0],
    "sigmoid_cross_entropy_no_outputs":
        lambda: kernels.loss("sigmoid_cross_entropy", empty_k, empty_k)[0],
    "softmax_cross_entropy_no_outputs":
        lambda: kernels.loss("softmax_cross_entropy", empty_k, empty_k)[0],
    "sgd_empty_param": lambda: kernels.sgd_update(np.ones((0, 3)), np.ones((0, 3)), np.ones((0, 3)),
                                                  lr=0.1, momentum=0.9),
    "adam_empty_param": lambda: kernels.adam_update(np.ones((3, 0)), *[np.zeros((3, 0))] * 3, step=1),
    "linear_forward_unaligned_out": lambda: kernels.linear_forward(X, W, b, out=unaligned_out),
}.items()})
"""

RAISES = [["error", "TypeError"], ["error", "ValueError"]]
# probe -> the acceptable outcomes
CORNER_OUTCOMES = {
    # b=None means "no bias" (X W = 1.5)
    "linear_forward_bias_none": [["ok", [[1.5, 1.5]] * 4]],
    "dense_forward_bias_none": [["ok", [[1.5, 1.5]] * 4]],
    "linear_forward_no_features": [["ok", [[1.0, -1.0]] * 4]],  # Z = b
    "linear_backward_no_features": [["ok", [4.0, 4.0]]],  # db = column sums of dY
    "linear_forward_no_outputs": [["ok", [[]] * 4]],
    "softmax_no_outputs": [["ok", [[]] * 4]],
    "softmax_grad_no_outputs": [["ok", [[]] * 4]],
    "squared_error_no_outputs": [["ok", 0.0]],
    "sigmoid_cross_entropy_no_outputs": [["ok", 0.0]],
    # no classes with rows to classify: a clean ValueError
    "softmax_cross_entropy_no_outputs": [["error", "ValueError"]],
    "sgd_empty_param": [["ok", None]],
    "adam_empty_param": [["ok", None]],
    # C-contiguous but at an odd address: refused
    "linear_forward_unaligned_out": [["error", "ValueError"]],
}


@pytest.fixture(scope="module")
def corner_outcomes():
    return {name: ProbeOutcomes(CORNER_PROBES, args=[name]) for name in BACKENDS
            if name == "numpy" or _backend.compiled_unavailable() is None}


@pytest.mark.parametrize("probe", CORNER_OUTCOMES)
def test_unchecked_corner_case_raises_cleanly_or_computes(probe, backend, corner_outcomes):
    outcome = corner_outcomes[backend][probe]
    assert outcome in CORNER_OUTCOMES[probe], f"{probe} on {backend}: {outcome}"


@pytest.mark.parametrize("probe", list(CORNER_OUTCOMES))
def test_unchecked_corner_case_same_on_both_backends(probe, compiled, corner_outcomes):
    assert corner_outcomes["compiled"][probe] == corner_outcomes["numpy"][probe]


# ------------------------------------------------------------ compiled modules called directly
# the compiled backend's ops (fastbp.kernels._COMPILED) are the `def` functions of fastbp._c_* (check: their __module__); called
# without fastbp.kernels' checks, they must refuse what their C loops cannot take.
DIRECT_PROBES = r"""
import numpy as np
from fastbp.kernels import KERNELS, _COMPILED as _compiled
from fastbp.kernels import _reference

rng = np.random.default_rng(0)


def arr(*shape):
    return rng.standard_normal(shape)


def make_args(name):
    X, W, b, Y = arr(6, 4), arr(4, 5), arr(5), arr(6, 5)
    e = np.empty
    return {
        "linear_forward": lambda: [X, W, b, e((6, 5))],
        "linear_backward": lambda: [X, W, Y, e((6, 4)), e((4, 5)), e(5)],
        "activation": lambda: ["tanh", Y, e((6, 5)), 0.0],
        "activation_grad": lambda: ["tanh", Y, np.tanh(Y), arr(6, 5), e((6, 5)), 0.0],
        "dense_forward": lambda: ["relu", X, W, b, e((6, 5)), e((6, 5)), 0.0],
        "dense_backward": lambda: ["relu", X, W, Y, np.maximum(Y, 0), arr(6, 5), e((6, 5)), e((6, 4)),
                                   e((4, 5)), e(5), 0.0],
        "loss": lambda: ["softmax_cross_entropy", Y, np.eye(5)[[0, 1, 2, 3, 4, 0]], e((6, 5))],
        # step_update(name, param, grad, states, hyper, t): its arrays spread out here, gathered by
        # step_args (the state arrays last, so read_only_out freezes one)
        "sgd_update": lambda: [arr(4, 5), arr(4, 5), np.zeros((4, 5)), (0.1, 0.9, True, 0.01)],
        "adam_update": lambda: [arr(4, 5), arr(4, 5), np.zeros((4, 5)), np.zeros((4, 5)),
                                (1e-3, 0.9, 0.999, 1e-8, 0.0)],
        "rmsprop_update": lambda: [arr(4, 5), arr(4, 5), np.zeros((4, 5)), np.zeros((4, 5)),
                                   np.zeros((4, 5)), (0.01, 0.99, 1e-8, 0.0, 0.9, True)],
    }[name]()


def call(module, name, args):
    if not name.endswith("_update"):
        return getattr(module, name)(*args)
    step = name[:-len("_update")]
    return module.step_update(step, args[0], args[1], tuple(args[2:-1]), args[-1], 1)


def frozen(a):
    a.setflags(write=False)
    return a


# variant -> what to do to the first 2-D array (the last array, for read_only_out)
CORRUPT = {
    "fortran": np.asfortranarray,
    "int64": lambda a: a.astype(np.int64),
    "mixed_float32": lambda a: a.astype(np.float32),
    "none": lambda a: None,
    "wrong_shape": lambda a: np.ones((a.shape[0] + 1, a.shape[1] + 1)),
    "read_only_out": frozen,
}


def probe(name, variant):
    args = make_args(name)
    twin_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
    i = arrays[-1] if variant == "read_only_out" else next(i for i in arrays if args[i].ndim == 2)
    args[i] = CORRUPT[variant](args[i])
    call(_compiled, name, args)
    call(_reference, name, twin_args)  # reached only when the compiled kernel accepted the call
    return all(np.allclose(a, t) for a, t in zip(args, twin_args) if isinstance(a, np.ndarray))


def labels_probe(labels):
    return lambda: _compiled.loss("softmax_cross_entropy", arr(3, 4), labels, np.empty((3, 4)))


probes = {f"{name}-{variant}": (lambda name=name, variant=variant: probe(name, variant))
          for name in sys.argv[1:] for variant in CORRUPT}
probes.update({
    "loss-labels_too_large": labels_probe(np.array([0, 4, 1], np.intp)),
    "loss-labels_negative": labels_probe(np.array([0, -1, 1], np.intp)),
    "loss-labels_int32": labels_probe(np.array([0, 1, 1], np.int32)),
    "loss-labels_short": labels_probe(np.array([0, 1], np.intp)),
    "module_names": lambda: sorted({getattr(_compiled, n).__module__ for n in KERNELS}),
})
run_probes(probes)
"""

KERNEL_NAMES = ["linear_forward", "linear_backward", "activation", "activation_grad", "dense_forward",
                "dense_backward", "loss", "sgd_update", "adam_update", "rmsprop_update"]
DIRECT_VARIANTS = ["fortran", "int64", "mixed_float32", "none", "wrong_shape", "read_only_out"]


@pytest.fixture(scope="module")
def direct_outcomes():
    require_compiled()
    return ProbeOutcomes(DIRECT_PROBES, args=KERNEL_NAMES)


def test_compiled_kernels_are_the_c_modules_def_functions(direct_outcomes):
    modules = direct_outcomes["module_names"]
    assert modules[0] == "ok" and all(m.startswith("fastbp.kernels._c_") for m in modules[1]), modules


@pytest.mark.parametrize("name, variant", [
    *((name, variant) for name in KERNEL_NAMES for variant in DIRECT_VARIANTS),
    *(("loss", variant) for variant in ("labels_too_large", "labels_negative", "labels_int32",
                                        "labels_short"))])
def test_compiled_kernel_called_directly_refuses_bad_arrays(name, variant, direct_outcomes):
    """A Fortran-ordered, wrong-dtype, missing, misshapen or read-only-output array (or bad labels)
    makes the kernel raise (a Fortran array may instead give the twin's result) -- never crash or
    write garbage."""
    outcome = direct_outcomes[f"{name}-{variant}"]
    if variant == "fortran":
        assert outcome in RAISES + [["ok", True]], outcome
    else:
        assert outcome in RAISES, f"{name} accepted a {variant} array: {outcome}"
