/* depthwise_conv2d.c - [depthwise_conv2d], Keras's DepthwiseConv2D: each
 * input channel convolved with depth_multiplier kernels of its own.
 *
 *   [depthwise_conv2d]
 *   kernel = 3               (kernel_size, required)
 *   stride = 2               (strides, default 1)
 *   padding = same           (valid | same | N, default valid)
 *   depth_multiplier = 1
 *   activation = relu6       (default linear)
 *   use_bias = true
 *   depthwise_initializer = glorot_uniform
 *   bias_initializer = zeros
 *
 * Weights: depthwise_kernel (C, M, kh, kw) (Keras's (kh, kw, C, M); see
 * depthwise.h) and bias (C*M). Output (C*M, oh, ow).
 *
 * Not a GEMM (each output channel sees one input plane): per image and
 * channel the plane is copied once, zero-padded, into stride phases:
 * phase q holds the padded columns q, q+sw, q+2sw, ... So the input cells
 * that tap (i, j) multiplies for output row oy are a contiguous run,
 * phase j % sw, row oy*sh + i, from column j / sw, and each tap of each
 * output row is one vectorisable axpy (forward, dx) or dot product (dW).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "depthwise.h"
#include "vec.h"

cnn_status cnn_dw_parse(const cnn_section *s, cnn_dw_params *p, cnn_error *err)
{
    cnn_status st;
    if ((st = cnn_cfg_pair(s, "stride", 1, 1, &p->win.sh, &p->win.sw, err)) ||
        (st = cnn_layer_read_padding(s, &p->win.mode, &p->win.amount, err)) ||
        (st = cnn_cfg_int(s, "depth_multiplier", 1, 1, 1 << 16, &p->multiplier, err)) ||
        (st = cnn_layer_read_activation(s, &p->act, err)) ||
        (st = cnn_cfg_bool(s, "use_bias", 1, &p->use_bias, err)) ||
        (st = cnn_layer_read_init(s, "depthwise_initializer", CNN_INIT_GLOROT_UNIFORM,
                                  &p->dinit, err)) ||
        (st = cnn_layer_read_init(s, "bias_initializer", CNN_INIT_ZEROS, &p->binit, err)))
        return st;
    return CNN_OK;
}

cnn_status cnn_dw_make(cnn_layer *l, const cnn_dw_params *p, cnn_shape in, cnn_dw *d,
                       size_t *scratch, cnn_error *err)
{
    cnn_status st;
    memset(d, 0, sizeof *d);
    if ((st = cnn_layer_window(l, &p->win, in, &d->g, err)))
        return st;
    d->m = (int)p->multiplier;
    const cnn_window *g = &d->g;
    const size_t wp = (size_t)g->w + g->pad.left + g->pad.right;
    d->hp = (size_t)g->h + g->pad.top + g->pad.bottom;
    d->wq = (wp + (size_t)g->sw - 1) / (size_t)g->sw;
    size_t cm, taps;
    *scratch = 0;
    /* phase planes of x and dx: 2 * sw * hp * wq floats, about 2 padded planes */
    if (!cnn_size_mul((size_t)in.c, (size_t)d->m, &cm) || cm > INT_MAX ||
        !cnn_size_mul(cm, (size_t)g->kh * g->kw, &taps) || taps > INT_MAX ||
        !cnn_size_mul(d->hp, d->wq, &d->phase) || !cnn_size_mul(d->phase, 2 * (size_t)g->sw, scratch))
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s' (%s): %d channels x depth_multiplier %d with %dx%d "
                             "kernels on %dx%d are too large",
                             l->name, l->ops->section, in.c, d->m, g->kh, g->kw, in.h, in.w);
    int kdims[4] = {in.c, d->m, g->kh, g->kw};
    /* Keras's fans for the (kh, kw, C, M) kernel: receptive field times C, times M */
    cnn_layer_add_param(l, "depthwise_kernel", 4, kdims, p->dinit, in.c * g->kh * g->kw,
                        d->m * g->kh * g->kw, 1);
    return CNN_OK;
}

