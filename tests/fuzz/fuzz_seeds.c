/* fuzz_seeds.c - writes the seed corpus of every harness from valid files
 * made with libcnn's own writers, so the seeds follow the formats as they
 * change:
 *
 *     fuzz_seeds OUTDIR      -> OUTDIR/<target>/<seed>
 *
 * The config harness takes configs/ itself. Each seed carries the flag
 * byte (and length fields) its harness reads first (see each harness). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image_write.h>

#include "cnn/checkpoint.h"
#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/model.h"
#include "cnn/optim.h"

static const char *out;

static _Noreturn void die(const char *what)
{
    fprintf(stderr, "fuzz_seeds: %s\n", what);
    exit(1);
}

static void dir_of(const char *target)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", out, target);
    if (mkdir(out, 0777) != 0 && errno != EEXIST)
        die(out);
    if (mkdir(p, 0777) != 0 && errno != EEXIST)
        die(p);
}

/* A growable byte buffer for seeds assembled from pieces. */
typedef struct buf {
    uint8_t *p;
    size_t n;
} buf;

static void put(buf *b, const void *data, size_t n)
{
    b->p = realloc(b->p, b->n + n + 1);
    if (!b->p)
        die("out of memory");
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_u8(buf *b, int v)
{
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}

static void put_le16(buf *b, size_t v)
{
    put_u8(b, (int)(v & 255));
    put_u8(b, (int)(v >> 8 & 255));
}

static void put_be32(buf *b, uint32_t v)
{
    uint8_t c[4] = {v >> 24, v >> 16 & 255, v >> 8 & 255, v & 255};
    put(b, c, 4);
}

static void save(const char *target, const char *name, const buf *b)
{
    char p[4096];
    dir_of(target);
    snprintf(p, sizeof p, "%s/%s/%s", out, target, name);
    FILE *f = fopen(p, "wb");
    if (!f || (b->n && fwrite(b->p, 1, b->n, f) != b->n) || fclose(f) != 0)
        die(p);
}

/* A file written by libcnn, prefixed with `prefix` bytes, as a seed. */
static void save_file(const char *target, const char *name, const char *path, const buf *prefix)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path);
    buf b = {0};
    if (prefix)
        put(&b, prefix->p, prefix->n);
    uint8_t chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        put(&b, chunk, n);
    fclose(f);
    save(target, name, &b);
    free(b.p);
    unlink(path);
}

/* One seed per flag value: flags, the length of head (2 bytes), head, body. */
static void save_flagged(const char *target, const char *stem, const int *flags, size_t nflags,
                         const void *head, size_t nhead, const buf *body)
{
    for (size_t f = 0; f < nflags; f++) {
        buf s = {0};
        put_u8(&s, flags[f]);
        put_le16(&s, nhead);
        put(&s, head, nhead);
        put(&s, body->p, body->n);
        char name[64];
        snprintf(name, sizeof name, "%s-flags%d", stem, flags[f]);
        save(target, name, &s);
        free(s.p);
    }
}

/* Three 5 x 4 images and their labels, as IDX files in one seed. */
static void idx_seeds(void)
{
    enum { N = 3, H = 5, W = 4 };
    buf lab = {0}, img = {0};
    put_be32(&lab, 0x801);
    put_be32(&lab, N);
    put_be32(&img, 0x803);
    put_be32(&img, N);
    put_be32(&img, H);
    put_be32(&img, W);
    for (int i = 0; i < N; i++) {
        put_u8(&lab, i * 4);
        for (int k = 0; k < H * W; k++)
            put_u8(&img, (i * 37 + k * 11) & 255);
    }
    static const int flags[] = {0, 1, 2, 3, 4, 8};
    save_flagged("idx", "three", flags, sizeof flags / sizeof *flags, lab.p, lab.n, &img);
    free(lab.p);
    free(img.p);
}

/* Two CIFAR-10 records and a class list. */
static void cifar10_seeds(void)
{
    const char meta[] = "plane\ncar\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n";
    buf rec = {0};
    for (int i = 0; i < 2; i++) {
        put_u8(&rec, 3 + i * 5);
        for (int k = 0; k < 3 * 32 * 32; k++)
            put_u8(&rec, (i * 91 + k * 7) & 255);
    }
    static const int flags[] = {0, 1, 2, 6, 8};
    save_flagged("cifar10", "two", flags, sizeof flags / sizeof *flags, meta, sizeof meta - 1,
                 &rec);
    free(rec.p);
}

