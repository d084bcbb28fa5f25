/* test_sizes.c - models too large to represent or to hold: sizes are
 * computed in size_t with overflow checks, and a model whose parameters or
 * activations would not fit the memory limit is refused, naming the layer
 * and the bytes, before anything is allocated (Linux overcommits: the
 * allocation would succeed and the process be killed on touching it). The
 * limit is set here with RLIMIT_DATA, so the result does not depend on the
 * machine's memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "testutil.h"

/* AddressSanitizer's shadow memory counts against RLIMIT_DATA, so a
 * sanitizer build (CNN_SANITIZE) cannot set the limit: there the two cases
 * that need it are skipped, and the physical-memory path is covered by
 * tests/integration/size_test.sh. */
#if defined(__SANITIZE_ADDRESS__)
#define LIMIT_SETTABLE 0
#else
#define LIMIT_SETTABLE 1
#endif

static cnn_status build(const char *ini, cnn_model **m, cnn_error *err)
{
    cnn_config *cfg = NULL;
    *m = NULL;
    memset(err, 0, sizeof *err);
    cnn_status st = cnn_config_parse_string(&cfg, ini, "big.ini", err);
    if (!st)
        st = cnn_model_create(m, cfg, CNN_LOSS_SPARSE_CCE, err);
    cnn_config_free(cfg);
    return st;
}

#define HEAD "[flatten]\n[dense]\nunits = 10\nactivation = softmax\n"

/* 60000x60000x3 wrapped in flatten's int: "out of memory for
 * 18446744052860532746 parameters"; 65536x65536x1 built "(None, 0)" with
 * 10 parameters. */
static void test_input_too_large(void **state)
{
    (void)state;
    cnn_model *m;
    cnn_error err;
    TU_STATUS(build("[input]\nshape = 60000x60000x3\n" HEAD, &m, &err), CNN_ERR_SHAPE, err);
    assert_null(m);
    TU_MSG_HAS(err, "big.ini:1: layer 'input'");
    TU_MSG_HAS(err, "10,800,000,000 values (43,200,000,000 bytes)");
    TU_STATUS(build("[input]\nshape = 65536x65536x1\n" HEAD, &m, &err), CNN_ERR_SHAPE, err);
    assert_null(m);
    TU_MSG_HAS(err, "4,294,967,296 values");
    /* the largest that fits a layer: flatten keeps all 2,147,395,600 values,
     * so dense has 10 times as many weights: (2 * 21,473,956,010) * 4 bytes */
    TU_STATUS(build("[input]\nshape = 46340x46340x1\n" HEAD, &m, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "need 171,791,648,080 bytes");
    TU_MSG_HAS(err, "the largest layer is 'dense'");
}

/* A dense layer of 16,777,216 units: refused before its 100 GB are
 * allocated, naming the layer and the bytes. */
static void test_parameters_beyond_limit(void **state)
{
    (void)state;
    if (!LIMIT_SETTABLE)
        skip();
    cnn_model *m;
    cnn_error err;
    TU_STATUS(build("[input]\nshape = 28x28x1\n[flatten]\n[dense]\nname = huge\nunits = 16777216\n"
                    "[dense]\nunits = 10\nactivation = softmax\n",
                    &m, &err),
              CNN_ERR_CONFIG, err);
    assert_null(m);
    TU_MSG_HAS(err, "big.ini: its parameters, their gradients and buffers need ");
    TU_MSG_HAS(err, "RLIMIT_DATA");
    TU_MSG_HAS(err, "the largest layer is 'huge' (105,360,916,480 bytes)");
    assert_int_equal(cnn_status_exit_code(err.status), 2);
}

/* 4096 filters on 28x28: activations of batch 128 need 3.3 GB; the message
 * says which batch, which layer and how many bytes. */
static void test_activations_beyond_limit(void **state)
{
    (void)state;
    if (!LIMIT_SETTABLE)
        skip();
    cnn_model *m;
    cnn_error err;
    TU_STATUS(build("[input]\nshape = 28x28x1\n[conv2d]\nname = wide\nfilters = 4096\nkernel = 3\n"
                    "padding = same\n" HEAD,
                    &m, &err),
              CNN_OK, err);
    TU_STATUS(cnn_model_reserve(m, 128, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "batches of up to 128 samples");
    TU_MSG_HAS(err, "the largest layer is 'wide' (3,288,334,336 bytes)");
    TU_MSG_HAS(err, "RLIMIT_DATA");
    assert_null(m->act);
    /* a batch that fits is reserved */
    TU_STATUS(cnn_model_reserve(m, 8, &err), CNN_OK, err);
    cnn_model_free(m);
}

static int limit_memory(void **state)
{
    (void)state;
    struct rlimit r;
    if (!LIMIT_SETTABLE)
        return 0;
    getrlimit(RLIMIT_DATA, &r);
    r.rlim_cur = (rlim_t)1 << 30; /* 1 GiB */
    return setrlimit(RLIMIT_DATA, &r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_input_too_large),
        cmocka_unit_test(test_parameters_beyond_limit),
        cmocka_unit_test(test_activations_beyond_limit),
    };
    return cmocka_run_group_tests(tests, limit_memory, NULL);
}
