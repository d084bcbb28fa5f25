/* trainer.c - data-parallel training loop.
 *
 * Step s of epoch e takes the global batch perm[s*B .. s*B+B) of a
 * permutation that depends only on (seed, e). Each rank processes its part
 * of it (step.h: whole chunks, or a slice with the float reduction), its
 * loss gradient scaled by 1/Bg, so the summed gradient is the mean over the
 * global batch; each rank updates its shard of the parameters and the
 * shards are gathered. Dropout and augmentation draw from (seed, epoch,
 * global sample index). With the exact reduction the result does not
 * depend on the number of ranks at all.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cnn/checkpoint.h"
#include "cnn/plot.h"
#include "cnn/rng.h"
#include "report.h"
#include "step.h"
#include "trainer.h"


/* This rank fails because another one did, which reports it: no message. */
static void quiet(cnn_error *err, cnn_status st)
{
    err->status = st;
    err->msg[0] = 0;
}

/* [dist]: reduction (exact|float), chunk_size, bucket_mb, overlap. */
static cnn_status read_dist_section(cnn_run *run, const cnn_config *cfg, cnn_error *err)
{
    static const char *const reductions[] = {"float", "exact", NULL};
    const cnn_section *s = cnn_config_find(cfg, "dist");
    cnn_step_config *c = &run->step;
    long chunk;
    cnn_status st;
    if ((st = cnn_cfg_enum(s, "reduction", 1, reductions, &c->exact, err)) ||
        (st = cnn_cfg_int(s, "chunk_size", 8, 1, 1 << 20, &chunk, err)) ||
        (st = cnn_cfg_float(s, "bucket_mb", 1.0, 1e-3, 1e6, &c->bucket_mb, err)) ||
        (st = cnn_cfg_bool(s, "overlap", 1, &c->overlap, err)))
        return st;
    c->chunk_size = (int)chunk;
    return CNN_OK;
}

/* [checkpoint]: dir, every_epochs, every_steps, every_minutes, keep, best,
 * resume. */
static cnn_status read_checkpoint_section(cnn_run *run, const cnn_config *cfg, cnn_error *err)
{
    const cnn_section *s = cnn_config_find(cfg, "checkpoint");
    cnn_ckpt_config *c = &run->ck;
    cnn_status st;
    if ((st = cnn_cfg_string(s, "dir", "", &c->dir, err)) ||
        (st = cnn_cfg_int(s, "every_epochs", 1, 0, 1L << 30, &c->every_epochs, err)) ||
        (st = cnn_cfg_int(s, "every_steps", 0, 0, 1L << 40, &c->every_steps, err)) ||
        (st = cnn_cfg_float(s, "every_minutes", 0, 0, 1e9, &c->every_minutes, err)) ||
        (st = cnn_cfg_int(s, "keep", 3, 1, 1L << 20, &c->keep, err)) ||
        (st = cnn_cfg_bool(s, "best", 0, &c->best, err)) ||
        (st = cnn_cfg_string(s, "resume", "", &c->resume, err)))
        return st;
    if (!strcmp(c->resume, "none"))
        c->resume = "";
    if (!strcmp(c->dir, "none"))
        c->dir = "";
    if (!strcmp(c->resume, "auto") && !c->dir[0])
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%s: [checkpoint] resume = auto needs [checkpoint] dir", cfg->path);
    return CNN_OK;
}

cnn_status cnn_run_setup(cnn_run *run, cnn_config *cfg, cnn_error *err)
{
    memset(run, 0, sizeof *run);
    run->cfg = cfg;
    cnn_status st;
    if ((st = cnn_train_config_read(&run->tc, cfg, err)) ||
        (st = cnn_data_config_read(&run->dc, cfg, err)) ||
        (st = cnn_optim_hparams_from_config(&run->hp, cfg, err)) ||
        (st = cnn_model_create(&run->model, cfg, run->tc.loss, err)) ||
        (st = read_dist_section(run, cfg, err)) ||
        (st = cnn_augment_config_read(&run->step.aug, cfg, err)) ||
        (st = read_checkpoint_section(run, cfg, err)) ||
        (st = cnn_config_check_unused(cfg, err)))
        return st;
    return CNN_OK;
}

void cnn_run_free(cnn_run *run)
{
    cnn_model_free(run->model);
    cnn_config_free(run->cfg);
    memset(run, 0, sizeof *run);
}

/* Buffers for one rank's share of a batch. */
typedef struct batch_buf {
    float *x;       /* (cap, input) */
    int32_t *y;     /* (cap) */
    int64_t *idx;   /* (cap) dataset rows */
    uint8_t *raw;   /* (cap, input) pixels as stored */
    float *probs;   /* (cap, nclasses) */
    int cap;
} batch_buf;