/* Small images of every format stb_image_write writes, and PNM by hand. */
static void image_seeds(const char *tmp)
{
    enum { W = 9, H = 7 };
    uint8_t px[H * W * 4];
    for (int k = 0; k < H * W * 4; k++)
        px[k] = (uint8_t)(k * 29);
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-image", tmp);
    buf gray = {0}, rgb = {0};
    put_u8(&gray, 0); /* 1 channel, 28 x 28 */
    put_u8(&rgb, 1 | 2 << 1); /* 3 channels, 1 x 1 */
    for (int comp = 1; comp <= 4; comp += 3) {
        const buf *pre = comp == 1 ? &gray : &rgb;
        char name[32];
        snprintf(name, sizeof name, "png-%d", comp);
        if (!stbi_write_png(path, W, H, comp, px, W * comp))
            die(path);
        save_file("image", name, path, pre);
        snprintf(name, sizeof name, "bmp-%d", comp);
        if (!stbi_write_bmp(path, W, H, comp, px))
            die(path);
        save_file("image", name, path, pre);
        snprintf(name, sizeof name, "tga-%d", comp);
        if (!stbi_write_tga(path, W, H, comp, px))
            die(path);
        save_file("image", name, path, pre);
        snprintf(name, sizeof name, "jpg-%d", comp);
        if (!stbi_write_jpg(path, W, H, comp, px, 90))
            die(path);
        save_file("image", name, path, pre);
    }
    buf pgm = {0};
    put(&pgm, gray.p, gray.n);
    const char head[] = "P5\n4 3\n255\n";
    put(&pgm, head, sizeof head - 1);
    put(&pgm, px, 12);
    save("image", "pgm", &pgm);
    free(pgm.p);
    free(gray.p);
    free(rgb.p);
}

static void h5data_seeds(const char *tmp)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seed.h5", tmp);
    const cnn_shape shape = {.c = 1, .h = 3, .w = 2};
    uint8_t px[4 * 6];
    for (int k = 0; k < 24; k++)
        px[k] = (uint8_t)(k * 10);
    const int32_t labels[4] = {0, 1, 1, 0};
    const char *const names[2] = {"yes", "no"};
    for (int variant = 0; variant < 2; variant++) {
        cnn_error err = {0};
        cnn_h5data_writer *w;
        if (cnn_h5data_create(&w, path, shape, variant ? 2 : 1, variant ? 4 : 0, &err) ||
            cnn_h5data_append(w, px, 4, &err) ||
            cnn_h5data_close(w, labels, variant ? names : NULL, variant ? 2 : 0, &err))
            die(err.msg);
        save_file("h5data", variant ? "gzip-classes" : "plain", path, NULL);
    }
}

static const char ckpt_config[] = "[data]\nformat = idx\n"
                                   "[optimizer]\ntype = adam\n"
                                   "[input]\nshape = 4x4x1\n"
                                   "[conv2d]\nfilters = 2\nkernel = 3\nactivation = relu\n"
                                   "[flatten]\n"
                                   "[dense]\nunits = 3\nactivation = softmax\n";

static void checkpoint_seeds(const char *tmp)
{
    cnn_error err = {0};
    cnn_config *cfg;
    cnn_model *m;
    cnn_optim_hparams hp;
    cnn_optim *o;
    if (cnn_config_parse_string(&cfg, ckpt_config, "seed.ini", &err) ||
        cnn_optim_hparams_from_config(&hp, cfg, &err) ||
        cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err) ||
        cnn_optim_create(&o, &hp, m->nparams, &err))
        die(err.msg);
    cnn_model_init_params(m, 7);
    cnn_history h = {0};
    cnn_epoch_record r = {.epoch = 1, .loss = 1.5, .accuracy = 0.5, .val_loss = 1.25,
                          .val_accuracy = 0.5, .lr = 1e-3, .seconds = 1, .images_per_sec = 9};
    cnn_train_state s = {.epoch = 1, .global_step = 2, .samples_seen = 8, .seed = 42, .world = 1};
    const char *const names[3] = {"a", "b", "c"};
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-ckpt.h5", tmp);
    for (int variant = 0; variant < 2; variant++) {
        if (variant && cnn_history_append(&h, &r, &err))
            die(err.msg);
        if (cnn_checkpoint_write(path, m, o, &s, &h, cfg->text, variant ? names : NULL,
                                 variant ? 3 : 0, &err))
            die(err.msg);
        save_file("checkpoint", variant ? "history-classes" : "plain", path, NULL);
    }
    cnn_history_free(&h);
    cnn_optim_free(o);
    cnn_model_free(m);
    cnn_config_free(cfg);
}

static void csv_seeds(void)
{
    static const char *const csv[] = {
        "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,images_per_sec\n"
        "1,0.512345,0.812000,0.401234,0.851000,0.001,12.345,4861.2\n"
        "2,0.412345,0.842000,0.381234,0.861000,0.001,12.1,4901.0\n",
        "epoch,loss,accuracy\n1,2.3,0.1\n2,nan,0.2\n3,1e300,-inf\n",
        "accuracy,epoch,val_accuracy,loss,val_loss\n1,1,,0.5,\n0.5,2,0.25,0.25,0.5\n",
    };
    for (size_t i = 0; i < sizeof csv / sizeof *csv; i++) {
        buf b = {0};
        put(&b, csv[i], strlen(csv[i]));
        char name[32];
        snprintf(name, sizeof name, "history-%zu", i);
        save("history_csv", name, &b);
        save("plot", name, &b); /* the same files, drawn */
        free(b.p);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2)
        die("usage: fuzz_seeds OUTDIR");
    out = argv[1];
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/.tmp", out);
    dir_of(".tmp");
    idx_seeds();
    cifar10_seeds();
    image_seeds(tmp);
    h5data_seeds(tmp);
    checkpoint_seeds(tmp);
    csv_seeds();
    rmdir(tmp);
    return 0;
}
