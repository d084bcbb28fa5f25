/* test_graph.c - networks as DAGs: inputs keys, execution order, a tensor
 * read in place by several layers, the graph's errors (file, line, layer;
 * exit code 2), block templates that build a ResNet, the functional
 * summary and its JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "testutil.h"

extern const cnn_layer_ops cnn_input_ops, cnn_add_ops, cnn_concatenate_ops, cnn_flatten_ops,
    cnn_dense_ops, cnn_conv2d_ops;

/* ---- a probe layer: an identity that records the input it is given ---- */

enum { MAX_PROBES = 8 };
static const float *probe_in[MAX_PROBES];
static const float *probe_din[MAX_PROBES];

static cnn_status probe_make(cnn_layer *l, const void *p, cnn_shape in, cnn_error *err)
{
    (void)p, (void)err;
    l->out = in;
    return CNN_OK;
}

static void probe_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                          const cnn_ctx *ctx)
{
    (void)w, (void)ctx;
    probe_in[l->index] = in;
    memcpy(out, in, (size_t)B * cnn_shape_size(l->in) * sizeof *out);
}

static void probe_backward(cnn_layer *l, const float *w, float *g, const float *in,
                           const float *out, const float *dout, float *din, int B,
                           const cnn_ctx *ctx)
{
    (void)w, (void)g, (void)in, (void)out, (void)ctx;
    probe_din[l->index] = din;
    if (din)
        memcpy(din, dout, (size_t)B * cnn_shape_size(l->in) * sizeof *din);
}

static const cnn_layer_ops probe_ops = {
    .section = "probe", .keras_name = "Probe", .default_name = "probe",
    .make = probe_make, .forward = probe_forward, .backward = probe_backward,
};

static const cnn_layer_ops *const probe_types[] = {
    &cnn_input_ops, &probe_ops, &cnn_add_ops, &cnn_flatten_ops, &cnn_dense_ops, NULL};

/* The input feeds p0; p0 feeds a and b (readers of one tensor), which add
 * merges. Each reader gets act[p0] itself, not a copy; the last reader
 * writes p0's gradient in place, the other through a temporary. */
static void test_shared_tensor_read_in_place(void **state)
{
    (void)state;
    static const char *ini = "[input]\nshape = 2x3x2\n"
                             "[probe]\nname = p0\n"
                             "[probe]\nname = a\ninputs = p0\n"
                             "[probe]\nname = b\ninputs = p0\n"
                             "[add]\ninputs = a, b\n[flatten]\n[dense]\nunits = 3\n";
    cnn_error err = {0};
    cnn_config *cfg;
    cnn_model *m;
    TU_STATUS(cnn_config_parse_string(&cfg, ini, "test.ini", &err), CNN_OK, err);
    TU_STATUS(cnn_model_create_types(&m, cfg, CNN_LOSS_SPARSE_CCE, probe_types, &err), CNN_OK,
              err);
    cnn_config_free(cfg);
    TU_STATUS(cnn_model_reserve(m, 2, &err), CNN_OK, err);
    assert_int_equal(m->nlayers, 6);
    assert_int_equal(m->layers[1].input[0], 0);
    assert_int_equal(m->layers[2].input[0], 0);
    assert_int_equal(m->layers[3].ninputs, 2);
    assert_int_equal(m->ntemps, 1); /* only a's gradient goes through a temporary */
    float x[24];
    int32_t y[2] = {0, 2};
    tu_fill(x, 24, 3, -1, 1);
    cnn_model_init_params(m, 1);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_model_forward(m, x, 2, &ctx);
    assert_ptr_equal(probe_in[0], x);
    assert_ptr_equal(probe_in[1], m->act[0]);
    assert_ptr_equal(probe_in[2], m->act[0]);
    cnn_batch_stats st = {0};
    cnn_model_zero_grad(m);
    TU_STATUS(cnn_model_loss(m, y, 2, 1.0f, 1, &st, &err), CNN_OK, err);
    cnn_model_backward(m, x, 2, &ctx);
    assert_null(probe_din[0]);             /* the model's input has no gradient */
    assert_ptr_equal(probe_din[2], m->dact[0]); /* b, the last reader: in place */
    assert_ptr_not_equal(probe_din[1], m->dact[0]);
    /* p0's gradient is the sum of a's and b's, both equal to add's */
    for (int k = 0; k < 24; k++)
        TU_NEAR(m->dact[0][k], 2 * m->dact[3][k], 1e-6);
    cnn_model_free(m);
}

