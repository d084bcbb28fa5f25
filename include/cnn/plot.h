/* cnn/plot.h - the two training graphs of every Keras tutorial, as PNG
 * (and any graph of lines or points: cnn_plot_lines).
 *
 *     cnn_error err = {0};
 *     if (cnn_plot_history("run/history.csv", "run/history", &err) != CNN_OK)
 *         fprintf(stderr, "cnn-plot: %s\n", err.msg);
 *     // -> run/history-accuracy.png and run/history-loss.png
 *
 * The input is the history CSV that cnn-train writes ([train] history):
 *     epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,images_per_sec
 *     0,0.512345,0.812000,0.401234,0.851000,0.001,12.345,4861.2
 * Columns are found by name in the header; epoch, loss and accuracy are
 * required, val_loss and val_accuracy may be missing or empty (a run
 * without validation), other columns are ignored.
 *
 * Each graph is CNN_PLOT_WIDTH x CNN_PLOT_HEIGHT pixels: train (blue) and
 * validation (orange) against epoch, with title, axis labels, ticks and a
 * legend in the corner the curves leave most free. Empty, NaN or infinite
 * values are left out of their curve; a run without validation gets the
 * train curve alone.
 *
 * Drawing is done by PLplot (its memcairo driver renders into memory) and
 * the PNG is written by cnn_png_write. This module lives in its own
 * library, cnn_plot, so the core library does not depend on PLplot.
 * Caveats of PLplot: it keeps global state, so these functions are not
 * thread-safe, and on an internal fatal error (out of memory, or no
 * drivers at all because PLPLOT_DRV_DIR points nowhere) PLplot itself
 * prints a message and calls exit(). Axis ranges and ticks are computed
 * here, so that no file content can lead there.
 */
#ifndef CNN_PLOT_H
#define CNN_PLOT_H

#include "cnn/error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CNN_PLOT_WIDTH = 800, CNN_PLOT_HEIGHT = 600 };

/* A history CSV, one row per epoch. The five arrays are one allocation. */
typedef struct cnn_history_csv {
    int n;
    double *epoch;        /* (n) */
    double *loss;         /* (n) NaN where empty */
    double *accuracy;     /* (n) */
    double *val_loss;     /* (n) NaN where empty or without a column */
    double *val_accuracy; /* (n) */
} cnn_history_csv;

/* Reads csv_path into *h (freed with cnn_history_csv_free). Errors:
 * CNN_ERR_IO if it cannot be read; CNN_ERR_FORMAT "FILE:LINE: ..." for a
 * missing column, a wrong number of fields or a field that is not a
 * number, and "FILE: no epochs" for a file with a header alone. */
cnn_status cnn_history_csv_read(cnn_history_csv *h, const char *csv_path, cnn_error *err);

/* Frees the arrays of h (not h itself); h may be zeroed or freed again. */
void cnn_history_csv_free(cnn_history_csv *h);

/* Writes OUT_PREFIX-accuracy.png and OUT_PREFIX-loss.png from the history
 * in csv_path. Errors name the file: those of cnn_history_csv_read, of
 * cnn_png_write, and CNN_ERR_IO if PLplot's memcairo driver is not
 * installed (Debian: plplot-driver-cairo). */
cnn_status cnn_plot_history(const char *csv_path, const char *out_prefix, cnn_error *err);

/* One curve of cnn_plot_lines: the points (x[i], y[i]); a point with a
 * NaN or infinite coordinate is left out. */
typedef struct cnn_plot_series {
    const char *label;   /* in the legend (the first 12 labelled); NULL: not */
    int n;
    const double *x, *y; /* (n) */
    int markers;         /* 1: a mark at each point and no line */
} cnn_plot_series;

/* Writes a CNN_PLOT_WIDTH x CNN_PLOT_HEIGHT PNG at path: the ns series
 * against whole-number x ticks (trials, epochs), coloured in turn with
 * matplotlib's ten colours, with title, axis labels and a legend. Errors
 * name path: out of memory, no memcairo driver, cnn_png_write's. */
cnn_status cnn_plot_lines(const char *path, const char *title, const char *xlabel,
                          const char *ylabel, const cnn_plot_series *s, int ns, cnn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* CNN_PLOT_H */
