/* dist.c - the MPI module (see dist.h). */
#include <mpi.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dist.h"

/* MPI counts are int: larger buffers go in pieces of this many elements. */
enum { MAX_CALL = 1 << 30 };

/* The communicator of d's collectives (a zeroed cnn_dist: the world's). */
static MPI_Comm comm_of(const cnn_dist *d)
{
    return d->split ? MPI_Comm_f2c((MPI_Fint)d->comm) : MPI_COMM_WORLD;
}

/* The node figures of d (local_rank, local_size, nodes, node_min,
 * node_max, node_comm) over the communicator comm of its ranks. */
static void node_shape(cnn_dist *d, MPI_Comm comm)
{
    MPI_Comm node;
    MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &d->local_rank);
    MPI_Comm_size(node, &d->local_size);
    d->node_comm = (int)MPI_Comm_c2f(node);
    int shape[3] = {d->local_rank == 0, -d->local_size, d->local_size}; /* nodes, -min, max */
    MPI_Allreduce(MPI_IN_PLACE, shape, 1, MPI_INT, MPI_SUM, comm);
    MPI_Allreduce(MPI_IN_PLACE, shape + 1, 2, MPI_INT, MPI_MAX, comm);
    d->nodes = shape[0];
    d->node_min = -shape[1];
    d->node_max = shape[2];
}

/* The watchdog (below): on while a reducer made with timeout_s > 0 lives;
 * it guards the collectives of a cnn_dist's communicator too (allreduce_on,
 * bcast_on). */
static void wd_arm(const cnn_dist *d, MPI_Comm comm, double timeout);
static void wd_disarm(void);
static void allreduce_on(const cnn_dist *d, const void *in, void *buf, int n, MPI_Datatype type,
                         MPI_Op op, const char *what);
static void bcast_on(const cnn_dist *d, void *buf, int n, MPI_Datatype type, int root);

int cnn_dist_init(cnn_dist *d, int *argc, char ***argv)
{
    memset(d, 0, sizeof *d);
    /* FUNNELED: the watchdog's monitor thread makes no MPI call */
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return -1;
    /* Errors come back as codes instead of aborting inside MPI. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->world);
    node_shape(d, MPI_COMM_WORLD);
    /* The gradient exchange's messages (tags = bucket numbers) travel on a
     * communicator of their own, made here where every rank is. */
    MPI_Comm ex;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &ex) != MPI_SUCCESS) {
        fprintf(stderr, "cnn-train: rank %d: MPI_Comm_dup failed\n", d->rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    d->exchange_comm = (int)MPI_Comm_c2f(ex);
    d->comm = (int)MPI_Comm_c2f(MPI_COMM_WORLD);
    d->initialized = 1;
    return 0;
}

int cnn_dist_split(const cnn_dist *parent, int color, cnn_dist *child)
{
    memset(child, 0, sizeof *child);
    MPI_Comm g, ex;
    if (MPI_Comm_split(comm_of(parent), color, parent->rank, &g) != MPI_SUCCESS)
        return -1;
    if (MPI_Comm_dup(g, &ex) != MPI_SUCCESS) {
        MPI_Comm_free(&g);
        return -1;
    }
    MPI_Comm_set_errhandler(g, MPI_ERRORS_RETURN);
    MPI_Comm_rank(g, &child->rank);
    MPI_Comm_size(g, &child->world);
    node_shape(child, g);
    child->comm = (int)MPI_Comm_c2f(g);
    child->exchange_comm = (int)MPI_Comm_c2f(ex);
    child->split = 1;
    child->initialized = parent->initialized; /* cnn_dist_abort ends the job */
    return 0;
}

void cnn_dist_free_split(cnn_dist *child)
{
    if (!child->split)
        return;
    MPI_Comm c[3] = {MPI_Comm_f2c((MPI_Fint)child->comm),
                     MPI_Comm_f2c((MPI_Fint)child->exchange_comm),
                     MPI_Comm_f2c((MPI_Fint)child->node_comm)};
    for (int i = 0; i < 3; i++)
        MPI_Comm_free(&c[i]);
    memset(child, 0, sizeof *child);
}

void cnn_dist_finalize(cnn_dist *d)
{
    if (d->initialized) {
        MPI_Comm ex = MPI_Comm_f2c((MPI_Fint)d->exchange_comm);
        MPI_Comm_free(&ex);
        MPI_Comm node = MPI_Comm_f2c((MPI_Fint)d->node_comm);
        MPI_Comm_free(&node);
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
        allreduce_on(d, MPI_IN_PLACE, buf + off, (int)k, MPI_FLOAT, MPI_SUM,
                     "an MPI_Allreduce of floats");
    }
}

void cnn_dist_allreduce_f64(const cnn_dist *d, double *buf, size_t n)
{
    if (d->world == 1)
        return;
    allreduce_on(d, MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_SUM, "an MPI_Allreduce of doubles");
}

void cnn_dist_bcast(const cnn_dist *d, void *buf, size_t n, int root)
{
    if (d->world == 1)
        return;
    bcast_on(d, buf, (int)n, MPI_BYTE, root);
}

int cnn_dist_bcast_bytes(const cnn_dist *d, char **buf, size_t *len, int root)
{
    if (d->world == 1)
        return 0;
    const int me = d->rank == root;
    uint64_t n = me ? *len : 0;
    bcast_on(d, &n, 1, MPI_UINT64_T, root);
    if (!me) {
        *buf = NULL;
        *len = 0;
    }
    int failed = !me && n > 0 && !(*buf = malloc((size_t)n));
    if (cnn_dist_agree(d, &failed) >= 0) { /* some rank cannot hold them */
        if (!me) {
            free(*buf);
            *buf = NULL;
        }
        return -1;
    }
    for (size_t off = 0; off < n; off += MAX_CALL)
        bcast_on(d, *buf + off, (int)(n - off < MAX_CALL ? n - off : MAX_CALL), MPI_BYTE, root);
    if (!me)
        *len = (size_t)n;
    return 0;
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
        allreduce_on(d, MPI_IN_PLACE, (char *)buf + off * size, (int)k, type, op,
                        "an MPI_Allreduce");
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
    allreduce_on(d, MPI_IN_PLACE, buf, (int)n, MPI_DOUBLE, MPI_MAX, "an MPI_Allreduce of maxima");
}

int cnn_dist_agree(const cnn_dist *d, int *status)
{
    int mine = *status ? d->rank : d->world, first = mine;
    if (d->world == 1)
        return *status ? 0 : -1;
    allreduce_on(d, &mine, &first, 1, MPI_INT, MPI_MIN, "the ranks' agreement on a status");
    if (first == d->world)
        return -1;
    bcast_on(d, status, 1, MPI_INT, first);
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
        const char *what = "the comparison of the ranks' parameters";
        allreduce_on(d, MPI_IN_PLACE, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, what);
        allreduce_on(d, MPI_IN_PLACE, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, what);
    }
    return lo == hi;
}

