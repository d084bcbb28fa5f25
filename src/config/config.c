/* config.c - INI configuration parsed with inih.
 *
 * inih tokenises key = value lines, comments and continuation lines. Two
 * things it does not report are needed here: the line number of each key
 * (for messages) and the start of each section (layer sections repeat, and
 * [flatten] may have no keys at all). Both come from feeding inih through
 * our own line reader, which counts lines and records [headers] as it
 * hands them over.
 */
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/config.h"

/* Longest section name, section label or key of --set. */
enum { NAME_MAX_LEN = 64 };

/* Sections that may appear at most once; everything else is a layer. */
const char *const cnn_config_singletons[] = {
    "data",       "train",          "optimizer", "dist", "augment", "checkpoint",
    "early_stopping", "reduce_lr_on_plateau",
    "tune", "search", /* cnn-tune's (cnn/tune.h) */ NULL};

int cnn_config_is_singleton(const char *name)
{
    for (int i = 0; cnn_config_singletons[i]; i++)
        if (strcmp(cnn_config_singletons[i], name) == 0)
            return 1;
    return 0;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

typedef struct parse_state {
    cnn_config *cfg;
    const char *text; /* reader position */
    int line;         /* number of the line last handed to inih */
    int line_indented;
    cnn_error *err;
    int failed;
} parse_state;

static cnn_section *add_section(cnn_config *cfg, const char *name, int line)
{
    cnn_section *grown = realloc(cfg->sec, (size_t)(cfg->nsec + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    cfg->sec = grown;
    /* kv arrays hold back pointers only to cfg, so realloc is safe. */
    cnn_section *s = &cfg->sec[cfg->nsec];
    memset(s, 0, sizeof *s);
    s->name = dup_str(name);
    if (!s->name)
        return NULL;
    s->line = line;
    s->cfg = cfg;
    s->block_first = -1;
    for (int i = 0; i < cfg->nsec; i++)
        if (strcmp(cfg->sec[i].name, name) == 0)
            s->ordinal++;
    cfg->nsec++;
    return s;
}

static cnn_kv *add_kv(cnn_section *s, const char *key, const char *value, int line)
{
    cnn_kv *grown = realloc(s->kv, (size_t)(s->nkv + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    s->kv = grown;
    cnn_kv *kv = &s->kv[s->nkv];
    kv->key = dup_str(key);
    kv->value = dup_str(value);
    kv->line = line;
    kv->used = 0;
    if (!kv->key || !kv->value) {
        free(kv->key);
        free(kv->value);
        return NULL;
    }
    s->nkv++;
    return kv;
}

/* Validates a section header seen by the reader and opens the section. */
static void open_section(parse_state *ps, const char *hdr)
{
    const char *close = strchr(hdr, ']');
    if (!close)
        return; /* inih reports the syntax error */
    char name[NAME_MAX_LEN];
    size_t n = (size_t)(close - hdr);
    if (n >= sizeof name)
        n = sizeof name - 1;
    memcpy(name, hdr, n);
    name[n] = 0;
    /* trim, as inih does */
    char *b = name;
    while (isspace((unsigned char)*b))
        b++;
    char *e = b + strlen(b);
    while (e > b && isspace((unsigned char)e[-1]))
        *--e = 0;
    if (ps->failed)
        return;
    if (cnn_config_is_singleton(b) && cnn_config_find(ps->cfg, b)) {
        cnn_error_set(ps->err, CNN_ERR_CONFIG, "%s:%d: section [%s] appears twice (first at line %d)",
                      ps->cfg->path, ps->line, b, cnn_config_find(ps->cfg, b)->line);
        ps->failed = 1;
        return;
    }
    if (!add_section(ps->cfg, b, ps->line)) {
        cnn_error_set(ps->err, CNN_ERR_NOMEM, "%s: out of memory while parsing", ps->cfg->path);
        ps->failed = 1;
    }
}

/* fgets-style reader over the text in memory: counts lines and sees every
 * section header before inih does. */
static char *reader(char *str, int num, void *stream)
{
    parse_state *ps = stream;
    if (!*ps->text || num < 2)
        return NULL;
    const char *nl = strchr(ps->text, '\n');
    size_t len = nl ? (size_t)(nl - ps->text) + 1 : strlen(ps->text);
    int whole_line = 1;
    if (len > (size_t)num - 1) {
        len = (size_t)num - 1;
        whole_line = 0;
    }
    memcpy(str, ps->text, len);
    str[len] = 0;
    /* the whole line fits only if we reached its newline (or the end) */
    if (!whole_line && (len == 0 || str[len - 1] != '\n') && ps->text[len] == 0)
        whole_line = 1;
    int at_line_start = ps->line == 0 || ps->text[-1] == '\n';
    ps->text += len;
    if (!whole_line)
        ps->line += at_line_start; /* report the line being read */
    if (at_line_start && whole_line) {
        ps->line++;
        ps->line_indented = isspace((unsigned char)str[0]) && str[0] != '\n' && str[0] != '\r';
        const char *p = str;
        while (*p == ' ' || *p == '\t')
            p++;
        /* inih treats an indented line after a key as a continuation, not a header */
        int continuation = ps->line_indented && ps->cfg->nsec > 0 &&
                           ps->cfg->sec[ps->cfg->nsec - 1].nkv > 0;
        if (*p == '[' && !continuation)
            open_section(ps, p + 1);
    }
    if (!whole_line && !ps->failed) {
        /* inih's line buffer is fixed (INI_MAX_LINE); a longer line would be
         * split and its tail parsed as a line of its own. */
        cnn_error_set(ps->err, CNN_ERR_CONFIG, "%s:%d: line longer than %d characters",
                      ps->cfg->path, ps->line, num - 2);
        ps->failed = 1;
        return NULL;
    }
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    if (ps->failed)
        return 0;
    cnn_config *cfg = ps->cfg;
    if (cfg->nsec == 0 || strcmp(cfg->sec[cfg->nsec - 1].name, section) != 0) {
        cnn_error_set(ps->err, CNN_ERR_CONFIG, "%s:%d: key '%s' outside any section", cfg->path,
                      ps->line, name);
        ps->failed = 1;
        return 0;
    }
    cnn_section *s = &cfg->sec[cfg->nsec - 1];
    cnn_kv *prev = cnn_section_find(s, name);
    if (prev) {
        if (ps->line_indented)
            cnn_error_set(ps->err, CNN_ERR_CONFIG,
                          "%s:%d: [%s] indented line continues key '%s'; continuation lines are "
                          "not supported (remove the indentation)",
                          cfg->path, ps->line, section, name);
        else
            cnn_error_set(ps->err, CNN_ERR_CONFIG,
                          "%s:%d: [%s] duplicate key '%s' (first set at line %d)", cfg->path,
                          ps->line, section, name, prev->line);
        ps->failed = 1;
        return 0;
    }
    if (!add_kv(s, name, value, ps->line)) {
        cnn_error_set(ps->err, CNN_ERR_NOMEM, "%s: out of memory while parsing", cfg->path);
        ps->failed = 1;
        return 0;
    }
    return 1;
}

static cnn_status expand_blocks(cnn_config *cfg, cnn_error *err);
static void free_section(cnn_section *s);

cnn_status cnn_config_parse_string(cnn_config **out, const char *text, const char *name,
                                   cnn_error *err)
{
    *out = NULL;
    cnn_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", name);
    cfg->path = dup_str(name);
    cfg->text = dup_str(text);
    if (!cfg->path || !cfg->text) {
        cnn_config_free(cfg);
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", name);
    }
    parse_state ps = {.cfg = cfg, .text = cfg->text, .err = err};
    int rc = ini_parse_stream(reader, &ps, handler, &ps);
    if (ps.failed) {
        cnn_status s = err ? err->status : CNN_ERR_CONFIG;
        cnn_config_free(cfg);
        return s;
    }
    if (rc != 0) {
        cnn_config_free(cfg);
        if (rc < 0)
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: inih failed (%d)", name, rc);
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%s:%d: syntax error: expected '[section]' or 'key = value'", name, rc);
    }
    cnn_status st = expand_blocks(cfg, err);
    if (st) {
        cnn_config_free(cfg);
        return st;
    }
    *out = cfg;
    return CNN_OK;
}

cnn_status cnn_config_load(cnn_config **out, const char *path, cnn_error *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open config: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *grown = realloc(text, cap);
            if (!grown) {
                free(text);
                fclose(f);
                return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", path);
            }
            text = grown;
        }
        size_t got = fread(text + len, 1, 4096, f);
        len += got;
        if (got < 4096)
            break;
    }
    int bad = ferror(f), why = errno;
    fclose(f);
    if (bad) {
        free(text);
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot read config: %s", path, strerror(why));
    }
    text[len] = 0;
    if (strlen(text) != len) {
        free(text);
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: not a text file (contains NUL bytes)", path);
    }
    cnn_status s = cnn_config_parse_string(out, text, path, err);
    free(text);
    return s;
}

void cnn_config_free(cnn_config *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < cfg->nsec; i++)
        free_section(&cfg->sec[i]);
    free(cfg->sec);
    free(cfg->path);
    free(cfg->text);
    free(cfg);
}

cnn_section *cnn_config_find(const cnn_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->nsec; i++)
        if (strcmp(cfg->sec[i].name, name) == 0)
            return &cfg->sec[i];
    return NULL;
}

cnn_kv *cnn_section_find(const cnn_section *s, const char *key)
{
    if (!s)
        return NULL;
    for (int i = 0; i < s->nkv; i++)
        if (strcmp(s->kv[i].key, key) == 0)
            return &s->kv[i];
    return NULL;
}

const char *cnn_section_get(const cnn_section *s, const char *key)
{
    cnn_kv *kv = cnn_section_find(s, key);
    if (!kv)
        return NULL;
    kv->used = 1;
    return kv->value;
}

static void default_name(const cnn_section *s, char *buf, size_t n);

/* The name a user gives a section on the command line: the singleton's
 * name, or a layer's `name` key, or its default name. */
static void section_label(const cnn_section *s, char *buf, size_t n)
{
    const cnn_kv *nm = cnn_config_is_singleton(s->name) ? NULL : cnn_section_find(s, "name");
    if (nm)
        snprintf(buf, n, "%s", nm->value);
    else if (cnn_config_is_singleton(s->name))
        snprintf(buf, n, "%s", s->name);
    else
        default_name(s, buf, n);
}

void cnn_cfg_where(const cnn_section *s, const cnn_kv *kv, const char *key, char *buf, size_t n)
{
    if (kv && kv->line == 0) {
        char label[NAME_MAX_LEN + 16];
        section_label(s, label, sizeof label);
        snprintf(buf, n, "--set %s.%s", label, key);
    } else {
        snprintf(buf, n, "%s:%d: [%s] %s", s->cfg ? s->cfg->path : "?", kv ? kv->line : s->line,
                 s->name, key);
    }
}

/* Looks up key; returns NULL (use default) if absent, else marks it used. */
static cnn_kv *lookup(const cnn_section *s, const char *key)
{
    cnn_kv *kv = cnn_section_find(s, key);
    if (kv)
        kv->used = 1;
    return kv;
}

static cnn_status bad_value(const cnn_section *s, const cnn_kv *kv, const char *key,
                            cnn_error *err, const char *what)
{
    char where[320];
    cnn_cfg_where(s, kv, key, where, sizeof where);
    return cnn_error_set(err, CNN_ERR_CONFIG, "%s: '%s' %s", where, kv->value, what);
}

cnn_status cnn_cfg_int(const cnn_section *s, const char *key, long def, long min, long max,
                       long *out, cnn_error *err)
{
    cnn_kv *kv = lookup(s, key);
    if (!kv) {
        *out = def;
        return CNN_OK;
    }
    char *end;
    errno = 0;
    long v = strtol(kv->value, &end, 10);
    if (end == kv->value || *end || errno)
        return bad_value(s, kv, key, err, "is not an integer");
    if (v < min || v > max) {
        char what[96];
        snprintf(what, sizeof what, "is out of range [%ld, %ld]", min, max);
        return bad_value(s, kv, key, err, what);
    }
    *out = v;
    return CNN_OK;
}

cnn_status cnn_cfg_float(const cnn_section *s, const char *key, double def, double min,
                         double max, double *out, cnn_error *err)
{
    cnn_kv *kv = lookup(s, key);
    if (!kv) {
        *out = def;
        return CNN_OK;
    }
    char *end;
    errno = 0;
    double v = strtod(kv->value, &end);
    if (end != kv->value && *end == '/') { /* a fraction such as 1/255 */
        char *end2;
        double d = strtod(end + 1, &end2);
        if (end2 == end + 1 || d == 0)
            return bad_value(s, kv, key, err, "is not a number");
        v /= d;
        end = end2;
    }
    if (end == kv->value || *end || errno || !isfinite(v))
        return bad_value(s, kv, key, err, "is not a number");
    if (v < min || v > max) {
        char what[96];
        snprintf(what, sizeof what, "is out of range [%g, %g]", min, max);
        return bad_value(s, kv, key, err, what);
    }
    *out = v;
    return CNN_OK;
}

cnn_status cnn_cfg_bool(const cnn_section *s, const char *key, int def, int *out, cnn_error *err)
{
    static const char *const choices[] = {"false", "true", "no", "yes", "0", "1", "off", "on", NULL};
    int idx;
    cnn_status st = cnn_cfg_enum(s, key, def ? 1 : 0, choices, &idx, err);
    if (st == CNN_OK)
        *out = idx & 1;
    return st;
}

cnn_status cnn_cfg_enum(const cnn_section *s, const char *key, int def,
                        const char *const *choices, int *out, cnn_error *err)
{
    cnn_kv *kv = lookup(s, key);
    if (!kv) {
        *out = def;
        return CNN_OK;
    }
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], kv->value) == 0) {
            *out = i;
            return CNN_OK;
        }
    char what[256] = "is not one of:";
    for (int i = 0; choices[i]; i++) {
        size_t used = strlen(what);
        snprintf(what + used, sizeof what - used, "%s %s", i ? "," : "", choices[i]);
    }
    return bad_value(s, kv, key, err, what);
}

