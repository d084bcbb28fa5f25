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
 * as messages from every rank to every other.
 *
 * SMPI's other non-blocking collectives are linear too (every rank sends
 * to every other), and finishing each of those P (P - 1) messages costs
 * SimGrid 3.32 time that grows with the messages in flight: the step's
 * MPI_Iallreduce of its figures and MPI_Iallgatherv of the parameter
 * shards took most of the simulation's CPU (perf: CommImpl::finish, from
 * cnn_dist_reducer_sum_f64 and _allgather), which grew as P^4 (48 ranks
 * 1.2 s, 96 ranks 14 s of CPU). dist.c waits for those two as soon as it
 * starts them (no watchdog in the simulation), so on a communicator that
 * spans every rank (congruent to MPI_COMM_WORLD) they run here as the
 * blocking call, with the smpi/coll-selector's algorithm (Open MPI's, as a
 * real cluster's Open MPI would pick: recursive doubling, ring...), and
 * return a completed request. On the node's and the cross-node
 * communicators (the hierarchical exchange, which overlaps them with
 * backward) they stay non-blocking.
 *
 * There, an MPI_Iallreduce with MPI_IN_PLACE (the hierarchical exchange's
 * slice across nodes) sends in SimGrid 3.32 from a copy of the buffer that
 * its PMPI_Iallreduce frees as it returns, while the sends still read it:
 * below smpi/send-is-detached-thresh (64 KiB) the data was already copied
 * out; above it the receivers summed freed memory (--check failed at
 * 2 nodes of 2 ranks, fashion_cnn's 0.8 MB slices), and once the copy was
 * big enough for malloc to give back to the system (catsdogs_cnn's 1.4 MB
 * slices at 2 nodes) the simulation died of SIGSEGV in
 * smpi_comm_copy_buffer_callback. The replacement sends from a copy of
 * its own, kept per rank and buffer for the next step. */
#ifndef CNN_SMPI_SHIM_H
#define CNN_SMPI_SHIM_H
#include <mpi.h>

int cnn_sim_win_allocate_shared(MPI_Aint size, int disp_unit, MPI_Info info, MPI_Comm comm,
                                void *baseptr, MPI_Win *win);
int cnn_sim_win_shared_query(MPI_Win win, int rank, MPI_Aint *size, int *disp_unit,
                             void *baseptr);
int cnn_sim_ibarrier(MPI_Comm comm, MPI_Request *request);
int cnn_sim_iallreduce(const void *in, void *out, int n, MPI_Datatype type, MPI_Op op,
                       MPI_Comm comm, MPI_Request *request);
int cnn_sim_iallgatherv(const void *in, int n, MPI_Datatype type, void *out, const int *counts,
                        const int *displs, MPI_Datatype rtype, MPI_Comm comm,
                        MPI_Request *request);
#define MPI_Ibarrier cnn_sim_ibarrier
#define MPI_Iallreduce cnn_sim_iallreduce
#define MPI_Iallgatherv cnn_sim_iallgatherv
#define MPI_Win_allocate_shared cnn_sim_win_allocate_shared
#define MPI_Win_shared_query cnn_sim_win_shared_query
#endif
