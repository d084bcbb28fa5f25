/* separable_conv2d.c - [separable_conv2d], Keras's SeparableConv2D: a
 * depthwise convolution (no bias, no activation) then a 1x1 convolution.
 *
 *   [separable_conv2d]
 *   filters = 64             (required)
 *   kernel = 3               (kernel_size, required)
 *   stride, padding, depth_multiplier, activation, use_bias,
 *   depthwise_initializer, bias_initializer as [depthwise_conv2d];
 *   pointwise_initializer = glorot_uniform
 *
 * Weights, in Keras's order: depthwise_kernel (C, M, kh, kw) (see
 * depthwise.h), pointwise_kernel (F, C*M, 1, 1) (Keras's (1, 1, C*M, F)),
 * bias (F). Parameters: C*M*kh*kw + C*M*F + F.
 *
 * Per image, with z (C*M, P) the depthwise output, P = oh*ow:
 *   forward   y (F, P) = Wp (F, C*M) . z + b
 *   backward  dWp += dy . z^T;  db += rowsum(dy);  dz = Wp^T . dy, then the
 *             depthwise backward of dz.
 * z is kept from forward for backward (cache: C*M*P floats a sample).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "depthwise.h"
#include "vec.h"

typedef struct sep_params {
    cnn_dw_params dw;
    long filters;
    cnn_init pinit;
} sep_params;

typedef struct sep_state {
    cnn_dw d;
    int filters, cm, use_bias;
    size_t dw_scratch;
    float *z;      /* (max_batch, C*M, oh, ow) depthwise output */
    cnn_preact pa; /* output before a gelu/swish activation */
} sep_state;

static cnn_status sep_parse(const cnn_section *s, void *params, cnn_error *err)
{
    sep_params *p = params;
    cnn_status st;
    if ((st = cnn_dw_parse(s, &p->dw, err)) ||
        (st = cnn_layer_read_init(s, "pointwise_initializer", CNN_INIT_GLOROT_UNIFORM, &p->pinit,
                                  err)))
        return st;
    if (!cnn_section_find(s, "filters"))
        return cnn_layer_missing(s, "filters", "filters = 64", err);
    if (!cnn_section_find(s, "kernel"))
        return cnn_layer_missing(s, "kernel", "kernel = 3", err);
    if ((st = cnn_cfg_int(s, "filters", 0, 1, 1 << 16, &p->filters, err)) ||
        (st = cnn_cfg_pair(s, "kernel", 0, 0, &p->dw.win.kh, &p->dw.win.kw, err)))
        return st;
    return CNN_OK;
}

static cnn_status sep_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    const sep_params *p = params;
    sep_state *ss = calloc(1, sizeof *ss);
    if (!ss)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    l->state = ss;
    l->act = p->dw.act;
    cnn_status st = cnn_dw_make(l, &p->dw, in, &ss->d, &ss->dw_scratch, err);
    if (st)
        return st;
    ss->filters = (int)p->filters;
    ss->cm = in.c * ss->d.m; /* fits an int: checked by cnn_dw_make */
    ss->use_bias = p->dw.use_bias;
    const size_t P = (size_t)ss->d.g.oh * ss->d.g.ow;
    size_t zf, wf;
    if (!cnn_size_mul((size_t)ss->cm, P, &zf) || zf > INT_MAX ||
        !cnn_size_mul((size_t)ss->cm, (size_t)ss->filters, &wf) || wf > INT_MAX)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s' (separable_conv2d): %d filters over %d depthwise "
                             "channels of %dx%d are too large",
                             l->name, ss->filters, ss->cm, ss->d.g.oh, ss->d.g.ow);
    l->out = (cnn_shape){ss->filters, ss->d.g.oh, ss->d.g.ow};
    int pdims[4] = {ss->filters, ss->cm, 1, 1};
    cnn_layer_add_param(l, "pointwise_kernel", 4, pdims, p->pinit, ss->cm, ss->filters, 1);
    if (ss->use_bias)
        cnn_layer_add_param(l, "bias", 1, &ss->filters, p->dw.binit, ss->cm, ss->filters, 0);
    l->scratch_floats = ss->dw_scratch + zf; /* + dz (C*M, P) in backward */
    l->cache_floats = zf + cnn_preact_floats(l);
    return CNN_OK;
}

