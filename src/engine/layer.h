/* layer.h - helpers shared by the layer implementations (internal). */
#ifndef CNN_LAYER_H
#define CNN_LAYER_H

#include "cnn/config.h"
#include "cnn/model.h"
#include "tensor.h"

extern const cnn_layer_ops cnn_conv2d_ops, cnn_maxpool2d_ops, cnn_avgpool2d_ops, cnn_dense_ops,
    cnn_dropout_ops, cnn_flatten_ops, cnn_input_ops;

/* padding = valid | same | N (per side). */
cnn_status cnn_layer_read_padding(const cnn_section *s, cnn_padding_mode *mode, int *amount,
                                  cnn_error *err);

/* Resolves the window geometry of a conv/pool layer on input `in`; fails
 * with a message naming the layer when the window does not fit. */
cnn_status cnn_layer_window(const cnn_layer *l, const cnn_section *s, cnn_shape in, int kh, int kw,
                            int sh, int sw, cnn_padding_mode mode, int amount, cnn_window *g,
                            cnn_error *err);

/* activation = linear|relu|sigmoid|tanh|softmax (default linear). */
cnn_status cnn_layer_read_activation(const cnn_section *s, cnn_activation *a, cnn_error *err);

/* Declares parameter tensor number l->nparams (kernel or bias). The model
 * assigns offsets after all layers are created. */
void cnn_layer_add_param(cnn_layer *l, const char *name, int ndim, const int *dims, cnn_init init,
                         int fan_in, int fan_out, int decay);

/* Declares buffer number l->nbuffers: a non-trainable tensor (moving
 * statistics), init CNN_INIT_ZEROS or CNN_INIT_ONES. The model assigns
 * offsets into model->buffers after all layers are created. */
void cnn_layer_add_buffer(cnn_layer *l, const char *name, int ndim, const int *dims,
                          cnn_init init);

/* Error for a required key that is absent; names a key of the section that
 * nothing has consumed, as it is likely the misspelt one. Call it after
 * reading the layer's optional keys. */
cnn_status cnn_layer_missing(const cnn_section *s, const char *key, const char *example,
                             cnn_error *err);

/* kernel_initializer / bias_initializer keys. */
cnn_status cnn_layer_read_init(const cnn_section *s, const char *key, cnn_init def, cnn_init *out,
                               cnn_error *err);

#endif /* CNN_LAYER_H */
