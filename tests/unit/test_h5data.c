/* test_h5data.c - HDF5 image files: written in blocks by the writer, read
 * back by random rows (repeats, any order) exactly, with and without gzip;
 * malformed files made with the HDF5 API fail with one line naming the
 * file and the problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <hdf5.h>

#include "cnn/data.h"
#include "testutil.h"
#include "datatest.h"

static int setup(void **state)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* the malformed files are meant */
    return tf_setup(state);
}

enum { N = 13, C = 3, H = 5, W = 4, IMG = C * H * W };

/* Image i, channel-first, and its label. */
static uint8_t px(int i, int k) { return (uint8_t)(i * 31 + k * 7 + (k * k) % 5); }
static int32_t lab(int i) { return i % 4; }

static void write_file(const char *path, int chunk, int gzip, int with_names)
{
    static const char *const names[4] = {"ant", "bee", "cicada", "dragonfly"};
    uint8_t imgs[N * IMG];
    int32_t labels[N];
    for (int i = 0; i < N; i++) {
        labels[i] = lab(i);
        for (int k = 0; k < IMG; k++)
            imgs[i * IMG + k] = px(i, k);
    }
    cnn_h5data_writer *w = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_h5data_create(&w, path, (cnn_shape){C, H, W}, chunk, gzip, &err), CNN_OK, err);
    for (int i0 = 0; i0 < N; i0 += 5)
        TU_STATUS(cnn_h5data_append(w, imgs + i0 * IMG, N - i0 < 5 ? N - i0 : 5, &err), CNN_OK,
                  err);
    TU_STATUS(cnn_h5data_close(w, labels, with_names ? names : NULL, 4, &err), CNN_OK, err);
}

/* Reads rows idx of d and compares each with the source image. */
static void expect_rows(const cnn_dataset *d, const int64_t *idx, int B)
{
    uint8_t *out = malloc((size_t)B * IMG);
    cnn_error err = {0};
    TU_STATUS(cnn_dataset_read(d, idx, B, out, &err), CNN_OK, err);
    for (int b = 0; b < B; b++)
        for (int k = 0; k < IMG; k++)
            if (out[b * IMG + k] != px((int)idx[b], k))
                fail_msg("batch slot %d (row %lld), byte %d: %d, expected %d", b,
                         (long long)idx[b], k, out[b * IMG + k], px((int)idx[b], k));
    free(out);
}

static void test_round_trip_random_rows(void **state)
{
    (void)state;
    const struct { int chunk, gzip; } cases[] = {{0, 0}, {1, 0}, {3, 4}, {N, 9}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        write_file(tf_path("rt.h5"), cases[c].chunk, cases[c].gzip, 1);
        cnn_dataset *d = NULL;
        cnn_error err = {0};
        TU_STATUS(cnn_h5data_load(&d, tf_path("rt.h5"), 0, &err), CNN_OK, err);
        assert_int_equal(d->n, N);
        assert_int_equal(d->shape.c, C);
        assert_int_equal(d->shape.h, H);
        assert_int_equal(d->shape.w, W);
        assert_int_equal(d->nclasses, 4);
        assert_string_equal(d->class_names[3], "dragonfly");
        for (int i = 0; i < N; i++)
            assert_int_equal(d->labels[i], lab(i));
        const int64_t fixed[8] = {12, 0, 5, 5, 7, 6, 1, 12};
        expect_rows(d, fixed, 8);
        tu_rng r = {42 + c};
        int64_t idx[32];
        for (int rep = 0; rep < 20; rep++) {
            int B = 1 + rep % 32;
            for (int b = 0; b < B; b++)
                idx[b] = (int64_t)(tu_uniform(&r) * N);
            expect_rows(d, idx, B);
        }
        cnn_dataset_free(d);
    }
}

static void test_limit_names_and_split(void **state)
{
    (void)state;
    write_file(tf_path("nn.h5"), 2, 0, 0);
    cnn_dataset *d = NULL, *tail = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_h5data_load(&d, tf_path("nn.h5"), 10, &err), CNN_OK, err);
    assert_int_equal(d->n, 10);
    assert_null(d->class_names);
    assert_int_equal(d->nclasses, 4);
    TU_STATUS(cnn_dataset_split_tail(d, 0.3, &tail, &err), CNN_OK, err);
    assert_int_equal(tail->n, 3);
    const int64_t idx[3] = {2, 0, 1};
    uint8_t out[3 * IMG];
    TU_STATUS(cnn_dataset_read(tail, idx, 3, out, &err), CNN_OK, err);
    assert_int_equal(out[0], px(9, 0));
    assert_int_equal(out[IMG + 5], px(7, 5));
    const int64_t past = 3;
    TU_STATUS(cnn_dataset_read(tail, &past, 1, out, &err), CNN_ERR_ARG, err);
    cnn_dataset_free(tail);
    cnn_dataset_free(d);
}

