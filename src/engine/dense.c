/* dense.c - fully connected layer, kernel stored (In, Out) as in Keras.
 *   forward   y (B, Out) = x (B, In) . W (In, Out) + b      (b when use_bias)
 *   backward  dW += x^T . dy;  db += colsum(dy);  dx = dy . W^T
 * x.W and dy.W^T go through oneDNN's matmul in blocks of DENSE_ROWS
 * samples (dnn.h has the measurements), x^T.dy through OpenBLAS. An
 * activation that needs its input (gelu, swish) keeps y (cnn_preact).
 */
#include <stdlib.h>

#include "cnn/layer.h"
#include "dnn.h"

/* Samples a block of the oneDNN products: 8 divides every chunk of a
 * multiple of 8 ([dist] chunk_size), so training pads none. */
#define DENSE_ROWS 8

typedef struct dense_state {
    cnn_preact pa;       /* gelu/swish: its input (cnn_preact_* do nothing for others) */
    cnn_dnn_matmul *fwd; /* x . W; NULL: OpenBLAS (oneDNN refused the shape) */
    cnn_dnn_matmul *bwd; /* dy . W^T */
} dense_state;

/* The keys of a [dense] section. */
typedef struct dense_params {
    long units;
    int use_bias;
    cnn_activation act;
    cnn_init kinit, binit;
} dense_params;

static cnn_status dense_parse(const cnn_section *s, void *params, cnn_error *err)
{
    dense_params *p = params;
    cnn_status st;
    if ((st = cnn_layer_read_activation(s, &p->act, err)) ||
        (st = cnn_cfg_bool(s, "use_bias", 1, &p->use_bias, err)) ||
        (st = cnn_layer_read_init(s, "kernel_initializer", CNN_INIT_GLOROT_UNIFORM, &p->kinit,
                                  err)) ||
        (st = cnn_layer_read_init(s, "bias_initializer", CNN_INIT_ZEROS, &p->binit, err)))
        return st;
    if (!cnn_section_find(s, "units"))
        return cnn_layer_missing(s, "units", "units = 64", err);
    return cnn_cfg_int(s, "units", 0, 1, 1 << 24, &p->units, err);
}

static cnn_status dense_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    const dense_params *p = params;
    l->act = p->act;
    if (in.h != 1 || in.w != 1)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s' (dense) receives a (%d, %d, %d) image; add a [flatten] "
                             "section before it",
                             l->name, in.h, in.w, in.c);
    int n_in = in.c, n_out = (int)p->units;
    l->out = (cnn_shape){n_out, 1, 1};
    dense_state *ds = calloc(1, sizeof *ds);
    if (!(l->state = ds))
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    l->cache_floats = cnn_preact_floats(l);
    /* a shape oneDNN refuses stays on OpenBLAS */
    size_t f = 0, b = 0;
    cnn_error dnn_err;
    if (cnn_dnn_matmul_create(&ds->fwd, DENSE_ROWS, n_out, n_in, 0, l->name, &f, &dnn_err) ||
        cnn_dnn_matmul_create(&ds->bwd, DENSE_ROWS, n_in, n_out, 1, l->name, &b, &dnn_err)) {
        cnn_dnn_matmul_free(ds->fwd);
        ds->fwd = ds->bwd = NULL;
    } else {
        l->scratch_floats = f > b ? f : b;
    }
    int kdims[2] = {n_in, n_out};
    cnn_layer_add_param(l, "kernel", 2, kdims, p->kinit, n_in, n_out, 1);
    if (p->use_bias)
        cnn_layer_add_param(l, "bias", 1, &n_out, p->binit, n_in, n_out, 0);
    return CNN_OK;
}

static void dense_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                          const cnn_ctx *ctx)
{
    const dense_state *ds = l->state;
    const int I = l->in.c, O = l->out.c;
    const float *bias = l->nparams > 1 ? w + (size_t)I * O : NULL;
    if (ds->fwd) {
        cnn_dnn_matmul_run(ds->fwd, in, w, out, B, ctx->scratch);
        if (bias)
            for (int b = 0; b < B; b++)
                for (int o = 0; o < O; o++)
                    out[(size_t)b * O + o] += bias[o];
    } else {
        for (int b = 0; b < B; b++)
            for (int o = 0; o < O; o++)
                out[(size_t)b * O + o] = bias ? bias[o] : 0.0f;
        cnn_sgemm(0, 0, B, O, I, 1.0f, in, I, w, O, 1.0f, out, O);
    }
    cnn_preact_save(&ds->pa, l, out, B);
}

static cnn_status dense_reserve(cnn_layer *l, int max_batch, cnn_error *err)
{
    dense_state *ds = l->state;
    return cnn_preact_reserve(&ds->pa, l, max_batch, err);
}

static void dense_destroy(cnn_layer *l)
{
    dense_state *ds = l->state;
    if (!ds)
        return;
    cnn_preact_free(&ds->pa);
    cnn_dnn_matmul_free(ds->fwd);
    cnn_dnn_matmul_free(ds->bwd);
    free(ds);
}

static void dense_backward(cnn_layer *l, const float *w, float *g, const float *in,
                           const float *out, const float *dout, float *din, int B,
                           const cnn_ctx *ctx)
{
    (void)out;
    const dense_state *ds = l->state;
    const int I = l->in.c, O = l->out.c;
    dout = cnn_preact_backward(&ds->pa, l, dout, B);
    cnn_sgemm(1, 0, I, O, B, 1.0f, in, I, dout, O, 1.0f, g, O);
    if (l->nparams > 1) {
        float *gb = g + (size_t)I * O;
        for (int b = 0; b < B; b++)
            for (int o = 0; o < O; o++)
                gb[o] += dout[(size_t)b * O + o];
    }
    if (din && ds->bwd)
        cnn_dnn_matmul_run(ds->bwd, dout, w, din, B, ctx->scratch);
    else if (din)
        cnn_sgemm(0, 1, B, I, O, 1.0f, dout, O, w, O, 0.0f, din, I);
}

const cnn_layer_ops cnn_dense_ops = {
    .section = "dense", .keras_name = "Dense", .default_name = "dense",
    .params_size = sizeof(dense_params), .parse = dense_parse, .make = dense_make,
    .reserve = dense_reserve, .forward = dense_forward, .backward = dense_backward,
    .destroy = dense_destroy,
};
