/* cnn/data.h - image datasets: labels in memory, pixels read on demand.
 *
 * A dataset is N images of shape (C, H, W), uint8, channel-first, each with
 * an int32 class label. Labels (4 bytes a sample) are always in memory.
 * Pixels either sit in memory (a gzip-compressed IDX file, which cannot be
 * read at an offset) or are read from their store when a batch needs them
 * (uncompressed IDX, CIFAR-10 binaries, HDF5, image folders), so a rank
 * holds only the images of the batches it is processing.
 *
 *     cnn_dataset *train, *val, *test;
 *     cnn_data_load(&dc, rank, world, &train, &val, &test, &err);
 *     cnn_dataset_gather(train, idx, B, dc.rescale, x, labels, &err);
 *
 * Loaders take the process's (rank, world) as plain integers and never call
 * MPI. A dataset may be shared as a view: cnn_dataset_split_tail() makes the
 * last samples a second dataset over the same store.
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

/* A pixel store: how a format reads images. Shared by the views of one
 * file set; freed with its last view. */
typedef struct cnn_store cnn_store;
typedef struct cnn_store_ops {
    const char *format; /* "idx", "cifar10", ... for messages */
    /* Writes images rows[0..B) of the store (uint8, B x C x H x W) into out.
     * May be called with rows in any order. */
    cnn_status (*read)(cnn_store *s, const int64_t *rows, int B, uint8_t *out, cnn_error *err);
    void (*close)(cnn_store *s); /* frees s->impl */
} cnn_store_ops;

struct cnn_store {
    const cnn_store_ops *ops;
    void *impl;
    cnn_shape shape;
    int refs;
};

/* Wraps impl in a new store with one reference (NULL when out of memory,
 * after calling ops->close on impl). */
cnn_store *cnn_store_new(const cnn_store_ops *ops, void *impl, cnn_shape shape);
/* Drops one reference (NULL is ignored); the last one closes the store.
 * A loader creates the store, makes datasets over it (each takes a
 * reference), then releases its own. */
void cnn_store_release(cnn_store *s);

typedef struct cnn_dataset {
    int64_t n;            /* samples in this dataset */
    int64_t first;        /* store row of sample 0 */
    cnn_shape shape;      /* (C, H, W) of one image */
    int32_t *labels;      /* (n) */
    int nclasses;         /* number of classes (1 + largest label, or the class list) */
    char **class_names;   /* (nclasses) or NULL: image folders and HDF5 sets have names */
    cnn_store *store;     /* the pixels, shared by views */
    char source[1024];    /* file or directory it came from, for messages */
} cnn_dataset;

/* A new dataset of n samples over store (taking one reference to it), with
 * an uninitialised labels array. NULL when out of memory. */
cnn_dataset *cnn_dataset_new(cnn_store *store, int64_t n, const char *source);
void cnn_dataset_free(cnn_dataset *d);

/* Copies class names into d (nclasses = n). */
cnn_status cnn_dataset_set_classes(cnn_dataset *d, const char *const *names, int n,
                                   cnn_error *err);

/* In-memory store of n images (uint8, n x shape), taking ownership of the
 * malloc'd pixels. */
cnn_store *cnn_memory_store_new(uint8_t *pixels, int64_t n, cnn_shape shape);

/* Reads an IDX image file (magic 0x00000803, N x H x W uint8) and its IDX
 * label file (0x00000801, N uint8). A gzip-compressed file (".gz" or gzip
 * magic) is decompressed into memory whole; a plain one is read image by
 * image when batches need them. limit > 0 keeps the first limit samples.
 * Errors name the file and the problem. */
cnn_status cnn_idx_load(cnn_dataset **out, const char *images_path, const char *labels_path,
                        int64_t limit, cnn_error *err);

/* Splits off the last `fraction` of d into a new dataset *tail over the same
 * store (Keras's validation_split takes the last samples, before
 * shuffling); d keeps the first ones. */
cnn_status cnn_dataset_split_tail(cnn_dataset *d, double fraction, cnn_dataset **tail,
                                  cnn_error *err);

/* Raw pixels of samples idx[0..B) into out (B x C x H x W uint8). */
cnn_status cnn_dataset_read(const cnn_dataset *d, const int64_t *idx, int B, uint8_t *out,
                            cnn_error *err);

/* x (B, C, H, W) = images[idx[i]] * rescale, labels (B) likewise. raw is
 * B x C x H x W bytes of workspace. */
cnn_status cnn_dataset_gather(const cnn_dataset *d, const int64_t *idx, int B, float rescale,
                              uint8_t *raw, float *x, int32_t *labels, cnn_error *err);

/* The [data] section, resolved. */
typedef enum {
    CNN_FORMAT_IDX = 0,
    CNN_FORMAT_CIFAR10,
    CNN_FORMAT_IMAGEFOLDER,
    CNN_FORMAT_HDF5
} cnn_data_format;

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
