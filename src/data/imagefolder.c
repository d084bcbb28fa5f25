/* imagefolder.c - a directory of class directories of image files, as
 * Keras's flow_from_directory reads it; images are decoded when a batch
 * reads them. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "cnn/data.h"
#include "format.h"
#include "cnn/image.h"

enum { MAX_DEPTH = 16 }; /* below a class directory; also stops symlink loops */

typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist;

static int strlist_push(strlist *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s)))
        return -1;
    l->n++;
    return 0;
}

static void strlist_free(strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    *l = (strlist){0};
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries of dir, hidden ones (".name") excepted, sorted byte-wise. */
static cnn_status list_dir(const char *dir, strlist *names, cnn_error *err)
{
    DIR *dp = opendir(dir);
    if (!dp)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open directory: %s", dir,
                             strerror(errno));
    struct dirent *e;
    while ((e = readdir(dp)))
        if (e->d_name[0] != '.' && strlist_push(names, e->d_name)) {
            closedir(dp);
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory listing", dir);
        }
    closedir(dp);
    if (names->n > 1) /* an empty directory has no array to sort */
        qsort(names->v, names->n, sizeof *names->v, by_name);
    return CNN_OK;
}

static int is_image_name(const char *name)
{
    static const char *const exts[] = {"jpg", "jpeg", "png", "bmp", "gif"};
    const char *dot = strrchr(name, '.');
    for (size_t k = 0; dot && k < sizeof exts / sizeof *exts; k++)
        if (!strcasecmp(dot + 1, exts[k]))
            return 1;
    return 0;
}

/* Appends the image files below dir to files, depth first, each
 * directory's entries in sorted order. */
static cnn_status find_images(const char *dir, int depth, strlist *files, cnn_error *err)
{
    strlist names = {0};
    cnn_status st = list_dir(dir, &names, err);
    char path[4096];
    for (size_t i = 0; i < names.n && !st; i++) {
        struct stat sb;
        if (snprintf(path, sizeof path, "%s/%s", dir, names.v[i]) >= (int)sizeof path)
            st = cnn_error_set(err, CNN_ERR_IO, "%s/%s: path too long", dir, names.v[i]);
        else if (stat(path, &sb) != 0)
            continue; /* a dangling link: not an image */
        else if (S_ISDIR(sb.st_mode) && depth < MAX_DEPTH)
            st = find_images(path, depth + 1, files, err);
        else if (S_ISREG(sb.st_mode) && is_image_name(names.v[i]) && strlist_push(files, path))
            st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory listing", dir);
    }
    strlist_free(&names);
    return st;
}

/* The class directories of dir and the image files of each: class k's
 * files are files[start[k] .. start[k+1]). A class directory without
 * image files is an error (a class no sample can teach). */
static cnn_status scan(const char *dir, strlist *classes, strlist *files, int64_t **start,
                       cnn_error *err)
{
    strlist names = {0};
    cnn_status st = list_dir(dir, &names, err);
    char path[4096];
    for (size_t i = 0; i < names.n && !st; i++) {
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", dir, names.v[i]);
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode) && strlist_push(classes, names.v[i]))
            st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory listing", dir);
    }
    strlist_free(&names);
    if (!st && classes->n == 0)
        st = cnn_error_set(err, CNN_ERR_FORMAT,
                           "%s: no class directories (expected one directory of images per "
                           "class)",
                           dir);
    if (!st && !(*start = malloc((classes->n + 1) * sizeof **start)))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < classes->n && !st; k++) {
        (*start)[k] = (int64_t)files->n;
        snprintf(path, sizeof path, "%s/%s", dir, classes->v[k]);
        st = find_images(path, 0, files, err);
        if (!st && (int64_t)files->n == (*start)[k])
            st = cnn_error_set(err, CNN_ERR_FORMAT,
                               "%s: no .jpg, .jpeg, .png, .bmp or .gif files in this class "
                               "directory (add images or remove it)",
                               path);
    }
    if (!st)
        (*start)[classes->n] = (int64_t)files->n;
    return st;
}

