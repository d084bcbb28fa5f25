/* step_sim.c - cnn-train's training step on a simulated cluster (SimGrid SMPI).
 *
 *   smpirun -np P -platform PLATFORM.xml -hostfile HOSTS [--cfg=...] \
 *       step_sim PROFILE [--per-rank B | --global B] [--exchange NAME] [--steps S]
 *                        [--bucket-mb M] [--check]
 *
 * Built by smpicc together with the project's own src/dist/dist.c (see
 * predict.sh): the gradient exchange that runs here is cnn-train's,
 * unchanged (cnn_dist_init, cnn_dist_reducer_new/ready/poll/finish,
 * cnn_dist_reducer_sum_f64, cnn_dist_reducer_allgather, and the moving
 * statistics' cnn_dist_allreduce_max_u8/_i64 when the model has
 * batch_normalization). Only the compute is replaced: the step's calls are
 * made in the order src/train/step.c makes them (cnn_stepper_run, then
 * cnn_stepper_update), and between them each layer's measured compute
 * (PROFILE, from cnn-step-profile on a real machine) is injected with
 * smpi_execute(): per chunk of [dist] chunk_size samples the forward pass,
 * then the backward spans in backward order, each followed by
 * cnn_dist_reducer_ready(offset) on the rank's last chunk (grads_ready in
 * step.c), with a cnn_dist_reducer_poll() per sample inside a span (the
 * convolutions poll per image); the exact reduction's fixed-point
 * conversion per parameter of each span; the conversion of the rank's
 * summed shard; the optimizer update of the shard; and, after finish(),
 * one conversion's time per parameter for the exchange's own sums (run
 * with smpi/simulate-computation:no, SMPI does not time dist.c's loops).
 *
 * A rank's chunks are those of my_chunks() in step.c: K = ceil(Bg / chunk)
 * chunks of the global batch Bg, rank r takes [K r / P, K (r+1) / P).
 * --per-rank B (weak scaling) sets Bg = B P; --global B (strong scaling)
 * keeps Bg = B, which leaves ranks idle once P > K.
 *
 * Rank 0 prints one line:
 *   RESULT ranks=P exchange=E(picked) global_batch=Bg step_s=T compute_s=C wait_s=W
 * step_s: the simulated seconds per step (median of the steps after the
 * first, slowest rank); compute_s: the busiest rank's injected compute of
 * one step (the step time with an infinitely fast network); wait_s: the
 * slowest rank's time in finish(), sum_f64 and the allgather, as cnn-train
 * reports it.
 *
 * --check fills each rank's fixed-point gradient with known values and
 * verifies after finish() that the rank's shard holds their exact sum
 * (needs real memory: run without smpi/auto-shared-malloc-thresh).
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"

enum { MAX_SEGS = 4096, MAX_STEPS = 64, NSTATS_F64 = 7 /* STAT_N of step.h */ };

typedef struct profile {
    size_t nparams, nstats;
    int chunk;
    double forward, tail, optim, fixed; /* seconds; optim and fixed per parameter */
    int nseg;
    size_t off[MAX_SEGS], count[MAX_SEGS];
    double t[MAX_SEGS];
} profile;

static int profile_read(profile *p, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    memset(p, 0, sizeof *p);
    char line[4096];
    int ok = 0, exact = 0;
    long batch = 0;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "nparams %zu chunk %d batch %ld stats %zu exact %d", &p->nparams,
                   &p->chunk, &batch, &p->nstats, &exact) == 5)
            ok |= 1;
        else if (sscanf(line, "forward %lf", &p->forward) == 1)
            ok |= 2;
        else if (p->nseg < MAX_SEGS && sscanf(line, "seg %zu %zu %lf", &p->off[p->nseg],
                                              &p->count[p->nseg], &p->t[p->nseg]) == 3)
            p->nseg++;
        else if (sscanf(line, "tail %lf", &p->tail) == 1)
            ok |= 4;
        else if (sscanf(line, "optim %lf", &p->optim) == 1)
            ok |= 8;
        else if (sscanf(line, "fixed %lf", &p->fixed) == 1)
            ok |= 16;
    }
    fclose(f);
    return ok == 31 && p->nseg > 0 && p->chunk > 0 && exact ? 0 : -1;
}

