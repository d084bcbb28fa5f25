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
    /* The gradient exchange's messages (tags = bucket numbers) travel on a
     * communicator of their own, made here where every rank is. */
    MPI_Comm ex;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &ex) != MPI_SUCCESS) {
        fprintf(stderr, "cnn-train: rank %d: MPI_Comm_dup failed\n", d->rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    d->exchange_comm = (int)MPI_Comm_c2f(ex);
    d->initialized = 1;
    return 0;
}

void cnn_dist_finalize(cnn_dist *d)
{
    if (d->initialized) {
        MPI_Comm ex = MPI_Comm_f2c((MPI_Fint)d->exchange_comm);
        MPI_Comm_free(&ex);
        MPI_Finalize();
    }
    d->initialized = 0;
}

/* An MPI call of the exchange failed: the ranks can no longer agree on a
 * gradient, so the message goes out and the job ends. */
static void check(const cnn_dist *d, int rc, const char *what)
{
    if (rc == MPI_SUCCESS)
        return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fprintf(stderr, "cnn-train: rank %d: %s failed: %s\n", d->rank, what, msg);
    cnn_dist_abort(d, 1);
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

/* In-place allreduce of n elements of `size` bytes, in calls of at most
 * MAX_CALL elements. */
static void allreduce_pieces(const cnn_dist *d, void *buf, size_t n, size_t size,
                             MPI_Datatype type, MPI_Op op)
{
    if (d->world == 1)
        return;
    for (size_t off = 0; off < n; off += MAX_CALL) {
        size_t k = n - off < MAX_CALL ? n - off : MAX_CALL;
        MPI_Allreduce(MPI_IN_PLACE, (char *)buf + off * size, (int)k, type, op, MPI_COMM_WORLD);
    }
}

void cnn_dist_allreduce_max_u8(const cnn_dist *d, uint8_t *buf, size_t n)
{
    allreduce_pieces(d, buf, n, 1, MPI_UINT8_T, MPI_MAX);
}

void cnn_dist_allreduce_i64(const cnn_dist *d, int64_t *buf, size_t n)
{
    allreduce_pieces(d, buf, n, sizeof *buf, MPI_INT64_T, MPI_SUM);
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

void cnn_dist_shard(size_t n, int rank, int world, size_t *lo, size_t *hi)
{
    *lo = (size_t)((unsigned __int128)n * (unsigned)rank / (unsigned)world);
    *hi = (size_t)((unsigned __int128)n * (unsigned)(rank + 1) / (unsigned)world);
}

/* One bucket: buf[lo, hi), at most MAX_CALL elements. */
typedef struct bucket {
    size_t lo, hi;
} bucket;

struct cnn_dist_reducer {
    const cnn_dist *d;
    MPI_Comm comm;     /* the exchange's own (cnn_dist_init): tags are bucket numbers */
    char *buf;         /* (n) elements of esize bytes */
    size_t n, esize;
    cnn_dist_type type;
    MPI_Datatype mtype;
    size_t *lo, *hi;   /* (world) every rank's shard */
    int *counts;       /* (2 world) shard lengths, then starts, for MPI_Allgatherv;
                        * NULL when n is beyond int counts */
    char *in;          /* (world - 1) * shard: the parts received from the others */
    bucket *b;         /* (nb) in the order backward completes them: highest offset first */
    int nb;
    int next;          /* first bucket not sent this step */
    int posted;        /* receives of this step are posted */
    int overlap;
    MPI_Request *req;  /* (nreq_max) */
    int nreq, nreq_max;
};

/* Slot of rank j's part in r->in (ranks other than this one, in order). */
static char *slot(const cnn_dist_reducer *r, int j)
{
    const int me = r->d->rank;
    size_t len = r->hi[me] - r->lo[me];
    return r->in + (size_t)(j < me ? j : j - 1) * len * r->esize;
}

cnn_dist_reducer *cnn_dist_reducer_new(const cnn_dist *d, void *buf, cnn_dist_type type,
                                       size_t n, const size_t *cuts, int ncuts,
                                       size_t bucket_bytes, int overlap)
{
    cnn_dist_reducer *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    const int w = d->world;
    r->comm = w > 1 ? MPI_Comm_f2c((MPI_Fint)d->exchange_comm) : MPI_COMM_NULL;
    r->d = d;
    r->buf = buf;
    r->n = n;
    r->type = type;
    r->overlap = overlap;
    r->esize = type == CNN_DIST_I64 ? sizeof(int64_t) : sizeof(float);
    r->mtype = type == CNN_DIST_I64 ? MPI_INT64_T : MPI_FLOAT;
    size_t per = bucket_bytes / r->esize ? bucket_bytes / r->esize : 1;
    /* Walk the cuts from the end; close a bucket once it holds enough,
     * and split one that is too big for an int count. */
    size_t nmax = (size_t)ncuts + 2 + n / MAX_CALL;
    r->b = calloc(nmax, sizeof *r->b);
    r->lo = calloc((size_t)w, sizeof *r->lo);
    r->hi = calloc((size_t)w, sizeof *r->hi);
    if (!r->b || !r->lo || !r->hi)
        goto nomem;
    size_t hi = n;
    for (int i = ncuts; i >= 0 && hi > 0; i--) {
        size_t lo = i > 0 ? cuts[i - 1] : 0;
        if (lo >= hi || (hi - lo < per && lo > 0))
            continue;
        for (; hi - lo > MAX_CALL; hi -= MAX_CALL)
            r->b[r->nb++] = (bucket){hi - MAX_CALL, hi};
        r->b[r->nb++] = (bucket){lo, hi};
        hi = lo;
    }
    for (int j = 0; j < w; j++)
        cnn_dist_shard(n, j, w, &r->lo[j], &r->hi[j]);
    if (w == 1)
        return r;
    if (n < ((size_t)1 << 31)) {
        if (!(r->counts = malloc(2 * (size_t)w * sizeof *r->counts)))
            goto nomem;
        for (int j = 0; j < w; j++) {
            r->counts[j] = (int)(r->hi[j] - r->lo[j]);
            r->counts[w + j] = (int)r->lo[j];
        }
    }
    r->in = malloc(((size_t)(w - 1) * (r->hi[d->rank] - r->lo[d->rank]) + 1) * r->esize);
    r->nreq_max = 2 * r->nb * (w - 1);
    r->req = malloc((size_t)r->nreq_max * sizeof *r->req);
    if (!r->in || !r->req)
        goto nomem;
    return r;
nomem:
    cnn_dist_reducer_free(r);
    return NULL;
}

void cnn_dist_reducer_free(cnn_dist_reducer *r)
{
    if (!r)
        return;
    free(r->b);
    free(r->lo);
    free(r->hi);
    free(r->counts);
    free(r->in);
    free(r->req);
    free(r);
}

int cnn_dist_reducer_buckets(const cnn_dist_reducer *r) { return r->nb; }

void cnn_dist_reducer_allgather(const cnn_dist_reducer *r, float *buf)
{
    const cnn_dist *d = r->d;
    if (d->world == 1)
        return;
    if (r->counts) {
        check(d, MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, buf, r->counts, r->counts + d->world,
                                MPI_FLOAT, MPI_COMM_WORLD),
              "MPI_Allgatherv of the parameter shards");
        return;
    }
    for (int j = 0; j < d->world; j++) /* beyond int counts: each shard in pieces */
        for (size_t off = r->lo[j]; off < r->hi[j]; off += MAX_CALL)
            check(d, MPI_Bcast(buf + off, (int)(r->hi[j] - off < MAX_CALL ? r->hi[j] - off : MAX_CALL),
                               MPI_FLOAT, j, MPI_COMM_WORLD),
                  "MPI_Bcast of a parameter shard");
}

/* [*plo, *phi): the part of bucket i that belongs to rank j's shard. */
static size_t part(const cnn_dist_reducer *r, int i, int j, size_t *plo)
{
    size_t a = r->b[i].lo > r->lo[j] ? r->b[i].lo : r->lo[j];
    size_t z = r->b[i].hi < r->hi[j] ? r->b[i].hi : r->hi[j];
    *plo = a;
    return z > a ? z - a : 0;
}

/* Receives of every bucket's part of this rank's shard, from every rank. */
static void post_receives(cnn_dist_reducer *r)
{
    const int me = r->d->rank;
    for (int i = 0; i < r->nb; i++)
        for (int j = 0; j < r->d->world; j++) {
            size_t plo, len = part(r, i, me, &plo);
            if (j == me || !len)
                continue;
            check(r->d,
                  MPI_Irecv(slot(r, j) + (plo - r->lo[me]) * r->esize, (int)len, r->mtype, j, i,
                            r->comm, &r->req[r->nreq++]),
                  "MPI_Irecv of a gradient bucket");
        }
    r->posted = 1;
}

/* Bucket i's part of every other rank's shard to that rank. */
static void send_bucket(cnn_dist_reducer *r, int i)
{
    const int me = r->d->rank, w = r->d->world;
    for (int k = 1; k < w; k++) {
        int j = (me + k) % w; /* not everyone to rank 0 first */
        size_t plo, len = part(r, i, j, &plo);
        if (len)
            check(r->d,
                  MPI_Isend(r->buf + plo * r->esize, (int)len, r->mtype, j, i, r->comm,
                            &r->req[r->nreq++]),
                  "MPI_Isend of a gradient bucket");
    }
}

void cnn_dist_reducer_ready(cnn_dist_reducer *r, size_t offset)
{
    if (r->d->world == 1 || !r->overlap)
        return;
    if (!r->posted)
        post_receives(r);
    int sent = 0;
    while (r->next < r->nb && r->b[r->next].lo >= offset) {
        send_bucket(r, r->next++);
        sent = 1;
    }
    if (!sent)
        cnn_dist_reducer_poll(r);
}

void cnn_dist_reducer_poll(cnn_dist_reducer *r)
{
    if (r->nreq > 0) {
        int flag;
        MPI_Testall(r->nreq, r->req, &flag, MPI_STATUSES_IGNORE);
    }
}

static void add_i64(int64_t *restrict a, const int64_t *restrict b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        a[i] += b[i];
}

static void add_f32(float *restrict a, const float *restrict b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        a[i] += b[i];
}

double cnn_dist_reducer_finish(cnn_dist_reducer *r)
{
    const int me = r->d->rank, w = r->d->world;
    if (w == 1)
        return 0;
    double t0 = MPI_Wtime();
    if (!r->posted)
        post_receives(r);
    while (r->next < r->nb)
        send_bucket(r, r->next++);
    check(r->d, MPI_Waitall(r->nreq, r->req, MPI_STATUSES_IGNORE), "the gradient exchange");
    double waited = MPI_Wtime() - t0;
    r->nreq = 0;
    r->next = 0;
    r->posted = 0;
    const size_t len = r->hi[me] - r->lo[me];
    char *own = r->buf + r->lo[me] * r->esize;
    if (r->type == CNN_DIST_I64) { /* exact: any order */
        for (int j = 0; j < w; j++)
            if (j != me)
                add_i64((int64_t *)own, (const int64_t *)slot(r, j), len);
        return waited;
    }
    /* float: rank 0's part + rank 1's + ..., the same order on every rank */
    float *sum = me == 0 ? (float *)own : (float *)slot(r, 0);
    for (int j = 1; j < w; j++)
        add_f32(sum, j == me ? (const float *)own : (const float *)slot(r, j), len);
    if (me != 0)
        memcpy(own, sum, len * sizeof(float));
    return waited;
}

double cnn_dist_time(void) { return MPI_Wtime(); }

void cnn_dist_abort(const cnn_dist *d, int code)
{
    fflush(stdout);
    fflush(stderr);
    if (d->initialized)
        MPI_Abort(MPI_COMM_WORLD, code);
}
