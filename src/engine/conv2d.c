/* conv2d.c - 2-D convolution (cross-correlation, as Keras) by im2col + SGEMM.
 *
 * Per image: col (K, P) = im2col(x), K = Cin*kh*kw, P = oh*ow;
 *   forward   y (Cout, P)  = W (Cout, K) . col + b
 *   backward  dW (Cout, K) += dy (Cout, P) . col^T
 *             dcol (K, P)   = W^T . dy, then col2im into dx
 * One image per GEMM keeps col (K x P floats) in the L2 cache; whole-batch
 * GEMMs of the wide shapes measured ~3x slower in OpenBLAS (see README).
 */
#include <stdlib.h>
#include <string.h>

#include "layer.h"

typedef struct conv_state {
    cnn_window g;
    int filters;
    int use_bias;
    int direct; /* 1x1, stride 1, no padding: col is x itself */
} conv_state;

static cnn_status conv_create(cnn_layer *l, const cnn_section *s, cnn_shape in, cnn_error *err)
{
    long filters;
    int kh, kw, sh, sw, use_bias, amount;
    cnn_padding_mode mode;
    cnn_init kinit, binit;
    cnn_status st;
    char where[320];
    cnn_cfg_where(s, NULL, "filters", where, sizeof where);
    if (!cnn_section_find(s, "filters"))
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: missing (number of output channels)", where);
    if (!cnn_section_find(s, "kernel"))
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [conv2d] kernel: missing (e.g. kernel = 3)",
                             s->cfg->path, s->line);
    if ((st = cnn_cfg_int(s, "filters", 0, 1, 1 << 16, &filters, err)) ||
        (st = cnn_cfg_pair(s, "kernel", 0, 0, &kh, &kw, err)) ||
        (st = cnn_cfg_pair(s, "stride", 1, 1, &sh, &sw, err)) ||
        (st = cnn_layer_read_padding(s, &mode, &amount, err)) ||
        (st = cnn_layer_read_activation(s, &l->act, err)) ||
        (st = cnn_cfg_bool(s, "use_bias", 1, &use_bias, err)) ||
        (st = cnn_layer_read_init(s, "kernel_initializer", CNN_INIT_GLOROT_UNIFORM, &kinit, err)) ||
        (st = cnn_layer_read_init(s, "bias_initializer", CNN_INIT_ZEROS, &binit, err)))
        return st;
    conv_state *cs = calloc(1, sizeof *cs);
    if (!cs)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    l->state = cs;
    if ((st = cnn_layer_window(l, in, kh, kw, sh, sw, mode, amount, &cs->g, err)))
        return st;
    cs->filters = (int)filters;
    cs->use_bias = use_bias;
    cs->direct = kh == 1 && kw == 1 && sh == 1 && sw == 1 && cs->g.pad.top == 0 &&
                 cs->g.pad.left == 0 && cs->g.pad.bottom == 0 && cs->g.pad.right == 0;
    l->out = (cnn_shape){cs->filters, cs->g.oh, cs->g.ow};
    int K = in.c * kh * kw;
    int kdims[4] = {cs->filters, in.c, kh, kw};
    /* Keras's fans for conv kernels: receptive field times channels. */
    cnn_layer_add_param(l, "kernel", 4, kdims, kinit, K, cs->filters * kh * kw, 1);
    if (use_bias)
        cnn_layer_add_param(l, "bias", 1, &cs->filters, binit, K, cs->filters, 0);
    size_t P = (size_t)cs->g.oh * cs->g.ow;
    l->scratch_floats = cs->direct ? 0 : 2 * (size_t)K * P;
    return CNN_OK;
}

static void conv_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                         const cnn_ctx *ctx)
{
    const conv_state *cs = l->state;
    const int K = cs->g.c * cs->g.kh * cs->g.kw, P = cs->g.oh * cs->g.ow, F = cs->filters;
    const size_t in_sz = cnn_shape_size(l->in), out_sz = cnn_shape_size(l->out);
    const float *bias = cs->use_bias ? w + (size_t)F * K : NULL;
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
}

static void conv_backward(cnn_layer *l, const float *w, float *g, const float *in, const float *out,
                          const float *dout, float *din, int B, const cnn_ctx *ctx)
{
    (void)out;
    const conv_state *cs = l->state;
    const int K = cs->g.c * cs->g.kh * cs->g.kw, P = cs->g.oh * cs->g.ow, F = cs->filters;
    const size_t in_sz = cnn_shape_size(l->in), out_sz = cnn_shape_size(l->out);
    float *gb = cs->use_bias ? g + (size_t)F * K : NULL;
    float *col = ctx->scratch, *dcol = ctx->scratch + (size_t)K * P;
    for (int b = 0; b < B; b++) {
        const float *x = in + b * in_sz;
        const float *dy = dout + b * out_sz;
        const float *c = x;
        if (!cs->direct) {
            cnn_im2col(&cs->g, x, col);
            c = col;
        }
        cnn_sgemm(0, 1, F, K, P, 1.0f, dy, P, c, P, 1.0f, g, K);
        if (gb)
            for (int f = 0; f < F; f++) {
                const float *df = dy + (size_t)f * P;
                float s = 0;
                for (int p = 0; p < P; p++)
                    s += df[p];
                gb[f] += s;
            }
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
}

static void conv_destroy(cnn_layer *l) { free(l->state); }

const cnn_layer_ops cnn_conv2d_ops = {
    .section = "conv2d", .keras_name = "Conv2D", .default_name = "conv2d",
    .create = conv_create, .forward = conv_forward, .backward = conv_backward,
    .destroy = conv_destroy,
};
