/* threads.c - the engine's thread count, for programs (cnn/train.h). */
#include "cnn/train.h"
#include "cnn/tensor.h"

void cnn_set_threads(int n) { cnn_blas_set_threads(n); }

int cnn_get_threads(void) { return cnn_blas_get_threads(); }
