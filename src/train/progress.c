/* progress.c - what rank 0 prints while training (the start-up lines, a
 * progress bar or plain lines, the Keras-style epoch line, the closing
 * figures) and the history CSV with its plots. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cnn/plot.h"
#include "session.h"

/* Whether progress may redraw a line in place. Open MPI hands each rank a
 * pseudo-terminal even when mpirun's own output goes to a file, so under
 * Open MPI the answer is mpirun's (the parent's) stdout; when that cannot
 * be read, plain lines are the safe choice. */
static int stdout_is_terminal(FILE *out)
{
    if (!isatty(fileno(out)))
        return 0;
    if (!getenv("OMPI_COMM_WORLD_SIZE"))
        return 1;
    char link[64], target[256];
    snprintf(link, sizeof link, "/proc/%d/fd/1", (int)getppid());
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return 0;
    target[n] = 0;
    return strncmp(target, "/dev/pts/", 9) == 0 || strncmp(target, "/dev/tty", 8) == 0;
}

int cnn_progress_mode(int configured, FILE *out)
{
    if (configured != CNN_PROGRESS_AUTO)
        return configured;
    return stdout_is_terminal(out) ? CNN_PROGRESS_BAR : CNN_PROGRESS_LINES;
}

void cnn_progress_banner(const session *S, const char *from)
{
    const cnn_run *run = S->run;
    const cnn_train_config *tc = &run->tc;
    const cnn_dist *d = S->d;
    const cnn_dataset *train = S->train;
    const cnn_train_state *ts = &S->ts;
    FILE *out = S->out;
    fprintf(out,
            "cnn-train: %d rank%s, global batch %ld, %lld training samples, %lld validation, "
            "%lld test, %zu parameters, %d thread%s per rank\n",
            d->world, d->world > 1 ? "s" : "", tc->batch_size, (long long)train->n,
            (long long)(S->val ? S->val->n : 0), (long long)S->test->n, run->model->nparams,
            cnn_get_threads(), cnn_get_threads() > 1 ? "s" : "");
    if (from[0] && ts->step == 0)
        fprintf(out, "resumed from %s after epoch %lld (global step %lld)\n", from,
                (long long)ts->epoch, (long long)ts->global_step);
    else if (from[0])
        fprintf(out, "resumed from %s in epoch %lld after step %lld (global step %lld)\n", from,
                (long long)ts->epoch + 1, (long long)ts->step, (long long)ts->global_step);
    if (d->world > 1)
        fprintf(out, "exchange: %s\n", S->sp.exchange_why);
    int busy = cnn_stepper_busy_ranks(&S->sp, tc->batch_size);
    if (busy < d->world)
        fprintf(out,
                "warning: a global batch of %ld in reduction chunks of %d keeps only %d of "
                "%d ranks busy; lower [dist] chunk_size or raise [train] batch_size\n",
                tc->batch_size, run->dist.chunk_size, busy, d->world);
    char bn_note[512];
    if (cnn_stepper_stats_note(&S->sp, tc->batch_size, bn_note, sizeof bn_note))
        fprintf(out, "%s\n", bn_note);
    if (train->class_names) {
        fprintf(out, "classes (%d):", train->nclasses);
        for (int c = 0; c < train->nclasses; c++)
            fprintf(out, "%s %s", c ? "," : "", train->class_names[c]);
        fputc('\n', out);
    }
    fflush(out);
}

void cnn_progress_epoch_start(const session *S, long epoch)
{
    if (S->root && S->progress_mode != CNN_PROGRESS_NONE)
        fprintf(S->out, "Epoch %ld/%ld\n", epoch + 1, S->run->tc.epochs);
}

void cnn_progress_step(const session *S, long step, double t0, double imgs, double *last_draw)
{
    const cnn_train_state *ts = &S->ts;
    const long steps = S->steps_per_epoch;
    int mode = S->progress_mode;
    /* the bar is redrawn at most 5 times a second */
    int draw = mode == CNN_PROGRESS_BAR
                   ? cnn_dist_time() - *last_draw >= 0.2 || step + 1 == steps
                   : (step + 1) % S->run->tc.log_every == 0;
    if (!S->root || !draw || ts->epoch_count <= 0 || mode == CNN_PROGRESS_NONE)
        return;
    *last_draw = cnn_dist_time();
    double elapsed = *last_draw - t0;
    double loss = ts->epoch_loss_sum / ts->epoch_count, acc = ts->epoch_correct / ts->epoch_count;
    double ips = elapsed > 0 ? imgs / elapsed : 0;
    FILE *out = S->out;
    if (mode == CNN_PROGRESS_BAR) {
        char bar[31];
        int fill = steps ? (int)(30 * (step + 1) / steps) : 30;
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '=' : (i == fill ? '>' : '.');
        bar[30] = 0;
        fprintf(out, "\r%6ld/%-6ld [%s] - %.0fs - loss: %.4f - accuracy: %.4f - %.0f img/s\033[K",
                step + 1, steps, bar, elapsed, loss, acc, ips);
    } else {
        fprintf(out, "  step %ld/%ld - %.1fs - loss: %.4f - accuracy: %.4f - %.0f img/s\n",
                step + 1, steps, elapsed, loss, acc, ips);
    }
    fflush(out);
}

