/* test_image.c - one image file into (C, H, W): decoding of each format,
 * channel conversion, bilinear resizing with exact expected values, and
 * errors that name the file. Images are written with stb_image_write. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stb_image_write.h>

#include "cnn/image.h"
#include "testutil.h"
#include "datatest.h"

/* A w x h RGB image (h, w, 3) with distinct values: r = 10x + y, g = 100 +
 * 20y + x, b = 255 - 7x - 3y. */
static void pattern(uint8_t *hwc, int h, int w)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = hwc + 3 * (y * w + x);
            p[0] = (uint8_t)(10 * x + y);
            p[1] = (uint8_t)(100 + 20 * y + x);
            p[2] = (uint8_t)(255 - 7 * x - 3 * y);
        }
}

static void test_png_same_size_is_exact_chw(void **state)
{
    (void)state;
    enum { H = 3, W = 5 };
    uint8_t hwc[H * W * 3], chw[3 * H * W];
    pattern(hwc, H, W);
    assert_true(stbi_write_png(tf_path("p.png"), W, H, 3, hwc, W * 3));
    cnn_error err = {0};
    TU_STATUS(cnn_image_load(tf_path("p.png"), 3, H, W, chw, &err), CNN_OK, err);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                assert_int_equal(chw[(c * H + y) * W + x], hwc[3 * (y * W + x) + c]);
}

static void test_bmp_and_jpeg_decode(void **state)
{
    (void)state;
    enum { H = 4, W = 6 };
    uint8_t hwc[H * W * 3], chw[3 * H * W];
    pattern(hwc, H, W);
    assert_true(stbi_write_bmp(tf_path("p.bmp"), W, H, 3, hwc));
    cnn_error err = {0};
    TU_STATUS(cnn_image_load(tf_path("p.bmp"), 3, H, W, chw, &err), CNN_OK, err);
    for (int i = 0; i < H * W; i++)
        assert_int_equal(chw[i], hwc[3 * i]); /* red plane: BMP is lossless */
    /* JPEG is lossy: a flat colour comes back within a few levels. */
    uint8_t flat[16 * 16 * 3], out[3 * 16 * 16];
    for (int i = 0; i < 16 * 16; i++)
        flat[3 * i] = 200, flat[3 * i + 1] = 40, flat[3 * i + 2] = 90;
    assert_true(stbi_write_jpg(tf_path("f.JPG"), 16, 16, 3, flat, 95));
    TU_STATUS(cnn_image_load(tf_path("f.JPG"), 3, 16, 16, out, &err), CNN_OK, err);
    TU_NEAR(out[0], 200, 4);
    TU_NEAR(out[256 + 77], 40, 4);
    TU_NEAR(out[512 + 255], 90, 4);
}

static void test_gif_first_frame(void **state)
{
    (void)state;
    /* 1x1 GIF, two-colour table (red, black), the pixel is colour 0. */
    static const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0,
                                  255, 0,   0,   0,   0,   0,   0x2c, 0, 0, 0, 0, 1, 0,
                                  1,   0,   0,   2,   2,   0x44, 1,   0, 0x3b};
    tf_write(tf_path("r.gif"), gif, sizeof gif);
    uint8_t out[3 * 2 * 2];
    cnn_error err = {0};
    TU_STATUS(cnn_image_load(tf_path("r.gif"), 3, 2, 2, out, &err), CNN_OK, err);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(out[i], 255);
        assert_int_equal(out[4 + i], 0);
        assert_int_equal(out[8 + i], 0);
    }
}

static void test_channels_conversion(void **state)
{
    (void)state;
    /* RGB -> 1 channel: stb_image's luma (77 R + 150 G + 29 B) >> 8. */
    const uint8_t rgb[2 * 3] = {200, 100, 50, 0, 255, 10};
    assert_true(stbi_write_png(tf_path("c.png"), 2, 1, 3, rgb, 6));
    uint8_t g[2], g3[6];
    cnn_error err = {0};
    TU_STATUS(cnn_image_load(tf_path("c.png"), 1, 1, 2, g, &err), CNN_OK, err);
    assert_int_equal(g[0], (77 * 200 + 150 * 100 + 29 * 50) >> 8);
    assert_int_equal(g[1], (150 * 255 + 29 * 10) >> 8);
    /* grayscale -> 3 channels: replicated; RGBA -> RGB: alpha dropped */
    const uint8_t gray[2] = {17, 240};
    assert_true(stbi_write_png(tf_path("g.png"), 2, 1, 1, gray, 2));
    TU_STATUS(cnn_image_load(tf_path("g.png"), 3, 1, 2, g3, &err), CNN_OK, err);
    const uint8_t want[6] = {17, 240, 17, 240, 17, 240};
    assert_memory_equal(g3, want, 6);
    const uint8_t rgba[8] = {1, 2, 3, 0, 4, 5, 6, 128};
    assert_true(stbi_write_png(tf_path("a.png"), 2, 1, 4, rgba, 8));
    TU_STATUS(cnn_image_load(tf_path("a.png"), 3, 1, 2, g3, &err), CNN_OK, err);
    const uint8_t want_rgba[6] = {1, 4, 2, 5, 3, 6};
    assert_memory_equal(g3, want_rgba, 6);
}

