/* test_gradcheck.c - every backward pass against central finite
 * differences of the summed loss.
 *
 * Each case is a small network. Its first layer after [input] is a
 * [dropout] with rate 0: an identity whose output act[0] equals the input,
 * so dact[0] (written by the next layer's backward) is dL/dx and the input
 * gradient of the layer under test is checked too (the engine gives the
 * first layer no din). The loss is loss_sum of cnn_model_loss with scale 1,
 * so analytic gradients are d(sum of per-sample losses).
 *
 * Float forward passes make the differences noisy, so eps is 1e-2 and the
 * comparison is relative: |num - ana| / max(FLOOR, |num| + |ana|) <= RTOL.
 * Points next to a kink are skipped as ggml's test-backend-ops does: if
 * perturbing a value by +-eps changes the ReLU on/off pattern or a max-pool
 * argmax anywhere in the network, the difference quotient straddles a kink
 * and says nothing. A case fails if it had to skip more than a quarter of
 * its points, so skipping cannot make a test pass vacuously.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

#define EPS 1e-2
#define RTOL 2e-2
#define FLOOR 1e-3
enum { MAX_POINTS = 40 }; /* checked elements per tensor */

typedef struct gc_case {
    const char *name;
    const char *shape;  /* [input] shape */
    const char *layers; /* INI after the identity layer */
    cnn_loss loss;
    int B;
    int training;       /* dropout active (masks fixed by sample ids) */
} gc_case;

/* The label smoothing of the cases being run (test_label_smoothing). */
static float gc_label_smoothing;

typedef struct gc_model {
    cnn_model *m;
    float *x;           /* (B, input) */
    int32_t *y;         /* (B) */
    int64_t ids[8];
    cnn_ctx ctx;
    int B;
    float *sig0, *sig;  /* kink signatures */
    size_t nsig;
} gc_model;

static double run_loss(gc_model *g, int grad)
{
    cnn_error err = {0};
    cnn_batch_stats st = {0};
    cnn_model_forward(g->m, g->x, g->B, &g->ctx);
    TU_STATUS(cnn_model_loss(g->m, g->y, g->B, 1.0f, grad, &st, &err), CNN_OK, err);
    return st.loss_sum;
}

/* ---- kinks of the layers and activations of issue 11 (layers) -------- */

static int is_global_maxpool(const cnn_layer *l)
{
    return strcmp(l->ops->section, "global_max_pooling2d") == 0;
}

/* Kinks of relu6 (0, 6), leaky_relu (0) and elu (0, for alpha != 1): the
 * side of each of v[0..n) (y and x are on the same side of 0 and 6). */
static size_t kink_sides(const float *v, size_t n, float *out)
{
    if (out)
        for (size_t k = 0; k < n; k++)
            out[k] = (float)((v[k] > 0) + 2 * (v[k] < 6));
    return n;
}

/* Signature entries of layer i beyond ReLU and max-pooling: the outputs of
 * kinked activations, and the input of an [activation] layer (which may
 * apply a kinked activation of its own with l->act linear). */
static size_t extra_kinks(const cnn_model *m, int i, size_t B, float *out)
{
    const cnn_layer *l = &m->layers[i];
    size_t n = 0;
    if (l->act == CNN_ACT_RELU6 || l->act == CNN_ACT_LEAKY_RELU || l->act == CNN_ACT_ELU)
        n += kink_sides(m->act[i], B * cnn_shape_size(l->out), out);
    if (strcmp(l->ops->section, "activation") == 0 && i > 0)
        n += kink_sides(m->act[i - 1], B * cnn_shape_size(l->in), out ? out + n : NULL);
    return n;
}

/* ---------------------------------------------------------------------- */

static int is_maxpool(const cnn_layer *l)
{
    return strcmp(l->ops->section, "maxpool2d") == 0 || is_global_maxpool(l);
}

/* Records, for the last forward, the ReLU on/off state of every ReLU output
 * and the routing of every max-pool (its backward of dout = 1, 2, 3, ...).
 * With out == NULL only returns the length. */
static size_t signature(gc_model *g, float *out)
{
    cnn_model *m = g->m;
    size_t n = 0;
    for (int i = 0; i < m->nlayers; i++) {
        cnn_layer *l = &m->layers[i];
        const size_t no = (size_t)g->B * cnn_shape_size(l->out);
        const size_t ni = (size_t)g->B * cnn_shape_size(l->in);
        if (l->act == CNN_ACT_RELU) {
            if (out)
                for (size_t k = 0; k < no; k++)
                    out[n + k] = m->act[i][k] > 0;
            n += no;
        }
        n += extra_kinks(m, i, (size_t)g->B, out ? out + n : NULL);
        if (is_maxpool(l)) {
            if (out) {
                float *dout = malloc(no * sizeof *dout);
                assert_non_null(dout);
                for (size_t k = 0; k < no; k++)
                    dout[k] = (float)(k + 1);
                l->ops->backward(l, m->params + l->param_offset, m->grads + l->param_offset,
                                 m->act[i - 1], m->act[i], dout, out + n, g->B, &g->ctx);
                free(dout);
            }
            n += ni;
        }
    }
    return n;
}

