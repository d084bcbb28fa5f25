/* dataset.c - datasets over pixel stores, validation split, batching and
 * the [data] settings. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/data.h"
#include "cnn/prefetch.h"
#include "format.h"
#include "internal.h"

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

static const cnn_store_ops memory_ops = {.format = "memory", .read = memory_read,
                                          .close = memory_close, .parallel = 1};

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
    if (n < 0 || (uint64_t)n > SIZE_MAX / sizeof(int64_t)) /* labels, and a row map later */
        return NULL;
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
    cnn_data_cache_free(d->cache);
    free_names(d->class_names, d->nclasses);
    free(d->labels);
    free(d->rows);
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

cnn_status cnn_dataset_split_at(cnn_dataset *d, int64_t keep, cnn_dataset **tail,
                                cnn_error *err)
{
    *tail = NULL;
    if (keep < 1 || keep >= d->n)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: cannot split %lld samples after %lld",
                             d->source, (long long)d->n, (long long)keep);
    int64_t nt = d->n - keep;
    cnn_dataset *t = cnn_dataset_new(d->store, nt, d->source);
    if (t && d->rows && (t->rows = malloc((size_t)nt * sizeof *t->rows)))
        memcpy(t->rows, d->rows + keep, (size_t)nt * sizeof *t->rows);
    if (!t || (d->rows && !t->rows)) {
        cnn_dataset_free(t);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the validation split");
    }
    cnn_status st;
    if (d->class_names &&
        (st = cnn_dataset_set_classes(t, (const char *const *)d->class_names, d->nclasses, err))) {
        cnn_dataset_free(t);
        return st;
    }
    t->nclasses = d->nclasses;
    t->first = d->first + keep;
    t->skip_bad = d->skip_bad;
    memcpy(t->labels, d->labels + keep, (size_t)nt * sizeof *t->labels);
    d->n = keep; /* the tails of d's labels and rows stay allocated, unused */
    *tail = t;
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
    return cnn_dataset_split_at(d, d->n - nt, tail, err);
}

static int64_t store_row(const cnn_dataset *d, int64_t i)
{
    return d->rows ? d->rows[i] : d->first + i;
}

cnn_status cnn_dataset_read_one(const cnn_dataset *d, int64_t i, uint8_t *out, int *bad,
                                cnn_error *err)
{
    *bad = 0;
    cnn_status st = cnn_dataset_read(d, &i, 1, out, err);
    if (st != CNN_ERR_FORMAT && st != CNN_ERR_IO)
        return st;
    if (d->skip_bad) {
        *bad = 1;
        return CNN_OK;
    }
    cnn_error_append(err, " ([data] on_bad_image = skip skips it)");
    return st;
}

cnn_status cnn_dataset_verify(const cnn_dataset *d, int rank, int world, uint8_t *bad,
                              cnn_error *err)
{
    memset(bad, 0, (size_t)d->n);
    if (!d->store->ops->per_file)
        return CNN_OK;
    uint8_t *img = malloc(cnn_shape_size(d->shape));
    if (!img)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    const int64_t lo = d->n * rank / world, hi = d->n * (rank + 1) / world;
    cnn_status st = CNN_OK;
    for (int64_t i = lo; i < hi && !st; i++) {
        int b;
        st = cnn_dataset_read_one(d, i, img, &b, err);
        bad[i] = (uint8_t)b;
    }
    free(img);
    return st;
}

cnn_status cnn_dataset_drop(cnn_dataset *d, const uint8_t *bad, int64_t *dropped, cnn_error *err)
{
    int64_t keep = 0;
    for (int64_t i = 0; i < d->n; i++)
        keep += !bad[i];
    if (keep == 0)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: none of the %lld images can be read",
                             d->source, (long long)d->n);
    if (dropped)
        *dropped = d->n - keep;
    if (keep == d->n)
        return CNN_OK;
    int64_t *rows = malloc((size_t)keep * sizeof *rows);
    if (!rows)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    int64_t k = 0;
    for (int64_t i = 0; i < d->n; i++)
        if (!bad[i]) {
            rows[k] = store_row(d, i);
            d->labels[k++] = d->labels[i];
        }
    free(d->rows);
    d->rows = rows;
    d->n = keep;
    return CNN_OK;
}

