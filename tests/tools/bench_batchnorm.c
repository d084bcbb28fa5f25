/* bench_batchnorm.c - microseconds per image of batch_normalization's
 * forward (training and inference) and backward (training) at one thread.
 *
 *   bench_batchnorm [HxWxC ...]    (default 32x32x16 8x8x64; batch 8, a chunk)
 *
 * Not a test: a helper for the README's timing of the layer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnn/config.h"
#include "cnn/model.h"

enum { BATCH = 8 };

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Seconds per call of the layer's forward (training or not) or backward:
 * the best of rounds of 20 calls over half a second, as other processes
 * share the machine. */
static double time_calls(cnn_model *m, const float *x, float *dx, int which)
{
    cnn_layer *l = &m->layers[0];
    const float *w = m->params + l->param_offset;
    cnn_ctx ctx = cnn_model_ctx(m, which != 1, 1, 0, NULL);
    l->ops->forward(l, w, x, m->act[0], BATCH, &ctx); /* statistics for backward */
    double start = now(), best = 1e30;
    do {
        double t0 = now();
        for (int r = 0; r < 20; r++)
            if (which == 2)
                l->ops->backward(l, w, m->grads + l->param_offset, x, m->act[0], m->dact[0], dx,
                                 BATCH, &ctx);
            else
                l->ops->forward(l, w, x, m->act[0], BATCH, &ctx);
        double t = (now() - t0) / 20;
        best = t < best ? t : best;
    } while (now() - start < 0.5);
    return best;
}

int main(int argc, char **argv)
{
    const char *defaults[] = {"32x32x16", "8x8x64"};
    int n = argc > 1 ? argc - 1 : 2;
    for (int i = 0; i < n; i++) {
        const char *shape = argc > 1 ? argv[i + 1] : defaults[i];
        char ini[256];
        snprintf(ini, sizeof ini,
                 "[input]\nshape = %s\n[batch_normalization]\n[flatten]\n[dense]\nunits = 2\n",
                 shape);
        cnn_error err = {0};
        cnn_config *cfg = NULL;
        cnn_model *m = NULL;
        if (cnn_config_parse_string(&cfg, ini, "bench", &err) ||
            cnn_model_create(&m, cfg, CNN_LOSS_SPARSE_CCE, &err) ||
            cnn_model_reserve(m, BATCH, &err)) {
            fprintf(stderr, "bench_batchnorm: %s\n", err.msg);
            return 2;
        }
        cnn_config_free(cfg);
        cnn_model_init_params(m, 1);
        size_t per = cnn_shape_size(m->input), all = per * BATCH;
        float *x = malloc(all * sizeof *x), *dx = malloc(all * sizeof *dx);
        if (!x || !dx)
            return 1;
        for (size_t k = 0; k < all; k++) {
            x[k] = (float)((k * 2654435761u) % 1000) / 500.0f - 1.0f;
            m->dact[0][k] = (float)((k * 40503u) % 1000) / 1000.0f - 0.5f;
        }
        double ft = time_calls(m, x, dx, 0), fi = time_calls(m, x, dx, 1),
               bt = time_calls(m, x, dx, 2);
        printf("batch_normalization %-10s (C=%d, HxW=%dx%d) batch %d: forward %.2f us/image "
               "(inference %.2f), backward %.2f us/image; %.2f GB/s forward\n",
               shape, m->input.c, m->input.h, m->input.w, BATCH, 1e6 * ft / BATCH,
               1e6 * fi / BATCH, 1e6 * bt / BATCH, 3.0 * all * sizeof(float) / ft / 1e9);
        free(x);
        free(dx);
        cnn_model_free(m);
    }
    return 0;
}
