/* test_callbacks.c - [early_stopping] and [reduce_lr_on_plateau] take
 * Keras's decisions on given sequences of epoch figures (EarlyStopping's
 * wait/patience/min_delta/baseline/restore_best_weights, ReduceLROnPlateau's
 * factor/patience/cooldown/min_lr), and their config errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "callbacks.h"
#include "testutil.h"

static cnn_callbacks_config read_cb(const char *text, int has_val)
{
    cnn_config *cfg = NULL;
    cnn_error err = {0};
    cnn_callbacks_config c;
    TU_STATUS(cnn_config_parse_string(&cfg, text, "cb.ini", &err), CNN_OK, err);
    TU_STATUS(cnn_callbacks_config_read(&c, cfg, has_val, &err), CNN_OK, err);
    TU_STATUS(cnn_config_check_unused(cfg, &err), CNN_OK, err);
    cnn_config_free(cfg);
    return c;
}

static cnn_epoch_record rec(long epoch, double val_loss)
{
    return (cnn_epoch_record){.epoch = epoch, .loss = 1, .accuracy = 0.5, .val_loss = val_loss,
                              .val_accuracy = 1 - val_loss};
}

/* A one-parameter model whose weight we can watch. */
typedef struct fake_model {
    cnn_model m;
    float w, b;
} fake_model;

static void fake(fake_model *f)
{
    memset(f, 0, sizeof *f);
    f->m.nparams = 1;
    f->m.params = &f->w;
    f->m.nbuffer_floats = 1;
    f->m.buffers = &f->b;
}

/* Returns the epoch (0-based) after which training stops, or -1. */
static long run_es(const cnn_callbacks_config *c, const double *v, int n, float *best,
                   fake_model *f, cnn_callback_state *cb)
{
    *cb = cnn_callback_state_init();
    for (int e = 0; e < n; e++) {
        f->w = (float)(100 + e); /* the weights of epoch e */
        f->b = (float)(200 + e);
        cnn_epoch_record r = rec(e, v[e]);
        if (cnn_early_stopping_epoch_end(c, cb, best, &f->m, &r))
            return e;
    }
    return -1;
}

static void test_early_stopping(void **state)
{
    (void)state;
    fake_model f;
    fake(&f);
    cnn_callback_state cb;
    const double v[] = {0.9, 0.8, 0.85, 0.84, 0.83, 0.7, 0.75};
    /* patience 2: epochs 2 and 3 do not improve on 0.8 -> stops after epoch 3 */
    cnn_callbacks_config c = read_cb("[early_stopping]\npatience = 2\n", 1);
    assert_int_equal(run_es(&c, v, 7, NULL, &f, &cb), 3);
    assert_int_equal(cb.es_best_epoch, 2);
    assert_int_equal(cb.es_stopped_epoch, 4);
    TU_NEAR(cb.es_best, 0.8, 0);
    /* patience 3: epochs 2, 3, 4 do not improve -> stops after epoch 4 */
    c = read_cb("[early_stopping]\npatience = 3\n", 1);
    assert_int_equal(run_es(&c, v, 7, NULL, &f, &cb), 4);
    /* patience 4 reaches 0.7 at epoch 5 and runs out of epochs */
    c = read_cb("[early_stopping]\npatience = 4\n", 1);
    assert_int_equal(run_es(&c, v, 7, NULL, &f, &cb), -1);
    assert_int_equal(cb.es_best_epoch, 6);
    /* min_delta 0.2: nothing after epoch 0 improves by that much */
    c = read_cb("[early_stopping]\npatience = 1\nmin_delta = 0.2\n", 1);
    assert_int_equal(run_es(&c, v, 7, NULL, &f, &cb), 1);
    /* max mode on val_accuracy (auto): the same decisions as min on val_loss */
    c = read_cb("[early_stopping]\nmonitor = val_accuracy\npatience = 2\n", 1);
    assert_true(c.es.maximize);
    assert_int_equal(run_es(&c, v, 7, NULL, &f, &cb), 3);
    /* restore_best_weights: stopping puts epoch 1's weights back */
    float best[2];
    c = read_cb("[early_stopping]\npatience = 2\nrestore_best_weights = true\n", 1);
    assert_int_equal(run_es(&c, v, 7, best, &f, &cb), 3);
    assert_true(f.w == 101.0f && f.b == 201.0f);
    assert_true(cb.has_best_weights);
    /* baseline 0.5 never beaten: wait is never reset, but an improving epoch
     * returns before the patience check, so it stops after epoch 2 */
    c = read_cb("[early_stopping]\npatience = 2\nbaseline = 0.5\n", 1);
    assert_int_equal(run_es(&c, v, 7, NULL, &f, &cb), 2);
    /* start_from_epoch 3: epochs 0-2 ignored; 0.84, 0.83, 0.7 improve, 0.75 stops */
    c = read_cb("[early_stopping]\npatience = 1\nstart_from_epoch = 3\n", 1);
    assert_int_equal(run_es(&c, v, 7, NULL, &f, &cb), 6);
    assert_int_equal(cb.es_best_epoch, 6);
}

