/* trainer.c - the data-parallel training loop.
 *
 * Step s of epoch e takes the global batch perm[s*B .. s*B+B) of a
 * permutation that depends only on (seed, e). Each rank processes its part
 * of it (step.h: whole chunks, or a slice with the float reduction), its
 * loss gradient scaled by 1/Bg, so the summed gradient is the mean over the
 * global batch; each rank updates its shard of the parameters and the
 * shards are gathered. Dropout and augmentation draw from (seed, epoch,
 * global sample index). With the exact reduction the result does not
 * depend on the number of ranks at all.
 *
 * The loop reads top-down: cnn_run_train() opens the session, resumes,
 * runs train_epoch() per epoch (train_step() per step, then end_epoch()),
 * and finish() writes the last checkpoint and the test result. Every
 * checkpoint is decided by cnn_checkpoint_due() (checkpoints.c).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "callbacks.h"
#include "cnn/profile.h"
#include "cnn/rng.h"
#include "report.h"
#include "session.h"

cnn_status cnn_run_setup(cnn_run *run, cnn_config *cfg, cnn_error *err)
{
    memset(run, 0, sizeof *run);
    run->cfg = cfg;
    cnn_status st;
    if ((st = cnn_config_text(cfg, &run->config_text, err)) ||
        (st = cnn_train_config_read(&run->tc, cfg, err)) ||
        (st = cnn_data_config_read(&run->dc, cfg, err)) ||
        (st = cnn_optim_hparams_from_config(&run->hp, cfg, err)) ||
        (st = cnn_lr_schedule_read(&run->sched, cfg, run->hp.lr, run->tc.batch_size, err)) ||
        (st = cnn_model_create(&run->model, cfg, run->tc.loss, err)) ||
        (st = cnn_dist_config_read(&run->dist, cfg, err)) ||
        (st = cnn_augment_config_read(&run->aug, cfg, err)) ||
        (st = cnn_ckpt_config_read(&run->ck, cfg, err)) ||
        (st = cnn_callbacks_config_read(&run->cbc, cfg, run->dc.validation != CNN_VAL_NONE,
                                        err)) ||
        (st = cnn_config_check_unused(cfg, err)))
        return st;
    run->model->label_smoothing = (float)run->tc.label_smoothing;
    return CNN_OK;
}

void cnn_run_free(cnn_run *run)
{
    cnn_model_free(run->model);
    cnn_history_free(&run->history);
    cnn_config_free(run->cfg);
    free(run->config_text);
    memset(run, 0, sizeof *run);
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

/* How an epoch ended. */
typedef enum { EPOCH_DONE, EPOCH_MAX_STEPS, EPOCH_STOPPED, EPOCH_EARLY_STOP } epoch_end;

/* One step of epoch `epoch` on the global batch starting at sample g0, and
 * its agreement: a rank's failure ends the run on every rank (the failing
 * rank names the step), a non-finite gradient stops or skips the update
 * (nan_policy) on every rank alike. *stop says a signal reached some rank,
 * *minutes_due that rank 0's clock wants a checkpoint. Collective. */
