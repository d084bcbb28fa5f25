/* cnn/layer.h - what a layer type is made of, for people who write one.
 *
 * A layer type is one ops table (cnn_layer_ops) shared by all layers of
 * that type, in a file of its own, plus one line in the registry
 * (src/engine/layer.c). Building a layer from its config section takes two
 * steps, as Darknet's parse_convolutional / make_convolutional_layer:
 *
 *   parse: section -> the type's parameter struct (every key read and
 *          validated here, messages "FILE:LINE: [section] key: problem");
 *   make:  parameters + input shape -> the layer: output shape, parameter
 *          and buffer tensors (cnn_layer_add_param / cnn_layer_add_buffer),
 *          scratch size and private state. Sizes are computed in size_t with
 *          overflow checks (cnn_size_mul) before any becomes an int; the
 *          model refuses an output of more than INT_MAX values a sample.
 *
 *     typedef struct { long units; } my_params;
 *     static cnn_status my_parse(const cnn_section *s, void *p, cnn_error *err)
 *     {
 *         my_params *mp = p;
 *         return cnn_cfg_int(s, "units", 8, 1, 1 << 20, &mp->units, err);
 *     }
 *     static cnn_status my_make(cnn_layer *l, const void *p, cnn_shape in, cnn_error *err)
 *     {
 *         const my_params *mp = p;
 *         int dims[2] = {in.c, (int)mp->units};
 *         l->out = (cnn_shape){(int)mp->units, 1, 1};
 *         cnn_layer_add_param(l, "kernel", 2, dims, CNN_INIT_GLOROT_UNIFORM, in.c,
 *                             (int)mp->units, 1);
 *         return CNN_OK;
 *     }
 *     const cnn_layer_ops cnn_my_ops = {
 *         .section = "my", .keras_name = "My", .default_name = "my",
 *         .params_size = sizeof(my_params), .parse = my_parse, .make = my_make,
 *         .forward = my_forward, .backward = my_backward,
 *     };
 *
 * The model owns every buffer: parameters, gradients and non-trainable
 * buffers live in its flat arrays, activations in its arena; a layer keeps
 * in l->state only what is its own, and frees it in destroy.
 */
#ifndef CNN_LAYER_H
#define CNN_LAYER_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/config.h"
#include "cnn/error.h"
#include "cnn/tensor.h"
#include "cnn/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNN_ACT_LINEAR = 0,
    CNN_ACT_RELU,
    CNN_ACT_SIGMOID,
    CNN_ACT_TANH,
    CNN_ACT_SOFTMAX,
    /* Keras's definitions; parameters default as Keras 2's layers do
     * (LeakyReLU alpha 0.3, ELU alpha 1.0, GELU exact erf form). */
    CNN_ACT_RELU6,      /* min(max(x, 0), 6) */
    CNN_ACT_LEAKY_RELU, /* x >= 0 ? x : alpha x, alpha 0.3 */
    CNN_ACT_ELU,        /* x > 0 ? x : alpha (exp(x) - 1), alpha 1.0 */
    CNN_ACT_GELU,       /* x Phi(x) = x (1 + erf(x / sqrt 2)) / 2 */
    CNN_ACT_SWISH,      /* x sigmoid(x) */
    CNN_ACT_COUNT
} cnn_activation;

extern const char *const cnn_activation_names[]; /* NULL-terminated, by enum */

typedef enum {
    CNN_INIT_ZEROS = 0,
    CNN_INIT_GLOROT_UNIFORM,
    CNN_INIT_HE_NORMAL,
    CNN_INIT_ONES, /* moving variances */
    CNN_INIT_COUNT
} cnn_init;

extern const char *const cnn_init_names[]; /* NULL-terminated, by enum: "zeros", ... "ones" */

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
    /* model->buffers (non-trainable state, read-only here): a layer finds
     * its own at l->buffers[i].offset (batch_normalization's moving
     * statistics, used when training is 0). */
    const float *buffers;
} cnn_ctx;

static inline void cnn_ctx_poll(const cnn_ctx *c)
{
    if (c->poll)
        c->poll(c->grads_ready_arg);
}

