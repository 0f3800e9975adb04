"""Compiled losses and optimizer steps, the two ends of a training step's update (twins: ``loss``
and ``step_update`` in fastbp/kernels/_reference.py); one module, to share the fixed size of a
compiled module.

Each loss is a mean over the n rows.  Its terms and their sum are in double where a term can
exceed the dtype's range (squared error, sigmoid cross-entropy, the logit differences of the
softmax cross-entropy); the rest in the dtype's precision, added up in double per row or block.
The gradient (already divided by n) is written in the pass, or for softmax the row, that reads
the output, so ``grad`` may be ``output``.
Log-sum-exp and softplus are shifted, so logits of any finite size give finite values.

An optimizer step is one fused pass over the parameter and its state, in place, each element
computed in the parameter's type by _formulas.h's step, in _step_span.h's loop (the engine's too), scaled so that no
intermediate overflows where the result does not (a float32 gradient of 1e20: Adam squares
sqrt(1 - b2) g; a decay term wd p of 1e39: it enters as (lr wd) p); within a few ulps of the
float64 twin.
"""
cimport numpy as cnp
from libc.math cimport log

from fastbp.kernels._c_activation cimport v_exp, v_log1p_pos, v_max
from fastbp.kernels._c_common cimport (CHUNK, LANES, check, check_like, data, dim, fail, float_type,
                                       floating, table_code, total)

cnp.import_array()

# The element math of each loss and optimizer step (one home: _formulas.h, shared with the
# engine); the loss names are C11 _Generic macros that pick the float or double function by their
# first argument's type (declared here once, as double; C calls the right one).
cdef extern from "_formulas.h" nogil:
    double fb_neg_abs(double z)
    double fb_squared_error_d(double o, double t)
    double fb_sigmoid_ce(double o, double t, double l)
    double fb_sigmoid_ce_grad(double o, double t, double e, double scale)
    double fb_softmax_ce_term(double t, double s)

# The codes: the C enum generated from fastbp/kernels/registry.py (setup.py writes _registry.h)
cdef extern from "_registry.h":
    enum:
        SQUARED_ERROR "FB_SQUARED_ERROR"
        SOFTMAX_CROSS_ENTROPY "FB_SOFTMAX_CROSS_ENTROPY"
        SIGMOID_CROSS_ENTROPY "FB_SIGMOID_CROSS_ENTROPY"
        FB_LOSS_COUNT
    const char* fb_loss_names[]
    enum:
        FB_STEP_COUNT
        FB_STEP_MAXH
        FB_STEP_MAXK
        FB_STEP_MAXS
    const char* fb_step_names[]
    ctypedef struct fb_step_shape_t:
        int hyper, states, required, counts_steps
    const fb_step_shape_t fb_step_shape[]

cdef extern from "_step_span.h" nogil:
    void fb_step_consts(int code, const double* h, long t, double* k)
    void fb_step_span(int code, int single, long n, void* p, const void* g, void* const* s,
                      const double* k)


cdef int loss_code(object name) except -1:
    return table_code(name, fb_loss_names, FB_LOSS_COUNT, "loss")


cdef double squared_error(const floating* o, const floating* t, floating* g, Py_ssize_t size,
                          double n) noexcept nogil:
    """Sum of (o - t)^2 / 2 and g = (o - t) / n in one pass, in double (a float32 difference of
    6e38 or a square of 1e30 is finite there), the sum in LANES partial sums."""
    cdef double part[LANES]
    cdef double d, scale = 1 / n
    cdef Py_ssize_t j, l, body = size - size % LANES
    for l in range(LANES):
        part[l] = 0
    j = 0
    while j < body:
        for l in range(LANES):
            d = fb_squared_error_d(o[j + l], t[j + l])
            part[l] += d * d
            g[j + l] = <floating>(d * scale)
        j += LANES
    for j in range(body, size):
        d = fb_squared_error_d(o[j], t[j])
        part[0] += d * d
        g[j] = <floating>(d * scale)
    return 0.5 * total(part, LANES)


