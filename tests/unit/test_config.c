/* test_config.c - the INI config: every error names the file and line (or
 * --set) and carries the right status; overrides, fractions, comments; and
 * the parameter counts of the seed models built from config text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cnn/optim.h"
#include "testutil.h"

#define NAME "net.ini"

/* What the trainer does with a config, minus [train]/[data] (read by the
 * CLI): parse, build the model, read [optimizer], reject unused keys. */
static cnn_status full_setup(const char *text, cnn_loss loss, cnn_error *err)
{
    cnn_config *cfg = NULL;
    cnn_model *m = NULL;
    cnn_optim_hparams hp;
    cnn_status st;
    memset(err, 0, sizeof *err);
    if ((st = cnn_config_parse_string(&cfg, text, NAME, err)))
        return st;
    if (!(st = cnn_model_create(&m, cfg, loss, err)) &&
        !(st = cnn_optim_hparams_from_config(&hp, cfg, err)))
        st = cnn_config_check_unused(cfg, err);
    cnn_model_free(m);
    cnn_config_free(cfg);
    return st;
}

/* A valid network to append broken bits to (lines 1-8). */
#define NET_OK                                                                                    \
    "[input]\n"             /* 1 */                                                               \
    "shape = 6x6x1\n"       /* 2 */                                                               \
    "[conv2d]\n"            /* 3 */                                                               \
    "filters = 2\n"         /* 4 */                                                               \
    "kernel = 3\n"          /* 5 */                                                               \
    "[flatten]\n"           /* 6 */                                                               \
    "[dense]\n"             /* 7 */                                                               \
    "units = 3\n"           /* 8 */

/* Runs full_setup and checks status and that the message contains every
 * needle (NULL-terminated). */
static void expect_error(const char *text, cnn_status want, ...)
{
    cnn_error err;
    cnn_status st = full_setup(text, CNN_LOSS_SPARSE_CCE, &err);
    TU_STATUS(st, want, err);
    assert_int_equal(err.status, want);
    va_list ap;
    va_start(ap, want);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        TU_MSG_HAS(err, needle);
    va_end(ap);
}

static void test_valid_config_passes(void **state)
{
    (void)state;
    cnn_error err;
    cnn_status st = full_setup(NET_OK "activation = softmax\n[optimizer]\ntype = sgd\nlr = 0.1\n"
                                      "momentum = 0.9\nnesterov = true\n",
                               CNN_LOSS_SPARSE_CCE, &err);
    TU_STATUS(st, CNN_OK, err);
}

static void test_unknown_section(void **state)
{
    (void)state;
    expect_error("[input]\nshape = 6x6x1\n\n[conv3d]\nfilters = 2\n", CNN_ERR_CONFIG,
                 NAME ":4:", "unknown section", "[conv3d]", NULL);
    /* before [input] too; the list names every section a config may have */
    expect_error("[trian]\nepochs = 1\n" NET_OK, CNN_ERR_CONFIG, NAME ":1: unknown section [trian]",
                 "data, train, optimizer, dist, augment, checkpoint, early_stopping, "
                 "reduce_lr_on_plateau, tune, search or a layer: input, conv2d, maxpool2d, avgpool2d, dense, "
                 "dropout, flatten",
                 NULL);
}

static void test_unknown_key(void **state)
{
    (void)state;
    /* a misspelt key in a layer */
    expect_error(NET_OK "activaton = softmax\n", CNN_ERR_CONFIG, NAME ":9:", "[dense]",
                 "activaton", "unknown key", NULL);
    /* a key the chosen optimizer does not read */
    expect_error(NET_OK "[optimizer]\ntype = adam\nmomentum = 0.9\n", CNN_ERR_CONFIG, NAME ":11:",
                 "[optimizer]", "momentum", "unknown key", NULL);
}

static void test_duplicate_key(void **state)
{
    (void)state;
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nfilters = 2\nkernel = 3\nfilters = 4\n",
                 CNN_ERR_CONFIG, NAME ":6:", "duplicate key 'filters'", "line 4", NULL);
}

static void test_singleton_twice(void **state)
{
    (void)state;
    expect_error("[train]\nepochs = 1\n" NET_OK "[train]\nbatch_size = 2\n", CNN_ERR_CONFIG,
                 NAME ":11:", "[train]", "twice", "line 1", NULL);
}

