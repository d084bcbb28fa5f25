/* test_fusion.c - an [activation] relu folded into the batch_normalization
 * or add it reads (cnn_model_create's fold_activations), and a relu's
 * backward taken by the max pooling that reads it (fold_relu_grads), give
 * the same bits as the layers run one after the other: every layer's
 * output, the batch statistics and every parameter gradient, forward and
 * backward, training and inference. The unfolded twin is the same model
 * after cnn_model_unfold. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

enum { B = 5, NCLASS = 3 };

/* conv-BN-relu, a residual block whose add (of 2 inputs) and a second add
 * (of 3) are each followed by a relu; bn_side's output has two readers, so
 * the relu after it is not folded. */
static const char *const NET = "[input]\nshape = 6x6x2\n"
                               "[conv2d]\nname = c0\nfilters = 4\nkernel = 3\npadding = same\n"
                               "use_bias = false\n"
                               "[batch_normalization]\nname = bn0\n"
                               "[activation]\nname = r0\nactivation = relu\n"
                               "[conv2d]\nname = c1\nfilters = 4\nkernel = 3\npadding = same\n"
                               "[batch_normalization]\nname = bn1\ncenter = false\n"
                               "[add]\nname = add1\ninputs = r0, bn1\n"
                               "[activation]\nname = r1\nactivation = relu\n"
                               "[conv2d]\nname = c2\nfilters = 4\nkernel = 1\n"
                               "[batch_normalization]\nname = bn_side\n"
                               "[activation]\nname = r_side\nactivation = relu\n"
                               "[add]\nname = add3\ninputs = r1, r_side, bn_side\n"
                               "[activation]\nname = r3\nactivation = relu\n"
                               "[flatten]\n[dense]\nunits = 3\nactivation = softmax\n";

static int find(const cnn_model *m, const char *name)
{
    for (int i = 0; i < m->nlayers; i++)
        if (!strcmp(m->layers[i].name, name))
            return i;
    fail_msg("no layer %s", name);
    return -1;
}

/* Convolutions with relu read by 2x2 max pooling only (their relu's
 * backward taken by the pooling: mask_relu_din), through oneDNN (3 and 4
 * input channels), on odd sizes: 7x9 pools to 3x4, 2x3 to 1x1. */
static const char *const POOLNET = "[input]\nshape = 7x9x3\n"
                                   "[conv2d]\nname = c0\nfilters = 4\nkernel = 3\n"
                                   "padding = same\nactivation = relu\n"
                                   "[maxpool2d]\nname = p0\nsize = 2\n"
                                   "[conv2d]\nname = c1\nfilters = 5\nkernel = 2\n"
                                   "activation = relu\n"
                                   "[maxpool2d]\nname = p1\nsize = 2\n"
                                   "[flatten]\n[dense]\nunits = 3\nactivation = softmax\n";

/* text's model with its activations folded, or with the folding undone. */
static cnn_model *net_of(const char *text, int fold)
{
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    cnn_model *m = NULL;
    if (cnn_config_parse_string(&cfg, text, "test.ini", &err) ||
        cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err))
        fail_msg("model: %s", err.msg);
    cnn_config_free(cfg);
    if (!fold)
        cnn_model_unfold(m);
    if (cnn_model_reserve(m, B, &err))
        fail_msg("reserve: %s", err.msg);
    cnn_model_init_params(m, 11);
    /* gamma and beta away from 1 and 0, so the relus cut at other places */
    for (int i = 0; i < m->nlayers; i++)
        for (int p = 0; p < m->layers[i].nparams && m->layers[i].params[p].ndim == 1; p++)
            tu_fill(m->params + m->layers[i].params[p].offset, m->layers[i].params[p].count,
                    (uint64_t)(100 + i * 4 + p), -0.8f, 1.5f);
    return m;
}

static cnn_model *net(int fold) { return net_of(NET, fold); }

/* Same bits in every output but the folded producers' (which hold the
 * activated output), in the statistics and in the gradients. */
