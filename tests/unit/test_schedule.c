/* test_schedule.c - learning-rate schedules against Keras's formulas
 * (PiecewiseConstantDecay, ExponentialDecay, CosineDecay), linear warm-up,
 * the linear scaling rule, epochs as units, and the config's errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/train.h"
#include "testutil.h"

/* The schedule of an [optimizer] section (lr 0.1 unless given), batch 32. */
static cnn_status read_sched(const char *optimizer_keys, long batch, cnn_lr_schedule *s,
                             cnn_error *err)
{
    char text[1024];
    snprintf(text, sizeof text, "[optimizer]\n%s", optimizer_keys);
    cnn_config *cfg = NULL;
    cnn_status st = cnn_config_parse_string(&cfg, text, "s.ini", err);
    if (!st)
        st = cnn_lr_schedule_read(s, cfg, 0.1, batch, err);
    cnn_config_free(cfg);
    return st;
}

static cnn_lr_schedule sched_ok(const char *keys, long batch, long steps_per_epoch)
{
    cnn_lr_schedule s;
    cnn_error err = {0};
    TU_STATUS(read_sched(keys, batch, &s, &err), CNN_OK, err);
    cnn_lr_schedule_resolve(&s, steps_per_epoch, 10);
    return s;
}

static void test_constant_is_lr(void **state)
{
    (void)state;
    cnn_lr_schedule s = sched_ok("", 32, 100);
    for (int64_t k = 0; k < 5000; k += 777)
        assert_true(cnn_lr_at(&s, k) == 0.1); /* bit for bit: runs without a schedule */
}

static void test_piecewise(void **state)
{
    (void)state;
    cnn_lr_schedule s = sched_ok("schedule = piecewise\nboundaries = 10, 20\nvalues = 1, 0.5, 1/10\n",
                                 32, 100);
    /* Keras: values[0] for step <= 10, values[1] for 10 < step <= 20 */
    assert_true(cnn_lr_at(&s, 0) == 1.0 && cnn_lr_at(&s, 10) == 1.0);
    assert_true(cnn_lr_at(&s, 11) == 0.5 && cnn_lr_at(&s, 20) == 0.5);
    assert_true(cnn_lr_at(&s, 21) == 0.1 && cnn_lr_at(&s, 1000000) == 0.1);
    /* `step` is an alias; boundaries in epochs of 7 steps */
    s = sched_ok("schedule = step\nboundary_epochs = 2, 3\nvalues = 3, 2, 1\n", 32, 7);
    assert_int_equal(s.boundary_steps[0], 14);
    assert_int_equal(s.boundary_steps[1], 21);
    assert_true(cnn_lr_at(&s, 14) == 3 && cnn_lr_at(&s, 15) == 2 && cnn_lr_at(&s, 22) == 1);
}

static void test_exponential(void **state)
{
    (void)state;
    cnn_lr_schedule s =
        sched_ok("schedule = exponential\ndecay_steps = 10\ndecay_rate = 0.5\n", 32, 100);
    TU_NEAR(cnn_lr_at(&s, 0), 0.1, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 5), 0.1 * pow(0.5, 0.5), 1e-15);
    TU_NEAR(cnn_lr_at(&s, 30), 0.1 * 0.125, 1e-15);
    s = sched_ok("schedule = exponential\ndecay_epochs = 1\ndecay_rate = 0.5\nstaircase = true\n",
                 32, 10);
    TU_NEAR(cnn_lr_at(&s, 9), 0.1, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 10), 0.05, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 19), 0.05, 1e-15);
}

static void test_cosine(void **state)
{
    (void)state;
    cnn_lr_schedule s = sched_ok("schedule = cosine\ndecay_steps = 100\nalpha = 0.1\n", 32, 10);
    TU_NEAR(cnn_lr_at(&s, 0), 0.1, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 50), 0.1 * (0.9 * 0.5 + 0.1), 1e-15);
    TU_NEAR(cnn_lr_at(&s, 100), 0.01, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 500), 0.01, 1e-15); /* stays at alpha * lr */
    /* no decay_steps: the whole run, 10 epochs of 10 steps */
    s = sched_ok("schedule = cosine\n", 32, 10);
    assert_int_equal(s.decay_steps, 100);
    TU_NEAR(cnn_lr_at(&s, 100), 0.0, 1e-15);
}

static void test_warmup_and_scaling(void **state)
{
    (void)state;
    cnn_lr_schedule s = sched_ok("warmup_steps = 4\n", 32, 100);
    TU_NEAR(cnn_lr_at(&s, 0), 0.025, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 2), 0.075, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 3), 0.1, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 4), 0.1, 1e-15);
    /* linear scaling: batch 512 against a reference of 256 doubles every rate */
    s = sched_ok("reference_batch_size = 256\nwarmup_epochs = 1\nschedule = piecewise\n"
                 "boundaries = 100\nvalues = 0.1, 0.01\n",
                 512, 5);
    assert_int_equal(s.warmup_steps, 5);
    TU_NEAR(cnn_lr_at(&s, 0), 0.2 / 5, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 50), 0.2, 1e-15);
    TU_NEAR(cnn_lr_at(&s, 101), 0.02, 1e-15);
}

static void expect_error(const char *keys, const char *needle)
{
    cnn_lr_schedule s;
    cnn_error err = {0};
    cnn_status st = read_sched(keys, 32, &s, &err);
    TU_STATUS(st, CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "s.ini:");
    TU_MSG_HAS(err, needle);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("schedule = piecewise\nboundaries = 10\nvalues = 1, 2, 3\n", "one more value");
    expect_error("schedule = piecewise\nboundaries = 10, 5\nvalues = 1, 2, 3\n", "increase");
    expect_error("schedule = piecewise\nboundaries = 10, x\nvalues = 1, 2, 3\n",
                 "not a list of numbers");
    expect_error("schedule = piecewise\nboundaries = 1\nboundary_epochs = 1\nvalues = 1, 2\n",
                 "not both");
    expect_error("schedule = exponential\n", "needs decay_steps");
    expect_error("warmup_steps = 3\nwarmup_epochs = 1\n", "not both");
    expect_error("schedule = linear\n", "schedule");
    expect_error("schedule = cosine\nalpha = 2\n", "alpha");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_constant_is_lr),   cmocka_unit_test(test_piecewise),
        cmocka_unit_test(test_exponential),      cmocka_unit_test(test_cosine),
        cmocka_unit_test(test_warmup_and_scaling), cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
