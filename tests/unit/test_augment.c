/* test_augment.c - image augmentation: each transform alone moves known
 * pixels to known places; draws are pure functions of (seed, epoch,
 * sample) and stay within their ranges; [augment] errors name file:line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/augment.h"
#include "testutil.h"

/* Parameters of the identity: no turn, shift, shear or zoom. */
static cnn_augment_params identity(void)
{
    return (cnn_augment_params){.zx = 1, .zy = 1};
}

static void apply(const cnn_augment_params *p, const float *in, float *out, int C, int H, int W)
{
    cnn_augment_apply_params(p, CNN_FILL_CONSTANT, -1.0f, in, out, C, H, W);
}

/* Fails showing the first pixel (c, y, x) where got and want differ by
 * more than tol. */
static void assert_image_near(const float *got, const float *want, int C, int H, int W,
                              float tol)
{
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                size_t i = ((size_t)c * H + y) * W + x;
                if (!(fabsf(got[i] - want[i]) <= tol))
                    fail_msg("pixel (c=%d, y=%d, x=%d) is %g, expected %g", c, y, x, got[i],
                             want[i]);
            }
}

/* ---- one transform at a time ------------------------------------------ */

static void test_identity_is_exact(void **state)
{
    (void)state;
    float in[2 * 5 * 7], out[2 * 5 * 7];
    tu_fill(in, 70, 1, -3, 3);
    cnn_augment_params p = identity();
    apply(&p, in, out, 2, 5, 7);
    assert_memory_equal(out, in, sizeof in);

    /* a config that reads no section: disabled, and a copy */
    cnn_config *cfg;
    cnn_error err = {0};
    cnn_augment_config a;
    TU_STATUS(cnn_config_parse_string(&cfg, "[train]\nepochs = 1\n", "t.ini", &err), CNN_OK, err);
    TU_STATUS(cnn_augment_config_read(&a, cfg, &err), CNN_OK, err);
    assert_false(a.enabled);
    memset(out, 0, sizeof out);
    cnn_augment_image(&a, 42, 3, 17, in, out, 2, 5, 7);
    assert_memory_equal(out, in, sizeof in);
    cnn_config_free(cfg);
}

static void test_flips(void **state)
{
    (void)state;
    enum { H = 3, W = 4 };
    float ramp[H * W], out[H * W];
    for (int i = 0; i < H * W; i++)
        ramp[i] = (float)i; /* value = 4y + x */
    cnn_augment_params p = identity();
    p.hflip = 1;
    apply(&p, ramp, out, 1, H, W);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            assert_true(out[y * W + x] == ramp[y * W + (W - 1 - x)]);
    p.hflip = 0;
    p.vflip = 1;
    apply(&p, ramp, out, 1, H, W);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            assert_true(out[y * W + x] == ramp[(H - 1 - y) * W + x]);
    /* both: a half turn */
    p.hflip = 1;
    apply(&p, ramp, out, 1, H, W);
    for (int i = 0; i < H * W; i++)
        assert_true(out[i] == ramp[H * W - 1 - i]);
}

/* A bright dot at (y=2, x=3) on a 7x7 black image. */
enum { DH = 7, DW = 7 };

static void dot_image(float *img, int y, int x)
{
    memset(img, 0, DH * DW * sizeof *img);
    img[y * DW + x] = 1.0f;
}

/* The 7x7 ramp 10 y + x: bilinear sampling reproduces it exactly. */
static void ramp_image(float *img)
{
    for (int y = 0; y < DH; y++)
        for (int x = 0; x < DW; x++)
            img[y * DW + x] = (float)(10 * y + x);
}

/* p takes the dot at (2, 3) to exactly (y, x), on black. */
static void assert_dot_goes_to(const cnn_augment_params *p, int y, int x)
{
    float in[DH * DW], out[DH * DW], want[DH * DW];
    dot_image(in, 2, 3);
    cnn_augment_apply_params(p, CNN_FILL_CONSTANT, 0, in, out, 1, DH, DW);
    dot_image(want, y, x);
    assert_memory_equal(out, want, sizeof out);
}

