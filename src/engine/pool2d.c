/* pool2d.c - max and average pooling over 2-D windows.
 *
 * Padded cells never win a max and are not counted in an average (as
 * TensorFlow does for padding = same). Max pooling remembers the winning
 * input of each output for backward; ties go to the first cell.
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/layer.h"

/* The 2x2 stride-2 max pooling's vector loops need AVX-512F and BW (-march
 * of the build machine); without them its scalar loops do the same. */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>
#define CNN_POOL_AVX512 1
#else
#define CNN_POOL_AVX512 0
#endif

extern const cnn_layer_ops cnn_maxpool2d_ops;

typedef struct pool_state {
    cnn_window g;
    int is_max;
    int32_t *argmax; /* (max_batch, C, oh, ow) index into the input plane; the
                      * 2x2 stride-2 path keeps a byte code per output in it */
} pool_state;

/* The keys of a [maxpool2d] or [avgpool2d] section. */
static cnn_status pool_parse(const cnn_section *s, void *params, cnn_error *err)
{
    cnn_window_params *p = params;
    cnn_status st;
    if ((st = cnn_cfg_pair(s, "size", 2, 2, &p->kh, &p->kw, err)) ||
        (st = cnn_cfg_pair(s, "stride", p->kh, p->kw, &p->sh, &p->sw, err)) ||
        (st = cnn_layer_read_padding(s, &p->mode, &p->amount, err)))
        return st;
    return CNN_OK;
}

/* The common case (2x2 window, stride 2, no padding) without clamping. */
static int is_2x2_s2(const cnn_window *g)
{
    return g->kh == 2 && g->kw == 2 && g->sh == 2 && g->sw == 2 && !g->pad.top &&
           !g->pad.left && !g->pad.bottom && !g->pad.right;
}

static cnn_status pool_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    cnn_status st;
    pool_state *ps = calloc(1, sizeof *ps);
    if (!ps)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    l->state = ps;
    ps->is_max = l->ops == &cnn_maxpool2d_ops;
    if ((st = cnn_layer_window(l, params, in, &ps->g, err)))
        return st;
    l->out = (cnn_shape){in.c, ps->g.oh, ps->g.ow};
    l->can_mask_relu_din = ps->is_max && is_2x2_s2(&ps->g);
    if (ps->is_max) /* argmax: an int32 per output */
        l->cache_floats = cnn_shape_size(l->out) * sizeof(int32_t) / sizeof(float);
    return CNN_OK;
}

static cnn_status pool_reserve(cnn_layer *l, int max_batch, cnn_error *err)
{
    pool_state *ps = l->state;
    if (!ps->is_max)
        return CNN_OK;
    free(ps->argmax);
    const size_t bytes = (size_t)max_batch * cnn_shape_size(l->out) * sizeof *ps->argmax;
    ps->argmax = malloc(bytes);
    if (!ps->argmax)
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "layer '%s': out of memory for the argmax of batches of up to %d "
                             "samples (%zu bytes)",
                             l->name, max_batch, bytes);
    return CNN_OK;
}

/* Clamped window rows/cols of output (oy, ox). */
static inline void window(const cnn_window *g, int oy, int ox, int *y0, int *y1, int *x0, int *x1)
{
    int ys = oy * g->sh - g->pad.top, xs = ox * g->sw - g->pad.left;
    *y0 = ys < 0 ? 0 : ys;
    *x0 = xs < 0 ? 0 : xs;
    *y1 = ys + g->kh > g->h ? g->h : ys + g->kh;
    *x1 = xs + g->kw > g->w ? g->w : xs + g->kw;
}


#if CNN_POOL_AVX512
/* The first n of 16 lanes (none for n <= 0). Masked loads and stores touch
 * only those, so a row's last block needs no scalar tail. */
static inline __mmask16 lanes(int n)
{
    return (__mmask16)(n >= 16 ? 0xFFFFu : n <= 0 ? 0u : (1u << n) - 1u);
}
#endif

/* 2x2 stride-2 max pooling: each output the largest of its four cells,
 * and which one won as a byte code (0 top-left, 1 top-right, 2 bottom-left,
 * 3 bottom-right) in code, for backward. Ties go to the first cell in
 * row-major order, as in the general path; every select is x > y ? x : y
 * (a NaN cell loses unless it came first), so the AVX-512 loop (masked
 * for a row's last block) and the scalar one give the same bits. The
 * scalar loop alone took 508 us for catsdogs_cnn's 222x222x16 input (2.6
 * ns an output); its selects are 0/1 arithmetic because GCC compiled index
 * ternaries into branches, 6 ns an output on unpredictable data. */