void cnn_dist_shard(size_t n, int rank, int world, size_t *lo, size_t *hi)
{
    *lo = (size_t)((unsigned __int128)n * (unsigned)rank / (unsigned)world);
    *hi = (size_t)((unsigned __int128)n * (unsigned)(rank + 1) / (unsigned)world);
}

const char *const cnn_dist_exchange_names[CNN_DIST_NEXCHANGES + 1] = {
    "auto", "direct", "collective", "hierarchical", NULL};

cnn_dist_exchange cnn_dist_exchange_pick(const cnn_dist *d, cnn_dist_exchange want, char *why,
                                         size_t n)
{
    if (want != CNN_DIST_AUTO) {
        snprintf(why, n, "%s, as [dist] exchange says", cnn_dist_exchange_names[want]);
        return want;
    }
    if (d->world == 1) {
        snprintf(why, n, "direct (auto: one rank, nothing to exchange)");
        return CNN_DIST_DIRECT;
    }
    if (d->nodes == 1) {
        snprintf(why, n, "hierarchical (auto: all %d ranks on one node: each sums its shard "
                         "straight out of the others' memory, and they share one copy of the "
                         "parameters)", d->world);
        return CNN_DIST_HIERARCHICAL;
    }
    if (d->node_max == 1) {
        snprintf(why, n, "collective (auto: %d nodes with one rank each: the MPI's own "
                         "reduce-scatter, tuned for the network)", d->nodes);
        return CNN_DIST_COLLECTIVE;
    }
    snprintf(why, n, "hierarchical (auto: %d nodes with %d-%d ranks each: shared memory inside "
                     "a node, one allreduce per local rank across nodes)",
             d->nodes, d->node_min, d->node_max);
    return CNN_DIST_HIERARCHICAL;
}

/* One bucket: buf[lo, hi), at most MAX_CALL elements. */
typedef struct bucket {
    size_t lo, hi;
} bucket;

/* Where a bucket is in the hierarchical exchange: each stage is an MPI
 * request in flight (r->req[bucket]); the next one starts when it ends. */
enum { H_IDLE, H_GATHERED, H_CROSS, H_SCATTERED, H_DONE };

struct cnn_dist_reducer {
    const cnn_dist *d;
    MPI_Comm comm;     /* the exchange's own (cnn_dist_init): tags are bucket numbers */
    char *buf;         /* (n) elements of esize bytes */
    int own;           /* buf is the reducer's: 1 malloc, 2 the shared window */
    size_t n, esize;
    cnn_dist_type type;
    MPI_Datatype mtype;
    cnn_dist_exchange ex;
    size_t *lo, *hi;   /* (world) every rank's shard */
    int *counts;       /* (2 world) shard lengths, then starts, for MPI_Allgatherv;
                        * NULL when n is beyond int counts */
    char *in;          /* (world - 1) * shard: the parts received from the others
                        * (direct), or this rank's summed shard (collective) */
    bucket *b;         /* (nb) in the order backward completes them: highest offset first */
    int nb;
    int next;          /* first bucket not started this step */
    int posted;        /* receives of this step are posted (direct) */
    int overlap;
    MPI_Request *req;  /* (nreq_max) */
    int nreq, nreq_max;
    int *rcounts;      /* (nb, world) each rank's part of each bucket (collective) */
    /* hierarchical */
    MPI_Win win;
    MPI_Comm node[2];  /* two copies of the node: the gather and the scatter
                        * barriers each in bucket order on their own */
    MPI_Comm cross;    /* ranks of this local number on every node; NULL if none */
    int L, l, S;       /* ranks on this node, this rank's number, fewest on a node */
    int single;        /* the node is the whole job: each rank sums its own shard
                        * straight out of the node's buffers, no node sum */
    char **seg;        /* (L) each local rank's buffer, in the window */
    char *sum;         /* (n) the node's sum, in local rank 0's part of the window
                        * (several nodes) */
    float *params;     /* (n) the parameters, in the window (shared_params), or NULL */
    int *xcounts;      /* (2 nodes) shard lengths, then starts, of the ranks of
                        * r->cross: the parameters' gather across nodes */
    int nx;            /* ranks in r->cross */
    int *stage;        /* (nb) H_* */
    int watched;       /* armed the watchdog (timeout_s > 0) */
};

