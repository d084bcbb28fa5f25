/* cnn_train.c - the cnn-train program.
 *
 *   cnn-train CONFIG [--set section.key=value]... [--resume PATH|auto]   train
 *   cnn-train CHECKPOINT [--set ...]              continue training from a checkpoint
 *   cnn-train --summary CONFIG|CHECKPOINT         print the model table
 *   cnn-train --summary --json CONFIG|CHECKPOINT  print the expanded graph as JSON
 *   cnn-train --evaluate CHECKPOINT [--out DIR]   test-set report of a trained model
 *
 * Exit codes: 0 success, 2 bad config or input, 1 other failures, 75 stopped
 * by SIGTERM/SIGUSR1 after writing a checkpoint (resubmit to continue).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/checkpoint.h"
#include "cnn/config.h"
#include "cnn/tensor.h"
#include "cnn/train.h"
#include "cli.h"
#include "dist.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cnn-train [--summary [--json]] CONFIG [--set section.key=value]... [--resume R]\n"
            "                 [--profile[=N]] [--profile-dir DIR]\n"
            "       cnn-train --evaluate CHECKPOINT [--out DIR] [--set ...]\n"
            "  CONFIG            INI file describing [data], [train], [optimizer] and the layers,\n"
            "                    or a checkpoint (its config; training continues from it)\n"
            "  --summary         print the model like Keras's model.summary() and exit\n"
            "  --json            with --summary: the expanded graph as JSON (every layer's\n"
            "                    name, type, keys, inputs, output shape and parameters)\n"
            "  --set S.K=V       override key K of section S (or of the layer named S)\n"
            "  --resume R        resume from checkpoint file R, or 'auto': the newest in\n"
            "                    [checkpoint] dir (start afresh if there is none)\n"
            "  --evaluate CKPT   test loss/accuracy, per-class precision/recall, confusion\n"
            "                    matrix; writes DIR/confusion.csv and DIR/misclassified.csv\n"
            "  --out DIR         directory for --evaluate's files (default .)\n"
            "  --profile[=N]     after 2 warm-up steps, profile N steps (default 20): per-layer\n"
            "                    forward/backward time per image, GFLOP/s and %% of the FMA peak,\n"
            "                    data and exchange waits; a Chrome trace of 5 steps of every rank\n"
            "                    in DIR/trace.json (--profile-dir DIR, default profile)\n"
            "  -h, --help        this text\n"
            "  --version         print the version and exit\n"
            "Run under MPI for data-parallel training: mpirun -np N cnn-train CONFIG\n"
            "Exit codes: 0 done, 2 bad config or input, 1 other errors, 75 stopped by a\n"
            "signal (SIGTERM/SIGUSR1) after writing a checkpoint.\n");
}

typedef struct args {
    const char *config;
    const char *evaluate; /* checkpoint */
    const char *out;      /* --out DIR */
    int summary;
    int json;             /* --summary --json */
    const char *resume;   /* --resume */
    long profile;         /* --profile[=N]: steps, 0 off */
    const char *profile_dir;
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
        } else if (cnn_cli_version(s, "cnn-train")) {
            return 0;
        } else if (!strcmp(s, "--summary")) {
            a->summary = 1;
        } else if (!strcmp(s, "--json")) {
            a->json = 1;
        } else if (!strcmp(s, "--evaluate") || !strcmp(s, "--out") || !strcmp(s, "--resume")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "cnn-train: %s needs a value\n", s);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(s, "--evaluate")) {
                a->evaluate = v;
                if (!a->config)
                    a->config = v;
            } else if (!strcmp(s, "--out")) {
                a->out = v;
            } else {
                a->resume = v;
            }
        } else if (!strcmp(s, "--profile") || !strncmp(s, "--profile=", 10)) {
            char *end = NULL;
            a->profile = s[9] == '=' ? strtol(s + 10, &end, 10) : 20;
            if ((end && (*end || end == s + 10)) || a->profile < 1 || a->profile > 100000) {
                fprintf(stderr, "cnn-train: --profile=N needs N from 1 to 100000, not '%s'\n",
                        s + 10);
                return 2;
            }
        } else if (!strcmp(s, "--profile-dir")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "cnn-train: %s needs a value\n", s);
                return 2;
            }
            a->profile_dir = argv[++i];
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
        } else if (!a->config || (a->evaluate && a->config == a->evaluate)) {
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
    if (a->json && !a->summary) {
        fprintf(stderr, "cnn-train: --json goes with --summary\n");
        return 2;
    }
    return -1;
}

/* Loads the config, applies overrides and builds the run. --resume (or
 * training from a checkpoint) is a choice of this invocation, not part of
 * the run's config: it is not in the config text that checkpoints store. */
static cnn_status setup(const args *a, cnn_run *run, cnn_error *err)
{
    cnn_config *cfg;
    cnn_status st = cnn_config_load_overrides(&cfg, a->config, a->sets, a->nsets, err);
    if (st)
        return st;
    if ((st = cnn_run_setup(run, cfg, err))) /* owns cfg from here */
        return st;
    const char *resume = a->resume;
    if (!resume && !a->summary && !a->evaluate && cnn_checkpoint_is_hdf5(a->config))
        resume = a->config;
    if (resume)
        run->ck.resume = resume;
    if (!strcmp(run->ck.resume, "auto") && !run->ck.dir[0])
        return cnn_error_set(err, CNN_ERR_CONFIG,
                             "%s: [checkpoint] resume = auto needs [checkpoint] dir",
                             run->cfg->path);
    return CNN_OK;
}

/* The failure tests' seam: CNN_TEST_FAULT="RANK:STEP:KIND" (KIND io|nan|exit)
 * makes global step STEP (from 1) fail on rank RANK. Read here, by the
 * program, so that the training library has no test hook of its own. */
static cnn_fault_plan fault_from_env(void)
{
    cnn_fault_plan f = {0};
    const char *v = getenv("CNN_TEST_FAULT");
    char what[8];
    if (!v || sscanf(v, "%d:%ld:%7s", &f.rank, &f.step, what) != 3)
        return (cnn_fault_plan){0};
    f.kind = !strcmp(what, "io")     ? CNN_FAULT_IO
             : !strcmp(what, "nan")  ? CNN_FAULT_NAN
             : !strcmp(what, "exit") ? CNN_FAULT_EXIT
                                     : CNN_FAULT_NONE;
    return f;
}

int main(int argc, char **argv)
{
    cnn_fp_mode_set(); /* before any thread starts: they inherit it */
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
        if (st == CNN_OK && a.json)
            cnn_model_summary_json(run.model, stdout);
        else if (st == CNN_OK)
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
    run.fault = fault_from_env();
    run.profile_steps = a.profile;
    run.profile_dir = a.profile_dir;
    if (st == CNN_OK && a.evaluate)
        st = cnn_run_evaluate(&run, &d, a.evaluate, a.out ? a.out : ".", stdout, &err);
    else if (st == CNN_OK)
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
    int run_stopped = run.stopped;
    cnn_run_free(&run);
    free((void *)a.sets);
    cnn_dist_finalize(&d);
    return st == CNN_OK && run_stopped ? CNN_EXIT_STOPPED : cnn_status_exit_code(st);
}
