/* activation.c - element-wise activations and softmax, forward and backward
 * expressed through the output y, so no pre-activation copy is kept. */
#include <math.h>

#include "cnn/layer.h"

const char *const cnn_activation_names[] = {"linear", "relu", "sigmoid", "tanh", "softmax", NULL};
_Static_assert(sizeof cnn_activation_names / sizeof *cnn_activation_names == CNN_ACT_COUNT + 1,
               "activation name table out of step with cnn_activation");

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

void cnn_activation_forward(cnn_activation a, float *y, size_t rows, size_t row)
{
    size_t n = rows * row;
    switch (a) {
    case CNN_ACT_RELU:
        for (size_t i = 0; i < n; i++)
            y[i] = y[i] < 0 ? 0 : y[i]; /* NaN stays NaN, as in PyTorch */
        break;
    case CNN_ACT_SIGMOID:
        for (size_t i = 0; i < n; i++)
            y[i] = 1.0f / (1.0f + expf(-y[i]));
        break;
    case CNN_ACT_TANH:
        for (size_t i = 0; i < n; i++)
            y[i] = tanhf(y[i]);
        break;
    case CNN_ACT_SOFTMAX:
        for (size_t r = 0; r < rows; r++)
            softmax_row(y + r * row, row);
        break;
    case CNN_ACT_LINEAR:
    default:
        break;
    }
}

void cnn_activation_backward(cnn_activation a, const float *y, float *dy, size_t rows, size_t row)
{
    size_t n = rows * row;
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
    case CNN_ACT_LINEAR:
    default:
        break;
    }
}
