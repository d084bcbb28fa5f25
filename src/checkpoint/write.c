/* write.c - writing a checkpoint: the layout of cnn/checkpoint.h built as
 * an HDF5 file in memory (the core driver, no backing store), whose bytes
 * ckpt_atomic_replace() then writes. HDF5 itself never writes to disk, so
 * a full disk is our own write() failing, with errno, and never an HDF5
 * file that cannot be flushed nor closed (HDF5 1.10's exit handler then
 * crashes on it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schema.h"

#ifndef CNN_VERSION
#define CNN_VERSION "0.1.0"
#endif
#define PRODUCER "cnn-train " CNN_VERSION

/* root/<layer>/<tensor> for every tensor of every layer that has some:
 * parameters from pbuf (laid out as model->params), then buffers from
 * bbuf (laid out as model->buffers) when bbuf is not NULL. */
static cnn_status write_tensors(const cnn_h5 *f, const char *root, const cnn_model *m,
                                const float *pbuf, const float *bbuf)
{
    char obj[CKPT_OBJ_MAX];
    cnn_status st = cnn_h5_make_group(f, root, NULL);
    for (int i = 0; i < m->nlayers && !st; i++) {
        const cnn_layer *l = &m->layers[i];
        const int n = ckpt_ntensors(l, bbuf != NULL);
        if (n == 0)
            continue;
        snprintf(obj, sizeof obj, "%s/%s", root, l->name);
        st = cnn_h5_make_group(f, obj, NULL);
        for (int j = 0; j < n && !st; j++) {
            const ckpt_tensor t = ckpt_tensor_of(root, l, j);
            st = cnn_h5_write_dataset(f, t.obj, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t.ndim, t.dims,
                                      (t.is_buffer ? bbuf : pbuf) + t.offset);
        }
    }
    return st;
}

static cnn_status write_history(const cnn_h5 *f, const cnn_history *h)
{
    const int n = h ? h->n : 0;
    uint64_t *col = malloc((size_t)(n ? n : 1) * 8);
    if (!col)
        return cnn_error_set(f->err, CNN_ERR_NOMEM, "%s: out of memory for the history",
                             f->path);
    cnn_status st = cnn_h5_make_group(f, "/history", NULL);
    for (int c = 0; c < ckpt_nhistory_columns && !st; c++) {
        const cnn_h5_field *k = &ckpt_history_columns[c];
        for (int r = 0; r < n; r++)
            memcpy(&col[r], (const char *)&h->rows[r] + k->offset, 8);
        char obj[64];
        snprintf(obj, sizeof obj, "/history/%s", k->name);
        hsize_t dims[1] = {(hsize_t)n};
        st = cnn_h5_write_dataset(f, obj, cnn_h5_file_type(k->kind), cnn_h5_memory_type(k->kind),
                                  1, dims, col);
    }
    free(col);
    return st;
}

/* /optimizer: type, hyper-parameters, step; then each state buffer as
 * /optimizer/<state name>/<layer>/<p>. */
static cnn_status write_optimizer(const cnn_h5 *f, const cnn_model *m, const cnn_optim *o)
{
    const char *g = "/optimizer";
    hid_t grp;
    cnn_status st = cnn_h5_make_group(f, g, &grp);
    if (st)
        return st;
    st = cnn_h5_write_attr_string(f, grp, g, "type", cnn_optim_type_name(o->hp.type));
    for (const cnn_optim_hparam_field *p = cnn_optim_hparam_fields; p->name && !st; p++) {
        const cnn_h5_field field = ckpt_hparam_field(p);
        st = cnn_h5_write_fields(f, grp, g, &field, 1, &o->hp);
    }
    if (!st)
        st = cnn_h5_write_attr(f, grp, g, "step", CNN_H5_I64, &o->step);
    H5Gclose(grp);
    for (int k = 0; k < cnn_optim_nstate(o) && !st; k++) {
        char root[64];
        snprintf(root, sizeof root, "%s/%s", g, cnn_optim_state_name(o, k));
        st = write_tensors(f, root, m, o->state[k], NULL);
    }
    return st;
}

static cnn_status write_state(const cnn_h5 *f, const cnn_train_state *s)
{
    const char *g = "/state";
    hid_t grp;
    cnn_status st = cnn_h5_make_group(f, g, &grp);
    if (st)
        return st;
    st = cnn_h5_write_fields(f, grp, g, ckpt_state_fields, ckpt_nstate_fields, s);
    H5Gclose(grp);
    return st;
}

