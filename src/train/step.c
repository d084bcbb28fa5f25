/* step.c - one data-parallel training step (see step.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "step.h"

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

/* Called by backward after each layer: grads[offset ..) are final. */
static void grads_ready(void *arg, size_t offset)
{
    cnn_stepper *s = arg;
    if (s->c.exact) {
        s->bad |= add_fixed(s->acc + offset, s->m->grads + offset, s->done_from - offset,
                            s->limit, s->first);
        s->done_from = offset;
        if (s->last)
            cnn_dist_reducer_ready(s->red, offset);
    } else if (s->last) {
        cnn_dist_reducer_ready(s->red, offset);
    }
}

static void poll(void *arg)
{
    cnn_stepper *s = arg;
    if (s->last)
        cnn_dist_reducer_poll(s->red);
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

/* After a training forward of B samples: keeps the layers' statistics. */
static void stats_record(cnn_stepper *s, int B)
{
    if (!s->nstats || s->nrec >= s->max_chunks)
        return;
    cnn_model_stats_get(s->m, s->chunk_stats + (size_t)s->nrec * s->nstats);
    s->chunk_n[s->nrec++] = B;
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
    s->wait += cnn_dist_time() - t0;
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

cnn_status cnn_stepper_init(cnn_stepper *s, cnn_model *m, const cnn_dist *d,
                            const cnn_dist_config *c, const cnn_augment_config *aug,
                            long max_batch, cnn_error *err)
{
    memset(s, 0, sizeof *s);
    s->m = m;
    s->d = d;
    s->c = *c;
    s->aug = *aug;
    s->cap = c->exact ? c->chunk_size : (int)((max_batch + d->world - 1) / d->world);
    if (s->cap > max_batch)
        s->cap = (int)max_batch;
    /* the chunks of a step together stay inside the int64 range */
    s->limit = 9.2e18 / (double)((max_batch + c->chunk_size - 1) / c->chunk_size + 1);
    const size_t in = cnn_shape_size(m->input);
    s->x = malloc((size_t)s->cap * in * sizeof *s->x);
    s->y = malloc((size_t)s->cap * sizeof *s->y);
    s->ids = malloc((size_t)s->cap * sizeof *s->ids);
    s->raw = malloc((size_t)s->cap * in);
    s->tmp = malloc(in * sizeof *s->tmp);
    s->nsums = STAT_N + (c->exact ? (int)((max_batch + c->chunk_size - 1) / c->chunk_size) : 0);
    s->sums = malloc((size_t)s->nsums * sizeof *s->sums);
    size_t *cuts = malloc((size_t)(m->nlayers + 1) * sizeof *cuts);
    if (!s->x || !s->y || !s->ids || !s->raw || !s->tmp || !s->sums || !cuts) {
        free(cuts);
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "out of memory for the step's buffers (a batch of %d images)", s->cap);
    }
    int n = 0;
    for (int i = 0; i < m->nlayers; i++)
        if (m->layers[i].param_count)
            cuts[n++] = m->layers[i].param_offset;
    const cnn_dist_reducer_opts ro = {.bucket_bytes = (size_t)(c->bucket_mb * 1048576.0),
                                      .overlap = c->overlap,
                                      .exchange = (cnn_dist_exchange)c->exchange,
                                      .timeout_s = c->timeout_s};
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
    cnn_dist_shard(m->nparams, d->rank, d->world, &s->lo, &s->hi);
    return stats_init(s, max_batch, err);
}

void cnn_stepper_free(cnn_stepper *s)
{
    cnn_dist_reducer_free(s->red); /* and acc with it */
    free(s->x);
    free(s->y);
    free(s->ids);
    free(s->raw);
    free(s->tmp);
    free(s->sums);
    stats_free(s);
    memset(s, 0, sizeof *s);
}

/* Each image of the chunk through [augment], keyed by its training-set id. */
static void augment(cnn_stepper *s, int B, uint64_t seed, uint64_t epoch)
{
    const cnn_shape sh = s->m->input;
    const size_t in = cnn_shape_size(sh);
    for (int b = 0; b < B; b++) {
        float *x = s->x + (size_t)b * in;
        cnn_augment_image(&s->aug, seed, epoch, s->ids[b], x, s->tmp, sh.c, sh.h, sh.w);
        memcpy(x, s->tmp, in * sizeof *x);
    }
}

static int all_finite(const float *v, size_t n)
{
    float acc = 0; /* NaN or Inf anywhere makes the sum of v*0 NaN */
    for (size_t i = 0; i < n; i++)
        acc += v[i] * 0.0f;
    return acc == 0.0f;
}

cnn_status cnn_stepper_run(cnn_stepper *s, const cnn_dataset *train, const int64_t *batch,
                           int Bg, float rescale, uint64_t seed, uint64_t epoch, int skip_nan,
                           double *stats, cnn_error *err)
{
    cnn_model *m = s->m;
    int first, end, csize;
    my_chunks(s, Bg, &first, &end, &csize);
    /* float: the slice [first, end) is one block of samples */
    int nblocks = s->c.exact ? end - first : (end > first);
    /* exact: chunk j's loss in sums[STAT_N + j], zeros in the other ranks'
     * slots, added in chunk order after the sum across ranks: the loss is
     * np 1's, bit for bit, on any rank count (as the gradient) */
    const int nsums = s->c.exact ? STAT_N + (Bg + csize - 1) / csize : STAT_N;
    double *chunk_loss = s->sums + STAT_N;
    memset(s->sums, 0, (size_t)nsums * sizeof *s->sums);
    memset(stats, 0, STAT_N * sizeof *stats);
    stats[STAT_STOP] = s->stop != 0;
    stats[STAT_SAVE] = s->save != 0;
    s->bad = 0;
    s->nrec = 0;
    /* exact: every chunk's conversion leaves zeros behind, so only this
     * rank's shard, which held the last step's summed gradient, needs it */
    if (s->c.exact)
        memset(m->grads + s->lo, 0, (s->hi - s->lo) * sizeof *m->grads);
    cnn_status st = CNN_OK;
    cnn_ctx ctx = cnn_model_ctx(m, 1, seed, epoch, s->ids);
    ctx.grads_ready = grads_ready;
    ctx.poll = poll;
    ctx.grads_ready_arg = s;
    for (int k = 0; k < nblocks && st == CNN_OK; k++) {
        int lo = s->c.exact ? (first + k) * csize : first;
        int hi = s->c.exact ? lo + csize : end;
        if (hi > Bg)
            hi = Bg;
        int B = hi - lo;
        memcpy(s->ids, batch + lo, (size_t)B * sizeof *s->ids);
        cnn_batch_stats bs = {0};
        if (!s->c.exact)
            cnn_model_zero_grad(m);
        st = s->prefetch ? cnn_prefetch_fetch(s->prefetch, s->ids, B, seed, epoch, s->x, s->y, err)
                         : cnn_dataset_gather(train, s->ids, B, rescale, s->raw, s->x, s->y, err);
        if (s->fault == CNN_FAULT_IO)
            st = cnn_error_set(err, CNN_ERR_IO, "%s: injected read error (CNN_TEST_FAULT)",
                               train->source);
        if (s->fault == CNN_FAULT_NAN)
            s->x[0] = NAN;
        if (s->fault == CNN_FAULT_EXIT)
            _exit(3);
        if (st == CNN_OK && s->aug.enabled && !s->prefetch) /* the prefetch augments */
            augment(s, B, seed, epoch);
        if (st == CNN_OK) {
            cnn_model_forward(m, s->x, B, &ctx);
            stats_record(s, B);
            st = cnn_model_loss(m, s->y, B, 1.0f / (float)Bg, 1, &bs, err);
        }
        if (s->c.exact)
            chunk_loss[first + k] = bs.loss_sum;
        else
            stats[STAT_LOSS] += bs.loss_sum;
        stats[STAT_CORRECT] += (double)bs.correct;
        stats[STAT_COUNT] += (double)bs.count;
        if (st == CNN_OK) {
            s->last = k == nblocks - 1;
            s->first = k == 0;
            s->done_from = m->nparams;
            cnn_model_backward(m, s->x, B, &ctx);
        }
    }
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
        if (s->c.exact)
            memset(s->acc, 0, m->nparams * sizeof *s->acc);
        else
            cnn_model_zero_grad(m);
    }
    s->wait += cnn_dist_reducer_finish(s->red);
    stats_reduce(s, Bg);
    /* this rank's shard of the summed gradient, as floats */
    const size_t lo = s->lo, len = s->hi - s->lo;
    if (s->c.exact) {
        const double inv = 1.0 / FIXED_SCALE;
        for (size_t i = lo; i < lo + len; i++)
            m->grads[i] = (float)((double)s->acc[i] * inv);
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
    s->wait += cnn_dist_time() - t0;
    return st;
}

void cnn_stepper_update(cnn_stepper *s, cnn_optim *o)
{
    cnn_optim_step_range(o, s->m, s->lo, s->hi);
    double t0 = cnn_dist_time();
    cnn_dist_reducer_allgather(s->red, s->m->params);
    s->wait += cnn_dist_time() - t0;
    stats_apply(s);
}

void cnn_stepper_gather_optimizer(cnn_stepper *s, cnn_optim *o)
{
    if (!s->red || !o)
        return;
    for (int k = 0; k < cnn_optim_nstate(o); k++)
        cnn_dist_reducer_allgather(s->red, o->state[k]);
}