static cnn_status train_step(session *S, long epoch, long step, int Bg, int *stop,
                             int *minutes_due, cnn_error *err)
{
    const cnn_run *run = S->run;
    const cnn_train_config *tc = &run->tc;
    const cnn_ckpt_config *ck = &run->ck;
    const cnn_dist *d = S->d;
    cnn_train_state *ts = &S->ts;
    const long long gstep = (long long)ts->global_step + 1;
    double stats[STAT_N];
    const cnn_fault_plan *f = &run->fault;
    S->sp.fault = f->kind != CNN_FAULT_NONE && f->rank == d->rank && f->step == gstep
                      ? f->kind
                      : CNN_FAULT_NONE;
    S->sp.stop = stop_signal != 0;
    S->sp.save = S->root && ck->dir[0] && ck->every_minutes > 0 &&
                 cnn_dist_time() - S->last_save >= 60.0 * ck->every_minutes;
    const double prof_t0 = cnn_profiling_step_start(S, err);
    cnn_status st = cnn_stepper_run(&S->sp, S->train, S->perm + step * tc->batch_size, Bg,
                                    run->dc.rescale, tc->seed, (uint64_t)epoch,
                                    tc->nan_policy == CNN_NAN_SKIP_STEP, stats, err);
    if (stats[STAT_FAILED] > 0) {
        int s = st, who = cnn_dist_agree(d, &s);
        st = (cnn_status)s;
        if (who == d->rank)
            cnn_error_prefix(err, "epoch %ld step %ld (global step %lld)", epoch + 1, step + 1,
                             gstep);
        else
            cnn_session_quiet(err, st);
        return st;
    }
    /* The flag comes from reduced numbers, the same on every rank, so
     * every rank takes the same decision without a message. */
    if (stats[STAT_NONFINITE] > 0) {
        if (tc->nan_policy != CNN_NAN_SKIP_STEP) {
            /* each rank's flag covers its own chunks, before the exchange:
             * the lowest rank that had one reports it, naming itself */
            int s = S->sp.bad ? CNN_ERR_NUMERIC : CNN_OK, who = cnn_dist_agree(d, &s);
            char whose[48] = "";
            if (d->world > 1 && who >= 0)
                snprintf(whose, sizeof whose, " of rank %d's samples", who);
            st = cnn_error_set(err, CNN_ERR_NUMERIC,
                               "epoch %ld step %ld (global step %lld): the gradient%s is NaN, "
                               "infinite or too large to reduce exactly; see [train] nan_policy",
                               epoch + 1, step + 1, gstep, whose);
            if (who >= 0 ? who != d->rank : !S->root)
                cnn_session_quiet(err, st);
            return st;
        }
        S->skipped++;
        if (S->root)
            fprintf(S->out, "warning: epoch %ld step %ld (global step %lld): non-finite loss or "
                            "gradient, update skipped (nan_policy = skip_step)\n",
                    epoch + 1, step + 1, gstep);
    } else {
        S->lr = cnn_lr_at(&run->sched, S->opt->step) * ts->cb.lr_scale;
        S->opt->hp.lr = S->lr;
        const double t_upd = prof_t0 ? cnn_profile_now() : 0.0;
        cnn_stepper_update(&S->sp, S->opt);
        if (prof_t0) {
            int lo, hi;
            cnn_stepper_share(&S->sp, Bg, &lo, &hi);
            if ((st = cnn_profiling_step_end(S, prof_t0, t_upd, hi - lo, err)))
                return st;
        }
        ts->epoch_loss_sum += stats[STAT_LOSS];
        ts->epoch_correct += stats[STAT_CORRECT];
        ts->epoch_count += stats[STAT_COUNT];
    }
    ts->global_step++;
    ts->step = step + 1;
    ts->samples_seen += Bg;
    *stop = stats[STAT_STOP] > 0;
    *minutes_due = stats[STAT_SAVE] > 0;
    return CNN_OK;
}

/* The callbacks after the epoch of r: [reduce_lr_on_plateau] may lower
 * the rate, [early_stopping] may end training (*early). */
static void epoch_callbacks(session *S, const cnn_epoch_record *r, int *early)
{
    const cnn_run *run = S->run;
    cnn_train_state *ts = &S->ts;
    double lr;
    if (cnn_plateau_epoch_end(&run->cbc, &ts->cb, S->lr, r, &lr) && S->root)
        fprintf(S->out, "Epoch %lld: ReduceLROnPlateau reducing learning rate to %g.\n",
                (long long)r->epoch + 1, lr);
    *early = cnn_early_stopping_epoch_end(&run->cbc, &ts->cb, S->best, run->model, r);
    if (*early && S->root) {
        fprintf(S->out, "Epoch %lld: early stopping", (long long)r->epoch + 1);
        if (S->best && ts->cb.has_best_weights)
            fprintf(S->out, "; restoring the weights of epoch %lld",
                    (long long)ts->cb.es_best_epoch);
        fprintf(S->out, "\n");
    }
}

/* The end of a complete epoch: validation (if due), the epoch's record and line,
 * the position reset to the epoch boundary, the callbacks, checkpoints.
 * *stop says a signal reached some rank, *early that [early_stopping]
 * ends training. Collective. */
