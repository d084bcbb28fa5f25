/* idx.c - MNIST-style IDX files (gzip-compressed or plain, through zlib). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "cnn/data.h"

void cnn_dataset_free(cnn_dataset *d)
{
    if (!d)
        return;
    free(d->images);
    free(d->labels);
    free(d);
}

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

cnn_status cnn_idx_load(cnn_dataset **out, const char *images_path, const char *labels_path,
                        int64_t limit, cnn_error *err)
{
    *out = NULL;
    uint32_t idim[3] = {0}, ldim[1] = {0};
    gzFile fi = NULL, fl = NULL;
    cnn_status st;
    if ((st = idx_open(images_path, 3, &fi, idim, err)))
        return st;
    if ((st = idx_open(labels_path, 1, &fl, ldim, err))) {
        gzclose(fi);
        return st;
    }
    cnn_dataset *d = calloc(1, sizeof *d);
    if (!d) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto done;
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
    d->n = n;
    d->shape = (cnn_shape){1, (int)idim[1], (int)idim[2]};
    size_t img_bytes = (size_t)n * idim[1] * idim[2];
    d->images = malloc(img_bytes ? img_bytes : 1);
    d->labels = malloc((size_t)(n ? n : 1) * sizeof *d->labels);
    uint8_t *lab8 = malloc((size_t)(n ? n : 1));
    if (!d->images || !d->labels || !lab8) {
        free(lab8);
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for %lld images", images_path,
                           (long long)n);
        goto done;
    }
    size_t got = read_full(fi, d->images, img_bytes);
    if (got != img_bytes) {
        free(lab8);
        st = cnn_error_set(err, CNN_ERR_FORMAT,
                           "%s: truncated or corrupt: %zu of %zu bytes of image data", images_path,
                           got, img_bytes);
        goto done;
    }
    got = read_full(fl, lab8, (size_t)n);
    if (got != (size_t)n) {
        free(lab8);
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
    free(lab8);
    d->nclasses = maxl + 1;
    snprintf(d->source, sizeof d->source, "%s", images_path);
done:
    gzclose(fi);
    gzclose(fl);
    if (st) {
        cnn_dataset_free(d);
        return st;
    }
    *out = d;
    return CNN_OK;
}
