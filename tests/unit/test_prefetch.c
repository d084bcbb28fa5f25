/* test_prefetch.c - the background batch assembler (cnn/prefetch.h): what
 * a fetch returns is byte for byte cnn_dataset_gather() + [augment], with 1
 * or several threads, for requested and unrequested samples; a sample
 * that fails fails the fetches reaching it with its own message and none
 * before it; a store that reads one at a time is never read concurrently;
 * freeing with work in flight neither hangs nor leaks. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cnn/augment.h"
#include "cnn/data.h"
#include "cnn/prefetch.h"
#include "cnn/rng.h"
#include "testutil.h"

enum { N = 97, C = 3, H = 9, W = 11, IMG = C * H * W };

/* ---- a test store: pixels from the row number, optional failures ------ */

typedef struct test_store {
    int64_t bad_row;     /* this row fails to read; -1: none */
    int sleep_us;        /* per read */
    int active, most;    /* reads running now, at most (under mu) */
    int rows_read;       /* rows read in all (under mu) */
    pthread_mutex_t mu;
} test_store;

static void pixels_of(int64_t row, uint8_t *out)
{
    for (int k = 0; k < IMG; k++)
        out[k] = (uint8_t)(row * 31 + k * 7 + (k * k) % 13);
}

static cnn_status ts_read(cnn_store *s, const int64_t *rows, int B, uint8_t *out, cnn_error *err)
{
    test_store *t = s->impl;
    pthread_mutex_lock(&t->mu);
    if (++t->active > t->most)
        t->most = t->active;
    pthread_mutex_unlock(&t->mu);
    if (t->sleep_us) {
        struct timespec ts = {0, (long)t->sleep_us * 1000};
        nanosleep(&ts, NULL);
    }
    cnn_status st = CNN_OK;
    for (int b = 0; b < B && !st; b++) {
        if (rows[b] == t->bad_row)
            st = cnn_error_set(err, CNN_ERR_FORMAT, "img%lld.jpg: cannot decode: test",
                               (long long)rows[b]);
        else
            pixels_of(rows[b], out + (size_t)b * IMG);
    }
    pthread_mutex_lock(&t->mu);
    t->active--;
    t->rows_read += B;
    pthread_mutex_unlock(&t->mu);
    return st;
}

static void ts_close(cnn_store *s) { (void)s; }

static const cnn_store_ops parallel_ops = {.format = "test", .read = ts_read,
                                           .close = ts_close, .parallel = 1};
static const cnn_store_ops serial_ops = {.format = "test", .read = ts_read, .close = ts_close};

/* A dataset of N samples over t; labels from the row. */
static cnn_dataset *make_set(test_store *t, const cnn_store_ops *ops)
{
    pthread_mutex_init(&t->mu, NULL);
    cnn_store *s = cnn_store_new(ops, t, (cnn_shape){C, H, W});
    assert_non_null(s);
    cnn_dataset *d = cnn_dataset_new(s, N, "test");
    assert_non_null(d);
    cnn_store_release(s);
    for (int i = 0; i < N; i++)
        d->labels[i] = i % 5;
    d->nclasses = 5;
    return d;
}

static cnn_augment_config some_augment(void)
{
    return (cnn_augment_config){.enabled = 1, .horizontal_flip = 1, .rotation_range = 20,
                                .width_shift_range = 0.2, .zoom_range = 0.1,
                                .fill_mode = CNN_FILL_NEAREST};
}

/* What the stepper computes without a prefetch: gather, then augment. */
static void expected(const cnn_dataset *d, const cnn_augment_config *aug, const int64_t *ids,
                     int B, uint64_t seed, uint64_t epoch, float *x, int32_t *y)
{
    uint8_t *raw = malloc((size_t)B * IMG);
    float tmp[IMG];
    cnn_error err = {0};
    TU_STATUS(cnn_dataset_gather(d, ids, B, 1.0f / 255.0f, raw, x, y, &err), CNN_OK, err);
    for (int b = 0; aug->enabled && b < B; b++) {
        cnn_augment_image(aug, seed, epoch, ids[b], x + (size_t)b * IMG, tmp, C, H, W);
        memcpy(x + (size_t)b * IMG, tmp, sizeof tmp);
    }
    free(raw);
}

