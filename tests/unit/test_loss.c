/* test_loss.c - the value and gradient of every loss on known logits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

/* ---- loss values -------------------------------------------------------- */

/* dense 3 -> C without bias and with an identity-like kernel, so the
 * logits are known: z = x (C = 3) or z = x[0] (C = 1). */
static cnn_model *logit_model(int C, const char *act, cnn_loss loss)
{
    char ini[256];
    snprintf(ini, sizeof ini,
             "[input]\nshape = 1x1x3\n[dense]\nunits = %d\nuse_bias = false\nactivation = %s\n", C,
             act);
    cnn_model *m = tu_model(ini, loss, 2);
    memset(m->params, 0, m->nparams * sizeof(float));
    for (int i = 0; i < C; i++)
        m->params[i * C + i] = 1; /* kernel (In = 3, Out = C) */
    return m;
}

static cnn_status loss_of(cnn_model *m, const float *x, const int32_t *y, int B, float scale,
                          cnn_batch_stats *st, cnn_error *err)
{
    cnn_ctx ctx = cnn_model_ctx(m, 0, 1, 0, NULL);
    memset(st, 0, sizeof *st);
    cnn_model_forward(m, x, B, &ctx);
    return cnn_model_loss(m, y, B, scale, 1, st, err);
}

static void test_loss_values(void **state)
{
    (void)state;
    cnn_error err = {0};
    cnn_batch_stats st;
    const float x[6] = {1, 2, 3, 1000, 0, -1000};
    const double lse = log(exp(1.0) + exp(2.0) + exp(3.0));
    for (int l = 0; l < 2; l++) {
        cnn_loss loss = l ? CNN_LOSS_CCE : CNN_LOSS_SPARSE_CCE;
        for (int a = 0; a < 2; a++) { /* softmax head or logits: same loss */
            cnn_model *m = logit_model(3, a ? "softmax" : "linear", loss);
            const int32_t y[2] = {0, 1};
            TU_STATUS(loss_of(m, x, y, 2, 0.5f, &st, &err), CNN_OK, err);
            /* sample 0: lse - z0; sample 1: ~1000 - 0, finite despite exp(1000) */
            TU_NEAR(st.loss_sum, (lse - 1) + 1000, 1e-3);
            assert_int_equal(st.correct, 0 + 0);
            assert_int_equal(st.count, 2);
            /* gradient (softmax - onehot) * scale */
            for (int j = 0; j < 3; j++)
                TU_NEAR(m->dact[0][j], 0.5 * (exp(x[j] - lse) - (j == 0)), 1e-6);
            TU_NEAR(m->dact[0][3], 0.5, 1e-6);
            TU_NEAR(m->dact[0][4], -0.5, 1e-6);
            const int32_t y2[2] = {2, 0};
            TU_STATUS(loss_of(m, x, y2, 2, 1, &st, &err), CNN_OK, err);
            TU_NEAR(st.loss_sum, (lse - 3) + 0, 1e-4);
            assert_int_equal(st.correct, 2);
            if (a) { /* the softmax head's output is the probabilities */
                for (int j = 0; j < 3; j++)
                    TU_NEAR(m->act[0][j], exp(x[j] - lse), 1e-6);
            }
            cnn_model_free(m);
        }
    }
    /* binary cross-entropy on one logit z = x[0] */
    cnn_model *m = logit_model(1, "sigmoid", CNN_LOSS_BCE);
    const float xb[6] = {0.5f, 9, 9, -100, 9, 9};
    const int32_t yb[2] = {1, 1};
    TU_STATUS(loss_of(m, xb, yb, 2, 1, &st, &err), CNN_OK, err);
    TU_NEAR(st.loss_sum, log1p(exp(-0.5)) + 100, 1e-4);
    assert_int_equal(st.correct, 1);
    TU_NEAR(m->act[0][0], 1 / (1 + exp(-0.5)), 1e-6);
    TU_NEAR(m->dact[0][0], 1 / (1 + exp(-0.5)) - 1, 1e-6);
    const int32_t yb0[2] = {0, 0};
    TU_STATUS(loss_of(m, xb, yb0, 2, 1, &st, &err), CNN_OK, err);
    TU_NEAR(st.loss_sum, log1p(exp(0.5)) + log1p(exp(-100.0)), 1e-4);
    assert_int_equal(st.correct, 1);
    /* labels must be 0/1 */
    const int32_t ybad[2] = {1, 2};
    TU_STATUS(loss_of(m, xb, ybad, 2, 1, &st, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "label 2");
    cnn_model_free(m);

    /* mean squared error against one-hot targets, on softmax outputs */
    m = logit_model(3, "softmax", CNN_LOSS_MSE);
    const int32_t ym[2] = {2, 0};
    TU_STATUS(loss_of(m, x, ym, 1, 1, &st, &err), CNN_OK, err);
    double want = 0;
    for (int j = 0; j < 3; j++) {
        double e = exp(x[j] - lse) - (j == 2);
        want += e * e / 3;
    }
    TU_NEAR(st.loss_sum, want, 1e-6);
    assert_int_equal(st.correct, 1);
    /* class labels out of range */
    const int32_t yo[2] = {3, 0};
    TU_STATUS(loss_of(m, x, yo, 1, 1, &st, &err), CNN_ERR_FORMAT, err);
    cnn_model_free(m);

    /* a NaN input gives a numeric error, not a silent NaN loss */
    m = logit_model(3, "linear", CNN_LOSS_SPARSE_CCE);
    const float xn[3] = {NAN, 0, 0};
    const int32_t y0[1] = {1};
    TU_STATUS(loss_of(m, xn, y0, 1, 1, &st, &err), CNN_ERR_NUMERIC, err);
    cnn_model_free(m);
}

/* Keras's label_smoothing: CE against y(1-ls) + ls/K, BCE against
 * y(1-ls) + ls/2; values and gradients on known logits. */
static void test_label_smoothing_values(void **state)
{
    (void)state;
    cnn_error err = {0};
    cnn_batch_stats st;
    const float x[6] = {1, 2, 3, 0.5f, 0, -1};
    const float ls = 0.1f;
    for (int l = 0; l < 2; l++) {
        cnn_model *m = logit_model(3, "softmax", l ? CNN_LOSS_CCE : CNN_LOSS_SPARSE_CCE);
        m->label_smoothing = ls;
        const int32_t y[2] = {0, 2};
        TU_STATUS(loss_of(m, x, y, 2, 1, &st, &err), CNN_OK, err);
        double want = 0;
        for (int b = 0; b < 2; b++) {
            const float *z = x + 3 * b;
            double lse = log(exp(z[0]) + exp(z[1]) + exp(z[2]));
            for (int j = 0; j < 3; j++) {
                double t = (j == y[b]) * (1.0 - ls) + ls / 3.0;
                want -= t * (z[j] - lse);
                TU_NEAR(m->dact[0][3 * b + j], exp(z[j] - lse) - t, 1e-6);
            }
        }
        TU_NEAR(st.loss_sum, want, 1e-5);
        cnn_model_free(m);
    }
    cnn_model *m = logit_model(1, "sigmoid", CNN_LOSS_BCE);
    m->label_smoothing = 0.2f;
    const float xb[6] = {0.7f, 0, 0, -1.5f, 0, 0};
    const int32_t yb[2] = {1, 0};
    TU_STATUS(loss_of(m, xb, yb, 2, 1, &st, &err), CNN_OK, err);
    double want = 0;
    for (int b = 0; b < 2; b++) {
        double z = xb[3 * b], t = yb[b] * 0.8 + 0.1, p = 1 / (1 + exp(-z));
        want -= t * log(p) + (1 - t) * log(1 - p);
        TU_NEAR(m->dact[0][b], p - t, 1e-6);
    }
    TU_NEAR(st.loss_sum, want, 1e-5);
    cnn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loss_values),
        cmocka_unit_test(test_label_smoothing_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
