/* test_layer_api.c - a layer type written against the public headers alone
 * (cnn/layer.h), registered nowhere and built through
 * cnn_model_create_types(): its non-trainable buffers get their own offsets
 * in model->buffers, start at their init, stay out of params and grads, and
 * count in --summary as Non-trainable params. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/layer.h"
#include "testutil.h"

/* [shift] y = x + b per channel, with two buffers as BatchNormalization will have. */
static cnn_status shift_make(cnn_layer *l, const void *p, cnn_shape in, cnn_error *err)
{
    l->out = in;
    cnn_layer_add_param(l, "bias", 1, &in.c, CNN_INIT_ZEROS, in.c, in.c, 0);
    cnn_layer_add_buffer(l, "moving_mean", 1, &in.c, CNN_INIT_ZEROS);
    cnn_layer_add_buffer(l, "moving_variance", 1, &in.c, CNN_INIT_ONES);
    return CNN_OK;
}

static void shift_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                          const cnn_ctx *ctx)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < l->in.c; c++)
            out[b * l->in.c + c] = in[b * l->in.c + c] + w[c];
}

static void shift_backward(cnn_layer *l, const float *w, float *g, const float *in,
                           const float *out, const float *dout, float *din, int B,
                           const cnn_ctx *ctx)
{
    for (int b = 0; b < B; b++)
        for (int c = 0; c < l->in.c; c++) {
            g[c] += dout[b * l->in.c + c];
            if (din)
                din[b * l->in.c + c] = dout[b * l->in.c + c];
        }
}

static const cnn_layer_ops shift_ops = {
    .section = "shift", .keras_name = "Shift", .default_name = "shift",
    .make = shift_make, .forward = shift_forward, .backward = shift_backward,
};

static cnn_model *shift_model(void)
{
    const cnn_layer_ops *const types[] = {cnn_layer_find_type("input"), &shift_ops,
                                          cnn_layer_find_type("dense"), NULL};
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    cnn_model *m = NULL;
    TU_STATUS(cnn_config_parse_string(&cfg, "[input]\nshape = 1x1x3\n[shift]\n[dense]\nunits = 2\n"
                                            "[shift]\n",
                                      "shift.ini", &err),
              CNN_OK, err);
    TU_STATUS(cnn_model_create_types(&m, cfg, CNN_LOSS_MSE, types, &err), CNN_OK, err);
    TU_STATUS(cnn_model_reserve(m, 2, &err), CNN_OK, err);
    cnn_config_free(cfg);
    return m;
}

static void test_buffers_laid_out_and_initialised(void **state)
{
    (void)state;
    cnn_model *m = shift_model();
    assert_int_equal(m->nlayers, 3);
    assert_string_equal(m->layers[2].name, "shift_1");
    assert_int_equal(m->nparams, 3 + (3 * 2 + 2) + 2);
    assert_int_equal(m->nbuffer_floats, 2 * 3 + 2 * 2);
    const cnn_layer *a = &m->layers[0], *b = &m->layers[2];
    assert_int_equal(a->nbuffers, 2);
    assert_string_equal(a->buffers[1].name, "moving_variance");
    assert_int_equal(a->buffers[0].offset, 0);
    assert_int_equal(a->buffers[1].offset, 3);
    assert_int_equal(b->buffers[0].offset, 6);
    assert_int_equal(b->buffers[1].offset, 8);
    assert_int_equal(b->buffers[1].count, 2);
    assert_int_equal(a->buffers[0].decay, 0);
    for (size_t i = 0; i < m->nbuffer_floats; i++)
        m->buffers[i] = -7.0f;
    cnn_model_init_params(m, 42);
    for (int li = 0; li < 3; li += 2)
        for (int k = 0; k < m->layers[li].nbuffers; k++) {
            const cnn_param *t = &m->layers[li].buffers[k];
            for (size_t i = 0; i < t->count; i++)
                assert_true(m->buffers[t->offset + i] == (t->init == CNN_INIT_ONES ? 1.0f : 0.0f));
        }
    /* a training step leaves the buffers alone */
    const float x[6] = {1, 2, 3, 4, 5, 6};
    const int32_t y[2] = {0, 1};
    cnn_batch_stats bs = {0};
    cnn_error err = {0};
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_zero_grad(m);
    cnn_model_forward(m, x, 2, &ctx);
    TU_STATUS(cnn_model_loss(m, y, 2, 0.5f, 1, &bs, &err), CNN_OK, err);
    cnn_model_backward(m, x, 2, &ctx);
    assert_true(m->buffers[3] == 1.0f && m->buffers[0] == 0.0f);
    cnn_model_free(m);
}

static void test_summary_counts_non_trainable(void **state)
{
    (void)state;
    cnn_model *m = shift_model();
    char buf[4096] = {0};
    FILE *f = fmemopen(buf, sizeof buf - 1, "w");
    cnn_model_summary(m, f);
    fclose(f);
    if (!strstr(buf, "Total params: 23\n") || !strstr(buf, "Trainable params: 13\n") ||
        !strstr(buf, "Non-trainable params: 10\n"))
        fail_msg("summary:\n%s", buf);
    /* Keras shows a layer's buffers in its Param # */
    if (!strstr(buf, " shift (Shift)                (None, 3)                 9 "))
        fail_msg("summary:\n%s", buf);
    cnn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffers_laid_out_and_initialised),
        cmocka_unit_test(test_summary_counts_non_trainable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
