/* layer.c - the layer registry and the helpers every layer type shares. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/layer.h"

/* The registry: the only list of layer types. A type `id` is the ops table
 * `const cnn_layer_ops cnn_<id>_ops` (in its own file) and one X(id) line
 * here, which declares the table and enters it. */
#define CNN_LAYER_TYPES(X)                                                                        \
    X(input)                                                                                      \
    X(conv2d)                                                                                     \
    X(maxpool2d)                                                                                  \
    X(avgpool2d)                                                                                  \
    X(dense)                                                                                      \
    X(dropout)                                                                                    \
    X(flatten)                                                                                    \
    X(add)                                                                                        \
    X(concatenate)                                                                                \
    X(batch_normalization)                                                                        \
    X(activation)                                                                                 \
    X(global_average_pooling2d)                                                                   \
    X(global_max_pooling2d)                                                                       \
    X(depthwise_conv2d)                                                                           \
    X(separable_conv2d)

#define CNN_DECLARE_TYPE(id) extern const cnn_layer_ops cnn_##id##_ops;
#define CNN_ENTER_TYPE(id) &cnn_##id##_ops,
CNN_LAYER_TYPES(CNN_DECLARE_TYPE)
const cnn_layer_ops *const cnn_layer_types[] = {CNN_LAYER_TYPES(CNN_ENTER_TYPE) NULL};

const char *const cnn_init_names[] = {"zeros", "glorot_uniform", "he_normal", "ones",
                                     NULL};
_Static_assert(sizeof cnn_init_names / sizeof *cnn_init_names == CNN_INIT_COUNT + 1,
               "initialiser name table out of step with cnn_init");

const cnn_layer_ops *cnn_layer_find_type(const char *section)
{
    for (int i = 0; cnn_layer_types[i]; i++)
        if (strcmp(cnn_layer_types[i]->section, section) == 0)
            return cnn_layer_types[i];
    return NULL;
}

const char *cnn_layer_default_name(const char *section)
{
    const cnn_layer_ops *ops = cnn_layer_find_type(section);
    return ops ? ops->default_name : NULL;
}

cnn_status cnn_layer_read_padding(const cnn_section *s, cnn_padding_mode *mode, int *amount,
                                  cnn_error *err)
{
    *mode = CNN_PADDING_VALID;
    *amount = 0;
    cnn_kv *kv = cnn_section_find(s, "padding");
    if (!kv)
        return CNN_OK;
    kv->used = 1;
    if (strcmp(kv->value, "valid") == 0)
        return CNN_OK;
    if (strcmp(kv->value, "same") == 0) {
        *mode = CNN_PADDING_SAME;
        return CNN_OK;
    }
    long n;
    cnn_status st = cnn_cfg_int(s, "padding", 0, 0, 4096, &n, err);
    if (st != CNN_OK) {
        char where[320];
        cnn_cfg_where(s, kv, "padding", where, sizeof where);
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: '%s' is not valid, same or a pixel count",
                             where, kv->value);
    }
    *mode = CNN_PADDING_EXPLICIT;
    *amount = (int)n;
    return CNN_OK;
}

cnn_status cnn_layer_window(const cnn_layer *l, const cnn_window_params *wp, cnn_shape in,
                            cnn_window *g, cnn_error *err)
{
    memset(g, 0, sizeof *g);
    g->c = in.c;
    g->h = in.h;
    g->w = in.w;
    g->kh = wp->kh;
    g->kw = wp->kw;
    g->sh = wp->sh;
    g->sw = wp->sw;
    g->oh = cnn_resolve_padding(wp->mode, wp->amount, in.h, wp->kh, wp->sh, &g->pad.top,
                                &g->pad.bottom);
    g->ow = cnn_resolve_padding(wp->mode, wp->amount, in.w, wp->kw, wp->sw, &g->pad.left,
                                &g->pad.right);
    if (g->oh < 1 || g->ow < 1)
        return cnn_error_set(err, CNN_ERR_SHAPE,
                             "layer '%s' (%s): window %dx%d does not fit input %dx%d (padding %s)",
                             l->name, l->ops->section, wp->kh, wp->kw, in.h, in.w,
                             wp->mode == CNN_PADDING_SAME ? "same" : "valid/explicit");
    return CNN_OK;
}

