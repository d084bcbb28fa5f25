/* test_conv_basics.c - convolution and pooling on hand-checked examples:
 * a textbook cross-correlation, the output-size formula, max/avg pooling
 * forward and backward, and im2col/col2im against a naive reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"
#include "cnn/rng.h"
#include "cnn/tensor.h"

/* ---- conv2d ----------------------------------------------------------- */

/* The worked example of the usual CNN tutorial: a 3x3 image
 * cross-correlated (no kernel flip, as Keras/TF) with a 2x2 kernel. */
static void test_conv_tutorial_example(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 3x3x1\n"
                            "[conv2d]\nfilters = 1\nkernel = 2\nactivation = linear\n"
                            "[flatten]\n",
                            CNN_LOSS_MSE, 1);
    assert_int_equal(m->nparams, 4 + 1);
    const cnn_layer *conv = &m->layers[0];
    assert_int_equal(conv->params[0].dims[0], 1); /* (Cout, Cin, kH, kW) */
    assert_int_equal(conv->params[0].dims[2], 2);
    float *kernel = m->params + conv->params[0].offset;
    float *bias = m->params + conv->params[1].offset;
    const float k[4] = {1, 0, 0.5f, -1};
    memcpy(kernel, k, sizeof k);
    bias[0] = 0;
    const float x[9] = {1, -1, 0, 2, 4, -1, 6, 0, 1};
    const float want[4] = {-2, 2, 5, 3};
    cnn_ctx ctx = cnn_model_ctx(m, 0, 1, 0, NULL);
    const float *y = cnn_model_forward(m, x, 1, &ctx);
    assert_int_equal(conv->out.c, 1);
    assert_int_equal(conv->out.h, 2);
    assert_int_equal(conv->out.w, 2);
    for (int i = 0; i < 4; i++) {
        TU_NEAR(m->act[0][i], want[i], 1e-6);
        TU_NEAR(y[i], want[i], 1e-6); /* flatten keeps (C, H, W) order */
    }
    /* The bias is added to every output position. */
    bias[0] = 0.25f;
    cnn_model_forward(m, x, 1, &ctx);
    for (int i = 0; i < 4; i++)
        TU_NEAR(m->act[0][i], want[i] + 0.25f, 1e-6);
    cnn_model_free(m);
}

/* Two images in a batch and two input channels: each output is the sum of
 * per-channel correlations, each image independent of the other. */
static void test_conv_two_channels_batch(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 3x3x2\n"
                            "[conv2d]\nfilters = 2\nkernel = 2\n"
                            "[flatten]\n",
                            CNN_LOSS_MSE, 2);
    const cnn_layer *conv = &m->layers[0];
    float *w = m->params + conv->params[0].offset; /* (2, 2, 2, 2) */
    float *b = m->params + conv->params[1].offset;
    /* filter 0: tutorial kernel on channel 0, zero on channel 1.
     * filter 1: zero on channel 0, all-ones on channel 1 (a 2x2 box sum). */
    const float wk[16] = {1, 0, 0.5f, -1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
    memcpy(w, wk, sizeof wk);
    b[0] = 0;
    b[1] = -1;
    float x[2 * 18];
    const float img[9] = {1, -1, 0, 2, 4, -1, 6, 0, 1};
    for (int i = 0; i < 9; i++) {
        x[i] = img[i];          /* image 0, channel 0 */
        x[9 + i] = (float)i;    /* image 0, channel 1: 0..8 */
        x[18 + i] = -img[i];    /* image 1, channel 0 */
        x[27 + i] = 1.0f;       /* image 1, channel 1 */
    }
    cnn_ctx ctx = cnn_model_ctx(m, 0, 1, 0, NULL);
    cnn_model_forward(m, x, 2, &ctx);
    const float want[16] = {
        -2, 2, 5, 3,                   /* image 0, filter 0 */
        0 + 1 + 3 + 4 - 1, 1 + 2 + 4 + 5 - 1, 3 + 4 + 6 + 7 - 1, 4 + 5 + 7 + 8 - 1,
        2, -2, -5, -3,                 /* image 1, filter 0 */
        3, 3, 3, 3,                    /* image 1, filter 1 */
    };
    for (int i = 0; i < 16; i++)
        TU_NEAR(m->act[0][i], want[i], 1e-5);
    cnn_model_free(m);
}

