/* model.c - a sequential network: building from the config, parameter
 * buffers, forward, loss, backward and the summary table. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cnn/model.h"
#include "cnn/rng.h"

extern const cnn_layer_ops cnn_input_ops; /* layer.c: [input] sets the model's input shape */

const char *const cnn_loss_names[] = {"sparse_categorical_crossentropy",
                                      "categorical_crossentropy", "binary_crossentropy",
                                      "mean_squared_error", NULL};
_Static_assert(sizeof cnn_loss_names / sizeof *cnn_loss_names == CNN_LOSS_COUNT + 1,
               "loss name table out of step with cnn_loss");

/* 1234567 -> "1,234,567" */
static const char *commas(size_t v, char *buf, size_t n)
{
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%zu", v), o = 0;
    for (int i = 0; i < len && (size_t)o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = 0;
    return buf;
}

/* The memory this process may use, in bytes, and what sets it: physical
 * memory, or RLIMIT_AS / RLIMIT_DATA when lower. Linux overcommits, so an
 * allocation beyond it may succeed and the process be killed on touching
 * it; needs are compared with this before anything is allocated. */
static size_t memory_limit(const char **what)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    size_t limit = SIZE_MAX;
    *what = "memory";
    if (pages > 0 && page > 0 && !cnn_size_mul((size_t)pages, (size_t)page, &limit))
        limit = SIZE_MAX;
    if (pages > 0 && page > 0)
        *what = "physical memory";
    static const struct {
        int resource;
        const char *name;
    } rl[] = {{RLIMIT_AS, "RLIMIT_AS (ulimit -v)"}, {RLIMIT_DATA, "RLIMIT_DATA (ulimit -d)"}};
    for (size_t i = 0; i < sizeof rl / sizeof *rl; i++) {
        struct rlimit r;
        if (getrlimit(rl[i].resource, &r) == 0 && r.rlim_cur != RLIM_INFINITY &&
            r.rlim_cur < limit) {
            limit = (size_t)r.rlim_cur;
            *what = rl[i].name;
        }
    }
    return limit;
}

/* Error unless need bytes fit the memory limit; what_for says for what
 * ("the parameters", ...), largest names the layer that needs most. */
static cnn_status check_memory(const cnn_model *m, int ok, size_t need, const char *what_for,
                               const cnn_layer *largest, size_t largest_bytes, cnn_error *err)
{
    const char *what;
    size_t limit = memory_limit(&what);
    if (ok && need <= limit)
        return CNN_OK;
    char a[48], b[32], c[32];
    if (!ok)
        snprintf(a, sizeof a, "more than %s", commas(SIZE_MAX, c, sizeof c));
    else
        commas(need, a, sizeof a);
    return cnn_error_set(err, CNN_ERR_CONFIG,
                         "%s: %s need %s bytes, more than the %s bytes of %s; the largest layer "
                         "is '%s' (%s bytes)",
                         m->name, what_for, a, commas(limit, b, sizeof b), what,
                         largest ? largest->name : "?", commas(largest_bytes, c, sizeof c));
}

/* The type of section s among types (NULL-terminated), or NULL. */
static const cnn_layer_ops *find_type(const cnn_layer_ops *const *types, const cnn_section *s)
{
    for (int i = 0; types[i]; i++)
        if (strcmp(types[i]->section, s->name) == 0)
            return types[i];
    return NULL;
}

/* The error for a section that is neither a singleton nor one of types:
 * "FILE:LINE: unknown section [x] (expected data, ..., checkpoint or a
 * layer: input, conv2d, ...)". */
static cnn_status unknown_section(const cnn_section *s, const cnn_layer_ops *const *types,
                                  cnn_error *err)
{
    char list[320] = "";
    size_t n = 0;
    for (int i = 0; cnn_config_singletons[i] && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "",
                              cnn_config_singletons[i]);
    for (int i = 0; types[i] && n < sizeof list; i++)
        n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : " or a layer: ",
                              types[i]->section);
    return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: unknown section [%s] (expected %s)",
                         s->cfg->path, s->line, s->name, list);
}

/* Parses section s into the type's parameters, then makes layer l from
 * them on input `in`; make's messages get the section's file:line. */
