/* cnn/types.h - small types shared by the engine and the data code. */
#ifndef CNN_TYPES_H
#define CNN_TYPES_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Shape of one sample: channels-first (C, H, W); a flat vector is (N, 1, 1). */
typedef struct cnn_shape {
    int c, h, w;
} cnn_shape;

/* C*H*W. Callers with shapes from outside (a config, a file) check
 * cnn_shape_size_checked() first; shapes of a built model always fit. */
static inline size_t cnn_shape_size(cnn_shape s) { return (size_t)s.c * s.h * s.w; }

/* *out = a * b, or returns 0 if that does not fit a size_t. */
static inline int cnn_size_mul(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

/* *out = C*H*W (0 on negative dims), or returns 0 if it does not fit a size_t. */
static inline int cnn_shape_size_checked(cnn_shape s, size_t *out)
{
    size_t n;
    if (s.c < 0 || s.h < 0 || s.w < 0)
        return 0;
    return cnn_size_mul((size_t)s.c, (size_t)s.h, &n) && cnn_size_mul(n, (size_t)s.w, out);
}

/* Padding of conv and pool layers: explicit amounts per side. "same"
 * follows Keras/TensorFlow: total = max((ceil(n/s)-1)*s + k - n, 0), the
 * extra pixel at the bottom/right. */
typedef struct cnn_pad {
    int top, left, bottom, right;
} cnn_pad;

#ifdef __cplusplus
}
#endif
#endif /* CNN_TYPES_H */
