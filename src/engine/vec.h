/* vec.h - small vector loops of the engine's layers (engine-internal),
 * written so that GCC vectorises them at -O2/-O3 without -ffast-math:
 * reductions keep 8 or 32 partial sums (a fixed order, so results do not depend
 * on the compiler or the machine). */
#ifndef CNN_ENGINE_VEC_H
#define CNN_ENGINE_VEC_H

#include <stddef.h>

/* sum of v[0..n) */
static inline float cnn_vec_sum(const float *v, size_t n)
{
    float acc[8] = {0};
    size_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int t = 0; t < 8; t++)
            acc[t] += v[k + t];
    float s = 0;
    for (; k < n; k++)
        s += v[k];
    for (int t = 0; t < 8; t++)
        s += acc[t];
    return s;
}

/* a . b over n; 32 partial sums: four vector registers in flight, as one
 * would wait on the latency of each add */
static inline float cnn_vec_dot(const float *a, const float *b, size_t n)
{
    float acc[32] = {0};
    size_t k = 0;
    for (; k + 32 <= n; k += 32)
        for (int t = 0; t < 32; t++)
            acc[t] += a[k + t] * b[k + t];
    float s = 0;
    for (; k < n; k++)
        s += a[k] * b[k];
    for (int t = 0; t < 32; t++)
        s += acc[t];
    return s;
}

/* y += a x over n */
static inline void cnn_vec_axpy(float *restrict y, float a, const float *restrict x, size_t n)
{
    for (size_t k = 0; k < n; k++)
        y[k] += a * x[k];
}

#endif