/* TensorFlow's "same" padding before the data along one axis, computed
 * here independently of the engine. */
static int tf_same_before(int n, int k, int s)
{
    int out = (n + s - 1) / s, total = (out - 1) * s + k - n;
    return total > 0 ? total / 2 : 0;
}

/* Every conv2d code path (im2col + GEMM, the 1x1 direct GEMM and the
 * shifted GEMMs used for stride 1 with Cin >= 4) against a naive
 * convolution in double precision. */
static void test_conv_forward_reference(void **state)
{
    (void)state;
    const struct {
        int h, w, c, f, kh, kw, sh, sw;
        const char *padding; /* valid, same or a number */
        int bias, B;
    } cases[] = {
        {5, 5, 1, 2, 3, 3, 1, 1, "valid", 1, 2},  {6, 5, 3, 2, 3, 3, 2, 2, "same", 1, 2},
        {7, 7, 2, 3, 3, 2, 2, 1, "1", 1, 3},      {4, 4, 3, 2, 1, 1, 1, 1, "valid", 1, 2},
        {5, 5, 2, 2, 1, 1, 2, 2, "valid", 0, 2},  {6, 6, 4, 3, 3, 3, 1, 1, "valid", 1, 2},
        {6, 6, 4, 3, 3, 3, 1, 1, "same", 1, 3},   {5, 7, 5, 2, 3, 2, 1, 1, "same", 1, 2},
        {6, 5, 4, 2, 4, 2, 1, 1, "same", 0, 2},   {5, 5, 6, 4, 3, 3, 1, 1, "2", 1, 2},
        {7, 6, 4, 3, 2, 3, 1, 1, "valid", 1, 1},  {8, 8, 8, 5, 5, 5, 1, 1, "same", 1, 2},
        {6, 6, 4, 2, 3, 3, 2, 2, "same", 1, 2},   {4, 4, 16, 16, 3, 3, 1, 1, "same", 1, 2},
        {3, 3, 4, 2, 3, 3, 1, 1, "valid", 1, 2},  {9, 3, 4, 2, 1, 3, 1, 1, "valid", 1, 2},
    };
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        char ini[512];
        snprintf(ini, sizeof ini,
                 "[input]\nshape = %dx%dx%d\n[conv2d]\nfilters = %d\nkernel = %dx%d\n"
                 "stride = %dx%d\npadding = %s\nuse_bias = %s\n[flatten]\n",
                 cases[t].h, cases[t].w, cases[t].c, cases[t].f, cases[t].kh, cases[t].kw,
                 cases[t].sh, cases[t].sw, cases[t].padding, cases[t].bias ? "true" : "false");
        const int H = cases[t].h, W = cases[t].w, C = cases[t].c, F = cases[t].f;
        const int kh = cases[t].kh, kw = cases[t].kw, sh = cases[t].sh, sw = cases[t].sw;
        const int B = cases[t].B;
        int top, left, oh, ow;
        if (strcmp(cases[t].padding, "same") == 0) {
            top = tf_same_before(H, kh, sh);
            left = tf_same_before(W, kw, sw);
            oh = (H + sh - 1) / sh;
            ow = (W + sw - 1) / sw;
        } else {
            top = left = strcmp(cases[t].padding, "valid") == 0 ? 0 : atoi(cases[t].padding);
            oh = (H + 2 * top - kh) / sh + 1;
            ow = (W + 2 * left - kw) / sw + 1;
        }
        cnn_model *m = tu_model(ini, CNN_LOSS_MSE, B);
        const cnn_layer *l = &m->layers[0];
        if (l->out.c != F || l->out.h != oh || l->out.w != ow)
            fail_msg("case %zu: output (%d, %d, %d), expected (%d, %d, %d)", t, l->out.c,
                     l->out.h, l->out.w, F, oh, ow);
        tu_fill(m->params, m->nparams, 30 + t, -1, 1);
        const float *wk = m->params + l->params[0].offset; /* (F, C, kh, kw) */
        const float *bias = cases[t].bias ? m->params + l->params[1].offset : NULL;
        assert_int_equal(l->nparams, cases[t].bias ? 2 : 1);
        const size_t nin = (size_t)B * C * H * W;
        float *x = malloc(nin * sizeof *x);
        assert_non_null(x);
        tu_fill(x, nin, 60 + t, -1, 1);
        cnn_ctx ctx = cnn_model_ctx(m, 0, 1, 0, NULL);
        cnn_model_forward(m, x, B, &ctx);
        for (int b = 0; b < B; b++)
            for (int f = 0; f < F; f++)
                for (int oy = 0; oy < oh; oy++)
                    for (int ox = 0; ox < ow; ox++) {
                        double want = bias ? bias[f] : 0.0, mag = fabs(want);
                        for (int c = 0; c < C; c++)
                            for (int i = 0; i < kh; i++)
                                for (int j = 0; j < kw; j++) {
                                    int iy = oy * sh - top + i, ix = ox * sw - left + j;
                                    if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                        continue;
                                    double p = (double)wk[((f * C + c) * kh + i) * kw + j] *
                                               x[((size_t)(b * C + c) * H + iy) * W + ix];
                                    want += p;
                                    mag += fabs(p);
                                }
                        float got = m->act[0][((size_t)(b * F + f) * oh + oy) * ow + ox];
                        if (fabs(got - want) > 1e-5 * (1 + mag))
                            fail_msg("case %zu (%dx%dx%d k%dx%d s%dx%d pad %s): y[%d,%d,%d,%d] = "
                                     "%.7g, expected %.7g",
                                     t, H, W, C, kh, kw, sh, sw, cases[t].padding, b, f, oy, ox,
                                     got, want);
                    }
        free(x);
        cnn_model_free(m);
    }
}

