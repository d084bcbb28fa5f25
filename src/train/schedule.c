/* schedule.c - learning-rate schedules with warm-up and the linear
 * scaling rule (see cnn/train.h). Pure functions of the update count, so
 * every rank and a resumed run compute the same rate. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/train.h"

/* A list "a, b, c" of numbers (fractions like 1/10 allowed) into v. */
static cnn_status read_list(const cnn_section *s, const char *key, double *v, int max, int *n,
                            cnn_error *err)
{
    const char *text;
    cnn_status st = cnn_cfg_string(s, key, NULL, &text, err);
    *n = 0;
    if (st || !text)
        return st;
    char where[320];
    cnn_cfg_where(s, cnn_section_find(s, key), key, where, sizeof where);
    for (const char *p = text; *p;) {
        char *end;
        double x = strtod(p, &end);
        if (end != p && *end == '/') {
            char *e2;
            double d = strtod(end + 1, &e2);
            x = e2 != end + 1 && d != 0 ? x / d : NAN;
            end = e2;
        }
        while (*end == ' ' || *end == '\t')
            end++;
        if (end == p || !isfinite(x) || (*end && *end != ','))
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: '%s' is not a list of numbers (e.g. "
                                                      "%s = 1e-3, 1e-4)",
                                 where, text, key);
        if (*n == max)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: more than %d values", where, max);
        v[(*n)++] = x;
        p = *end ? end + 1 : end;
    }
    if (*n == 0)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: empty list", where);
    return CNN_OK;
}

/* One of key_steps / key_epochs (not both); *by_epoch says which. */
static cnn_status read_steps_or_epochs(const cnn_section *s, const char *key_steps,
                                       const char *key_epochs, double *v, int *by_epoch,
                                       cnn_error *err)
{
    double a, b;
    cnn_status st;
    if ((st = cnn_cfg_float(s, key_steps, 0, 0, 1e15, &a, err)) ||
        (st = cnn_cfg_float(s, key_epochs, 0, 0, 1e9, &b, err)))
        return st;
    if (a > 0 && b > 0) {
        char where[320];
        cnn_cfg_where(s, cnn_section_find(s, key_epochs), key_epochs, where, sizeof where);
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: give %s or %s, not both", where, key_steps,
                             key_epochs);
    }
    *by_epoch = b > 0;
    *v = b > 0 ? b : a;
    return CNN_OK;
}

