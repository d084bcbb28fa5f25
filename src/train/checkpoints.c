/* checkpoints.c - the [checkpoint] section and the run's checkpoint
 * policy: when one is due, writing it from rank 0 (on a thread, while
 * the ranks train on), resuming from one. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "session.h"

cnn_status cnn_ckpt_config_read(cnn_ckpt_config *c, const cnn_config *cfg, cnn_error *err)
{
    const cnn_section *s = cnn_config_find(cfg, "checkpoint");
    cnn_status st;
    memset(c, 0, sizeof *c);
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

int cnn_checkpoint_due(const session *S, ckpt_moment when, int stop, int minutes_due, int better)
{
    const cnn_ckpt_config *ck = &S->run->ck;
    const int64_t gs = S->ts.global_step;
    const int step_due = ck->every_steps && gs % ck->every_steps == 0;
    if (!ck->dir[0])
        return CKPT_NONE;
    switch (when) {
    case CKPT_AFTER_STEP: /* inside an epoch: the epoch's end decides there */
        return step_due || minutes_due || stop ? CKPT_REGULAR : CKPT_NONE;
    case CKPT_AFTER_EPOCH: {
        const int64_t done = S->ts.epoch; /* epochs completed, this one included */
        int due = stop || done == S->run->tc.epochs ||
                  (ck->every_epochs && done % ck->every_epochs == 0) || step_due;
        return (due ? CKPT_REGULAR : 0) | (ck->best && better ? CKPT_BEST : 0);
    }
    case CKPT_AFTER_RUN: /* the final state, unless there is one */
        return S->saved_at != gs ? CKPT_REGULAR : CKPT_NONE;
    }
    return CKPT_NONE;
}

/* A checkpoint that a thread of rank 0 writes while the ranks train on:
 * copies of everything the file holds, taken at the save, so training may
 * change the originals. The copies are kept for the next save. */
struct ckpt_writer {
    pthread_t thread;
    int running; /* its thread started and not joined */
    int done;    /* written (or failed), not reported yet */
    char path[4096];
    int best; /* best.h5: not pruned */
    cnn_model m;        /* the run's model, params and buffers pointing at copies */
    cnn_optim o;        /* the optimizer, state pointing at copies */
    cnn_train_state ts; /* best_weights pointing at a copy */
    cnn_history h;      /* rows copied */
    float *pbuf;        /* the copies: params, buffers, each state, best weights */
    size_t cap;         /* floats in pbuf */
    const session *S;   /* config text, class names, [checkpoint]: fixed while training */
    cnn_status st;
    cnn_error err;
    /* the run's figures (cnn_session_save_finish) */
    int files;        /* rank 0: checkpoints written */
    double write_s;   /* rank 0: seconds writing them (the thread's) */
    double stopped_s; /* this rank: seconds in cnn_session_save, training stopped */
    double end_s;     /* this rank: seconds waiting for the last one after training */
};

static double now(void) /* no MPI_Wtime: the writer thread may not call MPI */
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Writes (and for a regular checkpoint prunes) what w holds. */
static void *write_main(void *arg)
{
    struct ckpt_writer *w = arg;
    const session *S = w->S;
    const cnn_dataset *t = S->train;
    const double t0 = now();
    w->st = cnn_checkpoint_write(w->path, &w->m, &w->o, &w->ts, &w->h, S->run->config_text,
                                 (const char *const *)t->class_names,
                                 t->class_names ? t->nclasses : 0, &w->err);
    if (!w->st && !w->best)
        w->st = cnn_checkpoint_prune(S->run->ck.dir, (int)S->run->ck.keep, &w->err);
    w->write_s += now() - t0;
    w->files += !w->st;
    return NULL;
}

/* Fills w with copies of the run's state (rank 0). */
static cnn_status snapshot(session *S, struct ckpt_writer *w, cnn_error *err)
{
    const cnn_model *m = S->run->model;
    const int ns = cnn_optim_nstate(S->opt);
    const int best = S->ts.cb.has_best_weights && S->ts.best_weights;
    const size_t nw = m->nparams + m->nbuffer_floats;
    const size_t need = nw + (size_t)ns * m->nparams + (best ? nw : 0);
    if (need > w->cap) {
        float *p = realloc(w->pbuf, (need ? need : 1) * sizeof *p);
        if (!p)
            return cnn_error_set(err, CNN_ERR_NOMEM,
                                 "out of memory for a copy of the checkpoint (%zu floats)", need);
        w->pbuf = p;
        w->cap = need;
    }
    float *at = w->pbuf;
    w->m = *m;
    w->m.params = memcpy(at, m->params, m->nparams * sizeof *at);
    w->m.buffers = memcpy(at += m->nparams, m->buffers, m->nbuffer_floats * sizeof *at);
    at += m->nbuffer_floats;
    w->o = *S->opt;
    for (int k = 0; k < ns; k++, at += m->nparams)
        w->o.state[k] = memcpy(at, S->opt->state[k], m->nparams * sizeof *at);
    w->ts = S->ts;
    if (best)
        w->ts.best_weights = memcpy(at, S->ts.best_weights, nw * sizeof *at);
    cnn_history_free(&w->h);
    for (int i = 0; i < S->h.n; i++) {
        cnn_status st = cnn_history_append(&w->h, &S->h.rows[i], err);
        if (st)
            return st;
    }
    return CNN_OK;
}

