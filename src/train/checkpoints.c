/* checkpoints.c - the [checkpoint] section and the run's checkpoint
 * policy: when one is due, writing it from rank 0, resuming from one. */
#include <string.h>

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

cnn_status cnn_session_save(session *S, int best, cnn_error *err)
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
                                  S->run->config_text, (const char *const *)t->class_names,
                                  t->class_names ? t->nclasses : 0, err);
        if (!st && !best)
            st = cnn_checkpoint_prune(ck->dir, (int)ck->keep, err);
        if (!st)
            cnn_progress_saved(S, path);
        fflush(S->out);
    }
    S->last_save = cnn_dist_time();
    if (!best)
        S->saved_at = S->ts.global_step;
    return cnn_session_agree(S, st, err);
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
