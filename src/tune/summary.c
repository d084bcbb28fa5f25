/* summary.c - `cnn-tune --summary DIR`: the trials of a search, best
 * first, read back from DIR/trials.csv and DIR/search.ini (see cnn/tune.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/tune.h"
#include "tune_internal.h"

enum { MAX_FIELDS = CNN_TUNE_MAX_HP + 16 };

/* Splits one CSV line in place into at most MAX_FIELDS fields (quotes
 * as cnn_tune_csv_write writes them). Returns the number of fields. */
static int csv_split(char *line, char **f)
{
    int n = 0;
    char *p = line;
    for (;;) {
        if (n == MAX_FIELDS)
            return n;
        if (*p == '"') {
            char *o = ++p;
            f[n++] = o;
            while (*p && !(*p == '"' && p[1] != '"')) {
                if (*p == '"')
                    p++;
                *o++ = *p++;
            }
            if (*p)
                p++;
            *o = 0;
            if (*p == ',')
                p++;
            else
                return n;
            continue;
        }
        f[n++] = p;
        char *c = strchr(p, ',');
        if (!c)
            return n;
        *c = 0;
        p = c + 1;
    }
}

typedef struct row {
    char *line;
    char *f[MAX_FIELDS];
    int nf;
    double objective;
    int completed;
} row;

static int summary_max;

static int by_rank(const void *a, const void *b)
{
    const row *x = a, *y = b;
    if (x->completed != y->completed)
        return y->completed - x->completed;
    if (x->completed && x->objective != y->objective)
        return (summary_max ? x->objective < y->objective : x->objective > y->objective) ? 1 : -1;
    return atoi(x->f[0]) - atoi(y->f[0]);
}

static int column(char **head, int nh, const char *name)
{
    for (int i = 0; i < nh; i++)
        if (!strcmp(head[i], name))
            return i;
    return -1;
}

cnn_status cnn_tune_summary(const char *dir, FILE *out, cnn_error *err)
{
    char path[4096];
    cnn_config *cfg = NULL;
    cnn_tune_config tc;
    snprintf(path, sizeof path, "%s/search.ini", dir);
    cnn_status st = cnn_config_load(&cfg, path, err);
    if (st || (st = cnn_tune_config_read(&tc, cfg, err))) {
        cnn_config_free(cfg);
        return st;
    }
    const char *obj = cnn_tune_objective_names[tc.objective];
    summary_max = tc.maximize;
    snprintf(path, sizeof path, "%s/trials.csv", dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        cnn_config_free(cfg);
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    }
    char *head_line = NULL, *head[MAX_FIELDS];
    size_t cap = 0;
    row *rows = NULL;
    int n = 0, rcap = 0, nh = 0;
    if (getline(&head_line, &cap, f) > 0) {
        head_line[strcspn(head_line, "\n")] = 0;
        nh = csv_split(head_line, head);
    }
    int c_obj = column(head, nh, "objective"), c_status = column(head, nh, "status"),
        c_epochs = column(head, nh, "epochs"), c_secs = column(head, nh, "seconds"),
        c_msg = column(head, nh, "message");
    if (nh < 2 || strcmp(head[0], "trial_id") || c_obj < 0 || c_status < 0 || c_epochs < 0 ||
        c_secs < 0 || c_msg < 0) {
        st = cnn_error_set(err, CNN_ERR_FORMAT, "%s:1: not a cnn-tune trials table", path);
        goto done;
    }
    for (;;) {
        char *line = NULL;
        size_t lc = 0;
        if (getline(&line, &lc, f) <= 0) {
            free(line);
            break;
        }
        line[strcspn(line, "\n")] = 0;
        if (n == rcap) {
            rcap = rcap ? 2 * rcap : 32;
            row *r = realloc(rows, (size_t)rcap * sizeof *r);
            if (!r) {
                free(line);
                st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
                goto done;
            }
            rows = r;
        }
        row *r = &rows[n++];
        r->line = line;
        r->nf = csv_split(line, r->f);
        if (r->nf != nh) {
            st = cnn_error_set(err, CNN_ERR_FORMAT, "%s:%d: %d fields, the header has %d", path,
                               n + 1, r->nf, nh);
            goto done;
        }
        r->completed = !strcmp(r->f[c_status], "completed");
        r->objective = r->completed ? strtod(r->f[c_obj], NULL) : NAN;
    }
    qsort(rows, (size_t)n, sizeof *rows, by_rank);
    int done_n = 0;
    for (int i = 0; i < n; i++)
        done_n += rows[i].completed;
    fprintf(out, "Results summary\nResults in %s\nObjective(name=\"%s\", direction=\"%s\")\n"
                 "%d trials: %d completed, %d failed or pending\n\n",
            dir, obj, tc.maximize ? "max" : "min", n, done_n, n - done_n);
    /* the table: rank, trial, the hyper-parameters, epochs, objective, seconds */
    fprintf(out, "%4s %5s", "rank", "trial");
    for (int j = 1; j < c_epochs; j++)
        fprintf(out, " %*s", (int)(strlen(head[j]) > 8 ? strlen(head[j]) : 8), head[j]);
    fprintf(out, " %6s %12s %8s  %s\n", "epochs", obj, "seconds", "status");
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        if (r->completed)
            fprintf(out, "%4d", i + 1);
        else
            fprintf(out, "%4s", "-");
        fprintf(out, " %5s", r->f[0]);
        for (int j = 1; j < c_epochs; j++)
            fprintf(out, " %*s", (int)(strlen(head[j]) > 8 ? strlen(head[j]) : 8), r->f[j]);
        if (r->completed)
            fprintf(out, " %6s %12.6f %8s  %s\n", r->f[c_epochs], r->objective, r->f[c_secs],
                    r->f[c_status]);
        else
            fprintf(out, " %6s %12s %8s  %s: %s\n", r->f[c_epochs], "-", r->f[c_secs],
                    r->f[c_status], r->f[c_msg]);
    }
    if (done_n) {
        char tdir[4096];
        cnn_tune_trial_dir(tdir, sizeof tdir, dir, atoi(rows[0].f[0]));
        fprintf(out, "\nBest: trial %s, %s %.17g\nconfig: %s/best.ini (= %s/trial.ini)\n"
                     "checkpoint: %s/best.h5\n",
                rows[0].f[0], obj, rows[0].objective, dir, tdir, dir);
    }
done:
    for (int i = 0; i < n; i++)
        free(rows[i].line);
    free(rows);
    free(head_line);
    fclose(f);
    cnn_config_free(cfg);
    return st;
}
