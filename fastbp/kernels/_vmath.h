/* Float32 vector math for the compiled kernels: y[i] = f(x[i]) over arrays for the functions
 * whose libm versions cannot be vectorised (exp, expm1, log1p, the normal CDF and density; tanh
 * as a scalar for the training engine), and a row maximum.  The element functions are
 * branch-free (every path computed, then selected; range reduction by the round-to-nearest trick;
 * 2^n built from exponent bits), so gcc -O3 vectorises the loops without -ffast-math.  With
 * GCC >= 12 on x86-64 glibc each loop also gets an AVX2+FMA clone, picked at load time by the CPU
 * (target_clones); the default clone is the portable baseline.
 * Accuracy: about one float32 ulp (relative 1.3e-7); the normal CDF and density 5e-7 relative
 * down to z = -13 (where the CDF is 6e-39).  NaN and +-inf behave as in libm.  Clones may round
 * differently by an ulp (FMA contraction).
 */
#ifndef FASTBP_VMATH_H
#define FASTBP_VMATH_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>

/* FB_CLONES: the one rule for run-time dispatched AVX2+FMA clones, for the kernels and the training
 * engine alike (both include this header).  target_clones("arch=x86-64-v3") dispatches on the CPU's
 * features (not its model name, as "arch=haswell" would: no clone on AMD); GCC accepts an
 * arch=x86-64-vN clone from GCC 12 on (GCC bug 101696; GCC 11 knows x86-64-v3 only for -march),
 * clang not yet, so older compilers (manylinux2014's GCC 10) build the portable baseline only.
 * The dispatch is an ifunc: glibc only. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && defined(__GLIBC__)
#define FB_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FB_CLONES
#endif

static inline float fb_bits_to_float(int32_t i) { union { int32_t i; float f; } u; u.i = i; return u.f; }
static inline int32_t fb_float_to_bits(float f) { union { int32_t i; float f; } u; u.f = f; return u.i; }

/* x = n ln2 + r with |r| <= ln2/2; returns r and stores n. */
static inline float fb_reduce(float x, float *n)
{
    const float shift = 12582912.0f;                 /* 1.5 * 2^23: adding it rounds to an integer */
    float k = (x * 1.44269504f + shift) - shift;
    *n = k;
    return (x - k * 0.693359375f) - k * -2.12194440e-4f;  /* ln2 split: Cephes */
}

/* expm1 on the reduced range, without cancellation: r + r^2 P(r) (Cephes expf). */
static inline float fb_expm1_reduced(float r)
{
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    return p * (r * r) + r;
}

static inline float fb_expf(float x)
{
    float c = x > -104.0f ? x : -104.0f;             /* also maps NaN into range ... */
    c = c < 88.8f ? c : 88.8f;
    float n;
    float r = fb_reduce(c, &n);
    int32_t k = (int32_t)n, half = k >> 1;          /* 2^n = 2^half 2^(n-half): both normal */
    float y = (fb_expm1_reduced(r) + 1.0f) * fb_bits_to_float((half + 127) << 23)
              * fb_bits_to_float((k - half + 127) << 23);
    return x == x ? y : x;                           /* ... and NaN comes back here */
}

/* expm1 for x <= 0 (all its callers): 2^n expm1(r) + (2^n - 1), exact for small |x|. */
static inline float fb_expm1f_neg(float x)
{
    float c = x > -30.0f ? x : -30.0f;               /* expm1(-30) == -1 in float32 */
    float n;
    float r = fb_reduce(c, &n);
    float s = fb_bits_to_float(((int32_t)n + 127) << 23);
    float y = s * fb_expm1_reduced(r) + (s - 1.0f);
    return x == x ? y : x;
}

/* tanh from expm1: tanh|x| = -expm1(-2|x|) / (2 + expm1(-2|x|)), with no cancellation near 0
 * (the formula of _c_activation's tanh, for scalar use: the training engine). */
static inline float fb_tanhf(float x)
{
    float t = fb_expm1f_neg(-2.0f * fabsf(x));
    float y = t / (t + 2.0f);
    return x < 0.0f ? y : -y;
}

