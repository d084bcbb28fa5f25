/* trainer.c - data-parallel training loop.
 *
 * Step s of epoch e takes the global batch perm[s*B .. s*B+B) of a
 * permutation that depends only on (seed, e). Rank r processes the slice
 * [Bg*r/world, Bg*(r+1)/world) of it, its loss gradient scaled by 1/Bg, so
 * the allreduced sum of gradients is the mean over the global batch, and
 * every rank applies the same update. Dropout draws from (seed, epoch,
 * global sample index). The result does not depend on the number of ranks
 * beyond float summation order.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cnn/plot.h"
#include "cnn/rng.h"
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
    int cap;
} batch_buf;

static cnn_status batch_alloc(batch_buf *b, const cnn_model *m, int cap, cnn_error *err)
{
    b->cap = cap;
    b->x = malloc((size_t)cap * cnn_shape_size(m->input) * sizeof *b->x);
    b->y = malloc((size_t)cap * sizeof *b->y);
    b->idx = malloc((size_t)cap * sizeof *b->idx);
    b->raw = malloc((size_t)cap * cnn_shape_size(m->input));
    if (!b->x || !b->y || !b->idx || !b->raw)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for a batch of %d", cap);
    return CNN_OK;
}

static void batch_free(batch_buf *b)
{
    free(b->x);
    free(b->y);
    free(b->idx);
    free(b->raw);
}

/* Loss and accuracy over a dataset, split across ranks, summed exactly:
 * each sample is evaluated by exactly one rank. Collective. */
static cnn_status evaluate(cnn_model *m, const cnn_dataset *ds, const cnn_dist *d, float rescale,
                           batch_buf *bb, double *loss, double *acc, long *correct,
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
    }
    st[STAT_FAILED] = status != CNN_OK;
    cnn_dist_allreduce_f64(d, st, STAT_N);
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