const char *cnn_dataset_describe(const cnn_dataset *d, int64_t i, char *buf, size_t n)
{
    if (d->store->ops->describe)
        d->store->ops->describe(d->store, store_row(d, i), buf, n);
    else
        snprintf(buf, n, "%s sample %lld", d->source, (long long)i);
    return buf;
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
            rows[b] = store_row(d, idx[b0 + b]);
        }
        uint8_t *to = out + (size_t)b0 * img;
        cnn_status st = d->cache ? cnn_data_cache_read(d->cache, d->store, rows, nb, to, err)
                                 : d->store->ops->read(d->store, rows, nb, to, err);
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

/* A path key, taken relative to dir unless absolute; an empty value (the
 * default "" of an optional key) stays empty. */
static cnn_status path_key(const cnn_section *s, const char *dir, const char *key, const char *def,
                           char *out, size_t n, cnn_error *err)
{
    const char *v;
    cnn_status st = cnn_cfg_string(s, key, def, &v, err);
    if (st)
        return st;
    int len = v[0] == '/' || !v[0] || !dir[0] ? snprintf(out, n, "%s", v)
                                              : snprintf(out, n, "%s/%s", dir, v);
    if (len < 0 || (size_t)len >= n) {
        char where[320];
        cnn_cfg_where(s, cnn_section_find(s, key), key, where, sizeof where);
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: path too long", where);
    }
    return CNN_OK;
}

/* The format table: every consumer loops over it (format.h says how to
 * add one). */
static const cnn_data_format *const formats[] = {
#define X(name) &cnn_format_##name,
    CNN_DATA_FORMATS
#undef X
};
enum { NFORMATS = sizeof formats / sizeof *formats };

/* validation = test|split|none, or a separate set (validation_dir or
 * validation_file), which then must not be contradicted. */
static cnn_status validation_keys(cnn_data_config *dc, const cnn_section *s, const char *path,
                                  cnn_error *err)
{
    static const char *const validations[] = {"test", "split", "none", NULL};
    int val;
    cnn_status st = cnn_cfg_enum(s, "validation", CNN_VAL_TEST, validations, &val, err);
    if (st)
        return st;
    dc->validation = val;
    const char *key = NULL; /* the format's key of a separate validation set */
    for (const cnn_format_key *k = dc->format->keys; k->key; k++)
        if (k->slot == CNN_SET_VAL)
            key = k->key;
    if (key && dc->paths[CNN_SET_VAL][0]) {
        if (cnn_section_find(s, "validation")) {
            char where[320];
            cnn_cfg_where(s, cnn_section_find(s, "validation"), "validation", where,
                          sizeof where);
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s: contradicts %s, which is the validation set; remove one",
                                 where, key);
        }
        dc->validation = CNN_VAL_SEPARATE;
    }
    if (val == CNN_VAL_SPLIT) {
        if (!cnn_section_find(s, "validation_split"))
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s: [data] validation = split needs validation_split (e.g. 0.1)",
                                 path);
        if ((st = cnn_cfg_float(s, "validation_split", 0.1, 1e-6, 0.999, &dc->validation_split,
                                err)))
            return st;
    }
    return CNN_OK;
}