static cnn_status build_layer(cnn_layer *l, const cnn_section *s, cnn_shape in, cnn_error *err)
{
    const cnn_layer_ops *ops = l->ops;
    void *params = calloc(1, ops->params_size ? ops->params_size : 1);
    if (!params)
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    cnn_status st = ops->parse ? ops->parse(s, params, err) : CNN_OK;
    if (st == CNN_OK && (st = ops->make(l, params, in, err)) && err) {
        char msg[CNN_ERROR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", err->msg);
        cnn_error_set(err, st, "%s:%d: %s", s->cfg->path, s->line, msg);
    }
    free(params);
    /* Layers index a sample's values with int: refuse what does not fit. */
    size_t n = 0, bytes;
    if (st == CNN_OK && (!cnn_shape_size_checked(l->out, &n) || n > INT_MAX)) {
        char a[32], b[32], c[32];
        int ok = n && cnn_size_mul(n, sizeof(float), &bytes);
        st = cnn_error_set(err, CNN_ERR_SHAPE,
                           "%s:%d: layer '%s' (%s) outputs %dx%dx%d = %s values (%s bytes) a "
                           "sample; a layer holds at most %s values a sample",
                           s->cfg->path, s->line, l->name, ops->section, l->out.h, l->out.w,
                           l->out.c, n ? commas(n, a, sizeof a) : "too many",
                           ok ? commas(bytes, b, sizeof b) : "too many",
                           commas(INT_MAX, c, sizeof c));
    }
    return st;
}

/* Checks that the final activation suits the loss; decides fusion. */
static cnn_status check_head(cnn_model *m, cnn_error *err)
{
    const cnn_layer *last = &m->layers[m->nlayers - 1];
    const char *lname = cnn_loss_names[m->loss];
    if (last->out.h != 1 || last->out.w != 1)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "the last layer '%s' outputs (%d, %d, %d); a classifier ends with "
                             "[flatten] and a [dense] layer",
                             last->name, last->out.h, last->out.w, last->out.c);
    switch (m->loss) {
    case CNN_LOSS_SPARSE_CCE:
    case CNN_LOSS_CCE:
        if (last->act != CNN_ACT_SOFTMAX && last->act != CNN_ACT_LINEAR)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "loss %s needs the last layer '%s' to use activation = softmax "
                                 "(or linear for logits), not %s",
                                 lname, last->name, cnn_activation_names[last->act]);
        if (m->nclasses < 2)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "loss %s needs at least 2 output units; layer '%s' has %d (use "
                                 "binary_crossentropy for one sigmoid unit)",
                                 lname, last->name, m->nclasses);
        m->fused_loss = 1;
        break;
    case CNN_LOSS_BCE:
        if (m->nclasses != 1 || (last->act != CNN_ACT_SIGMOID && last->act != CNN_ACT_LINEAR))
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "loss %s needs the last layer '%s' to have units = 1 and "
                                 "activation = sigmoid (or linear for logits)",
                                 lname, last->name);
        m->fused_loss = 1;
        break;
    default:
        m->fused_loss = 0;
    }
    return CNN_OK;
}

/* 64-byte aligned for the vector units, zeroed; at least one float. */
static float *alloc_floats(size_t n)
{
    size_t bytes = ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes);
    if (p)
        memset(p, 0, bytes);
    return p;
}

/* Bytes a model holds apart from batches: params and grads, buffers. */
static int tensor_bytes(size_t nparams, size_t nbuffers, size_t *bytes)
{
    size_t floats;
    return cnn_size_mul(nparams, 2, &floats) &&
           !__builtin_add_overflow(floats, nbuffers, &floats) &&
           cnn_size_mul(floats, sizeof(float), bytes);
}

/* Assigns every parameter and buffer its offset, then allocates params,
 * grads and buffers, once they are known to fit in memory. */