static cnn_status end_epoch(session *S, long epoch, double t0, double train_time, double imgs,
                            int *stop, int *early, cnn_error *err)
{
    const cnn_run *run = S->run;
    cnn_train_state *ts = &S->ts;
    cnn_status st;
    cnn_epoch_record r = {.epoch = epoch, .val_loss = NAN, .val_accuracy = NAN, .lr = S->lr};
    /* as Keras's validation_freq: after epochs N, 2N, ...; the others have
     * no val_ figures (callbacks and the best checkpoint skip them) */
    if (S->val && (epoch + 1) % run->tc.validation_freq == 0 &&
        (st = cnn_session_evaluate(S, S->val, &r.val_loss, &r.val_accuracy, NULL, NULL, err)))
        return st;
    r.seconds = cnn_dist_time() - t0;
    r.loss = ts->epoch_loss_sum / ts->epoch_count;
    r.accuracy = ts->epoch_correct / ts->epoch_count;
    r.images_per_sec = imgs / train_time;
    if ((st = cnn_history_append(&S->h, &r, err)))
        return st;
    cnn_progress_epoch_end(S, &r, S->steps_per_epoch);
    *ts = (cnn_train_state){.epoch = epoch + 1, .global_step = ts->global_step,
                            .samples_seen = ts->samples_seen, .seed = ts->seed,
                            .best_val_accuracy = ts->best_val_accuracy, .cb = ts->cb,
                            .best_weights = ts->best_weights};
    epoch_callbacks(S, &r, early);
    int better = S->val && r.val_accuracy > ts->best_val_accuracy;
    if (better)
        ts->best_val_accuracy = r.val_accuracy;
    if (run->ck.dir[0] && run->ck.best && better && (st = cnn_session_save(S, 1, err)))
        return st;
    /* a signal seen by any rank during evaluation stops all */
    double f = stop_signal != 0;
    if (S->d->world > 1)
        cnn_dist_allreduce_max_f64(S->d, &f, 1);
    *stop = f > 0;
    if ((cnn_checkpoint_due(S, CKPT_AFTER_EPOCH, *stop || *early, 0, 0) & CKPT_REGULAR) &&
        (st = cnn_session_save(S, 0, err)))
        return st;
    return CNN_OK;
}

/* The global batch size of step `step` (the last one may be short). */
static int step_batch(const session *S, long step)
{
    const int64_t B = S->run->tc.batch_size, left = S->train->n - step * B;
    return (int)(left < B ? left : B);
}

/* With [data] prefetch: starts assembling this rank's samples of step
 * `step` of the epoch, `ahead` steps after the one about to run, unless
 * max_steps ends before it; perm is the epoch's permutation. */
static void prefetch_step(session *S, const int64_t *perm, long epoch, long step, long ahead)
{
    const cnn_train_config *tc = &S->run->tc;
    if (!S->sp.prefetch || step >= S->steps_per_epoch ||
        (tc->max_steps && S->ts.global_step + ahead >= tc->max_steps))
        return;
    int lo, hi, Bg = step_batch(S, step);
    cnn_stepper_share(&S->sp, Bg, &lo, &hi);
    cnn_prefetch_request(S->sp.prefetch, perm + step * tc->batch_size + lo, hi - lo, tc->seed,
                         (uint64_t)epoch);
}

/* During the last step of epoch `epoch`: the first step of the next one,
 * assembled while this step, the evaluation and the checkpoint run (the
 * request when that epoch starts finds it held). Only over a store whose
 * reads may run beside evaluation's (cnn_store_ops.parallel; not HDF5). */
static void prefetch_next_epoch(session *S, long epoch)
{
    const cnn_train_config *tc = &S->run->tc;
    if (!S->sp.prefetch || epoch + 1 >= tc->epochs || !S->train->store->ops->parallel)
        return;
    int64_t *next = malloc((size_t)S->train->n * sizeof *next);
    if (!next) /* the step is then assembled when its epoch starts */
        return;
    cnn_rng_permutation(next, S->train->n, tc->seed, (uint64_t)epoch + 1);
    prefetch_step(S, next, epoch + 1, 0, 1);
    free(next);
}

/* Epoch `epoch` from the step the position is at: its steps, then (when
 * complete) end_epoch(). *how tells how it ended. Collective. */