/* Sections may come before their inputs; the model runs them after. */
static void test_execution_order(void **state)
{
    (void)state;
    static const char *ini = "[input]\nshape = 4x4x1\n"
                             "[conv2d]\nname = b\ninputs = a\nfilters = 2\nkernel = 1\n"
                             "[conv2d]\nname = a\ninputs = input\nfilters = 2\nkernel = 1\n"
                             "[add]\ninputs = a, b\n[flatten]\n[dense]\nunits = 2\n";
    cnn_model *m = tu_model(ini, CNN_LOSS_SPARSE_CCE, 1);
    assert_string_equal(m->layers[0].name, "a");
    assert_string_equal(m->layers[1].name, "b");
    assert_string_equal(m->layers[2].name, "add");
    assert_int_equal(m->layers[0].input[0], CNN_INPUT_MODEL);
    assert_int_equal(m->layers[1].input[0], 0);
    assert_true(m->functional);
    cnn_model_free(m);
}

/* ---- errors: one line naming file, line and layer; exit code 2 ------- */

typedef struct bad_case {
    const char *ini;
    const char *want; /* in the message */
} bad_case;

#define IN "[input]\nshape = 4x4x2\n"
#define HEAD "[flatten]\n[dense]\nunits = 2\n"

static void test_graph_errors(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {IN "[conv2d]\nname = a\ninputs = b\nfilters = 2\nkernel = 1\n"
            "[conv2d]\nname = b\ninputs = a\nfilters = 2\nkernel = 1\n[add]\ninputs = a, b\n" HEAD,
         "test.ini:3: layer 'a': the inputs form a cycle: 'a' reads 'b' reads 'a'"},
        {IN "[conv2d]\nname = a\ninputs = a\nfilters = 2\nkernel = 1\n" HEAD,
         "test.ini:3: layer 'a': the inputs form a cycle: 'a' reads 'a'"},
        {IN "[conv2d]\nfilters = 2\nkernel = 1\n[add]\ninputs = conv2d, cnv2d\n" HEAD,
         "test.ini:6: layer 'add': inputs: no layer is named 'cnv2d'"},
        {IN "[conv2d]\nfilters = 3\nkernel = 1\n[add]\ninputs = conv2d, input\n" HEAD,
         "test.ini:6: layer 'add' (add): input 2 is (4, 4, 2) but input 1 is (4, 4, 3)"},
        {IN "[conv2d]\nfilters = 3\nkernel = 2\n[concatenate]\ninputs = conv2d, input\n" HEAD,
         "test.ini:6: layer 'concatenate' (concatenate): input 2 is 4x4 but input 1 is 3x3"},
        {IN "[concatenate]\ninputs = input, input\naxis = 1\n" HEAD,
         "test.ini:5: [concatenate] axis: '1': only the channel axis"},
        {IN "[conv2d]\nfilters = 2\nkernel = 1\n[conv2d]\ninputs = conv2d, input\nfilters = 2\n"
            "kernel = 1\n" HEAD,
         "test.ini:6: layer 'conv2d_1' (conv2d) takes one input"},
        {IN "[add]\ninputs = input\n" HEAD, "test.ini:3: layer 'add' (add) merges 2 to 16"},
        {IN "[conv2d]\nfilters = 2\nkernel = 1\n[add]\n" HEAD,
         "test.ini:6: layer 'add' (add): inputs: missing"},
        {IN "[conv2d]\nname = lost\nfilters = 2\nkernel = 1\n[conv2d]\ninputs = input\n"
            "filters = 2\nkernel = 1\n" HEAD,
         "test.ini:3: layer 'lost': no layer reads its output"},
        {IN "[conv2d]\nfilters = 2\nkernel = 1\ninputs = dense\n" HEAD,
         "test.ini:8: layer 'dense' is the last layer"},
        {IN "[conv2d]\ninputs = $input\nfilters = 2\nkernel = 1\n" HEAD,
         "test.ini:3: layer 'conv2d': inputs: $input is the input of a block"},
        {IN "[conv2d]\ninputs = ,\nfilters = 2\nkernel = 1\n" HEAD,
         "test.ini:3: layer 'conv2d': inputs = ',': expected layer names"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cnn_error err = {0};
        cnn_config *cfg = NULL;
        cnn_model *m = NULL;
        cnn_status st = cnn_config_parse_string(&cfg, cases[i].ini, "test.ini", &err);
        if (st == CNN_OK)
            st = cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err);
        cnn_config_free(cfg);
        assert_null(m);
        if (st == CNN_OK || cnn_status_exit_code(st) != 2 || !strstr(err.msg, cases[i].want) ||
            strchr(err.msg, '\n'))
            fail_msg("case %zu: status %d, message \"%s\", wanted \"%s\"", i, (int)st, err.msg,
                     cases[i].want);
    }
}

