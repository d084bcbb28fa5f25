/* test_rng.c - counter-based randomness: permutations and weight
 * initialisers are pure functions of their counters (dropout masks:
 * test_dropout.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/rng.h"
#include "testutil.h"

/* ---- permutations ------------------------------------------------------ */

static void assert_is_permutation(const int64_t *p, int64_t n)
{
    char *seen = calloc((size_t)n + 1, 1);
    assert_non_null(seen);
    for (int64_t i = 0; i < n; i++) {
        if (p[i] < 0 || p[i] >= n)
            fail_msg("perm[%lld] = %lld is out of [0, %lld)", (long long)i, (long long)p[i],
                     (long long)n);
        if (seen[p[i]])
            fail_msg("perm has %lld twice", (long long)p[i]);
        seen[p[i]] = 1;
    }
    free(seen);
}

static int64_t count_diff(const int64_t *a, const int64_t *b, int64_t n)
{
    int64_t d = 0;
    for (int64_t i = 0; i < n; i++)
        d += a[i] != b[i];
    return d;
}

static void test_permutation(void **state)
{
    (void)state;
    enum { N = 1000 };
    static int64_t a[N], b[N], c[N], d[N];
    cnn_rng_permutation(a, N, 42, 0);
    assert_is_permutation(a, N);
    cnn_rng_permutation(b, N, 42, 0);
    assert_memory_equal(a, b, sizeof a); /* same (seed, epoch): same order */
    cnn_rng_permutation(c, N, 42, 1);
    assert_is_permutation(c, N);
    cnn_rng_permutation(d, N, 43, 0);
    assert_is_permutation(d, N);
    /* a random permutation fixes ~1 point; two independent ones agree on ~1 */
    int64_t fixed = 0;
    for (int64_t i = 0; i < N; i++)
        fixed += a[i] == i;
    assert_in_range(fixed, 0, 10);
    assert_in_range(count_diff(a, c, N), N - 10, N);
    assert_in_range(count_diff(a, d, N), N - 10, N);
    /* edge sizes */
    int64_t one = 7, none = 7;
    cnn_rng_permutation(&one, 1, 42, 0);
    assert_int_equal(one, 0);
    cnn_rng_permutation(&none, 0, 42, 0);
    assert_int_equal(none, 7); /* n = 0 writes nothing */
}

/* Fisher-Yates with an unbiased draw makes all 24 orders of 4 elements
 * equally likely: each should come up 1000 +- ~31 times in 24000 epochs. */
static void test_permutation_uniform(void **state)
{
    (void)state;
    int counts[256] = {0};
    for (uint64_t e = 0; e < 24000; e++) {
        int64_t p[4];
        cnn_rng_permutation(p, 4, 7, e);
        assert_is_permutation(p, 4);
        counts[p[0] * 64 + p[1] * 16 + p[2] * 4 + p[3]]++;
    }
    int distinct = 0;
    for (int k = 0; k < 256; k++) {
        if (!counts[k])
            continue;
        distinct++;
        if (counts[k] < 850 || counts[k] > 1150)
            fail_msg("order %d came up %d times in 24000 (expected ~1000)", k, counts[k]);
    }
    assert_int_equal(distinct, 24);
}

static void test_hash_and_uniform(void **state)
{
    (void)state;
    /* a pure function of its four words, sensitive to each of them */
    uint64_t h = cnn_rng_hash(1, 2, 3, 4);
    assert_true(h == cnn_rng_hash(1, 2, 3, 4));
    assert_true(h != cnn_rng_hash(0, 2, 3, 4));
    assert_true(h != cnn_rng_hash(1, 1, 3, 4));
    assert_true(h != cnn_rng_hash(1, 2, 4, 4));
    assert_true(h != cnn_rng_hash(1, 2, 3, 5));
    assert_true(cnn_rng_hash(1, 2, 3, 4) != cnn_rng_hash(1, 2, 4, 3));
    /* uniform in [0, 1), mean 1/2, variance 1/12 */
    double s = 0, s2 = 0;
    const int n = 100000;
    for (int i = 0; i < n; i++) {
        float u = cnn_rng_uniform(cnn_rng_hash(9, CNN_STREAM_INIT, 0, (uint64_t)i));
        assert_true(u >= 0.0f && u < 1.0f);
        s += u;
        s2 += (double)u * u;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    TU_NEAR(mean, 0.5, 0.005);
    TU_NEAR(var, 1.0 / 12, 0.002);
    assert_true(cnn_rng_uniform(UINT64_MAX) < 1.0f);
    assert_true(cnn_rng_uniform(0) == 0.0f);
    /* standard normal */
    s = s2 = 0;
    for (int i = 0; i < n; i++) {
        float z = cnn_rng_normal(9, CNN_STREAM_INIT, 1, (uint64_t)i);
        assert_true(isfinite(z));
        s += z;
        s2 += (double)z * z;
    }
    mean = s / n;
    var = s2 / n - mean * mean;
    TU_NEAR(mean, 0.0, 0.015);
    TU_NEAR(var, 1.0, 0.02);
}

/* ---- initialisers ------------------------------------------------------ */

#define INIT_NET                                                                                  \
    "[input]\nshape = 6x6x3\n"                                                                    \
    "[conv2d]\nfilters = 8\nkernel = 3\n"                                                         \
    "[flatten]\n"                                                                                 \
    "[dense]\nunits = 200\nkernel_initializer = he_normal\nbias_initializer = zeros\n"            \
    "[dense]\nunits = 300\n"                                                                      \
    "[dense]\nunits = 2\nbias_initializer = glorot_uniform\n"

static void test_init_deterministic(void **state)
{
    (void)state;
    cnn_model *a = tu_model(INIT_NET, CNN_LOSS_SPARSE_CCE, 0);
    cnn_model *b = tu_model(INIT_NET, CNN_LOSS_SPARSE_CCE, 0);
    assert_int_equal(a->nparams, b->nparams);
    const size_t n = a->nparams;
    for (size_t i = 0; i < n; i++)
        b->params[i] = 123.0f; /* init must overwrite everything */
    cnn_model_init_params(a, 42);
    cnn_model_init_params(b, 42);
    assert_memory_equal(a->params, b->params, n * sizeof(float));
    cnn_model_init_params(b, 43);
    size_t same = 0, nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        same += a->params[i] == b->params[i];
        nonzero += a->params[i] != 0;
    }
    /* only the zero-initialised biases agree across seeds */
    size_t zero_biases = 8 + 200 + 300;
    assert_int_equal(same, zero_biases);
    assert_int_equal(nonzero, n - zero_biases);
    /* no two tensors share a stream: the first weights of each tensor differ */
    const float first_conv = a->params[a->layers[0].params[0].offset];
    for (int i = 2; i < a->nlayers; i++)
        assert_true(a->params[a->layers[i].params[0].offset] != first_conv);
    cnn_model_free(a);
    cnn_model_free(b);
}

