/* cnn_data.c - cnn-data: converts a data set into the HDF5 layout that
 * cnn-train reads per batch, and describes such files.
 *
 *   cnn-data convert CONFIG OUT_PREFIX [--set data.KEY=VALUE]... [--chunk N] [--gzip L]
 *   cnn-data info FILE.h5...
 *   cnn-data jpegs CONFIG OUT_DIR [--set data.KEY=VALUE]... [--size HxW] [--classes K] [--quality Q]
 *
 * convert reads the sets that the [data] section of CONFIG describes (any
 * format: idx, cifar10, imagefolder, hdf5), as training sees them: limits
 * and validation split applied, images decoded, resized and converted to
 * the configured channels. It writes OUT_PREFIX-train.h5,
 * OUT_PREFIX-validation.h5 when the validation set is not the test set,
 * and OUT_PREFIX-test.h5, then prints a summary of each file (images,
 * size, classes and counts, bytes) and the [data] lines that train from
 * them. Other sections of CONFIG are ignored. With [data] on_bad_image =
 * skip, images that do not decode are left out and listed.
 *
 * jpegs makes an image folder for benchmarks and tests from any set, e.g.
 * 224x224 RGB JPEGs from Fashion-MNIST (see usage); one process.
 *
 * Under mpirun the ranks decode in turns of a block each; rank 0 gathers
 * every block and writes it (HDF5 here is serial). This separate tool
 * includes <mpi.h> itself for those few calls, rather than going through
 * src/dist, which serves the trainer. It runs without mpirun as one
 * process.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/image.h"
#include "cnn/imageio.h"
#include "cnn/train.h"
#include "cli.h"

static const char usage[] =
    "usage: cnn-data convert CONFIG OUT_PREFIX [--set data.KEY=VALUE]... [--chunk N] [--gzip L]\n"
    "       cnn-data info FILE.h5...\n"
    "       cnn-data jpegs CONFIG OUT_DIR [--set data.KEY=VALUE]... [--size HxW] [--classes K]\n"
    "                [--quality Q]\n"
    "convert writes OUT_PREFIX-train.h5, OUT_PREFIX-test.h5 (and -validation.h5) from the\n"
    "[data] section of CONFIG; --chunk: images per HDF5 chunk (default 1, the fastest for\n"
    "random batches); --gzip: deflate level 0-9 (default 0: smaller files, slower reads).\n"
    "Under mpirun, ranks decode in parallel.\n"
    "jpegs writes OUT_DIR/train/LABEL/*.jpg and OUT_DIR/test/LABEL/*.jpg, an image folder of\n"
    "RGB JPEGs (default 224x224, quality 90) from the sets of CONFIG whose labels are below K\n"
    "(default 2: a two-class folder, as the catsdogs configs read), resized and, when gray,\n"
    "tinted; e.g. cnn-data jpegs configs/fashion_cnn.ini data/catsdogs.\n";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The status every rank agrees on: CNN_OK unless some rank failed, then
 * the lowest failing rank's, whose message that rank prints. */
static cnn_status agree(cnn_status st, const cnn_error *err, int rank, int world)
{
    int mine = st ? rank : world, first, code = st;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == world)
        return CNN_OK;
    MPI_Bcast(&code, 1, MPI_INT, first, MPI_COMM_WORLD);
    if (rank == first && err->msg[0])
        fprintf(stderr, "cnn-data: %s\n", err->msg);
    return (cnn_status)code;
}

/* Samples [lo, lo + n) of d into out; a skipped image is zeroed and
 * flagged in bad, its reason printed. */
static cnn_status read_block(const cnn_dataset *d, int64_t lo, int n, uint8_t *out, uint8_t *bad,
                             cnn_error *err)
{
    const size_t img = cnn_shape_size(d->shape);
    memset(bad, 0, (size_t)n);
    if (!d->store->ops->per_file) {
        int64_t idx[256]; /* n <= 256: see convert_set */
        for (int j = 0; j < n; j++)
            idx[j] = lo + j;
        return cnn_dataset_read(d, idx, n, out, err);
    }
    for (int j = 0; j < n; j++) {
        int b;
        cnn_status st = cnn_dataset_read_one(d, lo + j, out + (size_t)j * img, &b, err);
        if (st)
            return st;
        if (b) {
            fprintf(stderr, "cnn-data: skipped %s\n", err->msg);
            memset(out + (size_t)j * img, 0, img);
            bad[j] = 1;
        }
    }
    return CNN_OK;
}

typedef struct conv_opts {
    int chunk, gzip;
} conv_opts;