cnn_status cnn_cfg_string(const cnn_section *s, const char *key, const char *def,
                          const char **out, cnn_error *err)
{
    cnn_kv *kv = lookup(s, key);
    if (!kv) {
        *out = def;
        return CNN_OK;
    }
    if (!kv->value[0])
        return bad_value(s, kv, key, err, "is empty");
    *out = kv->value;
    return CNN_OK;
}

cnn_status cnn_cfg_pair(const cnn_section *s, const char *key, int def_h, int def_w, int *h,
                        int *w, cnn_error *err)
{
    cnn_kv *kv = lookup(s, key);
    if (!kv) {
        *h = def_h;
        *w = def_w;
        return CNN_OK;
    }
    char *end;
    errno = 0;
    long a = strtol(kv->value, &end, 10), b = a;
    if (end != kv->value && (*end == 'x' || *end == 'X' || *end == ',')) {
        char *p = end + 1;
        b = strtol(p, &end, 10);
        if (end == p)
            end = p - 1; /* force the error below */
    }
    if (end == kv->value || *end || errno)
        return bad_value(s, kv, key, err, "is not N or HxW");
    if (a < 1 || b < 1 || a > 1 << 20 || b > 1 << 20)
        return bad_value(s, kv, key, err, "must be positive");
    *h = (int)a;
    *w = (int)b;
    return CNN_OK;
}

