/* cnn_plot.c - graphs of a training history on demand.
 *
 *   cnn-plot HISTORY.csv [OUT_PREFIX]
 *
 * Writes OUT_PREFIX-accuracy.png and OUT_PREFIX-loss.png (see cnn/plot.h);
 * OUT_PREFIX defaults to HISTORY.csv without its ".csv".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cnn/plot.h"

#define USAGE "usage: cnn-plot HISTORY.csv [OUT_PREFIX]"

int main(int argc, char **argv)
{
    if (argc == 2 && cnn_cli_version(argv[1], "cnn-plot"))
        return 0;
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf(USAGE "\n"
                     "Draws the accuracy and loss of a cnn-train history ([train] history = FILE)\n"
                     "into OUT_PREFIX-accuracy.png and OUT_PREFIX-loss.png. OUT_PREFIX defaults\n"
                     "to HISTORY.csv without its .csv.\n");
        return 0;
    }
    if (argc < 2 || argc > 3 || argv[1][0] == '-' || (argc == 3 && argv[2][0] == '-')) {
        fprintf(stderr, USAGE " (see --help)\n");
        return 2;
    }
    const char *csv = argv[1], *given = argc == 3 ? argv[2] : csv;
    size_t n = strlen(given);
    char *prefix = malloc(n + 1);
    if (!prefix) {
        fprintf(stderr, "cnn-plot: out of memory\n");
        return 1;
    }
    memcpy(prefix, given, n + 1);
    if (argc == 2 && n > 4 && !strcmp(prefix + n - 4, ".csv"))
        prefix[n - 4] = 0;
    cnn_error err = {0};
    if (cnn_plot_history(csv, prefix, &err) != CNN_OK) {
        fprintf(stderr, "cnn-plot: %s\n", err.msg);
        free(prefix);
        return cnn_status_exit_code(err.status);
    }
    printf("%s-accuracy.png\n%s-loss.png\n", prefix, prefix);
    free(prefix);
    return 0;
}
