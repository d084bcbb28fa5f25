/* concatenate.c - [concatenate]: 2 to 16 tensors of one height and width
 * joined along the channel axis (Keras's layers.Concatenate with its
 * default axis = -1, the channels of (H, W, C); stored channel-first, so a
 * sample's output is each input's (C_k, H, W) block in input order).
 *   forward   out[b] = [in[0][b]; in[1][b]; ...]
 *   backward  din[k][b] = the C_k channels of dout[b] that came from input k
 */
#include <stdio.h>
#include <string.h>

#include "cnn/layer.h"

static cnn_status concat_parse(const cnn_section *s, void *p, cnn_error *err)
{
    (void)p;
    /* Keras's axis: -1 (or 3) is the channel axis of (H, W, C). */
    long axis;
    cnn_status st = cnn_cfg_int(s, "axis", -1, -1, 3, &axis, err);
    if (st == CNN_OK && axis != -1 && axis != 3) {
        char where[320];
        cnn_kv *kv = cnn_section_find(s, "axis");
        cnn_cfg_where(s, kv, "axis", where, sizeof where);
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%s: '%s': only the channel axis (-1 or 3) is supported", where,
                             kv->value);
    }
    return st;
}

static cnn_status concat_make(cnn_layer *l, const void *p, const cnn_shape *in, int nin,
                              cnn_error *err)
{
    (void)p; /* the model gives it 2 or more inputs */
    long c = 0;
    for (int k = 0; k < nin; k++) {
        if (in[k].h != in[0].h || in[k].w != in[0].w)
            return cnn_error_set(err, CNN_ERR_SHAPE,
                                 "layer '%s' (concatenate): input %d is %dx%d but input 1 is "
                                 "%dx%d; concatenate joins channels of tensors of one height "
                                 "and width",
                                 l->name, k + 1, in[k].h, in[k].w, in[0].h, in[0].w);
        c += in[k].c;
    }
    if (c > 1 << 30)
        return cnn_error_set(err, CNN_ERR_SHAPE, "layer '%s' (concatenate): %ld channels",
                             l->name, c);
    l->out = (cnn_shape){(int)c, in[0].h, in[0].w};
    return CNN_OK;
}

static void concat_forward(cnn_layer *l, const float *w, const float *const *in, int nin,
                           float *out, int B, const cnn_ctx *ctx)
{
    (void)w;
    (void)ctx;
    const size_t hw = (size_t)l->out.h * l->out.w, per = (size_t)l->out.c * hw;
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * per;
        for (int k = 0; k < nin; k++) {
            const size_t n = (size_t)l->in_shape[k].c * hw;
            memcpy(o, in[k] + (size_t)b * n, n * sizeof *o);
            o += n;
        }
    }
}

static void concat_backward(cnn_layer *l, const float *w, float *g, const float *const *in,
                            int nin, const float *out, const float *dout, float *const *din,
                            int B, const cnn_ctx *ctx)
{
    (void)w, (void)g, (void)in, (void)out, (void)ctx;
    const size_t hw = (size_t)l->out.h * l->out.w, per = (size_t)l->out.c * hw;
    for (int b = 0; b < B; b++) {
        const float *d = dout + (size_t)b * per;
        for (int k = 0; k < nin; k++) {
            const size_t n = (size_t)l->in_shape[k].c * hw;
            if (din[k])
                memcpy(din[k] + (size_t)b * n, d, n * sizeof *d);
            d += n;
        }
    }
}

const cnn_layer_ops cnn_concatenate_ops = {
    .section = "concatenate", .keras_name = "Concatenate", .default_name = "concatenate",
    .parse = concat_parse, .max_inputs = CNN_LAYER_MAX_INPUTS, .make_n = concat_make,
    .forward_n = concat_forward, .backward_n = concat_backward,
};
