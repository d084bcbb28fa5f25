/* cnn_predict.c - the cnn-predict program: classify image files with a
 * trained model, and draw a layer's feature maps.
 *
 *   cnn-predict CHECKPOINT IMAGE... [--top K] [--json]
 *   cnn-predict CHECKPOINT IMAGE... --feature-maps LAYER [--out DIR] [--scale N]
 *
 * The checkpoint alone is enough: its config gives the network, the input
 * size and the preprocessing ([data] rescale), its /model the weights and
 * its /classes the class names (else the classes are numbered). Images are
 * decoded and resized as in training (cnn/image.h) and classified in
 * batches. Exit codes: 0, 2 bad input (unreadable checkpoint or image:
 * the other images are still classified), 1 other errors.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/checkpoint.h"
#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/image.h"
#include "cnn/imageio.h"
#include "cnn/json.h"
#include "cnn/model.h"
#include "cnn/tensor.h"
#include "cnn/train.h"
#include "cli.h"

enum { BATCH = 64 };

typedef struct args {
    const char *ckpt;
    const char **images;
    int nimages;
    int top;
    int json;
    const char *maps_layer; /* --feature-maps */
    const char *out;        /* --out DIR */
    int scale;
} args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cnn-predict CHECKPOINT IMAGE... [--top K] [--json]\n"
            "       cnn-predict CHECKPOINT IMAGE... --feature-maps LAYER [--out DIR] [--scale N]\n"
            "  --top K            the K most probable classes (default 3)\n"
            "  --json             one JSON document instead of text\n"
            "  --feature-maps L   write the activations of layer L (a name from\n"
            "                     cnn-train --summary) for each image as a PNG grid,\n"
            "                     one tile per channel: DIR/IMAGE-L.png\n"
            "  --out DIR          directory of the PNGs (default .)\n"
            "  --scale N          enlarge each tile N times (default: to about 64 pixels)\n");
}

static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->top = 3;
    a->out = ".";
    a->images = calloc((size_t)argc, sizeof *a->images);
    if (!a->images)
        return 1;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return 0;
        } else if (cnn_cli_version(s, "cnn-predict")) {
            return 0;
        } else if (!strcmp(s, "--json")) {
            a->json = 1;
        } else if (!strcmp(s, "--top") || !strcmp(s, "--feature-maps") || !strcmp(s, "--out") ||
                   !strcmp(s, "--scale")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "cnn-predict: %s needs a value\n", s);
                return 2;
            }
            const char *v = argv[++i];
            char *end;
            if (!strcmp(s, "--feature-maps")) {
                a->maps_layer = v;
            } else if (!strcmp(s, "--out")) {
                a->out = v;
            } else {
                long n = strtol(v, &end, 10);
                if (*end || n < 1 || n > 4096) {
                    fprintf(stderr, "cnn-predict: %s: '%s' is not a positive integer\n", s, v);
                    return 2;
                }
                if (!strcmp(s, "--top"))
                    a->top = (int)n;
                else
                    a->scale = (int)n;
            }
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "cnn-predict: unknown option '%s' (see --help)\n", s);
            return 2;
        } else if (!a->ckpt) {
            a->ckpt = s;
        } else {
            a->images[a->nimages++] = s;
        }
    }
    if (!a->ckpt || a->nimages == 0) {
        usage(stderr);
        return 2;
    }
    return -1;
}

/* The model of a checkpoint, with its weights, rescale and class names. */
typedef struct predictor {
    cnn_config *cfg;
    cnn_model *m;
    float rescale;
    char **names; /* (nnames) or NULL */
    int nnames;
} predictor;