/* ---- output sizes ------------------------------------------------------ */

static void test_conv_out_size_formula(void **state)
{
    (void)state;
    /* (n + 2p - f) / s + 1 */
    assert_int_equal(cnn_conv_out_size(28, 3, 1, 2), 28);
    assert_int_equal(cnn_conv_out_size(28, 3, 1, 0), 26);
    assert_int_equal(cnn_conv_out_size(26, 3, 1, 0), 24);
    assert_int_equal(cnn_conv_out_size(28, 5, 1, 0), 24);
    assert_int_equal(cnn_conv_out_size(28, 3, 2, 0), 13);
    assert_int_equal(cnn_conv_out_size(7, 3, 2, 2), 4);
    assert_int_equal(cnn_conv_out_size(24, 2, 2, 0), 12);
    assert_int_equal(cnn_conv_out_size(5, 5, 1, 0), 1);
    assert_int_equal(cnn_conv_out_size(3, 5, 1, 0), 0); /* does not fit */
    assert_int_equal(cnn_conv_out_size(3, 5, 1, 2), 1);
}

static void test_conv_out_size_chain(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 28x28x1\n"
                            "[conv2d]\nfilters = 2\nkernel = 3\npadding = 1\n"
                            "[conv2d]\nfilters = 3\nkernel = 3\n"
                            "[conv2d]\nfilters = 4\nkernel = 3\npadding = valid\n"
                            "[flatten]\n",
                            CNN_LOSS_MSE, 0);
    const int want_hw[3] = {28, 26, 24}, want_c[3] = {2, 3, 4};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(m->layers[i].out.h, want_hw[i]);
        assert_int_equal(m->layers[i].out.w, want_hw[i]);
        assert_int_equal(m->layers[i].out.c, want_c[i]);
    }
    assert_int_equal(m->layers[3].out.c, 4 * 24 * 24);
    assert_int_equal(m->nclasses, 4 * 24 * 24);
    cnn_model_free(m);
}

/* padding = same follows TensorFlow: out = ceil(n / s), pad total
 * max((out - 1) * s + k - n, 0), the odd pixel after (bottom/right). */