cnn_status cnn_data_config_read(cnn_data_config *dc, const cnn_config *cfg, cnn_error *err)
{
    const char *names[NFORMATS + 1];
    for (int f = 0; f < NFORMATS; f++)
        names[f] = formats[f]->name;
    names[NFORMATS] = NULL;
    memset(dc, 0, sizeof *dc);
    const cnn_section *s = cnn_config_find(cfg, "data");
    const char *dir;
    int format;
    double rescale;
    long tl, vl, lt;
    /* cnn_cfg_bool's words (odd: true), and auto */
    static const char *const cache_values[] = {"false", "true", "no",  "yes", "0",
                                               "1",     "off",  "on",  "auto", NULL};
    int cache;
    cnn_status st;
    if ((st = cnn_cfg_enum(s, "format", 0, names, &format, err)))
        return st;
    const cnn_data_format *fs = dc->format = formats[format];
    if ((st = cnn_cfg_string(s, "dir", fs->dir, &dir, err)))
        return st;
    snprintf(dc->dir, sizeof dc->dir, "%s", dir);
    for (const cnn_format_key *k = fs->keys; k->key; k++)
        if ((st = path_key(s, dir, k->key, k->def, dc->paths[k->slot], sizeof dc->paths[k->slot],
                           err)))
            return st;
    if (fs->read_keys && (st = fs->read_keys(dc, s, err)))
        return st;
    if ((st = cnn_cfg_float(s, "rescale", 1.0 / 255.0, 0, 1e6, &rescale, err)) ||
        (st = cnn_cfg_int(s, "train_limit", 0, 0, (long)1 << 40, &tl, err)) ||
        (st = cnn_cfg_int(s, "test_limit", 0, 0, (long)1 << 40, &vl, err)) ||
        (st = cnn_cfg_bool(s, "prefetch", 1, &dc->prefetch, err)) ||
        (st = cnn_cfg_int(s, "loader_threads", 2, 1, CNN_PREFETCH_MAX_THREADS, &lt, err)) ||
        (st = cnn_cfg_enum(s, "cache", 8, cache_values, &cache, err)) ||
        (st = validation_keys(dc, s, cfg->path, err)))
        return st;
    dc->rescale = (float)rescale;
    dc->train_limit = tl;
    dc->test_limit = vl;
    dc->loader_threads = (int)lt;
    dc->cache = cache == 8 ? CNN_CACHE_AUTO : cache & 1 ? CNN_CACHE_ON : CNN_CACHE_OFF;
    return CNN_OK;
}

/* b must hold images of a's shape and, when both have class names, the
 * same ones. */
static cnn_status check_alike(const cnn_dataset *a, const cnn_dataset *b, cnn_error *err)
{
    if (a->shape.c != b->shape.c || a->shape.h != b->shape.h || a->shape.w != b->shape.w)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s has %dx%dx%d images but %s has %dx%dx%d",
                             a->source, a->shape.h, a->shape.w, a->shape.c, b->source, b->shape.h,
                             b->shape.w, b->shape.c);
    if (!a->class_names || !b->class_names)
        return CNN_OK;
    for (int k = 0; k < a->nclasses || k < b->nclasses; k++)
        if (k >= a->nclasses || k >= b->nclasses || strcmp(a->class_names[k], b->class_names[k]))
            return cnn_error_set(err, CNN_ERR_FORMAT,
                                 "%s and %s have different classes: '%s' and '%s' at label %d",
                                 a->source, b->source, k < a->nclasses ? a->class_names[k] : "",
                                 k < b->nclasses ? b->class_names[k] : "", k);
    return CNN_OK;
}

int cnn_data_listing_put(cnn_data_listing *l, const void *p, size_t n)
{
    if (l->cap - l->len < n) {
        size_t cap = l->cap ? l->cap : 4096;
        while (cap - l->len < n)
            cap *= 2;
        char *b = realloc(l->bytes, cap);
        if (!b)
            return -1;
        l->bytes = b;
        l->cap = cap;
    }
    memcpy(l->bytes + l->len, p, n);
    l->len += n;
    return 0;
}

void cnn_data_listing_free(cnn_data_listing *l)
{
    if (!l)
        return;
    free(l->bytes);
    *l = (cnn_data_listing){0};
}

/* A listing holds, for each set in the order cnn_data_load reads them
 * (train, test, validation), the length of its section in decimal and a
 * NUL, then the section (0 bytes for a set the load does not read). */
static const int listing_order[] = {CNN_SET_TRAIN, CNN_SET_TEST, CNN_SET_VAL};

static int is_read(const cnn_data_config *dc, int set)
{
    return set != CNN_SET_VAL || dc->validation == CNN_VAL_SEPARATE;
}

