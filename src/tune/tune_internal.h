/* tune_internal.h - what the files of src/tune share beyond cnn/tune.h. */
#ifndef CNN_TUNE_INTERNAL_H
#define CNN_TUNE_INTERNAL_H

#include "cnn/tune.h"

/* Writes text to path atomically (temporary file, fsync, rename). */
cnn_status cnn_tune_write_atomic(const char *path, const char *text, cnn_error *err);

/* a better than b in the search's direction */
int cnn_tune_better(double a, double b, int maximize);

/* The trial's config as parsed: the search config without [tune] and
 * [search], the trial's values and then extra applied. */
cnn_status cnn_tune_trial_load(const cnn_config *search, const cnn_tune_space *sp,
                               const cnn_tune_trial *t, const char *const *extra, int nextra,
                               cnn_config **out, cnn_error *err);

#endif