typedef struct cnn_layer cnn_layer;

/* A layer type: one ops table shared by every layer of that type. */
typedef struct cnn_layer_ops {
    const char *section;      /* config section: "conv2d" */
    const char *keras_name;   /* for the summary: "Conv2D" */
    const char *default_name; /* base of automatic names: "conv2d" -> conv2d, conv2d_1 */
    size_t params_size;       /* bytes of the type's parameter struct (0: none) */
    /* Reads and validates the keys of sec into p (params_size bytes, zeroed
     * by the caller). NULL for a type without keys. */
    cnn_status (*parse)(const cnn_section *sec, void *p, cnn_error *err);
    /* Builds layer l (name and index set) from its parameters p and input
     * shape in: sets l->out, l->act, the parameter and buffer tensors,
     * l->scratch_floats, l->cache_floats and l->state. Messages start "layer 'NAME'"; the
     * model puts the section's "FILE:LINE: " in front. */
    cnn_status (*make)(cnn_layer *l, const void *p, cnn_shape in, cnn_error *err);
    /* Allocates what depends on the batch size (caches for backward). May be NULL. */
    cnn_status (*reserve)(cnn_layer *l, int max_batch, cnn_error *err);
    /* out (B, l->out) from in (B, l->in); w = model params at l's offset. */
    void (*forward)(cnn_layer *l, const float *w, const float *in, float *out, int B,
                    const cnn_ctx *ctx);
    /* Given dout = dL/d(out before the activation), accumulates parameter
     * gradients into g and writes dL/d(in) into din unless din is NULL. */
    void (*backward)(cnn_layer *l, const float *w, float *g, const float *in, const float *out,
                     const float *dout, float *din, int B, const cnn_ctx *ctx);
    void (*destroy)(cnn_layer *l); /* frees l->state; may be NULL */
    /* Multi-input layers (add, concatenate). max_inputs 0 or 1: a single
     * input, and forward/backward/make are used; above 1: the layer takes
     * 2 to max_inputs inputs, and make_n/forward_n/backward_n are used
     * instead. in[k] (B, l->in_shape[k]) is the output of the layer's k-th
     * input, shared with every other reader of that tensor (never a copy).
     * backward_n writes dL/d(in[k]) into din[k] (overwriting it) for each k
     * whose din[k] is not NULL; the model adds it up where a tensor has
     * several readers. */
    int max_inputs;
    cnn_status (*make_n)(cnn_layer *l, const void *p, const cnn_shape *in, int nin,
                         cnn_error *err);
    void (*forward_n)(cnn_layer *l, const float *w, const float *const *in, int nin, float *out,
                      int B, const cnn_ctx *ctx);
    void (*backward_n)(cnn_layer *l, const float *w, float *g, const float *const *in, int nin,
                       const float *out, const float *dout, float *const *din, int B,
                       const cnn_ctx *ctx);
    /* Batch statistics (batch_normalization), all NULL for other types;
     * see cnn_model_stats_count in cnn/model.h. stats_count: floats of
     * statistics one training forward call leaves behind (mean and
     * variance per channel); stats_get copies them into out (stats_count
     * floats); stats_update folds `mean` (stats_count doubles: those
     * statistics averaged over a step's forward calls) into the layer's
     * buffers (model->buffers, at l->buffers[i].offset). */
    size_t (*stats_count)(const cnn_layer *l);
    void (*stats_get)(const cnn_layer *l, float *out);
    void (*stats_update)(cnn_layer *l, float *buffers, const double *mean);
    /* Activation folding (cnn_layer.fused_act). fusable_acts: a bit
     * (1u << a) for each activation a that forward can apply to the layer's
     * output itself, and backward take from that output (batch_normalization
     * and add: relu). identity_act: the layer is an identity followed by
     * its l->act ([activation] with a default alpha), so the model may fold
     * it into the layer it reads. */
    unsigned fusable_acts;
    int identity_act;
} cnn_layer_ops;

enum {
    CNN_NAME_MAX = 64,
    CNN_LAYER_MAX_PARAMS = 3,
    CNN_LAYER_MAX_BUFFERS = 4,
    CNN_LAYER_MAX_INPUTS = 16 /* inputs of one layer (a concatenate of 16 tensors) */
};