cdef double softmax_cross_entropy(const floating* o, const floating* t, const Py_ssize_t* labels,
                                  floating* g, Py_ssize_t rows, Py_ssize_t k,
                                  floating n) noexcept nogil:
    """Sum over rows of -sum_j t_j log softmax(o)_j = sum_j t_j (lse - s_j), with s = o - max o
    (in double, clamped at -DBL_MAX: no overflow, and a zero t_j times it is 0; so is sum_j t_j)
    and lse = log sum_j exp(s_j); t is a row of ``t`` or the one-hot of ``labels``.
    g = (softmax(o) - t) / n."""
    cdef Py_ssize_t i, j, label = -1
    cdef floating top, p
    cdef floating scale = 1 / n
    cdef double value = 0, lse, s, t_sum = 0
    if k == 0:
        return 0
    for i in range(rows):
        top = v_max(o, k)  # o is read before g (which may be o) is written
        if labels != NULL:
            label = labels[i]
            value += <double>o[label] - <double>top
        else:
            t_sum = 0
            for j in range(k):
                s = <double>o[j] - <double>top
                value += fb_softmax_ce_term(t[j], s)
                t_sum += t[j]
        v_exp(o, g, k, top)
        p = total(g, k)
        lse = log(p)
        p = 1 / p
        if labels == NULL:
            value -= lse * t_sum
            for j in range(k):
                g[j] = (g[j] * p - t[j]) * scale
            t += k
        else:
            value -= lse
            p = p * scale  # g = softmax(o) / n, then the label's entry less 1 / n (the engine's)
            for j in range(k):
                g[j] = g[j] * p
            g[label] -= scale
        o += k
        g += k
    return -value


cdef double sigmoid_cross_entropy(const floating* o, const floating* t, floating* g,
                                  Py_ssize_t size, floating n) noexcept nogil:
    """Sum of softplus(o) - t o = log1p(e) + o ([o > 0] - t), each term and the sum in double;
    g = (sigmoid(o) - t) / n, with e = exp(-|o|) shared, block by block through scratch
    buffers."""
    cdef floating e[CHUNK]
    cdef floating sp[CHUNK]
    cdef double terms[CHUNK]
    cdef Py_ssize_t j, c
    cdef floating scale = 1 / n
    cdef double value = 0
    while size > 0:
        c = CHUNK if size > CHUNK else size
        for j in range(c):
            e[j] = fb_neg_abs(o[j])
        v_exp(e, e, c, 0)
        v_log1p_pos(e, sp, c)
        for j in range(c):
            terms[j] = fb_sigmoid_ce(o[j], t[j], sp[j])
            g[j] = fb_sigmoid_ce_grad(o[j], t[j], e[j], scale)
        value += total(terms, c)
        o += c
        t += c
        g += c
        size -= c
    return value


cdef double run(int code, char* o, char* t, char* labels, char* g, Py_ssize_t rows, Py_ssize_t k,
                bint single) noexcept nogil:
    if code == SQUARED_ERROR:
        if single:
            return squared_error(<float*>o, <float*>t, <float*>g, rows * k, <double>rows)
        return squared_error(<double*>o, <double*>t, <double*>g, rows * k, <double>rows)
    if code == SIGMOID_CROSS_ENTROPY:
        if single:
            return sigmoid_cross_entropy(<float*>o, <float*>t, <float*>g, rows * k, <float>rows)
        return sigmoid_cross_entropy(<double*>o, <double*>t, <double*>g, rows * k, <double>rows)
    if single:
        return softmax_cross_entropy(<float*>o, <float*>t, <Py_ssize_t*>labels, <float*>g, rows, k,
                                     <float>rows)
    return softmax_cross_entropy(<double*>o, <double*>t, <Py_ssize_t*>labels, <double*>g, rows, k,
                                 <double>rows)


