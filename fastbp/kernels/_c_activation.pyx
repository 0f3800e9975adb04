"""Compiled activations and their derivatives (twins: ``activation``, ``activation_grad`` in
fastbp/kernels/_reference.py).  The loops are also exported to fastbp/kernels/_c_linear.pyx for the fused layers,
and the array math (exp, log1p) to fastbp/kernels/_c_step.pyx for the losses.

The elementwise loops are not written here: _act_span.h generates them from the registry
(fastbp/kernels/registry.py) over _formulas.h's element math, for these kernels and the engine
alike.  Elementwise work runs over one flat span when it can (long, vectorisable loops) and row by row
when a row is needed (softmax, the bias of a fused forward, the bias gradient of a fused backward),
so each row is read from memory once and reworked while it sits in L1.
"""
cimport numpy as cnp
from libc.math cimport exp, log1p
from libc.string cimport memset

from fastbp.kernels._c_common cimport (check, data, dim, float_type, floating, table_code,
                                       total, dot)

cnp.import_array()

# The codes: the C enum generated from fastbp/kernels/registry.py (setup.py writes _registry.h)
cdef extern from "_registry.h":
    enum:
        SOFTMAX "FB_SOFTMAX"
        FB_ACTIVATION_COUNT
    const char* fb_activation_names[]


cdef int activation_code(object name) except -1:
    return table_code(name, fb_activation_names, FB_ACTIVATION_COUNT, "activation")


# ------------------------------------ array math: _vmath.h for float32, libm for float64 (y may be x)
cdef extern from "_vmath.h" nogil:
    float fb_vmax(const float* x, Py_ssize_t n)
    void fb_vexp(const float* x, float* y, Py_ssize_t n, float shift)
    void fb_vlog1p_pos(const float* x, float* y, Py_ssize_t n)

# The span loops of the elementwise activations (every registry row but softmax), generated from the
# registry's list over _formulas.h's element math (f beside f'): _act_span.h, shared with the engine.
cdef extern from "_act_span.h" nogil:
    void fb_span_forward_f(int code, const float* z, float* a, Py_ssize_t m, float alpha)
    void fb_span_forward_d(int code, const double* z, double* a, Py_ssize_t m, double alpha)
    void fb_span_backward_f(int code, const float* z, const float* a, const float* da, float* dz,
                            Py_ssize_t m, float alpha)
    void fb_span_backward_d(int code, const double* z, const double* a, const double* da,
                            double* dz, Py_ssize_t m, double alpha)


cdef floating v_max(const floating* x, Py_ssize_t n) noexcept nogil:
    """max_i x_i for n >= 1 (float64: NaNs skipped unless x_0 is NaN; a softmax row goes NaN
    anyway)."""
    cdef Py_ssize_t i
    cdef floating top = x[0]
    if floating is float:
        top = fb_vmax(x, n)
    else:
        for i in range(1, n):
            top = x[i] if x[i] > top else top
    return top


cdef void v_exp(const floating* x, floating* y, Py_ssize_t n, floating shift) noexcept nogil:
    """y = exp(x - shift)."""
    cdef Py_ssize_t i
    if floating is float:
        fb_vexp(x, y, n, shift)
    else:
        for i in range(n):
            y[i] = exp(x[i] - shift)

