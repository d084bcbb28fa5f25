/* test_imagefolder.c - class directories of PNG/JPEG/BMP files made on the
 * spot: classes sorted, labels and file order, decoding and resizing on
 * read, a broken .jpg (fatal or skipped: verify, drop, describe), the
 * per-class validation split and limit, and the [data] keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>

#include <cmocka.h>
#include <stb_image_write.h>

#include "cnn/data.h"
#include "testutil.h"
#include "datatest.h"

/* A flat 6x4 image of grey level v; the format follows the extension. */
static void flat_image(const char *dir, const char *name, int v)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    tf_parents(path);
    uint8_t px[4 * 6 * 3];
    memset(px, v, sizeof px);
    const char *ext = strrchr(name, '.') + 1;
    int ok = !strcasecmp(ext, "png")   ? stbi_write_png(path, 6, 4, 3, px, 18)
             : !strcasecmp(ext, "bmp") ? stbi_write_bmp(path, 6, 4, 3, px)
                                       : stbi_write_jpg(path, 6, 4, 3, px, 95);
    if (!ok)
        fail_msg("cannot write %s", path);
}

/* root/train: cat = c1.jpg (10), c2.BMP (20), sub/c3.png (30); dog =
 * d1.png (110), d2.png (120), d3.png (130); plus files to ignore. root/test:
 * cat/x.png (40), dog/y.png (140). */
static char *make_folder(void)
{
    char *root = tf_dir("folder"), path[1024];
    char train[512], test[512];
    snprintf(train, sizeof train, "%s/train", root);
    snprintf(test, sizeof test, "%s/test", root);
    flat_image(train, "dog/d2.png", 120);
    flat_image(train, "dog/d1.png", 110);
    flat_image(train, "dog/d3.png", 130);
    flat_image(train, "cat/c1.jpg", 10);
    flat_image(train, "cat/c2.BMP", 20);
    flat_image(train, "cat/sub/c3.png", 30);
    flat_image(train, "cat/.hidden.png", 99);
    flat_image(train, ".ipynb_checkpoints/x.png", 99);
    snprintf(path, sizeof path, "%s/cat/notes.txt", train);
    tf_write(path, "not an image", 12);
    snprintf(path, sizeof path, "%s/README", train);
    tf_write(path, "a file beside the classes", 25);
    flat_image(test, "cat/x.png", 40);
    flat_image(test, "dog/y.png", 140);
    return root;
}

static void add_broken_jpg(const char *root)
{
    char path[512];
    snprintf(path, sizeof path, "%s/train/cat/broken.jpg", root);
    tf_write(path, "\xff\xd8\xff\xe0 truncated", 14);
}

static cnn_data_config folder_config(int c, int h, int w, int skip)
{
    cnn_data_config dc;
    memset(&dc, 0, sizeof dc);
    dc.channels = c;
    dc.image_h = h;
    dc.image_w = w;
    dc.class_mode = CNN_CLASS_SPARSE;
    dc.skip_bad = skip;
    return dc;
}

static cnn_dataset *load(const char *root, const cnn_data_config *dc, int64_t limit)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/train", root);
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_imagefolder_load(&d, dir, dc, limit, 0, NULL, &err), CNN_OK, err);
    return d;
}

/* Every pixel of sample i of d is v (within tol, for JPEG). */
static void expect_flat(const cnn_dataset *d, int64_t i, int v, int tol)
{
    size_t n = cnn_shape_size(d->shape);
    uint8_t *px = malloc(n);
    cnn_error err = {0};
    TU_STATUS(cnn_dataset_read(d, &i, 1, px, &err), CNN_OK, err);
    for (size_t k = 0; k < n; k++)
        TU_NEAR(px[k], v, tol);
    free(px);
}

static void expect_file(const cnn_dataset *d, int64_t i, const char *tail)
{
    char buf[1024];
    cnn_dataset_describe(d, i, buf, sizeof buf);
    size_t n = strlen(buf), t = strlen(tail);
    if (n < t || strcmp(buf + n - t, tail))
        fail_msg("sample %lld is %s, expected .../%s", (long long)i, buf, tail);
}

