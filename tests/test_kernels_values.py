"""Values: the compiled kernels against their NumPy twins, every layout against the contiguous case,
empty batches, aliased buffers, losses at extreme logits, and the forward formulas and optimizer
steps against independent (hand-derived or SciPy) truths.

Derivatives are in test_kernels_grad.py, bad input in test_kernels_input.py.
"""
import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import special

import fastbp
from conftest import (ACTIVATION_VARIANTS, CASES, LAYOUTS, LOSS_VARIANTS, SHAPES, Inputs,
                      assert_results_close, assert_results_same, case_params, dtype_params,
                      variant_id)
from fastbp import kernels

activation_variants = pytest.mark.parametrize(
    "name, params", [pytest.param(n, p, id=variant_id(n, p)) for n, p in ACTIVATION_VARIANTS])
loss_variants = pytest.mark.parametrize(
    "name, kind", [pytest.param(n, k, id=f"{n}[{k}]") for n, k in LOSS_VARIANTS])
dtypes = pytest.mark.parametrize("dtype", dtype_params())


# ---------------------------------------------------------------------------- compiled vs twin
def compare_backends(case, inputs, state, dtype):
    with fastbp.use_backend("numpy"):
        want = case.run(inputs, state)
    with fastbp.use_backend("compiled"):
        got = case.run(inputs, state)
    assert_results_close(got, want, dtype)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@dtypes
@pytest.mark.parametrize("case", case_params())
def test_compiled_matches_twin(case, dtype, shape, rng, compiled):
    compare_backends(case, *case.make(rng, shape, dtype), dtype)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 33), d=st.integers(1, 33), k=st.integers(1, 33), seed=st.integers(0, 2**32 - 1))
@dtypes
@pytest.mark.parametrize("case", case_params())
def test_compiled_matches_twin_any_shape(case, dtype, compiled, n, d, k, seed):
    compare_backends(case, *case.make(np.random.default_rng(seed), (n, d, k), dtype), dtype)


# ------------------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("layout", LAYOUTS)
@dtypes
@pytest.mark.parametrize("case", case_params())
def test_any_input_layout_gives_the_contiguous_result(case, dtype, layout, backend, rng):
    inputs, state = case.make(rng, (7, 5, 6), dtype)
    want = case.run(inputs, state)
    relaid = {name: LAYOUTS[layout](array) for name, array in inputs.items()}
    got = case.run(relaid, state)
    assert_results_same(got, want, dtype)
    for name, array in relaid.items():  # inputs are read, never written
        np.testing.assert_array_equal(array, inputs[name], err_msg=name)


# --------------------------------------------------------------------------------- empty batch
@dtypes
@pytest.mark.parametrize("case", case_params([case for case in CASES if case.has_rows]))
def test_empty_batch(case, dtype, backend, rng):
    n, d, k = 0, 3, 4
    for result in case.run(*case.make(rng, (n, d, k), dtype)):
        if result is None:  # dX not asked for
            continue
        if isinstance(result, float):  # a loss value: a mean over no rows
            assert result == 0.0
            continue
        assert result.dtype == dtype
        if result.shape not in ((0, d), (0, k)):  # not one row per example: dW or db, sums over no rows
            assert result.shape in ((d, k), (k,))
            np.testing.assert_array_equal(result, 0)


@dtypes
def test_empty_batch_overwrites_given_gradient_buffers(dtype, backend):
    """dW and db of no examples are 0 even when the out buffers held garbage."""
    X, dY = np.empty((0, 3), dtype), np.empty((0, 4), dtype)
    W = np.ones((3, 4), dtype)
    garbage = [np.full(shape, np.nan, dtype) for shape in ((0, 3), (3, 4), (4,), (0, 4))]
    dX, dW, db = kernels.linear_backward(X, W, dY, out=tuple(b.copy() for b in garbage[:3]))
    assert dX.shape == (0, 3)
    np.testing.assert_array_equal(dW, 0)
    np.testing.assert_array_equal(db, 0)
    dX, dW, db = kernels.dense_backward(X, W, dY, dY, dY, "tanh", out=tuple(garbage))
    np.testing.assert_array_equal(dW, 0)
    np.testing.assert_array_equal(db, 0)
    value, grad = kernels.loss("softmax_cross_entropy", dY, np.empty(0, int), out=garbage[3])
    assert (value, grad.shape) == (0.0, (0, 4))


