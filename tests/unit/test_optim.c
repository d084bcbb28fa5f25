/* test_optim.c - each optimizer's update against a hand computation of the
 * formulas in cnn/optim.h, whole training steps that actually learn, and
 * the floating-point mode they run in. */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cnn/optim.h"
#include "cnn/tensor.h"
#include "testutil.h"

/* dense 3 -> 2: kernel (3, 2) = 6 floats (decayed), then bias (2). */
#define TINY "[input]\nshape = 1x1x3\n[dense]\nunits = 2\n"
enum { NP = 8, NK = 6 };

static const float W0[NP] = {0.5f, -0.3f, 0.2f, 0.8f, -0.6f, 0.1f, 0.05f, -0.4f};
static const float G1[NP] = {0.1f, -0.2f, 0.03f, 0.0f, 0.5f, -0.01f, 0.2f, -0.3f};
static const float G2[NP] = {-0.05f, -0.1f, 0.3f, 0.02f, 0.4f, 0.02f, -0.2f, 0.1f};

static cnn_model *tiny_model(void)
{
    cnn_model *m = tu_model(TINY, CNN_LOSS_MSE, 1);
    assert_int_equal(m->nparams, NP);
    /* kernel first, then bias; only the kernel decays */
    assert_int_equal(m->layers[0].params[0].count, NK);
    assert_int_equal(m->layers[0].params[0].decay, 1);
    assert_int_equal(m->layers[0].params[1].decay, 0);
    memcpy(m->params, W0, sizeof W0);
    return m;
}

static cnn_optim *make_optim(cnn_optim_hparams hp, size_t n)
{
    cnn_optim *o = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_optim_create(&o, &hp, n, &err), CNN_OK, err);
    return o;
}

/* Runs nsteps (1 or 2) with gradients G1, G2 and compares with want. */
static void run_and_compare(cnn_optim_hparams hp, int nsteps, const double *want, double rtol)
{
    cnn_model *m = tiny_model();
    cnn_optim *o = make_optim(hp, m->nparams);
    for (int s = 0; s < nsteps; s++) {
        memcpy(m->grads, s ? G2 : G1, sizeof G1);
        cnn_optim_step(o, m);
    }
    assert_int_equal(o->step, nsteps);
    for (int i = 0; i < NP; i++) {
        double tol = rtol * fabs(want[i]) + 1e-7;
        if (fabs(m->params[i] - want[i]) > tol)
            fail_msg("param %d = %.9g, expected %.9g (start %g)", i, m->params[i], want[i],
                     W0[i]);
    }
    cnn_optim_free(o);
    cnn_model_free(m);
}

/* Decayed gradient: wd * w added to kernel entries only. */
static double gd(const float *g, const double *w, int i, double wd)
{
    return g[i] + (i < NK ? wd * w[i] : 0.0);
}

static void test_sgd_plain(void **state)
{
    (void)state;
    cnn_optim_hparams hp = cnn_optim_defaults(CNN_OPT_SGD);
    assert_true(hp.lr == 0.01);
    hp.lr = 0.1;
    double want[NP];
    for (int i = 0; i < NP; i++)
        want[i] = W0[i] - 0.1 * G1[i] - 0.1 * G2[i];
    run_and_compare(hp, 2, want, 1e-6);
}

static void test_sgd_momentum(void **state)
{
    (void)state;
    cnn_optim_hparams hp = cnn_optim_defaults(CNN_OPT_SGD);
    hp.lr = 0.1;
    hp.momentum = 0.9;
    double want[NP];
    for (int i = 0; i < NP; i++) {
        double v = -0.1 * G1[i], w = W0[i] + v;
        v = 0.9 * v - 0.1 * G2[i];
        want[i] = w + v;
    }
    run_and_compare(hp, 2, want, 1e-6);
}

