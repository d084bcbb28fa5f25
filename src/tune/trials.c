/* trials.c - the trials of a search on disk: a trial's config, its result
 * file (what resuming reads), trials.csv and the best trial (see
 * cnn/tune.h). Every file is written atomically: a temporary file in the
 * same directory, fsync()ed, renamed over the name. */
#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnn/layer.h"
#include "cnn/tune.h"
#include "tune_internal.h"

void cnn_tune_trial_dir(char *out, size_t n, const char *dir, int id)
{
    snprintf(out, n, "%s/trials/%04d", dir, id);
}

cnn_status cnn_tune_write_atomic(const char *path, const char *text, cnn_error *err)
{
    char tmp[4200];
    const char *slash = strrchr(path, '/');
    int dlen = slash ? (int)(slash - path) + 1 : 0;
    snprintf(tmp, sizeof tmp, "%.*s.%s.tmp.%ld", dlen, path, slash ? slash + 1 : path,
             (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    size_t len = strlen(text);
    int bad = fwrite(text, 1, len, f) != len || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad || rename(tmp, path) != 0) {
        if (!bad)
            e = errno;
        remove(tmp);
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write: %s", path, strerror(e));
    }
    return CNN_OK;
}

/* The identity of a trial in its result file: its values and epochs, so a
 * result left by another search in the same directory is refused. */
static void trial_key(const cnn_tune_trial *t, const cnn_tune_space *sp, char *out, size_t n)
{
    size_t k = (size_t)snprintf(out, n, "epochs=%ld initial_epoch=%ld parent=%d", t->epochs,
                                t->initial_epoch, t->parent);
    for (int j = 0; j < sp->n && k < n; j++)
        k += (size_t)snprintf(out + k, n - k, " %s=%s", sp->hp[j].name, t->p.v[j]);
}

enum { LIST_LEN = CNN_TUNE_MAX_EXECUTIONS * 26 };

/* The seeds and the objectives of t's executions, separated by spaces. */
static void exec_lists(const cnn_tune_trial *t, char *seeds, char *objectives)
{
    size_t a = 0, b = 0;
    seeds[0] = objectives[0] = 0;
    for (int k = 0; k < t->executions; k++) {
        a += (size_t)snprintf(seeds + a, LIST_LEN - a, "%s%llu", k ? " " : "",
                              (unsigned long long)t->exec_seed[k]);
        b += (size_t)snprintf(objectives + b, LIST_LEN - b, "%s%.17g", k ? " " : "",
                              t->exec_objective[k]);
    }
}

/* Reads the lists exec_lists() wrote into t; 0 when they do not agree. */
static int exec_lists_read(cnn_tune_trial *t, const char *seeds, const char *objectives)
{
    char *end;
    int n = 0, m = 0;
    for (const char *p = seeds; *p && n < CNN_TUNE_MAX_EXECUTIONS; p = end, n++) {
        t->exec_seed[n] = strtoull(p, &end, 10);
        if (end == p)
            return 0;
    }
    for (const char *p = objectives; *p && m < CNN_TUNE_MAX_EXECUTIONS; p = end, m++) {
        t->exec_objective[m] = strtod(p, &end);
        if (end == p)
            return 0;
    }
    t->executions = n;
    return n == m;
}

cnn_status cnn_tune_result_write(const char *dir, const cnn_tune_space *sp,
                                    const cnn_tune_trial *t, cnn_error *err)
{
    char path[4096], key[4096], text[8192 + 2 * LIST_LEN], seeds[LIST_LEN], objs[LIST_LEN];
    cnn_tune_trial_dir(path, sizeof path - 8, dir, t->id);
    strcat(path, "/result");
    trial_key(t, sp, key, sizeof key);
    exec_lists(t, seeds, objs);
    snprintf(text, sizeof text,
             "trial = %s\nstatus = %s\nobjective = %.17g\nepochs_run = %ld\nseconds = %.3f\n"
             "ranks = %d\nseeds = %s\nexecution_objectives = %s\nmessage = %s\n",
             key, t->status == CNN_TRIAL_COMPLETED ? "completed" : "failed", t->objective,
             t->epochs_run, t->seconds, t->ranks, seeds, objs, t->message);
    return cnn_tune_write_atomic(path, text, err);
}

cnn_status cnn_tune_result_read(const char *dir, const cnn_tune_space *sp, cnn_tune_trial *t,
                                   int *found, cnn_error *err)
{
    char path[4096], key[4096], line[4608 + 2 * LIST_LEN], seeds[LIST_LEN] = "",
        objs[LIST_LEN] = "";
    *found = 0;
    cnn_tune_trial_dir(path, sizeof path - 8, dir, t->id);
    strcat(path, "/result");
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return CNN_OK;
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
    }
    trial_key(t, sp, key, sizeof key);
    int have = 0; /* bits: trial, status, objective, epochs_run, seconds, ranks */
    cnn_tune_trial r = *t;
    r.message[0] = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *eq = strstr(line, " = ");
        if (!eq)
            continue;
        *eq = 0;
        const char *k = line, *v = eq + 3;
        char *end = NULL;
        if (!strcmp(k, "trial")) {
            if (strcmp(v, key)) {
                fclose(f);
                return cnn_error_set(err, CNN_ERR_CONFIG,
                                     "%s: written by another search (its trial was '%s', this "
                                     "search's is '%s'); give this search another [tune] dir",
                                     path, v, key);
            }
            have |= 1;
        } else if (!strcmp(k, "status")) {
            r.status = !strcmp(v, "completed") ? CNN_TRIAL_COMPLETED
                       : !strcmp(v, "failed")  ? CNN_TRIAL_FAILED
                                               : CNN_TRIAL_PENDING;
            have |= r.status != CNN_TRIAL_PENDING ? 2 : 0;
        } else if (!strcmp(k, "objective")) {
            r.objective = strtod(v, &end);
            have |= end != v && !*end ? 4 : 0;
        } else if (!strcmp(k, "epochs_run")) {
            r.epochs_run = strtol(v, &end, 10);
            have |= end != v && !*end ? 8 : 0;
        } else if (!strcmp(k, "seconds")) {
            r.seconds = strtod(v, &end);
            have |= end != v && !*end ? 16 : 0;
        } else if (!strcmp(k, "ranks")) {
            r.ranks = (int)strtol(v, &end, 10);
            have |= end != v && !*end ? 32 : 0;
        } else if (!strcmp(k, "seeds")) { /* not in the results of older searches */
            snprintf(seeds, sizeof seeds, "%s", v);
        } else if (!strcmp(k, "execution_objectives")) {
            snprintf(objs, sizeof objs, "%s", v);
        } else if (!strcmp(k, "message")) {
            snprintf(r.message, sizeof r.message, "%s", v);
        }
    }
    fclose(f);
    if (have != 63 || !exec_lists_read(&r, seeds, objs))
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: damaged result file (delete it to run the "
                             "trial again)", path);
    *t = r;
    *found = 1;
    return CNN_OK;
}

