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

/* Everything a run needs, built from one config. */
typedef struct cnn_run {
    cnn_config *cfg;
    cnn_train_config tc;
    cnn_data_config dc;
    cnn_optim_hparams hp;
    cnn_model *model;
    cnn_step_config step; /* [dist] */
} cnn_run;

/* Reads every section of cfg (taking ownership of it), builds the model and
 * rejects unused keys. */
cnn_status cnn_run_setup(cnn_run *run, cnn_config *cfg, cnn_error *err);
void cnn_run_free(cnn_run *run);

/* Loads data, trains, evaluates; prints on rank 0 to out. Collective. */
cnn_status cnn_run_train(cnn_run *run, const cnn_dist *d, FILE *out, cnn_error *err);

#endif /* CNN_TRAINER_H */