/* ---- blocks: a BN-free ResNet20 (the real one needs BatchNormalization) */

static const char *resnet20_nobn =
    "[block basic]\nfilters =\n"
    "[conv2d]\nname = conv1\nfilters = $filters\nkernel = 3\npadding = same\nactivation = relu\n"
    "[conv2d]\nname = conv2\nfilters = ${filters}\nkernel = 3\npadding = same\n"
    "[add]\nname = add\ninputs = $input, conv2\n[end]\n"
    "[block down]\nfilters =\nstride = 2\n"
    "[conv2d]\nname = conv1\nfilters = $filters\nkernel = 3\nstride = $stride\npadding = same\n"
    "activation = relu\n"
    "[conv2d]\nname = conv2\nfilters = $filters\nkernel = 3\npadding = same\n"
    "[conv2d]\nname = shortcut\ninputs = $input\nfilters = $filters\nkernel = 1\n"
    "stride = $stride\npadding = same\n"
    "[add]\nname = add\ninputs = shortcut, conv2\n[end]\n"
    "[input]\nshape = 32x32x3\n"
    "[conv2d]\nfilters = 16\nkernel = 3\npadding = same\nactivation = relu\n"
    "[basic]\nfilters = 16\nrepeat = 3\n"
    "[down]\nfilters = 32\n[basic]\nfilters = 32\nrepeat = 2\n"
    "[down]\nfilters = 64\n[basic]\nfilters = 64\nrepeat = 2\n"
    "[avgpool2d]\nsize = 8\n[flatten]\n[dense]\nunits = 10\nactivation = softmax\n";

static void test_resnet_from_blocks(void **state)
{
    (void)state;
    cnn_model *m = tu_model(resnet20_nobn, CNN_LOSS_SPARSE_CCE, 2);
    /* 274,442 of Keras's ResNet20 less BN's 2 x 1,376 */
    assert_int_equal(m->nparams, 271690);
    assert_int_equal(m->nlayers, 1 + 7 * 3 + 2 * 4 + 3);
    int shortcut = -1, add = -1;
    for (int i = 0; i < m->nlayers; i++) {
        if (!strcmp(m->layers[i].name, "down_1_shortcut"))
            shortcut = i;
        if (!strcmp(m->layers[i].name, "down_1_add"))
            add = i;
    }
    assert_true(shortcut > 0 && add > shortcut);
    /* the shortcut reads the block's input: the output of basic_4 */
    assert_string_equal(m->layers[m->layers[shortcut].input[0]].name, "basic_4_add");
    assert_int_equal(m->layers[shortcut].out.c, 64);
    assert_int_equal(m->layers[shortcut].out.h, 8);
    assert_int_equal(m->layers[add].ninputs, 2);
    assert_int_equal(m->layers[add].input[0], shortcut);
    assert_string_equal(m->layers[m->layers[add].input[1]].name, "down_1_conv2");
    /* a forward and backward pass of the whole graph runs */
    float *x = malloc(2 * 32 * 32 * 3 * sizeof *x);
    assert_non_null(x);
    tu_fill(x, 2 * 32 * 32 * 3, 5, 0, 1);
    int32_t y[2] = {1, 7};
    cnn_model_init_params(m, 3);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    cnn_batch_stats st = {0};
    cnn_error err = {0};
    cnn_model_zero_grad(m);
    cnn_model_forward(m, x, 2, &ctx);
    TU_STATUS(cnn_model_loss(m, y, 2, 0.5f, 1, &st, &err), CNN_OK, err);
    cnn_model_backward(m, x, 2, &ctx);
    size_t nonzero = 0;
    for (size_t i = 0; i < m->nparams; i++)
        nonzero += m->grads[i] != 0;
    assert_true(nonzero > m->nparams / 2);
    free(x);
    cnn_model_free(m);
}