/* Writes d to path: in each turn rank k decodes samples
 * [base + k*R, base + (k+1)*R), rank 0 gathers them and appends the good
 * ones. *skipped (rank 0) counts the images left out. */
static cnn_status convert_set(const cnn_dataset *d, const char *path, const conv_opts *o,
                              int rank, int world, int64_t *skipped, cnn_error *err)
{
    const size_t img = cnn_shape_size(d->shape);
    const int64_t n = d->n;
    /* Blocks of about 8 MiB a rank, at most 1 GiB a turn (int counts). */
    size_t r = (8u << 20) / img, rmax = ((size_t)1 << 30) / ((size_t)world * img);
    r = r < rmax ? r : rmax;
    const int R = r < 1 ? 1 : r > 256 ? 256 : (int)r;
    uint8_t *mine = malloc((size_t)R * img), *bad = malloc((size_t)R);
    uint8_t *all = NULL, *allbad = NULL;
    int32_t *labels = NULL;
    int *counts = NULL, *displs = NULL;
    cnn_h5data_writer *w = NULL;
    int64_t written = 0;
    cnn_status st = CNN_OK;
    *skipped = 0;
    if (rank == 0 && (!(all = malloc((size_t)world * R * img)) ||
                      !(allbad = malloc((size_t)world * R)) ||
                      !(labels = malloc((size_t)(n ? n : 1) * sizeof *labels)) ||
                      !(counts = malloc((size_t)world * sizeof *counts)) ||
                      !(displs = malloc((size_t)world * sizeof *displs))))
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for blocks of %d images", R);
    if (!mine || !bad)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for blocks of %d images", R);
    if (!st && rank == 0)
        st = cnn_h5data_create(&w, path, d->shape, o->chunk, o->gzip, err);
    st = agree(st, err, rank, world);
    for (int64_t base = 0; base < n && !st; base += (int64_t)R * world) {
        const int64_t lo = base + (int64_t)rank * R;
        const int cnt = lo >= n ? 0 : n - lo < R ? (int)(n - lo) : R;
        if ((st = agree(read_block(d, lo, cnt, mine, bad, err), err, rank, world)))
            break;
        for (int k = 0; rank == 0 && k < world; k++) {
            int64_t klo = base + (int64_t)k * R;
            counts[k] = klo >= n ? 0 : (int)((n - klo < R ? n - klo : R) * (int64_t)img);
            displs[k] = (int)((int64_t)k * R * (int64_t)img);
        }
        MPI_Gather(bad, R, MPI_UINT8_T, allbad, R, MPI_UINT8_T, 0, MPI_COMM_WORLD);
        MPI_Gatherv(mine, (int)(cnt * img), MPI_BYTE, all, counts, displs, MPI_BYTE, 0,
                    MPI_COMM_WORLD);
        if (rank == 0) {
            int64_t m = 0; /* good images of this turn, packed at the front of all */
            for (int64_t j = 0; j < (int64_t)R * world && base + j < n; j++) {
                if (allbad[j]) {
                    (*skipped)++;
                    continue;
                }
                if (m != j)
                    memcpy(all + (size_t)m * img, all + (size_t)j * img, img);
                labels[written + m++] = d->labels[base + j];
            }
            st = cnn_h5data_append(w, all, m, err);
            written += m;
        }
        st = agree(st, err, rank, world);
    }
    /* st is agreed (and reported) by now; what follows happens on rank 0. */
    cnn_status last = CNN_OK;
    if (!st && rank == 0 && written == 0)
        last = cnn_error_set(err, CNN_ERR_FORMAT, "%s: none of its %lld images can be read",
                             d->source, (long long)n);
    if (rank == 0 && w) { /* on failure, NULL labels remove the file */
        cnn_status cst = cnn_h5data_close(w, st || last ? NULL : labels,
                                          (const char *const *)d->class_names, d->nclasses, err);
        last = last ? last : cst;
    }
    if (!st)
        st = agree(last, err, rank, world);
    free(mine);
    free(bad);
    free(all);
    free(allbad);
    free(labels);
    free(counts);
    free(displs);
    return st;
}