/* Slot of rank j's part in r->in (ranks other than this one, in order). */
static char *slot(const cnn_dist_reducer *r, int j)
{
    const int me = r->d->rank;
    size_t len = r->hi[me] - r->lo[me];
    return r->in + (size_t)(j < me ? j : j - 1) * len * r->esize;
}

/* [*plo, *plo + return): the part of bucket i that belongs to rank j's shard. */
static size_t part(const cnn_dist_reducer *r, int i, int j, size_t *plo)
{
    size_t a = r->b[i].lo > r->lo[j] ? r->b[i].lo : r->lo[j];
    size_t z = r->b[i].hi < r->hi[j] ? r->b[i].hi : r->hi[j];
    *plo = a;
    return z > a ? z - a : 0;
}

/* Walk the cuts from the end; close a bucket once it holds enough, and
 * split one that is too big for an int count. */
static void make_buckets(cnn_dist_reducer *r, const size_t *cuts, int ncuts, size_t per)
{
    size_t hi = r->n;
    for (int i = ncuts; i >= 0 && hi > 0; i--) {
        size_t lo = i > 0 ? cuts[i - 1] : 0;
        if (lo >= hi || (hi - lo < per && lo > 0))
            continue;
        for (; hi - lo > MAX_CALL; hi -= MAX_CALL)
            r->b[r->nb++] = (bucket){hi - MAX_CALL, hi};
        r->b[r->nb++] = (bucket){lo, hi};
        hi = lo;
    }
}

/* The node's shared window (r->buf becomes this rank's part of it when the
 * caller gave no buffer; local rank 0's part also holds the node's sum when
 * there are several nodes, and the parameters when asked and every node has
 * as many ranks), the node copies and the cross-node communicator. Returns
 * 0, or -1 when out of memory. */
static int hier_setup(cnn_dist_reducer *r, int shared_params)
{
    const cnn_dist *d = r->d;
    MPI_Comm node = MPI_Comm_f2c((MPI_Fint)d->node_comm);
    MPI_Comm_size(node, &r->L);
    MPI_Comm_rank(node, &r->l);
    int shape[2] = {-r->L, r->L}; /* -fewest, most ranks on a node */
    check(d, MPI_Allreduce(MPI_IN_PLACE, shape, 2, MPI_INT, MPI_MAX, r->comm),
          "MPI_Allreduce of the node sizes");
    r->S = -shape[0];
    r->single = r->L == d->world;
    check(d, MPI_Comm_dup(node, &r->node[0]), "MPI_Comm_dup of the node");
    check(d, MPI_Comm_dup(node, &r->node[1]), "MPI_Comm_dup of the node");
    check(d, MPI_Comm_split(r->comm, r->l < r->S ? r->l : MPI_UNDEFINED, d->rank, &r->cross),
          "MPI_Comm_split across nodes");
    /* the parameters' gather across nodes: the ranks of one local number on
     * every node, which cover the job only when every node has S ranks */
    shared_params = shared_params && r->S == shape[1] && r->n < ((size_t)1 << 31);
    int got = 1; /* every rank has the memory for the gather's counts */
    int *ranks = NULL;
    if (shared_params) {
        MPI_Comm_size(r->cross, &r->nx);
        ranks = malloc((size_t)r->nx * sizeof *ranks);
        r->xcounts = malloc(2 * (size_t)r->nx * sizeof *r->xcounts);
        got = ranks && r->xcounts;
        check(d, MPI_Allreduce(MPI_IN_PLACE, &got, 1, MPI_INT, MPI_MIN, r->comm),
              "MPI_Allreduce of the window's memory");
    }
    if (shared_params && got) {
        check(d, MPI_Allgather(&d->rank, 1, MPI_INT, ranks, 1, MPI_INT, r->cross),
              "MPI_Allgather of the ranks across nodes");
        for (int k = 0; k < r->nx; k++) {
            size_t lo, hi;
            cnn_dist_shard(r->n, ranks[k], d->world, &lo, &hi);
            r->xcounts[k] = (int)(hi - lo);
            r->xcounts[r->nx + k] = (int)lo;
        }
    }
    free(ranks);
    if (!got)
        return -1;
    const size_t bytes = r->n * r->esize, line = 64;
    /* whole lines, so that the next rank's segment (contiguous after this
     * one) keeps the alignment of its int64 elements */
    const size_t pbytes = shared_params ? (r->n * sizeof(float) + line - 1) / line * line + line : 0;
    const size_t extra = (r->single ? 0 : bytes) + pbytes;
    char *base = NULL;
    int rc = MPI_Win_allocate_shared((MPI_Aint)(bytes + (r->l == 0 ? extra : 0)), (int)r->esize,
                                     MPI_INFO_NULL, node, &base, &r->win);
    /* every rank learns whether every other got its memory */
    int ok = rc == MPI_SUCCESS, all = 0;
    MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, node);
    if (!all) {
        if (rc == MPI_SUCCESS)
            MPI_Win_free(&r->win);
        r->win = MPI_WIN_NULL;
        return -1;
    }
    if (!(r->seg = calloc((size_t)r->L, sizeof *r->seg)) ||
        !(r->stage = calloc((size_t)r->nb, sizeof *r->stage)))
        return -1;
    for (int k = 0; k < r->L; k++) {
        MPI_Aint sz;
        int disp;
        MPI_Win_shared_query(r->win, k, &sz, &disp, &r->seg[k]);
    }
    char *tail = r->seg[0] + bytes;
    if (!r->single) {
        r->sum = tail;
        tail += bytes;
    }
    if (shared_params) /* on a line of its own: the shards' writes share no more lines */
        r->params = (float *)(void *)(tail + (line - (uintptr_t)tail % line) % line);
    /* passive target for the whole life of the window: MPI_Win_sync and
     * the node barriers order the loads and stores */
    MPI_Win_lock_all(MPI_MODE_NOCHECK, r->win);
    if (!r->buf) {
        r->buf = base;
        r->own = 2;
        memset(base, 0, bytes);
    }
    return 0;
}