static void test_padding_same(void **state)
{
    (void)state;
    struct {
        int n, k, s, out, before, after;
    } cases[] = {
        {28, 3, 2, 14, 0, 1}, {27, 3, 2, 14, 1, 1}, {5, 3, 2, 3, 1, 1}, {28, 2, 2, 14, 0, 0},
        {28, 3, 1, 28, 1, 1}, {28, 4, 1, 28, 1, 2}, {5, 2, 2, 3, 0, 1},  {1, 3, 2, 1, 1, 1},
        {7, 1, 3, 3, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int before = -1, after = -1;
        int out = cnn_resolve_padding(CNN_PADDING_SAME, 0, cases[i].n, cases[i].k, cases[i].s,
                                      &before, &after);
        if (out != cases[i].out || before != cases[i].before || after != cases[i].after)
            fail_msg("same n=%d k=%d s=%d: out %d pad %d+%d, expected %d pad %d+%d", cases[i].n,
                     cases[i].k, cases[i].s, out, before, after, cases[i].out, cases[i].before,
                     cases[i].after);
        assert_int_equal(out, (cases[i].n + cases[i].s - 1) / cases[i].s);
    }
    int before, after;
    assert_int_equal(cnn_resolve_padding(CNN_PADDING_VALID, 0, 28, 3, 2, &before, &after), 13);
    assert_int_equal(before + after, 0);
    assert_int_equal(cnn_resolve_padding(CNN_PADDING_EXPLICIT, 2, 7, 3, 2, &before, &after), 5);
    assert_int_equal(before, 2);
    assert_int_equal(after, 2);

    /* The same through built layers: conv stride 2 and pooling. */
    const struct {
        int n, out;
    } sizes[] = {{28, 14}, {27, 14}, {5, 3}};
    for (size_t i = 0; i < 3; i++) {
        char ini[512];
        snprintf(ini, sizeof ini,
                 "[input]\nshape = %dx%dx1\n"
                 "[conv2d]\nfilters = 1\nkernel = 3\nstride = 2\npadding = same\n"
                 "[flatten]\n",
                 sizes[i].n, sizes[i].n);
        cnn_model *m = tu_model(ini, CNN_LOSS_MSE, 0);
        assert_int_equal(m->layers[0].out.h, sizes[i].out);
        assert_int_equal(m->layers[0].out.w, sizes[i].out);
        cnn_model_free(m);
        snprintf(ini, sizeof ini,
                 "[input]\nshape = %dx%dx2\n"
                 "[maxpool2d]\nsize = 2\npadding = same\n"
                 "[flatten]\n",
                 sizes[i].n, sizes[i].n);
        m = tu_model(ini, CNN_LOSS_MSE, 0);
        assert_int_equal(m->layers[0].out.h, sizes[i].out);
        assert_int_equal(m->layers[0].out.c, 2);
        cnn_model_free(m);
    }
    /* Non-square: 28x27 input, kernel 3x2, stride 2x1, same -> 14x27. */
    cnn_model *m = tu_model("[input]\nshape = 28x27x1\n"
                            "[conv2d]\nfilters = 1\nkernel = 3x2\nstride = 2x1\npadding = same\n"
                            "[flatten]\n",
                            CNN_LOSS_MSE, 0);
    assert_int_equal(m->layers[0].out.h, 14);
    assert_int_equal(m->layers[0].out.w, 27);
    cnn_model_free(m);
}

/* ---- pooling ----------------------------------------------------------- */

static const float pool_x[16] = {
    1, 3, 2, 4, /* */
    5, 6, 1, 2, /* */
    7, 2, 9, 1, /* */
    0, 8, 3, 4,
};

/* Runs layer 0's backward directly (the model gives the first layer no din). */
static void layer0_backward(cnn_model *m, const float *x, const float *dy, float *dx, int B)
{
    cnn_layer *l = &m->layers[0];
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    l->ops->backward(l, m->params + l->param_offset, m->grads + l->param_offset, x, m->act[0], dy,
                     dx, B, &ctx);
}

static void test_maxpool_forward_backward(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 4x4x1\n[maxpool2d]\nsize = 2\n[flatten]\n",
                            CNN_LOSS_MSE, 1);
    assert_int_equal(m->layers[0].out.h, 2);
    assert_int_equal(m->layers[0].out.w, 2);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, pool_x, 1, &ctx);
    const float want[4] = {6, 4, 8, 9};
    for (int i = 0; i < 4; i++)
        TU_NEAR(m->act[0][i], want[i], 0);

    const float dy[4] = {10, 20, 30, 40};
    float dx[16];
    for (int i = 0; i < 16; i++)
        dx[i] = 123.0f; /* backward must overwrite, not accumulate */
    layer0_backward(m, pool_x, dy, dx, 1);
    /* argmax positions: 6 at (1,1), 4 at (0,3), 8 at (3,1), 9 at (2,2) */
    float want_dx[16] = {0};
    want_dx[1 * 4 + 1] = 10;
    want_dx[0 * 4 + 3] = 20;
    want_dx[3 * 4 + 1] = 30;
    want_dx[2 * 4 + 2] = 40;
    for (int i = 0; i < 16; i++)
        TU_NEAR(dx[i], want_dx[i], 0);
    cnn_model_free(m);
}

