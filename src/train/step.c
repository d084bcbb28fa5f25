/* step.c - one data-parallel training step (see step.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "step.h"
#include "cnn/profile.h"
#include "cnn/tensor.h"

/* Fixed point of the exact reduction: value = int64 * 2^-44, so the
 * resolution is 5.7e-14 and a chunk may contribute up to 2^63/2^44/K. */
#define FIXED_SCALE 17592186044416.0 /* 2^44 */

/* This rank's samples of a global batch of Bg: [*lo, *hi) in chunks of
 * *csize (exact), or its one slice (float). */
static void my_chunks(const cnn_stepper *s, int Bg, int *first, int *end, int *csize)
{
    const int r = s->d->rank, w = s->d->world;
    if (s->c.exact) {
        int K = (Bg + s->c.chunk_size - 1) / s->c.chunk_size;
        *first = (int)((int64_t)K * r / w);
        *end = (int)((int64_t)K * (r + 1) / w);
        *csize = s->c.chunk_size;
    } else {
        *first = (int)((int64_t)Bg * r / w);
        *end = (int)((int64_t)Bg * (r + 1) / w);
        *csize = 1; /* one "chunk" per sample index, taken as one block below */
    }
}

void cnn_stepper_share(const cnn_stepper *s, int Bg, int *lo, int *hi)
{
    int first, end, csize;
    my_chunks(s, Bg, &first, &end, &csize);
    *lo = first * csize < Bg ? first * csize : Bg;
    *hi = end * csize < Bg ? end * csize : Bg;
}

/* The exchange's wait: dt seconds that ended now; with a profile also a
 * span of the trace. */
static void add_wait(cnn_stepper *s, double dt)
{
    s->wait += dt;
    if (s->prof) {
        const double now = cnn_profile_now();
        cnn_profile_span(s->prof, CNN_SPAN_EXCHANGE, now - dt, now);
    }
}

int cnn_stepper_busy_ranks(const cnn_stepper *s, long Bg)
{
    long units = s->c.exact ? (Bg + s->c.chunk_size - 1) / s->c.chunk_size : Bg;
    return units < s->d->world ? (int)units : s->d->world;
}

/* acc += g * 2^44 for n elements (acc = ... for the first chunk of the
 * step, so acc needs no clearing), and g = 0 for the next chunk: one pass
 * instead of three. Returns 1 if a value did not fit in limit. */
static int add_fixed(int64_t *restrict acc, float *restrict g, size_t n, double limit, int first)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double v = (double)g[i] * FIXED_SCALE;
        int ok = fabs(v) < limit; /* false for NaN */
        bad |= !ok;
        acc[i] = (first ? 0 : acc[i]) + (int64_t)(ok ? v : 0.0);
        g[i] = 0.0f;
    }
    return bad;
}

/* Stripes of the fixed-point buffer: each has its lock when several
 * threads add chunks into it (128 KiB of int64). */
#define STRIPE 16384

/* Several threads: grads[lo, hi) of w's chunk into acc, a stripe at a time
 * under its lock; the step's first chunk to reach a stripe writes it. The
 * threads run the same layers at about the same time, so each starts at
 * its own place in the range (thread t of T at t/T of it) and passes over
 * a stripe another thread holds (trylock), coming back for it once it has
 * done the free ones; only when every stripe left is held does it wait. */
static void add_shared(cnn_stepper *s, cnn_step_worker *w, size_t lo, size_t hi)
{
    if (lo >= hi)
        return;
    const size_t n = s->m->nparams, k0 = lo / STRIPE, ns = (hi - 1) / STRIPE - k0 + 1;
    const size_t start = ns * (size_t)(w - s->w) / (size_t)s->job.T;
    uint8_t *done = w->stripe_done; /* (ns) this call's stripes added */
    memset(done, 0, ns);
    for (size_t left = ns, pass = 0; left > 0; pass++) {
        for (size_t i = 0; i < ns && left > 0; i++) {
            const size_t j = (start + i) % ns, k = k0 + j;
            if (done[j])
                continue;
            /* the first pass skips held stripes; a pass that found none free
             * waits for the first one left */
            if (pass % 2 == 0 ? pthread_mutex_trylock(&s->stripe_mu[k]) != 0
                              : pthread_mutex_lock(&s->stripe_mu[k]) != 0)
                continue;
            const size_t a = k * STRIPE, b = a + STRIPE < n ? a + STRIPE : n;
            const size_t from = a > lo ? a : lo, to = b < hi ? b : hi;
            /* the step's first chunk here writes its range and clears the rest */
            const int fresh = s->stripe_step[k] != s->step_no;
            if (fresh) {
                memset(s->acc + a, 0, (from - a) * sizeof *s->acc);
                memset(s->acc + to, 0, (b - to) * sizeof *s->acc);
                s->stripe_step[k] = s->step_no;
            }
            w->bad |= add_fixed(s->acc + from, w->m->grads + from, to - from, s->limit, fresh);
            pthread_mutex_unlock(&s->stripe_mu[k]);
            done[j] = 1;
            left--;
            if (pass % 2 == 1) /* waited once: try the others again */
                break;
        }
    }
}

