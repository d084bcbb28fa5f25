/* flatten.c - (C, H, W) -> (C*H*W, 1, 1): channel-first order, data
 * unchanged; [flatten] has no keys. */
#include <string.h>

#include "cnn/layer.h"

static cnn_status flatten_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    l->out = (cnn_shape){(int)cnn_shape_size(in), 1, 1};
    return CNN_OK;
}

static void flatten_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                            const cnn_ctx *ctx)
{
    memcpy(out, in, (size_t)B * cnn_shape_size(l->in) * sizeof *out);
}

static void flatten_backward(cnn_layer *l, const float *w, float *g, const float *in,
                             const float *out, const float *dout, float *din, int B,
                             const cnn_ctx *ctx)
{
    if (din)
        memcpy(din, dout, (size_t)B * cnn_shape_size(l->in) * sizeof *din);
}

const cnn_layer_ops cnn_flatten_ops = {
    .section = "flatten", .keras_name = "Flatten", .default_name = "flatten",
    .make = flatten_make, .forward = flatten_forward, .backward = flatten_backward,
};
