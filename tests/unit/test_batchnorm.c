/* test_batchnorm.c - batch_normalization against Keras's definitions,
 * computed here in double: training normalises each channel with the
 * batch's mean and biased variance over (B, H, W); inference with the
 * moving statistics; the moving update is momentum * moving + (1 -
 * momentum) * batch statistic (biased variance); the tensors carry Keras's
 * names and center/scale switch beta/gamma off. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

enum { B = 4, H = 3, W = 5, C = 3, HW = H * W };

/* [input] 3x5x3, the BN section, then a head so the model is a classifier. */
static cnn_model *bn_model(const char *keys)
{
    char ini[512];
    snprintf(ini, sizeof ini,
             "[input]\nshape = 3x5x3\n[batch_normalization]\n%s[flatten]\n[dense]\nunits = 2\n",
             keys);
    return tu_model(ini, CNN_LOSS_SPARSE_CCE, B);
}

/* Reference statistics of channel c of x (B, C, H, W): mean, biased variance. */
static void ref_stats(const float *x, int c, double *mean, double *var)
{
    double s = 0, q = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < HW; i++)
            s += x[((size_t)b * C + c) * HW + i];
    *mean = s / (B * HW);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < HW; i++) {
            double d = x[((size_t)b * C + c) * HW + i] - *mean;
            q += d * d;
        }
    *var = q / (B * HW);
}

static void test_training_forward(void **state)
{
    (void)state;
    cnn_model *m = bn_model("epsilon = 0.01\n");
    cnn_layer *l = &m->layers[0];
    float x[B * C * HW], stats[2 * C];
    tu_fill(x, B * C * HW, 3, -2.0f, 5.0f);
    float *gamma = m->params + l->params[0].offset, *beta = m->params + l->params[1].offset;
    tu_fill(gamma, C, 4, 0.5f, 2.0f);
    tu_fill(beta, C, 5, -1.0f, 1.0f);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, x, B, &ctx);
    assert_int_equal(cnn_model_stats_count(m), 2 * C);
    cnn_model_stats_get(m, stats);
    for (int c = 0; c < C; c++) {
        double mean, var;
        ref_stats(x, c, &mean, &var);
        TU_NEAR(stats[c], mean, 1e-6);
        /* biased: the unbiased variance is 60/59 of it, 1.7% more */
        TU_NEAR(stats[C + c], var, 1e-6 * var);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < HW; i++) {
                size_t k = ((size_t)b * C + c) * HW + i;
                double y = (x[k] - mean) / sqrt(var + 0.01) * gamma[c] + beta[c];
                TU_NEAR(m->act[0][k], y, 1e-5);
            }
    }
    cnn_model_free(m);
}

static void test_inference_uses_moving_statistics(void **state)
{
    (void)state;
    cnn_model *m = bn_model("");
    cnn_layer *l = &m->layers[0];
    float x[B * C * HW];
    tu_fill(x, B * C * HW, 6, -2.0f, 5.0f);
    float *gamma = m->params + l->params[0].offset, *beta = m->params + l->params[1].offset;
    float *mm = m->buffers + l->buffers[0].offset, *mv = m->buffers + l->buffers[1].offset;
    tu_fill(gamma, C, 7, 0.5f, 2.0f);
    tu_fill(beta, C, 8, -1.0f, 1.0f);
    tu_fill(mm, C, 9, -1.0f, 1.0f);
    tu_fill(mv, C, 10, 0.2f, 3.0f);
    cnn_ctx ctx = cnn_model_ctx(m, 0, 1, 0, NULL);
    cnn_model_forward(m, x, B, &ctx);
    for (size_t k = 0; k < (size_t)B * C * HW; k++) {
        int c = (int)(k / HW % C);
        double y = (x[k] - mm[c]) / sqrt(mv[c] + 0.001) * gamma[c] + beta[c]; /* Keras's eps */
        TU_NEAR(m->act[0][k], y, 1e-5);
    }
    cnn_model_free(m);
}