static void test_bad_values(void **state)
{
    (void)state;
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nfilters = abc\nkernel = 3\n[flatten]\n"
                 "[dense]\nunits = 3\n",
                 CNN_ERR_CONFIG, NAME ":4:", "[conv2d] filters", "'abc'", "not an integer", NULL);
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nkernel = 3\nfilters = 0\n[flatten]\n"
                 "[dense]\nunits = 3\n",
                 CNN_ERR_CONFIG, NAME ":5:", "[conv2d] filters", "out of range", NULL);
    expect_error(NET_OK "activation = relux\n", CNN_ERR_CONFIG, NAME ":9:", "[dense] activation",
                 "'relux'", "relu", NULL);
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nfilters = 2\nkernel = 3\npadding = middle\n"
                 "[flatten]\n[dense]\nunits = 3\n",
                 CNN_ERR_CONFIG, NAME ":6:", "padding", "'middle'", "same", NULL);
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nfilters = 2\nkernel = 3x\n[flatten]\n"
                 "[dense]\nunits = 3\n",
                 CNN_ERR_CONFIG, NAME ":5:", "[conv2d] kernel", "'3x'", "HxW", NULL);
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nfilters = 2\nkernel = 0\n[flatten]\n"
                 "[dense]\nunits = 3\n",
                 CNN_ERR_CONFIG, NAME ":5:", "[conv2d] kernel", "positive", NULL);
    expect_error("[input]\nshape = 28x28\n[flatten]\n[dense]\nunits = 3\n", CNN_ERR_CONFIG,
                 NAME ":2:", "[input] shape", "'28x28'", "HxWxC", NULL);
    expect_error("[input]\nshape = 28x28x1x\n[flatten]\n[dense]\nunits = 3\n", CNN_ERR_CONFIG,
                 NAME ":2:", "[input] shape", NULL);
    expect_error(NET_OK "[dropout]\nrate = 1.5\n[dense]\nunits = 2\n", CNN_ERR_CONFIG,
                 NAME ":10:", "[dropout] rate", "out of range", NULL);
}

static void test_missing_things(void **state)
{
    (void)state;
    /* No layer sections at all: there is no line to name, only the file. */
    expect_error("[optimizer]\ntype = sgd\n", CNN_ERR_CONFIG, NAME, "no [input]", NULL);
    expect_error("[conv2d]\nfilters = 2\nkernel = 3\n[input]\nshape = 6x6x1\n", CNN_ERR_CONFIG,
                 NAME ":1:", "[conv2d]", "before [input]", NULL);
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nkernel = 3\n[flatten]\n[dense]\nunits = 3\n",
                 CNN_ERR_CONFIG, NAME ":3:", "[conv2d] filters", "missing", NULL);
    expect_error("[input]\nshape = 6x6x1\n[flatten]\n[input]\nshape = 3x3x1\n[dense]\nunits = 3\n",
                 CNN_ERR_CONFIG, NAME ":4:", "[input]", NULL);
    expect_error("[input]\nshape = 6x6x1\n[flatten]\n[dense]\nactivation = softmax\n",
                 CNN_ERR_CONFIG, NAME ":4:", "[dense] units", "missing", NULL);
}

static void test_dense_without_flatten(void **state)
{
    (void)state;
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nfilters = 2\nkernel = 3\n[dense]\nunits = 3\n",
                 CNN_ERR_SHAPE, NAME ":6:", "flatten", NULL);
}

static void test_duplicate_layer_names(void **state)
{
    (void)state;
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nname = a\nfilters = 2\nkernel = 3\n"
                 "[flatten]\n[dense]\nname = a\nunits = 3\n",
                 CNN_ERR_CONFIG, NAME ":8:", "'a'", "twice", NULL);
}

static void test_syntax_error(void **state)
{
    (void)state;
    expect_error("[input]\nshape = 6x6x1\n; a comment\nthis line has no equals sign\n[flatten]\n",
                 CNN_ERR_CONFIG, NAME ":4:", "syntax", NULL);
    expect_error("[input]\nshape = 6x6x1\n[flatten\n", CNN_ERR_CONFIG, NAME ":3:", NULL);
    expect_error("shape = 6x6x1\n[input]\n", CNN_ERR_CONFIG, NAME ":1:", "shape", NULL);
}

/* A window bigger than its (padded) input is a shape error, and like every
 * other error built from the config it must point at the section. */
static void test_window_does_not_fit(void **state)
{
    (void)state;
    expect_error("[input]\nshape = 3x3x1\n[conv2d]\nfilters = 2\nkernel = 5\n[flatten]\n"
                 "[dense]\nunits = 3\n",
                 CNN_ERR_SHAPE, "does not fit", "5x5", "3x3", NAME ":3:", NULL);
    expect_error("[input]\nshape = 6x6x1\n[conv2d]\nfilters = 2\nkernel = 3\n"
                 "[maxpool2d]\nsize = 5\n[flatten]\n[dense]\nunits = 3\n",
                 CNN_ERR_SHAPE, "does not fit", NAME ":6:", NULL);
}

