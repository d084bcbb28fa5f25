/* search.c - a search on the ranks of one MPI job (cnn_tune_search in
 * cnn/tune.h).
 *
 * The world is cut into G groups of ranks_per_trial ranks (cnn_dist_split).
 * Every rank plans the same trials, as the plan is a pure function of the
 * config and the results so far: random points from (seed, sample,
 * attempt), the grid in order, or Hyperband's brackets and rounds, whose
 * promotions rank the previous round by objective (ties: the lower id).
 * The trials still to run go out in waves of G, trial j of a wave to group
 * j; each group trains its trial as an ordinary data-parallel run
 * (cnn_run_train on the group), then the wave's results are shared with
 * every rank (one allreduce) and rank 0 prints them and rewrites
 * trials.csv, best.ini and best.h5. A wave ends with its slowest trial.
 *
 * On disk, DIR/trials/NNNN/ holds trial.ini (the runnable config), for
 * execution K execK/ (log.txt, history.csv, ckpt/) and, once done, result.
 * A run of the same search finds the results and does not repeat those
 * trials; a trial that was interrupted resumes from its newest checkpoint
 * ([checkpoint] resume = auto), which continues it exactly. A Hyperband
 * promotion starts from a link to its parent's last checkpoint, so it
 * continues the parent's training instead of starting over.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnn/checkpoint.h"
#include "cnn/layer.h"
#include "cnn/train.h"
#include "cnn/tune.h"
#include "dist.h"
#include "tune_internal.h"

enum { MAX_ATTEMPTS = 100, MAX_GRID = 100000 };

typedef struct search {
    cnn_config *cfg; /* the search config */
    cnn_tune_config tc;
    cnn_tune_space sp;
    const cnn_dist *world;
    cnn_dist group;
    int ngroups, color;
    FILE *out;       /* rank 0's */
    cnn_tune_trial *t; /* (n) every trial planned, by id */
    int n, cap;
    long samples;    /* random points drawn */
    int exhausted;   /* the sampler found no new point */
    double t0;
    int stopped;
    long threads;    /* [train] threads of every trial; 0: the config's own */
} search;

/* What a group reports of its trial at the end of a wave. */
typedef struct slot {
    cnn_tune_trial t;
    int filled, stopped, fatal;
    char fatal_msg[256];
} slot;

static const char *objective_name(const search *S) { return cnn_tune_objective_names[S->tc.objective]; }

static int hyperband(const search *S) { return S->tc.algorithm == CNN_TUNE_HYPERBAND; }

/* --- the plan ------------------------------------------------------- */

static cnn_tune_trial *add_trial(search *S, const cnn_tune_point *p, cnn_error *err)
{
    if (S->n == S->cap) {
        int cap = S->cap ? 2 * S->cap : 64;
        cnn_tune_trial *t = realloc(S->t, (size_t)cap * sizeof *t);
        if (!t) {
            cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for %d trials", cap);
            return NULL;
        }
        S->t = t;
        S->cap = cap;
    }
    cnn_tune_trial *t = &S->t[S->n];
    memset(t, 0, sizeof *t);
    t->id = S->n++;
    t->p = *p;
    t->parent = -1;
    t->bracket = t->round = -1;
    t->objective = NAN;
    return t;
}

/* A random point no earlier trial has (Keras Tuner's collision check);
 * 0 when MAX_ATTEMPTS draws found none: the space is exhausted. */
static int new_point(search *S, cnn_tune_point *p)
{
    for (uint64_t a = 0; a < MAX_ATTEMPTS; a++) {
        cnn_tune_sample(&S->sp, S->tc.seed, (uint64_t)S->samples, a, p);
        int seen = 0;
        for (int i = 0; i < S->n && !seen; i++)
            seen = cnn_tune_point_equal(&S->sp, &S->t[i].p, p);
        if (!seen) {
            S->samples++;
            return 1;
        }
    }
    S->exhausted = 1;
    return 0;
}

/* The result a former run of the search left for t, if any. Every rank
 * reads it (the directory is shared, as checkpoints are). */
static cnn_status load_result(search *S, cnn_tune_trial *t, cnn_error *err)
{
    int found;
    return cnn_tune_result_read(S->tc.dir, &S->sp, t, &found, err);
}

/* --- one trial, on one group ---------------------------------------- */