static cnn_status predictor_open(predictor *p, const char *path, cnn_error *err)
{
    cnn_train_config tc;
    cnn_data_config dc;
    cnn_status st;
    memset(p, 0, sizeof *p);
    if (!cnn_checkpoint_is_hdf5(path))
        return cnn_error_set(err, CNN_ERR_FORMAT,
                             "%s: not a checkpoint (an HDF5 file written by cnn-train)", path);
    if ((st = cnn_config_load_any(&p->cfg, path, err)) ||
        (st = cnn_train_config_read(&tc, p->cfg, err)) ||
        (st = cnn_data_config_read(&dc, p->cfg, err)) ||
        (st = cnn_model_create(&p->m, p->cfg, tc.loss, err)))
        return st;
    cnn_model_unfold(p->m); /* so that --feature-maps shows each layer's own output */
    if ((st = cnn_model_reserve(p->m, BATCH, err)) ||
        (st = cnn_checkpoint_load(path, p->m, NULL, NULL, NULL, err)) ||
        (st = cnn_checkpoint_read_classes(path, &p->names, &p->nnames, err)))
        return st;
    p->rescale = dc.rescale;
    if (p->nnames != (p->m->nclasses > 1 ? p->m->nclasses : 2)) {
        free(p->names);
        p->names = NULL;
        p->nnames = 0;
    }
    return CNN_OK;
}

static void predictor_close(predictor *p)
{
    cnn_model_free(p->m);
    cnn_config_free(p->cfg);
    free(p->names); /* one block with the strings */
}

static const char *class_name(const predictor *p, int c, char *buf, size_t n)
{
    if (p->names)
        return p->names[c];
    snprintf(buf, n, "%d", c);
    return buf;
}

/* Writes the top-k classes of one image's probabilities. For one sigmoid
 * unit: the predicted class and its probability. */
