/* train_config.c - the [train] section, config loading (from an INI file
 * or a checkpoint) with overrides, and mkdir -p for the programs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cnn/checkpoint.h"
#include "cnn/train.h"
#include "cnn/model.h"

cnn_status cnn_train_config_read(cnn_train_config *tc, const cnn_config *cfg, cnn_error *err)
{
    static const char *const progress[] = {"auto", "bar", "lines", "none", NULL};
    static const char *const nan_policies[] = {"stop", "skip_step", NULL};
    const cnn_section *s = cnn_config_find(cfg, "train");
    long seed;
    int loss;
    cnn_status st;
    memset(tc, 0, sizeof *tc);
    if ((st = cnn_cfg_int(s, "epochs", 1, 0, 1000000, &tc->epochs, err)) ||
        (st = cnn_cfg_int(s, "batch_size", 32, 1, 1 << 24, &tc->batch_size, err)) ||
        (st = cnn_cfg_int(s, "max_steps", 0, 0, (long)1 << 40, &tc->max_steps, err)) ||
        (st = cnn_cfg_int(s, "eval_batch_size", 128, 1, 1 << 20, &tc->eval_batch_size, err)) ||
        (st = cnn_cfg_int(s, "validation_freq", 1, 1, 1000000, &tc->validation_freq, err)) ||
        (st = cnn_cfg_int(s, "threads", 0, 0, 4096, &tc->threads, err)) ||
        (st = cnn_cfg_int(s, "log_every", 100, 1, (long)1 << 40, &tc->log_every, err)) ||
        (st = cnn_cfg_int(s, "seed", 42, 0, (long)((1ULL << 62) - 1), &seed, err)) ||
        (st = cnn_cfg_enum(s, "loss", CNN_LOSS_SPARSE_CCE, cnn_loss_names, &loss, err)) ||
        (st = cnn_cfg_string(s, "history", NULL, &tc->history, err)) ||
        (st = cnn_cfg_enum(s, "progress", CNN_PROGRESS_AUTO, progress, &tc->progress, err)) ||
        (st = cnn_cfg_enum(s, "nan_policy", CNN_NAN_STOP, nan_policies, &tc->nan_policy, err)) ||
        (st = cnn_cfg_bool(s, "plot", 1, &tc->plot, err)) ||
        (st = cnn_cfg_float(s, "label_smoothing", 0, 0, 0.999, &tc->label_smoothing, err)))
        return st;
    if (tc->label_smoothing > 0 && loss == CNN_LOSS_MSE) {
        char where[320];
        cnn_cfg_where(s, cnn_section_find(s, "label_smoothing"), "label_smoothing", where,
                      sizeof where);
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%s: smooths the labels of a cross-entropy; loss is %s", where,
                             cnn_loss_names[loss]);
    }
    if (tc->history && !strcmp(tc->history, "none")) /* as [checkpoint] dir = none */
        tc->history = NULL;
    tc->seed = (uint64_t)seed;
    tc->loss = (cnn_loss)loss;
    return CNN_OK;
}

cnn_status cnn_config_load_any(cnn_config **out, const char *path, cnn_error *err)
{
    *out = NULL;
    cnn_status st;
    if (!cnn_checkpoint_is_hdf5(path)) {
        st = cnn_config_load(out, path, err);
    } else {
        char *text, name[1100];
        if ((st = cnn_checkpoint_read_config(path, &text, err)))
            return st;
        snprintf(name, sizeof name, "%s:/config", path);
        st = cnn_config_parse_string(out, text, name, err);
        free(text);
    }
    if (!st) /* --set names layers by their default names, as the engine does */
        (*out)->layer_base = cnn_layer_default_name;
    return st;
}

cnn_status cnn_config_load_overrides(cnn_config **out, const char *path, const char *const *sets,
                                     int nsets, cnn_error *err)
{
    cnn_config *cfg = NULL;
    cnn_status st = cnn_config_load_any(&cfg, path, err);
    for (int i = 0; st == CNN_OK && i < nsets; i++)
        st = cnn_config_override(cfg, sets[i], err);
    if (st) {
        cnn_config_free(cfg);
        cfg = NULL;
    }
    *out = cfg;
    return st;
}

int cnn_make_dirs(const char *path)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *c = p + 1; *c; c++)
        if (*c == '/') {
            *c = 0;
            if (mkdir(p, 0777) != 0 && errno != EEXIST)
                return -1;
            *c = '/';
        }
    if (mkdir(p, 0777) != 0 && errno != EEXIST)
        return -1;
    struct stat sb;
    if (stat(p, &sb) != 0)
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}
