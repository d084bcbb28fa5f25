/* h5util.h - the HDF5 plumbing shared by the checkpoint (src/checkpoint)
 * and the HDF5 image datasets (src/data/h5data.c): HDF5's error stack made
 * into one-line cnn_error messages, opening files, scalar attributes (one
 * at a time or from a field table), and datasets checked for type and
 * shape before they are read. Internal to libcnn; the one header of libcnn
 * that includes <hdf5.h>.
 *
 * Every failing HDF5 call becomes one line "FILE: what: why", where why is
 * the innermost message of HDF5's error stack (on one line, without
 * HDF5's time stamps and buffer addresses), taken before any other HDF5
 * call clears it. */
#ifndef CNN_H5UTIL_H
#define CNN_H5UTIL_H

#include <stddef.h>

#include <hdf5.h>

#include "cnn/error.h"

/* An open file (or -1) and where its errors go. */
typedef struct cnn_h5 {
    hid_t id;
    const char *path; /* the name messages show */
    cnn_error *err;
} cnn_h5;

/* What HDF5's error stack says about the last failure. */
typedef struct cnn_h5_reason {
    char text[256]; /* innermost non-empty description, one line; "" when none */
    int checksum;   /* some level of the stack reports a checksum failure */
} cnn_h5_reason;

/* Must run right after the failing call: the next HDF5 call clears the stack. */
cnn_h5_reason cnn_h5_reason_now(void);

/* "FILE: <fmt>: <HDF5's reason>", or status CNN_ERR_FORMAT and "FILE:
 * <fmt>: checksum mismatch (the file is damaged)"; call right after the
 * failing HDF5 call. Returns the status set. */
