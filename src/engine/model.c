/* model.c - a sequential network: building from the config, parameter
 * buffers, forward, loss, backward and the summary table. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cnn/json.h"
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

/* "FILE:LINE: " of section s for messages; for a section expanded from a
 * block, the instance's line and the block's own line of the section. */
static void where(const cnn_section *s, char *buf, size_t n)
{
    if (s->block)
        snprintf(buf, n, "%s:%d: block '%s' ([%s] at line %d): ", s->cfg->path, s->line,
                 s->block, s->name, s->block_line);
    else
        snprintf(buf, n, "%s:%d: ", s->cfg->path, s->line);
}

/* Makes layer l (ops, name and inputs set) from its parsed parameters. */
static cnn_status make_layer(cnn_layer *l, const void *params, cnn_error *err)
{
    return l->ops->max_inputs > 1 ? l->ops->make_n(l, params, l->in_shape, l->ninputs, err)
                                  : l->ops->make(l, params, l->in, err);
}

/* Parses section s into the type's parameters (kept in *params, for
 * cnn_model_workspace), then makes layer l from them on its inputs
 * (l->in_shape); make's messages get the section's file:line. */
static cnn_status build_layer(cnn_layer *l, const cnn_section *s, void **params, cnn_error *err)
{
    const cnn_layer_ops *ops = l->ops;
    char at[400];
    where(s, at, sizeof at);
    if (!(*params = calloc(1, ops->params_size ? ops->params_size : 1)))
        return cnn_error_set(err, CNN_ERR_NOMEM, "layer '%s': out of memory", l->name);
    cnn_status st = ops->parse ? ops->parse(s, *params, err) : CNN_OK;
    if (st == CNN_OK) {
        st = make_layer(l, *params, err);
        if (st && err) {
            char msg[CNN_ERROR_MSG_MAX];
            snprintf(msg, sizeof msg, "%s", err->msg);
            cnn_error_set(err, st, "%s%s", at, msg);
        }
    }
    /* Layers index a sample's values with int: refuse what does not fit. */
    size_t n = 0, bytes;
    if (st == CNN_OK && (!cnn_shape_size_checked(l->out, &n) || n > INT_MAX)) {
        char a[32], b[32], c[32];
        int ok = n && cnn_size_mul(n, sizeof(float), &bytes);
        st = cnn_error_set(err, CNN_ERR_SHAPE,
                           "%slayer '%s' (%s) outputs %dx%dx%d = %s values (%s bytes) a "
                           "sample; a layer holds at most %s values a sample",
                           at, l->name, ops->section, l->out.h, l->out.w, l->out.c,
                           n ? commas(n, a, sizeof a) : "too many",
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

/* A layer section while the graph is built. */
typedef struct node {
    const cnn_section *s;
    const cnn_layer_ops *ops;
    char name[CNN_NAME_MAX];
    int ninputs;
    int input[CNN_LAYER_MAX_INPUTS]; /* node index, or CNN_INPUT_MODEL */
    int readers;                     /* how many inputs of other nodes name it */
    int layer;                       /* its index in m->layers, -1 until built */
} node;

typedef struct graph {
    const cnn_config *cfg;
    node *nodes;
    int n;
    const char *input_name;
} graph;

/* The node a name in `inputs` stands for, or -2. */
static int node_named(const graph *g, const char *name)
{
    if (strcmp(name, g->input_name) == 0)
        return CNN_INPUT_MODEL;
    for (int j = 0; j < g->n; j++)
        if (strcmp(g->nodes[j].name, name) == 0)
            return j;
    return -2;
}

/* What node j reads when its section has no `inputs`: the layer before. */
static int default_input(int j) { return j > 0 ? j - 1 : CNN_INPUT_MODEL; }

/* Reads node j's `inputs` (names separated by commas; `$input` in a block:
 * the block's input) or takes the default. */
static cnn_status resolve_inputs(graph *g, int j, int *functional, cnn_error *err)
{
    node *nd = &g->nodes[j];
    const cnn_section *s = nd->s;
    const char *v;
    char at[400];
    where(s, at, sizeof at);
    cnn_status st = cnn_cfg_string(s, "inputs", NULL, &v, err);
    if (st)
        return st;
    const int max = nd->ops->max_inputs > 1 ? nd->ops->max_inputs : 1;
    if (!v && max > 1)
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%slayer '%s' (%s): inputs: missing (e.g. inputs = conv2d, conv2d_1)",
                             at, nd->name, nd->ops->section);
    if (!v) {
        nd->ninputs = 1;
        nd->input[0] = default_input(j);
        return CNN_OK;
    }
    *functional = 1;
    nd->ninputs = 0;
    for (const char *p = v; *p;) {
        const char *e = strchr(p, ',');
        if (!e)
            e = p + strlen(p);
        char tok[CNN_NAME_MAX];
        while (p < e && (*p == ' ' || *p == '\t'))
            p++;
        size_t len = (size_t)(e - p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0 || len >= sizeof tok)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%slayer '%s': inputs = '%s': expected layer names separated "
                                 "by commas",
                                 at, nd->name, v);
        memcpy(tok, p, len);
        tok[len] = 0;
        int src;
        if (strcmp(tok, "$input") == 0) {
            int first = -1;
            for (int k = 0; k < g->n && s->block_first >= 0; k++)
                if (g->nodes[k].s == &g->cfg->sec[s->block_first])
                    first = k;
            if (first < 0)
                return cnn_error_set(err, CNN_ERR_CONFIG,
                                     "%slayer '%s': inputs: $input is the input of a block, "
                                     "and this section is in none",
                                     at, nd->name);
            src = default_input(first);
        } else if ((src = node_named(g, tok)) == -2) {
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%slayer '%s': inputs: no layer is named '%s' (see --summary "
                                 "for the names)",
                                 at, nd->name, tok);
        }
        if (nd->ninputs == max)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%slayer '%s' (%s) takes %s; inputs = '%s' names more%s", at,
                                 nd->name, nd->ops->section, max == 1 ? "one input" : "at most 16",
                                 v, max == 1 ? " (merge tensors with [add] or [concatenate])" : "");
        nd->input[nd->ninputs++] = src;
        p = *e ? e + 1 : e;
    }
    if (max > 1 && nd->ninputs < 2)
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%slayer '%s' (%s) merges 2 to %d tensors; inputs = '%s' names one",
                             at, nd->name, nd->ops->section, max, v);
    return CNN_OK;
}