static void test_sgd_nesterov(void **state)
{
    (void)state;
    cnn_optim_hparams hp = cnn_optim_defaults(CNN_OPT_SGD);
    hp.lr = 0.1;
    hp.momentum = 0.9;
    hp.nesterov = 1;
    double want[NP];
    for (int i = 0; i < NP; i++) {
        double v = -0.1 * G1[i];
        double w = W0[i] + 0.9 * v - 0.1 * G1[i];
        v = 0.9 * v - 0.1 * G2[i];
        want[i] = w + 0.9 * v - 0.1 * G2[i];
    }
    run_and_compare(hp, 2, want, 1e-6);
}

static void test_adam_two_steps(void **state)
{
    (void)state;
    cnn_optim_hparams hp = cnn_optim_defaults(CNN_OPT_ADAM);
    assert_true(hp.lr == 1e-3 && hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.epsilon == 1e-7);
    /* a large epsilon and lr make the bias correction and eps placement visible */
    hp.lr = 0.1;
    hp.epsilon = 0.01;
    double want[NP];
    for (int i = 0; i < NP; i++) {
        double m = 0, v = 0, w = W0[i];
        for (int t = 1; t <= 2; t++) {
            double g = t == 1 ? G1[i] : G2[i];
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            w -= 0.1 * sqrt(1 - pow(0.999, t)) / (1 - pow(0.9, t)) * m / (sqrt(v) + 0.01);
        }
        want[i] = w;
    }
    run_and_compare(hp, 2, want, 1e-5);
}

static void test_rmsprop(void **state)
{
    (void)state;
    cnn_optim_hparams hp = cnn_optim_defaults(CNN_OPT_RMSPROP);
    assert_true(hp.lr == 1e-3 && hp.rho == 0.9 && hp.epsilon == 1e-7);
    hp.lr = 0.01;
    hp.epsilon = 0.01; /* inside the sqrt: sqrt(v + eps), not sqrt(v) + eps */
    double want[NP];
    for (int i = 0; i < NP; i++) {
        double v = 0, w = W0[i];
        for (int t = 1; t <= 2; t++) {
            double g = t == 1 ? G1[i] : G2[i];
            v = 0.9 * v + 0.1 * g * g;
            w -= 0.01 * g / sqrt(v + 0.01);
        }
        want[i] = w;
    }
    run_and_compare(hp, 2, want, 1e-5);
}

static void test_weight_decay(void **state)
{
    (void)state;
    const double wd = 0.1;
    /* plain sgd */
    cnn_optim_hparams hp = cnn_optim_defaults(CNN_OPT_SGD);
    hp.lr = 0.1;
    hp.weight_decay = wd;
    double want[NP], w[NP];
    for (int i = 0; i < NP; i++)
        w[i] = W0[i];
    for (int i = 0; i < NP; i++)
        w[i] -= 0.1 * gd(G1, w, i, wd);
    for (int i = 0; i < NP; i++)
        want[i] = w[i] - 0.1 * gd(G2, w, i, wd);
    run_and_compare(hp, 2, want, 1e-6);

    /* adam: the decayed gradient feeds both moments */
    hp = cnn_optim_defaults(CNN_OPT_ADAM);
    hp.lr = 0.1;
    hp.epsilon = 0.01;
    hp.weight_decay = wd;
    for (int i = 0; i < NP; i++) {
        double m = 0, v = 0, x = W0[i];
        for (int t = 1; t <= 2; t++) {
            double g = (t == 1 ? G1[i] : G2[i]) + (i < NK ? wd * x : 0.0);
            m = 0.9 * m + 0.1 * g;
            v = 0.999 * v + 0.001 * g * g;
            x -= 0.1 * sqrt(1 - pow(0.999, t)) / (1 - pow(0.9, t)) * m / (sqrt(v) + 0.01);
        }
        want[i] = x;
    }
    run_and_compare(hp, 2, want, 1e-5);

    /* a zero gradient with decay shrinks kernels and leaves biases alone */
    cnn_model *m = tiny_model();
    hp = cnn_optim_defaults(CNN_OPT_SGD);
    hp.lr = 0.5;
    hp.weight_decay = wd;
    cnn_optim *o = make_optim(hp, m->nparams);
    memset(m->grads, 0, NP * sizeof(float));
    cnn_optim_step(o, m);
    for (int i = 0; i < NP; i++)
        TU_NEAR(m->params[i], i < NK ? W0[i] * (1 - 0.5 * wd) : W0[i], 1e-7);
    cnn_optim_free(o);
    cnn_model_free(m);
}

