/* test_image.c - one image file into (C, H, W): decoding of each format,
 * channel conversion, bilinear resizing with exact expected values, JPEG's
 * shrinking in the IDCT, CMYK and YCCK JPEGs through stb_image, and errors
 * that name the file. Images are written with stb_image_write, and the
 * progressive and four-component JPEGs with libjpeg. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h> /* before jpeglib.h */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jpeglib.h>
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

/* The resize written from its definition, in double: separable, each
 * output pixel i of a side of n -> m the normalised sum over source pixels
 * j (the edge pixels repeated beyond the border) of tri((c - (j + 0.5)) /
 * r), c = (i + 0.5) * n / m its centre in source pixels, r = max(1, n / m)
 * the triangle's half-width. The weights of output i: wt[i * k + t] for
 * source pixel j0[i] + t (clamped), t < k. */
typedef struct ref_weights {
    int m, k;
    int *j0;    /* (m) */
    double *wt; /* (m, k) */
} ref_weights;

static ref_weights ref_weights_make(int n, int m)
{
    const double r = n > m ? (double)n / m : 1.0;
    ref_weights rw = {m, (int)ceil(2 * r) + 4, malloc((size_t)m * sizeof(int)), NULL};
    rw.wt = calloc((size_t)m * rw.k, sizeof *rw.wt);
    assert_non_null(rw.j0);
    assert_non_null(rw.wt);
    for (int i = 0; i < m; i++) {
        const double c = (i + 0.5) * n / m;
        double *w = rw.wt + (size_t)i * rw.k, wsum = 0;
        rw.j0[i] = (int)floor(c - r) - 1;
        for (int t = 0; t < rw.k; t++) {
            double x = fabs((c - (rw.j0[i] + t + 0.5)) / r);
            w[t] = x < 1 ? 1 - x : 0;
            wsum += w[t];
        }
        for (int t = 0; t < rw.k; t++)
            w[t] /= wsum;
    }
    return rw;
}

/* out (m) with stride ost = in (n) with stride st, resized. */
static void ref_apply(const ref_weights *rw, const double *in, int n, size_t st, double *out,
                      size_t ost)
{
    for (int i = 0; i < rw->m; i++) {
        const double *w = rw->wt + (size_t)i * rw->k;
        double sum = 0;
        for (int t = 0; t < rw->k; t++) {
            int j = rw->j0[i] + t;
            sum += w[t] * in[(size_t)(j < 0 ? 0 : j >= n ? n - 1 : j) * st];
        }
        out[(size_t)i * ost] = sum;
    }
}

/* Resizes a pseudo-random (ih, iw, c) image to (h, w) and checks channel
 * ck's values against the reference within 1 level (stb computes in
 * float); for one size in 7, a flat image must stay exactly flat. tmp and ref: ih * iw and
 * max(ih, h) * w doubles. */
static void check_resize(int ih, int iw, int c, int h, int w, uint8_t *in, uint8_t *out,
                         double *tmp, double *ref)
{
    cnn_error err = {0};
    const size_t n = (size_t)ih * iw * c;
    const int ck = (ih + iw) % c;
    for (size_t k = 0; k < n; k++)
        in[k] = (uint8_t)((k * 2654435761u) >> 24);
    memset(out, 0, (size_t)h * w * c);
    cnn_status st = cnn_image_resize(in, ih, iw, c, out, h, w, &err);
    if (st != CNN_OK)
        fail_msg("%dx%d -> %dx%d: %s", ih, iw, h, w, err.msg);
    ref_weights rx = ref_weights_make(iw, w), ry = ref_weights_make(ih, h);
    for (size_t p = 0; p < (size_t)ih * iw; p++)
        tmp[p] = in[p * c + ck]; /* plane ck, then each row to w */
    for (int y = 0; y < ih; y++)
        ref_apply(&rx, tmp + (size_t)y * iw, iw, 1, ref + (size_t)y * w, 1);
    for (int x = 0; x < w; x++) /* column x of ih rows -> h rows */
        ref_apply(&ry, ref + x, ih, (size_t)w, tmp + x, (size_t)w);
    for (size_t p = 0; p < (size_t)h * w; p++)
        if (fabs(out[p * c + ck] - tmp[p]) > 1.0)
            fail_msg("%dx%d -> %dx%d: pixel %zu channel %d is %d, expected %.2f", ih, iw, h, w,
                     p, ck, out[p * c + ck], tmp[p]);
    free(rx.j0);
    free(rx.wt);
    free(ry.j0);
    free(ry.wt);
    if ((ih + iw) % 7)
        return;
    memset(in, 201, n);
    TU_STATUS(cnn_image_resize(in, ih, iw, c, out, h, w, &err), CNN_OK, err);
    for (size_t p = 0; p < (size_t)h * w * c; p++)
        if (out[p] != 201)
            fail_msg("%dx%d -> %dx%d: a flat 201 gives %d at %zu", ih, iw, h, w, out[p], p);
}