/* Ties go to the first cell in row-major order (cnn/pool2d.c's contract),
 * in the 2x2 stride-2 fast path as in the general (padded) one. */
static void test_maxpool_ties(void **state)
{
    (void)state;
    /* windows: all equal; equal right column; equal bottom row; equal diagonal */
    const float x[16] = {
        5, 5, 1, 7, /* */
        5, 5, 2, 7, /* */
        0, 0, 9, 3, /* */
        4, 4, 3, 9,
    };
    cnn_model *m = tu_model("[input]\nshape = 4x4x1\n[maxpool2d]\nsize = 2\n[flatten]\n",
                            CNN_LOSS_MSE, 1);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, x, 1, &ctx);
    const float want[4] = {5, 7, 4, 9};
    for (int i = 0; i < 4; i++)
        TU_NEAR(m->act[0][i], want[i], 0);
    const float dy[4] = {1, 2, 3, 4};
    float dx[16], want_dx[16] = {0};
    want_dx[0] = 1;         /* first of four 5s */
    want_dx[3] = 2;         /* 7 at (0,3) before (1,3) */
    want_dx[3 * 4 + 0] = 3; /* 4 at (3,0) before (3,1) */
    want_dx[2 * 4 + 2] = 4; /* 9 at (2,2) before (3,3) */
    layer0_backward(m, x, dy, dx, 1);
    for (int i = 0; i < 16; i++)
        if (dx[i] != want_dx[i])
            fail_msg("2x2 path: dx[%d] = %g, expected %g", i, dx[i], want_dx[i]);
    cnn_model_free(m);

    /* The same windows plus a padded fifth column (padding = same on width
     * 5) take the general path; its column holds ties too. */
    float x5[20], dx5[20], want5[20] = {0};
    const float col4[4] = {-1, -1, -2, -2};
    for (int r = 0; r < 4; r++) {
        for (int c = 0; c < 4; c++)
            x5[r * 5 + c] = x[r * 4 + c];
        x5[r * 5 + 4] = col4[r];
    }
    m = tu_model("[input]\nshape = 4x5x1\n[maxpool2d]\nsize = 2\npadding = same\n[flatten]\n",
                 CNN_LOSS_MSE, 1);
    assert_int_equal(m->layers[0].out.w, 3);
    ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, x5, 1, &ctx);
    const float want_y5[6] = {5, 7, -1, 4, 9, -2};
    for (int i = 0; i < 6; i++)
        TU_NEAR(m->act[0][i], want_y5[i], 0);
    const float dy5[6] = {1, 2, 5, 3, 4, 6};
    want5[0] = 1;
    want5[3] = 2;
    want5[4] = 5;         /* -1 at (0,4) before (1,4) */
    want5[3 * 5 + 0] = 3;
    want5[2 * 5 + 2] = 4;
    want5[2 * 5 + 4] = 6; /* -2 at (2,4) before (3,4) */
    layer0_backward(m, x5, dy5, dx5, 1);
    for (int i = 0; i < 20; i++)
        if (dx5[i] != want5[i])
            fail_msg("general path: dx[%d] = %g, expected %g", i, dx5[i], want5[i]);
    cnn_model_free(m);
}

/* The 2x2 stride-2 path on planes wide enough for its vector loop (34
 * outputs a row: two blocks of 16 and a scalar tail), odd height and width
 * (a row and a column no window covers), 3 channels and 2 images, pixels
 * from {0, 1, 2} so that most windows hold ties: forward values and the
 * backward's every bit against plain loops over each window. */
