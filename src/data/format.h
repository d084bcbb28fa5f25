/* format.h - a [data] format is one entry of the table in dataset.c (not
 * installed).
 *
 * To add a format: write its loader in a file of its own that defines
 * `const cnn_data_format cnn_format_NAME = {...}` (name, default dir, path
 * keys, a reader of its other keys, a loader of one set), add the file to
 * the cnn library in CMakeLists.txt, and add X(NAME) to CNN_DATA_FORMATS
 * below. The config reader and cnn_data_load loop over that table. */
#ifndef CNN_DATA_FORMAT_H
#define CNN_DATA_FORMAT_H

#include "cnn/data.h"

/* A file key of a format: [data] key (default def, "" = optional) read
 * into dc->paths[slot], relative to [data] dir. */
typedef struct cnn_format_key {
    const char *key, *def;
    int slot;
} cnn_format_key;

struct cnn_data_format {
    const char *name; /* [data] format = name */
    const char *dir;  /* default [data] dir */
    const cnn_format_key *keys; /* ended by {NULL}; the one at CNN_SET_VAL, if any, is
                                   the key of a separate validation set */
    /* Reads the format's keys other than its paths into dc; NULL: none. */
    cnn_status (*read_keys)(cnn_data_config *dc, const cnn_section *s, cnn_error *err);
    /* Loads set `set` (CNN_SET_TRAIN, _VAL or _TEST) into *out, keeping the
     * first `limit` samples (0 = all). split > 0 only for a format with
     * splits_itself: it then moves its validation split into *val. */
    cnn_status (*load)(const cnn_data_config *dc, int set, int64_t limit, double split,
                       cnn_dataset **out, cnn_dataset **val, cnn_error *err);
    int splits_itself; /* validation = split is done by load (per class) */
    /* Optional, for formats whose sets are folders: appends to out the
     * files of set `set` (a layout of the format's own), and load_listed
     * is load with those bytes (len of them) in place of the file system. */
    cnn_status (*list)(const cnn_data_config *dc, int set, cnn_data_listing *out,
                       cnn_error *err);
    cnn_status (*load_listed)(const cnn_data_config *dc, int set, const char *listing,
                              size_t len, int64_t limit, double split, cnn_dataset **out,
                              cnn_dataset **val, cnn_error *err);
};

/* Appends n bytes of p to l; -1 when out of memory. */
int cnn_data_listing_put(cnn_data_listing *l, const void *p, size_t n);

/* The formats, in the order of their [data] format values (the first is
 * the default). */
#define CNN_DATA_FORMATS X(idx) X(cifar10) X(imagefolder) X(hdf5)

#define X(name) extern const cnn_data_format cnn_format_##name;
CNN_DATA_FORMATS
#undef X

#endif /* CNN_DATA_FORMAT_H */
