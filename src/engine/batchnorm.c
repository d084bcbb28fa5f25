/* batchnorm.c - batch normalization over the channel axis, as Keras's
 * BatchNormalization (axis = -1 on (H, W, C) images, here channel-first).
 *
 *   training   mean, var (biased) over (B, H, W) of each channel of this
 *              forward call's batch; y = (x - mean) / sqrt(var + eps) *
 *              gamma + beta. The statistics stay in the layer's state for
 *              backward and for stats_get (the trainer folds a step's
 *              worth into the moving statistics: see cnn_model_stats_update).
 *   inference  the same with moving_mean and moving_variance.
 *   backward   with xhat = (x - mean) / sqrt(var + eps), n = B*H*W:
 *              dgamma = sum(dy * xhat), dbeta = sum(dy),
 *              dx = gamma / sqrt(var + eps) * (dy - dbeta/n - xhat*dgamma/n)
 *
 * Every pass runs over one channel's contiguous H*W floats of a sample at
 * a time; sums go into 8 double lanes, which keep the statistics of large
 * batches accurate (backward's two sums written as one 8-lane vector each,
 * as the compiler does not vectorise that loop). Forward reads the
 * input once for its statistics (the sums of x - K and (x - K)^2, K the
 * channel's first value) and writes once;
 * backward reads twice (sum(dy), sum(dy*(x-mean)) in one pass) and writes once.
 * A relu that the model folds into the layer (l->fused_act) is applied in
 * the forward's write, and its derivative (out > 0 ? dout : 0) in both of
 * backward's reads of dout: no passes of their own.
 *
 * Tensors: gamma (C) if scale, beta (C) if center; buffers moving_mean (C),
 * moving_variance (C); Keras's weight order and names.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/layer.h"

/* The keys of a [batch_normalization] section. */
typedef struct bn_params {
    double momentum, epsilon;
    int center, scale;
    long axis;
} bn_params;

typedef struct bn_state {
    int C, HW;
    float momentum, epsilon;
    int center, scale;
    float *mean;    /* (C) batch mean of the last training forward */
    float *var;     /* (C) its biased variance */
    float *inv_std; /* (C) 1 / sqrt(var + epsilon) */
    double *acc;    /* (2C) scratch: a pass's two sums of every channel */
    float *coef;    /* (4C) scratch: the write pass's coefficients of every channel */
} bn_state;

enum { LANES = 8 };

static cnn_status bn_parse(const cnn_section *s, void *params, cnn_error *err)
{
    bn_params *p = params;
    cnn_status st;
    if ((st = cnn_cfg_float(s, "momentum", 0.99, 0.0, 1.0, &p->momentum, err)) ||
        (st = cnn_cfg_float(s, "epsilon", 0.001, 1e-12, 1e6, &p->epsilon, err)) ||
        (st = cnn_cfg_bool(s, "center", 1, &p->center, err)) ||
        (st = cnn_cfg_bool(s, "scale", 1, &p->scale, err)) ||
        (st = cnn_cfg_int(s, "axis", -1, -1, 3, &p->axis, err)))
        return st;
    return CNN_OK;
}

static cnn_status bn_make(cnn_layer *l, const void *params, cnn_shape in, cnn_error *err)
{
    const bn_params *p = params;
    const int flat = in.h == 1 && in.w == 1;
    /* Keras counts axes of (batch, H, W, C) or (batch, C): the channel axis
     * is -1, or 3 (images) or 1 (flat). */
    if (p->axis != -1 && p->axis != 3 && !(flat && p->axis == 1))
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "layer '%s' (batch_normalization): axis = %ld is not the channel "
                             "axis; only the channel axis is supported (axis = -1, or %d)",
                             l->name, p->axis, flat ? 1 : 3);
    l->out = in;
    bn_state *S = calloc(1, sizeof *S);
    if (S) {
        S->mean = malloc((size_t)in.c * sizeof *S->mean);
        S->var = malloc((size_t)in.c * sizeof *S->var);
        S->inv_std = malloc((size_t)in.c * sizeof *S->inv_std);
        S->acc = malloc(2 * (size_t)in.c * sizeof *S->acc);
        S->coef = malloc(4 * (size_t)in.c * sizeof *S->coef);
    }
    l->state = S;
    if (!S || !S->mean || !S->var || !S->inv_std || !S->acc || !S->coef)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    S->C = in.c;
    S->HW = in.h * in.w; /* the model checked that a sample fits an int */
    S->momentum = (float)p->momentum;
    S->epsilon = (float)p->epsilon;
    S->center = p->center;
    S->scale = p->scale;
    int c = in.c;
    if (p->scale)
        cnn_layer_add_param(l, "gamma", 1, &c, CNN_INIT_ONES, c, c, 0);
    if (p->center)
        cnn_layer_add_param(l, "beta", 1, &c, CNN_INIT_ZEROS, c, c, 0);
    cnn_layer_add_buffer(l, "moving_mean", 1, &c, CNN_INIT_ZEROS);
    cnn_layer_add_buffer(l, "moving_variance", 1, &c, CNN_INIT_ONES);
    return CNN_OK;
}

