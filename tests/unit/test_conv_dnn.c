/* test_conv_dnn.c - conv2d through oneDNN (src/engine/dnn.c): images go in
 * sub-batches of a fixed size S (16 for these small shapes) and a short
 * last one is zero-padded, so
 *   - each image's output and dL/dx are the same bits whether it is run
 *     alone or at any place of a batch with a padded tail, and
 *   - the weight and bias gradients of a batch of a full sub-batch plus a
 *     tail match a naive double-precision reference (the padding adds
 *     nothing);
 * and two models convolve on two threads at once with the bits of one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>

#include "testutil.h"

enum { NB = 19 }; /* one sub-batch of 16 and a tail of 3 */

static void layer0_backward(cnn_model *m, const float *x, const float *dy, float *dx, int B)
{
    cnn_layer *l = &m->layers[0];
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    l->ops->backward(l, m->params + l->param_offset, m->grads + l->param_offset, x, m->act[0], dy,
                     dx, B, &ctx);
}

static void check_case(const char *spec, int H, int W, int C, int sh)
{
    char ini[512];
    snprintf(ini, sizeof ini, "[input]\nshape = %dx%dx%d\n[conv2d]\n%s\nactivation = linear\n"
             "[flatten]\n", H, W, C, spec);
    cnn_model *m = tu_model(ini, CNN_LOSS_MSE, NB);
    const cnn_layer *l = &m->layers[0];
    const int F = l->out.c, oh = l->out.h, ow = l->out.w, kh = l->params[0].dims[2],
              kw = l->params[0].dims[3];
    const size_t in_sz = (size_t)C * H * W, out_sz = (size_t)F * oh * ow;
    const size_t wsz = l->params[0].count;
    tu_fill(m->params, m->nparams, 3, -1, 1);
    float *x = malloc(NB * in_sz * sizeof *x), *dy = malloc(NB * out_sz * sizeof *dy);
    float *y = malloc(NB * out_sz * sizeof *y), *dx = malloc(NB * in_sz * sizeof *dx);
    float *dx1 = malloc(in_sz * sizeof *dx1), *g = malloc((wsz + F) * sizeof *g);
    assert_true(x && dy && y && dx && dx1 && g);
    tu_fill(x, NB * in_sz, 4, -1, 1);
    tu_fill(dy, NB * out_sz, 5, -1, 1);
    /* the workspace holds whatever the last layer left there: garbage */
    for (size_t k = 0; k < m->scratch_floats; k++)
        m->scratch[k] = 1e30f;
    cnn_ctx ctx = cnn_model_ctx(m, 0, 1, 0, NULL);
    cnn_model_forward(m, x, NB, &ctx);
    memcpy(y, m->act[0], NB * out_sz * sizeof *y);
    memset(m->grads, 0, m->nparams * sizeof *m->grads);
    for (size_t k = 0; k < m->scratch_floats; k++)
        m->scratch[k] = 1e30f;
    layer0_backward(m, x, dy, dx, NB);
    memcpy(g, m->grads + l->param_offset, (wsz + F) * sizeof *g);
    /* the same bits alone as in the batch (first, middle of the full
     * sub-batch, first and last of the padded tail) */
    const int probe[] = {0, 7, 16, 18};
    for (size_t i = 0; i < sizeof probe / sizeof *probe; i++) {
        const int b = probe[i];
        cnn_model_forward(m, x + b * in_sz, 1, &ctx);
        if (memcmp(m->act[0], y + b * out_sz, out_sz * sizeof *y))
            fail_msg("%s: image %d's output alone differs from its output in a batch of %d",
                     spec, b, NB);
        layer0_backward(m, x + b * in_sz, dy + b * out_sz, dx1, 1);
        if (memcmp(dx1, dx + b * in_sz, in_sz * sizeof *dx1))
            fail_msg("%s: image %d's dL/dx alone differs from its dL/dx in a batch of %d", spec,
                     b, NB);
    }
    /* the gradients of the batch against a naive reference */
    /* padding before: none (valid) or TensorFlow's same rule */
    const int top = ((oh - 1) * sh + kh - H) / 2 > 0 ? ((oh - 1) * sh + kh - H) / 2 : 0;
    const int left = ((ow - 1) * sh + kw - W) / 2 > 0 ? ((ow - 1) * sh + kw - W) / 2 : 0;
    for (int f = 0; f < F; f++) {
        double db = 0, mag = 0;
        for (int b = 0; b < NB; b++)
            for (size_t p = 0; p < (size_t)oh * ow; p++) {
                db += dy[b * out_sz + f * (size_t)oh * ow + p];
                mag += fabs(dy[b * out_sz + f * (size_t)oh * ow + p]);
            }
        if (fabs(g[wsz + f] - db) > 1e-5 * (1 + mag))
            fail_msg("%s: db[%d] = %.7g, expected %.7g", spec, f, g[wsz + f], db);
        for (int c = 0; c < C; c++)
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    double want = 0, wmag = 0;
                    for (int b = 0; b < NB; b++)
                        for (int oy = 0; oy < oh; oy++)
                            for (int ox = 0; ox < ow; ox++) {
                                int iy = oy * sh - top + i, ix = ox * sh - left + j;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                    continue;
                                double p = (double)dy[b * out_sz + ((size_t)f * oh + oy) * ow + ox] *
                                           x[b * in_sz + ((size_t)c * H + iy) * W + ix];
                                want += p;
                                wmag += fabs(p);
                            }
                    float got = g[((f * C + c) * kh + i) * kw + j];
                    if (fabs(got - want) > 1e-5 * (1 + wmag))
                        fail_msg("%s: dW[%d,%d,%d,%d] = %.7g, expected %.7g", spec, f, c, i, j,
                                 got, want);
                }
    }
    free(x);
    free(dy);
    free(y);
    free(dx);
    free(dx1);
    free(g);
    cnn_model_free(m);
}