/* Threads' own fixed-point sums when one takes at most this many bytes,
 * else one sum in stripes (see step.h). Several threads adding into one
 * sum pass its cache lines between their cores: fashion_cnn's 1.6 MB sum
 * at 2 threads, cnn-bench 1,500 steps, 4 alternations: 12,967 img/s
 * shared against 13,334 with a sum a thread (a build of this idea that
 * measured it). A larger model's sums would multiply memory by threads. */
#define PRIVATE_SUM_BYTES ((size_t)4 << 20)

/* Called by backward after each layer: grads[offset ..) are final. */
static void grads_ready(void *arg, size_t offset)
{
    cnn_step_worker *w = arg;
    cnn_stepper *s = w->s;
    if (s->c.exact && s->job.T > 1 && s->private_sums) {
        int64_t *acc = w == s->w ? s->acc : w->acc;
        w->bad |= add_fixed(acc + offset, w->m->grads + offset, w->done_from - offset, s->limit,
                            w->first);
        w->done_from = offset;
    } else if (s->c.exact && s->job.T > 1) {
        add_shared(s, w, offset, w->done_from);
        w->done_from = offset;
    } else if (s->c.exact) {
        w->bad |= add_fixed(s->acc + offset, w->m->grads + offset, w->done_from - offset,
                            s->limit, w->first);
        w->done_from = offset;
        if (w->last)
            cnn_dist_reducer_ready(s->red, offset);
    } else if (w->last) {
        cnn_dist_reducer_ready(s->red, offset);
    }
}

static void poll(void *arg)
{
    cnn_step_worker *w = arg;
    if (w->last)
        cnn_dist_reducer_poll(w->s->red);
}

/* ---- Moving statistics (step.h) --------------------------------------- */

/* An exponent code per statistic: 0 when no value is nonzero, CODE_NONFINITE
 * when one is not finite, else e + CODE_BIAS for the binary exponent e of
 * the largest |value| (|value| < 2^e; floats have e <= 128). */
enum { CODE_BIAS = 126, CODE_NONFINITE = 255 };

static cnn_status stats_init(cnn_stepper *s, long max_batch, cnn_error *err)
{
    s->nstats = cnn_model_stats_count(s->m);
    if (!s->nstats)
        return CNN_OK;
    const size_t n = s->nstats;
    /* exact: at most every chunk of the largest global batch (one rank) */
    s->max_chunks = s->c.exact ? (int)((max_batch + s->c.chunk_size - 1) / s->c.chunk_size) : 1;
    s->chunk_stats = malloc((size_t)s->max_chunks * n * sizeof *s->chunk_stats);
    s->chunk_n = malloc((size_t)s->max_chunks * sizeof *s->chunk_n);
    s->stat_exp = malloc(n);
    s->stat_acc = malloc((n + 1) * sizeof *s->stat_acc);
    s->stat_mean = malloc(n * sizeof *s->stat_mean);
    if (!s->chunk_stats || !s->chunk_n || !s->stat_exp || !s->stat_acc || !s->stat_mean)
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "out of memory for the batch statistics of %d forward calls (%zu "
                             "values each)",
                             s->max_chunks, n);
    return CNN_OK;
}

static void stats_free(cnn_stepper *s)
{
    free(s->chunk_stats);
    free(s->chunk_n);
    free(s->stat_exp);
    free(s->stat_acc);
    free(s->stat_mean);
}

/* After a training forward of the rank's chunk k (B samples) on model m:
 * keeps the layers' statistics in the chunk's slot. */
static void stats_record(cnn_stepper *s, const cnn_model *m, int k, int B)
{
    if (!s->nstats || k >= s->max_chunks)
        return;
    cnn_model_stats_get(m, s->chunk_stats + (size_t)k * s->nstats);
    s->chunk_n[k] = B;
}

static uint8_t exponent_code(float v)
{
    if (!isfinite(v))
        return CODE_NONFINITE;
    if (v == 0.0f)
        return 0;
    int e;
    frexpf(v, &e);
    e += CODE_BIAS;
    return (uint8_t)(e < 1 ? 1 : e > 254 ? 254 : e);
}

/* The fixed-point shift of a statistic with code c in a step of Bg samples:
 * each |value| * 2^shift < 2^(62 - L) with Bg < 2^L, so the sum of count *
 * value over the step stays below 2^62. */
static int fixed_shift(uint8_t c, int Bg)
{
    int L = 0;
    while (L < 62 && ((int64_t)1 << L) <= Bg)
        L++;
    return 62 - L - ((int)c - CODE_BIAS);
}

/* Collective (when the model keeps statistics): the count-weighted mean of
 * the statistics of every forward call of the step on every rank, into
 * s->stat_mean, the same bits on any rank count. */
