/* dist.h - everything cnn-train needs from MPI, behind plain C types.
 * This is the only module that includes <mpi.h>; the engine and the data
 * code see (rank, world) as integers.
 *
 * Failure protocol: every phase that can fail on one rank ends with
 * cnn_dist_agree(), a collective that tells all ranks whether any failed
 * and which one first, so no rank is left waiting in a later collective.
 */
#ifndef CNN_DIST_H
#define CNN_DIST_H

#include <stddef.h>
#include <stdint.h>

typedef struct cnn_dist {
    int rank, world;
    int local_rank, local_size; /* ranks on this node */
    int nodes;                  /* nodes of the job */
    int node_min, node_max;     /* fewest and most ranks on one node */
    int initialized;
    int exchange_comm; /* Fortran handle of the gradient exchange's communicator */
    int node_comm;     /* Fortran handle: the ranks sharing memory with this one
                        * (MPI_COMM_TYPE_SHARED). The hierarchical exchange
                        * takes its nodes from here; a test may put a smaller
                        * group of them here to stand for a node. */
    int comm;  /* Fortran handle of the communicator of the collectives below:
                * MPI_COMM_WORLD, or a group's (cnn_dist_split) */
    int split; /* made by cnn_dist_split: freed by cnn_dist_free_split */
} cnn_dist;

/* MPI_Init; fills d. Returns 0 on success. */
int cnn_dist_init(cnn_dist *d, int *argc, char ***argv);
void cnn_dist_finalize(cnn_dist *d);

/* Collective over parent: the ranks that pass the same color form a group,
 * numbered in parent's rank order, with communicators of their own (the
 * collectives, the gradient exchange, the node), so a group trains as a job
 * of its own while other groups train beside it. Its rank, world and node
 * figures are the group's. Returns 0 on success (child is then freed with
 * cnn_dist_free_split, which is collective over the group), else -1 and
 * *child is zeroed. */
int cnn_dist_split(const cnn_dist *parent, int color, cnn_dist *child);
void cnn_dist_free_split(cnn_dist *child);

/* In-place sums across all ranks, only of values whose sum is exact in any
 * order: every element non-zero on one rank at most (each sample's figures
 * come from the rank that holds it), or integers below 2^24 (f32) / 2^53
 * (f64). The result then does not depend on MPI's algorithm, and the
 * watchdog can use the non-blocking call. */
void cnn_dist_allreduce_f32(const cnn_dist *d, float *buf, size_t n);
void cnn_dist_allreduce_f64(const cnn_dist *d, double *buf, size_t n);
/* In-place exact sum of int64 values across all ranks (fixed-point
 * statistics: the same bits in any order). */
void cnn_dist_allreduce_i64(const cnn_dist *d, int64_t *buf, size_t n);
/* Rank root's n bytes of buf to every rank. */
void cnn_dist_bcast(const cnn_dist *d, void *buf, size_t n, int root);
/* Collective: rank root's *len bytes at *buf to every rank. The others'
 * *buf becomes a malloc'ed copy (NULL when *len is 0) that they free; on
 * them *buf and *len are outputs only. Returns 0, or -1 on every rank when
 * a rank cannot allocate the bytes (the others' *buf is then NULL). */
int cnn_dist_bcast_bytes(const cnn_dist *d, char **buf, size_t *len, int root);

/* In-place element-wise maximum of bytes across all ranks. */
void cnn_dist_allreduce_max_u8(const cnn_dist *d, uint8_t *buf, size_t n);

/* In-place element-wise maximum across all ranks. */
void cnn_dist_allreduce_max_f64(const cnn_dist *d, double *buf, size_t n);

/* Collective: each rank says whether it failed (status != 0). Returns -1
 * if none failed, else the lowest failing rank; *status becomes that
 * rank's status on every rank. */
int cnn_dist_agree(const cnn_dist *d, int *status);

/* Collective: 1 if buf (n floats) is bit-identical on all ranks. */
int cnn_dist_identical(const cnn_dist *d, const float *buf, size_t n);

/* Rank's shard of an n-element buffer: [n*rank/world, n*(rank+1)/world).
 * The shards of all ranks cut the buffer in order. */
void cnn_dist_shard(size_t n, int rank, int world, size_t *lo, size_t *hi);