/* What an image file holds: size, classes and their counts, bytes. */
static cnn_status describe_file(FILE *out, const char *path, double seconds, int64_t skipped,
                                cnn_error *err)
{
    cnn_dataset *d = NULL;
    cnn_status st = cnn_h5data_load(&d, path, 0, err);
    if (st)
        return st;
    struct stat sb;
    long long bytes = stat(path, &sb) == 0 ? (long long)sb.st_size : -1;
    long long pixels = (long long)d->n * (long long)cnn_shape_size(d->shape);
    fprintf(out, "%s: %lld images of %dx%dx%d (HxWxC), %d classes, %lld bytes (pixels %lld)",
            path, (long long)d->n, d->shape.h, d->shape.w, d->shape.c, d->nclasses, bytes,
            pixels);
    if (seconds > 0)
        fprintf(out, ", written in %.2f s (%.0f images/s)", seconds, (double)d->n / seconds);
    fprintf(out, "\n");
    if (skipped)
        fprintf(out, "  %lld images that do not decode were skipped (listed above)\n",
                (long long)skipped);
    int64_t *counts = calloc((size_t)(d->nclasses > 0 ? d->nclasses : 1), sizeof *counts);
    if (!counts) {
        cnn_dataset_free(d);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    for (int64_t i = 0; i < d->n; i++)
        counts[d->labels[i]]++;
    fprintf(out, "  label  count  class\n");
    for (int k = 0; k < d->nclasses; k++)
        fprintf(out, "  %5d  %5lld  %s\n", k, (long long)counts[k],
                d->class_names ? d->class_names[k] : "-");
    free(counts);
    cnn_dataset_free(d);
    return CNN_OK;
}

/* Lets the sections other than [data] pass cnn_config_check_unused. */
static void ignore_other_sections(cnn_config *cfg)
{
    for (int i = 0; i < cfg->nsec; i++)
        for (int k = 0; strcmp(cfg->sec[i].name, "data") && k < cfg->sec[i].nkv; k++)
            cfg->sec[i].kv[k].used = 1;
}

/* The absolute path of an existing file, for the [data] lines. */
static const char *absolute(const char *path, char *buf)
{
    return realpath(path, buf) ? buf : path;
}

/* A config's [data] sets. */
typedef struct data_sets {
    cnn_config *cfg;
    cnn_data_config dc;
    cnn_dataset *train, *val, *test;
} data_sets;

/* ds->dc's sets; under mpirun rank 0 alone lists the image folders and
 * sends the listing to the others in one broadcast, as cnn-train does (a
 * folder of 25,000 files costs each lister 25,000 stat calls). Agreed by
 * all ranks. */
static cnn_status load_listed(data_sets *ds, int rank, int world, cnn_error *err)
{
    if (world == 1)
        return agree(cnn_data_load(&ds->dc, 0, 1, &ds->train, &ds->val, &ds->test, err), err,
                     rank, world);
    cnn_data_listing l = {0};
    cnn_status st = agree(rank == 0 ? cnn_data_list(&ds->dc, &l, err) : CNN_OK, err, rank, world);
    unsigned long long len = l.len;
    if (!st) {
        MPI_Bcast(&len, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
        if (rank != 0 && len && !(l.bytes = malloc((size_t)len)))
            st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the listing of %s",
                               ds->dc.dir);
        st = agree(st, err, rank, world);
    }
    for (unsigned long long at = 0; !st && at < len; at += INT_MAX) /* int counts */
        MPI_Bcast(l.bytes + at, (int)(len - at < INT_MAX ? len - at : INT_MAX), MPI_BYTE, 0,
                  MPI_COMM_WORLD);
    l.len = (size_t)len;
    if (!st)
        st = agree(cnn_data_load_listed(&ds->dc, rank, world, &l, &ds->train, &ds->val,
                                        &ds->test, err),
                   err, rank, world);
    cnn_data_listing_free(&l);
    return st;
}

/* The [data] sets of the config at path with the --set overrides sets
 * (freed here), agreed by all ranks. */
static cnn_status load_sets(data_sets *ds, const char *path, const char **sets, int nsets,
                            int rank, int world, cnn_error *err)
{
    memset(ds, 0, sizeof *ds);
    cnn_status st = cnn_config_load_overrides(&ds->cfg, path, (const char *const *)sets, nsets, err);
    free(sets);
    if (!st && !(st = cnn_data_config_read(&ds->dc, ds->cfg, err))) {
        ignore_other_sections(ds->cfg);
        st = cnn_config_check_unused(ds->cfg, err);
    }
    if ((st = agree(st, err, rank, world)))
        return st;
    return load_listed(ds, rank, world, err);
}

static void free_sets(data_sets *ds)
{
    if (ds->val != ds->test)
        cnn_dataset_free(ds->val);
    cnn_dataset_free(ds->train);
    cnn_dataset_free(ds->test);
    cnn_config_free(ds->cfg);
}

static int convert(int argc, char **argv, int rank, int world)
{
    const char *cfg_path = NULL, *prefix = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int nsets = 0;
    conv_opts o = {0, 0};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--set") && v)
            sets[nsets++] = argv[++i];
        else if (!strcmp(a, "--chunk") && v)
            o.chunk = atoi(argv[++i]);
        else if (!strcmp(a, "--gzip") && v)
            o.gzip = atoi(argv[++i]);
        else if (a[0] != '-' && !cfg_path)
            cfg_path = a;
        else if (a[0] != '-' && !prefix)
            prefix = a;
        else {
            if (rank == 0)
                fprintf(stderr, "cnn-data: unexpected argument '%s'\n%s", a, usage);
            free(sets);
            return 2;
        }
    }
    if (!cfg_path || !prefix || o.chunk < 0 || o.gzip < 0 || o.gzip > 9) {
        if (rank == 0)
            fprintf(stderr, "cnn-data: convert needs CONFIG and OUT_PREFIX%s\n%s",
                    o.chunk < 0 || o.gzip < 0 || o.gzip > 9 ? ", --chunk >= 0, --gzip 0-9" : "",
                    usage);
        free(sets);
        return 2;
    }
    cnn_error err = {0};
    data_sets ds;
    cnn_status st = load_sets(&ds, cfg_path, sets, nsets, rank, world, &err);
    const cnn_dataset *train = ds.train, *val = ds.val, *test = ds.test;
    const cnn_data_config dc = ds.dc;
    const struct {
        const char *name, *key;
        const cnn_dataset *d;
    } parts[] = {{"train", "train_file", train},
                 {"validation", "validation_file", val != test ? val : NULL},
                 {"test", "test_file", test}};
    char paths[3][PATH_MAX + 32];
    const double t0 = now();
    for (int p = 0; p < 3 && !st; p++) {
        if (!parts[p].d)
            continue;
        snprintf(paths[p], sizeof paths[p], "%s-%s.h5", prefix, parts[p].name);
        const double t = now();
        int64_t skipped;
        if ((st = convert_set(parts[p].d, paths[p], &o, rank, world, &skipped, &err)))
            break; /* reported */
        st = agree(rank == 0 ? describe_file(stdout, paths[p], now() - t, skipped, &err) : CNN_OK,
                   &err, rank, world);
    }
    if (!st && rank == 0) {
        char abs[PATH_MAX];
        printf("converted in %.2f s on %d rank%s; to train from these files:\n[data]\n"
               "format = hdf5\n",
               now() - t0, world, world > 1 ? "s" : "");
        for (int p = 0; p < 3; p++)
            if (parts[p].d)
                printf("%s = %s\n", parts[p].key, absolute(paths[p], abs));
        if (dc.validation == CNN_VAL_NONE)
            printf("validation = none\n");
        const cnn_kv *rescale = cnn_section_find(cnn_config_find(ds.cfg, "data"), "rescale");
        printf("rescale = %s\n", rescale ? rescale->value : "1/255");
    }
    free_sets(&ds);
    return cnn_status_exit_code(st);
}