/* A CSV field: as it is, or quoted when it holds a comma or a quote. */
static void csv_field(char **p, size_t *left, const char *s)
{
    int quote = strpbrk(s, ",\"\n") != NULL;
    size_t k = 0;
    if (quote && *left > 1)
        (*p)[k++] = '"';
    for (; *s && k + 3 < *left; s++) {
        if (*s == '"')
            (*p)[k++] = '"';
        (*p)[k++] = *s == '\n' ? ' ' : *s;
    }
    if (quote && k + 1 < *left)
        (*p)[k++] = '"';
    (*p)[k] = 0;
    *p += k;
    *left -= k;
}

static void csv_printf(char **p, size_t *left, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void csv_printf(char **p, size_t *left, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(*p, *left, fmt, ap);
    va_end(ap);
    size_t kk = k < 0 ? 0 : (size_t)k >= *left ? *left - 1 : (size_t)k;
    *p += kk;
    *left -= kk;
}

cnn_status cnn_tune_csv_write(const char *dir, const cnn_tune_space *sp, int hyperband,
                              const cnn_tune_trial *t, int n, cnn_error *err)
{
    size_t cap = (size_t)(n + 1) * (size_t)(sp->n * CNN_TUNE_VALUE_LEN + 600 + 2 * LIST_LEN) + 1;
    char *buf = malloc(cap), *p = buf;
    size_t left = cap;
    if (!buf)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for trials.csv");
    csv_printf(&p, &left, "trial_id");
    for (int j = 0; j < sp->n; j++)
        csv_printf(&p, &left, ",%s", sp->hp[j].name);
    csv_printf(&p, &left, ",epochs%s,objective,status,seconds,ranks,seeds,execution_objectives,"
               "message\n",
               hyperband ? ",initial_epoch,bracket,round,parent" : "");
    for (int i = 0; i < n; i++) {
        const cnn_tune_trial *r = &t[i];
        csv_printf(&p, &left, "%d", r->id);
        for (int j = 0; j < sp->n; j++) {
            csv_printf(&p, &left, ",");
            csv_field(&p, &left, r->p.v[j]);
        }
        csv_printf(&p, &left, ",%ld", r->status == CNN_TRIAL_COMPLETED ? r->epochs_run : r->epochs);
        if (hyperband)
            csv_printf(&p, &left, ",%ld,%d,%d,%d", r->initial_epoch, r->bracket, r->round,
                       r->parent);
        if (r->status == CNN_TRIAL_COMPLETED)
            csv_printf(&p, &left, ",%.17g", r->objective);
        else
            csv_printf(&p, &left, ",");
        csv_printf(&p, &left, ",%s",
                   r->status == CNN_TRIAL_COMPLETED ? "completed"
                   : r->status == CNN_TRIAL_FAILED  ? "failed"
                                                    : "pending");
        char seeds[LIST_LEN], objs[LIST_LEN];
        exec_lists(r, seeds, objs);
        if (r->status == CNN_TRIAL_PENDING)
            csv_printf(&p, &left, ",,,,,");
        else
            csv_printf(&p, &left, ",%.3f,%d,%s,%s,", r->seconds, r->ranks, seeds, objs);
        csv_field(&p, &left, r->message);
        csv_printf(&p, &left, "\n");
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/trials.csv", dir);
    cnn_status st = cnn_tune_write_atomic(path, buf, err);
    free(buf);
    return st;
}

int cnn_tune_better(double a, double b, int maximize) { return maximize ? a > b : a < b; }

int cnn_tune_best(const cnn_tune_trial *t, int n, int maximize)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (t[i].status == CNN_TRIAL_COMPLETED &&
            (best < 0 || cnn_tune_better(t[i].objective, t[best].objective, maximize)))
            best = i;
    return best;
}

/* The search config's text with the lines of [tune] and [search] blanked
 * (their header becomes a comment), so every other line keeps its
 * number. The caller frees it. */
static char *strip_tuner_sections(const char *text)
{
    size_t n = strlen(text);
    char *out = malloc(n + 64);
    if (!out)
        return NULL;
    char *o = out;
    int skip = 0;
    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        const char *b = l;
        while (b < l + len && (*b == ' ' || *b == '\t'))
            b++;
        if (*b == '[') {
            int tune = !strncmp(b, "[tune]", 6), search = !strncmp(b, "[search]", 8);
            skip = tune || search;
            if (skip)
                o += sprintf(o, "; [%s] of cnn-tune", tune ? "tune" : "search");
        }
        if (!skip) {
            memcpy(o, l, len);
            o += len;
        }
        if (!e)
            break;
        *o++ = '\n';
        l = e + 1;
    }
    *o = 0;
    return out;
}

