/* bn_train_dump.c - trains a config as cnn-train does, then writes the
 * model's non-trainable buffers (moving statistics) and parameters as raw
 * float32 into OUT (rank 0), after checking that every rank holds the same
 * bits. A helper of mpi_test.sh's batch_normalization cases: checkpoints
 * hold rank 0's buffers (/model/<layer>/moving_*), this checks all ranks'.
 *
 *   bn_train_dump OUT CONFIG [--resume FILE] [[--set] section.key=value ...]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/train.h"
#include "dist.h"

static int write_floats(FILE *f, const float *v, size_t n)
{
    return fwrite(&n, sizeof n, 1, f) == 1 && fwrite(v, sizeof *v, n, f) == n;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bn_train_dump OUT CONFIG [--resume FILE] [section.key=value ...]\n");
        return 2;
    }
    const char *out = argv[1], *resume = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int nsets = 0;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--resume") && i + 1 < argc)
            resume = argv[++i];
        else if (strcmp(argv[i], "--set")) /* cnn-train's "--set k=v" reads alike */
            sets[nsets++] = argv[i];
    }
    cnn_dist d;
    if (!sets || cnn_dist_init(&d, &argc, &argv) != 0)
        return 1;
    cnn_error err = {0};
    cnn_run run = {0};
    cnn_config *cfg;
    cnn_status st = cnn_config_load_overrides(&cfg, argv[2], sets, nsets, &err);
    if (st == CNN_OK && (st = cnn_run_setup(&run, cfg, &err)) == CNN_OK && resume)
        run.ck.resume = resume;
    if (st == CNN_OK)
        st = cnn_run_train(&run, &d, stdout, &err);
    int rc = st != CNN_OK;
    if (rc)
        fprintf(stderr, "bn_train_dump: rank %d: %s\n", d.rank, err.msg);
    const cnn_model *m = run.model;
    if (!rc && !cnn_dist_identical(&d, m->buffers, m->nbuffer_floats)) {
        fprintf(stderr, "bn_train_dump: the ranks' buffers differ\n");
        rc = 1;
    }
    if (!rc && d.rank == 0) {
        FILE *f = fopen(out, "wb");
        if (!f || !write_floats(f, m->buffers, m->nbuffer_floats) ||
            !write_floats(f, m->params, m->nparams) || fclose(f) != 0) {
            fprintf(stderr, "bn_train_dump: cannot write %s\n", out);
            rc = 1;
        }
    }
    cnn_run_free(&run);
    free(sets);
    cnn_dist_finalize(&d);
    return rc;
}