/* Execution order: every node after its inputs, file order where free
 * (so a sequential network runs in file order). A cycle is an error naming
 * it. */
static cnn_status order_nodes(const graph *g, int *order, cnn_error *err)
{
    char *done = calloc((size_t)g->n + 1, 1);
    if (!done)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory building the model");
    for (int k = 0; k < g->n; k++) {
        int pick = -1;
        for (int j = 0; j < g->n && pick < 0; j++) {
            int ready = !done[j];
            for (int i = 0; ready && i < g->nodes[j].ninputs; i++)
                ready = g->nodes[j].input[i] == CNN_INPUT_MODEL || done[g->nodes[j].input[i]];
            if (ready)
                pick = j;
        }
        if (pick >= 0) {
            done[pick] = 1;
            order[k] = pick;
            continue;
        }
        /* Every node left reads one that is left: walk them to a repeat. */
        int *seen = calloc((size_t)g->n, sizeof *seen), j = 0, step = 1;
        while (done[j])
            j++;
        while (seen && !seen[j]) {
            seen[j] = step++;
            const node *nd = &g->nodes[j];
            for (int i = 0; i < nd->ninputs; i++)
                if (nd->input[i] != CNN_INPUT_MODEL && !done[nd->input[i]]) {
                    j = nd->input[i];
                    break;
                }
        }
        char path[512] = "", at[400];
        size_t o = 0;
        int start = j;
        for (int c = 0; seen && o < sizeof path; c++) {
            o += (size_t)snprintf(path + o, sizeof path - o, "%s'%s'", c ? " reads " : "",
                                  g->nodes[j].name);
            if (c && j == start)
                break;
            const node *nd = &g->nodes[j];
            for (int i = 0; i < nd->ninputs; i++)
                if (nd->input[i] != CNN_INPUT_MODEL && seen[nd->input[i]] &&
                    !done[nd->input[i]]) {
                    j = nd->input[i];
                    break;
                }
        }
        where(g->nodes[start].s, at, sizeof at);
        free(seen);
        free(done);
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%slayer '%s': the inputs form a cycle: %s", at,
                             g->nodes[start].name, path);
    }
    free(done);
    return CNN_OK;
}

/* Reads the layer sections of cfg into g (names, types, inputs); builds
 * [input] into m. */