static void test_abandoned_file_is_removed(void **state)
{
    (void)state;
    cnn_h5data_writer *w = NULL;
    cnn_error err = {0};
    uint8_t img[IMG] = {0};
    TU_STATUS(cnn_h5data_create(&w, tf_path("gone.h5"), (cnn_shape){C, H, W}, 0, 0, &err),
              CNN_OK, err);
    TU_STATUS(cnn_h5data_append(w, img, 1, &err), CNN_OK, err);
    TU_STATUS(cnn_h5data_close(w, NULL, NULL, 0, &err), CNN_OK, err);
    assert_int_not_equal(access(tf_path("gone.h5"), F_OK), 0);
    TU_STATUS(cnn_h5data_create(&w, tf_path("nosuch/x.h5"), (cnn_shape){C, H, W}, 0, 0, &err),
              CNN_ERR_IO, err);
    TU_MSG_HAS(err, "nosuch/x.h5: cannot create");
}

/* A file of the expected names but chosen types and shapes; absent parts
 * when rank or nlab is 0. Pixels are left to HDF5's fill value. Labels
 * are first_label, 1, 0, 0, ... (converted to lab_type by HDF5, which
 * clamps); nclasses names, "zero", "one", ..., as fixed-length strings, or
 * with vlen_null as variable-length ones of which /classes[1] is NULL;
 * labels_group makes /labels a group. */
typedef struct craft {
    hid_t img_type;
    int rank;
    hsize_t dims[4];
    hid_t lab_type;
    hsize_t nlab;
    int64_t first_label;
    int nclasses;
    int vlen_null;
    int labels_group;
} craft;

