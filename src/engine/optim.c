/* optim.c - SGD (momentum, Nesterov), Adam and RMSprop over the model's
 * single parameter buffer, with Keras's update rules and defaults. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/optim.h"

const char *const cnn_optim_names[] = {"sgd", "adam", "rmsprop", NULL};
_Static_assert(sizeof cnn_optim_names / sizeof *cnn_optim_names == CNN_OPT_COUNT + 1,
               "optimizer name table out of step with cnn_optim_type");

cnn_optim_hparams cnn_optim_defaults(cnn_optim_type t)
{
    cnn_optim_hparams hp = {.type = t, .beta1 = 0.9, .beta2 = 0.999, .rho = 0.9, .epsilon = 1e-7};
    hp.lr = t == CNN_OPT_SGD ? 0.01 : 1e-3;
    return hp;
}

cnn_status cnn_optim_hparams_from_config(cnn_optim_hparams *hp, const cnn_config *cfg,
                                         cnn_error *err)
{
    const cnn_section *s = cnn_config_find(cfg, "optimizer");
    int type;
    cnn_status st = cnn_cfg_enum(s, "type", CNN_OPT_ADAM, cnn_optim_names, &type, err);
    if (st)
        return st;
    *hp = cnn_optim_defaults((cnn_optim_type)type);
    if ((st = cnn_cfg_float(s, "lr", hp->lr, 0, 1e3, &hp->lr, err)) ||
        (st = cnn_cfg_float(s, "weight_decay", 0, 0, 1, &hp->weight_decay, err)))
        return st;
    switch (hp->type) {
    case CNN_OPT_SGD:
        if ((st = cnn_cfg_float(s, "momentum", 0, 0, 1, &hp->momentum, err)) ||
            (st = cnn_cfg_bool(s, "nesterov", 0, &hp->nesterov, err)))
            return st;
        break;
    case CNN_OPT_ADAM:
        if ((st = cnn_cfg_float(s, "beta_1", hp->beta1, 0, 1, &hp->beta1, err)) ||
            (st = cnn_cfg_float(s, "beta_2", hp->beta2, 0, 1, &hp->beta2, err)) ||
            (st = cnn_cfg_float(s, "epsilon", hp->epsilon, 0, 1, &hp->epsilon, err)))
            return st;
        break;
    case CNN_OPT_RMSPROP:
        if ((st = cnn_cfg_float(s, "rho", hp->rho, 0, 1, &hp->rho, err)) ||
            (st = cnn_cfg_float(s, "epsilon", hp->epsilon, 0, 1, &hp->epsilon, err)))
            return st;
        break;
    default:
        break;
    }
    return CNN_OK;
}

cnn_status cnn_optim_create(cnn_optim **out, const cnn_optim_hparams *hp, size_t n, cnn_error *err)
{
    *out = NULL;
    cnn_optim *o = calloc(1, sizeof *o);
    if (!o)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the optimizer");
    o->hp = *hp;
    o->n = n;
    int need_m = hp->type != CNN_OPT_SGD || hp->momentum != 0;
    if (need_m && !(o->m = calloc(n ? n : 1, sizeof *o->m)))
        goto nomem;
    if (hp->type == CNN_OPT_ADAM && !(o->v = calloc(n ? n : 1, sizeof *o->v)))
        goto nomem;
    *out = o;
    return CNN_OK;
nomem:
    cnn_optim_free(o);
    return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for optimizer state (%zu floats)", n);
}

void cnn_optim_free(cnn_optim *o)
{
    if (!o)
        return;
    free(o->m);
    free(o->v);
    free(o);
}

void cnn_optim_step(cnn_optim *o, cnn_model *model) { cnn_optim_step_range(o, model, 0, o->n); }

void cnn_optim_step_range(cnn_optim *o, cnn_model *model, size_t lo, size_t hi)
{
    const cnn_optim_hparams *hp = &o->hp;
    if (hi > o->n)
        hi = o->n;
    if (lo > hi)
        lo = hi;
    /* the loops below run over [0, n) of buffers that start at lo */
    float *w = model->params + lo;
    const float *g = model->grads + lo;
    float *const om = o->m ? o->m + lo : NULL, *const ov = o->v ? o->v + lo : NULL;
    const size_t n = hi - lo;
    const float lr = (float)hp->lr;
    cnn_model_add_weight_decay(model, (float)hp->weight_decay, lo, hi);
    o->step++;
    switch (hp->type) {
    case CNN_OPT_SGD: {
        const float mu = (float)hp->momentum;
        if (!om) {
            for (size_t i = 0; i < n; i++)
                w[i] -= lr * g[i];
        } else if (hp->nesterov) {
            for (size_t i = 0; i < n; i++) {
                om[i] = mu * om[i] - lr * g[i];
                w[i] += mu * om[i] - lr * g[i];
            }
        } else {
            for (size_t i = 0; i < n; i++) {
                om[i] = mu * om[i] - lr * g[i];
                w[i] += om[i];
            }
        }
        break;
    }
    case CNN_OPT_ADAM: {
        const float b1 = (float)hp->beta1, b2 = (float)hp->beta2, eps = (float)hp->epsilon;
        const double t = (double)o->step;
        const float alpha =
            (float)(hp->lr * sqrt(1.0 - pow(hp->beta2, t)) / (1.0 - pow(hp->beta1, t)));
        for (size_t i = 0; i < n; i++) {
            om[i] += (g[i] - om[i]) * (1.0f - b1);
            ov[i] += (g[i] * g[i] - ov[i]) * (1.0f - b2);
            w[i] -= alpha * om[i] / (sqrtf(ov[i]) + eps);
        }
        break;
    }
    case CNN_OPT_RMSPROP: {
        const float rho = (float)hp->rho, eps = (float)hp->epsilon;
        for (size_t i = 0; i < n; i++) {
            om[i] = rho * om[i] + (1.0f - rho) * g[i] * g[i];
            w[i] -= lr * g[i] / sqrtf(om[i] + eps);
        }
        break;
    }
    default:
        break;
    }
}
