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
 *     // raw: B x C x H x W bytes, x: B x C x H x W floats, labels: B
 *     cnn_dataset_gather(train, idx, B, dc.rescale, raw, x, labels, &err);
 *
 * Loaders take the process's (rank, world) as plain integers and never call
 * MPI. A dataset may be shared as a view: cnn_dataset_split_tail() makes the
 * last samples a second dataset over the same store.
 *
 * Image folders may hold files that do not decode. Before training, each
 * rank checks its share and the flags are combined across ranks (the one
 * step that needs MPI, done by the caller):
 *
 *     uint8_t *bad = malloc(d->n);
 *     cnn_dataset_verify(d, rank, world, bad, &err);   // fatal mode: error
 *     MPI_Allreduce(MPI_IN_PLACE, bad, d->n, MPI_UINT8_T, MPI_BOR, comm);
 *     for (i...) if (bad[i]) print cnn_dataset_describe(d, i, buf, sizeof buf);
 *     cnn_dataset_drop(d, bad, &dropped, &err);         // same on every rank
 */
#ifndef CNN_DATA_H
#define CNN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/config.h"
#include "cnn/error.h"
#include "cnn/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A pixel store: how a format reads images. Shared by the views of one
 * file set; freed with its last view. */
typedef struct cnn_store cnn_store;
typedef struct cnn_store_ops {
    const char *format; /* "idx", "cifar10", ... for messages */
    /* Writes images rows[0..B) of the store (uint8, B x C x H x W) into out.
     * May be called with rows in any order. Thread-safe only when
     * parallel (below) says so. */
    cnn_status (*read)(cnn_store *s, const int64_t *rows, int B, uint8_t *out, cnn_error *err);
    void (*close)(cnn_store *s); /* frees s->impl */
    /* Optional: names row r for messages (its file, for image folders). */
    void (*describe)(const cnn_store *s, int64_t row, char *buf, size_t n);
    /* 1 when every image is a file of its own that may fail to decode on
     * its own (image folders): cnn_dataset_verify reads those stores. */
    int per_file;
    /* 1 when read may run on several threads at once, into different
     * buffers (cnn/prefetch.h reads such a store on all its threads). */
    int parallel;
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

/* Labels are class numbers 0 .. CNN_MAX_CLASSES - 1: loaders refuse
 * others (and more class names), so nclasses always fits. */
enum { CNN_MAX_CLASSES = 65536 };

/* A dataset's images kept in memory once read ([data] cache). */
typedef struct cnn_data_cache cnn_data_cache;

typedef struct cnn_dataset {
    int64_t n;            /* samples in this dataset */
    int64_t first;        /* store row of sample 0 */
    int64_t *rows;        /* (n) store row of each sample, or NULL: rows first .. first+n-1
                             (a row map exists once cnn_dataset_drop removed samples) */
    cnn_shape shape;      /* (C, H, W) of one image */
    int32_t *labels;      /* (n) */
    int nclasses;         /* number of classes (1 + largest label, or the class list) */
    char **class_names;   /* (nclasses) or NULL: image folders and HDF5 sets have names */
    cnn_store *store;     /* the pixels, shared by views */
    char source[1024];    /* file or directory it came from, for messages */
    int skip_bad;         /* [data] on_bad_image = skip: cnn_dataset_verify flags
                             images that fail to decode instead of failing */
    cnn_data_cache *cache; /* images kept once read (cnn_dataset_cache), or NULL */
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

/* The same at a sample count: d keeps samples [0, keep), *tail gets the
 * rest (0 < keep < d->n). */
cnn_status cnn_dataset_split_at(cnn_dataset *d, int64_t keep, cnn_dataset **tail,
                                cnn_error *err);

/* Reads sample i of d into out (C x H x W) and sets *bad = 0. When the
 * image's file cannot be opened or decoded: with d->skip_bad, *bad = 1,
 * err holds the reason (naming the file) and CNN_OK is returned; without,
 * that error, with a hint at on_bad_image = skip. */
cnn_status cnn_dataset_read_one(const cnn_dataset *d, int64_t i, uint8_t *out, int *bad,
                                cnn_error *err);

/* Decodes every image of this rank's share of d, samples
 * [n*rank/world, n*(rank+1)/world), and sets bad[i] for all i in [0, n):
 * 1 for a sample of the share whose file cannot be opened or decoded, 0
 * otherwise, so the flags of all ranks combine by OR (or max). Only stores
 * of separate files (image folders) can fail: for the others bad is all 0
 * and nothing is read. With d->skip_bad = 0 (on_bad_image = fatal) the
 * first failure is returned instead, its message naming the file; errors
 * other than a bad file (out of memory) are returned in both modes. This
 * costs one decode of every image, shared by the ranks. */
cnn_status cnn_dataset_verify(const cnn_dataset *d, int rank, int world, uint8_t *bad,
                              cnn_error *err);

/* Removes from d the samples with bad[i] != 0 (bad has d->n entries and
 * must be the same on every rank, e.g. OR-combined), keeping the order of
 * the others; *dropped (may be NULL) is how many went. Sample indices
 * shift: describe the bad samples before dropping them. Fails, leaving d
 * unchanged, when no sample would be left. */
cnn_status cnn_dataset_drop(cnn_dataset *d, const uint8_t *bad, int64_t *dropped,
                            cnn_error *err);

/* What sample i of d is, for messages: its file for image folders
 * ("data/train/cat/cat.7.jpg"), else "SOURCE sample i". Returns buf. */
const char *cnn_dataset_describe(const cnn_dataset *d, int64_t i, char *buf, size_t n);

/* [data] cache, as tf.data's Dataset.cache(): d keeps each image in memory
 * once it has been read (decoded and resized, before rescale and
 * augmentation), so later reads of it (cnn_dataset_read and all above it,
 * cnn_dataset_verify included) copy those bytes instead of reading the
 * store again: the same bytes, so nothing downstream changes. A file
 * changed or removed after its first read is not seen. Safe from several
 * threads at once, with one cache for all of them: the first to read an
 * image keeps it; another that meets the image while it is being kept
 * reads the store itself. Memory: cnn_dataset_cache_bytes(d) in one
 * allocation whose pages are touched as images arrive, so a process grows
 * with the images it has read. Call it before cnn_dataset_drop or after,
 * not before a split (the tail gets no cache); freed with d. Doing it
 * twice does nothing. CNN_ERR_NOMEM when the allocation fails. */
cnn_status cnn_dataset_cache(cnn_dataset *d, cnn_error *err);

/* Bytes d's cache takes at most: one image (C x H x W) and one byte per
 * store row d reads. */
uint64_t cnn_dataset_cache_bytes(const cnn_dataset *d);

/* Memory this process may still take: /proc/meminfo's MemAvailable (else
 * the free pages), or the cgroup v2 limit less its usage when smaller, as
 * under SLURM. 0 when unknown. */
uint64_t cnn_data_memory_available(void);

/* Raw pixels of samples idx[0..B) into out (B x C x H x W uint8). */
cnn_status cnn_dataset_read(const cnn_dataset *d, const int64_t *idx, int B, uint8_t *out,
                            cnn_error *err);

/* x (B, C, H, W) = images[idx[i]] * rescale, labels (B) likewise. raw is
 * B x C x H x W bytes of workspace. */
cnn_status cnn_dataset_gather(const cnn_dataset *d, const int64_t *idx, int B, float rescale,
                              uint8_t *raw, float *x, int32_t *labels, cnn_error *err);

/* The [data] section, resolved. Relative paths are taken from dir. */
typedef struct cnn_data_format cnn_data_format; /* one entry of the format table */

enum { CNN_CLASS_BINARY = 0, CNN_CLASS_CATEGORICAL, CNN_CLASS_SPARSE };

enum { CNN_CACHE_OFF = 0, CNN_CACHE_ON, CNN_CACHE_AUTO };

/* The sets, and the slots of cnn_data_config.paths: a format's file keys
 * say which slot each fills (idx: train_images 0, test_images 2,
 * train_labels 3, test_labels 5; imagefolder: train_dir, validation_dir,
 * test_dir; hdf5: train_file, validation_file, test_file). */
enum { CNN_SET_TRAIN = 0, CNN_SET_VAL, CNN_SET_TEST, CNN_DATA_PATHS = 6 };

typedef struct cnn_data_config {
    const cnn_data_format *format;        /* [data] format */
    char dir[1024];                       /* base of the paths below */
    char paths[CNN_DATA_PATHS][1024];     /* the format's file keys; "" = not given */
    int image_h, image_w;                 /* imagefolder: resize target */
    int channels;                         /* imagefolder: 1 grayscale, 3 RGB */
    int class_mode;                       /* imagefolder: CNN_CLASS_* */
    int skip_bad;                         /* imagefolder: on_bad_image = skip (1) | fatal (0) */
    float rescale;
    int64_t train_limit, test_limit;
    /* CNN_VAL_SEPARATE: the format's validation key (validation_dir,
     * validation_file) holds the set, in paths[CNN_SET_VAL] */
    enum { CNN_VAL_TEST = 0, CNN_VAL_SPLIT, CNN_VAL_NONE, CNN_VAL_SEPARATE } validation;
    double validation_split;
    /* prefetch = true: the trainer assembles the next step's samples in
     * the background (cnn/prefetch.h) on loader_threads threads */
    int prefetch;
    int loader_threads;
    int cache; /* [data] cache: CNN_CACHE_* (cnn_data_cache_sets) */
} cnn_data_config;

cnn_status cnn_data_config_read(cnn_data_config *dc, const cnn_config *cfg, cnn_error *err);

/* What [data] cache does for a training run, over the sets it reads every
 * epoch (train; val when not NULL): cache = false nothing; true caches
 * both, or fails with CNN_ERR_CONFIG (a one-line message with the sizes)
 * when their cnn_dataset_cache_bytes exceed limit; auto caches them when
 * they fit and the store decodes files (image folders), else nothing.
 * *on = 1 when they are now cached. limit is the caller's: the trainer
 * gives each rank half of cnn_data_memory_available() over the node's
 * ranks. */
cnn_status cnn_data_cache_sets(const cnn_data_config *dc, cnn_dataset *train, cnn_dataset *val,
                               uint64_t limit, int *on, cnn_error *err);

/* Loads train and test sets as [data] describes; *val is the validation set:
 * a split of train (validation = split), a set of its own (validation_dir,
 * validation_file), the test set itself (validation = test; free it once),
 * or NULL (none). Train, validation and test have the same image shape
 * and, where they have names, the same classes. */
cnn_status cnn_data_load(const cnn_data_config *dc, int rank, int world, cnn_dataset **train,
                         cnn_dataset **val, cnn_dataset **test, cnn_error *err);

/* The file lists of the sets' image folders, made by one rank and sent to
 * the others as bytes, so that N ranks list the folders once, not N times
 * (a folder of 25,000 files costs each lister 25,000 stat calls):
 *
 *     cnn_data_listing l = {0};
 *     if (rank == 0) st = cnn_data_list(&dc, &l, &err);  // then agree on st
 *     (rank 0's l.bytes, l.len to every rank: cnn_dist_bcast_bytes)
 *     cnn_data_load_listed(&dc, rank, world, &l, &train, &val, &test, &err);
 *     cnn_data_listing_free(&l);
 *
 * For a format without folders the listing is empty and the load reads its
 * files as cnn_data_load does. The bytes are only meant for a load by the
 * same program with the same dc. */
typedef struct cnn_data_listing {
    char *bytes; /* (len) malloc'ed */
    size_t len, cap;
} cnn_data_listing;

/* Lists every folder cnn_data_load would read into *out (which must be
 * zeroed); the errors are those of listing in cnn_data_load (a missing
 * directory, a class without images). out is freed on failure. */
cnn_status cnn_data_list(const cnn_data_config *dc, cnn_data_listing *out, cnn_error *err);

/* cnn_data_load, with the folders' files taken from l (cnn_data_list's
 * bytes, possibly made on another rank) instead of the file system; l =
 * NULL lists them here. A listing that does not parse is CNN_ERR_FORMAT. */
cnn_status cnn_data_load_listed(const cnn_data_config *dc, int rank, int world,
                                const cnn_data_listing *l, cnn_dataset **train,
                                cnn_dataset **val, cnn_dataset **test, cnn_error *err);

void cnn_data_listing_free(cnn_data_listing *l); /* safe on a zeroed listing */

/* CIFAR-10, binary version, in dir: the training set (test = 0) is
 * data_batch_1.bin, data_batch_2.bin, ... (consecutive from 1; five in the
 * official set), the test set (test = 1) test_batch.bin. A record is 3073
 * bytes: the label, then 3 x 32 x 32 pixels, channel-first; pixels are
 * read record by record. Class names come from batches.meta.txt (one a
 * line) if present, else they are CIFAR-10's. limit > 0 keeps the first
 * limit samples. */
cnn_status cnn_cifar10_load(cnn_dataset **out, const char *dir, int test, int64_t limit,
                            cnn_error *err);

/* An image folder as Keras's flow_from_directory reads it: one
 * subdirectory of dir per class, classes sorted by name (byte order),
 * label = position in that list; the image files (.jpg .jpeg .png .bmp
 * .gif, any case) below each class directory, subdirectories included,
 * depth first with each directory's entries sorted by name, so every rank
 * sees the same order. Entries whose names start with '.' are skipped
 * (Keras would make a class of .ipynb_checkpoints). A class directory
 * without image files is an error (CNN_ERR_FORMAT) naming it. Images are decoded
 * and resized to dc->image_h x dc->image_w with dc->channels when a batch
 * reads them (cnn_image_load). class_mode = binary needs exactly two
 * classes. d->skip_bad = dc->skip_bad.
 *
 * limit > 0 keeps about limit samples, the first of each class in
 * proportion to its size. split > 0 (validation_split) moves the first
 * floor(split * n_c) files of each class c into *val, as Keras's
 * subset = "validation" does (val may be NULL when split is 0). */
cnn_status cnn_imagefolder_load(cnn_dataset **out, const char *dir, const cnn_data_config *dc,
                                int64_t limit, double split, cnn_dataset **val, cnn_error *err);

/* An HDF5 dataset file:
 *   /images   (N, H, W, C) uint8, chunked, optionally gzip-compressed
 *   /labels   (N) any integer type (written as int32), values 0 to
 *             CNN_MAX_CLASSES - 1 (and below K when /classes exists)
 *   /classes  (K <= CNN_MAX_CLASSES) strings, optional: class names,
 *             label = index; none may be a null string
 * Labels are read whole; pixels only for the rows a batch needs, one
 * hyperslab read per run of consecutive rows, then transposed to
 * channel-first. The file is opened read-only without HDF5's file locks,
 * which parallel file systems often lack. limit > 0 keeps the first limit. */
cnn_status cnn_h5data_load(cnn_dataset **out, const char *path, int64_t limit, cnn_error *err);

/* Writes that layout, a block of images at a time:
 *
 *     cnn_h5data_create(&w, "train.h5", shape, 0, 0, &err);
 *     while (...) cnn_h5data_append(w, images, n, &err);   // (n, C, H, W)
 *     cnn_h5data_close(w, labels, names, nclasses, &err);
 *
 * chunk = images per chunk of /images (0 = 1); gzip = deflate level 0
 * (none) to 9. A batch reads whole chunks, so one image per chunk suits
 * random batches best: Fashion-MNIST, batches of 32, warm page cache:
 * 229k images/s at 1 a chunk, 122k at 64; with gzip 4, 86k at 1 (files of
 * 51, 47 and 32 MB), 4.7k at 64. */
typedef struct cnn_h5data_writer cnn_h5data_writer;
cnn_status cnn_h5data_create(cnn_h5data_writer **out, const char *path, cnn_shape shape, int chunk,
                             int gzip, cnn_error *err);
cnn_status cnn_h5data_append(cnn_h5data_writer *w, const uint8_t *images, int64_t n,
                             cnn_error *err);
/* Writes /labels (one per image appended) and, when names is not NULL,
 * /classes; closes the file and frees w in every case. labels = NULL
 * abandons the file: it is closed and removed. */
cnn_status cnn_h5data_close(cnn_h5data_writer *w, const int32_t *labels, const char *const *names,
                            int nclasses, cnn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* CNN_DATA_H */
