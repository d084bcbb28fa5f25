/* h5data.c - image datasets in one HDF5 file (read per batch by
 * hyperslab, and written by cnn-data). The one data file that includes
 * <hdf5.h>. HDF5's own error printing is switched off and its reasons
 * taken by the shared plumbing (src/h5/h5util.h): failures become
 * one-line cnn_error messages naming the file and HDF5's reason. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <hdf5.h>

#include "cnn/data.h"
#include "format.h"
#include "h5util.h"
#include "internal.h"

/* " (HDF5: <reason>)", the innermost message of HDF5's error stack on one
 * line, or "" when there is none; for our one-line errors. */
static const char *h5_reason(char buf[160])
{
    cnn_h5_reason r = cnn_h5_reason_now();
    if (r.text[0])
        snprintf(buf, 160, " (HDF5: %.140s)", r.text); /* cut to fit */
    else
        buf[0] = 0;
    H5Eclear2(H5E_DEFAULT);
    return buf;
}

/* "uint8", "int32", "float64", "string": what a file's type is, for
 * messages. */
static void type_name(hid_t t, char *buf, size_t n)
{
    size_t size = H5Tget_size(t);
    switch (H5Tget_class(t)) {
    case H5T_INTEGER:
        snprintf(buf, n, "%sint%zu", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", 8 * size);
        break;
    case H5T_FLOAT:
        snprintf(buf, n, "float%zu", 8 * size);
        break;
    case H5T_STRING:
        snprintf(buf, n, "string");
        break;
    default:
        snprintf(buf, n, "a %zu-byte non-numeric type", size);
    }
}

/* Opens dataset name of file, checks its rank and type class (want says
 * what is expected, for the message); dims gets its dimensions (up to 4). */
static cnn_status open_checked(hid_t file, const char *path, const char *name, int rank,
                               H5T_class_t cls, const char *want, hid_t *out, hsize_t *dims,
                               cnn_error *err)
{
    char why[160], tn[64];
    *out = -1;
    if (H5Lexists(file, name, H5P_DEFAULT) <= 0)
        return cnn_error_set(err, CNN_ERR_FORMAT,
                             "%s: no /%s dataset (a cnn-train image file has /images (N,H,W,C) "
                             "uint8 and /labels (N))",
                             path, name);
    /* What the link names is checked before HDF5 opens it as a dataset. */
    H5O_info_t oi;
    if (H5Oget_info_by_name2(file, name, &oi, H5O_INFO_BASIC, H5P_DEFAULT) < 0)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot read /%s%s", path, name,
                             h5_reason(why));
    if (oi.type != H5O_TYPE_DATASET)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: /%s is not a dataset (a group?)", path,
                             name);
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot open /%s%s", path, name,
                             h5_reason(why));
    hid_t sp = H5Dget_space(d), t = H5Dget_type(d);
    int r = H5Sget_simple_extent_ndims(sp);
    cnn_status st = CNN_OK;
    if (r != rank)
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: /%s has %d dimensions, expected %d%s", path,
                           name, r, rank, rank == 4 ? " (N, H, W, C)" : "");
    else if (H5Tget_class(t) != cls) {
        type_name(t, tn, sizeof tn);
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: /%s is %s, expected %s", path, name, tn,
                           want);
    } else
        H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    H5Tclose(t);
    if (st) {
        H5Dclose(d);
        return st;
    }
    *out = d;
    return CNN_OK;
}

typedef struct h5_store {
    hid_t file, images, space; /* space: (N, H, W, C) of /images */
    int64_t n;
    uint8_t *buf; /* (cap, H, W, C) */
    int cap;
    struct h5_pick { int64_t row; int b; } *pick; /* (cap) */
    char path[1024];
} h5_store;

static int by_row(const void *a, const void *b)
{
    const struct h5_pick *x = a, *y = b;
    return (x->row > y->row) - (x->row < y->row);
}

/* Reads the rows of pick[0..B) (sorted, repeats allowed) into buf, one
 * image per distinct row, one H5Dread per run of consecutive rows. One
 * hyperslab per read, and a memory space of the same shape, keep HDF5 on
 * its fast path: a union of hyperslabs, or a 1-D memory space, makes it
 * map chunks to memory pixel by pixel (10x slower here). Returns the
 * number of distinct rows, or -1. */
