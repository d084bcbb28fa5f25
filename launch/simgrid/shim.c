/* shim.c - the node's shared window for SMPI (see smpi_shim.h). */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_WINDOWS = 1 << 14 };

/* Every rank's window, with its node's allocation; one table for all the
 * simulated ranks (one process), appended to and never reordered. */
static struct {
    MPI_Win win;
    char *base;    /* the node's allocation: part k at base + k * part */
    MPI_Aint part; /* bytes of each rank's part: the largest asked for */
    int disp_unit;
} windows[MAX_WINDOWS];
static int nwindows;

int cnn_sim_win_allocate_shared(MPI_Aint size, int disp_unit, MPI_Info info, MPI_Comm comm,
                                void *baseptr, MPI_Win *win)
{
    int rank, ranks;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &ranks);
    MPI_Aint part = size;
    MPI_Allreduce(MPI_IN_PLACE, &part, 1, MPI_AINT, MPI_MAX, comm);
    part = (part + 63) / 64 * 64;
    char *base = NULL;
    if (rank == 0) /* malloc: smpicc's, shared-malloc above smpi/auto-shared-malloc-thresh */
        base = malloc((size_t)part * (size_t)ranks + 1);
    MPI_Bcast(&base, sizeof base, MPI_BYTE, 0, comm);
    if (!base || nwindows == MAX_WINDOWS)
        return MPI_ERR_NO_MEM;
    *(char **)baseptr = base + (size_t)part * (size_t)rank;
    int rc = MPI_Win_create(base + (size_t)part * (size_t)rank, size, disp_unit, info, comm, win);
    if (rc == MPI_SUCCESS) {
        windows[nwindows].win = *win;
        windows[nwindows].base = base;
        windows[nwindows].part = part;
        windows[nwindows++].disp_unit = disp_unit;
    }
    return rc;
}

int cnn_sim_win_shared_query(MPI_Win win, int rank, MPI_Aint *size, int *disp_unit, void *baseptr)
{
    for (int i = 0; i < nwindows; i++)
        if (windows[i].win == win) {
            *size = windows[i].part;
            *disp_unit = windows[i].disp_unit;
            *(char **)baseptr = windows[i].base + (size_t)windows[i].part * (size_t)rank;
            return MPI_SUCCESS;
        }
    return MPI_ERR_WIN;
}

/* comm spans every rank: the blocking call is cheaper to simulate (smpi_shim.h). */
static int spans_world(MPI_Comm comm)
{
    int same = MPI_UNEQUAL;
    MPI_Comm_compare(comm, MPI_COMM_WORLD, &same);
    return same == MPI_IDENT || same == MPI_CONGRUENT;
}

/* The copies MPI_Iallreduce sends from in place of MPI_IN_PLACE
 * (smpi_shim.h), one per (world rank, out) pair and kept for the next
 * step's call on the same slice, which comes after this one completed. */
typedef struct sendcopy {
    int rank;
    const void *out;
    void *copy;
    size_t bytes;
} sendcopy;
static sendcopy *copies;
static size_t ncopies, maxcopies;

/* A copy of out's bytes for rank's MPI_Iallreduce; NULL without memory. */
static void *send_copy(const void *out, int n, MPI_Datatype type)
{
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Type_size(type, &size);
    const size_t bytes = (size_t)n * (size_t)size;
    sendcopy *c = NULL;
    for (size_t i = 0; i < ncopies && !c; i++)
        if (copies[i].rank == rank && copies[i].out == out)
            c = &copies[i];
    if (!c) {
        if (ncopies == maxcopies) {
            size_t m = maxcopies ? 2 * maxcopies : 256;
            sendcopy *g = realloc(copies, m * sizeof *g);
            if (!g)
                return NULL;
            copies = g;
            maxcopies = m;
        }
        c = &copies[ncopies++];
        *c = (sendcopy){.rank = rank, .out = out};
    }
    if (c->bytes < bytes) {
        free(c->copy);
        /* malloc: smpicc's, shared above smpi/auto-shared-malloc-thresh in
         * a prediction run (what it holds does not matter there) */
        if (!(c->copy = malloc(bytes))) {
            c->bytes = 0;
            return NULL;
        }
        c->bytes = bytes;
    }
    memcpy(c->copy, out, bytes);
    return c->copy;
}

int cnn_sim_iallreduce(const void *in, void *out, int n, MPI_Datatype type, MPI_Op op,
                       MPI_Comm comm, MPI_Request *request)
{
    if (!spans_world(comm)) {
        if (in == MPI_IN_PLACE && n > 0 && !(in = send_copy(out, n, type)))
            return MPI_ERR_NO_MEM;
        return MPI_Iallreduce(in, out, n, type, op, comm, request);
    }
    *request = MPI_REQUEST_NULL;
    return MPI_Allreduce(in, out, n, type, op, comm);
}

int cnn_sim_iallgatherv(const void *in, int n, MPI_Datatype type, void *out, const int *counts,
                        const int *displs, MPI_Datatype rtype, MPI_Comm comm,
                        MPI_Request *request)
{
    if (!spans_world(comm))
        return MPI_Iallgatherv(in, n, type, out, counts, displs, rtype, comm, request);
    *request = MPI_REQUEST_NULL;
    return MPI_Allgatherv(in, n, type, out, counts, displs, rtype, comm);
}

/* Scratch of the barriers: what they carry does not matter. */
static int barrier_in, barrier_out;

int cnn_sim_ibarrier(MPI_Comm comm, MPI_Request *request)
{
    return MPI_Iallreduce(&barrier_in, &barrier_out, 1, MPI_INT, MPI_SUM, comm, request);
}
