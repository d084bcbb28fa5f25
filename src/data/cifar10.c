/* cifar10.c - the CIFAR-10 binary batches: records of a label byte and
 * 3 x 32 x 32 channel-first pixels, read record by record with pread. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnn/data.h"
#include "format.h"
#include "internal.h"

enum { CIFAR_PIXELS = 3 * 32 * 32, CIFAR_RECORD = 1 + CIFAR_PIXELS, CIFAR_MAX_FILES = 99 };

static const char *const cifar10_names[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                              "dog",      "frog",       "horse", "ship", "truck"};

/* One batch file: store rows [first, first + n). */
typedef struct cifar_part {
    int fd;
    int64_t first, n;
    char path[1024];
} cifar_part;

typedef struct cifar_store {
    int nparts;
    cifar_part part[CIFAR_MAX_FILES];
} cifar_store;

static const cifar_part *part_of(const cifar_store *c, int64_t row)
{
    for (int p = 0; p < c->nparts; p++)
        if (row >= c->part[p].first && row < c->part[p].first + c->part[p].n)
            return &c->part[p];
    return NULL;
}

static cnn_status cifar_read(cnn_store *s, const int64_t *rows, int B, uint8_t *out,
                             cnn_error *err)
{
    const cifar_store *c = s->impl;
    for (int b = 0; b < B; b++) {
        const cifar_part *p = part_of(c, rows[b]);
        if (!p)
            return cnn_error_set(err, CNN_ERR_ARG, "CIFAR-10 sample %lld is not in any batch",
                                 (long long)rows[b]);
        off_t at = (off_t)(rows[b] - p->first) * CIFAR_RECORD + 1; /* after the label */
        if (cnn_pread_full(p->fd, out + (size_t)b * CIFAR_PIXELS, CIFAR_PIXELS, at))
            return cnn_error_set(err, errno ? CNN_ERR_IO : CNN_ERR_FORMAT,
                                 "%s: cannot read record %lld: %s", p->path,
                                 (long long)(rows[b] - p->first),
                                 errno ? strerror(errno) : "file shrank");
    }
    return CNN_OK;
}

static void cifar_close(cnn_store *s)
{
    cifar_store *c = s->impl;
    for (int p = 0; c && p < c->nparts; p++)
        close(c->part[p].fd);
    free(c);
}

static const cnn_store_ops cifar_ops = {.format = "cifar10", .read = cifar_read,
                                        .close = cifar_close, .parallel = 1};

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Opens path as the next part of c; its size must be whole records. */
static cnn_status add_part(cifar_store *c, const char *path, cnn_error *err)
{
    cifar_part *p = &c->part[c->nparts];
    snprintf(p->path, sizeof p->path, "%s", path);
    p->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (p->fd < 0 || fstat(p->fd, &sb) != 0) {
        cnn_status st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot open: %s%s", path,
                                      strerror(errno),
                                      errno == ENOENT ? " (expected CIFAR-10's binary version: "
                                                        "data_batch_1.bin ... test_batch.bin)"
                                                      : "");
        if (p->fd >= 0)
            close(p->fd);
        return st;
    }
    if (sb.st_size == 0 || sb.st_size % CIFAR_RECORD != 0) {
        close(p->fd);
        return cnn_error_set(err, CNN_ERR_FORMAT,
                             "%s: %lld bytes is not a whole number of %d-byte CIFAR-10 records",
                             path, (long long)sb.st_size, CIFAR_RECORD);
    }
    p->first = c->nparts ? c->part[c->nparts - 1].first + c->part[c->nparts - 1].n : 0;
    p->n = sb.st_size / CIFAR_RECORD;
    c->nparts++;
    return CNN_OK;
}

/* data_batch_1.bin, data_batch_2.bin, ... up to the first missing one,
 * which must not be followed by another; or test_batch.bin. */
static cnn_status open_parts(cifar_store *c, const char *dir, int test, cnn_error *err)
{
    char path[1100];
    if (test) {
        snprintf(path, sizeof path, "%s/test_batch.bin", dir);
        return add_part(c, path, err);
    }
    for (int k = 1; k <= CIFAR_MAX_FILES; k++) {
        snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, k);
        if (k > 1 && !exists(path)) {
            snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, k + 1);
            if (exists(path))
                return cnn_error_set(err, CNN_ERR_IO, "%s exists but data_batch_%d.bin does not",
                                     path, k);
            return CNN_OK;
        }
        cnn_status st = add_part(c, path, err);
        if (st)
            return st;
    }
    return CNN_OK;
}