static int64_t read_runs(h5_store *s, const struct h5_pick *pick, int B, size_t img)
{
    hsize_t start[4] = {0}, count[4];
    H5Sget_simple_extent_dims(s->space, count, NULL);
    int64_t distinct = 0;
    for (int b = 0; b < B;) {
        int e = b + 1;
        int64_t last = pick[b].row;
        while (e < B && pick[e].row <= last + 1)
            last = pick[e++].row;
        start[0] = (hsize_t)pick[b].row;
        count[0] = (hsize_t)(last - pick[b].row + 1);
        hid_t mem = H5Screate_simple(4, count, NULL); /* same shape: no per-pixel map */
        herr_t r = H5Sselect_hyperslab(s->space, H5S_SELECT_SET, start, NULL, count, NULL);
        if (r >= 0)
            r = H5Dread(s->images, H5T_NATIVE_UINT8, mem, s->space, H5P_DEFAULT,
                        s->buf + (size_t)distinct * img);
        H5Sclose(mem);
        if (r < 0)
            return -1;
        distinct += (int64_t)count[0];
        b = e;
    }
    return distinct;
}

static cnn_status h5_read(cnn_store *st, const int64_t *rows, int B, uint8_t *out,
                          cnn_error *err)
{
    h5_store *s = st->impl;
    const cnn_shape sh = st->shape;
    const size_t img = cnn_shape_size(sh);
    char why[160];
    if (B > s->cap) {
        size_t bytes;
        if (!cnn_size_mul((size_t)B, img, &bytes))
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: a batch of %d images is too large",
                                 s->path, B);
        uint8_t *buf = realloc(s->buf, bytes);
        if (buf)
            s->buf = buf;
        struct h5_pick *pick = realloc(s->pick, (size_t)B * sizeof *pick);
        if (pick)
            s->pick = pick;
        if (!buf || !pick)
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for a batch of %d",
                                 s->path, B);
        s->cap = B;
    }
    for (int b = 0; b < B; b++) {
        if (rows[b] < 0 || rows[b] >= s->n)
            return cnn_error_set(err, CNN_ERR_ARG, "%s: image %lld of %lld requested", s->path,
                                 (long long)rows[b], (long long)s->n);
        s->pick[b] = (struct h5_pick){rows[b], b};
    }
    /* Sorted, runs of consecutive rows become one read each. */
    qsort(s->pick, (size_t)B, sizeof *s->pick, by_row);
    if (read_runs(s, s->pick, B, img) < 0)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot read %d images from /images%s",
                             s->path, B, h5_reason(why));
    int64_t u = -1; /* distinct row of pick[b] in buf */
    for (int b = 0; b < B; b++) {
        if (b == 0 || s->pick[b].row != s->pick[b - 1].row)
            u++;
        cnn_hwc_to_chw(s->buf + (size_t)u * img, sh.c, sh.h, sh.w,
                       out + (size_t)s->pick[b].b * img);
    }
    return CNN_OK;
}

static void h5_close(cnn_store *st)
{
    h5_store *s = st->impl;
    if (!s)
        return;
    if (s->space >= 0)
        H5Sclose(s->space);
    if (s->images >= 0)
        H5Dclose(s->images);
    if (s->file >= 0)
        H5Fclose(s->file);
    free(s->buf);
    free(s->pick);
    free(s);
}

/* Not parallel: a read uses the store's buffer (and HDF5 takes its own
 * global lock in a thread-safe build, as Debian's, so a read on a prefetch
 * thread may run beside the checkpoint writes of the training thread). */
static const cnn_store_ops h5_ops = {.format = "hdf5", .read = h5_read, .close = h5_close};

/* The first n labels of /labels as int32, checked to be class numbers:
 * 0 <= label < CNN_MAX_CLASSES. HDF5 converts wider integers by clamping
 * (2^40 becomes INT32_MAX), which the bound refuses as well. */
static cnn_status read_labels(hid_t file, const char *path, int64_t total, int64_t n,
                              int32_t *labels, cnn_error *err)
{
    hsize_t dims[4], start = 0, count = (hsize_t)n;
    hid_t d;
    char why[160];
    cnn_status st = open_checked(file, path, "labels", 1, H5T_INTEGER, "integers", &d, dims, err);
    if (st)
        return st;
    if ((int64_t)dims[0] != total) {
        H5Dclose(d);
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: /labels has %llu entries but /images %lld",
                             path, (unsigned long long)dims[0], (long long)total);
    }
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(1, &count, NULL);
    herr_t r = n == 0 ? 0
                      : H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) < 0
                            ? -1
                            : H5Dread(d, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, labels);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
    if (r < 0)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot read /labels%s", path, h5_reason(why));
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0)
            return cnn_error_set(err, CNN_ERR_FORMAT, "%s: /labels[%lld] is %d, below 0", path,
                                 (long long)i, labels[i]);
        if (labels[i] >= CNN_MAX_CLASSES)
            return cnn_error_set(err, CNN_ERR_FORMAT,
                                 "%s: /labels[%lld] is %d%s, not a class number (0 to %d)", path,
                                 (long long)i, labels[i],
                                 labels[i] == INT32_MAX ? " or more" : "", CNN_MAX_CLASSES - 1);
    }
    return CNN_OK;
}

