/* test_png_grid.c - feature maps written as a PNG grid and read back with
 * stb_image: layout, per-tile normalisation, upscaling, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stb_image.h>
#include <unistd.h>

#include "cnn/imageio.h"
#include "testutil.h"

static char png_path[64];

static int setup(void **state)
{
    (void)state;
    snprintf(png_path, sizeof png_path, "/tmp/test_png_grid_%d.png", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    remove(png_path);
    return 0;
}

/* Reads png_path as 8-bit gray; checks its size. Caller frees. */
static uint8_t *read_back(int want_w, int want_h)
{
    int w, h, n;
    uint8_t *pix = stbi_load(png_path, &w, &h, &n, 1);
    if (!pix)
        fail_msg("stbi_load %s: %s", png_path, stbi_failure_reason());
    assert_int_equal(n, 1); /* written as grayscale */
    assert_int_equal(w, want_w);
    assert_int_equal(h, want_h);
    return pix;
}

static void test_grid_shape(void **state)
{
    (void)state;
    const int want[][3] = {{1, 1, 1}, {2, 2, 1}, {3, 2, 2}, {4, 2, 2}, {5, 3, 2},
                           {9, 3, 3}, {10, 4, 3}, {32, 6, 6}, {64, 8, 8}, {0, 0, 0}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int cols, rows;
        cnn_png_grid_shape(want[i][0], &cols, &rows);
        if (cols != want[i][1] || rows != want[i][2])
            fail_msg("%d maps: %d x %d tiles, expected %d x %d", want[i][0], cols, rows,
                     want[i][1], want[i][2]);
    }
    int w, h;
    cnn_png_grid_size(32, 26, 26, 2, &w, &h); /* 6 x 6 tiles of 52 + 5 separators */
    assert_int_equal(w, 6 * 52 + 5);
    assert_int_equal(h, 6 * 52 + 5);
}

/* Five 2x3 maps at scale 2: a 3 x 2 grid of 6x4 tiles, 20 x 9 pixels. */
static void test_write_grid(void **state)
{
    (void)state;
    enum { C = 5, H = 2, W = 3, S = 2 };
    float maps[C * H * W];
    for (int k = 0; k < C; k++)
        for (int i = 0; i < H * W; i++)
            maps[k * H * W + i] = (float)(k * 100 + i) * (k % 2 ? -1.0f : 1.0f) + k;
    /* map 2: constant; map 3: values 0..5 scaled by 1/5, then a NaN */
    for (int i = 0; i < H * W; i++) {
        maps[2 * H * W + i] = 7.0f;
        maps[3 * H * W + i] = i / 5.0f;
    }
    maps[3 * H * W + 1] = NAN;
    cnn_error err = {0};
    TU_STATUS(cnn_png_write_grid(png_path, maps, C, H, W, S, &err), CNN_OK, err);
    int w, h;
    cnn_png_grid_size(C, H, W, S, &w, &h);
    assert_int_equal(w, 3 * W * S + 2);
    assert_int_equal(h, 2 * H * S + 1);
    uint8_t *pix = read_back(w, h);
    /* pixel (y, x) of map k, block (dy, dx) of its scale x scale block */
#define AT(k, y, x, dy, dx)                                                                      \
    pix[((k) / 3 * (H * S + 1) + (y) * S + (dy)) * w + ((k) % 3) * (W * S + 1) + (x) * S + (dx)]
    for (int dy = 0; dy < S; dy++)
        for (int dx = 0; dx < S; dx++) {
            /* map 0: 0..5 increasing -> 0, 51, 102, ..., 255 */
            for (int i = 0; i < H * W; i++)
                assert_int_equal(AT(0, i / W, i % W, dy, dx), 51 * i);
            /* map 1: decreasing, each map on its own range */
            for (int i = 0; i < H * W; i++)
                assert_int_equal(AT(1, i / W, i % W, dy, dx), 255 - 51 * i);
            /* map 2 constant: black */
            for (int i = 0; i < H * W; i++)
                assert_int_equal(AT(2, i / W, i % W, dy, dx), 0);
            /* map 3: NaN is black, the rest spans 0..255 over [0, 1] */
            assert_int_equal(AT(3, 0, 1, dy, dx), 0);
            assert_int_equal(AT(3, 0, 0, dy, dx), 0);
            assert_int_equal(AT(3, 0, 2, dy, dx), 102);
            assert_int_equal(AT(3, 1, 2, dy, dx), 255);
        }
    /* separators: the column after tile 0 and the row under the first row */
    for (int y = 0; y < h; y++)
        assert_int_equal(pix[y * w + W * S], 255);
    for (int x = 0; x < w; x++)
        assert_int_equal(pix[(H * S) * w + x], 255);
    /* the sixth tile (bottom right) is empty: white */
    for (int y = 0; y < H * S; y++)
        for (int x = 0; x < W * S; x++)
            assert_int_equal(pix[(H * S + 1 + y) * w + 2 * (W * S + 1) + x], 255);
#undef AT
    stbi_image_free(pix);
}

/* One map: no separators, the image is the map. */
static void test_single_map(void **state)
{
    (void)state;
    float map[4 * 4];
    for (int i = 0; i < 16; i++)
        map[i] = (i == 5) ? 1.0f : 0.0f; /* one bright pixel */
    cnn_error err = {0};
    TU_STATUS(cnn_png_write_grid(png_path, map, 1, 4, 4, 1, &err), CNN_OK, err);
    uint8_t *pix = read_back(4, 4);
    for (int i = 0; i < 16; i++)
        assert_int_equal(pix[i], i == 5 ? 255 : 0);
    stbi_image_free(pix);
}

static void test_errors(void **state)
{
    (void)state;
    float map[4] = {0, 1, 2, 3};
    cnn_error err = {0};
    TU_STATUS(cnn_png_write_grid("/nonexistent-dir/x.png", map, 1, 2, 2, 1, &err), CNN_ERR_IO,
              err);
    TU_MSG_HAS(err, "/nonexistent-dir/x.png: cannot write PNG: No such file or directory");
    /* a full disk shows when the bytes are flushed */
    TU_STATUS(cnn_png_write_grid("/dev/full", map, 1, 2, 2, 1, &err), CNN_ERR_IO, err);
    TU_MSG_HAS(err, "/dev/full: cannot write PNG: No space left on device");
    TU_STATUS(cnn_png_write_grid(png_path, map, 0, 2, 2, 1, &err), CNN_ERR_ARG, err);
    TU_MSG_HAS(err, "cannot draw 0 maps");
    TU_STATUS(cnn_png_write_grid(png_path, map, 1, 2, 2, 0, &err), CNN_ERR_ARG, err);
    TU_STATUS(cnn_png_write_grid(png_path, map, 1 << 20, 1 << 10, 1 << 10, 1 << 10, &err),
              CNN_ERR_ARG, err);
    TU_MSG_HAS(err, "at most 32768 a side");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grid_shape),
        cmocka_unit_test_setup_teardown(test_write_grid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_single_map, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