/* The best value of the objective over the epochs of h; NaN if none. */
static double objective_of(const search *S, const cnn_history *h)
{
    double best = NAN;
    for (int i = 0; i < h->n; i++) {
        const cnn_epoch_record *r = &h->rows[i];
        double v = S->tc.objective == CNN_OBJ_LOSS       ? r->loss
                   : S->tc.objective == CNN_OBJ_ACCURACY ? r->accuracy
                   : S->tc.objective == CNN_OBJ_VAL_LOSS ? r->val_loss
                                                         : r->val_accuracy;
        if (isfinite(v) && (isnan(best) || cnn_tune_better(v, best, S->tc.maximize)))
            best = v;
    }
    return best;
}

/* Links (or copies) src to dst atomically. */
static int link_file(const char *src, const char *dst)
{
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dst, (long)getpid());
    unlink(tmp);
    if (link(src, tmp) != 0) {
        FILE *in = fopen(src, "rb"), *out = in ? fopen(tmp, "wb") : NULL;
        char buf[65536];
        size_t k;
        int bad = !out;
        while (!bad && (k = fread(buf, 1, sizeof buf, in)) > 0)
            bad = fwrite(buf, 1, k, out) != k;
        bad |= in && ferror(in);
        if (out && (fflush(out) != 0 || fsync(fileno(out)) != 0))
            bad = 1;
        if (in)
            fclose(in);
        if (out && fclose(out) != 0)
            bad = 1;
        if (bad) {
            unlink(tmp);
            return -1;
        }
    }
    int rc = rename(tmp, dst);
    /* dst already a link to src: rename() leaves both names as they are */
    unlink(tmp);
    return rc;
}

/* Group root: a promoted trial's execution starts from its parent's last
 * checkpoint, linked into its own checkpoint directory (once: after that,
 * its own newer checkpoints win in resume = auto). */
static cnn_status inherit_checkpoint(const search *S, const cnn_tune_trial *t, int k,
                                     const char *ckdir, cnn_error *err)
{
    char pdir[4096], path[4096], dst[8200];
    int found;
    cnn_status st = cnn_checkpoint_find_latest(ckdir, path, sizeof path, &found, err);
    if (st || found)
        return st;
    cnn_tune_trial_dir(pdir, sizeof pdir - 32, S->tc.dir, t->parent);
    snprintf(pdir + strlen(pdir), 32, "/exec%d/ckpt", k);
    if ((st = cnn_checkpoint_find_latest(pdir, path, sizeof path, &found, err)))
        return st;
    if (!found)
        return cnn_error_set(err, CNN_ERR_IO, "%s: no checkpoint of trial %d to continue from",
                             pdir, t->parent);
    snprintf(dst, sizeof dst, "%s/%s", ckdir, strrchr(path, '/') + 1);
    if (link_file(path, dst) != 0)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot link %s there: %s", dst, path,
                             strerror(errno));
    return CNN_OK;
}

/* What the search sets in every trial's config beside its values: the
 * epochs of a Hyperband trial, and the threads when the config leaves
 * them to the machine (see prepare()). Returns how many went to set. */
static int trial_extras(const search *S, const cnn_tune_trial *t, char (*set)[4400])
{
    int n = 0;
    if (hyperband(S))
        snprintf(set[n++], 4400, "train.epochs=%ld", t->epochs);
    if (S->threads)
        snprintf(set[n++], 4400, "train.threads=%ld", S->threads);
    return n;
}

/* The id of t's first trial: itself, or the trial of round 0 that a
 * Hyperband promotion descends from. */
static int root_of(const search *S, const cnn_tune_trial *t)
{
    while (t->parent >= 0)
        t = &S->t[t->parent];
    return t->id;
}

/* The overrides that make a trial's execution k a run of the search: its
 * files in the trial's directory, a checkpoint per epoch to resume from,
 * and for k > 0 its seed. */
static int run_overrides(const search *S, const cnn_tune_trial *t, int k, uint64_t seed,
                         const char *edir, char (*set)[4400])
{
    int n = trial_extras(S, t, set);
    snprintf(set[n++], 4400, "checkpoint.dir=%s/ckpt", edir);
    snprintf(set[n++], 4400, "checkpoint.every_epochs=1");
    snprintf(set[n++], 4400, "checkpoint.keep=1");
    snprintf(set[n++], 4400, "checkpoint.resume=auto");
    snprintf(set[n++], 4400, "train.history=%s/history.csv", edir);
    snprintf(set[n++], 4400, "train.plot=false");
    snprintf(set[n++], 4400, "train.progress=lines");
    if (k > 0)
        snprintf(set[n++], 4400, "train.seed=%llu", (unsigned long long)seed);
    return n;
}

