/* logits_dump.c - the per-sample outputs of a checkpoint on its test set,
 * for the PyTorch check (tests/torch): loads CHECKPOINT's config (with the
 * overrides) and weights, runs the test set through the network in
 * inference mode (BatchNormalization with the moving statistics) and
 * writes OUT: the number of samples and of classes (two int32), then for
 * every test sample in order its label (int32) and its logits (float32 x
 * classes: the last layer's pre-activation, fused with the loss), all
 * little-endian as the machine stores them. One process, no MPI.
 *
 *   logits_dump CHECKPOINT OUT [section.key=value ...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/checkpoint.h"
#include "cnn/data.h"
#include "cnn/train.h"

enum { BATCH = 64 };

static int fail(const char *what, const cnn_error *err)
{
    fprintf(stderr, "logits_dump: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: logits_dump CHECKPOINT OUT [section.key=value ...]\n");
        return 2;
    }
    cnn_error err = {0};
    cnn_run run = {0};
    cnn_config *cfg;
    cnn_dataset *train = NULL, *val = NULL, *test = NULL;
    if (cnn_config_load_overrides(&cfg, argv[1], (const char *const *)argv + 3, argc - 3, &err) ||
        cnn_run_setup(&run, cfg, &err))
        return fail(argv[1], &err);
    cnn_model *m = run.model;
    cnn_set_threads(1);
    if (cnn_checkpoint_load(argv[1], m, NULL, NULL, NULL, &err) ||
        cnn_data_load(&run.dc, 0, 1, &train, &val, &test, &err) ||
        cnn_model_reserve(m, BATCH, &err))
        return fail(argv[1], &err);
    if (!m->fused_loss)
        return fail("the last layer is not fused with the loss: no logits", NULL);
    const size_t in = cnn_shape_size(m->input);
    float *x = malloc((size_t)BATCH * in * sizeof *x);
    uint8_t *raw = malloc((size_t)BATCH * in);
    int32_t y[BATCH];
    int64_t idx[BATCH];
    FILE *f = fopen(argv[2], "wb");
    int32_t head[2] = {(int32_t)test->n, m->nclasses};
    if (!x || !raw || !f || fwrite(head, sizeof head, 1, f) != 1)
        return fail(argv[2], NULL);
    cnn_ctx ctx = cnn_model_ctx(m, 0, 0, 0, NULL);
    for (int64_t i = 0; i < test->n; i += BATCH) {
        int B = (int)(test->n - i < BATCH ? test->n - i : BATCH);
        for (int b = 0; b < B; b++)
            idx[b] = i + b;
        if (cnn_dataset_gather(test, idx, B, run.dc.rescale, raw, x, y, &err))
            return fail(test->source, &err);
        cnn_model_forward(m, x, B, &ctx);
        for (int b = 0; b < B; b++)
            if (fwrite(&y[b], sizeof y[b], 1, f) != 1 ||
                fwrite(m->logits + (size_t)b * m->nclasses, sizeof(float), (size_t)m->nclasses,
                       f) != (size_t)m->nclasses)
                return fail(argv[2], NULL);
    }
    if (fclose(f) != 0)
        return fail(argv[2], NULL);
    if (val != test)
        cnn_dataset_free(val);
    cnn_dataset_free(test);
    cnn_dataset_free(train);
    cnn_run_free(&run);
    free(x);
    free(raw);
    return 0;
}
