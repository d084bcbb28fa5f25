/* conv2d.c - 2-D convolution (cross-correlation, as Keras).
 *
 * Through oneDNN (dnn.h) when there are several input channels: its
 * AVX-512 kernels on blocked layouts ran 1.2-5x faster than the GEMM paths
 * below on the shipped models' layers (README, "Convolution"), except with
 * a single input channel, which stays on the GEMM paths, as does a shape
 * oneDNN declines.
 *
 * The GEMM paths, per image: col (K, P) = im2col(x), K = Cin*kh*kw, P = oh*ow;
 *   forward   y (Cout, P)  = W (Cout, K) . col + b
 *   backward  dW (Cout, K) += dy (Cout, P) . col^T
 *             dcol (K, P)   = W^T . dy, then col2im into dx
 * One image per GEMM keeps col (K x P floats) in the L2 cache; whole-batch
 * GEMMs of the wide shapes measured ~3x slower in OpenBLAS (see README).
 *
 * Stride-1 layers with several input channels skip im2col ("shifted GEMM"):
 * the image is copied once, zero-padded, to xp (C, Hp, Wp). For kernel tap
 * (i, j) the matrix xp[:, i*Wp + j ...] with row stride Hp*Wp holds, for each
 * output (oy, ox), the input pixel that tap multiplies, if outputs are laid
 * out on the padded width Wp (columns ox >= ow are junk and dropped). So
 *   y_ext (F, oh*Wp) = sum over taps of W_ij (F, C) . xp_ij
 *   dW_ij (F, C)    += dy_ext . xp_ij^T      (dy_ext: dy with zero junk columns)
 *   dxp_ij          += W_ij^T . dy_ext        then dx = interior of dxp
 * The last tap's view runs up to kw-1 floats past a plane; those reads land
 * in junk columns and those writes add zeros, and the buffers have slack.
 * Measured on fashion_cnn's 16->16 3x3 layer: 106 us per image against 175
 * for im2col + GEMM + col2im (README).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/layer.h"
#include "dnn.h"

typedef struct conv_state {
    cnn_window g;
    int filters;
    int use_bias;
    int direct;  /* 1x1, stride 1, no padding: col is x itself */
    int shifted; /* stride 1, Cin >= 4: shifted GEMMs, no im2col */
    int hp, wp;  /* padded input size (shifted path) */
    cnn_preact pa; /* output before a gelu/swish activation */
    cnn_dnn_conv *dnn; /* oneDNN's, or NULL: the GEMM paths */
} conv_state;

/* Scratch layout of the shifted path, in floats. */
static size_t shifted_plane(const conv_state *cs) { return (size_t)cs->hp * cs->wp; }
static size_t shifted_xp_floats(const conv_state *cs)
{
    return (size_t)cs->g.c * shifted_plane(cs) + (size_t)cs->g.kw + 16; /* + slack */
}

/* The keys of a [conv2d] section. */
typedef struct conv_params {
    long filters;
    cnn_window_params win;
    int use_bias;
    cnn_activation act;
    cnn_init kinit, binit;
} conv_params;

static cnn_status conv_parse(const cnn_section *s, void *params, cnn_error *err)
{
    conv_params *p = params;
    cnn_status st;
    if ((st = cnn_cfg_pair(s, "stride", 1, 1, &p->win.sh, &p->win.sw, err)) ||
        (st = cnn_layer_read_padding(s, &p->win.mode, &p->win.amount, err)) ||
        (st = cnn_layer_read_activation(s, &p->act, err)) ||
        (st = cnn_cfg_bool(s, "use_bias", 1, &p->use_bias, err)) ||
        (st = cnn_layer_read_init(s, "kernel_initializer", CNN_INIT_GLOROT_UNIFORM, &p->kinit,
                                  err)) ||
        (st = cnn_layer_read_init(s, "bias_initializer", CNN_INIT_ZEROS, &p->binit, err)))
        return st;
    if (!cnn_section_find(s, "filters"))
        return cnn_layer_missing(s, "filters", "filters = 32", err);
    if (!cnn_section_find(s, "kernel"))
        return cnn_layer_missing(s, "kernel", "kernel = 3", err);
    if ((st = cnn_cfg_int(s, "filters", 0, 1, 1 << 16, &p->filters, err)) ||
        (st = cnn_cfg_pair(s, "kernel", 0, 0, &p->win.kh, &p->win.kw, err)))
        return st;
    return CNN_OK;
}

