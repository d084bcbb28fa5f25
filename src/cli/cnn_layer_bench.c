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
 *
 * It also times R backward calls without dL/dx (as for the first layer:
 * the weight gradient alone), so the weights' and the data's share of
 * backward are printed apart, and for conv2d, depthwise_conv2d and dense
 * (2 flops per kernel weight and output pixel) the best GFLOP/s of each
 * pass and its share of one core's FMA peak, measured at start-up by
 * independent FMA chains.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <immintrin.h>

#include "cnn/config.h"
#include "cnn/model.h"
#include "cnn/rng.h"
#include "cnn/tensor.h"
#include "cli.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 12 independent chains of 16-float (or 8-float) FMAs: more than the FMA
 * latency times the ports of any x86 core, so this runs at the FMA peak.
 * GFLOP/s of one thread, best of 5. */
#define PEAK_CHAINS(T, FMA)                                                                        \
    T a[12], m = c_m, k = c_k;                                                                     \
    for (int i = 0; i < 12; i++)                                                                   \
        a[i] = c_one;                                                                              \
    for (long it = 0; it < iters; it++) {                                                          \
        for (int i = 0; i < 12; i++)                                                               \
            a[i] = FMA(a[i], m, k);                                                                \
        __asm__ volatile("" : "+v"(a[0]), "+v"(a[1]), "+v"(a[2]), "+v"(a[3]), "+v"(a[4]),           \
                         "+v"(a[5]), "+v"(a[6]), "+v"(a[7]), "+v"(a[8]), "+v"(a[9]), "+v"(a[10]),  \
                         "+v"(a[11]));                                                             \
    }

__attribute__((target("avx512f"))) static void peak_avx512(long iters)
{
    const __m512 c_m = _mm512_set1_ps(0.999999f), c_k = _mm512_set1_ps(1e-7f),
                 c_one = _mm512_set1_ps(1.0f);
    PEAK_CHAINS(__m512, _mm512_fmadd_ps)
}

__attribute__((target("avx2,fma"))) static void peak_avx2(long iters)
{
    const __m256 c_m = _mm256_set1_ps(0.999999f), c_k = _mm256_set1_ps(1e-7f),
                 c_one = _mm256_set1_ps(1.0f);
    PEAK_CHAINS(__m256, _mm256_fmadd_ps)
}

static double fma_peak_gflops(void)
{
    const int wide = __builtin_cpu_supports("avx512f");
    if (!wide && !__builtin_cpu_supports("fma"))
        return 0;
    const long iters = 2000000;
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        (wide ? peak_avx512 : peak_avx2)(iters);
        double g = (double)iters * 12 * (wide ? 32 : 16) / (now() - t0) / 1e9;
        best = g > best ? g : best;
    }
    return best;
}

/* Flops per image of one forward pass (the same for each backward one) of
 * layers whose cost is their kernel applied at every output pixel, else 0. */
static double layer_flops(const cnn_layer *l)
{
    const char *s = l->ops->section;
    if (l->nparams < 1 || strcmp(l->params[0].name, "kernel") ||
        (strcmp(s, "conv2d") && strcmp(s, "depthwise_conv2d") && strcmp(s, "dense")))
        return 0;
    return 2.0 * l->out.h * l->out.w * (double)l->params[0].count;
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

static int bench(const char *shape, const char *spec, int B, int reps, double peak, cnn_error *err)
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
    double *tw = malloc((size_t)reps * sizeof *tw);
    if (!tf || !tb || !tw) {
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
        memcpy(dy, dout, nout * sizeof *dy);
        cnn_activation_backward(l->act, out, dy, rows, row);
        double t4 = now();
        l->ops->backward(l, w, g, x, out, dy, NULL, B, &ctx);
        double t5 = now();
        if (r >= 0) {
            tf[r] = t1 - t0;
            tb[r] = t3 - t2;
            tw[r] = t5 - t4;
        }
    }
    /* median() sorts: [0] is then the best */
    const double mf = median(tf, reps), mb = median(tb, reps), mw = median(tw, reps);
    printf("%-58s in %-9s out %dx%dx%-4d params %7zu  forward %8.2f (best %8.2f)  backward "
           "%8.2f (best %8.2f) us/image\n",
           spec, shape, l->out.h, l->out.w, l->out.c, l->param_count, 1e6 * mf / B,
           1e6 * tf[0] / B, 1e6 * mb / B, 1e6 * tb[0] / B);
    const double fl = layer_flops(l) * B, bd = tb[0] - tw[0];
    printf("    backward weights only %8.2f (best %8.2f), so data %8.2f us/image", 1e6 * mw / B,
           1e6 * tw[0] / B, 1e6 * bd / B);
    if (fl > 0 && peak > 0 && bd > 0)
        printf("; best GFLOP/s (%% of peak): forward %.1f (%.0f%%), backward data %.1f (%.0f%%), "
               "weights %.1f (%.0f%%)",
               fl / tf[0] / 1e9, 100 * fl / tf[0] / 1e9 / peak, fl / bd / 1e9,
               100 * fl / bd / 1e9 / peak, fl / tw[0] / 1e9, 100 * fl / tw[0] / 1e9 / peak);
    printf("\n");
    free(tf);
    free(tb);
    free(tw);
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
    cnn_fp_mode_set(); /* before any thread starts: they inherit it */
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
    const double peak = fma_peak_gflops();
    printf("batch %ld, median and best of %ld calls, %ld BLAS thread(s); FMA peak of one core "
           "%.1f GFLOP/s\n",
           batch, reps, threads, peak);
    for (int i = first; i + 1 < argc; i += 2) {
        cnn_error err = {0};
        int rc = bench(argv[i], argv[i + 1], (int)batch, (int)reps, peak, &err);
        if (rc) {
            fprintf(stderr, "cnn-layer-bench: %s\n", err.msg);
            return rc;
        }
    }
    return 0;
}