static cnn_status read_nodes(cnn_model *m, const cnn_config *cfg,
                             const cnn_layer_ops *const *types, graph *g, cnn_error *err)
{
    cnn_status st;
    int have_input = 0;
    for (int i = 0; i < cfg->nsec; i++) {
        const cnn_section *s = &cfg->sec[i];
        const cnn_layer_ops *ops = find_type(types, s);
        char at[400];
        where(s, at, sizeof at);
        if (!ops && !cnn_config_is_singleton(s->name))
            return unknown_section(s, types, err);
        if (!ops)
            continue;
        if (!have_input && ops != &cnn_input_ops)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s[%s] comes before [input]; the network must start with "
                                 "[input] shape = HxWxC",
                                 at, s->name);
        const char *name;
        char nm[CNN_NAME_MAX];
        if ((st = cnn_cfg_string(s, "name", NULL, &name, err)))
            return st;
        if (name)
            snprintf(nm, sizeof nm, "%s", name);
        else if (s->ordinal == 0)
            snprintf(nm, sizeof nm, "%s", ops->default_name);
        else
            snprintf(nm, sizeof nm, "%s_%d", ops->default_name, s->ordinal);
        if (ops == &cnn_input_ops) {
            if (have_input)
                return cnn_error_set(err, CNN_ERR_CONFIG, "%sa second [input] section", at);
            cnn_layer in = {.ops = ops};
            snprintf(in.name, sizeof in.name, "%s", nm);
            void *params = NULL;
            st = build_layer(&in, s, &params, err);
            free(params);
            if (st)
                return st;
            have_input = 1;
            m->input = in.out;
            snprintf(m->input_name, sizeof m->input_name, "%s", nm);
            g->input_name = m->input_name;
            continue;
        }
        if (node_named(g, nm) != -2)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%slayer name '%s' is used twice; give each layer its own name",
                                 at, nm);
        node *nd = &g->nodes[g->n++];
        nd->s = s;
        nd->ops = ops;
        nd->layer = -1;
        snprintf(nd->name, sizeof nd->name, "%s", nm);
    }
    if (!have_input)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: no [input] section (e.g. shape = 28x28x1)",
                             cfg->path);
    if (g->n == 0)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: the network has no layers after [input]",
                             cfg->path);
    for (int j = 0; j < g->n; j++)
        if ((st = resolve_inputs(g, j, &m->functional, err)))
            return st;
    /* One output: the last layer of the file; any other layer must be read. */
    for (int j = 0; j < g->n; j++)
        for (int i = 0; i < g->nodes[j].ninputs; i++)
            if (g->nodes[j].input[i] != CNN_INPUT_MODEL)
                g->nodes[g->nodes[j].input[i]].readers++;
    for (int j = 0; j + 1 < g->n; j++)
        if (!g->nodes[j].readers) {
            char at[400];
            where(g->nodes[j].s, at, sizeof at);
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%slayer '%s': no layer reads its output (name it in an "
                                 "`inputs` key; only the last layer, '%s', is the model's output)",
                                 at, g->nodes[j].name, g->nodes[g->n - 1].name);
        }
    if (g->nodes[g->n - 1].readers) {
        char at[400];
        where(g->nodes[g->n - 1].s, at, sizeof at);
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%slayer '%s' is the last layer, the model's output, and cannot be "
                             "another layer's input",
                             at, g->nodes[g->n - 1].name);
    }
    return CNN_OK;
}

/* Decides, for the backward pass, which input gradients go through a
 * temporary: a tensor's last reader (first in backward) writes its
 * gradient in place, every other reader adds to it. */
static void plan_gradients(cnn_model *m)
{
    char *started = calloc((size_t)m->nlayers + 1, 1);
    m->ntemps = 0;
    m->temp_size = 0;
    for (int i = m->nlayers - 1; i >= 0; i--) {
        const cnn_layer *l = &m->layers[i];
        int nt = 0;
        for (int k = 0; k < l->ninputs; k++) {
            int src = l->input[k];
            if (src == CNN_INPUT_MODEL)
                continue;
            if (started && !started[src]) {
                started[src] = 1;
                continue;
            }
            m->din_add[i] |= 1u << k;
            nt++;
            size_t n = cnn_shape_size(m->layers[src].out);
            if (n > m->temp_size)
                m->temp_size = n;
        }
        if (nt > m->ntemps)
            m->ntemps = nt;
    }
    free(started);
}

/* The inputs of later layers that are layer i's output. */
static int readers_of(const cnn_model *m, int i)
{
    int readers = 0;
    for (int k = i + 1; k < m->nlayers; k++)
        for (int in = 0; in < m->layers[k].ninputs; in++)
            readers += m->layers[k].input[in] == i;
    return readers;
}

/* Folds each identity_act layer (an [activation]) into the layer it reads
 * when that layer's type can apply the activation itself (fusable_acts)
 * and nothing else reads its output: forward and backward then pass over
 * the tensor once instead of three times, with the same float operations.
 * Not the last layer, whose output the loss reads. */
static void fold_activations(cnn_model *m)
{
    for (int j = 0; j + 1 < m->nlayers; j++) {
        cnn_layer *a = &m->layers[j];
        const int i = a->input[0];
        if (!a->ops->identity_act || a->ninputs != 1 || i == CNN_INPUT_MODEL ||
            !(m->layers[i].ops->fusable_acts >> a->act & 1))
            continue;
        if (readers_of(m, i) == 1) {
            m->layers[i].fused_act = a->act;
            a->folded = 1;
        }
    }
}

/* A relu's backward taken by its producer's only reader (cnn_layer's
 * can_mask_relu_din). */