static void test_comments(void **state)
{
    (void)state;
    cnn_error err;
    const char *text = "; a comment with ;\n"
                       "# a comment with #\n"
                       "[input] ; the input\n"
                       "shape = 6x6x1 ; inline comment\n"
                       "  # indented comment\n"
                       "[conv2d]\n"
                       "filters = 2\n"
                       "kernel = 3\n"
                       "\n"
                       "[flatten]\n"
                       "[dense]\n"
                       "units = 3 ; three classes\n";
    TU_STATUS(full_setup(text, CNN_LOSS_SPARSE_CCE, &err), CNN_OK, err);
    cnn_config *cfg;
    TU_STATUS(cnn_config_parse_string(&cfg, text, NAME, &err), CNN_OK, err);
    cnn_section *in = cnn_config_find(cfg, "input");
    assert_non_null(in);
    assert_string_equal(cnn_section_get(in, "shape"), "6x6x1");
    assert_int_equal(in->line, 3);
    assert_int_equal(cnn_section_find(in, "shape")->line, 4);
    assert_int_equal(cnn_config_find(cfg, "dense")->kv[0].line, 12);
    cnn_config_free(cfg);
    /* A line after comments is still counted right in errors. */
    expect_error("# one\n; two\n[input]\nshape = 6x6x1\n# three\n[conv2d]\nfilters = x\n"
                 "kernel = 3\n",
                 CNN_ERR_CONFIG, NAME ":7:", NULL);
}

/* A comment longer than inih's line buffer (INI_MAX_LINE = 200) is still a
 * comment - or at worst an error that says line 1 is too long - and the
 * lines after it keep their numbers. */
static void test_long_comment_line(void **state)
{
    (void)state;
    char text[2048];
    char longc[400];
    memset(longc, 'x', sizeof longc - 1);
    longc[0] = ';';
    longc[sizeof longc - 1] = 0;
    snprintf(text, sizeof text, "%s\n" NET_OK, longc);
    cnn_error err;
    if (full_setup(text, CNN_LOSS_SPARSE_CCE, &err) != CNN_OK) {
        TU_MSG_HAS(err, NAME ":1:");
        TU_MSG_HAS(err, "long");
        return;
    }
    snprintf(text, sizeof text, "%s\n[input]\nshape = 6x6x1\n[conv2d]\nfilters = x\nkernel = 3\n",
             longc);
    expect_error(text, CNN_ERR_CONFIG, NAME ":5:", NULL);
}

/* A value longer than inih's line buffer (a data path: cnn_data_config
 * holds paths of up to 1023 characters) is kept whole, or rejected with a
 * message that says the line is too long - never cut in two. */
static void test_long_value_line(void **state)
{
    (void)state;
    char text[2048];
    cnn_error err = {0};
    char path[301];
    memset(path, 'p', sizeof path - 1);
    path[0] = '/';
    path[sizeof path - 1] = 0;
    snprintf(text, sizeof text, "[data]\ndir = %s\nrescale = 1\n", path);
    cnn_config *cfg = NULL;
    cnn_status st = cnn_config_parse_string(&cfg, text, NAME, &err);
    if (st != CNN_OK) {
        TU_MSG_HAS(err, NAME ":2:");
        TU_MSG_HAS(err, "long");
        return;
    }
    const char *dir = cnn_section_get(cnn_config_find(cfg, "data"), "dir");
    assert_non_null(dir);
    assert_string_equal(dir, path);
    cnn_config_free(cfg);
}

