/* session.c - a run's set-up and tear-down, the agreement between ranks
 * and evaluation over a data set (see session.h). */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cnn/profile.h"
#include "session.h"

void cnn_session_quiet(cnn_error *err, cnn_status st)
{
    if (!err)
        return;
    err->status = st;
    err->msg[0] = 0;
}

cnn_status cnn_session_agree(const session *S, cnn_status st, cnn_error *err)
{
    int s = st, who = cnn_dist_agree(S->d, &s);
    if (who >= 0 && who != S->d->rank)
        cnn_session_quiet(err, (cnn_status)s);
    return who >= 0 ? (cnn_status)s : CNN_OK;
}

/* The threads a rank takes when [train] threads is 0, and why (into why):
 * its affinity mask when that is narrower than the node (mpirun's or
 * SLURM's binding says what it may use); else OMP_NUM_THREADS,
 * OPENBLAS_NUM_THREADS or SLURM_CPUS_PER_TASK, the first one set; else the
 * node's cores shared by its ranks. */
static int default_threads(const cnn_dist *d, char *why, size_t n)
{
    static const char *const vars[] = {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                       "SLURM_CPUS_PER_TASK"};
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    const int mask = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    if (mask > 0 && mask < online) {
        snprintf(why, n, "the rank's affinity mask: %d of the node's %ld cores", mask, online);
        return mask;
    }
    for (size_t k = 0; k < sizeof vars / sizeof *vars; k++) {
        const char *v = getenv(vars[k]);
        long c = v ? atol(v) : 0;
        if (c > 0) {
            snprintf(why, n, "%s=%ld", vars[k], c);
            return c > 4096 ? 4096 : (int)c;
        }
    }
    const long cores = mask > 0 ? mask : online > 0 ? online : 1;
    const int local = d->local_size > 0 ? d->local_size : 1;
    long c = cores / local;
    if (local > 1)
        snprintf(why, n, "the node's %ld cores shared by its %d ranks", cores, local);
    else
        snprintf(why, n, "the node's %ld cores", cores);
    return c < 1 ? 1 : (int)c;
}

/* [train] threads, or the default and why. */
static int rank_threads(const cnn_train_config *tc, const cnn_dist *d, char *why, size_t n)
{
    if (tc->threads > 0) {
        snprintf(why, n, "[train] threads");
        return (int)tc->threads;
    }
    return default_threads(d, why, n);
}

void cnn_session_threads(const cnn_train_config *tc, const cnn_dist *d, FILE *out)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char why[160];
    int used = rank_threads(tc, d, why, sizeof why);
    cnn_set_threads(used);
    if (d->rank == 0 && (long)used * d->local_size > cores)
        fprintf(out,
                "warning: %d ranks x %d threads on a node with %ld cores oversubscribe it; "
                "set [train] threads or OMP_NUM_THREADS\n",
                d->local_size, used, cores);
}

/* rank 0, training: how many threads the step uses and why. */
static void threads_note(const session *S)
{
    const cnn_stepper *sp = &S->sp;
    const cnn_run *run = S->run;
    char why[160];
    int n = rank_threads(&run->tc, S->d, why, sizeof why);
    if (!run->dist.exact)
        fprintf(S->out,
                "threads: %d per rank (%s); [dist] reduction = float runs the step on one "
                "thread, BLAS on %d\n",
                n, why, n);
    else if (sp->nthreads < n)
        fprintf(S->out,
                "threads: %d per rank (%s), %d busy: a rank gets at most %d reduction chunk%s a "
                "step, one thread each (BLAS on one thread each, so the bits do not depend on "
                "the threads); lower [dist] chunk_size to use more\n",
                n, why, sp->nthreads, sp->nthreads, sp->nthreads > 1 ? "s" : "");
    else
        fprintf(S->out,
                "threads: %d per rank (%s): a step's reduction chunks spread over them, BLAS on "
                "one thread each\n",
                n, why);
}

/* Evaluation buffers for batches of cap samples and sets of up to nmax. */
static cnn_status batch_alloc(batch_buf *b, const cnn_model *m, int cap, int64_t nmax,
                              cnn_error *err)
{
    b->cap = cap;
    b->nblocks = (nmax + cap - 1) / cap;
    b->sums = malloc((size_t)(STAT_N + b->nblocks) * sizeof *b->sums);
    b->x = malloc((size_t)cap * cnn_shape_size(m->input) * sizeof *b->x);
    b->y = malloc((size_t)cap * sizeof *b->y);
    b->idx = malloc((size_t)cap * sizeof *b->idx);
    b->raw = malloc((size_t)cap * cnn_shape_size(m->input));
    b->probs = malloc((size_t)cap * m->nclasses * sizeof *b->probs);
    if (!b->x || !b->y || !b->idx || !b->raw || !b->probs || !b->sums)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for a batch of %d", cap);
    return CNN_OK;
}

