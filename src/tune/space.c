/* space.c - the search space of [search]: Keras Tuner's hp.Float, hp.Int,
 * hp.Choice, hp.Boolean and hp.Fixed written one a line, random points and
 * the grid (see cnn/tune.h). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/rng.h"
#include "cnn/tune.h"

/* The random streams of the sampler and of the executions' seeds, beside
 * the trainer's (cnn/rng.h). */
enum { TUNE_STREAM = 0x54554e45, EXEC_STREAM = 0x45584543 }; /* "TUNE", "EXEC" */

enum { MAX_ARGS = CNN_TUNE_MAX_CHOICES };

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    *out = strtod(s, &end);
    return *s && !*end && errno == 0 && isfinite(*out);
}

static int parse_long(const char *s, double *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    *out = (double)v;
    return *s && !*end && errno == 0;
}

/* The range hyper-parameters: "min, max[, step=S][, sampling=linear|log]". */
static cnn_status parse_range(cnn_tune_hp *hp, char (*arg)[CNN_TUNE_VALUE_LEN], int na,
                              const char *where, cnn_error *err)
{
    const int is_int = hp->kind == CNN_HP_INT;
    int (*num)(const char *, double *) = is_int ? parse_long : parse_double;
    const char *kind = is_int ? "int" : "float";
    int npos = 0;
    double pos[2] = {0, 0};
    hp->step = 0;
    for (int i = 0; i < na; i++) {
        char *eq = strchr(arg[i], '=');
        if (!eq) {
            if (npos == 2)
                return cnn_error_set(err, CNN_ERR_CONFIG, "%s: %s() takes min, max and the "
                                     "keywords step= and sampling=, not '%s'", where, kind,
                                     arg[i]);
            if (!num(arg[i], &pos[npos]))
                return cnn_error_set(err, CNN_ERR_CONFIG, "%s: '%s' is not %s", where, arg[i],
                                     is_int ? "an integer" : "a number");
            npos++;
            continue;
        }
        char k[32], v[CNN_TUNE_VALUE_LEN];
        if (cnn_config_trim(arg[i], eq, k, sizeof k) < 0 ||
            cnn_config_trim(eq + 1, eq + strlen(eq), v, sizeof v) < 0)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: '%s' is too long", where, arg[i]);
        if (!strcmp(k, "step")) {
            if (!num(v, &hp->step) || hp->step <= 0)
                return cnn_error_set(err, CNN_ERR_CONFIG, "%s: step must be a positive %s, "
                                     "not '%s'", where, is_int ? "integer" : "number", v);
        } else if (!strcmp(k, "sampling")) {
            if (!strcmp(v, "log"))
                hp->log = 1;
            else if (strcmp(v, "linear"))
                return cnn_error_set(err, CNN_ERR_CONFIG, "%s: sampling must be linear or log, "
                                     "not '%s'", where, v);
        } else {
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: %s() has no keyword '%s' (step, "
                                 "sampling)", where, kind, k);
        }
    }
    if (npos < 2)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: %s() needs min and max, e.g. %s", where,
                             kind, is_int ? "int(16, 64, step=16)" : "float(1e-4, 1e-2, sampling=log)");
    hp->min = pos[0];
    hp->max = pos[1];
    if (hp->min > hp->max)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: min %g is above max %g", where, hp->min,
                             hp->max);
    if (hp->log && hp->min <= 0)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: sampling = log needs min > 0", where);
    if (hp->log && hp->step && hp->step <= 1)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: with sampling = log the step multiplies; "
                             "it must be above 1", where);
    if (is_int && !hp->step && !hp->log)
        hp->step = 1;
    return CNN_OK;
}

