/* test_cache.c - [data] cache: an image folder's decoded images kept once
 * read give the bytes the decoder gives, from several threads at once, and
 * are not decoded again (the files can go); the policy of cache = true /
 * auto / false against a memory limit; the [data] key. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stb_image_write.h>

#include "cnn/data.h"
#include "testutil.h"
#include "datatest.h"

enum { NPER = 6, W = 9, H = 7 }; /* images a class; their size on disk */

/* root/train/{a,b}/iK.jpg: NPER JPEGs a class, each a different pattern,
 * so that a row read in the wrong place shows. */
static char *make_folder(void)
{
    char *root = tf_dir("cache"), path[1024];
    uint8_t px[H * W * 3];
    for (int c = 0; c < 2; c++)
        for (int k = 0; k < NPER; k++) {
            for (int p = 0; p < H * W * 3; p++)
                px[p] = (uint8_t)(37 * c + 11 * k + 5 * p);
            snprintf(path, sizeof path, "%s/train/%c/i%d.jpg", root, 'a' + c, k);
            tf_parents(path);
            if (!stbi_write_jpg(path, W, H, 3, px, 90))
                fail_msg("cannot write %s", path);
        }
    return root;
}

static cnn_dataset *load(const char *root)
{
    cnn_data_config dc;
    memset(&dc, 0, sizeof dc);
    dc.channels = 3;
    dc.image_h = 5; /* resized on read */
    dc.image_w = 6;
    dc.class_mode = CNN_CLASS_SPARSE;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/train", root);
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_imagefolder_load(&d, dir, &dc, 0, 0, NULL, &err), CNN_OK, err);
    return d;
}

/* Samples idx[0..n) of d (C x H x W each) into a new buffer. */
static uint8_t *read_all(const cnn_dataset *d, const int64_t *idx, int n)
{
    uint8_t *px = malloc((size_t)n * cnn_shape_size(d->shape));
    cnn_error err = {0};
    TU_STATUS(cnn_dataset_read(d, idx, n, px, &err), CNN_OK, err);
    return px;
}

/* A dataset over root's folder, its decoded bytes before any cache in
 * *ref (every sample in order), and then a cache. */
static cnn_dataset *load_cached(const char *root, uint8_t **ref)
{
    cnn_dataset *d = load(root);
    int64_t order[2 * NPER];
    for (int i = 0; i < d->n; i++)
        order[i] = i;
    *ref = read_all(d, order, (int)d->n);
    cnn_error err = {0};
    TU_STATUS(cnn_dataset_cache(d, &err), CNN_OK, err);
    return d;
}

static void test_cached_bytes_are_decoded_bytes(void **state)
{
    (void)state;
    char *root = make_folder(), path[1024];
    cnn_dataset *plain = load(root), *d = load(root);
    const int n = (int)d->n;
    assert_int_equal(n, 2 * NPER);
    const size_t img = cnn_shape_size(d->shape);
    int64_t order[2 * NPER], back[2 * NPER];
    for (int i = 0; i < n; i++) {
        order[i] = i;
        back[i] = n - 1 - i;
    }
    uint8_t *ref = read_all(plain, order, n);
    cnn_error err = {0};
    assert_null(d->cache);
    TU_STATUS(cnn_dataset_cache(d, &err), CNN_OK, err);
    assert_non_null(d->cache);
    TU_STATUS(cnn_dataset_cache(d, &err), CNN_OK, err); /* twice: the same cache */
    assert_int_equal(cnn_dataset_cache_bytes(d), (uint64_t)n * (img + 1));
    /* first read fills (half of it, backwards), second copies */
    uint8_t *first = read_all(d, back, n / 2);
    for (int i = 0; i < n / 2; i++)
        assert_memory_equal(first + (size_t)i * img, ref + (size_t)back[i] * img, img);
    uint8_t *second = read_all(d, order, n);
    assert_memory_equal(second, ref, (size_t)n * img);
    /* every file gone: the cached dataset reads on, the plain one cannot */
    for (int c = 0; c < 2; c++)
        for (int k = 0; k < NPER; k++) {
            snprintf(path, sizeof path, "%s/train/%c/i%d.jpg", root, 'a' + c, k);
            assert_int_equal(remove(path), 0);
        }
    uint8_t *third = read_all(d, back, n);
    for (int i = 0; i < n; i++)
        assert_memory_equal(third + (size_t)i * img, ref + (size_t)back[i] * img, img);
    TU_STATUS(cnn_dataset_read(plain, order, 1, first, &err), CNN_ERR_IO, err);
    free(ref);
    free(first);
    free(second);
    free(third);
    cnn_dataset_free(plain);
    cnn_dataset_free(d);
    tf_rmtree(root);
}