/* Image i of d as an RGB JPEG of h x w at path: each channel resized, and
 * a grayscale image coloured by a tint that varies with i (so the three
 * channels differ, as photographs' do). raw: C*H*W, rs: C*h*w, rgb: h*w*3. */
static cnn_status write_jpeg(const cnn_dataset *d, int64_t i, int h, int w, int quality,
                             const char *path, uint8_t *raw, uint8_t *rs, uint8_t *rgb,
                             cnn_error *err)
{
    const cnn_shape sh = d->shape;
    const size_t plane = (size_t)sh.h * sh.w, out = (size_t)h * w;
    cnn_status st = cnn_dataset_read(d, &i, 1, raw, err);
    for (int k = 0; k < sh.c && !st; k++)
        st = cnn_image_resize(raw + k * plane, sh.h, sh.w, 1, rs + k * out, h, w, err);
    if (st)
        return st;
    const unsigned t = (unsigned)(i * 37 % 256);
    for (size_t p = 0; p < out; p++) {
        const unsigned v = rs[p];
        rgb[3 * p] = (uint8_t)v;
        rgb[3 * p + 1] = sh.c == 3 ? rs[out + p] : (uint8_t)(v * t / 255);
        rgb[3 * p + 2] = sh.c == 3 ? rs[2 * out + p] : (uint8_t)(v * (255 - t) / 255);
    }
    return cnn_jpeg_write(path, rgb, w, h, 3, quality, err);
}