/* /callbacks: the callbacks' attributes and, when kept, the best weights
 * (1-D, the model's parameters then its buffers). */
static cnn_status write_callbacks(const cnn_h5 *f, const cnn_model *m, const cnn_train_state *s)
{
    const char *g = "/callbacks";
    hid_t grp;
    cnn_status st = cnn_h5_make_group(f, g, &grp);
    if (st)
        return st;
    st = cnn_h5_write_fields(f, grp, g, ckpt_callback_fields, ckpt_ncallback_fields, &s->cb);
    H5Gclose(grp);
    if (!st && s->cb.has_best_weights && s->best_weights) {
        hsize_t n = (hsize_t)(m->nparams + m->nbuffer_floats);
        st = cnn_h5_write_dataset(f, "/callbacks/best_weights", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT,
                                  1, &n, s->best_weights);
    }
    return st;
}

static cnn_status write_contents(const cnn_h5 *f, const cnn_model *m, const cnn_optim *o,
                                 const cnn_train_state *s, const cnn_history *h,
                                 const char *config_text, const char *const *class_names,
                                 int nclasses)
{
    const int version = CNN_CHECKPOINT_FORMAT_VERSION;
    cnn_status st;
    if ((st = cnn_h5_write_attr(f, f->id, "/", "format_version", CNN_H5_I32, &version)) ||
        (st = cnn_h5_write_attr_string(f, f->id, "/", "producer", PRODUCER)) ||
        (st = cnn_h5_write_strings(f, "/config", &config_text, -1)) ||
        (st = write_tensors(f, "/model", m, m->params, m->buffers)) ||
        (st = write_optimizer(f, m, o)) || (st = write_state(f, s)) ||
        (st = write_callbacks(f, m, s)) ||
        (st = write_history(f, h)))
        return st;
    if (nclasses > 0)
        st = cnn_h5_write_strings(f, "/classes", class_names, nclasses);
    return st;
}

/* The core driver's growth step: about the whole file, so that memory is
 * allocated once. */
static size_t image_estimate(const cnn_model *m, const cnn_optim *o, const char *config_text)
{
    size_t floats = m->nparams * (size_t)(1 + cnn_optim_nstate(o)) + m->nbuffer_floats;
    floats += m->nparams + m->nbuffer_floats; /* best weights, when kept */
    return floats * sizeof(float) + strlen(config_text) + ((size_t)1 << 16);
}

/* The core driver's memory, kept when it closes the file instead of freed:
 * the bytes of the file as HDF5 finishes it on close. (H5Fget_file_image
 * of an open 1.10-format file clears the superblock's status flags without
 * updating its checksum in HDF5 1.10.8: such an image does not open.) */
typedef struct kept_image {
    void *mem;
    size_t size; /* bytes allocated, from the last (re)allocation */
} kept_image;

static void *image_malloc(size_t n, H5FD_file_image_op_t op, void *k)
{
    void *p = malloc(n);
    if (p)
        ((kept_image *)k)->size = n;
    return p;
}
static void *image_memcpy(void *dst, const void *src, size_t n, H5FD_file_image_op_t op, void *k)
{
    return memcpy(dst, src, n);
}
static void *image_realloc(void *p, size_t n, H5FD_file_image_op_t op, void *k)
{
    void *q = realloc(p, n);
    if (q)
        ((kept_image *)k)->size = n;
    return q;
}
static herr_t image_free(void *p, H5FD_file_image_op_t op, void *k)
{
    kept_image *ki = k;
    if (op != H5FD_FILE_IMAGE_OP_FILE_CLOSE) {
        free(p);
        return 0;
    }
    /* HDF5 1.10.8's core driver reads a file that already exists at the
     * path into memory (op FILE_OPEN) even for H5F_ACC_TRUNC and frees that
     * copy with op FILE_CLOSE before the new image: keep only the last. */
    if (ki->mem && ki->mem != p)
        free(ki->mem);
    ki->mem = p;
    return 0;
}
static void *kept_copy(void *k) { return k; } /* every copy of the fapl shares it */
static herr_t kept_free(void *k) { return 0; }

/* Where the file of HDF5 image p (n bytes) ends: the superblock's end of
 * file address (the sec2 driver, too, truncates a file there on close).
 * Version 2 and 3 superblocks (the 1.10 format) with 8-byte addresses:
 * signature, version, offset and length sizes, flags, then the base,
 * extension, end-of-file and root addresses, little-endian. 0 when p holds
 * no such superblock. */