static void test_fraction(void **state)
{
    (void)state;
    cnn_error err = {0};
    cnn_config *cfg;
    TU_STATUS(cnn_config_parse_string(&cfg, "[data]\nrescale = 1/255\na = 0.5\nb = 3/0\nc = 1/\n"
                                            "d = 2.5e-1\ne = 1/x\n",
                                      NAME, &err),
              CNN_OK, err);
    const cnn_section *s = cnn_config_find(cfg, "data");
    double v = 0;
    TU_STATUS(cnn_cfg_float(s, "rescale", 1, 0, 10, &v, &err), CNN_OK, err);
    TU_NEAR(v, 1.0 / 255.0, 1e-15);
    TU_STATUS(cnn_cfg_float(s, "a", 1, 0, 10, &v, &err), CNN_OK, err);
    TU_NEAR(v, 0.5, 0);
    TU_STATUS(cnn_cfg_float(s, "d", 1, 0, 10, &v, &err), CNN_OK, err);
    TU_NEAR(v, 0.25, 0);
    TU_STATUS(cnn_cfg_float(s, "absent", 7.5, 0, 10, &v, &err), CNN_OK, err);
    TU_NEAR(v, 7.5, 0);
    TU_STATUS(cnn_cfg_float(s, "b", 1, 0, 10, &v, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, NAME ":4: [data] b");
    TU_STATUS(cnn_cfg_float(s, "c", 1, 0, 10, &v, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, NAME ":5:");
    TU_STATUS(cnn_cfg_float(s, "e", 1, 0, 10, &v, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, NAME ":7:");
    TU_STATUS(cnn_cfg_float(s, "a", 1, 0.6, 10, &v, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "out of range");
    cnn_config_free(cfg);
}

static void test_typed_getters(void **state)
{
    (void)state;
    cnn_error err = {0};
    cnn_config *cfg;
    TU_STATUS(cnn_config_parse_string(&cfg, "[train]\nn = 42\nyes = yes\noff = off\npair = 3x2\n"
                                            "one = 5\ncomma = 4,7\nbig = 99999999999999999999\n",
                                      NAME, &err),
              CNN_OK, err);
    const cnn_section *s = cnn_config_find(cfg, "train");
    long n;
    int b, h, w;
    TU_STATUS(cnn_cfg_int(s, "n", 0, 0, 100, &n, &err), CNN_OK, err);
    assert_int_equal(n, 42);
    TU_STATUS(cnn_cfg_int(s, "big", 0, 0, 100, &n, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, NAME ":8: [train] big");
    TU_STATUS(cnn_cfg_bool(s, "yes", 0, &b, &err), CNN_OK, err);
    assert_int_equal(b, 1);
    TU_STATUS(cnn_cfg_bool(s, "off", 1, &b, &err), CNN_OK, err);
    assert_int_equal(b, 0);
    TU_STATUS(cnn_cfg_pair(s, "pair", 0, 0, &h, &w, &err), CNN_OK, err);
    assert_int_equal(h, 3);
    assert_int_equal(w, 2);
    TU_STATUS(cnn_cfg_pair(s, "one", 0, 0, &h, &w, &err), CNN_OK, err);
    assert_int_equal(h, 5);
    assert_int_equal(w, 5);
    TU_STATUS(cnn_cfg_pair(s, "comma", 0, 0, &h, &w, &err), CNN_OK, err);
    assert_int_equal(h, 4);
    assert_int_equal(w, 7);
    /* getters mark keys used; the one key never read is reported */
    TU_STATUS(cnn_config_check_unused(cfg, &err), CNN_OK, err);
    cnn_config_free(cfg);
    TU_STATUS(cnn_config_parse_string(&cfg, "[train]\nn = 42\nm = 1\n", NAME, &err), CNN_OK, err);
    TU_STATUS(cnn_cfg_int(cnn_config_find(cfg, "train"), "n", 0, 0, 100, &n, &err), CNN_OK, err);
    TU_STATUS(cnn_config_check_unused(cfg, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, NAME ":3: [train] m");
    cnn_config_free(cfg);
}

/* Network used by the override tests: conv2d named cv1, then conv2d_1. */
#define NET_TWO_CONV                                                                              \
    "[train]\n"                                                                                   \
    "epochs = 5\n"                                                                                \
    "[input]\n"                                                                                   \
    "shape = 8x8x1\n"                                                                             \
    "[conv2d]\n"                                                                                  \
    "name = cv1\n"                                                                                \
    "filters = 2\n"                                                                               \
    "kernel = 3\n"                                                                                \
    "[conv2d]\n"                                                                                  \
    "filters = 3\n"                                                                               \
    "kernel = 3\n"                                                                                \
    "[flatten]\n"                                                                                 \
    "[dense]\n"                                                                                   \
    "units = 2\n"

static void test_overrides(void **state)
{
    (void)state;
    cnn_error err = {0};
    cnn_config *cfg;
    TU_STATUS(cnn_config_parse_string(&cfg, NET_TWO_CONV, NAME, &err), CNN_OK, err);
    long epochs;
    TU_STATUS(cnn_config_override(cfg, "train.epochs=3", &err), CNN_OK, err);
    TU_STATUS(cnn_cfg_int(cnn_config_find(cfg, "train"), "epochs", 1, 0, 100, &epochs, &err),
              CNN_OK, err);
    assert_int_equal(epochs, 3);
    TU_STATUS(cnn_config_override(cfg, "cv1.filters=8", &err), CNN_OK, err);
    TU_STATUS(cnn_config_override(cfg, "conv2d_1.filters=5", &err), CNN_OK, err);
    TU_STATUS(cnn_config_override(cfg, "conv2d_1.stride=2", &err), CNN_OK, err); /* a new key */
    TU_STATUS(cnn_config_override(cfg, "dense.activation=softmax", &err), CNN_OK, err);
    /* a singleton section that is absent is created */
    TU_STATUS(cnn_config_override(cfg, "optimizer.type=rmsprop", &err), CNN_OK, err);
    cnn_model *m = NULL;
    TU_STATUS(cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err), CNN_OK, err);
    assert_string_equal(m->layers[0].name, "cv1");
    assert_string_equal(m->layers[1].name, "conv2d_1");
    assert_int_equal(m->layers[0].out.c, 8);
    assert_int_equal(m->layers[1].out.c, 5);
    assert_int_equal(m->layers[1].params[0].dims[1], 8); /* Cin follows the override */
    assert_int_equal(m->layers[1].out.h, 2);            /* (6 - 3) / 2 + 1 */
    assert_int_equal(m->layers[3].act, CNN_ACT_SOFTMAX);
    cnn_optim_hparams hp;
    TU_STATUS(cnn_optim_hparams_from_config(&hp, cfg, &err), CNN_OK, err);
    assert_int_equal(hp.type, CNN_OPT_RMSPROP);
    cnn_model_free(m);

    /* unknown target and malformed assignments */
    TU_STATUS(cnn_config_override(cfg, "nope.filters=3", &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "--set");
    TU_MSG_HAS(err, "nope");
    TU_STATUS(cnn_config_override(cfg, "conv2d_7.filters=3", &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "conv2d_7");
    TU_STATUS(cnn_config_override(cfg, "trainepochs=3", &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "section.key=value");
    TU_STATUS(cnn_config_override(cfg, "train.epochs", &err), CNN_ERR_CONFIG, err);
    cnn_config_free(cfg);

    /* A type name shared by several layers (whose default names differ from
     * the type) is ambiguous; the default names pick one. */
    TU_STATUS(cnn_config_parse_string(&cfg,
                                      "[input]\nshape = 8x8x1\n[maxpool2d]\nsize = 2\n"
                                      "[maxpool2d]\nsize = 2\n[flatten]\n",
                                      NAME, &err),
              CNN_OK, err);
    /* without the engine's namer config knows no Keras-style default name */
    TU_STATUS(cnn_config_override(cfg, "max_pooling2d_1.size=1", &err), CNN_ERR_CONFIG, err);
    cfg->layer_base = cnn_layer_default_name;
    TU_STATUS(cnn_config_override(cfg, "maxpool2d.size=1", &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "maxpool2d");
    TU_STATUS(cnn_config_override(cfg, "max_pooling2d_1.size=1", &err), CNN_OK, err);
    TU_STATUS(cnn_model_create(&m, cfg, CNN_LOSS_MSE, &err), CNN_OK, err);
    assert_int_equal(m->layers[0].out.h, 4);
    assert_int_equal(m->layers[1].out.h, 4); /* size 1: unchanged */
    cnn_model_free(m);
    cnn_config_free(cfg);
}

/* Errors about an overridden value say "--set", not a file line. */
static void test_override_errors_say_set(void **state)
{
    (void)state;
    cnn_error err = {0};
    cnn_config *cfg;
    cnn_model *m = NULL;
    TU_STATUS(cnn_config_parse_string(&cfg, NET_TWO_CONV, NAME, &err), CNN_OK, err);
    TU_STATUS(cnn_config_override(cfg, "conv2d_1.filters=abc", &err), CNN_OK, err);
    TU_STATUS(cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err), CNN_ERR_CONFIG, err);
    assert_null(m);
    TU_MSG_HAS(err, "--set");
    TU_MSG_HAS(err, "filters");
    TU_MSG_HAS(err, "'abc'");
    assert_null(strstr(err.msg, NAME ":"));
    cnn_config_free(cfg);

    /* a key added by --set that nothing reads */
    TU_STATUS(cnn_config_parse_string(&cfg, NET_TWO_CONV, NAME, &err), CNN_OK, err);
    TU_STATUS(cnn_config_override(cfg, "cv1.filterz=4", &err), CNN_OK, err);
    TU_STATUS(cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err), CNN_OK, err);
    cnn_section *train = cnn_config_find(cfg, "train");
    long epochs;
    TU_STATUS(cnn_cfg_int(train, "epochs", 1, 0, 10, &epochs, &err), CNN_OK, err);
    TU_STATUS(cnn_config_check_unused(cfg, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "--set");
    TU_MSG_HAS(err, "filterz");
    cnn_model_free(m);
    cnn_config_free(cfg);
}

/* ---- parameter counts of the seed models ------------------------------ */

static size_t count_params(const char *text, cnn_loss loss)
{
    cnn_model *m = tu_model(text, loss, 0);
    size_t n = m->nparams, sum = 0;
    for (int i = 0; i < m->nlayers; i++)
        sum += m->layers[i].param_count;
    assert_int_equal(sum, n);
    cnn_model_free(m);
    return n;
}

static void test_param_counts(void **state)
{
    (void)state;
    const char *lenet = "[input]\nshape = 28x28x1\n"
                        "[conv2d]\nfilters = 6\nkernel = 5\nactivation = relu\n"
                        "[maxpool2d]\nsize = 2\n"
                        "[conv2d]\nfilters = 16\nkernel = 5\nactivation = relu\n"
                        "[maxpool2d]\nsize = 2\n"
                        "[flatten]\n"
                        "[dense]\nunits = 120\nactivation = relu\n"
                        "[dense]\nunits = 84\nactivation = relu\n"
                        "[dense]\nunits = 10\nactivation = softmax\n";
    assert_int_equal(count_params(lenet, CNN_LOSS_CCE), 44426);

    const char *fashion = "[input]\nshape = 28x28x1\n"
                          "[conv2d]\nfilters = 16\nkernel = 3\npadding = same\nactivation = relu\n"
                          "[conv2d]\nfilters = 16\nkernel = 3\npadding = same\nactivation = relu\n"
                          "[maxpool2d]\nsize = 2\n"
                          "[flatten]\n"
                          "[dense]\nunits = 64\nactivation = relu\n"
                          "[dense]\nunits = 10\nactivation = softmax\n";
    assert_int_equal(count_params(fashion, CNN_LOSS_SPARSE_CCE), 203898);

    const char *cifar = "[input]\nshape = 32x32x3\n"
                        "[conv2d]\nfilters = 32\nkernel = 3\nactivation = relu\n"
                        "[maxpool2d]\nsize = 2\n"
                        "[conv2d]\nfilters = 64\nkernel = 3\nactivation = relu\n"
                        "[maxpool2d]\nsize = 2\n"
                        "[conv2d]\nfilters = 64\nkernel = 3\nactivation = relu\n"
                        "[flatten]\n"
                        "[dense]\nunits = 512\nactivation = relu\n"
                        "[dense]\nunits = 10\nactivation = softmax\n";
    assert_int_equal(count_params(cifar, CNN_LOSS_SPARSE_CCE), 586250);

    const char *catsdogs = "[input]\nshape = 224x224x3\n"
                           "[conv2d]\nfilters = 16\nkernel = 3\nactivation = relu\n"
                           "[maxpool2d]\nsize = 2\n"
                           "[conv2d]\nfilters = 64\nkernel = 3\nactivation = relu\n"
                           "[maxpool2d]\nsize = 2\n"
                           "[conv2d]\nfilters = 32\nkernel = 3\nactivation = relu\n"
                           "[maxpool2d]\nsize = 2\n"
                           "[flatten]\n"
                           "[dense]\nunits = 256\nactivation = relu\n"
                           "[dropout]\nrate = 0.5\n"
                           "[dense]\nunits = 1\nactivation = sigmoid\n";
    assert_int_equal(count_params(catsdogs, CNN_LOSS_BCE), 5566497);

    const char *simple = "[input]\nshape = 64x64x3\n"
                         "[conv2d]\nfilters = 32\nkernel = 3\nactivation = relu\n"
                         "[maxpool2d]\nsize = 2\n"
                         "[flatten]\n"
                         "[dense]\nunits = 128\nactivation = relu\n"
                         "[dense]\nunits = 1\nactivation = sigmoid\n";
    assert_int_equal(count_params(simple, CNN_LOSS_BCE), 3937409);

    /* use_bias = false drops exactly the bias vectors */
    assert_int_equal(count_params("[input]\nshape = 5x5x2\n[conv2d]\nfilters = 3\nkernel = 3\n"
                                  "use_bias = false\n[flatten]\n[dense]\nunits = 2\n"
                                  "use_bias = no\n",
                                  CNN_LOSS_SPARSE_CCE),
                     3 * 2 * 9 + 27 * 2);
}

/* The loss decides what the head may be. */
static void test_head_checks(void **state)
{
    (void)state;
    cnn_error err;
    /* BCE needs one unit */
    TU_STATUS(full_setup(NET_OK "activation = sigmoid\n", CNN_LOSS_BCE, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "binary_crossentropy");
    /* cross-entropy needs >= 2 units */
    TU_STATUS(full_setup("[input]\nshape = 4x4x1\n[flatten]\n[dense]\nunits = 1\n",
                         CNN_LOSS_SPARSE_CCE, &err),
              CNN_ERR_CONFIG, err);
    /* cross-entropy rejects a relu head */
    TU_STATUS(full_setup(NET_OK "activation = relu\n", CNN_LOSS_CCE, &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "softmax");
    /* the model must end flat */
    TU_STATUS(full_setup("[input]\nshape = 4x4x1\n[conv2d]\nfilters = 2\nkernel = 3\n",
                         CNN_LOSS_MSE, &err),
              CNN_ERR_SHAPE, err);
    TU_MSG_HAS(err, "flatten");
    /* softmax on an image output */
    TU_STATUS(full_setup("[input]\nshape = 4x4x1\n[conv2d]\nfilters = 2\nkernel = 3\n"
                         "activation = softmax\n[flatten]\n[dense]\nunits = 2\n",
                         CNN_LOSS_MSE, &err),
              CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, NAME ":3:");
    TU_MSG_HAS(err, "softmax");
}

/* ---- blocks ------------------------------------------------------------ */

/* A block (lines 1-9), then a network that instantiates it from line 10. */
#define BLOCK_RES                                                                                 \
    "[block res]\n"         /* 1 */                                                               \
    "filters =\n"           /* 2 */                                                               \
    "kernel = 3\n"          /* 3 */                                                               \
    "[conv2d]\n"            /* 4 */                                                               \
    "name = c\n"            /* 5 */                                                               \
    "filters = $filters\n"  /* 6 */                                                               \
    "kernel = ${kernel}\n"  /* 7 */                                                               \
    "padding = same\n"      /* 8 */                                                               \
    "[end]\n"               /* 9 */                                                               \
    "[input]\n"             /* 10 */                                                              \
    "shape = 6x6x1\n"       /* 11 */

static void test_block_expansion(void **state)
{
    (void)state;
    cnn_config *cfg;
    cnn_error err = {0};
    TU_STATUS(cnn_config_parse_string(&cfg,
                                      BLOCK_RES "[res]\nfilters = 4\nrepeat = 2\n" /* 12-14 */
                                                "[res]\nname = top\nfilters = 5\nkernel = 1\n"
                                                "[conv2d]\nfilters = 2\nkernel = 1\n"
                                                "[flatten]\n[dense]\nunits = 3\n",
                                      NAME, &err),
              CNN_OK, err);
    /* input, res, res_1, top, conv2d, flatten, dense */
    assert_int_equal(cfg->nsec, 7);
    const cnn_section *a = &cfg->sec[1], *b = &cfg->sec[2], *t = &cfg->sec[3];
    assert_string_equal(a->name, "conv2d");
    assert_string_equal(a->block, "res");
    assert_int_equal(a->line, 12);       /* the instance */
    assert_int_equal(a->block_line, 4);  /* the block's [conv2d] */
    assert_int_equal(a->block_first, 1);
    assert_int_equal(b->block_first, 2);
    assert_string_equal(cnn_section_find(a, "name")->value, "res_c");
    assert_string_equal(cnn_section_find(b, "name")->value, "res_1_c");
    assert_string_equal(cnn_section_find(t, "name")->value, "top_c");
    assert_string_equal(cnn_section_find(a, "filters")->value, "4");
    assert_int_equal(cnn_section_find(a, "filters")->line, 13); /* from the instance */
    assert_int_equal(cnn_section_find(a, "kernel")->line, 7);   /* the block's default */
    assert_string_equal(cnn_section_find(a, "kernel")->value, "3");
    assert_string_equal(cnn_section_find(t, "kernel")->value, "1");
    assert_int_equal(cfg->sec[4].ordinal, 3); /* the file's conv2d is the fourth */
    assert_null(cfg->sec[4].block);
    /* the model names and chains them */
    cnn_model *m;
    TU_STATUS(cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err), CNN_OK, err);
    assert_string_equal(m->layers[0].name, "res_c");
    assert_string_equal(m->layers[2].name, "top_c");
    assert_string_equal(m->layers[3].name, "conv2d_3");
    assert_int_equal(m->layers[2].out.c, 5);
    assert_int_equal(m->layers[1].in.c, 4);
    assert_false(m->functional);
    cnn_model_free(m);
    /* --set cannot change one instance's copy of the block */
    cfg->layer_base = cnn_layer_default_name;
    TU_STATUS(cnn_config_override(cfg, "res_c.filters=8", &err), CNN_ERR_CONFIG, err);
    TU_MSG_HAS(err, "--set res_c.filters=8: layer 'res_c' comes from block 'res' (instance at "
                    "net.ini:12)");
    cnn_config_free(cfg);
}

static void test_block_errors(void **state)
{
    (void)state;
    /* a bad parameter value: reported at the instance's line */
    expect_error(BLOCK_RES "[res]\nfilters = many\n[flatten]\n[dense]\nunits = 3\n",
                 CNN_ERR_CONFIG, "net.ini:13: [conv2d] filters: 'many' is not an integer", NULL);
    expect_error(BLOCK_RES "[res]\nfilters = 2\nfitlers = 3\n", CNN_ERR_CONFIG,
                 "net.ini:14: [res] fitlers: not a parameter of block 'res' (line 1; "
                 "parameters: filters, kernel; also name, inputs, repeat)",
                 NULL);
    expect_error(BLOCK_RES "[res]\nkernel = 1\n", CNN_ERR_CONFIG,
                 "net.ini:12: [res] filters: missing; block 'res' (line 1) needs it", NULL);
    expect_error(BLOCK_RES "[res]\nfilters = 2\nrepeat = 0\n", CNN_ERR_CONFIG,
                 "net.ini:14: [res] repeat: '0' is out of range", NULL);
    expect_error(BLOCK_RES "[res]\nfilters =\n", CNN_ERR_CONFIG, "net.ini:13: [res] filters: is empty",
                 NULL);
    expect_error("[block b]\n[conv2d]\nfilters = $filtres\n[end]\n", CNN_ERR_CONFIG,
                 "net.ini:3: [conv2d] filters: '$filtres' is no parameter of block 'b'", NULL);
    expect_error("[block b]\n[conv2d]\nfilters = ${x\n[end]\n", CNN_ERR_CONFIG,
                 "net.ini:3: [conv2d] filters: '${x': a '$' must start", NULL);
    expect_error("[block b]\nf = 1\n[conv2d]\nfilters = 2\n", CNN_ERR_CONFIG,
                 "net.ini:1: block 'b' has no [end]", NULL);
    expect_error("[block b]\n[end]\n", CNN_ERR_CONFIG, "net.ini:1: block 'b' has no sections", NULL);
    expect_error("[input]\nshape = 2x2x1\n[end]\n", CNN_ERR_CONFIG, "net.ini:3: [end] outside a block",
                 NULL);
    expect_error("[block b]\n[conv2d]\n[block c]\n[dense]\n[end]\n[end]\n", CNN_ERR_CONFIG,
                 "net.ini:3: [block c] inside block 'b' (line 1)", NULL);
    expect_error("[block b]\n[train]\n[end]\n", CNN_ERR_CONFIG,
                 "net.ini:2: [train] inside block 'b'", NULL);
    expect_error("[block b]\nname = x\n[dense]\n[end]\n", CNN_ERR_CONFIG,
                 "net.ini:2: [block b] name: not a possible parameter name", NULL);
    expect_error("[block b]\n[dense]\n[end]\n[block b]\n[dense]\n[end]\n", CNN_ERR_CONFIG,
                 "net.ini:4: block 'b' is defined twice", NULL);
    expect_error("[block 2x]\n[dense]\n[end]\n", CNN_ERR_CONFIG, "net.ini:1: [block 2x]: a block's name",
                 NULL);
    /* a shape error inside an instance names the instance and the block's line */
    expect_error("[block b]\n[conv2d]\nfilters = 2\nkernel = 9\n[end]\n[input]\nshape = 4x4x1\n"
                 "[b]\n[flatten]\n[dense]\nunits = 2\n",
                 CNN_ERR_SHAPE, "net.ini:8: block 'b' ([conv2d] at line 2): layer 'conv2d'",
                 NULL);
}

/* $input: the layer before the instance, or the instance's inputs. */
static void test_block_input(void **state)
{
    (void)state;
    static const char *text =
        "[block skip]\n[conv2d]\nname = c\nfilters = 2\nkernel = 1\n"
        "[add]\nname = sum\ninputs = $input, c\n[end]\n"
        "[input]\nshape = 3x3x2\n"
        "[conv2d]\nname = pre\nfilters = 2\nkernel = 1\n"
        "[skip]\n"                 /* reads pre */
        "[skip]\ninputs = pre\n"   /* reads pre too */
        "[add]\ninputs = skip_sum, skip_1_sum\n[flatten]\n[dense]\nunits = 2\n";
    cnn_model *m = tu_model(text, CNN_LOSS_SPARSE_CCE, 0);
    const char *want[][3] = {{"skip_c", "pre", NULL}, {"skip_sum", "pre", "skip_c"},
                             {"skip_1_c", "pre", NULL}, {"skip_1_sum", "pre", "skip_1_c"}};
    for (int i = 0; i < 4; i++) {
        const cnn_layer *l = &m->layers[i + 1];
        assert_string_equal(l->name, want[i][0]);
        for (int k = 0; k < l->ninputs; k++)
            assert_string_equal(m->layers[l->input[k]].name, want[i][k + 1]);
    }
    cnn_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_config_passes),
        cmocka_unit_test(test_unknown_section),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_singleton_twice),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_missing_things),
        cmocka_unit_test(test_dense_without_flatten),
        cmocka_unit_test(test_duplicate_layer_names),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_window_does_not_fit),
        cmocka_unit_test(test_comments),
        cmocka_unit_test(test_long_comment_line),
        cmocka_unit_test(test_long_value_line),
        cmocka_unit_test(test_fraction),
        cmocka_unit_test(test_typed_getters),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_override_errors_say_set),
        cmocka_unit_test(test_param_counts),
        cmocka_unit_test(test_head_checks),
        cmocka_unit_test(test_block_expansion),
        cmocka_unit_test(test_block_errors),
        cmocka_unit_test(test_block_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
