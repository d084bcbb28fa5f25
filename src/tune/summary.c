/* summary.c - `cnn-tune --summary DIR`: the trials of a search, best
 * first, their budget and graphs, read back from DIR/trials.csv,
 * DIR/search.ini and the trials' history.csv files (see cnn/tune.h). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/plot.h"
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

/* DIR/trials.csv as read: the header, its columns, the rows in file (id)
 * order. */
typedef struct table {
    char *head_line, *head[MAX_FIELDS];
    int nh;
    row *rows;
    int n;
    int c_obj, c_status, c_epochs, c_secs, c_msg; /* always there */
    int c_initial, c_bracket, c_parent;           /* hyperband, else -1 */
    int c_seeds;                                  /* -1 in older tables */
} table;

static int column(char **head, int nh, const char *name)
{
    for (int i = 0; i < nh; i++)
        if (!strcmp(head[i], name))
            return i;
    return -1;
}

static void table_free(table *T)
{
    for (int i = 0; i < T->n; i++)
        free(T->rows[i].line);
    free(T->rows);
    free(T->head_line);
    memset(T, 0, sizeof *T);
}

static cnn_status table_read(table *T, const char *path, cnn_error *err)
{
    memset(T, 0, sizeof *T);
    FILE *f = fopen(path, "r");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    size_t cap = 0;
    int rcap = 0;
    cnn_status st = CNN_OK;
    if (getline(&T->head_line, &cap, f) > 0) {
        T->head_line[strcspn(T->head_line, "\n")] = 0;
        T->nh = csv_split(T->head_line, T->head);
    }
    T->c_obj = column(T->head, T->nh, "objective");
    T->c_status = column(T->head, T->nh, "status");
    T->c_epochs = column(T->head, T->nh, "epochs");
    T->c_secs = column(T->head, T->nh, "seconds");
    T->c_msg = column(T->head, T->nh, "message");
    T->c_initial = column(T->head, T->nh, "initial_epoch");
    T->c_bracket = column(T->head, T->nh, "bracket");
    T->c_parent = column(T->head, T->nh, "parent");
    T->c_seeds = column(T->head, T->nh, "seeds");
    if (T->nh < 2 || strcmp(T->head[0], "trial_id") || T->c_obj < 0 || T->c_status < 0 ||
        T->c_epochs < 0 || T->c_secs < 0 || T->c_msg < 0) {
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
        if (T->n == rcap) {
            rcap = rcap ? 2 * rcap : 32;
            row *r = realloc(T->rows, (size_t)rcap * sizeof *r);
            if (!r) {
                free(line);
                st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
                goto done;
            }
            T->rows = r;
        }
        row *r = &T->rows[T->n++];
        r->line = line;
        r->nf = csv_split(line, r->f);
        if (r->nf != T->nh) {
            st = cnn_error_set(err, CNN_ERR_FORMAT, "%s:%d: %d fields, the header has %d", path,
                               T->n + 1, r->nf, T->nh);
            goto done;
        }
        r->completed = !strcmp(r->f[T->c_status], "completed");
        r->objective = r->completed ? strtod(r->f[T->c_obj], NULL) : NAN;
    }
done:
    fclose(f);
    if (st)
        table_free(T);
    return st;
}

/* A search as its directory holds it: the [tune] section of
 * DIR/search.ini (tc points into cfg) and DIR/trials.csv. */
typedef struct saved {
    cnn_config *cfg;
    cnn_tune_config tc;
    table T;
} saved;

static void saved_free(saved *S)
{
    table_free(&S->T);
    cnn_config_free(S->cfg);
    S->cfg = NULL;
}

static cnn_status saved_read(saved *S, const char *dir, cnn_error *err)
{
    char path[4096];
    memset(S, 0, sizeof *S);
    snprintf(path, sizeof path, "%s/search.ini", dir);
    cnn_status st = cnn_config_load(&S->cfg, path, err);
    if (!st && !(st = cnn_tune_config_read(&S->tc, S->cfg, err))) {
        snprintf(path, sizeof path, "%s/trials.csv", dir);
        st = table_read(&S->T, path, err);
    }
    if (st)
        saved_free(S);
    return st;
}

/* The executions of row r: the number of its seeds (1 in older tables). */
static int row_executions(const table *T, const row *r)
{
    if (T->c_seeds < 0 || !r->f[T->c_seeds][0])
        return 1;
    int n = 1;
    for (const char *p = r->f[T->c_seeds]; *p; p++)
        n += *p == ' ';
    return n;
}

/* The epochs row r trained: its epochs less those it inherited, times its
 * executions (a failed trial: the epochs it was to train). */
static long row_budget(const table *T, const row *r)
{
    long e = atol(r->f[T->c_epochs]) - (T->c_initial >= 0 ? atol(r->f[T->c_initial]) : 0);
    return e * row_executions(T, r);
}

/* --- the graphs ------------------------------------------------------ */

