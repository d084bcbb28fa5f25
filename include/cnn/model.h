/* cnn/model.h - the CNN engine: layers, model, loss.
 *
 * Tensors are float32, batch-major, channels-first: an activation batch is
 * (B, C, H, W) contiguous; dense activations are (B, N) with C = N, H = W = 1.
 * All parameters of a model live in one contiguous buffer (model->params)
 * and all gradients in another of the same size (model->grads), so a
 * data-parallel step can reduce gradients in a few large calls.
 *
 * A training step:
 *
 *     cnn_model_zero_grad(m);
 *     const float *y = cnn_model_forward(m, x, B, &ctx);   // ctx.training = 1
 *     cnn_model_loss(m, labels, B, 1.0f / global_batch, &stats);
 *     cnn_model_backward(m, x, B, &ctx);
 *     // (allreduce m->grads here when data-parallel)
 *     cnn_optim_step(opt, m);
 *
 * cnn_model_loss() writes dL/d(output) scaled by `scale` for the batch, so
 * with scale = 1/global_batch the summed gradients of all ranks are the mean
 * gradient of the global batch.
 *
 * The engine knows nothing of MPI or files: it owns its buffers, reports
 * errors through cnn_error and never exits.
 */
#ifndef CNN_MODEL_H
#define CNN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/config.h"
#include "cnn/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_shape {
    int c, h, w;
} cnn_shape;

static inline size_t cnn_shape_size(cnn_shape s) { return (size_t)s.c * s.h * s.w; }

typedef enum {
    CNN_ACT_LINEAR = 0,
    CNN_ACT_RELU,
    CNN_ACT_SIGMOID,
    CNN_ACT_TANH,
    CNN_ACT_SOFTMAX,
    CNN_ACT_COUNT
} cnn_activation;

extern const char *const cnn_activation_names[]; /* NULL-terminated, by enum */

typedef enum {
    CNN_LOSS_SPARSE_CCE = 0, /* integer labels, softmax outputs          */
    CNN_LOSS_CCE,            /* one-hot labels (built from class index)  */
    CNN_LOSS_BCE,            /* one sigmoid output, labels 0/1           */
    CNN_LOSS_MSE,            /* one-hot (or scalar) targets              */
    CNN_LOSS_COUNT
} cnn_loss;

extern const char *const cnn_loss_names[]; /* NULL-terminated, by enum */

typedef enum {
    CNN_INIT_ZEROS = 0,
    CNN_INIT_GLOROT_UNIFORM,
    CNN_INIT_HE_NORMAL,
    CNN_INIT_ONES, /* moving variances */
    CNN_INIT_COUNT
} cnn_init;

extern const char *const cnn_init_names[]; /* NULL-terminated, by enum: "zeros", ... "ones" */

/* Padding of conv and pool layers: explicit amounts per side. "same"
 * follows Keras/TensorFlow: total = max((ceil(n/s)-1)*s + k - n, 0), the
 * extra pixel at the bottom/right. */
typedef struct cnn_pad {
    int top, left, bottom, right;
} cnn_pad;

/* Output length of a convolution or pooling window along one axis:
 * (n + pad_total - k) / s + 1, or 0 if the window does not fit. */
int cnn_conv_out_size(int n, int k, int s, int pad_total);

/* One tensor of a layer, a view into the model's buffers: a parameter
 * (trainable, in model->params / model->grads) or a buffer (non-trainable
 * state, in model->buffers). */
typedef struct cnn_param {
    const char *name; /* "kernel", "bias"; buffers: "moving_mean", ... */
    int ndim;
    int dims[4];      /* conv kernel (Cout, Cin, kH, kW); dense kernel (In, Out); bias (N) */
    size_t count;
    size_t offset;    /* parameters: into model->params / model->grads; buffers: into model->buffers */
    cnn_init init;
    int fan_in, fan_out;
    int decay;        /* weight decay applies (kernels, not biases; never buffers) */
} cnn_param;

