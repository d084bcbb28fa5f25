/* history_csv.c - reads the per-epoch history CSV that cnn-train writes
 * (see cnn/plot.h). Plain comma-separated numbers, no quoting: the header
 * names the columns. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/plot.h"

/* The columns we use, in the order of cnn_history_csv's arrays. */
enum { COL_EPOCH, COL_LOSS, COL_ACC, COL_VAL_LOSS, COL_VAL_ACC, NCOLS };
static const char *const col_names[NCOLS] = {"epoch", "loss", "accuracy", "val_loss",
                                             "val_accuracy"};
static const int col_required[NCOLS] = {1, 1, 1, 0, 0};

void cnn_history_csv_free(cnn_history_csv *h)
{
    free(h->epoch);
    memset(h, 0, sizeof *h);
}

/* Splits line in place at commas into at most max fields, blanks trimmed;
 * returns the number of fields (max + 1 if there are more). */
static int split_fields(char *line, char **field, int max)
{
    int n = 0;
    for (char *p = line;; p++) {
        char *end = strchr(p, ',');
        if (end)
            *end = 0;
        while (isspace((unsigned char)*p))
            p++;
        char *e = p + strlen(p);
        while (e > p && isspace((unsigned char)e[-1]))
            *--e = 0;
        if (n < max)
            field[n] = p;
        if (++n > max || !end)
            return n;
        p = end;
    }
}

/* Grows the five arrays of h to hold cap rows. */
static int grow(cnn_history_csv *h, int cap)
{
    double *block = malloc((size_t)cap * NCOLS * sizeof *block);
    if (!block)
        return 0;
    double *old[NCOLS] = {h->epoch, h->loss, h->accuracy, h->val_loss, h->val_accuracy};
    double **now[NCOLS] = {&h->epoch, &h->loss, &h->accuracy, &h->val_loss, &h->val_accuracy};
    for (int c = 0; c < NCOLS; c++) {
        *now[c] = block + (size_t)c * cap;
        if (h->n)
            memcpy(*now[c], old[c], (size_t)h->n * sizeof *block);
    }
    free(old[0]); /* the start of the previous block */
    return 1;
}

/* Columns per line: enough for the trainer's eight and some to spare. */
enum { MAX_FIELDS = 64 };

cnn_status cnn_history_csv_read(cnn_history_csv *h, const char *csv_path, cnn_error *err)
{
    memset(h, 0, sizeof *h);
    FILE *f = fopen(csv_path, "r");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open history: %s", csv_path,
                             strerror(errno));
    char *line = NULL, *field[MAX_FIELDS];
    size_t linecap = 0;
    int where[NCOLS] = {-1, -1, -1, -1, -1}; /* field index of each column */
    int nfields = 0, lineno = 0, cap = 0;
    cnn_status st = CNN_OK;
    while (getline(&line, &linecap, f) >= 0) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        if (lineno > 1 && !line[strspn(line, " \t")])
            continue; /* blank line */
        int n = split_fields(line, field, MAX_FIELDS);
        if (n > MAX_FIELDS) {
            st = cnn_error_set(err, CNN_ERR_FORMAT, "%s:%d: more than %d fields", csv_path, lineno,
                               MAX_FIELDS);
            break;
        }
        if (lineno == 1) { /* the header */
            nfields = n;
            for (int i = 0; i < n; i++)
                for (int c = 0; c < NCOLS; c++)
                    if (strcmp(field[i], col_names[c]) == 0 && where[c] < 0)
                        where[c] = i;
            for (int c = 0; c < NCOLS && !st; c++)
                if (col_required[c] && where[c] < 0)
                    st = cnn_error_set(err, CNN_ERR_FORMAT,
                                       "%s:1: header has no '%s' column (expected "
                                       "epoch,loss,accuracy,val_loss,val_accuracy,...)",
                                       csv_path, col_names[c]);
            if (st)
                break;
            continue;
        }
        if (n != nfields) {
            st = cnn_error_set(err, CNN_ERR_FORMAT, "%s:%d: %d fields, the header has %d",
                               csv_path, lineno, n, nfields);
            break;
        }
        if (h->n == cap && !grow(h, cap = cap ? 2 * cap : 64)) {
            st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", csv_path);
            break;
        }
        double *row[NCOLS] = {h->epoch, h->loss, h->accuracy, h->val_loss, h->val_accuracy};
        for (int c = 0; c < NCOLS && !st; c++) {
            const char *v = where[c] >= 0 ? field[where[c]] : "";
            char *end;
            row[c][h->n] = strtod(v, &end);
            if (!*v && !col_required[c])
                row[c][h->n] = NAN; /* no validation in this epoch */
            else if (!*v || *end)
                st = cnn_error_set(err, CNN_ERR_FORMAT, "%s:%d: %s: '%s' is not a number",
                                   csv_path, lineno, col_names[c], v);
        }
        if (!st && !isfinite(h->epoch[h->n]))
            st = cnn_error_set(err, CNN_ERR_FORMAT, "%s:%d: epoch: '%s' is not finite", csv_path,
                               lineno, field[where[COL_EPOCH]]);
        if (st)
            break;
        h->n++;
    }
    if (!st && ferror(f))
        st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot read history: %s", csv_path,
                           strerror(errno));
    else if (!st && lineno == 0)
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: empty file (expected a CSV header line)",
                           csv_path);
    else if (!st && h->n == 0)
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s: no epochs (a header and no rows)", csv_path);
    free(line);
    fclose(f);
    if (st)
        cnn_history_csv_free(h);
    return st;
}
