/* test_checkpoint.c - HDF5 checkpoints: bit-exact round trips, the
 * checkpoint directory (latest, prune), atomic writes, and every way a
 * damaged or mismatched file is refused with one line naming the file and
 * the dataset, leaving model, optimizer, state and history untouched.
 * Files are damaged on purpose with h5_surgery (tests/tools). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnn/checkpoint.h"
#include "h5_surgery.h"
#include "cnn/layer.h"
#include "testutil.h"

/* cv1 kernel (4, 1, 3, 3), cv2 kernel (F2, 4, 3, 3), out kernel (F2, 3). */
#define NET_F2(f2)                                                                                \
    "[input]\nshape = 8x8x1\n"                                                                    \
    "[conv2d]\nname = cv1\nfilters = 4\nkernel = 3\nactivation = relu\n"                          \
    "[maxpool2d]\nsize = 2\n"                                                                     \
    "[conv2d]\nname = cv2\nfilters = " #f2 "\nkernel = 3\nactivation = relu\n"                    \
    "[flatten]\n"                                                                                 \
    "[dense]\nname = out\nunits = 3\nactivation = softmax\n"
#define NET NET_F2(6)

static const char *const CLASSES[] = {"cat", "dog", "a rather longer class name"};

/* ---- fixtures ------------------------------------------------------------ */

typedef struct fixture {
    char dir[64];   /* a fresh temporary directory */
    char path[128]; /* dir/ckpt.h5, written by setup */
    cnn_model *m;
    cnn_optim *o; /* adam, with non-zero moments */
    cnn_train_state s;
    cnn_history h; /* 3 epochs, the last without validation */
} fixture;

static cnn_model *model_of(const char *ini, uint64_t fill_seed)
{
    cnn_model *m = tu_model(ini, CNN_LOSS_SPARSE_CCE, 0);
    tu_fill(m->params, m->nparams, fill_seed, -1, 1);
    return m;
}

/* An optimizer of type t whose moments hold values derived from fill_seed. */
static cnn_optim *optim_of(cnn_optim_type t, double momentum, const cnn_model *m,
                           uint64_t fill_seed)
{
    cnn_error err = {0};
    cnn_optim *o = NULL;
    cnn_optim_hparams hp = cnn_optim_defaults(t);
    hp.momentum = momentum;
    TU_STATUS(cnn_optim_create(&o, &hp, m->nparams, &err), CNN_OK, err);
    if (o->state[0])
        tu_fill(o->state[0], o->n, fill_seed + 1, -0.1f, 0.1f);
    if (o->state[1])
        tu_fill(o->state[1], o->n, fill_seed + 2, 0, 0.01f);
    o->step = (int64_t)fill_seed;
    return o;
}

static void write_ok(const fixture *fx, const char *path, const cnn_model *m, const cnn_optim *o,
                     const cnn_train_state *s, const cnn_history *h)
{
    cnn_error err = {0};
    TU_STATUS(cnn_checkpoint_write(path, m, o, s, h, NET, CLASSES, 3, &err), CNN_OK, err);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/cnn-ckpt-test-XXXXXX");
    if (!fx || !mkdtemp(fx->dir))
        return -1;
    snprintf(fx->path, sizeof fx->path, "%s/ckpt.h5", fx->dir);
    fx->m = model_of(NET, 1);
    fx->o = optim_of(CNN_OPT_ADAM, 0, fx->m, 17);
    fx->o->hp.lr = 0.0123;
    fx->o->hp.beta1 = 0.8;
    fx->o->hp.weight_decay = 1e-4;
    fx->s = (cnn_train_state){.epoch = 3,
                              .step = 0,
                              .global_step = 1875,
                              .samples_seen = 60000,
                              .seed = 0xfedcba9876543210ULL,
                              .world = 4,
                              .best_val_accuracy = 0.8125};
    cnn_error err = {0};
    for (int e = 1; e <= 3; e++) {
        cnn_epoch_record r = {e, 1.0 / e, 0.5 + 0.1 * e, 1.1 / e, 0.4 + 0.1 * e, 1e-3, 2.5 * e,
                              1234.5};
        if (e == 3)
            r.val_loss = r.val_accuracy = NAN;
        TU_STATUS(cnn_history_append(&fx->h, &r, &err), CNN_OK, err);
    }
    write_ok(fx, fx->path, fx->m, fx->o, &fx->s, &fx->h);
    *state = fx;
    return 0;
}

