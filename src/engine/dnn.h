/* dnn.h - 2-D convolution (conv2d.c) and matrix products (dense.c)
 * through oneDNN (src/engine/dnn.c, the only file that includes <dnnl.h>).
 *
 * Our tensors stay NCHW: x (B, C, H, W), y (B, F, oh, ow), the kernel
 * (F, C, kh, kw), the bias (F). Each pass reorders its operands into the
 * blocked layouts oneDNN's AVX-512 kernels choose (nChw16c, OIhw16i16o...),
 * runs, and reorders its result back, all inside the caller's scratch.
 *
 * Images go through in sub-batches of a fixed size S chosen from the shape
 * alone (the largest power of two up to 8 whose sub-batch's tensors fit in
 * about 2 MB); a last, shorter sub-batch is zero-padded to S. So every image is
 * computed by the same primitive whatever the batch size, and the primitives
 * are all made once, in cnn_dnn_conv_create.
 *
 * Single-threaded and re-entrant: oneDNN is Debian's OpenMP build; each call
 * sets the calling thread's OpenMP thread count to 1 (omp_set_num_threads
 * is per thread), so oneDNN runs inline in the caller, starts no threads,
 * and calls from several threads at once are independent. The primitives
 * are made with a user scratchpad: all working memory of a call is the
 * scratch it is given; the object itself is read-only after create.
 */
#ifndef CNN_ENGINE_DNN_H
#define CNN_ENGINE_DNN_H

#include <stddef.h>

#include "cnn/error.h"
#include "cnn/tensor.h"

typedef struct cnn_dnn_conv cnn_dnn_conv;

/* A convolution of window g with `filters` outputs (and a bias if
 * use_bias); with relu, the forward writes max(y, 0) (oneDNN's eltwise
 * post-op, inside the kernel, instead of a pass of our own over y: the
 * same values, a zero's sign aside, which no later sum or comparison
 * sees). *scratch_floats is set to the workspace a call needs. Errors name
 * `layer`; *out is NULL on failure. */
cnn_status cnn_dnn_conv_create(cnn_dnn_conv **out, const cnn_window *g, int filters, int use_bias,
                               int relu, const char *layer, size_t *scratch_floats,
                               cnn_error *err);
void cnn_dnn_conv_free(cnn_dnn_conv *c);

/* y = conv(x, w) + bias, for B images. */
void cnn_dnn_conv_forward(const cnn_dnn_conv *c, const float *w, const float *bias,
                          const float *x, float *y, int B, float *scratch);

/* dw += dL/dw, dx = dL/dx (if dx) from dy, for B images; poll(arg) after
 * each sub-batch (if poll). The bias gradient (the sums of dy) is the
 * caller's: conv2d.c keeps its own summation order for it, which PyTorch's
 * check needs where a batch normalisation follows and the sums cancel. */
void cnn_dnn_conv_backward(const cnn_dnn_conv *c, const float *w, const float *x,
                           const float *dy, float *dw, float *dx, int B, float *scratch,
                           void (*poll)(void *), void *arg);

/* Matrix products of dense layers: C (M x N) = A (M x K) . B, row-major,
 * B stored (K, N), or (N, K) when trans_b (then B^T is the factor), C
 * overwritten. oneDNN's matmul (its brgemm kernels) against OpenBLAS's
 * sgemm at fashion_cnn's dense shapes, 1 thread: y = x.W (8 x 3136 . 3136
 * x 64) 51 -> 21 us, dx = dy.W^T 74 -> 32 us; the weight gradient x^T.dy
 * (K = 8) stays on OpenBLAS (catsdogs_cnn's 21632 x 256: 1,148 us against
 * oneDNN's 1,448). Rows go in blocks of a fixed S, a short last block
 * zero-padded in the scratch, so a row's arithmetic does not depend on M;
 * *scratch_floats is what a call needs. Single-threaded and re-entrant as
 * the convolution above. */
typedef struct cnn_dnn_matmul cnn_dnn_matmul;
cnn_status cnn_dnn_matmul_create(cnn_dnn_matmul **out, int S, int N, int K, int trans_b,
                                 const char *layer, size_t *scratch_floats, cnn_error *err);
void cnn_dnn_matmul_free(cnn_dnn_matmul *m);
void cnn_dnn_matmul_run(const cnn_dnn_matmul *m, const float *a, const float *b, float *c, int M,
                        float *scratch);

#endif