static void test_shift_moves_dot(void **state)
{
    (void)state;
    cnn_augment_params p = identity();
    p.tx = 1; /* right */
    assert_dot_goes_to(&p, 2, 4);
    p.tx = 0;
    p.ty = -2; /* up */
    assert_dot_goes_to(&p, 0, 3);
    /* half a pixel: bilinear splits the dot between two pixels */
    float in[DH * DW], out[DH * DW], want[DH * DW] = {0};
    dot_image(in, 2, 3);
    p.ty = 0;
    p.tx = 0.5f;
    cnn_augment_apply_params(&p, CNN_FILL_CONSTANT, 0, in, out, 1, DH, DW);
    want[2 * DW + 3] = want[2 * DW + 4] = 0.5f;
    assert_image_near(out, want, 1, DH, DW, 1e-6f);
}

static void test_rotation_90(void **state)
{
    (void)state;
    /* asymmetric 3x3 pattern (an "L" plus a corner mark) */
    const float in[9] = {1, 0, 5,
                         2, 0, 0,
                         3, 4, 0};
    /* counter-clockwise by 90: the right column becomes the top row */
    const float ccw[9] = {5, 0, 0,
                          0, 0, 4,
                          1, 2, 3};
    float out[9];
    cnn_augment_params p = identity();
    p.theta = 90;
    apply(&p, in, out, 1, 3, 3);
    assert_memory_equal(out, ccw, sizeof out); /* whole pixels: exact */
    /* -90 turns it back; 180 equals both flips */
    float back[9];
    p.theta = -90;
    apply(&p, ccw, back, 1, 3, 3);
    assert_memory_equal(back, in, sizeof in);
    p.theta = 180;
    apply(&p, in, out, 1, 3, 3);
    for (int i = 0; i < 9; i++)
        assert_true(out[i] == in[8 - i]);
    /* turn and shift together: the shift moves the turned content along
     * the image's own axes. A dot above the centre of a 7x7 image goes to
     * its left (3, 2) when turned, then one pixel right or down. */
    p.theta = 90;
    p.tx = 1;
    assert_dot_goes_to(&p, 3, 3);
    p.tx = 0;
    p.ty = 1;
    assert_dot_goes_to(&p, 4, 2);
    p.ty = 0;
    /* on a 4x4 image the centre (1.5, 1.5) falls between pixels */
    float in4[16], out4[16];
    for (int i = 0; i < 16; i++)
        in4[i] = (float)i;
    p.theta = 90;
    apply(&p, in4, out4, 1, 4, 4);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            assert_true(out4[y * 4 + x] == in4[x * 4 + (3 - y)]);
}

static void test_zoom_2x_maps_centre(void **state)
{
    (void)state;
    /* zx = zy = 0.5 enlarges 2x about the centre (3, 3) of a 7x7 ramp:
     * output (y, x) reads input (3 + (y-3)/2, 3 + (x-3)/2). */
    float in[DH * DW], out[DH * DW];
    ramp_image(in);
    cnn_augment_params p = identity();
    p.zx = p.zy = 0.5f;
    apply(&p, in, out, 1, DH, DW);
    for (int y = 0; y < DH; y++)
        for (int x = 0; x < DW; x++) {
            /* a linear ramp is reproduced exactly by bilinear sampling */
            float want = 10 * (3 + 0.5f * (y - 3)) + (3 + 0.5f * (x - 3));
            TU_NEAR(out[y * DW + x], want, 1e-5);
        }
    assert_true(out[3 * DW + 3] == in[3 * DW + 3]); /* the centre stays */
    assert_true(out[1 * DW + 5] == in[2 * DW + 4]); /* even offsets hit pixels */
    /* zx = 2 shrinks: the corner of the output reads beyond the input */
    p.zx = p.zy = 2;
    apply(&p, in, out, 1, DH, DW);
    assert_true(out[0] == -1.0f); /* cval */
    assert_true(out[3 * DW + 3] == in[3 * DW + 3]);
    assert_true(out[2 * DW + 2] == in[1 * DW + 1]);
}