/* log(1 + u) for u >= 0 (all its callers): log of w = 1 + u, plus the rounding error of w. */
static inline float fb_log1pf_pos(float u)
{
    float w = 1.0f + u;
    int32_t bits = fb_float_to_bits(w);
    int32_t e = ((bits >> 23) & 0xff) - 127;
    float m = fb_bits_to_float((bits & 0x007fffff) | 0x3f800000);   /* w = m 2^e, m in [1, 2) */
    int32_t big = m > 1.41421356f;                  /* m in [sqrt(1/2), sqrt(2)): Cephes logf */
    m = big ? m * 0.5f : m;
    e = big ? e + 1 : e;
    float f = m - 1.0f, z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float ef = (float)e;
    float y = f + (p * f * z - 0.5f * z + ef * -2.12194440e-4f) + ef * 0.693359375f;
    y = y + (u - (w - 1.0f)) / w;                   /* w = 1 + u rounded: correct log(w) to log1p(u) */
    return w < 3.0e38f ? y : w;                      /* u = inf (or NaN) passes through */
}

/* exp(-c s^2) for s >= 0, c a power of 2, with the square formed without rounding (for the
 * normal CDF below, erfc(a) = t exp(-a^2 + P(t)), t = 1 / (1 + a/2): Numerical Recipes' erfcc,
 * 1.2e-7 relative in exact arithmetic, with a^2 = s^2 / 2 from s = |z|, not from a rounded a):
 * s^2 = h^2 + (s + h)(s - h) with h = s cut to 12 significant bits (h^2 exact), so
 * exp(-c s^2) = exp(-c h^2) exp(-c (s + h)(s - h)); a rounded s^2 would cost s^2 ulps (8e-6
 * relative at s = 9). */
static inline float fb_exp_neg_square(float s, float c)
{
    s = s < 20.0f ? s : 20.0f;                       /* 0 in float32 long before; and inf */
    float h = fb_bits_to_float(fb_float_to_bits(s) & (int32_t)0xfffff000);
    return fb_expf(-c * (h * h)) * fb_expf(-c * ((s + h) * (s - h)));
}

/* The standard normal CDF Phi(z) = erfc(-z / sqrt 2) / 2 (GELU's; for z > 0 via 1 - Phi(-z))
 * into *cdf and density phi(z) = exp(-z^2 / 2) / sqrt(2 pi) into *pdf, sharing exp(-z^2 / 2). */
static inline void fb_normal(float z, float *cdf, float *pdf)
{
    float s = fabsf(z), a = s * 0.70710678f;
    float t = 1.0f / (1.0f + 0.5f * a);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    float e = fb_exp_neg_square(s, 0.5f);
    float tail = 0.5f * t * e * fb_expf(p * t - 1.26551223f);  /* erfc(a) / 2 = Phi(-s) */
    *cdf = z > 0.0f ? 1.0f - tail : tail;
    *pdf = 0.39894228f * e;
}

/* The array functions (y may be x). */
#define FB_ARRAY(name, f) \
    FB_CLONES static void name(const float *x, float *y, ptrdiff_t n) \
    { for (ptrdiff_t i = 0; i < n; i++) y[i] = f(x[i]); }

/* y = exp(x - shift): a softmax subtracts its row maximum on the way */
FB_CLONES static void fb_vexp(const float *x, float *y, ptrdiff_t n, float shift)
{ for (ptrdiff_t i = 0; i < n; i++) y[i] = fb_expf(x[i] - shift); }

/* max of x[0..n), n >= 1.  The float bits go through an order-preserving map to integers, whose
 * max gcc vectorises (a float max it does not, for NaN's sake, without -ffast-math); a NaN
 * without sign bit counts as the largest value, any NaN makes a softmax row NaN anyway. */
FB_CLONES static float fb_vmax(const float *x, ptrdiff_t n)
{
    int32_t best = INT32_MIN;
    for (ptrdiff_t i = 0; i < n; i++) {
        int32_t b = fb_float_to_bits(x[i]);
        b ^= (b >> 31) & 0x7fffffff;                /* negative floats: reverse their order */
        best = b > best ? b : best;
    }
    return fb_bits_to_float(best ^ ((best >> 31) & 0x7fffffff));
}

FB_ARRAY(fb_vexpm1_neg, fb_expm1f_neg)
FB_ARRAY(fb_vlog1p_pos, fb_log1pf_pos)
/* cdf = Phi(x), pdf = phi(x) (either may be x) */
FB_CLONES static void fb_vnormal(const float *x, float *cdf, float *pdf, ptrdiff_t n)
{ for (ptrdiff_t i = 0; i < n; i++) fb_normal(x[i], cdf + i, pdf + i); }

#endif