static cnn_status train_epoch(session *S, long epoch, epoch_end *how, cnn_error *err)
{
    const cnn_train_config *tc = &S->run->tc;
    const cnn_dataset *train = S->train;
    cnn_train_state *ts = &S->ts;
    const long first = (long)ts->step; /* where the epoch starts (or resumes) */
    cnn_status st;
    cnn_rng_permutation(S->perm, train->n, tc->seed, (uint64_t)epoch);
    double t0 = cnn_dist_time(), last_draw = 0, imgs = 0;
    double t_warm = -1, imgs_warm = 0; /* when this epoch ended the run's warm-up */
    const int warm_before = S->run_steps >= CNN_WARM_STEPS;
    int stop = 0, minutes_due = 0;
    cnn_progress_epoch_start(S, epoch);
    *how = EPOCH_DONE;
    long step;
    for (step = (long)ts->step; step < S->steps_per_epoch; step++) {
        if (tc->max_steps && ts->global_step >= tc->max_steps)
            break;
        if (step == first) /* held already when the epoch before asked for it */
            prefetch_step(S, S->perm, epoch, step, 0);
        if (step + 1 < S->steps_per_epoch) /* assembled while this one trains */
            prefetch_step(S, S->perm, epoch, step + 1, 1);
        else
            prefetch_next_epoch(S, epoch);
        int Bg = step_batch(S, step);
        if ((st = train_step(S, epoch, step, Bg, &stop, &minutes_due, err)))
            return st;
        imgs += Bg;
        if (++S->run_steps == CNN_WARM_STEPS) {
            t_warm = cnn_dist_time();
            imgs_warm = imgs;
        }
        cnn_progress_step(S, step, t0, imgs, &last_draw);
        /* inside the epoch; its end decides the checkpoint there */
        if (step + 1 < S->steps_per_epoch &&
            cnn_checkpoint_due(S, CKPT_AFTER_STEP, stop, minutes_due, 0) &&
            (st = cnn_session_save(S, 0, err)))
            return st;
        if (stop && step + 1 < S->steps_per_epoch) {
            *how = EPOCH_STOPPED;
            return CNN_OK;
        }
    }
    const double t_end = cnn_dist_time(), train_time = t_end - t0;
    S->total_imgs += imgs;
    S->total_time += train_time;
    if (warm_before) {
        S->steady_imgs += imgs;
        S->steady_time += train_time;
    } else if (t_warm >= 0) {
        S->steady_imgs += imgs - imgs_warm;
        S->steady_time += t_end - t_warm;
    }
    if (step < S->steps_per_epoch) { /* max_steps in the middle of an epoch */
        *how = EPOCH_MAX_STEPS;
        return CNN_OK;
    }
    int early = 0;
    if ((st = end_epoch(S, epoch, t0, train_time, imgs, &stop, &early, err)))
        return st;
    if (early)
        *how = EPOCH_EARLY_STOP;
    else if (stop && epoch + 1 < tc->epochs)
        *how = EPOCH_STOPPED;
    return CNN_OK;
}

/* The end of the run: a checkpoint of the final state (unless there is
 * one), the test set, the closing figures of the slowest rank.
 * Collective. */
static cnn_status finish(session *S, cnn_error *err)
{
    cnn_status st;
    if ((cnn_checkpoint_due(S, CKPT_AFTER_RUN, 0, 0, 0) && (st = cnn_session_save(S, 0, err))) ||
        (st = cnn_session_save_finish(S, err)))
        return st;
    double tloss, tacc;
    long correct;
    if ((st = cnn_session_evaluate(S, S->test, &tloss, &tacc, &correct, NULL, err)))
        return st;
    /* the slowest rank's figures: max of wait, of peak memory, of -peak */
    double rss = cnn_session_peak_rss_mib(), mx[3] = {S->sp.wait, rss, -rss};
    cnn_dist_allreduce_max_f64(S->d, mx, 3);
    cnn_progress_final(S, tloss, tacc, correct, mx);
    return CNN_OK;
}

static void report_stopped(const session *S)
{
    const cnn_train_state *ts = &S->ts;
    if (!S->root)
        return;
    fprintf(S->out, "stopped by signal %d after global step %lld (epoch %lld, step %lld)%s\n",
            (int)stop_signal, (long long)ts->global_step, (long long)ts->epoch + (ts->step > 0),
            (long long)ts->step,
            S->run->ck.dir[0] ? "; resume with --resume auto"
                              : "; no [checkpoint] dir, nothing saved");
    fflush(S->out);
}