static cnn_status batch_alloc(batch_buf *b, const cnn_model *m, int cap, cnn_error *err)
{
    b->cap = cap;
    b->x = malloc((size_t)cap * cnn_shape_size(m->input) * sizeof *b->x);
    b->y = malloc((size_t)cap * sizeof *b->y);
    b->idx = malloc((size_t)cap * sizeof *b->idx);
    b->raw = malloc((size_t)cap * cnn_shape_size(m->input));
    b->probs = malloc((size_t)cap * m->nclasses * sizeof *b->probs);
    if (!b->x || !b->y || !b->idx || !b->raw || !b->probs)
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
}

/* Loss and accuracy over a dataset, split across ranks, summed exactly:
 * each sample is evaluated by exactly one rank. pred, when not NULL
 * (2 x ds->n, zeroed), gets the class of each sample and then its
 * probability, on every rank. Collective. */
static cnn_status evaluate(cnn_model *m, const cnn_dataset *ds, const cnn_dist *d, float rescale,
                           batch_buf *bb, double *loss, double *acc, long *correct, float *pred,
                           cnn_error *err)
{
    int64_t lo = ds->n * d->rank / d->world, hi = ds->n * (d->rank + 1) / d->world;
    double st[STAT_N] = {0};
    cnn_status status = CNN_OK;
    cnn_ctx ctx = cnn_model_ctx(m, 0, 0, 0, NULL);
    for (int64_t i = lo; i < hi && status == CNN_OK; i += bb->cap) {
        int B = (int)(hi - i < bb->cap ? hi - i : bb->cap);
        for (int b = 0; b < B; b++)
            bb->idx[b] = i + b;
        if ((status = cnn_dataset_gather(ds, bb->idx, B, rescale, bb->raw, bb->x, bb->y, err)))
            break;
        cnn_model_forward(m, bb->x, B, &ctx);
        cnn_batch_stats bs = {0};
        status = cnn_model_loss(m, bb->y, B, 0.0f, 0, &bs, err);
        st[STAT_LOSS] += bs.loss_sum;
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
    cnn_dist_allreduce_f64(d, st, STAT_N);
    if (pred && st[STAT_FAILED] == 0) /* each sample is nonzero on one rank only */
        cnn_dist_allreduce_f32(d, pred, 2 * (size_t)ds->n);
    if (st[STAT_FAILED] > 0) {
        int s = status;
        int who = cnn_dist_agree(d, &s);
        if (who != d->rank)
            quiet(err, (cnn_status)s);
        return (cnn_status)s;
    }
    *loss = st[STAT_COUNT] > 0 ? st[STAT_LOSS] / st[STAT_COUNT] : NAN;
    *acc = st[STAT_COUNT] > 0 ? st[STAT_CORRECT] / st[STAT_COUNT] : NAN;
    if (correct)
        *correct = (long)st[STAT_CORRECT];
    return CNN_OK;
}

/* Progress of an epoch on rank 0: a line redrawn in place on a terminal,
 * plain lines every log_every steps otherwise (batch logs, SLURM). */
static void progress(FILE *out, int mode, long step, long steps, double loss, double acc,
                     double elapsed, double imgs, int final)
{
    if (mode == CNN_PROGRESS_NONE)
        return;
    double ips = elapsed > 0 ? imgs / elapsed : 0;
    if (mode == CNN_PROGRESS_BAR) {
        char bar[31];
        int fill = steps ? (int)(30 * step / steps) : 30;
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '=' : (i == fill ? '>' : '.');
        bar[30] = 0;
        fprintf(out, "\r%6ld/%-6ld [%s] - %.0fs - loss: %.4f - accuracy: %.4f - %.0f img/s\033[K",
                step, steps, bar, elapsed, loss, acc, ips);
        if (final)
            fputc('\r', out);
    } else {
        fprintf(out, "  step %ld/%ld - %.1fs - loss: %.4f - accuracy: %.4f - %.0f img/s\n", step,
                steps, elapsed, loss, acc, ips);
    }
    fflush(out);
}

/* Whether progress may redraw a line in place. Open MPI hands each rank a
 * pseudo-terminal even when mpirun's own output goes to a file, so under
 * Open MPI the answer is mpirun's (the parent's) stdout; when that cannot
 * be read, plain lines are the safe choice. */
static int stdout_is_terminal(FILE *out)
{
    if (!isatty(fileno(out)))
        return 0;
    if (!getenv("OMPI_COMM_WORLD_SIZE"))
        return 1;
    char link[64], target[256];
    snprintf(link, sizeof link, "/proc/%d/fd/1", (int)getppid());
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = 0;
    return strncmp(target, "/dev/pts/", 9) == 0 || strncmp(target, "/dev/tty", 8) == 0;
}

/* The accuracy and loss graphs beside the history CSV: a failure to draw
 * them is reported but does not fail the run. */
static void plot_history(const char *csv, FILE *out)
{
    char prefix[1024];
    size_t n = strlen(csv);
    snprintf(prefix, sizeof prefix, "%.*s", (int)(n > 4 && !strcmp(csv + n - 4, ".csv") ? n - 4 : n),
             csv);
    cnn_error e = {0};
    fflush(NULL); /* the history file is complete on disk */
    if (cnn_plot_history(csv, prefix, &e) == CNN_OK)
        fprintf(out, "plots: %s-accuracy.png %s-loss.png\n", prefix, prefix);
    else
        fprintf(out, "warning: no plots: %s\n", e.msg);
}

/* CNN_TEST_FAULT="RANK:STEP:KIND" (KIND io|nan|exit) makes global step
 * STEP (from 1) fail on rank RANK: the hook of the failure tests. */
static void parse_fault(const cnn_dist *d, long *step, int *kind)
{
    const char *v = getenv("CNN_TEST_FAULT");
    int rank;
    char what[8];
    *kind = CNN_FAULT_NONE;
    if (!v || sscanf(v, "%d:%ld:%7s", &rank, step, what) != 3 || rank != d->rank)
        return;
    *kind = !strcmp(what, "io")    ? CNN_FAULT_IO
            : !strcmp(what, "nan") ? CNN_FAULT_NAN
            : !strcmp(what, "exit") ? CNN_FAULT_EXIT
                                   : CNN_FAULT_NONE;
}

/* Peak resident memory of this process, in MiB. */
static double peak_rss_mib(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (double)ru.ru_maxrss / 1024.0 : 0;
}

static void history_row(FILE *f, const cnn_epoch_record *r)
{
    fprintf(f, "%lld,%.6f,%.6f,", (long long)r->epoch, r->loss, r->accuracy);
    if (isnan(r->val_loss))
        fprintf(f, ",,");
    else
        fprintf(f, "%.6f,%.6f,", r->val_loss, r->val_accuracy);
    fprintf(f, "%g,%.3f,%.1f\n", r->lr, r->seconds, r->images_per_sec);
    fflush(f);
}

/* Starts the history CSV with the rows of the epochs already done (those
 * of a checkpoint resumed from). */
static cnn_status open_history(const char *path, const cnn_history *h, FILE **f, cnn_error *err)
{
    *f = fopen(path, "w");
    if (!*f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write history: %s", path,
                             strerror(errno));
    fprintf(*f, "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,images_per_sec\n");
    for (int i = 0; i < h->n; i++)
        history_row(*f, &h->rows[i]);
    fflush(*f);
    return CNN_OK;
}

/* Sets BLAS threads: [train] threads, else OPENBLAS_NUM_THREADS if the user
 * set it, else the node's cores shared among its ranks. */
static void setup_threads(const cnn_train_config *tc, const cnn_dist *d, FILE *out)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int n = (int)tc->threads;
    if (n == 0 && !getenv("OPENBLAS_NUM_THREADS")) {
        n = (int)(cores / (d->local_size > 0 ? d->local_size : 1));
        if (n < 1)
            n = 1;
    }
    cnn_set_threads(n);
    int used = cnn_get_threads();
    if (d->rank == 0 && (long)used * d->local_size > cores)
        fprintf(out,
                "warning: %d ranks x %d BLAS threads on a node with %ld cores oversubscribe it; "
                "set [train] threads or OPENBLAS_NUM_THREADS\n",
                d->local_size, used, cores);
}