static void maxpool_2x2(const cnn_window *g, const float *in, float *out, uint8_t *code,
                        size_t planes)
{
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
#if CNN_POOL_AVX512
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                           30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
#endif
    for (size_t bc = 0; bc < planes; bc++) {
        const float *x = in + bc * plane;
        for (int oy = 0; oy < g->oh; oy++) {
            const float *r0 = x + (size_t)(2 * oy) * g->w, *r1 = r0 + g->w;
            float *y = out + bc * oplane + (size_t)oy * g->ow;
            uint8_t *k = code + bc * oplane + (size_t)oy * g->ow;
            int ox = 0;
#if CNN_POOL_AVX512
            for (; ox < g->ow; ox += 16) { /* up to 16 outputs from up to 32 columns */
                const int n = g->ow - ox < 16 ? g->ow - ox : 16;
                const __mmask16 mo = lanes(n), m0 = lanes(2 * n), m1 = lanes(2 * n - 16);
                const __m512 p0 = _mm512_maskz_loadu_ps(m0, r0 + 2 * ox);
                const __m512 p1 = _mm512_maskz_loadu_ps(m1, r0 + 2 * ox + 16);
                const __m512 q0 = _mm512_maskz_loadu_ps(m0, r1 + 2 * ox);
                const __m512 q1 = _mm512_maskz_loadu_ps(m1, r1 + 2 * ox + 16);
                const __m512 a = _mm512_permutex2var_ps(p0, even, p1);
                const __m512 b = _mm512_permutex2var_ps(p0, odd, p1);
                const __m512 c = _mm512_permutex2var_ps(q0, even, q1);
                const __m512 d = _mm512_permutex2var_ps(q0, odd, q1);
                const __mmask16 gab = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ);
                const __mmask16 gcd = _mm512_cmp_ps_mask(d, c, _CMP_GT_OQ);
                const __m512 ab = _mm512_mask_blend_ps(gab, a, b);
                const __m512 cd = _mm512_mask_blend_ps(gcd, c, d);
                const __mmask16 sel = _mm512_cmp_ps_mask(cd, ab, _CMP_GT_OQ);
                _mm512_mask_storeu_ps(y + ox, mo, _mm512_mask_blend_ps(sel, ab, cd));
                const __mmask16 right = (__mmask16)((sel & gcd) | (~sel & gab));
                _mm_mask_storeu_epi8(k + ox, mo,
                                     _mm_add_epi8(_mm_maskz_set1_epi8(sel, 2),
                                                  _mm_maskz_set1_epi8(right, 1)));
            }
#endif
            for (; ox < g->ow; ox++) {
                const float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
                const int gab = b > a, gcd = d > c;
                const float ab = b > a ? b : a, cd = d > c ? d : c;
                const int sel = cd > ab;
                y[ox] = cd > ab ? cd : ab;
                k[ox] = (uint8_t)(2 * sel + (sel ? gcd : gab));
            }
        }
    }
}

/* Backward of maxpool_2x2: each window's four cells written once, the
 * winner's 0 + dy (what adding into a cleared din gave) and 0 elsewhere;
 * the row and column no window covers (odd h or w) get 0. With relu (the
 * input is a relu's output, whose derivative this applies: mask_relu_din)
 * the winner gets 0 too where its value, the output y, is not > 0: what
 * the relu's own backward (y > 0 ? dy : 0) would then have made of it. */
static void maxpool_2x2_backward(const cnn_window *g, const float *out, const float *dout,
                                 const uint8_t *code, int relu, float *din, size_t planes)
{
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
#if CNN_POOL_AVX512
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    const __m512 zero = _mm512_setzero_ps();
#endif
    for (size_t bc = 0; bc < planes; bc++) {
        float *dx = din + bc * plane;
        for (int oy = 0; oy < g->oh; oy++) {
            float *r0 = dx + (size_t)(2 * oy) * g->w, *r1 = r0 + g->w;
            const float *dy = dout + bc * oplane + (size_t)oy * g->ow;
            const float *y = out + bc * oplane + (size_t)oy * g->ow;
            const uint8_t *k = code + bc * oplane + (size_t)oy * g->ow;
            int ox = 0;
#if CNN_POOL_AVX512
            for (; ox < g->ow; ox += 16) {
                const int n = g->ow - ox < 16 ? g->ow - ox : 16;
                const __mmask16 mo = lanes(n), m0 = lanes(2 * n), m1 = lanes(2 * n - 16);
                const __mmask16 pass =
                    relu ? _mm512_mask_cmp_ps_mask(mo, _mm512_maskz_loadu_ps(mo, y + ox), zero,
                                                   _CMP_GT_OQ)
                         : mo;
                const __m512 v = _mm512_add_ps(zero, _mm512_maskz_loadu_ps(pass, dy + ox));
                const __m128i kk = _mm_maskz_loadu_epi8(mo, k + ox);
                const __m512 e0 = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(kk, _mm_set1_epi8(0)), v);
                const __m512 e1 = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(kk, _mm_set1_epi8(1)), v);
                const __m512 e2 = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(kk, _mm_set1_epi8(2)), v);
                const __m512 e3 = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(kk, _mm_set1_epi8(3)), v);
                _mm512_mask_storeu_ps(r0 + 2 * ox, m0, _mm512_permutex2var_ps(e0, lo, e1));
                _mm512_mask_storeu_ps(r0 + 2 * ox + 16, m1, _mm512_permutex2var_ps(e0, hi, e1));
                _mm512_mask_storeu_ps(r1 + 2 * ox, m0, _mm512_permutex2var_ps(e2, lo, e3));
                _mm512_mask_storeu_ps(r1 + 2 * ox + 16, m1, _mm512_permutex2var_ps(e2, hi, e3));
            }