cnn_status cnn_config_check_unused(const cnn_config *cfg, cnn_error *err)
{
    for (int i = 0; i < cfg->nsec; i++) {
        const cnn_section *s = &cfg->sec[i];
        for (int k = 0; k < s->nkv; k++)
            if (!s->kv[k].used) {
                char where[320];
                cnn_cfg_where(s, &s->kv[k], s->kv[k].key, where, sizeof where);
                return cnn_error_set(err, CNN_ERR_CONFIG,
                                     "%s: unknown key (not used by [%s] with these settings)",
                                     where, s->name);
            }
    }
    return CNN_OK;
}

/* Default layer name: conv2d, conv2d_1, ... by position among its type. */
static void default_name(const cnn_section *s, char *buf, size_t n)
{
    const cnn_config_namer namer = s->cfg ? s->cfg->layer_base : NULL;
    const char *base = namer ? namer(s->name) : NULL;
    if (!base)
        base = s->name;
    if (s->ordinal == 0)
        snprintf(buf, n, "%s", base);
    else
        snprintf(buf, n, "%s_%d", base, s->ordinal);
}

int cnn_config_trim(const char *b, const char *e, char *buf, size_t n)
{
    while (b < e && isspace((unsigned char)*b))
        b++;
    while (e > b && isspace((unsigned char)e[-1]))
        e--;
    if ((size_t)(e - b) >= n)
        return -1;
    memcpy(buf, b, (size_t)(e - b));
    buf[e - b] = 0;
    return (int)(e - b);
}