static void bn_destroy(cnn_layer *l)
{
    bn_state *S = l->state;
    if (!S)
        return;
    free(S->mean);
    free(S->var);
    free(S->inv_std);
    free(S->acc);
    free(S->coef);
    free(S);
    l->state = NULL;
}

/* The 8 double lanes as one vector (GCC's vector extensions, lowered to
 * whatever the target has): lane j does exactly the scalar loop's
 * operations on elements j, j + 8, ..., in the same order; the compiler
 * does not vectorise that loop itself when it has two sums. */
typedef float bn_v8f __attribute__((vector_size(8 * sizeof(float))));
typedef int bn_v8i __attribute__((vector_size(8 * sizeof(int))));
typedef double bn_v8d __attribute__((vector_size(8 * sizeof(double))));
_Static_assert(LANES == 8, "the vector type has the lanes of the scalar loops");

static inline bn_v8f load8(const float *p)
{
    bn_v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* *s += sum(x - shift), *q += sum((x - shift)^2) over [0, n): the
 * forward's one read of its input, in 8 double lanes. */
static void lane_shifted_sums(const float *restrict x, int n, double shift, double *s, double *q)
{
    const bn_v8d sh = (bn_v8d){0} + shift;
    bn_v8d a = {0}, b = {0};
    double t1 = 0, t2 = 0;
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        const bn_v8d d = __builtin_convertvector(load8(x + i), bn_v8d) - sh;
        a += d;
        b += d * d;
    }
    for (; i < n; i++) {
        const double d = (double)x[i] - shift;
        t1 += d;
        t2 += d * d;
    }
    for (int j = 0; j < LANES; j++) {
        t1 += a[j];
        t2 += b[j];
    }
    *s += t1;
    *q += t2;
}

/* *s1 += sum(g), *s2 += sum(g * (x - shift)) over [0, n), where g = dy, or
 * with a folded relu (a constant of the inlined loop) dy masked by its
 * output y as cnn_activation_backward does: y > 0 ? dy : 0. Inlined into
 * its two callers, so each has its own loop. */
static inline __attribute__((always_inline)) void
dsums(const float *restrict x, const float *restrict dy, const float *restrict y, int relu,
      int n, double shift, double *s1, double *s2)
{
    const bn_v8d sh = (bn_v8d){0} + shift;
    bn_v8d a = {0}, b = {0};
    double t1 = 0, t2 = 0;
    int i = 0;
    for (; i + LANES <= n; i += LANES) {
        bn_v8f gf = load8(dy + i);
        if (relu) /* +0.0f where !(y > 0): the mask's bits and those of dy */
            gf = (bn_v8f)((bn_v8i)gf & (load8(y + i) > 0));
        const bn_v8d g = __builtin_convertvector(gf, bn_v8d);
        a += g;
        b += g * (__builtin_convertvector(load8(x + i), bn_v8d) - sh);
    }
    for (; i < n; i++) {
        double g = (double)(relu && !(y[i] > 0) ? 0.0f : dy[i]);
        t1 += g;
        t2 += g * ((double)x[i] - shift);
    }
    for (int j = 0; j < LANES; j++) {
        t1 += a[j];
        t2 += b[j];
    }
    *s1 += t1;
    *s2 += t2;
}

static void lane_dsums(const float *restrict x, const float *restrict dy, int n, double shift,
                       double *s1, double *s2)
{
    dsums(x, dy, NULL, 0, n, shift, s1, s2);
}