static void stats_reduce(cnn_stepper *s, int Bg)
{
    s->stats_ready = 0;
    if (!s->nstats)
        return;
    const size_t n = s->nstats;
    memset(s->stat_exp, 0, n);
    for (int k = 0; k < s->nrec; k++) {
        const float *v = s->chunk_stats + (size_t)k * n;
        for (size_t j = 0; j < n; j++) {
            uint8_t c = exponent_code(v[j]);
            if (c > s->stat_exp[j])
                s->stat_exp[j] = c;
        }
    }
    double t0 = cnn_dist_time();
    cnn_dist_allreduce_max_u8(s->d, s->stat_exp, n);
    /* a non-finite statistic anywhere: every rank skips this update */
    int finite = memchr(s->stat_exp, CODE_NONFINITE, n) == NULL;
    if (finite) {
        memset(s->stat_acc, 0, (n + 1) * sizeof *s->stat_acc);
        for (int k = 0; k < s->nrec; k++) {
            const float *v = s->chunk_stats + (size_t)k * n;
            const int64_t w = s->chunk_n[k];
            for (size_t j = 0; j < n; j++)
                if (s->stat_exp[j])
                    s->stat_acc[j] += w * (int64_t)ldexp((double)v[j],
                                                         fixed_shift(s->stat_exp[j], Bg));
            s->stat_acc[n] += w;
        }
        cnn_dist_allreduce_i64(s->d, s->stat_acc, n + 1);
    }
    add_wait(s, cnn_dist_time() - t0);
    const int64_t count = s->stat_acc[n];
    if (!finite || count <= 0)
        return;
    for (size_t j = 0; j < n; j++)
        s->stat_mean[j] = s->stat_exp[j] ? ldexp((double)s->stat_acc[j],
                                                 -fixed_shift(s->stat_exp[j], Bg)) /
                                               (double)count
                                         : 0.0;
    s->stats_ready = 1;
}

/* After the optimizer step: the step's statistics into the moving ones. */
static void stats_apply(cnn_stepper *s)
{
    if (s->stats_ready)
        cnn_model_stats_update(s->m, s->stat_mean);
    s->stats_ready = 0;
}

int cnn_stepper_stats_note(const cnn_stepper *s, long Bg, char *buf, size_t n)
{
    int min_hw, layers = cnn_model_stats_layers(s->m, &min_hw);
    if (!layers)
        return 0;
    const char *pl = layers > 1 ? "s" : "";
    if (s->c.exact) {
        long chunk = s->c.chunk_size < Bg ? s->c.chunk_size : Bg;
        snprintf(buf, n,
                 "batch_normalization (%d layer%s): batch statistics over reduction chunks of "
                 "%ld samples ([dist] chunk_size; at least %ld values a channel), the same on "
                 "any rank count; moving statistics updated once a step from the mean of its "
                 "%ld chunks",
                 layers, pl, chunk, chunk * min_hw, (Bg + s->c.chunk_size - 1) / s->c.chunk_size);
    } else {
        int w = s->d->world;
        snprintf(buf, n,
                 "batch_normalization (%d layer%s): batch statistics over each rank's slice of "
                 "the global batch (%ld to %ld samples at %d rank%s), so results depend on the "
                 "rank count ([dist] reduction = float); reduction = exact normalises over "
                 "chunks of chunk_size samples on any rank count",
                 layers, pl, Bg / w, (Bg + w - 1) / w, w, w > 1 ? "s" : "");
    }
    return 1;
}

cnn_status cnn_dist_config_read(cnn_dist_config *c, const cnn_config *cfg, cnn_error *err)
{
    static const char *const reductions[] = {"float", "exact", NULL};
    const cnn_section *s = cnn_config_find(cfg, "dist");
    long chunk;
    cnn_status st;
    memset(c, 0, sizeof *c);
    if ((st = cnn_cfg_enum(s, "reduction", 1, reductions, &c->exact, err)) ||
        (st = cnn_cfg_int(s, "chunk_size", 8, 1, 1 << 20, &chunk, err)) ||
        (st = cnn_cfg_float(s, "bucket_mb", 1.0, 1e-3, 1e6, &c->bucket_mb, err)) ||
        (st = cnn_cfg_bool(s, "overlap", 1, &c->overlap, err)) ||
        (st = cnn_cfg_enum(s, "exchange", CNN_DIST_AUTO, cnn_dist_exchange_names, &c->exchange,
                           err)) ||
        (st = cnn_cfg_float(s, "timeout_s", 0.0, 0.0, 1e7, &c->timeout_s, err)))
        return st;
    c->chunk_size = (int)chunk;
    return CNN_OK;
}

/* A thread's chunk buffers for chunks of up to cap samples. */
static int worker_alloc(cnn_step_worker *w, int cap, size_t in)
{
    w->x = malloc((size_t)cap * in * sizeof *w->x);
    w->y = malloc((size_t)cap * sizeof *w->y);
    w->ids = malloc((size_t)cap * sizeof *w->ids);
    w->tmp = malloc(in * sizeof *w->tmp);
    return w->x && w->y && w->ids && w->tmp; /* w->raw: on first use (gather) */
}

static void worker_free(cnn_step_worker *w)
{
    free(w->x);
    free(w->y);
    free(w->ids);
    free(w->raw);
    free(w->tmp);
}

static void run_job(cnn_step_worker *w);

/* A thread about to sleep on a condition variable first polls for up to
 * SPIN_US while *v == value (equal) or != value: waking a sleeping thread
 * takes tens of microseconds, while the jobs of a step follow each other
 * closely (fashion_cnn's whole step is about 3 ms on 2 threads). *v is
 * written under s->mu with atomic stores; the caller takes s->mu
 * afterwards, which orders all that was written before it. */
#define SPIN_US 50

static void spin_while(const unsigned long *v, unsigned long value, int equal)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if ((__atomic_load_n(v, __ATOMIC_ACQUIRE) == value) != equal)
                return;
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) > SPIN_US * 1000L)
            return;
    }
}