cnn_status cnn_config_override(cnn_config *cfg, const char *assignment, cnn_error *err)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = eq ? memchr(assignment, '.', (size_t)(eq - assignment)) : NULL;
    char sec[NAME_MAX_LEN], key[NAME_MAX_LEN], value[1024];
    if (!eq || !dot)
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "--set %s: expected section.key=value (e.g. train.epochs=1)",
                             assignment);
    int ls = cnn_config_trim(assignment, dot, sec, sizeof sec);
    int lk = cnn_config_trim(dot + 1, eq, key, sizeof key);
    if (ls <= 0 || lk <= 0 ||
        cnn_config_trim(eq + 1, eq + strlen(eq), value, sizeof value) < 0)
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "--set %s: expected section.key=value (e.g. train.epochs=1)",
                             assignment);

    cnn_section *target = NULL;
    if (cnn_config_is_singleton(sec)) {
        target = cnn_config_find(cfg, sec);
        if (!target && !(target = add_section(cfg, sec, 0)))
            return cnn_error_set(err, CNN_ERR_NOMEM, "--set: out of memory");
    } else {
        /* An explicit `name` wins. Otherwise a type name means its only
         * layer, and is ambiguous when there are several (the first one's
         * default name is the type's name too); anything else must be a
         * default name such as conv2d_1. */
        int of_type = 0;
        for (int i = 0; i < cfg->nsec; i++) {
            cnn_section *s = &cfg->sec[i];
            cnn_kv *nkv = cnn_config_is_singleton(s->name) ? NULL : cnn_section_find(s, "name");
            if (nkv && strcmp(nkv->value, sec) == 0 && !target)
                target = s;
            of_type += strcmp(s->name, sec) == 0;
        }
        if (!target && of_type > 1)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "--set %s: %d [%s] layers; name one by its name key or default "
                                 "name (see --summary)",
                                 assignment, of_type, sec);
        for (int i = 0; i < cfg->nsec && !target; i++) {
            cnn_section *s = &cfg->sec[i];
            char dn[NAME_MAX_LEN + 16];
            if (cnn_config_is_singleton(s->name))
                continue;
            default_name(s, dn, sizeof dn);
            if (strcmp(s->name, sec) == 0 ||
                (!cnn_section_find(s, "name") && strcmp(dn, sec) == 0))
                target = s;
        }
        if (!target)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "--set %s: no section or layer named '%s' in %s", assignment, sec,
                                 cfg->path);
    }
    if (target->block)
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "--set %s: layer '%s' comes from block '%s' (instance at %s:%d); "
                             "change the instance's parameters in the file",
                             assignment, sec, target->block, cfg->path, target->line);
    cnn_kv *kv = cnn_section_find(target, key);
    if (kv) {
        char *v = dup_str(value);
        if (!v)
            return cnn_error_set(err, CNN_ERR_NOMEM, "--set: out of memory");
        free(kv->value);
        kv->value = v;
        kv->line = 0;
        return CNN_OK;
    }
    if (!add_kv(target, key, value, 0))
        return cnn_error_set(err, CNN_ERR_NOMEM, "--set: out of memory");
    return CNN_OK;
}

