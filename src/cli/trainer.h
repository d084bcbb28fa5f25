/* trainer.h - the training loop of cnn-train: data-parallel over the ranks
 * of a cnn_dist, everything else from the engine. */
#ifndef CNN_TRAINER_H
#define CNN_TRAINER_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/model.h"
#include "cnn/optim.h"
#include "cnn/train.h"
#include "dist.h"
#include "step.h"

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

/* Exit code of a run stopped by SIGTERM/SIGUSR1 after writing a
 * checkpoint: resubmit the job to continue (EX_TEMPFAIL). */
enum { CNN_EXIT_STOPPED = 75 };

/* Everything a run needs, built from one config. */
typedef struct cnn_run {
    cnn_config *cfg;
    cnn_train_config tc;
    cnn_data_config dc;
    cnn_optim_hparams hp;
    cnn_model *model;
    cnn_step_config step; /* [dist] */
    cnn_ckpt_config ck;   /* [checkpoint] */
    int stopped;          /* set by cnn_run_train: stopped early by a signal */
} cnn_run;

/* Reads every section of cfg (taking ownership of it), builds the model and
 * rejects unused keys. */
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

#endif /* CNN_TRAINER_H */