static void print_result(const predictor *p, const char *path, const float *prob, int top,
                         int json, int first, FILE *out)
{
    const int C = p->m->nclasses;
    int order[1024], k;
    char buf[32];
    float pb[2];
    const float *pr = prob;
    if (C == 1) { /* binary: probabilities of class 0 and class 1 */
        pb[0] = 1.0f - prob[0];
        pb[1] = prob[0];
        pr = pb;
    }
    int n = C > 1 ? C : 2;
    if (n > 1024)
        n = 1024;
    for (int i = 0; i < n; i++)
        order[i] = i;
    k = C == 1 ? 1 : (top < n ? top : n);
    for (int i = 0; i < k; i++) /* partial selection sort: k is small */
        for (int j = i + 1; j < n; j++)
            if (pr[order[j]] > pr[order[i]]) {
                int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    if (json) {
        fprintf(out, "%s\n  {\"image\": ", first ? "" : ",");
        cnn_json_string(out, path);
        fprintf(out, ", \"predictions\": [");
        for (int i = 0; i < k; i++) {
            fprintf(out, "%s{\"class\": ", i ? ", " : "");
            cnn_json_string(out, class_name(p, order[i], buf, sizeof buf));
            fprintf(out, ", \"index\": %d, \"probability\": %.6f}", order[i], pr[order[i]]);
        }
        fprintf(out, "]}");
    } else {
        fprintf(out, "%s:", path);
        for (int i = 0; i < k; i++)
            fprintf(out, "%s %s (%.4f)", i ? "," : "", class_name(p, order[i], buf, sizeof buf),
                    pr[order[i]]);
        fputc('\n', out);
    }
}

static int find_layer(const cnn_model *m, const char *name)
{
    for (int i = 0; i < m->nlayers; i++)
        if (!strcmp(m->layers[i].name, name))
            return i;
    return -1;
}

/* DIR/BASENAME-LAYER.png with the layer's activations of sample b. */
static cnn_status write_maps(const predictor *p, int layer, int b, const char *image,
                             const args *a, cnn_error *err)
{
    const cnn_layer *l = &p->m->layers[layer];
    const cnn_shape s = l->out;
    const char *base = strrchr(image, '/') ? strrchr(image, '/') + 1 : image;
    char path[4096];
    int dot = (int)(strrchr(base, '.') ? strrchr(base, '.') - base : (long)strlen(base));
    snprintf(path, sizeof path, "%s/%.*s-%s.png", a->out, dot, base, l->name);
    int scale = a->scale ? a->scale : (s.h * 4 <= 64 ? 64 / (s.h > 0 ? s.h : 1) : 1);
    if (scale < 1)
        scale = 1;
    const float *maps = p->m->act[layer] + (size_t)b * cnn_shape_size(s);
    cnn_status st = cnn_png_write_grid(path, maps, s.c, s.h, s.w, scale, err);
    if (!st) {
        int w, h;
        cnn_png_grid_size(s.c, s.h, s.w, scale, &w, &h);
        fprintf(stderr, "feature maps: %s (%d maps of %dx%d, %dx%d pixels)\n", path, s.c, s.h,
                s.w, w, h);
    }
    return st;
}

int main(int argc, char **argv)
{
    cnn_fp_mode_set(); /* before any thread starts: they inherit it */
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) {
        free(a.images);
        return rc;
    }
    cnn_error err = {0};
    predictor p;
    cnn_status st = predictor_open(&p, a.ckpt, &err);
    int layer = -1;
    if (!st && a.maps_layer && (layer = find_layer(p.m, a.maps_layer)) < 0)
        st = cnn_error_set(&err, CNN_ERR_CONFIG,
                           "--feature-maps %s: no such layer in %s (see cnn-train --summary)",
                           a.maps_layer, a.ckpt);
    if (!st && a.maps_layer && cnn_make_dirs(a.out) != 0)
        st = cnn_error_set(&err, CNN_ERR_IO, "--out %s: cannot create: %s", a.out,
                           strerror(errno));
    if (st) {
        fprintf(stderr, "cnn-predict: %s\n", err.msg);
        predictor_close(&p);
        free(a.images);
        return cnn_status_exit_code(st);
    }
    cnn_model *m = p.m;
    const cnn_shape in = m->input;
    const size_t isz = cnn_shape_size(in);
    uint8_t *raw = malloc(isz);
    float *x = malloc((size_t)BATCH * isz * sizeof *x);
    float *probs = malloc((size_t)BATCH * m->nclasses * sizeof *probs);
    const char **batch = malloc(BATCH * sizeof *batch);
    if (!raw || !x || !probs || !batch) {
        fprintf(stderr, "cnn-predict: out of memory\n");
        return 1;
    }
    cnn_ctx ctx = cnn_model_ctx(m, 0, 0, 0, NULL);
    int bad = 0, first = 1;
    if (a.json)
        printf("[");
    for (int i = 0; i < a.nimages;) {
        int B = 0;
        for (; i < a.nimages && B < BATCH; i++) {
            if (cnn_image_load(a.images[i], in.c, in.h, in.w, raw, &err) != CNN_OK) {
                fprintf(stderr, "cnn-predict: %s\n", err.msg);
                bad = 1;
                continue;
            }
            for (size_t k = 0; k < isz; k++)
                x[(size_t)B * isz + k] = (float)raw[k] * p.rescale;
            batch[B++] = a.images[i];
        }
        if (B == 0)
            continue;
        cnn_model_forward(m, x, B, &ctx);
        cnn_model_probabilities(m, B, probs);
        for (int b = 0; b < B; b++) {
            print_result(&p, batch[b], probs + (size_t)b * m->nclasses, a.top, a.json, first,
                         stdout);
            first = 0;
            if (layer >= 0 && write_maps(&p, layer, b, batch[b], &a, &err) != CNN_OK) {
                fprintf(stderr, "cnn-predict: %s\n", err.msg);
                bad = 1;
            }
        }
    }
    if (a.json)
        printf("\n]\n");
    free(raw);
    free(x);
    free(probs);
    free(batch);
    predictor_close(&p);
    free(a.images);
    return bad ? 2 : 0;
}
