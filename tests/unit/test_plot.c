/* test_plot.c - history CSV reading and the accuracy/loss graphs: both
 * PNGs at the promised size with the curves in their colours, a run
 * without validation drawn as train alone, nothing printed, and every
 * malformed file named with its line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <stb_image.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnn/plot.h"
#include "testutil.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_plot_%d", (int)getpid());
    return mkdir(dir, 0700);
}

static int teardown(void **state)
{
    (void)state;
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

/* dir/name, in a static buffer (one at a time). */
static const char *in_dir(const char *name)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

#define HEADER "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,images_per_sec\n"

/* What cnn-train writes for 5 epochs with validation. */
static const char five_epochs[] = HEADER "0,0.512345,0.812000,0.401234,0.851000,0.001,12.345,4861.2\n"
                                         "1,0.345678,0.874500,0.352100,0.871300,0.001,12.100,4900.1\n"
                                         "2,0.301234,0.889100,0.331000,0.879800,0.001,12.050,4901.0\n"
                                         "3,0.276543,0.898700,0.318700,0.884100,0.001,12.020,4910.0\n"
                                         "4,0.257000,0.905300,0.309900,0.888900,0.001,12.010,4912.3\n";

/* ... and without validation: the val_* fields are empty. */
static const char no_validation[] = HEADER "0,0.9,0.60,,,0.01,3.0,1000\n"
                                           "1,0.7,0.70,,,0.01,3.0,1000\n"
                                           "2,0.6,0.75,,,0.01,3.0,1000\n"
                                           "3,0.5,0.78,,,0.01,3.0,1000\n"
                                           "4,0.4,0.80,,,0.01,3.0,1000\n";

/* Pixels of a PNG near the train (matplotlib blue) and validation
 * (orange) colours; checks the size on the way. */
static void count_curve_pixels(const char *path, long *blue, long *orange)
{
    int w, h, n;
    assert_true(stbi_info(path, &w, &h, &n));
    assert_int_equal(w, CNN_PLOT_WIDTH);
    assert_int_equal(h, CNN_PLOT_HEIGHT);
    assert_int_equal(n, 3);
    uint8_t *px = stbi_load(path, &w, &h, &n, 3);
    assert_non_null(px);
    *blue = *orange = 0;
    for (long i = 0; i < (long)w * h; i++) {
        const int r = px[3 * i], g = px[3 * i + 1], b = px[3 * i + 2];
        *blue += abs(r - 0x1f) < 40 && abs(g - 0x77) < 40 && abs(b - 0xb4) < 40;
        *orange += abs(r - 0xff) < 40 && abs(g - 0x7f) < 40 && abs(b - 0x0e) < 40;
    }
    stbi_image_free(px);
}

/* Runs cnn_plot_history with stdout and stderr sent to a file; fails the
 * test if anything was printed. */
