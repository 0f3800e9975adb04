/* The span loops of the elementwise activations, generated from the registry: one switch over
 * FB_ACTIVATION_ELEMENTWISE (the X-macro list setup.py writes into _registry.h from
 * fastbp/kernels/registry.py), each case the same two steps per block of FB_CHUNK elements:
 *   1. the activation's array pass (its registry row's pre / slope_pre, fb_pre below): the
 *      transcendental part (exp, expm1, log1p, the normal CDF) as one of _vmath.h's array
 *      functions, shared by every activation and cloned for AVX2+FMA once (FB_CLONES);
 *   2. a loop over _formulas.h's inline element pair fb_f_<name> / fb_df_<name>, which gcc
 *      vectorises (branch-free, no call).
 * (One vectorised, cloned copy of exp inlined per activation and direction would not fit the .so
 * budget: measured 105 KB for _c_activation alone.)  Both compiled paths use these and list no
 * activation by hand: the kernels (_c_activation.pyx) and the engine (_train_engine.h).  Softmax
 * (a registry row with row = True) keeps its own row code in each.
 *
 *   fb_span_forward_{f,d}(code, z, a, m, alpha):          a = f(z) over m elements
 *   fb_span_backward_{f,d}(code, z, a, da, dz, m, alpha): dz = f'(z) da given a = f(z)
 * Every pointer is restrict, and a may nonetheless be z, dz may be da, a may be z: the very same
 * buffer (a layer keeping A in Z's buffer, an in-place gradient), where each element is read
 * before it is written, at the same index, so a vectorised loop (load a vector, then store it)
 * stays right; any other overlap is excluded (the kernels' callers refuse or copy it).  Without
 * restrict, gcc versions every loop against overlap: 8 KB more code, over the .so budget.  An
 * activation whose row has no array pass runs as one loop over the whole span.
 */
#ifndef FASTBP_ACT_SPAN_H
#define FASTBP_ACT_SPAN_H
#include <stddef.h>
#include "_registry.h"
#include "_formulas.h"

#define FB_CHUNK 256 /* elements per block: the scratch t, u stay in L1 */

/* the array passes the registry's pre / slope_pre name */
enum { FB_PRE_NONE, FB_PRE_EXP_NEGABS, FB_PRE_LOG1P_EXP_NEGABS, FB_PRE_EXPM1_NEG2ABS,
       FB_PRE_EXPM1_MIN0, FB_PRE_EXP_MIN0, FB_PRE_NORMAL };

/* The rarer passes (log1p, the normal CDF) as the array call, or, where FB_ACT_SPAN_SMALL is
 * defined (the engine: its .so has no room for their AVX2 clones, and trains sigmoid, tanh and
 * relu networks mostly), as a plain scalar loop. */
#ifdef FB_ACT_SPAN_SMALL
__attribute__((noinline, optimize("no-tree-vectorize"))) static void
fb_pre_rare_f(int kind, const float *z, float *t, float *u, ptrdiff_t c)
{
    for (ptrdiff_t j = 0; j < c; j++) {
        if (kind == FB_PRE_NORMAL) fb_normal_f(z[j], t + j, u + j);
        else t[j] = fb_log1p_pos_f(t[j]);
    }
}
#define FB_PRE_RARE(array_call, kind) fb_pre_rare_f(kind, z, t, u, c)
#else
#define FB_PRE_RARE(array_call, kind) array_call
#endif

/* t (and u) for c elements of z by pass kind (a constant where it is called: the switch folds) */
static inline void fb_pre_f(int kind, const float *z, float *t, float *u, ptrdiff_t c)
{
    switch (kind) {
    case FB_PRE_EXP_NEGABS: case FB_PRE_LOG1P_EXP_NEGABS:
        for (ptrdiff_t j = 0; j < c; j++) t[j] = fb_neg_abs_f(z[j]);
        fb_vexp(t, t, c, 0);
        if (kind == FB_PRE_LOG1P_EXP_NEGABS) FB_PRE_RARE(fb_vlog1p_pos(t, t, c), kind);
        break;
    case FB_PRE_EXPM1_NEG2ABS:
        for (ptrdiff_t j = 0; j < c; j++) t[j] = fb_neg_abs_f(z[j] + z[j]);
        fb_vexpm1_neg(t, t, c);
        break;
    case FB_PRE_EXPM1_MIN0: case FB_PRE_EXP_MIN0:
        for (ptrdiff_t j = 0; j < c; j++) t[j] = fb_min0_f(z[j]);
        if (kind == FB_PRE_EXP_MIN0) fb_vexp(t, t, c, 0);
        else fb_vexpm1_neg(t, t, c);
        break;
    case FB_PRE_NORMAL:
        FB_PRE_RARE(fb_vnormal(z, t, u, c), kind);
        break;
    default:
        break;
    }
}

