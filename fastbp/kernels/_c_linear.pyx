"""Compiled dense layers (twins: ``linear_forward``, ``linear_backward``, ``dense_forward``,
``dense_backward`` in fastbp/kernels/_reference.py).

Matrix products go to a BLAS (Fortran, column-major: SciPy's cython_blas, or NumPy's own
OpenBLAS when fastbp.kernels._compiled.use_blas picks it): a row-major n x k array is, to
BLAS, its k x n transpose, so C = X W is computed as C^T = W^T X^T without copies.  The bias,
the activation and its derivative, and the bias gradient ride on one pass over the n x k output
(see fastbp/kernels/_c_activation.pyx).  A gemm input that overlaps an output is copied first, so that
results match NumPy's matmul, which does the same.
"""
cimport numpy as cnp
from libc.limits cimport INT_MAX
from libc.stdint cimport int64_t, uintptr_t
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dgemm, sgemm

from fastbp.kernels._c_activation cimport act_backward, act_forward, activation_code
from fastbp.kernels._c_common cimport check, data, dim, float_type, floating, overlaps

cnp.import_array()

cdef int IDENTITY = activation_code("identity")


ctypedef void (*sgemm64_t)(char*, char*, int64_t*, int64_t*, int64_t*, float*, float*, int64_t*,
                           float*, int64_t*, float*, float*, int64_t*) noexcept nogil
ctypedef void (*dgemm64_t)(char*, char*, int64_t*, int64_t*, int64_t*, double*, double*,
                           int64_t*, double*, int64_t*, double*, double*, int64_t*) noexcept nogil
# ILP64 sgemm/dgemm to use instead of SciPy's (NumPy's OpenBLAS; see use_ilp64_blas)
cdef sgemm64_t sgemm64 = NULL
cdef dgemm64_t dgemm64 = NULL


def use_ilp64_blas(uintptr_t s, uintptr_t d, /):
    """Send the products to the ILP64 (64-bit integer) sgemm and dgemm at these addresses, which
    must stay loaded (NumPy's OpenBLAS: fastbp.kernels._compiled.use_blas); 0, 0: back to SciPy's."""
    global sgemm64, dgemm64
    if (s == 0) != (d == 0):
        raise ValueError("give both gemm addresses, or neither")
    sgemm64, dgemm64 = <sgemm64_t>s, <dgemm64_t>d


cdef void gemm(char transa, char transb, int m, int n, int k, const floating* A, int lda,
               const floating* B, int ldb, floating* C) noexcept nogil:
    """Column-major C (m x n, contiguous) = op(A) op(B).  Empty products are done here, since
    BLAS wants every leading dimension >= 1."""
    cdef floating one = 1, zero = 0
    cdef int64_t m8 = m, n8 = n, k8 = k, lda8 = lda, ldb8 = ldb
    if m == 0 or n == 0:
        return
    if k == 0:
        memset(C, 0, <size_t>m * n * sizeof(floating))
    elif floating is float:
        if sgemm64 != NULL:
            sgemm64(&transa, &transb, &m8, &n8, &k8, &one, <float*>A, &lda8, <float*>B, &ldb8,
                    &zero, C, &m8)
        else:
            sgemm(&transa, &transb, &m, &n, &k, &one, <float*>A, &lda, <float*>B, &ldb, &zero, C,
                  &m)
    else:
        if dgemm64 != NULL:
            dgemm64(&transa, &transb, &m8, &n8, &k8, &one, <double*>A, &lda8, <double*>B, &ldb8,
                    &zero, C, &m8)
        else:
            dgemm(&transa, &transb, &m, &n, &k, &one, <double*>A, &lda, <double*>B, &ldb, &zero,
                  C, &m)


cdef void forward(int code, const floating* X, const floating* W, const floating* b, floating* Z,
                  floating* A, int n, int d, int k, floating alpha) noexcept nogil:
    """Z = X W + b, A = f(Z)."""
    gemm(c'N', c'N', k, n, d, W, k, X, d, Z)
    act_forward(code, Z, b, A, n, k, alpha)


cdef void backward(const floating* X, const floating* W, const floating* dY, floating* dX,
                   floating* dW, int n, int d, int k) noexcept nogil:
    """dW = X^T dY and, unless dX is NULL, dX = dY W^T."""
    gemm(c'N', c'T', k, d, n, dY, k, X, d, dW)
    if dX != NULL:
        gemm(c'T', c'N', d, n, k, W, k, dY, k, dX)


cdef int layer_shapes(X, W, int t, Py_ssize_t* shape) except -1:
    """Check X (n x d) and W (d x k), store (n, d, k) in ``shape``; BLAS takes C ints."""
    check(X, "X", t, 2, -1, -1, False)
    check(W, "W", t, 2, dim(X, 1), -1, False)
    shape[0], shape[1], shape[2] = dim(X, 0), dim(X, 1), dim(W, 1)
    if shape[0] > INT_MAX or shape[1] > INT_MAX or shape[2] > INT_MAX:
        raise ValueError("array dimensions must be < 2**31 for BLAS")
    return 0