#endif
            for (; ox < g->ow; ox++) {
                const float v = relu && !(y[ox] > 0) ? 0.0f : 0.0f + dy[ox];
                r0[2 * ox] = k[ox] == 0 ? v : 0.0f;
                r0[2 * ox + 1] = k[ox] == 1 ? v : 0.0f;
                r1[2 * ox] = k[ox] == 2 ? v : 0.0f;
                r1[2 * ox + 1] = k[ox] == 3 ? v : 0.0f;
            }
            if (g->w & 1)
                r0[g->w - 1] = r1[g->w - 1] = 0.0f;
        }
        if (g->h & 1)
            memset(dx + (size_t)(g->h - 1) * g->w, 0, (size_t)g->w * sizeof *dx);
    }
}

static void pool_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                         const cnn_ctx *ctx)
{
    (void)w;
    (void)ctx;
    const pool_state *ps = l->state;
    const cnn_window *g = &ps->g;
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
    if (ps->is_max && is_2x2_s2(g)) {
        maxpool_2x2(g, in, out, (uint8_t *)ps->argmax, (size_t)B * g->c);
        return;
    }
    for (size_t bc = 0; bc < (size_t)B * g->c; bc++) {
        const float *x = in + bc * plane;
        float *y = out + bc * oplane;
        int32_t *am = ps->is_max ? ps->argmax + bc * oplane : NULL;
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int y0, y1, x0, x1;
                window(g, oy, ox, &y0, &y1, &x0, &x1);
                if (am) {
                    float best = -FLT_MAX;
                    int32_t bi = y0 * g->w + x0;
                    for (int iy = y0; iy < y1; iy++)
                        for (int ix = x0; ix < x1; ix++)
                            if (x[iy * g->w + ix] > best) {
                                best = x[iy * g->w + ix];
                                bi = iy * g->w + ix;
                            }
                    y[oy * g->ow + ox] = best;
                    am[oy * g->ow + ox] = bi;
                } else {
                    float s = 0;
                    for (int iy = y0; iy < y1; iy++)
                        for (int ix = x0; ix < x1; ix++)
                            s += x[iy * g->w + ix];
                    y[oy * g->ow + ox] = s / (float)((y1 - y0) * (x1 - x0));
                }
            }
    }
}

static void pool_backward(cnn_layer *l, const float *w, float *gr, const float *in, const float *out,
                          const float *dout, float *din, int B, const cnn_ctx *ctx)
{
    (void)w;
    (void)gr;
    (void)in;
    (void)ctx;
    if (!din)
        return;
    const pool_state *ps = l->state;
    const cnn_window *g = &ps->g;
    const size_t plane = (size_t)g->h * g->w, oplane = (size_t)g->oh * g->ow;
    if (ps->is_max && is_2x2_s2(g)) {
        maxpool_2x2_backward(g, out, dout, (const uint8_t *)ps->argmax, l->mask_relu_din, din,
                             (size_t)B * g->c);
        return;
    }
    memset(din, 0, (size_t)B * g->c * plane * sizeof *din);
    for (size_t bc = 0; bc < (size_t)B * g->c; bc++) {
        float *dx = din + bc * plane;
        const float *dy = dout + bc * oplane;
        if (ps->is_max) {
            const int32_t *am = ps->argmax + bc * oplane;
            for (size_t o = 0; o < oplane; o++)
                dx[am[o]] += dy[o];
            continue;
        }
        for (int oy = 0; oy < g->oh; oy++)
            for (int ox = 0; ox < g->ow; ox++) {
                int y0, y1, x0, x1;
                window(g, oy, ox, &y0, &y1, &x0, &x1);
                float v = dy[oy * g->ow + ox] / (float)((y1 - y0) * (x1 - x0));
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++)
                        dx[iy * g->w + ix] += v;
            }
    }
}

static void pool_destroy(cnn_layer *l)
{
    pool_state *ps = l->state;
    if (ps)
        free(ps->argmax);
    free(ps);
}

const cnn_layer_ops cnn_maxpool2d_ops = {
    .section = "maxpool2d", .keras_name = "MaxPooling2D", .default_name = "max_pooling2d",
    .params_size = sizeof(cnn_window_params), .parse = pool_parse, .make = pool_make,
    .reserve = pool_reserve, .forward = pool_forward,
    .backward = pool_backward, .destroy = pool_destroy,
};

const cnn_layer_ops cnn_avgpool2d_ops = {
    .section = "avgpool2d", .keras_name = "AveragePooling2D", .default_name = "average_pooling2d",
    .params_size = sizeof(cnn_window_params), .parse = pool_parse, .make = pool_make,
    .reserve = pool_reserve, .forward = pool_forward,
    .backward = pool_backward, .destroy = pool_destroy,
};
