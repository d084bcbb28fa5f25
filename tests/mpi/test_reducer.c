/* test_reducer.c - the gradient exchange of src/dist under mpirun (-np 3
 * and 4 in ctest: shards of unequal length that start inside buckets).
 *
 * Every rank fills the buffer with values that depend on (rank, index), so
 * the expected sum of each element is known in closed form; after finish()
 * each rank's shard must hold exactly that sum, whatever the exchange, the
 * bucket size, the overlap setting and the order in which buckets were
 * made ready. The whole group runs once per exchange, with the watchdog on
 * for one, and the hierarchical one also with pairs of ranks standing for
 * nodes (cnn_dist.node_comm), so its cross-node path runs on one machine. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <mpi.h>

#include "dist.h"

static cnn_dist D;
static cnn_dist_reducer_opts O; /* the exchange and watchdog of this round */

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
    cnn_dist_reducer_opts o = O;
    o.bucket_bytes = bucket_bytes;
    o.overlap = overlap;
    cnn_dist_reducer *r = cnn_dist_reducer_new(&D, buf, CNN_DIST_I64, n, cuts, ncuts, &o);
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

/* The reducer's own buffer (shared memory when hierarchical). */
static void i64_own_buffer(void **state)
{
    cnn_dist_reducer_opts o = O;
    o.bucket_bytes = 800;
    o.overlap = 1;
    cnn_dist_reducer *r = cnn_dist_reducer_new(&D, NULL, CNN_DIST_I64, N, cuts, NCUTS, &o);
    assert_non_null(r);
    int64_t *buf = cnn_dist_reducer_data(r);
    size_t lo, hi;
    cnn_dist_shard(N, D.rank, D.world, &lo, &hi);
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < N; i++)
            buf[i] = value_i64(D.rank, i) * (step + 1);
        backward_order(r);
        cnn_dist_reducer_finish(r);
        for (size_t i = lo; i < hi; i++) {
            int64_t want = 0;
            for (int k = 0; k < D.world; k++)
                want += value_i64(k, i) * (step + 1);
            assert_int_equal(buf[i], want);
        }
    }
    cnn_dist_reducer_free(r);
}

static void check_i64(size_t bucket_bytes, int overlap) { check_i64_n(N, NCUTS, bucket_bytes, overlap); }

static void i64_small_buckets_overlap(void **state) { check_i64(64, 1); }
/* fewer elements than ranks: some shards are empty */
static void i64_tiny(void **state) { check_i64_n(2, 1, 8, 1); }
static void i64_one_bucket_overlap(void **state) { check_i64(1 << 20, 1); }
static void i64_no_overlap(void **state) { check_i64(800, 0); }

/* Float sums: direct adds in rank order, rank 0's part + rank 1's + ...;
 * these values are small dyadic numbers, so every order gives these bits. */
