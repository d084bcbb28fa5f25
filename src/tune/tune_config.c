/* tune_config.c - the [tune] section and Keras Tuner's Hyperband
 * arithmetic (see cnn/tune.h). */
#include <math.h>
#include <string.h>

#include "cnn/tune.h"

const char *const cnn_tune_objective_names[] = {"loss", "accuracy", "val_loss", "val_accuracy",
                                                NULL};

cnn_status cnn_tune_config_read(cnn_tune_config *tc, const cnn_config *cfg, cnn_error *err)
{
    static const char *const algorithms[] = {"random", "grid", "hyperband", NULL};
    static const char *const directions[] = {"auto", "max", "min", NULL};
    memset(tc, 0, sizeof *tc);
    const cnn_section *s = cnn_config_find(cfg, "tune");
    if (!s)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s: no [tune] section (objective, algorithm, "
                             "max_trials, ...)", cfg->path);
    int obj, dir, alg;
    long seed;
    cnn_status st;
    if ((st = cnn_cfg_enum(s, "objective", CNN_OBJ_VAL_ACCURACY, cnn_tune_objective_names, &obj,
                           err)) ||
        (st = cnn_cfg_enum(s, "direction", 0, directions, &dir, err)) ||
        (st = cnn_cfg_enum(s, "algorithm", CNN_TUNE_RANDOM, algorithms, &alg, err)) ||
        (st = cnn_cfg_int(s, "max_trials", 0, 1, 1000000, &tc->max_trials, err)) ||
        (st = cnn_cfg_int(s, "executions_per_trial", 1, 1, 100, &tc->executions, err)) ||
        (st = cnn_cfg_int(s, "ranks_per_trial", 1, 1, 1 << 20, &tc->ranks_per_trial, err)) ||
        (st = cnn_cfg_int(s, "seed", 1, 0, 0x7fffffffL, &seed, err)) ||
        (st = cnn_cfg_string(s, "dir", "tune", &tc->dir, err)) ||
        (st = cnn_cfg_int(s, "max_epochs", 0, 1, 1000000, &tc->max_epochs, err)) ||
        (st = cnn_cfg_int(s, "factor", 3, 2, 1000, &tc->factor, err)) ||
        (st = cnn_cfg_int(s, "hyperband_iterations", 1, 1, 1000, &tc->hyperband_iterations, err)))
        return st;
    tc->objective = (cnn_tune_objective)obj;
    tc->algorithm = (cnn_tune_algorithm)alg;
    tc->seed = (uint64_t)seed;
    tc->maximize = dir == 0 ? (obj == CNN_OBJ_ACCURACY || obj == CNN_OBJ_VAL_ACCURACY) : dir == 1;
    for (int i = 0; i < s->nkv; i++)
        if (!s->kv[i].used)
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [tune] %s: unknown key (objective, "
                                 "direction, algorithm, max_trials, executions_per_trial, "
                                 "ranks_per_trial, seed, dir, max_epochs, factor, "
                                 "hyperband_iterations)", cfg->path, s->kv[i].line, s->kv[i].key);
    if (!tc->dir[0])
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [tune] dir is empty", cfg->path, s->line);
    if (tc->algorithm == CNN_TUNE_RANDOM && !tc->max_trials)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [tune] algorithm = random needs "
                             "max_trials", cfg->path, s->line);
    if (tc->algorithm == CNN_TUNE_HYPERBAND && !tc->max_epochs)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [tune] algorithm = hyperband needs "
                             "max_epochs", cfg->path, s->line);
    return CNN_OK;
}

/* Keras Tuner's oracle (keras_tuner/tuners/hyperband.py), min_epochs = 1,
 * with its floating-point formulas. */
int cnn_tune_hb_brackets(long max_epochs, long factor)
{
    double epochs = (double)max_epochs;
    int brackets = 0;
    while (epochs >= 1) {
        epochs /= (double)factor;
        brackets++;
    }
    return brackets;
}

long cnn_tune_hb_size(long max_epochs, long factor, int bracket, int round)
{
    double end0 = ceil(1 + log((double)max_epochs) / log((double)factor));
    double end = end0 / (bracket + 1);
    return (long)ceil(end * pow((double)factor, bracket - round));
}

long cnn_tune_hb_epochs(long max_epochs, long factor, int bracket, int round)
{
    return (long)ceil((double)max_epochs / pow((double)factor, bracket - round));
}
