/* cnn/config.h - the INI file that describes data, training and network.
 *
 * A config is an ordered list of sections. The singleton sections
 * ([data], [train], [optimizer], [dist], [augment], [checkpoint]:
 * cnn_config_singletons) may appear once each; every other section is a
 * layer ([input], [conv2d], ...), in network order, as many times as
 * needed. This module knows no layer: it parses any section name, rejects
 * a second singleton and duplicate keys, and leaves it to the model
 * (cnn_model_create) to reject a section that is no layer type. Consumers
 * read keys with the typed getters below, which mark a key as used;
 * cnn_config_check_unused() then rejects every key that nothing consumed,
 * so a misspelt key is an error, never silently ignored.
 *
 * Every error message has the form "FILE:LINE: [section] key: problem"
 * (or "--set section.key: problem" for command-line overrides).
 *
 * Blocks: a group of layer sections written once and instantiated with
 * parameters, expanded while parsing (so every expanded section and key
 * keeps a file:line):
 *
 *     [block basic]            ; parameters and their defaults
 *     filters =                ; empty: required
 *     stride = 1
 *     [conv2d]                 ; the body: layer sections up to [end]
 *     name = conv1             ; named: becomes INSTANCE_conv1
 *     filters = $filters       ; $param or ${param}; $name: the instance name
 *     stride = ${stride}
 *     [add]
 *     inputs = $input, conv1   ; $input: the block's input; conv1: the local one
 *     [end]
 *
 *     [basic]                  ; an instance: the block's name as a section
 *     filters = 32             ; keys: parameters, name, inputs, repeat
 *     repeat = 2               ; two instances, the second fed by the first
 *
 * An instance without `name` is called BLOCK, BLOCK_1, ... like layers;
 * its input is `inputs` (default: the layer before it). A key that is not
 * a parameter, a missing required parameter, a $reference to no parameter,
 * an unterminated or nested block are errors naming the file and line.
 * Values substituted from an instance keep the instance's line, so a bad
 * parameter is reported where it was written.
 */
#ifndef CNN_CONFIG_H
#define CNN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_kv {
    char *key;
    char *value;
    int line; /* line in the file; 0 for a --set override */
    int used; /* set by the getters */
} cnn_kv;

typedef struct cnn_section {
    char *name; /* section name as written: "conv2d" */
    int line;   /* line of the [header] */
    int ordinal; /* 0,1,2... among sections of the same name */
    cnn_kv *kv;
    int nkv;
    const struct cnn_config *cfg; /* back pointer for messages */
    /* A section expanded from a block instance (see "Blocks" above): the
     * block's name (else NULL), the line of the section in the block, and
     * the index in cfg->sec of the first section of the instance, whose
     * default input is the block's input `$input`; -1 when not expanded.
     * line is the instance's [header] line. */
    char *block;
    int block_line;
    int block_first;
} cnn_section;

/* Base of the default name of a layer section, as the layer code names its
 * layers: "maxpool2d" -> "max_pooling2d" (then max_pooling2d_1, ...). The
 * engine's is cnn_layer_default_name (cnn/layer.h). NULL, or a NULL
 * result: the section's own name. */
typedef const char *(*cnn_config_namer)(const char *section);

typedef struct cnn_config {
    char *path; /* file name used in messages */
    char *text; /* the full text as read (kept for checkpoints) */
    cnn_section *sec;
    int nsec;
    /* Used by --set and its messages to find a layer by default name; set
     * it before cnn_config_override(). NULL after parsing. */
    cnn_config_namer layer_base;
} cnn_config;

/* The sections that may appear at most once, NULL-terminated: data, train,
 * optimizer, dist, augment, checkpoint. */
extern const char *const cnn_config_singletons[];
int cnn_config_is_singleton(const char *name);

/* Parses the INI file at path. On success *out owns a new config that the
 * caller frees with cnn_config_free(). */
cnn_status cnn_config_load(cnn_config **out, const char *path, cnn_error *err);

/* Same, from text in memory; name is used in messages. */
cnn_status cnn_config_parse_string(cnn_config **out, const char *text, const char *name,
                                   cnn_error *err);

void cnn_config_free(cnn_config *cfg);

/* Applies "section.key=value". section is a singleton section name
 * (data, train, optimizer, dist, augment, checkpoint; created if absent) or
 * a layer: its `name` key, its default name (conv2d, conv2d_1, dense_2,
 * max_pooling2d, ... through cfg->layer_base), or its type when there is
 * only one. */
cnn_status cnn_config_override(cnn_config *cfg, const char *assignment, cnn_error *err);

/* The effective config as INI text, for a checkpoint's /config: the text
 * as read when nothing was overridden; otherwise that text with each key
 * --set changed rewritten in place (the file's line kept as a comment
 * above it), each key it added written at the end of its section and each
 * section it added at the end, so the text parses back to the same
 * sections and values and a user can read it and run it again. *out is
 * the caller's to free(). */
cnn_status cnn_config_text(const cnn_config *cfg, char **out, cnn_error *err);

/* Copies [b, e) without its surrounding blanks into buf (n bytes) and
 * returns its length, or -1 when it does not fit. */
int cnn_config_trim(const char *b, const char *e, char *buf, size_t n);

/* First section with this name, or NULL. */
cnn_section *cnn_config_find(const cnn_config *cfg, const char *name);

/* Key lookup; marks the key used. NULL if absent. */
const char *cnn_section_get(const cnn_section *s, const char *key);
cnn_kv *cnn_section_find(const cnn_section *s, const char *key);

/* Typed getters: absent key -> *out = def and CNN_OK. A present but
 * malformed or out-of-range value -> CNN_ERR_CONFIG with file:line. s may be
 * NULL (section absent): the default is used. */
cnn_status cnn_cfg_int(const cnn_section *s, const char *key, long def, long min, long max,
                       long *out, cnn_error *err);
cnn_status cnn_cfg_float(const cnn_section *s, const char *key, double def, double min,
                         double max, double *out, cnn_error *err);
cnn_status cnn_cfg_bool(const cnn_section *s, const char *key, int def, int *out,
                        cnn_error *err);
/* Value must be one of the NULL-terminated choices; *out is its index. */
cnn_status cnn_cfg_enum(const cnn_section *s, const char *key, int def,
                        const char *const *choices, int *out, cnn_error *err);
/* A string value (NULL if absent and def is NULL). Pointer owned by cfg. */
cnn_status cnn_cfg_string(const cnn_section *s, const char *key, const char *def,
                          const char **out, cnn_error *err);
/* "N" or "HxW" (also "N,M"): two positive integers, a single N means NxN. */
cnn_status cnn_cfg_pair(const cnn_section *s, const char *key, int def_h, int def_w,
                        int *h, int *w, cnn_error *err);

/* Formats the location of a key for messages: "file:12: [conv2d] filters". */
void cnn_cfg_where(const cnn_section *s, const cnn_kv *kv, const char *key, char *buf,
                   size_t n);

/* Marks every key of the sections named `name` used: for a program that
 * has no use for a section but accepts configs that have it. */
void cnn_config_ignore_section(cnn_config *cfg, const char *name);

/* Error for the first key nothing consumed. */
cnn_status cnn_config_check_unused(const cnn_config *cfg, cnn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* CNN_CONFIG_H */