static void assert_same(const cnn_model *f, const cnn_model *u)
{
    for (int i = 0; i < f->nlayers; i++) {
        if (f->layers[i].fused_act != CNN_ACT_LINEAR)
            continue;
        const size_t n = (size_t)B * cnn_shape_size(f->layers[i].out);
        if (memcmp(f->act[i], u->act[i], n * sizeof(float)))
            fail_msg("output of layer %s differs", f->layers[i].name);
    }
    if (memcmp(f->grads, u->grads, f->nparams * sizeof(float))) {
        for (int i = 0; i < f->nlayers; i++) {
            const cnn_layer *l = &f->layers[i];
            if (l->param_count && memcmp(f->grads + l->param_offset, u->grads + l->param_offset,
                                         l->param_count * sizeof(float)))
                fail_msg("gradient of layer %s differs", l->name);
        }
    }
}

static void run(cnn_model *m, const float *x, const int32_t *labels, int training)
{
    cnn_error err = {0};
    cnn_batch_stats bs = {0};
    cnn_ctx ctx = cnn_model_ctx(m, training, 1, 0, NULL);
    cnn_model_zero_grad(m);
    cnn_model_forward(m, x, B, &ctx);
    if (cnn_model_loss(m, labels, B, 1.0f / B, 1, &bs, &err))
        fail_msg("loss: %s", err.msg);
    cnn_model_backward(m, x, B, &ctx);
}

static void test_folded_where_allowed(void **state)
{
    (void)state;
    cnn_model *f = net(1);
    assert_int_equal(f->layers[find(f, "bn0")].fused_act, CNN_ACT_RELU);
    assert_true(f->layers[find(f, "r0")].folded);
    assert_int_equal(f->layers[find(f, "add1")].fused_act, CNN_ACT_RELU);
    assert_true(f->layers[find(f, "r1")].folded);
    assert_int_equal(f->layers[find(f, "add3")].fused_act, CNN_ACT_RELU);
    assert_true(f->layers[find(f, "r3")].folded);
    /* bn_side is read by r_side and add3 */
    assert_int_equal(f->layers[find(f, "bn_side")].fused_act, CNN_ACT_LINEAR);
    assert_false(f->layers[find(f, "r_side")].folded);
    /* a folded layer shares its input's buffers */
    assert_ptr_equal(f->act[find(f, "r0")], f->act[find(f, "bn0")]);
    assert_ptr_equal(f->dact[find(f, "r0")], f->dact[find(f, "bn0")]);
    cnn_model_free(f);
}

static void test_same_bits(int training)
{
    cnn_model *f = net(1), *u = net(0);
    const size_t nx = (size_t)B * cnn_shape_size(f->input);
    float *x = malloc(nx * sizeof *x);
    assert_non_null(x);
    tu_fill(x, nx, 3, -1.0f, 2.0f);
    const int32_t labels[B] = {0, 2, 1, 1, 0};
    run(f, x, labels, training);
    run(u, x, labels, training);
    assert_same(f, u);
    if (training) {
        size_t ns = cnn_model_stats_count(f);
        float *sf = malloc(ns * sizeof *sf), *su = malloc(ns * sizeof *su);
        assert_true(sf && su);
        cnn_model_stats_get(f, sf);
        cnn_model_stats_get(u, su);
        assert_memory_equal(sf, su, ns * sizeof *sf);
        free(sf);
        free(su);
    }
    /* the relus do cut: some activations are exactly 0 */
    const float *y = f->act[find(f, "r3")];
    size_t zeros = 0, n = (size_t)B * cnn_shape_size(f->layers[find(f, "r3")].out);
    for (size_t k = 0; k < n; k++)
        zeros += y[k] == 0.0f;
    assert_true(zeros > 0 && zeros < n);
    free(x);
    cnn_model_free(f);
    cnn_model_free(u);
}

static void test_same_bits_training(void **state)
{
    (void)state;
    test_same_bits(1);
}

static void test_same_bits_inference(void **state)
{
    (void)state;
    test_same_bits(0);
}

/* The pooling applies its input's relu derivative: the same gradients as
 * the relu's own backward pass, and the windows whose four cells are all
 * cut (pooled 0) pass none back. */