void cnn_config_ignore_section(cnn_config *cfg, const char *name)
{
    for (int i = 0; i < cfg->nsec; i++)
        if (!strcmp(cfg->sec[i].name, name))
            for (int k = 0; k < cfg->sec[i].nkv; k++)
                cfg->sec[i].kv[k].used = 1;
}

/* ---- blocks: templates of layer sections, expanded after parsing ---- */

/* A block definition: [block NAME] (its keys: the parameters and their
 * defaults, "" for a required one), then the body sections up to [end]. */
typedef struct block_def {
    const char *name;
    const cnn_section *def;   /* the [block NAME] section */
    const cnn_section *body;  /* (nbody) */
    int nbody;
    int count;                /* instances so far, for default names */
} block_def;

static int is_ident(const char *s)
{
    if (!isalpha((unsigned char)*s) && *s != '_')
        return 0;
    while (*++s)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return 0;
    return 1;
}

/* "block NAME" -> NAME (NULL when s is not a block header). */
static const char *block_header(const cnn_section *s)
{
    if (strncmp(s->name, "block", 5) != 0 || !isspace((unsigned char)s->name[5]))
        return NULL;
    const char *n = s->name + 5;
    while (isspace((unsigned char)*n))
        n++;
    return n;
}

static const block_def *find_block(const block_def *b, int nb, const char *name)
{
    for (int i = 0; i < nb; i++)
        if (strcmp(b[i].name, name) == 0)
            return &b[i];
    return NULL;
}

/* The keys an instance takes besides the parameters. */
static int instance_key(const char *k)
{
    return !strcmp(k, "name") || !strcmp(k, "inputs") || !strcmp(k, "repeat");
}

/* "filters, stride" for messages. */
static void param_list(const cnn_section *def, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = 0;
    for (int k = 0; k < def->nkv && o < n; k++)
        o += (size_t)snprintf(buf + o, n - o, "%s%s", k ? ", " : "", def->kv[k].key);
    if (!def->nkv)
        snprintf(buf, n, "none");
}

/* The value of $ref in an instance: from the instance (*line its line) or
 * the block's default; NULL if ref is no parameter. */