static void lane_dsums_relu(const float *restrict x, const float *restrict dy,
                            const float *restrict y, int n, double shift, double *s1, double *s2)
{
    dsums(x, dy, y, 1, n, shift, s1, s2);
}

/* out = (x - m) * a + b over [0, n): the forward's write. */
static void affine(const float *restrict x, float *restrict out, int n, float m, float a, float b)
{
    for (int i = 0; i < n; i++)
        out[i] = (x[i] - m) * a + b;
}

/* The same followed by a folded relu, as cnn_activation_apply's. */
static void affine_relu(const float *restrict x, float *restrict out, int n, float m, float a,
                        float b)
{
    for (int i = 0; i < n; i++) {
        const float v = (x[i] - m) * a + b;
        out[i] = v < 0 ? 0 : v;
    }
}

static void bn_forward(cnn_layer *l, const float *w, const float *in, float *out, int B,
                       const cnn_ctx *ctx)
{
    bn_state *S = l->state;
    const int C = S->C, HW = S->HW;
    const float *gamma = S->scale ? w : NULL;
    const float *beta = S->center ? w + (S->scale ? C : 0) : NULL;
    const float *mm = ctx->buffers + l->buffers[0].offset;
    const float *mv = ctx->buffers + l->buffers[1].offset;
    const double n = (double)B * HW;
    const int relu = l->fused_act == CNN_ACT_RELU;
    double *sum = S->acc, *sq = S->acc + C;
    float *mean = S->coef, *a = S->coef + C, *bb = S->coef + 2 * C;
    if (ctx->training) {
        /* sums shifted by the channel's first value: in doubles, the
         * variance from them loses nothing that float data holds. The
         * passes go through memory in order, sample by sample; each
         * channel's sums still add its segments in sample order. */
        for (int c = 0; c < C; c++) {
            mean[c] = in[(size_t)c * HW];
            sum[c] = sq[c] = 0;
        }
        for (int b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                lane_shifted_sums(in + ((size_t)b * C + c) * HW, HW, (double)mean[c], &sum[c],
                                  &sq[c]);
    }
    for (int c = 0; c < C; c++) {
        float inv;
        if (ctx->training) {
            const double d = sum[c] / n, mu = (double)mean[c] + d;
            const double var = sq[c] / n - d * d > 0 ? sq[c] / n - d * d : 0.0;
            S->mean[c] = mean[c] = (float)mu;
            S->var[c] = (float)var;
            S->inv_std[c] = inv = (float)(1.0 / sqrt(var + (double)S->epsilon));
        } else {
            mean[c] = mm[c];
            inv = (float)(1.0 / sqrt((double)mv[c] + (double)S->epsilon));
        }
        a[c] = gamma ? gamma[c] * inv : inv;
        bb[c] = beta ? beta[c] : 0.0f;
    }
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            const size_t o = ((size_t)b * C + c) * HW;
            (relu ? affine_relu : affine)(in + o, out + o, HW, mean[c], a[c], bb[c]);
        }
}

/* din = A*g + Bx*(x - mean) + C0, one channel segment, g as in dsums. */
static inline __attribute__((always_inline)) void
dx_segment(const float *restrict x, const float *restrict dy, const float *restrict y, int relu,
           float *restrict dx, int n, float mean, float A, float Bx, float C0)
{
    for (int i = 0; i < n; i++)
        dx[i] = A * (relu && !(y[i] > 0) ? 0.0f : dy[i]) + Bx * (x[i] - mean) + C0;
}

static void bn_dx(const float *restrict x, const float *restrict dy, float *restrict dx, int n,
                  float mean, float A, float Bx, float C0)
{
    dx_segment(x, dy, NULL, 0, dx, n, mean, A, Bx, C0);
}

static void bn_dx_relu(const float *restrict x, const float *restrict dy, const float *restrict y,
                       float *restrict dx, int n, float mean, float A, float Bx, float C0)
{
    dx_segment(x, dy, y, 1, dx, n, mean, A, Bx, C0);
}

/* Backward of a training forward (batch statistics in the state). With
 * ctx->training = 0 the layer was the fixed affine map of the moving
 * statistics and backward is that map's (the trainer never does this;
 * the gradient check does). */