cnn_dist_reducer *cnn_dist_reducer_new(const cnn_dist *d, void *buf, cnn_dist_type type,
                                       size_t n, const size_t *cuts, int ncuts,
                                       const cnn_dist_reducer_opts *o)
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
    r->overlap = o->overlap;
    r->win = MPI_WIN_NULL;
    r->node[0] = r->node[1] = r->cross = MPI_COMM_NULL;
    char why[8];
    r->ex = cnn_dist_exchange_pick(d, o->exchange, why, sizeof why);
    r->esize = type == CNN_DIST_I64 ? sizeof(int64_t) : sizeof(float);
    r->mtype = type == CNN_DIST_I64 ? MPI_INT64_T : MPI_FLOAT;
    size_t per = o->bucket_bytes / r->esize ? o->bucket_bytes / r->esize : 1;
    size_t nmax = (size_t)ncuts + 2 + n / MAX_CALL;
    r->b = calloc(nmax, sizeof *r->b);
    r->lo = calloc((size_t)w, sizeof *r->lo);
    r->hi = calloc((size_t)w, sizeof *r->hi);
    if (!r->b || !r->lo || !r->hi)
        goto nomem;
    make_buckets(r, cuts, ncuts, per);
    for (int j = 0; j < w; j++)
        cnn_dist_shard(n, j, w, &r->lo[j], &r->hi[j]);
    if (w > 1 && r->ex == CNN_DIST_HIERARCHICAL && hier_setup(r, o->shared_params) != 0)
        goto nomem;
    if (!r->buf) {
        if (!(r->buf = calloc(n ? n : 1, r->esize)))
            goto nomem;
        r->own = 1;
    }
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
    if (r->ex == CNN_DIST_COLLECTIVE) {
        if (!(r->rcounts = malloc((size_t)r->nb * (size_t)w * sizeof *r->rcounts)))
            goto nomem;
        for (int i = 0; i < r->nb; i++)
            for (int j = 0; j < w; j++) {
                size_t plo;
                r->rcounts[(size_t)i * (size_t)w + (size_t)j] = (int)part(r, i, j, &plo);
            }
    }
    r->in = malloc(((size_t)(w - 1) * (r->hi[d->rank] - r->lo[d->rank]) + 1) * r->esize);
    r->nreq_max = 2 * r->nb * (w - 1);
    r->req = malloc((size_t)r->nreq_max * sizeof *r->req);
    if (!r->in || !r->req)
        goto nomem;
    for (int i = 0; i < r->nreq_max; i++)
        r->req[i] = MPI_REQUEST_NULL;
    if (o->timeout_s > 0) {
        wd_arm(d, r->comm, o->timeout_s);
        r->watched = 1;
    }
    return r;
nomem:
    cnn_dist_reducer_free(r);
    return NULL;
}

void cnn_dist_reducer_free(cnn_dist_reducer *r)
{
    if (!r)
        return;
    if (r->win != MPI_WIN_NULL) {
        MPI_Win_unlock_all(r->win);
        MPI_Win_free(&r->win);
    }
    for (int k = 0; k < 2; k++)
        if (r->node[k] != MPI_COMM_NULL)
            MPI_Comm_free(&r->node[k]);
    if (r->cross != MPI_COMM_NULL)
        MPI_Comm_free(&r->cross);
    if (r->watched)
        wd_disarm();
    if (r->own == 1)
        free(r->buf);
    free(r->b);
    free(r->lo);
    free(r->hi);
    free(r->counts);
    free(r->rcounts);
    free(r->in);
    free(r->req);
    free(r->seg);
    free(r->stage);
    free(r->xcounts);
    free(r);
}

void *cnn_dist_reducer_data(const cnn_dist_reducer *r) { return r->buf; }

int cnn_dist_reducer_buckets(const cnn_dist_reducer *r) { return r->nb; }

float *cnn_dist_reducer_params(const cnn_dist_reducer *r) { return r->params; }

cnn_dist_exchange cnn_dist_reducer_exchange(const cnn_dist_reducer *r) { return r->ex; }

/* ---- the watchdog ---- */

/* One per process, as the monitor thread and the job it ends are: armed by
 * the reducers made with timeout_s > 0 (all ranks alike), it guards the
 * reducer's waits and, while armed, the blocking collectives above.
 *
 * Naming: inside a watched wait a rank tells its right neighbour it is
 * alive (on entry, then every wd.beat_s) and listens to its left one. A
 * rank that has waited timeout seconds and heard nothing from its left
 * neighbour for as long names it: that neighbour is neither in a wait nor
 * computing past timeout_s without one. A rank whose neighbour did answer
 * waits WD_GRACE_S longer for that report, then ends the job itself.
 *
 * Backstop: MPI may not return while a peer is stopped (a blocking
 * collective, a progress call, MPI_Abort). The monitor thread makes no MPI
 * call (MPI_THREAD_FUNNELED): it reads when the current wait began and,
 * WD_MONITOR_S after the in-loop watchdog should have ended the job, prints
 * one line naming the wait and ends the process with _exit, which makes
 * mpirun end the job. */
