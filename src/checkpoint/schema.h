/* schema.h - the layout of a checkpoint file (documented in
 * cnn/checkpoint.h), shared by its writer (write.c) and its reader
 * (read.c): the tables that name the attributes of /state and /optimizer
 * and the columns of /history, and the walk over a model's tensors.
 * Internal to src/checkpoint. */
#ifndef CNN_CKPT_SCHEMA_H
#define CNN_CKPT_SCHEMA_H

#include <stdio.h>

#include "cnn/checkpoint.h"
#include "h5util.h"

enum { CKPT_OBJ_MAX = 512, CKPT_PATH_MAX = 4096, CKPT_TYPE_MAX = 64 };

/* /state's attributes: the fields of cnn_train_state. */
extern const cnn_h5_field ckpt_state_fields[];
extern const int ckpt_nstate_fields;

/* /callbacks's attributes: the fields of cnn_callback_state. */
extern const cnn_h5_field ckpt_callback_fields[];
extern const int ckpt_ncallback_fields;

/* /history's columns: the fields of cnn_epoch_record, each 8 bytes wide. */
extern const cnn_h5_field ckpt_history_columns[];
extern const int ckpt_nhistory_columns;

/* /optimizer's hyper-parameter attributes, after its type (a string) and
 * before its step (int64): each of cnn_optim_hparam_fields (the
 * optimizer's own list), doubles as float64 and ints as int32. */
static inline cnn_h5_field ckpt_hparam_field(const cnn_optim_hparam_field *f)
{
    return (cnn_h5_field){f->name, f->offset, f->is_int ? CNN_H5_I32 : CNN_H5_F64};
}

/* The tensors stored under a root for each layer: its parameters, then,
 * under /model only, its buffers (with_buffers). */
static inline int ckpt_ntensors(const cnn_layer *l, int with_buffers)
{
    return l->nparams + (with_buffers ? l->nbuffers : 0);
}

/* Tensor j of layer l under root: its dataset, shape, and where its floats
 * are (in the parameter layout, or in the buffer layout). */
typedef struct ckpt_tensor {
    char obj[CKPT_OBJ_MAX]; /* "root/<layer>/<tensor>" */
    int ndim;
    hsize_t dims[4];
    int is_buffer;
    size_t offset;
} ckpt_tensor;

static inline ckpt_tensor ckpt_tensor_of(const char *root, const cnn_layer *l, int j)
{
    ckpt_tensor t = {.is_buffer = j >= l->nparams};
    const cnn_param *p = t.is_buffer ? &l->buffers[j - l->nparams] : &l->params[j];
    snprintf(t.obj, sizeof t.obj, "%s/%s/%s", root, l->name, p->name);
    t.ndim = p->ndim;
    for (int d = 0; d < p->ndim; d++)
        t.dims[d] = (hsize_t)p->dims[d];
    t.offset = p->offset;
    return t;
}

/* Opens path read-only and checks that it is a checkpoint this program
 * can read (format_version). f->id < 0 on failure. */
cnn_status ckpt_open(cnn_h5 *f, const char *path, cnn_error *err);

/* The state and stored hyper-parameters of path, either may be NULL; no
 * tensor is read. */
cnn_status ckpt_read_info(const char *path, cnn_train_state *s, cnn_optim_hparams *hp,
                          cnn_error *err);

/* The whole file as bytes: an HDF5 file image built in memory, the caller
 * frees *image. Arguments as cnn_checkpoint_write's (checked there);
 * path only names the file in messages. */
cnn_status ckpt_build_image(const char *path, const cnn_model *m, const cnn_optim *o,
                            const cnn_train_state *s, const cnn_history *h,
                            const char *config_text, const char *const *class_names,
                            int nclasses, void **image, size_t *size, cnn_error *err);

/* Replaces path by the n bytes of data, atomically (see atomic.c). */
cnn_status ckpt_atomic_replace(const char *path, const void *data, size_t n, cnn_error *err);

#endif /* CNN_CKPT_SCHEMA_H */