/* Fetches perm[lo, lo + B) and compares it with expected(). */
static void check_fetch(cnn_prefetch *p, const cnn_dataset *d, const cnn_augment_config *aug,
                        const int64_t *ids, int B, uint64_t seed, uint64_t epoch)
{
    float *x = malloc((size_t)B * IMG * sizeof *x), *xe = malloc((size_t)B * IMG * sizeof *xe);
    int32_t *y = malloc((size_t)B * sizeof *y), *ye = malloc((size_t)B * sizeof *ye);
    cnn_error err = {0};
    TU_STATUS(cnn_prefetch_fetch(p, ids, B, seed, epoch, x, y, &err), CNN_OK, err);
    expected(d, aug, ids, B, seed, epoch, xe, ye);
    assert_memory_equal(x, xe, (size_t)B * IMG * sizeof *x);
    assert_memory_equal(y, ye, (size_t)B * sizeof *y);
    free(x);
    free(xe);
    free(y);
    free(ye);
}

/* Steps of 20 samples of two epochs, requested one ahead as the trainer
 * does, fetched in chunks of 8 (the last ones short), at 1, 2 and 5
 * threads, with and without augmentation: always expected()'s bytes. */
static void test_same_as_gather(void **state)
{
    (void)state;
    test_store t = {.bad_row = -1};
    cnn_dataset *d = make_set(&t, &parallel_ops);
    int64_t perm[N];
    const int threads[] = {1, 2, 5};
    for (int a = 0; a < 2; a++) {
        cnn_augment_config aug = a ? some_augment() : (cnn_augment_config){0};
        for (size_t k = 0; k < sizeof threads / sizeof *threads; k++) {
            cnn_prefetch *p;
            cnn_error err = {0};
            TU_STATUS(cnn_prefetch_new(&p, d, &aug, 1.0f / 255.0f, threads[k], &err), CNN_OK,
                      err);
            for (uint64_t e = 0; e < 2; e++) {
                cnn_rng_permutation(perm, N, 7, e);
                const int B = 20, steps = (N + B - 1) / B;
                cnn_prefetch_request(p, perm, B, 7, e);
                for (int s = 0; s < steps; s++) {
                    if (s + 1 < steps) {
                        int n1 = N - (s + 1) * B < B ? N - (s + 1) * B : B;
                        cnn_prefetch_request(p, perm + (s + 1) * B, n1, 7, e);
                    }
                    int n = N - s * B < B ? N - s * B : B;
                    for (int c = 0; c < n; c += 8)
                        check_fetch(p, d, &aug, perm + s * B + c, n - c < 8 ? n - c : 8, 7, e);
                }
            }
            /* not requested: assembled by the caller, the same */
            check_fetch(p, d, &aug, perm + 3, 11, 7, 5);
            assert_true(cnn_prefetch_wait(p) >= 0);
            cnn_prefetch_free(p);
        }
    }
    cnn_dataset_free(d);
}

/* A sample of the request that does not read: fetches of chunks before it
 * succeed, the chunk holding it and those after fail with its message. */
