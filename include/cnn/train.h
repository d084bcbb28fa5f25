/* cnn/train.h - training as a library: the run's sections, the
 * data-parallel training loop and evaluation.
 *
 * A program (cnn-train is one) trains a config in four calls:
 *
 *     cnn_config *cfg;
 *     st = cnn_config_load_overrides(&cfg, "x.ini", sets, nsets, &err);
 *     cnn_run run;
 *     st = cnn_run_setup(&run, cfg, &err);       // owns cfg from here
 *     st = cnn_run_train(&run, &dist, stdout, &err);  // collective
 *     cnn_run_free(&run);
 *
 * Every rank calls the same functions with the same config; a failure on
 * one rank is agreed on by all (the first failing rank keeps the message,
 * the others return the same status with an empty message), so no rank is
 * left waiting in a collective.
 *
 * The sections a run reads, each by the reader declared beside its struct:
 * [train] (cnn_train_config), [dist] (cnn_dist_config), [checkpoint]
 * (cnn_ckpt_config); [data], [optimizer], [augment] and the layers are read
 * by their own modules (cnn/data.h, cnn/optim.h, cnn/augment.h,
 * cnn/model.h).
 */
#ifndef CNN_TRAIN_H
#define CNN_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/augment.h"
#include "cnn/checkpoint.h"
#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/error.h"
#include "cnn/model.h"
#include "cnn/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The MPI module's handle (src/dist): rank, world and communicators. */
typedef struct cnn_dist cnn_dist;

typedef enum { CNN_PROGRESS_AUTO = 0, CNN_PROGRESS_BAR, CNN_PROGRESS_LINES, CNN_PROGRESS_NONE } cnn_progress;

/* What a non-finite loss or gradient does: end the run naming the step, or
 * skip that step's update on every rank and go on. */
typedef enum { CNN_NAN_STOP = 0, CNN_NAN_SKIP_STEP } cnn_nan_policy;

/* The [train] section, resolved. */
typedef struct cnn_train_config {
    long epochs;
    long batch_size;  /* global batch: split across ranks */
    long max_steps;   /* 0 = no limit */
    long eval_batch_size;
    long validation_freq; /* validate after epochs 1-based multiples of it (Keras fit's) */
    long threads;     /* threads per rank; 0 = auto: the cores the rank may use */
    long log_every;   /* steps between plain progress lines */
    uint64_t seed;
    cnn_loss loss;
    double label_smoothing; /* Keras's, for the cross-entropies; 0 = none */
    const char *history; /* CSV path or NULL; owned by the config */
    int progress;     /* cnn_progress */
    int nan_policy;   /* cnn_nan_policy */
    int plot;         /* draw accuracy/loss PNGs beside the history at the end */
} cnn_train_config;

cnn_status cnn_train_config_read(cnn_train_config *tc, const cnn_config *cfg, cnn_error *err);

/* The [dist] section: how gradients are reduced across ranks (see
 * src/train/step.h for what exact and float mean). */
typedef struct cnn_dist_config {
    int exact;        /* reduction = exact (default) | float */
    int chunk_size;   /* samples per reduction chunk (exact) */
    double bucket_mb; /* gradient bucket size */
    int overlap;      /* reduce buckets during backward */
    int exchange;     /* exchange = auto (default) | direct | collective | hierarchical
                       * (cnn_dist_exchange in src/dist/dist.h) */
    double timeout_s; /* watchdog on the exchange's waits; 0 (default): off */
} cnn_dist_config;

cnn_status cnn_dist_config_read(cnn_dist_config *c, const cnn_config *cfg, cnn_error *err);

/* The [checkpoint] section. */
typedef struct cnn_ckpt_config {
    const char *dir;      /* "" = no checkpoints; owned by the config */
    long every_epochs;    /* 0 = not by epochs */
    long every_steps;     /* 0 = not by steps */
    double every_minutes; /* 0 = not by time */
    long keep;            /* newest ckpt-*.h5 kept */
    int best;             /* also keep best.h5 by validation accuracy */
    const char *resume;   /* "", "auto" or a file */
} cnn_ckpt_config;

cnn_status cnn_ckpt_config_read(cnn_ckpt_config *c, const cnn_config *cfg, cnn_error *err);