cnn_status cnn_h5_fail(const cnn_h5 *f, cnn_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Switches HDF5's printing of its error stack off for the process: errors
 * reach the caller as cnn_error, never on stderr. Every public entry point
 * that calls HDF5 calls it first. */
void cnn_h5_quiet(void);

/* "32x16x3x3", or "scalar" for ndim 0. */
void cnn_h5_fmt_dims(char *buf, size_t n, int ndim, const hsize_t *dims);

/* File access of our own files: the 1.10 format (which checksums all
 * metadata), close-strong, no file locking. < 0 on failure. */
hid_t cnn_h5_fapl(void);

/* Opens path read-only with cnn_h5_fapl(), after checking that it exists
 * (CNN_ERR_IO) and carries the HDF5 signature (CNN_ERR_FORMAT "not an
 * HDF5 file"); a damaged or truncated file is CNN_ERR_FORMAT. f->id < 0
 * on failure. */
cnn_status cnn_h5_open_read(cnn_h5 *f, const char *path, cnn_error *err);
/* Closes f->id if open; f->id = -1. */
void cnn_h5_close(cnn_h5 *f);

/* ---- scalars: attributes and field tables ------------------------------- */

/* How a number is stored: file type little-endian, read back as the
 * native type of the same width. */
typedef enum { CNN_H5_I32, CNN_H5_I64, CNN_H5_U64, CNN_H5_F64 } cnn_h5_kind;

hid_t cnn_h5_file_type(cnn_h5_kind k);   /* H5T_STD_I32LE, ... */
hid_t cnn_h5_memory_type(cnn_h5_kind k); /* H5T_NATIVE_INT, ... */
H5T_class_t cnn_h5_class(cnn_h5_kind k); /* H5T_INTEGER or H5T_FLOAT */

/* A scalar attribute name of obj (objname for messages), from *value. */
cnn_status cnn_h5_write_attr(const cnn_h5 *f, hid_t obj, const char *objname, const char *name,
                             cnn_h5_kind k, const void *value);
/* A fixed-length UTF-8 string attribute. */
cnn_status cnn_h5_write_attr_string(const cnn_h5 *f, hid_t obj, const char *objname,
                                    const char *name, const char *value);
/* A scalar attribute into *out, after checking it exists and is one value
 * of k's class. */
cnn_status cnn_h5_read_attr(const cnn_h5 *f, hid_t obj, const char *objname, const char *name,
                            cnn_h5_kind k, void *out);
/* A fixed-length string attribute of any length into out[n] (cut to fit). */
cnn_status cnn_h5_read_attr_string(const cnn_h5 *f, hid_t obj, const char *objname,
                                   const char *name, char *out, size_t n);

/* A member of a struct stored as a scalar attribute. */
typedef struct cnn_h5_field {
    const char *name;
    size_t offset; /* in the struct */
    cnn_h5_kind kind;
} cnn_h5_field;

/* Each of the n fields of the struct at base as an attribute of obj, in
 * table order; reading stops at the first failure. */
cnn_status cnn_h5_write_fields(const cnn_h5 *f, hid_t obj, const char *objname,
                               const cnn_h5_field *fields, int n, const void *base);
cnn_status cnn_h5_read_fields(const cnn_h5 *f, hid_t obj, const char *objname,
                              const cnn_h5_field *fields, int n, void *base);

/* ---- groups and datasets ------------------------------------------------ */

/* Group obj (an absolute path whose parent exists); *out gets it open, or
 * it is closed when out is NULL. */
cnn_status cnn_h5_make_group(const cnn_h5 *f, const char *obj, hid_t *out);

/* Dataset obj (an absolute path whose parent group exists) of ndim (<= 4)
 * dims (0: a scalar), written from data. Its layout makes every byte
 * checked on read: strings up to 60 kB are kept inside the object header
 * (checksummed metadata); other non-empty arrays are chunked with the
 * Fletcher32 filter, a chunk being the whole array up to 1 GiB, then split
 * along the leading axes. */
cnn_status cnn_h5_write_dataset(const cnn_h5 *f, const char *obj, hid_t ftype, hid_t mtype,
                                int ndim, const hsize_t *dims, const void *data);

/* A string dataset: scalar (n < 0, the string s[0]) or 1-D of n strings,
 * fixed-length UTF-8 as long as the longest. */
cnn_status cnn_h5_write_strings(const cnn_h5 *f, const char *obj, const char *const *s, int n);

/* Whether every component of the absolute path obj exists (H5Lexists
 * alone fails when an intermediate group is missing); < 0 when HDF5 fails. */
htri_t cnn_h5_exists(hid_t file, const char *obj);

/* CNN_OK when obj exists; otherwise CNN_ERR_FORMAT "FILE: missing KIND OBJ". */
cnn_status cnn_h5_require(const cnn_h5 *f, const char *obj, const char *kind);

/* Opens group obj, which must exist. */
cnn_status cnn_h5_open_group(const cnn_h5 *f, const char *obj, hid_t *out);

/* Opens dataset obj (which must exist) and checks its type class (a
 * string: fixed-length) and rank; dims gets its shape. Nothing is read. */
cnn_status cnn_h5_open_dataset(const cnn_h5 *f, const char *obj, H5T_class_t cls, int ndim,
                               hsize_t *dims, hid_t *out);

/* Reads dataset obj of shape want (ndim <= 4 dims) as mtype into buf,
 * after checking class and shape (CNN_ERR_SHAPE "... has shape A but WHOSE
 * is B"); a read failure that HDF5 blames on a checksum is reported as
 * "checksum mismatch in OBJ". */
cnn_status cnn_h5_read_dataset(const cnn_h5 *f, const char *obj, H5T_class_t cls, hid_t mtype,
                               int ndim, const hsize_t *want, const char *whose, void *buf);

/* A fixed-length string dataset: scalar (n == NULL) or 1-D (*n strings),
 * as *size-byte records in one malloc'd buffer *out with a spare NUL at
 * the end. */
cnn_status cnn_h5_read_strings(const cnn_h5 *f, const char *obj, char **out, size_t *size,
                               hsize_t *n);

#endif /* CNN_H5UTIL_H */
