/* dataset.c - datasets over pixel stores, validation split, batching and
 * the [data] settings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/data.h"

cnn_store *cnn_store_new(const cnn_store_ops *ops, void *impl, cnn_shape shape)
{
    cnn_store *s = malloc(sizeof *s);
    if (!s) {
        cnn_store tmp = {ops, impl, shape, 0};
        ops->close(&tmp);
        return NULL;
    }
    *s = (cnn_store){ops, impl, shape, 1};
    return s;
}

void cnn_store_release(cnn_store *s)
{
    if (s && --s->refs == 0) {
        s->ops->close(s);
        free(s);
    }
}

typedef struct memory_store {
    uint8_t *pixels; /* (n, C, H, W) */
    int64_t n;
} memory_store;

static cnn_status memory_read(cnn_store *s, const int64_t *rows, int B, uint8_t *out,
                              cnn_error *err)
{
    const memory_store *m = s->impl;
    const size_t img = cnn_shape_size(s->shape);
    for (int b = 0; b < B; b++) {
        if (rows[b] < 0 || rows[b] >= m->n)
            return cnn_error_set(err, CNN_ERR_ARG, "sample %lld outside the %lld in memory",
                                 (long long)rows[b], (long long)m->n);
        memcpy(out + (size_t)b * img, m->pixels + (size_t)rows[b] * img, img);
    }
    return CNN_OK;
}

static void memory_close(cnn_store *s)
{
    memory_store *m = s->impl;
    if (m)
        free(m->pixels);
    free(m);
}

static const cnn_store_ops memory_ops = {"memory", memory_read, memory_close};

cnn_store *cnn_memory_store_new(uint8_t *pixels, int64_t n, cnn_shape shape)
{
    memory_store *m = malloc(sizeof *m);
    if (!m) {
        free(pixels);
        return NULL;
    }
    m->pixels = pixels;
    m->n = n;
    return cnn_store_new(&memory_ops, m, shape);
}

cnn_dataset *cnn_dataset_new(cnn_store *store, int64_t n, const char *source)
{
    cnn_dataset *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->labels = malloc((size_t)(n > 0 ? n : 1) * sizeof *d->labels);
    if (!d->labels) {
        free(d);
        return NULL;
    }
    d->n = n;
    d->store = store;
    d->shape = store->shape;
    store->refs++;
    snprintf(d->source, sizeof d->source, "%s", source);
    return d;
}

static void free_names(char **names, int n)
{
    if (!names)
        return;
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

void cnn_dataset_free(cnn_dataset *d)
{
    if (!d)
        return;
    cnn_store_release(d->store);
    free_names(d->class_names, d->nclasses);
    free(d->labels);
    free(d);
}

cnn_status cnn_dataset_set_classes(cnn_dataset *d, const char *const *names, int n,
                                   cnn_error *err)
{
    char **copy = calloc((size_t)(n > 0 ? n : 1), sizeof *copy);
    for (int i = 0; copy && i < n; i++)
        if (!(copy[i] = strdup(names[i]))) {
            free_names(copy, n);
            copy = NULL;
        }
    if (!copy)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for class names");
    free_names(d->class_names, d->class_names ? d->nclasses : 0);
    d->class_names = copy;
    d->nclasses = n;
    return CNN_OK;
}

cnn_status cnn_dataset_split_tail(cnn_dataset *d, double fraction, cnn_dataset **tail,
                                  cnn_error *err)
{
    *tail = NULL;
    int64_t nt = (int64_t)((double)d->n * fraction);
    if (nt < 1 || nt >= d->n)
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "validation_split %.4g of %lld samples leaves an empty set", fraction,
                             (long long)d->n);
    int64_t keep = d->n - nt;
    cnn_dataset *t = cnn_dataset_new(d->store, nt, d->source);
    if (!t)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the validation split");
    cnn_status st;
    if (d->class_names &&
        (st = cnn_dataset_set_classes(t, (const char *const *)d->class_names, d->nclasses, err))) {
        cnn_dataset_free(t);
        return st;
    }
    t->nclasses = d->nclasses;
    t->first = d->first + keep;
    memcpy(t->labels, d->labels + keep, (size_t)nt * sizeof *t->labels);
    d->n = keep; /* the tail of d's labels stays allocated, unused */
    *tail = t;
    return CNN_OK;
}