static void test_maxpool_2x2_wide(void **state)
{
    (void)state;
    enum { H = 7, W = 69, C = 3, B = 2, OH = H / 2, OW = W / 2 };
    const size_t in = (size_t)C * H * W, out = (size_t)C * OH * OW;
    cnn_model *m = tu_model("[input]\nshape = 7x69x3\n[maxpool2d]\nsize = 2\n[flatten]\n",
                            CNN_LOSS_MSE, B);
    assert_int_equal(m->layers[0].out.w, OW);
    float *x = malloc(B * in * sizeof *x), *dy = malloc(B * out * sizeof *dy);
    float *dx = malloc(B * in * sizeof *dx), *want_dx = calloc(B * in, sizeof *want_dx);
    assert_non_null(x);
    assert_non_null(dy);
    assert_non_null(dx);
    assert_non_null(want_dx);
    for (size_t i = 0; i < B * in; i++)
        x[i] = (float)(cnn_rng_hash(7, 1, 0, i) % 3);
    for (size_t i = 0; i < B * out; i++)
        dy[i] = (float)(i % 97) - 48.0f; /* -0.0 never, +0 and negatives too */
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, x, B, &ctx);
    for (int p = 0; p < B * C; p++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                const float *xp = x + (size_t)p * H * W;
                int best = (2 * oy) * W + 2 * ox; /* first cell; later ones win only if > */
                const int cells[3] = {best + 1, best + W, best + W + 1};
                for (int k = 0; k < 3; k++)
                    if (xp[cells[k]] > xp[best])
                        best = cells[k];
                const size_t o = (size_t)p * OH * OW + (size_t)oy * OW + ox;
                if (m->act[0][o] != xp[best])
                    fail_msg("plane %d (%d, %d): max %g, expected %g", p, oy, ox,
                             (double)m->act[0][o], (double)xp[best]);
                want_dx[(size_t)p * H * W + best] = 0.0f + dy[o];
            }
    for (size_t i = 0; i < B * in; i++)
        dx[i] = 123.0f; /* backward must write every cell */
    layer0_backward(m, x, dy, dx, B);
    for (size_t i = 0; i < B * in; i++)
        if (memcmp(&dx[i], &want_dx[i], sizeof *dx))
            fail_msg("dx[%zu] = %g, expected %g", i, (double)dx[i], (double)want_dx[i]);
    free(x);
    free(dy);
    free(dx);
    free(want_dx);
    cnn_model_free(m);
}

/* Overlapping windows (size 3, stride 1) send the gradient of every window
 * whose maximum sits at a pixel to that pixel; a batch of two keeps the
 * images apart. */
static void test_maxpool_overlap_batch(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 4x4x1\n[maxpool2d]\nsize = 3\nstride = 1\n"
                            "[flatten]\n",
                            CNN_LOSS_MSE, 2);
    float x[32];
    memcpy(x, pool_x, sizeof pool_x);
    for (int i = 0; i < 16; i++)
        x[16 + i] = -pool_x[i];
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, x, 2, &ctx);
    /* image 0: every 3x3 window holds the 9 at (2,2) except the top-left one?
     * windows: rows 0-2/cols 0-2 -> 9; 0-2/1-3 -> 9; 1-3/0-2 -> 9; 1-3/1-3 -> 9 */
    /* image 1 (negated): maxima are the smallest originals:
     * 0-2/0-2 min 1 at (0,0) -> -1; 0-2/1-3 min 1 at (1,2) -> -1;
     * 1-3/0-2 min 0 at (3,0) -> 0; 1-3/1-3 min 1 at (1,2) -> -1 */
    const float want[8] = {9, 9, 9, 9, -1, -1, 0, -1};
    for (int i = 0; i < 8; i++)
        TU_NEAR(m->act[0][i], want[i], 0);
    const float dy[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    float dx[32];
    layer0_backward(m, x, dy, dx, 2);
    float want_dx[32] = {0};
    want_dx[2 * 4 + 2] = 1 + 2 + 3 + 4;
    want_dx[16 + 0] = 5;
    want_dx[16 + 1 * 4 + 2] = 6 + 8;
    want_dx[16 + 3 * 4 + 0] = 7;
    for (int i = 0; i < 32; i++)
        TU_NEAR(dx[i], want_dx[i], 0);
    cnn_model_free(m);
}

static void test_avgpool_forward_backward(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 4x4x1\n[avgpool2d]\nsize = 2\n[flatten]\n",
                            CNN_LOSS_MSE, 1);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, pool_x, 1, &ctx);
    const float want[4] = {(1 + 3 + 5 + 6) / 4.0f, (2 + 4 + 1 + 2) / 4.0f, (7 + 2 + 0 + 8) / 4.0f,
                           (9 + 1 + 3 + 4) / 4.0f};
    for (int i = 0; i < 4; i++)
        TU_NEAR(m->act[0][i], want[i], 1e-6);
    const float dy[4] = {4, 8, 12, 16};
    float dx[16];
    layer0_backward(m, pool_x, dy, dx, 1);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++)
            TU_NEAR(dx[r * 4 + c], dy[(r / 2) * 2 + c / 2] / 4.0f, 1e-6);
    cnn_model_free(m);
}