/* d's images whose label is below classes into dir/LABEL/NNNNNN.jpg. */
static cnn_status write_folder(const cnn_dataset *d, const char *dir, int classes, int h, int w,
                               int quality, int64_t *written, cnn_error *err)
{
    const size_t img = cnn_shape_size(d->shape);
    uint8_t *raw = malloc(img), *rs = malloc((size_t)h * w * 3), *rgb = malloc((size_t)h * w * 3);
    cnn_status st =
        raw && rs && rgb ? CNN_OK : cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    char path[PATH_MAX + 64];
    *written = 0;
    for (int c = 0; c < classes && !st; c++) {
        snprintf(path, sizeof path, "%s/%d", dir, c);
        if (cnn_make_dirs(path) != 0)
            st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    for (int64_t i = 0; i < d->n && !st; i++) {
        if (d->labels[i] >= classes)
            continue;
        snprintf(path, sizeof path, "%s/%d/%06lld.jpg", dir, (int)d->labels[i], (long long)i);
        st = write_jpeg(d, i, h, w, quality, path, raw, rs, rgb, err);
        *written += !st;
    }
    free(raw);
    free(rs);
    free(rgb);
    return st;
}

/* cnn-data jpegs: an image folder of JPEGs made from any [data] set. */
static int jpegs(int argc, char **argv)
{
    const char *cfg_path = NULL, *out = NULL;
    const char **sets = calloc((size_t)argc + 1, sizeof *sets);
    int nsets = 0, h = 224, w = 224, classes = 2, quality = 90, ok = sets != NULL;
    for (int i = 0; i < argc && ok; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--set") && v)
            sets[nsets++] = argv[++i];
        else if (!strcmp(a, "--size") && v)
            ok = sscanf(argv[++i], "%dx%d", &h, &w) == 2;
        else if (!strcmp(a, "--classes") && v)
            classes = atoi(argv[++i]);
        else if (!strcmp(a, "--quality") && v)
            quality = atoi(argv[++i]);
        else if (a[0] != '-' && !cfg_path)
            cfg_path = a;
        else if (a[0] != '-' && !out)
            out = a;
        else
            ok = 0;
    }
    if (!ok || !cfg_path || !out || h < 1 || w < 1 || h > 4096 || w > 4096 || classes < 1 ||
        quality < 1 || quality > 100) {
        fprintf(stderr, "cnn-data: jpegs needs CONFIG and OUT_DIR, --size HxW (1-4096), "
                        "--classes >= 1, --quality 1-100\n%s", usage);
        free(sets);
        return 2;
    }
    cnn_error err = {0};
    data_sets ds;
    cnn_status st = load_sets(&ds, cfg_path, sets, nsets, 0, 1, &err);
    const struct {
        const char *name;
        const cnn_dataset *d;
    } parts[] = {{"train", ds.train}, {"test", ds.test}};
    for (int p = 0; p < 2 && !st; p++) {
        char dir[PATH_MAX];
        int64_t n;
        snprintf(dir, sizeof dir, "%s/%s", out, parts[p].name);
        if (!(st = write_folder(parts[p].d, dir, classes, h, w, quality, &n, &err)))
            printf("%s: %lld JPEGs of %dx%dx3 in %d classes\n", dir, (long long)n, h, w,
                   classes);
    }
    if (st)
        fprintf(stderr, "cnn-data: %s\n", err.msg);
    free_sets(&ds);
    return cnn_status_exit_code(st);
}

static int info(int argc, char **argv)
{
    if (argc < 1) {
        fprintf(stderr, "cnn-data: info needs FILE.h5\n%s", usage);
        return 2;
    }
    for (int i = 0; i < argc; i++) {
        cnn_error err = {0};
        if (describe_file(stdout, argv[i], 0, 0, &err)) {
            fprintf(stderr, "cnn-data: %s\n", err.msg);
            return cnn_status_exit_code(err.status);
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    int rank, world, rc;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        if (rank == 0)
            cnn_cli_version(argv[1], "cnn-data");
        rc = 0;
    } else if (argc >= 2 && !strcmp(argv[1], "convert"))
        rc = convert(argc - 2, argv + 2, rank, world);
    else if (argc >= 2 && !strcmp(argv[1], "jpegs"))
        rc = rank == 0 ? jpegs(argc - 2, argv + 2) : 0;
    else if (argc >= 2 && !strcmp(argv[1], "info"))
        rc = rank == 0 ? info(argc - 2, argv + 2) : 0;
    else {
        if (rank == 0)
            fprintf(stderr, "%s", usage);
        rc = argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) ? 0 : 2;
    }
    MPI_Finalize();
    return rc;
}
