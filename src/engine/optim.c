/* optim.c - SGD (momentum, Nesterov), Adam and RMSprop over the model's
 * single parameter buffer, with Keras's update rules and defaults.
 *
 * One ops table, indexed by cnn_optim_type, holds all there is to know of
 * an optimizer; everything else (creation, config, checkpoints, the
 * exchange of state between ranks) loops over it. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/optim.h"

/* The updates of adam and rmsprop take a square root and a division per
 * parameter. GCC keeps sqrtf a scalar call unless errno is off for the
 * whole file (-fno-math-errno; a function attribute does not do it), so
 * with AVX those two loops are written with 8-lane intrinsics: the same
 * operations in the same order as the scalar loop that finishes the tail,
 * and IEEE square root, division, products and sums are correctly rounded
 * in a lane as in a scalar (no contraction: CMakeLists.txt), so the
 * numbers are the scalar loop's, bit for bit (test_optim checks it). */
#ifdef __AVX__
#include <immintrin.h>
#endif

/* One optimizer type. */
typedef struct optim_ops {
    const char *name; /* the [optimizer] type and the checkpoint's type attribute */
    /* state buffers used with these hyper-parameters (at most CNN_OPTIM_MAX_STATE) */
    int (*nstate)(const cnn_optim_hparams *hp);
    const char *state_names[CNN_OPTIM_MAX_STATE];
    cnn_optim_hparams defaults; /* Keras's */
    /* the type's own keys of [optimizer] (s may be NULL), over the defaults */
    cnn_status (*read)(cnn_optim_hparams *hp, const cnn_section *s, cnn_error *err);
    /* one update of n parameters w from gradients g, the state buffers
     * st[k] (n each) at the same position; t = updates including this one */
    void (*step)(const cnn_optim_hparams *hp, int64_t t, float *const *st, float *w,
                 const float *g, size_t n);
} optim_ops;

/* ---- sgd ---------------------------------------------------------------- */

static int sgd_nstate(const cnn_optim_hparams *hp) { return hp->momentum != 0; }

static cnn_status sgd_read(cnn_optim_hparams *hp, const cnn_section *s, cnn_error *err)
{
    cnn_status st = cnn_cfg_float(s, "momentum", 0, 0, 1, &hp->momentum, err);
    return st ? st : cnn_cfg_bool(s, "nesterov", 0, &hp->nesterov, err);
}

static void sgd_step(const cnn_optim_hparams *hp, int64_t t, float *const *st, float *w,
                     const float *g, size_t n)
{
    const float lr = (float)hp->lr, mu = (float)hp->momentum;
    float *const om = st[0]; /* (n) velocity, NULL without momentum */
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
}

/* ---- adam --------------------------------------------------------------- */

static int two_states(const cnn_optim_hparams *hp) { return 2; }

static cnn_status adam_read(cnn_optim_hparams *hp, const cnn_section *s, cnn_error *err)
{
    cnn_status st;
    if ((st = cnn_cfg_float(s, "beta_1", hp->beta1, 0, 1, &hp->beta1, err)) ||
        (st = cnn_cfg_float(s, "beta_2", hp->beta2, 0, 1, &hp->beta2, err)))
        return st;
    return cnn_cfg_float(s, "epsilon", hp->epsilon, 0, 1, &hp->epsilon, err);
}

static void adam_step(const cnn_optim_hparams *hp, int64_t t, float *const *st, float *w,
                      const float *g, size_t n)
{
    const float b1 = (float)hp->beta1, b2 = (float)hp->beta2, eps = (float)hp->epsilon;
    float *const om = st[0], *const ov = st[1]; /* (n) first and second moments */
    const double tt = (double)t;
    const float alpha =
        (float)(hp->lr * sqrt(1.0 - pow(hp->beta2, tt)) / (1.0 - pow(hp->beta1, tt)));
    size_t i = 0;
#ifdef __AVX__
    const __m256 c1 = _mm256_set1_ps(1.0f - b1), c2 = _mm256_set1_ps(1.0f - b2),
                 va = _mm256_set1_ps(alpha), ve = _mm256_set1_ps(eps);
    for (; i + 8 <= n; i += 8) {
        const __m256 gi = _mm256_loadu_ps(g + i);
        __m256 m = _mm256_loadu_ps(om + i), v = _mm256_loadu_ps(ov + i);
        m = _mm256_add_ps(m, _mm256_mul_ps(_mm256_sub_ps(gi, m), c1));
        v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(gi, gi), v), c2));
        _mm256_storeu_ps(om + i, m);
        _mm256_storeu_ps(ov + i, v);
        const __m256 d =
            _mm256_div_ps(_mm256_mul_ps(va, m), _mm256_add_ps(_mm256_sqrt_ps(v), ve));
        _mm256_storeu_ps(w + i, _mm256_sub_ps(_mm256_loadu_ps(w + i), d));
    }