static void make(const char *path, const craft *c)
{
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(f >= 0);
    if (c->rank) {
        hid_t sp = H5Screate_simple(c->rank, c->dims, NULL);
        H5Dclose(H5Dcreate2(f, "images", c->img_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        H5Sclose(sp);
    }
    if (c->labels_group)
        H5Gclose(H5Gcreate2(f, "labels", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    if (c->nlab) {
        int64_t labels[64] = {0};
        labels[0] = c->first_label;
        labels[1] = 1;
        hsize_t n = c->nlab;
        hid_t sp = H5Screate_simple(1, &n, NULL);
        hid_t d = H5Dcreate2(f, "labels", c->lab_type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (n <= 64) /* more stay HDF5's fill value, never written */
            H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels);
        H5Dclose(d);
        H5Sclose(sp);
    }
    if (c->nclasses) {
        hsize_t n = (hsize_t)c->nclasses;
        hid_t sp = H5Screate_simple(1, &n, NULL), t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, c->vlen_null ? H5T_VARIABLE : 6);
        hid_t d = H5Dcreate2(f, "classes", t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        const char *vnames[3] = {"zero", NULL, "two"};
        H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                 c->vlen_null ? (const void *)vnames : "zero\0\0one\0\0\0two\0\0\0");
        H5Dclose(d);
        H5Tclose(t);
        H5Sclose(sp);
    }
    H5Fclose(f);
}

static void expect_load_error(const craft *c, cnn_status want, const char *needle)
{
    make(tf_path("bad.h5"), c);
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_h5data_load(&d, tf_path("bad.h5"), 0, &err), want, err);
    TU_MSG_HAS(err, tf_path("bad.h5"));
    TU_MSG_HAS(err, needle);
    assert_null(strchr(err.msg, '\n'));
    assert_null(d);
}

static void test_malformed_files(void **state)
{
    (void)state;
    const craft ok = {H5T_STD_U8LE, 4, {5, 2, 3, 1}, H5T_STD_U8LE, 5, 0, 0, 0, 0};
    craft c = ok;
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    /* the baseline loads: uint8 labels, fixed-length class names */
    c.nclasses = 3;
    make(tf_path("ok.h5"), &c);
    TU_STATUS(cnn_h5data_load(&d, tf_path("ok.h5"), 0, &err), CNN_OK, err);
    assert_int_equal(d->n, 5);
    assert_int_equal(d->shape.c, 1);
    assert_int_equal(d->shape.h, 2);
    assert_int_equal(d->shape.w, 3);
    assert_string_equal(d->class_names[1], "one");
    assert_int_equal(d->labels[1], 1);
    cnn_dataset_free(d);

    c = ok, c.img_type = H5T_IEEE_F32LE;
    expect_load_error(&c, CNN_ERR_FORMAT, "/images is float32, expected uint8");
    c = ok, c.img_type = H5T_STD_I16LE;
    expect_load_error(&c, CNN_ERR_FORMAT, "/images is int16, expected uint8");
    c = ok, c.rank = 3;
    expect_load_error(&c, CNN_ERR_FORMAT, "/images has 3 dimensions, expected 4 (N, H, W, C)");
    c = ok, c.rank = 0;
    expect_load_error(&c, CNN_ERR_FORMAT, "no /images dataset");
    c = ok, c.nlab = 0;
    expect_load_error(&c, CNN_ERR_FORMAT, "no /labels dataset");
    c = ok, c.nlab = 4;
    expect_load_error(&c, CNN_ERR_FORMAT, "/labels has 4 entries but /images 5");
    c = ok, c.lab_type = H5T_IEEE_F64LE;
    expect_load_error(&c, CNN_ERR_FORMAT, "/labels is float64, expected integers");
    c = ok, c.lab_type = H5T_STD_I32LE, c.first_label = -3;
    expect_load_error(&c, CNN_ERR_FORMAT, "/labels[0] is -3, below 0");
    c = ok, c.first_label = 7, c.nclasses = 3;
    expect_load_error(&c, CNN_ERR_FORMAT, "label 7 but only 3 names in /classes");
    /* labels that are no class numbers: INT32_MAX overflowed nclasses =
     * max + 1, 10^8 made cnn-data info print 10^8 + 1 rows; int64 2^40 is
     * clamped to INT32_MAX by HDF5 */
    c = ok, c.lab_type = H5T_STD_I32LE, c.first_label = INT32_MAX;
    expect_load_error(&c, CNN_ERR_FORMAT,
                      "/labels[0] is 2147483647 or more, not a class number (0 to 65535)");
    c = ok, c.lab_type = H5T_STD_I64LE, c.first_label = (int64_t)1 << 40;
    expect_load_error(&c, CNN_ERR_FORMAT, "/labels[0] is 2147483647 or more, not a class");
    c = ok, c.lab_type = H5T_STD_I32LE, c.first_label = 100000000;
    expect_load_error(&c, CNN_ERR_FORMAT, "/labels[0] is 100000000, not a class number");
    c = ok, c.lab_type = H5T_STD_U16LE, c.first_label = 65535; /* the largest class number */
    make(tf_path("big.h5"), &c);
    TU_STATUS(cnn_h5data_load(&d, tf_path("big.h5"), 0, &err), CNN_OK, err);
    assert_int_equal(d->nclasses, 65536);
    cnn_dataset_free(d);
    /* 2^62 images of 1 pixel: their labels, 2^64 bytes, wrapped size_t to
     * an allocation of 0 that HDF5 then filled; and more than int64 counts */
    c = ok, c.dims[0] = c.nlab = (hsize_t)1 << 62, c.dims[1] = c.dims[2] = c.dims[3] = 1;
    expect_load_error(&c, CNN_ERR_NOMEM, "out of memory for 4611686018427387904 labels");
    c = ok, c.dims[0] = c.nlab = (hsize_t)1 << 62, c.dims[1] = 4;
    expect_load_error(&c, CNN_ERR_FORMAT, "/images claims 4611686018427387904 images, too many");
    /* a NULL variable-length class name reached strlen */
    c = ok, c.nclasses = 3, c.vlen_null = 1;
    expect_load_error(&c, CNN_ERR_FORMAT, "/classes[1] is a null string");
    c = ok, c.nlab = 0, c.labels_group = 1;
    expect_load_error(&c, CNN_ERR_FORMAT, "/labels is not a dataset");

    tf_write(tf_path("text.h5"), "plain text", 10);
    TU_STATUS(cnn_h5data_load(&d, tf_path("text.h5"), 0, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "text.h5: not an HDF5 file");
    TU_STATUS(cnn_h5data_load(&d, tf_path("none.h5"), 0, &err), CNN_ERR_IO, err);
    TU_MSG_HAS(err, "none.h5: cannot open: No such file");
}

static void test_data_section(void **state)
{
    (void)state;
    write_file(tf_path("tr.h5"), 0, 0, 1);
    write_file(tf_path("te.h5"), 0, 1, 1);
    char ini[1024];
    snprintf(ini, sizeof ini,
             "[data]\nformat = hdf5\ndir = %s\ntrain_file = tr.h5\nvalidation_file = te.h5\n"
             "test_file = %s\ntest_limit = 4\n",
             tf_scratch, tf_path("te.h5"));
    cnn_dataset *train, *val, *test;
    cnn_error err = {0};
    TU_STATUS(tf_data_load(ini, &train, &val, &test, &err), CNN_OK, err);
    assert_true(val != test);
    assert_int_equal(train->n, N);
    assert_int_equal(val->n, N);
    assert_int_equal(test->n, 4);
    const int64_t idx[2] = {3, 1};
    expect_rows(test, idx, 2);
    tf_data_free(train, val, test);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_random_rows),
        cmocka_unit_test(test_limit_names_and_split),
        cmocka_unit_test(test_abandoned_file_is_removed),
        cmocka_unit_test(test_malformed_files),
        cmocka_unit_test(test_data_section),
    };
    return cmocka_run_group_tests(tests, setup, tf_teardown);
}
