/* dense.c - fully connected layer, kernel stored (In, Out) as in Keras.
 *   forward   y (B, Out) = x (B, In) . W (In, Out) + b      (b when use_bias)
 *   backward  dW += x^T . dy;  db += colsum(dy);  dx = dy . W^T
 * An activation that needs its input (gelu, swish) keeps y in l->state.
 */
#include <stdlib.h>

#include "cnn/layer.h"

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
    if (cnn_preact_floats(l)) {
        if (!(l->state = calloc(1, sizeof(cnn_preact))))
            return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
        l->cache_floats = cnn_preact_floats(l);
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
    (void)ctx;
    const int I = l->in.c, O = l->out.c;
    const float *bias = l->nparams > 1 ? w + (size_t)I * O : NULL;
    for (int b = 0; b < B; b++)
        for (int o = 0; o < O; o++)
            out[(size_t)b * O + o] = bias ? bias[o] : 0.0f;
    cnn_sgemm(0, 0, B, O, I, 1.0f, in, I, w, O, 1.0f, out, O);
    if (l->state)
        cnn_preact_save(l->state, l, out, B);
}

static cnn_status dense_reserve(cnn_layer *l, int max_batch, cnn_error *err)
{
    return l->state ? cnn_preact_reserve(l->state, l, max_batch, err) : CNN_OK;
}

static void dense_destroy(cnn_layer *l)
{
    if (l->state)
        cnn_preact_free(l->state);
    free(l->state);
}

static void dense_backward(cnn_layer *l, const float *w, float *g, const float *in,
                           const float *out, const float *dout, float *din, int B,
                           const cnn_ctx *ctx)
{
    (void)out;
    (void)ctx;
    const int I = l->in.c, O = l->out.c;
    if (l->state)
        dout = cnn_preact_backward(l->state, l, dout, B);
    cnn_sgemm(1, 0, I, O, B, 1.0f, in, I, dout, O, 1.0f, g, O);
    if (l->nparams > 1) {
        float *gb = g + (size_t)I * O;
        for (int b = 0; b < B; b++)
            for (int o = 0; o < O; o++)
                gb[o] += dout[(size_t)b * O + o];
    }
    if (din)
        cnn_sgemm(0, 1, B, I, O, 1.0f, dout, O, w, O, 0.0f, din, I);
}

const cnn_layer_ops cnn_dense_ops = {
    .section = "dense", .keras_name = "Dense", .default_name = "dense",
    .params_size = sizeof(dense_params), .parse = dense_parse, .make = dense_make,
    .reserve = dense_reserve, .forward = dense_forward, .backward = dense_backward,
    .destroy = dense_destroy,
};