enum { MAX_NAME = 4096 }; /* bytes of a fixed-length class name */

/* The strings HDF5 allocates while it converts variable-length /classes,
 * kept here so that they are freed whether the read succeeds or not: when
 * a damaged heap reference makes the conversion fail part-way, HDF5 1.10.8
 * drops the strings it already made (they sit in its conversion buffer,
 * not in ours), so H5Dvlen_reclaim cannot reach them. */
typedef struct vlen_pool {
    void **p;
    size_t n, cap;
} vlen_pool;

static void *vlen_alloc(size_t size, void *info)
{
    vlen_pool *pool = info;
    if (pool->n == pool->cap) {
        size_t cap = pool->cap ? 2 * pool->cap : 16;
        void **p = realloc(pool->p, cap * sizeof *p);
        if (!p)
            return NULL; /* HDF5 fails the read */
        pool->p = p;
        pool->cap = cap;
    }
    void *m = malloc(size ? size : 1);
    if (m)
        pool->p[pool->n++] = m;
    return m;
}

/* HDF5 frees nothing itself here: the pool is freed after the read. */
static void vlen_keep(void *m, void *info)
{
    (void)m;
    (void)info;
}

static void vlen_pool_free(vlen_pool *pool)
{
    for (size_t k = 0; k < pool->n; k++)
        free(pool->p[k]);
    free(pool->p);
    *pool = (vlen_pool){0};
}

/* /classes, if present, into d (variable- or fixed-length strings): at
 * most CNN_MAX_CLASSES names, none a null string. */
static cnn_status read_classes(hid_t file, const char *path, cnn_dataset *d, cnn_error *err)
{
    if (H5Lexists(file, "classes", H5P_DEFAULT) <= 0)
        return CNN_OK;
    hsize_t dims[4];
    hid_t ds;
    char why[160];
    cnn_status st = open_checked(file, path, "classes", 1, H5T_STRING, "strings", &ds, dims, err);
    if (st)
        return st;
    hid_t ft = H5Dget_type(ds);
    const int vlen = H5Tis_variable_str(ft) > 0;
    const size_t fsize = H5Tget_size(ft);
    if (dims[0] > CNN_MAX_CLASSES || (!vlen && (fsize == 0 || fsize > MAX_NAME))) {
        H5Tclose(ft);
        H5Dclose(ds);
        return dims[0] > CNN_MAX_CLASSES
                   ? cnn_error_set(err, CNN_ERR_FORMAT, "%s: /classes has %llu names, more than %d",
                                   path, (unsigned long long)dims[0], CNN_MAX_CLASSES)
                   : cnn_error_set(err, CNN_ERR_FORMAT,
                                   "%s: /classes holds strings of %zu bytes (1 to %d allowed)",
                                   path, fsize, MAX_NAME);
    }
    const int K = (int)dims[0];
    hid_t mt = H5Tcopy(H5T_C_S1);
    const size_t flen = vlen ? sizeof(char *) : fsize + 1; /* + NUL */
    H5Tset_size(mt, vlen ? H5T_VARIABLE : flen);
    H5Tset_cset(mt, H5Tget_cset(ft));
    char *raw = calloc((size_t)(K ? K : 1), flen);
    const char **names = calloc((size_t)(K ? K : 1), sizeof *names);
    vlen_pool pool = {0};
    const hid_t xfer = H5Pcreate(H5P_DATASET_XFER);
    if (!raw || !names || xfer < 0 ||
        H5Pset_vlen_mem_manager(xfer, vlen_alloc, &pool, vlen_keep, NULL) < 0)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    else if (K && H5Dread(ds, mt, H5S_ALL, H5S_ALL, xfer, raw) < 0)
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot read /classes%s", path,
                           h5_reason(why));
    else {
        for (int k = 0; k < K; k++)
            names[k] = vlen ? ((char **)raw)[k] : raw + (size_t)k * flen;
        for (int k = 0; k < K && !st; k++)
            if (!names[k])
                st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: /classes[%d] is a null string",
                                   path, k);
        if (!st)
            st = cnn_dataset_set_classes(d, names, K, err);
    }
    vlen_pool_free(&pool);
    if (xfer >= 0)
        H5Pclose(xfer);
    free(names);
    free(raw);
    H5Tclose(mt);
    H5Tclose(ft);
    H5Dclose(ds);
    return st;
}