/* Every source size 1..600 along one side (the other 45), and every size
 * up to 24 x 24, to each input size of the shipped configs and examples.
 * Debian's stb_image_resize aborted (assertion total < 1.1f) for about 160
 * of them, e.g. 28 x 36 -> 28 x 28 and 300 x 45 -> 224 x 224. */
static void test_resize_sweep(void **state)
{
    (void)state;
    static const int targets[][2] = {{28, 28}, {32, 32}, {7, 7}, {224, 224}, {150, 150}, {64, 64}};
    enum { MAXS = 600, FIXED = 45, C = 3, BIG = MAXS > 224 ? MAXS : 224 };
    uint8_t *in = malloc((size_t)MAXS * FIXED * C), *out = malloc((size_t)224 * 224 * C);
    double *tmp = malloc((size_t)BIG * BIG * sizeof *tmp), *ref = malloc((size_t)BIG * BIG * sizeof *ref);
    assert_non_null(in);
    assert_non_null(out);
    assert_non_null(tmp);
    assert_non_null(ref);
    for (size_t t = 0; t < sizeof targets / sizeof *targets; t++) {
        const int h = targets[t][0], w = targets[t][1];
        for (int s = 1; s <= MAXS; s++) {
            check_resize(FIXED, s, C, h, w, in, out, tmp, ref);
            check_resize(s, FIXED, 1, h, w, in, out, tmp, ref);
        }
        for (int ih = 1; ih <= 24; ih++)
            for (int iw = 1; iw <= 24; iw++)
                check_resize(ih, iw, 1, h, w, in, out, tmp, ref);
    }
    cnn_error err = {0};
    TU_STATUS(cnn_image_resize(in, 0, 5, 1, out, 28, 28, &err), CNN_ERR_ARG, err);
    TU_STATUS(cnn_image_resize(in, 5, 5, 1, out, 28, 0, &err), CNN_ERR_ARG, err);
    free(in);
    free(out);
    free(tmp);
    free(ref);
}

/* A PNM header may say 0 x 5 pixels (stb_image accepts it): refused,
 * naming the file, not passed on to the resize. */
