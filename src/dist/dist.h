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
} cnn_dist;

/* MPI_Init; fills d. Returns 0 on success. */
int cnn_dist_init(cnn_dist *d, int *argc, char ***argv);
void cnn_dist_finalize(cnn_dist *d);

/* In-place sums across all ranks. */
void cnn_dist_allreduce_f32(const cnn_dist *d, float *buf, size_t n);
void cnn_dist_allreduce_f64(const cnn_dist *d, double *buf, size_t n);

/* Collective: each rank says whether it failed (status != 0). Returns -1
 * if none failed, else the lowest failing rank; *status becomes that
 * rank's status on every rank. */
int cnn_dist_agree(const cnn_dist *d, int *status);

/* Collective: 1 if buf (n floats) is bit-identical on all ranks. */
int cnn_dist_identical(const cnn_dist *d, const float *buf, size_t n);

double cnn_dist_time(void);

/* Last resort after the message is out: ends every rank. */
void cnn_dist_abort(const cnn_dist *d, int code);

#endif /* CNN_DIST_H */
