/* cnn/tensor.h - the engine's dense math, for layer implementations: GEMM,
 * window geometry, padding and the im2col/col2im transforms. The only user
 * of <cblas.h> is tensor.c, so the BLAS can be swapped in one file.
 */
#ifndef CNN_TENSOR_H
#define CNN_TENSOR_H

#include <stddef.h>

#include "cnn/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C (M x N) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C, row-major.
 * lda/ldb/ldc are the row lengths of A, B, C as stored. */
void cnn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Number of BLAS threads; n <= 0 leaves the library's default. */
void cnn_blas_set_threads(int n);
int cnn_blas_get_threads(void);

/* The engine's floating-point mode on the calling thread: subnormal
 * floats and doubles are flushed to zero, as results (FTZ) and as inputs
 * (DAZ), as TensorFlow's CPU threads do. Without it an optimizer state
 * that decays towards zero (RMSprop's mean square of a weight whose
 * gradient stays 0) spends hundreds of steps in subnormals, each costing a
 * micro-code assist: fashion_cnn's optimizer became 10x slower after
 * about 700 steps. Every thread of a run must compute in one mode for the
 * same bits, so each of our programs sets it first thing, and the step's
 * and the prefetcher's threads set it again when they start; a program
 * embedding the engine calls it on each thread that runs layers. On
 * x86-64 (MXCSR); elsewhere a no-op. cnn_fp_mode_is_set: 1 when the
 * calling thread is in that mode. */
void cnn_fp_mode_set(void);
int cnn_fp_mode_is_set(void);

/* Geometry of a 2-D window (convolution kernel or pooling window). */
typedef struct cnn_window {
    int c, h, w;      /* input (C, H, W) */
    int kh, kw;       /* window */
    int sh, sw;       /* stride */
    cnn_pad pad;
    int oh, ow;       /* output */
} cnn_window;

/* col (C*kh*kw, oh*ow) from one image x (C, H, W); zero where padded. */
void cnn_im2col(const cnn_window *g, const float *x, float *col);
/* dx (C, H, W) += the columns of dcol (C*kh*kw, oh*ow) scattered back. */
void cnn_col2im(const cnn_window *g, const float *dcol, float *dx);

/* Output length of a convolution or pooling window along one axis:
 * (n + pad_total - k) / s + 1, or 0 if the window does not fit. */
int cnn_conv_out_size(int n, int k, int s, int pad_total);

/* Resolves "valid" / "same" / explicit N padding into per-side amounts and
 * the output size along one axis. Returns the output size (0 = no fit). */
typedef enum { CNN_PADDING_VALID = 0, CNN_PADDING_SAME, CNN_PADDING_EXPLICIT } cnn_padding_mode;
int cnn_resolve_padding(cnn_padding_mode mode, int explicit_pad, int n, int k, int s, int *before,
                        int *after);

#ifdef __cplusplus
}
#endif
#endif /* CNN_TENSOR_H */