/* The message of the group's first rank that has one, on every rank of
 * the group. Collective over the group. */
static void share_message(const cnn_dist *g, cnn_error *err)
{
    int has = err->msg[0] != 0, who = cnn_dist_agree(g, &has);
    if (who >= 0)
        cnn_dist_bcast(g, err->msg, sizeof err->msg, who);
}

/* Execution k of trial t on this group: *seed (its [train] seed),
 * *objective, *epochs_run; a failure of the trial is its status and
 * message; *stopped when a signal stopped it. Collective over the group. */
static cnn_status run_execution(search *S, const cnn_tune_trial *t, int k, const char *tdir,
                                uint64_t *seed, double *objective, long *epochs_run, int *stopped,
                                cnn_error *err)
{
    const cnn_dist *g = &S->group;
    char edir[4200], ckdir[4300], (*set)[4400] = calloc(16, sizeof *set);
    const char *sets[16];
    cnn_config *cfg = NULL;
    cnn_run run = {0};
    FILE *log = NULL;
    cnn_status st = CNN_OK;
    if (!set)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    snprintf(edir, sizeof edir, "%s/exec%d", tdir, k);
    snprintf(ckdir, sizeof ckdir, "%s/ckpt", edir);
    /* the seed of execution 0 ([train] seed as the trial sets it) */
    cnn_train_config trc;
    if (!(st = cnn_tune_trial_load(S->cfg, &S->sp, t, NULL, 0, &cfg, err)))
        st = cnn_train_config_read(&trc, cfg, err);
    cnn_config_free(cfg);
    cfg = NULL;
    *seed = st ? 0 : cnn_tune_execution_seed(S->tc.seed, trc.seed, root_of(S, t), k);
    int nset = st ? 0 : run_overrides(S, t, k, *seed, edir, set);
    for (int i = 0; i < nset; i++)
        sets[i] = set[i];
    if (!st)
        st = cnn_tune_trial_load(S->cfg, &S->sp, t, sets, nset, &cfg, err);
    if (!st) {
        st = cnn_run_setup(&run, cfg, err); /* owns cfg */
        cfg = NULL;
    }
    /* setup is the same on every rank of the group; the files are the root's */
    if (!st && g->rank == 0) {
        if (cnn_make_dirs(ckdir) != 0)
            st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot create: %s", ckdir, strerror(errno));
        else if (t->parent >= 0)
            st = inherit_checkpoint(S, t, k, ckdir, err);
        char lpath[4300];
        snprintf(lpath, sizeof lpath, "%s/log.txt", edir);
        if (!st && !(log = fopen(lpath, "a")))
            st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot write: %s", lpath, strerror(errno));
    } else if (!st && !(log = fopen("/dev/null", "w"))) {
        st = cnn_error_set(err, CNN_ERR_IO, "/dev/null: %s", strerror(errno));
    }
    int s = st;
    cnn_dist_agree(g, &s);
    if (!st && s)
        err->msg[0] = 0;
    st = (cnn_status)s;
    if (!st)
        st = cnn_run_train(&run, g, log, err);
    share_message(g, err);
    *stopped = !st && run.stopped;
    *epochs_run = run.history.n;
    *objective = objective_of(S, &run.history);
    if (!st && !*stopped && isnan(*objective))
        st = cnn_error_set(err, CNN_ERR_NUMERIC, "no finite %s in %d epoch%s",
                           objective_name(S), run.history.n, run.history.n == 1 ? "" : "s");
    if (log)
        fclose(log);
    cnn_config_free(cfg);
    cnn_run_free(&run);
    free(set);
    return st;
}

