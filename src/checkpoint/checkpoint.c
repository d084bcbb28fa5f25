/* checkpoint.c - training checkpoints as HDF5 files (layout and contract in
 * cnn/checkpoint.h). The one file of the library that includes <hdf5.h>.
 *
 * Every failing HDF5 call becomes one line "FILE: what: why", where why is
 * the innermost message of HDF5's error stack, taken before any other HDF5
 * call clears it. Files are opened with H5F_CLOSE_STRONG, so closing the
 * file also closes whatever an error path left open. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>

#include "cnn/checkpoint.h"

#ifndef CNN_VERSION
#define CNN_VERSION "0.1.0"
#endif
#define PRODUCER "cnn-train " CNN_VERSION

enum { PATH_MAX_LEN = 4096, OBJ_MAX = 512, ATTR_STR_MAX = 64 };
#define CHUNK_MAX_BYTES ((hsize_t)1 << 30) /* HDF5 caps a chunk at 4 GiB */
#define COMPACT_MAX_BYTES 60000            /* an object header holds < 64 kB */

/* An open checkpoint file and where its errors go. */
typedef struct ckfile {
    hid_t id;
    const char *path; /* the name messages show (the final name when writing) */
    cnn_error *err;
} ckfile;

/* ---- errors ------------------------------------------------------------- */

typedef struct h5_reason {
    char text[256]; /* innermost non-empty description */
    int checksum;   /* some level of the stack reports a checksum failure */
} h5_reason;

static herr_t reason_walk(unsigned n, const H5E_error2_t *e, void *data)
{
    h5_reason *r = data;
    const char *d = e->desc ? e->desc : "";
    if (!r->text[0] && d[0])
        snprintf(r->text, sizeof r->text, "%s", d);
    if (strstr(d, "checksum") || strstr(d, "Fletcher32"))
        r->checksum = 1;
    return 0;
}

/* Must run right after the failing call: the next HDF5 call clears the stack. */
static h5_reason reason_now(void)
{
    h5_reason r = {{0}, 0};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, reason_walk, &r);
    if (!r.text[0])
        snprintf(r.text, sizeof r.text, "HDF5 reports no reason");
    return r;
}

