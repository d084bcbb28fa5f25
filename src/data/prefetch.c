/* prefetch.c - training batches assembled in the background (see
 * cnn/prefetch.h): a double buffer of requests filled by a small pool of
 * threads, one mutex and two condition variables. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnn/prefetch.h"
#include "cnn/tensor.h"

/* One request: a rank's samples of one step. */
typedef struct slot {
    long seq;             /* request number (1, 2, ...); 0: empty */
    int64_t *ids;         /* (cap) sample ids */
    float *x;             /* (cap, C, H, W) */
    int32_t *y;           /* (cap) */
    int cap, n;           /* allocated, requested samples */
    uint64_t seed, epoch;
    int block;            /* samples a thread takes at a time */
    int nblocks, next, done; /* blocks: in all, handed out, finished */
    int bad_at;           /* first sample that failed; n when none */
    cnn_status st;        /* its error */
    cnn_error err;
} slot;

struct cnn_prefetch {
    const cnn_dataset *d;
    cnn_augment_config aug;
    float rescale;
    size_t in;            /* C*H*W */
    pthread_mutex_t mu;   /* everything below but the workspace */
    pthread_cond_t work;  /* a block to take, or quit */
    pthread_cond_t ready; /* a slot was finished */
    pthread_mutex_t store_mu; /* reads of a store that is not parallel */
    slot slots[2];
    long seq;
    int quit;
    double wait;          /* seconds fetches waited */
    int nthreads;         /* started */
    pthread_t th[CNN_PREFETCH_MAX_THREADS];
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Samples ids[0 .. B) into x, y: read (one at a time, under store_mu when
 * the store reads one at a time), then * rescale, then [augment]: what
 * cnn_dataset_gather and the stepper's augmentation do. *failed = the
 * index of the sample that failed (B when none). */
static cnn_status assemble(cnn_prefetch *p, const int64_t *ids, int B, uint64_t seed,
                           uint64_t epoch, uint8_t *raw, float *tmp, float *x, int32_t *y,
                           int *failed, cnn_error *err)
{
    const cnn_dataset *d = p->d;
    const cnn_shape sh = d->shape;
    const int locked = !d->store->ops->parallel;
    for (int b = 0; b < B; b++) {
        float *xb = x + (size_t)b * p->in;
        if (locked)
            pthread_mutex_lock(&p->store_mu);
        cnn_status st = cnn_dataset_read(d, ids + b, 1, raw, err);
        if (locked)
            pthread_mutex_unlock(&p->store_mu);
        if (st) {
            *failed = b;
            return st;
        }
        for (size_t k = 0; k < p->in; k++)
            xb[k] = (float)raw[k] * p->rescale;
        y[b] = d->labels[ids[b]];
        if (p->aug.enabled) {
            cnn_augment_image(&p->aug, seed, epoch, ids[b], xb, tmp, sh.c, sh.h, sh.w);
            memcpy(xb, tmp, p->in * sizeof *xb);
        }
    }
    *failed = B;
    return CNN_OK;
}

/* The oldest request with a block not handed out, or NULL. */
static slot *pending(cnn_prefetch *p)
{
    slot *best = NULL;
    for (int k = 0; k < 2; k++) {
        slot *s = &p->slots[k];
        if (s->seq && s->next < s->nblocks && (!best || s->seq < best->seq))
            best = s;
    }
    return best;
}

static void *worker(void *arg)
{
    cnn_prefetch *p = arg;
    cnn_fp_mode_set(); /* augmentation computes in floats */
    uint8_t *raw = malloc(p->in);
    float *tmp = malloc(p->in * sizeof *tmp);
    cnn_error err;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        slot *s;
        while (!p->quit && !(s = pending(p)))
            pthread_cond_wait(&p->work, &p->mu);
        if (p->quit)
            break;
        const int k = s->next++;
        const int lo = k * s->block, hi = lo + s->block < s->n ? lo + s->block : s->n;
        /* a block after a failure is not needed: fetches reaching it fail */
        const int skip = lo >= s->bad_at;
        pthread_mutex_unlock(&p->mu);
        int failed = hi - lo;
        cnn_status st = CNN_OK;
        if (!raw || !tmp) {
            failed = 0;
            st = cnn_error_set(&err, CNN_ERR_NOMEM, "out of memory for one image's workspace");
        } else if (!skip) {
            st = assemble(p, s->ids + lo, hi - lo, s->seed, s->epoch, raw, tmp,
                          s->x + (size_t)lo * p->in, s->y + lo, &failed, &err);
        }
        pthread_mutex_lock(&p->mu);
        if (failed < hi - lo && lo + failed < s->bad_at) {
            s->bad_at = lo + failed;
            s->st = st;
            s->err = err;
        }
        if (++s->done == s->nblocks)
            pthread_cond_broadcast(&p->ready);
    }
    pthread_mutex_unlock(&p->mu);
    free(raw);
    free(tmp);
    return NULL;
}