/* A thread other than the caller's: waits for a step, runs its chunks. */
static void *worker_main(void *arg)
{
    cnn_step_worker *w = arg;
    cnn_stepper *s = w->s;
    const int index = (int)(w - s->w);
    cnn_fp_mode_set();
    unsigned long seen = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (s->gen == seen && !s->quit) {
            pthread_mutex_unlock(&s->mu);
            spin_while(&s->gen, seen, 1);
            pthread_mutex_lock(&s->mu);
        }
        while (s->gen == seen && !s->quit)
            pthread_cond_wait(&s->go, &s->mu);
        if (s->quit)
            break;
        seen = s->gen;
        const int mine = index < s->busy;
        pthread_mutex_unlock(&s->mu);
        if (mine)
            run_job(w);
        pthread_mutex_lock(&s->mu);
        if (mine && __atomic_sub_fetch(&s->pending, 1, __ATOMIC_RELEASE) == 0)
            pthread_cond_signal(&s->done);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Threads 1 .. nthreads-1: a workspace each, their buffers, their thread;
 * and the locks they share. */
static cnn_status threads_init(cnn_stepper *s, cnn_error *err)
{
    if (pthread_mutex_init(&s->mu, NULL) || pthread_cond_init(&s->go, NULL) ||
        pthread_cond_init(&s->done, NULL) || pthread_mutex_init(&s->data_mu, NULL))
        return cnn_error_set(err, CNN_ERR_NOMEM, "cannot create the step's thread locks");
    s->sync_ok = 1;
    if (s->nthreads < 2)
        return CNN_OK;
    const size_t n = s->m->nparams, in = cnn_shape_size(s->m->input);
    /* CNN_TEST_STRIPES: the striped sum for a model that would get its own
     * a thread (the tests of both) */
    s->private_sums = s->c.exact && n * sizeof *s->acc <= PRIVATE_SUM_BYTES &&
                      !getenv("CNN_TEST_STRIPES");
    s->nstripes = (n + STRIPE - 1) / STRIPE;
    s->stripe_mu = malloc((s->nstripes ? s->nstripes : 1) * sizeof *s->stripe_mu);
    s->stripe_step = calloc(s->nstripes ? s->nstripes : 1, sizeof *s->stripe_step);
    s->w[0].stripe_done = malloc(s->nstripes ? s->nstripes : 1);
    if (!s->stripe_mu || !s->stripe_step || !s->w[0].stripe_done)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the step's %d threads",
                             s->nthreads);
    for (size_t k = 0; k < s->nstripes; k++)
        pthread_mutex_init(&s->stripe_mu[k], NULL);
    for (int t = 1; t < s->nthreads; t++) {
        cnn_step_worker *w = &s->w[t];
        cnn_status st = cnn_model_workspace(&w->m, s->m, err);
        if (!st)
            st = cnn_model_reserve(w->m, s->cap, err);
        if (!st && (!worker_alloc(w, s->cap, in) ||
                    !(w->stripe_done = malloc(s->nstripes ? s->nstripes : 1)) ||
                    (s->private_sums && !(w->acc = malloc((n ? n : 1) * sizeof *w->acc)))))
            st = cnn_error_set(err, CNN_ERR_NOMEM,
                               "out of memory for thread %d's buffers (chunks of %d images)", t,
                               s->cap);
        if (st)
            return st;
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0)
            return cnn_error_set(err, CNN_ERR_NOMEM, "cannot start thread %d of %d of the step",
                                 t, s->nthreads);
        w->started = 1;
    }
    return CNN_OK;
}

static void threads_free(cnn_stepper *s)
{
    if (!s->w)
        return;
    if (s->sync_ok) {
        pthread_mutex_lock(&s->mu);
        s->quit = 1;
        pthread_cond_broadcast(&s->go);
        pthread_mutex_unlock(&s->mu);
    }
    for (int t = 0; t < s->nthreads; t++) {
        cnn_step_worker *w = &s->w[t];
        if (w->started)
            pthread_join(w->tid, NULL);
        if (t > 0)
            cnn_model_free(w->m);
        worker_free(w);
        free(w->stripe_done);
        free(w->acc);
    }
    if (s->stripe_mu)
        for (size_t k = 0; k < s->nstripes; k++)
            pthread_mutex_destroy(&s->stripe_mu[k]);
    free(s->stripe_mu);
    free(s->stripe_step);
    if (s->sync_ok) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->go);
        pthread_cond_destroy(&s->done);
        pthread_mutex_destroy(&s->data_mu);
    }
    free(s->w);
}