/* dense 13 -> 7: 98 parameters, so the vector loops of optim.c (8 lanes)
 * leave a scalar tail of 2. */
#define WIDE "[input]\nshape = 1x1x13\n[dense]\nunits = 7\n"
enum { WN = 98, WSTEPS = 3 };

static float wide_value(int step, int i, float scale)
{
    return scale * (float)(((i * 37 + step * 11) % 29) - 14) / 14.0f;
}

/* Every element of an update, as the formula of cnn/optim.h written once
 * in scalar C (the order of optim.c's scalar loop): the reference the
 * vector loops must meet bit for bit. */
static void reference_step(const cnn_optim_hparams *hp, int64_t t, float *m, float *v, float *w,
                           const float *g)
{
    const float eps = (float)hp->epsilon;
    for (int i = 0; i < WN; i++) {
        if (hp->type == CNN_OPT_ADAM) {
            const float b1 = (float)hp->beta1, b2 = (float)hp->beta2;
            const float alpha = (float)(hp->lr * sqrt(1.0 - pow(hp->beta2, (double)t)) /
                                        (1.0 - pow(hp->beta1, (double)t)));
            m[i] += (g[i] - m[i]) * (1.0f - b1);
            v[i] += (g[i] * g[i] - v[i]) * (1.0f - b2);
            w[i] -= alpha * m[i] / (sqrtf(v[i]) + eps);
        } else {
            const float rho = (float)hp->rho, lr = (float)hp->lr;
            m[i] = rho * m[i] + (1.0f - rho) * g[i] * g[i];
            w[i] -= lr * g[i] / sqrtf(m[i] + eps);
        }
    }
}

/* adam and rmsprop over 98 parameters, 3 steps: the library's update (whole,
 * and in 3 parts after one cnn_optim_count_step, as the step's threads run
 * it) gives the scalar reference's bits. */
static void test_update_bits_and_parts(void **state)
{
    (void)state;
    const cnn_optim_type types[] = {CNN_OPT_ADAM, CNN_OPT_RMSPROP};
    for (int k = 0; k < 2; k++) {
        cnn_optim_hparams hp = cnn_optim_defaults(types[k]);
        cnn_model *whole = tu_model(WIDE, CNN_LOSS_MSE, 1), *parts = tu_model(WIDE, CNN_LOSS_MSE, 1);
        assert_int_equal(whole->nparams, WN);
        cnn_optim *ow = make_optim(hp, WN), *op = make_optim(hp, WN);
        float w[WN], g[WN], m[WN] = {0}, v[WN] = {0};
        for (int i = 0; i < WN; i++)
            w[i] = whole->params[i] = parts->params[i] = wide_value(0, i, 0.5f);
        for (int s = 1; s <= WSTEPS; s++) {
            for (int i = 0; i < WN; i++)
                g[i] = whole->grads[i] = parts->grads[i] = wide_value(s, i, 1e-2f * (float)s);
            cnn_optim_step(ow, whole);
            cnn_optim_count_step(op);
            const size_t cut[] = {0, 21, 60, WN}; /* uneven, not multiples of 8 */
            for (int p = 2; p >= 0; p--)         /* in any order */
                cnn_optim_update_part(op, parts, cut[p], cut[p + 1]);
            reference_step(&hp, s, m, v, w, g);
        }
        assert_int_equal(ow->step, WSTEPS);
        assert_int_equal(op->step, WSTEPS);
        for (int i = 0; i < WN; i++) {
            if (memcmp(&whole->params[i], &w[i], sizeof w[i]))
                fail_msg("%s param %d = %.9g, the scalar formula gives %.9g",
                         cnn_optim_type_name(types[k]), i, whole->params[i], w[i]);
            if (memcmp(&parts->params[i], &w[i], sizeof w[i]))
                fail_msg("%s in parts: param %d = %.9g, whole %.9g", cnn_optim_type_name(types[k]),
                         i, parts->params[i], w[i]);
        }
        assert_memory_equal(ow->state[0], m, sizeof m);
        assert_memory_equal(op->state[0], m, sizeof m);
        if (types[k] == CNN_OPT_ADAM)
            assert_memory_equal(ow->state[1], v, sizeof v);
        cnn_optim_free(ow);
        cnn_optim_free(op);
        cnn_model_free(whole);
        cnn_model_free(parts);
    }
}