static void test_conv_dnn_stride1_same(void **state)
{
    (void)state;
    check_case("filters = 5\nkernel = 3\npadding = same", 6, 6, 4, 1);
}

static void test_conv_dnn_stride2_same(void **state)
{
    (void)state; /* 8 -> 4 with a 3x3 window: padding 0 before, 1 after */
    check_case("filters = 3\nkernel = 3\nstride = 2\npadding = same", 8, 8, 3, 2);
}

static void test_conv_dnn_valid_two_channels(void **state)
{
    (void)state;
    check_case("filters = 4\nkernel = 3", 7, 7, 2, 1); /* 1 channel: GEMM paths */
}

/* Two models' convolutions on two threads at once give the bits each gives
 * alone: the primitives are shared read-only, all working memory is the
 * model's scratch, and oneDNN runs on the calling thread. */
typedef struct job {
    cnn_model *m;
    const float *x;
    float *dx;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    cnn_ctx ctx = cnn_model_ctx(j->m, 0, 1, 0, NULL);
    for (int r = 0; r < 20; r++) {
        cnn_model_forward(j->m, j->x, NB, &ctx);
        layer0_backward(j->m, j->x, j->m->act[0], j->dx, NB);
    }
    return NULL;
}

static void test_conv_dnn_two_threads(void **state)
{
    (void)state;
    const char *ini = "[input]\nshape = 12x12x8\n[conv2d]\nfilters = 16\nkernel = 3\n"
                      "padding = same\n[flatten]\n";
    const size_t in_sz = 12 * 12 * 8, out_sz = 12 * 12 * 16;
    cnn_model *m[2] = {tu_model(ini, CNN_LOSS_MSE, NB), tu_model(ini, CNN_LOSS_MSE, NB)};
    float *x = malloc(NB * in_sz * sizeof *x), *want_y = malloc(NB * out_sz * sizeof *want_y);
    float *want_dx = malloc(NB * in_sz * sizeof *want_dx), *dx[2];
    assert_true(x && want_y && want_dx);
    tu_fill(x, NB * in_sz, 9, -1, 1);
    job jobs[2];
    for (int t = 0; t < 2; t++) {
        tu_fill(m[t]->params, m[t]->nparams, 8, -1, 1);
        dx[t] = malloc(NB * in_sz * sizeof *dx[t]);
        assert_non_null(dx[t]);
        jobs[t] = (job){m[t], x, dx[t]};
    }
    run_job(&jobs[0]); /* alone */
    memcpy(want_y, m[0]->act[0], NB * out_sz * sizeof *want_y);
    memcpy(want_dx, dx[0], NB * in_sz * sizeof *want_dx);
    pthread_t th[2];
    for (int t = 0; t < 2; t++)
        assert_int_equal(pthread_create(&th[t], NULL, run_job, &jobs[t]), 0);
    for (int t = 0; t < 2; t++) {
        assert_int_equal(pthread_join(th[t], NULL), 0);
        assert_memory_equal(m[t]->act[0], want_y, NB * out_sz * sizeof *want_y);
        assert_memory_equal(dx[t], want_dx, NB * in_sz * sizeof *want_dx);
        free(dx[t]);
        cnn_model_free(m[t]);
    }
    free(x);
    free(want_y);
    free(want_dx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_dnn_stride1_same),
        cmocka_unit_test(test_conv_dnn_stride2_same),
        cmocka_unit_test(test_conv_dnn_valid_two_channels),
        cmocka_unit_test(test_conv_dnn_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