/* Removes a directory tree (the tests make at most one level of subdirectory). */
static void rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        char p[512];
        struct stat sb;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            rm_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    fixture *fx = *state;
    rm_tree(fx->dir);
    cnn_model_free(fx->m);
    cnn_optim_free(fx->o);
    cnn_history_free(&fx->h);
    free(fx);
    return 0;
}

static int file_exists(const char *p) { return access(p, F_OK) == 0; }

static void copy_prefix(const char *from, const char *to, double fraction)
{
    FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
    assert_non_null(f);
    assert_non_null(g);
    fseek(f, 0, SEEK_END);
    long n = (long)(ftell(f) * fraction);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    assert_int_equal(fwrite(buf, 1, (size_t)n, g), (size_t)n);
    free(buf);
    fclose(f);
    fclose(g);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void assert_same_floats(const float *a, const float *b, size_t n)
{
    assert_memory_equal(a, b, n * sizeof *a);
}

/* Loads path into a fresh model of `ini` and a fresh optimizer of type t
 * (o == NULL when t < 0), expects status `want` and a message containing
 * the path and every needle (NULL-terminated), and checks that nothing was
 * changed. */
static void expect_load_fails(const char *path, const char *ini, int t, cnn_status want, ...)
{
    cnn_model *m = model_of(ini, 99);
    cnn_optim *o = t < 0 ? NULL : optim_of((cnn_optim_type)t, 0.9, m, 5);
    cnn_train_state s = {.epoch = 7, .global_step = 7};
    cnn_history h = {0};
    cnn_error err = {0};
    cnn_epoch_record r = {.epoch = 1, .loss = 9};
    TU_STATUS(cnn_history_append(&h, &r, &err), CNN_OK, err);
    float *p0 = malloc(m->nparams * sizeof(float)), *m0 = malloc(m->nparams * sizeof(float));
    memcpy(p0, m->params, m->nparams * sizeof(float));
    if (o)
        memcpy(m0, o->state[0], o->n * sizeof(float));

    TU_STATUS(cnn_checkpoint_load(path, m, o, &s, &h, &err), want, err);
    print_message("refused: %s\n", err.msg);
    assert_int_equal(err.status, want);
    assert_int_equal(cnn_status_exit_code(want), 2);
    TU_MSG_HAS(err, path);
    assert_null(strchr(err.msg, '\n'));
    va_list ap;
    va_start(ap, want);
    for (const char *needle; (needle = va_arg(ap, const char *));)
        TU_MSG_HAS(err, needle);
    va_end(ap);

    assert_same_floats(m->params, p0, m->nparams);
    if (o) {
        assert_same_floats(o->state[0], m0, o->n);
        assert_int_equal(o->step, 5);
    }
    assert_int_equal(s.epoch, 7);
    assert_int_equal(h.n, 1);
    assert_true(h.rows[0].loss == 9);
    free(p0);
    free(m0);
    cnn_history_free(&h);
    cnn_optim_free(o);
    cnn_model_free(m);
}

/* ---- round trips ---------------------------------------------------------- */

static void test_round_trip_bit_exact(void **state)
{
    fixture *fx = *state;
    cnn_error err = {0};
    cnn_model *m = model_of(NET, 2);
    cnn_optim *o = optim_of(CNN_OPT_ADAM, 0, m, 3);
    cnn_train_state s = {0};
    cnn_history h = {0};
    assert_memory_not_equal(m->params, fx->m->params, m->nparams * sizeof(float));
    TU_STATUS(cnn_checkpoint_load(fx->path, m, o, &s, &h, &err), CNN_OK, err);

    assert_same_floats(m->params, fx->m->params, m->nparams);
    assert_same_floats(o->state[0], fx->o->state[0], o->n);
    assert_same_floats(o->state[1], fx->o->state[1], o->n);
    assert_int_equal(o->step, 17);
    assert_true(o->hp.lr == 1e-3); /* the run's hyperparameters stay */
    assert_true(s.epoch == 3 && s.step == 0 && s.global_step == 1875 && s.samples_seen == 60000);
    assert_true(s.seed == 0xfedcba9876543210ULL && s.world == 4 && s.best_val_accuracy == 0.8125);
    assert_int_equal(h.n, 3);
    assert_memory_equal(h.rows, fx->h.rows, 3 * sizeof *h.rows); /* NaN bits included */
    assert_true(isnan(h.rows[2].val_loss));

    /* the stored hyperparameters, read back from the header */
    cnn_optim_hparams hp;
    cnn_train_state si;
    TU_STATUS(cnn_checkpoint_read_info(fx->path, &si, &hp, &err), CNN_OK, err);
    const cnn_optim_hparams *w0 = &fx->o->hp;
    assert_int_equal(hp.type, w0->type);
    assert_int_equal(hp.nesterov, w0->nesterov);
    assert_true(hp.lr == w0->lr && hp.momentum == w0->momentum && hp.beta1 == w0->beta1 &&
                hp.beta2 == w0->beta2 && hp.rho == w0->rho && hp.epsilon == w0->epsilon &&
                hp.weight_decay == w0->weight_decay);
    assert_int_equal(si.global_step, 1875);

    char *text = NULL;
    TU_STATUS(cnn_checkpoint_read_config(fx->path, &text, &err), CNN_OK, err);
    assert_string_equal(text, NET);
    free(text);

    char **names = NULL;
    int n = -1;
    TU_STATUS(cnn_checkpoint_read_classes(fx->path, &names, &n, &err), CNN_OK, err);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(names[i], CLASSES[i]);
    assert_null(names[3]);
    free(names);

    /* weights only, for prediction: no optimizer, state or history */
    cnn_model *w = model_of(NET, 4);
    TU_STATUS(cnn_checkpoint_load(fx->path, w, NULL, NULL, NULL, &err), CNN_OK, err);
    assert_same_floats(w->params, fx->m->params, w->nparams);
    cnn_model_free(w);
    cnn_history_free(&h);
    cnn_optim_free(o);
    cnn_model_free(m);
}

static void test_round_trip_sgd_empty_history_no_classes(void **state)
{
    fixture *fx = *state;
    cnn_error err = {0};
    char path[160];
    snprintf(path, sizeof path, "%s/sgd.h5", fx->dir);
    /* sgd without momentum has no moment buffer; no history; no classes */
    cnn_optim *plain = optim_of(CNN_OPT_SGD, 0, fx->m, 8);
    assert_int_equal(cnn_optim_nstate(plain), 0);
    assert_null(plain->state[0]);
    TU_STATUS(cnn_checkpoint_write(path, fx->m, plain, &fx->s, NULL, "", NULL, 0, &err), CNN_OK,
              err);

    /* loaded into sgd with momentum: the momentum starts from zero */
    cnn_model *m = model_of(NET, 2);
    cnn_optim *o = optim_of(CNN_OPT_SGD, 0.9, m, 3);
    cnn_history h = {0};
    cnn_epoch_record r = {.epoch = 1};
    TU_STATUS(cnn_history_append(&h, &r, &err), CNN_OK, err);
    TU_STATUS(cnn_checkpoint_load(path, m, o, NULL, &h, &err), CNN_OK, err);
    assert_same_floats(m->params, fx->m->params, m->nparams);
    assert_int_equal(o->step, 8);
    for (size_t i = 0; i < o->n; i++)
        assert_true(o->state[0][i] == 0);
    assert_int_equal(h.n, 0);

    char *text = NULL;
    TU_STATUS(cnn_checkpoint_read_config(path, &text, &err), CNN_OK, err);
    assert_string_equal(text, "");
    free(text);
    char **names = (char **)1;
    int n = -1;
    TU_STATUS(cnn_checkpoint_read_classes(path, &names, &n, &err), CNN_OK, err);
    assert_null(names);
    assert_int_equal(n, 0);

    /* sgd with momentum round-trips its buffer */
    tu_fill(o->state[0], o->n, 77, -1, 1);
    TU_STATUS(cnn_checkpoint_write(path, m, o, &fx->s, &h, NET, NULL, 0, &err), CNN_OK, err);
    cnn_optim *o2 = optim_of(CNN_OPT_SGD, 0.9, m, 4);
    TU_STATUS(cnn_checkpoint_load(path, m, o2, NULL, NULL, &err), CNN_OK, err);
    assert_same_floats(o2->state[0], o->state[0], o->n);
    cnn_optim_free(o2);
    cnn_optim_free(o);
    cnn_optim_free(plain);
    cnn_history_free(&h);
    cnn_model_free(m);
}

/* ---- non-trainable buffers ------------------------------------------------ */

/* Index of the first layer of m made from config section `section`. */
static int layer_of(const cnn_model *m, const char *section)
{
    for (int i = 0; i < m->nlayers; i++)
        if (strcmp(m->layers[i].ops->section, section) == 0)
            return i;
    fail_msg("no [%s] layer", section);
    return -1;
}

/* m (NET) with moving statistics, as a BatchNormalization layer will
 * declare them: moving_mean and moving_variance (4) on cv1 and on the
 * max-pooling layer (a layer with buffers but no parameters). No layer
 * type has buffers yet, so they are added here after creation, with the
 * offsets and model->buffers that cnn_model_create() gives them; filled
 * from fill_seed. */
static cnn_model *model_with_buffers(uint64_t fill_seed)
{
    cnn_model *m = model_of(NET, fill_seed);
    const int dims[1] = {4}, with[2] = {layer_of(m, "conv2d"), layer_of(m, "maxpool2d")};
    for (int k = 0; k < 2; k++) {
        cnn_layer_add_buffer(&m->layers[with[k]], "moving_mean", 1, dims, CNN_INIT_ZEROS);
        cnn_layer_add_buffer(&m->layers[with[k]], "moving_variance", 1, dims, CNN_INIT_ONES);
    }
    size_t off = 0;
    for (int i = 0; i < m->nlayers; i++)
        for (int b = 0; b < m->layers[i].nbuffers; b++) {
            m->layers[i].buffers[b].offset = off;
            off += m->layers[i].buffers[b].count;
        }
    assert_int_equal(off, 16);
    free(m->buffers);
    m->nbuffer_floats = off;
    m->buffers = malloc(off * sizeof(float));
    assert_non_null(m->buffers);
    tu_fill(m->buffers, off, fill_seed + 100, 0, 1);
    return m;
}

/* Buffers are stored as /model/<layer>/<buffer> beside the parameters,
 * load back bit-exact, and are checked like parameters: a file without
 * them does not load into a model that has them, nor a file with them
 * into a model without. */
static void test_buffers(void **state)
{
    fixture *fx = *state;
    cnn_error err = {0};
    char path[160];
    snprintf(path, sizeof path, "%s/buffers.h5", fx->dir);
    cnn_model *a = model_with_buffers(21);
    TU_STATUS(cnn_checkpoint_write(path, a, fx->o, &fx->s, &fx->h, NET, NULL, 0, &err), CNN_OK,
              err);

    cnn_model *b = model_with_buffers(22);
    assert_memory_not_equal(a->buffers, b->buffers, a->nbuffer_floats * sizeof(float));
    cnn_optim *o = optim_of(CNN_OPT_ADAM, 0, b, 3);
    TU_STATUS(cnn_checkpoint_load(path, b, o, NULL, NULL, &err), CNN_OK, err);
    assert_same_floats(b->buffers, a->buffers, a->nbuffer_floats);
    assert_same_floats(b->params, a->params, a->nparams);
    assert_same_floats(o->state[0], fx->o->state[0], o->n); /* no buffers in the optimizer */

    const char *pool = a->layers[layer_of(a, "maxpool2d")].name;
    char obj[128];
    snprintf(obj, sizeof obj, "/model/%s/moving_variance", pool);
    /* what h5_surgery finds is a chunked float dataset of the file */
    long long off, nbytes;
    assert_int_equal(h5s_chunk_location(path, obj, &off, &nbytes), 0);
    assert_int_equal(nbytes, 4 * sizeof(float) + 4); /* + its Fletcher32 checksum */

    /* a model without buffers refuses the file, and the other way round */
    expect_load_fails(path, NET, CNN_OPT_ADAM, CNN_ERR_SHAPE,
                      "/model/cv1 holds 4 tensors but the model's layer 'cv1' has 2", NULL);
    cnn_model *c = model_with_buffers(23);
    float *before = malloc(c->nbuffer_floats * sizeof(float));
    memcpy(before, c->buffers, c->nbuffer_floats * sizeof(float));
    TU_STATUS(cnn_checkpoint_load(fx->path, c, NULL, NULL, NULL, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "missing dataset /model/cv1/moving_mean");
    assert_same_floats(c->buffers, before, c->nbuffer_floats);

    free(before);
    cnn_model_free(c);
    cnn_optim_free(o);
    cnn_model_free(b);
    cnn_model_free(a);
}

/* ---- the checkpoint directory --------------------------------------------- */

static void write_at(const fixture *fx, int64_t epoch, int64_t global_step, char *path, size_t n)
{
    cnn_train_state s = fx->s;
    s.epoch = epoch;
    s.global_step = global_step;
    cnn_checkpoint_name(path, n, fx->dir, &s);
    write_ok(fx, path, fx->m, fx->o, &s, &fx->h);
}

static void test_name(void **state)
{
    (void)state;
    char out[128];
    cnn_train_state s = {.epoch = 3, .global_step = 1875};
    cnn_checkpoint_name(out, sizeof out, "runs/x", &s);
    assert_string_equal(out, "runs/x/ckpt-e0003-s00001875.h5");
    cnn_checkpoint_name(out, sizeof out, NULL, &s);
    assert_string_equal(out, "ckpt-e0003-s00001875.h5");
}

static void test_find_latest(void **state)
{
    fixture *fx = *state;
    cnn_error err = {0};
    char p[160], want[160], found_path[256], junk[200];
    int found = -1;

    /* no directory, or nothing valid in it: not found, not an error */
    TU_STATUS(cnn_checkpoint_find_latest("/tmp/cnn-ckpt-no-such-dir", found_path,
                                         sizeof found_path, &found, &err),
              CNN_OK, err);
    assert_int_equal(found, 0);

    unlink(fx->path);
    write_at(fx, 1, 100, p, sizeof p);
    write_at(fx, 3, 300, want, sizeof want);
    write_at(fx, 2, 200, p, sizeof p);
    /* a valid checkpoint left as a temporary file by an interrupted write */
    write_at(fx, 9, 900, p, sizeof p);
    snprintf(junk, sizeof junk, "%s/.ckpt-e0009-s00000900.h5.tmp.4242", fx->dir);
    assert_int_equal(rename(p, junk), 0);
    /* garbage under names that would win */
    snprintf(junk, sizeof junk, "%s/ckpt-e0099-s99999999.h5", fx->dir);
    write_text(junk, "not a checkpoint\n");
    snprintf(junk, sizeof junk, "%s/zzz.h5", fx->dir);
    write_text(junk, "");
    /* a newer checkpoint cut in half */
    write_at(fx, 5, 500, p, sizeof p);
    snprintf(junk, sizeof junk, "%s/ckpt-e0005-s00000500-cut.h5", fx->dir);
    copy_prefix(p, junk, 0.5);
    unlink(p);
    /* a checkpoint of a newer format */
    write_at(fx, 6, 600, p, sizeof p);
    assert_int_equal(h5s_set_int_attr(p, "/", "format_version", 2), 0);

    TU_STATUS(cnn_checkpoint_find_latest(fx->dir, found_path, sizeof found_path, &found, &err),
              CNN_OK, err);
    assert_int_equal(found, 1);
    assert_string_equal(found_path, want);

    /* best.h5 counts by its content */
    snprintf(p, sizeof p, "%s/best.h5", fx->dir);
    cnn_train_state s = fx->s;
    s.global_step = 301;
    write_ok(fx, p, fx->m, fx->o, &s, &fx->h);
    TU_STATUS(cnn_checkpoint_find_latest(fx->dir, found_path, sizeof found_path, &found, &err),
              CNN_OK, err);
    assert_string_equal(found_path, p);

    /* a buffer too short is an error, not a truncated path */
    char tiny[8];
    TU_STATUS(cnn_checkpoint_find_latest(fx->dir, tiny, sizeof tiny, &found, &err), CNN_ERR_ARG,
              err);
}

static void test_prune(void **state)
{
    fixture *fx = *state;
    cnn_error err = {0};
    char p[5][160], best[160], garbage[160];
    for (int i = 0; i < 5; i++) /* written out of order */
        write_at(fx, i, 1000 - 100 * ((i * 3) % 5), p[i], sizeof p[i]);
    /* global steps: p0 1000, p1 700, p2 900, p3 600, p4 800 */
    snprintf(best, sizeof best, "%s/best.h5", fx->dir);
    write_ok(fx, best, fx->m, fx->o, &fx->s, &fx->h); /* global step 1875, the highest */
    snprintf(garbage, sizeof garbage, "%s/ckpt-e0000-s00000001.h5", fx->dir);
    write_text(garbage, "junk");

    TU_STATUS(cnn_checkpoint_prune(fx->dir, 0, &err), CNN_ERR_ARG, err);
    TU_STATUS(cnn_checkpoint_prune(fx->dir, 2, &err), CNN_OK, err);
    assert_true(file_exists(p[0]) && file_exists(p[2]));
    assert_false(file_exists(p[1]) || file_exists(p[3]) || file_exists(p[4]));
    assert_true(file_exists(best));
    assert_true(file_exists(garbage)); /* not recognisably ours: left alone */
    assert_true(file_exists(fx->path));
    TU_STATUS(cnn_checkpoint_prune(fx->dir, 1, &err), CNN_OK, err);
    assert_true(file_exists(p[0]) && !file_exists(p[2]) && file_exists(best));
}

/* ---- writing ---------------------------------------------------------------- */

static int count_hidden(const char *dir)
{
    int n = 0;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d)
        closedir(d);
    return n;
}

static void test_write_failures_leave_nothing(void **state)
{
    fixture *fx = *state;
    cnn_error err = {0};
    char p[200], inner[220];
    /* the final name is a non-empty directory: the rename fails after the
     * whole file was written; the temporary file goes, the target stays */
    snprintf(p, sizeof p, "%s/ckpt-e0001-s00000001.h5", fx->dir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(inner, sizeof inner, "%s/keep", p);
    write_text(inner, "x");
    TU_STATUS(cnn_checkpoint_write(p, fx->m, fx->o, &fx->s, &fx->h, NET, NULL, 0, &err),
              CNN_ERR_IO, err);
    TU_MSG_HAS(err, p);
    TU_MSG_HAS(err, "cannot rename");
    assert_int_equal(count_hidden(fx->dir), 0);
    assert_true(file_exists(inner));

    /* a directory that does not exist */
    snprintf(p, sizeof p, "%s/no/such/dir/c.h5", fx->dir);
    TU_STATUS(cnn_checkpoint_write(p, fx->m, fx->o, &fx->s, &fx->h, NET, NULL, 0, &err),
              CNN_ERR_IO, err);
    TU_MSG_HAS(err, "cannot create the temporary file");
    assert_null(strchr(err.msg, '\n'));

    /* an optimizer of another model */
    cnn_optim *o = optim_of(CNN_OPT_ADAM, 0, fx->m, 1);
    o->n--;
    TU_STATUS(cnn_checkpoint_write(fx->path, fx->m, o, &fx->s, NULL, NET, NULL, 0, &err),
              CNN_ERR_ARG, err);
    o->n++;
    cnn_optim_free(o);

    /* overwriting an existing checkpoint replaces it whole */
    cnn_train_state s = fx->s;
    s.global_step = 42;
    write_ok(fx, fx->path, fx->m, fx->o, &s, NULL);
    TU_STATUS(cnn_checkpoint_read_info(fx->path, &s, NULL, &err), CNN_OK, err);
    assert_int_equal(s.global_step, 42);
    assert_int_equal(count_hidden(fx->dir), 0);
}

/* ---- refusing bad files ----------------------------------------------------- */

static void test_not_hdf5(void **state)
{
    fixture *fx = *state;
    char p[160];
    snprintf(p, sizeof p, "%s/notes.h5", fx->dir);
    write_text(p, "[input]\nshape = 8x8x1\n");
    expect_load_fails(p, NET, CNN_OPT_ADAM, CNN_ERR_FORMAT, "not an HDF5 file", NULL);
    snprintf(p, sizeof p, "%s/missing.h5", fx->dir);
    expect_load_fails(p, NET, CNN_OPT_ADAM, CNN_ERR_IO, "No such file", NULL);
}

static void test_truncated(void **state)
{
    fixture *fx = *state;
    char p[160];
    snprintf(p, sizeof p, "%s/half.h5", fx->dir);
    copy_prefix(fx->path, p, 0.5);
    expect_load_fails(p, NET, CNN_OPT_ADAM, CNN_ERR_FORMAT, "truncated", NULL);
    char *text = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_checkpoint_read_config(p, &text, &err), CNN_ERR_FORMAT, err);
    assert_null(text);
}

static void flip_byte(const char *path, long long offset)
{
    int fd = open(path, O_RDWR);
    unsigned char b;
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, offset), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, offset), 1);
    close(fd);
}