static inline void fb_pre_d(int kind, const double *z, double *t, double *u, ptrdiff_t c)
{
    for (ptrdiff_t j = 0; j < c; j++) {
        double v = z[j];
        switch (kind) {
        case FB_PRE_EXP_NEGABS: t[j] = exp(fb_neg_abs_d(v)); break;
        case FB_PRE_LOG1P_EXP_NEGABS: t[j] = log1p(exp(fb_neg_abs_d(v))); break;
        case FB_PRE_EXPM1_NEG2ABS: t[j] = expm1(fb_neg_abs_d(v + v)); break;
        case FB_PRE_EXPM1_MIN0: t[j] = expm1(fb_min0_d(v)); break;
        case FB_PRE_EXP_MIN0: t[j] = exp(fb_min0_d(v)); break;
        case FB_PRE_NORMAL: fb_normal_d(v, t + j, u + j); break;
        default: break;
        }
    }
}

#define FB_SPAN_FORWARD_CASE(CODE, name, PRE, SLOPE_PRE)                                         \
    case CODE:                                                                                   \
        for (; m > 0; z += c, a += c, m -= c) {                                                  \
            c = PRE == FB_PRE_NONE || m < FB_CHUNK ? m : FB_CHUNK; /* no pass: one span */       \
            pre(PRE, z, t, u, c);                                                                \
            for (ptrdiff_t j = 0; j < c; j++)                                                    \
                a[j] = FB_GENERIC(fb_f_##name, alpha)(z[j], t[j], u[j], alpha);                  \
        }                                                                                        \
        return;
#define FB_SPAN_BACKWARD_CASE(CODE, name, PRE, SLOPE_PRE)                                        \
    case CODE:                                                                                   \
        for (; m > 0; z += c, a += c, da += c, dz += c, m -= c) {                                \
            c = SLOPE_PRE == FB_PRE_NONE || m < FB_CHUNK ? m : FB_CHUNK;                         \
            pre(SLOPE_PRE, z, t, u, c);                                                          \
            for (ptrdiff_t j = 0; j < c; j++)                                                    \
                dz[j] = FB_GENERIC(fb_df_##name, alpha)(z[j], a[j], da[j], t[j], u[j], alpha);   \
        }                                                                                        \
        return;

/* noinline: the engine's callers are cold (not vectorised); these loops must stay vectorised */
#define FB_SPANS(T, S)                                                                           \
__attribute__((noinline)) static void                                                            \
fb_span_forward##S(int code, const T *restrict z, T *restrict a, ptrdiff_t m, T alpha)           \
{                                                                                                \
    void (*const pre)(int, const T *, T *, T *, ptrdiff_t) = fb_pre##S;                          \
    T t[FB_CHUNK], u[FB_CHUNK];                                                                  \
    ptrdiff_t c;                                                                                 \
    if (code == FB_IDENTITY && a == z) return;                                                   \
    switch (code) { FB_ACTIVATION_ELEMENTWISE(FB_SPAN_FORWARD_CASE) default: return; }           \
}                                                                                                \
__attribute__((noinline)) static void                                                            \
fb_span_backward##S(int code, const T *restrict z, const T *restrict a, const T *restrict da,     \
                    T *restrict dz,                                                              \
                    ptrdiff_t m, T alpha)                                                        \
{                                                                                                \
    void (*const pre)(int, const T *, T *, T *, ptrdiff_t) = fb_pre##S;                          \
    T t[FB_CHUNK], u[FB_CHUNK];                                                                  \
    ptrdiff_t c;                                                                                 \
    if (code == FB_IDENTITY && dz == da) return;                                                 \
    switch (code) { FB_ACTIVATION_ELEMENTWISE(FB_SPAN_BACKWARD_CASE) default: return; }          \
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
FB_SPANS(float, _f)
FB_SPANS(double, _d)
#pragma GCC diagnostic pop
#undef FB_SPANS
#undef FB_SPAN_FORWARD_CASE
#undef FB_SPAN_BACKWARD_CASE
#endif