static void test_zero_size_pnm_refused(void **state)
{
    (void)state;
    uint8_t out[28 * 28];
    cnn_error err = {0};
    tf_write(tf_path("w0.pgm"), "P5\n0 5\n255\n", 11);
    TU_STATUS(cnn_image_load(tf_path("w0.pgm"), 1, 28, 28, out, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, tf_path("w0.pgm"));
    TU_MSG_HAS(err, "0x");
    tf_write(tf_path("h0.ppm"), "P6\n4 0\n255\n", 11);
    TU_STATUS(cnn_image_load(tf_path("h0.ppm"), 1, 28, 28, out, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, tf_path("h0.ppm"));
}

/* A JPEG at least twice the size asked for is shrunk by libjpeg's IDCT
 * (1/2, 1/4 or 1/8) before the resize. The result stays close to the
 * image's own resize at full size: a smooth 224 x 224 RGB gradient (the
 * benchmarks' size) loaded at 64 x 64 (IDCT 1/2, then 112 -> 64) and at
 * 20 x 28 (1/8: 28 x 28 -> 20 x 28) against the PNG of the same pixels,
 * within a few levels, and on average within one. */
static void test_jpeg_shrinks_in_the_idct(void **state)
{
    (void)state;
    enum { S = 224 };
    uint8_t *hwc = malloc((size_t)S * S * 3);
    assert_non_null(hwc);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            uint8_t *p = hwc + 3 * ((size_t)y * S + x);
            p[0] = (uint8_t)(x + 16);
            p[1] = (uint8_t)(y + 16);
            p[2] = (uint8_t)(128 + 60 * sin(x / 30.0) * cos(y / 40.0));
        }
    assert_true(stbi_write_jpg(tf_path("g.jpg"), S, S, 3, hwc, 100));
    assert_true(stbi_write_png(tf_path("g.png"), S, S, 3, hwc, S * 3));
    static const int sizes[][2] = {{64, 64}, {20, 28}, {224, 224}};
    uint8_t *a = malloc(3 * 64 * 64), *b = malloc(3 * S * S);
    assert_non_null(a);
    assert_non_null(b);
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        const int h = sizes[k][0], w = sizes[k][1];
        cnn_error err = {0};
        uint8_t *ja = h == S ? b : a, *pb = h == S ? a : b;
        if (h == S) { /* full size: no resize at all, only JPEG's loss */
            pb = hwc;
            TU_STATUS(cnn_image_load(tf_path("g.jpg"), 3, h, w, ja, &err), CNN_OK, err);
        } else {
            TU_STATUS(cnn_image_load(tf_path("g.jpg"), 3, h, w, ja, &err), CNN_OK, err);
            TU_STATUS(cnn_image_load(tf_path("g.png"), 3, h, w, pb, &err), CNN_OK, err);
        }
        double sum = 0;
        int worst = 0;
        const size_t n = (size_t)3 * h * w;
        for (size_t i = 0; i < n; i++) {
            /* pb is (c, h, w) from the PNG, or (h, w, c) at full size */
            const size_t c = i / ((size_t)h * w), p = i % ((size_t)h * w);
            const int want = h == S ? pb[3 * p + c] : pb[i];
            const int d = abs((int)ja[i] - want);
            sum += d;
            worst = d > worst ? d : worst;
        }
        if (sum / (double)n > 1.0 || worst > 6)
            fail_msg("%dx%d: mean difference %.2f, worst %d levels", h, w, sum / (double)n, worst);
    }
    /* one channel: libjpeg's luma, Y = 0.299 R + 0.587 G + 0.114 B */
    uint8_t g[64 * 64];
    cnn_error err = {0};
    TU_STATUS(cnn_image_load(tf_path("g.png"), 1, 64, 64, g, &err), CNN_OK, err);
    TU_STATUS(cnn_image_load(tf_path("g.jpg"), 1, 64, 64, a, &err), CNN_OK, err);
    for (size_t i = 0; i < sizeof g; i++)
        TU_NEAR(a[i], g[i], 4);
    free(a);
    free(b);
    free(hwc);
}

/* A JPEG cut short would decode with its missing part grey (libjpeg's
 * warning): refused instead, naming the file, the output untouched. */
