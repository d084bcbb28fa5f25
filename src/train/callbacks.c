/* callbacks.c - Keras's EarlyStopping and ReduceLROnPlateau, decided at the
 * end of each epoch (see cnn/train.h). Every rank holds the same figures
 * and weights, so every rank takes the same decision without a message. */
#include <math.h>
#include <string.h>

#include "callbacks.h"

static const char *const monitors[] = {"loss", "accuracy", "val_loss", "val_accuracy", NULL};

/* monitor and mode of a callback section; *maximize from mode or, for
 * auto, from the monitor (accuracies up, losses down). */
static cnn_status read_monitor(const cnn_section *s, int has_validation, cnn_monitor *mon,
                               int *maximize, cnn_error *err)
{
    static const char *const modes[] = {"auto", "min", "max", NULL};
    int m, mode;
    cnn_status st;
    if ((st = cnn_cfg_enum(s, "monitor", CNN_MON_VAL_LOSS, monitors, &m, err)) ||
        (st = cnn_cfg_enum(s, "mode", 0, modes, &mode, err)))
        return st;
    *mon = (cnn_monitor)m;
    *maximize = mode == 0 ? (m == CNN_MON_ACCURACY || m == CNN_MON_VAL_ACCURACY) : mode == 2;
    if ((m == CNN_MON_VAL_LOSS || m == CNN_MON_VAL_ACCURACY) && !has_validation) {
        char where[320];
        cnn_cfg_where(s, cnn_section_find(s, "monitor"), "monitor", where, sizeof where);
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%s: %s needs a validation set ([data] validation = none); monitor "
                             "loss or accuracy instead",
                             where, monitors[m]);
    }
    return CNN_OK;
}

cnn_status cnn_callbacks_config_read(cnn_callbacks_config *c, const cnn_config *cfg,
                                     int has_validation, cnn_error *err)
{
    const cnn_section *es = cnn_config_find(cfg, "early_stopping");
    const cnn_section *rp = cnn_config_find(cfg, "reduce_lr_on_plateau");
    cnn_status st;
    memset(c, 0, sizeof *c);
    c->es.baseline = NAN;
    if (es) {
        c->es.enabled = 1;
        if ((st = read_monitor(es, has_validation, &c->es.monitor, &c->es.maximize, err)) ||
            (st = cnn_cfg_float(es, "min_delta", 0, 0, 1e300, &c->es.min_delta, err)) ||
            (st = cnn_cfg_int(es, "patience", 0, 0, 1L << 30, &c->es.patience, err)) ||
            (st = cnn_cfg_float(es, "baseline", NAN, -1e300, 1e300, &c->es.baseline, err)) ||
            (st = cnn_cfg_int(es, "start_from_epoch", 0, 0, 1L << 30, &c->es.start_from_epoch,
                              err)) ||
            (st = cnn_cfg_bool(es, "restore_best_weights", 0, &c->es.restore_best_weights, err)))
            return st;
    }
    if (rp) {
        c->rp.enabled = 1;
        if ((st = read_monitor(rp, has_validation, &c->rp.monitor, &c->rp.maximize, err)) ||
            (st = cnn_cfg_float(rp, "factor", 0.1, 0, 1, &c->rp.factor, err)) ||
            (st = cnn_cfg_int(rp, "patience", 10, 0, 1L << 30, &c->rp.patience, err)) ||
            (st = cnn_cfg_float(rp, "min_delta", 1e-4, 0, 1e300, &c->rp.min_delta, err)) ||
            (st = cnn_cfg_int(rp, "cooldown", 0, 0, 1L << 30, &c->rp.cooldown, err)) ||
            (st = cnn_cfg_float(rp, "min_lr", 0, 0, 1e300, &c->rp.min_lr, err)))
            return st;
        if (c->rp.factor >= 1.0) {
            char where[320];
            cnn_cfg_where(rp, cnn_section_find(rp, "factor"), "factor", where, sizeof where);
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s: must be below 1 (new lr = lr * factor)",
                                 where);
        }
    }
    return CNN_OK;
}