static cnn_status alloc_tensors(cnn_model *m, cnn_error *err)
{
    size_t off = 0, boff = 0, largest_bytes = 0;
    const cnn_layer *largest = NULL;
    int ok = 1;
    for (int i = 0; i < m->nlayers; i++) {
        cnn_layer *l = &m->layers[i];
        size_t lp = 0, lb = 0, bytes = SIZE_MAX;
        l->param_offset = off;
        for (int p = 0; p < l->nparams; p++) {
            l->params[p].offset = off + lp;
            ok = ok && !__builtin_add_overflow(lp, l->params[p].count, &lp);
        }
        for (int b = 0; b < l->nbuffers; b++) {
            l->buffers[b].offset = boff + lb;
            ok = ok && !__builtin_add_overflow(lb, l->buffers[b].count, &lb);
        }
        ok = ok && !__builtin_add_overflow(off, lp, &off) &&
             !__builtin_add_overflow(boff, lb, &boff);
        if (!ok || !tensor_bytes(lp, lb, &bytes) || bytes > largest_bytes) {
            largest = l;
            largest_bytes = bytes;
        }
        if (!ok)
            break;
    }
    size_t need = 0;
    ok = ok && tensor_bytes(off, boff, &need);
    cnn_status st = check_memory(m, ok, need, "its parameters, their gradients and buffers",
                                 largest, largest_bytes, err);
    if (st)
        return st;
    m->nparams = off;
    m->nbuffer_floats = boff;
    m->params = alloc_floats(off);
    m->grads = alloc_floats(off);
    m->buffers = alloc_floats(boff);
    if (!m->params || !m->grads || !m->buffers)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for %zu parameters", off);
    return CNN_OK;
}

cnn_status cnn_model_create(cnn_model **out, const cnn_config *cfg, cnn_loss loss, cnn_error *err)
{
    return cnn_model_create_types(out, cfg, loss, cnn_layer_types, err);
}

cnn_status cnn_model_create_types(cnn_model **out, const cnn_config *cfg, cnn_loss loss,
                                  const cnn_layer_ops *const *types, cnn_error *err)
{
    *out = NULL;
    cnn_model *m = calloc(1, sizeof *m);
    int nlayer_sections = 0;
    for (int i = 0; i < cfg->nsec; i++)
        nlayer_sections += find_type(types, &cfg->sec[i]) != NULL;
    if (!m || !(m->layers = calloc((size_t)nlayer_sections + 1, sizeof *m->layers))) {
        free(m);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory building the model");
    }
    m->loss = loss;
    snprintf(m->name, sizeof m->name, "%s", cfg->path);
    cnn_status st = CNN_OK;
    int have_input = 0;
    cnn_shape cur = {0, 0, 0};
    for (int i = 0; i < cfg->nsec && st == CNN_OK; i++) {
        const cnn_section *s = &cfg->sec[i];
        const cnn_layer_ops *ops = find_type(types, s);
        if (!ops && !cnn_config_is_singleton(s->name)) {
            st = unknown_section(s, types, err);
            break;
        }
        if (!ops)
            continue;
        if (!have_input && ops != &cnn_input_ops) {
            st = cnn_error_set(err, CNN_ERR_CONFIG,
                               "%s:%d: [%s] comes before [input]; the network must start with "
                               "[input] shape = HxWxC",
                               cfg->path, s->line, s->name);
            break;
        }
        cnn_layer *l = &m->layers[m->nlayers];
        l->ops = ops;
        l->index = m->nlayers;
        const char *name;
        if ((st = cnn_cfg_string(s, "name", NULL, &name, err)))
            break;
        if (name)
            snprintf(l->name, sizeof l->name, "%s", name);
        else if (s->ordinal == 0)
            snprintf(l->name, sizeof l->name, "%s", ops->default_name);
        else
            snprintf(l->name, sizeof l->name, "%s_%d", ops->default_name, s->ordinal);
        if (ops == &cnn_input_ops) {
            if (have_input) {
                st = cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: a second [input] section",
                                   cfg->path, s->line);
                break;
            }
            if ((st = build_layer(l, s, cur, err)))
                break;
            have_input = 1;
            m->input = cur = l->out;
            memset(l, 0, sizeof *l);
            continue;
        }
        for (int k = 0; k < m->nlayers; k++)
            if (strcmp(m->layers[k].name, l->name) == 0) {
                st = cnn_error_set(err, CNN_ERR_CONFIG,
                                   "%s:%d: layer name '%s' is used twice; give each layer its own "
                                   "name",
                                   cfg->path, s->line, l->name);
                break;
            }
        if (st)
            break;
        l->in = cur;
        m->nlayers++; /* so that destroy runs on partial state */
        if ((st = build_layer(l, s, cur, err)))
            break;
        if (l->act == CNN_ACT_SOFTMAX && (l->out.h != 1 || l->out.w != 1))
            st = cnn_error_set(err, CNN_ERR_CONFIG,
                               "%s:%d: layer '%s': softmax needs a flat output (use it on dense)",
                               cfg->path, s->line, l->name);
        cur = l->out;
    }
    if (st == CNN_OK && !have_input)
        st = cnn_error_set(err, CNN_ERR_CONFIG, "%s: no [input] section (e.g. shape = 28x28x1)",
                           cfg->path);
    if (st == CNN_OK && m->nlayers == 0)
        st = cnn_error_set(err, CNN_ERR_CONFIG, "%s: the network has no layers after [input]",
                           cfg->path);
    if (st == CNN_OK) {
        m->nclasses = (int)cnn_shape_size(m->layers[m->nlayers - 1].out);
        st = check_head(m, err);
    }
    if (st == CNN_OK)
        st = alloc_tensors(m, err);
    if (st) {
        cnn_model_free(m);
        return st;
    }
    *out = m;
    return CNN_OK;
}

