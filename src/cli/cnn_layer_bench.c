/* cnn_layer_bench.c - forward and backward time of single layers.
 *
 *   cnn-layer-bench [--batch B] [--reps R] [--threads N] SHAPE SPEC [SHAPE SPEC]...
 *
 *   SHAPE  the layer's input, HxWxC:  16x16x192
 *   SPEC   the section and its keys:  "depthwise_conv2d kernel=3 padding=same activation=relu6"
 *
 * For each pair, builds [input] + the layer (+ [flatten], so that the model
 * is complete), fills parameters and input with random numbers and times R
 * forward calls (the layer's forward and its activation, as the model runs
 * them) and R backward calls (the activation's derivative, then the layer's
 * backward with dL/dx, as for a layer that is not the first). Prints the
 * median and the best time of a call divided by B, in microseconds per
 * image (on a loaded machine the best is the steadier). BLAS runs on N
 * threads (default 1).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnn/config.h"
#include "cnn/model.h"
#include "cnn/rng.h"
#include "cli.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
}

/* "[input]\nshape = SHAPE\n[section]\nk = v\n...[flatten]\n" from SPEC. */
static int ini_text(const char *shape, const char *spec, char *buf, size_t n)
{
    char tmp[1024];
    if (snprintf(tmp, sizeof tmp, "%s", spec) >= (int)sizeof tmp)
        return 0;
    size_t len = (size_t)snprintf(buf, n, "[input]\nshape = %s\n", shape);
    char *save = NULL;
    for (char *tok = strtok_r(tmp, " ", &save); tok && len < n;
         tok = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(tok, '=');
        if (eq) {
            *eq = 0;
            len += (size_t)snprintf(buf + len, n - len, "%s = %s\n", tok, eq + 1);
        } else {
            len += (size_t)snprintf(buf + len, n - len, "[%s]\n", tok);
        }
    }
    if (len < n)
        len += (size_t)snprintf(buf + len, n - len, "[flatten]\n");
    return len < n;
}

static void fill(float *v, size_t n, uint64_t stream)
{
    for (size_t k = 0; k < n; k++)
        v[k] = 2.0f * cnn_rng_uniform(cnn_rng_hash(7, stream, 0, k)) - 1.0f;
}

static int bench(const char *shape, const char *spec, int B, int reps, cnn_error *err)
{
    char ini[4096];
    cnn_config *cfg = NULL;
    cnn_model *m = NULL;
    if (!ini_text(shape, spec, ini, sizeof ini)) {
        cnn_error_set(err, CNN_ERR_CONFIG, "layer spec too long: %s", spec);
        return 2;
    }
    if (cnn_config_parse_string(&cfg, ini, "layer-bench", err) ||
        cnn_model_create(&m, cfg, CNN_LOSS_MSE, err) || cnn_config_check_unused(cfg, err) ||
        cnn_model_reserve(m, B, err)) {
        cnn_model_free(m);
        cnn_config_free(cfg);
        return cnn_status_exit_code(err->status);
    }
    cnn_layer *l = &m->layers[0];
    const size_t nin = (size_t)B * cnn_shape_size(l->in), nout = (size_t)B * cnn_shape_size(l->out);
    float *x = malloc(nin * sizeof *x), *din = malloc(nin * sizeof *din);
    float *dout = malloc(nout * sizeof *dout), *dy = malloc(nout * sizeof *dy);
    if (!x || !din || !dout || !dy) {
        fprintf(stderr, "cnn-layer-bench: out of memory\n");
        exit(1);
    }
    fill(m->params, m->nparams, 1);
    fill(x, nin, 2);
    fill(dout, nout, 3);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 1, 0, NULL);
    const float *w = m->params + l->param_offset;
    float *g = m->grads + l->param_offset, *out = m->act[0];
    const int rowwise = l->act == CNN_ACT_SOFTMAX;
    const size_t rows = rowwise ? (size_t)B : 1, row = rowwise ? nout / (size_t)B : nout;
    double *tf = malloc((size_t)reps * sizeof *tf), *tb = malloc((size_t)reps * sizeof *tb);
    if (!tf || !tb) {
        fprintf(stderr, "cnn-layer-bench: out of memory\n");
        exit(1);
    }
    for (int r = -2; r < reps; r++) { /* two warm-up rounds */
        double t0 = now();
        l->ops->forward(l, w, x, out, B, &ctx);
        cnn_activation_forward(l->act, out, rows, row);
        double t1 = now();
        memcpy(dy, dout, nout * sizeof *dy);
        double t2 = now();
        cnn_activation_backward(l->act, out, dy, rows, row);
        l->ops->backward(l, w, g, x, out, dy, din, B, &ctx);
        double t3 = now();
        if (r >= 0) {
            tf[r] = t1 - t0;
            tb[r] = t3 - t2;
        }
    }
    const double mf = median(tf, reps), mb = median(tb, reps); /* sorts: [0] is the best */
    printf("%-58s in %-9s out %dx%dx%-4d params %7zu  forward %8.2f (best %8.2f)  backward "
           "%8.2f (best %8.2f) us/image\n",
           spec, shape, l->out.h, l->out.w, l->out.c, l->param_count, 1e6 * mf / B,
           1e6 * tf[0] / B, 1e6 * mb / B, 1e6 * tb[0] / B);
    free(tf);
    free(tb);
    free(x);
    free(din);
    free(dout);
    free(dy);
    cnn_model_free(m);
    cnn_config_free(cfg);
    return 0;
}

int main(int argc, char **argv)
{
    long batch = 32, reps = 20, threads = 1;
    int first = 1;
    if (argc > 1 && cnn_cli_version(argv[1], "cnn-layer-bench"))
        return 0;
    for (; first < argc && argv[first][0] == '-'; first += 2) {
        const char *a = argv[first], *v = first + 1 < argc ? argv[first + 1] : NULL;
        long *dst = !strcmp(a, "--batch") ? &batch : !strcmp(a, "--reps") ? &reps
                    : !strcmp(a, "--threads") ? &threads : NULL;
        char *end = NULL;
        if (!dst || !v || (*dst = strtol(v, &end, 10)) < 1 || *end || *dst > 1 << 20) {
            first = argc; /* usage */
            break;
        }
    }
    if (first >= argc || (argc - first) % 2) {
        fprintf(stderr, "usage: cnn-layer-bench [--batch B] [--reps R] [--threads N] SHAPE SPEC "
                        "[SHAPE SPEC]...\n  e.g. cnn-layer-bench 16x16x192 \"depthwise_conv2d "
                        "kernel=3 padding=same activation=relu6\"\n");
        return 2;
    }
    cnn_blas_set_threads((int)threads);
    printf("batch %ld, median and best of %ld calls, %ld BLAS thread(s)\n", batch, reps, threads);
    for (int i = first; i + 1 < argc; i += 2) {
        cnn_error err = {0};
        int rc = bench(argv[i], argv[i + 1], (int)batch, (int)reps, &err);
        if (rc) {
            fprintf(stderr, "cnn-layer-bench: %s\n", err.msg);
            return rc;
        }
    }
    return 0;
}