/* DIR/objective.png: the objective of every completed trial against its
 * id, and the best so far. */
static cnn_status plot_trials(const char *dir, const char *obj, int maximize, const table *T,
                              char *path, size_t np, cnn_error *err)
{ /* path: " DIR/objective.png" */
    double *v = malloc((size_t)(6 * T->n + 1) * sizeof *v);
    if (!v)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    double *id = v, *y = v + T->n, *best = v + 2 * T->n, *bid = v + 4 * T->n, b = NAN;
    int failed = 0, nb = 0;
    for (int i = 0; i < T->n; i++) {
        const row *r = &T->rows[i];
        id[i] = atoi(r->f[0]);
        y[i] = r->objective; /* NaN: not drawn */
        failed += !r->completed;
        if (r->completed && (isnan(b) || cnn_tune_better(r->objective, b, maximize))) {
            if (!isnan(b)) { /* a step: the old best up to this trial */
                bid[nb] = id[i];
                best[nb++] = b;
            }
            b = r->objective;
        }
        if (!isnan(b)) {
            bid[nb] = id[i];
            best[nb++] = b;
        }
    }
    char title[256];
    if (failed)
        snprintf(title, sizeof title, "%s per trial (%d failed or pending, not shown)", obj,
                 failed);
    else
        snprintf(title, sizeof title, "%s per trial", obj);
    cnn_plot_series s[2] = {{"completed trial", T->n, id, y, 1}, {"best so far", nb, bid, best, 0}};
    snprintf(path, np, " %s/objective.png", dir);
    cnn_status st = cnn_plot_lines(path + 1, title, "trial", obj, s, 2, err);
    free(v);
    return st;
}

/* The objective of each epoch of trial id in v[0..epochs), the mean over
 * its executions' history.csv files; NaN where there is none. */
static void trial_curve(const char *dir, int id, int executions, cnn_tune_objective o, double *v,
                        int epochs)
{
    char path[4200], tdir[4096];
    int *n = calloc((size_t)epochs, sizeof *n);
    for (int e = 0; e < epochs; e++)
        v[e] = 0;
    cnn_tune_trial_dir(tdir, sizeof tdir, dir, id);
    for (int k = 0; k < executions && n; k++) {
        cnn_history_csv h;
        cnn_error e2 = {0};
        snprintf(path, sizeof path, "%s/exec%d/history.csv", tdir, k);
        if (cnn_history_csv_read(&h, path, &e2) != CNN_OK)
            continue;
        const double *col = o == CNN_OBJ_LOSS       ? h.loss
                            : o == CNN_OBJ_ACCURACY ? h.accuracy
                            : o == CNN_OBJ_VAL_LOSS ? h.val_loss
                                                    : h.val_accuracy;
        for (int i = 0; i < h.n && i < epochs; i++)
            if (isfinite(col[i])) {
                v[i] += col[i];
                n[i]++;
            }
        cnn_history_csv_free(&h);
    }
    for (int e = 0; e < epochs; e++)
        v[e] = n && n[e] ? v[e] / n[e] : NAN;
    free(n);
}

/* Hyperband: DIR/objective-bracket-B.png for each bracket B, the
 * objective per epoch of its trials, a line per trial that was not
 * promoted (a promoted trial's line is its last round's, whose history
 * holds the epochs of the rounds before). */
static cnn_status plot_brackets(const char *dir, cnn_tune_objective o, const table *T,
                                char *paths, size_t np, cnn_error *err)
{
    const char *obj = cnn_tune_objective_names[o];
    int maxb = -1;
    long maxe = 1;
    for (int i = 0; i < T->n; i++) {
        int b = atoi(T->rows[i].f[T->c_bracket]);
        long e = atol(T->rows[i].f[T->c_epochs]);
        maxb = b > maxb ? b : maxb;
        maxe = e > maxe ? e : maxe;
    }
    int *promoted = calloc((size_t)(T->n + 1), sizeof *promoted);
    cnn_plot_series *s = calloc((size_t)(T->n + 1), sizeof *s);
    double *xs = malloc((size_t)maxe * sizeof *xs);
    double *ys = malloc((size_t)(T->n + 1) * (size_t)maxe * sizeof *ys);
    char(*labels)[32] = calloc((size_t)(T->n + 1), sizeof *labels);
    cnn_status st = CNN_OK;
    if (!promoted || !s || !xs || !ys || !labels)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    for (int i = 0; i < T->n && !st; i++) {
        int p = atoi(T->rows[i].f[T->c_parent]);
        if (p >= 0 && p < T->n)
            promoted[p] = 1;
    }
    for (long e = 0; e < maxe && !st; e++)
        xs[e] = (double)(e + 1);
    size_t used = 0;
    paths[0] = 0;
    for (int b = 0; b <= maxb && !st; b++) {
        int ns = 0, failed = 0, trials = 0;
        for (int i = 0; i < T->n; i++) {
            const row *r = &T->rows[i];
            if (atoi(r->f[T->c_bracket]) != b)
                continue;
            trials++;
            if (!r->completed) {
                failed++;
                continue;
            }
            if (promoted[i])
                continue;
            int id = atoi(r->f[0]);
            int e = atoi(r->f[T->c_epochs]);
            double *v = ys + (size_t)ns * (size_t)maxe;
            trial_curve(dir, id, row_executions(T, r), o, v, e);
            snprintf(labels[ns], sizeof labels[ns], "trial %d", id);
            s[ns] = (cnn_plot_series){labels[ns], e, xs, v, e == 1};
            ns++;
        }
        if (!trials)
            continue;
        char title[256], path[4200];
        snprintf(title, sizeof title, "bracket %d: %s per epoch, a line per trial%s", b, obj,
                 failed ? " (failed not shown)" : "");
        snprintf(path, sizeof path, "%s/objective-bracket-%d.png", dir, b);
        st = cnn_plot_lines(path, title, "epoch", obj, s, ns, err);
        if (!st && used + strlen(path) + 2 < np)
            used += (size_t)snprintf(paths + used, np - used, " %s", path);
    }
    free(promoted);
    free(s);
    free(xs);
    free(ys);
    free(labels);
    return st;
}