static void free_batch_buffers(cnn_model *m)
{
    if (m->act)
        for (int i = 0; i < m->nlayers; i++)
            free(m->act[i]);
    if (m->dact)
        for (int i = 0; i < m->nlayers; i++)
            free(m->dact[i]);
    free(m->act);
    free(m->dact);
    free(m->logits);
    free(m->scratch);
    m->act = m->dact = NULL;
    m->logits = m->scratch = NULL;
    m->max_batch = 0;
}

void cnn_model_free(cnn_model *m)
{
    if (!m)
        return;
    free_batch_buffers(m);
    for (int i = 0; i < m->nlayers; i++)
        if (m->layers[i].ops->destroy)
            m->layers[i].ops->destroy(&m->layers[i]);
    free(m->layers);
    free(m->params);
    free(m->grads);
    free(m->buffers);
    free(m);
}

/* Bytes of the batch buffers of layer l for batches of B: its output and
 * the gradient w.r.t. it, and its own caches. Returns 0 on overflow. */
static int layer_batch_bytes(const cnn_layer *l, int B, size_t *bytes)
{
    size_t per;
    *bytes = SIZE_MAX;
    return cnn_size_mul(cnn_shape_size(l->out), 2, &per) &&
           !__builtin_add_overflow(per, l->cache_floats, &per) &&
           cnn_size_mul(per, (size_t)B, &per) && cnn_size_mul(per, sizeof(float), bytes);
}