static void test_jpeg_cut_short_refused(void **state)
{
    (void)state;
    uint8_t hwc[32 * 32 * 3], out[3 * 32 * 32], keep[sizeof out];
    pattern(hwc, 32, 32);
    assert_true(stbi_write_jpg(tf_path("cut.jpg"), 32, 32, 3, hwc, 90));
    cnn_error err = {0};
    TU_STATUS(cnn_image_load(tf_path("cut.jpg"), 3, 32, 32, out, &err), CNN_OK, err);
    struct stat sb;
    assert_int_equal(stat(tf_path("cut.jpg"), &sb), 0);
    assert_true(sb.st_size > 800); /* the scan's last 200 bytes go: past the tables */
    assert_int_equal(truncate(tf_path("cut.jpg"), sb.st_size - 200), 0);
    memset(out, 9, sizeof out);
    memcpy(keep, out, sizeof out);
    TU_STATUS(cnn_image_load(tf_path("cut.jpg"), 3, 32, 32, out, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "cut.jpg: cannot decode: ");
    assert_memory_equal(out, keep, sizeof out);
}

/* Padding bytes between two markers (libjpeg's warning "extraneous bytes
 * before marker", met in photo collections) leave the pixels whole: the
 * file decodes as it does without them. Two zeros before the first DQT. */
static void test_jpeg_padding_accepted(void **state)
{
    (void)state;
    uint8_t hwc[32 * 32 * 3], a[3 * 32 * 32], b[3 * 32 * 32];
    pattern(hwc, 32, 32);
    assert_true(stbi_write_jpg(tf_path("pad0.jpg"), 32, 32, 3, hwc, 90));
    FILE *f = fopen(tf_path("pad0.jpg"), "rb");
    assert_non_null(f);
    static uint8_t buf[65536];
    const size_t n = fread(buf, 1, sizeof buf - 2, f);
    fclose(f);
    size_t at = 2;
    while (at + 1 < n && !(buf[at] == 0xff && buf[at + 1] == 0xdb))
        at++;
    assert_true(at + 1 < n);
    memmove(buf + at + 2, buf + at, n - at);
    buf[at] = buf[at + 1] = 0;
    tf_write(tf_path("pad2.jpg"), buf, n + 2);
    cnn_error err = {0};
    TU_STATUS(cnn_image_load(tf_path("pad0.jpg"), 3, 32, 32, a, &err), CNN_OK, err);
    TU_STATUS(cnn_image_load(tf_path("pad2.jpg"), 3, 32, 32, b, &err), CNN_OK, err);
    assert_memory_equal(a, b, sizeof a);
}

/* Writes the 16 x 16 image px of comps components in color space in with
 * libjpeg: defaults, then setup(c, arg) before compressing. Returns the
 * number of scans setup asked for (0: libjpeg's own). */
static int write_libjpeg(const char *path, const uint8_t *px, int comps, J_COLOR_SPACE in,
                          void (*setup)(struct jpeg_compress_struct *, void *), void *arg)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    jpeg_stdio_dest(&c, f);
    c.image_width = 16;
    c.image_height = 16;
    c.input_components = comps;
    c.in_color_space = in;
    jpeg_set_defaults(&c);
    setup(&c, arg);
    jpeg_start_compress(&c, TRUE);
    for (int y = 0; y < 16; y++) {
        JSAMPROW row = (JSAMPROW)px + 16 * comps * y;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    const int scans = c.num_scans;
    jpeg_destroy_compress(&c);
    fclose(f);
    return scans;
}

/* The scans of a progressive JPEG: 2 + 3 x 63 x r of them, the DC of all
 * components in 2, then each AC coefficient of each component on its own,
 * first scan at Al = r - 1, then r - 1 refinements. */
static void progressive_scans(struct jpeg_compress_struct *c, void *arg)
{
    static jpeg_scan_info scans[2 + 3 * 63 * 3];
    const int r = *(int *)arg;
    int k = 0;
    scans[k++] = (jpeg_scan_info){3, {0, 1, 2, 0}, 0, 0, 0, 1};
    scans[k++] = (jpeg_scan_info){3, {0, 1, 2, 0}, 0, 0, 1, 0};
    for (int comp = 0; comp < 3; comp++)
        for (int coef = 1; coef < 64; coef++)
            for (int al = r - 1; al >= 0; al--)
                scans[k++] = (jpeg_scan_info){1, {comp, 0, 0, 0}, coef, coef,
                                              al == r - 1 ? 0 : al + 1, al};
    c->scan_info = scans;
    c->num_scans = k;
}

/* A progressive 16 x 16 RGB JPEG of the pattern written by libjpeg
 * (progressive_scans); returns its number of scans. */
static int write_progressive(const char *path, int r)
{
    uint8_t px[16 * 16 * 3];
    pattern(px, 16, 16);
    return write_libjpeg(path, px, 3, JCS_RGB, progressive_scans, &r);
}

/* Up to 500 progressive scans decode; more are refused, naming the file. */
static void test_jpeg_scan_limit(void **state)
{
    (void)state;
    uint8_t out[3 * 16 * 16];
    cnn_error err = {0};
    assert_int_equal(write_progressive(tf_path("s380.jpg"), 2), 380);
    TU_STATUS(cnn_image_load(tf_path("s380.jpg"), 3, 16, 16, out, &err), CNN_OK, err);
    TU_NEAR(out[0], 0, 12); /* the pattern's red at (0, 0) */
    assert_int_equal(write_progressive(tf_path("s569.jpg"), 3), 569);
    TU_STATUS(cnn_image_load(tf_path("s569.jpg"), 3, 16, 16, out, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "s569.jpg: cannot decode: more than 500 progressive scans");
}

/* Stored as *arg (CMYK or YCCK: libjpeg's Adobe marker says which), no
 * chroma subsampling, quality 95. */
static void cmyk_stored(struct jpeg_compress_struct *c, void *arg)
{
    jpeg_set_colorspace(c, *(J_COLOR_SPACE *)arg);
    for (int k = 0; k < c->num_components; k++)
        c->comp_info[k].h_samp_factor = c->comp_info[k].v_samp_factor = 1;
    jpeg_set_quality(c, 95, TRUE);
}

/* A 16 x 16 four-component JPEG written by libjpeg, as Adobe's inverted
 * CMYK (255 = no ink) with no black: the pattern's r, g, b as C, M, Y and
 * K = 255, stored as stored. */
static void write_cmyk(const char *path, J_COLOR_SPACE stored)
{
    uint8_t rgb[16 * 16 * 3], px[16 * 16 * 4];
    pattern(rgb, 16, 16);
    for (int k = 0; k < 16 * 16; k++) {
        memcpy(px + 4 * k, rgb + 3 * k, 3);
        px[4 * k + 3] = 255;
    }
    (void)write_libjpeg(path, px, 4, JCS_CMYK, cmyk_stored, &stored);
}

/* CMYK and YCCK JPEGs, which libjpeg cannot turn into RGB, decode through
 * stb_image: the pattern comes back as RGB, and its first pixel's luma as
 * gray. */
static void test_jpeg_cmyk_and_ycck(void **state)
{
    (void)state;
    static const J_COLOR_SPACE stored[2] = {JCS_CMYK, JCS_YCCK};
    static const char *const names[2] = {"cmyk.jpg", "ycck.jpg"};
    uint8_t rgb[16 * 16 * 3];
    pattern(rgb, 16, 16);
    for (int v = 0; v < 2; v++) {
        write_cmyk(tf_path(names[v]), stored[v]);
        uint8_t out[3 * 16 * 16], gray[16 * 16];
        cnn_error err = {0};
        TU_STATUS(cnn_image_load(tf_path(names[v]), 3, 16, 16, out, &err), CNN_OK, err);
        double worst = 0;
        for (int ch = 0; ch < 3; ch++)
            for (int k = 0; k < 16 * 16; k++)
                worst = fmax(worst, fabs((double)out[ch * 256 + k] - rgb[3 * k + ch]));
        if (worst > 12)
            fail_msg("%s: a value %.0f levels from the pattern", names[v], worst);
        TU_STATUS(cnn_image_load(tf_path(names[v]), 1, 16, 16, gray, &err), CNN_OK, err);
        TU_NEAR(gray[0], (rgb[0] * 77 + rgb[1] * 150 + rgb[2] * 29) >> 8, 12);
    }
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
        cmocka_unit_test(test_jpeg_shrinks_in_the_idct),
        cmocka_unit_test(test_jpeg_cut_short_refused),
        cmocka_unit_test(test_jpeg_padding_accepted),
        cmocka_unit_test(test_jpeg_scan_limit),
        cmocka_unit_test(test_jpeg_cmyk_and_ycck),
        cmocka_unit_test(test_errors_name_the_file),
        cmocka_unit_test(test_resize_sweep),
        cmocka_unit_test(test_zero_size_pnm_refused),
    };
    return cmocka_run_group_tests(tests, tf_setup, tf_teardown);
}