static void test_plateau(void **state)
{
    (void)state;
    cnn_callbacks_config c =
        read_cb("[reduce_lr_on_plateau]\npatience = 2\nfactor = 0.5\ncooldown = 1\nmin_lr = 0.02\n", 1);
    cnn_callback_state cb = cnn_callback_state_init();
    const double v[] = {1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95};
    /* the rate after each epoch: Keras counts down the cooldown and then
     * already counts the same epoch's wait, so with cooldown 1 a plateau
     * lowers the rate every second epoch; 0.0125 is raised to min_lr */
    const double want[] = {0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02, 0.02, 0.02};
    double lr = 0.1;
    for (int e = 0; e < 10; e++) {
        cnn_epoch_record r = rec(e, v[e]);
        double next;
        if (cnn_plateau_epoch_end(&c, &cb, lr, &r, &next))
            lr = next;
        TU_NEAR(lr, want[e], 1e-15);
        TU_NEAR(0.1 * cb.lr_scale, lr, 1e-15);
    }
    /* at min_lr: it never goes below (Keras compares with float32(min_lr),
     * which 0.02 exceeds, so it "reduces" 0.02 to 0.02) */
    double next = -1;
    for (int e = 10; e < 20; e++) {
        cnn_epoch_record r = rec(e, 0.95);
        if (cnn_plateau_epoch_end(&c, &cb, 0.02, &r, &next))
            TU_NEAR(next, 0.02, 0);
    }
    /* below float32(min_lr): no reduction at all */
    cb.rp_wait = 5;
    cb.rp_cooldown = 0;
    cnn_epoch_record r9 = rec(30, 0.95);
    assert_int_equal(cnn_plateau_epoch_end(&c, &cb, 0.0199999, &r9, &next), 0);
    /* min_delta: 0.9 -> 0.89995 is no improvement at the default 1e-4 */
    c = read_cb("[reduce_lr_on_plateau]\npatience = 1\n", 1);
    cb = cnn_callback_state_init();
    cnn_epoch_record r0 = rec(0, 0.9), r1 = rec(1, 0.89995);
    assert_int_equal(cnn_plateau_epoch_end(&c, &cb, 0.1, &r0, &next), 0);
    assert_int_equal(cnn_plateau_epoch_end(&c, &cb, 0.1, &r1, &next), 1);
    TU_NEAR(next, 0.01, 1e-15);
}

static void expect_error(const char *text, int has_val, const char *needle)
{
    cnn_config *cfg = NULL;
    cnn_error err = {0};
    cnn_callbacks_config c;
    TU_STATUS(cnn_config_parse_string(&cfg, text, "cb.ini", &err), CNN_OK, err);
    cnn_status st = cnn_callbacks_config_read(&c, cfg, has_val, &err);
    cnn_config_free(cfg);
    TU_STATUS(st, CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "cb.ini:");
    TU_MSG_HAS(err, needle);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_error("[early_stopping]\nmonitor = val_loss\n", 0, "needs a validation set");
    expect_error("[early_stopping]\nmonitor = val_los\n", 1, "monitor");
    expect_error("[reduce_lr_on_plateau]\nfactor = 1\n", 1, "below 1");
    expect_error("[early_stopping]\nmode = up\n", 1, "mode");
    /* the training figures need no validation set */
    cnn_callbacks_config c = read_cb("[early_stopping]\nmonitor = loss\n", 0);
    assert_true(c.es.enabled && !c.es.maximize);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_early_stopping),
        cmocka_unit_test(test_plateau),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