cnn_status cnn_model_reserve(cnn_model *m, int max_batch, cnn_error *err)
{
    if (max_batch <= m->max_batch)
        return CNN_OK;
    /* What the model will hold: compared with the memory limit first. */
    size_t need = 0, scratch = 1, largest_bytes = 0, bytes;
    const cnn_layer *largest = NULL;
    int ok = tensor_bytes(m->nparams, m->nbuffer_floats, &need);
    for (int i = 0; ok && i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        if (!(ok = layer_batch_bytes(l, max_batch, &bytes)) || bytes > largest_bytes) {
            largest = l;
            largest_bytes = ok ? bytes : SIZE_MAX;
        }
        ok = ok && !__builtin_add_overflow(need, bytes, &need);
        if (l->scratch_floats > scratch)
            scratch = l->scratch_floats;
    }
    ok = ok && cnn_size_mul((size_t)max_batch * (size_t)m->nclasses + scratch, sizeof(float),
                            &bytes) &&
         !__builtin_add_overflow(need, bytes, &need);
    char what_for[160];
    snprintf(what_for, sizeof what_for,
             "its parameters and the activations of batches of up to %d samples (the larger of "
             "the training batch per rank and the evaluation batch)",
             max_batch);
    cnn_status st = check_memory(m, ok, need, what_for, largest, largest_bytes, err);
    if (st)
        return st;
    free_batch_buffers(m);
    m->act = calloc((size_t)m->nlayers, sizeof *m->act);
    m->dact = calloc((size_t)m->nlayers, sizeof *m->dact);
    const cnn_layer *failed = NULL;
    if (!m->act || !m->dact)
        failed = &m->layers[0];
    m->scratch_floats = scratch;
    for (int i = 0; !failed && i < m->nlayers; i++) {
        cnn_layer *l = &m->layers[i];
        size_t n = (size_t)max_batch * cnn_shape_size(l->out);
        if (!(m->act[i] = malloc(n * sizeof(float))) || !(m->dact[i] = malloc(n * sizeof(float))))
            failed = l;
    }
    if (!failed && (!(m->logits = malloc((size_t)max_batch * m->nclasses * sizeof(float))) ||
                    !(m->scratch = malloc(m->scratch_floats * sizeof(float)))))
        failed = &m->layers[m->nlayers - 1];
    if (failed) {
        char num[32];
        layer_batch_bytes(failed, max_batch, &bytes);
        free_batch_buffers(m);
        return cnn_error_set(err, CNN_ERR_NOMEM,
                             "%s: out of memory for the activations of batches of up to %d "
                             "samples (the larger of the training batch per rank and the "
                             "evaluation batch): layer '%s' needs %s bytes",
                             m->name, max_batch, failed->name, commas(bytes, num, sizeof num));
    }
    for (int i = 0; i < m->nlayers; i++) {
        cnn_layer *l = &m->layers[i];
        l->max_batch = max_batch;
        st = l->ops->reserve ? l->ops->reserve(l, max_batch, err) : CNN_OK;
        if (st) {
            free_batch_buffers(m);
            return st;
        }
    }
    m->max_batch = max_batch;
    return CNN_OK;
}

/* Sets the count floats of w from init; tensor_id picks the tensor's RNG
 * stream, so every tensor draws its own numbers. */
static void init_tensor(const cnn_param *t, float *w, uint64_t seed, uint64_t tensor_id)
{
    switch (t->init) {
    case CNN_INIT_GLOROT_UNIFORM: {
        float limit = sqrtf(6.0f / (float)(t->fan_in + t->fan_out));
        for (size_t k = 0; k < t->count; k++) {
            float u = cnn_rng_uniform(cnn_rng_hash(seed, CNN_STREAM_INIT, tensor_id, k));
            w[k] = (2.0f * u - 1.0f) * limit;
        }
        break;
    }
    case CNN_INIT_HE_NORMAL: {
        /* Keras: truncated at 2 sigma, sigma corrected for the cut. */
        float sd = sqrtf(2.0f / (float)t->fan_in) / 0.87962566103423978f;
        for (size_t k = 0; k < t->count; k++) {
            float z = 0;
            for (uint64_t r = 0; r < 64; r++) {
                z = cnn_rng_normal(seed, CNN_STREAM_INIT, tensor_id | (r << 32), k);
                if (fabsf(z) <= 2.0f)
                    break;
            }
            w[k] = z * sd;
        }
        break;
    }
    case CNN_INIT_ONES:
        for (size_t k = 0; k < t->count; k++)
            w[k] = 1.0f;
        break;
    case CNN_INIT_ZEROS:
    default:
        memset(w, 0, t->count * sizeof *w);
    }
}

void cnn_model_init_params(cnn_model *m, uint64_t seed)
{
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        for (int p = 0; p < l->nparams; p++)
            init_tensor(&l->params[p], m->params + l->params[p].offset, seed,
                        cnn_layer_init_stream(i, p));
        /* zeros or ones: no random numbers, so no stream of their own */
        for (int b = 0; b < l->nbuffers; b++)
            init_tensor(&l->buffers[b], m->buffers + l->buffers[b].offset, seed, 0);
    }
}

void cnn_model_zero_grad(cnn_model *m) { memset(m->grads, 0, m->nparams * sizeof *m->grads); }

cnn_ctx cnn_model_ctx(const cnn_model *m, int training, uint64_t seed, uint64_t epoch,
                      const int64_t *sample_id)
{
    cnn_ctx c = {.training = training, .seed = seed, .epoch = epoch, .sample_id = sample_id,
                 .scratch = m->scratch, .scratch_floats = m->scratch_floats};
    return c;
}