static void test_shear(void **state)
{
    (void)state;
    /* shear s: output (x, y) reads input x = cx + (x-cx) - sin(s) (y-cy),
     * y = cy + cos(s) (y-cy). At 30 degrees, sin = 1/2: row cy+2 reads one
     * pixel to the left, row cy-2 one to the right; y is scaled by cos. */
    float in[DH * DW], out[DH * DW];
    ramp_image(in);
    cnn_augment_params p = identity();
    p.shear = 30;
    apply(&p, in, out, 1, DH, DW);
    const double c30 = cos(M_PI / 6);
    for (int y = 0; y < DH; y++)
        for (int x = 1; x < DW - 1; x++) { /* columns that stay inside */
            double sx = x - 0.5 * (y - 3), sy = 3 + c30 * (y - 3);
            if (sx < 0 || sx > DW - 1)
                continue;
            TU_NEAR(out[y * DW + x], 10 * sy + sx, 1e-4);
        }
}

static void test_fill_modes(void **state)
{
    (void)state;
    /* shift a 1x4 row right by 2: two pixels come from outside */
    const float in[4] = {1, 2, 3, 4};
    float out[4];
    cnn_augment_params p = identity();
    p.tx = 2;
    cnn_augment_apply_params(&p, CNN_FILL_CONSTANT, 9, in, out, 1, 1, 4);
    const float constant[4] = {9, 9, 1, 2};
    assert_memory_equal(out, constant, sizeof out);
    cnn_augment_apply_params(&p, CNN_FILL_NEAREST, 9, in, out, 1, 1, 4);
    const float nearest[4] = {1, 1, 1, 2};
    assert_memory_equal(out, nearest, sizeof out);
    /* half a pixel past the edge blends with cval, or repeats the edge */
    p.tx = -0.5f;
    cnn_augment_apply_params(&p, CNN_FILL_CONSTANT, 0, in, out, 1, 1, 4);
    TU_NEAR(out[3], 2.0, 1e-6); /* (4 + 0) / 2 */
    cnn_augment_apply_params(&p, CNN_FILL_NEAREST, 0, in, out, 1, 1, 4);
    TU_NEAR(out[3], 4.0, 1e-6);
    /* far outside (a big shift) is fill everywhere, without overflowing */
    p.tx = 1e9f;
    cnn_augment_apply_params(&p, CNN_FILL_CONSTANT, 7, in, out, 1, 1, 4);
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == 7.0f);
    cnn_augment_apply_params(&p, CNN_FILL_NEAREST, 7, in, out, 1, 1, 4);
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == 1.0f);
}

static void test_channels_share_transform(void **state)
{
    (void)state;
    enum { C = 3, H = 5, W = 6 };
    float in[C * H * W], out[C * H * W], one_in[H * W], one_out[H * W];
    tu_fill(in, C * H * W, 4, 0, 1);
    cnn_augment_params p = {.theta = 17, .tx = 0.7f, .ty = -1.2f, .shear = 8, .zx = 0.9f,
                            .zy = 1.1f, .hflip = 1};
    apply(&p, in, out, C, H, W);
    for (int c = 0; c < C; c++) {
        memcpy(one_in, in + c * H * W, sizeof one_in);
        apply(&p, one_in, one_out, 1, H, W);
        assert_memory_equal(one_out, out + c * H * W, sizeof one_out);
    }
}

/* ---- draws: determinism and ranges ------------------------------------- */

static cnn_config *parse(const char *text)
{
    cnn_config *cfg;
    cnn_error err = {0};
    if (cnn_config_parse_string(&cfg, text, "aug.ini", &err) != CNN_OK)
        fail_msg("parse: %s", err.msg);
    return cfg;
}

