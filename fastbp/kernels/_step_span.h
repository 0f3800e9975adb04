/* The optimizer steps' loops over a span of one parameter, generated from the registry's list of
 * steps (FB_STEPS, fastbp/kernels/registry.py) and _formulas.h's step of each: one loop per step
 * and element type, and fb_step_span, which runs step `code` over n entries.
 *
 * Compiled once, into _c_step (which runs it for the public kernels): the training engine calls
 * the same function through its address (_c_step.STEP_SPAN, handed over in fb_desc.step_span), so
 * the loops are not compiled twice (the .so budget) and the two paths agree to the bit.
 * The float loops carry FB_CLONES (AVX2+FMA where the CPU has it), the double loops none (size).
 */
#ifndef FASTBP_STEP_SPAN_H
#define FASTBP_STEP_SPAN_H
#include "_formulas.h"

/* k: the step's constants (fb_step_consts), converted to T once per call; a state pointer that
 * is NULL stays NULL for every entry (gcc unswitches the loop on it). */
#define FB_SPAN_LOOP(CLONES, T, S, name)                                                         \
CLONES static void fb_span_##name##S(long n, T *restrict p, const T *restrict g, T *restrict s0, \
                                     T *restrict s1, T *restrict s2, const double *kd)           \
{                                                                                               \
    T k[FB_STEP_MAXK];                                                                          \
    for (int j = 0; j < FB_STEP_MAXK; j++) k[j] = (T)kd[j];                                     \
    for (long i = 0; i < n; i++)                                                                \
        p[i] = fb_##name##_step##S(p[i], g[i], s0 ? s0 + i : NULL, s1 ? s1 + i : NULL,          \
                                   s2 ? s2 + i : NULL, k);                                      \
}
#define FB_SPAN_LOOPS(CODE, name)                                                                \
    FB_SPAN_LOOP(FB_CLONES, float, _f, name)                                                     \
    FB_SPAN_LOOP(, double, _d, name)
FB_STEPS(FB_SPAN_LOOPS)
#undef FB_SPAN_LOOPS
#undef FB_SPAN_LOOP

/* Step `code` over the n entries of p (float when `single`, else double) with gradient g and the
 * step's state arrays s[0 .. FB_STEP_MAXS) (NULL: absent), in place; k from fb_step_consts. */
static void fb_step_span(int code, int single, long n, void *p, const void *g, void *const *s,
                         const double *k)
{
    switch (code) {
#define FB_SPAN_CASE(CODE, name)                                                                 \
    case CODE:                                                                                  \
        if (single)                                                                             \
            fb_span_##name##_f(n, (float *)p, (const float *)g, (float *)s[0], (float *)s[1],    \
                               (float *)s[2], k);                                                \
        else                                                                                    \
            fb_span_##name##_d(n, (double *)p, (const double *)g, (double *)s[0],               \
                               (double *)s[1], (double *)s[2], k);                               \
        break;
    FB_STEPS(FB_SPAN_CASE)
#undef FB_SPAN_CASE
    }
}

#endif
