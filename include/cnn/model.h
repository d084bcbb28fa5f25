/* cnn/model.h - the CNN engine: a network of layers (cnn/layer.h), a
 * sequence or a DAG, and its loss.
 *
 * Tensors are float32, batch-major, channels-first: an activation batch is
 * (B, C, H, W) contiguous; dense activations are (B, N) with C = N, H = W = 1.
 * All parameters of a model live in one contiguous buffer (model->params)
 * and all gradients in another of the same size (model->grads), so a
 * data-parallel step can reduce gradients in a few large calls;
 * non-trainable state (moving statistics) lives in a third
 * (model->buffers), which neither the optimizer nor the reduction touches.
 *
 * A training step:
 *
 *     cnn_batch_stats stats = {0};
 *     cnn_ctx ctx = cnn_model_ctx(m, 1, seed, epoch, sample_ids); // training
 *     cnn_model_zero_grad(m);
 *     cnn_model_forward(m, x, B, &ctx);
 *     if (cnn_model_loss(m, labels, B, 1.0f / global_batch, 1, &stats, &err))
 *         return err.status;                  // a label out of range, or NaN
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
#include "cnn/layer.h"
#include "cnn/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNN_LOSS_SPARSE_CCE = 0, /* integer labels, softmax outputs          */
    CNN_LOSS_CCE,            /* one-hot labels (built from class index)  */
    CNN_LOSS_BCE,            /* one sigmoid output, labels 0/1           */
    CNN_LOSS_MSE,            /* one-hot (or scalar) targets              */
    CNN_LOSS_COUNT
} cnn_loss;

extern const char *const cnn_loss_names[]; /* NULL-terminated, by enum */

typedef struct cnn_model cnn_model;

struct cnn_model {
    int nlayers;
    cnn_layer *layers;      /* (nlayers) */
    cnn_shape input;
    int nclasses;           /* output units (1 for binary) */
    cnn_loss loss;
    /* Keras's label_smoothing of the cross-entropies, in [0, 1): targets
     * y*(1-ls) + ls/K (binary: y*(1-ls) + ls/2); 0 = none. Set by the
     * caller after cnn_model_create ([train] label_smoothing). */
    float label_smoothing;
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
    /* The graph: layers[] are in execution order (every layer after its
     * inputs, layers[i].input[]); the last is the output. A tensor several
     * layers read is read in place by each; its gradient is the sum of
     * theirs, in a fixed order (last reader first). */
    int functional;         /* some section has an `inputs` key: Keras's functional table */
    char input_name[CNN_NAME_MAX]; /* the [input] layer's name */
    unsigned *din_add;      /* (nlayers) bit k: input k's gradient is written to a
                             * temporary and added (its tensor has a later reader) */
    int ntemps;             /* most temporaries one layer's backward needs */
    size_t temp_size;       /* floats a sample of the largest of them */
    float *temps;           /* (ntemps, max_batch, temp_size) */
    char **keys_json;       /* (nlayers) each layer's section keys as a JSON object */
    void **layer_params;    /* (nlayers) each layer's parsed parameters (for workspaces) */
    const cnn_model *owner; /* a workspace (cnn_model_workspace): whose params and buffers
                             * these are; NULL for a model that owns its own */
    /* When set, called before (end 0) and after (end 1) each layer's
     * forward (backward 0) and backward (1): the profiler's timer
     * (cnn_profile_attach in cnn/profile.h). NULL after cnn_model_create;
     * a workspace calls its owner's. */
    void (*layer_hook)(void *arg, int layer, int backward, int end);
    void *layer_hook_arg;
};

/* Builds the network of the layer sections of cfg. The first must be
 * [input]; each layer reads the layer before it, or those its `inputs` key
 * names (a DAG; cycles, unknown names, a layer whose output nothing reads,
 * and inputs of shapes the layer cannot combine are errors naming the
 * file, line and layer). loss is the training loss (it decides whether the final
 * activation is fused with it). Parameters are allocated, not initialised;
 * a section that is neither a singleton (cnn_config_singletons) nor a layer
 * type is an error, and so are parameters that would exceed the memory
 * limit (see cnn_model_reserve) or a layer of more than INT_MAX values a
 * sample (CNN_ERR_SHAPE). */
