/* h5util.c - HDF5 plumbing shared by the checkpoint and the HDF5 image
 * datasets (see h5util.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "h5util.h"

enum { OBJ_MAX = 512 };
#define CHUNK_MAX_BYTES ((hsize_t)1 << 30) /* HDF5 caps a chunk at 4 GiB */
#define COMPACT_MAX_BYTES 60000            /* an object header holds < 64 kB */

/* ---- errors ------------------------------------------------------------- */

/* HDF5's descriptions of failed system calls run over lines: "file write
 * failed: time = ...\n, filename = '...', ..., errno = 28, error message =
 * 'No space left on device', buf = 0x..., ...". Keep "file write failed:
 * No space left on device". */
static void one_line(char *out, size_t n, const char *d)
{
    size_t len = strcspn(d, "\n");
    const char *stamp = strstr(d, ": time = ");
    if (stamp && (size_t)(stamp - d) < len)
        len = (size_t)(stamp - d);
    const char *sys = strstr(d, "error message = '");
    if (sys) {
        sys += strlen("error message = '");
        snprintf(out, n, "%.*s: %.*s", (int)len, d, (int)strcspn(sys, "'\n"), sys);
    } else
        snprintf(out, n, "%.*s", (int)len, d);
}

static herr_t reason_walk(unsigned n, const H5E_error2_t *e, void *data)
{
    cnn_h5_reason *r = data;
    const char *d = e->desc ? e->desc : "";
    if (!r->text[0] && d[0])
        one_line(r->text, sizeof r->text, d);
    if (strstr(d, "checksum") || strstr(d, "Fletcher32"))
        r->checksum = 1;
    return 0;
}

cnn_h5_reason cnn_h5_reason_now(void)
{
    cnn_h5_reason r = {{0}, 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, reason_walk, &r);
    return r;
}

static const char *reason_text(const cnn_h5_reason *r)
{
    return r->text[0] ? r->text : "HDF5 reports no reason";
}

cnn_status cnn_h5_fail(const cnn_h5 *f, cnn_status s, const char *fmt, ...)
{
    cnn_h5_reason r = cnn_h5_reason_now();
    char what[CNN_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (r.checksum)
        return cnn_error_set(f->err, CNN_ERR_FORMAT,
                             "%s: %s: checksum mismatch (the file is damaged)", f->path, what);
    return cnn_error_set(f->err, s, "%s: %s: %s", f->path, what, reason_text(&r));
}

/* HDF5 prints its error stack by default, and after some damaged files
 * also a complaint at exit. */
void cnn_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

void cnn_h5_fmt_dims(char *buf, size_t n, int ndim, const hsize_t *dims)
{
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%llu", i ? "x" : "",
                                 (unsigned long long)dims[i]);
    if (ndim == 0)
        snprintf(buf, n, "scalar");
}

/* ---- opening ------------------------------------------------------------ */

/* No file locking: an atomic rename already keeps readers off half-written
 * files, and flock fails on some cluster file systems. The 1.10 format
 * checksums all metadata, the chunk index of a one-chunk tensor included;
 * with the 1.8 format the v1 B-tree chunk index carries no checksum, and a
 * flipped byte there can go unnoticed. Close-strong: closing the file also
 * closes whatever an error path left open. */
hid_t cnn_h5_fapl(void)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0)
        return fapl;
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0
#if H5_VERSION_GE(1, 10, 7)
        || H5Pset_file_locking(fapl, 0, 1) < 0
#endif
    ) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

/* The HDF5 signature at offset 0, 512, 1024, ... (after a user block). */
static int has_hdf5_signature(FILE *f)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char buf[8];
    for (long off = 0; off >= 0; off = off ? off * 2 : 512) {
        if (fseek(f, off, SEEK_SET) != 0 || fread(buf, 1, 8, f) != 8)
            return 0;
        if (memcmp(buf, sig, 8) == 0)
            return 1;
    }
    return 0;
}

