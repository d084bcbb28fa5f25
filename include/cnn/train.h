/* cnn/train.h - the [train] section and the engine's thread count.
 * Shared by cnn-train and cnn-bench so both read the same keys with the
 * same defaults. */
#ifndef CNN_TRAIN_H
#define CNN_TRAIN_H

#include <stdint.h>

#include "cnn/config.h"
#include "cnn/error.h"
#include "cnn/model.h"

#ifdef __cplusplus
extern "C" {
#endif

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

/* Loads a config from an INI file, or from the config text stored in a
 * checkpoint when path is an HDF5 file (messages then name "PATH:/config"). */
cnn_status cnn_config_load_any(cnn_config **out, const char *path, cnn_error *err);

/* Loads the config at path (INI or checkpoint) and applies each
 * "section.key=value" of sets in order (see cnn_config_override). */
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