static void test_damaged_tensor(void **state)
{
    fixture *fx = *state;
    long long off, n;
    assert_int_equal(h5s_chunk_location(fx->path, "/model/cv1/kernel", &off, &n), 0);
    assert_int_equal(n, 4 * 9 * sizeof(float) + 4); /* 36 floats + the checksum */
    /* the chunk is where we think it is: its first float is the first weight */
    int fd = open(fx->path, O_RDONLY);
    float first;
    assert_int_equal(pread(fd, &first, 4, off), 4);
    close(fd);
    assert_memory_equal(&first, &fx->m->params[fx->m->layers[0].params[0].offset], 4);

    flip_byte(fx->path, off + 4 * 17 + 2);
    expect_load_fails(fx->path, NET, CNN_OPT_ADAM, CNN_ERR_FORMAT,
                      "checksum mismatch in /model/cv1/kernel", NULL);
    expect_load_fails(fx->path, NET, -1, CNN_ERR_FORMAT, "checksum mismatch in /model/cv1/kernel",
                      NULL);

    /* likewise inside an optimizer moment */
    char p[160];
    snprintf(p, sizeof p, "%s/v.h5", fx->dir);
    write_ok(fx, p, fx->m, fx->o, &fx->s, &fx->h);
    assert_int_equal(h5s_chunk_location(p, "/optimizer/v/out/kernel", &off, &n), 0);
    flip_byte(p, off + 5);
    expect_load_fails(p, NET, CNN_OPT_ADAM, CNN_ERR_FORMAT,
                      "checksum mismatch in /optimizer/v/out/kernel", NULL);
}

