/* test_optim_state.c - the optimizer ops table seen from outside: how many
 * state buffers each optimizer keeps and what they are called (the names
 * a checkpoint stores them under and the buffers a data-parallel step
 * exchanges), type names both ways, and Keras's defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "cnn/optim.h"
#include "testutil.h"

static cnn_optim *make(cnn_optim_type t, double momentum, size_t n)
{
    cnn_error err = {0};
    cnn_optim *o = NULL;
    cnn_optim_hparams hp = cnn_optim_defaults(t);
    hp.momentum = momentum;
    TU_STATUS(cnn_optim_create(&o, &hp, n, &err), CNN_OK, err);
    return o;
}

/* nstate buffers named names[k], each of n zeros, and nothing beyond. */
static void expect_state(cnn_optim_type t, double momentum, int nstate, const char *const *names)
{
    const size_t n = 37;
    cnn_optim *o = make(t, momentum, n);
    assert_int_equal(cnn_optim_nstate(o), nstate);
    cnn_optim_hparams hp = o->hp;
    assert_int_equal(cnn_optim_hparams_nstate(&hp), nstate);
    for (int k = 0; k < nstate; k++) {
        assert_string_equal(cnn_optim_state_name(o, k), names[k]);
        assert_non_null(o->state[k]);
        for (size_t i = 0; i < n; i++)
            assert_true(o->state[k][i] == 0);
    }
    for (int k = nstate; k < CNN_OPTIM_MAX_STATE; k++)
        assert_null(o->state[k]);
    assert_null(cnn_optim_state_name(o, nstate));
    assert_null(cnn_optim_state_name(o, -1));
    cnn_optim_free(o);
}

static void test_state_buffers(void **state)
{
    static const char *const m[] = {"m"}, *const mv[] = {"m", "v"};
    expect_state(CNN_OPT_SGD, 0, 0, NULL);
    expect_state(CNN_OPT_SGD, 0.9, 1, m);
    expect_state(CNN_OPT_ADAM, 0, 2, mv);
    expect_state(CNN_OPT_RMSPROP, 0, 1, m);
}

static void test_type_names(void **state)
{
    static const char *const names[CNN_OPT_COUNT] = {"sgd", "adam", "rmsprop"};
    for (int t = 0; t < CNN_OPT_COUNT; t++) {
        assert_string_equal(cnn_optim_type_name((cnn_optim_type)t), names[t]);
        assert_int_equal(cnn_optim_type_from_name(names[t]), t);
    }
    assert_null(cnn_optim_type_name(CNN_OPT_COUNT));
    assert_int_equal(cnn_optim_type_from_name("adagrad"), -1);
}

/* The defaults are Keras's, and every type carries all of them (a
 * checkpoint stores them all, as it always has). */
static void test_defaults(void **state)
{
    const double lr[CNN_OPT_COUNT] = {0.01, 1e-3, 1e-3};
    for (int t = 0; t < CNN_OPT_COUNT; t++) {
        cnn_optim_hparams hp = cnn_optim_defaults((cnn_optim_type)t);
        assert_int_equal(hp.type, t);
        assert_true(hp.lr == lr[t] && hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.rho == 0.9 &&
                    hp.epsilon == 1e-7 && hp.momentum == 0 && hp.nesterov == 0 &&
                    hp.weight_decay == 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_buffers),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_defaults),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