static void test_relu_grad_in_pooling(void **state)
{
    (void)state;
    cnn_model *f = net_of(POOLNET, 1), *u = net_of(POOLNET, 0);
    const int c0 = find(f, "c0"), p0 = find(f, "p0"), c1 = find(f, "c1"), p1 = find(f, "p1");
    assert_true(f->layers[c0].act_grad_by_reader && f->layers[p0].mask_relu_din);
    assert_true(f->layers[c1].act_grad_by_reader && f->layers[p1].mask_relu_din);
    assert_false(u->layers[c0].act_grad_by_reader || u->layers[p0].mask_relu_din);
    const size_t nx = (size_t)B * cnn_shape_size(f->input);
    float *x = malloc(nx * sizeof *x);
    assert_non_null(x);
    tu_fill(x, nx, 5, -1.0f, 1.0f);
    const int32_t labels[B] = {1, 0, 2, 2, 1};
    run(f, x, labels, 1);
    run(u, x, labels, 1);
    assert_same(f, u);
    const size_t n0 = (size_t)B * cnn_shape_size(f->layers[p0].out);
    size_t cut = 0;
    for (size_t k = 0; k < n0; k++)
        cut += f->act[p0][k] == 0.0f;
    if (!(cut > 0 && cut < n0))
        fail_msg("%zu of %zu pooled outputs are 0: the test needs some but not all", cut, n0);
    free(x);
    cnn_model_free(f);
    cnn_model_free(u);
}

/* Unfolded (as cnn-predict --feature-maps needs), the batch normalization's
 * output is its own again: not the relu's, with negative values. */
static void test_unfold(void **state)
{
    (void)state;
    cnn_model *u = net(1);
    cnn_error err = {0};
    cnn_model_unfold(u); /* after a reserve: frees, and reserve again */
    TU_STATUS(cnn_model_reserve(u, B, &err), CNN_OK, err);
    const int bn = find(u, "bn0"), r = find(u, "r0");
    assert_int_equal(u->layers[bn].fused_act, CNN_ACT_LINEAR);
    assert_false(u->layers[r].folded);
    assert_true(u->act[bn] != u->act[r]);
    const size_t nx = (size_t)B * cnn_shape_size(u->input);
    float *x = malloc(nx * sizeof *x);
    assert_non_null(x);
    tu_fill(x, nx, 3, -1.0f, 2.0f);
    cnn_ctx ctx = cnn_model_ctx(u, 0, 1, 0, NULL);
    cnn_model_forward(u, x, B, &ctx);
    size_t neg = 0, n = (size_t)B * cnn_shape_size(u->layers[bn].out);
    for (size_t k = 0; k < n; k++)
        neg += u->act[bn][k] < 0;
    assert_true(neg > 0);
    free(x);
    cnn_model_free(u);
}

/* A workspace folds as its model does. */
static void test_workspace_folds(void **state)
{
    (void)state;
    const char *const nets[2] = {NET, POOLNET};
    for (int k = 0; k < 2; k++) {
        cnn_model *f = net_of(nets[k], 1), *w = NULL;
        cnn_error err = {0};
        TU_STATUS(cnn_model_workspace(&w, f, &err), CNN_OK, err);
        for (int i = 0; i < f->nlayers; i++) {
            assert_int_equal(w->layers[i].fused_act, f->layers[i].fused_act);
            assert_int_equal(w->layers[i].folded, f->layers[i].folded);
            assert_int_equal(w->layers[i].mask_relu_din, f->layers[i].mask_relu_din);
            assert_int_equal(w->layers[i].act_grad_by_reader, f->layers[i].act_grad_by_reader);
        }
        cnn_model_free(w);
        cnn_model_free(f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relu_grad_in_pooling),
        cmocka_unit_test(test_folded_where_allowed),
        cmocka_unit_test(test_same_bits_training),
        cmocka_unit_test(test_same_bits_inference),
        cmocka_unit_test(test_unfold),
        cmocka_unit_test(test_workspace_folds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
