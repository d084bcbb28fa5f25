/* session.h - one training or evaluation run in progress (internal to the
 * training module): the loaded data, the optimizer, the stepper and the
 * position in the run, shared by the loop (trainer.c), the checkpoint
 * policy (checkpoints.c), the console and history output (progress.c) and
 * the set-up (session.c). */
#ifndef CNN_TRAIN_SESSION_H
#define CNN_TRAIN_SESSION_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/checkpoint.h"
#include "cnn/train.h"
#include "dist.h"
#include "step.h"

/* Buffers for one rank's share of an evaluation batch. */
typedef struct batch_buf {
    float *x;       /* (cap, input) */
    int32_t *y;     /* (cap) */
    int64_t *idx;   /* (cap) dataset rows */
    uint8_t *raw;   /* (cap, input) pixels as stored */
    float *probs;   /* (cap, nclasses) */
    double *sums;   /* (STAT_N + nblocks) an evaluation's sums, then each block's loss */
    int64_t nblocks; /* blocks of cap samples in the largest set evaluated */
    int cap;
} batch_buf;

typedef struct session {
    cnn_run *run;
    const cnn_dist *d;
    FILE *out;
    int root;             /* rank 0: prints and writes files */
    int progress_mode;    /* cnn_progress, AUTO resolved */
    cnn_dataset *train, *val, *test;
    cnn_optim *opt;
    FILE *hist;           /* history CSV (rank 0), or NULL */
    int64_t *perm;        /* (train->n) the epoch's order */
    cnn_stepper sp;
    batch_buf eb;         /* evaluation batches */
    int eval_threads;     /* evaluation runs on sp's threads (exact training) */
    cnn_history h;        /* per-epoch metrics so far */
    cnn_train_state ts;   /* position: what a checkpoint records */
    double last_save;     /* time of the last checkpoint (every_minutes) */
    int64_t saved_at;     /* global step of the last regular checkpoint, -1: none */
    long steps_per_epoch;
    long skipped;         /* steps whose update nan_policy = skip_step skipped */
    double lr;            /* the learning rate of the last update (the schedule's) */
    float *best;          /* [early_stopping] restore_best_weights: (nparams + nbuffer_floats) */
    double total_imgs, total_time; /* training throughput of the whole run */
    long run_steps;                /* steps trained by this run (not by a run resumed from) */
    double steady_imgs, steady_time; /* the same after the run's first CNN_WARM_STEPS */
    struct ckpt_writer *writer;    /* rank 0: the checkpoint being written (checkpoints.c) */
    struct cnn_profile *prof;      /* --profile: the steps being profiled, or NULL */
    long prof_seen;                /* steps before the profile started */
    int prof_done;                 /* the profile has been reported (or failed) */
} session;

/* --- profiling.c: --profile ------------------------------------------ */

/* Before a step: starts the profile at the run's third step. Returns
 * cnn_profile_now() when the step is profiled, else 0. */
double cnn_profiling_step_start(session *S, cnn_error *err);
/* After a profiled step of this rank's B samples that started at t0 (the
 * update ran from t_upd); after the last profiled step the table, the
 * traces and the merge (collective). */
cnn_status cnn_profiling_step_end(session *S, double t0, double t_upd, long B, cnn_error *err);

/* --- session.c: set-up, agreement, evaluation ------------------------- */

/* This rank fails because another one did, which reports it: no message. */
void cnn_session_quiet(cnn_error *err, cnn_status st);

/* Every rank has the status of the rank that failed first, and only that
 * rank keeps a message. Collective. */
cnn_status cnn_session_agree(const session *S, cnn_status st, cnn_error *err);

/* Sets the rank's threads (cnn_set_threads) from [train] threads or, when
 * it is 0, the cores the rank may use: its affinity mask when narrower
 * than the node, else OMP_NUM_THREADS, OPENBLAS_NUM_THREADS or
 * SLURM_CPUS_PER_TASK, else the node's cores shared among its ranks; rank
 * 0 warns of oversubscription. cnn_session_open prints the choice. */
void cnn_session_threads(const cnn_train_config *tc, const cnn_dist *d, FILE *out);

/* Every rank loads data and allocates; then all agree. For training
 * everything; otherwise (--evaluate) only what evaluating the test set
 * needs: no image check of the training files, no optimizer. Collective. */
cnn_status cnn_session_open(session *S, int training, cnn_error *err);
void cnn_session_close(session *S);