static void fold_relu_grads(cnn_model *m)
{
    for (int j = 0; j < m->nlayers; j++) {
        cnn_layer *r = &m->layers[j];
        const int i = r->input[0];
        if (!r->can_mask_relu_din || r->ninputs != 1 || i == CNN_INPUT_MODEL ||
            m->layers[i].act != CNN_ACT_RELU || m->layers[i].fused_act != CNN_ACT_LINEAR ||
            (i == m->nlayers - 1 && m->fused_loss))
            continue;
        if (readers_of(m, i) == 1) {
            m->layers[i].act_grad_by_reader = 1;
            r->mask_relu_din = 1;
        }
    }
}

/* The keys of section s but name and inputs, as a JSON object (malloc'd). */
static char *keys_json(const cnn_section *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    fputc('{', f);
    int n = 0;
    for (int k = 0; k < s->nkv; k++) {
        if (!strcmp(s->kv[k].key, "name") || !strcmp(s->kv[k].key, "inputs"))
            continue;
        fputs(n++ ? ", " : "", f);
        cnn_json_string(f, s->kv[k].key);
        fputs(": ", f);
        cnn_json_string(f, s->kv[k].value);
    }
    fputc('}', f);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Makes the layers of g in execution order. */
static cnn_status build_layers(cnn_model *m, graph *g, const int *order, cnn_error *err)
{
    cnn_status st;
    for (int k = 0; k < g->n; k++) {
        node *nd = &g->nodes[order[k]];
        cnn_layer *l = &m->layers[k];
        char at[400];
        where(nd->s, at, sizeof at);
        l->ops = nd->ops;
        l->index = k;
        snprintf(l->name, sizeof l->name, "%s", nd->name);
        l->ninputs = nd->ninputs;
        for (int i = 0; i < nd->ninputs; i++) {
            int src = nd->input[i];
            l->input[i] = src == CNN_INPUT_MODEL ? CNN_INPUT_MODEL : g->nodes[src].layer;
            l->in_shape[i] = src == CNN_INPUT_MODEL ? m->input : m->layers[l->input[i]].out;
        }
        l->in = l->in_shape[0];
        nd->layer = k;
        m->nlayers++; /* so that destroy runs on partial state */
        if (!(m->keys_json[k] = keys_json(nd->s)))
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory building the model");
        if ((st = build_layer(l, nd->s, &m->layer_params[k], err)))
            return st;
        if (l->act == CNN_ACT_SOFTMAX && (l->out.h != 1 || l->out.w != 1))
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%slayer '%s': softmax needs a flat output (use it on dense)",
                                 at, l->name);
    }
    return CNN_OK;
}

cnn_status cnn_model_create_types(cnn_model **out, const cnn_config *cfg, cnn_loss loss,
                                  const cnn_layer_ops *const *types, cnn_error *err)
{
    *out = NULL;
    cnn_model *m = calloc(1, sizeof *m);
    int nsec = cfg->nsec;
    graph g = {.cfg = cfg, .input_name = ""};
    int *order = NULL;
    if (!m || !(m->layers = calloc((size_t)nsec + 1, sizeof *m->layers)) ||
        !(m->din_add = calloc((size_t)nsec + 1, sizeof *m->din_add)) ||
        !(m->keys_json = calloc((size_t)nsec + 1, sizeof *m->keys_json)) ||
        !(m->layer_params = calloc((size_t)nsec + 1, sizeof *m->layer_params)) ||
        !(g.nodes = calloc((size_t)nsec + 1, sizeof *g.nodes)) ||
        !(order = calloc((size_t)nsec + 1, sizeof *order))) {
        cnn_model_free(m);
        free(g.nodes);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory building the model");
    }
    m->loss = loss;
    snprintf(m->name, sizeof m->name, "%s", cfg->path);
    cnn_status st = read_nodes(m, cfg, types, &g, err);
    if (st == CNN_OK)
        st = order_nodes(&g, order, err);
    if (st == CNN_OK)
        st = build_layers(m, &g, order, err);
    free(g.nodes);
    free(order);
    if (st == CNN_OK) {
        plan_gradients(m);
        fold_activations(m);
        m->nclasses = (int)cnn_shape_size(m->layers[m->nlayers - 1].out);
        st = check_head(m, err);
    }
    if (st == CNN_OK)
        fold_relu_grads(m); /* after check_head: it knows fused_loss */
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
    for (int i = 0; i < m->nlayers; i++)
        if (!m->layers[i].folded) { /* a folded layer's are its input's */
            if (m->act)
                free(m->act[i]);
            if (m->dact)
                free(m->dact[i]);
        }
    free(m->act);
    free(m->dact);
    free(m->logits);
    free(m->scratch);
    free(m->temps);
    m->act = m->dact = NULL;
    m->logits = m->scratch = m->temps = NULL;
    m->max_batch = 0;
}

