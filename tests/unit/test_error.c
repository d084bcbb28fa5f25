/* test_error.c - error.h's promise: every library call that takes a
 * cnn_error accepts NULL and still returns its status; the prefix and
 * append helpers keep the status and stay inside the message buffer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/checkpoint.h"
#include "cnn/data.h"
#include "cnn/image.h"
#include "datatest.h"
#include "testutil.h"

static void test_prefix_and_append(void **state)
{
    (void)state;
    cnn_error err = {0};
    cnn_error_set(&err, CNN_ERR_FORMAT, "x.png: cannot decode");
    cnn_error_prefix(&err, "epoch %d step %d", 2, 5);
    assert_string_equal(err.msg, "epoch 2 step 5: x.png: cannot decode");
    assert_int_equal(err.status, CNN_ERR_FORMAT);
    cnn_error_append(&err, " (%s)", "hint");
    assert_string_equal(err.msg, "epoch 2 step 5: x.png: cannot decode (hint)");
    /* a message at the buffer's end is cut, never overrun */
    char longer[CNN_ERROR_MSG_MAX + 100];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    cnn_error_prefix(&err, "%s", longer);
    assert_int_equal(strlen(err.msg), CNN_ERROR_MSG_MAX - 1);
    cnn_error_append(&err, "%s", longer);
    assert_int_equal(strlen(err.msg), CNN_ERROR_MSG_MAX - 1);
    cnn_error_prefix(NULL, "p");
    cnn_error_append(NULL, "a");
    assert_int_equal(cnn_error_set(NULL, CNN_ERR_IO, "lost"), CNN_ERR_IO);
}

static void test_library_calls_with_null_err(void **state)
{
    (void)state;
    cnn_config *cfg = (cnn_config *)1;
    assert_int_equal(cnn_config_parse_string(&cfg, "[train\nx", "bad.ini", NULL), CNN_ERR_CONFIG);
    assert_null(cfg);
    assert_int_not_equal(cnn_config_load(&cfg, "/nonexistent/x.ini", NULL), CNN_OK);
    uint8_t px[3 * 4 * 4];
    assert_int_not_equal(cnn_image_load("/nonexistent/x.png", 3, 4, 4, px, NULL), CNN_OK);
    char *text = NULL;
    assert_int_not_equal(cnn_checkpoint_read_config("/nonexistent/x.h5", &text, NULL), CNN_OK);
    cnn_dataset *d = (cnn_dataset *)1;
    assert_int_not_equal(cnn_idx_load(&d, "/nonexistent/a", "/nonexistent/b", 0, NULL), CNN_OK);
}

/* An undecodable image read without on_bad_image = skip: the error gets a
 * hint appended, which must not touch a NULL err. */
static void test_bad_image_with_null_err(void **state)
{
    (void)state;
    char *root = tf_dir("nullerr");
    char path[512];
    snprintf(path, sizeof path, "%s/train/cat/broken.jpg", root);
    tf_write(path, "\xff\xd8\xff\xe0 truncated", 14);
    snprintf(path, sizeof path, "%s/train/dog/broken.png", root);
    tf_write(path, "\x89PNG truncated", 13);
    snprintf(path, sizeof path, "%s/train", root);
    cnn_data_config dc;
    memset(&dc, 0, sizeof dc);
    dc.channels = 1;
    dc.image_h = dc.image_w = 4;
    dc.class_mode = CNN_CLASS_SPARSE;
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_imagefolder_load(&d, path, &dc, 0, 0, NULL, &err), CNN_OK, err);
    uint8_t px[16];
    int bad = 0;
    assert_int_equal(cnn_dataset_read_one(d, 0, px, &bad, NULL), CNN_ERR_FORMAT);
    TU_STATUS(cnn_dataset_read_one(d, 0, px, &bad, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "broken.jpg");
    TU_MSG_HAS(err, "on_bad_image = skip");
    cnn_dataset_free(d);
    tf_rm(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_and_append),
        cmocka_unit_test(test_library_calls_with_null_err),
        cmocka_unit_test(test_bad_image_with_null_err),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