/* How the gradient buckets travel ([dist] exchange). */
typedef enum {
    CNN_DIST_AUTO = 0,     /* one of the others, from the job's shape */
    CNN_DIST_DIRECT,       /* point-to-point: each rank's part straight to its owner */
    CNN_DIST_COLLECTIVE,   /* MPI_Ireduce_scatter per bucket: the MPI's own algorithm */
    CNN_DIST_HIERARCHICAL, /* shared memory inside a node, MPI_Iallreduce across nodes */
    CNN_DIST_NEXCHANGES
} cnn_dist_exchange;

/* "auto", "direct", ... in enum order, NULL-terminated (config keys). */
extern const char *const cnn_dist_exchange_names[CNN_DIST_NEXCHANGES + 1];

/* The exchange for this job: want itself, or what auto picks from the
 * world size and ranks per node; why (n bytes) says why, in one line. */
cnn_dist_exchange cnn_dist_exchange_pick(const cnn_dist *d, cnn_dist_exchange want, char *why,
                                         size_t n);

/* Bucketed, overlapped reduce-scatter of a gradient buffer (sum).
 *
 * Afterwards each rank holds the sum across ranks of its own shard of the
 * buffer (cnn_dist_shard), which is all it needs to update its shard of
 * the parameters; cnn_dist_reducer_allgather() then shares the updated
 * parameters. That is half the traffic of an allreduce, and the optimizer
 * work is split among the ranks instead of repeated on each (ZeRO stage 1).
 *
 * The buffer (n float or int64 elements) is cut into buckets of about
 * bucket_bytes at the given cut points (the offsets where layers'
 * parameters start; ascending, the first 0). Backward produces gradients
 * from the end of the buffer towards its start, so buckets go out in that
 * order: cnn_dist_reducer_ready(off) says buf[off .. n) is final and starts
 * every bucket that lies inside it, as PyTorch DDP starts its buckets.
 * cnn_dist_reducer_finish() starts what is left and waits until this
 * rank's shard holds the sum; the time spent waiting there is the
 * communication the overlap could not hide. With overlap off, nothing
 * starts before finish().
 *
 * Three exchanges (cnn_dist_exchange; auto is resolved by
 * cnn_dist_exchange_pick):
 *   direct        each rank sends a bucket's part of every other rank's
 *                 shard straight to that rank (MPI_Isend/MPI_Irecv): world-1
 *                 messages per bucket per rank. On this project's one-node
 *                 test machine Open MPI's non-blocking collectives took 2-5
 *                 times as long for the same bytes (see the README), and
 *                 this took 2.7 times as long as hierarchical with its
 *                 shared parameters (cnn-bench-exchange, np 2), so auto
 *                 takes hierarchical on one node.
 *   collective    one MPI_Ireduce_scatter per bucket: whatever algorithm the
 *                 site's MPI picks for the size (rings, trees, in-network).
 *   hierarchical  the ranks of a node (cnn_dist.node_comm) keep the buffer
 *                 in one shared-memory window; per bucket, each of the first
 *                 S local ranks (S = fewest ranks on a node) sums 1/S of the
 *                 bucket over the node's ranks, straight out of their
 *                 memory, then allreduces that slice with the ranks of the
 *                 same local number on the other nodes (MPI_Iallreduce);
 *                 every rank then copies its shard out of the node's sum.
 *                 When the node is the whole job, each rank instead sums
 *                 its own shard's part of a bucket over the node's buffers
 *                 straight into its buffer: one pass, no node sum, and a
 *                 node barrier at the end of finish().
 *                 Node barriers (MPI_Ibarrier) order the steps, so it all
 *                 overlaps with backward like the others.
 * An int64 sum is exact in any order, so every exchange gives the same
 * bits. A float sum is taken in rank order by direct, in local rank order
 * then the MPI's order by hierarchical, and in the MPI's order by
 * collective.
 *
 * With timeout_s > 0 a watchdog guards every wait of the exchange (finish,
 * cnn_dist_reducer_sum_f64, cnn_dist_reducer_allgather) and, while the
 * reducer lives, the collectives above: the sums, maxima, minima and
 * broadcasts become their non-blocking calls under the watchdog (same
 * results in any order: the float sums are only of values exact in any
 * order, so a rank stopped inside one is named like one stopped inside the
 * exchange; a blocking sum there left the others stuck inside MPI, where
 * no rank can be named). In a watched wait each rank
 * tells its right neighbour it is alive, on entry and every 0.25 s (or
 * timeout_s / 4); when a wait lasts timeout_s seconds and the left
 * neighbour has been silent as long, the rank names it as the rank that
 * stopped answering and ends the job; a rank whose neighbour did answer waits 5 s longer for that
 * report before ending the job itself. A monitor thread (no MPI calls: MPI
 * runs MPI_THREAD_FUNNELED) ends the process 2 s after that if the wait is
 * stuck inside MPI, with a line naming the wait. One watchdog per process.
 *
 * Every rank must make the same calls in the same order; the other
 * elements of buf must stay untouched until finish() returns. An MPI
 * error in the exchange is reported and ends the job (MPI_Abort): the
 * ranks could not agree on a gradient any more. */