/* Trial t on this group; the group's root fills *out (the rest: zeros). */
static void run_trial(search *S, const cnn_tune_trial *t, slot *out)
{
    const cnn_dist *g = &S->group;
    cnn_error err = {0};
    char tdir[4096];
    cnn_tune_trial r = *t;
    double t0 = cnn_dist_time(), sum = 0;
    int stopped = 0;
    cnn_status st = CNN_OK;
    cnn_tune_trial_dir(tdir, sizeof tdir, S->tc.dir, t->id);
    if (g->rank == 0) { /* the runnable config, before anything trains */
        char *text = NULL, path[4200], set[2][4400];
        const char *extra[2] = {set[0], set[1]};
        int nextra = trial_extras(S, t, set);
        if (cnn_make_dirs(tdir) != 0)
            st = cnn_error_set(&err, CNN_ERR_IO, "%s: cannot create: %s", tdir, strerror(errno));
        if (!st)
            st = cnn_tune_trial_config(S->cfg, &S->sp, t, extra, nextra, &text, &err);
        snprintf(path, sizeof path, "%s/trial.ini", tdir);
        if (!st)
            st = cnn_tune_write_atomic(path, text, &err);
        free(text);
    }
    int s = st;
    cnn_dist_agree(g, &s);
    share_message(g, &err);
    st = (cnn_status)s;
    r.executions = 0;
    for (int k = 0; k < S->tc.executions && !st && !stopped; k++) {
        double obj = NAN;
        uint64_t seed = 0;
        st = run_execution(S, t, k, tdir, &seed, &obj, &r.epochs_run, &stopped, &err);
        r.exec_seed[k] = seed;
        r.exec_objective[k] = obj;
        r.executions = k + 1;
        sum += obj; /* in the order of k: the same sum in every group */
    }
    r.seconds = cnn_dist_time() - t0;
    r.ranks = g->world;
    r.status = st ? CNN_TRIAL_FAILED : CNN_TRIAL_COMPLETED;
    r.objective = st ? NAN : sum / (double)S->tc.executions;
    snprintf(r.message, sizeof r.message, "%s", st ? err.msg : "");
    if (g->rank != 0)
        return;
    out->filled = 1;
    out->stopped = stopped;
    out->t = r;
    if (!stopped && (st = cnn_tune_result_write(S->tc.dir, &S->sp, &r, &err))) {
        out->fatal = 1;
        snprintf(out->fatal_msg, sizeof out->fatal_msg, "%s", err.msg);
    }
}

/* --- rank 0's reports ----------------------------------------------- */

static void print_values(const search *S, const cnn_tune_trial *t)
{
    for (int j = 0; j < S->sp.n; j++)
        fprintf(S->out, "%s%s=%s", j ? " " : "", S->sp.hp[j].name, t->p.v[j]);
}

static void report_trial(const search *S, const cnn_tune_trial *t, int planned)
{
    int b = cnn_tune_best(S->t, t->id + 1, S->tc.maximize); /* so far, in the order of ids */
    fprintf(S->out, "Trial %d", t->id);
    if (!hyperband(S))
        fprintf(S->out, "/%d", planned);
    else
        fprintf(S->out, " (bracket %d round %d, epochs %ld-%ld)", t->bracket, t->round,
                t->initial_epoch + 1, t->epochs);
    fprintf(S->out, " %s [%.1fs, %d rank%s]", t->status == CNN_TRIAL_COMPLETED ? "completed" : "failed",
            t->seconds, t->ranks, t->ranks == 1 ? "" : "s");
    if (t->status == CNN_TRIAL_COMPLETED)
        fprintf(S->out, " %s: %.4f", objective_name(S), t->objective);
    else
        fprintf(S->out, ": %s", t->message);
    if (b >= 0)
        fprintf(S->out, " (best %.4f, trial %d)", S->t[b].objective, S->t[b].id);
    fprintf(S->out, "; ");
    print_values(S, t);
    fprintf(S->out, "\n");
    fflush(S->out);
}

/* DIR/trials.csv, DIR/best.ini (the best trial's trial.ini) and DIR/best.h5
 * (a link to its last checkpoint). Rank 0. */
static cnn_status write_outputs(const search *S, cnn_error *err)
{
    cnn_status st = cnn_tune_csv_write(S->tc.dir, &S->sp, hyperband(S), S->t, S->n, err);
    int b = cnn_tune_best(S->t, S->n, S->tc.maximize);
    if (st || b < 0)
        return st;
    char tdir[4096], src[4200], dst[4200], ck[4200];
    int found;
    cnn_tune_trial_dir(tdir, sizeof tdir, S->tc.dir, S->t[b].id);
    snprintf(src, sizeof src, "%s/trial.ini", tdir);
    snprintf(dst, sizeof dst, "%s/best.ini", S->tc.dir);
    if (link_file(src, dst) != 0)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write: %s", dst, strerror(errno));
    snprintf(src, sizeof src, "%s/exec0/ckpt", tdir);
    if ((st = cnn_checkpoint_find_latest(src, ck, sizeof ck, &found, err)) || !found)
        return st;
    snprintf(dst, sizeof dst, "%s/best.h5", S->tc.dir);
    if (link_file(ck, dst) != 0)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write: %s", dst, strerror(errno));
    return CNN_OK;
}