typedef struct folder_store {
    char **paths; /* (n) the file of each store row */
    int64_t n;
} folder_store;

static cnn_status folder_read(cnn_store *s, const int64_t *rows, int B, uint8_t *out,
                              cnn_error *err)
{
    const folder_store *f = s->impl;
    const size_t img = cnn_shape_size(s->shape);
    for (int b = 0; b < B; b++) {
        if (rows[b] < 0 || rows[b] >= f->n)
            return cnn_error_set(err, CNN_ERR_ARG, "image %lld of a folder of %lld",
                                 (long long)rows[b], (long long)f->n);
        cnn_status st = cnn_image_load(f->paths[rows[b]], s->shape.c, s->shape.h, s->shape.w,
                                       out + (size_t)b * img, err);
        if (st)
            return st;
    }
    return CNN_OK;
}

static void folder_describe(const cnn_store *s, int64_t row, char *buf, size_t n)
{
    const folder_store *f = s->impl;
    snprintf(buf, n, "%s", row >= 0 && row < f->n ? f->paths[row] : "?");
}

static void folder_close(cnn_store *s)
{
    folder_store *f = s->impl;
    for (int64_t i = 0; f && i < f->n; i++)
        free(f->paths[i]);
    if (f)
        free(f->paths);
    free(f);
}

static const cnn_store_ops folder_ops = {.format = "imagefolder",
                                         .read = folder_read,
                                         .close = folder_close,
                                         .describe = folder_describe,
                                         .per_file = 1,
                                         .parallel = 1};

/* The rows of the store: for each class, which of its files are kept
 * (limit, in proportion to class sizes) and which of those go to the
 * validation set (the first floor(split * kept) of the class). Moves the
 * chosen paths out of files into paths (train rows, then validation rows)
 * and sets their labels. Returns the number of training rows. */
static int64_t arrange(strlist *files, const int64_t *start, int K, int64_t limit, double split,
                       char **paths, int32_t *labels, int64_t *nval)
{
    const int64_t total = start[K];
    int64_t ntrain = 0, nv = 0, used = 0;
    int64_t *keep = malloc((size_t)K * sizeof *keep), *vk = malloc((size_t)K * sizeof *vk);
    if (!keep || !vk) {
        free(keep);
        free(vk);
        return -1;
    }
    for (int k = 0; k < K; k++) {
        int64_t nk = start[k + 1] - start[k];
        if (limit > 0 && limit < total)
            nk = limit * start[k + 1] / total - limit * start[k] / total;
        keep[k] = nk;
        vk[k] = (int64_t)(split * (double)nk);
        ntrain += nk - vk[k];
    }
    for (int k = 0; k < K; k++)
        for (int64_t j = 0; j < keep[k]; j++) {
            int64_t row = j < vk[k] ? ntrain + nv++ : used++;
            paths[row] = files->v[start[k] + j];
            files->v[start[k] + j] = NULL;
            labels[row] = k;
        }
    *nval = nv;
    free(keep);
    free(vk);
    return ntrain;
}

/* The data set of dir from its listing (scan's, or a listing's); takes
 * the file names out of files. */