/* Text of the summary (or the JSON) of ini, malloc'd. */
static char *summary_of(const char *ini, int json)
{
    cnn_model *m = tu_model(ini, CNN_LOSS_SPARSE_CCE, 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    if (json)
        cnn_model_summary_json(m, f);
    else
        cnn_model_summary(m, f);
    fclose(f);
    cnn_model_free(m);
    return buf;
}

static void test_functional_summary(void **state)
{
    (void)state;
    char *s = summary_of(resnet20_nobn, 0);
    assert_non_null(strstr(s, "Connected to"));
    assert_non_null(strstr(s, " input (InputLayer)             [(None, 32, 32, 3)]  0           "
                              "[]"));
    /* an add lists one input a line, wrapped as Keras wraps */
    assert_non_null(strstr(s, " basic_add (Add)                (None, 32, 32, 16)   0           "
                              "['conv2d[0][0]',                 \n"
                              "                                                                  "
                              "'basic_conv2[0][0]']"));
    assert_non_null(strstr(s, "Total params: 271,690\nTrainable params: 271,690\n"
                              "Non-trainable params: 0\n"));
    free(s);
    /* no inputs key: the Sequential table, as Keras prints a Sequential model */
    s = summary_of("[input]\nshape = 4x4x1\n[flatten]\n[dense]\nunits = 2\n", 0);
    assert_null(strstr(s, "Connected to"));
    assert_null(strstr(s, "InputLayer"));
    assert_non_null(strstr(s, " dense (Dense)                (None, 2)                 34"));
    free(s);
}

static void test_summary_json(void **state)
{
    (void)state;
    char *s = summary_of(resnet20_nobn, 1);
    assert_non_null(strstr(s, "\"input\": {\"name\": \"input\", \"shape\": [32, 32, 3]}"));
    assert_non_null(strstr(s, "{\"name\": \"down_shortcut\", \"type\": \"conv2d\", \"class_name\": "
                              "\"Conv2D\",\n     \"keys\": {\"filters\": \"32\", \"kernel\": \"1\", "
                              "\"stride\": \"2\", \"padding\": \"same\"},\n     \"inputs\": "
                              "[\"basic_2_add\"], \"output_shape\": [16, 16, 32], \"activation\": "
                              "\"linear\",\n     \"params\": 544, \"trainable_params\": 544, "
                              "\"non_trainable_params\": 0,\n     \"tensors\": [{\"name\": \"kernel\", "
                              "\"shape\": [32, 16, 1, 1], \"trainable\": true}, {\"name\": \"bias\", "
                              "\"shape\": [32], \"trainable\": true}]}"));
    assert_non_null(strstr(s, "\"inputs\": [\"down_shortcut\", \"down_conv2\"]"));
    assert_non_null(strstr(s, "\"output\": \"dense\",\n  \"total_params\": 271690,"));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_tensor_read_in_place),
        cmocka_unit_test(test_execution_order),
        cmocka_unit_test(test_graph_errors),
        cmocka_unit_test(test_resnet_from_blocks),
        cmocka_unit_test(test_functional_summary),
        cmocka_unit_test(test_summary_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