cnn_status cnn_dataset_read(const cnn_dataset *d, const int64_t *idx, int B, uint8_t *out,
                            cnn_error *err)
{
    enum { CHUNK = 256 };
    int64_t rows[CHUNK];
    const size_t img = cnn_shape_size(d->shape);
    for (int b0 = 0; b0 < B; b0 += CHUNK) {
        int nb = B - b0 < CHUNK ? B - b0 : CHUNK;
        for (int b = 0; b < nb; b++) {
            if (idx[b0 + b] < 0 || idx[b0 + b] >= d->n)
                return cnn_error_set(err, CNN_ERR_ARG, "%s: sample %lld of %lld requested",
                                     d->source, (long long)idx[b0 + b], (long long)d->n);
            rows[b] = d->first + idx[b0 + b];
        }
        cnn_status st = d->store->ops->read(d->store, rows, nb, out + (size_t)b0 * img, err);
        if (st)
            return st;
    }
    return CNN_OK;
}

cnn_status cnn_dataset_gather(const cnn_dataset *d, const int64_t *idx, int B, float rescale,
                              uint8_t *raw, float *x, int32_t *labels, cnn_error *err)
{
    cnn_status st = cnn_dataset_read(d, idx, B, raw, err);
    if (st)
        return st;
    const size_t n = (size_t)B * cnn_shape_size(d->shape);
    for (size_t k = 0; k < n; k++)
        x[k] = (float)raw[k] * rescale;
    for (int b = 0; b < B; b++)
        labels[b] = d->labels[idx[b]];
    return CNN_OK;
}

static cnn_status path_key(const cnn_section *s, const char *dir, const char *key, const char *def,
                           char *out, size_t n, cnn_error *err)
{
    const char *v;
    cnn_status st = cnn_cfg_string(s, key, def, &v, err);
    if (st)
        return st;
    int len = v[0] == '/' || !dir[0] ? snprintf(out, n, "%s", v) : snprintf(out, n, "%s/%s", dir, v);
    if (len < 0 || (size_t)len >= n)
        return cnn_error_set(err, CNN_ERR_CONFIG, "[data] %s: path too long", key);
    return CNN_OK;
}

/* Keys of the image-folder format (its loader is not in this version). */
static cnn_status imagefolder_keys(cnn_data_config *dc, const cnn_section *s, cnn_error *err)
{
    static const char *const modes[] = {"binary", "categorical", "sparse", NULL};
    const char *v;
    cnn_status st;
    if ((st = cnn_cfg_string(s, "train_dir", "train", &v, err)))
        return st;
    snprintf(dc->train_dir, sizeof dc->train_dir, "%s", v);
    if ((st = cnn_cfg_string(s, "validation_dir", "", &v, err)))
        return st;
    snprintf(dc->val_dir, sizeof dc->val_dir, "%s", v);
    if ((st = cnn_cfg_string(s, "test_dir", "test", &v, err)))
        return st;
    snprintf(dc->test_dir, sizeof dc->test_dir, "%s", v);
    return (st = cnn_cfg_pair(s, "image_size", 256, 256, &dc->image_h, &dc->image_w, err)) ? st
           : cnn_cfg_enum(s, "class_mode", 2, modes, &dc->class_mode, err);
}