/* --- waves ------------------------------------------------------------ */

/* Runs the trials ids[0..k) that have no result yet, in waves of one trial
 * per group. Collective over the world. */
static cnn_status run_trials(search *S, const int *ids, int k, cnn_error *err)
{
    const cnn_dist *w = S->world;
    const int G = S->ngroups;
    int *todo = malloc((size_t)(k ? k : 1) * sizeof *todo), n = 0;
    slot *slots = calloc((size_t)G, sizeof *slots);
    cnn_status st = CNN_OK;
    if (!todo || !slots) {
        free(todo);
        free(slots);
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < k; i++)
        if (S->t[ids[i]].status == CNN_TRIAL_PENDING)
            todo[n++] = ids[i];
    if (w->rank == 0 && n < k) {
        fprintf(S->out, "resumed: %d trial%s of %s already done (their result files)\n", k - n,
                k - n == 1 ? "" : "s", S->tc.dir);
        fflush(S->out);
    }
    for (int w0 = 0; w0 < n && !st && !S->stopped; w0 += G) {
        memset(slots, 0, (size_t)G * sizeof *slots);
        if (w0 + S->color < n)
            run_trial(S, &S->t[todo[w0 + S->color]], &slots[S->color]);
        /* only each group's root filled its slot: the maximum of the bytes
         * is every group's report */
        cnn_dist_allreduce_max_u8(w, (uint8_t *)slots, (size_t)G * sizeof *slots);
        for (int g = 0; g < G && w0 + g < n; g++) {
            const slot *sl = &slots[g];
            if (sl->fatal && !st)
                st = cnn_error_set(err, CNN_ERR_IO, "%s", sl->fatal_msg);
            S->stopped |= sl->stopped;
            if (!sl->stopped)
                S->t[todo[w0 + g]] = sl->t;
        }
        if (w->rank == 0) {
            for (int g = 0; g < G && w0 + g < n; g++)
                if (!slots[g].stopped)
                    report_trial(S, &S->t[todo[w0 + g]], S->n);
            cnn_error e2 = {0};
            if (!st && write_outputs(S, &e2) != CNN_OK)
                st = cnn_error_set(err, e2.status, "%s", e2.msg);
        }
        int s = st;
        if (cnn_dist_agree(w, &s) >= 0 && !st) {
            err->msg[0] = 0;
            st = (cnn_status)s;
        }
    }
    free(todo);
    free(slots);
    return st;
}

/* Adds trials of new points (bracket/round/epochs given) and loads their
 * results; ids receives their ids. */
static cnn_status add_new(search *S, int count, long epochs, int bracket, int *ids, int *k,
                          cnn_error *err)
{
    cnn_tune_point p;
    *k = 0;
    for (int i = 0; i < count; i++) {
        if (S->tc.max_trials && S->n >= S->tc.max_trials)
            break;
        if (!new_point(S, &p))
            break;
        cnn_tune_trial *t = add_trial(S, &p, err);
        if (!t)
            return err->status;
        t->epochs = epochs;
        t->bracket = bracket;
        t->round = bracket >= 0 ? 0 : -1;
        ids[(*k)++] = t->id;
        cnn_status st = load_result(S, t, err);
        if (st)
            return st;
    }
    return CNN_OK;
}

static int cmp_ctx_max;
static const cnn_tune_trial *cmp_ctx_t;

/* Hyperband's ranking: the better objective first, ties by id. */
static int by_objective(const void *a, const void *b)
{
    const cnn_tune_trial *x = &cmp_ctx_t[*(const int *)a], *y = &cmp_ctx_t[*(const int *)b];
    if (cnn_tune_better(x->objective, y->objective, cmp_ctx_max))
        return -1;
    if (cnn_tune_better(y->objective, x->objective, cmp_ctx_max))
        return 1;
    return x->id - y->id;
}