cnn_status cnn_h5_open_read(cnn_h5 *f, const char *path, cnn_error *err)
{
    *f = (cnn_h5){-1, path, err};
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int is_h5 = has_hdf5_signature(fp);
    fclose(fp);
    if (!is_h5)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: not an HDF5 file (no HDF5 signature)",
                             path);
    hid_t fapl = cnn_h5_fapl();
    if (fapl < 0)
        return cnn_h5_fail(f, CNN_ERR_IO, "cannot set up file access");
    hid_t id = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (id < 0) {
        cnn_h5_reason r = cnn_h5_reason_now();
        H5Pclose(fapl);
        const char *why = strstr(r.text, "truncated file: ");
        if (why)
            return cnn_error_set(err, CNN_ERR_FORMAT, "%s: truncated file (%s)", path, why + 16);
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: damaged HDF5 file: %s", path,
                             reason_text(&r));
    }
    H5Pclose(fapl);
    f->id = id;
    return CNN_OK;
}

void cnn_h5_close(cnn_h5 *f)
{
    if (f->id >= 0)
        H5Fclose(f->id);
    f->id = -1;
}

/* ---- scalars ------------------------------------------------------------ */

hid_t cnn_h5_file_type(cnn_h5_kind k)
{
    switch (k) {
    case CNN_H5_I32: return H5T_STD_I32LE;
    case CNN_H5_I64: return H5T_STD_I64LE;
    case CNN_H5_U64: return H5T_STD_U64LE;
    default: return H5T_IEEE_F64LE;
    }
}

hid_t cnn_h5_memory_type(cnn_h5_kind k)
{
    switch (k) {
    case CNN_H5_I32: return H5T_NATIVE_INT;
    case CNN_H5_I64: return H5T_NATIVE_INT64;
    case CNN_H5_U64: return H5T_NATIVE_UINT64;
    default: return H5T_NATIVE_DOUBLE;
    }
}

H5T_class_t cnn_h5_class(cnn_h5_kind k) { return k == CNN_H5_F64 ? H5T_FLOAT : H5T_INTEGER; }

/* A fixed-length UTF-8 string type holding len bytes and the terminator. */
static hid_t string_type(size_t len)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, len + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
                   H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        t = -1;
    }
    return t;
}

