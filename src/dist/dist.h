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
    int initialized;
    int exchange_comm; /* Fortran handle of the gradient exchange's communicator */
} cnn_dist;

/* MPI_Init; fills d. Returns 0 on success. */
int cnn_dist_init(cnn_dist *d, int *argc, char ***argv);
void cnn_dist_finalize(cnn_dist *d);

/* In-place sums across all ranks. */
void cnn_dist_allreduce_f32(const cnn_dist *d, float *buf, size_t n);
void cnn_dist_allreduce_f64(const cnn_dist *d, double *buf, size_t n);
/* In-place exact sum of int64 values across all ranks (fixed-point
 * statistics: the same bits in any order). */
void cnn_dist_allreduce_i64(const cnn_dist *d, int64_t *buf, size_t n);
/* Rank root's n bytes of buf to every rank. */
void cnn_dist_bcast(const cnn_dist *d, void *buf, size_t n, int root);

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

/* Bucketed, overlapped reduce-scatter of a gradient buffer (sum).
 *
 * Afterwards each rank holds the sum across ranks of its own shard of the
 * buffer (cnn_dist_shard), which is all it needs to update its shard of
 * the parameters; cnn_dist_reducer_allgather() then shares the updated
 * parameters. That is half the traffic of an allreduce, and the optimizer
 * work is split among the ranks instead of repeated on each (ZeRO stage 1).
 *
 * The buffer (n float or int64 elements; an int64 sum is exact in any
 * order, a float sum is taken in rank order) is cut into buckets of about
 * bucket_bytes at the given cut points (the offsets where layers'
 * parameters start; ascending, the first 0). Backward produces gradients
 * from the end of the buffer towards its start, so buckets go out in that
 * order: cnn_dist_reducer_ready(off) says buf[off .. n) is final and sends
 * every bucket that lies inside it, each rank's part straight to that rank,
 * as PyTorch DDP starts its buckets. cnn_dist_reducer_finish() sends what
 * is left, waits for this rank's parts and sums them into its shard; the
 * time spent waiting there is the communication the overlap could not
 * hide. With overlap off, nothing is sent before finish().
 *
 * The exchange is point-to-point (MPI_Isend/MPI_Irecv on a communicator of
 * its own) rather than MPI_Iallreduce: on this project's test machine Open
 * MPI's non-blocking collectives took 2-5 times as long for the same bytes
 * (see the README). Every rank must make the same calls in the same order;
 * the other elements of buf must stay untouched until finish() returns.
 * An MPI error in the exchange is reported and ends the job (MPI_Abort):
 * the ranks could not agree on a gradient any more. */
typedef struct cnn_dist_reducer cnn_dist_reducer;

typedef enum { CNN_DIST_F32 = 0, CNN_DIST_I64 } cnn_dist_type;

/* Local (the exchange's communicator is made by cnn_dist_init; one
 * reducer at a time may use it). NULL when out of memory. */
cnn_dist_reducer *cnn_dist_reducer_new(const cnn_dist *d, void *buf, cnn_dist_type type,
                                       size_t n, const size_t *cuts, int ncuts,
                                       size_t bucket_bytes, int overlap);
void cnn_dist_reducer_free(cnn_dist_reducer *r);
int cnn_dist_reducer_buckets(const cnn_dist_reducer *r);
void cnn_dist_reducer_ready(cnn_dist_reducer *r, size_t offset);
/* Lets started transfers progress (Open MPI moves messages only inside MPI
 * calls); cheap when nothing is in flight. */
void cnn_dist_reducer_poll(cnn_dist_reducer *r);
/* Completes the step's exchange: this rank's shard of buf holds the sum.
 * Returns the seconds spent waiting. */
double cnn_dist_reducer_finish(cnn_dist_reducer *r);
/* In place: every rank's shard of buf (n floats, cut as the reducer's
 * buffer) to every rank. Collective. */
void cnn_dist_reducer_allgather(const cnn_dist_reducer *r, float *buf);

double cnn_dist_time(void);

/* Last resort after the message is out: ends every rank. */
void cnn_dist_abort(const cnn_dist *d, int code);

#endif /* CNN_DIST_H */