static cnn_augment_config read_ok(const char *text)
{
    cnn_config *cfg = parse(text);
    cnn_error err = {0};
    cnn_augment_config a;
    TU_STATUS(cnn_augment_config_read(&a, cfg, &err), CNN_OK, err);
    TU_STATUS(cnn_config_check_unused(cfg, &err), CNN_OK, err);
    cnn_config_free(cfg);
    return a;
}

#define FULL_AUGMENT                                                                              \
    "[augment]\nrotation_range = 20\nwidth_shift_range = 0.25\nheight_shift_range = 3\n"         \
    "shear_range = 10\nzoom_range = 0.2\nhorizontal_flip = true\nvertical_flip = yes\n"

static void test_config_values(void **state)
{
    (void)state;
    cnn_augment_config a = read_ok(FULL_AUGMENT "fill_mode = constant\ncval = 1/2\n");
    assert_true(a.enabled);
    assert_true(a.horizontal_flip && a.vertical_flip);
    TU_NEAR(a.rotation_range, 20, 0);
    TU_NEAR(a.width_shift_range, 0.25, 0);
    TU_NEAR(a.height_shift_range, 3, 0);
    TU_NEAR(a.shear_range, 10, 0);
    TU_NEAR(a.zoom_range, 0.2, 0);
    assert_int_equal(a.fill_mode, CNN_FILL_CONSTANT);
    TU_NEAR(a.cval, 0.5, 0);
    /* defaults: Keras's (nearest fill, nothing on) */
    a = read_ok("[augment]\n");
    assert_false(a.enabled);
    assert_int_equal(a.fill_mode, CNN_FILL_NEAREST);
    a = read_ok("[augment]\nzoom_range = 0.1\n");
    assert_true(a.enabled);
}

static void test_draw_deterministic(void **state)
{
    (void)state;
    cnn_augment_config a = read_ok(FULL_AUGMENT);
    cnn_augment_params p1, p2;
    cnn_augment_draw(&a, 42, 3, 1234, 28, 28, &p1);
    cnn_augment_draw(&a, 42, 3, 1234, 28, 28, &p2);
    assert_memory_equal(&p1, &p2, sizeof p1);
    /* another sample, epoch or seed: other draws (all six continuous ones) */
    const uint64_t other[3][3] = {{42, 3, 1235}, {42, 4, 1234}, {43, 3, 1234}};
    for (int k = 0; k < 3; k++) {
        cnn_augment_draw(&a, other[k][0], other[k][1], (int64_t)other[k][2], 28, 28, &p2);
        assert_true(p1.theta != p2.theta && p1.tx != p2.tx && p1.ty != p2.ty);
        assert_true(p1.shear != p2.shear && p1.zx != p2.zx && p1.zy != p2.zy);
    }
    /* images: identical for the same key, whatever the buffers held */
    float in[3 * 8 * 8], o1[3 * 8 * 8], o2[3 * 8 * 8];
    tu_fill(in, sizeof in / sizeof *in, 2, 0, 1);
    tu_fill(o2, sizeof o2 / sizeof *o2, 3, 0, 1);
    cnn_augment_image(&a, 42, 3, 99, in, o1, 3, 8, 8);
    cnn_augment_image(&a, 42, 3, 99, in, o2, 3, 8, 8);
    assert_memory_equal(o1, o2, sizeof o1);
    cnn_augment_image(&a, 42, 3, 100, in, o2, 3, 8, 8);
    assert_true(memcmp(o1, o2, sizeof o1) != 0);
    /* one setting changed leaves the other draws alone */
    cnn_augment_config b = a;
    b.rotation_range = 0;
    cnn_augment_draw(&b, 42, 3, 1234, 28, 28, &p2);
    assert_true(p2.theta == 0);
    assert_true(p1.tx == p2.tx && p1.zy == p2.zy && p1.hflip == p2.hflip);
}