/* "FILE: <fmt>: <HDF5's reason>"; call right after the failing HDF5 call. */
static cnn_status h5_fail(const ckfile *ck, cnn_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static cnn_status h5_fail(const ckfile *ck, cnn_status s, const char *fmt, ...)
{
    h5_reason r = reason_now();
    char what[CNN_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (r.checksum)
        return cnn_error_set(ck->err, CNN_ERR_FORMAT,
                             "%s: %s: checksum mismatch (the file is damaged)", ck->path, what);
    return cnn_error_set(ck->err, s, "%s: %s: %s", ck->path, what, r.text);
}

/* HDF5 prints its error stack by default, and after some damaged files
 * also a complaint at exit; each public call turns that printing off for
 * good (errors reach the caller as cnn_error, never on stderr). */
static void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* "32x16x3x3" */
static void fmt_dims(char *buf, size_t n, int ndim, const hsize_t *dims)
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

/* File access: the 1.10 format, close-strong, and no file locking (the
 * atomic rename already keeps readers off half-written files, and flock
 * fails on some cluster file systems). The 1.10 format checksums all
 * metadata, the chunk index of a one-chunk tensor included; with the 1.8
 * format the v1 B-tree chunk index carries no checksum, and a flipped byte
 * there can go unnoticed. */
static hid_t make_fapl(void)
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

static cnn_status read_attr(const ckfile *ck, hid_t obj, const char *objname, const char *name,
                            H5T_class_t cls, hid_t mtype, void *out);

/* Opens path read-only and checks that it is a checkpoint this program can
 * read. ck->id < 0 on failure. */
static cnn_status open_checkpoint(ckfile *ck, const char *path, cnn_error *err)
{
    *ck = (ckfile){-1, path, err};
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int is_h5 = has_hdf5_signature(f);
    fclose(f);
    if (!is_h5)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: not an HDF5 file (no HDF5 signature)",
                             path);
    hid_t fapl = make_fapl();
    if (fapl < 0)
        return h5_fail(ck, CNN_ERR_IO, "cannot set up file access");
    hid_t id = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (id < 0) {
        h5_reason r = reason_now();
        H5Pclose(fapl);
        const char *why = strstr(r.text, "truncated file: ");
        if (why)
            return cnn_error_set(err, CNN_ERR_FORMAT, "%s: truncated file (%s)", path, why + 16);
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: damaged HDF5 file: %s", path, r.text);
    }
    H5Pclose(fapl);
    ck->id = id;
    int version = 0;
    cnn_status st;
    htri_t has_version = H5Aexists(id, "format_version");
    if (has_version < 0)
        st = h5_fail(ck, CNN_ERR_FORMAT, "cannot read the root group");
    else if (!has_version)
        st = cnn_error_set(err, CNN_ERR_FORMAT,
                           "%s: not a cnn-train checkpoint (no format_version attribute)", path);
    else if ((st = read_attr(ck, id, "/", "format_version", H5T_INTEGER, H5T_NATIVE_INT,
                             &version)) == CNN_OK &&
             (version < 1 || version > CNN_CHECKPOINT_FORMAT_VERSION))
        st = cnn_error_set(err, CNN_ERR_FORMAT,
                           "%s: format_version %d is %s this program reads (%d)", path, version,
                           version < 1 ? "not a version" : "newer than the newest",
                           CNN_CHECKPOINT_FORMAT_VERSION);
    if (st) {
        H5Fclose(id);
        ck->id = -1;
    }
    return st;
}

static void close_checkpoint(ckfile *ck)
{
    if (ck->id >= 0)
        H5Fclose(ck->id);
    ck->id = -1;
}

/* ---- writing ------------------------------------------------------------ */

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

/* A scalar attribute of obj (objname for messages). */
static cnn_status write_attr(const ckfile *ck, hid_t obj, const char *objname, const char *name,
                             hid_t ftype, hid_t mtype, const void *value)
{
    hid_t space = H5Screate(H5S_SCALAR), a = -1;
    cnn_status st = CNN_OK;
    if (space < 0 || (a = H5Acreate2(obj, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        H5Awrite(a, mtype, value) < 0)
        st = h5_fail(ck, CNN_ERR_IO, "cannot write attribute %s of %s", name, objname);
    if (a >= 0)
        H5Aclose(a);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

static cnn_status write_attr_string(const ckfile *ck, hid_t obj, const char *objname,
                                    const char *name, const char *value)
{
    hid_t t = string_type(strlen(value));
    if (t < 0)
        return h5_fail(ck, CNN_ERR_IO, "cannot make a string type");
    cnn_status st = write_attr(ck, obj, objname, name, t, t, value);
    H5Tclose(t);
    return st;
}

static cnn_status write_attr_double(const ckfile *ck, hid_t obj, const char *objname,
                                    const char *name, double v)
{
    return write_attr(ck, obj, objname, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &v);
}

static cnn_status write_attr_int64(const ckfile *ck, hid_t obj, const char *objname,
                                   const char *name, int64_t v)
{
    return write_attr(ck, obj, objname, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &v);
}

static cnn_status write_attr_int(const ckfile *ck, hid_t obj, const char *objname,
                                 const char *name, int v)
{
    return write_attr(ck, obj, objname, name, H5T_STD_I32LE, H5T_NATIVE_INT, &v);
}

/* Dataset `obj` (an absolute path whose parent group exists) of ndim dims
 * (0: a scalar), written from data. Its layout makes every byte checked on
 * read: strings up to COMPACT_MAX_BYTES are kept inside the object header
 * (checksummed metadata); other non-empty arrays are chunked with the
 * Fletcher32 filter, a chunk being the whole tensor up to CHUNK_MAX_BYTES,
 * then split along the leading axes. */
static cnn_status write_dataset(const ckfile *ck, const char *obj, hid_t ftype, hid_t mtype,
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
        (ds = H5Dcreate2(ck->id, obj, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT)) < 0 ||
        (bytes > 0 && H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0))
        st = h5_fail(ck, CNN_ERR_IO, "cannot write %s", obj);
    if (ds >= 0)
        H5Dclose(ds);
    if (dcpl >= 0)
        H5Pclose(dcpl);
    if (space >= 0)
        H5Sclose(space);
    return st;
}

static cnn_status make_group(const ckfile *ck, const char *obj, hid_t *out)
{
    hid_t g = H5Gcreate2(ck->id, obj, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (out)
        *out = g;
    if (g < 0)
        return h5_fail(ck, CNN_ERR_IO, "cannot create group %s", obj);
    if (!out)
        H5Gclose(g);
    return CNN_OK;
}

/* root/<layer>/<param> for every parameter tensor, from buf (laid out as
 * model->params). */
static cnn_status write_tensors(const ckfile *ck, const char *root, const cnn_model *m,
                                const float *buf)
{
    char obj[OBJ_MAX];
    cnn_status st = make_group(ck, root, NULL);
    for (int i = 0; i < m->nlayers && !st; i++) {
        const cnn_layer *l = &m->layers[i];
        if (l->nparams == 0)
            continue;
        snprintf(obj, sizeof obj, "%s/%s", root, l->name);
        st = make_group(ck, obj, NULL);
        for (int p = 0; p < l->nparams && !st; p++) {
            const cnn_param *prm = &l->params[p];
            hsize_t dims[4];
            for (int d = 0; d < prm->ndim; d++)
                dims[d] = (hsize_t)prm->dims[d];
            snprintf(obj, sizeof obj, "%s/%s/%s", root, l->name, prm->name);
            st = write_dataset(ck, obj, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, prm->ndim, dims,
                               buf + prm->offset);
        }
    }
    return st;
}

/* History columns: epoch is int64, the rest float64; all 8 bytes wide. */
static const struct {
    const char *name;
    size_t offset;
    int is_int;
} history_columns[] = {
    {"epoch", offsetof(cnn_epoch_record, epoch), 1},
    {"loss", offsetof(cnn_epoch_record, loss), 0},
    {"accuracy", offsetof(cnn_epoch_record, accuracy), 0},
    {"val_loss", offsetof(cnn_epoch_record, val_loss), 0},
    {"val_accuracy", offsetof(cnn_epoch_record, val_accuracy), 0},
    {"lr", offsetof(cnn_epoch_record, lr), 0},
    {"seconds", offsetof(cnn_epoch_record, seconds), 0},
    {"images_per_sec", offsetof(cnn_epoch_record, images_per_sec), 0},
};
enum { NHISTORY = sizeof history_columns / sizeof *history_columns };
_Static_assert(sizeof(double) == 8 && sizeof(int64_t) == 8, "history columns are 8 bytes");

static cnn_status write_history(const ckfile *ck, const cnn_history *h)
{
    const int n = h ? h->n : 0;
    uint64_t *col = malloc((size_t)(n ? n : 1) * 8);
    if (!col)
        return cnn_error_set(ck->err, CNN_ERR_NOMEM, "%s: out of memory for the history",
                             ck->path);
    cnn_status st = make_group(ck, "/history", NULL);
    for (int c = 0; c < NHISTORY && !st; c++) {
        for (int r = 0; r < n; r++)
            memcpy(&col[r], (const char *)&h->rows[r] + history_columns[c].offset, 8);
        char obj[64];
        snprintf(obj, sizeof obj, "/history/%s", history_columns[c].name);
        hsize_t dims[1] = {(hsize_t)n};
        int i = history_columns[c].is_int;
        st = write_dataset(ck, obj, i ? H5T_STD_I64LE : H5T_IEEE_F64LE,
                           i ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, 1, dims, col);
    }
    free(col);
    return st;
}

static cnn_status write_optimizer(const ckfile *ck, const cnn_model *m, const cnn_optim *o)
{
    const cnn_optim_hparams *hp = &o->hp;
    const char *g = "/optimizer";
    hid_t grp;
    cnn_status st = make_group(ck, g, &grp);
    if (st)
        return st;
    if (!(st = write_attr_string(ck, grp, g, "type", cnn_optim_type_name(hp->type))) &&
        !(st = write_attr_double(ck, grp, g, "lr", hp->lr)) &&
        !(st = write_attr_double(ck, grp, g, "momentum", hp->momentum)) &&
        !(st = write_attr_int(ck, grp, g, "nesterov", hp->nesterov)) &&
        !(st = write_attr_double(ck, grp, g, "beta_1", hp->beta1)) &&
        !(st = write_attr_double(ck, grp, g, "beta_2", hp->beta2)) &&
        !(st = write_attr_double(ck, grp, g, "rho", hp->rho)) &&
        !(st = write_attr_double(ck, grp, g, "epsilon", hp->epsilon)) &&
        !(st = write_attr_double(ck, grp, g, "weight_decay", hp->weight_decay)) &&
        !(st = write_attr_int64(ck, grp, g, "step", o->step)))
        for (int k = 0; k < cnn_optim_nstate(o) && !st; k++) {
            char root[64];
            snprintf(root, sizeof root, "/optimizer/%s", cnn_optim_state_name(o, k));
            st = write_tensors(ck, root, m, o->state[k]);
        }
    H5Gclose(grp);
    return st;
}

static cnn_status write_state(const ckfile *ck, const cnn_train_state *s)
{
    const char *g = "/state";
    hid_t grp;
    cnn_status st = make_group(ck, g, &grp);
    if (st)
        return st;
    if (!(st = write_attr_int64(ck, grp, g, "epoch", s->epoch)) &&
        !(st = write_attr_int64(ck, grp, g, "step", s->step)) &&
        !(st = write_attr_int64(ck, grp, g, "global_step", s->global_step)) &&
        !(st = write_attr_int64(ck, grp, g, "samples_seen", s->samples_seen)) &&
        !(st = write_attr(ck, grp, g, "seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, &s->seed)) &&
        !(st = write_attr_int(ck, grp, g, "world", s->world)) &&
        !(st = write_attr_double(ck, grp, g, "best_val_accuracy", s->best_val_accuracy)) &&
        !(st = write_attr_double(ck, grp, g, "epoch_loss_sum", s->epoch_loss_sum)) &&
        !(st = write_attr_double(ck, grp, g, "epoch_correct", s->epoch_correct)))
        st = write_attr_double(ck, grp, g, "epoch_count", s->epoch_count);
    H5Gclose(grp);
    return st;
}

/* A string dataset: scalar (n < 0, the string s[0]) or 1-D of n strings,
 * fixed-length as long as the longest. */
static cnn_status write_strings(const ckfile *ck, const char *obj, const char *const *s, int n)
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
        st = cnn_error_set(ck->err, CNN_ERR_NOMEM, "%s: out of memory writing %s", ck->path,
                           obj);
    else if (t < 0)
        st = h5_fail(ck, CNN_ERR_IO, "cannot make a string type for %s", obj);
    else {
        for (int i = 0; i < count; i++)
            memcpy(buf + (size_t)i * (len + 1), s[i], strlen(s[i]));
        hsize_t dims[1] = {(hsize_t)count};
        st = write_dataset(ck, obj, t, t, n < 0 ? 0 : 1, dims, buf);
    }
    if (t >= 0)
        H5Tclose(t);
    free(buf);
    return st;
}

static cnn_status write_contents(const ckfile *ck, const cnn_model *m, const cnn_optim *o,
                                 const cnn_train_state *s, const cnn_history *h,
                                 const char *config_text, const char *const *class_names,
                                 int nclasses)
{
    cnn_status st;
    if ((st = write_attr_int(ck, ck->id, "/", "format_version", CNN_CHECKPOINT_FORMAT_VERSION)) ||
        (st = write_attr_string(ck, ck->id, "/", "producer", PRODUCER)) ||
        (st = write_strings(ck, "/config", &config_text, -1)) ||
        (st = write_tensors(ck, "/model", m, m->params)) || (st = write_optimizer(ck, m, o)) ||
        (st = write_state(ck, s)) || (st = write_history(ck, h)))
        return st;
    if (nclasses > 0)
        st = write_strings(ck, "/classes", class_names, nclasses);
    return st;
}

/* fsync() of a file or directory; 0 or an errno. A directory that cannot
 * be synced (EINVAL: the file system does not support it) is not an error. */
static int sync_path(const char *p, int is_dir)
{
    int fd = open(p, is_dir ? O_RDONLY | O_DIRECTORY : O_RDONLY);
    if (fd < 0)
        return errno;
    int e = fsync(fd) == 0 || (is_dir && errno == EINVAL) ? 0 : errno;
    close(fd);
    return e;
}

static cnn_status check_write_args(const char *path, const cnn_model *m, const cnn_optim *o,
                                   const cnn_train_state *s, const char *config_text,
                                   const char *const *class_names, int nclasses, cnn_error *err)
{
    if (!path || !m || !o || !s || !config_text || nclasses < 0 || (nclasses > 0 && !class_names))
        return cnn_error_set(err, CNN_ERR_ARG,
                             "checkpoint write: path, model, optimizer, state and config text "
                             "are required (and class names when nclasses > 0)");
    if (o->n != m->nparams)
        return cnn_error_set(err, CNN_ERR_ARG,
                             "%s: the optimizer holds %zu floats but the model has %zu "
                             "parameters",
                             path, o->n, m->nparams);
    for (int i = 0; i < nclasses; i++)
        if (!class_names[i])
            return cnn_error_set(err, CNN_ERR_ARG, "%s: class name %d is NULL", path, i);
    for (int i = 0; i < m->nlayers; i++) {
        const char *name = m->layers[i].name;
        if (m->layers[i].nparams && (strchr(name, '/') || strcmp(name, ".") == 0))
            return cnn_error_set(err, CNN_ERR_ARG,
                                 "%s: layer name '%s' cannot name an HDF5 group (no '/' or '.')",
                                 path, name);
    }
    return CNN_OK;
}

static cnn_status write_impl(const char *path, const cnn_model *m, const cnn_optim *o,
                             const cnn_train_state *s, const cnn_history *h,
                             const char *config_text, const char *const *class_names,
                             int nclasses, cnn_error *err)
{
    cnn_status st = check_write_args(path, m, o, s, config_text, class_names, nclasses, err);
    if (st)
        return st;
    /* DIR/.NAME.tmp.PID, in the final file's directory so rename() is atomic */
    char dir[PATH_MAX_LEN] = ".", tmp[PATH_MAX_LEN];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: names a directory, not a file", path);
    if (slash) /* "/x.h5" lives in "/" */
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (snprintf(tmp, sizeof tmp, "%.*s.%s.tmp.%ld", (int)(base - path), path, base,
                 (long)getpid()) >= (int)sizeof tmp)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: path too long", path);

    ckfile ck = {-1, path, err};
    hid_t fapl = make_fapl();
    if (fapl < 0)
        return h5_fail(&ck, CNN_ERR_IO, "cannot set up file access");
    ck.id = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (ck.id < 0) {
        st = h5_fail(&ck, CNN_ERR_IO, "cannot create the temporary file %s", tmp);
        H5Pclose(fapl);
        unlink(tmp);
        return st;
    }
    H5Pclose(fapl);
    st = write_contents(&ck, m, o, s, h, config_text, class_names, nclasses);
    if (!st && H5Fflush(ck.id, H5F_SCOPE_GLOBAL) < 0)
        st = h5_fail(&ck, CNN_ERR_IO, "cannot flush %s", tmp);
    if (H5Fclose(ck.id) < 0 && !st)
        st = h5_fail(&ck, CNN_ERR_IO, "cannot close %s", tmp);
    int e;
    if (!st && (e = sync_path(tmp, 0)))
        st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot sync %s: %s", path, tmp, strerror(e));
    if (!st && rename(tmp, path) != 0)
        st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot rename %s over it: %s", path, tmp,
                           strerror(errno));
    if (st) {
        unlink(tmp);
        return st;
    }
    if ((e = sync_path(dir, 1)))
        return cnn_error_set(err, CNN_ERR_IO, "%s: written, but syncing directory %s failed: %s",
                             path, dir, strerror(e));
    return CNN_OK;
}

cnn_status cnn_checkpoint_write(const char *path, const cnn_model *m, const cnn_optim *o,
                                const cnn_train_state *s, const cnn_history *h,
                                const char *config_text, const char *const *class_names,
                                int nclasses, cnn_error *err)
{
    h5_quiet();
    return write_impl(path, m, o, s, h, config_text, class_names, nclasses, err);
}

/* ---- reading ------------------------------------------------------------ */

/* Whether every component of the absolute path obj exists (H5Lexists
 * alone fails when an intermediate group is missing); < 0 when HDF5 fails. */
static htri_t object_exists(hid_t file, const char *obj)
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

/* CNN_OK when obj exists; otherwise a message naming it as a `kind`. */
static cnn_status require(const ckfile *ck, const char *obj, const char *kind)
{
    htri_t e = object_exists(ck->id, obj);
    if (e < 0)
        return h5_fail(ck, CNN_ERR_FORMAT, "cannot look up %s", obj);
    if (e == 0)
        return cnn_error_set(ck->err, CNN_ERR_FORMAT, "%s: missing %s %s", ck->path, kind, obj);
    return CNN_OK;
}

static cnn_status open_group(const ckfile *ck, const char *obj, hid_t *out)
{
    *out = -1;
    cnn_status st = require(ck, obj, "group");
    if (st)
        return st;
    if ((*out = H5Gopen2(ck->id, obj, H5P_DEFAULT)) < 0)
        return h5_fail(ck, CNN_ERR_FORMAT, "cannot open group %s", obj);
    return CNN_OK;
}

/* A scalar attribute of class cls, read as mtype (checked before reading). */
static cnn_status read_attr(const ckfile *ck, hid_t obj, const char *objname, const char *name,
                            H5T_class_t cls, hid_t mtype, void *out)
{
    htri_t e = H5Aexists(obj, name);
    if (e < 0)
        return h5_fail(ck, CNN_ERR_FORMAT, "cannot look up attribute %s of %s", name, objname);
    if (e == 0)
        return cnn_error_set(ck->err, CNN_ERR_FORMAT, "%s: %s has no attribute %s", ck->path,
                             objname, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT), t = -1, space = -1;
    cnn_status st = CNN_OK;
    if (a < 0 || (t = H5Aget_type(a)) < 0 || (space = H5Aget_space(a)) < 0)
        st = h5_fail(ck, CNN_ERR_FORMAT, "cannot open attribute %s of %s", name, objname);
    else if (H5Tget_class(t) != cls || H5Sget_simple_extent_npoints(space) != 1 ||
             (cls == H5T_STRING && H5Tis_variable_str(t) != 0))
        st = cnn_error_set(ck->err, CNN_ERR_FORMAT,
                           "%s: attribute %s of %s is not a single %s", ck->path, name, objname,
                           cls == H5T_STRING ? "fixed-length string"
                           : cls == H5T_FLOAT ? "float"
                                              : "integer");
    else if (cls == H5T_STRING) {
        /* out is a char[ATTR_STR_MAX]; read via the file's own type (any length) */
        size_t size = H5Tget_size(t);
        char *buf = calloc(size + 1, 1);
        if (!buf)
            st = cnn_error_set(ck->err, CNN_ERR_NOMEM, "%s: out of memory", ck->path);
        else if (H5Aread(a, t, buf) < 0)
            st = h5_fail(ck, CNN_ERR_FORMAT, "cannot read attribute %s of %s", name, objname);
        else
            snprintf(out, ATTR_STR_MAX, "%s", buf);
        free(buf);
    } else if (H5Aread(a, mtype, out) < 0)
        st = h5_fail(ck, CNN_ERR_FORMAT, "cannot read attribute %s of %s", name, objname);
    if (space >= 0)
        H5Sclose(space);
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return st;
}

/* Opens dataset obj and checks its type class and rank; *dims receives its
 * shape. Nothing is read. */
static cnn_status open_dataset(const ckfile *ck, const char *obj, H5T_class_t cls, int ndim,
                               hsize_t *dims, hid_t *out)
{
    *out = -1;
    cnn_status st = require(ck, obj, "dataset");
    if (st)
        return st;
    hid_t ds = H5Dopen2(ck->id, obj, H5P_DEFAULT), t = -1, space = -1;
    int rank = -1;
    if (ds < 0 || (t = H5Dget_type(ds)) < 0 || (space = H5Dget_space(ds)) < 0 ||
        (rank = H5Sget_simple_extent_ndims(space)) < 0)
        st = h5_fail(ck, CNN_ERR_FORMAT, "cannot open dataset %s", obj);
    else if (H5Tget_class(t) != cls || (cls == H5T_STRING && H5Tis_variable_str(t) != 0))
        st = cnn_error_set(ck->err, CNN_ERR_FORMAT, "%s: %s is not of %s type", ck->path, obj,
                           cls == H5T_STRING ? "fixed-length string"
                           : cls == H5T_FLOAT ? "floating-point"
                                              : "integer");
    else if (rank != ndim) {
        hsize_t d[H5S_MAX_RANK];
        char have[128];
        H5Sget_simple_extent_dims(space, d, NULL);
        fmt_dims(have, sizeof have, rank, d);
        st = cnn_error_set(ck->err, CNN_ERR_SHAPE, "%s: %s has shape %s, expected %d dimensions",
                           ck->path, obj, have, ndim);
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

/* Reads dataset obj of shape want (ndim dims) as mtype into buf, after
 * checking class and shape; whose names the expected shape in messages
 * ("the model's"). A read failure that HDF5 blames on a checksum is
 * reported as such. */
static cnn_status read_dataset(const ckfile *ck, const char *obj, H5T_class_t cls, hid_t mtype,
                               int ndim, const hsize_t *want, const char *whose, void *buf)
{
    hsize_t dims[4];
    hid_t ds;
    cnn_status st = open_dataset(ck, obj, cls, ndim, dims, &ds);
    if (st)
        return st;
    hsize_t count = 1;
    for (int i = 0; i < ndim; i++)
        count *= want[i];
    if (memcmp(dims, want, (size_t)ndim * sizeof *dims) != 0) {
        char have[128], exp[128];
        fmt_dims(have, sizeof have, ndim, dims);
        fmt_dims(exp, sizeof exp, ndim, want);
        st = cnn_error_set(ck->err, CNN_ERR_SHAPE, "%s: %s has shape %s but %s is %s", ck->path,
                           obj, have, whose, exp);
    } else if (count > 0 && H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        h5_reason r = reason_now();
        if (r.checksum)
            st = cnn_error_set(ck->err, CNN_ERR_FORMAT,
                               "%s: checksum mismatch in %s (the file is damaged)", ck->path, obj);
        else
            st = cnn_error_set(ck->err, CNN_ERR_FORMAT, "%s: cannot read %s: %s", ck->path, obj,
                               r.text);
    }
    H5Dclose(ds);
    return st;
}

/* The file must not hold layers or tensors the model lacks: a checkpoint of
 * another network is an error, not a partial load. */
static cnn_status check_members(const ckfile *ck, const char *root, const cnn_model *m)
{
    hid_t g;
    H5G_info_t info;
    cnn_status st = open_group(ck, root, &g);
    if (st)
        return st;
    if (H5Gget_info(g, &info) < 0)
        st = h5_fail(ck, CNN_ERR_FORMAT, "cannot list %s", root);
    for (hsize_t i = 0; !st && i < info.nlinks; i++) {
        char name[CNN_NAME_MAX + 1] = "", obj[OBJ_MAX];
        H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                           H5P_DEFAULT);
        const cnn_layer *l = NULL;
        for (int k = 0; k < m->nlayers && !l; k++)
            if (m->layers[k].nparams && strcmp(m->layers[k].name, name) == 0)
                l = &m->layers[k];
        if (!l) {
            st = cnn_error_set(ck->err, CNN_ERR_SHAPE,
                               "%s: %s/%s is not a layer with parameters in the model (the "
                               "checkpoint was written for another network)",
                               ck->path, root, name);
            break;
        }
        snprintf(obj, sizeof obj, "%s/%s", root, name);
        hid_t lg;
        H5G_info_t linfo;
        if ((st = open_group(ck, obj, &lg)))
            break;
        if (H5Gget_info(lg, &linfo) < 0)
            st = h5_fail(ck, CNN_ERR_FORMAT, "cannot list %s", obj);
        else if (linfo.nlinks > (hsize_t)l->nparams)
            st = cnn_error_set(ck->err, CNN_ERR_SHAPE,
                               "%s: %s holds %llu tensors but the model's layer '%s' has %d",
                               ck->path, obj, (unsigned long long)linfo.nlinks, l->name,
                               l->nparams);
        H5Gclose(lg);
    }
    H5Gclose(g);
    return st;
}

/* root/<layer>/<param> into buf (laid out as model->params). */
static cnn_status read_tensors(const ckfile *ck, const char *root, const cnn_model *m, float *buf)
{
    char obj[OBJ_MAX];
    cnn_status st = CNN_OK;
    for (int i = 0; i < m->nlayers && !st; i++) {
        const cnn_layer *l = &m->layers[i];
        for (int p = 0; p < l->nparams && !st; p++) {
            const cnn_param *prm = &l->params[p];
            hsize_t want[4];
            for (int d = 0; d < prm->ndim; d++)
                want[d] = (hsize_t)prm->dims[d];
            snprintf(obj, sizeof obj, "%s/%s/%s", root, l->name, prm->name);
            st = read_dataset(ck, obj, H5T_FLOAT, H5T_NATIVE_FLOAT, prm->ndim, want,
                              "the model's", buf + prm->offset);
        }
    }
    return st;
}

/* /optimizer's attributes; *step too when step is not NULL. */
static cnn_status read_hparams(const ckfile *ck, cnn_optim_hparams *hp, int64_t *step)
{
    const char *g = "/optimizer";
    hid_t grp;
    char type[ATTR_STR_MAX];
    cnn_status st = open_group(ck, g, &grp);
    if (st)
        return st;
    cnn_optim_hparams h = {0};
    if (!(st = read_attr(ck, grp, g, "type", H5T_STRING, -1, type))) {
        int t = cnn_optim_type_from_name(type);
        if (t < 0)
            st = cnn_error_set(ck->err, CNN_ERR_FORMAT, "%s: unknown optimizer type '%s'",
                               ck->path, type);
        h.type = (cnn_optim_type)t;
    }
    const hid_t D = H5T_NATIVE_DOUBLE;
    const H5T_class_t F = H5T_FLOAT;
    if (!st && !(st = read_attr(ck, grp, g, "lr", F, D, &h.lr)) &&
        !(st = read_attr(ck, grp, g, "momentum", F, D, &h.momentum)) &&
        !(st = read_attr(ck, grp, g, "nesterov", H5T_INTEGER, H5T_NATIVE_INT, &h.nesterov)) &&
        !(st = read_attr(ck, grp, g, "beta_1", F, D, &h.beta1)) &&
        !(st = read_attr(ck, grp, g, "beta_2", F, D, &h.beta2)) &&
        !(st = read_attr(ck, grp, g, "rho", F, D, &h.rho)) &&
        !(st = read_attr(ck, grp, g, "epsilon", F, D, &h.epsilon)) &&
        !(st = read_attr(ck, grp, g, "weight_decay", F, D, &h.weight_decay)) && step)
        st = read_attr(ck, grp, g, "step", H5T_INTEGER, H5T_NATIVE_INT64, step);
    H5Gclose(grp);
    if (!st)
        *hp = h;
    return st;
}

static cnn_status read_state(const ckfile *ck, cnn_train_state *s)
{
    const char *g = "/state";
    const hid_t I = H5T_NATIVE_INT64;
    const H5T_class_t N = H5T_INTEGER;
    hid_t grp;
    cnn_train_state t = {0};
    cnn_status st = open_group(ck, g, &grp);
    if (st)
        return st;
    if (!(st = read_attr(ck, grp, g, "epoch", N, I, &t.epoch)) &&
        !(st = read_attr(ck, grp, g, "step", N, I, &t.step)) &&
        !(st = read_attr(ck, grp, g, "global_step", N, I, &t.global_step)) &&
        !(st = read_attr(ck, grp, g, "samples_seen", N, I, &t.samples_seen)) &&
        !(st = read_attr(ck, grp, g, "seed", N, H5T_NATIVE_UINT64, &t.seed)) &&
        !(st = read_attr(ck, grp, g, "world", N, H5T_NATIVE_INT, &t.world)) &&
        !(st = read_attr(ck, grp, g, "best_val_accuracy", H5T_FLOAT, H5T_NATIVE_DOUBLE,
                         &t.best_val_accuracy)) &&
        !(st = read_attr(ck, grp, g, "epoch_loss_sum", H5T_FLOAT, H5T_NATIVE_DOUBLE,
                         &t.epoch_loss_sum)) &&
        !(st = read_attr(ck, grp, g, "epoch_correct", H5T_FLOAT, H5T_NATIVE_DOUBLE,
                         &t.epoch_correct)))
        st = read_attr(ck, grp, g, "epoch_count", H5T_FLOAT, H5T_NATIVE_DOUBLE, &t.epoch_count);
    H5Gclose(grp);
    if (!st)
        *s = t;
    return st;
}

/* /history into a new history *out (the caller frees it). */
static cnn_status read_history(const ckfile *ck, cnn_history *out)
{
    hsize_t n;
    hid_t ds;
    cnn_status st = open_dataset(ck, "/history/epoch", H5T_INTEGER, 1, &n, &ds);
    if (st)
        return st;
    H5Dclose(ds);
    if (n > (1u << 30))
        return cnn_error_set(ck->err, CNN_ERR_FORMAT, "%s: /history has %llu rows", ck->path,
                             (unsigned long long)n);
    cnn_history h = {calloc(n ? n : 1, sizeof *h.rows), (int)n, (int)(n ? n : 1)};
    uint64_t *col = malloc((n ? n : 1) * 8);
    if (!h.rows || !col)
        st = cnn_error_set(ck->err, CNN_ERR_NOMEM, "%s: out of memory for the history", ck->path);
    for (int c = 0; c < NHISTORY && !st; c++) {
        char obj[64];
        int i = history_columns[c].is_int;
        snprintf(obj, sizeof obj, "/history/%s", history_columns[c].name);
        st = read_dataset(ck, obj, i ? H5T_INTEGER : H5T_FLOAT,
                          i ? H5T_NATIVE_INT64 : H5T_NATIVE_DOUBLE, 1, &n, "/history/epoch's",
                          col);
        for (hsize_t r = 0; r < n && !st; r++)
            memcpy((char *)&h.rows[r] + history_columns[c].offset, &col[r], 8);
    }
    free(col);
    if (st)
        cnn_history_free(&h);
    else
        *out = h;
    return st;
}

/* Buffers of a load, filled completely before anything is copied out. */
typedef struct load_tmp {
    float *params;
    float *state[CNN_OPTIM_MAX_STATE]; /* the run's state buffers, read from the file */
    int file_nstate;                   /* state buffers the file holds */
    int64_t step;
    cnn_train_state s;
    cnn_history h;
} load_tmp;

static float *alloc_floats(size_t n) { return malloc((n ? n : 1) * sizeof(float)); }

/* The file's optimizer must be of o's type; each state buffer the file
 * holds is checked against the model, and read when o has it too. */
static cnn_status load_optimizer(const ckfile *ck, const cnn_model *m, const cnn_optim *o,
                                 load_tmp *t)
{
    cnn_optim_hparams file;
    cnn_status st = read_hparams(ck, &file, &t->step);
    if (st)
        return st;
    if (file.type != o->hp.type)
        return cnn_error_set(ck->err, CNN_ERR_FORMAT,
                             "%s: the checkpoint's optimizer is %s but the run's is %s",
                             ck->path, cnn_optim_type_name(file.type),
                             cnn_optim_type_name(o->hp.type));
    t->file_nstate = cnn_optim_hparams_nstate(&file);
    for (int k = 0; k < cnn_optim_nstate(o); k++)
        if (!(t->state[k] = alloc_floats(m->nparams)))
            return cnn_error_set(ck->err, CNN_ERR_NOMEM, "%s: out of memory for optimizer state",
                                 ck->path);
    /* buffer k of the file is named as buffer k of an optimizer with its hyper-parameters */
    const cnn_optim as_file = {.hp = file, .nstate = t->file_nstate};
    for (int k = 0; k < t->file_nstate && !st; k++) {
        char root[64];
        snprintf(root, sizeof root, "/optimizer/%s", cnn_optim_state_name(&as_file, k));
        if (!(st = check_members(ck, root, m)) && k < cnn_optim_nstate(o))
            st = read_tensors(ck, root, m, t->state[k]);
    }
    return st;
}

static cnn_status load_impl(const char *path, cnn_model *m, cnn_optim *o, cnn_train_state *s,
                            cnn_history *h, cnn_error *err)
{
    if (!path || !m)
        return cnn_error_set(err, CNN_ERR_ARG, "checkpoint load: path and model are required");
    if (o && o->n != m->nparams)
        return cnn_error_set(err, CNN_ERR_ARG,
                             "%s: the optimizer holds %zu floats but the model has %zu "
                             "parameters",
                             path, o->n, m->nparams);
    ckfile ck;
    cnn_status st = open_checkpoint(&ck, path, err);
    if (st)
        return st;
    load_tmp t = {0};
    if (!(t.params = alloc_floats(m->nparams)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for %zu parameters", path,
                           m->nparams);
    if (!st && !(st = check_members(&ck, "/model", m)) &&
        !(st = read_tensors(&ck, "/model", m, t.params)) && o)
        st = load_optimizer(&ck, m, o, &t);
    if (!st && s)
        st = read_state(&ck, &t.s);
    if (!st && h)
        st = read_history(&ck, &t.h);
    close_checkpoint(&ck);
    if (!st) { /* everything read and checked: commit */
        memcpy(m->params, t.params, m->nparams * sizeof(float));
        if (o) { /* state buffers the file lacks (sgd saved without momentum) start at 0 */
            for (int k = 0; k < cnn_optim_nstate(o); k++) {
                if (k < t.file_nstate)
                    memcpy(o->state[k], t.state[k], o->n * sizeof(float));
                else
                    memset(o->state[k], 0, o->n * sizeof(float));
            }
            o->step = t.step;
        }
        if (s)
            *s = t.s;
        if (h) {
            cnn_history_free(h);
            *h = t.h;
        }
    }
    free(t.params);
    for (int k = 0; k < CNN_OPTIM_MAX_STATE; k++)
        free(t.state[k]);
    return st;
}

cnn_status cnn_checkpoint_load(const char *path, cnn_model *m, cnn_optim *o, cnn_train_state *s,
                               cnn_history *h, cnn_error *err)
{
    h5_quiet();
    return load_impl(path, m, o, s, h, err);
}

/* A fixed-length string dataset: scalar (n == NULL) or 1-D (*n strings),
 * as *size-byte records in one malloc'd buffer with a spare NUL at the end. */
static cnn_status read_strings(const ckfile *ck, const char *obj, char **out, size_t *size,
                               hsize_t *n)
{
    hsize_t dims[1] = {1};
    hid_t ds, t = -1;
    cnn_status st = open_dataset(ck, obj, H5T_STRING, n ? 1 : 0, dims, &ds);
    if (st)
        return st;
    if ((t = H5Dget_type(ds)) < 0) {
        st = h5_fail(ck, CNN_ERR_FORMAT, "cannot read the type of %s", obj);
        H5Dclose(ds);
        return st;
    }
    *size = H5Tget_size(t);
    char *buf = dims[0] < (1u << 24) ? calloc(dims[0] * *size + 1, 1) : NULL;
    if (!buf)
        st = cnn_error_set(ck->err, CNN_ERR_NOMEM, "%s: out of memory reading %s", ck->path, obj);
    else if (dims[0] > 0 && H5Dread(ds, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
        st = h5_fail(ck, CNN_ERR_FORMAT, "cannot read %s", obj);
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

static cnn_status read_config_impl(const char *path, char **config_text, cnn_error *err)
{
    ckfile ck;
    size_t size;
    cnn_status st = open_checkpoint(&ck, path, err);
    if (!st)
        st = read_strings(&ck, "/config", config_text, &size, NULL);
    close_checkpoint(&ck);
    return st;
}

cnn_status cnn_checkpoint_read_config(const char *path, char **config_text, cnn_error *err)
{
    h5_quiet();
    return read_config_impl(path, config_text, err);
}

static cnn_status read_classes_impl(const char *path, char ***names, int *n, cnn_error *err)
{
    ckfile ck;
    *names = NULL;
    *n = 0;
    cnn_status st = open_checkpoint(&ck, path, err);
    htri_t has = st ? 0 : object_exists(ck.id, "/classes");
    if (has < 0)
        st = h5_fail(&ck, CNN_ERR_FORMAT, "cannot look up /classes");
    if (st || !has) {
        close_checkpoint(&ck);
        return st;
    }
    char *buf = NULL;
    size_t size = 0;
    hsize_t count = 0;
    st = read_strings(&ck, "/classes", &buf, &size, &count);
    close_checkpoint(&ck);
    if (st)
        return st;
    /* one block: count + 1 pointers, then the strings */
    size_t bytes = (count + 1) * sizeof(char *);
    for (hsize_t i = 0; i < count; i++)
        bytes += strnlen(buf + i * size, size) + 1;
    char **out = malloc(bytes);
    if (!out) {
        free(buf);
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory reading /classes", path);
    }
    char *p = (char *)(out + count + 1);
    for (hsize_t i = 0; i < count; i++) {
        size_t len = strnlen(buf + i * size, size);
        out[i] = memcpy(p, buf + i * size, len);
        p[len] = 0;
        p += len + 1;
    }
    out[count] = NULL;
    free(buf);
    *names = out;
    *n = (int)count;
    return CNN_OK;
}

cnn_status cnn_checkpoint_read_classes(const char *path, char ***names, int *n, cnn_error *err)
{
    h5_quiet();
    return read_classes_impl(path, names, n, err);
}

static cnn_status read_info_impl(const char *path, cnn_train_state *s, cnn_optim_hparams *hp,
                                 cnn_error *err)
{
    ckfile ck;
    cnn_train_state ts;
    cnn_optim_hparams th;
    cnn_status st = open_checkpoint(&ck, path, err);
    if (!st && !(st = read_state(&ck, &ts)))
        st = read_hparams(&ck, &th, NULL);
    close_checkpoint(&ck);
    if (!st && s)
        *s = ts;
    if (!st && hp)
        *hp = th;
    return st;
}

cnn_status cnn_checkpoint_read_info(const char *path, cnn_train_state *s, cnn_optim_hparams *hp,
                                    cnn_error *err)
{
    h5_quiet();
    return read_info_impl(path, s, hp, err);
}

/* ---- the checkpoint directory ------------------------------------------ */

typedef struct ckpt_entry {
    char name[256];
    int64_t global_step;
} ckpt_entry;

static int entry_order(const void *a, const void *b)
{
    const ckpt_entry *x = a, *y = b;
    if (x->global_step != y->global_step)
        return x->global_step < y->global_step ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The valid checkpoints of dir, oldest first: visible regular *.h5 files
 * whose header validates (only ckpt-*.h5 when ckpt_only). A missing dir is
 * an empty list. */
static cnn_status list_checkpoints(const char *dir, int ckpt_only, ckpt_entry **out, int *n,
                                   cnn_error *err)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? CNN_OK
                               : cnn_error_set(err, CNN_ERR_IO, "%s: cannot list: %s", dir,
                                               strerror(errno));
    ckpt_entry *list = NULL;
    int cap = 0;
    cnn_status st = CNN_OK;
    for (struct dirent *e; !st && (e = readdir(d));) {
        const char *name = e->d_name;
        char p[PATH_MAX_LEN];
        struct stat sb;
        cnn_train_state s;
        cnn_error ignored;
        if (name[0] == '.' || !ends_with(name, ".h5") || strlen(name) >= sizeof list->name ||
            (ckpt_only && strncmp(name, "ckpt-", 5) != 0) ||
            snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p || stat(p, &sb) != 0 ||
            !S_ISREG(sb.st_mode) || read_info_impl(p, &s, NULL, &ignored) != CNN_OK)
            continue;
        if (*n == cap) {
            ckpt_entry *grown = realloc(list, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *list);
            if (!grown) {
                st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory listing checkpoints",
                                   dir);
                break;
            }
            list = grown;
        }
        snprintf(list[*n].name, sizeof list[*n].name, "%s", name);
        list[(*n)++].global_step = s.global_step;
    }
    closedir(d);
    if (st) {
        free(list);
        *n = 0;
        return st;
    }
    if (*n > 1)
        qsort(list, (size_t)*n, sizeof *list, entry_order);
    *out = list;
    return CNN_OK;
}

static cnn_status find_latest_impl(const char *dir, char *out, size_t outlen, int *found,
                                   cnn_error *err)
{
    ckpt_entry *list;
    int n;
    *found = 0;
    cnn_status st = list_checkpoints(dir, 0, &list, &n, err);
    if (!st && n > 0) {
        if (snprintf(out, outlen, "%s/%s", dir, list[n - 1].name) >= (int)outlen)
            st = cnn_error_set(err, CNN_ERR_ARG, "%s/%s: path longer than the buffer (%zu)", dir,
                               list[n - 1].name, outlen);
        else
            *found = 1;
    }
    free(list);
    return st;
}

cnn_status cnn_checkpoint_find_latest(const char *dir, char *out, size_t outlen, int *found,
                                      cnn_error *err)
{
    h5_quiet();
    return find_latest_impl(dir, out, outlen, found, err);
}

static cnn_status prune_impl(const char *dir, int keep, cnn_error *err)
{
    if (keep < 1)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: prune must keep at least 1 checkpoint, not %d",
                             dir, keep);
    ckpt_entry *list;
    int n;
    cnn_status st = list_checkpoints(dir, 1, &list, &n, err);
    for (int i = 0; !st && i < n - keep; i++) {
        char p[PATH_MAX_LEN];
        snprintf(p, sizeof p, "%s/%s", dir, list[i].name);
        if (unlink(p) != 0 && errno != ENOENT)
            st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
    }
    free(list);
    return st;
}

cnn_status cnn_checkpoint_prune(const char *dir, int keep, cnn_error *err)
{
    h5_quiet();
    return prune_impl(dir, keep, err);
}

void cnn_checkpoint_name(char *out, size_t n, const char *dir, const cnn_train_state *s)
{
    const int with_dir = dir && *dir;
    snprintf(out, n, "%s%sckpt-e%04lld-s%08lld.h5", with_dir ? dir : "", with_dir ? "/" : "",
             (long long)s->epoch, (long long)s->global_step);
}

/* ---- history ------------------------------------------------------------ */

cnn_status cnn_history_append(cnn_history *h, const cnn_epoch_record *r, cnn_error *err)
{
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        cnn_epoch_record *rows = realloc(h->rows, (size_t)cap * sizeof *rows);
        if (!rows)
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the history (%d epochs)",
                                 cap);
        h->rows = rows;
        h->cap = cap;
    }
    h->rows[h->n++] = *r;
    return CNN_OK;
}

void cnn_history_free(cnn_history *h)
{
    free(h->rows);
    h->rows = NULL;
    h->n = h->cap = 0;
}

int cnn_checkpoint_is_hdf5(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char buf[8];
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == sizeof buf && !memcmp(buf, sig, sizeof sig);
}