static cnn_status conv_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    const conv_params *p = params;
    const int kh = p->win.kh, kw = p->win.kw, sh = p->win.sh, sw = p->win.sw;
    cnn_status st;
    l->act = p->act;
    conv_state *cs = calloc(1, sizeof *cs);
    if (!cs)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    l->state = cs;
    if ((st = cnn_layer_window(l, &p->win, in, &cs->g, err)))
        return st;
    cs->filters = (int)p->filters;
    cs->use_bias = p->use_bias;
    cs->direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && cs->g.pad.top == 0 &&
                 cs->g.pad.left == 0 && cs->g.pad.bottom == 0 && cs->g.pad.right == 0;
    cs->shifted = !cs->direct && sh == 1 && sw == 1 && in.c >= 4;
    cs->hp = in.h + cs->g.pad.top + cs->g.pad.bottom;
    cs->wp = in.w + cs->g.pad.left + cs->g.pad.right;
    l->out = (cnn_shape){cs->filters, cs->g.oh, cs->g.ow};
    l->cache_floats = cnn_preact_floats(l);
    /* The GEMMs take int sizes: K (weights per filter), the padded plane and
     * the taps' F x K; sizes in size_t, checked, before any is an int. */
    const size_t F = (size_t)cs->filters, P = (size_t)cs->g.oh * cs->g.ow;
    size_t K, KF, padded, scratch = 0;
    if (!cnn_size_mul((size_t)in.c * kh, (size_t)kw, &K) || K > INT_MAX ||
        !cnn_size_mul(K, F, &KF) || F * kh * kw > INT_MAX)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s' (conv2d): %d filters of %dx%d over %d channels are too "
                             "large (%zu weights per filter; at most %d)",
                             l->name, cs->filters, kh, kw, in.c, K, INT_MAX);
    if (!cnn_size_mul((size_t)cs->hp, (size_t)cs->wp, &padded) || padded > INT_MAX)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s' (conv2d): the padded input %dx%d is too large (at most "
                             "%d pixels)",
                             l->name, cs->hp, cs->wp, INT_MAX);
    int kdims[4] = {cs->filters, in.c, kh, kw};
    /* Keras's fans for conv kernels: receptive field times channels. */
    cnn_layer_add_param(l, "kernel", 4, kdims, p->kinit, (int)K, (int)(F * kh * kw), 1);
    if (p->use_bias)
        cnn_layer_add_param(l, "bias", 1, &cs->filters, p->binit, (int)K, cs->filters, 0);
    size_t a, b;
    int fits;
    if (cs->shifted) /* xp, dxp, y_ext/dy_ext, W and dW by tap */
        fits = cnn_size_mul(F * cs->g.oh, (size_t)cs->wp, &a) &&
               !__builtin_add_overflow(2 * shifted_xp_floats(cs), a, &b) &&
               !__builtin_add_overflow(b, 2 * KF, &scratch);
    else /* col and dcol (K x P each), then dW^T (K x F) accumulated over a batch */
        fits = cnn_size_mul(K, P, &a) && cnn_size_mul(cs->direct ? 0 : 2, a, &b) &&
               !__builtin_add_overflow(b, KF, &scratch);
    if (!fits)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s' (conv2d): its workspace for %d filters of %dx%d on "
                             "%dx%d does not fit in memory",
                             l->name, cs->filters, kh, kw, in.h, in.w);
    l->scratch_floats = scratch;
    /* One input channel stays on the GEMM paths: on fashion_cnn's and
     * lenet5's first layers (28x28x1) oneDNN measured 15-30% slower. If
     * oneDNN declines a shape, the GEMM paths take it too. */
    cnn_error dnn_err = {0};
    size_t dnn_scratch = 0;
    const int relu = p->act == CNN_ACT_RELU;
    if (in.c > 1 && !cnn_dnn_conv_create(&cs->dnn, &cs->g, cs->filters, cs->use_bias, relu,
                                         l->name, &dnn_scratch, &dnn_err)) {
        l->scratch_floats = dnn_scratch;
        l->act_in_forward = relu;
    }
    return CNN_OK;
}