#endif
    for (; i < n; i++) {
        om[i] += (g[i] - om[i]) * (1.0f - b1);
        ov[i] += (g[i] * g[i] - ov[i]) * (1.0f - b2);
        w[i] -= alpha * om[i] / (sqrtf(ov[i]) + eps);
    }
}

/* ---- rmsprop ------------------------------------------------------------ */

static int one_state(const cnn_optim_hparams *hp) { return 1; }

static cnn_status rmsprop_read(cnn_optim_hparams *hp, const cnn_section *s, cnn_error *err)
{
    cnn_status st = cnn_cfg_float(s, "rho", hp->rho, 0, 1, &hp->rho, err);
    return st ? st : cnn_cfg_float(s, "epsilon", hp->epsilon, 0, 1, &hp->epsilon, err);
}

static void rmsprop_step(const cnn_optim_hparams *hp, int64_t t, float *const *st, float *w,
                         const float *g, size_t n)
{
    const float lr = (float)hp->lr, rho = (float)hp->rho, eps = (float)hp->epsilon;
    float *const om = st[0]; /* (n) mean square */
    size_t i = 0;
#ifdef __AVX__
    const __m256 vr = _mm256_set1_ps(rho), vr1 = _mm256_set1_ps(1.0f - rho),
                 vl = _mm256_set1_ps(lr), ve = _mm256_set1_ps(eps);
    for (; i + 8 <= n; i += 8) {
        const __m256 gi = _mm256_loadu_ps(g + i);
        const __m256 m = _mm256_add_ps(_mm256_mul_ps(vr, _mm256_loadu_ps(om + i)),
                                       _mm256_mul_ps(_mm256_mul_ps(vr1, gi), gi));
        _mm256_storeu_ps(om + i, m);
        const __m256 d = _mm256_div_ps(_mm256_mul_ps(vl, gi), _mm256_sqrt_ps(_mm256_add_ps(m, ve)));
        _mm256_storeu_ps(w + i, _mm256_sub_ps(_mm256_loadu_ps(w + i), d));
    }
#endif
    for (; i < n; i++) {
        om[i] = rho * om[i] + (1.0f - rho) * g[i] * g[i];
        w[i] -= lr * g[i] / sqrtf(om[i] + eps);
    }
}

/* ---- the table ---------------------------------------------------------- */

/* Every type carries all of Keras's values, used or not (a checkpoint
 * stores them all). */
#define KERAS_DEFAULTS(t, learning_rate)                                                         \
    {.type = t, .lr = learning_rate, .beta1 = 0.9, .beta2 = 0.999, .rho = 0.9, .epsilon = 1e-7}

static const optim_ops optim_table[] = {
    [CNN_OPT_SGD] = {"sgd", sgd_nstate, {"m"}, KERAS_DEFAULTS(CNN_OPT_SGD, 0.01), sgd_read,
                     sgd_step},
    [CNN_OPT_ADAM] = {"adam", two_states, {"m", "v"}, KERAS_DEFAULTS(CNN_OPT_ADAM, 1e-3),
                      adam_read, adam_step},
    [CNN_OPT_RMSPROP] = {"rmsprop", one_state, {"m"}, KERAS_DEFAULTS(CNN_OPT_RMSPROP, 1e-3),
                         rmsprop_read, rmsprop_step},
};
_Static_assert(sizeof optim_table / sizeof *optim_table == CNN_OPT_COUNT,
               "optimizer ops table out of step with cnn_optim_type");

const cnn_optim_hparam_field cnn_optim_hparam_fields[] = {
    {"lr", offsetof(cnn_optim_hparams, lr), 0},
    {"momentum", offsetof(cnn_optim_hparams, momentum), 0},
    {"nesterov", offsetof(cnn_optim_hparams, nesterov), 1},
    {"beta_1", offsetof(cnn_optim_hparams, beta1), 0},
    {"beta_2", offsetof(cnn_optim_hparams, beta2), 0},
    {"rho", offsetof(cnn_optim_hparams, rho), 0},
    {"epsilon", offsetof(cnn_optim_hparams, epsilon), 0},
    {"weight_decay", offsetof(cnn_optim_hparams, weight_decay), 0},
    {NULL, 0, 0},
};

const char *cnn_optim_type_name(cnn_optim_type t)
{
    return t >= 0 && t < CNN_OPT_COUNT ? optim_table[t].name : NULL;
}

