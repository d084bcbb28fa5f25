/* bench_exchange.c - cnn-bench-exchange: the gradient exchange alone.
 *
 *   mpirun -np 2 cnn-bench-exchange [NPARAMS] [REPS]
 *
 * Times, per step, the ways of summing an int64 gradient buffer of NPARAMS
 * elements (default 203,898: fashion_cnn) across the ranks: Open MPI's
 * blocking and non-blocking allreduce and reduce-scatter, and what
 * cnn-train does with each [dist] exchange (cnn_dist_reducer: direct,
 * collective and hierarchical reduce-scatter in 1 MB buckets, then
 * cnn_dist_reducer_allgather of the float parameters, which hierarchical
 * keeps in the node's shared window where every node has as many ranks,
 * as cnn-train does). Rank 0 prints the median milliseconds of each. This
 * is the measurement behind auto's choice of hierarchical on one node (see
 * dist.h, README).
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h" /* src/cli: --version */
#include "dist.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench {
    const cnn_dist *d;
    size_t n;
    int64_t *acc;
    float *params;
    int *counts, *displs; /* (world) each rank's shard */
    cnn_dist_reducer *red[3]; /* direct, collective, hierarchical */
} bench;

enum { ALLREDUCE, IALLREDUCE, REDUCE_SCATTER, IREDUCE_SCATTER, DIRECT, COLLECTIVE, HIERARCHICAL,
       NWAYS };

static const char *const names[NWAYS] = {
    "MPI_Allreduce (blocking)",
    "MPI_Iallreduce + MPI_Wait",
    "MPI_Reduce_scatter (blocking)",
    "MPI_Ireduce_scatter + MPI_Wait",
    "cnn-train direct + allgather",
    "cnn-train collective + allgather",
    "cnn-train hierarchical + allgather",
};

static void run(bench *b, int way)
{
    MPI_Request rq;
    const int n = (int)b->n;
    switch (way) {
    case ALLREDUCE:
        MPI_Allreduce(MPI_IN_PLACE, b->acc, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        break;
    case IALLREDUCE:
        MPI_Iallreduce(MPI_IN_PLACE, b->acc, n, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD, &rq);
        MPI_Wait(&rq, MPI_STATUS_IGNORE);
        break;
    case REDUCE_SCATTER:
        MPI_Reduce_scatter(MPI_IN_PLACE, b->acc, b->counts, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        break;
    case IREDUCE_SCATTER:
        MPI_Ireduce_scatter(MPI_IN_PLACE, b->acc, b->counts, MPI_INT64_T, MPI_SUM,
                            MPI_COMM_WORLD, &rq);
        MPI_Wait(&rq, MPI_STATUS_IGNORE);
        break;
    default: {
        cnn_dist_reducer *r = b->red[way - DIRECT];
        cnn_dist_reducer_ready(r, 0);
        cnn_dist_reducer_finish(r);
        float *shared = cnn_dist_reducer_params(r);
        cnn_dist_reducer_allgather(r, shared ? shared : b->params);
        break;
    }
    }
}

int main(int argc, char **argv)
{
    if (argc == 2 && cnn_cli_version(argv[1], "cnn-bench-exchange"))
        return 0;
    cnn_dist d;
    if (cnn_dist_init(&d, &argc, &argv) != 0) {
        fprintf(stderr, "cnn-bench-exchange: MPI_Init failed\n");
        return 1;
    }
    long n = argc > 1 ? atol(argv[1]) : 203898;
    int reps = argc > 2 ? atoi(argv[2]) : 200;
    if (n < 1 || n > (1L << 30) || reps < 1) {
        if (d.rank == 0)
            fprintf(stderr, "usage: cnn-bench-exchange [NPARAMS (1..2^30)] [REPS (>= 1)]\n");
        cnn_dist_finalize(&d);
        return 2;
    }
    bench b = {.d = &d, .n = (size_t)n};
    b.acc = calloc(b.n, sizeof *b.acc);
    b.params = calloc(b.n, sizeof *b.params);
    b.counts = calloc((size_t)d.world, sizeof *b.counts);
    b.displs = calloc((size_t)d.world, sizeof *b.displs);
    double *t = calloc((size_t)reps, sizeof *t);
    size_t cut = 0;
    int made = 1;
    for (int k = 0; k < 3; k++) {
        cnn_dist_reducer_opts o = {.bucket_bytes = 1 << 20, .overlap = 1,
                                   .exchange = (cnn_dist_exchange)(CNN_DIST_DIRECT + k),
                                   .shared_params = 1};
        b.red[k] = cnn_dist_reducer_new(&d, NULL, CNN_DIST_I64, b.n, &cut, 1, &o);
        made &= b.red[k] != NULL;
    }
    if (!b.acc || !b.params || !b.counts || !b.displs || !t || !made) {
        fprintf(stderr, "cnn-bench-exchange: rank %d: out of memory for %ld elements\n", d.rank,
                n);
        cnn_dist_abort(&d, 1);
    }
    for (int j = 0; j < d.world; j++) {
        size_t lo, hi;
        cnn_dist_shard(b.n, j, d.world, &lo, &hi);
        b.counts[j] = (int)(hi - lo);
        b.displs[j] = (int)lo;
    }
    if (d.rank == 0)
        printf("exchange of %ld int64 gradients (%.2f MB) on %d ranks, median of %d:\n", n,
               (double)n * 8 / 1e6, d.world, reps);
    for (int way = 0; way < NWAYS; way++) {
        run(&b, way); /* warm-up */
        for (int k = 0; k < reps; k++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double t0 = MPI_Wtime();
            run(&b, way);
            t[k] = MPI_Wtime() - t0;
        }
        /* the slowest rank's time of each repetition */
        MPI_Allreduce(MPI_IN_PLACE, t, reps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        qsort(t, (size_t)reps, sizeof *t, cmp_double);
        if (d.rank == 0)
            printf("  %-40s %7.3f ms\n", names[way], t[reps / 2] * 1e3);
    }
    for (int k = 0; k < 3; k++)
        cnn_dist_reducer_free(b.red[k]);
    free(b.acc);
    free(b.params);
    free(b.counts);
    free(b.displs);
    free(t);
    cnn_dist_finalize(&d);
    return 0;
}
