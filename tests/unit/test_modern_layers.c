/* test_modern_layers.c - the single-input layers and activations of issue
 * 11: Keras's parameter counts, weight names and shapes; depthwise and
 * separable convolutions against a plain reference loop; global pooling
 * values; activation values and derivatives; config errors; the
 * initialisation streams of a third parameter tensor.
 * (Gradients against finite differences: tests/gradcheck.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

static void assert_tensor(const cnn_param *t, const char *name, int ndim, int d0, int d1, int d2,
                          int d3)
{
    assert_string_equal(t->name, name);
    assert_int_equal(t->ndim, ndim);
    const int want[4] = {d0, d1, d2, d3};
    for (int d = 0; d < ndim; d++)
        assert_int_equal(t->dims[d], want[d]);
}

/* Keras: SeparableConv2D(32, 3) on 16 channels has 16*9 + 16*32 + 32 = 688
 * parameters; DepthwiseConv2D(3, depth_multiplier=2) on 32 has 32*2*9 + 64
 * = 640; its Keras weights are depthwise_kernel (3, 3, 32, 2) and bias (64). */
static void test_keras_parameter_counts(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 15x15x16\n"
                            "[separable_conv2d]\nfilters = 32\nkernel = 3\n"
                            "[depthwise_conv2d]\nkernel = 3\ndepth_multiplier = 2\nstride = 2\n"
                            "padding = same\n"
                            "[separable_conv2d]\nfilters = 8\nkernel = 3\nuse_bias = false\n"
                            "[global_average_pooling2d]\n[dense]\nunits = 10\nuse_bias = false\n",
                            CNN_LOSS_SPARSE_CCE, 1);
    const cnn_layer *sep = &m->layers[0], *dw = &m->layers[1], *sep2 = &m->layers[2];
    assert_int_equal(sep->param_count, 688);
    assert_int_equal(sep->nparams, 3);
    assert_tensor(&sep->params[0], "depthwise_kernel", 4, 16, 1, 3, 3);
    assert_tensor(&sep->params[1], "pointwise_kernel", 4, 32, 16, 1, 1);
    assert_tensor(&sep->params[2], "bias", 1, 32, 0, 0, 0);
    assert_int_equal(sep->out.c, 32);
    assert_int_equal(sep->out.h, 13);
    assert_int_equal(sep->out.w, 13);

    assert_int_equal(dw->param_count, 640);
    assert_tensor(&dw->params[0], "depthwise_kernel", 4, 32, 2, 3, 3);
    assert_tensor(&dw->params[1], "bias", 1, 64, 0, 0, 0);
    assert_int_equal(dw->out.c, 64);
    assert_int_equal(dw->out.h, 7); /* same, stride 2: ceil(13 / 2) */
    assert_int_equal(dw->out.w, 7);
    /* Keras's fans of a (kh, kw, C, M) kernel */
    assert_int_equal(dw->params[0].fan_in, 32 * 9);
    assert_int_equal(dw->params[0].fan_out, 2 * 9);

    assert_int_equal(sep2->param_count, 64 * 9 + 64 * 8);
    assert_int_equal(sep2->nparams, 2);

    const cnn_layer *gap = &m->layers[3];
    assert_int_equal(gap->out.c, 8); /* keepdims=False: flat (C) */
    assert_int_equal(gap->out.h, 1);
    assert_int_equal(gap->out.w, 1);
    assert_int_equal(gap->param_count, 0);
    assert_int_equal(m->layers[4].param_count, 80);
    cnn_model_free(m);
}

/* A third tensor draws its own numbers; the first two keep their streams. */
static void test_init_streams(void **state)
{
    (void)state;
    for (int i = 0; i < 300; i++) {
        assert_int_equal(cnn_layer_init_stream(i, 0), (uint64_t)i * 2);
        assert_int_equal(cnn_layer_init_stream(i, 1), (uint64_t)i * 2 + 1);
        for (int j = 0; j < 300; j++)
            for (int p = 0; p < 2; p++)
                assert_true(cnn_layer_init_stream(i, 2) != cnn_layer_init_stream(j, p));
        assert_true(cnn_layer_init_stream(i, 2) != cnn_layer_init_stream(i + 1, 2));
    }
    /* a separable layer's pointwise kernel is not the next layer's kernel */
    cnn_model *m = tu_model("[input]\nshape = 4x4x2\n"
                            "[separable_conv2d]\nfilters = 3\nkernel = 1\nuse_bias = false\n"
                            "[conv2d]\nfilters = 3\nkernel = 1\nuse_bias = false\n[flatten]\n",
                            CNN_LOSS_MSE, 1);
    cnn_model_init_params(m, 5);
    const float *pw = m->params + m->layers[0].params[1].offset;
    const float *next = m->params + m->layers[1].params[0].offset;
    int same = 0;
    for (int k = 0; k < 6; k++)
        same += pw[k] == next[k];
    assert_int_equal(same, 0);
    cnn_model_free(m);
}