static void batch_free(batch_buf *b)
{
    free(b->x);
    free(b->y);
    free(b->idx);
    free(b->raw);
    free(b->probs);
    free(b->sums);
}

/* One evaluation on the rank's threads (cnn_stepper_blocks): the blocks
 * [blo, bhi) of ds. */
typedef struct eval_job {
    const cnn_dataset *ds;
    float rescale;
    int cap;
    int64_t blo;
    double *block_loss; /* (the set's blocks) */
    double *tally;      /* (threads, 2): correct, count */
} eval_job;

/* Block k of ds in blocks of cap: its samples' ids into ids; returns its size. */
static int block_ids(const cnn_dataset *ds, int cap, int64_t k, int64_t *ids)
{
    const int64_t i = k * cap;
    const int B = (int)(ds->n - i < cap ? ds->n - i : cap);
    for (int b = 0; b < B; b++)
        ids[b] = i + b;
    return B;
}

/* Inference over a block read into x, y: its loss sum and counts in *bs. */
static cnn_status block_forward(cnn_model *m, const float *x, const int32_t *y, int B,
                                cnn_batch_stats *bs, cnn_error *err)
{
    cnn_ctx ctx = cnn_model_ctx(m, 0, 0, 0, NULL);
    cnn_model_forward(m, x, B, &ctx);
    return cnn_model_loss(m, y, B, 0.0f, 0, bs, err);
}

static cnn_status eval_block(cnn_step_worker *w, int t, int64_t k, void *arg, cnn_error *err)
{
    const eval_job *j = arg;
    const int B = block_ids(j->ds, j->cap, j->blo + k, w->ids);
    cnn_status st = cnn_stepper_read(w, j->ds, B, j->rescale, err);
    if (st)
        return st;
    cnn_batch_stats bs = {0};
    st = block_forward(w->m, w->x, w->y, B, &bs, err);
    j->block_loss[j->blo + k] = bs.loss_sum;
    j->tally[2 * t] += (double)bs.correct; /* integers: exact in any order */
    j->tally[2 * t + 1] += (double)bs.count;
    return st;
}

static cnn_status eval_on_threads(session *S, const cnn_dataset *ds, int64_t blo, int64_t bhi,
                                  double *block_loss, double *st, cnn_error *err)
{
    const int T = S->sp.nthreads;
    double *tally = calloc(2 * (size_t)T, sizeof *tally);
    if (!tally)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for an evaluation");
    eval_job j = {.ds = ds, .rescale = S->run->dc.rescale, .cap = S->eb.cap, .blo = blo,
                  .block_loss = block_loss, .tally = tally};
    cnn_status status = cnn_stepper_blocks(&S->sp, bhi - blo, eval_block, &j, err);
    for (int t = 0; t < T; t++) {
        st[STAT_CORRECT] += tally[2 * t];
        st[STAT_COUNT] += tally[2 * t + 1];
    }
    free(tally);
    return status;
}

