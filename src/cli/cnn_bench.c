/* cnn_bench.c - training and inference throughput of one model.
 *
 *   cnn-bench CONFIG [--threads N] [--batch B] [--steps S] [--warmup W] [--set k=v]...
 *             [--profile] [--trace FILE.json] [--whole-batch]
 *
 * Builds the model of CONFIG, makes one random batch in memory (as the
 * PyTorch peer's --synthetic mode does), times S training steps after W
 * warm-up steps, then S forward passes over the batch, and prints one
 * RESULT line. No data files: it measures the engine.
 *
 * A training step is cnn-train's own (src/train/step.h): the batch in
 * reduction chunks of [dist] chunk_size, spread over N threads, the
 * fixed-point sum, the optimizer (exact reduction; [dist] reduction =
 * float takes the batch whole, BLAS on N threads). Its images come from an
 * in-memory set of random pixels, so only reading files and augmentation
 * are left out. Run under mpirun it is the step of that many ranks (global
 * batch B; rank 0 prints). --whole-batch times instead one forward and
 * backward over the whole batch on one model (BLAS on N threads): the
 * layers' figure without the chunking, as earlier versions measured.
 *
 * --profile then runs S more steps with the layers timed and prints the
 * per-layer table (cnn/profile.h) against one core's FMA peak measured in
 * the same run; --trace writes those steps as a Chrome trace.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../train/step.h"
#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/model.h"
#include "cnn/optim.h"
#include "cnn/profile.h"
#include "cnn/rng.h"
#include "cnn/tensor.h"
#include "cnn/train.h"
#include "cli.h"

static double now(void) { return cnn_profile_now(); }

static int fail(const cnn_error *err)
{
    fprintf(stderr, "cnn-bench: %s\n", err->msg);
    return cnn_status_exit_code(err->status);
}

/* What a timed training step needs. */
typedef struct bench {
    cnn_model *m;
    cnn_optim *opt;
    int B;
    /* --whole-batch: the batch (B, input) and its labels, on m alone */
    const float *x;
    const int32_t *y;
    cnn_ctx ctx;
    /* otherwise cnn-train's step over the set train, samples ids (B) */
    cnn_stepper *sp;
    const cnn_dataset *train;
    const int64_t *ids;
    float rescale;
    uint64_t seed;
} bench;

/* One training step; with p, its parts are timed. */
static cnn_status train_step(bench *b, cnn_profile *p, cnn_error *err)
{
    const double t0 = now();
    cnn_status st;
    if (b->sp) {
        double stats[STAT_N];
        if ((st = cnn_stepper_run(b->sp, b->train, b->ids, b->B, b->rescale, b->seed, 0, 0,
                                  stats, err)))
            return st;
    } else {
        cnn_batch_stats bs = {0};
        cnn_model_zero_grad(b->m);
        cnn_model_forward(b->m, b->x, b->B, &b->ctx);
        if ((st = cnn_model_loss(b->m, b->y, b->B, 1.0f / (float)b->B, 1, &bs, err)))
            return st;
        cnn_model_backward(b->m, b->x, b->B, &b->ctx);
    }
    const double t1 = now();
    if (b->sp)
        cnn_stepper_update(b->sp, b->opt);
    else
        cnn_optim_step(b->opt, b->m);
    if (p) {
        const double t2 = now();
        cnn_profile_span(p, CNN_SPAN_OPTIMIZER, t1, t2);
        cnn_profile_span(p, CNN_SPAN_STEP, t0, t2);
        cnn_profile_step(p, b->B);
    }
    return CNN_OK;
}

/* --profile: steps more training steps with the layers timed, the table,
 * and the trace of the first 5 of them when trace is set (rank 0 prints
 * and writes). */
static cnn_status run_profile(bench *b, long steps, const char *trace, int root, cnn_error *err)
{
    cnn_profile *p = NULL;
    cnn_status st = cnn_profile_create(&p, b->m, trace ? 5 : 0, err);
    if (st)
        return st;
    cnn_profile_attach(p, b->m);
    if (b->sp)
        b->sp->prof = p;
    for (long s = 0; s < steps && !st; s++)
        st = train_step(b, p, err);
    cnn_profile_attach(NULL, b->m);
    if (b->sp)
        b->sp->prof = NULL;
    if (!st && root) {
        cnn_profile_print(p, b->m, cnn_profile_fma_peak(), stdout);
        if (trace && !(st = cnn_profile_write_trace(p, b->m, trace, 0, err)))
            printf("profile: trace of 5 steps in %s (chrome://tracing, ui.perfetto.dev)\n", trace);
    }
    cnn_profile_free(p);
    return st;
}

/* An in-memory training set of n random images of m's input shape (uint8
 * pixels, as a data set stores them) with labels as y, or NULL. */
