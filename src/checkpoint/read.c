/* read.c - reading a checkpoint (layout in cnn/checkpoint.h): opening and
 * validating the file, loading the tensors into a model and optimizer,
 * and the parts read alone (config, classes, header). Everything is
 * checked and read into temporary buffers before anything is copied out,
 * so a failed load changes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

cnn_status ckpt_open(cnn_h5 *f, const char *path, cnn_error *err)
{
    cnn_status st = cnn_h5_open_read(f, path, err);
    if (st)
        return st;
    int version = 0;
    htri_t has_version = H5Aexists(f->id, "format_version");
    if (has_version < 0)
        st = cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot read the root group");
    else if (!has_version)
        st = cnn_error_set(err, CNN_ERR_FORMAT,
                           "%s: not a cnn-train checkpoint (no format_version attribute)", path);
    else if ((st = cnn_h5_read_attr(f, f->id, "/", "format_version", CNN_H5_I32, &version)) ==
                 CNN_OK &&
             (version < 1 || version > CNN_CHECKPOINT_FORMAT_VERSION))
        st = cnn_error_set(err, CNN_ERR_FORMAT,
                           "%s: format_version %d is %s this program reads (%d)", path, version,
                           version < 1 ? "not a version" : "newer than the newest",
                           CNN_CHECKPOINT_FORMAT_VERSION);
    if (st)
        cnn_h5_close(f);
    return st;
}

/* The layer of m named name that stores tensors under a root (with its
 * buffers or not), or NULL. */
static const cnn_layer *find_layer(const cnn_model *m, const char *name, int with_buffers)
{
    for (int k = 0; k < m->nlayers; k++)
        if (ckpt_ntensors(&m->layers[k], with_buffers) && strcmp(m->layers[k].name, name) == 0)
            return &m->layers[k];
    return NULL;
}

/* The file must not hold layers or tensors the model lacks: a checkpoint of
 * another network is an error, not a partial load. */
static cnn_status check_members(const cnn_h5 *f, const char *root, const cnn_model *m,
                                int with_buffers)
{
    hid_t g;
    H5G_info_t info;
    cnn_status st = cnn_h5_open_group(f, root, &g);
    if (st)
        return st;
    if (H5Gget_info(g, &info) < 0)
        st = cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot list %s", root);
    for (hsize_t i = 0; !st && i < info.nlinks; i++) {
        char name[CNN_NAME_MAX + 1] = "", obj[CKPT_OBJ_MAX];
        H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                           H5P_DEFAULT);
        const cnn_layer *l = find_layer(m, name, with_buffers);
        if (!l) {
            st = cnn_error_set(f->err, CNN_ERR_SHAPE,
                               "%s: %s/%s is not a layer with parameters in the model (the "
                               "checkpoint was written for another network)",
                               f->path, root, name);
            break;
        }
        snprintf(obj, sizeof obj, "%s/%s", root, name);
        hid_t lg;
        H5G_info_t linfo;
        const int n = ckpt_ntensors(l, with_buffers);
        if ((st = cnn_h5_open_group(f, obj, &lg)))
            break;
        if (H5Gget_info(lg, &linfo) < 0)
            st = cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot list %s", obj);
        else if (linfo.nlinks > (hsize_t)n)
            st = cnn_error_set(f->err, CNN_ERR_SHAPE,
                               "%s: %s holds %llu tensors but the model's layer '%s' has %d",
                               f->path, obj, (unsigned long long)linfo.nlinks, l->name, n);
        H5Gclose(lg);
    }
    H5Gclose(g);
    return st;
}

/* root/<layer>/<tensor> into pbuf (laid out as model->params) and, when
 * bbuf is not NULL, the buffers into bbuf (laid out as model->buffers). */
static cnn_status read_tensors(const cnn_h5 *f, const char *root, const cnn_model *m, float *pbuf,
                               float *bbuf)
{
    cnn_status st = CNN_OK;
    for (int i = 0; i < m->nlayers && !st; i++) {
        const cnn_layer *l = &m->layers[i];
        for (int j = 0; j < ckpt_ntensors(l, bbuf != NULL) && !st; j++) {
            const ckpt_tensor t = ckpt_tensor_of(root, l, j);
            st = cnn_h5_read_dataset(f, t.obj, H5T_FLOAT, H5T_NATIVE_FLOAT, t.ndim, t.dims,
                                     "the model's", (t.is_buffer ? bbuf : pbuf) + t.offset);
        }
    }
    return st;
}