static void bn_backward(cnn_layer *l, const float *w, float *g, const float *in,
                        const float *out, const float *dout, float *din, int B,
                        const cnn_ctx *ctx)
{
    bn_state *S = l->state;
    const float *y = l->fused_act == CNN_ACT_RELU ? out : NULL; /* relu's output */
    const int C = S->C, HW = S->HW;
    const float *gamma = S->scale ? w : NULL;
    float *ggamma = S->scale ? g : NULL;
    float *gbeta = S->center ? g + (S->scale ? C : 0) : NULL;
    const float *mm = ctx->buffers + l->buffers[0].offset;
    const float *mv = ctx->buffers + l->buffers[1].offset;
    const double n = (double)B * HW;
    double *s1 = S->acc, *s2 = S->acc + C; /* sum(dy), sum(dy * (x - mean)) */
    float *mean = S->coef;
    for (int c = 0; c < C; c++) {
        mean[c] = ctx->training ? S->mean[c] : mm[c];
        s1[c] = s2[c] = 0;
    }
    /* in memory order, sample by sample (each channel's sums in sample order) */
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            const size_t o = ((size_t)b * C + c) * HW;
            if (y)
                lane_dsums_relu(in + o, dout + o, y + o, HW, mean[c], &s1[c], &s2[c]);
            else
                lane_dsums(in + o, dout + o, HW, mean[c], &s1[c], &s2[c]);
        }
    float *A = S->coef + C, *Bx = S->coef + 2 * C, *C0 = S->coef + 3 * C;
    for (int c = 0; c < C; c++) {
        const double inv = ctx->training
                               ? (double)S->inv_std[c]
                               : 1.0 / sqrt((double)mv[c] + (double)S->epsilon);
        if (ggamma)
            ggamma[c] += (float)(s2[c] * inv);
        if (gbeta)
            gbeta[c] += (float)s1[c];
        const double a = gamma ? (double)gamma[c] * inv : inv;
        /* batch statistics depend on x: the mean's and the variance's terms */
        const double bx = ctx->training ? -a * inv * inv * s2[c] / n : 0.0;
        const double c0 = ctx->training ? -a * s1[c] / n : 0.0;
        A[c] = (float)a;
        Bx[c] = (float)bx;
        C0[c] = (float)c0;
    }
    if (!din)
        return;
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            const size_t o = ((size_t)b * C + c) * HW;
            if (y)
                bn_dx_relu(in + o, dout + o, y + o, din + o, HW, mean[c], A[c], Bx[c], C0[c]);
            else
                bn_dx(in + o, dout + o, din + o, HW, mean[c], A[c], Bx[c], C0[c]);
        }
}

static size_t bn_stats_count(const cnn_layer *l)
{
    const bn_state *S = l->state;
    return 2 * (size_t)S->C;
}

/* out: mean (C), then variance (C) of the last training forward. */
static void bn_stats_get(const cnn_layer *l, float *out)
{
    const bn_state *S = l->state;
    for (int c = 0; c < S->C; c++) {
        out[c] = S->mean[c];
        out[S->C + c] = S->var[c];
    }
}

/* Keras: moving = moving * momentum + batch * (1 - momentum), in float,
 * with the biased batch variance. */
static void bn_stats_update(cnn_layer *l, float *buffers, const double *mean)
{
    const bn_state *S = l->state;
    float *mm = buffers + l->buffers[0].offset;
    float *mv = buffers + l->buffers[1].offset;
    const float mo = S->momentum, rest = 1.0f - S->momentum;
    for (int c = 0; c < S->C; c++) {
        mm[c] = mm[c] * mo + (float)mean[c] * rest;
        mv[c] = mv[c] * mo + (float)mean[S->C + c] * rest;
    }
}

const cnn_layer_ops cnn_batch_normalization_ops = {
    .section = "batch_normalization", .keras_name = "BatchNormalization",
    .default_name = "batch_normalization", .params_size = sizeof(bn_params), .parse = bn_parse,
    .make = bn_make, .forward = bn_forward, .backward = bn_backward, .destroy = bn_destroy,
    .stats_count = bn_stats_count, .stats_get = bn_stats_get, .stats_update = bn_stats_update,
    .fusable_acts = 1u << CNN_ACT_RELU,
};
