/* test_reducer.c - the gradient exchange of src/dist under mpirun (-np 3
 * in ctest: shards of unequal length that start inside buckets).
 *
 * Every rank fills the buffer with values that depend on (rank, index), so
 * the expected sum of each element is known in closed form; after finish()
 * each rank's shard must hold exactly that sum, whatever the bucket size,
 * the overlap setting and the order in which buckets were made ready. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dist.h"

static cnn_dist D;

/* A model-like cut: "layers" starting at these offsets of n = 1000. */
static const size_t cuts[] = {0, 10, 250, 251, 990};
enum { N = 1000, NCUTS = 5 };

static int64_t value_i64(int rank, size_t i) { return (int64_t)(rank + 1) * 1000003 * (int64_t)i - rank; }
static float value_f32(int rank, size_t i) { return 0.25f * (float)(rank + 1) + (float)i / 1024.0f; }

/* Ready the buffer from the end in layer steps, as backward does. */
static void backward_order(cnn_dist_reducer *r)
{
    for (int c = NCUTS - 1; c >= 0; c--) {
        cnn_dist_reducer_ready(r, cuts[c]);
        cnn_dist_reducer_poll(r);
    }
}

static void check_i64_n(size_t n, int ncuts, size_t bucket_bytes, int overlap)
{
    int64_t *buf = malloc(n * sizeof *buf);
    assert_non_null(buf);
    cnn_dist_reducer *r = cnn_dist_reducer_new(&D, buf, CNN_DIST_I64, n, cuts, ncuts,
                                               bucket_bytes, overlap);
    assert_non_null(r);
    size_t lo, hi;
    cnn_dist_shard(n, D.rank, D.world, &lo, &hi);
    for (int step = 0; step < 3; step++) { /* the reducer is reused step after step */
        for (size_t i = 0; i < n; i++)
            buf[i] = value_i64(D.rank, i) + step;
        if (ncuts == NCUTS)
            backward_order(r);
        assert_true(cnn_dist_reducer_finish(r) >= 0.0);
        for (size_t i = lo; i < hi; i++) {
            int64_t want = 0;
            for (int k = 0; k < D.world; k++)
                want += value_i64(k, i) + step;
            assert_int_equal(buf[i], want);
        }
    }
    cnn_dist_reducer_free(r);
    free(buf);
}

static void check_i64(size_t bucket_bytes, int overlap) { check_i64_n(N, NCUTS, bucket_bytes, overlap); }

static void i64_small_buckets_overlap(void **state) { check_i64(64, 1); }
/* fewer elements than ranks: some shards are empty */
static void i64_tiny(void **state) { check_i64_n(2, 1, 8, 1); }
static void i64_one_bucket_overlap(void **state) { check_i64(1 << 20, 1); }
static void i64_no_overlap(void **state) { check_i64(800, 0); }

/* Float sums go in rank order: rank 0's part + rank 1's + ... */
static void f32_rank_order(void **state)
{
    float *buf = malloc(N * sizeof *buf);
    assert_non_null(buf);
    cnn_dist_reducer *r = cnn_dist_reducer_new(&D, buf, CNN_DIST_F32, N, cuts, NCUTS, 400, 1);
    assert_non_null(r);
    for (size_t i = 0; i < N; i++)
        buf[i] = value_f32(D.rank, i);
    backward_order(r);
    cnn_dist_reducer_finish(r);
    size_t lo, hi;
    cnn_dist_shard(N, D.rank, D.world, &lo, &hi);
    for (size_t i = lo; i < hi; i++) {
        float want = value_f32(0, i);
        for (int k = 1; k < D.world; k++)
            want += value_f32(k, i);
        assert_memory_equal(&buf[i], &want, sizeof want); /* bit for bit */
    }
    cnn_dist_reducer_free(r);
    free(buf);
}

/* The shards cut [0, n) in order, and the allgather gives everyone all. */
static void shards_and_allgather(void **state)
{
    const size_t sizes[] = {1, 2, 7, N};
    for (size_t t = 0; t < sizeof sizes / sizeof *sizes; t++) {
        size_t n = sizes[t], end = 0;
        for (int k = 0; k < D.world; k++) {
            size_t lo, hi;
            cnn_dist_shard(n, k, D.world, &lo, &hi);
            assert_int_equal(lo, end);
            assert_true(hi >= lo);
            end = hi;
        }
        assert_int_equal(end, n);
        float *p = calloc(n, sizeof *p);
        size_t cut = 0;
        cnn_dist_reducer *r = cnn_dist_reducer_new(&D, p, CNN_DIST_F32, n, &cut, 1, 64, 1);
        assert_non_null(p);
        assert_non_null(r);
        size_t lo, hi;
        cnn_dist_shard(n, D.rank, D.world, &lo, &hi);
        for (size_t i = lo; i < hi; i++)
            p[i] = (float)i + 0.5f;
        cnn_dist_reducer_allgather(r, p);
        for (size_t i = 0; i < n; i++)
            assert_true(p[i] == (float)i + 0.5f);
        cnn_dist_reducer_free(r);
        free(p);
    }
}

int main(int argc, char **argv)
{
    if (cnn_dist_init(&D, &argc, &argv) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(i64_small_buckets_overlap),
        cmocka_unit_test(i64_one_bucket_overlap),
        cmocka_unit_test(i64_no_overlap),
        cmocka_unit_test(i64_tiny),
        cmocka_unit_test(f32_rank_order),
        cmocka_unit_test(shards_and_allgather),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* one verdict for the job: any rank's failure fails every rank */
    double f = failed;
    cnn_dist_allreduce_max_f64(&D, &f, 1);
    cnn_dist_finalize(&D);
    return f > 0;
}