typedef struct reader {
    const cnn_dataset *d;
    const uint8_t *ref;
    int t, bad;
} reader;

/* Reads every sample 20 times, in an order of its own, comparing each
 * with the decoder's bytes. */
static void *read_many(void *arg)
{
    reader *r = arg;
    const size_t img = cnn_shape_size(r->d->shape);
    uint8_t *px = malloc(img);
    cnn_error err = {0};
    for (int rep = 0; rep < 20; rep++)
        for (int64_t j = 0; j < r->d->n; j++) {
            const int64_t i = (j * (2 * r->t + 1) + rep) % r->d->n;
            if (cnn_dataset_read(r->d, &i, 1, px, &err) ||
                memcmp(px, r->ref + (size_t)i * img, img))
                r->bad++;
        }
    free(px);
    return NULL;
}

static void test_threads_share_one_cache(void **state)
{
    (void)state;
    char *root = make_folder();
    uint8_t *ref;
    cnn_dataset *d = load_cached(root, &ref);
    enum { T = 4 };
    pthread_t th[T];
    reader r[T];
    for (int t = 0; t < T; t++) {
        r[t] = (reader){d, ref, t, 0};
        assert_int_equal(pthread_create(&th[t], NULL, read_many, &r[t]), 0);
    }
    for (int t = 0; t < T; t++) {
        pthread_join(th[t], NULL);
        assert_int_equal(r[t].bad, 0);
    }
    free(ref);
    cnn_dataset_free(d);
    tf_rmtree(root);
}

/* The cache is made before the images are checked and some dropped: the
 * check's decoding fills it, and the rows left read right. */
static void test_cache_then_drop(void **state)
{
    (void)state;
    char *root = make_folder();
    uint8_t *ref;
    cnn_dataset *d = load_cached(root, &ref);
    const int n = (int)d->n;
    const size_t img = cnn_shape_size(d->shape);
    int64_t order[2 * NPER];
    for (int i = 0; i < n; i++)
        order[i] = i;
    cnn_error err = {0};
    uint8_t bad[2 * NPER] = {0};
    TU_STATUS(cnn_dataset_verify(d, 0, 1, bad, &err), CNN_OK, err);
    bad[0] = bad[7] = 1;
    TU_STATUS(cnn_dataset_drop(d, bad, NULL, &err), CNN_OK, err);
    assert_int_equal(d->n, n - 2);
    tf_rmtree(root); /* verify kept every image: nothing is decoded again */
    uint8_t *got = read_all(d, order, n - 2);
    for (int j = 0, k = 0; j < n; j++)
        if (!bad[j]) {
            assert_memory_equal(got + (size_t)k * img, ref + (size_t)j * img, img);
            k++;
        }
    free(ref);
    free(got);
    cnn_dataset_free(d);
}