static cnn_status plot_quietly(const char *csv, const char *prefix, cnn_error *err)
{
    char capture[128];
    snprintf(capture, sizeof capture, "%s/printed", dir);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    int fd = open(capture, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(saved_out >= 0 && saved_err >= 0 && fd >= 0);
    dup2(fd, 1);
    dup2(fd, 2);
    cnn_status st = cnn_plot_history(csv, prefix, err);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    struct stat sb;
    assert_int_equal(fstat(fd, &sb), 0);
    close(fd);
    if (sb.st_size != 0)
        fail_msg("plotting printed %lld bytes (see %s)", (long long)sb.st_size, capture);
    return st;
}

/* A history NAME.csv in dir with this text and the graphs it makes. */
typedef struct run_files {
    char prefix[128], csv[160], acc[160], loss[160];
} run_files;

static run_files history_file(const char *name, const char *text)
{
    run_files r;
    snprintf(r.prefix, sizeof r.prefix, "%s", in_dir(name));
    snprintf(r.csv, sizeof r.csv, "%s.csv", r.prefix);
    snprintf(r.acc, sizeof r.acc, "%s-accuracy.png", r.prefix);
    snprintf(r.loss, sizeof r.loss, "%s-loss.png", r.prefix);
    write_file(r.csv, text);
    return r;
}

static void test_plot_five_epochs(void **state)
{
    (void)state;
    run_files r = history_file("run", five_epochs);
    cnn_error err = {0};
    TU_STATUS(plot_quietly(r.csv, r.prefix, &err), CNN_OK, err);
    long blue, orange;
    count_curve_pixels(r.acc, &blue, &orange);
    /* a 2-px curve across ~650 px, plus its legend sample */
    assert_true(blue > 600 && orange > 600);
    count_curve_pixels(r.loss, &blue, &orange);
    assert_true(blue > 600 && orange > 600);

    /* the graphs differ: accuracy rises, loss falls */
    int w, h, n;
    uint8_t *a = stbi_load(r.acc, &w, &h, &n, 3), *l = stbi_load(r.loss, &w, &h, &n, 3);
    assert_true(a && l);
    assert_true(memcmp(a, l, (size_t)w * h * 3) != 0);
    stbi_image_free(a);
    stbi_image_free(l);
}

static void test_plot_without_validation(void **state)
{
    (void)state;
    run_files r = history_file("noval", no_validation);
    cnn_history_csv hist;
    cnn_error err = {0};
    TU_STATUS(cnn_history_csv_read(&hist, r.csv, &err), CNN_OK, err);
    assert_int_equal(hist.n, 5);
    for (int i = 0; i < hist.n; i++) {
        assert_true(hist.epoch[i] == i);
        assert_true(isnan(hist.val_loss[i]) && isnan(hist.val_accuracy[i]));
    }
    TU_NEAR(hist.loss[4], 0.4, 0);
    TU_NEAR(hist.accuracy[2], 0.75, 0);
    cnn_history_csv_free(&hist);
    cnn_history_csv_free(&hist); /* a freed history can be freed again */

    TU_STATUS(plot_quietly(r.csv, r.prefix, &err), CNN_OK, err);
    long blue, orange;
    count_curve_pixels(r.acc, &blue, &orange);
    assert_true(blue > 600);
    assert_int_equal(orange, 0); /* no validation curve, no legend entry */
    count_curve_pixels(r.loss, &blue, &orange);
    assert_true(blue > 600);
    assert_int_equal(orange, 0);
}

/* Columns are found by name; CRLF, blank lines, a missing val_accuracy
 * column and non-finite values are fine. */
static void test_read_flexible(void **state)
{
    (void)state;
    const char *csv = in_dir("flex.csv");
    write_file(csv, "accuracy, epoch ,loss,val_loss,extra\r\n"
                    "0.5,1,2.0,nan,x\r\n"
                    "\r\n"
                    "0.6,2,1.5,1.7,y\r\n");
    cnn_history_csv h;
    cnn_error err = {0};
    TU_STATUS(cnn_history_csv_read(&h, in_dir("flex.csv"), &err), CNN_OK, err);
    assert_int_equal(h.n, 2);
    assert_true(h.epoch[0] == 1 && h.epoch[1] == 2);
    assert_true(h.accuracy[1] == 0.6 && h.loss[0] == 2.0);
    assert_true(isnan(h.val_loss[0]) && h.val_loss[1] == 1.7);
    assert_true(isnan(h.val_accuracy[0]) && isnan(h.val_accuracy[1]));
    cnn_history_csv_free(&h);
    /* more rows than one allocation step */
    FILE *f = fopen(in_dir("long.csv"), "w");
    assert_non_null(f);
    fputs(HEADER, f);
    for (int e = 0; e < 300; e++)
        fprintf(f, "%d,%g,%g,%g,%g,0.1,1,1\n", e, 1.0 / (e + 1), e / 300.0, 2.0 / (e + 1),
                e / 400.0);
    assert_int_equal(fclose(f), 0);
    TU_STATUS(cnn_history_csv_read(&h, in_dir("long.csv"), &err), CNN_OK, err);
    assert_int_equal(h.n, 300);
    for (int e = 0; e < 300; e++) {
        assert_true(h.epoch[e] == e);
        TU_NEAR(h.val_accuracy[e], e / 400.0, 1e-5); /* %g keeps 6 digits */
    }
    cnn_history_csv_free(&h);
}

/* The CSV at dir/bad.csv with this text fails with status and a message
 * that contains needle. */
static void expect_bad_csv(const char *text, cnn_status status, const char *needle)
{
    const char *csv = in_dir("bad.csv");
    if (text)
        write_file(csv, text);
    else
        remove(csv);
    char path[128], prefix[128];
    snprintf(path, sizeof path, "%s", csv);
    snprintf(prefix, sizeof prefix, "%s", in_dir("bad"));
    cnn_error err = {0};
    TU_STATUS(cnn_plot_history(path, prefix, &err), status, err);
    TU_MSG_HAS(err, needle);
    /* nothing is written for a bad history */
    assert_int_equal(access(in_dir("bad-accuracy.png"), F_OK), -1);
}

static void test_malformed(void **state)
{
    (void)state;
    char want[192];
#define WANT(fmt) (snprintf(want, sizeof want, "%s/bad.csv" fmt, dir), want)
    expect_bad_csv(HEADER "0,0.5,0.8,0.4,0.85,0.1,1,1\n1,0.4,0.9,0.3,0.9,0.1,1\n", CNN_ERR_FORMAT,
                   WANT(":3: 7 fields, the header has 8"));
    expect_bad_csv(HEADER "0,0.5,0.8,0.4,0.85,0.1,1,1\n\n1,abc,0.9,0.3,0.9,0.1,1,1\n",
                   CNN_ERR_FORMAT, WANT(":4: loss: 'abc' is not a number"));
    expect_bad_csv(HEADER "0,0.5,,0.4,0.85,0.1,1,1\n", CNN_ERR_FORMAT,
                   WANT(":2: accuracy: '' is not a number"));
    expect_bad_csv(HEADER "0,0.5,0.8,0.4x,0.85,0.1,1,1\n", CNN_ERR_FORMAT,
                   WANT(":2: val_loss: '0.4x' is not a number"));
    expect_bad_csv(HEADER "nan,0.5,0.8,0.4,0.85,0.1,1,1\n", CNN_ERR_FORMAT,
                   WANT(":2: epoch: 'nan' is not finite"));
    expect_bad_csv("epoch,loss,acc\n0,1,2\n", CNN_ERR_FORMAT,
                   WANT(":1: header has no 'accuracy' column"));
    expect_bad_csv(HEADER, CNN_ERR_FORMAT, WANT(": no epochs"));
    expect_bad_csv("", CNN_ERR_FORMAT, WANT(": empty file"));
    expect_bad_csv(NULL, CNN_ERR_IO, WANT(": cannot open history: No such file or directory"));
#undef WANT
}

static void test_unwritable_output(void **state)
{
    (void)state;
    run_files r = history_file("run", five_epochs);
    cnn_error err = {0};
    TU_STATUS(cnn_plot_history(r.csv, "/nonexistent-dir/run", &err), CNN_ERR_IO, err);
    TU_MSG_HAS(err, "/nonexistent-dir/run-accuracy.png: cannot write PNG");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plot_five_epochs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plot_without_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_flexible, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_output, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