cnn_status cnn_tune_hp_parse(cnn_tune_hp *hp, const char *value, const char *where,
                             cnn_error *err)
{
    static const struct {
        const char *name;
        cnn_hp_kind kind;
    } kinds[] = {{"float", CNN_HP_FLOAT}, {"int", CNN_HP_INT},      {"choice", CNN_HP_CHOICE},
                 {"boolean", CNN_HP_BOOLEAN}, {"fixed", CNN_HP_FIXED}};
    const char *open = strchr(value, '('), *end = value + strlen(value);
    while (end > value && isspace((unsigned char)end[-1]))
        end--;
    char fn[16];
    if (!open || end == value || end[-1] != ')' ||
        cnn_config_trim(value, open, fn, sizeof fn) < 0)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: expected float(...), int(...), "
                             "choice(...), boolean() or fixed(...), not '%s'", where, value);
    int k = -1;
    for (int i = 0; i < (int)(sizeof kinds / sizeof kinds[0]); i++)
        if (!strcmp(fn, kinds[i].name))
            k = i;
    if (k < 0)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: unknown hyper-parameter type '%s' (float, "
                             "int, choice, boolean, fixed)", where, fn);
    hp->kind = kinds[k].kind;
    hp->log = 0;
    hp->nchoices = 0;
    /* the arguments between the parentheses, split at commas */
    char arg[MAX_ARGS][CNN_TUNE_VALUE_LEN], inner[1024];
    int na = 0;
    if (cnn_config_trim(open + 1, end - 1, inner, sizeof inner) < 0)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: the value is too long", where);
    for (const char *p = inner; *inner;) {
        const char *c = strchr(p, ',');
        const char *e = c ? c : p + strlen(p);
        if (na == MAX_ARGS)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: more than %d values", where, MAX_ARGS);
        int len = cnn_config_trim(p, e, arg[na], sizeof arg[na]);
        if (len < 0)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: a value longer than %d characters",
                                 where, CNN_TUNE_VALUE_LEN - 1);
        if (len == 0)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: an empty value in '%s'", where, value);
        na++;
        if (!c)
            break;
        p = c + 1;
    }
    switch (hp->kind) {
    case CNN_HP_FLOAT:
    case CNN_HP_INT:
        return parse_range(hp, arg, na, where, err);
    case CNN_HP_BOOLEAN:
        if (na)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: boolean() takes no values", where);
        strcpy(hp->choices[0], "false");
        strcpy(hp->choices[1], "true");
        hp->nchoices = 2;
        return CNN_OK;
    case CNN_HP_FIXED:
    case CNN_HP_CHOICE:
        if (hp->kind == CNN_HP_FIXED ? na != 1 : na < 1)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: %s", where,
                                 hp->kind == CNN_HP_FIXED ? "fixed() takes one value"
                                                          : "choice() needs at least one value");
        for (int i = 0; i < na; i++) {
            for (int j = 0; j < i; j++)
                if (!strcmp(arg[i], arg[j]))
                    return cnn_error_set(err, CNN_ERR_CONFIG, "%s: '%s' appears twice", where,
                                         arg[i]);
            strcpy(hp->choices[i], arg[i]);
        }
        hp->nchoices = na;
        return CNN_OK;
    }
    return CNN_OK;
}

cnn_status cnn_tune_space_read(cnn_tune_space *sp, const cnn_config *cfg, cnn_error *err)
{
    memset(sp, 0, sizeof *sp);
    const cnn_section *s = cnn_config_find(cfg, "search");
    if (!s || s->nkv == 0)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: no [search] section with hyper-parameters "
                             "(e.g. optimizer.lr = float(1e-4, 1e-2, sampling=log))", cfg->path);
    for (int i = 0; i < s->nkv; i++) {
        cnn_kv *kv = &s->kv[i];
        char where[512];
        snprintf(where, sizeof where, "%s:%d: [search] %s", cfg->path, kv->line, kv->key);
        kv->used = 1;
        if (sp->n == CNN_TUNE_MAX_HP)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: more than %d hyper-parameters", where,
                                 CNN_TUNE_MAX_HP);
        cnn_tune_hp *hp = &sp->hp[sp->n];
        const char *dot = strchr(kv->key, '.');
        if (!dot || dot == kv->key || !dot[1] || strlen(kv->key) >= sizeof hp->name)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: the key must be section.key as for "
                                 "--set (e.g. optimizer.lr)", where);
        snprintf(hp->name, sizeof hp->name, "%s", kv->key);
        hp->line = kv->line;
        cnn_status st = cnn_tune_hp_parse(hp, kv->value, where, err);
        if (st)
            return st;
        sp->n++;
    }
    return CNN_OK;
}