enum { WD_GRACE_S = 5, WD_MONITOR_S = 2 };

static struct {
    int armed;                 /* reducers watching: the watchdog is on while > 0 */
    const cnn_dist *d;
    double timeout, beat_s;    /* beat_s: between heartbeats, timeout / 4 at most */
    MPI_Comm comm;             /* heartbeats: from the left neighbour, to the right one */
    MPI_Request in, out;
    int hb_in, hb_out;
    long long sent, got;       /* heartbeats sent to the right, received from the left */
    double heard, beat;        /* MPI_Wtime of the last word from the left, of our last beat */
    double checked;            /* of the last watchdog check */
    pthread_t monitor;
    atomic_int quit;
    atomic_llong began;        /* CLOCK_MONOTONIC ns when the current wait began; 0: none */
    _Atomic(const char *) what; /* that wait */
} wd = {.comm = MPI_COMM_NULL, .in = MPI_REQUEST_NULL, .out = MPI_REQUEST_NULL};

static long long mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* The monitor thread: no MPI and no locks (not even stdio's: the line goes
 * out with write), whatever the main thread is stuck in. */
static void *monitor_main(void *arg)
{
    (void)arg;
    const long long limit = (long long)((wd.timeout + WD_GRACE_S + WD_MONITOR_S) * 1e9);
    const struct timespec tick = {0, 100000000}; /* 0.1 s */
    long long last = mono_ns(), quiet_until = 0;
    while (!atomic_load(&wd.quit)) {
        nanosleep(&tick, NULL);
        const long long now = mono_ns();
        if (now - last > 1000000000LL) /* this process was stopped: the others go first */
            quiet_until = now + limit;
        last = now;
        const long long t0 = atomic_load(&wd.began);
        const char *what = atomic_load(&wd.what);
        if (t0 == 0 || !what || now - t0 < limit || now < quiet_until ||
            atomic_load(&wd.began) != t0)
            continue;
        char line[512];
        int n = snprintf(line, sizeof line,
                         "cnn-train: rank %d: %s did not complete in %.0f s ([dist] timeout_s = "
                         "%g), stuck inside MPI; ending the job\n",
                         wd.d->rank, what, (double)(mono_ns() - t0) / 1e9, wd.timeout);
        if (write(2, line, n > 0 && (size_t)n < sizeof line ? (size_t)n : 0) < 0)
            n = 0; /* nowhere to say it: end all the same */
        _exit(1);
    }
    return NULL;
}

/* A watched wait begins (what) or ends (NULL), for the monitor. */
static void wd_mark(const char *what)
{
    atomic_store(&wd.what, what);
    atomic_store(&wd.began, what ? mono_ns() : 0);
}

/* Collective: the watchdog with timeout seconds, if it is not on yet. */
static void wd_arm(const cnn_dist *d, MPI_Comm comm, double timeout)
{
    if (wd.armed++)
        return;
    wd.d = d;
    wd.timeout = timeout;
    wd.beat_s = timeout / 4 < 0.25 ? timeout / 4 : 0.25;
    check(d, MPI_Comm_dup(comm, &wd.comm), "MPI_Comm_dup for the watchdog");
    check(d, MPI_Irecv(&wd.hb_in, 1, MPI_INT, (d->rank + d->world - 1) % d->world, 0, wd.comm,
                       &wd.in),
          "MPI_Irecv of a watchdog heartbeat");
    wd.heard = wd.beat = MPI_Wtime();
    wd.sent = wd.got = 0;
    atomic_store(&wd.quit, 0);
    wd_mark(NULL);
    if (pthread_create(&wd.monitor, NULL, monitor_main, NULL) != 0) {
        fprintf(stderr, "cnn-train: rank %d: cannot start the watchdog's monitor thread\n",
                d->rank);
        cnn_dist_abort(d, 1);
    }
}

/* Collective: the last reducer that armed the watchdog is gone. */
static void wd_disarm(void)
{
    if (wd.armed == 0 || --wd.armed)
        return;
    atomic_store(&wd.quit, 1);
    pthread_join(wd.monitor, NULL);
    /* every heartbeat is received before the communicator goes: a message
     * left over would arrive on the next communicator given its id */
    const int me = wd.d->rank, w = wd.d->world;
    long long left_sent = 0;
    MPI_Sendrecv(&wd.sent, 1, MPI_LONG_LONG, (me + 1) % w, 1, &left_sent, 1, MPI_LONG_LONG,
                 (me + w - 1) % w, 1, wd.comm, MPI_STATUS_IGNORE);
    while (wd.got < left_sent) {
        MPI_Wait(&wd.in, MPI_STATUS_IGNORE);
        if (++wd.got < left_sent)
            MPI_Irecv(&wd.hb_in, 1, MPI_INT, (me + w - 1) % w, 0, wd.comm, &wd.in);
    }
    if (wd.in != MPI_REQUEST_NULL) { /* posted, and nothing left to match it */
        MPI_Cancel(&wd.in);
        MPI_Wait(&wd.in, MPI_STATUS_IGNORE);
    }
    MPI_Wait(&wd.out, MPI_STATUS_IGNORE);
    MPI_Comm_free(&wd.comm);
}

/* Hears the left neighbour, and tells the right one (now, or when the last
 * beat is beat_s old and gone). */
