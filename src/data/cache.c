/* cache.c - [data] cache: a dataset's decoded images kept in memory after
 * their first read (see cnn_dataset_cache in cnn/data.h), like tf.data's
 * Dataset.cache(). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnn/data.h"
#include "internal.h"

/* A row's state: not read yet, being read by one thread, in pixels. */
enum { ROW_EMPTY = 0, ROW_FILLING, ROW_READY };

struct cnn_data_cache {
    uint8_t *pixels;              /* (n, C, H, W): store rows lo .. lo+n-1 */
    _Atomic unsigned char *state; /* (n) ROW_* */
    int64_t lo, n;
    size_t img;                   /* C*H*W */
};

/* The store rows d reads: [*lo, *hi). */
static void row_range(const cnn_dataset *d, int64_t *lo, int64_t *hi)
{
    if (!d->rows) {
        *lo = d->first;
        *hi = d->first + d->n;
        return;
    }
    *lo = INT64_MAX;
    *hi = 0;
    for (int64_t i = 0; i < d->n; i++) {
        if (d->rows[i] < *lo)
            *lo = d->rows[i];
        if (d->rows[i] + 1 > *hi)
            *hi = d->rows[i] + 1;
    }
    if (*hi < *lo)
        *lo = *hi = 0;
}

uint64_t cnn_dataset_cache_bytes(const cnn_dataset *d)
{
    int64_t lo, hi;
    row_range(d, &lo, &hi);
    return (uint64_t)(hi - lo) * ((uint64_t)cnn_shape_size(d->shape) + 1);
}

cnn_status cnn_dataset_cache(cnn_dataset *d, cnn_error *err)
{
    if (d->cache)
        return CNN_OK;
    int64_t lo, hi;
    row_range(d, &lo, &hi);
    const size_t img = cnn_shape_size(d->shape);
    const int64_t n = hi - lo > 0 ? hi - lo : 1;
    cnn_data_cache *c = calloc(1, sizeof *c);
    if (c && (uint64_t)n <= SIZE_MAX / img) {
        /* malloc, not calloc: a large block is mapped lazily, so a rank's
         * memory grows with the images it has read, not all at once */
        c->pixels = malloc((size_t)n * img);
        c->state = calloc((size_t)n, sizeof *c->state);
    }
    if (!c || !c->pixels || !c->state) {
        cnn_data_cache_free(c);
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "%s: out of memory for the [data] cache of %lld images (%.0f MiB)",
                             d->source, (long long)n, (double)n * (double)img / 1048576.0);
    }
    c->lo = lo;
    c->n = n;
    c->img = img;
    d->cache = c;
    return CNN_OK;
}

void cnn_data_cache_free(cnn_data_cache *c)
{
    if (!c)
        return;
    free(c->pixels);
    free((void *)c->state);
    free(c);
}

cnn_status cnn_data_cache_read(cnn_data_cache *c, cnn_store *s, const int64_t *rows, int B,
                               uint8_t *out, cnn_error *err)
{
    for (int b = 0; b < B; b++) {
        uint8_t *dst = out + (size_t)b * c->img;
        const int64_t k = rows[b] - c->lo;
        if (k < 0 || k >= c->n) /* not one of the dataset's rows: not kept */
            return cnn_error_set(err, CNN_ERR_ARG, "store row %lld outside the cache",
                                 (long long)rows[b]);
        uint8_t *kept = c->pixels + (size_t)k * c->img;
        unsigned char was = atomic_load_explicit(&c->state[k], memory_order_acquire);
        if (was == ROW_READY) {
            memcpy(dst, kept, c->img);
            continue;
        }
        /* the first reader fills the row; one that finds it being filled
         * reads the store itself, into dst, rather than wait: the same
         * bytes either way */
        unsigned char empty = ROW_EMPTY;
        const int mine = was == ROW_EMPTY && atomic_compare_exchange_strong(&c->state[k], &empty,
                                                                            ROW_FILLING);
        cnn_status st = s->ops->read(s, rows + b, 1, mine ? kept : dst, err);
        if (mine) {
            atomic_store_explicit(&c->state[k], st ? ROW_EMPTY : ROW_READY, memory_order_release);
            if (!st)
                memcpy(dst, kept, c->img);
        }
        if (st)
            return st;
    }
    return CNN_OK;
}

/* MemAvailable of /proc/meminfo (else free pages), or the cgroup's limit
 * less its usage when that is smaller (SLURM confines a job so). */
static uint64_t read_u64(const char *path, const char *key)
{
    FILE *f = fopen(path, "r");
    char line[256];
    unsigned long long v = 0;
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
        found = key ? sscanf(line, key, &v) == 1 : sscanf(line, "%llu", &v) == 1;
    if (f)
        fclose(f);
    return found ? (uint64_t)v : 0;
}

uint64_t cnn_data_memory_available(void)
{
    uint64_t avail = read_u64("/proc/meminfo", "MemAvailable: %llu kB") * 1024;
    if (avail == 0) {
        long pages = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGESIZE);
        avail = pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
    }
    /* memory.max holds "max" when there is no limit, which reads as 0 */
    const uint64_t max = read_u64("/sys/fs/cgroup/memory.max", NULL),
                   used = read_u64("/sys/fs/cgroup/memory.current", NULL);
    if (max > 0 && max > used && max - used < avail)
        avail = max - used;
    return avail;
}

/* The sets a run reads every epoch: train, and val (NULL: none). */
cnn_status cnn_data_cache_sets(const cnn_data_config *dc, cnn_dataset *train, cnn_dataset *val,
                               uint64_t limit, int *on, cnn_error *err)
{
    *on = 0;
    if (dc->cache == CNN_CACHE_OFF)
        return CNN_OK;
    const uint64_t need = cnn_dataset_cache_bytes(train) + (val ? cnn_dataset_cache_bytes(val) : 0);
    if (need > limit) {
        if (dc->cache == CNN_CACHE_AUTO)
            return CNN_OK;
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "[data] cache = true: the decoded images of %s need %.0f MiB a rank, "
                             "over the %.0f MiB it may use (half the memory available over the "
                             "node's ranks); set cache = false or lower image_size/train_limit",
                             train->source, (double)need / 1048576.0, (double)limit / 1048576.0);
    }
    if (dc->cache == CNN_CACHE_AUTO && !train->store->ops->per_file)
        return CNN_OK; /* measured: only decoding pays (README, Prefetch) */
    cnn_status st = cnn_dataset_cache(train, err);
    if (!st && val)
        st = cnn_dataset_cache(val, err);
    *on = st == CNN_OK;
    return st;
}
