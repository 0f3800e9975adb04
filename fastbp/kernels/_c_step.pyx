"""Compiled losses and optimizer steps, the two ends of a training step's update (twins: ``loss``,
``sgd_update``, ``adam_update``, ``rmsprop_update`` in fastbp/kernels/_reference.py); one module,
to share the fixed size of a compiled module.

Each loss is a mean over the n rows.  Its terms and their sum are in double where a term can
exceed the dtype's range (squared error, sigmoid cross-entropy, the logit differences of the
softmax cross-entropy); the rest in the dtype's precision, added up in double per row or block.
The gradient (already divided by n) is written in the pass, or for softmax the row, that reads
the output, so ``grad`` may be ``output``.
Log-sum-exp and softplus are shifted, so logits of any finite size give finite values.

An optimizer step is one fused pass over the parameter and its state, in place, each element
computed in the parameter's type by _formulas.h's step (the engine's too), scaled so that no
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
    float fb_sgd_step_f(float p, float g, float lr, float lrwd)
    double fb_sgd_step_d(double p, double g, double lr, double lrwd)
    float fb_momentum_step_f(float p, float g, float* v, float mu, float lr, float lrwd,
                             bint nesterov)
    double fb_momentum_step_d(double p, double g, double* v, double mu, double lr, double lrwd,
                              bint nesterov)
    float fb_adam_step_f(float p, float g, float* m, float* v, float b1, float b2, float c1,
                         float c1wd, float r2, float r2wd, float step, float rs, float eps)
    double fb_adam_step_d(double p, double g, double* m, double* v, double b1, double b2,
                          double c1, double c1wd, double r2, double r2wd, double step, double rs,
                          double eps)
    float fb_rmsprop_step_f(float p, float g, float* v, float* ga, float* b, float a, float r,
                            float rwd, float c, float cwd, float lr, float wd, float mu, float eps)
    double fb_rmsprop_step_d(double p, double g, double* v, double* ga, double* b, double a,
                             double r, double rwd, double c, double cwd, double lr, double wd,
                             double mu, double eps)
    ctypedef struct fb_step_consts:
        double lr, lrwd, mu, b1, b2, c1, c1wd, r2, r2wd, eps
    fb_step_consts fb_step_constants(double lr, double wd, double mu, double b1, double b2,
                                     double eps)
    void fb_adam_scales(double lr, double b1, double b2, long t, double* step, double* rs)

# The codes: the C enum generated from fastbp/kernels/registry.py (setup.py writes _registry.h)
cdef extern from "_registry.h":
    enum:
        SQUARED_ERROR "FB_SQUARED_ERROR"
        SOFTMAX_CROSS_ENTROPY "FB_SOFTMAX_CROSS_ENTROPY"
        SIGMOID_CROSS_ENTROPY "FB_SIGMOID_CROSS_ENTROPY"
        FB_LOSS_COUNT
    const char* fb_loss_names[]


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


def loss(name, output, target, grad):
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
# Each element's step is _formulas.h's, in the parameter's type (the decay and Adam's square
# scaled first, so that a float32 gradient of 1e20 or a decay term of 1e39 overflows nothing the
# result does not), as the engine's.
cdef void sgd(floating* p, const floating* g, floating* v, Py_ssize_t size, double lr,
              double mu, bint nesterov, double wd) noexcept nogil:
    """g += wd p; v = mu v - lr g; p += v (Nesterov: p += mu v - lr g); without v: p -= lr g."""
    cdef Py_ssize_t i
    cdef fb_step_consts k = fb_step_constants(lr, wd, mu, 0, 0, 0)
    cdef floating lrf = <floating>k.lr, lrwd = <floating>k.lrwd, muf = <floating>k.mu
    if v == NULL:
        for i in range(size):
            if floating is float:
                p[i] = fb_sgd_step_f(p[i], g[i], lrf, lrwd)
            else:
                p[i] = fb_sgd_step_d(p[i], g[i], lrf, lrwd)
    else:
        for i in range(size):
            if floating is float:
                p[i] = fb_momentum_step_f(p[i], g[i], &v[i], muf, lrf, lrwd, nesterov)
            else:
                p[i] = fb_momentum_step_d(p[i], g[i], &v[i], muf, lrf, lrwd, nesterov)


cdef void adam(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t size,
               double lr, double b1, double b2, double step, double rs, double eps,
               double wd) noexcept nogil:
    """m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= step m / (rs sqrt(v) + eps) (see
    fb_adam_step)."""
    cdef Py_ssize_t i
    cdef fb_step_consts k = fb_step_constants(lr, wd, 0, b1, b2, eps)
    cdef floating b1f = <floating>k.b1, b2f = <floating>k.b2, c1 = <floating>k.c1
    cdef floating c1wd = <floating>k.c1wd, r2 = <floating>k.r2, r2wd = <floating>k.r2wd
    cdef floating stepf = <floating>step, rsf = <floating>rs, epsf = <floating>k.eps
    for i in range(size):
        if floating is float:
            p[i] = fb_adam_step_f(p[i], g[i], &m[i], &v[i], b1f, b2f, c1, c1wd, r2, r2wd, stepf,
                                  rsf, epsf)
        else:
            p[i] = fb_adam_step_d(p[i], g[i], &m[i], &v[i], b1f, b2f, c1, c1wd, r2, r2wd, stepf,
                                  rsf, epsf)


cdef void rmsprop(floating* p, const floating* g, floating* v, floating* ga, floating* buf,
                  Py_ssize_t size, double lr, double alpha, double eps, double wd,
                  double mu) noexcept nogil:
    """v = alpha v + (1 - alpha) g^2 (centered: ga = alpha ga + (1 - alpha) g); buf = mu buf +
    g / d, p -= lr buf, or without buf p -= lr g / d (see fb_rmsprop_step); ga, buf may be NULL."""
    cdef Py_ssize_t i
    cdef fb_step_consts k = fb_step_constants(lr, wd, mu, alpha, alpha, eps)
    cdef floating a = <floating>alpha, r = <floating>k.r2, rwd = <floating>k.r2wd
    cdef floating c = <floating>k.c1, cwd = <floating>k.c1wd, lrf = <floating>k.lr
    cdef floating wdf = <floating>wd, muf = <floating>k.mu
    cdef floating epsf = <floating>k.eps
    cdef floating* gai = NULL
    cdef floating* bi = NULL
    for i in range(size):
        if ga != NULL:
            gai = &ga[i]
        if buf != NULL:
            bi = &buf[i]
        if floating is float:
            p[i] = fb_rmsprop_step_f(p[i], g[i], &v[i], gai, bi, a, r, rwd, c, cwd, lrf, wdf, muf,
                                     epsf)
        else:
            p[i] = fb_rmsprop_step_d(p[i], g[i], &v[i], gai, bi, a, r, rwd, c, cwd, lrf, wdf, muf,
                                     epsf)


cdef int check_set(param, grad, a, str a_name, b, str b_name) except -1:
    """The parameter (any shape, writeable), its gradient and state buffers a, b (or None)."""
    check(param, "param", float_type(param, "param"), cnp.PyArray_NDIM(<cnp.ndarray>param), -1, -1,
          True)
    check_like(grad, "grad", param, False)
    if a is not None:
        check_like(a, a_name, param, True)
    if b is not None:
        check_like(b, b_name, param, True)
    return 0


def sgd_update(param, grad, velocity, double lr, double momentum, bint nesterov,
               double weight_decay, /):
    """In place: g = grad + weight_decay * param; velocity = momentum velocity - lr g; param +=
    velocity (Nesterov: param += momentum velocity - lr g).  velocity None: param -= lr g."""
    check_set(param, grad, velocity, "velocity", None, "")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef char* p = data(param)
    cdef char* g = data(grad)
    cdef char* v = data(velocity)
    with nogil:
        if cnp.PyArray_TYPE(<cnp.ndarray>param) == cnp.NPY_FLOAT:
            sgd(<float*>p, <float*>g, <float*>v, size, lr, momentum, nesterov, weight_decay)
        else:
            sgd(<double*>p, <double*>g, <double*>v, size, lr, momentum, nesterov, weight_decay)


def adam_update(param, grad, m, v, long step, double lr, double beta1, double beta2, double eps,
                double weight_decay, /):
    """In-place Adam step with bias correction; step = t >= 1 counts this update."""
    if m is None or v is None:
        raise TypeError("adam_update needs the m and v buffers")
    check_set(param, grad, m, "m", v, "v")
    cdef Py_ssize_t size = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef double step_size, rs
    fb_adam_scales(lr, beta1, beta2, step, &step_size, &rs)
    cdef char* p = data(param)
    cdef char* g = data(grad)
    cdef char* pm = data(m)
    cdef char* pv = data(v)
    with nogil:
        if cnp.PyArray_TYPE(<cnp.ndarray>param) == cnp.NPY_FLOAT:
            adam(<float*>p, <float*>g, <float*>pm, <float*>pv, size, lr, beta1, beta2, step_size,
                 rs, eps, weight_decay)
        else:
            adam(<double*>p, <double*>g, <double*>pm, <double*>pv, size, lr, beta1, beta2,
                 step_size, rs, eps, weight_decay)


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, double lr, double alpha,
                   double eps, double weight_decay, double momentum, /):
    """In-place RMSprop step (PyTorch's): centered when grad_avg is given, with momentum when
    momentum_buffer is given (None otherwise)."""
    if square_avg is None:
        raise TypeError("rmsprop_update needs the square_avg buffer")
    check_set(param, grad, square_avg, "square_avg", grad_avg, "grad_avg")
    if momentum_buffer is not None:
        check_like(momentum_buffer, "momentum_buffer", param, True)
    cdef Py_ssize_t size = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef char* p = data(param)
    cdef char* g = data(grad)
    cdef char* v = data(square_avg)
    cdef char* ga = data(grad_avg)
    cdef char* b = data(momentum_buffer)
    with nogil:
        if cnp.PyArray_TYPE(<cnp.ndarray>param) == cnp.NPY_FLOAT:
            rmsprop(<float*>p, <float*>g, <float*>v, <float*>ga, <float*>b, size, lr, alpha, eps,
                    weight_decay, momentum)
        else:
            rmsprop(<double*>p, <double*>g, <double*>v, <double*>ga, <double*>b, size, lr, alpha,
                    eps, weight_decay, momentum)
