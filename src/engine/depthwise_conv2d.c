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
 * channel the plane is copied once, zero-padded, into sh*sw stride phases:
 * phase (p, q) holds the padded cells (p + sh r, q + sw c) at (r, c), hq x wq.
 * Tap (i, j) of output (oy, ox) reads phase (i % sh, j % sw) at (oy + i/sh,
 * ox + j/sw). Laid out on the phase width wq (columns ox >= ow are junk and
 * dropped), the outputs of a tap are one contiguous run of oh*wq floats, so
 *   y_ext (oh*wq)   = b + sum over taps of w_ij * run_ij       (axpy)
 *   dw_ij          += dy_ext . run_ij                           (dot)
 *   drun_ij        += w_ij * dy_ext                              (axpy)
 * with dy_ext zero in the junk columns. The last runs go up to (kw-1)/sw
 * floats past the phases: the buffer has that slack, and what lands there
 * feeds only junk outputs (forward) or adds zeros (backward).
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
    const size_t sh = (size_t)g->sh, sw = (size_t)g->sw, T = (size_t)g->kh * g->kw;
    const size_t hp = (size_t)g->h + g->pad.top + g->pad.bottom;
    const size_t wp = (size_t)g->w + g->pad.left + g->pad.right;
    d->hq = (hp + sh - 1) / sh;
    d->wq = (wp + sw - 1) / sw;
    size_t cm, taps, ext;
    *scratch = 0;
    /* phases of x and dx (2 * planes), and y_ext / dy_ext (oh * wq) */
    int ok = cnn_size_mul((size_t)in.c, (size_t)d->m, &cm) && cm <= INT_MAX &&
             cnn_size_mul(cm, T, &taps) && taps <= INT_MAX &&
             cnn_size_mul(d->hq, d->wq, &d->phase) &&
             cnn_size_mul(d->phase, sh * sw, &d->planes) &&
             !__builtin_add_overflow(d->planes, (size_t)g->kw / sw + 16, &d->planes) &&
             cnn_size_mul((size_t)g->oh, d->wq, &ext) && d->planes < SIZE_MAX / 4 &&
             !__builtin_add_overflow(2 * d->planes, ext, scratch);
    if (!ok)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s' (%s): %d channels x depth_multiplier %d with %dx%d "
                             "kernels on %dx%d are too large",
                             l->name, l->ops->section, in.c, d->m, g->kh, g->kw, in.h, in.w);
    if (!(d->tap = malloc(T * sizeof *d->tap)))
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    for (int i = 0; i < g->kh; i++)
        for (int j = 0; j < g->kw; j++)
            d->tap[(size_t)i * g->kw + j] = ((size_t)i % sh * sw + (size_t)j % sw) * d->phase +
                                            (size_t)i / sh * d->wq + (size_t)j / sw;
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
    const size_t sh = (size_t)g->sh, sw = (size_t)g->sw;
    memset(xq, 0, d->planes * sizeof *xq);
    for (int y = 0; y < g->h; y++) {
        const float *src = x + (size_t)y * g->w;
        const size_t r = (size_t)(y + g->pad.top);
        float *row = xq + r % sh * sw * d->phase + r / sh * d->wq;
        if (sw == 1) {
            memcpy(row + g->pad.left, src, (size_t)g->w * sizeof *xq);
            continue;
        }
        /* phase q: padded columns q, q + sw, ...; no division per cell */
        for (size_t q = 0; q < sw; q++)
            for (size_t k = 0, pc = q; pc < (size_t)(g->pad.left + g->w); k++, pc += sw)
                if (pc >= (size_t)g->pad.left)
                    row[q * d->phase + k] = src[pc - (size_t)g->pad.left];
    }
}