static uint64_t file_end(const unsigned char *p, size_t n)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (n < 48 || memcmp(p, sig, 8) != 0 || (p[8] != 2 && p[8] != 3) || p[9] != 8)
        return 0;
    uint64_t end = 0;
    for (int i = 7; i >= 0; i--)
        end = end << 8 | p[28 + i];
    return end <= n ? end : 0;
}

/* An in-memory file access list whose memory ends in *k on close. */
static hid_t image_fapl(size_t increment, kept_image *k)
{
    H5FD_file_image_callbacks_t cb = {image_malloc, image_memcpy, image_realloc, image_free,
                                      kept_copy,    kept_free,    k};
    hid_t fapl = cnn_h5_fapl();
    if (fapl >= 0 && (H5Pset_fapl_core(fapl, increment, 0) < 0 ||
                      H5Pset_file_image_callbacks(fapl, &cb) < 0)) {
        H5Pclose(fapl);
        fapl = -1;
    }
    return fapl;
}

cnn_status ckpt_build_image(const char *path, const cnn_model *m, const cnn_optim *o,
                            const cnn_train_state *s, const cnn_history *h,
                            const char *config_text, const char *const *class_names,
                            int nclasses, void **image, size_t *size, cnn_error *err)
{
    *image = NULL;
    *size = 0;
    cnn_h5 f = {-1, path, err};
    kept_image k = {NULL, 0};
    hid_t fapl = image_fapl(image_estimate(m, o, config_text), &k);
    if (fapl < 0)
        return cnn_h5_fail(&f, CNN_ERR_IO, "cannot set up an in-memory file");
    f.id = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f.id < 0)
        return cnn_h5_fail(&f, CNN_ERR_IO, "cannot create an in-memory HDF5 file");
    cnn_status st = write_contents(&f, m, o, s, h, config_text, class_names, nclasses);
    /* close-strong: also closes whatever an error path left open */
    if (H5Fclose(f.id) < 0 && !st)
        st = cnn_h5_fail(&f, CNN_ERR_IO, "cannot close the in-memory file");
    uint64_t end = 0;
    if (!st && !(k.mem && (end = file_end(k.mem, k.size)) > 0))
        st = cnn_error_set(err, CNN_ERR_IO,
                           "%s: the in-memory HDF5 file has no version 2 or 3 superblock", path);
    if (st) {
        free(k.mem);
        return st;
    }
    *image = k.mem;
    *size = (size_t)end;
    return CNN_OK;
}

static cnn_status check_write_args(const char *path, const cnn_model *m, const cnn_optim *o,
                                   const cnn_train_state *s, const char *config_text,
                                   const char *const *class_names, int nclasses, cnn_error *err)
{
    if (!path || !m || !o || !s || !config_text || nclasses < 0 || (nclasses > 0 && !class_names))
        return cnn_error_set(err, CNN_ERR_ARG,
                             "checkpoint write: path, model, optimizer, state and config text "
                             "are required (and class names when nclasses > 0)");
    if (o->n != m->nparams)
        return cnn_error_set(err, CNN_ERR_ARG,
                             "%s: the optimizer holds %zu floats but the model has %zu "
                             "parameters",
                             path, o->n, m->nparams);
    for (int i = 0; i < nclasses; i++)
        if (!class_names[i])
            return cnn_error_set(err, CNN_ERR_ARG, "%s: class name %d is NULL", path, i);
    for (int i = 0; i < m->nlayers; i++) {
        const char *name = m->layers[i].name;
        if (ckpt_ntensors(&m->layers[i], 1) && (strchr(name, '/') || strcmp(name, ".") == 0))
            return cnn_error_set(err, CNN_ERR_ARG,
                                 "%s: layer name '%s' cannot name an HDF5 group (no '/' or '.')",
                                 path, name);
    }
    return CNN_OK;
}

cnn_status cnn_checkpoint_write(const char *path, const cnn_model *m, const cnn_optim *o,
                                const cnn_train_state *s, const cnn_history *h,
                                const char *config_text, const char *const *class_names,
                                int nclasses, cnn_error *err)
{
    cnn_h5_quiet();
    cnn_status st = check_write_args(path, m, o, s, config_text, class_names, nclasses, err);
    void *image = NULL;
    size_t size = 0;
    if (!st)
        st = ckpt_build_image(path, m, o, s, h, config_text, class_names, nclasses, &image,
                              &size, err);
    if (!st)
        st = ckpt_atomic_replace(path, image, size, err);
    free(image);
    return st;
}

int cnn_checkpoint_write_threadsafe(void)
{
    hbool_t safe = 0;
    return H5is_library_threadsafe(&safe) >= 0 && safe;
}