void cnn_model_unfold(cnn_model *m)
{
    free_batch_buffers(m); /* while it still knows which buffers are shared */
    for (int i = 0; i < m->nlayers; i++) {
        m->layers[i].fused_act = CNN_ACT_LINEAR;
        m->layers[i].folded = 0;
        m->layers[i].mask_relu_din = m->layers[i].act_grad_by_reader = 0;
    }
}

void cnn_model_free(cnn_model *m)
{
    if (!m)
        return;
    free_batch_buffers(m);
    for (int i = 0; i < m->nlayers; i++)
        if (m->layers[i].ops->destroy)
            m->layers[i].ops->destroy(&m->layers[i]);
    if (m->keys_json)
        for (int i = 0; i < m->nlayers; i++)
            free(m->keys_json[i]);
    if (m->layer_params)
        for (int i = 0; i < m->nlayers; i++)
            free(m->layer_params[i]);
    free(m->keys_json);
    free(m->layer_params);
    free(m->din_add);
    free(m->layers);
    if (!m->owner) { /* a workspace borrows its owner's */
        free(m->params);
        free(m->buffers);
    }
    free(m->grads);
    free(m);
}

cnn_status cnn_model_workspace(cnn_model **out, const cnn_model *m, cnn_error *err)
{
    *out = NULL;
    if (m->owner)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: a workspace of a workspace", m->name);
    cnn_model *w = calloc(1, sizeof *w);
    if (!w || !(w->layers = calloc((size_t)m->nlayers, sizeof *w->layers)) ||
        !(w->din_add = calloc((size_t)m->nlayers, sizeof *w->din_add)) ||
        !(w->grads = alloc_floats(m->nparams))) {
        cnn_model_free(w);
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for a thread's workspace",
                             m->name);
    }
    w->owner = m;
    w->params = m->params;
    w->buffers = m->buffers;
    w->input = m->input;
    w->nclasses = m->nclasses;
    w->loss = m->loss;
    w->label_smoothing = m->label_smoothing;
    w->nparams = m->nparams;
    w->nbuffer_floats = m->nbuffer_floats;
    w->fused_loss = m->fused_loss;
    w->functional = m->functional;
    w->ntemps = m->ntemps;
    w->temp_size = m->temp_size;
    memcpy(w->din_add, m->din_add, (size_t)m->nlayers * sizeof *w->din_add);
    snprintf(w->name, sizeof w->name, "%s", m->name);
    snprintf(w->input_name, sizeof w->input_name, "%s", m->input_name);
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *src = &m->layers[i];
        cnn_layer *l = &w->layers[i];
        l->ops = src->ops;
        l->index = src->index;
        snprintf(l->name, sizeof l->name, "%s", src->name);
        l->ninputs = src->ninputs;
        memcpy(l->input, src->input, sizeof l->input);
        memcpy(l->in_shape, src->in_shape, sizeof l->in_shape);
        l->in = src->in;
        l->fused_act = src->fused_act;
        l->folded = src->folded;
        l->mask_relu_din = src->mask_relu_din;
        l->act_grad_by_reader = src->act_grad_by_reader;
        w->nlayers++; /* so that destroy runs on partial state */
        cnn_status st = make_layer(l, m->layer_params[i], err);
        if (st) {
            cnn_model_free(w);
            return st;
        }
        /* the same make on the same parameters declares the same tensors */
        l->param_offset = src->param_offset;
        l->param_count = src->param_count;
        for (int p = 0; p < l->nparams; p++)
            l->params[p].offset = src->params[p].offset;
        for (int b = 0; b < l->nbuffers; b++)
            l->buffers[b].offset = src->buffers[b].offset;
    }
    *out = w;
    return CNN_OK;
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
    size_t temps = 0; /* the gradient temporaries of tensors with several readers */
    ok = ok && cnn_size_mul(m->temp_size, (size_t)m->ntemps, &temps) &&
         cnn_size_mul(temps, (size_t)max_batch, &temps) &&
         !__builtin_add_overflow(temps, (size_t)max_batch * (size_t)m->nclasses + scratch,
                                 &bytes) &&
         cnn_size_mul(bytes, sizeof(float), &bytes) &&
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
        if (l->folded) {
            m->act[i] = m->act[l->input[0]];
            m->dact[i] = m->dact[l->input[0]];
        } else if (!(m->act[i] = malloc(n * sizeof(float))) ||
                   !(m->dact[i] = malloc(n * sizeof(float)))) {
            failed = l;
        }
    }
    if (!failed && (!(m->logits = malloc((size_t)max_batch * m->nclasses * sizeof(float))) ||
                    !(m->scratch = malloc(m->scratch_floats * sizeof(float))) ||
                    !(m->temps = malloc((temps ? temps : 1) * sizeof(float)))))
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
                 .scratch = m->scratch, .scratch_floats = m->scratch_floats,
                 .buffers = m->buffers};
    return c;
}

