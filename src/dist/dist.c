/* dist.c - the MPI module (see dist.h). */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"

/* MPI counts are int: larger buffers go in pieces of this many elements. */
enum { MAX_CALL = 1 << 30 };

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

void cnn_dist_bcast(const cnn_dist *d, void *buf, size_t n, int root)
{
    if (d->world > 1)
        MPI_Bcast(buf, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
}

void cnn_dist_allreduce_max_u8(const cnn_dist *d, uint8_t *buf, size_t n)
{
    if (d->world == 1)
        return;
    for (size_t off = 0; off < n; off += MAX_CALL) {
        size_t k = n - off < MAX_CALL ? n - off : MAX_CALL;
        MPI_Allreduce(MPI_IN_PLACE, buf + off, (int)k, MPI_UINT8_T, MPI_MAX, MPI_COMM_WORLD);
    }
}

void cnn_dist_allreduce_max_f64(const cnn_dist *d, double *buf, size_t n)
{
    if (d->world == 1)
        return;
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
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

/* One bucket: buf[lo, hi), reduced by up to `parts` calls of < 2^30 floats. */
typedef struct bucket {
    size_t lo, hi;
} bucket;

struct cnn_dist_reducer {
    const cnn_dist *d;
    char *buf;  /* (n) elements of esize bytes */
    size_t n, esize;
    MPI_Datatype type;
    bucket *b;  /* (nb) in the order backward completes them: highest offset first */
    int nb;
    int next;   /* first bucket not started this step */
    int overlap;
    MPI_Request *req; /* (nreq_max) */
    int nreq, nreq_max;
};


cnn_dist_reducer *cnn_dist_reducer_new(const cnn_dist *d, void *buf, cnn_dist_type type,
                                       size_t n, const size_t *cuts, int ncuts,
                                       size_t bucket_bytes, int overlap)
{
    cnn_dist_reducer *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->b = calloc((size_t)ncuts + 1, sizeof *r->b);
    if (!r->b) {
        free(r);
        return NULL;
    }
    *r = (cnn_dist_reducer){.d = d, .buf = buf, .n = n, .b = r->b, .overlap = overlap};
    r->esize = type == CNN_DIST_I64 ? sizeof(int64_t) : sizeof(float);
    r->type = type == CNN_DIST_I64 ? MPI_INT64_T : MPI_FLOAT;
    size_t bucket_floats = bucket_bytes / r->esize ? bucket_bytes / r->esize : 1;
    /* Walk the cuts from the end; close a bucket once it holds enough. */
    size_t hi = n;
    for (int i = ncuts - 1; i >= 0; i--) {
        size_t lo = cuts[i];
        if (lo < hi && (hi - lo >= bucket_floats || lo == 0)) {
            r->b[r->nb++] = (bucket){lo, hi};
            hi = lo;
        }
    }
    if (hi > 0)
        r->b[r->nb++] = (bucket){0, hi};
    r->nreq_max = 1;
    for (int i = 0; i < r->nb; i++)
        r->nreq_max += (int)((r->b[i].hi - r->b[i].lo + MAX_CALL - 1) / MAX_CALL);
    r->req = malloc((size_t)r->nreq_max * sizeof *r->req);
    if (!r->req) {
        cnn_dist_reducer_free(r);
        return NULL;
    }
    return r;
}

void cnn_dist_reducer_free(cnn_dist_reducer *r)
{
    if (!r)
        return;
    free(r->b);
    free(r->req);
    free(r);
}

int cnn_dist_reducer_buckets(const cnn_dist_reducer *r) { return r->nb; }

void cnn_dist_reducer_stats(cnn_dist_reducer *r, double *stats, int n)
{
    if (r->d->world == 1)
        return;
    MPI_Iallreduce(MPI_IN_PLACE, stats, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD,
                   &r->req[r->nreq++]);
}

static void start_bucket(cnn_dist_reducer *r, const bucket *b)
{
    for (size_t off = b->lo; off < b->hi; off += MAX_CALL) {
        size_t k = b->hi - off < MAX_CALL ? b->hi - off : MAX_CALL;
        MPI_Iallreduce(MPI_IN_PLACE, r->buf + off * r->esize, (int)k, r->type, MPI_SUM,
                       MPI_COMM_WORLD, &r->req[r->nreq++]);
    }
}

void cnn_dist_reducer_ready(cnn_dist_reducer *r, size_t offset)
{
    if (r->d->world == 1 || !r->overlap)
        return;
    int started = 0;
    while (r->next < r->nb && r->b[r->next].lo >= offset) {
        start_bucket(r, &r->b[r->next++]);
        started = 1;
    }
    if (!started)
        cnn_dist_reducer_poll(r);
}

void cnn_dist_reducer_poll(cnn_dist_reducer *r)
{
    if (r->nreq > 0) {
        int flag;
        MPI_Testall(r->nreq, r->req, &flag, MPI_STATUSES_IGNORE);
    }
}

double cnn_dist_reducer_finish(cnn_dist_reducer *r)
{
    if (r->d->world == 1)
        return 0;
    double t0 = MPI_Wtime();
    if (!r->overlap) {
        for (; r->next < r->nb; r->next++)
            for (size_t off = r->b[r->next].lo; off < r->b[r->next].hi; off += MAX_CALL) {
                size_t k = r->b[r->next].hi - off;
                MPI_Allreduce(MPI_IN_PLACE, r->buf + off * r->esize, (int)(k < MAX_CALL ? k : MAX_CALL),
                              r->type, MPI_SUM, MPI_COMM_WORLD);
            }
    }
    while (r->next < r->nb)
        start_bucket(r, &r->b[r->next++]);
    MPI_Waitall(r->nreq, r->req, MPI_STATUSES_IGNORE);
    r->nreq = 0;
    r->next = 0;
    return MPI_Wtime() - t0;
}

double cnn_dist_time(void) { return MPI_Wtime(); }

void cnn_dist_abort(const cnn_dist *d, int code)
{
    fflush(stdout);
    fflush(stderr);
    if (d->initialized)
        MPI_Abort(MPI_COMM_WORLD, code);
}
