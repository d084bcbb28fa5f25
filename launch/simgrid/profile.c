/* profile.c - cnn-step-profile: the compute of one training step, per layer,
 * as the SimGrid model of the step (step_sim.c) replays it.
 *
 *   cnn-step-profile CONFIG [--reps R] [--threads N] [--set section.key=value]...
 *
 * Builds the model of CONFIG, feeds one random chunk of [dist] chunk_size
 * samples (as cnn-bench does: no data files) and times, on this machine,
 * the median over R repetitions of: the forward pass with the loss; each
 * span of the backward pass that ends where cnn_model_backward() says a
 * layer's gradient is final (the grads_ready callback, where the training
 * step starts the gradient buckets); one optimizer update per parameter;
 * and the fixed-point conversion per parameter of the exact reduction
 * (add_fixed in src/train/step.c, timed here on a loop of the same shape).
 * Prints a profile that step_sim.c reads:
 *
 *   model CONFIG
 *   nparams N chunk C batch B stats S exact E
 *   forward SECONDS              per chunk, with the loss
 *   seg OFFSET COUNT SECONDS     in backward order: grads[OFFSET ..) final
 *   tail SECONDS                 backward after the last parameter layer
 *   optim SECONDS_PER_PARAM
 *   fixed SECONDS_PER_PARAM
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/model.h"
#include "cnn/optim.h"
#include "cnn/rng.h"
#include "cnn/tensor.h"
#include "cnn/train.h"
#include "step.h" /* src/train: cnn_dist_config_read */

enum { MAX_SEGS = 4096, MAX_REPS = 101 };

static volatile int sink; /* keeps the timed conversion loop */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* What the grads_ready callback saw in one backward pass. */
typedef struct trace {
    int n;
    double t[MAX_SEGS];
    size_t off[MAX_SEGS];
} trace;

