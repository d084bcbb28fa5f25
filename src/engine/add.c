/* add.c - [add]: the element-wise sum of 2 to 16 tensors of one shape
 * (Keras's layers.Add; no keys).
 *   forward   out (B, C, H, W) = in[0] + in[1] + ... (summed in input order)
 *   backward  din[k] = dout for every input k
 * A relu that the model folds into it (l->fused_act) is applied in the same
 * pass, forward and backward.
 */
#include <stdio.h>
#include <string.h>

#include "cnn/layer.h"

/* "(H, W, C)", Keras's order, for messages. */
static const char *hwc(cnn_shape s, char *buf, size_t n)
{
    snprintf(buf, n, "(%d, %d, %d)", s.h, s.w, s.c);
    return buf;
}

static cnn_status add_make(cnn_layer *l, const void *p, const cnn_shape *in, int nin,
                           cnn_error *err)
{
    (void)p;
    for (int k = 1; k < nin; k++) /* the model gives it 2 or more */
        if (in[k].c != in[0].c || in[k].h != in[0].h || in[k].w != in[0].w) {
            char a[48], b[48];
            return cnn_error_set(err, CNN_ERR_SHAPE,
                                 "layer '%s' (add): input %d is %s but input 1 is %s; add "
                                 "takes tensors of one shape",
                                 l->name, k + 1, hwc(in[k], a, sizeof a), hwc(in[0], b, sizeof b));
        }
    l->out = in[0];
    return CNN_OK;
}

static void add_forward(cnn_layer *l, const float *w, const float *const *in, int nin,
                        float *out, int B, const cnn_ctx *ctx)
{
    (void)w;
    (void)ctx;
    const size_t n = (size_t)B * cnn_shape_size(l->out);
    const int relu = l->fused_act == CNN_ACT_RELU;
    const float *a = in[0], *b = in[1];
    if (relu && nin == 2) { /* the sum and the folded relu in one pass */
        for (size_t j = 0; j < n; j++) {
            const float v = a[j] + b[j];
            out[j] = v < 0 ? 0 : v;
        }
        return;
    }
    for (size_t j = 0; j < n; j++)
        out[j] = a[j] + b[j];
    for (int k = 2; k < nin; k++) {
        const float *c = in[k];
        for (size_t j = 0; j < n; j++)
            out[j] += c[j];
    }
    if (relu)
        cnn_activation_apply(CNN_ACT_RELU, 0.0f, out, out, n);
}

/* With a folded relu, dL/d(sum) = out > 0 ? dout : 0 (cnn_activation_backward's),
 * computed once and copied to the other inputs. */
static void add_backward(cnn_layer *l, const float *w, float *g, const float *const *in,
                         int nin, const float *out, const float *dout, float *const *din, int B,
                         const cnn_ctx *ctx)
{
    (void)w, (void)g, (void)in, (void)ctx;
    const size_t n = (size_t)B * cnn_shape_size(l->out);
    const float *src = dout;
    for (int k = 0; k < nin; k++) {
        if (!din[k])
            continue;
        if (l->fused_act == CNN_ACT_RELU && src == dout) {
            float *restrict d = din[k];
            for (size_t j = 0; j < n; j++)
                d[j] = out[j] > 0 ? dout[j] : 0;
            src = d;
        } else {
            memcpy(din[k], src, n * sizeof *src);
        }
    }
}

const cnn_layer_ops cnn_add_ops = {
    .section = "add", .keras_name = "Add", .default_name = "add",
    .max_inputs = CNN_LAYER_MAX_INPUTS, .make_n = add_make,
    .forward_n = add_forward, .backward_n = add_backward, .fusable_acts = 1u << CNN_ACT_RELU,
};
