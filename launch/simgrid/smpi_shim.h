/* smpi_shim.h - forced into src/dist/dist.c (cc -include) when predict.sh
 * builds it with smpicc; nothing else of dist.c changes.
 *
 * SimGrid 3.32's MPI_Win_allocate_shared gives rank k of the node the
 * address base + k * size, with base allocated by local rank 0 as size *
 * ranks: it assumes every rank asks for the same size. The hierarchical
 * exchange asks for twice as much on local rank 0 (its part holds the
 * node's sum too), so there rank 1's part would start inside rank 0's.
 * These two replacements (shim.c) give every rank of the node a part of
 * the largest size asked for, in one allocation of the node, shared by
 * the simulated ranks (they all live in one process), and answer
 * MPI_Win_shared_query from it.
 *
 * Its MPI_Ibarrier is no barrier: local rank 0 answers every rank as soon
 * as it starts, so a rank may pass while another has not arrived (and the
 * hierarchical exchange would then sum a bucket before it is in). The
 * replacement completes on a rank only once every rank of the
 * communicator has started it: a one-int MPI_Iallreduce, which SMPI runs
 * as messages from every rank to every other. */
#ifndef CNN_SMPI_SHIM_H
#define CNN_SMPI_SHIM_H
#include <mpi.h>

int cnn_sim_win_allocate_shared(MPI_Aint size, int disp_unit, MPI_Info info, MPI_Comm comm,
                                void *baseptr, MPI_Win *win);
int cnn_sim_win_shared_query(MPI_Win win, int rank, MPI_Aint *size, int *disp_unit,
                             void *baseptr);
int cnn_sim_ibarrier(MPI_Comm comm, MPI_Request *request);
#define MPI_Ibarrier cnn_sim_ibarrier
#define MPI_Win_allocate_shared cnn_sim_win_allocate_shared
#define MPI_Win_shared_query cnn_sim_win_shared_query
#endif