/* Where a layer's k-th input comes from: the model's input. */
#define CNN_INPUT_MODEL (-1)

/* RNG stream that initialises parameter tensor p of layer i: i*2 + p for
 * the first two, as before layers could have three (so every older model
 * draws the same weights), and a range of its own beyond them. */
static inline uint64_t cnn_layer_init_stream(int i, int p)
{
    return p < 2 ? (uint64_t)i * 2 + (uint64_t)p
                 : ((uint64_t)1 << 40) + (uint64_t)i * CNN_LAYER_MAX_PARAMS + (uint64_t)p;
}

struct cnn_layer {
    const cnn_layer_ops *ops;
    char name[CNN_NAME_MAX];
    int index;              /* position in the model (execution order) */
    cnn_shape in, out;      /* in: the shape of its first (for most layers only) input */
    int ninputs;            /* 1, or 2..ops->max_inputs */
    int input[CNN_LAYER_MAX_INPUTS];        /* index of the layer each input comes from
                                             * (earlier in the model), or CNN_INPUT_MODEL */
    cnn_shape in_shape[CNN_LAYER_MAX_INPUTS]; /* their shapes; in_shape[0] == in */
    cnn_activation act;     /* applied after forward (conv2d, dense) */
    int act_in_forward;     /* 1: forward itself applies act (set by make), the
                             * model does not apply it again */
    cnn_param params[CNN_LAYER_MAX_PARAMS];
    int nparams;            /* number of parameter tensors */
    size_t param_offset;    /* first float of this layer in the model buffers */
    size_t param_count;     /* floats of all its parameter tensors */
    cnn_param buffers[CNN_LAYER_MAX_BUFFERS]; /* non-trainable tensors (moving statistics) */
    int nbuffers;
    size_t scratch_floats;  /* per-call workspace needed (for one batch) */
    size_t cache_floats;    /* per sample: what its reserve() allocates, in floats */
    int max_batch;
    void *state;            /* private to the layer type */
    /* Set by the model when an identity_act layer, the only reader of this
     * layer's output, is folded into it (one of ops->fusable_acts, else
     * CNN_ACT_LINEAR): forward writes the activated output, backward gets
     * it as out and dout = dL/d(activated output). The folded layer has
     * `folded` set: it shares this layer's output and gradient, and the
     * model does not run it. */
    cnn_activation fused_act;
    int folded;
    /* Relu gradients taken by the reader: a layer whose backward can apply
     * the derivative of a relu that made its input (max pooling 2x2 stride
     * 2: the winner of each window is the relu output it passes back to)
     * sets can_mask_relu_din in make. When such a layer is the only reader
     * of a layer with act = relu, the model sets mask_relu_din on the
     * reader (its din is dL/d(pre-relu), 0 where the input is not > 0) and
     * act_grad_by_reader on the producer (the model skips its relu pass in
     * backward): one pass over the producer's output fewer, the same bits. */
    int can_mask_relu_din, mask_relu_din, act_grad_by_reader;
};

/* The registry of layer types, NULL-terminated (src/engine/layer.c). */
extern const cnn_layer_ops *const cnn_layer_types[];
const cnn_layer_ops *cnn_layer_find_type(const char *section);
/* The default_name of the registered type of section ("maxpool2d" ->
 * "max_pooling2d"), or NULL: a cnn_config_namer for cnn_config.layer_base. */
const char *cnn_layer_default_name(const char *section);

/* Declares parameter tensor number l->nparams (kernel or bias). The model
 * assigns offsets after all layers are made. */
void cnn_layer_add_param(cnn_layer *l, const char *name, int ndim, const int *dims, cnn_init init,
                         int fan_in, int fan_out, int decay);

/* Declares buffer number l->nbuffers: a non-trainable tensor (moving
 * statistics), init CNN_INIT_ZEROS or CNN_INIT_ONES. The model assigns
 * offsets into model->buffers after all layers are made. */
void cnn_layer_add_buffer(cnn_layer *l, const char *name, int ndim, const int *dims,
                          cnn_init init);

