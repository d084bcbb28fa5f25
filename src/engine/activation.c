/* activation.c - element-wise activations and softmax.
 *
 * The model applies a layer's activation in place on its output and takes
 * the derivative from that output y, so no pre-activation copy is kept:
 * f'(y) exists for linear, relu, sigmoid, tanh, softmax, relu6, leaky_relu
 * (alpha > 0) and elu. gelu and swish are not monotonic, so y does not give
 * x back; the layers that apply them keep x (cnn_preact) and use
 * cnn_activation_grad_input. The [activation] layer, which has x as its
 * input, uses the same function for every activation.
 *
 * Definitions and defaults are Keras's (Keras 2 layer defaults):
 *   relu6       min(max(x, 0), 6)
 *   leaky_relu  x >= 0 ? x : alpha x              alpha 0.3 (LeakyReLU)
 *   elu         x > 0 ? x : alpha (exp(x) - 1)    alpha 1.0 (ELU)
 *   gelu        x (1 + erf(x / sqrt 2)) / 2       exact form (approximate=False)
 *   swish       x sigmoid(x)                      (Keras's silu)
 *
 * gelu and swish (and their gradients) use exp_poly and erf_poly below,
 * written so the compiler vectorises the loops (libm's expf and erff are
 * scalar calls): exp to about 2 ulp, erf to 2e-7 absolute, within float
 * rounding of the exact definitions. sigmoid, tanh, elu and softmax keep
 * libm.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/layer.h"

const char *const cnn_activation_names[] = {"linear", "relu",       "sigmoid", "tanh",
                                            "softmax", "relu6",     "leaky_relu", "elu",
                                            "gelu",   "swish",      NULL};
_Static_assert(sizeof cnn_activation_names / sizeof *cnn_activation_names == CNN_ACT_COUNT + 1,
               "activation name table out of step with cnn_activation");

float cnn_activation_default_alpha(cnn_activation a)
{
    return a == CNN_ACT_LEAKY_RELU ? 0.3f : a == CNN_ACT_ELU ? 1.0f : 0.0f;
}

int cnn_activation_needs_input(cnn_activation a)
{
    return a == CNN_ACT_GELU || a == CNN_ACT_SWISH;
}

static void softmax_row(float *y, size_t n)
{
    float mx = y[0];
    for (size_t i = 1; i < n; i++)
        mx = y[i] > mx ? y[i] : mx;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        y[i] = expf(y[i] - mx);
        sum += y[i];
    }
    float inv = (float)(1.0 / sum);
    for (size_t i = 0; i < n; i++)
        y[i] *= inv;
}

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* e^x, branch-free: x = n ln2 + r, |r| <= ln2/2, e^r by Cephes's degree-6
 * polynomial, 2^n put into the exponent bits. x is clamped to
 * [-87.3, 88.3], so the result is always a normal float (below -87.3 it
 * is 1.2e-38 instead of smaller: no caller here can tell). */
static inline float exp_poly(float x)
{
    x = x < -87.3f ? -87.3f : x > 88.3f ? 88.3f : x;
    /* n = round(x / ln2): adding 1.5 * 2^23 rounds to an integer (floorf
     * would be a call and keep the loop scalar) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union {
        int32_t i;
        float f;
    } scale = {.i = ((int32_t)n + 127) << 23};
    return p * scale.f;
}

/* erf(x): below |x| = 0.5 its Maclaurin series to x^11 (truncation under
 * 2e-8); above, 1 - erfc(|x|) with the sign of x, erfc by the Chebyshev
 * fit of Numerical Recipes (erfcc: fractional error below 1.2e-7) whose
 * exp is exp_poly. Both are computed and one selected, so loops vectorise. */
static inline float erf_poly(float x)
{
    float z = fabsf(x), t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    float e = 1.0f - t * exp_poly(p - z * z);
    float z2 = z * z, q = -1.0f / 1320.0f; /* sum (-1)^k z^(2k+1) / (k! (2k+1)) */
    q = q * z2 + 1.0f / 216.0f;
    q = q * z2 - 1.0f / 42.0f;
    q = q * z2 + 1.0f / 10.0f;
    q = q * z2 - 1.0f / 3.0f;
    q = (q * z2 + 1.0f) * z * 1.12837916709551257f; /* 2 / sqrt(pi) */
    e = z < 0.5f ? q : e;
    return x < 0 ? -e : e;
}

static inline float sigmoid_poly(float x) { return 1.0f / (1.0f + exp_poly(-x)); }

void cnn_activation_apply(cnn_activation a, float alpha, const float *x, float *y, size_t n)
{
    switch (a) {
    case CNN_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] < 0 ? 0 : x[i]; /* NaN stays NaN, as in PyTorch */
        break;
    case CNN_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            y[i] = sigmoidf(x[i]);
        break;
    case CNN_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            y[i] = tanhf(x[i]);
        break;
    case CNN_ACT_RELU6:
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] < 0 ? 0 : x[i] > 6 ? 6 : x[i];
        break;
    case CNN_ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] < 0 ? alpha * x[i] : x[i];
        break;
    case CNN_ACT_ELU:
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? x[i] : alpha * expm1f(x[i]);
        break;
    case CNN_ACT_GELU:
        for (size_t i = 0; i < n; i++)
            y[i] = 0.5f * x[i] * (1.0f + erf_poly(x[i] * (float)M_SQRT1_2));
        break;
    case CNN_ACT_SWISH:
        for (size_t i = 0; i < n; i++)
            y[i] = x[i] * sigmoid_poly(x[i]);
        break;
    case CNN_ACT_LINEAR:
    case CNN_ACT_SOFTMAX: /* not element-wise: cnn_activation_forward */
    default:
        if (y != x)
            memmove(y, x, n * sizeof *y);
        break;
    }
}