cnn_status cnn_prefetch_new(cnn_prefetch **out, const cnn_dataset *d, const cnn_augment_config *aug,
                            float rescale, int threads, cnn_error *err)
{
    *out = NULL;
    if (threads < 1 || threads > CNN_PREFETCH_MAX_THREADS)
        return cnn_error_set(err, CNN_ERR_ARG, "prefetch: %d threads (1 to %d)", threads,
                             CNN_PREFETCH_MAX_THREADS);
    cnn_prefetch *p = calloc(1, sizeof *p);
    if (!p)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the prefetcher");
    p->d = d;
    p->aug = *aug;
    p->rescale = rescale;
    p->in = cnn_shape_size(d->shape);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->store_mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->ready, NULL);
    while (p->nthreads < threads && pthread_create(&p->th[p->nthreads], NULL, worker, p) == 0)
        p->nthreads++;
    if (p->nthreads == 0) {
        cnn_prefetch_free(p);
        return cnn_error_set(err, CNN_ERR_NOMEM, "prefetch: cannot start a thread");
    }
    *out = p;
    return CNN_OK;
}

void cnn_prefetch_free(cnn_prefetch *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int t = 0; t < p->nthreads; t++)
        pthread_join(p->th[t], NULL);
    for (int k = 0; k < 2; k++) {
        free(p->slots[k].ids);
        free(p->slots[k].x);
        free(p->slots[k].y);
    }
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->ready);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->store_mu);
    free(p);
}

static int in_flight(const slot *s) { return s->seq && s->done < s->nblocks; }

/* s's buffers hold at least n samples (s is not in flight). */
static int reserve(slot *s, int n, size_t in)
{
    if (n <= s->cap)
        return 0;
    int64_t *ids = realloc(s->ids, (size_t)n * sizeof *ids);
    if (ids)
        s->ids = ids;
    float *x = realloc(s->x, (size_t)n * in * sizeof *x);
    if (x)
        s->x = x;
    int32_t *y = realloc(s->y, (size_t)n * sizeof *y);
    if (y)
        s->y = y;
    if (!ids || !x || !y)
        return -1;
    s->cap = n;
    return 0;
}

void cnn_prefetch_request(cnn_prefetch *p, const int64_t *ids, int n, uint64_t seed,
                          uint64_t epoch)
{
    if (n < 1)
        return;
    pthread_mutex_lock(&p->mu);
    for (int k = 0; k < 2; k++) {
        const slot *h = &p->slots[k];
        if (h->seq && h->n == n && h->seed == seed && h->epoch == epoch &&
            !memcmp(h->ids, ids, (size_t)n * sizeof *ids)) { /* held already */
            pthread_mutex_unlock(&p->mu);
            return;
        }
    }
    slot *s = &p->slots[p->slots[0].seq > p->slots[1].seq]; /* the older, or an empty one */
    while (in_flight(s))
        pthread_cond_wait(&p->ready, &p->mu);
    s->seq = 0;
    if (reserve(s, n, p->in) == 0) {
        memcpy(s->ids, ids, (size_t)n * sizeof *ids);
        s->n = n;
        s->seed = seed;
        s->epoch = epoch;
        /* a few blocks a thread, so that the threads end together */
        s->nblocks = 4 * p->nthreads < n ? 4 * p->nthreads : n;
        s->block = (n + s->nblocks - 1) / s->nblocks;
        s->nblocks = (n + s->block - 1) / s->block;
        s->next = s->done = 0;
        s->bad_at = n;
        s->st = CNN_OK;
        s->seq = ++p->seq;
        pthread_cond_broadcast(&p->work);
    }
    pthread_mutex_unlock(&p->mu);
}

/* Where ids[0 .. B) stand in s as a consecutive run, or -1. */
static int find_run(const slot *s, const int64_t *ids, int B, uint64_t seed, uint64_t epoch)
{
    if (!s->seq || s->seed != seed || s->epoch != epoch || B > s->n)
        return -1;
    for (int at = 0; at + B <= s->n; at++)
        if (s->ids[at] == ids[0])
            return memcmp(s->ids + at, ids, (size_t)B * sizeof *ids) ? -1 : at;
    return -1;
}

cnn_status cnn_prefetch_fetch(cnn_prefetch *p, const int64_t *ids, int B, uint64_t seed,
                              uint64_t epoch, float *x, int32_t *y, cnn_error *err)
{
    if (B < 1)
        return CNN_OK;
    pthread_mutex_lock(&p->mu);
    for (int k = 0; k < 2; k++) {
        const slot *s = &p->slots[k];
        const int at = find_run(s, ids, B, seed, epoch);
        if (at < 0)
            continue;
        if (in_flight(s)) {
            double t0 = now();
            while (in_flight(s))
                pthread_cond_wait(&p->ready, &p->mu);
            p->wait += now() - t0;
        }
        cnn_status st = CNN_OK;
        if (s->bad_at < at + B) {
            st = s->st;
            if (err)
                *err = s->err;
        }
        pthread_mutex_unlock(&p->mu);
        /* s stays as it is until a later request reuses it, after this step */
        if (!st) {
            memcpy(x, s->x + (size_t)at * p->in, (size_t)B * p->in * sizeof *x);
            memcpy(y, s->y + at, (size_t)B * sizeof *y);
        }
        return st;
    }
    pthread_mutex_unlock(&p->mu);
    uint8_t *raw = malloc(p->in);
    float *tmp = malloc(p->in * sizeof *tmp);
    int failed;
    cnn_status st = raw && tmp ? assemble(p, ids, B, seed, epoch, raw, tmp, x, y, &failed, err)
                               : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    free(raw);
    free(tmp);
    return st;
}

double cnn_prefetch_wait(const cnn_prefetch *p)
{
    pthread_mutex_t *mu = (pthread_mutex_t *)&p->mu;
    pthread_mutex_lock(mu);
    double w = p->wait;
    pthread_mutex_unlock(mu);
    return w;
}