static void gc_setup(gc_model *g, const gc_case *c)
{
    char ini[4096];
    snprintf(ini, sizeof ini, "[input]\nshape = %s\n[dropout]\nname = identity\nrate = 0\n%s",
             c->shape, c->layers);
    memset(g, 0, sizeof *g);
    g->B = c->B;
    assert_true(c->B <= 8);
    g->m = tu_model(ini, c->loss, c->B);
    cnn_model *m = g->m;
    m->label_smoothing = gc_label_smoothing;
    /* Glorot kernels (sensible pre-activations) and non-zero biases. */
    cnn_model_init_params(m, 2024);
    for (int i = 0; i < m->nlayers; i++)
        for (int p = 0; p < m->layers[i].nparams; p++) {
            const cnn_param *t = &m->layers[i].params[p];
            if (!t->decay)
                tu_fill(m->params + t->offset, t->count, 100 + i, -0.3f, 0.3f);
        }
    const size_t nin = cnn_shape_size(m->input);
    g->x = malloc((size_t)g->B * nin * sizeof *g->x);
    g->y = malloc((size_t)g->B * sizeof *g->y);
    assert_non_null(g->x);
    assert_non_null(g->y);
    tu_fill(g->x, (size_t)g->B * nin, 7, -1, 1);
    for (int b = 0; b < g->B; b++) {
        g->y[b] = (m->nclasses == 1) ? b % 2 : (b * 7 + 1) % m->nclasses;
        g->ids[b] = 1000 + 37 * b; /* arbitrary global sample ids */
    }
    g->ctx = cnn_model_ctx(m, c->training, 99, 3, g->ids);
    g->nsig = signature(g, NULL);
    g->sig0 = malloc((g->nsig + 1) * sizeof(float));
    g->sig = malloc((g->nsig + 1) * sizeof(float));
    assert_non_null(g->sig0);
    assert_non_null(g->sig);
}

static void gc_teardown(gc_model *g)
{
    cnn_model_free(g->m);
    free(g->x);
    free(g->y);
    free(g->sig0);
    free(g->sig);
}

typedef struct gc_stats {
    int checked, skipped, bad;
    double worst;
    char worst_where[160];
} gc_stats;

/* Checks ana[k] for sampled k of v[0..n) against central differences. */
static void check_tensor(gc_model *g, float *v, size_t n, const float *ana, const char *what,
                         gc_stats *s)
{
    size_t npts = n < MAX_POINTS ? n : MAX_POINTS;
    for (size_t j = 0; j < npts; j++) {
        size_t k = j * n / npts;
        const float orig = v[k];
        v[k] = (float)(orig + EPS);
        double lp = run_loss(g, 0);
        signature(g, g->sig);
        int kink = memcmp(g->sig, g->sig0, g->nsig * sizeof(float)) != 0;
        const float up = v[k];
        v[k] = (float)(orig - EPS);
        double lm = run_loss(g, 0);
        signature(g, g->sig);
        kink |= memcmp(g->sig, g->sig0, g->nsig * sizeof(float)) != 0;
        const float down = v[k];
        v[k] = orig;
        if (kink) {
            s->skipped++;
            continue;
        }
        double num = (lp - lm) / ((double)up - (double)down);
        double a = ana[k];
        double err = fabs(num - a) / fmax(FLOOR, fabs(num) + fabs(a));
        s->checked++;
        if (err > s->worst) {
            s->worst = err;
            snprintf(s->worst_where, sizeof s->worst_where,
                     "%s[%zu]: numeric %.6g, analytic %.6g", what, k, num, a);
        }
        if (err > RTOL)
            s->bad++;
    }
}

/* Runs every check of a case. grad_scale != 1 corrupts the analytic
 * gradients, parameters and input alike (to show the checker notices). */
static gc_stats gc_run(const gc_case *c, float grad_scale)
{
    gc_model g;
    gc_setup(&g, c);
    cnn_model *m = g.m;
    /* analytic gradients */
    cnn_model_zero_grad(m);
    run_loss(&g, 1);
    cnn_model_backward(m, g.x, g.B, &g.ctx);
    signature(&g, g.sig0);
    const size_t nin = (size_t)g.B * cnn_shape_size(m->input);
    float *ana = malloc((m->nparams + 1) * sizeof *ana);
    float *ana_x = malloc(nin * sizeof *ana_x);
    assert_non_null(ana);
    assert_non_null(ana_x);
    for (size_t i = 0; i < m->nparams; i++)
        ana[i] = m->grads[i] * grad_scale;
    for (size_t i = 0; i < nin; i++) /* dL/d(identity output) = dL/dx */
        ana_x[i] = m->dact[0][i] * grad_scale;

    gc_stats s = {0};
    char what[128];
    for (int i = 0; i < m->nlayers; i++)
        for (int p = 0; p < m->layers[i].nparams; p++) {
            const cnn_param *t = &m->layers[i].params[p];
            snprintf(what, sizeof what, "%s.%s", m->layers[i].name, t->name);
            check_tensor(&g, m->params + t->offset, t->count, ana + t->offset, what, &s);
        }
    check_tensor(&g, g.x, nin, ana_x, "input", &s);
    print_message("%-28s checked %3d skipped %2d worst %.2e (%s)\n", c->name, s.checked,
                  s.skipped, s.worst, s.worst_where);
    free(ana);
    free(ana_x);
    gc_teardown(&g);
    return s;
}