int cnn_optim_type_from_name(const char *name)
{
    for (int t = 0; t < CNN_OPT_COUNT; t++)
        if (strcmp(optim_table[t].name, name) == 0)
            return t;
    return -1;
}

cnn_optim_hparams cnn_optim_defaults(cnn_optim_type t) { return optim_table[t].defaults; }

cnn_status cnn_optim_hparams_from_config(cnn_optim_hparams *hp, const cnn_config *cfg,
                                         cnn_error *err)
{
    const cnn_section *s = cnn_config_find(cfg, "optimizer");
    const char *names[CNN_OPT_COUNT + 1] = {NULL};
    for (int t = 0; t < CNN_OPT_COUNT; t++)
        names[t] = optim_table[t].name;
    int type;
    cnn_status st = cnn_cfg_enum(s, "type", CNN_OPT_ADAM, names, &type, err);
    if (st)
        return st;
    *hp = cnn_optim_defaults((cnn_optim_type)type);
    if ((st = cnn_cfg_float(s, "lr", hp->lr, 0, 1e3, &hp->lr, err)) ||
        (st = cnn_cfg_float(s, "weight_decay", 0, 0, 1, &hp->weight_decay, err)))
        return st;
    return optim_table[type].read(hp, s, err);
}

int cnn_optim_hparams_nstate(const cnn_optim_hparams *hp) { return optim_table[hp->type].nstate(hp); }

cnn_status cnn_optim_create(cnn_optim **out, const cnn_optim_hparams *hp, size_t n, cnn_error *err)
{
    *out = NULL;
    cnn_optim *o = calloc(1, sizeof *o);
    if (!o)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the optimizer");
    o->hp = *hp;
    o->n = n;
    o->nstate = cnn_optim_hparams_nstate(hp);
    for (int k = 0; k < o->nstate; k++)
        if (!(o->state[k] = calloc(n ? n : 1, sizeof *o->state[k]))) {
            cnn_optim_free(o);
            return cnn_error_set(err, CNN_ERR_NOMEM,
                                 "out of memory for optimizer state (%d x %zu floats)",
                                 cnn_optim_hparams_nstate(hp), n);
        }
    *out = o;
    return CNN_OK;
}

void cnn_optim_free(cnn_optim *o)
{
    if (!o)
        return;
    for (int k = 0; k < CNN_OPTIM_MAX_STATE; k++)
        free(o->state[k]);
    free(o);
}

int cnn_optim_nstate(const cnn_optim *o) { return o->nstate; }

const char *cnn_optim_state_name(const cnn_optim *o, int k)
{
    return k >= 0 && k < o->nstate ? optim_table[o->hp.type].state_names[k] : NULL;
}

void cnn_optim_step(cnn_optim *o, cnn_model *model) { cnn_optim_step_range(o, model, 0, o->n); }

void cnn_optim_step_range(cnn_optim *o, cnn_model *model, size_t lo, size_t hi)
{
    cnn_optim_count_step(o);
    cnn_optim_update_part(o, model, lo, hi);
}

void cnn_optim_count_step(cnn_optim *o) { o->step++; }

/* The update goes a block of this many parameters at a time, the next
 * block's parameters fetched for writing first. When the ranks of a node
 * share one copy of the parameters (the stepper's window), the lines of a
 * rank's shard sit in the other cores' caches, read by their last step, and
 * each store would first wait to take its line from them. fashion_cnn at
 * np 2, the update of a rank's shard: 91-98 us without the prefetches,
 * 46-58 us with them, as with parameters of its own (cnn-bench, hierarchical). */
#define UPDATE_BLOCK 256

void cnn_optim_update_part(const cnn_optim *o, cnn_model *model, size_t lo, size_t hi)
{
    if (hi > o->n)
        hi = o->n;
    if (lo > hi)
        lo = hi;
    const optim_ops *ops = &optim_table[o->hp.type];
    float *st[CNN_OPTIM_MAX_STATE] = {NULL};
    for (size_t a = lo; a < hi; a += UPDATE_BLOCK) {
        const size_t b = hi - a < UPDATE_BLOCK ? hi : a + UPDATE_BLOCK;
        const size_t next = b + UPDATE_BLOCK < hi ? b + UPDATE_BLOCK : hi;
        for (size_t i = b; i < next; i += 64 / sizeof(float))
            __builtin_prefetch(model->params + i, 1, 3);
        /* element-wise: the same numbers as one call over [lo, hi) */
        for (int k = 0; k < o->nstate; k++)
            st[k] = o->state[k] + a;
        cnn_model_add_weight_decay(model, (float)o->hp.weight_decay, a, b);
        ops->step(&o->hp, o->step, st, model->params + a, model->grads + a, b - a);
    }
}