static void test_missing_dataset(void **state)
{
    fixture *fx = *state;
    char p[160];
    assert_int_equal(h5s_unlink(fx->path, "/model/cv2/bias"), 0);
    expect_load_fails(fx->path, NET, CNN_OPT_ADAM, CNN_ERR_FORMAT,
                      "missing dataset /model/cv2/bias", NULL);

    snprintf(p, sizeof p, "%s/opt.h5", fx->dir);
    write_ok(fx, p, fx->m, fx->o, &fx->s, &fx->h);
    assert_int_equal(h5s_unlink(p, "/optimizer/v/out/kernel"), 0);
    expect_load_fails(p, NET, CNN_OPT_ADAM, CNN_ERR_FORMAT,
                      "missing dataset /optimizer/v/out/kernel", NULL);
    cnn_model *w = model_of(NET, 3); /* the weights alone do not need it */
    cnn_error err = {0};
    TU_STATUS(cnn_checkpoint_load(p, w, NULL, NULL, NULL, &err), CNN_OK, err);
    cnn_model_free(w);

    write_ok(fx, p, fx->m, fx->o, &fx->s, &fx->h);
    assert_int_equal(h5s_unlink(p, "/history/val_loss"), 0);
    expect_load_fails(p, NET, CNN_OPT_ADAM, CNN_ERR_FORMAT, "missing dataset /history/val_loss",
                      NULL);

    write_ok(fx, p, fx->m, fx->o, &fx->s, &fx->h);
    assert_int_equal(h5s_unlink(p, "/state"), 0);
    expect_load_fails(p, NET, CNN_OPT_ADAM, CNN_ERR_FORMAT, "missing group /state", NULL);
}

