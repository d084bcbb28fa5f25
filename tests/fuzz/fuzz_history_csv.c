/* fuzz_history_csv.c - a training history CSV (cnn_history_csv_read), and
 * with FUZZ_PLOT defined the graphs drawn from it (cnn_plot_history,
 * through PLplot: slower, so a harness of its own).
 *
 * Input: the file. */
#include <math.h>

#include "cnn/plot.h"

#include "fuzz_util.h"

volatile double row_sum; /* keeps the reads */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[512], prefix[512];
    fuzz_write(path, sizeof path, "history.csv", data, size);
    cnn_error err = {0};
#ifdef FUZZ_PLOT
    fuzz_path(prefix, sizeof prefix, "history");
    cnn_plot_history(path, prefix, &err);
#else
    (void)prefix;
    cnn_history_csv h = {0};
    if (cnn_history_csv_read(&h, path, &err) == CNN_OK) {
        for (int i = 0; i < h.n; i++) /* every row is readable */
            row_sum += h.epoch[i] + h.loss[i] + h.accuracy[i] + h.val_loss[i] + h.val_accuracy[i];
    }
    cnn_history_csv_free(&h);
#endif
    return 0;
}