/* Runs a case; prints and returns 1 if it fails. */
static int gc_case_fails(const gc_case *c)
{
    gc_stats s = gc_run(c, 1.0f);
    if (s.bad) {
        print_error("FAIL %s: %d of %d gradients disagree with finite differences; worst %.3g "
                    "at %s\n",
                    c->name, s.bad, s.checked, s.worst, s.worst_where);
        return 1;
    }
    if (s.checked < 10 || s.skipped * 3 > s.checked) {
        print_error("FAIL %s: only %d points checked, %d skipped near kinks\n", c->name,
                    s.checked, s.skipped);
        return 1;
    }
    return 0;
}

/* Runs every case (so one report lists all failures), then fails if any did. */
static void run_cases(const gc_case *cases, size_t n)
{
    int failed = 0;
    for (size_t i = 0; i < n; i++)
        failed += gc_case_fails(&cases[i]);
    if (failed)
        fail_msg("%d of %zu cases failed", failed, n);
}

#define HEAD3 "[flatten]\n[dense]\nunits = 3\nactivation = softmax\n"

/* ---- conv2d ------------------------------------------------------------ */

static void test_conv2d(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"conv s1 valid Cin2", "5x5x2", "[conv2d]\nfilters = 3\nkernel = 3\nactivation = tanh\n"
         "[flatten]\n[dense]\nunits = 3\n", CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv s1 same relu", "6x6x2", "[conv2d]\nfilters = 3\nkernel = 3\npadding = same\n"
         "activation = relu\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv s2 same even", "6x6x1", "[conv2d]\nfilters = 2\nkernel = 3\nstride = 2\n"
         "padding = same\nactivation = tanh\n" HEAD3, CNN_LOSS_CCE, 3, 1},
        {"conv s2 same odd", "7x7x2", "[conv2d]\nfilters = 2\nkernel = 3\nstride = 2\n"
         "padding = same\nactivation = sigmoid\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv same even kernel 4x2", "6x5x1", "[conv2d]\nfilters = 2\nkernel = 4x2\n"
         "padding = same\nactivation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv explicit pad 2 s2", "5x5x1", "[conv2d]\nfilters = 2\nkernel = 3\nstride = 2\n"
         "padding = 2\nactivation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv 3x2 stride 2x1", "7x6x2", "[conv2d]\nfilters = 3\nkernel = 3x2\nstride = 2x1\n"
         "activation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv 1x1 (direct path)", "4x4x3", "[conv2d]\nfilters = 2\nkernel = 1\n"
         "activation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv 1x1 stride 2", "5x5x2", "[conv2d]\nfilters = 2\nkernel = 1\nstride = 2\n"
         "activation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv chain, no bias", "6x6x1", "[conv2d]\nfilters = 2\nkernel = 3\nuse_bias = false\n"
         "activation = tanh\n[conv2d]\nfilters = 2\nkernel = 2\nstride = 2\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv batch 1", "5x5x2", "[conv2d]\nfilters = 2\nkernel = 3\nactivation = tanh\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 1, 1},
        {"conv batch 5", "5x5x1", "[conv2d]\nfilters = 2\nkernel = 2\nstride = 2\n"
         "padding = same\nactivation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 5, 1},
        {"conv s2 Cin4 (im2col)", "6x6x4", "[conv2d]\nfilters = 2\nkernel = 3\nstride = 2\n"
         "padding = same\nactivation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* Stride 1 with Cin >= 4 takes the shifted-GEMM path (no im2col). */
static void test_conv2d_shifted(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"shifted valid Cin4", "5x5x4", "[conv2d]\nfilters = 3\nkernel = 3\nactivation = tanh\n"
         HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"shifted same B3", "6x6x4", "[conv2d]\nfilters = 2\nkernel = 3\npadding = same\n"
         "activation = sigmoid\n" HEAD3, CNN_LOSS_SPARSE_CCE, 3, 1},
        {"shifted same 4x2 Cin5", "6x5x5", "[conv2d]\nfilters = 2\nkernel = 4x2\n"
         "padding = same\nactivation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"shifted pad 2", "4x4x4", "[conv2d]\nfilters = 2\nkernel = 3\npadding = 2\n"
         "activation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"shifted 1x3", "4x6x4", "[conv2d]\nfilters = 2\nkernel = 1x3\nactivation = tanh\n"
         HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"shifted relu no bias", "5x5x6", "[conv2d]\nfilters = 3\nkernel = 2\n"
         "use_bias = false\nactivation = relu\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv -> shifted conv", "6x6x1", "[conv2d]\nfilters = 4\nkernel = 3\npadding = same\n"
         "activation = tanh\n[conv2d]\nfilters = 3\nkernel = 3\nactivation = tanh\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"shifted + maxpool", "6x6x4", "[conv2d]\nfilters = 4\nkernel = 3\npadding = same\n"
         "activation = tanh\n[maxpool2d]\nsize = 2\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* ---- pooling ----------------------------------------------------------- */

static void test_pool2d(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"maxpool 2 on input", "6x6x2", "[maxpool2d]\nsize = 2\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"maxpool 3 s2 on input", "7x7x1", "[maxpool2d]\nsize = 3\nstride = 2\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"maxpool 2 same odd", "5x5x2", "[maxpool2d]\nsize = 2\npadding = same\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"maxpool 2 s1", "4x5x1", "[maxpool2d]\nsize = 2\nstride = 1\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv + maxpool", "6x6x1", "[conv2d]\nfilters = 2\nkernel = 3\npadding = same\n"
         "activation = tanh\n[maxpool2d]\nsize = 2\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"avgpool 2 on input", "6x6x2", "[avgpool2d]\nsize = 2\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"avgpool 3 s2 same", "6x6x1", "[avgpool2d]\nsize = 3\nstride = 2\npadding = same\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"avgpool 2 same odd", "5x5x1", "[avgpool2d]\nsize = 2\npadding = same\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"avgpool 2 s1", "4x5x2", "[avgpool2d]\nsize = 2\nstride = 1\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"avgpool 3x2 pad 1", "5x4x1", "[avgpool2d]\nsize = 3x2\nstride = 1x2\npadding = 1\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv + avgpool", "6x6x1", "[conv2d]\nfilters = 2\nkernel = 3\nactivation = sigmoid\n"
         "[avgpool2d]\nsize = 2\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"lenet-like relu", "8x8x1", "[conv2d]\nfilters = 3\nkernel = 3\nactivation = relu\n"
         "[maxpool2d]\nsize = 2\n[conv2d]\nfilters = 2\nkernel = 2\nactivation = relu\n"
         "[flatten]\n[dense]\nunits = 5\nactivation = relu\n[dense]\nunits = 3\n"
         "activation = softmax\n", CNN_LOSS_SPARSE_CCE, 3, 1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* ---- dense, flatten, dropout, activations ------------------------------ */

static void test_dense_and_activations(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"dense linear", "1x1x5", "[dense]\nunits = 4\n[dense]\nunits = 3\n",
         CNN_LOSS_SPARSE_CCE, 3, 1},
        {"dense sigmoid, tanh", "1x1x5", "[dense]\nunits = 6\nactivation = sigmoid\n"
         "[dense]\nunits = 5\nactivation = tanh\n[dense]\nunits = 3\nactivation = softmax\n",
         CNN_LOSS_SPARSE_CCE, 3, 1},
        {"dense relu", "1x1x6", "[dense]\nunits = 8\nactivation = relu\n"
         "[dense]\nunits = 3\nactivation = softmax\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"hidden softmax (non-fused)", "1x1x5", "[dense]\nunits = 4\nactivation = softmax\n"
         "[dense]\nunits = 3\nactivation = softmax\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"dense no bias", "1x1x5", "[dense]\nunits = 4\nuse_bias = false\nactivation = tanh\n"
         "[dense]\nunits = 3\nuse_bias = false\n", CNN_LOSS_SPARSE_CCE, 2, 1},
        {"flatten of (2,3,3)", "3x3x2", "[flatten]\n[dense]\nunits = 3\nactivation = softmax\n",
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dropout 0.4 (training)", "1x1x8", "[dense]\nunits = 10\nactivation = tanh\n"
         "[dropout]\nrate = 0.4\n[dense]\nunits = 3\nactivation = softmax\n",
         CNN_LOSS_SPARSE_CCE, 3, 1},
        {"dropout on input", "1x1x12", "[dropout]\nrate = 0.5\n[dense]\nunits = 3\n"
         "activation = softmax\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"dropout after conv", "5x5x1", "[conv2d]\nfilters = 2\nkernel = 3\nactivation = tanh\n"
         "[dropout]\nrate = 0.3\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dropout at inference", "1x1x8", "[dense]\nunits = 10\nactivation = tanh\n"
         "[dropout]\nrate = 0.4\n[dense]\nunits = 3\nactivation = softmax\n",
         CNN_LOSS_SPARSE_CCE, 3, 0},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* ---- batch_normalization ----------------------------------------------- */

/* Training mode normalises with the batch's statistics, so every input's
 * gradient carries the terms of the mean and the variance. */
static void test_batchnorm(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"bn on input 3x5x2", "3x5x2", "[batch_normalization]\n" HEAD3, CNN_LOSS_SPARSE_CCE, 3, 1},
        {"conv -> bn -> relu conv", "5x5x1", "[conv2d]\nfilters = 3\nkernel = 3\npadding = same\n"
         "use_bias = false\n[batch_normalization]\nmomentum = 0.9\n[conv2d]\nfilters = 2\n"
         "kernel = 2\nactivation = relu\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"bn center=false", "4x3x3", "[batch_normalization]\ncenter = false\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"bn scale=false", "3x3x2", "[batch_normalization]\nscale = false\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 3, 1},
        {"bn center=scale=false", "5x3x2", "[conv2d]\nfilters = 2\nkernel = 2\n"
         "activation = tanh\n[batch_normalization]\ncenter = false\nscale = false\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"bn on dense, B5", "1x1x5", "[dense]\nunits = 7\n[batch_normalization]\n"
         "epsilon = 0.01\n[dense]\nunits = 3\nactivation = softmax\n", CNN_LOSS_SPARSE_CCE, 5,
         1},
        {"bn 9 pixels a lane tail", "3x3x3", "[batch_normalization]\naxis = 3\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 1, 1},
        {"bn 5x7 B7 (lanes + tail)", "5x7x2", "[batch_normalization]\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 7, 1},
        {"bn inference (moving)", "3x5x2", "[batch_normalization]\n" HEAD3, CNN_LOSS_SPARSE_CCE,
         3, 0},
        /* a relu folded into the BN (and into an add): the fused backward */
        {"conv -> bn + folded relu", "5x5x1", "[conv2d]\nfilters = 3\nkernel = 3\n"
         "padding = same\nuse_bias = false\n[batch_normalization]\n[activation]\n"
         "activation = relu\n" HEAD3, CNN_LOSS_SPARSE_CCE, 3, 1},
        {"residual: add + folded relu", "4x4x2", "[conv2d]\nname = c1\nfilters = 2\n"
         "kernel = 3\npadding = same\nuse_bias = false\n[batch_normalization]\n"
         "name = bn1\n[add]\ninputs = identity, bn1\n[activation]\nactivation = relu\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* ---- layers and activations of issue 11 (layers) ---------------------- */

#define HIDDEN_TANH "[dense]\nunits = 5\nactivation = tanh\n"

static void test_new_activations(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"dense relu6", "1x1x5", "[dense]\nunits = 5\nactivation = relu6\n[dense]\n"
         "units = 3\nactivation = softmax\n", CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dense leaky_relu", "1x1x5", "[dense]\nunits = 5\nactivation = leaky_relu\n"
         "[dense]\nunits = 3\nactivation = softmax\n", CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dense elu, gelu, swish", "1x1x5", "[dense]\nunits = 6\nactivation = elu\n"
         "[dense]\nunits = 5\nactivation = gelu\n[dense]\nunits = 4\nactivation = swish\n"
         "[dense]\nunits = 3\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"dense gelu last, MSE", "1x1x4", HIDDEN_TANH "[dense]\nunits = 3\nactivation = gelu\n",
         CNN_LOSS_MSE, 3, 1},
        {"conv gelu (im2col)", "5x5x2", "[conv2d]\nfilters = 3\nkernel = 3\n"
         "activation = gelu\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv swish (shifted) same", "5x4x4", "[conv2d]\nfilters = 3\nkernel = 3\n"
         "padding = same\nactivation = swish\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv 1x1 leaky_relu (direct)", "3x5x3", "[conv2d]\nfilters = 2\nkernel = 1\n"
         "activation = leaky_relu\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"conv s2 relu6, elu", "7x7x2", "[conv2d]\nfilters = 3\nkernel = 3\nstride = 2\n"
         "padding = same\nactivation = relu6\n[conv2d]\nfilters = 2\nkernel = 2\n"
         "activation = elu\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"gelu at inference", "1x1x5", "[dense]\nunits = 6\nactivation = gelu\n"
         "[dense]\nunits = 3\n", CNN_LOSS_SPARSE_CCE, 2, 0},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

static void test_activation_layer(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"[activation] gelu after conv", "5x5x3", "[conv2d]\nfilters = 3\nkernel = 3\n"
         "[activation]\nactivation = gelu\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"[activation] swish on input", "3x5x2", "[activation]\nactivation = swish\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"[activation] relu6, tanh", "1x1x7", "[dense]\nunits = 6\n[activation]\n"
         "activation = relu6\n[dense]\nunits = 5\n[activation]\nactivation = tanh\n"
         "[dense]\nunits = 3\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"[activation] leaky alpha 0.1", "1x1x7", "[dense]\nunits = 6\n[activation]\n"
         "activation = leaky_relu\nalpha = 0.1\n[dense]\nunits = 3\n",
         CNN_LOSS_SPARSE_CCE, 3, 1},
        {"[activation] elu alpha 0.5", "3x3x2", "[conv2d]\nfilters = 2\nkernel = 2\n"
         "[activation]\nactivation = elu\nalpha = 0.5\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"[activation] elu, relu", "1x1x6", "[dense]\nunits = 5\n[activation]\n"
         "activation = elu\n[dense]\nunits = 5\n[activation]\nactivation = relu\n"
         "[dense]\nunits = 3\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"[activation] softmax last (fused)", "1x1x6", HIDDEN_TANH "[dense]\nunits = 4\n"
         "[activation]\nactivation = softmax\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"[activation] sigmoid last, BCE", "1x1x6", HIDDEN_TANH "[dense]\nunits = 1\n"
         "[activation]\nactivation = sigmoid\n", CNN_LOSS_BCE, 4, 1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

#define HEAD3F "[dense]\nunits = 3\nactivation = softmax\n"

static void test_global_pooling(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"gap on input 5x3x3", "5x3x3", "[global_average_pooling2d]\n" HEAD3F,
         CNN_LOSS_SPARSE_CCE, 3, 1},
        {"conv + gap", "6x5x2", "[conv2d]\nfilters = 4\nkernel = 3\nactivation = tanh\n"
         "[global_average_pooling2d]\n" HEAD3F, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"gmp on input 5x5x2", "5x5x2", "[global_max_pooling2d]\n" HEAD3F,
         CNN_LOSS_SPARSE_CCE, 3, 1},
        {"conv + gmp 7x3", "7x3x1", "[conv2d]\nfilters = 3\nkernel = 2\nactivation = tanh\n"
         "[global_max_pooling2d]\n" HEAD3F, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"gap of 1x1", "1x1x4", "[global_average_pooling2d]\n" HEAD3F, CNN_LOSS_SPARSE_CCE, 2,
         1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

static void test_depthwise(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"dw 3x3 valid", "7x6x3", "[depthwise_conv2d]\nkernel = 3\nactivation = tanh\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dw s2 same odd M2", "7x7x2", "[depthwise_conv2d]\nkernel = 3\nstride = 2\n"
         "padding = same\ndepth_multiplier = 2\nactivation = tanh\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dw s2 same even", "6x6x3", "[depthwise_conv2d]\nkernel = 3\nstride = 2\n"
         "padding = same\nactivation = sigmoid\n" HEAD3, CNN_LOSS_SPARSE_CCE, 3, 1},
        {"dw 3x2 s2x1 pad 1 M3", "5x6x1", "[depthwise_conv2d]\nkernel = 3x2\nstride = 2x1\n"
         "padding = 1\ndepth_multiplier = 3\nactivation = tanh\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dw s3 kernel 2 same", "7x8x2", "[depthwise_conv2d]\nkernel = 2\nstride = 3\n"
         "padding = same\nactivation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dw same relu6, no bias", "5x5x3", "[depthwise_conv2d]\nkernel = 3\npadding = same\n"
         "use_bias = false\nactivation = relu6\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dw gelu after conv", "6x5x1", "[conv2d]\nfilters = 3\nkernel = 2\n"
         "activation = tanh\n[depthwise_conv2d]\nkernel = 3\nstride = 2\npadding = same\n"
         "activation = gelu\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dw 5x5 wide rows", "9x11x2", "[depthwise_conv2d]\nkernel = 5\npadding = same\n"
         "activation = tanh\n[global_average_pooling2d]\n" HEAD3F, CNN_LOSS_SPARSE_CCE, 2, 1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

static void test_separable(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"sep 3x3 same", "6x5x3", "[separable_conv2d]\nfilters = 4\nkernel = 3\n"
         "padding = same\nactivation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"sep s2 same M2 swish", "7x7x2", "[separable_conv2d]\nfilters = 3\nkernel = 3\n"
         "stride = 2\npadding = same\ndepth_multiplier = 2\nactivation = swish\n" HEAD3,
         CNN_LOSS_SPARSE_CCE, 2, 1},
        {"sep valid no bias", "5x6x2", "[separable_conv2d]\nfilters = 2\nkernel = 2x3\n"
         "use_bias = false\nactivation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 3, 1},
        {"mobilenet-ish block", "9x9x1", "[conv2d]\nfilters = 4\nkernel = 3\nstride = 2\n"
         "padding = same\nactivation = relu6\n[depthwise_conv2d]\nkernel = 3\n"
         "padding = same\nactivation = relu6\n[conv2d]\nfilters = 5\nkernel = 1\n"
         "activation = relu6\n[separable_conv2d]\nfilters = 3\nkernel = 3\nstride = 2\n"
         "padding = same\nactivation = relu6\n[global_average_pooling2d]\n" HEAD3F,
         CNN_LOSS_SPARSE_CCE, 3, 1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* ---- losses ------------------------------------------------------------ */

#define HIDDEN "[dense]\nunits = 5\nactivation = tanh\n"

static void test_losses(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"sparse CE + softmax (fused)", "1x1x6", HIDDEN "[dense]\nunits = 4\n"
         "activation = softmax\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"sparse CE + logits", "1x1x6", HIDDEN "[dense]\nunits = 4\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"CE + softmax (fused)", "1x1x6", HIDDEN "[dense]\nunits = 4\nactivation = softmax\n",
         CNN_LOSS_CCE, 3, 1},
        {"CE + logits", "1x1x6", HIDDEN "[dense]\nunits = 3\nactivation = linear\n",
         CNN_LOSS_CCE, 3, 1},
        {"BCE + sigmoid (fused)", "1x1x6", HIDDEN "[dense]\nunits = 1\nactivation = sigmoid\n",
         CNN_LOSS_BCE, 4, 1},
        {"BCE + logits", "1x1x6", HIDDEN "[dense]\nunits = 1\n", CNN_LOSS_BCE, 4, 1},
        {"MSE + tanh", "1x1x6", HIDDEN "[dense]\nunits = 3\nactivation = tanh\n", CNN_LOSS_MSE,
         3, 1},
        {"MSE + sigmoid, 1 unit", "1x1x6", HIDDEN "[dense]\nunits = 1\nactivation = sigmoid\n",
         CNN_LOSS_MSE, 4, 1},
        {"MSE + softmax (non-fused)", "1x1x6", HIDDEN "[dense]\nunits = 3\n"
         "activation = softmax\n", CNN_LOSS_MSE, 3, 1},
        {"MSE + linear", "1x1x6", HIDDEN "[dense]\nunits = 2\n", CNN_LOSS_MSE, 3, 1},
        {"MSE on a conv map", "4x4x1", "[conv2d]\nfilters = 2\nkernel = 3\nactivation = sigmoid\n"
         "[flatten]\n", CNN_LOSS_MSE, 2, 1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

/* Keras's label_smoothing: targets y(1-ls) + ls/K, binary y(1-ls) + ls/2. */
static void test_label_smoothing(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"sparse CE + softmax, smoothed", "1x1x6", HIDDEN "[dense]\nunits = 4\n"
         "activation = softmax\n", CNN_LOSS_SPARSE_CCE, 3, 1},
        {"CE + logits, smoothed", "1x1x6", HIDDEN "[dense]\nunits = 3\n", CNN_LOSS_CCE, 3, 1},
        {"BCE + sigmoid, smoothed", "1x1x6", HIDDEN "[dense]\nunits = 1\nactivation = sigmoid\n",
         CNN_LOSS_BCE, 4, 1},
    };
    gc_label_smoothing = 0.2f;
    run_cases(cases, sizeof cases / sizeof *cases);
    gc_label_smoothing = 0;
}

/* ---- the checker, the loss scale and accumulation ---------------------- */

/* A 10% error in the gradients must be caught nearly everywhere (the
 * relative measure of a 10% error is 0.1 / 2.1 = 0.048 > RTOL). */
static void test_checker_catches_errors(void **state)
{
    (void)state;
    static const gc_case c = {"corrupted gradients", "5x5x1",
                              "[conv2d]\nfilters = 2\nkernel = 3\nactivation = tanh\n" HEAD3,
                              CNN_LOSS_SPARSE_CCE, 2, 1};
    gc_stats s = gc_run(&c, 1.1f);
    assert_true(s.checked > 50);
    if (s.bad < s.checked * 9 / 10)
        fail_msg("a 10%% gradient error was flagged at only %d of %d points", s.bad, s.checked);
    gc_stats ok = gc_run(&c, 1.0f);
    assert_int_equal(ok.bad, 0);
}

/* Gradients scale with `scale` and add up over backward calls. */
static void test_scale_and_accumulate(void **state)
{
    (void)state;
    /* every conv path (shifted, im2col, direct), a pool and dense layers */
    static const gc_case c = {"scale", "6x6x4",
                              "[conv2d]\nfilters = 3\nkernel = 3\npadding = same\n"
                              "activation = tanh\n[maxpool2d]\nsize = 2\n"
                              "[conv2d]\nfilters = 2\nkernel = 2\npadding = same\n"
                              "[conv2d]\nfilters = 2\nkernel = 1\n" HEAD3,
                              CNN_LOSS_SPARSE_CCE, 3, 1};
    gc_model g;
    gc_setup(&g, &c);
    cnn_model *m = g.m;
    cnn_error err = {0};
    const size_t n = m->nparams;
    float *g1 = malloc(n * sizeof *g1);
    assert_non_null(g1);

    cnn_batch_stats st = {0};
    cnn_model_zero_grad(m);
    cnn_model_forward(m, g.x, g.B, &g.ctx);
    TU_STATUS(cnn_model_loss(m, g.y, g.B, 1.0f, 1, &st, &err), CNN_OK, err);
    cnn_model_backward(m, g.x, g.B, &g.ctx);
    memcpy(g1, m->grads, n * sizeof *g1);
    double loss1 = st.loss_sum;
    assert_int_equal(st.count, g.B);

    /* scale 1/B: the mean gradient; the loss statistics do not scale */
    cnn_batch_stats st2 = {0};
    cnn_model_zero_grad(m);
    cnn_model_forward(m, g.x, g.B, &g.ctx);
    TU_STATUS(cnn_model_loss(m, g.y, g.B, 1.0f / g.B, 1, &st2, &err), CNN_OK, err);
    cnn_model_backward(m, g.x, g.B, &g.ctx);
    TU_NEAR(st2.loss_sum, loss1, 1e-9);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        TU_NEAR(m->grads[i], g1[i] / g.B, 1e-6 + 1e-5 * fabsf(g1[i]));
        nonzero += g1[i] != 0;
    }
    assert_true(nonzero > n / 2);

    /* a second backward without zero_grad adds */
    cnn_model_zero_grad(m);
    for (int r = 0; r < 2; r++) {
        cnn_model_forward(m, g.x, g.B, &g.ctx);
        TU_STATUS(cnn_model_loss(m, g.y, g.B, 1.0f, 1, &st, &err), CNN_OK, err);
        cnn_model_backward(m, g.x, g.B, &g.ctx);
    }
    for (size_t i = 0; i < n; i++)
        TU_NEAR(m->grads[i], 2 * g1[i], 1e-6 + 1e-5 * fabsf(g1[i]));

    /* the batch is the sum of its samples: per-sample gradients add up */
    cnn_model_zero_grad(m);
    const size_t nin = cnn_shape_size(m->input);
    for (int b = 0; b < g.B; b++) {
        cnn_ctx ctx1 = cnn_model_ctx(m, 1, 99, 3, &g.ids[b]);
        cnn_model_forward(m, g.x + b * nin, 1, &ctx1);
        TU_STATUS(cnn_model_loss(m, &g.y[b], 1, 1.0f, 1, &st, &err), CNN_OK, err);
        cnn_model_backward(m, g.x + b * nin, 1, &ctx1);
    }
    for (size_t i = 0; i < n; i++)
        TU_NEAR(m->grads[i], g1[i], 1e-6 + 1e-5 * fabsf(g1[i]));
    free(g1);
    gc_teardown(&g);
}

/* ---- graphs: a tensor read by several layers (add, concatenate) -------- */

/* The identity layer (the input) feeds two convolutions and the merge
 * itself, so dL/dx sums three gradients; "add twice" reads one tensor in
 * two slots of one layer. */
static void test_graph_merges(void **state)
{
    (void)state;
    static const gc_case cases[] = {
        {"add: x feeds conv, conv, add", "5x5x2", "[conv2d]\nname = c1\nfilters = 2\nkernel = 3\n"
         "padding = same\nactivation = tanh\n[conv2d]\nname = c2\ninputs = identity\n"
         "filters = 2\nkernel = 1\nactivation = tanh\n[add]\ninputs = c1, identity, c2\n"
         HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"add twice, odd 3x5", "3x5x3", "[conv2d]\nname = c1\nfilters = 3\nkernel = 3\n"
         "padding = same\nactivation = tanh\n[add]\ninputs = c1, c1\n[conv2d]\nfilters = 2\n"
         "kernel = 2\nactivation = tanh\ninputs = add\n" HEAD3, CNN_LOSS_SPARSE_CCE,
         3, 1},
        {"concatenate x and conv(x)", "5x3x2", "[conv2d]\nname = c1\nfilters = 3\nkernel = 3\n"
         "stride = 2\npadding = same\nactivation = tanh\n[conv2d]\nname = c2\n"
         "inputs = identity\nfilters = 1\nkernel = 3\nstride = 2\npadding = same\n"
         "activation = tanh\n[concatenate]\ninputs = c2, c1\n[conv2d]\nfilters = 2\n"
         "kernel = 1\nactivation = tanh\n" HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"concatenate with the input", "4x4x1", "[conv2d]\nname = c1\nfilters = 2\nkernel = 3\n"
         "padding = same\nactivation = tanh\n[concatenate]\ninputs = identity, c1, identity\n"
         HEAD3, CNN_LOSS_SPARSE_CCE, 2, 1},
        {"dense branches, concatenate", "1x1x5", "[dense]\nname = d1\nunits = 3\n"
         "activation = tanh\n[dense]\nname = d2\ninputs = identity\nunits = 4\n"
         "activation = sigmoid\n[concatenate]\ninputs = d1, d2, identity\n[add]\n"
         "inputs = concatenate, concatenate\n[dense]\nunits = 3\nactivation = softmax\n",
         CNN_LOSS_SPARSE_CCE, 3, 1},
    };
    run_cases(cases, sizeof cases / sizeof *cases);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_catches_errors),
        cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_conv2d_shifted),
        cmocka_unit_test(test_pool2d),
        cmocka_unit_test(test_dense_and_activations),
        cmocka_unit_test(test_batchnorm),
        cmocka_unit_test(test_losses),
        cmocka_unit_test(test_label_smoothing),
        cmocka_unit_test(test_new_activations),
        cmocka_unit_test(test_activation_layer),
        cmocka_unit_test(test_global_pooling),
        cmocka_unit_test(test_depthwise),
        cmocka_unit_test(test_separable),
        cmocka_unit_test(test_scale_and_accumulate),
        cmocka_unit_test(test_graph_merges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