static void test_bad_sample(void **state)
{
    (void)state;
    test_store t = {.bad_row = 13};
    cnn_dataset *d = make_set(&t, &parallel_ops);
    int64_t ids[32];
    for (int i = 0; i < 32; i++)
        ids[i] = i;
    cnn_augment_config aug = some_augment();
    cnn_prefetch *p;
    cnn_error err = {0};
    TU_STATUS(cnn_prefetch_new(&p, d, &aug, 1.0f / 255.0f, 3, &err), CNN_OK, err);
    cnn_prefetch_request(p, ids, 32, 1, 0);
    check_fetch(p, d, &aug, ids, 8, 1, 0);
    float x[8 * IMG];
    int32_t y[8];
    for (int c = 8; c < 32; c += 8) {
        err = (cnn_error){0};
        TU_STATUS(cnn_prefetch_fetch(p, ids + c, 8, 1, 0, x, y, &err), CNN_ERR_FORMAT, err);
        TU_MSG_HAS(err, "img13.jpg: cannot decode: test");
    }
    /* the synchronous path says the same */
    err = (cnn_error){0};
    TU_STATUS(cnn_prefetch_fetch(p, ids + 12, 3, 1, 9, x, y, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "img13.jpg: cannot decode: test");
    cnn_prefetch_free(p);
    cnn_dataset_free(d);
}

/* A store that is not parallel is read by one thread at a time, even with
 * the caller reading beside the threads; a parallel one by several. */
static void test_serial_store(void **state)
{
    (void)state;
    for (int par = 0; par < 2; par++) {
        test_store t = {.bad_row = -1, .sleep_us = 300};
        cnn_dataset *d = make_set(&t, par ? &parallel_ops : &serial_ops);
        int64_t ids[N];
        for (int i = 0; i < N; i++)
            ids[i] = N - 1 - i;
        cnn_augment_config aug = {0};
        cnn_prefetch *p;
        cnn_error err = {0};
        TU_STATUS(cnn_prefetch_new(&p, d, &aug, 1.0f / 255.0f, 4, &err), CNN_OK, err);
        cnn_prefetch_request(p, ids, 48, 3, 0);
        cnn_prefetch_request(p, ids + 48, 48, 3, 0);
        /* not requested: read here, beside the threads */
        float x[7 * IMG], xe[7 * IMG];
        int32_t y[7], ye[7];
        TU_STATUS(cnn_prefetch_fetch(p, ids + 90, 7, 3, 0, x, y, &err), CNN_OK, err);
        /* both requests fetched (so finished) before this thread reads the
         * store itself for the expected values: expected() takes no lock */
        static float xr[2][48 * IMG];
        static int32_t yr[2][48];
        for (int r = 0; r < 2; r++)
            TU_STATUS(cnn_prefetch_fetch(p, ids + 48 * r, 48, 3, 0, xr[r], yr[r], &err), CNN_OK,
                      err);
        for (int r = 0; r < 2; r++) {
            static float xre[48 * IMG];
            int32_t yre[48];
            expected(d, &aug, ids + 48 * r, 48, 3, 0, xre, yre);
            assert_memory_equal(xr[r], xre, sizeof xre);
            assert_memory_equal(yr[r], yre, sizeof yre);
        }
        expected(d, &aug, ids + 90, 7, 3, 0, xe, ye);
        assert_memory_equal(x, xe, sizeof x);
        assert_memory_equal(y, ye, sizeof y);
        cnn_prefetch_free(p);
        if (par)
            assert_true(t.most > 1);
        else
            assert_int_equal(t.most, 1);
        cnn_dataset_free(d);
    }
}

/* The trainer's epoch boundary: during the last step L of epoch 0 it asks
 * for step 0 of epoch 1 (N), and again when epoch 1 starts, then for its
 * step 1 (S). The second request of N is held already and reads nothing:
 * every row is read once, and the fetches are expected()'s. */
static void test_request_held_twice(void **state)
{
    (void)state;
    test_store t = {.bad_row = -1};
    cnn_dataset *d = make_set(&t, &parallel_ops);
    int64_t last[16], next0[16], next1[16];
    for (int i = 0; i < 16; i++) {
        last[i] = 80 + i;
        next0[i] = 3 * i;
        next1[i] = 3 * i + 1;
    }
    cnn_augment_config aug = some_augment();
    cnn_prefetch *p;
    cnn_error err = {0};
    TU_STATUS(cnn_prefetch_new(&p, d, &aug, 1.0f / 255.0f, 2, &err), CNN_OK, err);
    cnn_prefetch_request(p, last, 16, 3, 0);
    cnn_prefetch_request(p, next0, 16, 3, 1);
    check_fetch(p, d, &aug, last, 16, 3, 0);
    cnn_prefetch_request(p, next0, 16, 3, 1); /* held: nothing to do */
    cnn_prefetch_request(p, next1, 16, 3, 1);
    check_fetch(p, d, &aug, next0, 8, 3, 1);
    check_fetch(p, d, &aug, next0 + 8, 8, 3, 1);
    check_fetch(p, d, &aug, next1, 16, 3, 1);
    cnn_prefetch_free(p);
    /* 48 by the prefetcher, 48 more by check_fetch's expected() */
    assert_int_equal(t.rows_read, 2 * 48);
    cnn_dataset_free(d);
}

/* Freed while both requests are still being filled: returns (the threads
 * stop after the sample they are on), nothing leaks (ASan). */
static void test_free_in_flight(void **state)
{
    (void)state;
    test_store t = {.bad_row = -1, .sleep_us = 2000};
    cnn_dataset *d = make_set(&t, &parallel_ops);
    int64_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = i;
    cnn_augment_config aug = some_augment();
    cnn_prefetch *p;
    cnn_error err = {0};
    TU_STATUS(cnn_prefetch_new(&p, d, &aug, 1.0f / 255.0f, 2, &err), CNN_OK, err);
    cnn_prefetch_request(p, ids, 48, 3, 0);
    cnn_prefetch_request(p, ids + 48, 49, 3, 0);
    cnn_prefetch_free(p);
    cnn_prefetch_free(NULL);
    /* and thread counts out of range are refused */
    TU_STATUS(cnn_prefetch_new(&p, d, &aug, 1.0f, 0, &err), CNN_ERR_ARG, err);
    assert_null(p);
    cnn_dataset_free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_as_gather),
        cmocka_unit_test(test_bad_sample),
        cmocka_unit_test(test_serial_store),
        cmocka_unit_test(test_free_in_flight),
        cmocka_unit_test(test_request_held_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