/* The phases of one padded plane from x (h, w); zero where padded. */
static void to_phases(const cnn_dw *d, const float *x, float *xq)
{
    const cnn_window *g = &d->g;
    const size_t sw = (size_t)g->sw;
    memset(xq, 0, sw * d->phase * sizeof *xq);
    for (int y = 0; y < g->h; y++) {
        const float *src = x + (size_t)y * g->w;
        const size_t r = (size_t)(y + g->pad.top);
        if (sw == 1) {
            memcpy(xq + r * d->wq + g->pad.left, src, (size_t)g->w * sizeof *xq);
            continue;
        }
        for (int c = 0; c < g->w; c++) {
            const size_t pc = (size_t)(c + g->pad.left);
            xq[(pc % sw) * d->phase + r * d->wq + pc / sw] = src[c];
        }
    }
}

/* dx (h, w) = the interior of the phases dxq. */
static void from_phases(const cnn_dw *d, const float *dxq, float *dx)
{
    const cnn_window *g = &d->g;
    const size_t sw = (size_t)g->sw;
    for (int y = 0; y < g->h; y++) {
        float *dst = dx + (size_t)y * g->w;
        const size_t r = (size_t)(y + g->pad.top);
        if (sw == 1) {
            memcpy(dst, dxq + r * d->wq + g->pad.left, (size_t)g->w * sizeof *dst);
            continue;
        }
        for (int c = 0; c < g->w; c++) {
            const size_t pc = (size_t)(c + g->pad.left);
            dst[c] = dxq[(pc % sw) * d->phase + r * d->wq + pc / sw];
        }
    }
}

/* Start of the run tap (i, j) reads for output row oy. */
static inline size_t tap_at(const cnn_dw *d, int oy, int i, int j)
{
    const cnn_window *g = &d->g;
    return (size_t)(j % g->sw) * d->phase + ((size_t)oy * g->sh + i) * d->wq + (size_t)(j / g->sw);
}

void cnn_dw_forward(const cnn_dw *d, const float *w, const float *bias, const float *x, float *y,
                    float *scratch)
{
    const cnn_window *g = &d->g;
    const int M = d->m, T = g->kh * g->kw, ow = g->ow;
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
    for (int c = 0; c < g->c; c++) {
        to_phases(d, x + c * plane, scratch);
        for (int m = 0; m < M; m++) {
            const size_t o = (size_t)c * M + m;
            const float *wo = w + o * T;
            float *yo = y + o * oplane;
            const float b = bias ? bias[o] : 0.0f;
            for (size_t p = 0; p < oplane; p++)
                yo[p] = b;
            for (int oy = 0; oy < g->oh; oy++)
                for (int t = 0; t < T; t++)
                    cnn_vec_axpy(yo + (size_t)oy * ow, wo[t],
                                 scratch + tap_at(d, oy, t / g->kw, t % g->kw), (size_t)ow);
        }
    }
}

void cnn_dw_backward(const cnn_dw *d, const float *w, float *gw, float *gb, const float *x,
                     const float *dy, float *dx, float *scratch)
{
    const cnn_window *g = &d->g;
    const int M = d->m, T = g->kh * g->kw, ow = g->ow;
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
    float *xq = scratch, *dxq = scratch + (size_t)g->sw * d->phase;
    for (int c = 0; c < g->c; c++) {
        to_phases(d, x + c * plane, xq);
        if (dx)
            memset(dxq, 0, (size_t)g->sw * d->phase * sizeof *dxq);
        for (int m = 0; m < M; m++) {
            const size_t o = (size_t)c * M + m;
            const float *dyo = dy + o * oplane;
            if (gb)
                gb[o] += cnn_vec_sum(dyo, oplane);
            for (int oy = 0; oy < g->oh; oy++) {
                const float *dr = dyo + (size_t)oy * ow;
                for (int t = 0; t < T; t++) {
                    const size_t at = tap_at(d, oy, t / g->kw, t % g->kw);
                    gw[o * T + t] += cnn_vec_dot(dr, xq + at, (size_t)ow);
                    if (dx)
                        cnn_vec_axpy(dxq + at, w[o * T + t], dr, (size_t)ow);
                }
            }
        }
        if (dx)
            from_phases(d, dxq, dx + c * plane);
    }
}