static const char *param_value(const block_def *b, const cnn_section *inst, const char *ref,
                               int *line)
{
    const cnn_kv *kv = inst ? cnn_section_find(inst, ref) : NULL;
    if (kv && !instance_key(ref)) {
        *line = kv->line;
        return kv->value;
    }
    kv = cnn_section_find(b->def, ref);
    return kv ? kv->value : NULL;
}

typedef struct subst_ctx {
    const block_def *b;
    const cnn_section *inst; /* NULL: only check the references */
    const char *name;        /* instance name */
    const char *input;       /* the block's input, or "$input" for the model */
} subst_ctx;

/* Writes v with $param / ${param} / $name / $input replaced into out (n
 * bytes). *line becomes the instance line of the first substituted
 * parameter given by the instance. Error (naming the key at kvline) for an
 * unknown reference or a result longer than n. */
static cnn_status substitute(const subst_ctx *c, const cnn_section *at, const cnn_kv *kv,
                             char *out, size_t n, int *line, cnn_error *err)
{
    const char *v = kv->value;
    size_t o = 0;
    while (*v) {
        if (*v != '$') {
            if (o + 1 >= n)
                goto too_long;
            out[o++] = *v++;
            continue;
        }
        char ref[NAME_MAX_LEN];
        size_t r = 0;
        int brace = v[1] == '{';
        const char *p = v + 1 + brace;
        while ((isalnum((unsigned char)*p) || *p == '_') && r + 1 < sizeof ref)
            ref[r++] = *p++;
        ref[r] = 0;
        if (brace && *p++ != '}')
            r = 0;
        if (!r)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s:%d: [%s] %s: '%s': a '$' must start $parameter or "
                                 "${parameter} (block '%s')",
                                 at->cfg->path, kv->line, at->name, kv->key, kv->value, c->b->name);
        int pl = 0;
        const char *val = !strcmp(ref, "name")    ? c->name
                          : !strcmp(ref, "input") ? c->input
                                                  : param_value(c->b, c->inst, ref, &pl);
        if (!val) {
            char list[256];
            param_list(c->b->def, list, sizeof list);
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s:%d: [%s] %s: '$%s' is no parameter of block '%s' "
                                 "(parameters: %s; also $name, $input)",
                                 at->cfg->path, kv->line, at->name, kv->key, ref, c->b->name, list);
        }
        if (pl && !*line)
            *line = pl;
        size_t len = strlen(val);
        if (o + len >= n)
            goto too_long;
        memcpy(out + o, val, len);
        o += len;
        v = p;
    }
    out[o] = 0;
    return CNN_OK;
too_long:
    return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [%s] %s: value too long after substitution",
                         at->cfg->path, kv->line, at->name, kv->key);
}

/* Is tok the name key of a section of the block's body? */
static int local_name(const block_def *b, const char *tok)
{
    for (int i = 0; i < b->nbody; i++) {
        const cnn_kv *kv = cnn_section_find(&b->body[i], "name");
        if (kv && strcmp(kv->value, tok) == 0)
            return 1;
    }
    return 0;
}

/* inputs of a body section: each local name prefixed with the instance name. */
static void prefix_locals(const block_def *b, const char *inst, const char *in, char *out,
                          size_t n)
{
    size_t o = 0;
    out[0] = 0;
    while (*in && o + 1 < n) {
        const char *e = strchr(in, ',');
        if (!e)
            e = in + strlen(in);
        char tok[NAME_MAX_LEN * 2];
        if (cnn_config_trim(in, e, tok, sizeof tok) < 0)
            snprintf(tok, sizeof tok, "?");
        if (local_name(b, tok))
            o += (size_t)snprintf(out + o, n - o, "%s%s_%s", o ? ", " : "", inst, tok);
        else
            o += (size_t)snprintf(out + o, n - o, "%s%s", o ? ", " : "", tok);
        in = *e ? e + 1 : e;
    }
}

/* The sections being built by expand_blocks. */
typedef struct sec_list {
    cnn_section *sec;
    int n, cap;
} sec_list;

static cnn_section *list_add(sec_list *l)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        cnn_section *g = realloc(l->sec, (size_t)cap * sizeof *g);
        if (!g)
            return NULL;
        l->sec = g;
        l->cap = cap;
    }
    cnn_section *s = &l->sec[l->n++];
    memset(s, 0, sizeof *s);
    s->block_first = -1;
    return s;
}