static void history_row(FILE *f, const cnn_epoch_record *r)
{
    fprintf(f, "%lld,%.6f,%.6f,", (long long)r->epoch, r->loss, r->accuracy);
    if (isnan(r->val_loss))
        fprintf(f, ",,");
    else
        fprintf(f, "%.6f,%.6f,", r->val_loss, r->val_accuracy);
    fprintf(f, "%g,%.3f,%.1f\n", r->lr, r->seconds, r->images_per_sec);
    fflush(f);
}

void cnn_progress_epoch_end(const session *S, const cnn_epoch_record *r, long steps)
{
    FILE *out = S->out;
    if (!S->root)
        return;
    if (S->progress_mode == CNN_PROGRESS_BAR)
        fprintf(out, "\r\033[K");
    fprintf(out, "%ld/%ld - %.1fs - loss: %.4f - accuracy: %.4f", steps, S->steps_per_epoch,
            r->seconds, r->loss, r->accuracy);
    if (!isnan(r->val_loss))
        fprintf(out, " - val_loss: %.4f - val_accuracy: %.4f", r->val_loss, r->val_accuracy);
    fprintf(out, " - lr: %g - %.0f img/s\n", r->lr, r->images_per_sec);
    fflush(out);
    if (S->hist)
        history_row(S->hist, r);
}

cnn_status cnn_progress_open_history(session *S, const char *path, cnn_error *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write history: %s", path,
                             strerror(errno));
    fprintf(f, "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,images_per_sec\n");
    for (int i = 0; i < S->h.n; i++)
        history_row(f, &S->h.rows[i]);
    fflush(f);
    S->hist = f;
    return CNN_OK;
}

/* The accuracy and loss graphs beside the history CSV: a failure to draw
 * them is reported but does not fail the run. */
static void plot_history(const char *csv, FILE *out)
{
    char prefix[1024];
    size_t n = strlen(csv);
    snprintf(prefix, sizeof prefix, "%.*s", (int)(n > 4 && !strcmp(csv + n - 4, ".csv") ? n - 4 : n),
             csv);
    cnn_error e = {0};
    fflush(NULL); /* the history file is complete on disk */
    if (cnn_plot_history(csv, prefix, &e) == CNN_OK)
        fprintf(out, "plots: %s-accuracy.png %s-loss.png\n", prefix, prefix);
    else
        fprintf(out, "warning: no plots: %s\n", e.msg);
}

void cnn_progress_final(session *S, double tloss, double tacc, long correct, const double *mx)
{
    const cnn_run *run = S->run;
    FILE *out = S->out;
    const double imgs = S->total_imgs, secs = S->total_time;
    if (!S->root)
        return;
    if (secs > 0)
        fprintf(out, "training: %lld steps, %.0f images in %.2fs, %.0f img/s\n",
                (long long)S->ts.global_step, imgs, secs, imgs / secs);
    if (S->steady_time > 0 && S->steady_imgs > 0)
        fprintf(out, "steady: %.0f images in %.2fs, %.0f img/s after the first %d steps of this run\n",
                S->steady_imgs, S->steady_time, S->steady_imgs / S->steady_time, CNN_WARM_STEPS);
    if (S->skipped)
        fprintf(out, "skipped: %ld steps with a non-finite loss or gradient\n", S->skipped);
    if (S->d->world > 1 && secs > 0) {
        int nb = cnn_dist_reducer_buckets(S->sp.red);
        fprintf(out,
                "communication: %d bucket%s of <= %g MB, overlap %s; waiting %.2fs = %.1f%% "
                "of training time (slowest rank)\n",
                nb, nb > 1 ? "s" : "", run->dist.bucket_mb, run->dist.overlap ? "on" : "off",
                mx[0], 100.0 * mx[0] / secs);
    }
    fprintf(out, "memory: peak RSS per rank %.0f-%.0f MiB\n", -mx[2], mx[1]);
    fprintf(out, "test: loss=%.4f accuracy=%.4f correct=%ld incorrect=%lld\n", tloss, tacc,
            correct, (long long)S->test->n - correct);
    if (S->hist && run->tc.plot) {
        fclose(S->hist);
        S->hist = NULL;
        plot_history(run->tc.history, out);
    }
    fflush(out);
}

void cnn_progress_saved(const session *S, const char *path)
{
    if (S->progress_mode == CNN_PROGRESS_BAR)
        fprintf(S->out, "\r\033[K");
    fprintf(S->out, "checkpoint: %s\n", path);
}