/* y[o = c*M + m] = sum_ij w[c][m][i][j] x[c][oy*sh + i - top][ox*sw + j - left] + b[o] */
static void ref_depthwise(const cnn_layer *l, const float *w, const float *bias, const float *x,
                          float *y, int kh, int kw, int sh, int sw, int top, int left)
{
    const int C = l->in.c, H = l->in.h, W = l->in.w, M = l->out.c / C;
    for (int c = 0; c < C; c++)
        for (int mm = 0; mm < M; mm++) {
            const int o = c * M + mm;
            for (int oy = 0; oy < l->out.h; oy++)
                for (int ox = 0; ox < l->out.w; ox++) {
                    double s = bias ? bias[o] : 0;
                    for (int i = 0; i < kh; i++)
                        for (int j = 0; j < kw; j++) {
                            int iy = oy * sh + i - top, ix = ox * sw + j - left;
                            if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                s += (double)w[((o * kh) + i) * kw + j] * x[(c * H + iy) * W + ix];
                        }
                    y[(o * l->out.h + oy) * l->out.w + ox] = (float)s;
                }
        }
}

static void check_depthwise(const char *ini, int kh, int kw, int sh, int sw, int top, int left,
                            int separable)
{
    char full[512];
    snprintf(full, sizeof full, "%s[flatten]\n", ini);
    cnn_model *m = tu_model(full, CNN_LOSS_MSE, 2);
    cnn_model_init_params(m, 11);
    const cnn_layer *l = &m->layers[0];
    tu_fill(m->params, m->nparams, 3, -1, 1); /* biases too */
    const size_t nin = cnn_shape_size(l->in), nout = cnn_shape_size(l->out);
    float *x = malloc(2 * nin * sizeof *x);
    assert_non_null(x);
    tu_fill(x, 2 * nin, 4, -1, 1);
    cnn_ctx ctx = cnn_model_ctx(m, 0, 1, 0, NULL);
    const float *y = cnn_model_forward(m, x, 2, &ctx);
    const float *w = m->params + l->param_offset;
    const int C = l->in.c;
    const int M = separable ? l->params[0].dims[1] : l->out.c / C;
    cnn_layer dl = *l; /* the depthwise stage's shapes */
    dl.out.c = C * M;
    const size_t nz = cnn_shape_size(dl.out);
    float *z = malloc(nz * sizeof *z), *ref = malloc(nout * sizeof *ref);
    assert_non_null(z);
    assert_non_null(ref);
    for (int b = 0; b < 2; b++) {
        if (!separable) {
            ref_depthwise(&dl, w, w + l->params[0].count, x + b * nin, ref, kh, kw, sh, sw, top,
                          left);
        } else {
            ref_depthwise(&dl, w, NULL, x + b * nin, z, kh, kw, sh, sw, top, left);
            const float *pw = w + l->params[0].count, *pb = pw + l->params[1].count;
            const int F = l->out.c, P = l->out.h * l->out.w;
            for (int f = 0; f < F; f++)
                for (int p = 0; p < P; p++) {
                    double s = pb[f];
                    for (int k = 0; k < C * M; k++)
                        s += (double)pw[f * C * M + k] * z[k * P + p];
                    ref[f * P + p] = (float)s;
                }
        }
        for (size_t k = 0; k < nout; k++)
            TU_NEAR(y[b * nout + k], ref[k], 1e-4);
    }
    free(x);
    free(z);
    free(ref);
    cnn_model_free(m);
}

static void test_depthwise_matches_reference(void **state)
{
    (void)state;
    /* 7x7, kernel 3, stride 2, same: total pad 2, 1 on each side */
    check_depthwise("[input]\nshape = 7x7x3\n[depthwise_conv2d]\nkernel = 3\nstride = 2\n"
                    "padding = same\ndepth_multiplier = 2\n",
                    3, 3, 2, 2, 1, 1, 0);
    /* 6x8, kernel 3x2, stride 2x3, same: rows pad 1 (0 top, 1 bottom), cols pad 0 */
    check_depthwise("[input]\nshape = 6x8x2\n[depthwise_conv2d]\nkernel = 3x2\nstride = 2x3\n"
                    "padding = same\n",
                    3, 2, 2, 3, 0, 0, 0);
    check_depthwise("[input]\nshape = 5x6x2\n[depthwise_conv2d]\nkernel = 2\n"
                    "depth_multiplier = 3\n",
                    2, 2, 1, 1, 0, 0, 0);
    check_depthwise("[input]\nshape = 7x7x3\n[separable_conv2d]\nfilters = 4\nkernel = 3\n"
                    "stride = 2\npadding = same\ndepth_multiplier = 2\n",
                    3, 3, 2, 2, 1, 1, 1);
}