typedef struct cnn_dist_reducer cnn_dist_reducer;

typedef enum { CNN_DIST_F32 = 0, CNN_DIST_I64 } cnn_dist_type;

typedef struct cnn_dist_reducer_opts {
    size_t bucket_bytes;
    int overlap;                /* start buckets during backward */
    cnn_dist_exchange exchange; /* auto is resolved here by cnn_dist_exchange_pick */
    double timeout_s;           /* watchdog; 0: off */
    int shared_params;          /* hierarchical: a window for the parameters too
                                 * (cnn_dist_reducer_params) */
} cnn_dist_reducer_opts;

/* Collective (every rank, same arguments): the communicators and the
 * shared window of the exchange are made here. buf NULL: the reducer
 * allocates the buffer, zeroed (in the node's shared window when
 * hierarchical, which saves a copy per step), see cnn_dist_reducer_data.
 * One reducer at a time may exchange. NULL when out of memory. */
cnn_dist_reducer *cnn_dist_reducer_new(const cnn_dist *d, void *buf, cnn_dist_type type,
                                       size_t n, const size_t *cuts, int ncuts,
                                       const cnn_dist_reducer_opts *o);
/* Collective when hierarchical (it frees the shared window); safe on NULL. */
void cnn_dist_reducer_free(cnn_dist_reducer *r);
/* The buffer of n elements (the caller's, or the reducer's own). */
void *cnn_dist_reducer_data(const cnn_dist_reducer *r);
int cnn_dist_reducer_buckets(const cnn_dist_reducer *r);
cnn_dist_exchange cnn_dist_reducer_exchange(const cnn_dist_reducer *r);
void cnn_dist_reducer_ready(cnn_dist_reducer *r, size_t offset);
/* Lets started transfers progress (Open MPI moves messages only inside MPI
 * calls); cheap when nothing is in flight. */
void cnn_dist_reducer_poll(cnn_dist_reducer *r);
/* Completes the step's exchange: this rank's shard of buf holds the sum.
 * Returns the seconds spent waiting. */
double cnn_dist_reducer_finish(cnn_dist_reducer *r);
/* In place: every rank's shard of buf (n floats, cut as the reducer's
 * buffer) to every rank. Collective, under the watchdog. */
void cnn_dist_reducer_allgather(cnn_dist_reducer *r, float *buf);
/* n floats in the node's shared memory, that every rank of the node reads
 * and writes, or NULL: made only for a hierarchical reducer asked for it
 * (shared_params) when every node has the same number of ranks.
 * cnn_dist_reducer_allgather() of this window copies nothing inside a
 * node: the shards of the other nodes come from the ranks of the same
 * local number there (MPI_Iallgatherv), then a node barrier makes every
 * shard visible to all of the node. So between two of those calls a rank
 * writes only its own shard of the window, and only once no rank of its
 * node reads the window any more (after a collective that each enters
 * when it is done reading), or all ranks write the same values. */
float *cnn_dist_reducer_params(const cnn_dist_reducer *r);
/* In-place sum of n doubles across all ranks. Collective, under the
 * watchdog. */
void cnn_dist_reducer_sum_f64(cnn_dist_reducer *r, double *buf, int n);

double cnn_dist_time(void);

/* Last resort after the message is out: ends every rank (MPI_Abort; if
 * that has not ended this process in 10 s, SIGALRM does). */
void cnn_dist_abort(const cnn_dist *d, int code);

#endif /* CNN_DIST_H */
