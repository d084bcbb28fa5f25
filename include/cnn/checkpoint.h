/* cnn/checkpoint.h - training checkpoints: save, validate, resume.
 *
 * A checkpoint is one HDF5 file with everything a run needs to continue
 * exactly where it stopped: the config text, the weights, the optimizer's
 * moments and step, the position in the data and the per-epoch history.
 *
 *     // saving (one rank), e.g. at the end of an epoch
 *     cnn_train_state s = {.epoch = 3, .global_step = 1875, .seed = 42, ...};
 *     char path[4096];
 *     cnn_checkpoint_name(path, sizeof path, "runs/x", &s); // runs/x/ckpt-e0003-s00001875.h5
 *     st = cnn_checkpoint_write(path, model, opt, &s, &hist, cfg->text, NULL, 0, &err);
 *     if (st == CNN_OK)
 *         st = cnn_checkpoint_prune("runs/x", 3, &err);      // keep the newest 3
 *
 *     // resuming: rebuild model and optimizer from the stored config, then load
 *     st = cnn_checkpoint_find_latest("runs/x", path, sizeof path, &found, &err);
 *     st = cnn_checkpoint_read_config(path, &text, &err);   // then parse, create model/optim
 *     st = cnn_checkpoint_load(path, model, opt, &s, &hist, &err);
 *
 * File layout (format_version 1; HDF5 1.10 file format, so h5dump, h5py and
 * any HDF5 >= 1.10 read it):
 *
 *   /                    attributes format_version (int32, 1), producer ("cnn-train 0.1.0")
 *   /config              scalar fixed-length string: the full INI text of the run
 *   /model/<layer>/<p>   float32 in the parameter's shape: conv kernel (Cout, Cin, kH, kW),
 *                        dense kernel (In, Out), bias (N); then the layer's non-trainable
 *                        buffers the same way (moving_mean, ...); only layers with
 *                        parameters or buffers
 *   /optimizer           attributes type ("sgd" | "adam" | "rmsprop"), lr, momentum,
 *                        beta_1, beta_2, rho, epsilon, weight_decay (float64),
 *                        nesterov (int32), step (int64: updates applied)
 *   /optimizer/<s>/<layer>/<p>  float32, for each state buffer s of the optimizer
 *                        (cnn_optim_state_name): m = sgd momentum, adam first moment,
 *                        rmsprop mean square (absent for sgd without momentum);
 *                        v = adam's second moment (adam only); parameters only
 *   /state               attributes epoch, step, global_step, samples_seen (int64),
 *                        seed (uint64), world (int32), best_val_accuracy,
 *                        epoch_loss_sum, epoch_correct, epoch_count (float64: the
 *                        current epoch's sums so far)
 *   /history/<column>    1-D, one entry per completed epoch (may be empty): epoch (int64);
 *                        loss, accuracy, val_loss, val_accuracy, lr, seconds,
 *                        images_per_sec (float64; val_* NaN without validation)
 *   /classes             1-D fixed-length strings, only when class names were given
 *
 * Every non-empty array is chunked with the Fletcher32 filter, the strings
 * are kept inside their (checksummed) object headers, and the 1.10 format
 * checksums all metadata: a damaged byte anywhere is an error on load,
 * never silent garbage.
 *
 * There is no random-generator state to save: all randomness (cnn/rng.h) is
 * counter-based, a pure function of (seed, epoch, global sample index), so
 * (seed, epoch, step) IS the RNG state. A run resumed from /state replays
 * the same shuffle and dropout masks as the run that never stopped.
 *
 * Writing is atomic: the file is built in memory (it is about the size of
 * the weights and the optimizer state), then written as DIR/.NAME.tmp.PID
 * in the same directory, fsync()ed, renamed over NAME and the directory
 * fsync()ed. On failure (a full disk included: CNN_ERR_IO, one line naming
 * NAME and the system's reason) the temporary file is removed and
 * whatever NAME held before is left untouched.
 *
 * Loading validates before it writes: every tensor's rank, shape and type
 * is checked against the model before it is read, and everything is read
 * into temporary buffers first, so a failed load leaves the model, the
 * optimizer, the state and the history exactly as they were. Problems with
 * the file (not HDF5, truncated, checksum mismatch, missing dataset, newer
 * format_version, other optimizer type) give CNN_ERR_FORMAT, a tensor that
 * does not fit the model CNN_ERR_SHAPE, each with one line naming the file
 * and the dataset. Nothing is printed: each call switches HDF5's automatic
 * error printing off (for the process, as HDF5 may otherwise complain at
 * exit after reading a damaged file).
 */
#ifndef CNN_CHECKPOINT_H
#define CNN_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/error.h"
#include "cnn/model.h"
#include "cnn/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CNN_CHECKPOINT_FORMAT_VERSION = 1 };

/* One epoch's results, a row of the history. */
typedef struct cnn_epoch_record {
    int64_t epoch; /* 1-based epoch number */
    double loss, accuracy;
    double val_loss, val_accuracy; /* NaN when there is no validation */
    double lr, seconds, images_per_sec;
} cnn_epoch_record;

/* A growable array of records. Zero-initialise; free with cnn_history_free(). */
typedef struct cnn_history {
    cnn_epoch_record *rows; /* (n) */
    int n, cap;
} cnn_history;

cnn_status cnn_history_append(cnn_history *h, const cnn_epoch_record *r, cnn_error *err);
/* Frees the rows and empties h (it can be reused). */
void cnn_history_free(cnn_history *h);

