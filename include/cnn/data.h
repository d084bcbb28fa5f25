/* cnn/data.h - image datasets held as uint8 and batched as float.
 *
 * A dataset is N images of shape (C, H, W) stored as uint8 in channel-first
 * order plus one int32 class label each. Batches are assembled by index
 * (the caller's permutation), converting to float with `rescale`.
 *
 * Loaders take the process's (rank, world) as plain integers and never call
 * MPI. A gzip-compressed IDX file cannot be read at an offset, so every rank
 * decompresses it whole; formats with random access read only what a rank
 * needs (see README).
 */
#ifndef CNN_DATA_H
#define CNN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/config.h"
#include "cnn/error.h"
#include "cnn/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_dataset {
    int64_t n;
    cnn_shape shape;  /* (C, H, W) of one image */
    uint8_t *images;  /* (n, C, H, W) */
    int32_t *labels;  /* (n) */
    int nclasses;     /* 1 + the largest label */
    char source[256]; /* file it came from, for messages */
} cnn_dataset;

void cnn_dataset_free(cnn_dataset *d);

/* Reads an IDX image file (magic 0x00000803, N x H x W uint8) and its IDX
 * label file (0x00000801, N uint8), gzip-compressed or not. limit > 0 keeps
 * only the first limit samples. Errors name the file and the problem. */
cnn_status cnn_idx_load(cnn_dataset **out, const char *images_path, const char *labels_path,
                        int64_t limit, cnn_error *err);

/* Splits off the last `fraction` of d into a new dataset *tail (Keras's
 * validation_split takes the last samples, before shuffling). */
cnn_status cnn_dataset_split_tail(cnn_dataset *d, double fraction, cnn_dataset **tail,
                                  cnn_error *err);

/* x (B, C, H, W) = images[idx[i]] * rescale; labels (B) likewise. */
void cnn_dataset_gather(const cnn_dataset *d, const int64_t *idx, int B, float rescale,
                        float *x, int32_t *labels);

/* The [data] section, resolved. */
typedef enum { CNN_FORMAT_IDX = 0, CNN_FORMAT_CIFAR10, CNN_FORMAT_IMAGEFOLDER } cnn_data_format;

typedef struct cnn_data_config {
    cnn_data_format format;
    char dir[1024];                       /* idx, cifar10 */
    char train_dir[1024], val_dir[1024], test_dir[1024]; /* imagefolder */
    int image_h, image_w;                 /* imagefolder: resize target */
    int class_mode;                       /* imagefolder: binary|categorical|sparse */
    char train_images[1024], train_labels[1024];
    char test_images[1024], test_labels[1024];
    float rescale;
    int64_t train_limit, test_limit;
    enum { CNN_VAL_TEST = 0, CNN_VAL_SPLIT, CNN_VAL_NONE } validation;
    double validation_split;
} cnn_data_config;

cnn_status cnn_data_config_read(cnn_data_config *dc, const cnn_config *cfg, cnn_error *err);

/* Loads train and test sets as [data] describes; *val is the validation set
 * (a split of train, the test set itself, or NULL). */
cnn_status cnn_data_load(const cnn_data_config *dc, int rank, int world, cnn_dataset **train,
                         cnn_dataset **val, cnn_dataset **test, cnn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* CNN_DATA_H */