/* cache = true / auto / false against the limit, as the trainer asks. */
static void test_policy(void **state)
{
    (void)state;
    char *root = make_folder();
    cnn_data_config dc;
    memset(&dc, 0, sizeof dc);
    cnn_error err = {0};
    int on = -1;
    cnn_dataset *d = load(root);
    const uint64_t need = cnn_dataset_cache_bytes(d);
    dc.cache = CNN_CACHE_OFF;
    TU_STATUS(cnn_data_cache_sets(&dc, d, NULL, need, &on, &err), CNN_OK, err);
    assert_int_equal(on, 0);
    assert_null(d->cache);
    dc.cache = CNN_CACHE_AUTO; /* does not fit: left off, no error */
    TU_STATUS(cnn_data_cache_sets(&dc, d, NULL, need - 1, &on, &err), CNN_OK, err);
    assert_int_equal(on, 0);
    assert_null(d->cache);
    dc.cache = CNN_CACHE_ON; /* does not fit: one line with the sizes */
    TU_STATUS(cnn_data_cache_sets(&dc, d, NULL, need - 1, &on, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "[data] cache = true: the decoded images of ");
    TU_MSG_HAS(err, "set cache = false");
    assert_null(strchr(err.msg, '\n'));
    assert_null(d->cache);
    dc.cache = CNN_CACHE_AUTO; /* fits, and decodes: cached, val too */
    cnn_dataset *val = load(root);
    TU_STATUS(cnn_data_cache_sets(&dc, d, val, 2 * need, &on, &err), CNN_OK, err);
    assert_int_equal(on, 1);
    assert_non_null(d->cache);
    assert_non_null(val->cache);
    cnn_dataset_free(val);
    cnn_dataset_free(d);
    /* a store that does not decode files: auto leaves it, true caches it */
    uint8_t *px = calloc(4 * 3, 1);
    cnn_store *s = cnn_memory_store_new(px, 4, (cnn_shape){1, 3, 1});
    d = cnn_dataset_new(s, 4, "mem");
    cnn_store_release(s);
    dc.cache = CNN_CACHE_AUTO;
    TU_STATUS(cnn_data_cache_sets(&dc, d, NULL, 1 << 20, &on, &err), CNN_OK, err);
    assert_int_equal(on, 0);
    assert_null(d->cache);
    dc.cache = CNN_CACHE_ON;
    TU_STATUS(cnn_data_cache_sets(&dc, d, NULL, 1 << 20, &on, &err), CNN_OK, err);
    assert_int_equal(on, 1);
    assert_non_null(d->cache);
    cnn_dataset_free(d);
    assert_true(cnn_data_memory_available() > 0);
    tf_rmtree(root);
}

static void test_key(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        int want;
    } cases[] = {{NULL, CNN_CACHE_AUTO}, {"auto", CNN_CACHE_AUTO}, {"true", CNN_CACHE_ON},
                 {"on", CNN_CACHE_ON},   {"false", CNN_CACHE_OFF}, {"no", CNN_CACHE_OFF}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char ini[256];
        snprintf(ini, sizeof ini, "[data]\ndir = /nonexistent\n%s%s\n",
                 cases[k].v ? "cache = " : "", cases[k].v ? cases[k].v : "");
        cnn_config *cfg = NULL;
        cnn_data_config dc;
        cnn_error err = {0};
        TU_STATUS(cnn_config_parse_string(&cfg, ini, "d.ini", &err), CNN_OK, err);
        TU_STATUS(cnn_data_config_read(&dc, cfg, &err), CNN_OK, err);
        assert_int_equal(dc.cache, cases[k].want);
        cnn_config_free(cfg);
    }
    cnn_config *cfg = NULL;
    cnn_data_config dc;
    cnn_error err = {0};
    TU_STATUS(cnn_config_parse_string(&cfg, "[data]\ncache = maybe\n", "d.ini", &err), CNN_OK,
              err);
    TU_STATUS(cnn_data_config_read(&dc, cfg, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "d.ini:2: [data] cache: 'maybe' is not one of:");
    cnn_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cached_bytes_are_decoded_bytes),
        cmocka_unit_test(test_threads_share_one_cache),
        cmocka_unit_test(test_cache_then_drop),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