/* The tensor input k of layer l reads: the model's input x or an output. */
static float *input_of(const cnn_model *m, const cnn_layer *l, int k, const float *x)
{
    return l->input[k] == CNN_INPUT_MODEL ? (float *)x : m->act[l->input[k]];
}

const float *cnn_model_forward(cnn_model *m, const float *x, int B, const cnn_ctx *ctx)
{
    const cnn_model *hook = m->owner ? m->owner : m; /* workspaces report to their model's */
    const int last = m->nlayers - 1;
    for (int i = 0; i < m->nlayers; i++) {
        cnn_layer *l = &m->layers[i];
        if (l->folded) /* its input's layer has written its output */
            continue;
        const size_t n = cnn_shape_size(l->out);
        const float *w = m->params + l->param_offset;
        float *out = m->act[i], *dst = i == last && m->fused_loss ? m->logits : out;
        if (hook->layer_hook)
            hook->layer_hook(hook->layer_hook_arg, i, 0, 0);
        if (l->ops->max_inputs > 1) {
            const float *in[CNN_LAYER_MAX_INPUTS];
            for (int k = 0; k < l->ninputs; k++)
                in[k] = input_of(m, l, k, x);
            l->ops->forward_n(l, w, in, l->ninputs, dst, B, ctx);
        } else {
            l->ops->forward(l, w, input_of(m, l, 0, x), dst, B, ctx);
        }
        if (dst != out)
            memcpy(out, m->logits, (size_t)B * n * sizeof *out);
        int rowwise = l->act == CNN_ACT_SOFTMAX; /* softmax normalises each sample */
        if (!l->act_in_forward)
            cnn_activation_forward(l->act, out, rowwise ? (size_t)B : 1,
                                   rowwise ? n : (size_t)B * n);
        if (hook->layer_hook)
            hook->layer_hook(hook->layer_hook_arg, i, 0, 1);
    }
    return m->act[last];
}