static void test_shape_mismatch(void **state)
{
    fixture *fx = *state;
    expect_load_fails(fx->path, NET_F2(8), CNN_OPT_ADAM, CNN_ERR_SHAPE,
                      "/model/cv2/kernel has shape 6x4x3x3 but the model's is 8x4x3x3", NULL);
    /* a network without the layer cv2 */
    expect_load_fails(fx->path,
                      "[input]\nshape = 8x8x1\n"
                      "[conv2d]\nname = cv1\nfilters = 4\nkernel = 3\n[flatten]\n"
                      "[dense]\nname = out\nunits = 3\nactivation = softmax\n",
                      -1, CNN_ERR_SHAPE, "/model/cv2 is not a layer", NULL);
    /* a layer without a bias where the file has one */
    expect_load_fails(fx->path,
                      "[input]\nshape = 8x8x1\n"
                      "[conv2d]\nname = cv1\nfilters = 4\nkernel = 3\nuse_bias = false\n"
                      "[maxpool2d]\n[conv2d]\nname = cv2\nfilters = 6\nkernel = 3\n[flatten]\n"
                      "[dense]\nname = out\nunits = 3\nactivation = softmax\n",
                      -1, CNN_ERR_SHAPE, "/model/cv1 holds 2 tensors", "'cv1' has 1", NULL);
}

