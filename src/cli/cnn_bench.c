/* cnn_bench.c - training and inference throughput of one model.
 *
 *   cnn-bench CONFIG [--threads N] [--batch B] [--steps S] [--warmup W] [--set k=v]...
 *             [--profile] [--trace FILE.json]
 *
 * Builds the model of CONFIG, feeds one random batch (as the PyTorch peer's
 * --synthetic mode does), times S full training steps (forward, loss,
 * backward, optimizer) after W warm-up steps, then S forward passes, and
 * prints one RESULT line. No MPI, no data files: it measures the engine.
 * --profile then runs S more steps with the layers timed and prints the
 * per-layer table (cnn/profile.h) against one core's FMA peak measured in
 * the same run; --trace writes those steps as a Chrome trace.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/model.h"
#include "cnn/optim.h"
#include "cnn/profile.h"
#include "cnn/rng.h"
#include "cnn/train.h"
#include "cli.h"

static double now(void) { return cnn_profile_now(); }

static int fail(const cnn_error *err)
{
    fprintf(stderr, "cnn-bench: %s\n", err->msg);
    return cnn_status_exit_code(err->status);
}

/* One training step on batch (x, y); with p, its parts are timed. */
static cnn_status train_step(cnn_model *m, cnn_optim *opt, const float *x, const int32_t *y,
                             int B, const cnn_ctx *ctx, cnn_profile *p, cnn_error *err)
{
    double t0 = now();
    cnn_batch_stats bs = {0};
    cnn_model_zero_grad(m);
    cnn_model_forward(m, x, B, ctx);
    cnn_status st = cnn_model_loss(m, y, B, 1.0f / (float)B, 1, &bs, err);
    if (st)
        return st;
    cnn_model_backward(m, x, B, ctx);
    double t1 = now();
    cnn_optim_step(opt, m);
    if (p) {
        double t2 = now();
        cnn_profile_span(p, CNN_SPAN_OPTIMIZER, t1, t2);
        cnn_profile_span(p, CNN_SPAN_STEP, t0, t2);
        cnn_profile_step(p, B);
    }
    return CNN_OK;
}

/* --profile: steps more training steps with the layers timed, the table,
 * and the trace of the first 5 of them when trace is set. */
