/* activation_layer.c - [activation]: an activation on its own, as Keras's
 * Activation layer (and LeakyReLU / ELU with their alpha).
 *
 *   [activation]
 *   activation = leaky_relu     (required: any name of cnn_activation_names)
 *   alpha = 0.1                 (leaky_relu and elu only; default 0.3 and 1.0)
 *
 * With the default alpha the layer is an identity whose l->act is the
 * activation, so the model applies it as it does on conv2d or dense (and
 * a final softmax or sigmoid is still fused with the loss); backward then
 * only has to apply f'(x) for gelu and swish, which the model cannot. With
 * another alpha the layer applies the activation itself, from its input.
 * The model folds the layer into the one it reads when that one can apply
 * l->act (cnn_layer_ops.fusable_acts: batch_normalization, add) and has no
 * other reader; it is then never run.
 * Output shape = input shape; softmax needs a flat input, as on dense.
 */
#include <stdlib.h>
#include <string.h>

#include "cnn/layer.h"

typedef struct act_params {
    cnn_activation act;
    float alpha;
    int own; /* applied here (another alpha), not by the model */
} act_params;

static cnn_status act_parse(const cnn_section *s, void *params, cnn_error *err)
{
    act_params *p = params;
    cnn_status st;
    if (!cnn_section_find(s, "activation"))
        return cnn_layer_missing(s, "activation", "activation = relu", err);
    if ((st = cnn_layer_read_activation(s, &p->act, err)))
        return st;
    const float def = cnn_activation_default_alpha(p->act);
    cnn_kv *kv = cnn_section_find(s, "alpha");
    if (kv && def == 0.0f) {
        char where[320];
        cnn_cfg_where(s, kv, "alpha", where, sizeof where);
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%s: activation %s has no alpha (only leaky_relu and elu have one)",
                             where, cnn_activation_names[p->act]);
    }
    double alpha;
    if ((st = cnn_cfg_float(s, "alpha", def, 0.0, 1e6, &alpha, err)))
        return st;
    p->alpha = (float)alpha;
    p->own = p->alpha != def;
    return CNN_OK;
}

static cnn_status act_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    const act_params *p = params;
    l->out = in;
    l->act = p->own ? CNN_ACT_LINEAR : p->act;
    act_params *own = malloc(sizeof *own);
    if (!own)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    *own = *p;
    l->state = own;
    return CNN_OK;
}

static void act_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                        const cnn_ctx *ctx)
{
    (void)w;
    (void)ctx;
    const act_params *p = l->state;
    const size_t n = (size_t)B * cnn_shape_size(l->out);
    if (p->own)
        cnn_activation_apply(p->act, p->alpha, in, out, n);
    else
        memcpy(out, in, n * sizeof *out); /* the model applies l->act */
}

/* dout: the model has applied f'(y) unless the activation needs x (gelu,
 * swish) or is our own; then f'(x) is applied here. */
static void act_backward(cnn_layer *l, const float *w, float *g, const float *in,
                         const float *out, const float *dout, float *din, int B,
                         const cnn_ctx *ctx)
{
    (void)w;
    (void)g;
    (void)out;
    (void)ctx;
    const act_params *p = l->state;
    const size_t n = (size_t)B * cnn_shape_size(l->out);
    if (!din)
        return;
    if (p->own || cnn_activation_needs_input(p->act))
        cnn_activation_grad_input(p->act, p->alpha, in, dout, din, n);
    else
        memcpy(din, dout, n * sizeof *din);
}

static void act_destroy(cnn_layer *l) { free(l->state); }

const cnn_layer_ops cnn_activation_ops = {
    .section = "activation", .keras_name = "Activation", .default_name = "activation",
    .params_size = sizeof(act_params), .parse = act_parse, .make = act_make,
    .forward = act_forward, .backward = act_backward, .destroy = act_destroy,
    .identity_act = 1,
};