double cnn_monitor_value(cnn_monitor m, const cnn_epoch_record *r)
{
    switch (m) {
    case CNN_MON_LOSS: return r->loss;
    case CNN_MON_ACCURACY: return r->accuracy;
    case CNN_MON_VAL_LOSS: return r->val_loss;
    case CNN_MON_VAL_ACCURACY: return r->val_accuracy;
    }
    return NAN;
}

/* Keras's EarlyStopping._is_improvement: value beats ref by min_delta; no
 * reference yet (NaN) is beaten by any number. */
static int improves(double value, double ref, double min_delta, int maximize)
{
    if (isnan(ref))
        return !isnan(value);
    return maximize ? value - min_delta > ref : value + min_delta < ref;
}

static void copy_weights(float *dst_params, float *dst_buffers, const float *src_params,
                         const float *src_buffers, const cnn_model *m)
{
    memcpy(dst_params, src_params, m->nparams * sizeof(float));
    memcpy(dst_buffers, src_buffers, m->nbuffer_floats * sizeof(float));
}

int cnn_early_stopping_epoch_end(const cnn_callbacks_config *c, cnn_callback_state *cb,
                                 float *best_weights, cnn_model *m, const cnn_epoch_record *r)
{
    const long epoch = (long)r->epoch; /* 0-based, as Keras's */
    if (!c->es.enabled || epoch < c->es.start_from_epoch)
        return 0;
    const double v = cnn_monitor_value(c->es.monitor, r);
    if (isnan(v))
        return 0;
    if (best_weights && !cb->has_best_weights) { /* restored if nothing ever improves */
        copy_weights(best_weights, best_weights + m->nparams, m->params, m->buffers, m);
        cb->has_best_weights = 1;
    }
    cb->es_wait++;
    if (improves(v, cb->es_best, c->es.min_delta, c->es.maximize)) {
        cb->es_best = v;
        cb->es_best_epoch = epoch + 1;
        if (best_weights)
            copy_weights(best_weights, best_weights + m->nparams, m->params, m->buffers, m);
        if (isnan(c->es.baseline) ||
            improves(v, c->es.baseline, c->es.min_delta, c->es.maximize))
            cb->es_wait = 0;
        return 0;
    }
    if (cb->es_wait >= c->es.patience && epoch > 0) {
        cb->es_stopped_epoch = epoch + 1;
        if (best_weights && cb->has_best_weights)
            copy_weights(m->params, m->buffers, best_weights, best_weights + m->nparams, m);
        return 1;
    }
    return 0;
}

int cnn_plateau_epoch_end(const cnn_callbacks_config *c, cnn_callback_state *cb, double lr,
                          const cnn_epoch_record *r, double *new_lr)
{
    if (!c->rp.enabled)
        return 0;
    const double v = cnn_monitor_value(c->rp.monitor, r);
    if (isnan(v))
        return 0;
    if (cb->rp_cooldown > 0) {
        cb->rp_cooldown--;
        cb->rp_wait = 0;
    }
    /* ReduceLROnPlateau's monitor_op: beats best by more than min_delta */
    int better = isnan(cb->rp_best) ||
                 (c->rp.maximize ? v > cb->rp_best + c->rp.min_delta : v < cb->rp_best - c->rp.min_delta);
    if (better) {
        cb->rp_best = v;
        cb->rp_wait = 0;
        return 0;
    }
    /* Keras asks in_cooldown() again here, after the countdown */
    if (cb->rp_cooldown > 0 || ++cb->rp_wait < c->rp.patience)
        return 0;
    if (!(lr > (double)(float)c->rp.min_lr))
        return 0;
    double next = lr * c->rp.factor;
    if (next < c->rp.min_lr)
        next = c->rp.min_lr;
    if (lr > 0)
        cb->lr_scale *= next / lr;
    cb->rp_cooldown = c->rp.cooldown;
    cb->rp_wait = 0;
    *new_lr = next;
    return 1;
}