cnn_status cnn_session_evaluate(session *S, const cnn_dataset *ds, double *loss, double *acc,
                                long *correct, float *pred, cnn_error *err)
{
    const cnn_dist *d = S->d;
    cnn_model *m = S->run->model;
    const float rescale = S->run->dc.rescale;
    batch_buf *bb = &S->eb;
    /* The set is cut into blocks of cap samples, the same cut on any rank
     * count; rank r evaluates a contiguous range of them. Each block's loss
     * goes to its own slot (zeros elsewhere, so the sum across ranks is
     * exact) and the slots are added in block order: the loss is np 1's,
     * bit for bit, on any number of ranks (callbacks compare it). In
     * exact training the blocks hold at most a chunk and the rank's go over
     * its threads (each block whole on one, the slots as before), so the
     * figures are the same at any thread count too. */
    const int64_t nb = (ds->n + bb->cap - 1) / bb->cap;
    const int64_t blo = nb * d->rank / d->world, bhi = nb * (d->rank + 1) / d->world;
    double *st = bb->sums, *block_loss = bb->sums + STAT_N;
    memset(st, 0, (size_t)(STAT_N + nb) * sizeof *st);
    cnn_status status = CNN_OK;
    if (S->eval_threads && !pred)
        status = eval_on_threads(S, ds, blo, bhi, block_loss, st, err);
    else
        for (int64_t k = blo; k < bhi && status == CNN_OK; k++) {
            const int64_t i = k * bb->cap;
            const int B = block_ids(ds, bb->cap, k, bb->idx);
            if ((status = cnn_dataset_gather(ds, bb->idx, B, rescale, bb->raw, bb->x, bb->y,
                                             err)))
                break;
            cnn_batch_stats bs = {0};
            status = block_forward(m, bb->x, bb->y, B, &bs, err);
            block_loss[k] = bs.loss_sum;
            st[STAT_CORRECT] += (double)bs.correct;
            st[STAT_COUNT] += (double)bs.count;
            if (pred && status == CNN_OK) {
                cnn_model_probabilities(m, B, bb->probs);
                for (int b = 0; b < B; b++) {
                    int32_t c;
                    float p;
                    cnn_model_classes(m, bb->probs + (size_t)b * m->nclasses, 1, &c, &p);
                    pred[i + b] = (float)c;
                    pred[ds->n + i + b] = p;
                }
            }
        }
    st[STAT_FAILED] = status != CNN_OK;
    cnn_dist_allreduce_f64(d, st, (size_t)(STAT_N + nb));
    for (int64_t k = 0; k < nb; k++)
        st[STAT_LOSS] += block_loss[k];
    if (pred && st[STAT_FAILED] == 0) /* each sample is nonzero on one rank only */
        cnn_dist_allreduce_f32(d, pred, 2 * (size_t)ds->n);
    if (st[STAT_FAILED] > 0) {
        int s = status;
        int who = cnn_dist_agree(d, &s);
        if (who != d->rank)
            cnn_session_quiet(err, (cnn_status)s);
        return (cnn_status)s;
    }
    *loss = st[STAT_COUNT] > 0 ? st[STAT_LOSS] / st[STAT_COUNT] : NAN;
    *acc = st[STAT_COUNT] > 0 ? st[STAT_CORRECT] / st[STAT_COUNT] : NAN;
    if (correct)
        *correct = (long)st[STAT_CORRECT];
    return CNN_OK;
}

/* Image files that do not decode: each rank decodes its share of d, all
 * learn the union; with on_bad_image = skip rank 0 lists them and every
 * rank drops them, with fatal the first is an error. Collective. */
static cnn_status check_images(const session *S, cnn_dataset *d, cnn_error *err)
{
    if (!d->store->ops->per_file)
        return CNN_OK;
    uint8_t *bad = calloc((size_t)(d->n > 0 ? d->n : 1), 1);
    cnn_status st = bad ? cnn_dataset_verify(d, S->d->rank, S->d->world, bad, err)
                        : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    if ((st = cnn_session_agree(S, st, err))) {
        free(bad);
        return st;
    }
    cnn_dist_allreduce_max_u8(S->d, bad, (size_t)d->n);
    int64_t dropped = 0;
    if (S->root)
        for (int64_t i = 0; i < d->n; i++)
            if (bad[i]) {
                char buf[1200];
                fprintf(S->out, "skipped (does not decode): %s\n",
                        cnn_dataset_describe(d, i, buf, sizeof buf));
            }
    st = cnn_dataset_drop(d, bad, &dropped, err);
    if (!st && dropped && S->root)
        fprintf(S->out, "skipped %lld of %lld images of %s\n", (long long)dropped,
                (long long)(d->n + dropped), d->source);
    free(bad);
    return st;
}

/* The data set fits the network: image shape and classes. */
static cnn_status check_fit(const cnn_dataset *ds, const cnn_model *m, cnn_error *err)
{
    if (ds->shape.c != m->input.c || ds->shape.h != m->input.h || ds->shape.w != m->input.w)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "%s holds %dx%dx%d images but [input] shape is %dx%dx%d (HxWxC)",
                             ds->source, ds->shape.h, ds->shape.w, ds->shape.c, m->input.h,
                             m->input.w, m->input.c);
    if (m->loss != CNN_LOSS_BCE && ds->nclasses > m->nclasses)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "%s has %d classes but the last layer '%s' has %d units", ds->source,
                             ds->nclasses, m->layers[m->nlayers - 1].name, m->nclasses);
    if (m->loss == CNN_LOSS_BCE && ds->nclasses > 2)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "%s has %d classes; binary_crossentropy needs labels 0 and 1",
                             ds->source, ds->nclasses);
    return CNN_OK;
}

/* The data sets, the image folders listed by rank 0 alone: the other
 * ranks receive its listing, so no rank but one reads the folders'
 * directories, however many ranks there are. */
