/* One home for the element math of fastbp's activations, losses and optimizer steps: the compiled
 * kernels (_c_activation.pyx, _c_step.pyx) and the training engine (fastbp/engine/_train_engine.h)
 * both compute with these functions, so the two compiled paths agree to the bit.  (The NumPy twins
 * in _reference.py are the independent specification they are tested against.)
 *
 * Each function is `static inline` and branch-free enough for gcc to vectorise the loops that call
 * it.  Activations and losses exist for float (_f) and double (_d); the plain name picks by the
 * argument type (C11 _Generic), so typed callers (a Cython fused function, the engine's REAL) write
 * one call.  The transcendental part comes in as an argument where an array pass computes it
 * (e = exp(-|z|), t = expm1(...), the normal CDF): the kernels run those as vectorised array
 * math over blocks (_vmath.h), the engine calls the scalar forms below in its loops.
 * Accuracy choices (the most accurate form of each, see tests/test_formulas.py):
 *   - sigmoid, softplus from e = exp(-|z|) <= 1 (never overflows); tanh from expm1(-2|z|) (no
 *     cancellation near 0); elu from expm1, its slope alpha exp(z) (A + alpha would cancel);
 *   - GELU z Phi(z) with Phi(z) = erfc(-z / sqrt 2) / 2 (erf + 1 loses everything below z = -4:
 *     GELU(-6) is -5.92e-9, not 0), its slope Phi(z) + z phi(z);
 *   - sigmoid's and tanh's slopes from A in double (an A outside [0, 1] must not overflow them;
 *     (1 - A)(1 + A): 1 - A^2 would cancel near |A| = 1);
 *   - loss terms in double (a float32 difference of 6e38, a square of 1e30 are finite there);
 *   - optimizer steps in the parameter's type, scaled before squaring or decaying (a float32
 *     gradient of 1e20 has a square that overflows float32; sqrt(1 - b2) times it does not).
 */
#ifndef FASTBP_FORMULAS_H
#define FASTBP_FORMULAS_H
#include <float.h>
#include "_registry.h"
/* a module may use none of _vmath.h's array functions (they are then dropped): no warning */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "_vmath.h"
#pragma GCC diagnostic pop

#define FB_SQRT_HALF 0.70710678118654752440
#define FB_INV_SQRT_2PI 0.39894228040143267794

/* ------------------------------------------------------------ scalar transcendental math */
static inline float fb_exp_f(float x) { return fb_expf(x); }
static inline double fb_exp_d(double x) { return exp(x); }
static inline float fb_expm1_neg_f(float x) { return fb_expm1f_neg(x); }  /* x <= 0 */
static inline double fb_expm1_neg_d(double x) { return expm1(x); }
static inline float fb_log1p_pos_f(float x) { return fb_log1pf_pos(x); }  /* x >= 0 */
static inline double fb_log1p_pos_d(double x) { return log1p(x); }
static inline void fb_normal_f(float z, float *cdf, float *pdf) { fb_normal(z, cdf, pdf); }
/* Phi(z) = erfc(-z / sqrt 2) / 2 and phi(z) = exp(-z^2 / 2) / sqrt(2 pi) */
static inline void fb_normal_d(double z, double *cdf, double *pdf)
{
    *cdf = 0.5 * erfc(z * -FB_SQRT_HALF);
    *pdf = FB_INV_SQRT_2PI * exp(-0.5 * z * z);
}