/* xp (C, hp, wp) = x with zero borders; the borders and slack are zeroed by
 * the caller once per call, the interior is overwritten per image. */
static void pad_image(const conv_state *cs, const float *x, float *xp)
{
    const cnn_window *g = &cs->g;
    for (int c = 0; c < g->c; c++)
        for (int y = 0; y < g->h; y++) {
            const float *src = x + ((size_t)c * g->h + y) * g->w;
            float *dst = xp + (size_t)c * shifted_plane(cs) + (size_t)(y + g->pad.top) * cs->wp +
                         g->pad.left;
            memcpy(dst, src, (size_t)g->w * sizeof *dst);
        }
}

/* wr (taps, F, C) from the kernel (F, C, kh, kw). */
static void kernel_by_tap(const conv_state *cs, const float *w, float *wr)
{
    const int F = cs->filters, C = cs->g.c, T = cs->g.kh * cs->g.kw;
    for (int f = 0; f < F; f++)
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++)
                wr[((size_t)t * F + f) * C + c] = w[((size_t)f * C + c) * T + t];
}

static void shifted_forward(const conv_state *cs, const float *w, const float *bias,
                            const float *in, float *out, int B, float *scratch)
{
    const cnn_window *g = &cs->g;
    const int F = cs->filters, C = g->c, T = g->kh * g->kw, wp = cs->wp;
    const int N = g->oh * wp; /* outputs on the padded width */
    const size_t in_sz = (size_t)C * g->h * g->w, out_sz = (size_t)F * g->oh * g->ow;
    float *xp = scratch, *yext = xp + 2 * shifted_xp_floats(cs), *wr = yext + (size_t)F * N;
    kernel_by_tap(cs, w, wr);
    memset(xp, 0, shifted_xp_floats(cs) * sizeof *xp);
    for (int b = 0; b < B; b++) {
        pad_image(cs, in + b * in_sz, xp);
        for (int t = 0; t < T; t++) {
            int i = t / g->kw, j = t % g->kw;
            cnn_sgemm(0, 0, F, N, C, 1.0f, wr + (size_t)t * F * C, C, xp + (size_t)i * wp + j,
                      (int)shifted_plane(cs), t ? 1.0f : 0.0f, yext, N);
        }
        float *y = out + b * out_sz;
        for (int f = 0; f < F; f++) {
            float bf = bias ? bias[f] : 0.0f;
            for (int oy = 0; oy < g->oh; oy++) {
                const float *src = yext + (size_t)f * N + (size_t)oy * wp;
                float *dst = y + ((size_t)f * g->oh + oy) * g->ow;
                for (int ox = 0; ox < g->ow; ox++)
                    dst[ox] = src[ox] + bf;
            }
        }
    }
}

static float row_sum(const float *v, int n);