cnn_status cnn_layer_missing(const cnn_section *s, const char *key, const char *example,
                             cnn_error *err)
{
    /* Layers read their optional keys before checking required ones, so a
     * key nothing has consumed is not a key of this layer. */
    const cnn_kv *odd = NULL;
    for (int i = 0; i < s->nkv && !odd; i++)
        if (!s->kv[i].used)
            odd = &s->kv[i];
    if (odd)
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%s:%d: [%s] %s: missing (e.g. %s); is '%s' at line %d a misspelling?",
                             s->cfg->path, s->line, s->name, key, example, odd->key, odd->line);
    return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [%s] %s: missing (e.g. %s)", s->cfg->path,
                         s->line, s->name, key, example);
}

cnn_status cnn_layer_read_activation(const cnn_section *s, cnn_activation *a, cnn_error *err)
{
    int v;
    cnn_status st = cnn_cfg_enum(s, "activation", CNN_ACT_LINEAR, cnn_activation_names, &v, err);
    *a = (cnn_activation)v;
    return st;
}

cnn_status cnn_layer_read_init(const cnn_section *s, const char *key, cnn_init def, cnn_init *out,
                               cnn_error *err)
{
    int v;
    cnn_status st = cnn_cfg_enum(s, key, def, cnn_init_names, &v, err);
    *out = (cnn_init)v;
    return st;
}

/* Fills t with a tensor of ndim dims; returns its element count. */
static size_t set_tensor(cnn_param *t, const char *name, int ndim, const int *dims, cnn_init init)
{
    t->name = name;
    t->ndim = ndim;
    t->count = 1;
    for (int i = 0; i < ndim; i++) {
        t->dims[i] = dims[i];
        if (dims[i] < 0 || !cnn_size_mul(t->count, (size_t)dims[i], &t->count))
            t->count = SIZE_MAX; /* refused by the model */
    }
    t->init = init;
    return t->count;
}

void cnn_layer_add_param(cnn_layer *l, const char *name, int ndim, const int *dims, cnn_init init,
                         int fan_in, int fan_out, int decay)
{
    cnn_param *p = &l->params[l->nparams++];
    l->param_count += set_tensor(p, name, ndim, dims, init);
    p->fan_in = fan_in;
    p->fan_out = fan_out;
    p->decay = decay;
}

void cnn_layer_add_buffer(cnn_layer *l, const char *name, int ndim, const int *dims,
                          cnn_init init)
{
    cnn_param *b = &l->buffers[l->nbuffers++];
    set_tensor(b, name, ndim, dims, init);
    b->fan_in = b->fan_out = 0;
    b->decay = 0;
}

/* [input] shape = HxWxC: only sets the network's input shape. */
static cnn_status input_parse(const cnn_section *s, void *p, cnn_error *err)
{
    cnn_shape *shape = p;
    cnn_kv *kv = cnn_section_find(s, "shape");
    char where[320];
    cnn_cfg_where(s, kv, "shape", where, sizeof where);
    if (!kv)
        return cnn_layer_missing(s, "shape", "shape = 28x28x1", err);
    kv->used = 1;
    int h, w, c, end = 0;
    if (sscanf(kv->value, "%dx%dx%d%n", &h, &w, &c, &end) != 3 || kv->value[end] || h < 1 ||
        w < 1 || c < 1 || h > 65536 || w > 65536 || c > 65536)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: '%s' is not HxWxC (e.g. 28x28x1)", where,
                             kv->value);
    *shape = (cnn_shape){c, h, w};
    return CNN_OK;
}

static cnn_status input_make(cnn_layer *l, const void *p, cnn_shape in, cnn_error *err)
{
    l->out = *(const cnn_shape *)p;
    return CNN_OK;
}

const cnn_layer_ops cnn_input_ops = {
    .section = "input", .keras_name = "InputLayer", .default_name = "input",
    .params_size = sizeof(cnn_shape), .parse = input_parse, .make = input_make,
};