/* The number of values of a range on its step grid (0: a float without a
 * step, which has no grid). */
static int64_t range_count(const cnn_tune_hp *hp)
{
    if (!hp->step)
        return hp->kind == CNN_HP_INT ? (int64_t)(hp->max - hp->min) + 1 : 0;
    double k = hp->log ? log(hp->max / hp->min) / log(hp->step) : (hp->max - hp->min) / hp->step;
    return (int64_t)floor(k + 1e-9) + 1;
}

static int64_t hp_count(const cnn_tune_hp *hp)
{
    return hp->kind == CNN_HP_FLOAT || hp->kind == CNN_HP_INT ? range_count(hp) : hp->nchoices;
}

/* Value number i of the grid of hp, as config text. */
static void hp_value(const cnn_tune_hp *hp, int64_t i, char *out)
{
    if (hp->kind != CNN_HP_FLOAT && hp->kind != CNN_HP_INT) {
        snprintf(out, CNN_TUNE_VALUE_LEN, "%s", hp->choices[i]);
        return;
    }
    double step = hp->step ? hp->step : 1;
    double v = hp->log && hp->step ? hp->min * pow(step, (double)i) : hp->min + (double)i * step;
    if (hp->kind == CNN_HP_INT)
        snprintf(out, CNN_TUNE_VALUE_LEN, "%ld", lround(v));
    else
        snprintf(out, CNN_TUNE_VALUE_LEN, "%.10g", v);
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform53(uint64_t h) { return (double)(h >> 11) * 0x1p-53; }

void cnn_tune_sample(const cnn_tune_space *sp, uint64_t seed, uint64_t sample, uint64_t attempt,
                     cnn_tune_point *p)
{
    memset(p, 0, sizeof *p);
    for (int j = 0; j < sp->n; j++) {
        const cnn_tune_hp *hp = &sp->hp[j];
        double u = uniform53(cnn_rng_hash(seed, TUNE_STREAM + (uint64_t)j, sample, attempt));
        int64_t n = hp_count(hp);
        if (n > 0) {
            int64_t i = (int64_t)(u * (double)n);
            hp_value(hp, i < n ? i : n - 1, p->v[j]);
            continue;
        }
        /* a continuous range: uniform, or log-uniform */
        double v = hp->log ? exp(log(hp->min) + u * (log(hp->max) - log(hp->min)))
                           : hp->min + u * (hp->max - hp->min);
        if (hp->kind == CNN_HP_INT)
            snprintf(p->v[j], CNN_TUNE_VALUE_LEN, "%ld", lround(v));
        else
            snprintf(p->v[j], CNN_TUNE_VALUE_LEN, "%.6g", v);
    }
}

uint64_t cnn_tune_execution_seed(uint64_t tune_seed, uint64_t train_seed, int root, int k)
{
    if (k == 0)
        return train_seed;
    return cnn_rng_hash(tune_seed, EXEC_STREAM, (uint64_t)root, (uint64_t)k) >> 34;
}

int64_t cnn_tune_grid_size(const cnn_tune_space *sp)
{
    int64_t total = 1;
    for (int j = 0; j < sp->n; j++) {
        int64_t n = hp_count(&sp->hp[j]);
        if (n <= 0)
            return 0;
        total = total > INT64_MAX / n ? INT64_MAX : total * n;
    }
    return total;
}

void cnn_tune_grid_point(const cnn_tune_space *sp, int64_t i, cnn_tune_point *p)
{
    memset(p, 0, sizeof *p);
    for (int j = sp->n - 1; j >= 0; j--) {
        int64_t n = hp_count(&sp->hp[j]);
        hp_value(&sp->hp[j], i % n, p->v[j]);
        i /= n;
    }
}

int cnn_tune_point_equal(const cnn_tune_space *sp, const cnn_tune_point *a,
                         const cnn_tune_point *b)
{
    for (int j = 0; j < sp->n; j++)
        if (strcmp(a->v[j], b->v[j]))
            return 0;
    return 1;
}