static void test_moving_update(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 3x5x3\n[batch_normalization]\n"
                            "[batch_normalization]\nmomentum = 0.9\n[flatten]\n[dense]\nunits = 2\n",
                            CNN_LOSS_SPARSE_CCE, B);
    cnn_model_init_params(m, 1);
    assert_int_equal(cnn_model_stats_count(m), 4 * C);
    double mean[4 * C];
    for (int j = 0; j < 4 * C; j++)
        mean[j] = 0.5 + j;
    cnn_model_stats_update(m, mean);
    for (int i = 0; i < 2; i++) {
        const cnn_layer *l = &m->layers[i];
        const float mo = i ? 0.9f : 0.99f; /* Keras's default momentum first */
        const float *mm = m->buffers + l->buffers[0].offset;
        const float *mv = m->buffers + l->buffers[1].offset;
        for (int c = 0; c < C; c++) {
            /* from the initial 0 and 1 */
            TU_NEAR(mm[c], 0.0f * mo + (float)mean[2 * C * i + c] * (1 - mo), 1e-7);
            TU_NEAR(mv[c], 1.0f * mo + (float)mean[2 * C * i + C + c] * (1 - mo), 1e-6);
        }
    }
    int min_hw = 0;
    assert_int_equal(cnn_model_stats_layers(m, &min_hw), 2);
    assert_int_equal(min_hw, HW);
    cnn_model_free(m);
}

/* Keras's weight names and order; center/scale drop beta/gamma; the
 * moving statistics are 2C non-trainable floats. */
static void test_tensors(void **state)
{
    (void)state;
    static const struct {
        const char *keys;
        int nparams;
        const char *first;
    } cases[] = {{"", 2, "gamma"},
                 {"center = false\n", 1, "gamma"},
                 {"scale = false\n", 1, "beta"},
                 {"center = false\nscale = false\n", 0, NULL}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cnn_model *m = bn_model(cases[i].keys);
        const cnn_layer *l = &m->layers[0];
        assert_int_equal(l->nparams, cases[i].nparams);
        assert_int_equal(l->param_count, (size_t)cases[i].nparams * C);
        if (cases[i].first)
            assert_string_equal(l->params[0].name, cases[i].first);
        if (cases[i].nparams == 2)
            assert_string_equal(l->params[1].name, "beta");
        for (int p = 0; p < l->nparams; p++)
            assert_int_equal(l->params[p].decay, 0);
        assert_int_equal(l->nbuffers, 2);
        assert_string_equal(l->buffers[0].name, "moving_mean");
        assert_string_equal(l->buffers[1].name, "moving_variance");
        assert_int_equal(m->nbuffer_floats, 2 * C);
        cnn_model_init_params(m, 1);
        for (int c = 0; c < C; c++) {
            assert_true(m->buffers[l->buffers[0].offset + c] == 0.0f);
            assert_true(m->buffers[l->buffers[1].offset + c] == 1.0f);
        }
        cnn_model_free(m);
    }
}

static void expect_error(const char *keys, const char *needle)
{
    char ini[256];
    snprintf(ini, sizeof ini, "[input]\nshape = 3x5x3\n[batch_normalization]\n%s[flatten]\n"
                              "[dense]\nunits = 2\n", keys);
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    cnn_model *m = NULL;
    TU_STATUS(cnn_config_parse_string(&cfg, ini, "bn.ini", &err), CNN_OK, err);
    TU_STATUS(cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err), CNN_ERR_CONFIG, err);
    assert_null(m);
    TU_MSG_HAS(err, needle);
    cnn_config_free(cfg);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("axis = 1\n", "bn.ini:3: layer 'batch_normalization' (batch_normalization): "
                               "axis = 1 is not the channel axis");
    expect_error("axis = 2\n", "only the channel axis is supported (axis = -1, or 3)");
    expect_error("momentum = 1.5\n", "bn.ini:4: [batch_normalization] momentum");
    expect_error("epsilon = 0\n", "epsilon");
    expect_error("center = maybe\n", "center");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_training_forward),
        cmocka_unit_test(test_inference_uses_moving_statistics),
        cmocka_unit_test(test_moving_update),
        cmocka_unit_test(test_tensors),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
