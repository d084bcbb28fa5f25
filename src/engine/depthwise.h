/* depthwise.h - the depthwise convolution shared by depthwise_conv2d.c and
 * separable_conv2d.c (engine-internal).
 *
 * Input channel c convolves with its own depth_multiplier (M) kernels;
 * output channel o = c*M + m, as in Keras and PyTorch (groups = C).
 * The kernel is stored (C, M, kh, kw): Keras's depthwise_kernel has shape
 * (kh, kw, C, M) and ours[c][m][i][j] = keras[i][j][c][m], the axes moved
 * the way conv2d's kernel (Cout, Cin, kh, kw) moves Keras's (kh, kw, Cin,
 * Cout); read as (C*M, 1, kh, kw) it is PyTorch's Conv2d(groups=C) weight.
 */
#ifndef CNN_ENGINE_DEPTHWISE_H
#define CNN_ENGINE_DEPTHWISE_H

#include "cnn/layer.h"

/* The keys both layers share. */
typedef struct cnn_dw_params {
    cnn_window_params win;
    long multiplier;
    int use_bias;
    cnn_activation act;
    cnn_init dinit, binit;
} cnn_dw_params;

/* Reads kernel (required), stride, padding, depth_multiplier, activation,
 * use_bias, depthwise_initializer and bias_initializer. */
cnn_status cnn_dw_parse(const cnn_section *s, cnn_dw_params *p, cnn_error *err);

/* Geometry of one layer: the window, and the padded plane split into
 * stride phases so that every tap is one contiguous run (see the .c). */
typedef struct cnn_dw {
    cnn_window g;
    int m;            /* depth multiplier */
    size_t hq, wq;    /* rows and columns of each phase */
    size_t phase;     /* hq * wq floats */
    size_t planes;    /* sh * sw phases + slack, in floats */
    size_t *tap;      /* (kh * kw) start of each tap's run in the phases */
} cnn_dw;

/* Resolves the geometry on input `in`, checks the sizes, declares
 * depthwise_kernel (C, M, kh, kw) with Keras's fans. Returns the scratch
 * floats per image in *scratch. Messages name layer l. */
cnn_status cnn_dw_make(cnn_layer *l, const cnn_dw_params *p, cnn_shape in, cnn_dw *d,
                       size_t *scratch, cnn_error *err);

/* One image: y (C*M, oh, ow) = depthwise(x (C, H, W)) + bias (C*M, or NULL).
 * scratch: cnn_dw_make's floats. */
void cnn_dw_forward(const cnn_dw *d, const float *w, const float *bias, const float *x, float *y,
                    float *scratch);

/* One image: gw (C, M, kh, kw) += dL/dw, gb (C*M, or NULL) += dL/db, and
 * dx (C, H, W) = dL/dx unless dx is NULL, from dy (C*M, oh, ow). */
void cnn_dw_backward(const cnn_dw *d, const float *w, float *gw, float *gb, const float *x,
                     const float *dy, float *dx, float *scratch);

/* Frees what cnn_dw_make allocated; safe on a zeroed or freed d. */
void cnn_dw_free(cnn_dw *d);

#endif