static void test_global_pooling_values(void **state)
{
    (void)state;
    /* (C=2, H=2, W=3) */
    const float x[12] = {1, 5, -2, 0, 3, 5, /* channel 0: mean 2, max 5 (first at [1]) */
                         -1, -4, -3, -8, -2, -6}; /* channel 1: mean -4, max -1 */
    const char *types[2] = {"global_average_pooling2d", "global_max_pooling2d"};
    const float want[2][2] = {{2, -4}, {5, -1}};
    const float dx1_want[2][12] = {
        {1.f / 6, 1.f / 6, 1.f / 6, 1.f / 6, 1.f / 6, 1.f / 6, 2.f / 6, 2.f / 6, 2.f / 6,
         2.f / 6, 2.f / 6, 2.f / 6},
        {0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0}};
    for (int t = 0; t < 2; t++) {
        char ini[256];
        snprintf(ini, sizeof ini, "[input]\nshape = 2x3x2\n[%s]\n", types[t]);
        cnn_model *m = tu_model(ini, CNN_LOSS_MSE, 1);
        cnn_layer *l = &m->layers[0];
        cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
        const float *y = cnn_model_forward(m, x, 1, &ctx);
        TU_NEAR(y[0], want[t][0], 1e-6);
        TU_NEAR(y[1], want[t][1], 1e-6);
        const float dy[2] = {1, 2};
        float dx[12];
        l->ops->backward(l, NULL, NULL, x, y, dy, dx, 1, &ctx);
        for (int k = 0; k < 12; k++)
            TU_NEAR(dx[k], dx1_want[t][k], 1e-7);
        cnn_model_free(m);
    }
}

/* Values of Keras's definitions, and derivatives (from x, and from y
 * where the model takes them from y) against central differences. */
static void test_activation_values(void **state)
{
    (void)state;
    static const struct {
        cnn_activation a;
        float x, y;
    } v[] = {
        {CNN_ACT_RELU6, -1.0f, 0.0f},       {CNN_ACT_RELU6, 3.5f, 3.5f},
        {CNN_ACT_RELU6, 7.0f, 6.0f},        {CNN_ACT_LEAKY_RELU, -2.0f, -0.6f},
        {CNN_ACT_LEAKY_RELU, 2.0f, 2.0f},   {CNN_ACT_ELU, -1.0f, -0.63212056f},
        {CNN_ACT_ELU, 1.5f, 1.5f},          {CNN_ACT_GELU, 1.0f, 0.84134475f},
        {CNN_ACT_GELU, -0.5f, -0.15426877f}, {CNN_ACT_GELU, -3.0f, -0.0040496941f},
        {CNN_ACT_SWISH, 1.0f, 0.73105858f}, {CNN_ACT_SWISH, -2.0f, -0.23840584f},
    };
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        float y = v[i].x;
        cnn_activation_forward(v[i].a, &y, 1, 1);
        TU_NEAR(y, v[i].y, 2e-6);
        /* derivative away from kinks: central difference of the forward */
        const double h = 1e-3;
        float yp = (float)(v[i].x + h), ym = (float)(v[i].x - h);
        cnn_activation_forward(v[i].a, &yp, 1, 1);
        cnn_activation_forward(v[i].a, &ym, 1, 1);
        const double num = ((double)yp - ym) / (2 * h);
        float dx = 1;
        cnn_activation_grad_input(v[i].a, cnn_activation_default_alpha(v[i].a), &v[i].x, &dx,
                                  &dx, 1);
        TU_NEAR(dx, num, 2e-3);
        float dy = 1;
        cnn_activation_backward(v[i].a, &y, &dy, 1, 1);
        if (cnn_activation_needs_input(v[i].a))
            TU_NEAR(dy, 1.0, 0); /* left for the layer */
        else
            TU_NEAR(dy, num, 2e-3);
    }
    assert_true(cnn_activation_needs_input(CNN_ACT_GELU));
    assert_true(cnn_activation_needs_input(CNN_ACT_SWISH));
    assert_false(cnn_activation_needs_input(CNN_ACT_ELU));
    TU_NEAR(cnn_activation_default_alpha(CNN_ACT_LEAKY_RELU), 0.3, 1e-7);
    TU_NEAR(cnn_activation_default_alpha(CNN_ACT_ELU), 1.0, 0);
}

/* [activation] with an alpha of its own applies it itself. */
/* gelu and swish use their own vectorised exp and erf: a sweep of x over
 * [-100, 100] (large |x|, where exp under- or overflows, included), in one
 * call so the vector loops run, against double-precision references, for
 * the values and the derivatives, within a few float roundings. */