static void test_bilinear_enlarge_exact(void **state)
{
    (void)state;
    /* 2 pixels (0, 200) -> 4: centres at source x = -0.25, 0.25, 0.75, 1.25
     * (clamped at the edges): 0, 50, 150, 200. Rows likewise. */
    const uint8_t src[2 * 2] = {0, 200, 0, 200};
    assert_true(stbi_write_png(tf_path("e.png"), 2, 2, 1, src, 2));
    uint8_t out[4 * 4];
    cnn_error err = {0};
    TU_STATUS(cnn_image_load(tf_path("e.png"), 1, 4, 4, out, &err), CNN_OK, err);
    const uint8_t row[4] = {0, 50, 150, 200};
    for (int y = 0; y < 4; y++)
        assert_memory_equal(out + 4 * y, row, 4);
    /* vertically: 1 row of (0) and 1 of (100) -> 2x3: 0, 50, 100 */
    const uint8_t col[2] = {0, 100};
    assert_true(stbi_write_png(tf_path("v.png"), 1, 2, 1, col, 1));
    uint8_t o3[3];
    TU_STATUS(cnn_image_load(tf_path("v.png"), 1, 3, 1, o3, &err), CNN_OK, err);
    assert_int_equal(o3[0], 0);
    assert_int_equal(o3[1], 50);
    assert_int_equal(o3[2], 100);
}

static void test_shrink_averages(void **state)
{
    (void)state;
    uint8_t src[4 * 4], flat[8 * 6 * 3], out[2 * 2], o3[3 * 3 * 4];
    /* Halving: the triangle widens to 2 source pixels (weights 1/8, 3/8,
     * 3/8, 1/8 around each output centre, the edge pixel repeated), so every
     * pixel of a 4x4 checker of 0/200 counts. Output (0,0): rows give 75,
     * 125, 75 (row -1 = row 0: 75), then (75 + 3*75 + 3*125 + 75)/8 =
     * 93.75 -> 94; output (0,1): (125 + 3*125 + 3*75 + 125)/8 = 106.25 ->
     * 106. Nearest neighbour would give 0 or 200. */
    for (int i = 0; i < 16; i++)
        src[i] = ((i / 4 + i % 4) % 2) ? 200 : 0;
    assert_true(stbi_write_png(tf_path("k.png"), 4, 4, 1, src, 4));
    cnn_error err = {0};
    TU_STATUS(cnn_image_load(tf_path("k.png"), 1, 2, 2, out, &err), CNN_OK, err);
    const uint8_t want[4] = {94, 106, 106, 94};
    assert_memory_equal(out, want, 4);
    /* A flat image stays flat. */
    memset(flat, 77, sizeof flat);
    assert_true(stbi_write_png(tf_path("flat.png"), 8, 6, 3, flat, 24));
    TU_STATUS(cnn_image_load(tf_path("flat.png"), 3, 3, 4, o3, &err), CNN_OK, err);
    for (size_t i = 0; i < sizeof o3; i++)
        assert_int_equal(o3[i], 77);
}

static void test_errors_name_the_file(void **state)
{
    (void)state;
    uint8_t out[3 * 4 * 4], keep[sizeof out];
    memset(out, 9, sizeof out);
    memcpy(keep, out, sizeof out);
    cnn_error err = {0};
    tf_write(tf_path("broken.jpg"), "\xff\xd8\xff\xe0 not really a jpeg", 22);
    TU_STATUS(cnn_image_load(tf_path("broken.jpg"), 3, 4, 4, out, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, tf_path("broken.jpg"));
    TU_MSG_HAS(err, "cannot decode: ");
    assert_memory_equal(out, keep, sizeof out); /* untouched */
    tf_write(tf_path("text.png"), "hello", 5);
    TU_STATUS(cnn_image_load(tf_path("text.png"), 3, 4, 4, out, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "text.png: cannot decode: ");
    /* a PNG cut short */
    uint8_t hwc[8 * 8 * 3];
    pattern(hwc, 8, 8);
    assert_true(stbi_write_png(tf_path("cut.png"), 8, 8, 3, hwc, 24));
    assert_int_equal(truncate(tf_path("cut.png"), 60), 0);
    TU_STATUS(cnn_image_load(tf_path("cut.png"), 3, 8, 8, out, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "cut.png: cannot decode");
    TU_STATUS(cnn_image_load(tf_path("missing.png"), 3, 4, 4, out, &err), CNN_ERR_IO, err);
    TU_MSG_HAS(err, "missing.png: cannot open: No such file");
    TU_STATUS(cnn_image_load(tf_path("p.png"), 2, 4, 4, out, &err), CNN_ERR_ARG, err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_same_size_is_exact_chw),
        cmocka_unit_test(test_bmp_and_jpeg_decode),
        cmocka_unit_test(test_gif_first_frame),
        cmocka_unit_test(test_channels_conversion),
        cmocka_unit_test(test_bilinear_enlarge_exact),
        cmocka_unit_test(test_shrink_averages),
        cmocka_unit_test(test_errors_name_the_file),
    };
    return cmocka_run_group_tests(tests, tf_setup, tf_teardown);
}