const float *cnn_model_forward(cnn_model *m, const float *x, int B, const cnn_ctx *ctx)
{
    const float *in = x;
    const int last = m->nlayers - 1;
    for (int i = 0; i < m->nlayers; i++) {
        cnn_layer *l = &m->layers[i];
        const size_t n = cnn_shape_size(l->out);
        float *out = m->act[i];
        if (i == last && m->fused_loss) {
            l->ops->forward(l, m->params + l->param_offset, in, m->logits, B, ctx);
            memcpy(out, m->logits, (size_t)B * n * sizeof *out);
        } else {
            l->ops->forward(l, m->params + l->param_offset, in, out, B, ctx);
        }
        int rowwise = l->act == CNN_ACT_SOFTMAX; /* softmax normalises each sample */
        cnn_activation_forward(l->act, out, rowwise ? (size_t)B : 1, rowwise ? n : (size_t)B * n);
        in = out;
    }
    return m->act[last];
}

void cnn_model_backward(cnn_model *m, const float *x, int B, const cnn_ctx *ctx)
{
    for (int i = m->nlayers - 1; i >= 0; i--) {
        cnn_layer *l = &m->layers[i];
        const size_t n = cnn_shape_size(l->out);
        int rowwise = l->act == CNN_ACT_SOFTMAX;
        if (!(i == m->nlayers - 1 && m->fused_loss))
            cnn_activation_backward(l->act, m->act[i], m->dact[i], rowwise ? (size_t)B : 1,
                                    rowwise ? n : (size_t)B * n);
        l->ops->backward(l, m->params + l->param_offset, m->grads + l->param_offset,
                         i ? m->act[i - 1] : x, m->act[i], m->dact[i], i ? m->dact[i - 1] : NULL,
                         B, ctx);
        if (ctx->grads_ready && l->param_count)
            ctx->grads_ready(ctx->grads_ready_arg, l->param_offset);
    }
}

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int j = 1; j < n; j++)
        if (v[j] > v[best])
            best = j;
    return best;
}

cnn_status cnn_model_loss(cnn_model *m, const int32_t *labels, int B, float scale, int grad,
                          cnn_batch_stats *stats, cnn_error *err)
{
    const int C = m->nclasses;
    const float *out = m->act[m->nlayers - 1];
    float *d = m->dact[m->nlayers - 1];
    double loss = 0;
    long correct = 0;
    for (int b = 0; b < B; b++) {
        const int32_t y = labels[b];
        const float *z = m->logits + (size_t)b * C; /* valid when fused */
        const float *o = out + (size_t)b * C;
        float *db = d + (size_t)b * C;
        if ((m->loss == CNN_LOSS_BCE && y != 0 && y != 1) ||
            (m->loss != CNN_LOSS_BCE && C > 1 && (y < 0 || y >= C)))
            return cnn_error_set(err, CNN_ERR_FORMAT,
                                 "label %d does not fit the model's %d output%s (loss %s)", (int)y,
                                 C, C > 1 ? "s" : "", cnn_loss_names[m->loss]);
        switch (m->loss) {
        case CNN_LOSS_SPARSE_CCE:
        case CNN_LOSS_CCE: {
            /* log-softmax on logits: exact where softmax probabilities underflow */
            float mx = z[argmax(z, C)];
            double se = 0;
            for (int j = 0; j < C; j++)
                se += exp((double)z[j] - mx);
            double lse = mx + log(se);
            loss += lse - z[y];
            correct += argmax(z, C) == y;
            if (grad)
                for (int j = 0; j < C; j++)
                    db[j] = ((float)exp((double)z[j] - lse) - (j == y)) * scale;
            break;
        }
        case CNN_LOSS_BCE: {
            float t = (float)y, zz = z[0];
            loss += fmaxf(zz, 0) - zz * t + log1pf(expf(-fabsf(zz)));
            correct += (zz > 0) == (y == 1);
            if (grad)
                db[0] = (1.0f / (1.0f + expf(-zz)) - t) * scale;
            break;
        }
        case CNN_LOSS_MSE:
        default: {
            double s = 0;
            for (int j = 0; j < C; j++) {
                float t = C == 1 ? (float)y : (float)(j == y);
                float e = o[j] - t;
                s += (double)e * e;
                if (grad)
                    db[j] = 2.0f * e / (float)C * scale;
            }
            loss += s / C;
            correct += C == 1 ? ((o[0] > 0.5f) == (y == 1)) : argmax(o, C) == y;
            break;
        }
        }
    }
    if (!isfinite(loss))
        return cnn_error_set(err, CNN_ERR_NUMERIC, "loss is %s", isnan(loss) ? "NaN" : "infinite");
    stats->loss_sum += loss;
    stats->correct += correct;
    stats->count += B;
    return CNN_OK;
}