static cnn_status search_hyperband(search *S, cnn_error *err)
{
    const cnn_tune_config *tc = &S->tc;
    int nb = cnn_tune_hb_brackets(tc->max_epochs, tc->factor);
    long most = cnn_tune_hb_size(tc->max_epochs, tc->factor, nb - 1, 0) + 1;
    int *prev = malloc((size_t)most * sizeof *prev), *cur = malloc((size_t)most * sizeof *cur);
    cnn_status st = CNN_OK;
    if (!prev || !cur)
        st = cnn_error_set(err, CNN_ERR_NOMEM, "out of memory");
    for (long it = 0; it < tc->hyperband_iterations && !st && !S->stopped; it++)
        for (int b = nb - 1; b >= 0 && !st && !S->stopped; b--) {
            int np = 0, nc = 0;
            long size = cnn_tune_hb_size(tc->max_epochs, tc->factor, b, 0);
            if ((st = add_new(S, (int)size, cnn_tune_hb_epochs(tc->max_epochs, tc->factor, b, 0),
                              b, prev, &np, err)) ||
                (st = run_trials(S, prev, np, err)))
                break;
            for (int r = 1; r <= b && !st && !S->stopped; r++) {
                /* the best completed trials of the round before, promoted */
                int ok = 0;
                for (int i = 0; i < np; i++)
                    if (S->t[prev[i]].status == CNN_TRIAL_COMPLETED)
                        prev[ok++] = prev[i];
                cmp_ctx_t = S->t;
                cmp_ctx_max = tc->maximize;
                qsort(prev, (size_t)ok, sizeof *prev, by_objective);
                long keep = cnn_tune_hb_size(tc->max_epochs, tc->factor, b, r);
                nc = 0;
                for (int i = 0; i < ok && i < keep; i++) {
                    if (tc->max_trials && S->n >= tc->max_trials)
                        break;
                    cnn_tune_trial parent = S->t[prev[i]];
                    cnn_tune_trial *t = add_trial(S, &parent.p, err);
                    if (!t) {
                        st = err->status;
                        break;
                    }
                    t->epochs = cnn_tune_hb_epochs(tc->max_epochs, tc->factor, b, r);
                    t->initial_epoch = parent.epochs;
                    t->parent = parent.id;
                    t->bracket = b;
                    t->round = r;
                    cur[nc++] = t->id;
                    if ((st = load_result(S, t, err)))
                        break;
                }
                if (st || (st = run_trials(S, cur, nc, err)))
                    break;
                memcpy(prev, cur, (size_t)nc * sizeof *prev);
                np = nc;
                if (!nc)
                    break;
            }
        }
    free(prev);
    free(cur);
    return st;
}

static cnn_status search_all(search *S, long base_epochs, cnn_error *err)
{
    const cnn_tune_config *tc = &S->tc;
    if (hyperband(S))
        return search_hyperband(S, err);
    long n = tc->max_trials;
    int64_t grid = tc->algorithm == CNN_TUNE_GRID ? cnn_tune_grid_size(&S->sp) : 0;
    if (tc->algorithm == CNN_TUNE_GRID && (!n || n > grid))
        n = (long)grid;
    int *ids = malloc((size_t)(n ? n : 1) * sizeof *ids), k = 0;
    if (!ids)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for %ld trials", n);
    cnn_status st = CNN_OK;
    if (tc->algorithm == CNN_TUNE_RANDOM) {
        st = add_new(S, (int)n, base_epochs, -1, ids, &k, err);
    } else {
        cnn_tune_point p;
        for (long i = 0; i < n && !st; i++) {
            cnn_tune_grid_point(&S->sp, i, &p);
            cnn_tune_trial *t = add_trial(S, &p, err);
            if (!t) {
                st = err->status;
                break;
            }
            t->epochs = base_epochs;
            ids[k++] = t->id;
            st = load_result(S, t, err);
        }
    }
    if (!st)
        st = run_trials(S, ids, k, err);
    free(ids);
    return st;
}

/* --- set-up: everything that can be wrong, before any rank trains ------ */

/* The config of the search, its [tune] and [search], and checks that the
 * base config runs and that every hyper-parameter names a key of it: a
 * config error here names the file and line. The same on every rank. */
