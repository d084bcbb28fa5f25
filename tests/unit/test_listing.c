/* test_listing.c - an image folder listed once (cnn_data_list) and loaded
 * from the listing (cnn_data_load_listed), as the ranks other than 0 load
 * it: the same data sets as listing the folder, the files of the listing
 * even after the folder changed, a listing that does not parse refused at
 * every truncation, and a listing error naming the directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/data.h"
#include "testutil.h"
#include "datatest.h"

/* root/train: a/1.bmp a/2.bmp b/sub/3.bmp b/4.bmp; root/val: a/5.bmp
 * b/6.bmp; root/test: a/7.bmp b/8.bmp (BMP headers only: not decoded). */
static char *make_folder(void)
{
    static const char *const files[] = {"train/a/1.bmp", "train/a/2.bmp", "train/b/sub/3.bmp",
                                        "train/b/4.bmp", "val/a/5.bmp",   "val/b/6.bmp",
                                        "test/a/7.bmp",  "test/b/8.bmp"};
    char *root = tf_dir("listing"), path[512];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", root, files[i]);
        tf_write(path, "BM", 2);
    }
    return root;
}

static cnn_data_config config(const char *root, const char *extra)
{
    char ini[1024];
    snprintf(ini, sizeof ini,
             "[data]\nformat = imagefolder\ndir = %s\nvalidation_dir = val\nimage_size = 4\n%s",
             root, extra);
    cnn_config *cfg = NULL;
    cnn_data_config dc;
    cnn_error err = {0};
    TU_STATUS(cnn_config_parse_string(&cfg, ini, "d.ini", &err), CNN_OK, err);
    TU_STATUS(cnn_data_config_read(&dc, cfg, &err), CNN_OK, err);
    cnn_config_free(cfg);
    return dc;
}

/* a and b hold the same samples: files, labels and classes. */
static void expect_same(const cnn_dataset *a, const cnn_dataset *b)
{
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->nclasses, b->nclasses);
    for (int64_t i = 0; i < a->n; i++) {
        char x[512], y[512];
        assert_string_equal(cnn_dataset_describe(a, i, x, sizeof x),
                            cnn_dataset_describe(b, i, y, sizeof y));
        assert_int_equal(a->labels[i], b->labels[i]);
    }
}

static void test_listed_load_is_the_folder(void **state)
{
    (void)state;
    char *root = make_folder(), path[512];
    cnn_data_config dc = config(root, "");
    cnn_data_listing l = {0};
    cnn_error err = {0};
    cnn_dataset *s[3], *t[3];
    TU_STATUS(cnn_data_list(&dc, &l, &err), CNN_OK, err);
    assert_true(l.len > 0);
    TU_STATUS(cnn_data_load(&dc, 0, 1, &s[0], &s[1], &s[2], &err), CNN_OK, err);
    TU_STATUS(cnn_data_load_listed(&dc, 1, 4, &l, &t[0], &t[1], &t[2], &err), CNN_OK, err);
    for (int k = 0; k < 3; k++)
        expect_same(s[k], t[k]);
    assert_int_equal(t[0]->n, 4);
    assert_int_equal(t[1]->n, 2);
    assert_int_equal(t[2]->n, 2);
    char buf[512];
    assert_non_null(strstr(cnn_dataset_describe(t[0], 2, buf, sizeof buf), "/train/b/4.bmp"));
    for (int k = 0; k < 3; k++) {
        cnn_dataset_free(s[k]);
        cnn_dataset_free(t[k]);
    }
    /* a file added since: the listing's load does not look at the folder */
    snprintf(path, sizeof path, "%s/train/a/0.bmp", root);
    tf_write(path, "BM", 2);
    TU_STATUS(cnn_data_load_listed(&dc, 0, 1, &l, &t[0], &t[1], &t[2], &err), CNN_OK, err);
    assert_int_equal(t[0]->n, 4);
    TU_STATUS(cnn_data_load(&dc, 0, 1, &s[0], &s[1], &s[2], &err), CNN_OK, err);
    assert_int_equal(s[0]->n, 5);
    for (int k = 0; k < 3; k++) {
        cnn_dataset_free(s[k]);
        cnn_dataset_free(t[k]);
    }
    /* the listing's classes and limits: class_mode = binary, a limit */
    cnn_data_config bin = config(root, "class_mode = binary\ntrain_limit = 2\n");
    TU_STATUS(cnn_data_load_listed(&bin, 0, 1, &l, &t[0], &t[1], &t[2], &err), CNN_OK, err);
    assert_int_equal(t[0]->n, 2);
    assert_int_equal(t[0]->labels[0], 0);
    assert_int_equal(t[0]->labels[1], 1);
    for (int k = 0; k < 3; k++)
        cnn_dataset_free(t[k]);
    cnn_data_listing_free(&l);
    cnn_data_listing_free(&l); /* safe twice */
    tf_rmtree(root);
}

static void test_truncated_listing_refused(void **state)
{
    (void)state;
    char *root = make_folder();
    cnn_data_config dc = config(root, "");
    cnn_data_listing l = {0};
    cnn_error err = {0};
    cnn_dataset *t[3];
    TU_STATUS(cnn_data_list(&dc, &l, &err), CNN_OK, err);
    const size_t len = l.len;
    for (size_t n = 0; n < len; n++) {
        char *cut = malloc(n ? n : 1); /* its own allocation: ASan sees overreads */
        memcpy(cut, l.bytes, n);
        cnn_data_listing c = {.bytes = cut, .len = n, .cap = n};
        TU_STATUS(cnn_data_load_listed(&dc, 0, 1, &c, &t[0], &t[1], &t[2], &err),
                  CNN_ERR_FORMAT, err);
        TU_MSG_HAS(err, "does not parse");
        assert_null(t[0]);
        cnn_data_listing_free(&c);
    }
    /* a count that is not a number */
    char *p = memchr(l.bytes, 0, l.len);
    p[1] = 'x';
    TU_STATUS(cnn_data_load_listed(&dc, 0, 1, &l, &t[0], &t[1], &t[2], &err), CNN_ERR_FORMAT,
              err);
    TU_MSG_HAS(err, "/train: a listing of");
    cnn_data_listing_free(&l);
    tf_rmtree(root);
}

static void test_listing_error_names_the_directory(void **state)
{
    (void)state;
    char *root = make_folder(), path[512];
    cnn_data_config dc = config(root, "test_dir = nowhere\n");
    cnn_data_listing l = {0};
    cnn_error err = {0};
    TU_STATUS(cnn_data_list(&dc, &l, &err), CNN_ERR_IO, err);
    snprintf(path, sizeof path, "%s/nowhere: cannot open directory", root);
    TU_MSG_HAS(err, path);
    assert_null(l.bytes);
    assert_int_equal(l.len, 0);
    tf_rmtree(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listed_load_is_the_folder),
        cmocka_unit_test(test_truncated_listing_refused),
        cmocka_unit_test(test_listing_error_names_the_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