cdef void v_log1p_pos(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    """log1p for x >= 0."""
    cdef Py_ssize_t i
    if floating is float:
        fb_vlog1p_pos(x, y, n)
    else:
        for i in range(n):
            y[i] = log1p(x[i])

# ------------------------------------------------------------------------------- activations
cdef inline void span_forward(int code, const floating* z, floating* a, Py_ssize_t m,
                              floating alpha) noexcept nogil:
    """a = f(z) over m elements (any code but SOFTMAX); a may be z."""
    if floating is float:
        fb_span_forward_f(code, z, a, m, alpha)
    else:
        fb_span_forward_d(code, z, a, m, alpha)


cdef void softmax_row(const floating* z, floating* a, Py_ssize_t k) noexcept nogil:
    """a = exp(z - max z) / sum, for k >= 1; a may be z."""
    cdef Py_ssize_t j
    v_exp(z, a, k, v_max(z, k))
    cdef floating scale = 1 / total(a, k)
    for j in range(k):
        a[j] = a[j] * scale


cdef void act_forward(int code, floating* Z, const floating* b, floating* A, Py_ssize_t n,
                      Py_ssize_t k, floating alpha) noexcept nogil:
    """A = f(Z) for an n x k Z, after Z += b row by row when b is not NULL; A may be Z."""
    cdef Py_ssize_t i, j
    cdef floating* z
    if b == NULL and code != SOFTMAX:
        span_forward(code, Z, A, n * k, alpha)
        return
    for i in range(n):
        z = Z + i * k
        if b != NULL:
            for j in range(k):
                z[j] = z[j] + b[j]
        if code == SOFTMAX:
            if k:
                softmax_row(z, A + i * k, k)
        else:
            span_forward(code, z, A + i * k, k, alpha)


cdef inline void span_backward(int code, const floating* z, const floating* a,
                               const floating* da, floating* dz, Py_ssize_t m,
                               floating alpha) noexcept nogil:
    """dz = f'(z) * da over m elements (any code but SOFTMAX) given a = f(z); dz may be da."""
    if floating is float:
        fb_span_backward_f(code, z, a, da, dz, m, alpha)
    else:
        fb_span_backward_d(code, z, a, da, dz, m, alpha)


cdef void softmax_grad_row(const floating* a, const floating* da, floating* dz,
                           Py_ssize_t k) noexcept nogil:
    """dz = a * (da - <da, a>), the softmax's Jacobian-vector product, in double (as the twin's:
    an a or da of 1e38 must not overflow the sum); dz may be da."""
    cdef Py_ssize_t j
    cdef double s = dot(da, a, k)
    for j in range(k):
        dz[j] = <floating>((da[j] - s) * a[j])


cdef void act_backward(int code, const floating* Z, const floating* A, const floating* dA,
                       floating* dZ, floating* db, Py_ssize_t n, Py_ssize_t k,
                       floating alpha) noexcept nogil:
    """dZ = f'(Z) * dA (n x k; dZ may be dA) and, when db is not NULL, db = column sums of dZ."""
    cdef Py_ssize_t i, j, row
    cdef floating* dz
    if db != NULL:
        memset(db, 0, k * sizeof(floating))
    elif code != SOFTMAX:
        span_backward(code, Z, A, dA, dZ, n * k, alpha)
        return
    for i in range(n):
        row = i * k
        dz = dZ + row
        if code == SOFTMAX:
            softmax_grad_row(A + row, dA + row, dz, k)
        else:
            span_backward(code, Z + row, A + row, dA + row, dz, k, alpha)
        if db != NULL:
            for j in range(k):
                db[j] = db[j] + dz[j]


def activation(name, Z, out, double alpha, /):
    """out = f(Z) elementwise (row-wise for softmax); out may be Z."""
    cdef int code = activation_code(name)
    cdef int t = float_type(Z, "Z")
    check(Z, "Z", t, 2, -1, -1, False)
    cdef Py_ssize_t n = dim(Z, 0), k = dim(Z, 1)
    check(out, "out", t, 2, n, k, True)
    cdef char* z = data(Z)
    cdef char* a = data(out)
    with nogil:
        if t == cnp.NPY_FLOAT:
            act_forward(code, <float*>z, <float*>NULL, <float*>a, n, k, <float>alpha)
        else:
            act_forward(code, <double*>z, <double*>NULL, <double*>a, n, k, alpha)
    return out


def activation_grad(name, Z, A, dA, out, double alpha, /):
    """out = dL/dZ given Z, A = f(Z) and dA = dL/dA; out may be dA."""
    cdef int code = activation_code(name)
    cdef int t = float_type(Z, "Z")
    check(Z, "Z", t, 2, -1, -1, False)
    cdef Py_ssize_t n = dim(Z, 0), k = dim(Z, 1)
    check(A, "A", t, 2, n, k, False)
    check(dA, "dA", t, 2, n, k, False)
    check(out, "out", t, 2, n, k, True)
    cdef char* z = data(Z)
    cdef char* a = data(A)
    cdef char* da = data(dA)
    cdef char* dz = data(out)
    with nogil:
        if t == cnp.NPY_FLOAT:
            act_backward(code, <float*>z, <float*>a, <float*>da, <float*>dz, <float*>NULL, n, k,
                         <float>alpha)
        else:
            act_backward(code, <double*>z, <double*>a, <double*>da, <double*>dz, <double*>NULL,
                         n, k, alpha)
    return out