static void test_classes_labels_and_order(void **state)
{
    (void)state;
    char *root = make_folder();
    cnn_data_config dc = folder_config(3, 5, 3, 0);
    cnn_dataset *d = load(root, &dc, 0);
    assert_int_equal(d->n, 6);
    assert_int_equal(d->nclasses, 2);
    assert_string_equal(d->class_names[0], "cat");
    assert_string_equal(d->class_names[1], "dog");
    assert_int_equal(d->shape.c, 3);
    assert_int_equal(d->shape.h, 5);
    assert_int_equal(d->shape.w, 3);
    const int32_t labels[6] = {0, 0, 0, 1, 1, 1};
    assert_memory_equal(d->labels, labels, sizeof labels);
    const char *files[6] = {"cat/c1.jpg", "cat/c2.BMP",  "cat/sub/c3.png",
                            "dog/d1.png", "dog/d2.png", "dog/d3.png"};
    const int grey[6] = {10, 20, 30, 110, 120, 130};
    for (int i = 0; i < 6; i++) {
        expect_file(d, i, files[i]);
        expect_flat(d, i, grey[i], i == 0 ? 3 : 0); /* decoded and resized 4x6 -> 5x3 */
    }
    cnn_dataset_free(d);
    /* grayscale: one channel */
    dc = folder_config(1, 4, 6, 0);
    d = load(root, &dc, 0);
    assert_int_equal(d->shape.c, 1);
    expect_flat(d, 4, 120, 0);
    cnn_dataset_free(d);
    tf_rmtree(root);
}