static void test_optimizer_mismatch(void **state)
{
    fixture *fx = *state;
    expect_load_fails(fx->path, NET, CNN_OPT_SGD, CNN_ERR_FORMAT,
                      "the checkpoint's optimizer is adam but the run's is sgd", NULL);
}

static void test_newer_format_version(void **state)
{
    fixture *fx = *state;
    assert_int_equal(h5s_set_int_attr(fx->path, "/", "format_version", 2), 0);
    expect_load_fails(fx->path, NET, CNN_OPT_ADAM, CNN_ERR_FORMAT,
                      "format_version 2 is newer than the newest this program reads (1)", NULL);
    char *text = NULL;
    cnn_error err = {0};
    TU_STATUS(cnn_checkpoint_read_config(fx->path, &text, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "format_version 2");
}

/* Everything a load and the readers return equals what was written. */
static int loads_as_written(const fixture *fx, const char *path)
{
    cnn_error err = {0};
    cnn_model *m = model_of(NET, 2);
    cnn_optim *o = optim_of(CNN_OPT_ADAM, 0, m, 3);
    cnn_train_state s;
    cnn_history h = {0};
    char *text = NULL, **names = NULL;
    int n = 0;
    cnn_status st = cnn_checkpoint_load(path, m, o, &s, &h, &err);
    if (!st)
        st = cnn_checkpoint_read_config(path, &text, &err);
    if (!st)
        st = cnn_checkpoint_read_classes(path, &names, &n, &err);
    int same = !st && !memcmp(m->params, fx->m->params, m->nparams * sizeof(float)) &&
               !memcmp(o->state[0], fx->o->state[0], o->n * sizeof(float)) &&
               !memcmp(o->state[1], fx->o->state[1], o->n * sizeof(float)) && o->step == fx->o->step &&
               s.global_step == fx->s.global_step && s.seed == fx->s.seed &&
               s.epoch == fx->s.epoch && s.best_val_accuracy == fx->s.best_val_accuracy &&
               h.n == fx->h.n && !memcmp(h.rows, fx->h.rows, (size_t)h.n * sizeof *h.rows) &&
               !strcmp(text, NET) && n == 3 && !strcmp(names[2], CLASSES[2]);
    free(text);
    free(names);
    cnn_history_free(&h);
    cnn_optim_free(o);
    cnn_model_free(m);
    return st ? -1 : same;
}

/* Flips one byte at a time across the whole file (a sample of positions):
 * each damaged file is refused, or loads exactly what was written (the
 * byte was unused). Never different data without an error. */
static void test_any_damaged_byte(void **state)
{
    fixture *fx = *state;
    struct stat sb;
    assert_int_equal(stat(fx->path, &sb), 0);
    int fd = open(fx->path, O_RDWR);
    assert_true(fd >= 0);
    int refused = 0, harmless = 0;
    for (off_t off = 0; off < sb.st_size; off += 13) {
        unsigned char b;
        assert_int_equal(pread(fd, &b, 1, off), 1);
        b ^= 0x04;
        assert_int_equal(pwrite(fd, &b, 1, off), 1);
        int r = loads_as_written(fx, fx->path);
        if (r == 0)
            fail_msg("byte %lld flipped: loaded without an error but not as written",
                     (long long)off);
        refused += r < 0;
        harmless += r > 0;
        b ^= 0x04;
        assert_int_equal(pwrite(fd, &b, 1, off), 1);
    }
    close(fd);
    print_message("%lld bytes, %d flips refused, %d harmless\n", (long long)sb.st_size, refused,
                  harmless);
    assert_true(refused > 10 * harmless);
    assert_int_equal(loads_as_written(fx, fx->path), 1);
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_round_trip_bit_exact),
        T(test_round_trip_sgd_empty_history_no_classes),
        T(test_buffers),
        cmocka_unit_test(test_name),
        T(test_find_latest),
        T(test_prune),
        T(test_write_failures_leave_nothing),
        T(test_not_hdf5),
        T(test_truncated),
        T(test_damaged_tensor),
        T(test_missing_dataset),
        T(test_shape_mismatch),
        T(test_optimizer_mismatch),
        T(test_newer_format_version),
        T(test_any_damaged_byte),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