# ------------------------------------------------------------------------------------ aliasing
@dtypes
@activation_variants
def test_activation_in_place(name, params, dtype, backend, rng):
    Z = Inputs(rng, 9, 0, 7, dtype).normal(9, 7, scale=2.0)
    want = kernels.activation(name, Z, **params)
    buffer = Z.copy()
    got = kernels.activation(name, buffer, out=buffer, **params)
    assert got is buffer
    assert_results_same(got, want, dtype)


@dtypes
@activation_variants
def test_activation_grad_in_place(name, params, dtype, backend, rng):
    g = Inputs(rng, 9, 0, 7, dtype)
    Z, dA = g.normal(9, 7, scale=2.0), g.normal(9, 7)
    A = kernels.activation(name, Z, **params)
    want = kernels.activation_grad(name, Z, A, dA, **params)
    buffer = dA.copy()
    got = kernels.activation_grad(name, Z, A, buffer, out=buffer, **params)
    assert got is buffer
    assert_results_same(got, want, dtype)


@dtypes
@activation_variants
def test_dense_forward_with_A_aliasing_Z(name, params, dtype, backend, rng):
    X, W, b = Inputs(rng, 9, 5, 7, dtype).layer().values()
    want = kernels.dense_forward(X, W, b, name, **params)[1]
    buffer = np.empty((9, 7), dtype)
    Z, A = kernels.dense_forward(X, W, b, name, out=(buffer, buffer), **params)
    assert Z is buffer and A is buffer
    assert_results_same(A, want, dtype)


@dtypes
@activation_variants
def test_dense_backward_with_dZ_aliasing_dA(name, params, dtype, backend, rng):
    g = Inputs(rng, 9, 5, 7, dtype)
    X, W, b = g.layer().values()
    Z, A = kernels.dense_forward(X, W, b, name, **params)
    dA = g.normal(9, 7)
    want = kernels.dense_backward(X, W, Z, A, dA, name, **params)
    buffer = dA.copy()
    got = kernels.dense_backward(X, W, Z, A, buffer, name, out=(None, None, None, buffer), **params)
    assert_results_same(got, want, dtype)


@dtypes
@loss_variants
def test_loss_gradient_in_place(name, kind, dtype, backend, rng):
    g = Inputs(rng, 9, 0, 7, dtype)
    output, target = g.normal(9, 7, scale=3.0), g.target(kind)
    want = kernels.loss(name, output, target)
    buffer = output.copy()
    got = kernels.loss(name, buffer, target, out=buffer)
    assert got[1] is buffer
    assert_results_same(got, want, dtype)


OVERLAPS = {  # an output buffer that is also an input (square shapes), as NumPy's matmul allows
    "linear_forward-out_is_X": lambda X, W, b, dY: kernels.linear_forward(X, W, b, out=X),
    "dense_forward-Z_and_A_are_X":
        lambda X, W, b, dY: kernels.dense_forward(X, W, b, "tanh", out=(X, X)),
    "linear_backward-dX_is_dY":
        lambda X, W, b, dY: kernels.linear_backward(X, W, dY, out=(dY, None, None)),
    "dense_backward-dX_is_dA": lambda X, W, b, dY: kernels.dense_backward(
        X, W, X, np.tanh(X), dY, "tanh", out=(dY, None, None, None)),
}


@dtypes
@pytest.mark.parametrize("overlap", OVERLAPS)
def test_output_that_is_also_an_input(overlap, dtype, backend, rng):
    arrays = Inputs(rng, 6, 6, 6, dtype).layer()
    arrays["dY"] = Inputs(rng, 6, 6, 6, dtype).normal(6, 6)
    want = OVERLAPS[overlap](**{name: array.copy() for name, array in arrays.items()})
    assert_results_same(OVERLAPS[overlap](**arrays), want, dtype)


# ------------------------------------------------------------------- forward values, independent
def _softmax_row(row, alpha):
    top = max(row)
    exps = [math.exp(z - top) for z in row]
    return [e / sum(exps) for e in exps]