/* Initial weights, or those of the checkpoint to resume from, the same on
 * every rank; the history file; the start-up lines. Collective. */
static cnn_status start(session *S, char *from, size_t n, cnn_error *err)
{
    const cnn_train_config *tc = &S->run->tc;
    cnn_model *m = S->run->model;
    cnn_status st;
    cnn_model_init_params(m, tc->seed);
    S->ts.seed = tc->seed;
    S->ts.cb = cnn_callback_state_init();
    S->ts.best_weights = S->best;
    if ((st = cnn_session_resume(S, from, n, err)))
        return st;
    if (!cnn_dist_identical(S->d, m->params, m->nparams)) {
        st = cnn_error_set(err, CNN_ERR_DIST,
                           "parameters differ between ranks (different builds or configs?)");
        if (!S->root)
            cnn_session_quiet(err, st);
        return st;
    }
    st = CNN_OK;
    if (S->root && tc->history)
        st = cnn_progress_open_history(S, tc->history, err);
    if ((st = cnn_session_agree(S, st, err)))
        return st;
    if (S->root)
        cnn_progress_banner(S, from);
    return CNN_OK;
}

cnn_status cnn_run_train(cnn_run *run, const cnn_dist *d, FILE *out, cnn_error *err)
{
    const cnn_train_config *tc = &run->tc;
    session S = {.run = run, .d = d, .out = out, .root = d->rank == 0, .saved_at = -1};
    char from[4096];
    cnn_status st;
    cnn_session_threads(tc, d, out);
    S.progress_mode = cnn_progress_mode(tc->progress, out);
    stop_signal = 0;
    catch_stop_signals();
    if ((st = cnn_session_open(&S, 1, err)) || (st = start(&S, from, sizeof from, err)))
        goto done;
    if (run->dc.prefetch)
        st = cnn_prefetch_new(&S.sp.prefetch, S.train, &run->aug, run->dc.rescale,
                              run->dc.loader_threads, err);
    if ((st = cnn_session_agree(&S, st, err)))
        goto done;
    S.steps_per_epoch = (long)((S.train->n + tc->batch_size - 1) / tc->batch_size);
    cnn_lr_schedule_resolve(&run->sched, S.steps_per_epoch, tc->epochs);
    S.lr = cnn_lr_at(&run->sched, S.opt->step) * S.ts.cb.lr_scale;
    S.last_save = cnn_dist_time();
    epoch_end how = EPOCH_DONE;
    /* a run that [early_stopping] ended stays ended when resumed */
    if (S.ts.cb.es_stopped_epoch > 0)
        how = EPOCH_EARLY_STOP;
    for (long epoch = (long)S.ts.epoch; epoch < tc->epochs && how == EPOCH_DONE; epoch++) {
        if (tc->max_steps && S.ts.global_step >= tc->max_steps)
            break;
        if ((st = train_epoch(&S, epoch, &how, err)))
            goto done;
    }
    if (how == EPOCH_STOPPED) {
        run->stopped = 1;
        if (!(st = cnn_session_save_finish(&S, err))) /* the last file complete */
            report_stopped(&S);
    } else {
        st = finish(&S, err);
    }
done:
    cnn_prefetch_free(S.sp.prefetch); /* stops its threads before the data goes */
    S.sp.prefetch = NULL;
    cnn_history_free(&run->history); /* the caller's copy of the figures */
    run->history = S.h;
    S.h = (cnn_history){0};
    cnn_session_close(&S);
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
    cnn_session_threads(&run->tc, d, out);
    if ((st = cnn_session_open(&S, 0, err)))
        goto done;
    st = cnn_checkpoint_load(path, m, NULL, NULL, NULL, err);
    if (!st && S.root && cnn_make_dirs(dir) != 0)
        st = cnn_error_set(err, CNN_ERR_IO, "--out %s: cannot create: %s", dir, strerror(errno));
    const cnn_dataset *test = S.test;
    if (!st && !(pred = calloc(2 * (size_t)test->n, sizeof *pred)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for %lld predictions",
                           (long long)test->n);
    if ((st = cnn_session_agree(&S, st, err)))
        goto done;
    double loss, acc;
    long correct;
    if ((st = cnn_session_evaluate(&S, test, &loss, &acc, &correct, pred, err)))
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
    cnn_session_close(&S);
    return st;
}
