/* test_workspace.c - cnn_model_workspace: a second set of layers over the
 * same parameters, which threads can run at once (src/train/step.h
 * "Threads"); and BLAS on one thread called from several threads at once
 * gives the bits of a lone call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "cnn/tensor.h"
#include "testutil.h"

/* conv + BN + relu + pool + dropout + dense: layers with caches, batch
 * statistics and per-sample random numbers */
static const char *const ini =
    "[input]\nshape = 12x12x2\n"
    "[conv2d]\nfilters = 6\nkernel = 3\npadding = same\nuse_bias = false\n"
    "[batch_normalization]\nmomentum = 0.9\n"
    "[activation]\nactivation = relu\n"
    "[maxpool2d]\nsize = 2\n"
    "[dropout]\nrate = 0.3\n"
    "[flatten]\n"
    "[dense]\nunits = 5\nactivation = softmax\n";

enum { NCHUNK = 6, CB = 8, IN = 12 * 12 * 2 };

typedef struct chunk_out {
    float *grads; /* (nparams) */
    float stats[64];
    double loss;
} chunk_out;

static float x[NCHUNK][CB * IN];
static int32_t y[NCHUNK][CB];
static int64_t ids[NCHUNK][CB];

/* Chunk k on model m: forward, loss, backward from zero gradients. */
static void run_chunk(cnn_model *m, int k, chunk_out *o)
{
    cnn_error err = {0};
    cnn_batch_stats bs = {0};
    cnn_ctx ctx = cnn_model_ctx(m, 1, 7, 2, ids[k]);
    cnn_model_zero_grad(m);
    cnn_model_forward(m, x[k], CB, &ctx);
    cnn_model_stats_get(m, o->stats);
    assert_int_equal(cnn_model_loss(m, y[k], CB, 1.0f / 32, 1, &bs, &err), CNN_OK);
    cnn_model_backward(m, x[k], CB, &ctx);
    memcpy(o->grads, m->grads, m->nparams * sizeof *m->grads);
    o->loss = bs.loss_sum;
}

static chunk_out ref[NCHUNK];

static int same(const chunk_out *a, const chunk_out *b, size_t nparams)
{
    return !memcmp(a->grads, b->grads, nparams * sizeof(float)) &&
           !memcmp(a->stats, b->stats, sizeof a->stats) && a->loss == b->loss;
}

/* One thread: ROUNDS times its chunks first, first + 2, ..., each
 * compared with ref; both threads start together. */
enum { ROUNDS = 100 };
static pthread_barrier_t start;

typedef struct job {
    cnn_model *m;
    int first;
    int bad; /* chunk results that differed from ref */
} job;

static void *worker(void *arg)
{
    job *j = arg;
    chunk_out o = {.grads = malloc(j->m->nparams * sizeof(float))};
    assert_non_null(o.grads);
    pthread_barrier_wait(&start);
    for (int r = 0; r < ROUNDS; r++)
        for (int k = j->first; k < NCHUNK; k += 2) {
            run_chunk(j->m, k, &o);
            j->bad += !same(&o, &ref[k], j->m->nparams);
        }
    free(o.grads);
    return NULL;
}

static void test_workspace_shares_parameters(void **state)
{
    (void)state;
    cnn_model *m = tu_model(ini, CNN_LOSS_SPARSE_CCE, CB), *w = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_model_workspace(&w, m, &err), CNN_OK, err);
    assert_ptr_equal(w->params, m->params);
    assert_ptr_equal(w->buffers, m->buffers);
    assert_ptr_not_equal(w->grads, m->grads);
    assert_ptr_equal(w->owner, m);
    assert_int_equal(w->nlayers, m->nlayers);
    assert_int_equal(w->nparams, m->nparams);
    for (int i = 0; i < m->nlayers; i++) {
        assert_string_equal(w->layers[i].name, m->layers[i].name);
        assert_int_equal(w->layers[i].param_offset, m->layers[i].param_offset);
        assert_true(!m->layers[i].state || w->layers[i].state != m->layers[i].state);
    }
    cnn_model *ww = NULL; /* a workspace of a workspace: refused */
    TU_STATUS(cnn_model_workspace(&ww, w, &err), CNN_ERR_CONFIG, err);
    assert_null(ww);
    cnn_model_free(w); /* leaves m's parameters alone */
    cnn_model_init_params(m, 3);
    cnn_model_free(m);
}