static cnn_status load_data(session *S, cnn_error *err)
{
    const cnn_data_config *dc = &S->run->dc;
    cnn_data_listing l = {0};
    cnn_status st = S->d->rank == 0 ? cnn_data_list(dc, &l, err) : CNN_OK;
    if (!(st = cnn_session_agree(S, st, err)) &&
        cnn_dist_bcast_bytes(S->d, &l.bytes, &l.len, 0) != 0)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the listing of %s", dc->dir);
    if (!st)
        st = cnn_data_load_listed(dc, S->d->rank, S->d->world, &l, &S->train, &S->val,
                                  &S->test, err);
    cnn_data_listing_free(&l);
    return st;
}

/* [data] cache for training, before the images are checked, so that the
 * check's decoding fills it: each rank may take half the memory available
 * over the node's ranks; rank 0 says when auto finds too little. */
static cnn_status cache_sets(const session *S, cnn_error *err)
{
    const int local = S->d->local_size > 0 ? S->d->local_size : 1;
    const uint64_t limit = cnn_data_memory_available() / 2 / (uint64_t)local;
    int on = 0;
    cnn_status st = cnn_data_cache_sets(&S->run->dc, S->train, S->val, limit, &on, err);
    if (!st && !on && S->root && S->run->dc.cache == CNN_CACHE_AUTO &&
        S->train->store->ops->per_file)
        fprintf(S->out, "note: [data] cache = auto left off: the decoded images need more than "
                        "the %.0f MiB a rank may use\n",
                (double)limit / 1048576.0);
    return cnn_session_agree(S, st, err);
}

cnn_status cnn_session_open(session *S, int training, cnn_error *err)
{
    const cnn_run *run = S->run;
    const cnn_train_config *tc = &run->tc;
    cnn_model *m = run->model;
    cnn_status st = load_data(S, err);
    if ((st = cnn_session_agree(S, st, err)) || (training && (st = cache_sets(S, err))) ||
        (training && (st = check_images(S, S->train, err))) ||
        (training && S->val && S->val != S->test && (st = check_images(S, S->val, err))) ||
        (st = check_images(S, S->test, err)))
        return st;
    st = check_fit(training ? S->train : S->test, m, err);
    if (!st && training) /* local: failures are agreed on below */
        st = cnn_stepper_init(&S->sp, m, S->d, &run->dist, &run->aug, tc->batch_size,
                              cnn_get_threads(), err);
    if (!st)
        st = cnn_model_reserve(
            m, S->sp.cap > tc->eval_batch_size ? S->sp.cap : (int)tc->eval_batch_size, err);
    if (!st && training)
        st = cnn_optim_create(&S->opt, &run->hp, m->nparams, err);
    /* exact training: evaluation on the step's threads, in blocks of at
     * most a chunk (the samples their workspaces hold), at any thread count */
    S->eval_threads = !st && training && run->dist.exact;
    const int ecap = S->eval_threads && S->sp.cap < tc->eval_batch_size ? S->sp.cap
                                                                          : (int)tc->eval_batch_size;
    if (!st)
        st = batch_alloc(&S->eb, m, ecap,
                         training && S->val && S->val->n > S->test->n ? S->val->n : S->test->n,
                         err);
    if (!st && training && !(S->perm = malloc((size_t)S->train->n * sizeof *S->perm)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the permutation");
    if (!st && training && S->root)
        threads_note(S);
    if (!st && training && run->cbc.es.restore_best_weights &&
        !(S->best = malloc((m->nparams + m->nbuffer_floats + 1) * sizeof *S->best)))
        st = cnn_error_set(err, CNN_ERR_NOMEM,
                           "out of memory for the best weights ([early_stopping] "
                           "restore_best_weights)");
    if (!st && training && S->root && run->ck.dir[0] && cnn_make_dirs(run->ck.dir) != 0)
        st = cnn_error_set(err, CNN_ERR_IO, "[checkpoint] dir %s: cannot create: %s",
                           run->ck.dir, strerror(errno));
    return cnn_session_agree(S, st, err);
}

void cnn_session_close(session *S)
{
    cnn_session_writer_free(S);
    if (S->prof) { /* the run ended inside the profiled steps */
        cnn_profile_attach(NULL, S->sp.m);
        cnn_profile_free(S->prof);
        S->prof = NULL;
    }
    if (S->hist)
        fclose(S->hist);
    batch_free(&S->eb);
    free(S->perm);
    free(S->best);
    cnn_stepper_free(&S->sp);
    cnn_optim_free(S->opt);
    cnn_history_free(&S->h);
    if (S->val && S->val != S->test)
        cnn_dataset_free(S->val);
    cnn_dataset_free(S->train);
    cnn_dataset_free(S->test);
}

double cnn_session_peak_rss_mib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0;
}