cnn_status cnn_model_create(cnn_model **out, const cnn_config *cfg, cnn_loss loss,
                            cnn_error *err);
void cnn_model_free(cnn_model *m);

/* The same with the layer types of `types` (NULL-terminated) in place of
 * the registry cnn_layer_types: for testing a layer type before it is
 * registered. */
cnn_status cnn_model_create_types(cnn_model **out, const cnn_config *cfg, cnn_loss loss,
                                  const cnn_layer_ops *const *types, cnn_error *err);

/* A workspace of m for another thread: the same layers made again (their
 * own state, caches and scratch), its own gradient buffer (zeroed), and
 * m's parameters and buffers, shared, not copied (it must not outlive m;
 * m->params must not be reallocated while it lives). Forward and backward
 * on it write only its own memory, so threads may run them on different
 * workspaces of one model at once, each reading the shared parameters.
 * Reserve it (cnn_model_reserve) before use; free it with cnn_model_free. */
cnn_status cnn_model_workspace(cnn_model **out, const cnn_model *m, cnn_error *err);

/* Initialises every parameter from the seed alone (element-wise counter
 * RNG), so any process builds the same weights; sets every buffer from its
 * init (zeros or ones). */
void cnn_model_init_params(cnn_model *m, uint64_t seed);

/* cnn_model_create folds an [activation] into the batch_normalization or
 * add it reads (cnn_layer.fused_act): both layers' outputs are then the
 * activated one. This undoes that, so that every layer's output is its own
 * (cnn-predict --feature-maps), at the cost of the extra passes; the same
 * results. It frees the activations: reserve after it. */
void cnn_model_unfold(cnn_model *m);

/* Allocates activations for batches of up to max_batch samples. Refuses
 * (CNN_ERR_CONFIG, naming the largest layer and the bytes) before
 * allocating when the parameters and these activations would exceed the
 * memory limit: physical memory, or RLIMIT_AS / RLIMIT_DATA when lower. */
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

/* Batch statistics (src/engine/model_stats.c): what the layers that keep
 * them (batch_normalization, through their stats_* ops) measured in the
 * last training forward, for an update of their moving statistics that
 * the trainer takes once per step from all of the step's forward calls:
 *
 *     size_t n = cnn_model_stats_count(m);   // floats; 0: no such layer
 *     // after each training forward of a step (B samples):
 *     cnn_model_stats_get(m, chunk_stats);   // n floats
 *     // ... mean[j] = sum over forwards of B * chunk_stats[j] / sum of B
 *     cnn_model_stats_update(m, mean);       // moving = momentum*moving + (1-momentum)*mean
 *
 * The statistics of the model are the layers' in layer order. */
size_t cnn_model_stats_count(const cnn_model *m);
void cnn_model_stats_get(const cnn_model *m, float *out);
void cnn_model_stats_update(cnn_model *m, const double *mean);
/* Layers that keep batch statistics; *min_hw (may be NULL) gets the
 * smallest H*W among their inputs (values a channel a sample). */
int cnn_model_stats_layers(const cnn_model *m, int *min_hw);

/* Writes a table like Keras's model.summary() into f (a FILE*): the
 * Sequential table, or for a functional model (m->functional) the
 * functional one with its "Connected to" column. */
void cnn_model_summary(const cnn_model *m, void *f);

/* Writes the expanded graph as JSON into f (a FILE*): the input, and for
 * every layer its name, type, Keras class, section keys, inputs, output
 * shape (H, W, C), tensors and parameter counts; then the totals. */
void cnn_model_summary_json(const cnn_model *m, void *f);

#ifdef __cplusplus
}
#endif
#endif /* CNN_MODEL_H */