static cnn_status prepare(search *S, const char *path, const char *const *sets, int nsets,
                          long *base_epochs, cnn_error *err)
{
    cnn_status st = cnn_config_load(&S->cfg, path, err);
    if (st)
        return st;
    S->cfg->layer_base = cnn_layer_default_name;
    for (int i = 0; i < nsets && !st; i++)
        st = cnn_config_override(S->cfg, sets[i], err);
    if (nsets && !st) {
        /* every trial's config, and search.ini, start from this text: the
         * file with the overrides written in (the sections keep the
         * file's line numbers for messages) */
        char *text;
        if ((st = cnn_config_text(S->cfg, &text, err)))
            return st;
        free(S->cfg->text);
        S->cfg->text = text;
    }
    if (st)
        return st;
    if ((st = cnn_tune_config_read(&S->tc, S->cfg, err)) ||
        (st = cnn_tune_space_read(&S->sp, S->cfg, err)))
        return st;
    const cnn_tune_config *tc = &S->tc;
    const cnn_section *ts = cnn_config_find(S->cfg, "tune");
    if (tc->algorithm == CNN_TUNE_GRID) {
        for (int j = 0; j < S->sp.n; j++)
            if (S->sp.hp[j].kind == CNN_HP_FLOAT && !S->sp.hp[j].step)
                return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [search] %s: grid search needs "
                                     "a step for a float (float(MIN, MAX, step=S)) or a choice()",
                                     path, S->sp.hp[j].line, S->sp.hp[j].name);
        int64_t g = cnn_tune_grid_size(&S->sp);
        if (g > MAX_GRID && (!tc->max_trials || tc->max_trials > MAX_GRID))
            return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [tune] the grid has %lld points; "
                                 "set max_trials (at most %d)", path, ts->line, (long long)g,
                                 MAX_GRID);
    }
    if (S->world->world % tc->ranks_per_trial)
        return cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [tune] ranks_per_trial = %ld does not "
                             "divide the job's %d ranks", path, ts->line, tc->ranks_per_trial,
                             S->world->world);
    /* the config without the search runs as it is */
    cnn_tune_trial base = {.parent = -1};
    cnn_config *cfg;
    cnn_run run;
    if ((st = cnn_tune_trial_load(S->cfg, &(cnn_tune_space){0}, &base, NULL, 0, &cfg, err)))
        return st;
    if ((st = cnn_run_setup(&run, cfg, err))) { /* owns cfg */
        cnn_run_free(&run);
        return st;
    }
    *base_epochs = run.tc.epochs;
    /* With the exact reduction the bits of a training depend neither on
     * its ranks nor on its threads; with [dist] reduction = float they
     * depend on its BLAS threads per rank, and [train] threads = 0 would
     * give each trial the cores of the node shared among its group's
     * ranks there: other bits in a group of 1 than in a group of 2. So a
     * trial gets the job's share,
     * cores / ranks of the job on the node, the same in every group, and
     * its trial.ini says so (a rerun with cnn-train gets the same bits).
     * OPENBLAS_NUM_THREADS, when set, is the same for every group: it is
     * written down too, so that trial.ini does not depend on the
     * environment of the rerun. */
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    if (run.tc.threads == 0 && env && atol(env) > 0) {
        S->threads = atol(env);
    } else if (run.tc.threads == 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        int local = S->world->local_size > 0 ? S->world->local_size : 1;
        S->threads = cores / local > 0 ? cores / local : 1;
    }
    int needs_val = tc->objective == CNN_OBJ_VAL_LOSS || tc->objective == CNN_OBJ_VAL_ACCURACY;
    if (needs_val && run.dc.validation == CNN_VAL_NONE)
        st = cnn_error_set(err, CNN_ERR_CONFIG, "%s: [tune] objective = %s needs a validation "
                           "set ([data] validation = split or test)", path,
                           objective_name(S));
    cnn_run_free(&run);
    /* every hyper-parameter is a key of the config: set to its first
     * point's value, a --set error or an unused key names its line */
    cnn_tune_trial first = {.parent = -1};
    cnn_tune_sample(&S->sp, tc->seed, 0, 0, &first.p);
    for (int j = 0; j < S->sp.n && !st; j++) {
        cnn_tune_space one = {.n = 1};
        one.hp[0] = S->sp.hp[j];
        cnn_tune_trial t1 = {.parent = -1};
        snprintf(t1.p.v[0], sizeof t1.p.v[0], "%s", first.p.v[j]);
        cnn_error e = {0};
        cnn_status s = cnn_tune_trial_load(S->cfg, &one, &t1, NULL, 0, &cfg, &e);
        if (!s) {
            s = cnn_run_setup(&run, cfg, &e);
            char probe[160];
            snprintf(probe, sizeof probe, "--set %s", S->sp.hp[j].name);
            /* only the errors about the key itself: a value that does not
             * fit (a shape) is a failed trial, not a bad space */
            if (s && !strstr(e.msg, probe) && !strstr(e.msg, "unknown key"))
                s = CNN_OK;
            cnn_run_free(&run);
        }
        if (s)
            st = cnn_error_set(err, CNN_ERR_CONFIG, "%s:%d: [search] %s: %s", path,
                               S->sp.hp[j].line, S->sp.hp[j].name, e.msg);
    }
    return st;
}

