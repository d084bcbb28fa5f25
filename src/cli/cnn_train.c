/* cnn_train.c - the cnn-train program.
 *
 *   cnn-train CONFIG [--set section.key=value]...     train
 *   cnn-train --summary CONFIG [--set ...]            print the model table
 *
 * Exit codes: 0 success, 2 bad config or input, 1 other failures.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/config.h"
#include "dist.h"
#include "trainer.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cnn-train [--summary] CONFIG [--set section.key=value]...\n"
            "  CONFIG            INI file describing [data], [train], [optimizer] and the layers\n"
            "  --summary         print the model like Keras's model.summary() and exit\n"
            "  --set S.K=V       override key K of section S (or of the layer named S)\n"
            "  -h, --help        this text\n"
            "Run under MPI for data-parallel training: mpirun -np N cnn-train CONFIG\n");
}

typedef struct args {
    const char *config;
    int summary;
    const char *const *sets;
    int nsets;
} args;

/* Returns -1 to continue, else an exit code. */
static int parse_args(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    const char **sets = calloc((size_t)argc, sizeof *sets);
    if (!sets)
        return 1;
    a->sets = sets;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(s, "--summary")) {
            a->summary = 1;
        } else if (!strcmp(s, "--set") || !strncmp(s, "--set=", 6)) {
            const char *v = s[5] == '=' ? s + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "cnn-train: --set needs section.key=value\n");
                return 2;
            }
            sets[a->nsets++] = v;
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "cnn-train: unknown option '%s' (see --help)\n", s);
            return 2;
        } else if (!a->config) {
            a->config = s;
        } else {
            fprintf(stderr, "cnn-train: more than one config given ('%s' and '%s')\n", a->config,
                    s);
            return 2;
        }
    }
    if (!a->config) {
        usage(stderr);
        return 2;
    }
    return -1;
}

/* Loads the config, applies overrides and builds the run. */
static cnn_status setup(const args *a, cnn_run *run, cnn_error *err)
{
    cnn_config *cfg;
    cnn_status st = cnn_config_load_overrides(&cfg, a->config, a->sets, a->nsets, err);
    return st ? st : cnn_run_setup(run, cfg, err); /* owns cfg from here */
}

int main(int argc, char **argv)
{
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc >= 0) {
        free((void *)a.sets);
        return rc;
    }
    cnn_error err = {0};
    cnn_run run = {0};
    if (a.summary) { /* no MPI needed to describe a model */
        cnn_status st = setup(&a, &run, &err);
        if (st == CNN_OK)
            cnn_model_summary(run.model, stdout);
        else
            fprintf(stderr, "cnn-train: %s\n", err.msg);
        cnn_run_free(&run);
        free((void *)a.sets);
        return cnn_status_exit_code(st);
    }

    cnn_dist d;
    if (cnn_dist_init(&d, &argc, &argv) != 0) {
        fprintf(stderr, "cnn-train: MPI initialisation failed\n");
        free((void *)a.sets);
        return 1;
    }
    /* Every rank parses the same file; ranks agree on the outcome so none
     * waits in a collective for one that has given up. */
    cnn_status st = setup(&a, &run, &err);
    int s = st, who = cnn_dist_agree(&d, &s);
    if (who >= 0 && who != d.rank)
        err.msg[0] = 0; /* the first failing rank reports */
    st = (cnn_status)s;
    if (st == CNN_OK)
        st = cnn_run_train(&run, &d, stdout, &err);
    /* A rank that failed only because another did has an empty message. */
    if (st != CNN_OK && err.msg[0]) {
        if (d.world > 1 && d.rank != 0)
            fprintf(stderr, "cnn-train: rank %d: %s\n", d.rank, err.msg);
        else
            fprintf(stderr, "cnn-train: %s\n", err.msg);
    }
    fflush(stdout);
    fflush(stderr);
    cnn_run_free(&run);
    free((void *)a.sets);
    cnn_dist_finalize(&d);
    return cnn_status_exit_code(st);
}