/* Rank 0: waits for the checkpoint being written, if any, and reports it
 * (the "checkpoint:" line once the file is complete). */
static cnn_status join(session *S, cnn_error *err)
{
    struct ckpt_writer *w = S->writer;
    if (w && w->running) {
        pthread_join(w->thread, NULL);
        w->running = 0;
        w->done = 1;
    }
    if (!w || !w->done)
        return CNN_OK;
    w->done = 0;
    if (w->st) {
        *err = w->err;
        return w->st;
    }
    cnn_progress_saved(S, w->path);
    fflush(S->out);
    return CNN_OK;
}

cnn_status cnn_session_save_wait(session *S, cnn_error *err)
{
    return cnn_session_agree(S, S->root ? join(S, err) : CNN_OK, err);
}

cnn_status cnn_session_save_finish(session *S, cnn_error *err)
{
    const double t0 = now();
    cnn_status st = cnn_session_save_wait(S, err);
    struct ckpt_writer *w = S->writer;
    if (!w) /* no checkpoints */
        return st;
    w->end_s += now() - t0;
    double mx[2] = {w->stopped_s, w->end_s}; /* the slowest rank's */
    cnn_dist_allreduce_max_f64(S->d, mx, 2);
    if (!st && S->root)
        fprintf(S->out,
                "checkpoints: %d written by rank 0 in %.2fs (on a thread: %s); training stopped "
                "%.2fs for them, then waited %.2fs for the last one (slowest rank)\n",
                w->files, w->write_s, cnn_checkpoint_write_threadsafe() ? "yes" : "no",
                mx[0], mx[1]);
    return st;
}

void cnn_session_writer_free(session *S)
{
    struct ckpt_writer *w = S->writer;
    if (!w)
        return;
    if (w->running)
        pthread_join(w->thread, NULL);
    cnn_history_free(&w->h);
    free(w->pbuf);
    free(w);
    S->writer = NULL;
}

cnn_status cnn_session_save(session *S, int best, cnn_error *err)
{
    const cnn_ckpt_config *ck = &S->run->ck;
    const double t0 = now();
    cnn_status st = cnn_session_save_wait(S, err); /* one file at a time, in order */
    if (st)
        return st;
    cnn_stepper_gather_optimizer(&S->sp, S->opt);
    if (!S->writer && !(S->writer = calloc(1, sizeof *S->writer)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the checkpoint writer");
    if (S->root && !st) {
        struct ckpt_writer *w = S->writer;
        if (best)
            snprintf(w->path, sizeof w->path, "%s/best.h5", ck->dir);
        else
            cnn_checkpoint_name(w->path, sizeof w->path, ck->dir, &S->ts);
        S->ts.world = S->d->world;
        w->best = best;
        w->S = S;
        st = snapshot(S, w, err);
        /* on a thread when HDF5 allows one (the training goes on using it
         * for HDF5 data), else here */
        if (!st && cnn_checkpoint_write_threadsafe() &&
            pthread_create(&w->thread, NULL, write_main, w) == 0)
            w->running = 1;
        else if (!st) {
            write_main(w);
            w->done = 1;
            st = join(S, err);
        }
    }
    S->last_save = cnn_dist_time();
    if (!best)
        S->saved_at = S->ts.global_step;
    st = cnn_session_agree(S, st, err);
    if (S->writer)
        S->writer->stopped_s += now() - t0;
    return st;
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
    if ((st = cnn_session_agree(S, st, err)))
        return st;
    cnn_dist_bcast(S->d, path, n, 0);
    return CNN_OK;
}

/* Loads the checkpoint at path on every rank and checks that it continues
 * this run: same seed; in the middle of an epoch, same batch size. */
static cnn_status load(session *S, const char *path, cnn_error *err)
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
    return cnn_session_agree(S, st, err);
}

cnn_status cnn_session_resume(session *S, char *from, size_t n, cnn_error *err)
{
    cnn_status st = resume_path(S, from, n, err);
    if (!st && from[0])
        st = load(S, from, err);
    return st;
}