cnn_status cnn_tune_trial_load(const cnn_config *search, const cnn_tune_space *sp,
                               const cnn_tune_trial *t, const char *const *extra, int nextra,
                               cnn_config **out, cnn_error *err)
{
    *out = NULL;
    char *text = strip_tuner_sections(search->text);
    if (!text)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    cnn_config *cfg = NULL;
    cnn_status st = cnn_config_parse_string(&cfg, text, search->path, err);
    free(text);
    if (st)
        return st;
    cfg->layer_base = cnn_layer_default_name;
    char set[512];
    for (int j = 0; j < sp->n && !st; j++) {
        snprintf(set, sizeof set, "%s=%s", sp->hp[j].name, t->p.v[j]);
        st = cnn_config_override(cfg, set, err);
    }
    for (int i = 0; i < nextra && !st; i++)
        st = cnn_config_override(cfg, extra[i], err);
    if (st) {
        cnn_config_free(cfg);
        return st;
    }
    *out = cfg;
    return CNN_OK;
}

cnn_status cnn_tune_trial_config(const cnn_config *search, const cnn_tune_space *sp,
                                 const cnn_tune_trial *t, const char *const *extra, int nextra,
                                 char **out, cnn_error *err)
{
    *out = NULL;
    cnn_config *cfg;
    cnn_status st = cnn_tune_trial_load(search, sp, t, extra, nextra, &cfg, err);
    if (st)
        return st;
    st = cnn_config_text(cfg, out, err);
    cnn_config_free(cfg);
    /* cnn_config_text's note says --set; here the search set the values */
    static const char from[] = "; set on the command line (--set)", to[] = "; set by cnn-tune";
    for (char *p = st ? NULL : *out; p && (p = strstr(p, from));) {
        memcpy(p, to, sizeof to - 1);
        memmove(p + sizeof to - 1, p + sizeof from - 1, strlen(p + sizeof from - 1) + 1);
        p += sizeof to - 1;
    }
    return st;
}