/* Chunks run two at a time, on the model and on a workspace of it, give
 * the gradients, batch statistics and losses of the same chunks run one
 * after another on the model alone, bit for bit. */
static void test_workspace_concurrent_bits(void **state)
{
    (void)state;
    cnn_blas_set_threads(1);
    cnn_model *m = tu_model(ini, CNN_LOSS_SPARSE_CCE, CB), *w = NULL;
    cnn_error err = {0};
    cnn_model_init_params(m, 5);
    TU_STATUS(cnn_model_workspace(&w, m, &err), CNN_OK, err);
    TU_STATUS(cnn_model_reserve(w, CB, &err), CNN_OK, err);
    assert_true(cnn_model_stats_count(m) <= 64);
    for (int k = 0; k < NCHUNK; k++) {
        tu_fill(x[k], CB * IN, 10 + (uint64_t)k, -1.0f, 1.0f);
        for (int b = 0; b < CB; b++) {
            y[k][b] = (k * CB + b) % 5;
            ids[k][b] = k * CB + b;
        }
    }
    for (int k = 0; k < NCHUNK; k++) {
        ref[k].grads = malloc(m->nparams * sizeof(float));
        assert_non_null(ref[k].grads);
        run_chunk(m, k, &ref[k]);
    }
    pthread_barrier_init(&start, NULL, 2);
    job j0 = {m, 0, 0}, j1 = {w, 1, 0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, worker, &j1), 0);
    worker(&j0);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&start);
    assert_int_equal(j0.bad, 0);
    assert_int_equal(j1.bad, 0);
    for (int k = 0; k < NCHUNK; k++)
        free(ref[k].grads);
    cnn_model_free(w);
    cnn_model_free(m);
}

/* GEMMs of several shapes, large enough for OpenBLAS's threaded path when
 * it has threads, on 3 threads at once with BLAS on one thread. */
enum { GN = 160, NGEMM = 3 };
static float A[GN * GN], Bm[GN * GN], ref_c[NGEMM][GN * GN];

static void gemm(int s, float *c)
{
    const int M = GN - 40 * s, N = GN, K = GN - 20 * s;
    cnn_sgemm(0, s & 1, M, N, K, 1.0f, A, K, Bm, s & 1 ? K : N, 0.0f, c, N);
}

static void *gemm_worker(void *arg)
{
    int *bad = arg;
    float *c = malloc(sizeof ref_c[0]);
    for (int r = 0; c && r < 20; r++)
        for (int s = 0; s < NGEMM; s++) {
            memset(c, 0, sizeof ref_c[0]);
            gemm(s, c);
            *bad |= memcmp(c, ref_c[s], sizeof ref_c[0]) != 0;
        }
    *bad |= c == NULL;
    free(c);
    return NULL;
}

static void test_blas_concurrent_calls(void **state)
{
    (void)state;
    cnn_blas_set_threads(1);
    tu_fill(A, GN * GN, 1, -1.0f, 1.0f);
    tu_fill(Bm, GN * GN, 2, -1.0f, 1.0f);
    for (int s = 0; s < NGEMM; s++)
        gemm(s, ref_c[s]);
    pthread_t t[3];
    int bad[3] = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, gemm_worker, &bad[i]), 0);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(bad[i], 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workspace_shares_parameters),
        cmocka_unit_test(test_workspace_concurrent_bits),
        cmocka_unit_test(test_blas_concurrent_calls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
