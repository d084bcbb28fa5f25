/* step.c - one data-parallel training step (see step.h). */
#include <math.h>
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
    size_t *cuts = malloc((size_t)(m->nlayers + 1) * sizeof *cuts);
    if (!s->x || !s->y || !s->ids || !s->raw || !s->tmp || !cuts) {
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
    return CNN_OK;
}

void cnn_stepper_free(cnn_stepper *s)
{
    cnn_dist_reducer_free(s->red); /* and acc with it */
    free(s->x);
    free(s->y);
    free(s->ids);
    free(s->raw);
    free(s->tmp);
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
    memset(stats, 0, STAT_N * sizeof *stats);
    stats[STAT_STOP] = s->stop != 0;
    stats[STAT_SAVE] = s->save != 0;
    s->bad = 0;
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
        st = cnn_dataset_gather(train, s->ids, B, rescale, s->raw, s->x, s->y, err);
        if (s->fault == CNN_FAULT_IO)
            st = cnn_error_set(err, CNN_ERR_IO, "%s: injected read error (CNN_TEST_FAULT)",
                               train->source);
        if (s->fault == CNN_FAULT_NAN)
            s->x[0] = NAN;
        if (s->fault == CNN_FAULT_EXIT)
            _exit(3);
        if (st == CNN_OK && s->aug.enabled)
            augment(s, B, seed, epoch);
        if (st == CNN_OK) {
            cnn_model_forward(m, s->x, B, &ctx);
            st = cnn_model_loss(m, s->y, B, 1.0f / (float)Bg, 1, &bs, err);
        }
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
        if (s->c.exact)
            memset(s->acc, 0, m->nparams * sizeof *s->acc);
        else
            cnn_model_zero_grad(m);
    }
    s->wait += cnn_dist_reducer_finish(s->red);
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
    cnn_dist_reducer_sum_f64(s->red, stats, STAT_N);
    s->wait += cnn_dist_time() - t0;
    return st;
}

void cnn_stepper_update(cnn_stepper *s, cnn_optim *o)
{
    cnn_optim_step_range(o, s->m, s->lo, s->hi);
    double t0 = cnn_dist_time();
    cnn_dist_reducer_allgather(s->red, s->m->params);
    s->wait += cnn_dist_time() - t0;
}

void cnn_stepper_gather_optimizer(cnn_stepper *s, cnn_optim *o)
{
    if (!s->red || !o)
        return;
    for (int k = 0; k < cnn_optim_nstate(o); k++)
        cnn_dist_reducer_allgather(s->red, o->state[k]);
}