/* 1 if path starts with the HDF5 signature (a checkpoint, not an INI). */
int cnn_checkpoint_is_hdf5(const char *path);

/* The state of the Keras-style callbacks of cnn/train.h: what a resumed
 * run needs to decide as the uninterrupted one would. */
typedef struct cnn_callback_state {
    /* [early_stopping] */
    double es_best;           /* best monitored value so far; NaN: none yet */
    int64_t es_wait;          /* epochs since it improved */
    int64_t es_best_epoch;    /* epoch (1-based) of es_best, 0: none */
    int64_t es_stopped_epoch; /* the epoch after which it stopped training, 0: not */
    /* [reduce_lr_on_plateau] */
    double rp_best;           /* NaN: none yet */
    int64_t rp_wait;
    int64_t rp_cooldown;      /* epochs of cooldown left */
    double lr_scale;          /* factor on the schedule's rate; 1 at the start */
    int has_best_weights;     /* best_weights holds es_best_epoch's weights */
} cnn_callback_state;

/* A fresh cnn_callback_state: nothing monitored yet, lr_scale 1. */
cnn_callback_state cnn_callback_state_init(void);

/* Where training stands. */
typedef struct cnn_train_state {
    int64_t epoch;        /* epochs completed */
    int64_t step;         /* steps done within the current epoch (0 at an epoch boundary) */
    int64_t global_step;  /* steps done since the start of the run */
    int64_t samples_seen; /* training samples consumed since the start */
    uint64_t seed;        /* the run's seed */
    int world;            /* ranks of the run that wrote it (informational) */
    double best_val_accuracy;
    /* sums over the steps done in the current epoch, so that a run resumed
     * in the middle of an epoch reports the same epoch loss and accuracy */
    double epoch_loss_sum, epoch_correct, epoch_count;
    cnn_callback_state cb; /* /callbacks */
    /* [early_stopping] restore_best_weights: the caller's buffer of
     * nparams + nbuffer_floats floats (parameters, then buffers), written
     * as /callbacks/best_weights when cb.has_best_weights, and read back
     * on load when the file has it; NULL: not kept. */
    float *best_weights;
} cnn_train_state;

/* Writes path atomically (see above). o must have o->n == m->nparams;
 * h may be NULL (no history); config_text is the run's INI text;
 * class_names (nclasses of them) may be NULL/0. */
cnn_status cnn_checkpoint_write(const char *path, const cnn_model *m, const cnn_optim *o,
                                const cnn_train_state *s, const cnn_history *h,
                                const char *config_text, const char *const *class_names,
                                int nclasses, cnn_error *err);

/* 1 when the HDF5 library is thread-safe, so cnn_checkpoint_write may run
 * on a thread of its own while other threads use HDF5 (each call of it on
 * its own arguments), else 0. */
int cnn_checkpoint_write_threadsafe(void);

/* Loads the tensors of path into m (parameters and buffers; and o, s, h
 * when not NULL; o == NULL reads the weights only, for prediction). o's
 * type must match the file's; its hyperparameters stay as the caller
 * configured them (the run's config decides the learning rate on resume),
 * only the state buffers and the step are restored. State buffers the file
 * does not have (sgd saved without momentum) are zeroed; *h is replaced
 * (its old rows are freed). On failure nothing is changed. */
cnn_status cnn_checkpoint_load(const char *path, cnn_model *m, cnn_optim *o, cnn_train_state *s,
                               cnn_history *h, cnn_error *err);

/* The stored config text, as one malloc'd string the caller frees. */
cnn_status cnn_checkpoint_read_config(const char *path, char **config_text, cnn_error *err);

/* The stored class names: *names is ONE allocation (the pointer array and
 * the strings), released with free(*names); *names = NULL and *n = 0 when
 * the file has none. */
cnn_status cnn_checkpoint_read_classes(const char *path, char ***names, int *n, cnn_error *err);

/* The header only, no tensor read: the state and the optimizer's stored
 * hyperparameters (either may be NULL). For summaries and for choosing a
 * checkpoint. */
cnn_status cnn_checkpoint_read_info(const char *path, cnn_train_state *s, cnn_optim_hparams *hp,
                                    cnn_error *err);

/* Finds the valid checkpoint with the highest stored global_step among the
 * *.h5 files of dir (best.h5 included; ties go to the name that sorts
 * last). Files that fail to open or whose header does not validate are
 * skipped, as are hidden files (the temporary .NAME.tmp.PID of an
 * interrupted write). *found = 1 and out = "dir/NAME" when there is one;
 * *found = 0 (and CNN_OK) when there is none or dir does not exist. */
cnn_status cnn_checkpoint_find_latest(const char *dir, char *out, size_t outlen, int *found,
                                      cnn_error *err);

/* Deletes all but the `keep` (>= 1) ckpt-*.h5 files of dir with the
 * highest stored global_step. Never touches best.h5 or any other name, nor
 * a ckpt-*.h5 whose header does not validate. */
cnn_status cnn_checkpoint_prune(const char *dir, int keep, cnn_error *err);

/* "dir/ckpt-eEEEE-sSSSSSSSS.h5" from s->epoch (epochs completed) and
 * s->global_step; just the file name when dir is NULL or "". */
void cnn_checkpoint_name(char *out, size_t n, const char *dir, const cnn_train_state *s);

#ifdef __cplusplus
}
#endif
#endif /* CNN_CHECKPOINT_H */
