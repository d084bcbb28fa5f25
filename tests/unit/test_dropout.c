/* test_dropout.c - dropout masks are pure functions of (seed, layer,
 * epoch, sample, element): the same on any rank and batch position, the
 * same in backward as in forward; rate 0 and inference pass through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/rng.h"
#include "testutil.h"

/* ---- dropout ----------------------------------------------------------- */

enum { DN = 2000 };

static void test_dropout(void **state)
{
    (void)state;
    const float rate = 0.3f;
    cnn_model *m = tu_model("[input]\nshape = 1x1x2000\n[dropout]\nrate = 0.3\n", CNN_LOSS_MSE, 4);
    static float x[4 * DN], y1[4 * DN], y2[4 * DN];
    tu_fill(x, 4 * DN, 1, 0.5f, 1.5f); /* no zeros: a zero output means dropped */
    const int64_t ids1[4] = {7, 3, 9, 5};
    const int64_t ids2[2] = {5, 7};
    cnn_ctx ctx = cnn_model_ctx(m, 1, 42, 2, ids1);
    memcpy(y1, cnn_model_forward(m, x, 4, &ctx), sizeof y1);

    const float scale = 1.0f / (1.0f - rate);
    long dropped = 0;
    for (int i = 0; i < 4 * DN; i++) {
        if (y1[i] == 0.0f)
            dropped++;
        else if (y1[i] != x[i] * scale)
            fail_msg("kept element %d is %g, expected %g * %g", i, y1[i], x[i], scale);
    }
    /* 8000 Bernoulli(0.3) draws: sd 0.005 */
    TU_NEAR((double)dropped / (4 * DN), rate, 0.025);

    /* sample 5 (position 3 before) and 7 (position 0) now at positions 0 and 1
     * with the same inputs: same masks. */
    float x2[2 * DN];
    memcpy(x2, x + 3 * DN, DN * sizeof(float));
    memcpy(x2 + DN, x, DN * sizeof(float));
    ctx = cnn_model_ctx(m, 1, 42, 2, ids2);
    memcpy(y2, cnn_model_forward(m, x2, 2, &ctx), 2 * DN * sizeof(float));
    assert_memory_equal(y2, y1 + 3 * DN, DN * sizeof(float));
    assert_memory_equal(y2 + DN, y1, DN * sizeof(float));

    /* backward uses the same mask and scale */
    const cnn_layer *l = &m->layers[0];
    float dy[2 * DN], dx[2 * DN];
    tu_fill(dy, 2 * DN, 3, -1, 1);
    l->ops->backward((cnn_layer *)l, m->params, m->grads, x2, m->act[0], dy, dx, 2, &ctx);
    for (int i = 0; i < 2 * DN; i++) {
        float want = y2[i] == 0.0f ? 0.0f : dy[i] * scale;
        if (dx[i] != want)
            fail_msg("dx[%d] = %g, expected %g", i, dx[i], want);
    }

    /* another epoch, seed or sample gives another mask */
    int64_t id7 = 7;
    float z[DN];
    ctx = cnn_model_ctx(m, 1, 42, 3, &id7);
    memcpy(z, cnn_model_forward(m, x, 1, &ctx), sizeof z);
    long diff = 0;
    for (int i = 0; i < DN; i++)
        diff += (z[i] == 0) != (y1[i] == 0);
    assert_true(diff > DN / 5); /* independent masks differ on ~42% */
    ctx = cnn_model_ctx(m, 1, 43, 2, &id7);
    memcpy(z, cnn_model_forward(m, x, 1, &ctx), sizeof z);
    diff = 0;
    for (int i = 0; i < DN; i++)
        diff += (z[i] == 0) != (y1[i] == 0);
    assert_true(diff > DN / 5);
    /* sample 3 and sample 7 (the same input values) have different masks */
    int64_t id3 = 3;
    ctx = cnn_model_ctx(m, 1, 42, 2, &id3);
    memcpy(z, cnn_model_forward(m, x, 1, &ctx), sizeof z);
    diff = 0;
    for (int i = 0; i < DN; i++)
        diff += (z[i] == 0) != (y1[i] == 0);
    assert_true(diff > DN / 5);

    /* inference: identity, forward and backward */
    ctx = cnn_model_ctx(m, 0, 42, 2, ids1);
    const float *yi = cnn_model_forward(m, x, 4, &ctx);
    assert_memory_equal(yi, x, sizeof x);
    l->ops->backward((cnn_layer *)l, m->params, m->grads, x2, m->act[0], dy, dx, 2, &ctx);
    assert_memory_equal(dx, dy, sizeof dx);
    cnn_model_free(m);
}

/* rate = 0 keeps everything even when training. */
static void test_dropout_rate_zero(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 1x1x50\n[dropout]\nrate = 0\n", CNN_LOSS_MSE, 2);
    float x[100];
    tu_fill(x, 100, 5, -1, 1);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 42, 0, NULL);
    assert_memory_equal(cnn_model_forward(m, x, 2, &ctx), x, sizeof x);
    cnn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_dropout_rate_zero),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
