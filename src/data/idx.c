/* idx.c - MNIST-style IDX files: gzip-compressed ones are decompressed into
 * memory (zlib), plain ones are read image by image at their offsets. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cnn/data.h"
#include "format.h"
#include "internal.h"

/* Reads exactly n bytes; returns the number read (short on EOF/error). */
static size_t read_full(gzFile f, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        unsigned chunk = n - got > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
        int r = gzread(f, (char *)buf + got, chunk);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* Opens path and checks the IDX header: magic 0x0000 08 ndim, then ndim
 * big-endian uint32 sizes. */
static cnn_status idx_open(const char *path, int want_ndim, gzFile *out, uint32_t *dims,
                           cnn_error *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open: %s", path,
                             errno ? strerror(errno) : "zlib error");
    unsigned char h[4];
    if (read_full(f, h, 4) != 4) {
        gzclose(f);
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: not an IDX file (shorter than its header)",
                             path);
    }
    if (h[0] != 0 || h[1] != 0 || h[2] != 0x08 || h[3] != want_ndim) {
        gzclose(f);
        return cnn_error_set(err, CNN_ERR_FORMAT,
                             "%s: not an IDX %s file (magic %02x%02x%02x%02x, expected "
                             "000008%02x)",
                             path, want_ndim == 3 ? "image" : "label", h[0], h[1], h[2], h[3],
                             want_ndim);
    }
    for (int i = 0; i < want_ndim; i++) {
        unsigned char b[4];
        if (read_full(f, b, 4) != 4) {
            gzclose(f);
            return cnn_error_set(err, CNN_ERR_FORMAT, "%s: truncated IDX header", path);
        }
        dims[i] = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    }
    *out = f;
    return CNN_OK;
}

/* A plain IDX image file read image by image. */
typedef struct idx_file {
    int fd;
    off_t data; /* offset of image 0 */
    int64_t n;
    char path[1024];
} idx_file;

static cnn_status idx_file_read(cnn_store *s, const int64_t *rows, int B, uint8_t *out,
                                cnn_error *err)
{
    const idx_file *f = s->impl;
    const size_t img = cnn_shape_size(s->shape);
    for (int b = 0; b < B; b++) {
        off_t at = f->data + (off_t)rows[b] * (off_t)img;
        if (cnn_pread_full(f->fd, out + (size_t)b * img, img, at))
            return cnn_error_set(err, errno ? CNN_ERR_IO : CNN_ERR_FORMAT,
                                 "%s: cannot read image %lld: %s", f->path, (long long)rows[b],
                                 errno ? strerror(errno) : "file shrank");
    }
    return CNN_OK;
}

static void idx_file_close(cnn_store *s)
{
    idx_file *f = s->impl;
    if (f && f->fd >= 0)
        close(f->fd);
    free(f);
}

static const cnn_store_ops idx_file_ops = {.format = "idx", .read = idx_file_read,
                                            .close = idx_file_close, .parallel = 1};

static int is_gzip(const char *path)
{
    unsigned char m[2] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(m, 1, 2, f);
    fclose(f);
    return n == 2 && m[0] == 0x1f && m[1] == 0x8b;
}

/* Decompresses exactly bytes bytes of f into *out (malloc'd), growing the
 * buffer as data arrives, so that a header claiming more than the file
 * holds costs only what the file holds. Returns the number of bytes read:
 * short when the file ends first; -1 when out of memory. */
static int64_t read_growing(gzFile f, size_t bytes, uint8_t **out)
{
    enum { FIRST = 16 << 20 };
    size_t cap = bytes < FIRST ? bytes : FIRST, got = 0;
    uint8_t *buf = malloc(cap ? cap : 1);
    while (buf) {
        got += read_full(f, buf + got, cap - got);
        if (got < cap || cap == bytes)
            break; /* the file ended, or all is read */
        size_t grown = cap > bytes / 2 ? bytes : 2 * cap;
        uint8_t *b = realloc(buf, grown);
        if (!b) {
            free(buf);
            buf = NULL;
        } else {
            buf = b;
            cap = grown;
        }
    }
    *out = buf;
    return buf ? (int64_t)got : -1;
}

/* The pixels of n images of (h, w) after the header: decompressed into
 * memory from a gzip file, else opened for reads at an offset. The file
 * must hold what its header says (total images, of which n are used). */
