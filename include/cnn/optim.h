/* cnn/optim.h - optimizers with Keras's update rules and defaults.
 *
 *   sgd:     v = momentum*v - lr*g; w += v            (nesterov: w += momentum*v - lr*g)
 *   adam:    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *            w -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
 *   rmsprop: v = rho*v + (1-rho)*g^2; w -= lr * g / sqrt(v + eps)   (eps inside, as Keras)
 *
 * weight_decay adds wd*w to the gradient of kernels (not biases) before
 * the update, as torch.optim's weight_decay does.
 * The optimizer owns its moment buffers (one or two of model->nparams).
 */
#ifndef CNN_OPTIM_H
#define CNN_OPTIM_H

#include <stdint.h>

#include "cnn/config.h"
#include "cnn/error.h"
#include "cnn/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CNN_OPT_SGD = 0, CNN_OPT_ADAM, CNN_OPT_RMSPROP, CNN_OPT_COUNT } cnn_optim_type;

extern const char *const cnn_optim_names[];

typedef struct cnn_optim_hparams {
    cnn_optim_type type;
    double lr;
    double momentum; /* sgd */
    int nesterov;    /* sgd */
    double beta1, beta2; /* adam */
    double rho;      /* rmsprop */
    double epsilon;  /* adam, rmsprop */
    double weight_decay;
} cnn_optim_hparams;

typedef struct cnn_optim {
    cnn_optim_hparams hp;
    size_t n;
    int64_t step;    /* updates applied so far */
    float *m;        /* (n) momentum / first moment / (rmsprop) mean square */
    float *v;        /* (n) adam second moment; NULL otherwise */
} cnn_optim;

/* Keras defaults for a type: sgd lr 0.01, adam lr 1e-3 b 0.9/0.999 eps 1e-7,
 * rmsprop lr 1e-3 rho 0.9 eps 1e-7. */
cnn_optim_hparams cnn_optim_defaults(cnn_optim_type t);

/* Reads [optimizer] (type, lr, momentum, nesterov, beta_1, beta_2, rho,
 * epsilon, weight_decay); an absent section gives adam defaults. */
cnn_status cnn_optim_hparams_from_config(cnn_optim_hparams *hp, const cnn_config *cfg,
                                         cnn_error *err);

cnn_status cnn_optim_create(cnn_optim **out, const cnn_optim_hparams *hp, size_t n,
                            cnn_error *err);
void cnn_optim_free(cnn_optim *o);

/* One update of m->params from m->grads (weight decay applied first). */
void cnn_optim_step(cnn_optim *o, cnn_model *m);

/* The same update of only the parameters [lo, hi) of the flat buffer (one
 * rank's shard of the optimizer work); counts as one step. Every update
 * rule is element-wise, so shards updated separately give the same numbers
 * as one full update. */
void cnn_optim_step_range(cnn_optim *o, cnn_model *m, size_t lo, size_t hi);

#ifdef __cplusplus
}
#endif
#endif /* CNN_OPTIM_H */