static void wd_listen(int now)
{
    const cnn_dist *d = wd.d;
    const double t = MPI_Wtime();
    for (int got = 1; got;) {
        check(d, MPI_Test(&wd.in, &got, MPI_STATUS_IGNORE), "a watchdog heartbeat");
        if (got) {
            wd.heard = t;
            wd.got++;
            check(d, MPI_Irecv(&wd.hb_in, 1, MPI_INT, (d->rank + d->world - 1) % d->world, 0,
                               wd.comm, &wd.in),
                  "MPI_Irecv of a watchdog heartbeat");
        }
    }
    int gone = 1;
    check(d, MPI_Test(&wd.out, &gone, MPI_STATUS_IGNORE), "a watchdog heartbeat");
    if (gone && (now || t - wd.beat >= wd.beat_s)) {
        wd.hb_out = d->rank;
        check(d, MPI_Isend(&wd.hb_out, 1, MPI_INT, (d->rank + 1) % d->world, 0, wd.comm, &wd.out),
              "MPI_Isend of a watchdog heartbeat");
        wd.beat = t;
        wd.sent++;
    }
}

/* Called while a wait that began at t0 goes on: ends the job once it has
 * lasted timeout seconds and the left neighbour has been silent as long,
 * naming it, or WD_GRACE_S later for that neighbour's report. */
static void watchdog(double t0, const char *what)
{
    const double now = MPI_Wtime();
    /* this rank did not run for a while (stopped, or starved): it was not
     * listening either, so the silence counts from now */
    if (now - wd.checked > 4 * wd.beat_s)
        wd.heard = now;
    wd.checked = now;
    const double waited = now - t0, silent = now - wd.heard;
    if (waited < wd.timeout)
        return;
    const int me = wd.d->rank, left = (me + wd.d->world - 1) % wd.d->world;
    if (silent >= wd.timeout) {
        fprintf(stderr,
                "cnn-train: rank %d: rank %d stopped answering: no word from it for %.0f s "
                "in %s ([dist] timeout_s = %g); ending the job\n",
                me, left, silent, what, wd.timeout);
        cnn_dist_abort(wd.d, 1);
    }
    if (waited < wd.timeout + WD_GRACE_S)
        return;
    fprintf(stderr,
            "cnn-train: rank %d: %s did not complete in %.0f s ([dist] timeout_s = %g), "
            "though rank %d answered; ending the job\n",
            me, what, waited, wd.timeout, left);
    cnn_dist_abort(wd.d, 1);
}

/* Waits until done(arg, block) says the wait is over. Without the watchdog
 * done blocks in MPI; with it, done only tests, between heartbeats and
 * watchdog checks. */
static void await(int (*done)(void *, int), void *arg, const char *what)
{
    if (!wd.armed) {
        done(arg, 1);
        return;
    }
    wd_mark(what);
    const double t0 = MPI_Wtime();
    wd.checked = t0;
    wd_listen(1);
    while (!done(arg, 0)) {
        wd_listen(0);
        watchdog(t0, what);
        sched_yield();
    }
    wd_mark(NULL);
}

/* *arg, one request, has completed (block: wait for it). */
static int request_done(void *arg, int block)
{
    MPI_Request *q = arg;
    int flag = 1;
    if (block)
        check(wd.d, MPI_Wait(q, MPI_STATUS_IGNORE), "the watchdog's barrier");
    else
        check(wd.d, MPI_Test(q, &flag, MPI_STATUS_IGNORE), "the watchdog's barrier");
    return flag;
}

/* An MPI_Allreduce on d's communicator; with the watchdog on, the
 * non-blocking one under it. Only for operations whose result does not
 * depend on the order of the ranks (max, min, integer sums, float sums
 * exact in any order), since the two calls may take different orders. */
static void allreduce_on(const cnn_dist *d, const void *in, void *buf, int n, MPI_Datatype type,
                         MPI_Op op, const char *what)
{
    if (!wd.armed) {
        MPI_Allreduce(in, buf, n, type, op, comm_of(d));
        return;
    }
    MPI_Request q;
    check(wd.d, MPI_Iallreduce(in, buf, n, type, op, comm_of(d), &q), "MPI_Iallreduce");
    await(request_done, &q, what);
}

/* An MPI_Bcast on d's communicator; with the watchdog on, under it. */
static void bcast_on(const cnn_dist *d, void *buf, int n, MPI_Datatype type, int root)
{
    if (!wd.armed) {
        MPI_Bcast(buf, n, type, root, comm_of(d));
        return;
    }
    MPI_Request q;
    check(wd.d, MPI_Ibcast(buf, n, type, root, comm_of(d), &q), "MPI_Ibcast");
    await(request_done, &q, "an MPI_Bcast");
}

/* r->req[0 .. nreq) have completed (block: wait for them). */
static int requests_done(void *arg, int block)
{
    cnn_dist_reducer *r = arg;
    int flag = 1;
    if (block)
        check(r->d, MPI_Waitall(r->nreq, r->req, MPI_STATUSES_IGNORE), "the gradient exchange");
    else
        check(r->d, MPI_Testall(r->nreq, r->req, &flag, MPI_STATUSES_IGNORE),
              "the gradient exchange");
    return flag;
}

/* A collective of its own, under the watchdog: r->req[0] is it. */
static void await_one(cnn_dist_reducer *r, const char *what)
{
    r->nreq = 1;
    await(requests_done, r, what);
    r->nreq = 0;
}

/* The parameters' window: the shards of the other nodes, from the ranks
 * of this local number there, then a barrier of the node, after which
 * every rank of it sees every shard. */
