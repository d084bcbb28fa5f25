/* pool2d.c - max and average pooling over 2-D windows.
 *
 * Padded cells never win a max and are not counted in an average (as
 * TensorFlow does for padding = same). Max pooling remembers the winning
 * input index of each output for backward; ties go to the first cell.
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/layer.h"

extern const cnn_layer_ops cnn_maxpool2d_ops;

typedef struct pool_state {
    cnn_window g;
    int is_max;
    int32_t *argmax; /* (max_batch, C, oh, ow) index into the input plane */
} pool_state;

/* The keys of a [maxpool2d] or [avgpool2d] section. */
static cnn_status pool_parse(const cnn_section *s, void *params, cnn_error *err)
{
    cnn_window_params *p = params;
    cnn_status st;
    if ((st = cnn_cfg_pair(s, "size", 2, 2, &p->kh, &p->kw, err)) ||
        (st = cnn_cfg_pair(s, "stride", p->kh, p->kw, &p->sh, &p->sw, err)) ||
        (st = cnn_layer_read_padding(s, &p->mode, &p->amount, err)))
        return st;
    return CNN_OK;
}

static cnn_status pool_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    cnn_status st;
    pool_state *ps = calloc(1, sizeof *ps);
    if (!ps)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    l->state = ps;
    ps->is_max = l->ops == &cnn_maxpool2d_ops;
    if ((st = cnn_layer_window(l, params, in, &ps->g, err)))
        return st;
    l->out = (cnn_shape){in.c, ps->g.oh, ps->g.ow};
    if (ps->is_max) /* argmax: an int32 per output */
        l->cache_floats = cnn_shape_size(l->out) * sizeof(int32_t) / sizeof(float);
    return CNN_OK;
}

static cnn_status pool_reserve(cnn_layer *l, int max_batch, cnn_error *err)
{
    pool_state *ps = l->state;
    if (!ps->is_max)
        return CNN_OK;
    free(ps->argmax);
    const size_t bytes = (size_t)max_batch * cnn_shape_size(l->out) * sizeof *ps->argmax;
    ps->argmax = malloc(bytes);
    if (!ps->argmax)
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "layer '%s': out of memory for the argmax of batches of up to %d "
                             "samples (%zu bytes)",
                             l->name, max_batch, bytes);
    return CNN_OK;
}

/* Clamped window rows/cols of output (oy, ox). */
static inline void window(const cnn_window *g, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    int ys = oy * g->sh - g->pad.top, xs = ox * g->sw - g->pad.left;
    *y0 = ys < 0 ? 0 : ys;
    *x0 = xs < 0 ? 0 : xs;
    *y1 = ys + g->kh > g->h ? g->h : ys + g->kh;
    *x1 = xs + g->kw > g->w ? g->w : xs + g->kw;
}

/* The common case (2x2 window, stride 2, no padding) without clamping. */
static int is_2x2_s2(const cnn_window *g)
{
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && !g->pad.top &&
           !g->pad.left && !g->pad.bottom && !g->pad.right;
}

static void maxpool_2x2(const cnn_window *g, const float *in, float *out, int32_t *argmax,
                        size_t planes)
{
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
    for (size_t bc = 0; bc < planes; bc++) {
        const float *x = in + bc * plane;
        float *y = out + bc * oplane;
        int32_t *am = argmax + bc * oplane;
        for (int oy = 0; oy < g->oh; oy++) {
            const float *r0 = x + (size_t)(2 * oy) * g->w, *r1 = r0 + g->w;
            for (int ox = 0; ox < g->ow; ox++) {
                /* Branch-free selects: with data-dependent branches this loop
                 * measured 6 ns per output from mispredictions. Ties go to the
                 * first cell in row-major order, as in the general path. */
                int32_t i0 = 2 * oy * g->w + 2 * ox;
                float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
                /* Index selects as 0/1 integer arithmetic and value selects
                 * as x > y ? x : y (one vmaxss): GCC compiled index ternaries
                 * and fmaxf (IEEE NaN rules) into branches, 31 us per image
                 * on unpredictable data against 8 us for these. */
                int32_t gab = b > a, gcd = d > c;
                float ab = b > a ? b : a, cd = d > c ? d : c;
                int32_t iab = i0 + gab, icd = i0 + g->w + gcd;
                int32_t sel = cd > ab;
                float best = cd > ab ? cd : ab;
                int32_t bi = iab + sel * (icd - iab);
                y[oy * g->ow + ox] = best;
                am[oy * g->ow + ox] = bi;
            }
        }
    }
}