/* padding = same on an odd size: the padded cells are not counted in an
 * average and never win a max (TensorFlow's behaviour). */
static void test_pool_same_padding_edges(void **state)
{
    (void)state;
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    cnn_model *m = tu_model("[input]\nshape = 3x3x1\n[avgpool2d]\nsize = 2\npadding = same\n"
                            "[flatten]\n",
                            CNN_LOSS_MSE, 1);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, x, 1, &ctx);
    const float want_avg[4] = {3, 4.5f, 7.5f, 9};
    for (int i = 0; i < 4; i++)
        TU_NEAR(m->act[0][i], want_avg[i], 1e-6);
    const float dy[4] = {4, 2, 2, 1};
    float dx[9];
    layer0_backward(m, x, dy, dx, 1);
    const float want_davg[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (int i = 0; i < 9; i++)
        TU_NEAR(dx[i], want_davg[i], 1e-6);
    cnn_model_free(m);

    float neg[9];
    for (int i = 0; i < 9; i++)
        neg[i] = -x[i];
    m = tu_model("[input]\nshape = 3x3x1\n[maxpool2d]\nsize = 2\npadding = same\n[flatten]\n",
                 CNN_LOSS_MSE, 1);
    ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, neg, 1, &ctx);
    const float want_max[4] = {-1, -3, -7, -9}; /* not 0 from the padding */
    for (int i = 0; i < 4; i++)
        TU_NEAR(m->act[0][i], want_max[i], 0);
    cnn_model_free(m);
}

/* ---- im2col / col2im --------------------------------------------------- */

static void test_im2col_known(void **state)
{
    (void)state;
    /* 3x3 image 1..9, 2x2 window, stride 1, no padding: col (4, 4). */
    cnn_window g = {.c = 1, .h = 3, .w = 3, .kh = 2, .kw = 2, .sh = 1, .sw = 1, .oh = 2, .ow = 2};
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float col[16];
    cnn_im2col(&g, x, col);
    const float want[16] = {
        1, 2, 4, 5, /* window offset (0,0) at the 4 output positions */
        2, 3, 5, 6, /* (0,1) */
        4, 5, 7, 8, /* (1,0) */
        5, 6, 8, 9, /* (1,1) */
    };
    for (int i = 0; i < 16; i++)
        TU_NEAR(col[i], want[i], 0);

    /* col2im of ones counts the windows covering each pixel. */
    float ones[16], count[9] = {0};
    for (int i = 0; i < 16; i++)
        ones[i] = 1;
    cnn_col2im(&g, ones, count);
    const float want_count[9] = {1, 2, 1, 2, 4, 2, 1, 2, 1};
    for (int i = 0; i < 9; i++)
        TU_NEAR(count[i], want_count[i], 0);
    /* col2im accumulates into dx. */
    cnn_col2im(&g, ones, count);
    for (int i = 0; i < 9; i++)
        TU_NEAR(count[i], 2 * want_count[i], 0);

    /* padding 1 on every side, 3x3 window, stride 2 on 3x3 -> 2x2 outputs;
     * every output sees the whole image except the padded cells. */
    cnn_window p = {.c = 1, .h = 3, .w = 3, .kh = 3, .kw = 3, .sh = 2, .sw = 2,
                    .pad = {1, 1, 1, 1}, .oh = 2, .ow = 2};
    float pones[36], pcount[9] = {0};
    for (int i = 0; i < 36; i++)
        pones[i] = 1;
    cnn_col2im(&p, pones, pcount);
    const float want_pcount[9] = {1, 2, 1, 2, 4, 2, 1, 2, 1};
    for (int i = 0; i < 9; i++)
        TU_NEAR(pcount[i], want_pcount[i], 0);
}

/* Naive reference: col[(c,i,j), (oy,ox)] = x[c, oy*sh - top + i, ox*sw - left + j] or 0. */
static float ref_col(const cnn_window *g, const float *x, int row, int p)
{
    int c = row / (g->kh * g->kw), i = row / g->kw % g->kh, j = row % g->kw;
    int oy = p / g->ow, ox = p % g->ow;
    int iy = oy * g->sh - g->pad.top + i, ix = ox * g->sw - g->pad.left + j;
    if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w)
        return 0;
    return x[((size_t)c * g->h + iy) * g->w + ix];
}