/* dx (h, w) = the interior of the phases dxq. */
static void from_phases(const cnn_dw *d, const float *dxq, float *dx)
{
    const cnn_window *g = &d->g;
    const size_t sh = (size_t)g->sh, sw = (size_t)g->sw;
    for (int y = 0; y < g->h; y++) {
        float *dst = dx + (size_t)y * g->w;
        const size_t r = (size_t)(y + g->pad.top);
        const float *row = dxq + r % sh * sw * d->phase + r / sh * d->wq;
        if (sw == 1) {
            memcpy(dst, row + g->pad.left, (size_t)g->w * sizeof *dst);
            continue;
        }
        for (size_t q = 0; q < sw; q++)
            for (size_t k = 0, pc = q; pc < (size_t)(g->pad.left + g->w); k++, pc += sw)
                if (pc >= (size_t)g->pad.left)
                    dst[pc - (size_t)g->pad.left] = row[q * d->phase + k];
    }
}

void cnn_dw_forward(const cnn_dw *d, const float *w, const float *bias, const float *x, float *y,
                    float *scratch)
{
    const cnn_window *g = &d->g;
    const int M = d->m, T = g->kh * g->kw;
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
    const size_t n = (size_t)g->oh * d->wq;
    float *xq = scratch, *yext = scratch + 2 * d->planes;
    for (int c = 0; c < g->c; c++) {
        to_phases(d, x + c * plane, xq);
        for (int m = 0; m < M; m++) {
            const size_t o = (size_t)c * M + m;
            const float *wo = w + o * T;
            const float b = bias ? bias[o] : 0.0f;
            for (size_t k = 0; k < n; k++)
                yext[k] = b;
            for (int t = 0; t < T; t++)
                cnn_vec_axpy(yext, wo[t], xq + d->tap[t], n);
            float *yo = y + o * oplane;
            for (int oy = 0; oy < g->oh; oy++)
                memcpy(yo + (size_t)oy * g->ow, yext + (size_t)oy * d->wq,
                       (size_t)g->ow * sizeof *yo);
        }
    }
}

void cnn_dw_backward(const cnn_dw *d, const float *w, float *gw, float *gb, const float *x,
                     const float *dy, float *dx, float *scratch)
{
    const cnn_window *g = &d->g;
    const int M = d->m, T = g->kh * g->kw;
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
    const size_t n = (size_t)g->oh * d->wq;
    float *xq = scratch, *dxq = scratch + d->planes, *dyext = scratch + 2 * d->planes;
    memset(dyext, 0, n * sizeof *dyext); /* junk columns stay zero */
    for (int c = 0; c < g->c; c++) {
        to_phases(d, x + c * plane, xq);
        if (dx)
            memset(dxq, 0, d->planes * sizeof *dxq);
        for (int m = 0; m < M; m++) {
            const size_t o = (size_t)c * M + m;
            const float *dyo = dy + o * oplane;
            if (gb)
                gb[o] += cnn_vec_sum(dyo, oplane);
            for (int oy = 0; oy < g->oh; oy++)
                memcpy(dyext + (size_t)oy * d->wq, dyo + (size_t)oy * g->ow,
                       (size_t)g->ow * sizeof *dyext);
            for (int t = 0; t < T; t++) {
                gw[o * T + t] += cnn_vec_dot(dyext, xq + d->tap[t], n);
                if (dx)
                    cnn_vec_axpy(dxq + d->tap[t], w[o * T + t], dyext, n);
            }
        }
        if (dx)
            from_phases(d, dxq, dx + c * plane);
    }
}

void cnn_dw_free(cnn_dw *d)
{
    free(d->tap);
    d->tap = NULL;
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
    if (ds) {
        cnn_preact_free(&ds->pa);
        cnn_dw_free(&ds->d);
    }
    free(ds);
}

const cnn_layer_ops cnn_depthwise_conv2d_ops = {
    .section = "depthwise_conv2d", .keras_name = "DepthwiseConv2D",
    .default_name = "depthwise_conv2d", .params_size = sizeof(cnn_dw_params),
    .parse = dwc_parse, .make = dwc_make, .reserve = dwc_reserve, .forward = dwc_forward,
    .backward = dwc_backward, .destroy = dwc_destroy,
};