cnn_status cnn_h5data_load(cnn_dataset **out, const char *path, int64_t limit, cnn_error *err)
{
    *out = NULL;
    cnn_h5_quiet();
    struct stat sb;
    char why[160];
    if (stat(path, &sb) != 0)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (H5Fis_hdf5(path) <= 0)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: not an HDF5 file", path);
    h5_store *s = calloc(1, sizeof *s);
    if (!s)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    s->file = s->images = s->space = -1;
    snprintf(s->path, sizeof s->path, "%s", path);
    /* Read-only: no file locks, which parallel file systems often lack. */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_file_locking(fapl, 0, 1);
    s->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    hsize_t dims[4];
    cnn_status st = CNN_OK;
    if (s->file < 0)
        st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot open%s", path, h5_reason(why));
    else
        st = open_checked(s->file, path, "images", 4, H5T_INTEGER, "uint8", &s->images, dims, err);
    if (!st) {
        hid_t t = H5Dget_type(s->images);
        char tn[64];
        type_name(t, tn, sizeof tn);
        if (H5Tget_size(t) != 1 || H5Tget_sign(t) != H5T_SGN_NONE)
            st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: /images is %s, expected uint8", path,
                               tn);
        else if (!dims[1] || !dims[2] || !dims[3] || dims[1] > 65536 || dims[2] > 65536 ||
                 dims[3] > 64)
            st = cnn_error_set(err, CNN_ERR_FORMAT,
                               "%s: /images has implausible images of %llux%llux%llu (HxWxC)",
                               path, (unsigned long long)dims[1], (unsigned long long)dims[2],
                               (unsigned long long)dims[3]);
        else if (dims[0] > (hsize_t)INT64_MAX / (dims[1] * dims[2] * dims[3]))
            st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: /images claims %llu images, too many",
                               path, (unsigned long long)dims[0]);
        H5Tclose(t);
    }
    if (st) {
        cnn_store tmp = {.impl = s};
        h5_close(&tmp);
        return st;
    }
    s->space = H5Dget_space(s->images);
    s->n = (int64_t)dims[0];
    int64_t n = limit > 0 && limit < s->n ? limit : s->n;
    cnn_store *store =
        cnn_store_new(&h5_ops, s, (cnn_shape){(int)dims[3], (int)dims[1], (int)dims[2]});
    cnn_dataset *d = store ? cnn_dataset_new(store, n, path) : NULL;
    cnn_store_release(store); /* the dataset holds it now, or nobody */
    if (!d)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for %lld labels", path,
                             (long long)n);
    if ((st = read_labels(s->file, path, s->n, n, d->labels, err)) ||
        (st = read_classes(s->file, path, d, err))) {
        cnn_dataset_free(d);
        return st;
    }
    int32_t maxl = -1;
    for (int64_t i = 0; i < n; i++)
        maxl = d->labels[i] > maxl ? d->labels[i] : maxl;
    if (d->class_names && maxl >= d->nclasses) {
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: label %d but only %d names in /classes",
                           path, maxl, d->nclasses);
        cnn_dataset_free(d);
        return st;
    }
    if (!d->class_names)
        d->nclasses = maxl + 1;
    *out = d;
    return CNN_OK;
}

struct cnn_h5data_writer {
    hid_t file, images;
    cnn_shape shape;
    int64_t n;    /* images written */
    uint8_t *hwc; /* (cap, H, W, C) */
    int64_t cap;
    char path[1024];
};

cnn_status cnn_h5data_create(cnn_h5data_writer **out, const char *path, cnn_shape shape, int chunk,
                             int gzip, cnn_error *err)
{
    *out = NULL;
    cnn_h5_quiet();
    char why[160];
    if (chunk <= 0)
        chunk = 1;
    cnn_h5data_writer *w = calloc(1, sizeof *w);
    if (!w)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    snprintf(w->path, sizeof w->path, "%s", path);
    w->shape = shape;
    w->images = -1;
    w->file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        free(w);
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot create%s", path, h5_reason(why));
    }
    hsize_t dims[4] = {0, (hsize_t)shape.h, (hsize_t)shape.w, (hsize_t)shape.c};
    hsize_t maxd[4] = {H5S_UNLIMITED, dims[1], dims[2], dims[3]};
    hsize_t cdims[4] = {(hsize_t)chunk, dims[1], dims[2], dims[3]};
    hid_t sp = H5Screate_simple(4, dims, maxd), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 4, cdims);
    if (gzip > 0)
        H5Pset_deflate(dcpl, (unsigned)gzip);
    w->images = H5Dcreate2(w->file, "images", H5T_STD_U8LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    if (w->images < 0) {
        cnn_status st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot create /images%s", path,
                                      h5_reason(why));
        cnn_h5data_close(w, NULL, NULL, 0, NULL);
        return st;
    }
    *out = w;
    return CNN_OK;
}

