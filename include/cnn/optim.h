/* cnn/optim.h - optimizers with Keras's update rules and defaults.
 *
 *   sgd:     v = momentum*v - lr*g; w += v            (nesterov: w += momentum*v - lr*g)
 *   adam:    m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
 *            w -= lr*sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)
 *   rmsprop: v = rho*v + (1-rho)*g^2; w -= lr * g / sqrt(v + eps)   (eps inside, as Keras)
 *
 * weight_decay adds wd*w to the gradient of kernels (not biases) before
 * the update, as torch.optim's weight_decay does.
 *
 * Each optimizer is one entry of an ops table in optim.c (name, state
 * buffers, defaults, config reader, update). The optimizer owns its state
 * buffers, each of model->nparams floats, and names them; whoever saves or
 * exchanges them loops over cnn_optim_nstate() and cnn_optim_state_name():
 *
 *   sgd      0 buffers, or 1 with momentum: "m" (the velocity)
 *   adam     2: "m" (first moment), "v" (second moment)
 *   rmsprop  1: "m" (mean square)
 *
 * Adding an optimizer: a value in cnn_optim_type below, then in optim.c
 * one ops-table entry and its update (and config reader) functions; a new
 * hyper-parameter is also a field of cnn_optim_hparams and one line of
 * cnn_optim_hparam_fields (then checkpoints store it).
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

enum { CNN_OPTIM_MAX_STATE = 2 }; /* state buffers of any optimizer */

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

/* The hyper-parameters a checkpoint stores, one per field of
 * cnn_optim_hparams but type: its name ("beta_1", the [optimizer] key),
 * where it is, and whether it is an int (else a double). Terminated by a
 * NULL name. */
typedef struct cnn_optim_hparam_field {
    const char *name;
    size_t offset; /* in cnn_optim_hparams */
    int is_int;
} cnn_optim_hparam_field;

extern const cnn_optim_hparam_field cnn_optim_hparam_fields[];

typedef struct cnn_optim {
    cnn_optim_hparams hp;
    size_t n;
    int64_t step; /* updates applied so far */
    int nstate;   /* state buffers in use, cnn_optim_nstate() */
    /* (n) each; state[k] is named cnn_optim_state_name(o, k); NULL from nstate on */
    float *state[CNN_OPTIM_MAX_STATE];
} cnn_optim;

/* "sgd", "adam", "rmsprop"; NULL for a value out of range. */
const char *cnn_optim_type_name(cnn_optim_type t);
/* The type called name, or -1 when there is none. */
int cnn_optim_type_from_name(const char *name);

/* Keras defaults for a type: sgd lr 0.01, adam lr 1e-3 b 0.9/0.999 eps 1e-7,
 * rmsprop lr 1e-3 rho 0.9 eps 1e-7 (every type carries all of these
 * values, used or not). */
cnn_optim_hparams cnn_optim_defaults(cnn_optim_type t);

/* Reads [optimizer] (type, lr, weight_decay, then the type's own keys:
 * sgd momentum, nesterov; adam beta_1, beta_2, epsilon; rmsprop rho,
 * epsilon); an absent section gives adam defaults. */
cnn_status cnn_optim_hparams_from_config(cnn_optim_hparams *hp, const cnn_config *cfg,
                                         cnn_error *err);

/* State buffers an optimizer with these hyper-parameters keeps (sgd: 0
 * without momentum, 1 with). */
int cnn_optim_hparams_nstate(const cnn_optim_hparams *hp);

cnn_status cnn_optim_create(cnn_optim **out, const cnn_optim_hparams *hp, size_t n,
                            cnn_error *err);
void cnn_optim_free(cnn_optim *o);

/* Number of state buffers o->state[0 .. nstate) (0, 1 or 2). */
int cnn_optim_nstate(const cnn_optim *o);
/* Name of state buffer k ("m", "v"), the same for every optimizer of o's
 * type; NULL when k is not in [0, cnn_optim_nstate(o)). */
const char *cnn_optim_state_name(const cnn_optim *o, int k);

/* One update of m->params from m->grads (weight decay applied first). */
void cnn_optim_step(cnn_optim *o, cnn_model *m);

/* The same update of only the parameters [lo, hi) of the flat buffer (one
 * rank's shard of the optimizer work); counts as one step. Every update
 * rule is element-wise, so shards updated separately give the same numbers
 * as one full update. */
void cnn_optim_step_range(cnn_optim *o, cnn_model *m, size_t lo, size_t hi);

/* cnn_optim_step_range in two halves, for several threads sharing one
 * update: cnn_optim_count_step counts the step (once), then
 * cnn_optim_update_part updates [lo, hi) at that step. Parts on disjoint
 * ranges may run at the same time; together they give the numbers of one
 * cnn_optim_step_range over their union. */
void cnn_optim_count_step(cnn_optim *o);
void cnn_optim_update_part(const cnn_optim *o, cnn_model *m, size_t lo, size_t hi);

#ifdef __cplusplus
}
#endif
#endif /* CNN_OPTIM_H */
