/* data_tool.c - helpers of the data integration tests and benchmarks.
 *
 *   data_tool folder IMAGES.idx[.gz] LABELS.idx[.gz] OUTDIR N SCALE
 *       writes the first N IDX images as OUTDIR/<label>/<i>.<ext>, enlarged
 *       SCALE times (nearest), the extension cycling png, jpg, bmp
 *   data_tool cifar OUTDIR N_TRAIN N_TEST
 *       writes synthetic CIFAR-10 batches (data_batch_1..2, test_batch)
 *   data_tool cifar-pattern OUTDIR N_TRAIN N_TEST
 *       the same files holding a learnable set: class c is a sine grating
 *       at 18c degrees (period 16, 8 or 5 pixels as c % 3), tinted by c,
 *       with a random phase and uniform noise of +-48 per pixel
 *   data_tool compare A.ini B.ini
 *       loads the [data] sets of both configs and exits 0 only when train,
 *       validation and test hold the same pixels and labels
 *   data_tool bench CONFIG BATCHES [B]
 *       reads BATCHES random batches of B (default 32) from the training
 *       set of CONFIG and prints images/s
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <stb_image_write.h>

#include "cnn/config.h"
#include "cnn/data.h"

static int fail(const cnn_error *err)
{
    fprintf(stderr, "data_tool: %s\n", err->msg);
    return 1;
}

static cnn_status load_config(const char *path, cnn_data_config *dc, cnn_error *err)
{
    cnn_config *cfg = NULL;
    cnn_status st = cnn_config_load(&cfg, path, err);
    if (!st)
        st = cnn_data_config_read(dc, cfg, err);
    cnn_config_free(cfg);
    return st;
}

/* mkdir -p dir */
static void make_dirs(const char *dir)
{
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s/", dir) >= (int)sizeof buf)
        return;
    for (char *s = buf + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(buf, 0755);
            *s = '/';
        }
}

static int folder(char **argv)
{
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    long n = atol(argv[3]), scale = atol(argv[4]);
    if (cnn_idx_load(&d, argv[0], argv[1], n, &err))
        return fail(&err);
    const int h = d->shape.h, w = d->shape.w, H = h * (int)scale, W = w * (int)scale;
    uint8_t *px = malloc((size_t)h * w), *big = malloc((size_t)H * W);
    static const char *const ext[3] = {"png", "jpg", "bmp"};
    for (int64_t i = 0; i < d->n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%d", argv[2], d->labels[i]);
        make_dirs(path);
        snprintf(path, sizeof path, "%s/%d/%05lld.%s", argv[2], d->labels[i], (long long)i,
                 ext[i % 3]);
        if (cnn_dataset_read(d, &i, 1, px, &err))
            return fail(&err);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                big[y * W + x] = px[(y / scale) * w + x / scale];
        int ok = i % 3 == 0   ? stbi_write_png(path, W, H, 1, big, W)
                 : i % 3 == 1 ? stbi_write_jpg(path, W, H, 1, big, 90)
                              : stbi_write_bmp(path, W, H, 1, big);
        if (!ok) {
            fprintf(stderr, "data_tool: cannot write %s\n", path);
            return 1;
        }
    }
    free(px);
    free(big);
    cnn_dataset_free(d);
    return 0;
}

enum { CIFAR_REC = 3073, CIFAR_S = 32 };

static uint32_t lcg(uint32_t *s) { return *s = *s * 1664525u + 1013904223u; }

/* A record of noise with a random label. */
static void fill_noise(uint8_t *rec, uint32_t *s)
{
    for (int j = 0; j < CIFAR_REC; j++)
        rec[j] = (uint8_t)(lcg(s) >> 24);
    rec[0] %= 10;
}