cnn_status cnn_tune_search(const char *path, const char *const *sets, int nsets,
                           const cnn_dist *d, FILE *out, int *stopped, cnn_error *err)
{
    search S = {.world = d, .out = out, .t0 = cnn_dist_time()};
    long base_epochs = 0;
    *stopped = 0;
    cnn_status st = prepare(&S, path, sets, nsets, &base_epochs, err);
    if (!st && d->rank == 0) {
        char tdir[4200];
        snprintf(tdir, sizeof tdir, "%s/trials", S.tc.dir);
        if (cnn_make_dirs(tdir) != 0)
            st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot create: %s", tdir, strerror(errno));
        /* what --summary DIR reads the objective and the space from */
        snprintf(tdir, sizeof tdir, "%s/search.ini", S.tc.dir);
        if (!st)
            st = cnn_tune_write_atomic(tdir, S.cfg->text, err);
    }
    int s = st, who = cnn_dist_agree(d, &s);
    if (who >= 0 && who != d->rank)
        err->msg[0] = 0;
    if ((st = (cnn_status)s)) {
        cnn_config_free(S.cfg);
        return st;
    }
    /* the fewest threads any node gives: the same number in every group */
    double few = -(double)S.threads;
    cnn_dist_allreduce_max_f64(d, &few, 1);
    S.threads = (long)-few;
    S.ngroups = d->world / (int)S.tc.ranks_per_trial;
    S.color = d->rank / (int)S.tc.ranks_per_trial;
    if (cnn_dist_split(d, S.color, &S.group) != 0) {
        cnn_config_free(S.cfg);
        return cnn_error_set(err, CNN_ERR_DIST, "MPI_Comm_split into groups failed");
    }
    if (d->rank == 0) {
        static const char *const alg[] = {"random", "grid", "hyperband"};
        fprintf(out, "search: %s, %d hyper-parameter%s, objective %s (%s), %s; %d group%s of %ld "
                     "rank%s; %s\n",
                alg[S.tc.algorithm], S.sp.n, S.sp.n == 1 ? "" : "s", objective_name(&S),
                S.tc.maximize ? "max" : "min", path, S.ngroups, S.ngroups == 1 ? "" : "s",
                S.tc.ranks_per_trial, S.tc.ranks_per_trial == 1 ? "" : "s", S.tc.dir);
        fflush(out);
    }
    st = search_all(&S, base_epochs, err);
    if (!st && d->rank == 0) {
        int done = 0, failed = 0, b = cnn_tune_best(S.t, S.n, S.tc.maximize);
        for (int i = 0; i < S.n; i++) {
            done += S.t[i].status == CNN_TRIAL_COMPLETED;
            failed += S.t[i].status == CNN_TRIAL_FAILED;
        }
        if (S.stopped)
            fprintf(out, "search stopped by a signal: %d of %d trials done; run it again to "
                         "continue\n", done + failed, S.n);
        else
            fprintf(out, "search done: %d trials (%d completed, %d failed) in %.1fs on %d "
                         "group%s%s\n",
                    S.n, done, failed, cnn_dist_time() - S.t0, S.ngroups,
                    S.ngroups == 1 ? "" : "s",
                    S.exhausted ? "; the search space is exhausted" : "");
        if (b >= 0) {
            fprintf(out, "best: trial %d, %s %.17g; ", S.t[b].id, objective_name(&S),
                    S.t[b].objective);
            print_values(&S, &S.t[b]);
            fprintf(out, "\nwrote %s/trials.csv, %s/best.ini, %s/best.h5\n", S.tc.dir, S.tc.dir,
                    S.tc.dir);
        }
        /* the graphs (cnn-tune --summary redraws them); a failure to draw
         * does not fail the search */
        char paths[8192];
        cnn_error pe = {0};
        if (done + failed && cnn_tune_plot(S.tc.dir, paths, sizeof paths, &pe) == CNN_OK)
            fprintf(out, "plots:%s\n", paths);
        else if (done + failed)
            fprintf(out, "warning: no plots: %s\n", pe.msg);
        fflush(out);
    }
    *stopped = S.stopped;
    cnn_dist_free_split(&S.group);
    free(S.t);
    cnn_config_free(S.cfg);
    return st;
}