/* /optimizer's attributes; *step too when step is not NULL. */
static cnn_status read_hparams(const cnn_h5 *f, cnn_optim_hparams *hp, int64_t *step)
{
    const char *g = "/optimizer";
    hid_t grp;
    char type[CKPT_TYPE_MAX];
    cnn_status st = cnn_h5_open_group(f, g, &grp);
    if (st)
        return st;
    cnn_optim_hparams h = {0};
    if (!(st = cnn_h5_read_attr_string(f, grp, g, "type", type, sizeof type))) {
        int t = cnn_optim_type_from_name(type);
        if (t < 0)
            st = cnn_error_set(f->err, CNN_ERR_FORMAT, "%s: unknown optimizer type '%s'",
                               f->path, type);
        h.type = (cnn_optim_type)t;
    }
    for (const cnn_optim_hparam_field *p = cnn_optim_hparam_fields; p->name && !st; p++) {
        const cnn_h5_field field = ckpt_hparam_field(p);
        st = cnn_h5_read_fields(f, grp, g, &field, 1, &h);
    }
    if (!st && step)
        st = cnn_h5_read_attr(f, grp, g, "step", CNN_H5_I64, step);
    H5Gclose(grp);
    if (!st)
        *hp = h;
    return st;
}

static cnn_status read_state(const cnn_h5 *f, cnn_train_state *s)
{
    const char *g = "/state";
    hid_t grp;
    cnn_train_state t = {.cb = cnn_callback_state_init()};
    cnn_status st = cnn_h5_open_group(f, g, &grp);
    if (st)
        return st;
    st = cnn_h5_read_fields(f, grp, g, ckpt_state_fields, ckpt_nstate_fields, &t);
    H5Gclose(grp);
    if (!st)
        *s = t;
    return st;
}

/* /callbacks into s->cb, and the best weights into best (nbest floats)
 * when both the file and the caller have them. A file written before
 * callbacks existed has no /callbacks: s->cb stays as at the start of a
 * run. */
static cnn_status read_callbacks(const cnn_h5 *f, const cnn_model *m, cnn_train_state *s,
                                 float *best)
{
    const char *g = "/callbacks";
    htri_t have = cnn_h5_exists(f->id, g);
    if (have < 0)
        return cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot read %s", g);
    if (!have)
        return CNN_OK;
    hid_t grp;
    cnn_callback_state cb = cnn_callback_state_init();
    cnn_status st = cnn_h5_open_group(f, g, &grp);
    if (st)
        return st;
    st = cnn_h5_read_fields(f, grp, g, ckpt_callback_fields, ckpt_ncallback_fields, &cb);
    H5Gclose(grp);
    if (st)
        return st;
    if (cb.has_best_weights && best) {
        hsize_t n = (hsize_t)(m->nparams + m->nbuffer_floats);
        st = cnn_h5_read_dataset(f, "/callbacks/best_weights", H5T_FLOAT, H5T_NATIVE_FLOAT, 1,
                                 &n, "the model's weights", best);
    } else {
        cb.has_best_weights = 0;
    }
    if (!st)
        s->cb = cb;
    return st;
}

/* /history into a new history *out (the caller frees it). */
static cnn_status read_history(const cnn_h5 *f, cnn_history *out)
{
    hsize_t n;
    hid_t ds;
    cnn_status st = cnn_h5_open_dataset(f, "/history/epoch", H5T_INTEGER, 1, &n, &ds);
    if (st)
        return st;
    H5Dclose(ds);
    if (n > (1u << 30))
        return cnn_error_set(f->err, CNN_ERR_FORMAT, "%s: /history has %llu rows", f->path,
                             (unsigned long long)n);
    cnn_history h = {calloc(n ? n : 1, sizeof *h.rows), (int)n, (int)(n ? n : 1)};
    uint64_t *col = malloc((n ? n : 1) * 8);
    if (!h.rows || !col)
        st = cnn_error_set(f->err, CNN_ERR_NOMEM, "%s: out of memory for the history", f->path);
    for (int c = 0; c < ckpt_nhistory_columns && !st; c++) {
        const cnn_h5_field *k = &ckpt_history_columns[c];
        char obj[64];
        snprintf(obj, sizeof obj, "/history/%s", k->name);
        st = cnn_h5_read_dataset(f, obj, cnn_h5_class(k->kind), cnn_h5_memory_type(k->kind), 1,
                                 &n, "/history/epoch's", col);
        for (hsize_t r = 0; r < n && !st; r++)
            memcpy((char *)&h.rows[r] + k->offset, &col[r], 8);
    }
    free(col);
    if (st)
        cnn_history_free(&h);
    else
        *out = h;
    return st;
}