static cnn_status build(cnn_dataset **out, const char *dir, const cnn_data_config *dc,
                        const strlist *classes, strlist *files, const int64_t *start,
                        int64_t limit, double split, cnn_dataset **val, cnn_error *err)
{
    int64_t ntrain = 0, nval = 0;
    cnn_dataset *d = NULL;
    cnn_store *store = NULL;
    folder_store *f = NULL;
    cnn_status st = CNN_OK;
    const int K = (int)classes->n;
    if (dc->class_mode == CNN_CLASS_BINARY && K != 2)
        return cnn_error_set(err, CNN_ERR_FORMAT,
                             "%s: class_mode = binary needs 2 class directories, found %d (%s%s)",
                             dir, K, classes->v[0], K > 1 ? ", ..." : "");
    if (!(f = calloc(1, sizeof *f)) || !(f->paths = calloc(files->n, sizeof *f->paths))) {
        free(f);
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for %zu paths", dir, files->n);
        goto done;
    }
    if (!(store = cnn_store_new(&folder_ops, f, (cnn_shape){dc->channels, dc->image_h,
                                                            dc->image_w})) ||
        !(d = cnn_dataset_new(store, (int64_t)files->n, dir))) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((ntrain = arrange(files, start, K, limit, split, f->paths, d->labels, &nval)) < 0) {
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
        goto done;
    }
    f->n = d->n = ntrain + nval;
    d->skip_bad = dc->skip_bad;
    if ((st = cnn_dataset_set_classes(d, (const char *const *)classes->v, K, err)))
        goto done;
    if (split > 0 && (nval == 0 || ntrain == 0))
        st = cnn_error_set(err, CNN_ERR_CONFIG,
                           "%s: validation_split %.4g of %lld images leaves an empty set", dir,
                           split, (long long)d->n);
    else if (split > 0)
        st = cnn_dataset_split_at(d, ntrain, val, err);
done:
    cnn_store_release(store); /* the dataset holds it now, or nobody */
    if (st) {
        cnn_dataset_free(d);
        return st;
    }
    *out = d;
    return CNN_OK;
}

cnn_status cnn_imagefolder_load(cnn_dataset **out, const char *dir, const cnn_data_config *dc,
                                int64_t limit, double split, cnn_dataset **val, cnn_error *err)
{
    *out = NULL;
    if (val)
        *val = NULL;
    strlist classes = {0}, files = {0};
    int64_t *start = NULL;
    cnn_status st = scan(dir, &classes, &files, &start, err);
    if (!st)
        st = build(out, dir, dc, &classes, &files, start, limit, split, val, err);
    strlist_free(&classes);
    strlist_free(&files);
    free(start);
    return st;
}

/* A set's listing (cnn_data_listing): its number of classes, then for each
 * class its name, its number of files and their paths, each a string
 * ended by a NUL. */
static int put_str(cnn_data_listing *l, const char *s)
{
    return cnn_data_listing_put(l, s, strlen(s) + 1);
}

static int put_count(cnn_data_listing *l, int64_t n)
{
    char num[32];
    snprintf(num, sizeof num, "%lld", (long long)n);
    return put_str(l, num);
}

static cnn_status imagefolder_list(const cnn_data_config *dc, int set, cnn_data_listing *out,
                                   cnn_error *err)
{
    const char *dir = dc->paths[set];
    strlist classes = {0}, files = {0};
    int64_t *start = NULL;
    cnn_status st = scan(dir, &classes, &files, &start, err);
    int nomem = !st && put_count(out, (int64_t)classes.n);
    for (size_t k = 0; k < classes.n && !st && !nomem; k++) {
        nomem = put_str(out, classes.v[k]) || put_count(out, start[k + 1] - start[k]);
        for (int64_t i = start[k]; i < start[k + 1] && !nomem; i++)
            nomem = put_str(out, files.v[i]);
    }
    if (nomem)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory listing", dir);
    strlist_free(&classes);
    strlist_free(&files);
    free(start);
    return st;
}

/* The next string of a listing at *at (before end), or NULL. */
static const char *next_str(const char **at, const char *end)
{
    const char *s = *at, *nul = s < end ? memchr(s, 0, (size_t)(end - s)) : NULL;
    if (nul)
        *at = nul + 1;
    return nul ? s : NULL;
}

static int next_count(const char **at, const char *end, int64_t max, int64_t *n)
{
    const char *s = next_str(at, end);
    char *e;
    long long v = s ? strtoll(s, &e, 10) : -1;
    *n = v;
    return !s || !*s || *e || v < 0 || v > max;
}