static void test_draw_ranges(void **state)
{
    (void)state;
    cnn_augment_config a = read_ok(FULL_AUGMENT);
    const int H = 20, W = 32, N = 20000;
    const double wr = 0.25 * W, hr = 3; /* a fraction of W; pixels */
    double lo[6] = {1e9, 1e9, 1e9, 1e9, 1e9, 1e9}, hi[6] = {-1e9, -1e9, -1e9, -1e9, -1e9, -1e9};
    int hflips = 0, vflips = 0;
    for (int i = 0; i < N; i++) {
        cnn_augment_params p;
        cnn_augment_draw(&a, 7, (uint64_t)(i % 5), i, H, W, &p);
        const double v[6] = {p.theta, p.tx, p.ty, p.shear, p.zx, p.zy};
        for (int k = 0; k < 6; k++) {
            lo[k] = fmin(lo[k], v[k]);
            hi[k] = fmax(hi[k], v[k]);
        }
        hflips += p.hflip;
        vflips += p.vflip;
    }
    /* within [-r, r], and 20000 draws come within 0.1% of both ends */
    const double r[6] = {20, wr, hr, 10, 0.2, 0.2}, mid[6] = {0, 0, 0, 0, 1, 1};
    for (int k = 0; k < 6; k++) {
        if (lo[k] < mid[k] - r[k] || hi[k] > mid[k] + r[k])
            fail_msg("draw %d spans [%g, %g], outside %g +- %g", k, lo[k], hi[k], mid[k], r[k]);
        if (lo[k] > mid[k] - 0.999 * r[k] || hi[k] < mid[k] + 0.999 * r[k])
            fail_msg("draw %d spans only [%g, %g] of %g +- %g", k, lo[k], hi[k], mid[k], r[k]);
    }
    /* each flip with probability 1/2 (sd of the count: 71) */
    assert_in_range(hflips, N / 2 - 400, N / 2 + 400);
    assert_in_range(vflips, N / 2 - 400, N / 2 + 400);
    /* flips off: never */
    a.horizontal_flip = a.vertical_flip = 0;
    for (int i = 0; i < 1000; i++) {
        cnn_augment_params p;
        cnn_augment_draw(&a, 7, 0, i, H, W, &p);
        assert_false(p.hflip || p.vflip);
    }
}

/* ---- random crop ------------------------------------------------------- */

/* crop_padding P: an integer shift in [-P, P] per axis, every value drawn,
 * zeros moving in, the other draws untouched; crop only is a pure shift. */
static void test_crop_padding(void **state)
{
    (void)state;
    cnn_augment_config a = read_ok("[augment]\ncrop_padding = 2\n");
    assert_true(a.enabled);
    assert_int_equal(a.crop_padding, 2);
    int seen[2][5] = {{0}};
    const int C = 2, H = 5, W = 7;
    float in[2 * 5 * 7], out[2 * 5 * 7];
    for (int k = 0; k < C * H * W; k++)
        in[k] = (float)(k + 1);
    for (int i = 0; i < 500; i++) {
        cnn_augment_params p;
        cnn_augment_draw(&a, 11, 2, i, H, W, &p);
        assert_in_range(p.crop_x + 2, 0, 4);
        assert_in_range(p.crop_y + 2, 0, 4);
        seen[0][p.crop_x + 2]++;
        seen[1][p.crop_y + 2]++;
        cnn_augment_image(&a, 11, 2, i, in, out, C, H, W);
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    int sy = y - p.crop_y, sx = x - p.crop_x;
                    float want = sy >= 0 && sy < H && sx >= 0 && sx < W
                                     ? in[(c * H + sy) * W + sx]
                                     : 0.0f;
                    assert_true(out[(c * H + y) * W + x] == want);
                }
    }
    for (int v = 0; v < 5; v++)
        assert_true(seen[0][v] > 50 && seen[1][v] > 50); /* 100 expected each */
    /* adding a crop leaves the affine draws as they were */
    cnn_augment_config f = read_ok(FULL_AUGMENT), g = read_ok(FULL_AUGMENT "crop_padding = 4\n");
    cnn_augment_params pf, pg;
    cnn_augment_draw(&f, 42, 3, 1234, 28, 28, &pf);
    cnn_augment_draw(&g, 42, 3, 1234, 28, 28, &pg);
    assert_int_equal(pf.crop_x, 0);
    pg.crop_x = pg.crop_y = 0;
    assert_memory_equal(&pf, &pg, sizeof pf);
    /* a shift as large as the image leaves zeros */
    cnn_augment_crop_shift(out, C, H, W, W, 0);
    for (int k = 0; k < C * H * W; k++)
        assert_true(out[k] == 0.0f);
}