/* The graphs of table T; paths receives their names, separated by spaces. */
static cnn_status plot_table(const char *dir, const cnn_tune_config *tc, const table *T,
                             char *paths, size_t np, cnn_error *err)
{
    cnn_status st = plot_trials(dir, cnn_tune_objective_names[tc->objective], tc->maximize, T,
                                paths, np, err);
    if (!st && T->c_bracket >= 0 && T->c_parent >= 0) {
        size_t k = strlen(paths);
        st = plot_brackets(dir, tc->objective, T, paths + k, np - k, err);
    }
    return st;
}

cnn_status cnn_tune_plot(const char *dir, char *paths, size_t np, cnn_error *err)
{
    saved S;
    cnn_status st = saved_read(&S, dir, err);
    if (!st)
        st = plot_table(dir, &S.tc, &S.T, paths, np, err);
    saved_free(&S);
    return st;
}

/* --- the table ------------------------------------------------------- */

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

static int by_id(const void *a, const void *b)
{
    return atoi(((const row *)a)->f[0]) - atoi(((const row *)b)->f[0]);
}

/* The budget: the epochs trained in all, and after how many (in the order
 * of the trials) the best objective was first reached. */
static void print_budget(FILE *out, const table *T, const char *obj, int maximize)
{
    long total = 0, at = 0;
    int best = -1;
    for (int i = 0; i < T->n; i++) {
        const row *r = &T->rows[i];
        total += row_budget(T, r);
        if (r->completed && (best < 0 || cnn_tune_better(r->objective, T->rows[best].objective,
                                                         maximize))) {
            best = i;
            at = total;
        }
    }
    fprintf(out, "Budget: %ld epochs trained in %d trials", total, T->n);
    if (best >= 0)
        fprintf(out, "; the best %s, %.6f, first reached by trial %s after %ld epochs", obj,
                T->rows[best].objective, T->rows[best].f[0], at);
    fprintf(out, "\n");
}

cnn_status cnn_tune_summary(const char *dir, FILE *out, cnn_error *err)
{
    saved S;
    cnn_status st = saved_read(&S, dir, err);
    if (st)
        return st;
    const cnn_tune_config tc = S.tc;
    table T = S.T;
    const char *obj = cnn_tune_objective_names[tc.objective];
    char paths[8192];
    cnn_error perr = {0};
    cnn_status pst = plot_table(dir, &tc, &T, paths, sizeof paths, &perr); /* in id order */
    int n = T.n, c_epochs = T.c_epochs;
    row *rows = T.rows;
    char **head = T.head;
    summary_max = tc.maximize;
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
            fprintf(out, " %6s %12.6f %8s  %s\n", r->f[c_epochs], r->objective, r->f[T.c_secs],
                    r->f[T.c_status]);
        else
            fprintf(out, " %6s %12s %8s  %s: %s\n", r->f[c_epochs], "-", r->f[T.c_secs],
                    r->f[T.c_status], r->f[T.c_msg]);
    }
    if (done_n) {
        char tdir[4096];
        cnn_tune_trial_dir(tdir, sizeof tdir, dir, atoi(rows[0].f[0]));
        fprintf(out, "\nBest: trial %s, %s %.17g\nconfig: %s/best.ini (= %s/trial.ini)\n"
                     "checkpoint: %s/best.h5\n",
                rows[0].f[0], obj, rows[0].objective, dir, tdir, dir);
    }
    qsort(rows, (size_t)n, sizeof *rows, by_id);
    print_budget(out, &T, obj, tc.maximize);
    if (pst)
        fprintf(out, "warning: no plots: %s\n", perr.msg);
    else
        fprintf(out, "plots:%s\n", paths);
    S.T = T; /* the same rows, sorted */
    saved_free(&S);
    return st;
}