/* Per-call context of forward/backward. */
typedef struct cnn_ctx {
    int training;            /* dropout active, layer caches kept for backward */
    uint64_t seed;           /* run seed */
    uint64_t epoch;
    const int64_t *sample_id; /* (B) global index of each sample, for per-sample randomness */
    float *scratch;          /* model-owned workspace, scratch_floats long */
    size_t scratch_floats;
    /* Called by cnn_model_backward() as soon as grads[offset .. nparams)
     * are final (after each layer with parameters, last layer first), so a
     * caller can start reducing them while backward goes on. May be NULL. */
    void (*grads_ready)(void *arg, size_t offset);
    /* Called now and then inside long backward passes (per image in
     * convolutions), so communication started by grads_ready can make
     * progress. May be NULL. Both get grads_ready_arg. */
    void (*poll)(void *arg);
    void *grads_ready_arg;
} cnn_ctx;

static inline void cnn_ctx_poll(const cnn_ctx *c)
{
    if (c->poll)
        c->poll(c->grads_ready_arg);
}

typedef struct cnn_layer cnn_layer;

/* A layer type: one ops table shared by every layer of that type. */
typedef struct cnn_layer_ops {
    const char *section;     /* config section: "conv2d" */
    const char *keras_name;  /* for the summary: "Conv2D" */
    const char *default_name; /* base of automatic names: "conv2d" -> conv2d, conv2d_1 */
    /* Reads the layer's keys from sec, sets l->out, l->params, l->nparams,
     * l->scratch_floats and l->state. in is the input shape. */
    cnn_status (*create)(cnn_layer *l, const cnn_section *sec, cnn_shape in, cnn_error *err);
    /* Allocates what depends on the batch size (caches for backward). */
    cnn_status (*reserve)(cnn_layer *l, int max_batch, cnn_error *err);
    /* out (B, l->out) from in (B, l->in); w = model params at l's offset. */
    void (*forward)(cnn_layer *l, const float *w, const float *in, float *out, int B,
                    const cnn_ctx *ctx);
    /* Given dout = dL/d(out before the activation), accumulates parameter
     * gradients into g and writes dL/d(in) into din unless din is NULL. */
    void (*backward)(cnn_layer *l, const float *w, float *g, const float *in, const float *out,
                     const float *dout, float *din, int B, const cnn_ctx *ctx);
    void (*destroy)(cnn_layer *l);
} cnn_layer_ops;

enum { CNN_NAME_MAX = 64, CNN_LAYER_MAX_PARAMS = 2, CNN_LAYER_MAX_BUFFERS = 4 };

struct cnn_layer {
    const cnn_layer_ops *ops;
    char name[CNN_NAME_MAX];
    int index;              /* position in the model */
    cnn_shape in, out;
    cnn_activation act;     /* applied after forward (conv2d, dense) */
    cnn_param params[CNN_LAYER_MAX_PARAMS];
    int nparams;            /* number of parameter tensors */
    size_t param_offset;    /* first float of this layer in the model buffers */
    size_t param_count;     /* floats of all its parameter tensors */
    cnn_param buffers[CNN_LAYER_MAX_BUFFERS]; /* non-trainable tensors (moving statistics) */
    int nbuffers;
    size_t scratch_floats;  /* per-call workspace needed (for one batch) */
    int max_batch;
    void *state;            /* private to the layer type */
};

/* The registry of layer types, NULL-terminated. */
extern const cnn_layer_ops *const cnn_layer_types[];
const cnn_layer_ops *cnn_layer_find_type(const char *section);