/* imagefolder_list's bytes back into scan's lists; 0, or -1 when they do
 * not parse (or memory ran out). */
static int parse_listing(const char *at, size_t len, strlist *classes, strlist *files,
                         int64_t **start)
{
    const char *end = at + len;
    int64_t K, nk;
    if (next_count(&at, end, CNN_MAX_CLASSES, &K) || K == 0 ||
        !(*start = malloc((size_t)(K + 1) * sizeof **start)))
        return -1;
    for (int64_t k = 0; k < K; k++) {
        const char *name = next_str(&at, end);
        if (!name || strlist_push(classes, name) || next_count(&at, end, (int64_t)len, &nk) ||
            nk == 0) /* scan refuses a class without files */
            return -1;
        (*start)[k] = (int64_t)files->n;
        for (int64_t i = 0; i < nk; i++) {
            const char *path = next_str(&at, end);
            if (!path || strlist_push(files, path))
                return -1;
        }
    }
    (*start)[K] = (int64_t)files->n;
    return at == end ? 0 : -1;
}

static cnn_status imagefolder_load_listed(const cnn_data_config *dc, int set,
                                          const char *listing, size_t len, int64_t limit,
                                          double split, cnn_dataset **out, cnn_dataset **val,
                                          cnn_error *err)
{
    *out = NULL;
    if (val)
        *val = NULL;
    strlist classes = {0}, files = {0};
    int64_t *start = NULL;
    cnn_status st = CNN_OK;
    if (parse_listing(listing, len, &classes, &files, &start))
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: a listing of %zu bytes that does not parse",
                           dc->paths[set], len);
    else
        st = build(out, dc->paths[set], dc, &classes, &files, start, limit, split, val, err);
    strlist_free(&classes);
    strlist_free(&files);
    free(start);
    return st;
}

/* [data] format = imagefolder: train_dir, validation_dir, test_dir, and
 * the keys of decoding. */
static cnn_status imagefolder_keys(cnn_data_config *dc, const cnn_section *s, cnn_error *err)
{
    static const char *const modes[] = {"binary", "categorical", "sparse", NULL};
    static const char *const policies[] = {"fatal", "skip", NULL};
    static const char *const channels[] = {"1", "3", NULL};
    int rgb;
    cnn_status st;
    if ((st = cnn_cfg_pair(s, "image_size", 256, 256, &dc->image_h, &dc->image_w, err)) ||
        (st = cnn_cfg_enum(s, "class_mode", CNN_CLASS_SPARSE, modes, &dc->class_mode, err)) ||
        (st = cnn_cfg_enum(s, "on_bad_image", 0, policies, &dc->skip_bad, err)) ||
        (st = cnn_cfg_enum(s, "channels", 1, channels, &rgb, err)))
        return st;
    dc->channels = rgb ? 3 : 1;
    return CNN_OK;
}

static cnn_status imagefolder_load_set(const cnn_data_config *dc, int set, int64_t limit,
                                       double split, cnn_dataset **out, cnn_dataset **val,
                                       cnn_error *err)
{
    return cnn_imagefolder_load(out, dc->paths[set], dc, limit, split, val, err);
}

static const cnn_format_key imagefolder_path_keys[] = {{"train_dir", "train", CNN_SET_TRAIN},
                                                       {"validation_dir", "", CNN_SET_VAL},
                                                       {"test_dir", "test", CNN_SET_TEST},
                                                       {NULL, NULL, 0}};

const cnn_data_format cnn_format_imagefolder = {.name = "imagefolder",
                                                .dir = "",
                                                .keys = imagefolder_path_keys,
                                                .read_keys = imagefolder_keys,
                                                .load = imagefolder_load_set,
                                                .list = imagefolder_list,
                                                .load_listed = imagefolder_load_listed,
                                                .splits_itself = 1};