static cnn_status run_profile(cnn_model *m, cnn_optim *opt, const float *x, const int32_t *y,
                              int B, const cnn_ctx *ctx, long steps, const char *trace,
                              cnn_error *err)
{
    cnn_profile *p = NULL;
    cnn_status st = cnn_profile_create(&p, m, trace ? 5 : 0, err);
    if (st)
        return st;
    cnn_profile_attach(p, m);
    for (long s = 0; s < steps && !st; s++)
        st = train_step(m, opt, x, y, B, ctx, p, err);
    cnn_profile_attach(NULL, m);
    if (!st) {
        cnn_profile_print(p, m, cnn_profile_fma_peak(), stdout);
        if (trace && !(st = cnn_profile_write_trace(p, m, trace, 0, err)))
            printf("profile: trace of 5 steps in %s (chrome://tracing, ui.perfetto.dev)\n", trace);
    }
    cnn_profile_free(p);
    return st;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *trace = NULL;
    int profile = 0;
    long threads = 1, batch = 0, steps = 30, warmup = 5;
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int nsets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (cnn_cli_version(a, "cnn-bench"))
            return 0;
        else if (!strcmp(a, "--threads") && v)
            threads = atol(argv[++i]);
        else if (!strcmp(a, "--batch") && v)
            batch = atol(argv[++i]);
        else if (!strcmp(a, "--steps") && v)
            steps = atol(argv[++i]);
        else if (!strcmp(a, "--warmup") && v)
            warmup = atol(argv[++i]);
        else if (!strcmp(a, "--profile"))
            profile = 1;
        else if (!strcmp(a, "--trace") && v)
            profile = 1, trace = argv[++i];
        else if (!strcmp(a, "--set") && v)
            sets[nsets++] = argv[++i];
        else if (a[0] != '-' && !path)
            path = a;
        else {
            fprintf(stderr, "usage: cnn-bench CONFIG [--threads N] [--batch B] [--steps S] "
                            "[--warmup W] [--set section.key=value]... [--profile] "
                            "[--trace FILE.json]\n");
            return 2;
        }
    }
    if (!path || threads < 1 || steps < 1 || warmup < 0 || batch < 0) {
        fprintf(stderr, "cnn-bench: need CONFIG and positive --threads/--steps\n");
        return 2;
    }
    cnn_train_config tc;
    cnn_status st = cnn_config_load_overrides(&cfg, path, (const char *const *)sets, nsets, &err);
    free(sets);
    if (st || cnn_train_config_read(&tc, cfg, &err))
        return fail(&err);
    if (!batch)
        batch = tc.batch_size;
    cnn_optim_hparams hp;
    cnn_data_config dc; /* read only so that every key is checked */
    cnn_model *m;
    cnn_optim *opt;
    /* timing needs neither checkpoints, the reduction nor augmentation */
    cnn_config_ignore_section(cfg, "checkpoint");
    cnn_config_ignore_section(cfg, "dist");
    cnn_config_ignore_section(cfg, "augment");
    cnn_config_ignore_section(cfg, "early_stopping");
    cnn_config_ignore_section(cfg, "reduce_lr_on_plateau");
    cnn_lr_schedule sched; /* read only so that its keys are checked: steps run at lr */
    if (cnn_optim_hparams_from_config(&hp, cfg, &err) ||
        cnn_lr_schedule_read(&sched, cfg, hp.lr, tc.batch_size, &err) ||
        cnn_data_config_read(&dc, cfg, &err) ||
        cnn_model_create(&m, cfg, tc.loss, &err) || cnn_config_check_unused(cfg, &err) ||
        cnn_model_reserve(m, (int)batch, &err) ||
        cnn_optim_create(&opt, &hp, m->nparams, &err))
        return fail(&err);
    cnn_set_threads((int)threads);
    cnn_model_init_params(m, tc.seed);

    const size_t in = cnn_shape_size(m->input);
    float *x = malloc((size_t)batch * in * sizeof *x);
    int32_t *y = malloc((size_t)batch * sizeof *y);
    int64_t *ids = malloc((size_t)batch * sizeof *ids);
    if (!x || !y || !ids) {
        fprintf(stderr, "cnn-bench: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)batch * in; i++)
        x[i] = cnn_rng_uniform(cnn_rng_hash(1, 99, 0, i));
    for (long b = 0; b < batch; b++) {
        y[b] = m->loss == CNN_LOSS_BCE ? (int32_t)(b & 1) : (int32_t)(b % m->nclasses);
        ids[b] = b;
    }
    cnn_ctx ctx = cnn_model_ctx(m, 1, tc.seed, 0, ids);
    double t0 = 0;
    for (long s = 0; s < warmup + steps; s++) {
        if (s == warmup)
            t0 = now();
        if (train_step(m, opt, x, y, (int)batch, &ctx, NULL, &err))
            return fail(&err);
    }
    double train_ips = (double)steps * batch / (now() - t0);
    if (profile && run_profile(m, opt, x, y, (int)batch, &ctx, steps, trace, &err))
        return fail(&err);
    cnn_ctx ictx = cnn_model_ctx(m, 0, tc.seed, 0, NULL);
    for (long s = 0; s < warmup + steps; s++) {
        if (s == warmup)
            t0 = now();
        cnn_model_forward(m, x, (int)batch, &ictx);
    }
    double infer_ips = (double)steps * batch / (now() - t0);
    printf("RESULT cnn-bench config=%s threads=%ld batch=%ld params=%zu train_img_s=%.1f "
           "infer_img_s=%.1f (steps=%ld warmup=%ld)\n",
           path, threads, batch, m->nparams, train_ips, infer_ips, steps, warmup);
    free(x);
    free(y);
    free(ids);
    cnn_optim_free(opt);
    cnn_model_free(m);
    cnn_config_free(cfg);
    return 0;
}