/* ---- the layer ---------------------------------------------------------- */

typedef struct dwc_state {
    cnn_dw d;
    int use_bias;
    cnn_preact pa; /* output before a gelu/swish activation */
} dwc_state;

static cnn_status dwc_parse(const cnn_section *s, void *params, cnn_error *err)
{
    cnn_dw_params *p = params;
    cnn_status st = cnn_dw_parse(s, p, err);
    if (st)
        return st;
    if (!cnn_section_find(s, "kernel"))
        return cnn_layer_missing(s, "kernel", "kernel = 3", err);
    return cnn_cfg_pair(s, "kernel", 0, 0, &p->win.kh, &p->win.kw, err);
}

static cnn_status dwc_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    const cnn_dw_params *p = params;
    dwc_state *ds = calloc(1, sizeof *ds);
    if (!ds)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    l->state = ds;
    l->act = p->act;
    size_t scratch = 0;
    cnn_status st = cnn_dw_make(l, p, in, &ds->d, &scratch, err);
    if (st)
        return st;
    int cm = in.c * ds->d.m;
    l->out = (cnn_shape){cm, ds->d.g.oh, ds->d.g.ow};
    ds->use_bias = p->use_bias;
    if (p->use_bias)
        cnn_layer_add_param(l, "bias", 1, &cm, p->binit, in.c * ds->d.g.kh * ds->d.g.kw, cm, 0);
    l->scratch_floats = scratch;
    l->cache_floats = cnn_preact_floats(l);
    return CNN_OK;
}

static cnn_status dwc_reserve(cnn_layer *l, int max_batch, cnn_error *err)
{
    dwc_state *ds = l->state;
    return cnn_preact_reserve(&ds->pa, l, max_batch, err);
}

static void dwc_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                        const cnn_ctx *ctx)
{
    const dwc_state *ds = l->state;
    const size_t in_sz = cnn_shape_size(l->in), out_sz = cnn_shape_size(l->out);
    const float *bias = ds->use_bias ? w + l->params[0].count : NULL;
    for (int b = 0; b < B; b++)
        cnn_dw_forward(&ds->d, w, bias, in + b * in_sz, out + b * out_sz, ctx->scratch);
    cnn_preact_save(&ds->pa, l, out, B);
}

static void dwc_backward(cnn_layer *l, const float *w, float *g, const float *in,
                         const float *out, const float *dout, float *din, int B,
                         const cnn_ctx *ctx)
{
    (void)out;
    const dwc_state *ds = l->state;
    const size_t in_sz = cnn_shape_size(l->in), out_sz = cnn_shape_size(l->out);
    float *gb = ds->use_bias ? g + l->params[0].count : NULL;
    dout = cnn_preact_backward(&ds->pa, l, dout, B);
    for (int b = 0; b < B; b++) {
        cnn_ctx_poll(ctx);
        cnn_dw_backward(&ds->d, w, g, gb, in + b * in_sz, dout + b * out_sz,
                        din ? din + b * in_sz : NULL, ctx->scratch);
    }
}

static void dwc_destroy(cnn_layer *l)
{
    dwc_state *ds = l->state;
    if (ds)
        cnn_preact_free(&ds->pa);
    free(ds);
}

const cnn_layer_ops cnn_depthwise_conv2d_ops = {
    .section = "depthwise_conv2d", .keras_name = "DepthwiseConv2D",
    .default_name = "depthwise_conv2d", .params_size = sizeof(cnn_dw_params),
    .parse = dwc_parse, .make = dwc_make, .reserve = dwc_reserve, .forward = dwc_forward,
    .backward = dwc_backward, .destroy = dwc_destroy,
};