/* A record of the learnable set (see the header). */
static void fill_pattern(uint8_t *rec, uint32_t *s)
{
    const double period[3] = {16, 8, 5};
    const int c = (int)((lcg(s) >> 8) % 10);
    const double th = c * 18.0 * 3.14159265358979 / 180.0;
    const double ph = (lcg(s) >> 8) / 16777216.0 * 6.2832, k = 6.2832 / period[c % 3];
    rec[0] = (uint8_t)c;
    for (int ch = 0; ch < 3; ch++) {
        const double tint = 0.4 + 0.6 * ((c + ch * 3) % 10) / 9.0;
        for (int y = 0; y < CIFAR_S; y++)
            for (int x = 0; x < CIFAR_S; x++) {
                double v = 128 + 70 * tint * sin(k * (x * cos(th) + y * sin(th)) + ph) +
                           (double)((lcg(s) >> 8) % 97) - 48;
                rec[1 + (ch * CIFAR_S + y) * CIFAR_S + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    }
}

/* data_batch_1..2 and test_batch in argv[0], records made by fill. */
static int cifar(char **argv, void (*fill)(uint8_t *, uint32_t *), uint32_t seed)
{
    const long ntrain = atol(argv[1]), ntest = atol(argv[2]);
    const char *names[3] = {"data_batch_1.bin", "data_batch_2.bin", "test_batch.bin"};
    const long counts[3] = {ntrain - ntrain / 2, ntrain / 2, ntest};
    uint8_t rec[CIFAR_REC];
    uint32_t s = seed;
    make_dirs(argv[0]);
    for (int f = 0; f < 3; f++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", argv[0], names[f]);
        FILE *fp = fopen(path, "wb");
        for (long r = 0; fp && r < counts[f]; r++) {
            fill(rec, &s);
            fwrite(rec, 1, CIFAR_REC, fp);
        }
        if (!fp || fclose(fp)) {
            fprintf(stderr, "data_tool: cannot write %s\n", path);
            return 1;
        }
    }
    return 0;
}

/* 0 when a and b hold the same images and labels. */
static int same(const cnn_dataset *a, const cnn_dataset *b, const char *what)
{
    if (!a || !b) {
        if (a == b)
            return 0;
        fprintf(stderr, "data_tool: %s set in one config only\n", what);
        return 1;
    }
    const size_t img = cnn_shape_size(a->shape);
    if (a->n != b->n || img != cnn_shape_size(b->shape) || a->shape.c != b->shape.c) {
        fprintf(stderr, "data_tool: %s: %lld vs %lld images of %dx%dx%d vs %dx%dx%d\n", what,
                (long long)a->n, (long long)b->n, a->shape.h, a->shape.w, a->shape.c,
                b->shape.h, b->shape.w, b->shape.c);
        return 1;
    }
    uint8_t *pa = malloc(img), *pb = malloc(img);
    cnn_error err = {0};
    for (int64_t i = 0; i < a->n; i++) {
        if (cnn_dataset_read(a, &i, 1, pa, &err) || cnn_dataset_read(b, &i, 1, pb, &err))
            return fail(&err);
        if (a->labels[i] != b->labels[i] || memcmp(pa, pb, img)) {
            fprintf(stderr, "data_tool: %s sample %lld differs (labels %d, %d)\n", what,
                    (long long)i, a->labels[i], b->labels[i]);
            return 1;
        }
    }
    free(pa);
    free(pb);
    printf("%s: %lld samples identical\n", what, (long long)a->n);
    return 0;
}

static int compare(char **argv)
{
    cnn_data_config dc[2];
    cnn_dataset *s[2][3] = {{NULL}};
    cnn_error err = {0};
    int rc = 0;
    for (int k = 0; k < 2 && !rc; k++)
        if (load_config(argv[k], &dc[k], &err) ||
            cnn_data_load(&dc[k], 0, 1, &s[k][0], &s[k][1], &s[k][2], &err))
            rc = fail(&err);
    if (!rc)
        rc = same(s[0][0], s[1][0], "train") || same(s[0][1], s[1][1], "validation") ||
             same(s[0][2], s[1][2], "test");
    for (int k = 0; k < 2; k++) { /* validation = test is one dataset */
        if (s[k][1] != s[k][2])
            cnn_dataset_free(s[k][1]);
        cnn_dataset_free(s[k][0]);
        cnn_dataset_free(s[k][2]);
    }
    return rc;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int bench(int argc, char **argv)
{
    cnn_data_config dc;
    cnn_dataset *train, *val, *test;
    cnn_error err = {0};
    const long batches = atol(argv[1]), B = argc > 2 ? atol(argv[2]) : 32;
    if (load_config(argv[0], &dc, &err) || cnn_data_load(&dc, 0, 1, &train, &val, &test, &err))
        return fail(&err);
    int64_t *idx = malloc((size_t)B * sizeof *idx);
    uint8_t *out = malloc((size_t)B * cnn_shape_size(train->shape));
    uint64_t s = 88172645463325252ULL;
    const double t0 = now();
    for (long k = 0; k < batches; k++) {
        for (long b = 0; b < B; b++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            idx[b] = (int64_t)(s % (uint64_t)train->n);
        }
        if (cnn_dataset_read(train, idx, (int)B, out, &err))
            return fail(&err);
    }
    const double dt = now() - t0;
    printf("%s: %s store, %ld random batches of %ld: %.3f s, %.0f images/s\n", argv[0],
           train->store->ops->format, batches, B, dt, (double)(batches * B) / dt);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 7 && !strcmp(argv[1], "folder"))
        return folder(argv + 2);
    if (argc == 5 && !strcmp(argv[1], "cifar"))
        return cifar(argv + 2, fill_noise, 12345);
    if (argc == 5 && !strcmp(argv[1], "cifar-pattern"))
        return cifar(argv + 2, fill_pattern, 2024);
    if (argc == 4 && !strcmp(argv[1], "compare"))
        return compare(argv + 2);
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "bench"))
        return bench(argc - 2, argv + 2);
    fprintf(stderr, "usage: see the header of tests/tools/data_tool.c\n");
    return 2;
}