static cnn_status open_history(const char *path, FILE **f, cnn_error *err)
{
    *f = fopen(path, "w");
    if (!*f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write history: %s", path,
                             strerror(errno));
    fprintf(*f, "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,images_per_sec\n");
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

cnn_status cnn_run_train(cnn_run *run, const cnn_dist *d, FILE *out, cnn_error *err)
{
    const cnn_train_config *tc = &run->tc;
    cnn_model *m = run->model;
    const int root = d->rank == 0;
    cnn_dataset *train = NULL, *val = NULL, *test = NULL;
    cnn_optim *opt = NULL;
    FILE *hist = NULL;
    int64_t *perm = NULL;
    cnn_stepper sp = {0};
    batch_buf eb = {0};
    cnn_status st;
    int s, who;

    setup_threads(tc, d, out);
    int progress_mode = tc->progress;
    if (progress_mode == CNN_PROGRESS_AUTO)
        progress_mode = stdout_is_terminal(out) ? CNN_PROGRESS_BAR : CNN_PROGRESS_LINES;

    /* Phase 1: every rank loads data and allocates; then all agree. */
    st = cnn_data_load(&run->dc, d->rank, d->world, &train, &val, &test, err);
    if (!st && (train->shape.c != m->input.c || train->shape.h != m->input.h ||
                train->shape.w != m->input.w))
        st = cnn_error_set(err, CNN_ERR_SHAPE,
                           "%s holds %dx%dx%d images but [input] shape is %dx%dx%d (HxWxC)",
                           train->source, train->shape.h, train->shape.w, train->shape.c,
                           m->input.h, m->input.w, m->input.c);
    if (!st && m->loss != CNN_LOSS_BCE && train->nclasses > m->nclasses)
        st = cnn_error_set(err, CNN_ERR_SHAPE,
                           "%s has %d classes but the last layer '%s' has %d units",
                           train->source, train->nclasses, m->layers[m->nlayers - 1].name,
                           m->nclasses);
    if (!st && m->loss == CNN_LOSS_BCE && train->nclasses > 2)
        st = cnn_error_set(err, CNN_ERR_SHAPE,
                           "%s has %d classes; binary_crossentropy needs labels 0 and 1",
                           train->source, train->nclasses);
    if (!st)
        st = cnn_stepper_init(&sp, m, d, &run->step, tc->batch_size, err);
    if (!st)
        st = cnn_model_reserve(m, sp.cap > tc->eval_batch_size ? sp.cap : (int)tc->eval_batch_size,
                               err);
    if (!st)
        st = cnn_optim_create(&opt, &run->hp, m->nparams, err);
    if (!st)
        st = batch_alloc(&eb, m, (int)tc->eval_batch_size, err);
    if (!st && !(perm = malloc((size_t)train->n * sizeof *perm)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the permutation");
    if (!st && root && tc->history)
        st = open_history(tc->history, &hist, err);
    s = st;
    if ((who = cnn_dist_agree(d, &s)) >= 0) {
        st = (cnn_status)s;
        if (who != d->rank)
            quiet(err, st);
        goto done;
    }

    cnn_model_init_params(m, tc->seed);
    if (!cnn_dist_identical(d, m->params, m->nparams)) {
        st = cnn_error_set(err, CNN_ERR_DIST,
                           "initial parameters differ between ranks (different builds or "
                           "configs?)");
        if (!root)
            quiet(err, st);
        goto done;
    }
    if (root) {
        fprintf(out,
                "cnn-train: %d rank%s, global batch %ld, %lld training samples, %lld validation, "
                "%lld test, %zu parameters, %d BLAS thread%s per rank\n",
                d->world, d->world > 1 ? "s" : "", tc->batch_size, (long long)train->n,
                (long long)(val ? val->n : 0), (long long)test->n, m->nparams,
                cnn_get_threads(), cnn_get_threads() > 1 ? "s" : "");
        int busy = cnn_stepper_busy_ranks(&sp, tc->batch_size);
        if (busy < d->world)
            fprintf(out,
                    "warning: a global batch of %ld in reduction chunks of %d keeps only %d of "
                    "%d ranks busy; lower [dist] chunk_size or raise [train] batch_size\n",
                    tc->batch_size, run->step.chunk_size, busy, d->world);
        fflush(out);
    }

    const long B = tc->batch_size;
    const long steps_per_epoch = (long)((train->n + B - 1) / B);
    long global_step = 0, skipped = 0, fault_step;
    int fault_kind;
    parse_fault(d, &fault_step, &fault_kind);
    double total_imgs = 0, total_time = 0;
    for (long epoch = 0; epoch < tc->epochs; epoch++) {
        if (tc->max_steps && global_step >= tc->max_steps)
            break;
        cnn_rng_permutation(perm, train->n, tc->seed, (uint64_t)epoch);
        double t0 = cnn_dist_time(), last_draw = 0, ep[STAT_N] = {0};
        long step;
        if (root && progress_mode != CNN_PROGRESS_NONE)
            fprintf(out, "Epoch %ld/%ld\n", epoch + 1, tc->epochs);
        for (step = 0; step < steps_per_epoch; step++) {
            if (tc->max_steps && global_step >= tc->max_steps)
                break;
            int64_t g0 = step * B;
            int Bg = (int)(train->n - g0 < B ? train->n - g0 : B);
            double stats[STAT_N];
            sp.fault = global_step + 1 == fault_step ? fault_kind : CNN_FAULT_NONE;
            st = cnn_stepper_run(&sp, train, perm + g0, Bg, run->dc.rescale, tc->seed,
                                 (uint64_t)epoch, tc->nan_policy == CNN_NAN_SKIP_STEP, stats,
                                 err);
            if (stats[STAT_FAILED] > 0) {
                s = st;
                who = cnn_dist_agree(d, &s);
                st = (cnn_status)s;
                if (who == d->rank) {
                    char msg[CNN_ERROR_MSG_MAX];
                    snprintf(msg, sizeof msg, "%s", err->msg);
                    cnn_error_set(err, st, "epoch %ld step %ld (global step %ld): %s", epoch + 1,
                                  step + 1, global_step + 1, msg);
                } else {
                    quiet(err, st);
                }
                goto done;
            }
            /* The flag comes from reduced numbers, the same on every rank,
             * so every rank takes the same decision without a message. */
            if (stats[STAT_NONFINITE] > 0) {
                if (tc->nan_policy != CNN_NAN_SKIP_STEP) {
                    st = cnn_error_set(err, CNN_ERR_NUMERIC,
                                       "epoch %ld step %ld (global step %ld): the gradient is "
                                       "NaN, infinite or too large to reduce exactly; see "
                                       "[train] nan_policy",
                                       epoch + 1, step + 1, global_step + 1);
                    if (!root)
                        quiet(err, st);
                    goto done;
                }
                skipped++;
                global_step++;
                if (root)
                    fprintf(out, "warning: epoch %ld step %ld (global step %ld): non-finite loss "
                                 "or gradient, update skipped (nan_policy = skip_step)\n",
                            epoch + 1, step + 1, global_step);
                continue;
            }
            cnn_optim_step(opt, m);
            global_step++;
            for (int k = 0; k < STAT_FAILED; k++)
                ep[k] += stats[k];
            /* the bar is redrawn at most 5 times a second */
            int draw = progress_mode == CNN_PROGRESS_BAR
                           ? cnn_dist_time() - last_draw >= 0.2 || step + 1 == steps_per_epoch
                           : (step + 1) % tc->log_every == 0;
            if (root && draw) {
                last_draw = cnn_dist_time();
                progress(out, progress_mode, step + 1, steps_per_epoch,
                         ep[STAT_LOSS] / ep[STAT_COUNT], ep[STAT_CORRECT] / ep[STAT_COUNT],
                         last_draw - t0, ep[STAT_COUNT], 0);
            }
        }
        double train_time = cnn_dist_time() - t0;
        double vloss = NAN, vacc = NAN;
        if (val && (st = evaluate(m, val, d, run->dc.rescale, &eb, &vloss, &vacc, NULL, err)))
            goto done;
        double secs = cnn_dist_time() - t0;
        double loss = ep[STAT_LOSS] / ep[STAT_COUNT], acc = ep[STAT_CORRECT] / ep[STAT_COUNT];
        double ips = ep[STAT_COUNT] / train_time;
        total_imgs += ep[STAT_COUNT];
        total_time += train_time;
        if (root) {
            if (progress_mode == CNN_PROGRESS_BAR)
                fprintf(out, "\r\033[K");
            fprintf(out, "%ld/%ld - %.1fs - loss: %.4f - accuracy: %.4f", step, steps_per_epoch,
                    secs, loss, acc);
            if (val)
                fprintf(out, " - val_loss: %.4f - val_accuracy: %.4f", vloss, vacc);
            fprintf(out, " - lr: %g - %.0f img/s\n", run->hp.lr, ips);
            fflush(out);
            if (hist) {
                fprintf(hist, "%ld,%.6f,%.6f,", epoch, loss, acc);
                if (val)
                    fprintf(hist, "%.6f,%.6f,", vloss, vacc);
                else
                    fprintf(hist, ",,");
                fprintf(hist, "%g,%.3f,%.1f\n", run->hp.lr, secs, ips);
                fflush(hist);
            }
        }
    }
    double tloss, tacc;
    long correct;
    if ((st = evaluate(m, test, d, run->dc.rescale, &eb, &tloss, &tacc, &correct, err)))
        goto done;
    /* the slowest rank's figures: max of wait, of peak memory, of -peak */
    double rss = peak_rss_mib(), mx[3] = {sp.wait, rss, -rss};
    cnn_dist_allreduce_max_f64(d, mx, 3);
    if (root) {
        if (total_time > 0)
            fprintf(out, "training: %ld steps, %.0f images in %.2fs, %.0f img/s\n", global_step,
                    total_imgs, total_time, total_imgs / total_time);
        if (skipped)
            fprintf(out, "skipped: %ld steps with a non-finite loss or gradient\n", skipped);
        if (d->world > 1 && total_time > 0)
            fprintf(out,
                    "communication: %d bucket%s of <= %g MB, overlap %s; waiting %.2fs = %.1f%% "
                    "of training time (slowest rank)\n",
                    cnn_dist_reducer_buckets(sp.red), cnn_dist_reducer_buckets(sp.red) > 1 ? "s" : "",
                    run->step.bucket_mb, run->step.overlap ? "on" : "off", mx[0],
                    100.0 * mx[0] / total_time);
        fprintf(out, "memory: peak RSS per rank %.0f-%.0f MiB\n", -mx[2], mx[1]);
        fprintf(out, "test: loss=%.4f accuracy=%.4f correct=%ld incorrect=%lld\n", tloss, tacc,
                correct, (long long)test->n - correct);
        if (hist && tc->plot)
            plot_history(tc->history, out);
        fflush(out);
    }
done:
    if (hist)
        fclose(hist);
    batch_free(&eb);
    free(perm);
    cnn_stepper_free(&sp);
    cnn_optim_free(opt);
    if (val && val != test)
        cnn_dataset_free(val);
    cnn_dataset_free(train);
    cnn_dataset_free(test);
    return st;
}