void cnn_activation_grad_input(cnn_activation a, float alpha, const float *x, const float *dy,
                               float *dx, size_t n)
{
    switch (a) {
    case CNN_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            dx[i] = x[i] > 0 ? dy[i] : 0;
        break;
    case CNN_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++) {
            float s = sigmoidf(x[i]);
            dx[i] = dy[i] * s * (1 - s);
        }
        break;
    case CNN_ACT_TANH:
        for (size_t i = 0; i < n; i++) {
            float t = tanhf(x[i]);
            dx[i] = dy[i] * (1 - t * t);
        }
        break;
    case CNN_ACT_RELU6:
        for (size_t i = 0; i < n; i++)
            dx[i] = x[i] > 0 && x[i] < 6 ? dy[i] : 0;
        break;
    case CNN_ACT_LEAKY_RELU:
        for (size_t i = 0; i < n; i++)
            dx[i] = x[i] < 0 ? alpha * dy[i] : dy[i];
        break;
    case CNN_ACT_ELU:
        for (size_t i = 0; i < n; i++)
            dx[i] = x[i] > 0 ? dy[i] : dy[i] * alpha * expf(x[i]);
        break;
    case CNN_ACT_GELU: /* Phi(x) + x phi(x) */
        for (size_t i = 0; i < n; i++) {
            float cdf = 0.5f * (1.0f + erf_poly(x[i] * (float)M_SQRT1_2));
            float pdf = 0.39894228040143268f * exp_poly(-0.5f * x[i] * x[i]);
            dx[i] = dy[i] * (cdf + x[i] * pdf);
        }
        break;
    case CNN_ACT_SWISH: /* s + x s (1 - s) */
        for (size_t i = 0; i < n; i++) {
            float s = sigmoid_poly(x[i]);
            dx[i] = dy[i] * s * (1 + x[i] * (1 - s));
        }
        break;
    case CNN_ACT_LINEAR:
    case CNN_ACT_SOFTMAX:
    default:
        if (dx != dy)
            memmove(dx, dy, n * sizeof *dx);
        break;
    }
}

void cnn_activation_forward(cnn_activation a, float *y, size_t rows, size_t row)
{
    if (a == CNN_ACT_SOFTMAX) {
        for (size_t r = 0; r < rows; r++)
            softmax_row(y + r * row, row);
        return;
    }
    cnn_activation_apply(a, cnn_activation_default_alpha(a), y, y, rows * row);
}

void cnn_activation_backward(cnn_activation a, const float *y, float *dy, size_t rows, size_t row)
{
    size_t n = rows * row;
    const float alpha = cnn_activation_default_alpha(a);
    switch (a) {
    case CNN_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            dy[i] = y[i] > 0 ? dy[i] : 0;
        break;
    case CNN_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            dy[i] *= y[i] * (1 - y[i]);
        break;
    case CNN_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            dy[i] *= 1 - y[i] * y[i];
        break;
    case CNN_ACT_SOFTMAX:
        /* dx_i = y_i * (dy_i - sum_j dy_j y_j) */
        for (size_t r = 0; r < rows; r++) {
            const float *yr = y + r * row;
            float *dr = dy + r * row;
            double dot = 0;
            for (size_t i = 0; i < row; i++)
                dot += (double)dr[i] * yr[i];
            for (size_t i = 0; i < row; i++)
                dr[i] = yr[i] * (dr[i] - (float)dot);
        }
        break;
    case CNN_ACT_RELU6:
        for (size_t i = 0; i < n; i++)
            dy[i] = y[i] > 0 && y[i] < 6 ? dy[i] : 0;
        break;
    case CNN_ACT_LEAKY_RELU: /* y < 0 exactly when x < 0, as alpha > 0 */
        for (size_t i = 0; i < n; i++)
            dy[i] = y[i] < 0 ? alpha * dy[i] : dy[i];
        break;
    case CNN_ACT_ELU: /* x <= 0: alpha exp(x) = y + alpha */
        for (size_t i = 0; i < n; i++)
            dy[i] = y[i] > 0 ? dy[i] : dy[i] * (y[i] + alpha);
        break;
    case CNN_ACT_GELU:  /* the layer's cnn_preact_backward does these */
    case CNN_ACT_SWISH:
    case CNN_ACT_LINEAR:
    default:
        break;
    }
}

size_t cnn_preact_floats(const cnn_layer *l)
{
    return cnn_activation_needs_input(l->act) ? cnn_shape_size(l->out) : 0;
}

cnn_status cnn_preact_reserve(cnn_preact *p, const cnn_layer *l, int max_batch, cnn_error *err)
{
    free(p->x);
    p->x = NULL;
    const size_t n = cnn_preact_floats(l);
    if (!n)
        return CNN_OK;
    if (!(p->x = malloc((size_t)max_batch * n * sizeof *p->x)))
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "layer '%s': out of memory for its pre-activations (%s) of batches "
                             "of up to %d samples",
                             l->name, cnn_activation_names[l->act], max_batch);
    return CNN_OK;
}

void cnn_preact_save(const cnn_preact *p, const cnn_layer *l, const float *out, int B)
{
    if (p->x)
        memcpy(p->x, out, (size_t)B * cnn_shape_size(l->out) * sizeof *p->x);
}

const float *cnn_preact_backward(const cnn_preact *p, const cnn_layer *l, const float *dout,
                                 int B)
{
    if (!p->x)
        return dout;
    cnn_activation_grad_input(l->act, cnn_activation_default_alpha(l->act), p->x, dout, p->x,
                              (size_t)B * cnn_shape_size(l->out));
    return p->x;
}

void cnn_preact_free(cnn_preact *p)
{
    free(p->x);
    p->x = NULL;
}