def loss(name, output, target, grad, /):
    """Return (value, grad) with grad = dL/d(output) (a mean over rows; value 0.0 for no rows).

    ``target`` has the output's shape and dtype, or for softmax_cross_entropy may be a 1-D intp
    array of class labels in [0, k).  ``grad`` may be ``output``.
    """
    cdef int code = loss_code(name)
    cdef int t = float_type(output, "output")
    check(output, "output", t, 2, -1, -1, False)
    cdef Py_ssize_t n = dim(output, 0), k = dim(output, 1), i
    cdef char* labels = NULL
    cdef Py_ssize_t* lab
    if (code == SOFTMAX_CROSS_ENTROPY and cnp.PyArray_Check(target)
            and cnp.PyArray_NDIM(<cnp.ndarray>target) == 1):
        check(target, "target", cnp.NPY_INTP, 1, n, -1, False)
        labels = data(target)
        lab = <Py_ssize_t*>labels
        for i in range(n):
            if lab[i] < 0 or lab[i] >= k:
                fail(ValueError, "labels must lie in [0, %d), got %d", (k, lab[i]))
    else:
        check(target, "target", t, 2, n, k, False)
    check(grad, "grad", t, 2, n, k, True)
    if n == 0:
        return 0.0, grad
    cdef char* o = data(output)
    cdef char* tg = data(target)
    cdef char* g = data(grad)
    cdef double value
    with nogil:
        value = run(code, o, tg, labels, g, n, k, t == cnp.NPY_FLOAT)
    return value / n, grad


# ---------------------------------------------------------------------------- optimizers
# Every step is _formulas.h's, each element in the parameter's type (the decay and Adam's square
# scaled first, so that a float32 gradient of 1e20 or a decay term of 1e39 overflows nothing the
# result does not), run by _step_span.h's loops: this module's fb_step_span, which the engine
# calls too (STEP_SPAN).
STEP_SPAN = <size_t>&fb_step_span  # the address fastbp.engine hands to the training engine


def step_update(name, param, grad, tuple states, tuple hyper, long t, /):
    """In place: optimizer step ``name`` (a registry.STEPS name) of param (any shape) from grad,
    its ``states`` arrays (the registry's order; None for one the settings leave out) updated
    too; ``hyper`` its hyperparameters (the registry's order); t >= 1 counts this update (read by
    the steps that count).  The checks are fastbp.kernels'; this guard keeps only what the C loop
    cannot take (a missing state it always keeps, a wrong count, arrays of another shape)."""
    cdef int code = table_code(name, fb_step_names, FB_STEP_COUNT, "optimizer step")
    cdef int j, nh = len(hyper), ns = len(states)
    if nh != fb_step_shape[code].hyper or ns != fb_step_shape[code].states:
        fail(ValueError, "%s takes %d hyperparameters and %d state arrays, got %d and %d",
             (name, fb_step_shape[code].hyper, fb_step_shape[code].states, nh, ns))
    if fb_step_shape[code].counts_steps and t < 1:
        fail(ValueError, "t must be >= 1 (this update's count), got %d", (t,))
    check(param, "param", float_type(param, "param"), cnp.PyArray_NDIM(<cnp.ndarray>param), -1, -1,
          True)
    check_like(grad, "grad", param, False)
    cdef void* s[FB_STEP_MAXS]
    cdef double h[FB_STEP_MAXH]
    cdef double k[FB_STEP_MAXK]
    for j in range(FB_STEP_MAXS):
        s[j] = NULL
    for j in range(ns):
        if states[j] is None:
            if fb_step_shape[code].required >> j & 1:
                fail(TypeError, "%s needs state array %d, got None", (name, j))
        else:
            check_like(states[j], "state", param, True)
            s[j] = data(states[j])
    for j in range(nh):
        h[j] = hyper[j]
    fb_step_consts(code, h, t, k)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef int single = cnp.PyArray_TYPE(<cnp.ndarray>param) == cnp.NPY_FLOAT
    cdef char* p = data(param)
    cdef char* g = data(grad)
    with nogil:
        fb_step_span(code, single, size, p, g, s, k)