/* The label bytes of rows [0, n), checked to be 0-9, read in blocks. */
static cnn_status read_labels(const cifar_store *c, int64_t n, int32_t *labels, cnn_error *err)
{
    enum { BLOCK = 256 };
    uint8_t *buf = malloc((size_t)BLOCK * CIFAR_RECORD);
    if (!buf)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    cnn_status st = CNN_OK;
    for (int p = 0; p < c->nparts && !st; p++) {
        const cifar_part *part = &c->part[p];
        for (int64_t r0 = 0; r0 < part->n && part->first + r0 < n && !st; r0 += BLOCK) {
            int64_t nr = part->n - r0 < BLOCK ? part->n - r0 : BLOCK;
            if (cnn_pread_full(part->fd, buf, (size_t)nr * CIFAR_RECORD,
                               (off_t)r0 * CIFAR_RECORD)) {
                st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot read: %s", part->path,
                                   errno ? strerror(errno) : "file shrank");
                break;
            }
            for (int64_t r = 0; r < nr && part->first + r0 + r < n; r++) {
                uint8_t l = buf[(size_t)r * CIFAR_RECORD];
                if (l >= 10) {
                    st = cnn_error_set(err, CNN_ERR_FORMAT,
                                       "%s: record %lld has label %d (CIFAR-10 labels are 0-9)",
                                       part->path, (long long)(r0 + r), l);
                    break;
                }
                labels[part->first + r0 + r] = l;
            }
        }
    }
    free(buf);
    return st;
}

/* Class names: batches.meta.txt, one a line (blank lines ignored), which
 * must give ten; CIFAR-10's own names when the file is absent. */
static cnn_status class_names(cnn_dataset *d, const char *dir, cnn_error *err)
{
    char path[1100], line[256];
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return cnn_dataset_set_classes(d, cifar10_names, 10, err);
    char names[10][256];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
            len--;
        line[len] = 0;
        if (len && n < 10)
            snprintf(names[n], sizeof names[n], "%s", line);
        n += len > 0;
    }
    fclose(f);
    if (n != 10)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: %d class names, expected 10", path, n);
    const char *ptrs[10];
    for (int k = 0; k < 10; k++)
        ptrs[k] = names[k];
    return cnn_dataset_set_classes(d, ptrs, 10, err);
}

cnn_status cnn_cifar10_load(cnn_dataset **out, const char *dir, int test, int64_t limit,
                            cnn_error *err)
{
    *out = NULL;
    cifar_store *c = calloc(1, sizeof *c);
    if (!c)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    cnn_status st = open_parts(c, dir, test, err);
    if (st) {
        cnn_store tmp = {.impl = c};
        cifar_close(&tmp);
        return st;
    }
    int64_t n = c->part[c->nparts - 1].first + c->part[c->nparts - 1].n;
    if (limit > 0 && limit < n)
        n = limit;
    cnn_store *store = cnn_store_new(&cifar_ops, c, (cnn_shape){3, 32, 32});
    if (!store)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    char source[1100];
    snprintf(source, sizeof source, "%s", c->part[0].path);
    if (!test && c->nparts > 1)
        snprintf(source, sizeof source, "%s/data_batch_{1..%d}.bin", dir, c->nparts);
    cnn_dataset *d = cnn_dataset_new(store, n, source);
    cnn_store_release(store); /* the dataset holds it now, or nobody */
    if (!d)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for %lld labels", (long long)n);
    if ((st = read_labels(c, n, d->labels, err)) || (st = class_names(d, dir, err))) {
        cnn_dataset_free(d);
        return st;
    }
    *out = d;
    return CNN_OK;
}

/* [data] format = cifar10: the batches in [data] dir. */
static cnn_status cifar10_load_set(const cnn_data_config *dc, int set, int64_t limit,
                                   double split, cnn_dataset **out, cnn_dataset **val,
                                   cnn_error *err)
{
    (void)split;
    (void)val;
    return cnn_cifar10_load(out, dc->dir, set == CNN_SET_TEST, limit, err);
}

static const cnn_format_key cifar10_keys[] = {{NULL, NULL, 0}};

const cnn_data_format cnn_format_cifar10 = {.name = "cifar10",
                                            .dir = "cifar-10-batches-bin",
                                            .keys = cifar10_keys,
                                            .load = cifar10_load_set};