/* The learning-rate schedule, from [optimizer] (beside the optimizer's own
 * keys, which cnn/optim.h reads):
 *
 *   schedule = constant | step | piecewise | exponential | cosine
 *     step, piecewise  Keras's PiecewiseConstantDecay: `values` (n + 1 rates)
 *                      between `boundaries` (n steps) or `boundary_epochs`;
 *                      the rate is values[i] while boundaries[i-1] < step <=
 *                      boundaries[i]; `lr` is not used
 *     exponential      Keras's ExponentialDecay: lr * decay_rate^(step /
 *                      decay_steps) (floored with staircase = true)
 *     cosine           Keras's CosineDecay: lr * ((1 - alpha) * c + alpha),
 *                      c = (1 + cos(pi * min(step, decay_steps) / decay_steps)) / 2;
 *                      decay_steps defaults to the whole run
 *   decay_steps | decay_epochs, decay_rate, staircase, alpha
 *   warmup_steps | warmup_epochs   linear warm-up: the rate of step s < W is
 *                      the schedule's times (s + 1) / W
 *   reference_batch_size = N       the linear scaling rule (Goyal et al.,
 *                      "Accurate, Large Minibatch SGD"): every rate times
 *                      batch_size / N
 *
 * `step` counts optimizer updates from 0 over the whole run, so a resumed
 * run continues the schedule where it stopped. */
typedef enum {
    CNN_SCHED_CONSTANT = 0,
    CNN_SCHED_PIECEWISE,
    CNN_SCHED_EXPONENTIAL,
    CNN_SCHED_COSINE
} cnn_schedule_kind;

enum { CNN_SCHED_MAX_BOUNDARIES = 32 };

typedef struct cnn_lr_schedule {
    cnn_schedule_kind kind;
    double lr;         /* [optimizer] lr */
    double scale;      /* batch_size / reference_batch_size, or 1 */
    int nboundaries;
    double boundaries[CNN_SCHED_MAX_BOUNDARIES]; /* steps, or epochs when by_epoch */
    double values[CNN_SCHED_MAX_BOUNDARIES + 1];
    double decay;      /* decay_steps, or decay_epochs; 0: the whole run (cosine) */
    double decay_rate;
    int staircase;
    double alpha;
    double warmup;     /* warmup_steps, or warmup_epochs */
    int boundaries_by_epoch, decay_by_epoch, warmup_by_epoch;
    /* in steps, set by cnn_lr_schedule_resolve() */
    int64_t boundary_steps[CNN_SCHED_MAX_BOUNDARIES];
    int64_t decay_steps, warmup_steps;
} cnn_lr_schedule;

/* Reads the schedule keys of [optimizer]; lr is the optimizer's rate and
 * batch_size the global batch (for the scaling rule). */
cnn_status cnn_lr_schedule_read(cnn_lr_schedule *s, const cnn_config *cfg, double lr,
                                long batch_size, cnn_error *err);

/* Turns epochs into steps once the data set's size is known. */
void cnn_lr_schedule_resolve(cnn_lr_schedule *s, long steps_per_epoch, long epochs);

/* The learning rate of update number step (from 0). */
double cnn_lr_at(const cnn_lr_schedule *s, int64_t step);

/* Keras's callbacks as sections, decided at the end of every epoch from
 * the epoch's figures, with their state in checkpoints (cnn/checkpoint.h:
 * cnn_callback_state) so a resumed run decides as the uninterrupted one.
 *
 *   [early_stopping]        monitor = val_loss, min_delta = 0, patience = 0,
 *                           mode = auto | min | max, baseline, start_from_epoch,
 *                           restore_best_weights = false
 *   [reduce_lr_on_plateau]  monitor = val_loss, factor = 0.1, patience = 10,
 *                           mode, min_delta = 1e-4, cooldown = 0, min_lr = 0
 *
 * monitor is loss, accuracy, val_loss or val_accuracy; mode auto is max for
 * the accuracies, min for the losses. */
typedef enum { CNN_MON_LOSS = 0, CNN_MON_ACCURACY, CNN_MON_VAL_LOSS, CNN_MON_VAL_ACCURACY } cnn_monitor;

typedef struct cnn_callbacks_config {
    struct {
        int enabled;
        cnn_monitor monitor;
        int maximize;
        double min_delta;
        long patience;
        double baseline;     /* NaN: none */
        long start_from_epoch;
        int restore_best_weights;
    } es;
    struct {
        int enabled;
        cnn_monitor monitor;
        int maximize;
        double factor;
        long patience;
        double min_delta;
        long cooldown;
        double min_lr;
    } rp;
} cnn_callbacks_config;

/* Reads [early_stopping] and [reduce_lr_on_plateau] (absent: off); a
 * val_* monitor needs a validation set (has_validation). */
cnn_status cnn_callbacks_config_read(cnn_callbacks_config *c, const cnn_config *cfg,
                                     int has_validation, cnn_error *err);