/* Injects s seconds of compute; *sum adds them up. (No globals: the
 * simulated ranks share this process's memory.) */
static void compute(double *sum, double s)
{
    if (s > 0) {
        smpi_execute(s);
        *sum += s;
    }
}

/* A known value for rank j's gradient element i (--check). */
static int64_t known(int j, size_t i) { return (int64_t)(i % 1000003) * 7 + j * 1000 + 1; }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    cnn_dist d;
    if (cnn_dist_init(&d, &argc, &argv) != 0)
        return 1;
    const char *path = NULL;
    long per_rank = 0, global = 0;
    int steps = 3, check = 0;
    double bucket_mb = 1.0;
    cnn_dist_exchange want = CNN_DIST_AUTO;
    int bad = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--per-rank") && v)
            per_rank = atol(argv[++i]);
        else if (!strcmp(a, "--global") && v)
            global = atol(argv[++i]);
        else if (!strcmp(a, "--steps") && v)
            steps = atoi(argv[++i]);
        else if (!strcmp(a, "--bucket-mb") && v)
            bucket_mb = atof(argv[++i]);
        else if (!strcmp(a, "--check"))
            check = 1;
        else if (!strcmp(a, "--exchange") && v) {
            const char *name = argv[++i];
            bad |= 1;
            for (int k = 0; k < CNN_DIST_NEXCHANGES; k++)
                if (!strcmp(name, cnn_dist_exchange_names[k]))
                    want = (cnn_dist_exchange)k, bad &= ~1;
        } else if (a[0] != '-' && !path)
            path = a;
        else
            bad |= 2;
    }
    profile *p = calloc(1, sizeof *p);
    if (!p || bad || !path || steps < 2 || steps > MAX_STEPS || bucket_mb <= 0 ||
        (per_rank > 0) == (global > 0) || profile_read(p, path) != 0) {
        if (d.rank == 0)
            fprintf(stderr, "usage: step_sim PROFILE (--per-rank B | --global B) [--exchange "
                            "auto|direct|collective|hierarchical] [--steps 2..%d] "
                            "[--bucket-mb M] [--check]%s%s\n",
                    MAX_STEPS, path ? "; or a bad profile: " : "", path ? path : "");
        cnn_dist_finalize(&d);
        return 2;
    }
    const int w = d.world, me = d.rank;
    const long Bg = per_rank > 0 ? per_rank * w : global;
    /* the reducer's cuts: where each parameter layer starts, ascending */
    size_t *cuts = calloc((size_t)p->nseg, sizeof *cuts);
    for (int k = 0; k < p->nseg; k++)
        cuts[k] = p->off[p->nseg - 1 - k];
    char why[192];
    const cnn_dist_reducer_opts ro = {.bucket_bytes = (size_t)(bucket_mb * 1048576.0),
                                      .overlap = 1, .exchange = want, .shared_params = 1};
    cnn_dist_exchange ex = cnn_dist_exchange_pick(&d, want, why, sizeof why);
    cnn_dist_reducer *red =
        cnn_dist_reducer_new(&d, NULL, CNN_DIST_I64, p->nparams, cuts, p->nseg, &ro);
    /* hierarchical: the parameters in the node's window, as cnn-train keeps them */
    float *params = red && cnn_dist_reducer_params(red) ? cnn_dist_reducer_params(red)
                                                        : calloc(p->nparams, sizeof *params);
    uint8_t *stat_exp = calloc(p->nstats + 1, 1);
    int64_t *stat_acc = calloc(p->nstats + 1, sizeof *stat_acc);
    if (!red || !params || !stat_exp || !stat_acc) {
        fprintf(stderr, "step_sim: rank %d: out of memory\n", me);
        cnn_dist_abort(&d, 1);
    }
    int64_t *acc = cnn_dist_reducer_data(red);
    size_t lo, hi;
    cnn_dist_shard(p->nparams, me, w, &lo, &hi);
    const long K = (Bg + p->chunk - 1) / p->chunk;
    const long first = K * me / w, end = K * (me + 1) / w;
    double t_step[MAX_STEPS], c_step[MAX_STEPS], w_step[MAX_STEPS];
    int errors = 0;

    MPI_Barrier(MPI_COMM_WORLD);
    double t_prev = MPI_Wtime();
    for (int s = 0; s < steps; s++) {
        double computed = 0;
        double waited = 0;
        /* cnn_stepper_run: the rank's chunks */
        for (long k = first; k < end; k++) {
            const long b0 = k * p->chunk;
            const int B = (int)(Bg - b0 < p->chunk ? Bg - b0 : p->chunk);
            const double f = (double)B / p->chunk;
            const int last = k == end - 1;
            compute(&computed, p->forward * f);
            if (check && last)
                for (size_t i = 0; i < p->nparams; i++)
                    acc[i] = known(me, i);
            for (int g = 0; g < p->nseg; g++) {
                /* a span: B polls (one per image, as the convolutions poll),
                 * then the layer's fixed-point conversion */
                for (int b = 0; b < B; b++) {
                    compute(&computed, p->t[g] * f / B);
                    if (last)
                        cnn_dist_reducer_poll(red);
                }
                compute(&computed, p->fixed * (double)p->count[g]);
                if (last)
                    cnn_dist_reducer_ready(red, p->off[g]);
            }
            compute(&computed, p->tail * f);
        }
        if (first == end && check) /* an idle rank contributes zeros */
            memset(acc, 0, p->nparams * sizeof *acc);
        waited += cnn_dist_reducer_finish(red);
        /* the exchange's own sums, about one int64 add per parameter
         * (direct: the received parts; hierarchical: the node's sum), which
         * smpi/simulate-computation:no does not time: charged at the rate of
         * the fixed-point conversion */
        compute(&computed, p->fixed * (double)p->nparams);
        if (check)
            for (size_t i = lo; i < hi; i++) {
                int64_t want_sum = 0;
                for (int j = 0; j < w; j++)
                    want_sum += K * j / w < K * (j + 1) / w ? known(j, i) : 0;
                errors += acc[i] != want_sum;
            }
        if (p->nstats) { /* stats_reduce: the exponents, then the fixed-point sums */
            cnn_dist_allreduce_max_u8(&d, stat_exp, p->nstats);
            cnn_dist_allreduce_i64(&d, stat_acc, p->nstats + 1);
        }
        compute(&computed, p->fixed * (double)(hi - lo)); /* the shard back to floats */
        double stats[NSTATS_F64] = {0};
        double t0 = MPI_Wtime();
        cnn_dist_reducer_sum_f64(red, stats, NSTATS_F64);
        waited += MPI_Wtime() - t0;
        /* cnn_stepper_update: the shard's update, then the gather */
        compute(&computed, p->optim * (double)(hi - lo));
        t0 = MPI_Wtime();
        cnn_dist_reducer_allgather(red, params);
        double t1 = MPI_Wtime();
        waited += t1 - t0;
        t_step[s] = t1 - t_prev;
        c_step[s] = computed;
        w_step[s] = waited;
        t_prev = t1;
    }
    /* the slowest rank of each step; then the median over steps 1.. */
    MPI_Allreduce(MPI_IN_PLACE, t_step, steps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, c_step, steps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, w_step, steps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &errors, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    qsort(t_step + 1, (size_t)steps - 1, sizeof *t_step, cmp_double);
    qsort(w_step + 1, (size_t)steps - 1, sizeof *w_step, cmp_double);
    if (me == 0) {
        printf("RESULT ranks=%d nodes=%d exchange=%s(%s) buckets=%d global_batch=%ld "
               "step_s=%.9g compute_s=%.9g wait_s=%.9g%s\n",
               w, d.nodes, cnn_dist_exchange_names[want], cnn_dist_exchange_names[ex],
               cnn_dist_reducer_buckets(red), Bg, t_step[1 + (steps - 1) / 2], c_step[steps - 1],
               w_step[1 + (steps - 1) / 2],
               check ? (errors ? " check=FAILED" : " check=ok") : "");
        if (check && errors)
            fprintf(stderr, "step_sim: %d shard elements differ from the exact sum\n", errors);
    }
    if (params != cnn_dist_reducer_params(red))
        free(params);
    cnn_dist_reducer_free(red);
    free(stat_exp);
    free(stat_acc);
    free(cuts);
    free(p);
    cnn_dist_finalize(&d);
    return check && errors ? 1 : 0;
}