/* Buffers of a load, filled completely before anything is copied out. */
typedef struct load_tmp {
    float *params, *buffers;
    float *best;                       /* (nparams + nbuffer_floats) best weights, or NULL */
    float *state[CNN_OPTIM_MAX_STATE]; /* the run's state buffers, read from the file */
    int file_nstate;                   /* state buffers the file holds */
    int64_t step;
    cnn_train_state s;
    cnn_history h;
} load_tmp;

static float *alloc_floats(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }

/* The file's optimizer must be of o's type; each state buffer the file
 * holds is checked against the model, and read when o has it too. */
static cnn_status load_optimizer(const cnn_h5 *f, const cnn_model *m, const cnn_optim *o,
                                 load_tmp *t)
{
    cnn_optim_hparams file;
    cnn_status st = read_hparams(f, &file, &t->step);
    if (st)
        return st;
    if (file.type != o->hp.type)
        return cnn_error_set(f->err, CNN_ERR_FORMAT,
                             "%s: the checkpoint's optimizer is %s but the run's is %s", f->path,
                             cnn_optim_type_name(file.type), cnn_optim_type_name(o->hp.type));
    t->file_nstate = cnn_optim_hparams_nstate(&file);
    for (int k = 0; k < cnn_optim_nstate(o); k++)
        if (!(t->state[k] = alloc_floats(m->nparams)))
            return cnn_error_set(f->err, CNN_ERR_NOMEM, "%s: out of memory for optimizer state",
                                 f->path);
    /* buffer k of the file is named as buffer k of an optimizer with its hyper-parameters */
    const cnn_optim as_file = {.hp = file, .nstate = t->file_nstate};
    for (int k = 0; k < t->file_nstate && !st; k++) {
        char root[64];
        snprintf(root, sizeof root, "/optimizer/%s", cnn_optim_state_name(&as_file, k));
        if (!(st = check_members(f, root, m, 0)) && k < cnn_optim_nstate(o))
            st = read_tensors(f, root, m, t->state[k], NULL);
    }
    return st;
}

/* Copies what a successful load read into m, o, s and h. State buffers
 * the file does not have (sgd saved without momentum) are zeroed. */
static void commit_load(load_tmp *t, cnn_model *m, cnn_optim *o, cnn_train_state *s,
                        cnn_history *h)
{
    memcpy(m->params, t->params, m->nparams * sizeof(float));
    memcpy(m->buffers, t->buffers, m->nbuffer_floats * sizeof(float));
    if (o) {
        for (int k = 0; k < cnn_optim_nstate(o); k++) {
            if (k < t->file_nstate)
                memcpy(o->state[k], t->state[k], o->n * sizeof(float));
            else
                memset(o->state[k], 0, o->n * sizeof(float));
        }
        o->step = t->step;
    }
    if (s) {
        float *keep = s->best_weights;
        *s = t->s;
        s->best_weights = keep;
        if (keep && t->s.cb.has_best_weights)
            memcpy(keep, t->best, (m->nparams + m->nbuffer_floats) * sizeof(float));
    }
    if (h) {
        cnn_history_free(h);
        *h = t->h;
        t->h = (cnn_history){0};
    }
}