static void test_hparams_from_config(void **state)
{
    (void)state;
    cnn_error err = {0};
    cnn_config *cfg;
    cnn_optim_hparams hp;
    TU_STATUS(cnn_config_parse_string(&cfg, "[input]\nshape = 1x1x1\n", "o.ini", &err), CNN_OK,
              err);
    TU_STATUS(cnn_optim_hparams_from_config(&hp, cfg, &err), CNN_OK, err);
    assert_int_equal(hp.type, CNN_OPT_ADAM); /* absent section: adam defaults */
    assert_true(hp.lr == 1e-3 && hp.beta1 == 0.9 && hp.beta2 == 0.999 && hp.epsilon == 1e-7);
    assert_true(hp.weight_decay == 0);
    cnn_config_free(cfg);
    TU_STATUS(cnn_config_parse_string(&cfg,
                                      "[optimizer]\ntype = sgd\nlr = 0.05\nmomentum = 0.8\n"
                                      "nesterov = yes\nweight_decay = 1e-4\n",
                                      "o.ini", &err),
              CNN_OK, err);
    TU_STATUS(cnn_optim_hparams_from_config(&hp, cfg, &err), CNN_OK, err);
    assert_int_equal(hp.type, CNN_OPT_SGD);
    assert_true(hp.lr == 0.05 && hp.momentum == 0.8 && hp.nesterov == 1);
    assert_true(hp.weight_decay == 1e-4);
    TU_STATUS(cnn_config_check_unused(cfg, &err), CNN_OK, err);
    cnn_config_free(cfg);
    TU_STATUS(cnn_config_parse_string(&cfg, "[optimizer]\ntype = rmsprop\nrho = 0.95\n", "o.ini",
                                      &err),
              CNN_OK, err);
    TU_STATUS(cnn_optim_hparams_from_config(&hp, cfg, &err), CNN_OK, err);
    assert_int_equal(hp.type, CNN_OPT_RMSPROP);
    assert_true(hp.rho == 0.95 && hp.lr == 1e-3 && hp.epsilon == 1e-7);
    cnn_config_free(cfg);
    TU_STATUS(cnn_config_parse_string(&cfg, "[optimizer]\ntype = adagrad\n", "o.ini", &err),
              CNN_OK, err);
    TU_STATUS(cnn_optim_hparams_from_config(&hp, cfg, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "o.ini:2: [optimizer] type");
    TU_MSG_HAS(err, "adagrad");
    cnn_config_free(cfg);
}

/* ---- training on a tiny synthetic task --------------------------------- */

#define NET6                                                                                      \
    "[input]\nshape = 6x6x1\n"                                                                    \
    "[conv2d]\nfilters = 4\nkernel = 3\nactivation = relu\n"                                      \
    "[flatten]\n"                                                                                 \
    "[dense]\nunits = 3\nactivation = softmax\n"

enum { NS = 12, IMG = 36 };

/* Class 0: a horizontal bar, 1: a vertical bar, 2: a diagonal; at
 * different positions, with a little noise. */
static void make_data(float *x, int32_t *y)
{
    tu_rng r = {12345};
    for (int s = 0; s < NS; s++) {
        float *img = x + s * IMG;
        int cls = s % 3, pos = 1 + s / 3; /* 1..4 */
        for (int i = 0; i < IMG; i++)
            img[i] = 0.1f * (float)tu_uniform(&r);
        for (int k = 0; k < 6; k++) {
            if (cls == 0)
                img[pos * 6 + k] = 1;
            else if (cls == 1)
                img[k * 6 + pos] = 1;
            else
                img[k * 6 + (k + pos) % 6] = 1;
        }
        y[s] = cls;
    }
}

/* One full-batch step; returns the mean loss before the update. */
static double train_step(cnn_model *m, cnn_optim *o, const float *x, const int32_t *y,
                         long *correct)
{
    cnn_error err = {0};
    cnn_batch_stats st = {0};
    cnn_ctx ctx = cnn_model_ctx(m, 1, 42, 0, NULL);
    cnn_model_zero_grad(m);
    cnn_model_forward(m, x, NS, &ctx);
    TU_STATUS(cnn_model_loss(m, y, NS, 1.0f / NS, 1, &st, &err), CNN_OK, err);
    cnn_model_backward(m, x, NS, &ctx);
    if (o)
        cnn_optim_step(o, m);
    if (correct)
        *correct = st.correct;
    assert_int_equal(st.count, NS);
    return st.loss_sum / NS;
}

static void test_overfit_adam(void **state)
{
    (void)state;
    float x[NS * IMG];
    int32_t y[NS];
    make_data(x, y);
    cnn_model *m = tu_model(NET6, CNN_LOSS_SPARSE_CCE, NS);
    cnn_model_init_params(m, 1);
    cnn_optim_hparams hp = cnn_optim_defaults(CNN_OPT_ADAM);
    hp.lr = 0.01;
    cnn_optim *o = make_optim(hp, m->nparams);
    long correct = 0;
    double first = train_step(m, o, x, y, &correct), loss = first;
    int steps = 1;
    for (; steps < 300; steps++) {
        loss = train_step(m, o, x, y, &correct);
        if (correct == NS && loss < 0.05)
            break;
    }
    print_message("adam: loss %.4f -> %.4f, %ld/%d correct after %d steps\n", first, loss,
                  correct, NS, steps);
    assert_int_equal(correct, NS);
    assert_true(loss < 0.05);
    assert_true(loss < first);
    /* the inference path agrees with the training accuracy */
    cnn_ctx ctx = cnn_model_ctx(m, 0, 42, 0, NULL);
    const float *p = cnn_model_forward(m, x, NS, &ctx);
    for (int s = 0; s < NS; s++) {
        int best = 0;
        double sum = 0;
        for (int c = 0; c < 3; c++) {
            sum += p[s * 3 + c];
            if (p[s * 3 + c] > p[s * 3 + best])
                best = c;
        }
        TU_NEAR(sum, 1.0, 1e-5); /* softmax probabilities */
        assert_int_equal(best, y[s]);
    }
    cnn_optim_free(o);
    cnn_model_free(m);
}

/* Each optimizer lowers the loss; the identical run without updates does
 * not (so the decrease is the optimizer's doing). */
static void test_each_optimizer_learns(void **state)
{
    (void)state;
    float x[NS * IMG];
    int32_t y[NS];
    make_data(x, y);
    struct {
        const char *name;
        cnn_optim_type t;
        double lr, momentum;
    } cases[] = {
        {"sgd+momentum", CNN_OPT_SGD, 0.05, 0.9},
        {"adam", CNN_OPT_ADAM, 0.01, 0},
        {"rmsprop", CNN_OPT_RMSPROP, 0.005, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        cnn_model *m = tu_model(NET6, CNN_LOSS_SPARSE_CCE, NS);
        cnn_model_init_params(m, 3);
        cnn_optim_hparams hp = cnn_optim_defaults(cases[c].t);
        hp.lr = cases[c].lr;
        hp.momentum = cases[c].momentum;
        cnn_optim *o = make_optim(hp, m->nparams);
        double first = train_step(m, o, x, y, NULL), loss = first;
        for (int s = 0; s < 40; s++)
            loss = train_step(m, o, x, y, NULL);
        print_message("%s: loss %.4f -> %.4f in 40 steps\n", cases[c].name, first, loss);
        if (!(loss < 0.5 * first))
            fail_msg("%s: loss %.4f -> %.4f, expected to halve", cases[c].name, first, loss);
        cnn_optim_free(o);
        cnn_model_free(m);
    }
    cnn_model *m = tu_model(NET6, CNN_LOSS_SPARSE_CCE, NS);
    cnn_model_init_params(m, 3);
    double first = train_step(m, NULL, x, y, NULL), loss = first;
    for (int s = 0; s < 5; s++)
        loss = train_step(m, NULL, x, y, NULL);
    TU_NEAR(loss, first, 1e-6);
    cnn_model_free(m);
}

/* The engine's floating-point mode (cnn/tensor.h). RMSprop's mean square
 * of a weight whose gradient stays 0 decays by rho each step: in the mode
 * it goes from normal floats straight to 0, where it used to spend
 * hundreds of slow steps in subnormals; a thread started by a thread in
 * the mode is in it too (the programs set it before their threads start). */
static void *thread_mode(void *arg)
{
    *(int *)arg = cnn_fp_mode_is_set();
    return NULL;
}

static void test_fp_mode(void **state)
{
    (void)state;
    cnn_fp_mode_set();
    assert_true(cnn_fp_mode_is_set());
    volatile float least = FLT_MIN, half = 0.5f, big = 1073741824.0f; /* 2^30 */
    assert_true(least * half == 0.0f); /* FTZ: a subnormal result is 0 */
    const uint32_t one_bit = 1;
    float sub;
    memcpy(&sub, &one_bit, sizeof sub);
    volatile float vsub = sub;
    assert_true(vsub * big == 0.0f); /* DAZ: 1.4e-45 counts as 0 (else 1.5e-36) */

    cnn_model *m = tiny_model();
    cnn_optim_hparams hp = cnn_optim_defaults(CNN_OPT_RMSPROP);
    cnn_optim *o = make_optim(hp, m->nparams);
    memcpy(m->grads, G1, sizeof G1);
    cnn_optim_step(o, m);
    const float *ms = o->state[0];
    assert_true(ms[0] > 1e-4f); /* (1 - rho) * 0.1^2 */
    memset(m->grads, 0, sizeof G1);
    int steps = 0;
    while (ms[0] != 0.0f && steps < 2000) {
        cnn_optim_step(o, m);
        steps++;
        for (int i = 0; i < NP; i++)
            if (fpclassify(ms[i]) == FP_SUBNORMAL)
                fail_msg("step %d: mean square %d is subnormal (%g)", steps, i, (double)ms[i]);
    }
    /* 1e-3 * 0.9^n < FLT_MIN = 1.2e-38 from n = 762 */
    if (ms[0] != 0.0f || steps < 700 || steps > 800)
        fail_msg("mean square 0 = %g after %d steps, expected 0 after about 762", (double)ms[0],
                 steps);
    cnn_optim_free(o);
    cnn_model_free(m);

    int child = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_mode, &child), 0);
    pthread_join(t, NULL);
    assert_int_equal(child, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd_plain),
        cmocka_unit_test(test_sgd_momentum),
        cmocka_unit_test(test_sgd_nesterov),
        cmocka_unit_test(test_adam_two_steps),
        cmocka_unit_test(test_rmsprop),
        cmocka_unit_test(test_weight_decay),
        cmocka_unit_test(test_update_bits_and_parts),
        cmocka_unit_test(test_hparams_from_config),
        cmocka_unit_test(test_overfit_adam),
        cmocka_unit_test(test_each_optimizer_learns),
        cmocka_unit_test(test_fp_mode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