cnn_status cnn_data_config_read(cnn_data_config *dc, const cnn_config *cfg, cnn_error *err)
{
    static const char *const formats[] = {"idx", "cifar10", "imagefolder", NULL};
    static const char *const validations[] = {"test", "split", "none", NULL};
    memset(dc, 0, sizeof *dc);
    const cnn_section *s = cnn_config_find(cfg, "data");
    const char *dir;
    int format, val;
    double rescale;
    long tl, vl;
    cnn_status st;
    if ((st = cnn_cfg_enum(s, "format", 0, formats, &format, err)))
        return st;
    dc->format = (cnn_data_format)format;
    if (dc->format == CNN_FORMAT_IMAGEFOLDER) {
        if ((st = imagefolder_keys(dc, s, err)))
            return st;
    } else {
        if ((st = cnn_cfg_string(s, "dir", "/usr/share/datasets/fashion-mnist", &dir, err)))
            return st;
        snprintf(dc->dir, sizeof dc->dir, "%s", dir);
    }
    if (dc->format == CNN_FORMAT_IDX &&
        ((st = path_key(s, dir, "train_images", "train-images-idx3-ubyte.gz", dc->train_images,
                        sizeof dc->train_images, err)) ||
         (st = path_key(s, dir, "train_labels", "train-labels-idx1-ubyte.gz", dc->train_labels,
                        sizeof dc->train_labels, err)) ||
         (st = path_key(s, dir, "test_images", "t10k-images-idx3-ubyte.gz", dc->test_images,
                        sizeof dc->test_images, err)) ||
         (st = path_key(s, dir, "test_labels", "t10k-labels-idx1-ubyte.gz", dc->test_labels,
                        sizeof dc->test_labels, err))))
        return st;
    if ((st = cnn_cfg_float(s, "rescale", 1.0 / 255.0, 0, 1e6, &rescale, err)) ||
        (st = cnn_cfg_int(s, "train_limit", 0, 0, (long)1 << 40, &tl, err)) ||
        (st = cnn_cfg_int(s, "test_limit", 0, 0, (long)1 << 40, &vl, err)) ||
        (st = cnn_cfg_enum(s, "validation", CNN_VAL_TEST, validations, &val, err)))
        return st;
    dc->rescale = (float)rescale;
    dc->train_limit = tl;
    dc->test_limit = vl;
    dc->validation = val;
    if (val == CNN_VAL_SPLIT) {
        if (!cnn_section_find(s, "validation_split"))
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s: [data] validation = split needs validation_split (e.g. 0.1)",
                                 cfg->path);
        if ((st = cnn_cfg_float(s, "validation_split", 0.1, 1e-6, 0.999, &dc->validation_split,
                                err)))
            return st;
    }
    return CNN_OK;
}

cnn_status cnn_data_load(const cnn_data_config *dc, int rank, int world, cnn_dataset **train,
                         cnn_dataset **val, cnn_dataset **test, cnn_error *err)
{
    /* IDX.gz offers no random access, so every rank holds the whole set;
     * rank and world matter for formats that can be read in pieces. */
    (void)rank;
    (void)world;
    *train = *val = *test = NULL;
    if (dc->format != CNN_FORMAT_IDX)
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "[data] format = %s: this version reads only idx data; the %s "
                             "loader is not implemented yet",
                             dc->format == CNN_FORMAT_CIFAR10 ? "cifar10" : "imagefolder",
                             dc->format == CNN_FORMAT_CIFAR10 ? "CIFAR-10" : "image-folder");
    cnn_status st = cnn_idx_load(train, dc->train_images, dc->train_labels, dc->train_limit, err);
    if (st)
        return st;
    if ((st = cnn_idx_load(test, dc->test_images, dc->test_labels, dc->test_limit, err)))
        goto fail;
    if ((*train)->shape.h != (*test)->shape.h || (*train)->shape.w != (*test)->shape.w) {
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s has %dx%d images but %s has %dx%d",
                           dc->train_images, (*train)->shape.h, (*train)->shape.w, dc->test_images,
                           (*test)->shape.h, (*test)->shape.w);
        goto fail;
    }
    if (dc->validation == CNN_VAL_SPLIT &&
        (st = cnn_dataset_split_tail(*train, dc->validation_split, val, err)))
        goto fail;
    if (dc->validation == CNN_VAL_TEST)
        *val = *test;
    return CNN_OK;
fail:
    cnn_dataset_free(*train);
    cnn_dataset_free(*test);
    *train = *test = NULL;
    return st;
}