/* SIGTERM / SIGUSR1 (SLURM's warning before the time limit) ask for a
 * checkpoint and a clean stop at the next step boundary. */
static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

static void catch_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

/* One training run in progress. */
typedef struct session {
    cnn_run *run;
    const cnn_dist *d;
    FILE *out;
    int root;
    int progress_mode;
    cnn_dataset *train, *val, *test;
    cnn_optim *opt;
    FILE *hist;
    int64_t *perm;      /* (train->n) the epoch's order */
    cnn_stepper sp;
    batch_buf eb;
    cnn_history h;      /* per-epoch metrics so far */
    cnn_train_state ts; /* position: what a checkpoint records */
    double last_save;   /* time of the last checkpoint (every_minutes) */
} session;

/* Every rank has the status of the rank that failed first, and only that
 * rank keeps a message. Collective. */
static cnn_status agree(const session *S, cnn_status st, cnn_error *err)
{
    int s = st, who = cnn_dist_agree(S->d, &s);
    if (who >= 0 && who != S->d->rank)
        quiet(err, (cnn_status)s);
    return who >= 0 ? (cnn_status)s : CNN_OK;
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
    if ((st = agree(S, st, err))) {
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

/* Phase 1: every rank loads data and allocates; then all agree. For
 * training everything; otherwise (--evaluate) only what evaluating the
 * test set needs: no image check of the training files, no optimizer. */
static cnn_status session_open(session *S, int training, cnn_error *err)
{
    const cnn_train_config *tc = &S->run->tc;
    cnn_model *m = S->run->model;
    cnn_status st = cnn_data_load(&S->run->dc, S->d->rank, S->d->world, &S->train, &S->val,
                                  &S->test, err);
    if ((st = agree(S, st, err)) || (training && (st = check_images(S, S->train, err))) ||
        (training && S->val && S->val != S->test && (st = check_images(S, S->val, err))) ||
        (st = check_images(S, S->test, err)))
        return st;
    const cnn_dataset *ds = training ? S->train : S->test;
    if (ds->shape.c != m->input.c || ds->shape.h != m->input.h || ds->shape.w != m->input.w)
        st = cnn_error_set(err, CNN_ERR_SHAPE,
                           "%s holds %dx%dx%d images but [input] shape is %dx%dx%d (HxWxC)",
                           ds->source, ds->shape.h, ds->shape.w, ds->shape.c, m->input.h,
                           m->input.w, m->input.c);
    if (!st && m->loss != CNN_LOSS_BCE && ds->nclasses > m->nclasses)
        st = cnn_error_set(err, CNN_ERR_SHAPE,
                           "%s has %d classes but the last layer '%s' has %d units", ds->source,
                           ds->nclasses, m->layers[m->nlayers - 1].name, m->nclasses);
    if (!st && m->loss == CNN_LOSS_BCE && ds->nclasses > 2)
        st = cnn_error_set(err, CNN_ERR_SHAPE,
                           "%s has %d classes; binary_crossentropy needs labels 0 and 1",
                           ds->source, ds->nclasses);
    if (!st && training) /* local: failures are agreed on below */
        st = cnn_stepper_init(&S->sp, m, S->d, &S->run->step, tc->batch_size, err);
    if (!st)
        st = cnn_model_reserve(
            m, S->sp.cap > tc->eval_batch_size ? S->sp.cap : (int)tc->eval_batch_size, err);
    if (!st && training)
        st = cnn_optim_create(&S->opt, &S->run->hp, m->nparams, err);
    if (!st)
        st = batch_alloc(&S->eb, m, (int)tc->eval_batch_size, err);
    if (!st && training && !(S->perm = malloc((size_t)S->train->n * sizeof *S->perm)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the permutation");
    if (!st && training && S->root && S->run->ck.dir[0] && cnn_make_dirs(S->run->ck.dir) != 0)
        st = cnn_error_set(err, CNN_ERR_IO, "[checkpoint] dir %s: cannot create: %s",
                           S->run->ck.dir, strerror(errno));
    return agree(S, st, err);
}

/* The checkpoint to resume from: [checkpoint] resume (or --resume) is a
 * file, or "auto" for the newest valid one in dir (none: start afresh).
 * Rank 0 decides and tells the others. Collective. */
static cnn_status resume_path(session *S, char *path, size_t n, cnn_error *err)
{
    const cnn_ckpt_config *ck = &S->run->ck;
    cnn_status st = CNN_OK;
    path[0] = 0;
    if (S->root && !strcmp(ck->resume, "auto")) {
        int found = 0;
        st = cnn_checkpoint_find_latest(ck->dir, path, n, &found, err);
        if (!found)
            path[0] = 0;
    } else if (S->root && ck->resume[0]) {
        snprintf(path, n, "%s", ck->resume);
    }
    if ((st = agree(S, st, err)))
        return st;
    cnn_dist_bcast(S->d, path, n, 0);
    return CNN_OK;
}

/* Loads the checkpoint at path on every rank and checks that it continues
 * this run: same seed; in the middle of an epoch, same batch size. */
static cnn_status resume(session *S, const char *path, cnn_error *err)
{
    const cnn_train_config *tc = &S->run->tc;
    cnn_status st = cnn_checkpoint_load(path, S->run->model, S->opt, &S->ts, &S->h, err);
    if (!st && S->ts.seed != tc->seed)
        st = cnn_error_set(err, CNN_ERR_CONFIG,
                           "%s was trained with seed %llu but [train] seed is %llu", path,
                           (unsigned long long)S->ts.seed, (unsigned long long)tc->seed);
    if (!st && S->ts.step > 0 && (double)S->ts.step * (double)tc->batch_size != S->ts.epoch_count)
        st = cnn_error_set(err, CNN_ERR_CONFIG,
                           "%s stopped in the middle of an epoch (step %lld) with another "
                           "[train] batch_size; resume it with the batch size it was trained with",
                           path, (long long)S->ts.step);
    if (!st && S->ts.step > 0 && S->ts.epoch_count >= (double)S->train->n)
        st = cnn_error_set(err, CNN_ERR_CONFIG, "%s: step %lld is past the end of the epoch",
                           path, (long long)S->ts.step);
    return agree(S, st, err);
}

/* Rank 0 writes a checkpoint (ckpt-E-S.h5, or best.h5) and prunes old
 * ones; all ranks learn whether it worked. Collective. */
static cnn_status save(session *S, int best, cnn_error *err)
{
    const cnn_ckpt_config *ck = &S->run->ck;
    cnn_status st = CNN_OK;
    cnn_stepper_gather_optimizer(&S->sp, S->opt);
    if (S->root) {
        char path[4096];
        if (best)
            snprintf(path, sizeof path, "%s/best.h5", ck->dir);
        else
            cnn_checkpoint_name(path, sizeof path, ck->dir, &S->ts);
        const cnn_dataset *t = S->train;
        S->ts.world = S->d->world;
        st = cnn_checkpoint_write(path, S->run->model, S->opt, &S->ts, &S->h,
                                  S->run->cfg->text, (const char *const *)t->class_names,
                                  t->class_names ? t->nclasses : 0, err);
        if (!st && !best)
            st = cnn_checkpoint_prune(ck->dir, (int)ck->keep, err);
        if (!st) {
            if (S->progress_mode == CNN_PROGRESS_BAR)
                fprintf(S->out, "\r\033[K");
            fprintf(S->out, "checkpoint: %s\n", path);
        }
        fflush(S->out);
    }
    S->last_save = cnn_dist_time();
    return agree(S, st, err);
}

static void session_close(session *S)
{
    if (S->hist)
        fclose(S->hist);
    batch_free(&S->eb);
    free(S->perm);
    cnn_stepper_free(&S->sp);
    cnn_optim_free(S->opt);
    cnn_history_free(&S->h);
    if (S->val && S->val != S->test)
        cnn_dataset_free(S->val);
    cnn_dataset_free(S->train);
    cnn_dataset_free(S->test);
}

/* The end of an epoch on rank 0: the Keras-style line and the CSV row. */
static void report_epoch(const session *S, const cnn_epoch_record *r, long steps, long total)
{
    FILE *out = S->out;
    if (S->progress_mode == CNN_PROGRESS_BAR)
        fprintf(out, "\r\033[K");
    fprintf(out, "%ld/%ld - %.1fs - loss: %.4f - accuracy: %.4f", steps, total, r->seconds,
            r->loss, r->accuracy);
    if (!isnan(r->val_loss))
        fprintf(out, " - val_loss: %.4f - val_accuracy: %.4f", r->val_loss, r->val_accuracy);
    fprintf(out, " - lr: %g - %.0f img/s\n", r->lr, r->images_per_sec);
    fflush(out);
    if (S->hist)
        history_row(S->hist, r);
}

cnn_status cnn_run_train(cnn_run *run, const cnn_dist *d, FILE *out, cnn_error *err)
{
    const cnn_train_config *tc = &run->tc;
    const cnn_ckpt_config *ck = &run->ck;
    cnn_model *m = run->model;
    session S = {.run = run, .d = d, .out = out, .root = d->rank == 0};
    cnn_status st;

    setup_threads(tc, d, out);
    S.progress_mode = tc->progress;
    if (S.progress_mode == CNN_PROGRESS_AUTO)
        S.progress_mode = stdout_is_terminal(out) ? CNN_PROGRESS_BAR : CNN_PROGRESS_LINES;
    stop_signal = 0;
    catch_stop_signals();

    if ((st = session_open(&S, 1, err)))
        goto done;
    cnn_model_init_params(m, tc->seed);
    S.ts.seed = tc->seed;
    char from[4096];
    if ((st = resume_path(&S, from, sizeof from, err)) || (from[0] && (st = resume(&S, from, err))))
        goto done;
    if (!cnn_dist_identical(d, m->params, m->nparams)) {
        st = cnn_error_set(err, CNN_ERR_DIST,
                           "parameters differ between ranks (different builds or configs?)");
        if (!S.root)
            quiet(err, st);
        goto done;
    }
    if (S.root && tc->history)
        st = open_history(tc->history, &S.h, &S.hist, err);
    if ((st = agree(&S, st, err)))
        goto done;
    const cnn_dataset *train = S.train;
    if (S.root) {
        fprintf(out,
                "cnn-train: %d rank%s, global batch %ld, %lld training samples, %lld validation, "
                "%lld test, %zu parameters, %d BLAS thread%s per rank\n",
                d->world, d->world > 1 ? "s" : "", tc->batch_size, (long long)train->n,
                (long long)(S.val ? S.val->n : 0), (long long)S.test->n, m->nparams,
                cnn_get_threads(), cnn_get_threads() > 1 ? "s" : "");
        if (from[0] && S.ts.step == 0)
            fprintf(out, "resumed from %s after epoch %lld (global step %lld)\n", from,
                    (long long)S.ts.epoch, (long long)S.ts.global_step);
        else if (from[0])
            fprintf(out, "resumed from %s in epoch %lld after step %lld (global step %lld)\n",
                    from, (long long)S.ts.epoch + 1, (long long)S.ts.step,
                    (long long)S.ts.global_step);
        int busy = cnn_stepper_busy_ranks(&S.sp, tc->batch_size);
        if (busy < d->world)
            fprintf(out,
                    "warning: a global batch of %ld in reduction chunks of %d keeps only %d of "
                    "%d ranks busy; lower [dist] chunk_size or raise [train] batch_size\n",
                    tc->batch_size, run->step.chunk_size, busy, d->world);
        if (train->class_names) {
            fprintf(out, "classes (%d):", train->nclasses);
            for (int c = 0; c < train->nclasses; c++)
                fprintf(out, "%s %s", c ? "," : "", train->class_names[c]);
            fputc('\n', out);
        }
        fflush(out);
    }

    const long B = tc->batch_size;
    const long steps_per_epoch = (long)((train->n + B - 1) / B);
    long skipped = 0, fault_step, saved_at = -1;
    int fault_kind;
    parse_fault(d, &fault_step, &fault_kind);
    double total_imgs = 0, total_time = 0;
    S.last_save = cnn_dist_time();
    cnn_train_state *ts = &S.ts;
    for (long epoch = (long)ts->epoch; epoch < tc->epochs; epoch++) {
        if (tc->max_steps && ts->global_step >= tc->max_steps)
            break;
        cnn_rng_permutation(S.perm, train->n, tc->seed, (uint64_t)epoch);
        double t0 = cnn_dist_time(), last_draw = 0, imgs = 0;
        long step;
        if (S.root && S.progress_mode != CNN_PROGRESS_NONE)
            fprintf(out, "Epoch %ld/%ld\n", epoch + 1, tc->epochs);
        for (step = (long)ts->step; step < steps_per_epoch; step++) {
            if (tc->max_steps && ts->global_step >= tc->max_steps)
                break;
            int64_t g0 = step * B;
            int Bg = (int)(train->n - g0 < B ? train->n - g0 : B);
            double stats[STAT_N];
            S.sp.fault = ts->global_step + 1 == fault_step ? fault_kind : CNN_FAULT_NONE;
            S.sp.stop = stop_signal != 0;
            S.sp.save = S.root && ck->dir[0] && ck->every_minutes > 0 &&
                        cnn_dist_time() - S.last_save >= 60.0 * ck->every_minutes;
            st = cnn_stepper_run(&S.sp, train, S.perm + g0, Bg, run->dc.rescale, tc->seed,
                                 (uint64_t)epoch, tc->nan_policy == CNN_NAN_SKIP_STEP, stats,
                                 err);
            if (stats[STAT_FAILED] > 0) {
                int who, s = st;
                who = cnn_dist_agree(d, &s);
                st = (cnn_status)s;
                if (who == d->rank) {
                    char msg[CNN_ERROR_MSG_MAX];
                    snprintf(msg, sizeof msg, "%s", err->msg);
                    cnn_error_set(err, st, "epoch %ld step %ld (global step %lld): %s",
                                  epoch + 1, step + 1, (long long)ts->global_step + 1, msg);
                } else {
                    quiet(err, st);
                }
                goto done;
            }
            /* The flag comes from reduced numbers, the same on every rank,
             * so every rank takes the same decision without a message. */
            int update = 1;
            if (stats[STAT_NONFINITE] > 0) {
                if (tc->nan_policy != CNN_NAN_SKIP_STEP) {
                    st = cnn_error_set(err, CNN_ERR_NUMERIC,
                                       "epoch %ld step %ld (global step %lld): the gradient is "
                                       "NaN, infinite or too large to reduce exactly; see "
                                       "[train] nan_policy",
                                       epoch + 1, step + 1, (long long)ts->global_step + 1);
                    if (!S.root)
                        quiet(err, st);
                    goto done;
                }
                update = 0;
                skipped++;
                if (S.root)
                    fprintf(out, "warning: epoch %ld step %ld (global step %lld): non-finite "
                                 "loss or gradient, update skipped (nan_policy = skip_step)\n",
                            epoch + 1, step + 1, (long long)ts->global_step + 1);
            }
            if (update) {
                cnn_stepper_update(&S.sp, S.opt);
                ts->epoch_loss_sum += stats[STAT_LOSS];
                ts->epoch_correct += stats[STAT_CORRECT];
                ts->epoch_count += stats[STAT_COUNT];
            }
            imgs += Bg;
            ts->global_step++;
            ts->step = step + 1;
            ts->samples_seen += Bg;
            /* the bar is redrawn at most 5 times a second */
            int draw = S.progress_mode == CNN_PROGRESS_BAR
                           ? cnn_dist_time() - last_draw >= 0.2 || step + 1 == steps_per_epoch
                           : (step + 1) % tc->log_every == 0;
            if (S.root && draw && ts->epoch_count > 0) {
                last_draw = cnn_dist_time();
                progress(out, S.progress_mode, step + 1, steps_per_epoch,
                         ts->epoch_loss_sum / ts->epoch_count,
                         ts->epoch_correct / ts->epoch_count, last_draw - t0, imgs, 0);
            }
            int stop = stats[STAT_STOP] > 0;
            int due = ck->dir[0] && step + 1 < steps_per_epoch &&
                      ((ck->every_steps && ts->global_step % ck->every_steps == 0) ||
                       stats[STAT_SAVE] > 0 || stop);
            if (due) {
                if ((st = save(&S, 0, err)))
                    goto done;
                saved_at = (long)ts->global_step;
            }
            if (stop && step + 1 < steps_per_epoch) {
                run->stopped = 1;
                goto stopped;
            }
        }
        double train_time = cnn_dist_time() - t0;
        if (step < steps_per_epoch) { /* max_steps in the middle of an epoch */
            total_imgs += imgs;
            total_time += train_time;
            break;
        }
        cnn_epoch_record r = {.epoch = epoch, .val_loss = NAN, .val_accuracy = NAN,
                              .lr = run->hp.lr};
        if (S.val && (st = evaluate(m, S.val, d, run->dc.rescale, &S.eb, &r.val_loss,
                                    &r.val_accuracy, NULL, NULL, err)))
            goto done;
        r.seconds = cnn_dist_time() - t0;
        r.loss = ts->epoch_loss_sum / ts->epoch_count;
        r.accuracy = ts->epoch_correct / ts->epoch_count;
        r.images_per_sec = imgs / train_time;
        total_imgs += imgs;
        total_time += train_time;
        if ((st = cnn_history_append(&S.h, &r, err)))
            goto done;
        if (S.root)
            report_epoch(&S, &r, step, steps_per_epoch);
        *ts = (cnn_train_state){.epoch = epoch + 1, .global_step = ts->global_step,
                                .samples_seen = ts->samples_seen, .seed = ts->seed,
                                .best_val_accuracy = ts->best_val_accuracy};
        int better = S.val && r.val_accuracy > ts->best_val_accuracy;
        if (better)
            ts->best_val_accuracy = r.val_accuracy;
        if (ck->dir[0] && ck->best && better && (st = save(&S, 1, err)))
            goto done;
        int stop = stop_signal != 0;
        /* a signal seen by any rank during evaluation stops all */
        if (d->world > 1) {
            double f = stop;
            cnn_dist_allreduce_max_f64(d, &f, 1);
            stop = f > 0;
        }
        if (ck->dir[0] && (stop || epoch + 1 == tc->epochs ||
                           (ck->every_epochs && (epoch + 1) % ck->every_epochs == 0) ||
                           (ck->every_steps && ts->global_step % ck->every_steps == 0))) {
            if ((st = save(&S, 0, err)))
                goto done;
            saved_at = (long)ts->global_step;
        }
        if (stop && epoch + 1 < tc->epochs) {
            run->stopped = 1;
            goto stopped;
        }
    }
    /* the end: a checkpoint of the final state, unless there is one */
    if (ck->dir[0] && saved_at != (long)ts->global_step && (st = save(&S, 0, err)))
        goto done;
    double tloss, tacc;
    long correct;
    if ((st = evaluate(m, S.test, d, run->dc.rescale, &S.eb, &tloss, &tacc, &correct, NULL, err)))
        goto done;
    /* the slowest rank's figures: max of wait, of peak memory, of -peak */
    double rss = peak_rss_mib(), mx[3] = {S.sp.wait, rss, -rss};
    cnn_dist_allreduce_max_f64(d, mx, 3);
    if (S.root) {
        if (total_time > 0)
            fprintf(out, "training: %lld steps, %.0f images in %.2fs, %.0f img/s\n",
                    (long long)ts->global_step, total_imgs, total_time, total_imgs / total_time);
        if (skipped)
            fprintf(out, "skipped: %ld steps with a non-finite loss or gradient\n", skipped);
        if (d->world > 1 && total_time > 0)
            fprintf(out,
                    "communication: %d bucket%s of <= %g MB, overlap %s; waiting %.2fs = %.1f%% "
                    "of training time (slowest rank)\n",
                    cnn_dist_reducer_buckets(S.sp.red),
                    cnn_dist_reducer_buckets(S.sp.red) > 1 ? "s" : "", run->step.bucket_mb,
                    run->step.overlap ? "on" : "off", mx[0], 100.0 * mx[0] / total_time);
        fprintf(out, "memory: peak RSS per rank %.0f-%.0f MiB\n", -mx[2], mx[1]);
        fprintf(out, "test: loss=%.4f accuracy=%.4f correct=%ld incorrect=%lld\n", tloss, tacc,
                correct, (long long)S.test->n - correct);
        if (S.hist && tc->plot) {
            fclose(S.hist);
            S.hist = NULL;
            plot_history(tc->history, out);
        }
        fflush(out);
    }
    goto done;
stopped:
    if (S.root) {
        fprintf(out, "stopped by signal %d after global step %lld (epoch %lld, step %lld)%s\n",
                (int)stop_signal, (long long)ts->global_step,
                (long long)ts->epoch + (ts->step > 0), (long long)ts->step,
                ck->dir[0] ? "; resume with --resume auto"
                           : "; no [checkpoint] dir, nothing saved");
        fflush(out);
    }
done:
    session_close(&S);
    return st;
}

cnn_status cnn_run_evaluate(cnn_run *run, const cnn_dist *d, const char *path, const char *dir,
                            FILE *out, cnn_error *err)
{
    cnn_model *m = run->model;
    session S = {.run = run, .d = d, .out = out, .root = d->rank == 0};
    float *pred = NULL;
    int32_t *cls = NULL;
    cnn_report rep = {0};
    cnn_status st;
    setup_threads(&run->tc, d, out);
    if ((st = session_open(&S, 0, err)))
        goto done;
    st = cnn_checkpoint_load(path, m, NULL, NULL, NULL, err);
    if (!st && S.root && cnn_make_dirs(dir) != 0)
        st = cnn_error_set(err, CNN_ERR_IO, "--out %s: cannot create: %s", dir, strerror(errno));
    const cnn_dataset *test = S.test;
    if (!st && !(pred = calloc(2 * (size_t)test->n, sizeof *pred)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for %lld predictions",
                           (long long)test->n);
    if ((st = agree(&S, st, err)))
        goto done;
    double loss, acc;
    long correct;
    if ((st = evaluate(m, test, d, run->dc.rescale, &S.eb, &loss, &acc, &correct, pred,
                             err)))
        goto done;
    if (!S.root)
        goto done;
    if (!(cls = malloc((size_t)(test->n ? test->n : 1) * sizeof *cls))) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (int64_t i = 0; i < test->n; i++)
        cls[i] = (int32_t)pred[i];
    int k = m->nclasses > 1 ? m->nclasses : 2;
    const char *const *names = (const char *const *)test->class_names;
    if (test->class_names && test->nclasses != k)
        names = NULL;
    char cpath[4096], mpath[4096];
    int64_t wrong = 0;
    snprintf(cpath, sizeof cpath, "%s/confusion.csv", dir);
    snprintf(mpath, sizeof mpath, "%s/misclassified.csv", dir);
    fprintf(out, "evaluate: %s on %s\n", path, test->source);
    if ((st = cnn_report_build(&rep, k, test->labels, cls, test->n, loss, err)))
        goto done;
    cnn_report_print(&rep, names, out);
    if ((st = cnn_report_write_confusion(&rep, names, cpath, err)) ||
        (st = cnn_report_write_misclassified(test, cls, pred + test->n, names, mpath, &wrong,
                                             err)))
        goto done;
    fprintf(out, "\nwrote %s and %s (%lld misclassified)\n", cpath, mpath, (long long)wrong);
    fprintf(out, "test: loss=%.4f accuracy=%.4f correct=%ld incorrect=%lld\n", loss, acc, correct,
            (long long)test->n - correct);
done:
    cnn_report_free(&rep);
    free(cls);
    free(pred);
    session_close(&S);
    return st;
}