# f(z, alpha) written with the math module, elementwise (softmax: a row at a time)
FORMULAS = {
    "identity": lambda z, alpha: z,
    "sigmoid": lambda z, alpha: 1.0 / (1.0 + math.exp(-z)),
    "tanh": lambda z, alpha: math.tanh(z),
    "relu": lambda z, alpha: max(z, 0.0),
    "leaky_relu": lambda z, alpha: z if z > 0 else alpha * z,
    "softplus": lambda z, alpha: max(z, 0.0) + math.log1p(math.exp(-abs(z))),
    "elu": lambda z, alpha: z if z > 0 else alpha * math.expm1(z),
    "gelu": lambda z, alpha: 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0))),
    "silu": lambda z, alpha: z / (1.0 + math.exp(-z)),
}


def formula(name, Z, alpha):
    Z = Z.astype(float).tolist()
    if name == "softmax":
        return np.array([_softmax_row(row, alpha) for row in Z])
    return np.array([[FORMULAS[name](z, alpha) for z in row] for row in Z])


@dtypes
@activation_variants
def test_activation_matches_formula(name, params, dtype, backend, rng):
    Z = Inputs(rng, 6, 0, 11, dtype).normal(6, 11, scale=3.0)
    Z[0, :4] = [-30, 30, -1e-3, 1e-3]
    alpha = params.get("alpha", kernels.ACTIVATIONS[name])
    assert_results_close(kernels.activation(name, Z, **params), formula(name, Z, alpha).astype(dtype),
                         dtype)


def loss_truth(name, output, target):
    """(value, gradient) in float64 from SciPy's log-softmax/log-sigmoid, not the twin's formulas."""
    o = output.astype(float)
    n, k = o.shape
    if name == "squared_error":
        r = o - target
        return 0.5 * float((r * r).sum()) / n, r / n
    if name == "softmax_cross_entropy":
        T = np.eye(k)[target] if target.ndim == 1 else target.astype(float)
        value = -float((T * special.log_softmax(o, axis=1)).sum()) / n
        return value, (special.softmax(o, axis=1) - T) / n
    t = target.astype(float)
    value = -float((t * special.log_expit(o) + (1 - t) * special.log_expit(-o)).sum()) / n
    return value, (special.expit(o) - t) / n


@pytest.mark.parametrize("scale", [3.0, 1e4], ids=["moderate", "extreme"])
@dtypes
@loss_variants
def test_loss_matches_independent_formula_without_warnings(name, kind, dtype, scale, backend, rng):
    """Logits of +-1e4 give finite values and gradients and no floating-point warning."""
    g = Inputs(rng, 8, 0, 5, dtype)
    output, target = g.normal(8, 5, scale=scale), g.target(kind)
    if scale > 100:
        output = (np.sign(output) * scale).astype(dtype)
        output[0, 0] = 0  # a row with 1e4, -1e4 and 0 together
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = kernels.loss(name, output, target)
    assert np.isfinite(value) and np.isfinite(grad).all()
    want_value, want_grad = loss_truth(name, output, target)
    assert_results_close((value, grad), (want_value, want_grad.astype(dtype)), dtype)


@dtypes
def test_softmax_rows_sum_to_one(dtype, backend, rng):
    Z = Inputs(rng, 6, 0, 9, dtype).normal(6, 9, scale=5.0)
    Z[0] = 1e4
    Z[1, ::2] = -1e4
    Z[2, ::3] = 1e4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A = kernels.activation("softmax", Z)
    assert ((A >= 0) & (A <= 1)).all()
    np.testing.assert_allclose(A.sum(axis=1), 1, rtol=0, atol=10 * np.finfo(dtype).eps)
    np.testing.assert_allclose(A[0], 1 / 9, rtol=10 * np.finfo(dtype).eps)  # all equal: uniform
    assert_results_close(A, special.softmax(Z.astype(float), axis=1).astype(dtype), dtype)