void cnn_model_backward(cnn_model *m, const float *x, int B, const cnn_ctx *ctx)
{
    const cnn_model *hook = m->owner ? m->owner : m;
    for (int i = m->nlayers - 1; i >= 0; i--) {
        cnn_layer *l = &m->layers[i];
        if (l->folded) /* its input's layer takes the gradient as it is */
            continue;
        const size_t n = cnn_shape_size(l->out);
        int rowwise = l->act == CNN_ACT_SOFTMAX;
        if (hook->layer_hook)
            hook->layer_hook(hook->layer_hook_arg, i, 1, 0);
        if (!(i == m->nlayers - 1 && m->fused_loss) && !l->act_grad_by_reader)
            cnn_activation_backward(l->act, m->act[i], m->dact[i], rowwise ? (size_t)B : 1,
                                    rowwise ? n : (size_t)B * n);
        /* dL/d(input k): none for the model's input; written in place by a
         * tensor's last reader, into a temporary and added by the others */
        float *din[CNN_LAYER_MAX_INPUTS];
        int nt = 0;
        for (int k = 0; k < l->ninputs; k++)
            din[k] = l->input[k] == CNN_INPUT_MODEL ? NULL
                     : m->din_add[i] >> k & 1      ? m->temps + (size_t)nt++ * B * m->temp_size
                                                   : m->dact[l->input[k]];
        const float *w = m->params + l->param_offset;
        float *g = m->grads + l->param_offset;
        if (l->ops->max_inputs > 1) {
            const float *in[CNN_LAYER_MAX_INPUTS];
            for (int k = 0; k < l->ninputs; k++)
                in[k] = input_of(m, l, k, x);
            l->ops->backward_n(l, w, g, in, l->ninputs, m->act[i], m->dact[i], din, B, ctx);
        } else {
            l->ops->backward(l, w, g, input_of(m, l, 0, x), m->act[i], m->dact[i], din[0], B,
                             ctx);
        }
        for (int k = 0; k < l->ninputs; k++)
            if (m->din_add[i] >> k & 1) {
                float *d = m->dact[l->input[k]];
                const size_t len = (size_t)B * cnn_shape_size(l->in_shape[k]);
                for (size_t j = 0; j < len; j++)
                    d[j] += din[k][j];
            }
        if (hook->layer_hook)
            hook->layer_hook(hook->layer_hook_arg, i, 1, 1);
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

/* A label-smoothed target: hit (1 or 0) * (1 - ls) + ls / k. */
static float smoothed(int hit, float ls, int k) { return (float)hit * (1.0f - ls) + ls / (float)k; }

cnn_status cnn_model_loss(cnn_model *m, const int32_t *labels, int B, float scale, int grad,
                          cnn_batch_stats *stats, cnn_error *err)
{
    const int C = m->nclasses;
    const float ls = m->label_smoothing;
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
            correct += argmax(z, C) == y;
            if (ls > 0) { /* targets t_j = (j == y)(1 - ls) + ls/C */
                double zt = 0;
                for (int j = 0; j < C; j++)
                    zt += (double)smoothed(j == y, ls, C) * z[j];
                loss += lse - zt;
                if (grad)
                    for (int j = 0; j < C; j++)
                        db[j] = ((float)exp((double)z[j] - lse) - smoothed(j == y, ls, C)) * scale;
                break;
            }
            loss += lse - z[y];
            if (grad)
                for (int j = 0; j < C; j++)
                    db[j] = ((float)exp((double)z[j] - lse) - (j == y)) * scale;
            break;
        }
        case CNN_LOSS_BCE: {
            float t = ls > 0 ? smoothed(y == 1, ls, 2) : (float)y, zz = z[0];
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

static void summary_functional(const cnn_model *m, FILE *f);
static size_t layer_count(const cnn_layer *l);

void cnn_model_summary(const cnn_model *m, void *fp)
{
    FILE *f = fp;
    if (m->functional) {
        summary_functional(m, f);
        return;
    }
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
        fprintf(f, " %-28s %-25s %-10s\n", col1, shape, commas(layer_count(l), num, sizeof num));
        if (i + 1 < m->nlayers)
            fprintf(f, "\n");
    }
    char num[32];
    fprintf(f, "%s\n", dbl);
    fprintf(f, "Total params: %s\n", commas(m->nparams + m->nbuffer_floats, num, sizeof num));
    fprintf(f, "Trainable params: %s\n", commas(m->nparams, num, sizeof num));
    fprintf(f, "Non-trainable params: %s\n%s\n", commas(m->nbuffer_floats, num, sizeof num), rule);
}

/* One row of Keras's table: each field wrapped in its column (ending at
 * pos[c], two blanks before the next), breaking after "')," "}," "]," or
 * "'," where one fits, as Keras's print_row does. */
static void print_row(FILE *f, const char *const *fields, const int *pos, int ncol)
{
    const char *left[4];
    for (int c = 0; c < ncol; c++)
        left[c] = fields[c];
    for (;;) {
        int any = 0;
        for (int c = 0; c < ncol; c++)
            any |= *left[c] != 0;
        if (!any)
            break;
        char line[512];
        int len = 0;
        for (int c = 0; c < ncol; c++) {
            int start = c ? pos[c - 1] : 0, space = c != ncol - 1 ? 2 : 0;
            int cut = pos[c] - start - space, avail = (int)strlen(left[c]);
            if (cut > avail)
                cut = avail;
            static const char *const breaks[] = {"),", "},", "],", "',"};
            int best = -1;
            for (int b = 0; b < 4; b++)
                for (int j = 0; j + 2 <= cut; j++)
                    if (!strncmp(left[c] + j, breaks[b], 2)) {
                        if (best < 0 || j + 2 < best)
                            best = j + 2;
                        break;
                    }
            if (best > 0)
                cut = best;
            len += snprintf(line + len, sizeof line - (size_t)len, "%s%.*s%*s", c ? "" : " ", cut,
                            left[c], space, "");
            left[c] += cut;
            if (len < pos[c] && (size_t)pos[c] < sizeof line)
                len += snprintf(line + len, sizeof line - (size_t)len, "%*s", pos[c] - len, "");
        }
        fprintf(f, "%s\n", line);
    }
}

/* "(None, H, W, C)" or "(None, N)": Keras's (H, W, C) order; stored
 * channel-first. */
static void keras_shape(cnn_shape s, char *buf, size_t n)
{
    if (s.h == 1 && s.w == 1)
        snprintf(buf, n, "(None, %d)", s.c);
    else
        snprintf(buf, n, "(None, %d, %d, %d)", s.h, s.w, s.c);
}

/* Parameters and buffers of l: Keras counts both in Param #. */
static size_t layer_count(const cnn_layer *l)
{
    size_t count = l->param_count;
    for (int b = 0; b < l->nbuffers; b++)
        count += l->buffers[b].count;
    return count;
}

static const char *input_name(const cnn_model *m, const cnn_layer *l, int k)
{
    return l->input[k] == CNN_INPUT_MODEL ? m->input_name : m->layers[l->input[k]].name;
}

/* Keras's table of a functional model: an InputLayer row, then every
 * layer with the layers it is connected to. */
static void summary_functional(const cnn_model *m, FILE *f)
{
    static const int pos[4] = {32, 53, 65, 98}; /* Keras: line 98, at .33 .55 .67 1 */
    static const char *const head[4] = {"Layer (type)", "Output Shape", "Param #",
                                        "Connected to"};
    char rule[99], dbl[99];
    memset(rule, '_', 98);
    memset(dbl, '=', 98);
    rule[98] = dbl[98] = 0;
    fprintf(f, "Model: \"%s\"\n%s\n", m->name, rule);
    print_row(f, head, pos, 4);
    fprintf(f, "%s\n", dbl);
    char col1[160], shape[80], num[32], conn[CNN_LAYER_MAX_INPUTS * (CNN_NAME_MAX + 12) + 4];
    char in_shape[84];
    keras_shape(m->input, shape, sizeof shape);
    snprintf(in_shape, sizeof in_shape, "[%s]", shape);
    snprintf(col1, sizeof col1, "%s (InputLayer)", m->input_name);
    print_row(f, (const char *const[]){col1, in_shape, "0", "[]"}, pos, 4);
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        fprintf(f, "\n");
        snprintf(col1, sizeof col1, "%s (%s)", l->name, l->ops->keras_name);
        keras_shape(l->out, shape, sizeof shape);
        size_t o = (size_t)snprintf(conn, sizeof conn, "[");
        for (int k = 0; k < l->ninputs; k++)
            o += (size_t)snprintf(conn + o, sizeof conn - o, "%s'%s[0][0]'", k ? ", " : "",
                                  input_name(m, l, k));
        snprintf(conn + o, sizeof conn - o, "]");
        print_row(f, (const char *const[]){col1, shape, commas(layer_count(l), num, sizeof num), conn},
                  pos, 4);
    }
    fprintf(f, "%s\n", dbl);
    fprintf(f, "Total params: %s\n", commas(m->nparams + m->nbuffer_floats, num, sizeof num));
    fprintf(f, "Trainable params: %s\n", commas(m->nparams, num, sizeof num));
    fprintf(f, "Non-trainable params: %s\n%s\n", commas(m->nbuffer_floats, num, sizeof num), rule);
}

static void json_tensors(FILE *f, const cnn_param *t, int n, int trainable, int *first)
{
    for (int p = 0; p < n; p++) {
        fprintf(f, "%s{\"name\": ", (*first)++ ? ", " : "");
        cnn_json_string(f, t[p].name);
        fprintf(f, ", \"shape\": [");
        for (int d = 0; d < t[p].ndim; d++)
            fprintf(f, "%s%d", d ? ", " : "", t[p].dims[d]);
        fprintf(f, "], \"trainable\": %s}", trainable ? "true" : "false");
    }
}

void cnn_model_summary_json(const cnn_model *m, void *fp)
{
    FILE *f = fp;
    fprintf(f, "{\n  \"name\": ");
    cnn_json_string(f, m->name);
    fprintf(f, ",\n  \"format\": \"cnn-train graph 1\",\n  \"data_format\": \"channels_first\",\n");
    fprintf(f, "  \"functional\": %s,\n  \"loss\": ", m->functional ? "true" : "false");
    cnn_json_string(f, cnn_loss_names[m->loss]);
    fprintf(f, ",\n  \"input\": {\"name\": ");
    cnn_json_string(f, m->input_name);
    fprintf(f, ", \"shape\": [%d, %d, %d]},\n  \"layers\": [\n", m->input.h, m->input.w,
            m->input.c);
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        fprintf(f, "    {\"name\": ");
        cnn_json_string(f, l->name);
        fprintf(f, ", \"type\": ");
        cnn_json_string(f, l->ops->section);
        fprintf(f, ", \"class_name\": ");
        cnn_json_string(f, l->ops->keras_name);
        fprintf(f, ",\n     \"keys\": %s,\n     \"inputs\": [",
                m->keys_json && m->keys_json[i] ? m->keys_json[i] : "{}");
        for (int k = 0; k < l->ninputs; k++) {
            fputs(k ? ", " : "", f);
            cnn_json_string(f, input_name(m, l, k));
        }
        fprintf(f, "], \"output_shape\": [%d, %d, %d], \"activation\": ", l->out.h, l->out.w,
                l->out.c);
        cnn_json_string(f, cnn_activation_names[l->act]);
        size_t nb = layer_count(l) - l->param_count;
        fprintf(f, ",\n     \"params\": %zu, \"trainable_params\": %zu, "
                   "\"non_trainable_params\": %zu,\n     \"tensors\": [",
                layer_count(l), l->param_count, nb);
        int first = 0;
        json_tensors(f, l->params, l->nparams, 1, &first);
        json_tensors(f, l->buffers, l->nbuffers, 0, &first);
        fprintf(f, "]}%s\n", i + 1 < m->nlayers ? "," : "");
    }
    fprintf(f, "  ],\n  \"output\": ");
    cnn_json_string(f, m->layers[m->nlayers - 1].name);
    fprintf(f, ",\n  \"total_params\": %zu,\n  \"trainable_params\": %zu,\n"
               "  \"non_trainable_params\": %zu\n}\n",
            m->nparams + m->nbuffer_floats, m->nparams, m->nbuffer_floats);
}
