/* cnn_tune.c - the cnn-tune program: hyper-parameter search (cnn/tune.h).
 *
 *   mpirun -np N cnn-tune CONFIG [--set S.K=V]...   run (or resume) the search
 *   cnn-tune --summary DIR     the trials of a search, best first; redraws
 *                              DIR/objective.png (and Hyperband's brackets)
 *
 * Exit codes: 0 done, 2 bad config or usage, 1 other failures, 75 stopped
 * by SIGTERM/SIGUSR1 (run the same command again to continue).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/tensor.h"
#include "cnn/train.h"
#include "cnn/tune.h"
#include "cli.h"
#include "dist.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cnn-tune CONFIG [--set section.key=value]...\n"
            "       cnn-tune --summary DIR\n"
            "  CONFIG          a cnn-train config with a [tune] and a [search] section\n"
            "                  (see configs/fashion_tuner.ini); run under MPI, the ranks\n"
            "                  are cut into groups of [tune] ranks_per_trial that run\n"
            "                  trials side by side; run it again to resume\n"
            "  --set S.K=V     override key K of section S of CONFIG, [tune] included\n"
            "                  (tune.ranks_per_trial=2, train.epochs=1); a resumed search\n"
            "                  needs the same overrides\n"
            "  --summary DIR   print the trials of the search in DIR, best first, and\n"
            "                  redraw DIR/objective.png (Hyperband: objective-bracket-B.png)\n"
            "  -h, --help      this text\n"
            "  --version       print the version and exit\n"
            "Exit codes: 0 done, 2 bad config or usage, 1 other errors, 75 stopped by a\n"
            "signal (SIGTERM/SIGUSR1); run the same command again to continue.\n");
}

int main(int argc, char **argv)
{
    cnn_fp_mode_set(); /* before any thread starts: they inherit it */
    const char *config = NULL, *summary = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int nsets = 0;
    if (!sets) {
        fprintf(stderr, "cnn-tune: out of memory\n");
        return 1;
    }
    int rc = -1; /* an exit code once the command line has been dealt with */
    for (int i = 1; i < argc && rc < 0; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            usage(stdout);
            rc = 0;
            break;
        } else if (cnn_cli_version(s, "cnn-tune")) {
            rc = 0;
            break;
        } else if (!strcmp(s, "--summary")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "cnn-tune: --summary needs a directory\n");
                rc = 2;
                break;
            }
            summary = argv[++i];
        } else if (!strcmp(s, "--set") || !strncmp(s, "--set=", 6)) {
            const char *v = s[5] == '=' ? s + 6 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v) {
                fprintf(stderr, "cnn-tune: --set needs section.key=value\n");
                rc = 2;
                break;
            }
            sets[nsets++] = v;
        } else if (s[0] == '-' && s[1]) {
            fprintf(stderr, "cnn-tune: unknown option '%s' (see --help)\n", s);
            rc = 2;
            break;
        } else if (!config) {
            config = s;
        } else {
            fprintf(stderr, "cnn-tune: more than one config given ('%s' and '%s')\n", config, s);
            rc = 2;
            break;
        }
    }
    if (rc < 0 && (!!config == !!summary || (summary && nsets))) {
        usage(stderr);
        rc = 2;
    }
    if (rc >= 0) {
        free(sets);
        return rc;
    }
    cnn_error err = {0};
    if (summary) { /* no MPI needed to read a table */
        free(sets);
        cnn_status st = cnn_tune_summary(summary, stdout, &err);
        if (st)
            fprintf(stderr, "cnn-tune: %s\n", err.msg);
        return cnn_status_exit_code(st);
    }
    cnn_dist d;
    if (cnn_dist_init(&d, &argc, &argv) != 0) {
        fprintf(stderr, "cnn-tune: MPI initialisation failed\n");
        free(sets);
        return 1;
    }
    int stopped = 0;
    cnn_status st = cnn_tune_search(config, sets, nsets, &d, stdout, &stopped, &err);
    free(sets);
    if (st != CNN_OK && err.msg[0])
        fprintf(stderr, "cnn-tune: %s\n", err.msg);
    fflush(stdout);
    fflush(stderr);
    cnn_dist_finalize(&d);
    return st == CNN_OK && stopped ? CNN_EXIT_STOPPED : cnn_status_exit_code(st);
}
