/* threads.c - the engine's thread count, for programs (cnn/train.h). */
#include "cnn/train.h"
#include "cnn/tensor.h"

/* The threads of a rank: the training step spreads its chunks over them
 * (src/train/step.h); 0 until cnn_set_threads sets it. */
static int rank_threads;

void cnn_set_threads(int n)
{
    if (n <= 0)
        return;
    rank_threads = n;
    cnn_blas_set_threads(n);
}

int cnn_get_threads(void) { return rank_threads > 0 ? rank_threads : cnn_blas_get_threads(); }