static void shifted_backward(const conv_state *cs, const float *w, float *g, float *gb,
                             const float *in, const float *dout, float *din, int B,
                             const cnn_ctx *ctx)
{
    float *scratch = ctx->scratch;
    const cnn_window *gw = &cs->g;
    const int F = cs->filters, C = gw->c, T = gw->kh * gw->kw, wp = cs->wp;
    const int N = gw->oh * wp, P = gw->oh * gw->ow, ld = (int)shifted_plane(cs);
    const size_t in_sz = (size_t)C * gw->h * gw->w, out_sz = (size_t)F * P;
    float *xp = scratch, *dxp = xp + shifted_xp_floats(cs), *dyext = dxp + shifted_xp_floats(cs);
    float *wr = dyext + (size_t)F * N, *dwr = wr + (size_t)T * F * C;
    kernel_by_tap(cs, w, wr);
    memset(xp, 0, shifted_xp_floats(cs) * sizeof *xp);
    memset(dyext, 0, (size_t)F * N * sizeof *dyext); /* junk columns stay zero */
    memset(dwr, 0, (size_t)T * F * C * sizeof *dwr);
    for (int b = 0; b < B; b++) {
        cnn_ctx_poll(ctx);
        const float *dy = dout + b * out_sz;
        pad_image(cs, in + b * in_sz, xp);
        for (int f = 0; f < F; f++) {
            for (int oy = 0; oy < gw->oh; oy++)
                memcpy(dyext + (size_t)f * N + (size_t)oy * wp, dy + ((size_t)f * gw->oh + oy) * gw->ow,
                       (size_t)gw->ow * sizeof *dyext);
            if (gb)
                gb[f] += row_sum(dy + (size_t)f * P, P);
        }
        for (int t = 0; t < T; t++) {
            int i = t / gw->kw, j = t % gw->kw;
            cnn_sgemm(0, 1, F, C, N, 1.0f, dyext, N, xp + (size_t)i * wp + j, ld, 1.0f,
                      dwr + (size_t)t * F * C, C);
        }
        if (!din)
            continue;
        memset(dxp, 0, shifted_xp_floats(cs) * sizeof *dxp);
        for (int t = 0; t < T; t++) {
            int i = t / gw->kw, j = t % gw->kw;
            cnn_sgemm(1, 0, C, N, F, 1.0f, wr + (size_t)t * F * C, C, dyext, N, 1.0f,
                      dxp + (size_t)i * wp + j, ld);
        }
        float *dx = din + b * in_sz;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < gw->h; y++)
                memcpy(dx + ((size_t)c * gw->h + y) * gw->w,
                       dxp + (size_t)c * ld + (size_t)(y + gw->pad.top) * wp + gw->pad.left,
                       (size_t)gw->w * sizeof *dx);
    }
    for (int f = 0; f < F; f++)
        for (int c = 0; c < C; c++)
            for (int t = 0; t < T; t++)
                g[((size_t)f * C + c) * T + t] += dwr[((size_t)t * F + f) * C + c];
}

static void conv_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                         const cnn_ctx *ctx)
{
    const conv_state *cs = l->state;
    const int K = cs->g.c * cs->g.kh * cs->g.kw, P = cs->g.oh * cs->g.ow, F = cs->filters;
    const size_t in_sz = cnn_shape_size(l->in), out_sz = cnn_shape_size(l->out);
    const float *bias = cs->use_bias ? w + (size_t)F * K : NULL;
    if (cs->dnn) {
        cnn_dnn_conv_forward(cs->dnn, w, bias, in, out, B, ctx->scratch);
        cnn_preact_save(&cs->pa, l, out, B);
        return;
    }
    if (cs->shifted) {
        shifted_forward(cs, w, bias, in, out, B, ctx->scratch);
        cnn_preact_save(&cs->pa, l, out, B);
        return;
    }
    float *col = ctx->scratch;
    for (int b = 0; b < B; b++) {
        const float *x = in + b * in_sz;
        float *y = out + b * out_sz;
        if (!cs->direct)
            cnn_im2col(&cs->g, x, col);
        for (int f = 0; f < F; f++) {
            float v = bias ? bias[f] : 0.0f;
            float *yf = y + (size_t)f * P;
            for (int p = 0; p < P; p++)
                yf[p] = v;
        }
        cnn_sgemm(0, 0, F, P, K, 1.0f, w, K, cs->direct ? x : col, P, 1.0f, y, P);
    }
    cnn_preact_save(&cs->pa, l, out, B);
}