static void f32_rank_order(void **state)
{
    float *buf = malloc(N * sizeof *buf);
    assert_non_null(buf);
    cnn_dist_reducer_opts o = O;
    o.bucket_bytes = 400;
    o.overlap = 1;
    cnn_dist_reducer *r = cnn_dist_reducer_new(&D, buf, CNN_DIST_F32, N, cuts, NCUTS, &o);
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
        cnn_dist_reducer_opts o = O;
        o.bucket_bytes = 64;
        o.overlap = 1;
        cnn_dist_reducer *r = cnn_dist_reducer_new(&D, p, CNN_DIST_F32, n, &cut, 1, &o);
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

/* The parameters' shared window: made for hierarchical when every node has
 * as many ranks (pairs at np 3 do not), and its gather shows every rank's
 * shard to every rank, step after step, while the gradient exchange runs
 * on the same reducer, whose int64 buffers stay aligned. */
static void shared_params_window(void **state)
{
    const size_t n = N - 1; /* odd: the window's parts must keep their int64s aligned */
    int L = 0;
    MPI_Comm_size(MPI_Comm_f2c((MPI_Fint)D.node_comm), &L);
    int shape[2] = {-L, L};
    MPI_Allreduce(MPI_IN_PLACE, shape, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    const int want = O.exchange == CNN_DIST_HIERARCHICAL && -shape[0] == shape[1] && D.world > 1;
    cnn_dist_reducer_opts o = O;
    o.bucket_bytes = 512;
    o.overlap = 1;
    o.shared_params = 1;
    cnn_dist_reducer *r = cnn_dist_reducer_new(&D, NULL, CNN_DIST_I64, n, cuts, NCUTS, &o);
    assert_non_null(r);
    float *p = cnn_dist_reducer_params(r);
    assert_int_equal(p != NULL, want);
    if (!p) {
        cnn_dist_reducer_free(r);
        return;
    }
    assert_true((uintptr_t)p % 64 == 0);
    int64_t *g = cnn_dist_reducer_data(r);
    assert_true((uintptr_t)g % sizeof *g == 0);
    size_t lo, hi;
    cnn_dist_shard(n, D.rank, D.world, &lo, &hi);
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < n; i++)
            g[i] = value_i64(D.rank, i) + step;
        backward_order(r);
        cnn_dist_reducer_finish(r);
        for (size_t i = lo; i < hi; i++) { /* the sum, then this step's parameters */
            int64_t sum = 0;
            for (int k = 0; k < D.world; k++)
                sum += value_i64(k, i) + step;
            assert_true(g[i] == sum);
            p[i] = (float)i + 0.25f * (float)step;
        }
        cnn_dist_reducer_allgather(r, p);
        for (size_t i = 0; i < n; i++)
            assert_true(p[i] == (float)i + 0.25f * (float)step);
    }
    cnn_dist_reducer_free(r);
}

/* The step's figures, summed under the watchdog (or not). */
static void sum_f64(void **state)
{
    cnn_dist_reducer_opts o = O;
    o.bucket_bytes = 64;
    size_t cut = 0;
    float p[4];
    cnn_dist_reducer *r = cnn_dist_reducer_new(&D, p, CNN_DIST_F32, 4, &cut, 1, &o);
    assert_non_null(r);
    double v[2] = {1.0, (double)D.rank};
    cnn_dist_reducer_sum_f64(r, v, 2);
    assert_true(v[0] == (double)D.world);
    assert_true(v[1] == (double)D.world * (D.world - 1) / 2);
    cnn_dist_reducer_free(r);
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
        cmocka_unit_test(i64_own_buffer),
        cmocka_unit_test(f32_rank_order),
        cmocka_unit_test(shards_and_allgather),
        cmocka_unit_test(shared_params_window),
        cmocka_unit_test(sum_f64),
    };
    /* pairs of ranks stand for nodes: {0, 1}, {2, 3}, ... */
    const int real_node = D.node_comm;
    MPI_Comm pairs;
    MPI_Comm_split(MPI_COMM_WORLD, D.rank / 2, D.rank, &pairs);
    const struct {
        const char *name;
        cnn_dist_exchange ex;
        double timeout_s;
        int pairs;
    } rounds[] = {
        {"direct", CNN_DIST_DIRECT, 0, 0},
        {"direct, watchdog on", CNN_DIST_DIRECT, 60, 0},
        {"collective", CNN_DIST_COLLECTIVE, 0, 0},
        {"hierarchical, one node", CNN_DIST_HIERARCHICAL, 0, 0},
        {"hierarchical, pairs as nodes", CNN_DIST_HIERARCHICAL, 0, 1},
        {"hierarchical, pairs as nodes, watchdog on", CNN_DIST_HIERARCHICAL, 60, 1},
    };
    int failed = 0;
    for (size_t k = 0; k < sizeof rounds / sizeof *rounds; k++) {
        O = (cnn_dist_reducer_opts){.exchange = rounds[k].ex, .timeout_s = rounds[k].timeout_s};
        D.node_comm = rounds[k].pairs ? (int)MPI_Comm_c2f(pairs) : real_node;
        failed += cmocka_run_group_tests_name(rounds[k].name, tests, NULL, NULL);
    }
    D.node_comm = real_node;
    MPI_Comm_free(&pairs);
    /* one verdict for the job: any rank's failure fails every rank */
    double f = failed;
    cnn_dist_allreduce_max_f64(&D, &f, 1);
    cnn_dist_finalize(&D);
    return f > 0;
}
