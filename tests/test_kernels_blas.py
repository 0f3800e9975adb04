"""The compiled dense kernels on either BLAS (NumPy's own OpenBLAS, or SciPy's cython_blas):
both give the NumPy twin's results on every shape and layout, and the ILP64 route really is the
one taken (a recording sgemm/dgemm sees the calls, with 64-bit sizes)."""
import ctypes

import numpy as np
import pytest

from fastbp import kernels
from fastbp._platform import _blas_threads

from conftest import (LAYOUTS, SHAPES, _linear_cases, assert_results_close, case_params,
                      dtype_params, require_compiled)

DENSE_CASES = list(_linear_cases())


@pytest.fixture(params=["numpy", "scipy"])
def blas(request):
    """The compiled backend with its products on one BLAS, restored afterwards."""
    require_compiled()
    from fastbp.kernels import _compiled
    if request.param == "numpy":
        found = _blas_threads.numpy_openblas()
        if found is None or not found.ilp64:
            pytest.skip("NumPy has no ILP64 OpenBLAS that fastbp can call")
    saved = _compiled.blas
    _compiled.use_blas(request.param)
    try:
        with kernels_backend("compiled"):
            yield request.param
    finally:
        _compiled.use_blas(saved)


def kernels_backend(name):
    import fastbp
    return fastbp.use_backend(name)


def twin(case, inputs, state):
    with kernels_backend("numpy"):
        return case.run(inputs, state)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("case", case_params(DENSE_CASES))
def test_linear_kernels_match_the_twin(blas, case, dtype, shape, rng):
    inputs, state = case.make(rng, shape, dtype)
    want = twin(case, inputs, state)
    assert_results_close(case.run(inputs, state), want, dtype)


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("case", case_params(DENSE_CASES))
def test_linear_kernels_any_layout(blas, case, dtype, layout, rng):
    inputs, state = case.make(rng, SHAPES["square"], dtype)
    want = twin(case, inputs, state)
    laid_out = {name: None if array is None else layout(array) for name, array in inputs.items()}
    assert_results_close(case.run(laid_out, state), want, dtype)


@pytest.mark.parametrize("dtype", dtype_params())
def test_dense_kernels_match_the_twin(blas, dtype, rng):
    n, d, k = 33, 20, 7
    X = rng.standard_normal((n, d)).astype(dtype)
    W = rng.standard_normal((d, k)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    got = kernels.dense_forward(X, W, b, "tanh")
    with kernels_backend("numpy"):
        want = kernels.dense_forward(X, W, b, "tanh")
    assert_results_close(got, want, dtype)
    dA = rng.standard_normal((n, k)).astype(dtype)
    got = kernels.dense_backward(X, W, got[0], got[1], dA, "tanh")
    with kernels_backend("numpy"):
        want = kernels.dense_backward(X, W, want[0], want[1], dA, "tanh")
    assert_results_close(got, want, dtype)


GEMM64 = ctypes.CFUNCTYPE(None, *([ctypes.POINTER(ctypes.c_char)] * 2
                                  + [ctypes.POINTER(ctypes.c_int64)] * 3
                                  + [ctypes.c_void_p] * 2 + [ctypes.POINTER(ctypes.c_int64)]
                                  + [ctypes.c_void_p] + [ctypes.POINTER(ctypes.c_int64)]
                                  + [ctypes.c_void_p] * 2 + [ctypes.POINTER(ctypes.c_int64)]))


@pytest.mark.parametrize("dtype", dtype_params())
def test_ilp64_route_is_taken_with_64_bit_sizes(dtype, rng):
    """Hand the kernels recording gemms that forward to NumPy's real ones: every product of a
    forward and a backward pass arrives there, with the (m, n, k) a column-major BLAS expects."""
    require_compiled()
    from fastbp.kernels import _c_linear
    from fastbp.kernels import _compiled
    found = _blas_threads.numpy_openblas()
    if found is None or not found.ilp64:
        pytest.skip("NumPy has no ILP64 OpenBLAS that fastbp can call")
    saved = _compiled.blas
    calls = []

    def recorder(real_address):
        real = GEMM64(real_address)

        def gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
            calls.append((ta[0], tb[0], m[0], n[0], k[0]))
            real(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
        return GEMM64(gemm)

    s, d = recorder(found.sgemm), recorder(found.dgemm)
    address = lambda f: ctypes.cast(f, ctypes.c_void_p).value  # noqa: E731
    _c_linear.use_ilp64_blas(address(s), address(d))
    try:
        n, dd, k = 9, 6, 4
        X = rng.standard_normal((n, dd)).astype(dtype)
        W = rng.standard_normal((dd, k)).astype(dtype)
        dY = rng.standard_normal((n, k)).astype(dtype)
        with kernels_backend("compiled"):
            Z = kernels.linear_forward(X, W, None)
            dX, dW, db = kernels.linear_backward(X, W, dY)
    finally:
        _compiled.use_blas(saved)
    assert calls == [(b"N", b"N", k, n, dd), (b"N", b"T", k, dd, n), (b"T", b"N", dd, n, k)]
    np.testing.assert_allclose(Z, X @ W, rtol=1e-5)
    np.testing.assert_allclose(dX, dY @ W.T, rtol=1e-5)
    np.testing.assert_allclose(dW, X.T @ dY, rtol=1e-5)


def test_use_blas_refuses_unknown_names_and_half_pairs(blas):
    from fastbp.kernels import _c_linear
    from fastbp.kernels import _compiled
    with pytest.raises(ValueError, match="unknown BLAS"):
        _compiled.use_blas("mkl")
    with pytest.raises(ValueError, match="both"):
        _c_linear.use_ilp64_blas(1, 0)
    assert _compiled.blas == blas