static void on_ready(void *arg, size_t offset)
{
    trace *tr = arg;
    if (tr->n < MAX_SEGS) {
        tr->t[tr->n] = now();
        tr->off[tr->n++] = offset;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static int fail(const cnn_error *err)
{
    fprintf(stderr, "cnn-step-profile: %s\n", err->msg);
    return cnn_status_exit_code(err->status);
}

int main(int argc, char **argv)
{
    cnn_fp_mode_set(); /* the training programs' floating-point mode */
    const char *path = NULL;
    long reps = 7, threads = 1;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int nsets = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--reps") && v)
            reps = atol(argv[++i]);
        else if (!strcmp(a, "--threads") && v)
            threads = atol(argv[++i]);
        else if (!strcmp(a, "--set") && v)
            sets[nsets++] = argv[++i];
        else if (a[0] != '-' && !path)
            path = a;
        else
            path = NULL, i = argc;
    }
    if (!path || reps < 1 || reps > MAX_REPS || threads < 1) {
        fprintf(stderr, "usage: cnn-step-profile CONFIG [--reps R (1..%d)] [--threads N] "
                        "[--set section.key=value]...\n",
                MAX_REPS);
        return 2;
    }
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    cnn_train_config tc;
    cnn_dist_config dc;
    cnn_data_config data; /* read so that every key is checked */
    cnn_optim_hparams hp;
    cnn_lr_schedule sched; /* read so that its keys are checked; no steps are taken */
    cnn_model *m;
    cnn_optim *opt;
    cnn_status st = cnn_config_load_overrides(&cfg, path, (const char *const *)sets, nsets, &err);
    free(sets);
    if (st || cnn_train_config_read(&tc, cfg, &err) || cnn_dist_config_read(&dc, cfg, &err))
        return fail(&err);
    cnn_config_ignore_section(cfg, "checkpoint");
    cnn_config_ignore_section(cfg, "augment");
    if (!dc.exact) {
        fprintf(stderr, "cnn-step-profile: %s: [dist] reduction = float is not modelled "
                        "(the simulation replays the exact reduction's chunks)\n", path);
        return 2;
    }
    const int B = dc.chunk_size;
    if (cnn_optim_hparams_from_config(&hp, cfg, &err) ||
        cnn_lr_schedule_read(&sched, cfg, hp.lr, tc.batch_size, &err) ||
        cnn_data_config_read(&data, cfg, &err) ||
        cnn_model_create(&m, cfg, tc.loss, &err) || cnn_config_check_unused(cfg, &err) ||
        cnn_model_reserve(m, B, &err) || cnn_optim_create(&opt, &hp, m->nparams, &err))
        return fail(&err);
    cnn_set_threads((int)threads);
    cnn_model_init_params(m, tc.seed);

    const size_t in = cnn_shape_size(m->input);
    float *x = malloc((size_t)B * in * sizeof *x);
    int32_t *y = malloc((size_t)B * sizeof *y);
    int64_t *ids = malloc((size_t)B * sizeof *ids);
    int64_t *acc = calloc(m->nparams, sizeof *acc);
    trace *tr = calloc((size_t)reps, sizeof *tr);
    double *fwd = calloc((size_t)reps, sizeof *fwd), *tmp = calloc((size_t)reps, sizeof *tmp);
    double *t_end = calloc((size_t)reps, sizeof *t_end);
    if (!x || !y || !ids || !acc || !tr || !fwd || !tmp || !t_end) {
        fprintf(stderr, "cnn-step-profile: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < (size_t)B * in; i++)
        x[i] = cnn_rng_uniform(cnn_rng_hash(1, 99, 0, i));
    for (int b = 0; b < B; b++) {
        y[b] = m->loss == CNN_LOSS_BCE ? (int32_t)(b & 1) : (int32_t)(b % m->nclasses);
        ids[b] = b;
    }
    cnn_ctx ctx = cnn_model_ctx(m, 1, tc.seed, 0, ids);
    ctx.grads_ready = on_ready;
    for (long r = -1; r < reps; r++) { /* r = -1: warm-up */
        trace *t = &tr[r < 0 ? 0 : r];
        ctx.grads_ready_arg = t;
        t->n = 0;
        cnn_batch_stats bs = {0};
        cnn_model_zero_grad(m);
        double t0 = now();
        cnn_model_forward(m, x, B, &ctx);
        if (cnn_model_loss(m, y, B, 1.0f / (float)B, 1, &bs, &err))
            return fail(&err);
        double t1 = now();
        on_ready(t, m->nparams); /* the start of backward */
        cnn_model_backward(m, x, B, &ctx);
        if (r >= 0) {
            fwd[r] = t1 - t0;
            t_end[r] = now();
        }
    }
    /* one optimizer update over every parameter, then the conversion */
    double *opt_t = calloc((size_t)reps, sizeof *opt_t), *fix_t = calloc((size_t)reps, sizeof *fix_t);
    if (!opt_t || !fix_t)
        return 1;
    for (long r = 0; r < reps; r++) {
        double t0 = now();
        cnn_optim_step(opt, m);
        double t1 = now();
        const double scale = 17592186044416.0, limit = 1e18; /* as add_fixed: 2^44 */
        int bad = 0;
        for (size_t i = 0; i < m->nparams; i++) {
            double v = (double)m->grads[i] * scale;
            int ok = fabs(v) < limit;
            bad |= !ok;
            acc[i] += (int64_t)(ok ? v : 0.0);
            m->grads[i] = 0.0f;
        }
        fix_t[r] = (now() - t1) / (double)m->nparams;
        sink |= bad;
        opt_t[r] = (t1 - t0) / (double)m->nparams;
    }
    printf("model %s\n", path);
    printf("nparams %zu chunk %d batch %ld stats %zu exact %d\n", m->nparams, B, (long)tc.batch_size,
           cnn_model_stats_count(m), dc.exact);
    printf("forward %.9g\n", median(fwd, (int)reps));
    const int nseg = tr[0].n; /* the same layers report in every pass */
    for (int k = 1; k < nseg; k++) {
        for (long r = 0; r < reps; r++)
            tmp[r] = tr[r].t[k] - tr[r].t[k - 1];
        printf("seg %zu %zu %.9g\n", tr[0].off[k], tr[0].off[k - 1] - tr[0].off[k],
               median(tmp, (int)reps));
    }
    for (long r = 0; r < reps; r++)
        tmp[r] = t_end[r] - tr[r].t[nseg - 1];
    printf("tail %.9g\n", median(tmp, (int)reps));
    printf("optim %.9g\n", median(opt_t, (int)reps));
    printf("fixed %.9g\n", median(fix_t, (int)reps));
    free(x);
    free(y);
    free(ids);
    free(acc);
    free(tr);
    free(fwd);
    free(tmp);
    free(t_end);
    free(opt_t);
    free(fix_t);
    cnn_optim_free(opt);
    cnn_model_free(m);
    cnn_config_free(cfg);
    return 0;
}
