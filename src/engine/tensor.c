/* tensor.c - GEMM through OpenBLAS, the floating-point mode and the
 * im2col/col2im transforms. */
#include <cblas.h>
#ifdef __x86_64__
#include <pmmintrin.h>
#include <xmmintrin.h>
#endif

#include "cnn/tensor.h"

void cnn_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void cnn_blas_set_threads(int n)
{
    if (n > 0)
        openblas_set_num_threads(n);
}

int cnn_blas_get_threads(void) { return openblas_get_num_threads(); }

void cnn_fp_mode_set(void)
{
#ifdef __x86_64__
    _MM_SET_FLUSH_ZERO_MODE(_MM_FLUSH_ZERO_ON);
    _MM_SET_DENORMALS_ZERO_MODE(_MM_DENORMALS_ZERO_ON);
#endif
}

int cnn_fp_mode_is_set(void)
{
#ifdef __x86_64__
    return _MM_GET_FLUSH_ZERO_MODE() == _MM_FLUSH_ZERO_ON &&
           _MM_GET_DENORMALS_ZERO_MODE() == _MM_DENORMALS_ZERO_ON;
#else
    return 1;
#endif
}

int cnn_conv_out_size(int n, int k, int s, int pad_total)
{
    if (s < 1 || n + pad_total < k)
        return 0;
    return (n + pad_total - k) / s + 1;
}

int cnn_resolve_padding(cnn_padding_mode mode, int explicit_pad, int n, int k, int s, int *before,
                        int *after)
{
    switch (mode) {
    case CNN_PADDING_SAME: {
        /* TensorFlow's rule: out = ceil(n / s); the odd pixel goes after. */
        int out = (n + s - 1) / s;
        int total = (out - 1) * s + k - n;
        if (total < 0)
            total = 0;
        *before = total / 2;
        *after = total - *before;
        return out;
    }
    case CNN_PADDING_EXPLICIT:
        *before = *after = explicit_pad;
        return cnn_conv_out_size(n, k, s, 2 * explicit_pad);
    case CNN_PADDING_VALID:
    default:
        *before = *after = 0;
        return cnn_conv_out_size(n, k, s, 0);
    }
}

/* For kernel offset j along an axis: the first and one-past-last output
 * positions whose input coordinate o*s - pad + j lies inside [0, n). */
static void valid_range(int n, int o_n, int s, int pad, int j, int *lo, int *hi)
{
    int a = pad - j; /* need o*s >= a */
    int l = a <= 0 ? 0 : (a + s - 1) / s;
    int b = n + pad - j; /* need o*s < b */
    int h = b <= 0 ? 0 : (b + s - 1) / s;
    if (h > o_n)
        h = o_n;
    if (l > h)
        l = h;
    *lo = l;
    *hi = h;
}

/* Rows here are short (tens of floats): GCC would turn the copy loops into
 * memmove/memset calls, whose call overhead measured 3x the copy itself. */
#define CNN_NO_LIBCALLS __attribute__((optimize("no-tree-loop-distribute-patterns")))

CNN_NO_LIBCALLS void cnn_im2col(const cnn_window *g, const float *x, float *col)
{
    const int oh = g->oh, ow = g->ow, hw = g->h * g->w;
    for (int c = 0; c < g->c; c++) {
        const float *xc = x + (size_t)c * hw;
        for (int i = 0; i < g->kh; i++) {
            int ylo, yhi;
            valid_range(g->h, oh, g->sh, g->pad.top, i, &ylo, &yhi);
            for (int j = 0; j < g->kw; j++, col += (size_t)oh * ow) {
                int xlo, xhi;
                valid_range(g->w, ow, g->sw, g->pad.left, j, &xlo, &xhi);
                for (size_t k = 0; k < (size_t)ylo * ow; k++)
                    col[k] = 0;
                for (int oy = ylo; oy < yhi; oy++) {
                    float *dst = col + (size_t)oy * ow;
                    const float *src = xc + (size_t)(oy * g->sh - g->pad.top + i) * g->w;
                    int ix0 = xlo * g->sw - g->pad.left + j;
                    for (int ox = 0; ox < xlo; ox++)
                        dst[ox] = 0;
                    if (g->sw == 1) /* a plain loop: rows are short, memcpy calls cost more */
                        for (int ox = xlo; ox < xhi; ox++)
                            dst[ox] = src[ox - xlo + ix0];
                    else
                        for (int ox = xlo, ix = ix0; ox < xhi; ox++, ix += g->sw)
                            dst[ox] = src[ix];
                    for (int ox = xhi; ox < ow; ox++)
                        dst[ox] = 0;
                }
                for (size_t k = (size_t)yhi * ow; k < (size_t)oh * ow; k++)
                    col[k] = 0;
            }
        }
    }
}

CNN_NO_LIBCALLS void cnn_col2im(const cnn_window *g, const float *dcol, float *dx)
{
    const int oh = g->oh, ow = g->ow, hw = g->h * g->w;
    for (int c = 0; c < g->c; c++) {
        float *xc = dx + (size_t)c * hw;
        for (int i = 0; i < g->kh; i++) {
            int ylo, yhi;
            valid_range(g->h, oh, g->sh, g->pad.top, i, &ylo, &yhi);
            for (int j = 0; j < g->kw; j++, dcol += (size_t)oh * ow) {
                int xlo, xhi;
                valid_range(g->w, ow, g->sw, g->pad.left, j, &xlo, &xhi);
                for (int oy = ylo; oy < yhi; oy++) {
                    const float *src = dcol + (size_t)oy * ow;
                    float *dst = xc + (size_t)(oy * g->sh - g->pad.top + i) * g->w;
                    int ix0 = xlo * g->sw - g->pad.left + j;
                    if (g->sw == 1)
                        for (int ox = xlo; ox < xhi; ox++)
                            dst[ox - xlo + ix0] += src[ox];
                    else
                        for (int ox = xlo, ix = ix0; ox < xhi; ox++, ix += g->sw)
                            dst[ix] += src[ox];
                }
            }
        }
    }
}