typedef struct cnn_model {
    int nlayers;
    cnn_layer *layers;      /* (nlayers) */
    cnn_shape input;
    int nclasses;           /* output units (1 for binary) */
    cnn_loss loss;
    size_t nparams;         /* total trainable floats */
    float *params;          /* (nparams) */
    float *grads;           /* (nparams) */
    size_t nbuffer_floats;  /* total non-trainable floats */
    float *buffers;         /* (nbuffer_floats) non-trainable state: never touched by the
                             * optimizer, never reduced across ranks */
    int max_batch;
    float **act;            /* act[i]: (max_batch, layers[i].out) output of layer i */
    float **dact;           /* dact[i]: gradient w.r.t. act[i] */
    float *logits;          /* (max_batch, nclasses) last pre-activation, when fused */
    float *scratch;         /* (scratch_floats) */
    size_t scratch_floats;
    int fused_loss;         /* cross-entropy taken on logits; gradient w.r.t. them */
    char name[256];         /* shown by the summary: the config file */
} cnn_model;

/* Builds the network of the layer sections of cfg, in order. The first
 * must be [input]. loss is the training loss (it decides whether the final
 * activation is fused with it). Parameters are allocated, not initialised. */
cnn_status cnn_model_create(cnn_model **out, const cnn_config *cfg, cnn_loss loss,
                            cnn_error *err);
void cnn_model_free(cnn_model *m);

/* Initialises every parameter from the seed alone (element-wise counter
 * RNG), so any process builds the same weights; sets every buffer from its
 * init (zeros or ones). */
void cnn_model_init_params(cnn_model *m, uint64_t seed);

/* Allocates activations for batches of up to max_batch samples. */
cnn_status cnn_model_reserve(cnn_model *m, int max_batch, cnn_error *err);

void cnn_model_zero_grad(cnn_model *m);

/* x: (B, input) floats. Returns the output (B, nclasses), owned by m. */
const float *cnn_model_forward(cnn_model *m, const float *x, int B, const cnn_ctx *ctx);

typedef struct cnn_batch_stats {
    double loss_sum;  /* sum over the batch of per-sample losses */
    long correct;     /* samples whose prediction equals the label */
    long count;
} cnn_batch_stats;

/* Loss and accuracy of the last forward; when grad is nonzero also writes
 * scale * dL/d(output) for backward. labels: (B) class indices. Adds to
 * *stats. Returns CNN_ERR_NUMERIC if the loss is not finite. */
cnn_status cnn_model_loss(cnn_model *m, const int32_t *labels, int B, float scale, int grad,
                          cnn_batch_stats *stats, cnn_error *err);

/* After a forward pass of B samples: probs (B, nclasses) = the class
 * probabilities (the softmax or sigmoid of the last layer; a linear last
 * layer is read as logits: softmax for several units, sigmoid for one with
 * binary cross-entropy). For one unit, the probability of class 1. */
void cnn_model_probabilities(const cnn_model *m, int B, float *probs);

/* Class of each sample from probs: argmax, or p > 0.5 for one unit; *conf
 * (may be NULL) gets the probability of that class. */
void cnn_model_classes(const cnn_model *m, const float *probs, int B, int32_t *cls, float *conf);

/* Backpropagates the gradient left by cnn_model_loss(); adds into grads. */
void cnn_model_backward(cnn_model *m, const float *x, int B, const cnn_ctx *ctx);

/* Adds wd * w to the gradient of every decayed tensor (kernels), for the
 * parameters in [lo, hi) of the flat buffer. */
void cnn_model_add_weight_decay(cnn_model *m, float wd, size_t lo, size_t hi);

/* A ctx whose scratch points at the model's workspace. */
cnn_ctx cnn_model_ctx(const cnn_model *m, int training, uint64_t seed, uint64_t epoch,
                      const int64_t *sample_id);

/* Writes a table like Keras's model.summary() into f (a FILE*). */
void cnn_model_summary(const cnn_model *m, void *f);

/* Activation applied in place on n floats laid out as rows of `row`
 * (softmax normalises each row). Backward: dx = f'(y) * dy from the
 * output y, in place on dy. */
void cnn_activation_forward(cnn_activation a, float *y, size_t rows, size_t row);
void cnn_activation_backward(cnn_activation a, const float *y, float *dy, size_t rows,
                             size_t row);

#ifdef __cplusplus
}
#endif
#endif /* CNN_MODEL_H */