cnn_status cnn_lr_schedule_read(cnn_lr_schedule *sc, const cnn_config *cfg, double lr,
                                long batch_size, cnn_error *err)
{
    static const char *const kinds[] = {"constant", "piecewise", "exponential", "cosine", "step",
                                        NULL};
    const cnn_section *s = cnn_config_find(cfg, "optimizer");
    int kind;
    long ref;
    cnn_status st;
    memset(sc, 0, sizeof *sc);
    sc->lr = lr;
    if ((st = cnn_cfg_enum(s, "schedule", CNN_SCHED_CONSTANT, kinds, &kind, err)) ||
        (st = cnn_cfg_int(s, "reference_batch_size", 0, 0, 1L << 30, &ref, err)) ||
        (st = read_steps_or_epochs(s, "warmup_steps", "warmup_epochs", &sc->warmup,
                                   &sc->warmup_by_epoch, err)))
        return st;
    sc->kind = kind == 4 ? CNN_SCHED_PIECEWISE : (cnn_schedule_kind)kind;
    sc->scale = ref > 0 ? (double)batch_size / (double)ref : 1.0;
    char where[320];
    switch (sc->kind) {
    case CNN_SCHED_PIECEWISE: {
        int nv = 0, ns = 0, ne = 0;
        double steps[CNN_SCHED_MAX_BOUNDARIES], epochs[CNN_SCHED_MAX_BOUNDARIES];
        if ((st = read_list(s, "values", sc->values, CNN_SCHED_MAX_BOUNDARIES + 1, &nv, err)) ||
            (st = read_list(s, "boundaries", steps, CNN_SCHED_MAX_BOUNDARIES, &ns, err)) ||
            (st = read_list(s, "boundary_epochs", epochs, CNN_SCHED_MAX_BOUNDARIES, &ne, err)))
            return st;
        cnn_cfg_where(s, NULL, "values", where, sizeof where);
        if (ns && ne)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s: give boundaries or boundary_epochs, not both", where);
        sc->boundaries_by_epoch = ne > 0;
        sc->nboundaries = ne ? ne : ns;
        memcpy(sc->boundaries, ne ? epochs : steps, (size_t)sc->nboundaries * sizeof(double));
        if (nv != sc->nboundaries + 1)
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s: schedule = piecewise needs one more value than boundaries "
                                 "(%d values, %d boundaries)",
                                 where, nv, sc->nboundaries);
        for (int i = 1; i < sc->nboundaries; i++)
            if (sc->boundaries[i] <= sc->boundaries[i - 1])
                return cnn_error_set(err, CNN_ERR_CONFIG, "%s: boundaries must increase", where);
        for (int i = 0; i < nv; i++)
            if (sc->values[i] < 0)
                return cnn_error_set(err, CNN_ERR_CONFIG, "%s: a rate below 0", where);
        break;
    }
    case CNN_SCHED_EXPONENTIAL:
        if ((st = read_steps_or_epochs(s, "decay_steps", "decay_epochs", &sc->decay,
                                       &sc->decay_by_epoch, err)) ||
            (st = cnn_cfg_float(s, "decay_rate", 0.96, 0, 1e6, &sc->decay_rate, err)) ||
            (st = cnn_cfg_bool(s, "staircase", 0, &sc->staircase, err)))
            return st;
        if (sc->decay <= 0) {
            cnn_cfg_where(s, NULL, "decay_steps", where, sizeof where);
            return cnn_error_set(err, CNN_ERR_CONFIG,
                                 "%s: schedule = exponential needs decay_steps or decay_epochs",
                                 where);
        }
        break;
    case CNN_SCHED_COSINE:
        if ((st = read_steps_or_epochs(s, "decay_steps", "decay_epochs", &sc->decay,
                                       &sc->decay_by_epoch, err)) ||
            (st = cnn_cfg_float(s, "alpha", 0, 0, 1, &sc->alpha, err)))
            return st;
        break;
    case CNN_SCHED_CONSTANT:
        break;
    }
    return CNN_OK;
}

static int64_t to_steps(double v, int by_epoch, long steps_per_epoch)
{
    return (int64_t)llround(by_epoch ? v * (double)steps_per_epoch : v);
}

void cnn_lr_schedule_resolve(cnn_lr_schedule *s, long steps_per_epoch, long epochs)
{
    for (int i = 0; i < s->nboundaries; i++)
        s->boundary_steps[i] = to_steps(s->boundaries[i], s->boundaries_by_epoch, steps_per_epoch);
    s->decay_steps = to_steps(s->decay, s->decay_by_epoch, steps_per_epoch);
    if (s->kind == CNN_SCHED_COSINE && s->decay_steps <= 0) /* the whole run */
        s->decay_steps = (int64_t)steps_per_epoch * epochs;
    s->warmup_steps = to_steps(s->warmup, s->warmup_by_epoch, steps_per_epoch);
}

double cnn_lr_at(const cnn_lr_schedule *s, int64_t step)
{
    double lr = s->lr;
    switch (s->kind) {
    case CNN_SCHED_CONSTANT:
        break;
    case CNN_SCHED_PIECEWISE: {
        int i = 0;
        while (i < s->nboundaries && step > s->boundary_steps[i])
            i++;
        lr = s->values[i];
        break;
    }
    case CNN_SCHED_EXPONENTIAL: {
        double p = (double)step / (double)s->decay_steps;
        lr = s->lr * pow(s->decay_rate, s->staircase ? floor(p) : p);
        break;
    }
    case CNN_SCHED_COSINE:
        if (s->decay_steps > 0) {
            double t = (double)(step < s->decay_steps ? step : s->decay_steps);
            double c = 0.5 * (1.0 + cos(M_PI * t / (double)s->decay_steps));
            lr = s->lr * ((1.0 - s->alpha) * c + s->alpha);
        }
        break;
    }
    if (s->scale != 1.0)
        lr *= s->scale;
    if (step < s->warmup_steps)
        lr *= (double)(step + 1) / (double)s->warmup_steps;
    return lr;
}