/* ---- config errors ------------------------------------------------------ */

static void expect_config_error(const char *text, const char *needle1, const char *needle2)
{
    cnn_config *cfg = parse(text);
    cnn_error err = {0};
    cnn_augment_config a;
    cnn_status st = cnn_augment_config_read(&a, cfg, &err);
    if (st == CNN_OK)
        st = cnn_config_check_unused(cfg, &err);
    cnn_config_free(cfg);
    TU_STATUS(st, CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, needle1);
    TU_MSG_HAS(err, needle2);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_config_error("[train]\nepochs = 1\n[augment]\nrotation_range = -5\n",
                        "aug.ini:4: [augment] rotation_range", "out of range");
    expect_config_error("[augment]\nhorizontal_flip = 1\nwidth_shift_range = -0.1\n",
                        "aug.ini:3: [augment] width_shift_range", "out of range");
    expect_config_error("[augment]\nzoom_range = 1.5\n", "aug.ini:2: [augment] zoom_range",
                        "out of range");
    expect_config_error("[augment]\nshear_range = abc\n", "aug.ini:2: [augment] shear_range",
                        "not a number");
    expect_config_error("[augment]\n\nfill_mode = reflect\n", "aug.ini:3: [augment] fill_mode",
                        "'reflect' is not one of: nearest, constant");
    expect_config_error("[augment]\nvertical_flip = maybe\n", "aug.ini:2: [augment] vertical_flip",
                        "is not one of");
    /* cval means nothing with nearest fill, a typo nothing at all */
    expect_config_error("[augment]\nfill_mode = nearest\ncval = 1\n", "aug.ini:3: [augment] cval",
                        "unknown key");
    expect_config_error("[augment]\nrotaton_range = 10\n", "aug.ini:2: [augment] rotaton_range",
                        "unknown key");
    /* [augment] appears once */
    cnn_config *cfg;
    cnn_error err = {0};
    TU_STATUS(cnn_config_parse_string(&cfg, "[augment]\n[augment]\n", "aug.ini", &err),
              CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "aug.ini:2: section [augment] appears twice");
}

/* --set reaches [augment], even when the file has none. */
static void test_override(void **state)
{
    (void)state;
    cnn_config *cfg = parse("[train]\nepochs = 1\n");
    cnn_error err = {0};
    TU_STATUS(cnn_config_override(cfg, "augment.rotation_range=15", &err), CNN_OK, err);
    cnn_augment_config a;
    TU_STATUS(cnn_augment_config_read(&a, cfg, &err), CNN_OK, err);
    assert_true(a.enabled);
    TU_NEAR(a.rotation_range, 15, 0);
    TU_STATUS(cnn_config_override(cfg, "augment.zoom_range=-1", &err), CNN_OK, err);
    TU_STATUS(cnn_augment_config_read(&a, cfg, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "--set augment.zoom_range: '-1' is out of range");
    cnn_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity_is_exact),
        cmocka_unit_test(test_flips),
        cmocka_unit_test(test_shift_moves_dot),
        cmocka_unit_test(test_rotation_90),
        cmocka_unit_test(test_zoom_2x_maps_centre),
        cmocka_unit_test(test_shear),
        cmocka_unit_test(test_fill_modes),
        cmocka_unit_test(test_channels_share_transform),
        cmocka_unit_test(test_config_values),
        cmocka_unit_test(test_draw_deterministic),
        cmocka_unit_test(test_draw_ranges),
        cmocka_unit_test(test_crop_padding),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_override),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
