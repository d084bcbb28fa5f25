/* fuzz_checkpoint.c - a checkpoint file, used as cnn-train --summary,
 * --resume and cnn-predict use one.
 *
 * Input: the file. Its config is loaded with an override
 * (cnn_config_load_overrides, as cnn-train's set-up does), the model and
 * optimizer are built from it, and the header, tensors (into model,
 * optimizer, state and history, then the weights alone) and class names
 * are read; the header and class names also when the config fails. No
 * HDF5 object may stay open after any of these calls. */
#include <stdlib.h>

#include "cnn/checkpoint.h"
#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/model.h"
#include "cnn/optim.h"
#include "cnn/train.h"

#include "fuzz_hdf5.h"
#include "fuzz_util.h"

/* Builds model and optimizer from the file's config; loads the tensors. */
static void load(const char *path)
{
    static const char *const sets[] = {"train.epochs=1"};
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    if (cnn_config_load_overrides(&cfg, path, sets, 1, &err) != CNN_OK)
        return; /* *out is NULL on failure */
    cnn_train_config tc;
    cnn_data_config dc;
    cnn_optim_hparams hp;
    cnn_model *m = NULL;
    cnn_optim *o = NULL;
    if (cnn_train_config_read(&tc, cfg, &err) == CNN_OK &&
        cnn_data_config_read(&dc, cfg, &err) == CNN_OK &&
        cnn_optim_hparams_from_config(&hp, cfg, &err) == CNN_OK &&
        cnn_model_create(&m, cfg, tc.loss, &err) == CNN_OK &&
        cnn_optim_create(&o, &hp, m->nparams, &err) == CNN_OK) {
        FILE *null = fopen("/dev/null", "w");
        if (null) {
            cnn_model_summary(m, null);
            fclose(null);
        }
        cnn_train_state s = {0};
        cnn_history h = {0};
        cnn_checkpoint_load(path, m, o, &s, &h, &err);
        cnn_history_free(&h);
        cnn_checkpoint_load(path, m, NULL, NULL, NULL, &err);
    }
    cnn_optim_free(o);
    cnn_model_free(m);
    cnn_config_free(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[512];
    fuzz_write(path, sizeof path, "ckpt.h5", data, size);
    if (!cnn_checkpoint_is_hdf5(path))
        return 0;
    load(path);
    cnn_error err = {0};
    cnn_train_state s;
    cnn_optim_hparams hp;
    cnn_checkpoint_read_info(path, &s, &hp, &err);
    char **names = NULL;
    int n = 0;
    if (cnn_checkpoint_read_classes(path, &names, &n, &err) == CNN_OK)
        free(names);
    fuzz_no_open_hdf5("the checkpoint calls");
    return 0;
}