cnn_status cnn_stepper_init(cnn_stepper *s, cnn_model *m, const cnn_dist *d,
                            const cnn_dist_config *c, const cnn_augment_config *aug,
                            long max_batch, int threads, cnn_error *err)
{
    memset(s, 0, sizeof *s);
    cnn_fp_mode_set(); /* the caller's thread runs chunks too */
    s->m = m;
    s->d = d;
    s->c = *c;
    s->aug = *aug;
    s->cap = c->exact ? c->chunk_size : (int)((max_batch + d->world - 1) / d->world);
    if (s->cap > max_batch)
        s->cap = (int)max_batch;
    /* the chunks of a step together stay inside the int64 range */
    s->limit = 9.2e18 / (double)((max_batch + c->chunk_size - 1) / c->chunk_size + 1);
    /* exact: no more threads than the chunks a rank may get, BLAS on one
     * thread each (its bits would depend on its threads); float: BLAS's */
    const long K = (max_batch + c->chunk_size - 1) / c->chunk_size;
    const long per_rank = (K + d->world - 1) / d->world;
    s->nthreads = !c->exact || threads < 1 ? 1 : threads < per_rank ? threads : (int)per_rank;
    if (s->nthreads < 1)
        s->nthreads = 1;
    cnn_blas_set_threads(c->exact ? 1 : threads);
    const size_t in = cnn_shape_size(m->input);
    s->w = calloc((size_t)s->nthreads, sizeof *s->w);
    s->nsums = STAT_N + (c->exact ? (int)((max_batch + c->chunk_size - 1) / c->chunk_size) : 0);
    s->sums = malloc((size_t)s->nsums * sizeof *s->sums);
    size_t *cuts = malloc((size_t)(m->nlayers + 1) * sizeof *cuts);
    if (!s->w || !worker_alloc(&s->w[0], s->cap, in) || !s->sums || !cuts) {
        free(cuts);
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "out of memory for the step's buffers (a batch of %d images)", s->cap);
    }
    for (int t = 0; t < s->nthreads; t++)
        s->w[t].s = s;
    s->w[0].m = m;
    int n = 0;
    for (int i = 0; i < m->nlayers; i++)
        if (m->layers[i].param_count)
            cuts[n++] = m->layers[i].param_offset;
    const cnn_dist_reducer_opts ro = {.bucket_bytes = (size_t)(c->bucket_mb * 1048576.0),
                                      .overlap = c->overlap,
                                      .exchange = (cnn_dist_exchange)c->exchange,
                                      .timeout_s = c->timeout_s,
                                      .shared_params = 1};
    cnn_dist_exchange_pick(d, ro.exchange, s->exchange_why, sizeof s->exchange_why);
    /* exact: the fixed-point sum is the reducer's own buffer (shared memory
     * when hierarchical) */
    s->red = c->exact ? cnn_dist_reducer_new(d, NULL, CNN_DIST_I64, m->nparams, cuts, n, &ro)
                      : cnn_dist_reducer_new(d, m->grads, CNN_DIST_F32, m->nparams, cuts, n, &ro);
    free(cuts);
    if (!s->red)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the gradient reducer%s",
                             c->exact ? " and its fixed-point gradient" : "");
    if (c->exact)
        s->acc = cnn_dist_reducer_data(s->red);
    s->shared = cnn_dist_reducer_params(s->red);
    cnn_dist_shard(m->nparams, d->rank, d->world, &s->lo, &s->hi);
    cnn_status st = stats_init(s, max_batch, err);
    return st ? st : threads_init(s, err);
}

/* Collective, at the first step: the ranks of a node train one copy of the
 * parameters, in the reducer's shared window. Each writes its own shard
 * there (the values are the same on every rank: initialised from the seed
 * or read from one checkpoint); the window's gather then shows all of them
 * to all. From then on each rank's update writes its own shard, after the
 * step's last collective (the sum of its figures), which every rank enters
 * once its backward is done reading the parameters, and the update's
 * gather is a node barrier, not a copy. */
static void share_params(cnn_stepper *s)
{
    cnn_model *m = s->m;
    memcpy(s->shared + s->lo, m->params + s->lo, (s->hi - s->lo) * sizeof *s->shared);
    cnn_dist_reducer_allgather(s->red, s->shared);
    s->own_params = m->params;
    for (int t = 0; t < s->nthreads; t++) /* w[0].m is m */
        s->w[t].m->params = s->shared;
}

void cnn_stepper_free(cnn_stepper *s)
{
    if (s->own_params) /* the model keeps the trained parameters */
        s->m->params = memcpy(s->own_params, s->shared, s->m->nparams * sizeof *s->shared);
    threads_free(s);
    cnn_dist_reducer_free(s->red); /* and acc with it */
    free(s->sums);
    stats_free(s);
    memset(s, 0, sizeof *s);
}

/* Each image of w's chunk (B) through [augment], keyed by its training-set id. */
static void augment(const cnn_stepper *s, cnn_step_worker *w, int B)
{
    const cnn_shape sh = s->m->input;
    const size_t in = cnn_shape_size(sh);
    for (int b = 0; b < B; b++) {
        float *x = w->x + (size_t)b * in;
        cnn_augment_image(&s->aug, s->job.seed, s->job.epoch, w->ids[b], x, w->tmp, sh.c, sh.h,
                          sh.w);
        memcpy(x, w->tmp, in * sizeof *x);
    }
}

static int all_finite(const float *v, size_t n)
{
    float acc = 0; /* NaN or Inf anywhere makes the sum of v*0 NaN */
    for (size_t i = 0; i < n; i++)
        acc += v[i] * 0.0f;
    return acc == 0.0f;
}

/* Samples w->ids[0 .. B) of ds, as stored, into w->x and w->y; under the
 * data lock when other threads read too and the store reads one call at a
 * time (its ops' parallel flag, cnn/data.h). */