/* Sum with 8 independent partial sums, so the compiler can vectorise it. */
static float row_sum(const float *v, int n)
{
    float acc[8] = {0};
    int p = 0;
    for (; p + 8 <= n; p += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += v[p + k];
    float s = 0;
    for (; p < n; p++)
        s += v[p];
    for (int k = 0; k < 8; k++)
        s += acc[k];
    return s;
}

static void conv_backward(cnn_layer *l, const float *w, float *g, const float *in, const float *out,
                          const float *dout, float *din, int B, const cnn_ctx *ctx)
{
    (void)out;
    const conv_state *cs = l->state;
    const int K = cs->g.c * cs->g.kh * cs->g.kw, P = cs->g.oh * cs->g.ow, F = cs->filters;
    const size_t in_sz = cnn_shape_size(l->in), out_sz = cnn_shape_size(l->out);
    float *gb = cs->use_bias ? g + (size_t)F * K : NULL;
    dout = cnn_preact_backward(&cs->pa, l, dout, B);
    if (cs->dnn) {
        if (gb) /* as the GEMM paths sum it (see dnn.h) */
            for (int b = 0; b < B; b++)
                for (int f = 0; f < F; f++)
                    gb[f] += row_sum(dout + b * out_sz + (size_t)f * P, P);
        cnn_dnn_conv_backward(cs->dnn, w, in, dout, g, din, B, ctx->scratch, ctx->poll,
                              ctx->grads_ready_arg);
        return;
    }
    if (cs->shifted) {
        shifted_backward(cs, w, g, gb, in, dout, din, B, ctx);
        return;
    }
    float *col = ctx->scratch, *dcol = col + (cs->direct ? 0 : (size_t)K * P);
    /* dW^T (K, F) = sum over images of col . dy^T: this shape ran 20% faster
     * in OpenBLAS than dW = dy . col^T; transposed into g once per batch. */
    float *dwt = dcol + (cs->direct ? 0 : (size_t)K * P);
    memset(dwt, 0, (size_t)K * F * sizeof *dwt);
    for (int b = 0; b < B; b++) {
        const float *x = in + b * in_sz;
        const float *dy = dout + b * out_sz;
        const float *c = x;
        if (!cs->direct) {
            cnn_im2col(&cs->g, x, col);
            c = col;
        }
        cnn_sgemm(0, 1, K, F, P, 1.0f, c, P, dy, P, 1.0f, dwt, F);
        cnn_ctx_poll(ctx);
        if (gb)
            for (int f = 0; f < F; f++)
                gb[f] += row_sum(dy + (size_t)f * P, P);
        if (din) {
            float *dx = din + b * in_sz;
            if (cs->direct) {
                cnn_sgemm(1, 0, K, P, F, 1.0f, w, K, dy, P, 0.0f, dx, P);
            } else {
                cnn_sgemm(1, 0, K, P, F, 1.0f, w, K, dy, P, 0.0f, dcol, P);
                memset(dx, 0, in_sz * sizeof *dx);
                cnn_col2im(&cs->g, dcol, dx);
            }
        }
    }
    for (int f = 0; f < F; f++)
        for (int k = 0; k < K; k++)
            g[(size_t)f * K + k] += dwt[(size_t)k * F + f];
}

static cnn_status conv_reserve(cnn_layer *l, int max_batch, cnn_error *err)
{
    conv_state *cs = l->state;
    return cnn_preact_reserve(&cs->pa, l, max_batch, err);
}

static void conv_destroy(cnn_layer *l)
{
    conv_state *cs = l->state;
    if (cs) {
        cnn_preact_free(&cs->pa);
        cnn_dnn_conv_free(cs->dnn);
    }
    free(cs);
}

const cnn_layer_ops cnn_conv2d_ops = {
    .section = "conv2d", .keras_name = "Conv2D", .default_name = "conv2d",
    .params_size = sizeof(conv_params), .parse = conv_parse, .make = conv_make,
    .reserve = conv_reserve, .forward = conv_forward, .backward = conv_backward,
    .destroy = conv_destroy,
};