/* ------------------------------------------------------------ activations, f beside f' */
#define FB_ELEMENT_MATH(T, S)                                                                    \
/* -|z|, NaN kept */                                                                             \
static inline T fb_neg_abs##S(T z) { return z > 0 ? -z : z; }                                    \
/* identity: f = z, f' = 1.  relu: */                                                            \
static inline T fb_relu##S(T z) { return z < 0 ? (T)0 : z; } /* NaN stays NaN, as np.maximum */ \
static inline T fb_relu_slope##S(T z) { return z > 0 ? (T)1 : (T)0; }                            \
static inline T fb_leaky_relu##S(T z, T alpha) { return z < 0 ? z * alpha : z; }                 \
static inline T fb_leaky_relu_slope##S(T z, T alpha) { return z > 0 ? (T)1 : alpha; }            \
/* sigmoid from e = exp(-|z|); also softplus' slope */                                           \
static inline T fb_sigmoid_e##S(T z, T e) { return (z >= 0 ? (T)1 : e) / ((T)1 + e); }           \
static inline T fb_sigmoid##S(T z) { return fb_sigmoid_e##S(z, fb_exp##S(fb_neg_abs##S(z))); }   \
static inline T fb_sigmoid_slope##S(T a, T da) /* da f'(z) from a = f(z), in double */           \
{ double w = a; return (T)(da * (w * (1 - w))); }                                                \
/* tanh from t = expm1(-2|z|): tanh|z| = -t / (t + 2) */                                         \
static inline T fb_tanh_t##S(T z, T t) { T x = t / (t + (T)2); return z < 0 ? x : -x; }           \
static inline T fb_tanh##S(T z) { return fb_tanh_t##S(z, fb_expm1_neg##S(fb_neg_abs##S(z + z))); } \
static inline T fb_tanh_slope##S(T a, T da) { double w = a; return (T)(da * ((1 - w) * (1 + w))); } \
/* softplus from l = log1p(exp(-|z|)) */                                                         \
static inline T fb_softplus_l##S(T z, T l) { return (z > 0 ? z : (T)0) + l; }                     \
static inline T fb_softplus##S(T z)                                                              \
{ return fb_softplus_l##S(z, fb_log1p_pos##S(fb_exp##S(fb_neg_abs##S(z)))); }                    \
/* elu from t = expm1(min(z, 0)); slope alpha exp(min(z, 0)) from e = exp(min(z, 0)) */         \
static inline T fb_min0##S(T z) { return z > 0 ? (T)0 : z; }  /* NaN kept */                     \
static inline T fb_elu_t##S(T z, T t, T alpha) { return z < 0 ? t * alpha : z; }                 \
static inline T fb_elu##S(T z, T alpha) { return fb_elu_t##S(z, fb_expm1_neg##S(fb_min0##S(z)), alpha); } \
static inline T fb_elu_slope_e##S(T z, T e, T alpha) { return z > 0 ? (T)1 : alpha * e; }         \
static inline T fb_elu_slope##S(T z, T alpha) { return fb_elu_slope_e##S(z, fb_exp##S(fb_min0##S(z)), alpha); } \
/* gelu = z Phi(z), slope Phi(z) + z phi(z) */                                                   \
static inline T fb_gelu_c##S(T z, T cdf) { return z * cdf; }                                     \
static inline T fb_gelu_slope_c##S(T z, T cdf, T pdf) { return cdf + z * pdf; }                 \
static inline T fb_gelu##S(T z) { T c, p; fb_normal##S(z, &c, &p); return fb_gelu_c##S(z, c); }  \
static inline T fb_gelu_slope##S(T z) { T c, p; fb_normal##S(z, &c, &p); return fb_gelu_slope_c##S(z, c, p); } \
/* ---- each elementwise activation of the registry as the pair the span loops call (_act_span.h), */ \
/* given its registry row's array passes t, u: f = fb_f_<name>(z, t, u, alpha) and */             \
/* f' da = fb_df_<name>(z, a = f(z), da, t, u, alpha) */                                         \
static inline T fb_f_identity##S(T z, T t, T u, T al) { (void)t; (void)u; (void)al; return z; }  \
static inline T fb_df_identity##S(T z, T a, T da, T t, T u, T al)                                \
{ (void)z; (void)a; (void)t; (void)u; (void)al; return da; }                                     \
static inline T fb_f_sigmoid##S(T z, T e, T u, T al) { (void)u; (void)al; return fb_sigmoid_e##S(z, e); } \
static inline T fb_df_sigmoid##S(T z, T a, T da, T t, T u, T al)                                 \
{ (void)z; (void)t; (void)u; (void)al; return fb_sigmoid_slope##S(a, da); }                      \
static inline T fb_f_tanh##S(T z, T t, T u, T al) { (void)u; (void)al; return fb_tanh_t##S(z, t); } \
static inline T fb_df_tanh##S(T z, T a, T da, T t, T u, T al)                                    \
{ (void)z; (void)t; (void)u; (void)al; return fb_tanh_slope##S(a, da); }                         \
static inline T fb_f_relu##S(T z, T t, T u, T al) { (void)t; (void)u; (void)al; return fb_relu##S(z); } \
static inline T fb_df_relu##S(T z, T a, T da, T t, T u, T al)                                    \
{ (void)a; (void)t; (void)u; (void)al; return da * fb_relu_slope##S(z); }                        \
static inline T fb_f_leaky_relu##S(T z, T t, T u, T al) { (void)t; (void)u; return fb_leaky_relu##S(z, al); } \
static inline T fb_df_leaky_relu##S(T z, T a, T da, T t, T u, T al)                              \
{ (void)a; (void)t; (void)u; return da * fb_leaky_relu_slope##S(z, al); }                        \
static inline T fb_f_softplus##S(T z, T l, T u, T al) { (void)u; (void)al; return fb_softplus_l##S(z, l); } \
static inline T fb_df_softplus##S(T z, T a, T da, T e, T u, T al)                                \
{ (void)a; (void)u; (void)al; return da * fb_sigmoid_e##S(z, e); }                               \
static inline T fb_f_elu##S(T z, T t, T u, T al) { (void)u; return fb_elu_t##S(z, t, al); }      \
static inline T fb_df_elu##S(T z, T a, T da, T e, T u, T al)                                     \
{ (void)a; (void)u; return da * fb_elu_slope_e##S(z, e, al); }                                  \
static inline T fb_f_gelu##S(T z, T c, T p, T al) { (void)p; (void)al; return fb_gelu_c##S(z, c); } \
static inline T fb_df_gelu##S(T z, T a, T da, T c, T p, T al)                                    \
{ (void)a; (void)al; return da * fb_gelu_slope_c##S(z, c, p); }                                  \
/* silu (PyTorch's SiLU, swish) = z s with s = sigmoid(z) from e = exp(-|z|); slope */           \
/* s + z s (1 - s) = s (1 + z (1 - s)), 1 - s = sigmoid(-z) from e too (no cancellation: */       \
/* 1 - s would be 0 beyond z = 17 in float32; z (1 - s) never overflows, |1 - s| <= 1) */         \
static inline T fb_f_silu##S(T z, T e, T u, T al) { (void)u; (void)al; return z * fb_sigmoid_e##S(z, e); } \
static inline T fb_df_silu##S(T z, T a, T da, T e, T u, T al)                                    \
{ (void)a; (void)u; (void)al; return da * (fb_sigmoid_e##S(z, e) * ((T)1 + z * fb_sigmoid_e##S(-z, e))); } \
/* ------------------------------------------------------------ losses (terms in double) */      \
/* squared error: term d^2 / 2 (summed by the caller), gradient d / n, d = o - t in double */    \
static inline double fb_squared_error_d##S(T o, T t) { return (double)o - (double)t; }           \
/* sigmoid cross-entropy from logits: softplus(o) - t o = l + o ([o > 0] - t), l = log1p(e), */  \
/* e = exp(-|o|); gradient (sigmoid(o) - t) / n */                                               \
static inline double fb_sigmoid_ce##S(T o, T t, T l)                                             \
{ return (double)l + (double)o * ((o > 0 ? 1.0 : 0.0) - (double)t); }                           \
static inline T fb_sigmoid_ce_grad##S(T o, T t, T e, T scale)                                    \
{ return (fb_sigmoid_e##S(o, e) - t) * scale; }

FB_ELEMENT_MATH(float, _f)
FB_ELEMENT_MATH(double, _d)
#undef FB_ELEMENT_MATH

/* the plain names, by argument type */
#define FB_GENERIC(name, x) _Generic((x), float: name##_f, default: name##_d)
#define fb_exp(x) FB_GENERIC(fb_exp, x)(x)
#define fb_log1p_pos(x) FB_GENERIC(fb_log1p_pos, x)(x)
#define fb_expm1_neg(x) FB_GENERIC(fb_expm1_neg, x)(x)
#define fb_neg_abs(z) FB_GENERIC(fb_neg_abs, z)(z)
#define fb_min0(z) FB_GENERIC(fb_min0, z)(z)
#define fb_relu(z) FB_GENERIC(fb_relu, z)(z)
#define fb_relu_slope(z) FB_GENERIC(fb_relu_slope, z)(z)
#define fb_leaky_relu(z, alpha) FB_GENERIC(fb_leaky_relu, z)(z, alpha)
#define fb_leaky_relu_slope(z, alpha) FB_GENERIC(fb_leaky_relu_slope, z)(z, alpha)
#define fb_sigmoid_e(z, e) FB_GENERIC(fb_sigmoid_e, z)(z, e)
#define fb_sigmoid(z) FB_GENERIC(fb_sigmoid, z)(z)
#define fb_sigmoid_slope(a, da) FB_GENERIC(fb_sigmoid_slope, a)(a, da)
#define fb_tanh_t(z, t) FB_GENERIC(fb_tanh_t, z)(z, t)
#define fb_tanh(z) FB_GENERIC(fb_tanh, z)(z)
#define fb_tanh_slope(a, da) FB_GENERIC(fb_tanh_slope, a)(a, da)
#define fb_softplus_l(z, l) FB_GENERIC(fb_softplus_l, z)(z, l)
#define fb_softplus(z) FB_GENERIC(fb_softplus, z)(z)
#define fb_elu_t(z, t, alpha) FB_GENERIC(fb_elu_t, z)(z, t, alpha)
#define fb_elu(z, alpha) FB_GENERIC(fb_elu, z)(z, alpha)
#define fb_elu_slope_e(z, e, alpha) FB_GENERIC(fb_elu_slope_e, z)(z, e, alpha)
#define fb_elu_slope(z, alpha) FB_GENERIC(fb_elu_slope, z)(z, alpha)
#define fb_gelu_c(z, c) FB_GENERIC(fb_gelu_c, z)(z, c)
#define fb_gelu_slope_c(z, c, p) FB_GENERIC(fb_gelu_slope_c, z)(z, c, p)
#define fb_gelu(z) FB_GENERIC(fb_gelu, z)(z)
#define fb_gelu_slope(z) FB_GENERIC(fb_gelu_slope, z)(z)
#define fb_squared_error_d(o, t) FB_GENERIC(fb_squared_error_d, o)(o, t)
#define fb_sigmoid_ce(o, t, l) FB_GENERIC(fb_sigmoid_ce, o)(o, t, l)
#define fb_sigmoid_ce_grad(o, t, e, s) FB_GENERIC(fb_sigmoid_ce_grad, o)(o, t, e, s)

/* softmax cross-entropy: a row's value is sum_j t_j (lse - s_j), s = o - max o in double; a term
 * t_j s_j with s_j clamped at -DBL_MAX (a zero t_j beside an o_j of -inf adds 0, not NaN) */
static inline double fb_softmax_ce_term(double t, double s) { return t * (s < -DBL_MAX ? -DBL_MAX : s); }

/* ------------------------------------------------------------ optimizer steps, per element */
/* A step <name> of registry.STEPS is here a pair, the one home of its math:
 *   fb_<name>_consts(h, t, k): its loop constants k[0 .. FB_STEP_MAXK) from h, its
 *     hyperparameters in the registry's order, and t >= 1, the count of this update (double);
 *   fb_<name>_step_f / _d(p, g, s0, s1, s2, k): the new value of the parameter entry p from its
 *     gradient g, its state entries s0, s1, s2 (the registry's state order; NULL when absent)
 *     updated in place, k in the parameter's type T.
 * Both compiled paths run them through _step_span.h's loops.  In T (float: 8-wide vectors; within
 * an ulp or two of the float64 twin).  g is the raw gradient; the weight decay enters scaled, as
 * sw p with sw = s wd a constant (lr wd for SGD, (1 - b1) wd and sqrt(1 - b2) wd for Adam), so
 * that no intermediate is larger than the result it makes: wd p = 1e39 would overflow float32,
 * lr wd p = 5e37 does not.  sw = 0 (no decay) adds nothing, even to an infinite p.  Likewise
 * Adam squares sqrt(1 - b2) g, not g: (1e20)^2 overflows float32, (0.0316 1e20)^2 = v does not;
 * the square overflows only where v itself would. */

/* SGD (h: lr, momentum, nesterov, weight_decay; s0: the velocity, or NULL): p - lr (g + wd p);
 * with the velocity v = mu v - lr (g + wd p), p + v (Nesterov: p + mu v - lr (g + wd p)). */
static inline void fb_sgd_consts(const double *h, long t, double *k)
{
    (void)t;
    k[0] = h[0]; k[1] = h[0] * h[3]; k[2] = h[1]; k[3] = h[2];
}
/* Adam (h: lr, beta1, beta2, eps, weight_decay; s0, s1: m, v): with gs = r2 gd, rounded once
 * (r2 = sqrt(1 - b2), gd = g + wd p), m = b1 m + (c1 / r2) gs and v = b2 v + gs^2 (c1 = 1 - b1):
 * m and v see the same rounding of gd, so that m / sqrt(v) keeps its size where g and wd p
 * nearly cancel (two roundings of a gd of 1e-6 beside entries of 0.1 differ by 1%, and so did
 * the step); p - step m / (rs sqrt(v) + eps), which is lr (m / bc1) / (sqrt(v / bc2) + eps) with
 * step = lr / bc1 and rs = 1 / sqrt(bc2) (bc = 1 - beta^t) constants: one division. */
static inline void fb_adam_consts(const double *h, long t, double *k)
{
    double r2 = sqrt(1 - h[2]);
    k[0] = h[1]; k[1] = h[2]; k[2] = (1 - h[1]) / r2; k[3] = 0; k[4] = r2;
    k[5] = r2 * h[4]; k[6] = h[0] / (1 - pow(h[1], (double)t));
    k[7] = 1 / sqrt(1 - pow(h[2], (double)t)); k[8] = h[3];
}
/* RMSprop, PyTorch's (h: lr, alpha, eps, weight_decay, momentum, centered; s0: v, s1: ga when
 * centered, s2: b with momentum): gd = g + wd p, through gs = r gd rounded once (r = sqrt(1 - a),
 * as Adam's: v, ga and the step see the same rounding of gd); v = a v + gs^2; centered:
 * ga = a ga + (c / r) gs (c = 1 - a), d = sqrt(v - ga^2) + eps, else d = sqrt(v) + eps; momentum:
 * b = mu b + gd / d, p - lr b; else p - lr gd / d, with gd = gs / r.  v - ga^2 as sqrt(s - |ga|) sqrt(s + |ga|),
 * s = sqrt(v) (s - |ga| clamped at 0 for rounding: v >= ga^2): no square of ga to overflow, no
 * inf - inf where v alone overflows; a NaN stays NaN.  gd / d before lr (finite beside an
 * infinite v); lr = 0 leaves p, even beside an infinite step. */
static inline void fb_rmsprop_consts(const double *h, long t, double *k)
{
    double r = sqrt(1 - h[1]);
    (void)t;
    k[0] = h[1]; k[1] = r; k[2] = r * h[3]; k[3] = (1 - h[1]) / r; k[4] = 0;
    k[5] = h[0]; k[6] = 1 / r; k[7] = h[4]; k[8] = h[2];
}

#define FB_STEP_MATH(T, S, SQRT)                                                                 \
static inline T fb_decay##S(T p, T sw) { return sw != 0 ? sw * p : 0; }                         \
static inline T fb_sgd_step##S(T p, T g, T *v, T *s1, T *s2, const T *k)                         \
{                                                                                               \
    T s = k[0] * g + fb_decay##S(p, k[1]), vi;                                                  \
    (void)s1; (void)s2;                                                                         \
    if (!v) return p - s;                                                                       \
    vi = *v * k[2] - s;                                                                         \
    *v = vi;                                                                                    \
    return p + (k[3] != 0 ? k[2] * vi - s : vi);                                                \
}                                                                                               \
static inline T fb_adam_step##S(T p, T g, T *m, T *v, T *s2, const T *k)                         \
{                                                                                               \
    T gs = k[4] * g + fb_decay##S(p, k[5]);                                                     \
    T mi = *m * k[0] + k[2] * gs, vi = *v * k[1] + gs * gs;                                     \
    (void)s2;                                                                                   \
    *m = mi;                                                                                    \
    *v = vi;                                                                                    \
    return p - k[6] * mi / (k[7] * SQRT(vi) + k[8]);                                            \
}                                                                                               \
static inline T fb_rmsprop_step##S(T p, T g, T *v, T *ga, T *b, const T *k)                      \
{                                                                                               \
    T gs = k[1] * g + fb_decay##S(p, k[2]), vi = *v * k[0] + gs * gs, d = SQRT(vi);             \
    *v = vi;                                                                                    \
    if (ga) {                                                                                   \
        T gi = *ga * k[0] + k[3] * gs, m = gi < 0 ? -gi : gi;                                   \
        T lo = d - m;                                                                           \
        *ga = gi;                                                                               \
        d = SQRT(lo < 0 ? 0 : lo) * SQRT(d + m);                                                \
    }                                                                                           \
    d += k[8];                                                                                  \
    gs = gs * k[6] / d;                                                                         \
    if (b) {                                                                                    \
        gs += *b * k[7];                                                                        \
        *b = gs;                                                                                \
    }                                                                                           \
    return k[5] != 0 ? p - k[5] * gs : p;                                                       \
}

FB_STEP_MATH(float, _f, sqrtf)
FB_STEP_MATH(double, _d, sqrt)
#undef FB_STEP_MATH

/* The loop constants of step `code` (a registry.STEPS code), k[FB_STEP_MAXK] (the unused zero). */
static inline void fb_step_consts(int code, const double *h, long t, double *k)
{
    for (int j = 0; j < FB_STEP_MAXK; j++) k[j] = 0;
    switch (code) {
#define FB_CONSTS_CASE(CODE, name) case CODE: fb_##name##_consts(h, t, k); break;
    FB_STEPS(FB_CONSTS_CASE)
#undef FB_CONSTS_CASE
    }
}
/* _step_span.h's fb_step_span (compiled in _c_step; the engine calls it through this type) */
typedef void (*fb_step_span_fn)(int code, int single, long n, void *p, const void *g,
                                void *const *s, const double *k);

#endif
