/* dist.c - the MPI module (see dist.h). */
#include <mpi.h>
#include <stdio.h>
#include <string.h>

#include "dist.h"

int cnn_dist_init(cnn_dist *d, int *argc, char ***argv)
{
    memset(d, 0, sizeof *d);
    if (MPI_Init(argc, argv) != MPI_SUCCESS)
        return -1;
    /* Errors come back as codes instead of aborting inside MPI. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->world);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &d->local_rank);
    MPI_Comm_size(node, &d->local_size);
    MPI_Comm_free(&node);
    d->initialized = 1;
    return 0;
}

void cnn_dist_finalize(cnn_dist *d)
{
    if (d->initialized)
        MPI_Finalize();
    d->initialized = 0;
}

void cnn_dist_allreduce_f32(const cnn_dist *d, float *buf, size_t n)
{
    if (d->world == 1)
        return;
    /* MPI counts are int: reduce in pieces of at most 2^30 floats. */
    for (size_t off = 0; off < n; off += (size_t)1 << 30) {
        size_t k = n - off < ((size_t)1 << 30) ? n - off : (size_t)1 << 30;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
}

void cnn_dist_allreduce_f64(const cnn_dist *d, double *buf, size_t n)
{
    if (d->world == 1)
        return;
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

int cnn_dist_agree(const cnn_dist *d, int *status)
{
    int mine = *status ? d->rank : d->world, first = mine;
    if (d->world > 1)
        MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == d->world)
        return -1;
    if (d->world > 1)
        MPI_Bcast(status, 1, MPI_INT, first, MPI_COMM_WORLD);
    return first;
}

int cnn_dist_identical(const cnn_dist *d, const float *buf, size_t n)
{
    /* FNV-1a over the bytes; compare min and max across ranks. */
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p = (const unsigned char *)buf;
    for (size_t i = 0; i < n * sizeof *buf; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    unsigned long long lo = h, hi = h;
    if (d->world > 1) {
        MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
        MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    }
    return lo == hi;
}

double cnn_dist_time(void) { return MPI_Wtime(); }

void cnn_dist_abort(const cnn_dist *d, int code)
{
    fflush(stdout);
    fflush(stderr);
    if (d->initialized)
        MPI_Abort(MPI_COMM_WORLD, code);
}