cnn_status cnn_h5data_append(cnn_h5data_writer *w, const uint8_t *images, int64_t n,
                             cnn_error *err)
{
    const cnn_shape sh = w->shape;
    const size_t img = cnn_shape_size(sh);
    char why[160];
    if (n <= 0)
        return CNN_OK;
    if (n > w->cap) {
        size_t bytes;
        uint8_t *p = cnn_size_mul((size_t)n, img, &bytes) ? realloc(w->hwc, bytes) : NULL;
        if (!p)
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", w->path);
        w->hwc = p;
        w->cap = n;
    }
    for (int64_t i = 0; i < n; i++)
        cnn_chw_to_hwc(images + (size_t)i * img, sh.c, sh.h, sh.w, w->hwc + (size_t)i * img);
    hsize_t size[4] = {(hsize_t)(w->n + n), (hsize_t)sh.h, (hsize_t)sh.w, (hsize_t)sh.c};
    hsize_t start[4] = {(hsize_t)w->n, 0, 0, 0}, count[4] = {(hsize_t)n, size[1], size[2], size[3]};
    herr_t r = H5Dset_extent(w->images, size);
    hid_t fs = r < 0 ? -1 : H5Dget_space(w->images), ms = H5Screate_simple(4, count, NULL);
    if (fs >= 0)
        r = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL);
    if (fs >= 0 && r >= 0)
        r = H5Dwrite(w->images, H5T_NATIVE_UINT8, ms, fs, H5P_DEFAULT, w->hwc);
    H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    if (fs < 0 || r < 0)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write images %lld..%lld%s", w->path,
                             (long long)w->n, (long long)(w->n + n - 1), h5_reason(why));
    w->n += n;
    return CNN_OK;
}

/* Writes a 1-D dataset of n elements of file type ft from data of
 * memory type mt. */
static herr_t write_1d(hid_t file, const char *name, hid_t ft, hid_t mt, hsize_t n,
                       const void *data)
{
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t d = H5Dcreate2(file, name, ft, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = d < 0 ? -1 : n ? H5Dwrite(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) : 0;
    if (d >= 0)
        H5Dclose(d);
    H5Sclose(sp);
    return r;
}

cnn_status cnn_h5data_close(cnn_h5data_writer *w, const int32_t *labels, const char *const *names,
                            int nclasses, cnn_error *err)
{
    char why[160];
    cnn_status st = CNN_OK;
    if (labels && write_1d(w->file, "labels", H5T_STD_I32LE, H5T_NATIVE_INT32, (hsize_t)w->n,
                           labels) < 0)
        st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot write /labels%s", w->path,
                           h5_reason(why));
    if (labels && names && !st) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, H5T_CSET_UTF8);
        if (write_1d(w->file, "classes", t, t, (hsize_t)nclasses, names) < 0)
            st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot write /classes%s", w->path,
                               h5_reason(why));
        H5Tclose(t);
    }
    if (w->images >= 0)
        H5Dclose(w->images);
    if (H5Fclose(w->file) < 0 && labels && !st)
        st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot close%s", w->path, h5_reason(why));
    if (!labels || st)
        remove(w->path);
    free(w->hwc);
    free(w);
    return st;
}

/* [data] format = hdf5: train_file, validation_file, test_file. */
static cnn_status h5data_load_set(const cnn_data_config *dc, int set, int64_t limit,
                                  double split, cnn_dataset **out, cnn_dataset **val,
                                  cnn_error *err)
{
    (void)split;
    (void)val;
    return cnn_h5data_load(out, dc->paths[set], limit, err);
}

static const cnn_format_key h5data_keys[] = {{"train_file", "train.h5", CNN_SET_TRAIN},
                                             {"validation_file", "", CNN_SET_VAL},
                                             {"test_file", "test.h5", CNN_SET_TEST},
                                             {NULL, NULL, 0}};

const cnn_data_format cnn_format_hdf5 = {
    .name = "hdf5", .dir = "", .keys = h5data_keys, .load = h5data_load_set};
