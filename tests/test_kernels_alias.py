"""Outputs that overlap inputs (or other outputs): every kernel, every out slot, every argument,
both backends, both dtypes.

The rule is one table, ``fastbp.kernels._checks.ALIASES``: "same" pairs work in place on the very same
buffer, "copy" pairs read the input as it was before the call, and every other overlap raises
ValueError naming both arguments -- before anything is written.  A call that is accepted must
give what the same call gives with separate buffers.
"""
import numpy as np
import pytest

from conftest import assert_results_same, dtype_params
from fastbp import kernels
from fastbp.kernels import _checks

N = 4  # every matrix is N x N and every vector has N entries, so any two arguments can alias

# kernel -> (its arrays: name -> ndim, call(arrays) -> results); out slots are ALIASES[kernel]
SPECS = {
    "linear_forward": (dict(X=2, W=2, b=1, out=2), lambda a: (
        kernels.linear_forward(a["X"], a["W"], a["b"], out=a["out"]),)),
    "linear_backward": (dict(X=2, W=2, dY=2, dX=2, dW=2, db=1), lambda a: kernels.linear_backward(
        a["X"], a["W"], a["dY"], out=(a["dX"], a["dW"], a["db"]))),
    "dense_forward": (dict(X=2, W=2, b=1, Z=2, A=2), lambda a: kernels.dense_forward(
        a["X"], a["W"], a["b"], "tanh", out=(a["Z"], a["A"]))),
    "dense_backward": (dict(X=2, W=2, Z=2, A=2, dA=2, dX=2, dW=2, db=1, dZ=2),
                       lambda a: kernels.dense_backward(
                           a["X"], a["W"], a["Z"], a["A"], a["dA"], "tanh",
                           out=(a["dX"], a["dW"], a["db"], a["dZ"]))),
    "activation": (dict(Z=2, out=2), lambda a: (kernels.activation("elu", a["Z"], out=a["out"]),)),
    "activation_grad": (dict(Z=2, A=2, dA=2, out=2), lambda a: (kernels.activation_grad(
        "gelu", a["Z"], a["A"], a["dA"], out=a["out"]),)),
    "loss": (dict(output=2, target=2, out=2), lambda a: kernels.loss(
        "sigmoid_cross_entropy", a["output"], a["target"], out=a["out"])),
    "sgd_update": (dict(grad=2, param=2, velocity=2), lambda a: (kernels.sgd_update(
        a["param"], a["grad"], a["velocity"], lr=0.1, momentum=0.9, nesterov=True,
        weight_decay=0.1), a["param"], a["velocity"])),
    "adam_update": (dict(grad=2, param=2, m=2, v=2), lambda a: (kernels.adam_update(
        a["param"], a["grad"], a["m"], a["v"], step=2, lr=0.1, weight_decay=0.1),
        a["param"], a["m"], a["v"])),
    "rmsprop_update": (dict(grad=2, param=2, square_avg=2, grad_avg=2, momentum_buffer=2),
                       lambda a: (kernels.rmsprop_update(
                           a["param"], a["grad"], a["square_avg"], a["grad_avg"],
                           a["momentum_buffer"], lr=0.1, momentum=0.9, centered=True,
                           weight_decay=0.1),
                           a["param"], a["square_avg"], a["grad_avg"], a["momentum_buffer"])),
}

RESULTS = {"dense_forward": ("Z", "A")}  # the names of the results, where two outputs may share


def pairs():
    """(kernel, out slot, other argument): every slot with every input and every later slot."""
    for kernel, (arrays, _) in SPECS.items():
        slots = list(_checks.ALIASES[kernel])
        assert set(slots) <= set(arrays), kernel
        for i, slot in enumerate(slots):
            for other in arrays:
                if other != slot and (other not in slots or slots.index(other) < i):
                    yield pytest.param(kernel, slot, other, id=f"{kernel}-{slot}~{other}")


def values(kernel, dtype, rng):
    arrays, _ = SPECS[kernel]
    result = {name: rng.uniform(0.1, 1.0, (N,) * ndim).astype(dtype)
              for name, ndim in arrays.items()}
    if kernel == "adam_update":
        result["v"] = result["v"] ** 2  # a second moment is >= 0
    return result