static void pool_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                         const cnn_ctx *ctx)
{
    (void)w;
    (void)ctx;
    const pool_state *ps = l->state;
    const cnn_window *g = &ps->g;
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
    if (ps->is_max && is_2x2_s2(g)) {
        maxpool_2x2(g, in, out, ps->argmax, (size_t)B * g->c);
        return;
    }
    for (size_t bc = 0; bc < (size_t)B * g->c; bc++) {
        const float *x = in + bc * plane;
        float *y = out + bc * oplane;
        int32_t *am = ps->is_max ? ps->argmax + bc * oplane : NULL;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int y0, y1, x0, x1;
                window(g, oy, ox, &y0, &y1, &x0, &x1);
                if (am) {
                    float best = -FLT_MAX;
                    int32_t bi = y0 * g->w + x0;
                    for (int iy = y0; iy < y1; iy++)
                        for (int ix = x0; ix < x1; ix++)
                            if (x[iy * g->w + ix] > best) {
                                best = x[iy * g->w + ix];
                                bi = iy * g->w + ix;
                            }
                    y[oy * g->ow + ox] = best;
                    am[oy * g->ow + ox] = bi;
                } else {
                    float s = 0;
                    for (int iy = y0; iy < y1; iy++)
                        for (int ix = x0; ix < x1; ix++)
                            s += x[iy * g->w + ix];
                    y[oy * g->ow + ox] = s / (float)((y1 - y0) * (x1 - x0));
                }
            }
    }
}

static void pool_backward(cnn_layer *l, const float *w, float *gr, const float *in, const float *out,
                          const float *dout, float *din, int B, const cnn_ctx *ctx)
{
    (void)w;
    (void)gr;
    (void)in;
    (void)out;
    (void)ctx;
    if (!din)
        return;
    const pool_state *ps = l->state;
    const cnn_window *g = &ps->g;
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
    memset(din, 0, (size_t)B * g->c * plane * sizeof *din);
    for (size_t bc = 0; bc < (size_t)B * g->c; bc++) {
        float *dx = din + bc * plane;
        const float *dy = dout + bc * oplane;
        if (ps->is_max) {
            const int32_t *am = ps->argmax + bc * oplane;
            for (size_t o = 0; o < oplane; o++)
                dx[am[o]] += dy[o];
            continue;
        }
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int y0, y1, x0, x1;
                window(g, oy, ox, &y0, &y1, &x0, &x1);
                float v = dy[oy * g->ow + ox] / (float)((y1 - y0) * (x1 - x0));
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++)
                        dx[iy * g->w + ix] += v;
            }
    }
}

static void pool_destroy(cnn_layer *l)
{
    pool_state *ps = l->state;
    if (ps)
        free(ps->argmax);
    free(ps);
}

const cnn_layer_ops cnn_maxpool2d_ops = {
    .section = "maxpool2d", .keras_name = "MaxPooling2D", .default_name = "max_pooling2d",
    .params_size = sizeof(cnn_window_params), .parse = pool_parse, .make = pool_make,
    .reserve = pool_reserve, .forward = pool_forward,
    .backward = pool_backward, .destroy = pool_destroy,
};

const cnn_layer_ops cnn_avgpool2d_ops = {
    .section = "avgpool2d", .keras_name = "AveragePooling2D", .default_name = "average_pooling2d",
    .params_size = sizeof(cnn_window_params), .parse = pool_parse, .make = pool_make,
    .reserve = pool_reserve, .forward = pool_forward,
    .backward = pool_backward, .destroy = pool_destroy,
};