static cnn_status read_samples(cnn_stepper *s, cnn_step_worker *w, const cnn_dataset *ds, int B,
                               float rescale, int locked, cnn_error *err)
{
    /* the undecoded bytes of a chunk: only reading without the prefetch needs them */
    if (!w->raw && !(w->raw = malloc((size_t)s->cap * cnn_shape_size(s->m->input))))
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for a chunk of %d images",
                             s->cap);
    locked = locked && !ds->store->ops->parallel;
    if (locked)
        pthread_mutex_lock(&s->data_mu);
    cnn_status st = cnn_dataset_gather(ds, w->ids, B, rescale, w->raw, w->x, w->y, err);
    if (locked)
        pthread_mutex_unlock(&s->data_mu);
    return st;
}

/* The images of chunk k's samples (or the float slice) into w's buffers. */
static cnn_status gather(cnn_stepper *s, cnn_step_worker *w, int B)
{
    const cnn_step_job *j = &s->job;
    const double t0 = s->prof ? cnn_profile_now() : 0.0;
    cnn_status st;
    if (s->prefetch) { /* thread-safe; its samples come augmented */
        st = cnn_prefetch_fetch(s->prefetch, w->ids, B, j->seed, j->epoch, w->x, w->y, &w->err);
    } else {
        st = read_samples(s, w, j->train, B, j->rescale, j->T > 1, &w->err);
    }
    if (s->fault == CNN_FAULT_IO)
        st = cnn_error_set(&w->err, CNN_ERR_IO, "%s: injected read error (CNN_TEST_FAULT)",
                           j->train->source);
    if (s->fault == CNN_FAULT_NAN)
        w->x[0] = NAN;
    if (s->fault == CNN_FAULT_EXIT)
        _exit(3);
    if (st == CNN_OK && s->aug.enabled && !s->prefetch)
        augment(s, w, B);
    if (s->prof)
        cnn_profile_span(s->prof, CNN_SPAN_DATA, t0, cnn_profile_now());
    return st;
}

/* w's chunks [k0, k1) of the step: forward, loss, backward; each chunk's
 * loss and statistics into its slot, the gradient into acc (exact). Stops
 * at the first chunk that fails. */
static void run_chunks(cnn_step_worker *w)
{
    cnn_stepper *s = w->s;
    const cnn_step_job *j = &s->job;
    cnn_model *m = w->m;
    double *chunk_loss = s->sums + STAT_N;
    cnn_ctx ctx = cnn_model_ctx(m, 1, j->seed, j->epoch, w->ids);
    ctx.grads_ready = grads_ready;
    ctx.poll = j->T > 1 ? NULL : poll; /* nothing is in flight before the threads are done */
    ctx.grads_ready_arg = w;
    w->st = CNN_OK;
    w->bad = 0;
    w->loss = w->correct = w->count = 0;
    for (int k = w->k0; k < w->k1 && w->st == CNN_OK; k++) {
        int lo = s->c.exact ? (j->first + k) * j->csize : j->first;
        int hi = s->c.exact ? lo + j->csize : j->first + j->csize;
        if (hi > j->Bg)
            hi = j->Bg;
        int B = hi - lo;
        memcpy(w->ids, j->batch + lo, (size_t)B * sizeof *w->ids);
        cnn_batch_stats bs = {0};
        if (!s->c.exact)
            cnn_model_zero_grad(m);
        cnn_status st = gather(s, w, B);
        if (st == CNN_OK) {
            cnn_model_forward(m, w->x, B, &ctx);
            stats_record(s, m, k, B);
            st = cnn_model_loss(m, w->y, B, 1.0f / (float)j->Bg, 1, &bs, &w->err);
        }
        if (s->c.exact)
            chunk_loss[j->first + k] = bs.loss_sum;
        else
            w->loss += bs.loss_sum;
        w->correct += (double)bs.correct;
        w->count += (double)bs.count;
        if (st == CNN_OK) {
            w->last = k == j->nblocks - 1;
            w->first = k == w->k0;
            w->done_from = m->nparams;
            cnn_model_backward(m, w->x, B, &ctx);
        }
        w->st = st;
    }
}

/* What the threads run when woken (s->kind). */
typedef enum {
    JOB_CHUNKS,  /* their chunks of the step: run_chunks */
    JOB_SUM,     /* their range of all parameters: the threads' own sums into acc */
    JOB_CONVERT, /* their range of the shard from fixed point to floats (and the
                  * threads' own sums first, on one rank) */
    JOB_UPDATE,  /* the optimizer's update of their range of the shard */
    JOB_BLOCKS   /* their blocks of cnn_stepper_blocks */
} step_job_kind;

/* Threads for an element-wise pass over the shard: all of them when each
 * gets at least PART_MIN parameters (waking a thread costs about as much
 * as a pass over that many), else the caller alone. */
#define PART_MIN 8192

static int part_threads(const cnn_stepper *s)
{
    const size_t len = s->hi - s->lo;
    return len >= (size_t)PART_MIN * (size_t)s->nthreads ? s->nthreads : 1;
}

/* Thread t's range [*a, *b) of the shard [lo, hi) split T ways, cut at
 * multiples of 16 parameters (a 64-byte line of floats) from lo. */