static cnn_dataset *synthetic_set(const cnn_model *m, long n, const int32_t *y)
{
    const size_t in = cnn_shape_size(m->input);
    uint8_t *pix = malloc((size_t)n * in);
    if (!pix)
        return NULL;
    for (size_t i = 0; i < (size_t)n * in; i++)
        pix[i] = (uint8_t)(cnn_rng_hash(1, 99, 0, i) >> 56);
    cnn_store *store = cnn_memory_store_new(pix, n, m->input);
    cnn_dataset *d = store ? cnn_dataset_new(store, n, "synthetic batch") : NULL;
    cnn_store_release(store);
    if (!d)
        return NULL;
    memcpy(d->labels, y, (size_t)n * sizeof *y);
    d->nclasses = m->nclasses > 1 ? m->nclasses : 2;
    return d;
}

int main(int argc, char **argv)
{
    cnn_fp_mode_set(); /* before any thread starts: they inherit it */
    const char *path = NULL, *trace = NULL;
    int profile = 0, whole = 0;
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
        else if (!strcmp(a, "--whole-batch"))
            whole = 1;
        else if (!strcmp(a, "--set") && v)
            sets[nsets++] = argv[++i];
        else if (a[0] != '-' && !path)
            path = a;
        else {
            fprintf(stderr, "usage: cnn-bench CONFIG [--threads N] [--batch B] [--steps S] "
                            "[--warmup W] [--set section.key=value]... [--profile] "
                            "[--trace FILE.json] [--whole-batch]\n");
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
    cnn_data_config dc; /* read for its rescale and so that every key is checked */
    cnn_dist_config dist;
    cnn_model *m;
    cnn_optim *opt;
    /* timing needs neither checkpoints nor augmentation (a data step) */
    cnn_config_ignore_section(cfg, "checkpoint");
    cnn_config_ignore_section(cfg, "augment");
    cnn_config_ignore_section(cfg, "early_stopping");
    cnn_config_ignore_section(cfg, "reduce_lr_on_plateau");
    cnn_lr_schedule sched; /* read only so that its keys are checked: steps run at lr */
    if (cnn_optim_hparams_from_config(&hp, cfg, &err) ||
        cnn_lr_schedule_read(&sched, cfg, hp.lr, tc.batch_size, &err) ||
        cnn_data_config_read(&dc, cfg, &err) || cnn_dist_config_read(&dist, cfg, &err) ||
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
    bench b = {.m = m, .opt = opt, .B = (int)batch, .x = x, .y = y,
               .ctx = cnn_model_ctx(m, 1, tc.seed, 0, ids), .ids = ids, .rescale = dc.rescale,
               .seed = tc.seed};
    cnn_dist d = {0};
    cnn_stepper sp;
    cnn_dataset *train = NULL;
    int root = 1;
    if (!whole) {
        if (cnn_dist_init(&d, NULL, NULL) != 0) {
            fprintf(stderr, "cnn-bench: MPI_Init failed\n");
            return 1;
        }
        root = d.rank == 0;
        const cnn_augment_config no_aug = {0};
        if (!(train = synthetic_set(m, batch, y)))
            st = cnn_error_set(&err, CNN_ERR_NOMEM, "out of memory for the synthetic batch");
        else
            st = cnn_stepper_init(&sp, m, &d, &dist, &no_aug, batch, (int)threads, &err);
        if (st) {
            cnn_dist_abort(&d, fail(&err));
            return 1;
        }
        b.sp = &sp;
        b.train = train;
    }
    double t0 = 0;
    for (long s = 0; s < warmup + steps && !st; s++) {
        if (s == warmup)
            t0 = now();
        st = train_step(&b, NULL, &err);
    }
    const double train_ips = (double)steps * batch / (now() - t0);
    if (!st && profile)
        st = run_profile(&b, steps, trace, root, &err);
    if (st) {
        if (!whole)
            cnn_dist_abort(&d, fail(&err));
        return fail(&err);
    }
    const int busy = whole ? 1 : sp.nthreads;
    if (!whole) {
        cnn_stepper_free(&sp);
        cnn_dataset_free(train);
        cnn_dist_finalize(&d);
    }
    /* inference: one forward over the whole batch, BLAS on the threads */
    cnn_set_threads((int)threads);
    cnn_ctx ictx = cnn_model_ctx(m, 0, tc.seed, 0, NULL);
    for (long s = 0; s < warmup + steps; s++) {
        if (s == warmup)
            t0 = now();
        cnn_model_forward(m, x, (int)batch, &ictx);
    }
    double infer_ips = (double)steps * batch / (now() - t0);
    if (root)
        printf("RESULT cnn-bench config=%s threads=%ld batch=%ld params=%zu train_img_s=%.1f "
               "infer_img_s=%.1f step=%s chunk_size=%d busy_threads=%d ranks=%d (steps=%ld "
               "warmup=%ld)\n",
               path, threads, batch, m->nparams, train_ips, infer_ips,
               whole ? "whole-batch" : dist.exact ? "chunks" : "float", dist.chunk_size, busy,
               whole ? 1 : d.world, steps, warmup);
    free(x);
    free(y);
    free(ids);
    cnn_optim_free(opt);
    cnn_model_free(m);
    cnn_config_free(cfg);
    return 0;
}