static void gather_window(cnn_dist_reducer *r)
{
    if (r->nx > 1) {
        check(r->d, MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, r->params, r->xcounts,
                                    r->xcounts + r->nx, MPI_FLOAT, r->cross, &r->req[0]),
              "MPI_Iallgatherv of the parameter shards across nodes");
        await_one(r, "the gather of the parameter shards across nodes");
    }
    MPI_Win_sync(r->win);
    check(r->d, MPI_Ibarrier(r->node[1], &r->req[0]), "MPI_Ibarrier of the node");
    await_one(r, "the node's barrier after the parameter update");
    MPI_Win_sync(r->win);
}

void cnn_dist_reducer_allgather(cnn_dist_reducer *r, float *buf)
{
    const cnn_dist *d = r->d;
    if (d->world == 1)
        return;
    if (buf == r->params) {
        gather_window(r);
        return;
    }
    if (r->counts) {
        check(d, MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_FLOAT, buf, r->counts, r->counts + d->world,
                                 MPI_FLOAT, r->comm, &r->req[0]),
              "MPI_Iallgatherv of the parameter shards");
        await_one(r, "the gather of the parameter shards");
        return;
    }
    for (int j = 0; j < d->world; j++) /* beyond int counts: each shard in pieces */
        for (size_t off = r->lo[j]; off < r->hi[j]; off += MAX_CALL)
            check(d, MPI_Bcast(buf + off, (int)(r->hi[j] - off < MAX_CALL ? r->hi[j] - off : MAX_CALL),
                               MPI_FLOAT, j, r->comm),
                  "MPI_Bcast of a parameter shard");
}

void cnn_dist_reducer_sum_f64(cnn_dist_reducer *r, double *buf, int n)
{
    if (r->d->world == 1)
        return;
    check(r->d, MPI_Iallreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, r->comm, &r->req[0]),
          "MPI_Iallreduce of the step's figures");
    await_one(r, "the sum of the step's figures");
}

/* ---- direct: point-to-point ---- */

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

static void add(const cnn_dist_reducer *r, char *a, const char *b, size_t n)
{
    if (r->type == CNN_DIST_I64)
        add_i64((int64_t *)a, (const int64_t *)b, n);
    else
        add_f32((float *)a, (const float *)b, n);
}

/* The received parts summed into this rank's shard. */
static void direct_sum(cnn_dist_reducer *r)
{
    const int me = r->d->rank, w = r->d->world;
    const size_t len = r->hi[me] - r->lo[me];
    char *own = r->buf + r->lo[me] * r->esize;
    if (r->type == CNN_DIST_I64) { /* exact: any order */
        for (int j = 0; j < w; j++)
            if (j != me)
                add(r, own, slot(r, j), len);
        return;
    }
    /* float: rank 0's part + rank 1's + ..., the same order on every rank */
    char *sum = me == 0 ? own : slot(r, 0);
    for (int j = 1; j < w; j++)
        add(r, sum, j == me ? own : slot(r, j), len);
    if (me != 0)
        memcpy(own, sum, len * r->esize);
}

/* ---- collective: one MPI_Ireduce_scatter per bucket ---- */

static void collective_start(cnn_dist_reducer *r, int i)
{
    const int me = r->d->rank;
    size_t plo, len = part(r, i, me, &plo);
    size_t at = len ? plo - r->lo[me] : 0; /* inside this rank's summed shard */
    check(r->d,
          MPI_Ireduce_scatter(r->buf + r->b[i].lo * r->esize, r->in + at * r->esize,
                              r->rcounts + (size_t)i * (size_t)r->d->world, r->mtype, MPI_SUM,
                              r->comm, &r->req[r->nreq++]),
          "MPI_Ireduce_scatter of a gradient bucket");
}

/* ---- hierarchical: shared memory in a node, MPI_Iallreduce across ---- */

/* Bucket i goes into the node's window; the barrier says when all are in. */
static void hier_start(cnn_dist_reducer *r, int i)
{
    const bucket *b = &r->b[i];
    char *mine = r->seg[r->l];
    if (r->buf != mine) /* the caller's buffer: copy the bucket into the window */
        memcpy(mine + b->lo * r->esize, r->buf + b->lo * r->esize, (b->hi - b->lo) * r->esize);
    MPI_Win_sync(r->win);
    check(r->d, MPI_Ibarrier(r->node[0], &r->req[i]), "MPI_Ibarrier of the node");
    r->stage[i] = H_GATHERED;
}

/* out[0, len) = the node's buffers summed over [at, at + len), in local
 * rank order (float), a block at a time; out may be one of them. */
static void sum_segs(const cnn_dist_reducer *r, char *out, size_t at, size_t len)
{
    enum { BLOCK = 512 };
    union {
        int64_t i[BLOCK];
        float f[BLOCK];
    } t;
    const size_t es = r->esize;
    for (size_t c = 0; c < len; c += BLOCK) {
        const size_t m = len - c < BLOCK ? len - c : BLOCK, o = (at + c) * es;
        memcpy(t.i, r->seg[0] + o, m * es);
        for (int k = 1; k < r->L; k++)
            add(r, (char *)t.i, r->seg[k] + o, m);
        memcpy(out + c * es, t.i, m * es);
    }
}

