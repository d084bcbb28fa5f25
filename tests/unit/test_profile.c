/* test_profile.c - the profiler (cnn/profile.h): every layer timed once per
 * forward and backward, the trace holds the traced steps' events and is
 * JSON the merge joins, the model computes the same with and without it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/profile.h"
#include "testutil.h"

static const char *const NET = "[input]\nshape = 6x6x2\n"
                               "[conv2d]\nfilters = 3\nkernel = 3\nactivation = relu\n"
                               "[batch_normalization]\n"
                               "[flatten]\n[dense]\nunits = 4\nactivation = softmax\n";
enum { B = 3, STEPS = 4, TRACED = 2 };

/* STEPS forward/backward passes on a fixed batch; returns the logits of
 * the last forward (B * 4 floats into out). */
static void run(cnn_model *m, cnn_profile *p, float *out)
{
    float x[B * 72];
    int32_t y[B] = {0, 1, 3};
    int64_t ids[B] = {0, 1, 2};
    for (int i = 0; i < B * 72; i++)
        x[i] = (float)((i * 37) % 11) / 11.0f - 0.5f;
    cnn_model_init_params(m, 7);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 7, 0, ids);
    cnn_error err = {0};
    for (int s = 0; s < STEPS; s++) {
        double t0 = cnn_profile_now();
        cnn_batch_stats bs = {0};
        cnn_model_zero_grad(m);
        const float *o = cnn_model_forward(m, x, B, &ctx);
        memcpy(out, o, B * 4 * sizeof *out);
        TU_STATUS(cnn_model_loss(m, y, B, 1.0f / B, 1, &bs, &err), CNN_OK, err);
        cnn_model_backward(m, x, B, &ctx);
        cnn_profile_span(p, CNN_SPAN_STEP, t0, cnn_profile_now());
        cnn_profile_step(p, B);
    }
}

static long count_in(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[4096];
    long n = 0;
    while (fgets(line, sizeof line, f))
        for (const char *s = line; (s = strstr(s, needle)); s++)
            n++;
    fclose(f);
    return n;
}

static void test_layers_and_trace(void **state)
{
    (void)state;
    cnn_model *m = tu_model(NET, CNN_LOSS_SPARSE_CCE, B);
    cnn_error err = {0};
    float plain[B * 4], timed[B * 4];
    run(m, NULL, plain); /* the NULL profile is a no-op everywhere */

    cnn_profile *p = NULL;
    TU_STATUS(cnn_profile_create(&p, m, TRACED, &err), CNN_OK, err);
    cnn_profile_attach(p, m);
    run(m, p, timed);
    assert_memory_equal(plain, timed, sizeof plain);
    assert_int_equal(cnn_profile_steps(p), STEPS);
    assert_true(cnn_profile_span_per_image(p, CNN_SPAN_STEP) > 0.0);

    const char *a = "test_profile.rank0.json", *b = "test_profile.rank1.json",
               *all = "test_profile.json";
    TU_STATUS(cnn_profile_write_trace(p, m, a, 0, &err), CNN_OK, err);
    TU_STATUS(cnn_profile_write_trace(p, m, b, 1, &err), CNN_OK, err);
    /* TRACED steps of 4 layers forward and backward, and their step spans */
    assert_int_equal(count_in(a, "\"cat\": \"forward\""), TRACED * m->nlayers);
    assert_int_equal(count_in(a, "\"cat\": \"backward\""), TRACED * m->nlayers);
    assert_int_equal(count_in(a, "\"name\": \"step\""), TRACED);
    const char *paths[] = {a, b};
    TU_STATUS(cnn_profile_merge_traces(paths, 2, all, &err), CNN_OK, err);
    assert_int_equal(count_in(all, "\"ph\": \"X\""), 2 * (2 * TRACED * m->nlayers + TRACED));
    assert_int_equal(count_in(all, "\"pid\": 1,"), 1 + 2 * TRACED * m->nlayers + TRACED);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c \"import json; json.load(open('%s'))\"", all);
    if (system("/usr/bin/python3 -c 0 2>/dev/null") == 0)
        assert_int_equal(system(cmd), 0);

    /* the table names every layer and its rate column */
    FILE *f = tmpfile();
    cnn_profile_print(p, m, 100.0, f);
    rewind(f);
    char text[8192] = {0};
    fread(text, 1, sizeof text - 1, f);
    fclose(f);
    for (int i = 0; i < m->nlayers; i++)
        assert_non_null(strstr(text, m->layers[i].name));
    assert_non_null(strstr(text, "%peak"));

    /* a file that is not a trace is refused */
    FILE *junk = fopen("test_profile.junk", "w");
    fputs("{}\n", junk);
    fclose(junk);
    const char *bad[] = {a, "test_profile.junk"};
    TU_STATUS(cnn_profile_merge_traces(bad, 2, all, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "test_profile.junk");
    remove(a), remove(b), remove(all), remove("test_profile.junk");
    cnn_profile_free(p);
    cnn_model_free(m);
}

static void test_fma_peak(void **state)
{
    (void)state;
    double g = cnn_profile_fma_peak();
    /* any x86-64 core with FMA: well above 1 GFLOP/s, below 1 TFLOP/s */
    assert_true(g > 1.0 && g < 1000.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layers_and_trace),
        cmocka_unit_test(test_fma_peak),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
