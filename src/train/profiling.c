/* profiling.c - cnn-train --profile: a few steps of the run profiled
 * (cnn/profile.h), the table on rank 0, a Chrome trace of every rank. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cnn/profile.h"
#include "session.h"

enum { WARMUP_STEPS = 2, TRACE_STEPS = 5 };

double cnn_profiling_step_start(session *S, cnn_error *err)
{
    const cnn_run *run = S->run;
    if (run->profile_steps <= 0 || S->prof_done)
        return 0.0;
    if (!S->prof) {
        if (S->prof_seen++ < WARMUP_STEPS)
            return 0.0;
        if (cnn_profile_create(&S->prof, S->sp.m, TRACE_STEPS, err)) {
            S->prof_done = 1; /* profiling is an aid: train on without it */
            if (S->root)
                fprintf(S->out, "warning: --profile: %s\n", err->msg);
            err->msg[0] = 0;
            return 0.0;
        }
        cnn_profile_attach(S->prof, S->sp.m);
        S->sp.prof = S->prof;
    }
    return cnn_profile_now();
}

/* Writes this rank's trace; rank 0 then joins every rank's into one. */
static cnn_status write_traces(session *S, cnn_error *err)
{
    const char *dir = S->run->profile_dir ? S->run->profile_dir : "profile";
    char path[4096];
    cnn_status st = CNN_OK;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot create the profile directory: %s", dir,
                           strerror(errno));
    snprintf(path, sizeof path, "%s/trace.rank%d.json", dir, S->d->rank);
    if (!st)
        st = cnn_profile_write_trace(S->prof, S->sp.m, path, S->d->rank, err);
    if ((st = cnn_session_agree(S, st, err)) || !S->root)
        return st;
    const int n = S->d->world;
    char(*paths)[4096] = malloc((size_t)n * sizeof *paths);
    const char **list = malloc((size_t)n * sizeof *list);
    if (!paths || !list) {
        free(paths);
        free(list);
        return cnn_error_set(err, CNN_ERR_NOMEM, "--profile: out of memory");
    }
    for (int r = 0; r < n; r++) {
        snprintf(paths[r], sizeof paths[r], "%s/trace.rank%d.json", dir, r);
        list[r] = paths[r];
    }
    snprintf(path, sizeof path, "%s/trace.json", dir);
    st = cnn_profile_merge_traces(list, n, path, err);
    if (!st)
        fprintf(S->out, "profile: trace of %d steps of %d rank%s in %s (chrome://tracing, "
                        "ui.perfetto.dev)\n",
                TRACE_STEPS, n, n > 1 ? "s" : "", path);
    free(paths);
    free(list);
    return st;
}

cnn_status cnn_profiling_step_end(session *S, double t0, double t_upd, long B, cnn_error *err)
{
    cnn_profile *p = S->prof;
    if (!p)
        return CNN_OK;
    const double t1 = cnn_profile_now();
    cnn_profile_span(p, CNN_SPAN_OPTIMIZER, t_upd, t1);
    cnn_profile_span(p, CNN_SPAN_STEP, t0, t1);
    cnn_profile_step(p, B);
    if (cnn_profile_steps(p) < S->run->profile_steps)
        return CNN_OK;
    cnn_profile_attach(NULL, S->sp.m);
    S->sp.prof = NULL;
    S->prof_done = 1;
    /* the slowest rank's waits beside rank 0's table */
    double w[2] = {cnn_profile_span_per_image(p, CNN_SPAN_DATA),
                   cnn_profile_span_per_image(p, CNN_SPAN_EXCHANGE)};
    cnn_dist_allreduce_max_f64(S->d, w, 2);
    if (S->root) {
        cnn_profile_print(p, S->sp.m, cnn_profile_fma_peak(), S->out);
        if (S->d->world > 1)
            fprintf(S->out, "slowest rank: data fetch %.2f us, exchange wait %.2f us per image\n",
                    1e6 * w[0], 1e6 * w[1]);
    }
    cnn_status st = write_traces(S, err);
    cnn_profile_free(p);
    S->prof = NULL;
    return st;
}