/* Bucket i's request has completed: its next stage. */
static void hier_next(cnn_dist_reducer *r, int i)
{
    const bucket *b = &r->b[i];
    const size_t es = r->esize;
    MPI_Win_sync(r->win);
    switch (r->stage[i]) {
    case H_GATHERED: { /* all of the node's buckets are in: sum my slice, then across nodes */
        r->req[i] = MPI_REQUEST_NULL;
        if (r->single) { /* one node: my shard's part, straight into my buffer */
            size_t plo, len = part(r, i, r->d->rank, &plo);
            sum_segs(r, r->buf + plo * es, plo, len);
            r->stage[i] = H_DONE;
            break;
        }
        if (r->l < r->S) {
            size_t a, z;
            cnn_dist_shard(b->hi - b->lo, r->l, r->S, &a, &z);
            a += b->lo;
            z += b->lo;
            sum_segs(r, r->sum + a * es, a, z - a); /* float: in local rank order */
            if (z > a)
                check(r->d,
                      MPI_Iallreduce(MPI_IN_PLACE, r->sum + a * es, (int)(z - a), r->mtype,
                                     MPI_SUM, r->cross, &r->req[i]),
                      "MPI_Iallreduce of a gradient slice across nodes");
        }
        r->stage[i] = H_CROSS;
        break;
    }
    case H_CROSS: /* my slice holds the sum of all nodes: wait for the others' */
        check(r->d, MPI_Ibarrier(r->node[1], &r->req[i]), "MPI_Ibarrier of the node");
        r->stage[i] = H_SCATTERED;
        break;
    case H_SCATTERED: { /* the whole bucket is summed: my shard's part out of it */
        size_t plo, len = part(r, i, r->d->rank, &plo);
        memcpy(r->buf + plo * es, r->sum + plo * es, len * es);
        r->stage[i] = H_DONE;
        break;
    }
    }
}

/* Moves every started bucket on as far as it goes; a bucket does not pass
 * the one before it, so each communicator sees its collectives in bucket
 * order on every rank. 1 when every bucket is done. */
static int hier_done(cnn_dist_reducer *r, int block)
{
    for (int i = 0; i < r->next; i++)
        while (r->stage[i] < H_DONE && (i == 0 || r->stage[i] < r->stage[i - 1])) {
            int flag = 1;
            if (block)
                check(r->d, MPI_Wait(&r->req[i], MPI_STATUS_IGNORE), "the gradient exchange");
            else
                check(r->d, MPI_Test(&r->req[i], &flag, MPI_STATUS_IGNORE),
                      "the gradient exchange");
            if (!flag)
                break;
            hier_next(r, i);
        }
    return r->next == r->nb && (r->nb == 0 || r->stage[r->nb - 1] == H_DONE);
}

/* ---- the step ---- */

static void start_bucket(cnn_dist_reducer *r, int i)
{
    switch (r->ex) {
    case CNN_DIST_COLLECTIVE:
        collective_start(r, i);
        break;
    case CNN_DIST_HIERARCHICAL:
        hier_start(r, i);
        break;
    default:
        if (!r->posted)
            post_receives(r);
        send_bucket(r, i);
        break;
    }
}

static int exchange_done(void *arg, int block)
{
    cnn_dist_reducer *r = arg;
    return r->ex == CNN_DIST_HIERARCHICAL ? hier_done(r, block) : requests_done(r, block);
}

void cnn_dist_reducer_ready(cnn_dist_reducer *r, size_t offset)
{
    if (r->d->world == 1 || !r->overlap)
        return;
    if (r->ex == CNN_DIST_DIRECT && !r->posted)
        post_receives(r);
    int sent = 0;
    while (r->next < r->nb && r->b[r->next].lo >= offset) {
        start_bucket(r, r->next++);
        sent = 1;
    }
    if (!sent || r->ex == CNN_DIST_HIERARCHICAL)
        cnn_dist_reducer_poll(r);
}

void cnn_dist_reducer_poll(cnn_dist_reducer *r)
{
    if (r->d->world > 1 && r->next > 0)
        exchange_done(r, 0);
}

double cnn_dist_reducer_finish(cnn_dist_reducer *r)
{
    const int me = r->d->rank, w = r->d->world;
    if (w == 1)
        return 0;
    double t0 = MPI_Wtime();
    if (r->ex == CNN_DIST_DIRECT && !r->posted)
        post_receives(r);
    while (r->next < r->nb)
        start_bucket(r, r->next++);
    await(exchange_done, r, "the gradient exchange");
    if (r->ex == CNN_DIST_HIERARCHICAL && r->single) {
        /* the others have read their shards out of my buffer before I write it again */
        MPI_Win_sync(r->win);
        check(r->d, MPI_Ibarrier(r->node[1], &r->req[0]), "MPI_Ibarrier of the node");
        await_one(r, "the node's barrier after the gradient exchange");
    }
    double waited = MPI_Wtime() - t0;
    r->nreq = 0;
    r->next = 0;
    r->posted = 0;
    if (r->ex == CNN_DIST_DIRECT)
        direct_sum(r);
    else if (r->ex == CNN_DIST_COLLECTIVE)
        memcpy(r->buf + r->lo[me] * r->esize, r->in, (r->hi[me] - r->lo[me]) * r->esize);
    else
        memset(r->stage, 0, (size_t)r->nb * sizeof *r->stage);
    return waited;
}

double cnn_dist_time(void) { return MPI_Wtime(); }

void cnn_dist_abort(const cnn_dist *d, int code)
{
    fflush(stdout);
    fflush(stderr);
    if (!d->initialized)
        return;
    wd_mark(NULL); /* the message is out: the monitor has nothing to add */
    /* MPI_Abort may not return, nor end the job, while a peer is stopped:
     * SIGALRM's default action ends this process then, and mpirun the job */
    signal(SIGALRM, SIG_DFL);
    alarm(10);
    MPI_Abort(MPI_COMM_WORLD, code);
}