static void test_im2col_col2im_reference(void **state)
{
    (void)state;
    const struct {
        int c, h, w, kh, kw, sh, sw;
        cnn_pad pad;
    } cases[] = {
        {1, 5, 5, 3, 3, 1, 1, {0, 0, 0, 0}}, {2, 6, 5, 3, 2, 2, 1, {0, 0, 1, 0}},
        {3, 7, 7, 3, 3, 2, 2, {1, 1, 1, 1}}, {1, 4, 6, 2, 3, 1, 3, {0, 1, 1, 1}},
        {2, 5, 4, 5, 4, 1, 1, {2, 2, 2, 1}}, {1, 8, 8, 1, 1, 3, 2, {0, 0, 0, 0}},
    };
    for (size_t t = 0; t < sizeof cases / sizeof *cases; t++) {
        cnn_window g = {.c = cases[t].c, .h = cases[t].h, .w = cases[t].w, .kh = cases[t].kh,
                        .kw = cases[t].kw, .sh = cases[t].sh, .sw = cases[t].sw,
                        .pad = cases[t].pad};
        g.oh = cnn_conv_out_size(g.h, g.kh, g.sh, g.pad.top + g.pad.bottom);
        g.ow = cnn_conv_out_size(g.w, g.kw, g.sw, g.pad.left + g.pad.right);
        assert_true(g.oh > 0 && g.ow > 0);
        const int rows = g.c * g.kh * g.kw, P = g.oh * g.ow, n = g.c * g.h * g.w;
        float *x = malloc(sizeof(float) * n), *col = malloc(sizeof(float) * rows * P);
        float *dcol = malloc(sizeof(float) * rows * P), *dx = calloc(n, sizeof(float));
        float *ref = calloc(n, sizeof(float));
        tu_fill(x, n, 10 + t, -1, 1);
        for (int i = 0; i < rows * P; i++)
            col[i] = NAN; /* im2col must write every cell, padding included */
        cnn_im2col(&g, x, col);
        for (int r = 0; r < rows; r++)
            for (int p = 0; p < P; p++)
                if (col[r * P + p] != ref_col(&g, x, r, p))
                    fail_msg("case %zu: col[%d][%d] = %g, expected %g", t, r, p, col[r * P + p],
                             ref_col(&g, x, r, p));
        /* col2im is the adjoint of im2col: scatter-add to the same cells. */
        tu_fill(dcol, (size_t)rows * P, 20 + t, -1, 1);
        cnn_col2im(&g, dcol, dx);
        for (int r = 0; r < rows; r++)
            for (int p = 0; p < P; p++) {
                int c = r / (g.kh * g.kw), i = r / g.kw % g.kh, j = r % g.kw;
                int iy = p / g.ow * g.sh - g.pad.top + i, ix = p % g.ow * g.sw - g.pad.left + j;
                if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w)
                    ref[(c * g.h + iy) * g.w + ix] += dcol[r * P + p];
            }
        for (int i = 0; i < n; i++)
            if (fabsf(dx[i] - ref[i]) > 1e-5f)
                fail_msg("case %zu: dx[%d] = %g, expected %g", t, i, dx[i], ref[i]);
        free(x);
        free(col);
        free(dcol);
        free(dx);
        free(ref);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_tutorial_example),
        cmocka_unit_test(test_conv_two_channels_batch),
        cmocka_unit_test(test_conv_forward_reference),
        cmocka_unit_test(test_conv_out_size_formula),
        cmocka_unit_test(test_conv_out_size_chain),
        cmocka_unit_test(test_padding_same),
        cmocka_unit_test(test_maxpool_forward_backward),
        cmocka_unit_test(test_maxpool_ties),
        cmocka_unit_test(test_maxpool_2x2_wide),
        cmocka_unit_test(test_maxpool_overlap_batch),
        cmocka_unit_test(test_avgpool_forward_backward),
        cmocka_unit_test(test_pool_same_padding_edges),
        cmocka_unit_test(test_im2col_known),
        cmocka_unit_test(test_im2col_col2im_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