static cnn_status write_attr_typed(const cnn_h5 *f, hid_t obj, const char *objname,
                                   const char *name, hid_t ftype, hid_t mtype, const void *value)
{
    hid_t space = H5Screate(H5S_SCALAR), a = -1;
    cnn_status st = CNN_OK;
    if (space < 0 || (a = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        H5Awrite(a, mtype, value) < 0)
        st = cnn_h5_fail(f, CNN_ERR_IO, "cannot write attribute %s of %s", name, objname);
    if (a >= 0)
        H5Aclose(a);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

cnn_status cnn_h5_write_attr(const cnn_h5 *f, hid_t obj, const char *objname, const char *name,
                             cnn_h5_kind k, const void *value)
{
    return write_attr_typed(f, obj, objname, name, cnn_h5_file_type(k), cnn_h5_memory_type(k),
                            value);
}

cnn_status cnn_h5_write_attr_string(const cnn_h5 *f, hid_t obj, const char *objname,
                                    const char *name, const char *value)
{
    hid_t t = string_type(strlen(value));
    if (t < 0)
        return cnn_h5_fail(f, CNN_ERR_IO, "cannot make a string type");
    cnn_status st = write_attr_typed(f, obj, objname, name, t, t, value);
    H5Tclose(t);
    return st;
}

/* A scalar attribute of class cls, read as mtype (a string: as the file's
 * own type, into out[n]), checked before reading. */
static cnn_status read_attr_typed(const cnn_h5 *f, hid_t obj, const char *objname,
                                  const char *name, H5T_class_t cls, hid_t mtype, void *out,
                                  size_t n)
{
    htri_t e = H5Aexists(obj, name);
    if (e < 0)
        return cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot look up attribute %s of %s", name, objname);
    if (e == 0)
        return cnn_error_set(f->err, CNN_ERR_FORMAT, "%s: %s has no attribute %s", f->path,
                             objname, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = -1, space = -1;
    cnn_status st = CNN_OK;
    if (a < 0 || (t = H5Aget_type(a)) < 0 || (space = H5Aget_space(a)) < 0)
        st = cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot open attribute %s of %s", name, objname);
    else if (H5Tget_class(t) != cls || H5Sget_simple_extent_npoints(space) != 1 ||
             (cls == H5T_STRING && H5Tis_variable_str(t) != 0))
        st = cnn_error_set(f->err, CNN_ERR_FORMAT, "%s: attribute %s of %s is not a single %s",
                           f->path, name, objname,
                           cls == H5T_STRING ? "fixed-length string"
                           : cls == H5T_FLOAT ? "float"
                                              : "integer");
    else if (cls == H5T_STRING) {
        size_t size = H5Tget_size(t);
        char *buf = calloc(size + 1, 1);
        if (!buf)
            st = cnn_error_set(f->err, CNN_ERR_NOMEM, "%s: out of memory", f->path);
        else if (H5Aread(a, t, buf) < 0)
            st = cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot read attribute %s of %s", name, objname);
        else
            snprintf(out, n, "%s", buf);
        free(buf);
    } else if (H5Aread(a, mtype, out) < 0)
        st = cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot read attribute %s of %s", name, objname);
    if (space >= 0)
        H5Sclose(space);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return st;
}

cnn_status cnn_h5_read_attr(const cnn_h5 *f, hid_t obj, const char *objname, const char *name,
                            cnn_h5_kind k, void *out)
{
    return read_attr_typed(f, obj, objname, name, cnn_h5_class(k), cnn_h5_memory_type(k), out, 0);
}

cnn_status cnn_h5_read_attr_string(const cnn_h5 *f, hid_t obj, const char *objname,
                                   const char *name, char *out, size_t n)
{
    return read_attr_typed(f, obj, objname, name, H5T_STRING, -1, out, n);
}

cnn_status cnn_h5_write_fields(const cnn_h5 *f, hid_t obj, const char *objname,
                               const cnn_h5_field *fields, int n, const void *base)
{
    cnn_status st = CNN_OK;
    for (int i = 0; i < n && !st; i++)
        st = cnn_h5_write_attr(f, obj, objname, fields[i].name, fields[i].kind,
                               (const char *)base + fields[i].offset);
    return st;
}

cnn_status cnn_h5_read_fields(const cnn_h5 *f, hid_t obj, const char *objname,
                              const cnn_h5_field *fields, int n, void *base)
{
    cnn_status st = CNN_OK;
    for (int i = 0; i < n && !st; i++)
        st = cnn_h5_read_attr(f, obj, objname, fields[i].name, fields[i].kind,
                              (char *)base + fields[i].offset);
    return st;
}

/* ---- writing groups and datasets ---------------------------------------- */

cnn_status cnn_h5_make_group(const cnn_h5 *f, const char *obj, hid_t *out)
{
    hid_t g = H5Gcreate2(f->id, obj, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (out)
        *out = g;
    if (g < 0)
        return cnn_h5_fail(f, CNN_ERR_IO, "cannot create group %s", obj);
    if (!out)
        H5Gclose(g);
    return CNN_OK;
}

cnn_status cnn_h5_write_dataset(const cnn_h5 *f, const char *obj, hid_t ftype, hid_t mtype,
                                int ndim, const hsize_t *dims, const void *data)
{
    hsize_t chunk[4], bytes = H5Tget_size(ftype);
    for (int i = 0; i < ndim; i++)
        bytes *= (chunk[i] = dims[i]);
    const int compact = H5Tget_class(ftype) == H5T_STRING && bytes <= COMPACT_MAX_BYTES;
    const int chunked = !compact && ndim > 0 && bytes > 0;
    for (int i = 0; i < ndim && bytes > CHUNK_MAX_BYTES; i++)
        while (chunk[i] > 1 && bytes > CHUNK_MAX_BYTES) {
            bytes = bytes / chunk[i] * ((chunk[i] + 1) / 2);
            chunk[i] = (chunk[i] + 1) / 2;
        }
    hid_t space = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR),
          dcpl = H5Pcreate(H5P_DATASET_CREATE), ds = -1;
    cnn_status st = CNN_OK;
    if (space < 0 || dcpl < 0 || (compact && H5Pset_layout(dcpl, H5D_COMPACT) < 0) ||
        (chunked && (H5Pset_chunk(dcpl, ndim, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0)) ||
        (ds = H5Dcreate2(f->id, obj, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0 ||
        (bytes > 0 && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
        st = cnn_h5_fail(f, CNN_ERR_IO, "cannot write %s", obj);
    if (ds >= 0)
        H5Dclose(ds);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

cnn_status cnn_h5_write_strings(const cnn_h5 *f, const char *obj, const char *const *s, int n)
{
    const int count = n < 0 ? 1 : n;
    size_t len = 0;
    for (int i = 0; i < count; i++)
        if (strlen(s[i]) > len)
            len = strlen(s[i]);
    char *buf = calloc((size_t)(count ? count : 1), len + 1);
    hid_t t = string_type(len);
    cnn_status st;
    if (!buf)
        st = cnn_error_set(f->err, CNN_ERR_NOMEM, "%s: out of memory writing %s", f->path, obj);
    else if (t < 0)
        st = cnn_h5_fail(f, CNN_ERR_IO, "cannot make a string type for %s", obj);
    else {
        for (int i = 0; i < count; i++)
            memcpy(buf + (size_t)i * (len + 1), s[i], strlen(s[i]));
        hsize_t dims[1] = {(hsize_t)count};
        st = cnn_h5_write_dataset(f, obj, t, t, n < 0 ? 0 : 1, dims, buf);
    }
    if (t >= 0)
        H5Tclose(t);
    free(buf);
    return st;
}

/* ---- reading groups and datasets ---------------------------------------- */

htri_t cnn_h5_exists(hid_t file, const char *obj)
{
    char buf[OBJ_MAX];
    if (snprintf(buf, sizeof buf, "%s", obj) >= (int)sizeof buf)
        return 0;
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != 0)
            continue;
        char c = *p;
        *p = 0;
        htri_t e = H5Lexists(file, buf, H5P_DEFAULT);
        *p = c;
        if (e <= 0 || !c)
            return e;
    }
}

cnn_status cnn_h5_require(const cnn_h5 *f, const char *obj, const char *kind)
{
    htri_t e = cnn_h5_exists(f->id, obj);
    if (e < 0)
        return cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot look up %s", obj);
    if (e == 0)
        return cnn_error_set(f->err, CNN_ERR_FORMAT, "%s: missing %s %s", f->path, kind, obj);
    return CNN_OK;
}

cnn_status cnn_h5_open_group(const cnn_h5 *f, const char *obj, hid_t *out)
{
    *out = -1;
    cnn_status st = cnn_h5_require(f, obj, "group");
    if (st)
        return st;
    if ((*out = H5Gopen2(f->id, obj, H5P_DEFAULT)) < 0)
        return cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot open group %s", obj);
    return CNN_OK;
}

cnn_status cnn_h5_open_dataset(const cnn_h5 *f, const char *obj, H5T_class_t cls, int ndim,
                               hsize_t *dims, hid_t *out)
{
    *out = -1;
    cnn_status st = cnn_h5_require(f, obj, "dataset");
    if (st)
        return st;
    hid_t ds = H5Dopen2(f->id, obj, H5P_DEFAULT), t = -1, space = -1;
    int rank = -1;
    if (ds < 0 || (t = H5Dget_type(ds)) < 0 || (space = H5Dget_space(ds)) < 0 ||
        (rank = H5Sget_simple_extent_ndims(space)) < 0)
        st = cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot open dataset %s", obj);
    else if (H5Tget_class(t) != cls || (cls == H5T_STRING && H5Tis_variable_str(t) != 0))
        st = cnn_error_set(f->err, CNN_ERR_FORMAT, "%s: %s is not of %s type", f->path, obj,
                           cls == H5T_STRING ? "fixed-length string"
                           : cls == H5T_FLOAT ? "floating-point"
                                              : "integer");
    else if (rank != ndim) {
        hsize_t d[H5S_MAX_RANK];
        char have[128];
        H5Sget_simple_extent_dims(space, d, NULL);
        cnn_h5_fmt_dims(have, sizeof have, rank, d);
        st = cnn_error_set(f->err, CNN_ERR_SHAPE, "%s: %s has shape %s, expected %d dimensions",
                           f->path, obj, have, ndim);
    } else
        H5Sget_simple_extent_dims(space, dims, NULL);
    if (space >= 0)
        H5Sclose(space);
    if (t >= 0)
        H5Tclose(t);
    if (st && ds >= 0)
        H5Dclose(ds);
    else
        *out = ds;
    return st;
}

cnn_status cnn_h5_read_dataset(const cnn_h5 *f, const char *obj, H5T_class_t cls, hid_t mtype,
                               int ndim, const hsize_t *want, const char *whose, void *buf)
{
    hsize_t dims[4];
    hid_t ds;
    cnn_status st = cnn_h5_open_dataset(f, obj, cls, ndim, dims, &ds);
    if (st)
        return st;
    hsize_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= want[i];
    if (memcmp(dims, want, (size_t)ndim * sizeof *dims) != 0) {
        char have[128], exp[128];
        cnn_h5_fmt_dims(have, sizeof have, ndim, dims);
        cnn_h5_fmt_dims(exp, sizeof exp, ndim, want);
        st = cnn_error_set(f->err, CNN_ERR_SHAPE, "%s: %s has shape %s but %s is %s", f->path,
                           obj, have, whose, exp);
    } else if (count > 0 && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        cnn_h5_reason r = cnn_h5_reason_now();
        if (r.checksum)
            st = cnn_error_set(f->err, CNN_ERR_FORMAT,
                               "%s: checksum mismatch in %s (the file is damaged)", f->path, obj);
        else
            st = cnn_error_set(f->err, CNN_ERR_FORMAT, "%s: cannot read %s: %s", f->path, obj,
                               reason_text(&r));
    }
    H5Dclose(ds);
    return st;
}

cnn_status cnn_h5_read_strings(const cnn_h5 *f, const char *obj, char **out, size_t *size,
                               hsize_t *n)
{
    hsize_t dims[1] = {1};
    hid_t ds, t = -1;
    cnn_status st = cnn_h5_open_dataset(f, obj, H5T_STRING, n ? 1 : 0, dims, &ds);
    if (st)
        return st;
    if ((t = H5Dget_type(ds)) < 0) {
        st = cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot read the type of %s", obj);
        H5Dclose(ds);
        return st;
    }
    *size = H5Tget_size(t);
    char *buf = dims[0] < (1u << 24) ? calloc(dims[0] * *size + 1, 1) : NULL;
    if (!buf)
        st = cnn_error_set(f->err, CNN_ERR_NOMEM, "%s: out of memory reading %s", f->path, obj);
    else if (dims[0] > 0 && H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        st = cnn_h5_fail(f, CNN_ERR_FORMAT, "cannot read %s", obj);
    H5Tclose(t);
    H5Dclose(ds);
    if (st) {
        free(buf);
        return st;
    }
    *out = buf;
    if (n)
        *n = dims[0];
    return CNN_OK;
}
