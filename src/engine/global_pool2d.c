/* global_pool2d.c - global average and max pooling, as Keras's
 * GlobalAveragePooling2D / GlobalMaxPooling2D with keepdims=False: the
 * output of an image (C, H, W) is the flat vector (C) of its per-channel
 * means or maxima. No keys.
 *
 *   average   y[c] = sum over the plane of x[c] / (H W);   dx[c] = dy[c] / (H W)
 *   max       y[c] = max over the plane (ties: the first cell); dx routes dy[c]
 *             to that cell, zeros elsewhere
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/layer.h"
#include "vec.h"

extern const cnn_layer_ops cnn_global_max_pooling2d_ops;

typedef struct gpool_state {
    int32_t *argmax; /* (max_batch, C) winning cell of each plane (max only) */
} gpool_state;

static int is_max(const cnn_layer *l) { return l->ops == &cnn_global_max_pooling2d_ops; }

static cnn_status gpool_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    (void)params;
    l->out = (cnn_shape){in.c, 1, 1};
    if (!is_max(l))
        return CNN_OK;
    if (!(l->state = calloc(1, sizeof(gpool_state))))
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    l->cache_floats = (size_t)in.c * sizeof(int32_t) / sizeof(float);
    return CNN_OK;
}

static cnn_status gpool_reserve(cnn_layer *l, int max_batch, cnn_error *err)
{
    gpool_state *gs = l->state;
    if (!gs)
        return CNN_OK;
    free(gs->argmax);
    const size_t bytes = (size_t)max_batch * l->out.c * sizeof *gs->argmax;
    if (!(gs->argmax = malloc(bytes)))
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "layer '%s': out of memory for the argmax of batches of up to %d "
                             "samples (%zu bytes)",
                             l->name, max_batch, bytes);
    return CNN_OK;
}

/* Index of the first maximum of v[0..n), in two passes that vectorise:
 * the maximum (eight lanes of branch-free max), then the first cell equal
 * to it. (A NaN never wins a comparison; a plane without a number gives 0.) */
static int32_t plane_argmax(const float *v, size_t n)
{
    float lane[8];
    for (int t = 0; t < 8; t++)
        lane[t] = v[0];
    size_t p = 0;
    for (; p + 8 <= n; p += 8)
        for (int t = 0; t < 8; t++)
            lane[t] = v[p + t] > lane[t] ? v[p + t] : lane[t];
    float best = v[0];
    for (int t = 0; t < 8; t++)
        best = lane[t] > best ? lane[t] : best;
    for (; p < n; p++)
        best = v[p] > best ? v[p] : best;
    for (p = 0; p < n; p++)
        if (v[p] == best)
            return (int32_t)p;
    return 0;
}

static void gpool_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                          const cnn_ctx *ctx)
{
    (void)w;
    (void)ctx;
    const size_t planes = (size_t)B * l->in.c, plane = (size_t)l->in.h * l->in.w;
    const gpool_state *gs = l->state;
    if (!gs) {
        const float inv = 1.0f / (float)plane;
        for (size_t bc = 0; bc < planes; bc++)
            out[bc] = cnn_vec_sum(in + bc * plane, plane) * inv;
        return;
    }
    for (size_t bc = 0; bc < planes; bc++) {
        gs->argmax[bc] = plane_argmax(in + bc * plane, plane);
        out[bc] = in[bc * plane + (size_t)gs->argmax[bc]];
    }
}

static void gpool_backward(cnn_layer *l, const float *w, float *g, const float *in,
                           const float *out, const float *dout, float *din, int B,
                           const cnn_ctx *ctx)
{
    (void)w;
    (void)g;
    (void)in;
    (void)out;
    (void)ctx;
    if (!din)
        return;
    const size_t planes = (size_t)B * l->in.c, plane = (size_t)l->in.h * l->in.w;
    const gpool_state *gs = l->state;
    if (!gs) {
        const float inv = 1.0f / (float)plane;
        for (size_t bc = 0; bc < planes; bc++) {
            const float v = dout[bc] * inv;
            float *dx = din + bc * plane;
            for (size_t p = 0; p < plane; p++)
                dx[p] = v;
        }
        return;
    }
    memset(din, 0, planes * plane * sizeof *din);
    for (size_t bc = 0; bc < planes; bc++)
        din[bc * plane + (size_t)gs->argmax[bc]] = dout[bc];
}

static void gpool_destroy(cnn_layer *l)
{
    gpool_state *gs = l->state;
    if (gs)
        free(gs->argmax);
    free(gs);
}

const cnn_layer_ops cnn_global_average_pooling2d_ops = {
    .section = "global_average_pooling2d", .keras_name = "GlobalAveragePooling2D",
    .default_name = "global_average_pooling2d", .make = gpool_make,
    .reserve = gpool_reserve, .forward = gpool_forward, .backward = gpool_backward,
    .destroy = gpool_destroy,
};

const cnn_layer_ops cnn_global_max_pooling2d_ops = {
    .section = "global_max_pooling2d", .keras_name = "GlobalMaxPooling2D",
    .default_name = "global_max_pooling2d", .make = gpool_make,
    .reserve = gpool_reserve, .forward = gpool_forward, .backward = gpool_backward,
    .destroy = gpool_destroy,
};