@dtypes
@activation_variants
def test_activations_and_grads_finite_at_extreme_inputs(name, params, dtype, backend):
    Z = np.array([[-1e4, -50, 0, 50, 1e4]], dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A = kernels.activation(name, Z, **params)
        dZ = kernels.activation_grad(name, Z, A, np.ones_like(Z), **params)
    assert np.isfinite(A).all() and np.isfinite(dZ).all()


def nan_rows(dtype):
    """NaN in every position of a row, beside finite values and infinities of either sign (a
    softmax row with a NaN is all NaN)."""
    Z = np.array([[np.nan, -2.0, 0.0, 3.0, 40.0],
                  [-3.0, np.nan, 1.0, -np.inf, 0.5],
                  [0.25, -1.0, -0.0, 2.0, np.nan],
                  [-np.nan, 1.0, 2.0, -30.0, np.inf]], dtype)
    return Z


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@dtypes
@activation_variants
def test_nan_propagates_through_every_activation_and_grad_as_on_the_twin(name, params, dtype,
                                                                           compiled):
    """NaN in, NaN out on both backends, where the NumPy twin has it (issue 11: relu must not
    map NaN to 0)."""
    Z = nan_rows(dtype)
    dA = np.ones_like(Z)
    dA[1, 2] = np.nan
    results = {}
    for backend in ("numpy", "compiled"):
        with fastbp.use_backend(backend):
            A = kernels.activation(name, Z, **params)
            results[backend] = (A, kernels.activation_grad(name, Z, A, dA, **params))
    for got, want in zip(results["compiled"], results["numpy"]):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        finite = np.isfinite(want)
        assert_results_close(got[finite], want[finite], dtype)
    assert np.isnan(results["numpy"][0][0, 0])  # the NaN of row 0 always stays NaN


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@dtypes
@loss_variants
def test_nan_output_gives_a_nan_loss_on_both_backends(name, kind, dtype, compiled, rng):
    g = Inputs(rng, 4, 0, 5, dtype)
    output, target = g.normal(4, 5), g.target(kind)
    output[2, 3] = np.nan
    results = {}
    for backend in ("numpy", "compiled"):
        with fastbp.use_backend(backend):
            results[backend] = kernels.loss(name, output, target)
    (value, grad), (want_value, want_grad) = results["compiled"], results["numpy"]
    assert np.isnan(value) and np.isnan(want_value)
    np.testing.assert_array_equal(np.isnan(grad), np.isnan(want_grad))


@dtypes
def test_cross_entropy_labels_equal_one_hot(dtype, backend, rng):
    g = Inputs(rng, 10, 0, 4, dtype)
    output, labels = g.normal(10, 4, scale=3.0), g.target("labels")
    one_hot = np.eye(4, dtype=dtype)[labels]
    assert_results_close(kernels.loss("softmax_cross_entropy", output, labels),
                         kernels.loss("softmax_cross_entropy", output, one_hot), dtype)


# -------------------------------------------------------------------------------- optimizers
def tiny(rng, dtype, low=0.1):
    """A 2 x 3 float array with entries of size at least ``low`` and both signs."""
    values = rng.uniform(low, 2.0, (2, 3)) * rng.choice([-1.0, 1.0], (2, 3))
    return values.astype(dtype)


@dtypes
def test_sgd_plain_step(dtype, backend, rng):
    p0, g = tiny(rng, dtype), tiny(rng, dtype)
    param = p0.copy()
    assert kernels.sgd_update(param, g, lr=0.1) is None
    assert_results_close(param, (p0 - 0.1 * g.astype(float)).astype(dtype), dtype)


@pytest.mark.parametrize("nesterov", [False, True], ids=["momentum", "nesterov"])
@dtypes
def test_sgd_momentum_with_constant_gradient(nesterov, dtype, backend, rng):
    """With g fixed: v_t = -lr g (1 - mu^t) / (1 - mu); each step adds v_t (Nesterov: mu v_t - lr g)."""
    lr, mu, steps = 0.1, 0.9, 5
    p0, g = tiny(rng, dtype), tiny(rng, dtype)
    param, velocity = p0.copy(), np.zeros_like(p0)
    for _ in range(steps):
        kernels.sgd_update(param, g, velocity, lr=lr, momentum=mu, nesterov=nesterov)
    v = [-lr * (1 - mu ** t) / (1 - mu) for t in range(1, steps + 1)]
    moves = [mu * v_t - lr for v_t in v] if nesterov else v
    assert_results_close((param, velocity), ((p0 + sum(moves) * g.astype(float)).astype(dtype),
                                             (v[-1] * g.astype(float)).astype(dtype)), dtype)


@dtypes
def test_sgd_weight_decay_shrinks_geometrically(dtype, backend, rng):
    """Zero gradient: p_t = p_0 (1 - lr wd)^t."""
    p0 = tiny(rng, dtype)
    param = p0.copy()
    for _ in range(4):
        kernels.sgd_update(param, np.zeros_like(p0), lr=0.5, weight_decay=0.1)
    assert_results_close(param, (p0 * 0.95 ** 4).astype(dtype), dtype)


@dtypes
def test_adam_first_step_moves_by_lr_times_sign(dtype, backend, rng):
    p0, g = tiny(rng, dtype, low=0.01), tiny(rng, dtype, low=0.01)
    param, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    assert kernels.adam_update(param, g, m, v, step=1, lr=0.01) is None
    # m_hat = g and v_hat = g^2, so the step is lr g / (|g| + eps) = lr sign(g) to 1e-6 relative
    np.testing.assert_allclose(param, p0 - 0.01 * np.sign(g), rtol=0,
                               atol=1e-8 + 8 * np.finfo(dtype).eps)
    assert_results_close((m, v), ((0.1 * g.astype(float)).astype(dtype),
                                  (0.001 * g.astype(float) ** 2).astype(dtype)), dtype)


@dtypes
def test_adam_with_constant_gradient(dtype, backend, rng):
    """With g fixed: m_t = (1 - b1^t) g, v_t = (1 - b2^t) g^2, so every step is lr g / (|g| + eps)."""
    lr, b1, b2, eps, steps = 0.01, 0.8, 0.99, 1e-3, 6
    p0, g = tiny(rng, dtype), tiny(rng, dtype)
    param, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for step in range(1, steps + 1):
        kernels.adam_update(param, g, m, v, step=step, lr=lr, beta1=b1, beta2=b2, eps=eps)
    g64 = g.astype(float)
    want = (p0 - steps * lr * g64 / (np.abs(g64) + eps), (1 - b1 ** steps) * g64,
            (1 - b2 ** steps) * g64 ** 2)
    assert_results_close((param, m, v), tuple(w.astype(dtype) for w in want), dtype)


@dtypes
def test_adam_weight_decay_alone_pulls_towards_zero(dtype, backend, rng):
    """Zero gradient, first step: g = wd p, so each param moves by lr towards 0."""
    p0 = tiny(rng, dtype)
    param = p0.copy()
    kernels.adam_update(param, np.zeros_like(p0), np.zeros_like(p0), np.zeros_like(p0), step=1,
                        lr=0.01, eps=1e-12, weight_decay=0.1)
    # the step is lr |g| / (|g| + eps) with |g| >= 0.01: lr to 1e-10 relative
    np.testing.assert_allclose(param, p0 - 0.01 * np.sign(p0), rtol=0,
                               atol=1e-12 + 8 * np.finfo(dtype).eps)


OPTIMIZERS = {
    "sgd_nesterov": lambda p, g, s: kernels.sgd_update(p, g, s[0], lr=0.1, momentum=0.9, nesterov=True,
                                                      weight_decay=0.01),
    "adam": lambda p, g, s: kernels.adam_update(p, g, s[0], s[1], step=s[2], lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("layout", ["strided", "fortran", "reversed", "unaligned"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@dtypes
def test_optimizer_updates_any_param_layout_in_place(optimizer, dtype, layout, backend, rng):
    g = Inputs(rng, 0, 4, 5, dtype)
    p0, grads = g.normal(4, 5), g.normal(3, 4, 5)

    def run(param):
        state = [np.zeros((4, 5), dtype), np.zeros((4, 5), dtype)]
        for step, grad in enumerate(grads, start=1):
            assert OPTIMIZERS[optimizer](param, grad, state + [step]) is None
        return param, *state

    want = run(p0.copy())
    param = LAYOUTS[layout](p0)
    base_before = None if param.base is None else param.base.copy()
    address = param.__array_interface__["data"][0]
    got = run(param)
    assert got[0] is param and param.__array_interface__["data"][0] == address
    assert_results_same(got, want, dtype)
    if layout == "strided":  # the entries between the param's are untouched
        between = np.ones(param.base.shape, bool)
        between[1::2, 1::2] = False
        np.testing.assert_array_equal(param.base[between], base_before[between])


# ------------------------------------------------------- exact values at extreme finite inputs
# f and f' in closed forms that neither overflow nor cancel, with the math module in float64:
# the truth both backends are held to at |z| up to float32's maximum (the twin is the
# specification, so it must be at least as accurate as the compiled kernels).
def _phi(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _Phi(z):
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _logistic_slope(z, scale=1.0):
    """e / (1 + e)^2 with e = exp(-scale |z|): sigmoid' (scale 1), tanh' / 4 (scale 2)."""
    e = math.exp(-scale * abs(z))
    return e / ((1 + e) * (1 + e))


EXACT = {  # name -> (f(z, alpha), f'(z, alpha))
    "identity": (lambda z, a: z, lambda z, a: 1.0),
    "sigmoid": (lambda z, a: 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z)),
                lambda z, a: _logistic_slope(z)),
    "tanh": (lambda z, a: math.tanh(z), lambda z, a: 4 * _logistic_slope(z, 2.0)),
    "relu": (lambda z, a: max(z, 0.0), lambda z, a: 1.0 if z > 0 else 0.0),
    "leaky_relu": (lambda z, a: z if z > 0 else a * z, lambda z, a: 1.0 if z > 0 else a),
    "softplus": (lambda z, a: max(z, 0.0) + math.log1p(math.exp(-abs(z))),
                 lambda z, a: EXACT["sigmoid"][0](z, a)),
    "elu": (lambda z, a: z if z > 0 else a * math.expm1(z),
            lambda z, a: 1.0 if z > 0 else a * math.exp(z)),
    "gelu": (lambda z, a: z * _Phi(z), lambda z, a: _Phi(z) + z * _phi(z)),
    "silu": (lambda z, a: z * EXACT["sigmoid"][0](z, a),  # s (1 + z (1 - s)), 1 - s = s(-z)
             lambda z, a: EXACT["sigmoid"][0](z, a) * (1 + z * EXACT["sigmoid"][0](-z, a))),
}
# sigmoid' and tanh' are taken from A = f(Z) (the layers keep only A): exact given A
SLOPE_FROM_A = {"sigmoid": lambda a: a * (1 - a), "tanh": lambda a: (1 - a) * (1 + a)}
EXTREME_Z = [-3e38, -1e38, -1e6, -100.0, -40.0, -13.0, -10.0, -6.0, -1e-3, -1e-30, 0.0, 1e-30, 1e-3,
             6.0, 10.0, 40.0, 100.0, 1e6, 1e38, 3e38]


def assert_exact(got, want, dtype, rtol, what):
    """Relative ``rtol``, or a difference below the smallest normal number (subnormal results)."""
    got, want = np.asarray(got, float), np.asarray(want, float)
    tiny = float(np.finfo(dtype).tiny)
    bad = ~(np.abs(got - want) <= rtol * np.abs(want) + tiny) & ~(got == want)
    assert not bad.any(), \
        f"{what}: at {np.flatnonzero(bad).tolist()} got {got[bad]}, want {want[bad]}"


def exact_rtol(backend, dtype, name=""):
    """The twin: a few ulps of float64 math.  The compiled float32 kernels use _vmath.h (one ulp;
    the normal CDF and density, hence gelu, 5e-7 relative down to z = -13)."""
    if np.dtype(dtype) == np.float64:
        return 1e-13  # scipy's and libm's erfc differ by ~1e-14 in the far tail
    if backend == "compiled" and name == "gelu":
        return 1e-6
    return 4 * float(np.finfo(np.float32).eps)


@dtypes
@pytest.mark.parametrize("name, params", [pytest.param(n, p, id=variant_id(n, p))
                                          for n, p in ACTIVATION_VARIANTS if n != "softmax"])
def test_activation_and_slope_exact_at_extreme_inputs(name, params, dtype, backend):
    """Elementwise activations (softmax: test_softmax_and_its_loss_exact_at_float32_extremes)."""
    alpha = params.get("alpha", kernels.ACTIVATIONS[name])
    Z = np.array([EXTREME_Z], dtype)
    z = Z[0].astype(float).tolist()
    dA = np.full_like(Z, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A = kernels.activation(name, Z, **params)
        dZ = kernels.activation_grad(name, Z, A, dA, **params)
    f, slope = EXACT[name]
    rtol = exact_rtol(backend, dtype, name)
    assert_exact(A[0], [f(x, alpha) for x in z], dtype, rtol, f"{name} at {z}")
    if name in SLOPE_FROM_A:  # the kernels' contract: f' from the given A, exact from there
        want = [0.5 * SLOPE_FROM_A[name](a) for a in A[0].astype(float).tolist()]
    else:
        want = [0.5 * slope(x, alpha) for x in z]
    assert_exact(dZ[0], want, dtype, rtol, f"{name}' at {z}")


@dtypes
def test_gelu_left_tail_is_not_zero(dtype, backend):
    """gelu(-6) = -5.92e-9 and gelu(-10) = -7.6e-23 (1 + erf(z / sqrt 2) cancels to 0 there)."""
    A = kernels.activation("gelu", np.array([[-6.0, -10.0]], dtype))
    assert_exact(A[0], [-5.919525870226207e-09, -7.619853024160593e-23], dtype,
                 exact_rtol(backend, dtype, "gelu"), "gelu")


@dtypes
def test_sigmoid_cross_entropy_exact_at_huge_logits(dtype, backend):
    """Outputs [[L, 0.5]], targets [[1, 0]]: softplus(L) - L + softplus(0.5) = 0.97408 for any
    large L (the twin gave 1.0 at 1e6 and 0.0 at 1e8 in float32), gradient (sigmoid(o) - t) / n."""
    want = math.log1p(math.exp(0.5))
    for logit in (1e6, 1e8, 3e38):
        value, grad = kernels.loss("sigmoid_cross_entropy", np.array([[logit, 0.5]], dtype),
                                   np.array([[1, 0]], dtype))
        assert_exact([value], [want], dtype, exact_rtol(backend, dtype), f"loss at {logit}")
        assert_exact(grad[0], [0.0, EXACT["sigmoid"][0](0.5, None)], dtype,
                     exact_rtol(backend, dtype), f"gradient at {logit}")


def _exact_log_softmax(row):
    top = max(row)
    lse = math.log(math.fsum(math.exp(x - top) for x in row))
    return [x - top - lse for x in row]


@pytest.mark.parametrize("kind", ["labels", "one_hot", "probabilities"])
@dtypes
def test_softmax_and_its_loss_exact_at_float32_extremes(kind, dtype, backend):
    """Logits +-3e38 (differences of 6e38 overflow float32): finite exact loss, no NaN from
    0 * log 0, gradients and softmax exact."""
    output = np.array([[3e38, -3e38, 0.0], [-1e38, -1e38, 1e38], [1e6, -1e6, 0.5]], dtype)
    labels = np.array([1, 0, 2])
    target = {"labels": labels, "one_hot": np.eye(3, dtype=dtype)[labels],
              "probabilities": np.array([[0.5, 0.5, 0], [0, 0.25, 0.75], [1, 0, 0]], dtype)}[kind]
    T = np.eye(3)[labels] if kind == "labels" else target.astype(float)
    log_p = [_exact_log_softmax(row) for row in output.astype(float).tolist()]
    want_value = -math.fsum(t * lp for t_row, lp_row in zip(T.tolist(), log_p)
                            for t, lp in zip(t_row, lp_row)) / 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, grad = kernels.loss("softmax_cross_entropy", output, target)
        A = kernels.activation("softmax", output)
    rtol = exact_rtol(backend, dtype)
    assert 1e38 < want_value < 1e39
    assert_exact([value], [want_value], dtype, rtol, "loss")
    p = np.exp(np.array(log_p))
    assert_exact(A, p, dtype, rtol, "softmax")
    assert_exact(grad, (p - T) / 3, dtype, rtol, "gradient")


@dtypes
def test_squared_error_exact_where_float32_squares_overflow(dtype, backend):
    output = np.array([[1e30, -3e38], [0.0, 2.0]], dtype)
    target = np.array([[-1e30, 3e38], [0.0, 0.0]], dtype)
    o, t = output.astype(float), target.astype(float)
    value, grad = kernels.loss("squared_error", output, target)
    assert_exact([value], [0.25 * float(((o - t) ** 2).sum())], dtype, exact_rtol(backend, dtype),
                 "loss")
    assert_exact(grad, (o - t) / 2, dtype, exact_rtol(backend, dtype), "gradient")


@dtypes
def test_optimizer_steps_exact_where_float32_intermediates_overflow(dtype, backend):
    """Adam with g = 1e20 (g^2 overflows float32, v = 1e37 does not) moves by lr; SGD's decay
    term wd p = 1e39 overflows float32, the new p = p (1 - lr wd) (and momentum's velocity
    -lr wd p) does not."""
    param, grad = np.full((1, 2), 1.0, dtype), np.array([[1e20, -1e20]], dtype)
    m, v = np.zeros_like(param), np.zeros_like(param)
    kernels.adam_update(param, grad, m, v, step=1, lr=0.01)
    rtol = exact_rtol(backend, dtype)
    g = grad.astype(float)
    assert_exact(param, [[0.99, 1.01]], dtype, rtol, "adam param")
    assert_exact(v, 0.001 * g * g, dtype, rtol, "adam v")
    assert_exact(m, 0.1 * g, dtype, rtol, "adam m")
    param = np.full((1, 2), 1e38, dtype)
    want = param.astype(float) * 0.5
    kernels.sgd_update(param, np.zeros_like(param), lr=0.05, weight_decay=10.0)
    assert_exact(param, want, dtype, rtol, "sgd param")
    for nesterov in (False, True):  # the decay term 1e39 inside the velocity, too
        param, velocity = np.full((1, 2), 1e38, dtype), np.zeros((1, 2), dtype)
        kernels.sgd_update(param, np.zeros_like(param), velocity, lr=0.05, momentum=0.5,
                           nesterov=nesterov, weight_decay=10.0)
        assert_exact(velocity, [[-5e37, -5e37]], dtype, rtol, "momentum velocity")
        assert_exact(param, [[2.5e37 if nesterov else 5e37] * 2], dtype, rtol, "momentum param")


# ------------------------------------------------------- a decayed gradient that nearly cancels
@pytest.mark.parametrize("name, settings, rtol", [
    ("adam", dict(lr=0.01, beta1=0.8, weight_decay=0.1), 1e-3),
    ("rmsprop", dict(lr=0.01, weight_decay=0.1), 5e-3),
    ("rmsprop", dict(lr=0.01, weight_decay=0.1, centered=True, momentum=0.5), 5e-3)])
def test_steps_where_the_gradient_and_the_decay_nearly_cancel(name, settings, rtol, compiled):
    """g + wd p of 1e-6 to 6e-6 beside entries of 0.05 to 0.2 (hypothesis found p = 1.566334,
    g = -0.15663223, wd = 0.1, where Adam's float32 step was 1.2% short): the step, lr gd /
    (sqrt(v) + eps) in effect, divides gd by a root of its own square, so its size depends on
    the rounding of gd only through eps (relative errors of 1e-4 for Adam, 1e-3 for RMSprop
    here), as long as the numerator and v see the same rounding of gd."""
    rng = np.random.default_rng(0)
    p0 = rng.uniform(0.5, 2.0, (64, 8)).astype(np.float32)
    p0[0, 0] = 1.566334
    sign = rng.choice([-1.0, 1.0], p0.shape)
    g = (-0.1 * p0.astype(np.float64) * (1 + sign * rng.uniform(1e-5, 3e-5, p0.shape)))
    g = g.astype(np.float32)
    g[0, 0] = -0.15663223
    steps = []
    for backend in ("compiled", "numpy"):
        with fastbp.use_backend(backend):
            p = p0.copy()
            if name == "adam":
                kernels.adam_update(p, g, np.zeros_like(p), np.zeros_like(p), step=1, **settings)
            else:
                kernels.rmsprop_update(p, g, *(np.zeros_like(p) for _ in range(3)), **settings)
            steps.append(p.astype(np.float64) - p0)
    np.testing.assert_allclose(steps[0], steps[1], rtol=rtol, atol=0)