cnn_status cnn_data_list(const cnn_data_config *dc, cnn_data_listing *out, cnn_error *err)
{
    const cnn_data_format *fs = dc->format;
    cnn_status st = CNN_OK;
    for (int k = 0; k < 3 && fs->list && !st; k++) {
        const int set = listing_order[k];
        cnn_data_listing one = {0};
        char len[32];
        if (is_read(dc, set))
            st = fs->list(dc, set, &one, err);
        int n = snprintf(len, sizeof len, "%zu", one.len);
        if (!st && (cnn_data_listing_put(out, len, (size_t)n + 1) ||
                    (one.len && cnn_data_listing_put(out, one.bytes, one.len))))
            st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory listing %s", dc->paths[set]);
        cnn_data_listing_free(&one);
    }
    if (st)
        cnn_data_listing_free(out);
    return st;
}

/* Section `set` of l: *at, *n. */
static cnn_status section(const cnn_data_listing *l, int set, const char **at, size_t *n,
                          cnn_error *err)
{
    size_t pos = 0;
    for (int k = 0; k < 3 && (k == 0 || listing_order[k - 1] != set); k++) {
        const char *nul = pos < l->len ? memchr(l->bytes + pos, 0, l->len - pos) : NULL;
        char *end;
        unsigned long long len = nul ? strtoull(l->bytes + pos, &end, 10) : 0;
        if (!nul || end != nul || len > l->len - (size_t)(nul + 1 - l->bytes))
            return cnn_error_set(err, CNN_ERR_FORMAT, "a listing of the data folders that "
                                                      "does not parse (%zu bytes)",
                                 l->len);
        *at = nul + 1;
        *n = (size_t)len;
        pos = (size_t)(nul + 1 - l->bytes) + (size_t)len;
    }
    return CNN_OK;
}

/* fs->load, or fs->load_listed on l's section of the set. */
static cnn_status load_set(const cnn_data_config *dc, const cnn_data_listing *l, int set,
                           int64_t limit, double split, cnn_dataset **out, cnn_dataset **val,
                           cnn_error *err)
{
    const cnn_data_format *fs = dc->format;
    if (!l || !fs->load_listed)
        return fs->load(dc, set, limit, split, out, val, err);
    const char *at = NULL;
    size_t n = 0;
    cnn_status st = section(l, set, &at, &n, err);
    return st ? st : fs->load_listed(dc, set, at, n, limit, split, out, val, err);
}

cnn_status cnn_data_load(const cnn_data_config *dc, int rank, int world, cnn_dataset **train,
                         cnn_dataset **val, cnn_dataset **test, cnn_error *err)
{
    return cnn_data_load_listed(dc, rank, world, NULL, train, val, test, err);
}

cnn_status cnn_data_load_listed(const cnn_data_config *dc, int rank, int world,
                                const cnn_data_listing *l, cnn_dataset **train,
                                cnn_dataset **val, cnn_dataset **test, cnn_error *err)
{
    /* Every rank holds all labels and reads the pixels of its batches;
     * rank and world would matter to a format that must be read in pieces. */
    (void)rank;
    (void)world;
    *train = *val = *test = NULL;
    const cnn_data_format *fs = dc->format;
    const int folder_split = fs->splits_itself && dc->validation == CNN_VAL_SPLIT;
    cnn_status st = load_set(dc, l, CNN_SET_TRAIN, dc->train_limit,
                             folder_split ? dc->validation_split : 0, train, val, err);
    if (st)
        return st;
    if ((st = load_set(dc, l, CNN_SET_TEST, dc->test_limit, 0, test, NULL, err)) ||
        (st = check_alike(*train, *test, err)))
        goto fail;
    if (dc->validation == CNN_VAL_SPLIT && !folder_split &&
        (st = cnn_dataset_split_tail(*train, dc->validation_split, val, err)))
        goto fail;
    if (dc->validation == CNN_VAL_SEPARATE &&
        ((st = load_set(dc, l, CNN_SET_VAL, 0, 0, val, NULL, err)) ||
         (st = check_alike(*train, *val, err))))
        goto fail;
    if (dc->validation == CNN_VAL_TEST)
        *val = *test;
    return CNN_OK;
fail:
    if (*val != *test)
        cnn_dataset_free(*val);
    cnn_dataset_free(*train);
    cnn_dataset_free(*test);
    *train = *val = *test = NULL;
    return st;
}