/* Exit code of a run stopped by SIGTERM/SIGUSR1 after writing a
 * checkpoint: resubmit the job to continue (EX_TEMPFAIL). */
enum { CNN_EXIT_STOPPED = 75 };

/* The failure tests' seam: makes global step `step` (from 1) fail on rank
 * `rank` in the way `kind` says. Zero-initialised, it injects nothing.
 * Only a test harness sets it (cnn-train reads it from CNN_TEST_FAULT). */
typedef enum { CNN_FAULT_NONE = 0, CNN_FAULT_IO, CNN_FAULT_NAN, CNN_FAULT_EXIT } cnn_fault;

typedef struct cnn_fault_plan {
    int rank;
    long step;
    cnn_fault kind; /* io: a read error; nan: a NaN input; exit: the process dies */
} cnn_fault_plan;

/* Everything a run needs, built from one config. */
typedef struct cnn_run {
    cnn_config *cfg;
    char *config_text;    /* the effective config (overrides applied), for checkpoints */
    cnn_train_config tc;  /* [train] */
    cnn_data_config dc;   /* [data] */
    cnn_optim_hparams hp; /* [optimizer] */
    cnn_lr_schedule sched; /* [optimizer] schedule keys */
    cnn_model *model;     /* the layers */
    cnn_dist_config dist; /* [dist] */
    cnn_augment_config aug; /* [augment] */
    cnn_ckpt_config ck;   /* [checkpoint] */
    cnn_callbacks_config cbc; /* [early_stopping], [reduce_lr_on_plateau] */
    cnn_fault_plan fault; /* test seam; none unless a harness sets it */
    /* --profile: after 2 warm-up steps, this many steps are profiled
     * (cnn/profile.h): rank 0 prints the per-layer table, every rank writes
     * profile_dir/trace.rank<R>.json of the first 5 of them and rank 0
     * joins them into profile_dir/trace.json. 0: off. */
    long profile_steps;
    const char *profile_dir;
    int stopped;          /* set by cnn_run_train: stopped early by a signal */
    /* set by cnn_run_train, on every rank: every completed epoch's record,
     * those of the checkpoint it resumed from included (for a caller that
     * decides on the figures, as cnn-tune does); freed by cnn_run_free */
    cnn_history history;
} cnn_run;

/* Reads every section of cfg (taking ownership of it, also on failure),
 * records its effective text, builds the model and rejects unused keys. */
cnn_status cnn_run_setup(cnn_run *run, cnn_config *cfg, cnn_error *err);
void cnn_run_free(cnn_run *run);

/* Loads data, trains (resuming from a checkpoint if [checkpoint] resume
 * says so), writes checkpoints, evaluates; prints on rank 0 to out. On
 * SIGTERM or SIGUSR1 all ranks stop after the same step, a checkpoint is
 * written and run->stopped is set. Collective. */
cnn_status cnn_run_train(cnn_run *run, const cnn_dist *d, FILE *out, cnn_error *err);

/* `cnn-train --evaluate`: loads the weights of checkpoint path into the
 * run's model and evaluates the test set: loss, accuracy, per-class
 * precision/recall, the confusion matrix; rank 0 writes DIR/confusion.csv
 * and DIR/misclassified.csv. Collective. */
cnn_status cnn_run_evaluate(cnn_run *run, const cnn_dist *d, const char *path, const char *dir,
                            FILE *out, cnn_error *err);

/* Loads a config from an INI file, or from the config text stored in a
 * checkpoint when path is an HDF5 file (messages then name "PATH:/config").
 * On failure *out is NULL. */
cnn_status cnn_config_load_any(cnn_config **out, const char *path, cnn_error *err);

/* Loads the config at path (INI or checkpoint) and applies each
 * "section.key=value" of sets in order (see cnn_config_override). On
 * failure *out is NULL. */
cnn_status cnn_config_load_overrides(cnn_config **out, const char *path, const char *const *sets,
                                     int nsets, cnn_error *err);

/* mkdir -p: creates path and its missing parents. 0 when path is (now) a
 * directory, else -1 with errno set. */
int cnn_make_dirs(const char *path);

/* Threads of a rank ([train] threads): BLAS's threads, until a training
 * step with the exact reduction takes them (src/train/step.h: it spreads
 * its chunks over that many threads, BLAS on one each); n <= 0 changes
 * nothing. cnn_get_threads: the last n set, else BLAS's. */
void cnn_set_threads(int n);
int cnn_get_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* CNN_TRAIN_H */