static cnn_status idx_store(gzFile fi, const char *path, int64_t total, int64_t n, int h, int w,
                            cnn_store **out, cnn_error *err)
{
    cnn_shape shape = {1, h, w};
    size_t img = (size_t)h * w, want, used;
    if (!cnn_size_mul((size_t)total, img, &want) || want > SIZE_MAX - 16)
        return cnn_error_set(err, CNN_ERR_FORMAT,
                             "%s: truncated or inconsistent: the header claims %lld images of "
                             "%dx%d, more bytes than can be addressed",
                             path, (long long)total, h, w);
    used = (size_t)n * img; /* n <= total */
    if (!is_gzip(path)) {
        idx_file *f = calloc(1, sizeof *f);
        if (!f)
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        snprintf(f->path, sizeof f->path, "%s", path);
        f->data = 16;
        f->n = n;
        f->fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (f->fd < 0 || fstat(f->fd, &sb) != 0) {
            free(f);
            return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        }
        if ((uint64_t)sb.st_size < 16 + (uint64_t)want) {
            close(f->fd);
            free(f);
            return cnn_error_set(err, CNN_ERR_FORMAT,
                                 "%s: truncated: %lld bytes, the header promises %llu", path,
                                 (long long)sb.st_size, 16 + (unsigned long long)want);
        }
        *out = cnn_store_new(&idx_file_ops, f, shape);
        return *out ? CNN_OK : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    uint8_t *pixels;
    int64_t got = read_growing(fi, used, &pixels);
    if (got < 0)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for %lld images", path,
                             (long long)n);
    if ((size_t)got != used) {
        free(pixels);
        return cnn_error_set(err, CNN_ERR_FORMAT,
                             "%s: truncated or corrupt: %lld of %zu bytes of image data", path,
                             (long long)got, used);
    }
    *out = cnn_memory_store_new(pixels, n, shape);
    return *out ? CNN_OK : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
}

cnn_status cnn_idx_load(cnn_dataset **out, const char *images_path, const char *labels_path,
                        int64_t limit, cnn_error *err)
{
    *out = NULL;
    uint32_t idim[3] = {0}, ldim[1] = {0};
    gzFile fi = NULL, fl = NULL;
    cnn_store *store = NULL;
    cnn_dataset *d = NULL;
    uint8_t *lab8 = NULL;
    cnn_status st;
    if ((st = idx_open(images_path, 3, &fi, idim, err)))
        return st;
    if ((st = idx_open(labels_path, 1, &fl, ldim, err))) {
        gzclose(fi);
        return st;
    }
    if (idim[0] != ldim[0]) {
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s has %u images but %s has %u labels",
                           images_path, idim[0], labels_path, ldim[0]);
        goto done;
    }
    if (idim[1] == 0 || idim[2] == 0 || idim[1] > 65536 || idim[2] > 65536) {
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: implausible image size %ux%u", images_path,
                           idim[1], idim[2]);
        goto done;
    }
    int64_t n = idim[0];
    if (limit > 0 && limit < n)
        n = limit;
    if ((st = idx_store(fi, images_path, idim[0], n, (int)idim[1], (int)idim[2], &store, err)))
        goto done;
    d = cnn_dataset_new(store, n, images_path);
    lab8 = malloc((size_t)(n ? n : 1));
    if (!d || !lab8) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for %lld labels", labels_path,
                           (long long)n);
        goto done;
    }
    size_t got = read_full(fl, lab8, (size_t)n);
    if (got != (size_t)n) {
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: truncated or corrupt: %zu of %lld labels",
                           labels_path, got, (long long)n);
        goto done;
    }
    int maxl = 0;
    for (int64_t i = 0; i < n; i++) {
        d->labels[i] = lab8[i];
        if (lab8[i] > maxl)
            maxl = lab8[i];
    }
    d->nclasses = maxl + 1;
done:
    free(lab8);
    gzclose(fi);
    gzclose(fl);
    cnn_store_release(store); /* the dataset holds it now, or nobody */
    if (st) {
        cnn_dataset_free(d);
        return st;
    }
    *out = d;
    return CNN_OK;
}

/* [data] format = idx: train_images/train_labels and test_images/
 * test_labels (no validation files: validation = test or split). */
static cnn_status idx_load_set(const cnn_data_config *dc, int set, int64_t limit, double split,
                               cnn_dataset **out, cnn_dataset **val, cnn_error *err)
{
    (void)split;
    (void)val;
    const int at = set == CNN_SET_TRAIN ? CNN_SET_TRAIN : CNN_SET_TEST;
    return cnn_idx_load(out, dc->paths[at], dc->paths[3 + at], limit, err);
}

static const cnn_format_key idx_keys[] = {
    {"train_images", "train-images-idx3-ubyte.gz", CNN_SET_TRAIN},
    {"train_labels", "train-labels-idx1-ubyte.gz", 3 + CNN_SET_TRAIN},
    {"test_images", "t10k-images-idx3-ubyte.gz", CNN_SET_TEST},
    {"test_labels", "t10k-labels-idx1-ubyte.gz", 3 + CNN_SET_TEST},
    {NULL, NULL, 0}};

const cnn_data_format cnn_format_idx = {.name = "idx",
                                        .dir = "/usr/share/datasets/fashion-mnist",
                                        .keys = idx_keys,
                                        .load = idx_load_set};