static void part_of(const cnn_stepper *s, int t, int T, size_t *a, size_t *b)
{
    const size_t len = s->hi - s->lo, align = ~(size_t)15;
    *a = s->lo + (t == 0 ? 0 : (len * (size_t)t / (size_t)T) & align);
    *b = t + 1 == T ? s->hi : s->lo + ((len * (size_t)(t + 1) / (size_t)T) & align);
}

/* acc[a, b) += the own sums of threads 1 .. T-1 of the step (private
 * sums), a block of acc at a time, so that it stays in cache while each
 * thread's part is added. */
#define SUM_BLOCK 4096

static void add_private(cnn_stepper *s, size_t a, size_t b)
{
    for (size_t c = a; c < b; c += SUM_BLOCK) {
        const size_t e = c + SUM_BLOCK < b ? c + SUM_BLOCK : b;
        for (int t = 1; t < s->job.T; t++)
            for (size_t i = c; i < e; i++)
                s->acc[i] += s->w[t].acc[i];
    }
}

/* The summed fixed-point gradient of acc[a, b) as floats into grads. */
static void fixed_to_float(float *restrict g, const int64_t *restrict acc, size_t n)
{
    const double inv = 1.0 / FIXED_SCALE;
    for (size_t i = 0; i < n; i++)
        g[i] = (float)((double)acc[i] * inv);
}

static void run_job(cnn_step_worker *w)
{
    cnn_stepper *s = w->s;
    size_t a, b;
    if (s->kind == JOB_CHUNKS) {
        run_chunks(w);
        return;
    }
    if (s->kind == JOB_BLOCKS) {
        const int t = (int)(w - s->w), T = s->busy;
        const int64_t n = s->blocks_n;
        w->st = CNN_OK;
        for (int64_t k = n * t / T; k < n * (t + 1) / T && w->st == CNN_OK; k++)
            w->st = s->blocks_fn(w, t, k, s->blocks_arg, &w->err);
        return;
    }
    if (s->kind == JOB_SUM) { /* of every parameter: the exchange sends them all */
        const size_t n = s->m->nparams, t = (size_t)(w - s->w), T = (size_t)s->busy;
        add_private(s, (n * t / T) & ~(size_t)15, t + 1 == T ? n : (n * (t + 1) / T) & ~(size_t)15);
        return;
    }
    part_of(s, (int)(w - s->w), s->busy, &a, &b);
    if (s->kind == JOB_CONVERT) {
        for (size_t c = a; c < b; c += SUM_BLOCK) { /* the sum still in cache for the conversion */
            const size_t e = c + SUM_BLOCK < b ? c + SUM_BLOCK : b;
            if (s->sum_pending)
                add_private(s, c, e);
            fixed_to_float(s->m->grads + c, s->acc + c, e - c);
        }
    } else {
        cnn_optim_update_part(s->opt, s->m, a, b);
        /* the next step's chunks add into zeros (exact) */
        if (s->c.exact)
            memset(s->m->grads + a, 0, (b - a) * sizeof *s->m->grads);
    }
}

/* kind on threads 0 .. T-1 (thread 0 is the caller's); returns when all
 * of them are done. */
static void run_on_threads(cnn_stepper *s, step_job_kind kind, int T)
{
    s->kind = kind;
    s->busy = T;
    if (T > 1) {
        pthread_mutex_lock(&s->mu);
        __atomic_store_n(&s->pending, (unsigned long)T - 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s->gen, 1, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&s->go);
        pthread_mutex_unlock(&s->mu);
    }
    run_job(&s->w[0]);
    if (T > 1) {
        spin_while(&s->pending, 0, 0);
        pthread_mutex_lock(&s->mu);
        while (s->pending > 0)
            pthread_cond_wait(&s->done, &s->mu);
        pthread_mutex_unlock(&s->mu);
    }
}

/* The rank's chunks on its threads; returns the status of the first chunk
 * that failed (its message in err) and the figures of all of them in
 * stats. */
static cnn_status run_threads(cnn_stepper *s, double *stats, cnn_error *err)
{
    cnn_step_job *j = &s->job;
    const int T = j->T;
    s->step_no++;
    for (int t = 0; t < s->nthreads; t++) {
        s->w[t].k0 = t < T ? (int)((int64_t)j->nblocks * t / T) : 0;
        s->w[t].k1 = t < T ? (int)((int64_t)j->nblocks * (t + 1) / T) : 0;
    }
    run_on_threads(s, JOB_CHUNKS, T);
    cnn_status st = CNN_OK;
    for (int t = 0; t < T; t++) { /* in chunk order: the first failure is the lowest chunk's */
        const cnn_step_worker *w = &s->w[t];
        stats[STAT_LOSS] += w->loss;
        stats[STAT_CORRECT] += w->correct;
        stats[STAT_COUNT] += w->count;
        s->bad |= w->bad;
        if (w->st && !st) {
            st = w->st;
            if (err)
                *err = w->err;
        }
    }
    return st;
}