static cnn_status sep_reserve(cnn_layer *l, int max_batch, cnn_error *err)
{
    sep_state *ss = l->state;
    free(ss->z);
    const size_t bytes =
        (size_t)max_batch * ss->cm * ss->d.g.oh * ss->d.g.ow * sizeof *ss->z;
    if (!(ss->z = malloc(bytes)))
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "layer '%s': out of memory for the depthwise outputs of batches of "
                             "up to %d samples (%zu bytes)",
                             l->name, max_batch, bytes);
    return cnn_preact_reserve(&ss->pa, l, max_batch, err);
}

static void sep_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                        const cnn_ctx *ctx)
{
    const sep_state *ss = l->state;
    const int F = ss->filters, CM = ss->cm, P = ss->d.g.oh * ss->d.g.ow;
    const size_t in_sz = cnn_shape_size(l->in), out_sz = cnn_shape_size(l->out);
    const float *wd = w, *wp = w + l->params[0].count;
    const float *bias = ss->use_bias ? wp + l->params[1].count : NULL;
    for (int b = 0; b < B; b++) {
        float *z = ss->z + (size_t)b * CM * P, *y = out + b * out_sz;
        cnn_dw_forward(&ss->d, wd, NULL, in + b * in_sz, z, ctx->scratch);
        for (int f = 0; f < F; f++) {
            const float v = bias ? bias[f] : 0.0f;
            for (int p = 0; p < P; p++)
                y[(size_t)f * P + p] = v;
        }
        cnn_sgemm(0, 0, F, P, CM, 1.0f, wp, CM, z, P, 1.0f, y, P);
    }
    cnn_preact_save(&ss->pa, l, out, B);
}

static void sep_backward(cnn_layer *l, const float *w, float *g, const float *in,
                         const float *out, const float *dout, float *din, int B,
                         const cnn_ctx *ctx)
{
    (void)out;
    const sep_state *ss = l->state;
    const int F = ss->filters, CM = ss->cm, P = ss->d.g.oh * ss->d.g.ow;
    const size_t in_sz = cnn_shape_size(l->in), out_sz = cnn_shape_size(l->out);
    const float *wd = w, *wp = w + l->params[0].count;
    float *gwd = g, *gwp = g + l->params[0].count;
    float *gb = ss->use_bias ? gwp + l->params[1].count : NULL;
    float *dz = ctx->scratch + ss->dw_scratch;
    dout = cnn_preact_backward(&ss->pa, l, dout, B);
    for (int b = 0; b < B; b++) {
        cnn_ctx_poll(ctx);
        const float *z = ss->z + (size_t)b * CM * P, *dy = dout + b * out_sz;
        if (gb)
            for (int f = 0; f < F; f++)
                gb[f] += cnn_vec_sum(dy + (size_t)f * P, (size_t)P);
        cnn_sgemm(0, 1, F, CM, P, 1.0f, dy, P, z, P, 1.0f, gwp, CM);
        cnn_sgemm(1, 0, CM, P, F, 1.0f, wp, CM, dy, P, 0.0f, dz, P);
        cnn_dw_backward(&ss->d, wd, gwd, NULL, in + b * in_sz, dz, din ? din + b * in_sz : NULL,
                        ctx->scratch);
    }
}

static void sep_destroy(cnn_layer *l)
{
    sep_state *ss = l->state;
    if (ss) {
        free(ss->z);
        cnn_preact_free(&ss->pa);
        cnn_dw_free(&ss->d);
    }
    free(ss);
}

const cnn_layer_ops cnn_separable_conv2d_ops = {
    .section = "separable_conv2d", .keras_name = "SeparableConv2D",
    .default_name = "separable_conv2d", .params_size = sizeof(sep_params),
    .parse = sep_parse, .make = sep_make, .reserve = sep_reserve, .forward = sep_forward,
    .backward = sep_backward, .destroy = sep_destroy,
};