/* Parsing helpers. */

/* padding = valid | same | N (per side). */
cnn_status cnn_layer_read_padding(const cnn_section *s, cnn_padding_mode *mode, int *amount,
                                  cnn_error *err);

/* activation = linear|relu|sigmoid|tanh|softmax (default linear). */
cnn_status cnn_layer_read_activation(const cnn_section *s, cnn_activation *a, cnn_error *err);

/* kernel_initializer / bias_initializer keys. */
cnn_status cnn_layer_read_init(const cnn_section *s, const char *key, cnn_init def, cnn_init *out,
                               cnn_error *err);

/* Error for a required key that is absent; names a key of the section that
 * nothing has consumed, as it is likely the misspelt one. Call it after
 * reading the layer's optional keys. */
cnn_status cnn_layer_missing(const cnn_section *s, const char *key, const char *example,
                             cnn_error *err);

/* Window of a conv/pool layer as parsed: size, stride, padding. */
typedef struct cnn_window_params {
    int kh, kw, sh, sw;
    cnn_padding_mode mode;
    int amount; /* per side, for CNN_PADDING_EXPLICIT */
} cnn_window_params;

/* Making helper: resolves the window geometry of a conv/pool layer on input
 * `in`; fails with a message naming the layer when the window does not fit. */
cnn_status cnn_layer_window(const cnn_layer *l, const cnn_window_params *wp, cnn_shape in,
                            cnn_window *g, cnn_error *err);

/* Activation applied in place on n floats laid out as rows of `row`
 * (softmax normalises each row). Backward: dx = f'(y) * dy from the
 * output y, in place on dy. */
void cnn_activation_forward(cnn_activation a, float *y, size_t rows, size_t row);
void cnn_activation_backward(cnn_activation a, const float *y, float *dy, size_t rows,
                             size_t row);

/* The parameter of a (alpha of leaky_relu and elu) that `activation = NAME`
 * on conv2d/dense uses; 0 for activations without one. An [activation]
 * layer can set another with its alpha key. */
float cnn_activation_default_alpha(cnn_activation a);

/* 1 for activations whose derivative is not a function of their output
 * (gelu, swish). cnn_activation_backward leaves dy unchanged for them: a
 * layer with such an l->act keeps its output before the activation
 * (cnn_preact) and applies the derivative in its own backward. */
int cnn_activation_needs_input(cnn_activation a);

/* y = f(x) element-wise with parameter alpha (y may be x); not softmax. */
void cnn_activation_apply(cnn_activation a, float alpha, const float *x, float *y, size_t n);

/* dx = f'(x) * dy element-wise from the input x (dx may be dy); not softmax. */
void cnn_activation_grad_input(cnn_activation a, float alpha, const float *x, const float *dy,
                               float *dx, size_t n);

/* The output before the activation, kept by a layer whose l->act needs its
 * input (cnn_activation_needs_input) for backward. A layer type embeds one
 * in its state: in make, after setting l->act and l->out, add
 * cnn_preact_floats(l) to l->cache_floats; reserve, save at the end of
 * forward, and take dout through cnn_preact_backward at the start of
 * backward. Each call does nothing (and costs nothing) for the other
 * activations. */
typedef struct cnn_preact {
    float *x; /* (max_batch, l->out): the pre-activation, then its gradient */
} cnn_preact;

size_t cnn_preact_floats(const cnn_layer *l); /* per sample: out size, or 0 */
cnn_status cnn_preact_reserve(cnn_preact *p, const cnn_layer *l, int max_batch, cnn_error *err);
/* Keeps out (B, l->out) before the model applies l->act. */
void cnn_preact_save(const cnn_preact *p, const cnn_layer *l, const float *out, int B);
/* dout is dL/dy of the activation's output y (the model left it as it is):
 * returns dL/d(pre-activation), computed over the kept copy; or dout itself
 * when l->act does not need its input. */
const float *cnn_preact_backward(const cnn_preact *p, const cnn_layer *l, const float *dout,
                                 int B);
void cnn_preact_free(cnn_preact *p);

#ifdef __cplusplus
}
#endif
#endif /* CNN_LAYER_H */
