/* fuzz_config.c - an INI config, read as cnn-train's set-up reads it.
 *
 * Input: the config text. It is parsed (cnn_config_parse_string), every
 * section is read as cnn_run_setup (src/cli/trainer.c) reads it ([dist]
 * and [checkpoint], which only the trainer reads with the same typed
 * getters, are marked used), unused keys are checked, the model is built
 * and summarised, and a small model also runs one training step's forward,
 * loss and backward on a batch of two zero images. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/augment.h"
#include "cnn/config.h"
#include "cnn/data.h"
#include "cnn/model.h"
#include "cnn/optim.h"
#include "cnn/train.h"

#include "fuzz_util.h"

enum { BATCH = 2 };

/* One step's forward, loss and backward, for a model small enough to be
 * quick (the fuzzer looks for shape errors, not for throughput). */
static void step(cnn_model *m)
{
    size_t in = cnn_shape_size(m->input);
    if (in > 4096 || m->nparams > ((size_t)1 << 20))
        return;
    cnn_error err = {0};
    if (cnn_model_reserve(m, BATCH, &err) != CNN_OK)
        return;
    float *x = calloc(BATCH * in, sizeof *x);
    if (!x)
        return;
    int32_t labels[BATCH] = {0, m->nclasses > 1 ? m->nclasses - 1 : 1};
    int64_t ids[BATCH] = {0, 1};
    cnn_model_init_params(m, 42);
    cnn_model_zero_grad(m);
    cnn_ctx ctx = cnn_model_ctx(m, 1, 42, 0, ids);
    cnn_model_forward(m, x, BATCH, &ctx);
    cnn_batch_stats bs = {0};
    if (cnn_model_loss(m, labels, BATCH, 1.0f / BATCH, 1, &bs, &err) == CNN_OK)
        cnn_model_backward(m, x, BATCH, &ctx);
    free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = 0;
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    cnn_status st = cnn_config_parse_string(&cfg, text, "fuzz.ini", &err);
    free(text);
    if (st != CNN_OK)
        return 0;
    /* every section, as cnn-train's set-up reads them (it owns cfg) */
    cnn_run run;
    if (cnn_run_setup(&run, cfg, &err) == CNN_OK) {
        FILE *null = fopen("/dev/null", "w");
        if (null) {
            cnn_model_summary(run.model, null);
            fclose(null);
        }
        step(run.model);
    }
    cnn_run_free(&run);
    return 0;
}
