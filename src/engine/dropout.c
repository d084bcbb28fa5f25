/* dropout.c - inverted dropout (training only).
 *
 * The keep/drop decision of element e of a sample is a pure function of
 * (seed, layer, epoch, global sample index, e), so it is recomputed in
 * backward instead of stored, and it does not depend on which rank or which
 * batch position processes the sample.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/rng.h"
#include "cnn/layer.h"

/* The keys of a [dropout] section. */
typedef struct dropout_params {
    double rate;
} dropout_params;

static cnn_status dropout_parse(const cnn_section *s, void *params, cnn_error *err)
{
    dropout_params *p = params;
    if (!cnn_section_find(s, "rate"))
        return cnn_layer_missing(s, "rate", "rate = 0.5", err);
    return cnn_cfg_float(s, "rate", 0.5, 0.0, 0.999, &p->rate, err);
}

static cnn_status dropout_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    const dropout_params *p = params;
    l->out = in;
    float *r = malloc(sizeof *r);
    if (!r)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    *r = (float)p->rate;
    l->state = r;
    return CNN_OK;
}

static inline uint64_t dropout_stream(const cnn_layer *l, const cnn_ctx *ctx)
{
    return CNN_STREAM_DROPOUT | ((uint64_t)l->index << 8) | (ctx->epoch << 24);
}

static inline int dropout_keep(uint64_t seed, uint64_t stream, int64_t id, size_t e, float rate)
{
    return cnn_rng_uniform(cnn_rng_hash(seed, stream, (uint64_t)id, e)) >= rate;
}

static void dropout_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                            const cnn_ctx *ctx)
{
    (void)w;
    const size_t n = cnn_shape_size(l->in);
    const float rate = *(const float *)l->state;
    if (!ctx->training || rate == 0.0f) {
        memcpy(out, in, (size_t)B * n * sizeof *out);
        return;
    }
    const float scale = 1.0f / (1.0f - rate);
    const uint64_t stream = dropout_stream(l, ctx);
    for (int b = 0; b < B; b++) {
        int64_t id = ctx->sample_id ? ctx->sample_id[b] : b;
        for (size_t e = 0; e < n; e++)
            out[b * n + e] =
                dropout_keep(ctx->seed, stream, id, e, rate) ? in[b * n + e] * scale : 0.0f;
    }
}

static void dropout_backward(cnn_layer *l, const float *w, float *g, const float *in,
                             const float *out, const float *dout, float *din, int B,
                             const cnn_ctx *ctx)
{
    (void)w;
    (void)g;
    (void)in;
    (void)out;
    if (!din)
        return;
    const size_t n = cnn_shape_size(l->in);
    const float rate = *(const float *)l->state;
    if (!ctx->training || rate == 0.0f) {
        memcpy(din, dout, (size_t)B * n * sizeof *din);
        return;
    }
    const float scale = 1.0f / (1.0f - rate);
    const uint64_t stream = dropout_stream(l, ctx);
    for (int b = 0; b < B; b++) {
        int64_t id = ctx->sample_id ? ctx->sample_id[b] : b;
        for (size_t e = 0; e < n; e++)
            din[b * n + e] =
                dropout_keep(ctx->seed, stream, id, e, rate) ? dout[b * n + e] * scale : 0.0f;
    }
}

static void dropout_destroy(cnn_layer *l) { free(l->state); }

const cnn_layer_ops cnn_dropout_ops = {
    .section = "dropout", .keras_name = "Dropout", .default_name = "dropout",
    .params_size = sizeof(dropout_params), .parse = dropout_parse, .make = dropout_make,
    .forward = dropout_forward, .backward = dropout_backward,
    .destroy = dropout_destroy,
};