cnn_status cnn_stepper_run(cnn_stepper *s, const cnn_dataset *train, const int64_t *batch,
                           int Bg, float rescale, uint64_t seed, uint64_t epoch, int skip_nan,
                           double *stats, cnn_error *err)
{
    cnn_model *m = s->m;
    if (s->shared && !s->own_params)
        share_params(s);
    int first, end, csize;
    my_chunks(s, Bg, &first, &end, &csize);
    /* float: the slice [first, end) is one block of samples */
    int nblocks = s->c.exact ? end - first : (end > first);
    /* exact: chunk j's loss in sums[STAT_N + j], zeros in the other ranks'
     * slots, added in chunk order after the sum across ranks: the loss is
     * np 1's, bit for bit, on any rank count (as the gradient) */
    const int nsums = s->c.exact ? STAT_N + (Bg + csize - 1) / csize : STAT_N;
    memset(s->sums, 0, (size_t)nsums * sizeof *s->sums);
    memset(stats, 0, STAT_N * sizeof *stats);
    stats[STAT_STOP] = s->stop != 0;
    stats[STAT_SAVE] = s->save != 0;
    s->bad = 0;
    s->nrec = 0;
    /* exact: every chunk's conversion leaves zeros behind, so only this
     * rank's shard, which held the last step's summed gradient, needs it
     * (unless the last update cleared it) */
    if (s->c.exact && !s->grads_clear)
        memset(m->grads + s->lo, 0, (s->hi - s->lo) * sizeof *m->grads);
    s->grads_clear = 0;
    s->job = (cnn_step_job){.train = train, .batch = batch, .Bg = Bg, .first = first,
                            .csize = s->c.exact ? csize : end - first, .nblocks = nblocks,
                            .T = nblocks < s->nthreads ? nblocks : s->nthreads,
                            .rescale = rescale, .seed = seed, .epoch = epoch};
    cnn_status st = run_threads(s, stats, err);
    /* the threads' own sums go into acc: before the exchange when there
     * is one, else in the conversion */
    s->sum_pending = s->private_sums && st == CNN_OK && s->job.T > 1;
    if (st == CNN_OK)
        s->nrec = s->nstats ? nblocks : 0;
    if (st != CNN_OK || nblocks == 0) {
        if (st == CNN_ERR_NUMERIC && skip_nan) {
            stats[STAT_NONFINITE] = 1;
            st = CNN_OK;
            if (err)
                err->msg[0] = 0;
        } else {
            stats[STAT_FAILED] = st != CNN_OK;
        }
        /* nothing of this rank's gradient counts: contribute zeros */
        s->nrec = 0;
        s->sum_pending = 0;
        if (s->c.exact)
            memset(s->acc, 0, m->nparams * sizeof *s->acc);
        else
            cnn_model_zero_grad(m);
    }
    if (s->sum_pending && s->d->world > 1) {
        run_on_threads(s, JOB_SUM, s->job.T);
        s->sum_pending = 0;
    }
    add_wait(s, cnn_dist_reducer_finish(s->red));
    stats_reduce(s, Bg);
    /* this rank's shard of the summed gradient, as floats */
    const size_t lo = s->lo, len = s->hi - s->lo;
    if (s->c.exact) {
        run_on_threads(s, JOB_CONVERT, part_threads(s));
        s->sum_pending = 0;
        stats[STAT_NONFINITE] += s->bad;
    } else if (!all_finite(m->grads + lo, len)) {
        stats[STAT_NONFINITE] += 1;
    }
    double t0 = cnn_dist_time();
    memcpy(s->sums, stats, STAT_N * sizeof *stats);
    cnn_dist_reducer_sum_f64(s->red, s->sums, nsums);
    memcpy(stats, s->sums, STAT_N * sizeof *stats);
    for (int j = STAT_N; j < nsums; j++)
        stats[STAT_LOSS] += s->sums[j];
    add_wait(s, cnn_dist_time() - t0);
    return st;
}

void cnn_stepper_update(cnn_stepper *s, cnn_optim *o)
{
    cnn_optim_count_step(o);
    s->opt = o;
    run_on_threads(s, JOB_UPDATE, part_threads(s));
    s->opt = NULL;
    s->grads_clear = s->c.exact;
    double t0 = cnn_dist_time();
    cnn_dist_reducer_allgather(s->red, s->m->params);
    add_wait(s, cnn_dist_time() - t0);
    stats_apply(s);
}

void cnn_stepper_gather_optimizer(cnn_stepper *s, cnn_optim *o)
{
    if (!s->red || !o)
        return;
    for (int k = 0; k < cnn_optim_nstate(o); k++)
        cnn_dist_reducer_allgather(s->red, o->state[k]);
}

cnn_status cnn_stepper_blocks(cnn_stepper *s, int64_t n, cnn_stepper_block_fn fn, void *arg,
                              cnn_error *err)
{
    if (n <= 0)
        return CNN_OK;
    s->blocks_fn = fn;
    s->blocks_arg = arg;
    s->blocks_n = n;
    const int T = n < s->nthreads ? (int)n : s->nthreads;
    run_on_threads(s, JOB_BLOCKS, T);
    for (int t = 0; t < T; t++) /* in block order: the first failure is the lowest block's */
        if (s->w[t].st) {
            if (err)
                *err = s->w[t].err;
            return s->w[t].st;
        }
    return CNN_OK;
}

cnn_status cnn_stepper_read(cnn_step_worker *w, const cnn_dataset *ds, int B, float rescale,
                            cnn_error *err)
{
    cnn_stepper *s = w->s;
    return read_samples(s, w, ds, B, rescale, s->busy > 1, err);
}