cdef unshared(a, out1, out2=None, out3=None):
    """``a``, or a copy of it when it shares memory with one of the outputs."""
    if overlaps(a, out1) or overlaps(a, out2) or overlaps(a, out3):
        return a.copy()
    return a


cdef int dense_fwd(int code, X, W, b, Z, A, double alpha) except -1:
    """Check, then run ``forward`` on the call's dtype."""
    cdef Py_ssize_t s[3]
    cdef int t = float_type(X, "X")
    layer_shapes(X, W, t, s)
    if b is not None:
        check(b, "b", t, 1, s[2], -1, False)
    check(Z, "Z", t, 2, s[0], s[2], True)
    check(A, "A", t, 2, s[0], s[2], True)
    X = unshared(X, Z, A)
    W = unshared(W, Z, A)
    cdef char* x = data(X)
    cdef char* w = data(W)
    cdef char* pb = data(b)
    cdef char* z = data(Z)
    cdef char* a = data(A)
    with nogil:
        if t == cnp.NPY_FLOAT:
            forward(code, <float*>x, <float*>w, <float*>pb, <float*>z, <float*>a, s[0], s[1], s[2],
                    <float>alpha)
        else:
            forward(code, <double*>x, <double*>w, <double*>pb, <double*>z, <double*>a, s[0], s[1],
                    s[2], alpha)
    return 0


def linear_forward(X, W, b, out, /):
    """out = X @ W + b (no bias when b is None)."""
    dense_fwd(IDENTITY, X, W, b, out, out, 0.0)
    return out


def dense_forward(name, X, W, b, Z, A, alpha, /):
    """Z = X @ W + b and A = f(Z), in one pass over Z after the gemm; A may be Z."""
    dense_fwd(activation_code(name), X, W, b, Z, A, alpha)
    return Z, A


cdef tuple dense_bwd(int code, X, W, Z, A, dA, dZ, dX, dW, db, double alpha):
    """Check, then dZ = f'(Z) dA and db = column sums of dZ in one pass, then the two gemms."""
    cdef Py_ssize_t s[3]
    cdef int t = float_type(X, "X")
    layer_shapes(X, W, t, s)
    check(dA, "dA", t, 2, s[0], s[2], False)
    check(Z, "Z", t, 2, s[0], s[2], False)
    check(A, "A", t, 2, s[0], s[2], False)
    if not (dZ is dA and code == IDENTITY):  # otherwise nothing is written to dZ
        check(dZ, "dZ", t, 2, s[0], s[2], True)
    if dX is not None:
        check(dX, "dX", t, 2, s[0], s[1], True)
    check(dW, "dW", t, 2, s[1], s[2], True)
    check(db, "db", t, 1, s[2], -1, True)
    X = unshared(X, dX, dW, db)
    W = unshared(W, dX, dW, db)
    if overlaps(dZ, dX) or overlaps(dZ, dW) or overlaps(dZ, db):
        dZ = dZ.copy()  # a fresh workspace
    cdef char* x = data(X)
    cdef char* w = data(W)
    cdef char* z = data(Z)
    cdef char* a = data(A)
    cdef char* da = data(dA)
    cdef char* dz = data(dZ)
    cdef char* dx = data(dX)
    cdef char* dw = data(dW)
    cdef char* pdb = data(db)
    with nogil:
        if t == cnp.NPY_FLOAT:
            act_backward(code, <float*>z, <float*>a, <float*>da, <float*>dz, <float*>pdb, s[0], s[2],
                         <float>alpha)
            backward(<float*>x, <float*>w, <float*>dz, <float*>dx, <float*>dw, s[0], s[1], s[2])
        else:
            act_backward(code, <double*>z, <double*>a, <double*>da, <double*>dz, <double*>pdb, s[0],
                         s[2], alpha)
            backward(<double*>x, <double*>w, <double*>dz, <double*>dx, <double*>dw, s[0], s[1], s[2])
    return dX, dW, db


def linear_backward(X, W, dY, dX, dW, db, /):
    """dW = X^T dY, db = column sums of dY and (unless dX is None) dX = dY W^T."""
    return dense_bwd(IDENTITY, X, W, dY, dY, dY, dY, dX, dW, db, 0.0)


def dense_backward(name, X, W, Z, A, dA, dZ, dX, dW, db, alpha, /):
    """dZ = f'(Z) * dA (dZ may be dA), then the linear backward; returns (dX, dW, db)."""
    return dense_bwd(activation_code(name), X, W, Z, A, dA, dZ, dX, dW, db, alpha)