static cnn_status load_impl(const char *path, cnn_model *m, cnn_optim *o, cnn_train_state *s,
                            cnn_history *h, cnn_error *err)
{
    if (!path || !m)
        return cnn_error_set(err, CNN_ERR_ARG, "checkpoint load: path and model are required");
    if (o && o->n != m->nparams)
        return cnn_error_set(err, CNN_ERR_ARG,
                             "%s: the optimizer holds %zu floats but the model has %zu "
                             "parameters",
                             path, o->n, m->nparams);
    cnn_h5 f;
    cnn_status st = ckpt_open(&f, path, err);
    if (st)
        return st;
    load_tmp t = {0};
    if (!(t.params = alloc_floats(m->nparams)) || !(t.buffers = alloc_floats(m->nbuffer_floats)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for %zu parameters", path,
                           m->nparams);
    if (!st && !(st = check_members(&f, "/model", m, 1)) &&
        !(st = read_tensors(&f, "/model", m, t.params, t.buffers)) && o)
        st = load_optimizer(&f, m, o, &t);
    if (!st && s && s->best_weights && !(t.best = alloc_floats(m->nparams + m->nbuffer_floats)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for the best weights", path);
    if (!st && s)
        st = read_state(&f, &t.s);
    if (!st && s)
        st = read_callbacks(&f, m, &t.s, t.best);
    if (!st && h)
        st = read_history(&f, &t.h);
    cnn_h5_close(&f);
    if (!st) /* everything read and checked */
        commit_load(&t, m, o, s, h);
    free(t.params);
    free(t.buffers);
    free(t.best);
    for (int k = 0; k < CNN_OPTIM_MAX_STATE; k++)
        free(t.state[k]);
    return st;
}

cnn_status cnn_checkpoint_load(const char *path, cnn_model *m, cnn_optim *o, cnn_train_state *s,
                               cnn_history *h, cnn_error *err)
{
    cnn_h5_quiet();
    return load_impl(path, m, o, s, h, err);
}

cnn_status cnn_checkpoint_read_config(const char *path, char **config_text, cnn_error *err)
{
    cnn_h5_quiet();
    cnn_h5 f;
    size_t size;
    cnn_status st = ckpt_open(&f, path, err);
    if (!st)
        st = cnn_h5_read_strings(&f, "/config", config_text, &size, NULL);
    cnn_h5_close(&f);
    return st;
}

/* n fixed-length records of size bytes (NUL-padded or not) as one block:
 * n + 1 pointers, then the strings. NULL when out of memory. */
static char **string_block(const char *buf, size_t size, hsize_t n)
{
    size_t bytes = (n + 1) * sizeof(char *);
    for (hsize_t i = 0; i < n; i++)
        bytes += strnlen(buf + i * size, size) + 1;
    char **out = malloc(bytes);
    if (!out)
        return NULL;
    char *p = (char *)(out + n + 1);
    for (hsize_t i = 0; i < n; i++) {
        size_t len = strnlen(buf + i * size, size);
        out[i] = memcpy(p, buf + i * size, len);
        p[len] = 0;
        p += len + 1;
    }
    out[n] = NULL;
    return out;
}

static cnn_status read_classes_impl(const char *path, char ***names, int *n, cnn_error *err)
{
    cnn_h5 f;
    *names = NULL;
    *n = 0;
    cnn_status st = ckpt_open(&f, path, err);
    htri_t has = st ? 0 : cnn_h5_exists(f.id, "/classes");
    if (has < 0)
        st = cnn_h5_fail(&f, CNN_ERR_FORMAT, "cannot look up /classes");
    if (st || !has) {
        cnn_h5_close(&f);
        return st;
    }
    char *buf = NULL;
    size_t size = 0;
    hsize_t count = 0;
    st = cnn_h5_read_strings(&f, "/classes", &buf, &size, &count);
    cnn_h5_close(&f);
    if (st)
        return st;
    char **out = string_block(buf, size, count);
    free(buf);
    if (!out)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory reading /classes", path);
    *names = out;
    *n = (int)count;
    return CNN_OK;
}

cnn_status cnn_checkpoint_read_classes(const char *path, char ***names, int *n, cnn_error *err)
{
    cnn_h5_quiet();
    return read_classes_impl(path, names, n, err);
}

cnn_status ckpt_read_info(const char *path, cnn_train_state *s, cnn_optim_hparams *hp,
                          cnn_error *err)
{
    cnn_h5 f;
    cnn_train_state ts;
    cnn_optim_hparams th;
    cnn_status st = ckpt_open(&f, path, err);
    if (!st && !(st = read_state(&f, &ts)))
        st = read_hparams(&f, &th, NULL);
    cnn_h5_close(&f);
    if (!st && s)
        *s = ts;
    if (!st && hp)
        *hp = th;
    return st;
}

cnn_status cnn_checkpoint_read_info(const char *path, cnn_train_state *s, cnn_optim_hparams *hp,
                                    cnn_error *err)
{
    cnn_h5_quiet();
    return ckpt_read_info(path, s, hp, err);
}