static void free_section(cnn_section *s)
{
    for (int k = 0; k < s->nkv; k++) {
        free(s->kv[k].key);
        free(s->kv[k].value);
    }
    free(s->kv);
    free(s->name);
    free(s->block);
}

/* Appends one instance of b (named name, fed by input) to out. */
static cnn_status expand_instance(block_def *b, const cnn_section *inst, const char *name,
                                  const char *input, const cnn_kv *inputs_kv, sec_list *out,
                                  cnn_error *err)
{
    const cnn_config *cfg = inst->cfg;
    subst_ctx c = {b, inst, name, input};
    const int first = out->n;
    for (int i = 0; i < b->nbody; i++) {
        const cnn_section *t = &b->body[i];
        cnn_section *s = list_add(out);
        if (!s || !(s->name = dup_str(t->name)) || !(s->block = dup_str(b->name)))
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory expanding blocks",
                                 cfg->path);
        s->line = inst->line;
        s->block_line = t->line;
        s->block_first = first;
        s->cfg = cfg;
        int has_inputs = 0;
        for (int k = 0; k < t->nkv; k++) {
            char v[1024], v2[1024 + NAME_MAX_LEN + 2];
            int line = 0;
            cnn_status st = substitute(&c, t, &t->kv[k], v, sizeof v, &line, err);
            if (st)
                return st;
            const char *key = t->kv[k].key, *val = v;
            if (!strcmp(key, "name")) {
                snprintf(v2, sizeof v2, "%s_%s", name, v);
                val = v2;
            } else if (!strcmp(key, "inputs")) {
                prefix_locals(b, name, v, v2, sizeof v2);
                val = v2;
                has_inputs = 1;
            }
            if (!add_kv(s, key, val, line ? line : t->kv[k].line))
                return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory expanding blocks",
                                     cfg->path);
        }
        /* the first section takes the instance's inputs, not the section before it */
        if (i == 0 && !has_inputs && inputs_kv && !add_kv(s, "inputs", input, inputs_kv->line))
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory expanding blocks",
                                 cfg->path);
    }
    return CNN_OK;
}

/* Checks an instance's keys and expands it `repeat` times into out. */
static cnn_status expand_instances(block_def *b, cnn_section *inst, sec_list *out,
                                   cnn_error *err)
{
    const cnn_config *cfg = inst->cfg;
    char list[256];
    param_list(b->def, list, sizeof list);
    for (int k = 0; k < inst->nkv; k++) {
        const cnn_kv *kv = &inst->kv[k];
        if (!instance_key(kv->key) && !cnn_section_find(b->def, kv->key))
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s:%d: [%s] %s: not a parameter of block '%s' (line %d; "
                                 "parameters: %s; also name, inputs, repeat)",
                                 cfg->path, kv->line, inst->name, kv->key, b->name, b->def->line,
                                 list);
        if (!kv->value[0])
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [%s] %s: is empty", cfg->path,
                                 kv->line, inst->name, kv->key);
        inst->kv[k].used = 1;
    }
    for (int k = 0; k < b->def->nkv; k++)
        if (!b->def->kv[k].value[0] && !cnn_section_find(inst, b->def->kv[k].key))
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s:%d: [%s] %s: missing; block '%s' (line %d) needs it "
                                 "(parameters: %s)",
                                 cfg->path, inst->line, inst->name, b->def->kv[k].key, b->name,
                                 b->def->line, list);
    long repeat;
    cnn_status st = cnn_cfg_int(inst, "repeat", 1, 1, 10000, &repeat, err);
    const char *nm = NULL, *inputs = NULL;
    if (st || (st = cnn_cfg_string(inst, "name", NULL, &nm, err)) ||
        (st = cnn_cfg_string(inst, "inputs", NULL, &inputs, err)))
        return st;
    for (long r = 0; r < repeat; r++) {
        char name[NAME_MAX_LEN];
        const char *base = nm ? nm : b->name;
        int ord = nm ? (int)r : b->count++;
        if (ord == 0)
            snprintf(name, sizeof name, "%s", base);
        else
            snprintf(name, sizeof name, "%s_%d", base, ord);
        /* only the first repetition takes the instance's inputs */
        const cnn_kv *ikv = r == 0 ? cnn_section_find(inst, "inputs") : NULL;
        if ((st = expand_instance(b, inst, name, ikv ? inputs : "$input", ikv, out, err)))
            return st;
    }
    return CNN_OK;
}

/* Reads the block definitions of cfg into *blocks (the sections stay in
 * cfg->sec; b->body points into it). */