static void moments(const float *w, size_t n, double *mean, double *var, double *maxabs)
{
    double s = 0, s2 = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        s += w[i];
        s2 += (double)w[i] * w[i];
        if (fabs(w[i]) > mx)
            mx = fabs(w[i]);
    }
    *mean = s / n;
    *var = s2 / n - *mean * *mean;
    *maxabs = mx;
}

static void test_init_distributions(void **state)
{
    (void)state;
    cnn_model *m = tu_model(INIT_NET, CNN_LOSS_SPARSE_CCE, 0);
    cnn_model_init_params(m, 7);
    double mean, var, mx;

    /* glorot_uniform on the conv kernel: fans are receptive field times channels */
    const cnn_param *ck = &m->layers[0].params[0];
    assert_int_equal(ck->fan_in, 3 * 9);
    assert_int_equal(ck->fan_out, 8 * 9);
    double limit = sqrt(6.0 / (ck->fan_in + ck->fan_out));
    moments(m->params + ck->offset, ck->count, &mean, &var, &mx);
    assert_true(mx <= limit);
    assert_true(mx > 0.95 * limit); /* 216 draws come close to the edge */
    TU_NEAR(var, limit * limit / 3, 0.2 * limit * limit / 3);

    /* glorot_uniform on a large dense kernel: 200 x 300 */
    const cnn_param *dk = &m->layers[3].params[0];
    assert_int_equal(dk->fan_in, 200);
    assert_int_equal(dk->fan_out, 300);
    limit = sqrt(6.0 / 500);
    moments(m->params + dk->offset, dk->count, &mean, &var, &mx);
    assert_true(mx <= limit);
    assert_true(mx > 0.999 * limit);
    TU_NEAR(mean, 0, 0.01 * limit);
    TU_NEAR(var, limit * limit / 3, 0.02 * limit * limit / 3);

    /* he_normal (Keras): truncated at 2 sigma of sd = sqrt(2/fan_in)/0.8796,
     * so that the variance is exactly 2/fan_in. */
    const cnn_param *hk = &m->layers[2].params[0];
    assert_int_equal(hk->fan_in, 8 * 4 * 4);
    double target = 2.0 / hk->fan_in;
    double bound = 2.0 * sqrt(target) / 0.87962566103423978;
    moments(m->params + hk->offset, hk->count, &mean, &var, &mx);
    assert_true(mx <= bound * (1 + 1e-6));
    assert_true(mx > 0.99 * bound);
    TU_NEAR(mean, 0, 0.03 * sqrt(target)); /* ~5 sd of a mean of 25600 */
    TU_NEAR(var, target, 0.03 * target);

    /* zeros and a glorot bias */
    const cnn_param *hb = &m->layers[2].params[1];
    for (size_t i = 0; i < hb->count; i++)
        assert_true(m->params[hb->offset + i] == 0.0f);
    const cnn_param *gb = &m->layers[4].params[1];
    int nz = 0;
    for (size_t i = 0; i < gb->count; i++)
        nz += m->params[gb->offset + i] != 0.0f;
    assert_int_equal(nz, 2);
    cnn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_permutation),
        cmocka_unit_test(test_permutation_uniform),
        cmocka_unit_test(test_hash_and_uniform),
        cmocka_unit_test(test_init_deterministic),
        cmocka_unit_test(test_init_distributions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