static void test_broken_file_fatal(void **state)
{
    (void)state;
    char *root = make_folder();
    add_broken_jpg(root);
    cnn_data_config dc = folder_config(3, 4, 6, 0);
    cnn_dataset *d = load(root, &dc, 0);
    assert_int_equal(d->n, 7); /* listed: only decoding tells */
    expect_file(d, 0, "cat/broken.jpg");
    uint8_t bad[7];
    cnn_error err = {0};
    TU_STATUS(cnn_dataset_verify(d, 0, 1, bad, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "/train/cat/broken.jpg: cannot decode: ");
    TU_MSG_HAS(err, "on_bad_image = skip");
    assert_null(strchr(err.msg, '\n'));
    /* the rank whose share does not hold it finds nothing */
    TU_STATUS(cnn_dataset_verify(d, 1, 2, bad, &err), CNN_OK, err);
    /* reading it in a batch fails, naming it */
    const int64_t idx[2] = {1, 0};
    uint8_t px[2 * 3 * 4 * 6];
    TU_STATUS(cnn_dataset_read(d, idx, 2, px, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "cat/broken.jpg: cannot decode");
    cnn_dataset_free(d);
    tf_rmtree(root);
}

static void test_broken_file_skipped(void **state)
{
    (void)state;
    char *root = make_folder();
    add_broken_jpg(root);
    cnn_data_config dc = folder_config(3, 4, 6, 1);
    cnn_dataset *d = load(root, &dc, 0);
    /* two ranks verify half each; OR-ing their flags gives the one file */
    uint8_t b0[7], b1[7], bad[7];
    cnn_error err = {0};
    TU_STATUS(cnn_dataset_verify(d, 0, 2, b0, &err), CNN_OK, err);
    TU_STATUS(cnn_dataset_verify(d, 1, 2, b1, &err), CNN_OK, err);
    for (int i = 0; i < 7; i++)
        bad[i] = b0[i] | b1[i];
    const uint8_t want[7] = {1, 0, 0, 0, 0, 0, 0};
    assert_memory_equal(bad, want, 7);
    assert_memory_equal(b1, (uint8_t[7]){0}, 7); /* rank 1's share is clean */
    int64_t dropped = -1;
    TU_STATUS(cnn_dataset_drop(d, bad, &dropped, &err), CNN_OK, err);
    assert_int_equal(dropped, 1);
    assert_int_equal(d->n, 6);
    expect_file(d, 0, "cat/c1.jpg");
    expect_file(d, 5, "dog/d3.png");
    expect_flat(d, 1, 20, 0);
    expect_flat(d, 5, 130, 0);
    const int32_t labels[6] = {0, 0, 0, 1, 1, 1};
    assert_memory_equal(d->labels, labels, sizeof labels);
    /* a split after a drop keeps the row map */
    cnn_dataset *tail = NULL;
    TU_STATUS(cnn_dataset_split_at(d, 4, &tail, &err), CNN_OK, err);
    expect_file(tail, 1, "dog/d3.png");
    expect_flat(tail, 0, 120, 0);
    assert_int_equal(tail->skip_bad, 1);
    cnn_dataset_free(tail);
    /* a file that vanishes after loading fails its batch, named */
    char path[512];
    snprintf(path, sizeof path, "%s/train/dog/d1.png", root);
    assert_int_equal(remove(path), 0);
    const int64_t three = 3;
    uint8_t px[3 * 4 * 6];
    TU_STATUS(cnn_dataset_read(d, &three, 1, px, &err), CNN_ERR_IO, err);
    TU_MSG_HAS(err, "dog/d1.png: cannot open: No such file");
    /* nothing left */
    uint8_t all[4] = {1, 1, 1, 1};
    TU_STATUS(cnn_dataset_drop(d, all, NULL, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "none of the 4 images can be read");
    assert_int_equal(d->n, 4);
    cnn_dataset_free(d);
    tf_rmtree(root);
}

static void test_split_per_class_and_limit(void **state)
{
    (void)state;
    char *root = make_folder(), dir[512];
    snprintf(dir, sizeof dir, "%s/train", root);
    cnn_data_config dc = folder_config(1, 4, 6, 0);
    cnn_dataset *d = NULL, *val = NULL;
    cnn_error err = {0};
    /* Keras's subset="validation": the first floor(0.5 * 3) = 1 of each class */
    TU_STATUS(cnn_imagefolder_load(&d, dir, &dc, 0, 0.5, &val, &err), CNN_OK, err);
    assert_int_equal(d->n, 4);
    assert_int_equal(val->n, 2);
    expect_file(val, 0, "cat/c1.jpg");
    expect_file(val, 1, "dog/d1.png");
    assert_int_equal(val->labels[1], 1);
    expect_file(d, 0, "cat/c2.BMP");
    expect_file(d, 2, "dog/d2.png");
    assert_int_equal(d->labels[2], 1);
    assert_string_equal(val->class_names[1], "dog");
    cnn_dataset_free(d);
    cnn_dataset_free(val);
    /* limit 4 of 6: the first 2 of each class */
    d = load(root, &dc, 4);
    assert_int_equal(d->n, 4);
    expect_file(d, 1, "cat/c2.BMP");
    expect_file(d, 2, "dog/d1.png");
    cnn_dataset_free(d);
    TU_STATUS(cnn_imagefolder_load(&d, dir, &dc, 0, 0.2, &val, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "validation_split 0.2 of 6 images leaves an empty set");
    tf_rmtree(root);
}

/* tf_data_load of [data] text with %s = root. */
static cnn_status data_load(const char *root, const char *fmt, cnn_dataset **train,
                            cnn_dataset **val, cnn_dataset **test, cnn_error *err)
{
    char ini[2048];
    snprintf(ini, sizeof ini, fmt, root);
    return tf_data_load(ini, train, val, test, err);
}

static void test_data_section(void **state)
{
    (void)state;
    char *root = make_folder(), path[512];
    cnn_dataset *train, *val, *test;
    cnn_error err = {0};
    TU_STATUS(data_load(root,
                        "[data]\nformat = imagefolder\ndir = %s\ntrain_dir = train\n"
                        "validation_dir = test\nimage_size = 5x7\nchannels = 1\n"
                        "class_mode = binary\non_bad_image = skip\n",
                        &train, &val, &test, &err),
              CNN_OK, err);
    assert_int_equal(train->n, 6);
    assert_int_equal(val->n, 2);
    assert_int_equal(test->n, 2);
    assert_true(val != test);
    assert_int_equal(train->shape.c, 1);
    assert_int_equal(train->shape.h, 5);
    assert_int_equal(train->shape.w, 7);
    assert_int_equal(train->skip_bad, 1);
    expect_flat(test, 1, 140, 0);
    tf_data_free(train, val, test);
    /* validation = split over a folder: per class */
    TU_STATUS(data_load(root,
                        "[data]\nformat = imagefolder\ndir = %s\nvalidation = split\n"
                        "validation_split = 0.34\nimage_size = 4\n",
                        &train, &val, &test, &err),
              CNN_OK, err);
    assert_int_equal(val->n, 2);
    assert_int_equal(val->labels[0], 0);
    assert_int_equal(val->labels[1], 1);
    tf_data_free(train, val, test);

    TU_STATUS(data_load(root,
                        "[data]\nformat = imagefolder\ndir = %s\nvalidation_dir = test\n"
                        "validation = split\nvalidation_split = 0.5\n",
                        &train, &val, &test, &err),
              CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "d.ini:5: [data] validation: contradicts validation_dir");
    TU_STATUS(data_load(root, "[data]\nformat = imagefolder\ndir = %s\nchannels = 2\n", &train,
                        &val, &test, &err),
              CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "d.ini:4: [data] channels: '2' is not one of: 1, 3");
    TU_STATUS(data_load(root, "[data]\nformat = imagefolder\ndir = %s\non_bad_image = warn\n",
                        &train, &val, &test, &err),
              CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "on_bad_image: 'warn' is not one of: fatal, skip");
    /* binary needs two classes; the test set must have the training classes */
    flat_image(root, "test/cow/z.png", 7);
    TU_STATUS(data_load(root, "[data]\nformat = imagefolder\ndir = %s\n", &train, &val, &test,
                        &err),
              CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "different classes: 'dog' and 'cow' at label 1");
    TU_STATUS(data_load(root, "[data]\nformat = imagefolder\ndir = %s\ntrain_dir = test\n"
                              "class_mode = binary\n",
                        &train, &val, &test, &err),
              CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "class_mode = binary needs 2 class directories, found 3 (cat, ...)");
    /* empty or missing folders */
    snprintf(path, sizeof path, "%s/empty/none", root);
    tf_parents(path);
    TU_STATUS(data_load(root, "[data]\nformat = imagefolder\ndir = %s\ntrain_dir = empty\n",
                        &train, &val, &test, &err),
              CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "/empty: no class directories");
    TU_STATUS(data_load(root, "[data]\nformat = imagefolder\ndir = %s\ntest_dir = nosuch\n",
                        &train, &val, &test, &err),
              CNN_ERR_IO, err);
    TU_MSG_HAS(err, "/nosuch: cannot open directory: No such file");
    tf_rmtree(root);
}

/* A class directory without images (empty, or only non-images and empty
 * subdirectories) is an error naming it; it used to load the other
 * classes' images silently, after qsort(NULL, 0, ...). */
static void test_empty_class_directory(void **state)
{
    (void)state;
    char *root = tf_dir("folder"), path[1024], dir[600];
    snprintf(dir, sizeof dir, "%s/train", root);
    flat_image(dir, "cat/c1.png", 10);
    snprintf(path, sizeof path, "%s/dog/sub", dir);
    tf_parents(path);
    mkdir(path, 0755); /* dog/sub: an empty directory inside an empty class */
    cnn_data_config dc = folder_config(1, 4, 6, 1);
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_imagefolder_load(&d, dir, &dc, 0, 0, NULL, &err), CNN_ERR_FORMAT, err);
    assert_null(d);
    snprintf(path, sizeof path, "%s/dog: no .jpg, .jpeg, .png, .bmp or .gif files", dir);
    TU_MSG_HAS(err, path);
    assert_int_equal(cnn_status_exit_code(err.status), 2);
    snprintf(path, sizeof path, "%s/dog/notes.txt", dir);
    tf_write(path, "no image", 8); /* a non-image file does not count */
    TU_STATUS(cnn_imagefolder_load(&d, dir, &dc, 0, 0, NULL, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "/dog: no .jpg");
    tf_rmtree(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes_labels_and_order),
        cmocka_unit_test(test_broken_file_fatal),
        cmocka_unit_test(test_broken_file_skipped),
        cmocka_unit_test(test_split_per_class_and_limit),
        cmocka_unit_test(test_data_section),
        cmocka_unit_test(test_empty_class_directory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
