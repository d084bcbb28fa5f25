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
    long threads;     /* BLAS threads per rank; 0 = auto */
    long log_every;   /* steps between plain progress lines */
    uint64_t seed;
    cnn_loss loss;
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
    cnn_model *model;     /* the layers */
    cnn_dist_config dist; /* [dist] */
    cnn_augment_config aug; /* [augment] */
    cnn_ckpt_config ck;   /* [checkpoint] */
    cnn_fault_plan fault; /* test seam; none unless a harness sets it */
    int stopped;          /* set by cnn_run_train: stopped early by a signal */
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

/* Threads of the engine's BLAS; n <= 0 leaves the library's default. */
void cnn_set_threads(int n);
int cnn_get_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* CNN_TRAIN_H */