void cnn_model_probabilities(const cnn_model *m, int B, float *probs)
{
    const int C = m->nclasses;
    const cnn_activation act = m->layers[m->nlayers - 1].act;
    const float *out = m->act[m->nlayers - 1];
    memcpy(probs, out, (size_t)B * C * sizeof *probs);
    if (act != CNN_ACT_LINEAR)
        return;
    if (C > 1)
        cnn_activation_forward(CNN_ACT_SOFTMAX, probs, (size_t)B, (size_t)C);
    else if (m->loss == CNN_LOSS_BCE)
        cnn_activation_forward(CNN_ACT_SIGMOID, probs, 1, (size_t)B);
}

void cnn_model_classes(const cnn_model *m, const float *probs, int B, int32_t *cls, float *conf)
{
    const int C = m->nclasses;
    for (int b = 0; b < B; b++) {
        const float *p = probs + (size_t)b * C;
        int c = C > 1 ? argmax(p, C) : p[0] > 0.5f;
        cls[b] = c;
        if (conf)
            conf[b] = C > 1 ? p[c] : (c ? p[0] : 1.0f - p[0]);
    }
}

void cnn_model_add_weight_decay(cnn_model *m, float wd, size_t lo, size_t hi)
{
    if (wd == 0.0f)
        return;
    for (int i = 0; i < m->nlayers; i++)
        for (int p = 0; p < m->layers[i].nparams; p++) {
            const cnn_param *t = &m->layers[i].params[p];
            size_t a = t->offset > lo ? t->offset : lo;
            size_t b = t->offset + t->count < hi ? t->offset + t->count : hi;
            if (!t->decay || a >= b)
                continue;
            for (size_t k = a; k < b; k++)
                m->grads[k] += wd * m->params[k];
        }
}

void cnn_model_summary(const cnn_model *m, void *fp)
{
    FILE *f = fp;
    const char *rule = "_________________________________________________________________";
    const char *dbl = "=================================================================";
    fprintf(f, "Model: \"%s\"\n%s\n", m->name, rule);
    fprintf(f, " %-28s %-25s %-10s\n%s\n", "Layer (type)", "Output Shape", "Param #", dbl);
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        char col1[128], shape[64], num[32];
        snprintf(col1, sizeof col1, "%s (%s)", l->name, l->ops->keras_name);
        if (l->out.h == 1 && l->out.w == 1)
            snprintf(shape, sizeof shape, "(None, %d)", l->out.c);
        else /* shown in Keras's (H, W, C) order; stored channel-first */
            snprintf(shape, sizeof shape, "(None, %d, %d, %d)", l->out.h, l->out.w, l->out.c);
        size_t count = l->param_count; /* Keras counts the buffers in Param # too */
        for (int b = 0; b < l->nbuffers; b++)
            count += l->buffers[b].count;
        fprintf(f, " %-28s %-25s %-10s\n", col1, shape, commas(count, num, sizeof num));
        if (i + 1 < m->nlayers)
            fprintf(f, "\n");
    }
    char num[32];
    fprintf(f, "%s\n", dbl);
    fprintf(f, "Total params: %s\n", commas(m->nparams + m->nbuffer_floats, num, sizeof num));
    fprintf(f, "Trainable params: %s\n", commas(m->nparams, num, sizeof num));
    fprintf(f, "Non-trainable params: %s\n%s\n", commas(m->nbuffer_floats, num, sizeof num), rule);
}
