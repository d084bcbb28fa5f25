/* test_cifar10.c - the CIFAR-10 binary store on tiny synthetic batches:
 * rows read back exactly across batch files, labels, class names, limits,
 * the split through [data], and errors that name the file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/data.h"
#include "testutil.h"
#include "datatest.h"

enum { REC = 3073, PIX = 3072 };

/* Pixel j of global record r, and its label. */
static uint8_t pixel(int r, int j) { return (uint8_t)(r * 7 + j * 13 + (j >> 8)); }
static uint8_t label(int r) { return (uint8_t)((r * 3) % 10); }

/* Writes records [first, first + n) to dir/name. */
static void write_batch(const char *dir, const char *name, int first, int n)
{
    uint8_t *buf = malloc((size_t)n * REC);
    for (int i = 0; i < n; i++) {
        buf[(size_t)i * REC] = label(first + i);
        for (int j = 0; j < PIX; j++)
            buf[(size_t)i * REC + 1 + j] = pixel(first + i, j);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    tf_write(path, buf, (size_t)n * REC);
    free(buf);
}

/* data_batch_1 (records 0-2), data_batch_2 (3-4), test_batch (100-101) */
static char *make_set(void)
{
    char *dir = tf_dir("cifar");
    write_batch(dir, "data_batch_1.bin", 0, 3);
    write_batch(dir, "data_batch_2.bin", 3, 2);
    write_batch(dir, "test_batch.bin", 100, 2);
    return dir;
}

static void test_rows_read_exactly_across_files(void **state)
{
    (void)state;
    char *dir = make_set();
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_cifar10_load(&d, dir, 0, 0, &err), CNN_OK, err);
    assert_int_equal(d->n, 5);
    assert_int_equal(d->shape.c, 3);
    assert_int_equal(d->shape.h, 32);
    assert_int_equal(d->shape.w, 32);
    assert_int_equal(d->nclasses, 10);
    assert_string_equal(d->class_names[0], "airplane");
    assert_string_equal(d->class_names[9], "truck");
    for (int i = 0; i < 5; i++)
        assert_int_equal(d->labels[i], label(i));
    const int64_t idx[4] = {4, 0, 2, 2};
    uint8_t out[4 * PIX];
    TU_STATUS(cnn_dataset_read(d, idx, 4, out, &err), CNN_OK, err);
    for (int b = 0; b < 4; b++)
        for (int j = 0; j < PIX; j++)
            if (out[b * PIX + j] != pixel((int)idx[b], j))
                fail_msg("row %lld pixel %d: %d, expected %d", (long long)idx[b], j,
                         out[b * PIX + j], pixel((int)idx[b], j));
    cnn_dataset_free(d);

    TU_STATUS(cnn_cifar10_load(&d, dir, 1, 0, &err), CNN_OK, err);
    assert_int_equal(d->n, 2);
    assert_int_equal(d->labels[1], label(101));
    TU_STATUS(cnn_dataset_read(d, idx + 1, 1, out, &err), CNN_OK, err);
    assert_int_equal(out[PIX - 1], pixel(100, PIX - 1));
    cnn_dataset_free(d);

    TU_STATUS(cnn_cifar10_load(&d, dir, 0, 4, &err), CNN_OK, err);
    assert_int_equal(d->n, 4);
    cnn_dataset_free(d);
    tf_rmtree(dir);
}

static void test_class_names_file(void **state)
{
    (void)state;
    char *dir = make_set(), path[512];
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    const char *names = "a0\nb1\r\nc2\nd3\ne4\nf5\ng6\nh7\ni8\nj9  \n\n\n";
    tf_write(path, names, strlen(names));
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_cifar10_load(&d, dir, 0, 0, &err), CNN_OK, err);
    assert_string_equal(d->class_names[1], "b1");
    assert_string_equal(d->class_names[9], "j9");
    cnn_dataset_free(d);
    tf_write(path, "a\nb\n", 4);
    TU_STATUS(cnn_cifar10_load(&d, dir, 0, 0, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "batches.meta.txt: 2 class names, expected 10");
    assert_null(d);
    tf_rmtree(dir);
}

static void test_errors_name_the_file(void **state)
{
    (void)state;
    char *dir = make_set(), path[512];
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    /* a size that is not whole records */
    snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    assert_int_equal(truncate(path, 2 * REC + 5), 0);
    TU_STATUS(cnn_cifar10_load(&d, dir, 1, 0, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "test_batch.bin: 6151 bytes is not a whole number of 3073-byte");
    /* a label outside 0-9 */
    write_batch(dir, "test_batch.bin", 100, 2);
    FILE *f = fopen(path, "r+b");
    fseek(f, REC, SEEK_SET);
    fputc(10, f);
    fclose(f);
    TU_STATUS(cnn_cifar10_load(&d, dir, 1, 0, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "test_batch.bin: record 1 has label 10");
    /* a gap in the numbering */
    write_batch(dir, "data_batch_4.bin", 5, 1);
    TU_STATUS(cnn_cifar10_load(&d, dir, 0, 0, &err), CNN_ERR_IO, err);
    TU_MSG_HAS(err, "data_batch_4.bin exists but data_batch_3.bin does not");
    /* no such directory */
    snprintf(path, sizeof path, "%s/nosuch", dir);
    TU_STATUS(cnn_cifar10_load(&d, path, 0, 0, &err), CNN_ERR_IO, err);
    TU_MSG_HAS(err, "nosuch/data_batch_1.bin: cannot open: No such file");
    assert_null(d);
    tf_rmtree(dir);
}

static void test_data_section_split(void **state)
{
    (void)state;
    char *dir = make_set(), ini[1024];
    snprintf(ini, sizeof ini,
             "[data]\nformat = cifar10\ndir = %s\nvalidation = split\nvalidation_split = 0.4\n",
             dir);
    cnn_dataset *train, *val, *test;
    cnn_error err = {0};
    TU_STATUS(tf_data_load(ini, &train, &val, &test, &err), CNN_OK, err);
    assert_int_equal(train->n, 3);
    assert_int_equal(val->n, 2);
    assert_int_equal(test->n, 2);
    assert_int_equal(val->labels[0], label(3));
    assert_string_equal(val->class_names[2], "bird");
    const int64_t one = 1;
    uint8_t out[PIX];
    TU_STATUS(cnn_dataset_read(val, &one, 1, out, &err), CNN_OK, err);
    assert_int_equal(out[5], pixel(4, 5));
    tf_data_free(train, val, test);
    tf_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_read_exactly_across_files),
        cmocka_unit_test(test_class_names_file),
        cmocka_unit_test(test_errors_name_the_file),
        cmocka_unit_test(test_data_section_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