static void test_gelu_swish_sweep(void **state)
{
    (void)state;
    enum { N = 40001 };
    static float x[N], y[N], one[N], dx[N];
    for (int i = 0; i < N; i++) {
        x[i] = -100.0f + 200.0f * (float)i / (N - 1);
        if (i % 4 == 1)
            x[i] *= 0.01f; /* dense near 0, where erf's two forms meet at 0.5 */
        one[i] = 1.0f;
    }
    for (int a = 0; a < 2; a++) {
        const cnn_activation act = a ? CNN_ACT_SWISH : CNN_ACT_GELU;
        cnn_activation_apply(act, 0.0f, x, y, N);
        cnn_activation_grad_input(act, 0.0f, x, one, dx, N);
        for (int i = 0; i < N; i++) {
            const double v = x[i], s = 1.0 / (1.0 + exp(-v)), cdf = 0.5 * (1.0 + erf(v / sqrt(2.0)));
            const double ref = a ? v * s : v * cdf;
            const double dref = a ? s + v * s * (1.0 - s) : cdf + v * exp(-0.5 * v * v) / sqrt(2.0 * M_PI);
            TU_NEAR(y[i], ref, 4e-7 * (fabs(ref) > 1.0 ? fabs(ref) : 1.0));
            TU_NEAR(dx[i], dref, 1e-6 * (fabs(dref) > 1.0 ? fabs(dref) : 1.0));
        }
    }
}

static void test_activation_layer_alpha(void **state)
{
    (void)state;
    cnn_model *m = tu_model("[input]\nshape = 1x1x3\n[activation]\nactivation = leaky_relu\n"
                            "alpha = 0.1\n[activation]\nactivation = elu\n",
                            CNN_LOSS_MSE, 1);
    assert_int_equal(m->layers[0].act, CNN_ACT_LINEAR);
    assert_int_equal(m->layers[1].act, CNN_ACT_ELU); /* default alpha: the model's path */
    const float x[3] = {-2, 0.5f, -1};
    cnn_ctx ctx = cnn_model_ctx(m, 0, 1, 0, NULL);
    const float *y = cnn_model_forward(m, x, 1, &ctx);
    TU_NEAR(y[0], expm1(-0.2), 1e-6);
    TU_NEAR(y[1], 0.5, 0);
    TU_NEAR(y[2], expm1(-0.1), 1e-6);
    cnn_model_free(m);
}

static void expect_config_error(const char *ini, const char *needle)
{
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    cnn_model *m = NULL;
    TU_STATUS(cnn_config_parse_string(&cfg, ini, "net.ini", &err), CNN_OK, err);
    cnn_status st = cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err);
    if (st == CNN_OK) { /* a key no layer reads: found after the model is built */
        cnn_model_free(m);
        st = cnn_config_check_unused(cfg, &err);
    } else {
        assert_null(m);
    }
    if (st == CNN_OK)
        fail_msg("accepted: %s", ini);
    TU_MSG_HAS(err, needle);
    TU_MSG_HAS(err, "net.ini:");
    cnn_config_free(cfg);
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_config_error("[input]\nshape = 8x8x1\n[activation]\nactivation = relu\nalpha = 0.2\n",
                        "activation relu has no alpha");
    expect_config_error("[input]\nshape = 8x8x1\n[activation]\n", "activation: missing");
    expect_config_error("[input]\nshape = 8x8x1\n[activation]\nactivation = mish\n", "mish");
    expect_config_error("[input]\nshape = 8x8x1\n[depthwise_conv2d]\nstride = 2\n",
                        "kernel: missing");
    expect_config_error("[input]\nshape = 8x8x1\n[depthwise_conv2d]\nkernel = 3\n"
                        "depth_multiplier = 0\n",
                        "depth_multiplier");
    expect_config_error("[input]\nshape = 2x2x1\n[depthwise_conv2d]\nkernel = 3\n",
                        "does not fit");
    expect_config_error("[input]\nshape = 8x8x1\n[separable_conv2d]\nkernel = 3\n",
                        "filters: missing");
    expect_config_error("[input]\nshape = 8x8x1\n[global_average_pooling2d]\nsize = 2\n"
                        "[dense]\nunits = 3\n",
                        "size");
    expect_config_error("[input]\nshape = 8x8x1\n[conv2d]\nfilters = 2\nkernel = 3\n"
                        "activation = gelu\nalpha = 1\n[flatten]\n[dense]\nunits = 3\n",
                        "alpha");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keras_parameter_counts),
        cmocka_unit_test(test_init_streams),
        cmocka_unit_test(test_depthwise_matches_reference),
        cmocka_unit_test(test_global_pooling_values),
        cmocka_unit_test(test_activation_values),
        cmocka_unit_test(test_gelu_swish_sweep),
        cmocka_unit_test(test_activation_layer_alpha),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