static cnn_status find_blocks(cnn_config *cfg, block_def **blocks, int *nblocks, cnn_error *err)
{
    *blocks = NULL;
    *nblocks = 0;
    for (int i = 0; i < cfg->nsec; i++) {
        const cnn_section *s = &cfg->sec[i];
        const char *bn = block_header(s);
        if (!bn && strcmp(s->name, "end") == 0)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [end] outside a block",
                                 cfg->path, s->line);
        if (!bn)
            continue;
        if (!is_ident(bn) || cnn_config_is_singleton(bn) || !strcmp(bn, "block") ||
            !strcmp(bn, "end"))
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s:%d: [%s]: a block's name is a word of letters, digits and "
                                 "'_' (not a singleton section)",
                                 cfg->path, s->line, s->name);
        if (find_block(*blocks, *nblocks, bn))
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: block '%s' is defined twice",
                                 cfg->path, s->line, bn);
        for (int k = 0; k < s->nkv; k++)
            if (instance_key(s->kv[k].key) || !strcmp(s->kv[k].key, "input") ||
                !is_ident(s->kv[k].key))
                return cnn_error_set(err, CNN_ERR_CONFIG,
                                     "%s:%d: [%s] %s: not a possible parameter name (name, "
                                     "input, inputs and repeat are taken)",
                                     cfg->path, s->kv[k].line, s->name, s->kv[k].key);
        int j = i + 1;
        for (; j < cfg->nsec && strcmp(cfg->sec[j].name, "end") != 0; j++) {
            const cnn_section *t = &cfg->sec[j];
            if (block_header(t) || cnn_config_is_singleton(t->name) ||
                find_block(*blocks, *nblocks, t->name))
                return cnn_error_set(err, CNN_ERR_CONFIG,
                                     "%s:%d: [%s] inside block '%s' (line %d): a block holds "
                                     "layer sections only, up to [end]",
                                     cfg->path, t->line, t->name, bn, s->line);
        }
        if (j == cfg->nsec)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: block '%s' has no [end]", cfg->path,
                                 s->line, bn);
        if (j == i + 1)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: block '%s' has no sections",
                                 cfg->path, s->line, bn);
        block_def *g = realloc(*blocks, (size_t)(*nblocks + 1) * sizeof *g);
        if (!g)
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", cfg->path);
        *blocks = g;
        g[*nblocks] = (block_def){bn, s, &cfg->sec[i + 1], j - i - 1, 0};
        /* every reference in the body must name a parameter */
        subst_ctx c = {&g[*nblocks], NULL, "x", "x"};
        for (int t = i + 1; t < j; t++)
            for (int k = 0; k < cfg->sec[t].nkv; k++) {
                char v[1024];
                int line = 0;
                cnn_status st = substitute(&c, &cfg->sec[t], &cfg->sec[t].kv[k], v, sizeof v,
                                           &line, err);
                if (st)
                    return st;
            }
        (*nblocks)++;
        i = j;
    }
    return CNN_OK;
}

/* Replaces block definitions by nothing and instances by their sections;
 * ordinals are counted again over the result. */
static cnn_status expand_blocks(cnn_config *cfg, cnn_error *err)
{
    block_def *blocks;
    int nb;
    cnn_status st = find_blocks(cfg, &blocks, &nb, err);
    if (st || nb == 0) {
        free(blocks);
        return st;
    }
    sec_list out = {0};
    for (int i = 0; i < cfg->nsec && !st; i++) {
        cnn_section *s = &cfg->sec[i];
        block_def *b = (block_def *)find_block(blocks, nb, s->name);
        if (block_header(s)) {
            while (strcmp(cfg->sec[i].name, "end") != 0)
                i++;
        } else if (b) {
            st = expand_instances(b, s, &out, err);
        } else {
            cnn_section *d = list_add(&out);
            if (!d) {
                st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", cfg->path);
                break;
            }
            *d = *s; /* moved */
            memset(s, 0, sizeof *s);
        }
    }
    free(blocks);
    for (int i = 0; i < cfg->nsec; i++)
        free_section(&cfg->sec[i]);
    free(cfg->sec);
    cfg->sec = out.sec;
    cfg->nsec = out.n;
    if (st)
        return st;
    for (int i = 0; i < cfg->nsec; i++) {
        cfg->sec[i].ordinal = 0;
        for (int j = 0; j < i; j++)
            cfg->sec[i].ordinal += strcmp(cfg->sec[j].name, cfg->sec[i].name) == 0;
    }
    return CNN_OK;
}