/* Loss and accuracy over ds, split across ranks, each sample evaluated by
 * exactly one rank. pred, when not NULL (2 x ds->n, zeroed), gets the
 * class of each sample and then its probability, on every rank.
 * Collective. */
cnn_status cnn_session_evaluate(session *S, const cnn_dataset *ds, double *loss, double *acc,
                                long *correct, float *pred, cnn_error *err);

/* Peak resident memory of this process, in MiB. */
double cnn_session_peak_rss_mib(void);

/* --- checkpoints.c: when to write, writing, resuming ------------------- */

/* A point of the run where a checkpoint may be written. */
typedef enum { CKPT_AFTER_STEP, CKPT_AFTER_EPOCH, CKPT_AFTER_RUN } ckpt_moment;

/* What checkpoint_due() returns: bits. */
enum { CKPT_NONE = 0, CKPT_REGULAR = 1, CKPT_BEST = 2 };

/* The steps a run takes to warm up (oneDNN primitives made, workspaces
 * first touched, the first batch assembled on the training thread), left
 * out of the "steady:" figure as cnn-bench's default --warmup leaves them
 * out of its own. */
enum { CNN_WARM_STEPS = 5 };

/* Decides every kind of checkpoint at `when` from [checkpoint] and the
 * session's position: after a step inside an epoch (every_steps, the
 * every_minutes clock, a stop signal), after an epoch (the same plus
 * every_epochs, the last epoch, best.h5 when `better`), at the end of the
 * run (the final state, unless already saved). Pure: no I/O. */
int cnn_checkpoint_due(const session *S, ckpt_moment when, int stop, int minutes_due, int better);

/* A checkpoint (ckpt-E-S.h5, or best.h5), old ones pruned: the optimizer
 * state is gathered, rank 0 copies the state into memory of its own and a
 * thread of rank 0 writes the file while the ranks train on (HDF5 built
 * thread-safe; otherwise it is written here). All ranks learn whether the
 * copy worked now, and whether the file was written at the next save or
 * cnn_session_save_wait(); the "checkpoint:" line is printed then, once
 * the file is complete. Collective. */
cnn_status cnn_session_save(session *S, int best, cnn_error *err);

/* Waits for the checkpoint being written, if any; all ranks learn whether
 * it was. Collective. */
cnn_status cnn_session_save_wait(session *S, cnn_error *err);

/* The end of the run's checkpoints: cnn_session_save_wait, then rank 0
 * prints how long it wrote and how long training stopped for the saves
 * and waited for the last file (the slowest rank's). Collective. */
cnn_status cnn_session_save_finish(session *S, cnn_error *err);

/* Waits for a checkpoint being written without reporting it (a run that
 * ends on an error) and frees the writer. Rank-local, safe when none. */
void cnn_session_writer_free(session *S);

/* Finds the checkpoint [checkpoint] resume names (a file, or "auto": the
 * newest valid one in dir) and loads it on every rank, checking that it
 * continues this run. *from gets its path, "" when starting afresh.
 * Collective. */
cnn_status cnn_session_resume(session *S, char *from, size_t n, cnn_error *err);

/* --- progress.c: what rank 0 prints and writes -------------------------- */

/* CNN_PROGRESS_AUTO resolved: a bar on a terminal, plain lines otherwise. */
int cnn_progress_mode(int configured, FILE *out);

/* The start-up lines: ranks, batch, data, parameters, resume, classes. */
void cnn_progress_banner(const session *S, const char *from);

void cnn_progress_epoch_start(const session *S, long epoch);

/* The progress bar or line after step (0-based) of an epoch that started
 * at time t0 and has trained imgs images: a bar redrawn at most 5 times a
 * second, or a line every log_every steps. */
void cnn_progress_step(const session *S, long step, double t0, double imgs, double *last_draw);

/* The Keras-style line at the end of an epoch and its CSV row. */
void cnn_progress_epoch_end(const session *S, const cnn_epoch_record *r, long steps);

/* Starts the history CSV with the rows of the epochs already done. */
cnn_status cnn_progress_open_history(session *S, const char *path, cnn_error *err);

/* The closing lines: throughput, skipped steps, communication, memory,
 * test result; draws the history plots. */
void cnn_progress_final(session *S, double tloss, double tacc, long correct, const double *mx);

/* "checkpoint: PATH" (clearing a progress bar first). */
void cnn_progress_saved(const session *S, const char *path);

#endif /* CNN_TRAIN_SESSION_H */