def alias(arrays, slot, other, layout):
    """Make ``slot`` and ``other`` share memory: the very same buffer ("same"; a vector is the
    first row of a matrix) or one entry apart ("shifted").  The values they start with are the
    call's input values."""
    a, b = arrays[slot], arrays[other]
    big, small = (a, b) if a.ndim >= b.ndim else (b, a)
    flat = np.empty(big.size + 1, big.dtype)
    start = 1 if layout == "shifted" else 0
    flat[start:start + big.size] = big.ravel()
    big_view = flat[start:start + big.size].reshape(big.shape)
    small_view = flat[:small.size].reshape(small.shape)
    small_view[...] = small if small.ndim == big.ndim else small_view  # mixed: takes row 0's values
    if small.ndim == big.ndim and layout == "same":
        small_view = big_view
    result = dict(arrays)
    result[slot if a is big else other] = big_view
    result[other if a is big else slot] = small_view
    return result


def expected(kernel, slot, other, layout, shape_match):
    """'ok' or 'error', from the table."""
    rule = _checks.ALIASES[kernel][slot].get(other)
    if rule is None and other in _checks.ALIASES[kernel]:
        rule = _checks.ALIASES[kernel][other].get(slot)
    if rule == "copy":
        return "ok"
    if rule == "same":
        return "ok" if layout == "same" and shape_match else "error"
    return "error"


@pytest.mark.parametrize("layout", ["same", "shifted"])
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("kernel, slot, other", list(pairs()))
def test_out_overlapping_an_argument(kernel, slot, other, layout, dtype, backend, rng):
    arrays = alias(values(kernel, dtype, rng), slot, other, layout)
    snapshot = {name: array.copy() for name, array in arrays.items()}  # the values the call sees
    call = SPECS[kernel][1]
    shape_match = snapshot[slot].shape == snapshot[other].shape
    if expected(kernel, slot, other, layout, shape_match) == "error":
        with pytest.raises(ValueError) as raised:
            call(arrays)
        message = str(raised.value)
        assert f"{slot} overlaps {other}" in message or f"{other} overlaps {slot}" in message, \
            message
        for name, array in arrays.items():  # refused before anything was written
            np.testing.assert_array_equal(array, snapshot[name], err_msg=name)
        return
    want = call({name: array.copy() for name, array in snapshot.items()})
    got = call(arrays)
    if other in _checks.ALIASES[kernel]:  # two outputs in one buffer (Z and A): it holds the later
        named = dict(zip(RESULTS[kernel], got))
        assert named[other] is named[slot]
        keep = [name != other for name in RESULTS[kernel]]
        got = [r for r, k in zip(got, keep) if k]
        want = [r for r, k in zip(want, keep) if k]
    assert_results_same(tuple(r for r in got if r is not None),
                        tuple(r for r in want if r is not None), dtype)


def test_issue_example_out_is_W(backend, rng):
    """linear_backward(X, W, dY, out=(None, W, None)): dX from the W given, on both backends."""
    X, W, dY = rng.standard_normal((5, 3)), rng.standard_normal((3, 3)), rng.standard_normal((5, 3))
    W0 = W.copy()
    dX, dW, db = kernels.linear_backward(X, W, dY, out=(None, W, None))
    assert dW is W
    np.testing.assert_allclose(dX, dY @ W0.T, rtol=1e-12)
    np.testing.assert_allclose(dW, X.T @ dY, rtol=1e-12)


def test_the_table_names_every_kernel_and_only_known_rules():
    # step_update runs as one public kernel per optimizer step, <name>_update
    public = set(kernels.KERNELS) - {"step_update"} | {f"{s}_update" for s in kernels.STEPS}
    assert set(_checks.ALIASES) == public == set(SPECS)
    for kernel, slots in _checks.ALIASES.items():
        for rules in slots.values():
            assert set(rules.values()) <= {"same", "copy"}, kernel
            assert set(rules) <= set(SPECS[kernel][0]), kernel
