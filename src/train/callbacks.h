/* callbacks.h - the end-of-epoch decisions of [early_stopping] and
 * [reduce_lr_on_plateau] (internal to the training module; the config is
 * in cnn/train.h, the state in cnn/checkpoint.h). */
#ifndef CNN_TRAIN_CALLBACKS_H
#define CNN_TRAIN_CALLBACKS_H

#include "cnn/checkpoint.h"
#include "cnn/train.h"

/* The figure monitor names in an epoch's record (NaN when absent). */
double cnn_monitor_value(cnn_monitor m, const cnn_epoch_record *r);

/* EarlyStopping after the epoch of r (r->epoch is 0-based): updates cb;
 * with best_weights (nparams + nbuffer_floats floats, or NULL), keeps the
 * best epoch's weights there and puts them back into m when it stops.
 * Returns 1 when training stops after this epoch. */
int cnn_early_stopping_epoch_end(const cnn_callbacks_config *c, cnn_callback_state *cb,
                                 float *best_weights, cnn_model *m, const cnn_epoch_record *r);

/* ReduceLROnPlateau after the epoch of r, whose last update used lr:
 * updates cb (its lr_scale scales the schedule's rate from now on).
 * Returns 1 and sets *new_lr when it lowers the rate. */
int cnn_plateau_epoch_end(const cnn_callbacks_config *c, cnn_callback_state *cb, double lr,
                          const cnn_epoch_record *r, double *new_lr);

#endif /* CNN_TRAIN_CALLBACKS_H */
