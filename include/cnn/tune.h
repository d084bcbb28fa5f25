/* cnn/tune.h - hyper-parameter search: Keras Tuner's search spaces and
 * algorithms over cnn-train configs, many trials in one MPI job.
 *
 * A search config is an ordinary cnn-train config plus two sections:
 *
 *     [tune]
 *     objective = val_accuracy    ; loss | accuracy | val_loss | val_accuracy
 *     direction = auto            ; max | min; auto: max for the accuracies
 *     algorithm = random          ; random | grid | hyperband
 *     max_trials = 10             ; random: required; grid: a cap (default: all)
 *     executions_per_trial = 1    ; trainings per trial (cnn_tune_execution_seed)
 *     ranks_per_trial = 1         ; the world is cut into groups of this many ranks
 *     seed = 1                    ; of the sampler
 *     dir = tune/NAME             ; trials, trials.csv, best.ini, best.h5
 *     max_epochs = 9              ; hyperband: Keras Tuner's max_epochs,
 *     factor = 3                  ;   factor and hyperband_iterations
 *     hyperband_iterations = 1
 *
 *     [search]                    ; one hyper-parameter a line, --set keys
 *     optimizer.lr = float(1e-4, 1e-2, sampling=log)
 *     conv2d.filters = int(16, 64, step=16)
 *     dense.units = choice(64, 128, 256)
 *     dropout.rate = float(0.0, 0.5)
 *     augment.horizontal_flip = boolean()
 *     train.batch_size = fixed(64)
 *
 * float(min, max[, step=S][, sampling=linear|log]) and int(min, max[,
 * step=S][, sampling=linear|log]) are Keras Tuner's hp.Float and hp.Int
 * (with log sampling a step multiplies: int(32, 256, step=2, sampling=log)
 * is 32, 64, 128, 256); choice(v, ...) is hp.Choice, boolean() hp.Boolean,
 * fixed(v) hp.Fixed.
 *
 * The objective of a trial is, as Keras Tuner's score, the best value of
 * the objective over its epochs (the mean over executions). Everything a
 * search decides is a pure function of the config and the trials' results,
 * which do not depend on the ranks that trained them, so a search gives the
 * same trials and objectives on any number of groups of any size.
 *
 * The parts: the space (parse, sample, grid), the [tune] section, the
 * Hyperband arithmetic and the trial records are plain C (this header);
 * cnn_tune_search() runs a search on a cnn_dist (src/dist), collective.
 */
#ifndef CNN_TUNE_H
#define CNN_TUNE_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/config.h"
#include "cnn/error.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    CNN_TUNE_MAX_HP = 64,
    CNN_TUNE_MAX_CHOICES = 64,
    CNN_TUNE_VALUE_LEN = 64,
    CNN_TUNE_MAX_EXECUTIONS = 100 /* of executions_per_trial */
};

typedef enum { CNN_HP_FLOAT = 0, CNN_HP_INT, CNN_HP_CHOICE, CNN_HP_BOOLEAN, CNN_HP_FIXED } cnn_hp_kind;

/* One line of [search]. */
typedef struct cnn_tune_hp {
    char name[128];   /* "optimizer.lr": the --set key */
    int line;         /* of the line in the config */
    cnn_hp_kind kind;
    double min, max, step; /* float and int; step 0: none (float), 1 (int) */
    int log;          /* sampling = log */
    int nchoices;     /* choice, boolean (2), fixed (1) */
    char choices[CNN_TUNE_MAX_CHOICES][CNN_TUNE_VALUE_LEN];
} cnn_tune_hp;

typedef struct cnn_tune_space {
    int n;
    cnn_tune_hp hp[CNN_TUNE_MAX_HP];
} cnn_tune_space;

/* One point of the space: the value of each hyper-parameter as the text
 * that goes into the config. */
typedef struct cnn_tune_point {
    char v[CNN_TUNE_MAX_HP][CNN_TUNE_VALUE_LEN];
} cnn_tune_point;

/* Parses one [search] value ("float(1e-4, 1e-2, sampling=log)") into hp;
 * where ("FILE:LINE: [search] KEY") starts every message. */
cnn_status cnn_tune_hp_parse(cnn_tune_hp *hp, const char *value, const char *where,
                             cnn_error *err);

/* Every key of cfg's [search] section, in file order (marked used). */
cnn_status cnn_tune_space_read(cnn_tune_space *sp, const cnn_config *cfg, cnn_error *err);

/* The point drawn for (seed, sample, attempt): each value uniform over
 * its range (log-uniform with sampling = log), on the step grid if any. */
void cnn_tune_sample(const cnn_tune_space *sp, uint64_t seed, uint64_t sample, uint64_t attempt,
                     cnn_tune_point *p);

/* The [train] seed of execution k of a trial: execution 0 trains with the
 * trial's own [train] seed (train_seed: best.ini reruns it as it is), and
 * execution k > 0 with a seed drawn from (tune_seed, root, k), where root
 * is the id of the trial's first trial (a Hyperband promotion: the trial
 * of round 0 it descends from, so every round of an execution continues
 * with its seed), below 2^30. */
uint64_t cnn_tune_execution_seed(uint64_t tune_seed, uint64_t train_seed, int root, int k);

/* Grid search: the number of points (0 when a float has no step; capped at
 * INT64_MAX), and point number i, the last hyper-parameter varying fastest. */
int64_t cnn_tune_grid_size(const cnn_tune_space *sp);
void cnn_tune_grid_point(const cnn_tune_space *sp, int64_t i, cnn_tune_point *p);

int cnn_tune_point_equal(const cnn_tune_space *sp, const cnn_tune_point *a,
                         const cnn_tune_point *b);

typedef enum { CNN_TUNE_RANDOM = 0, CNN_TUNE_GRID, CNN_TUNE_HYPERBAND } cnn_tune_algorithm;

typedef enum { CNN_OBJ_LOSS = 0, CNN_OBJ_ACCURACY, CNN_OBJ_VAL_LOSS, CNN_OBJ_VAL_ACCURACY } cnn_tune_objective;

/* The [tune] section, resolved. */
typedef struct cnn_tune_config {
    cnn_tune_objective objective;
    int maximize;
    cnn_tune_algorithm algorithm;
    long max_trials;  /* 0: no cap (grid, hyperband) */
    long executions;  /* executions_per_trial */
    long ranks_per_trial;
    uint64_t seed;
    const char *dir;  /* owned by the config */
    long max_epochs, factor, hyperband_iterations;
} cnn_tune_config;

extern const char *const cnn_tune_objective_names[]; /* "loss", ... NULL-terminated */

cnn_status cnn_tune_config_read(cnn_tune_config *tc, const cnn_config *cfg, cnn_error *err);

/* Keras Tuner's Hyperband arithmetic (min_epochs 1): the number of
 * brackets; the trials of round r of bracket b, and their epochs. */
int cnn_tune_hb_brackets(long max_epochs, long factor);
long cnn_tune_hb_size(long max_epochs, long factor, int bracket, int round);
long cnn_tune_hb_epochs(long max_epochs, long factor, int bracket, int round);

typedef enum { CNN_TRIAL_PENDING = 0, CNN_TRIAL_COMPLETED, CNN_TRIAL_FAILED } cnn_trial_status;

/* One trial: what it trains and, once done, what came out. */
typedef struct cnn_tune_trial {
    int id;
    cnn_tune_point p;
    long epochs;        /* [train] epochs of the trial */
    long initial_epoch; /* hyperband: epochs inherited from parent (0: a fresh start) */
    int parent;         /* hyperband: the trial promoted (-1: none) */
    int bracket, round; /* hyperband; -1 otherwise */
    /* the result */
    cnn_trial_status status;
    double objective;   /* NaN when failed */
    long epochs_run;    /* epochs in the history (early stopping may end sooner) */
    double seconds;
    int ranks;
    int executions;     /* run so far; of each, its [train] seed and objective
                         * (the objective above is their mean) */
    uint64_t exec_seed[CNN_TUNE_MAX_EXECUTIONS];
    double exec_objective[CNN_TUNE_MAX_EXECUTIONS];
    char message[256];  /* why it failed */
} cnn_tune_trial;

/* DIR/trials/NNNN (the directory of trial id). */
void cnn_tune_trial_dir(char *out, size_t n, const char *dir, int id);

/* The result of a finished trial, written atomically as DIR/trials/NNNN/
 * result (key = value lines, the first naming the trial's values, so a
 * result of another search is refused), and read back: *found = 0 when
 * there is none; a damaged file is an error naming it. */
cnn_status cnn_tune_result_write(const char *dir, const cnn_tune_space *sp,
                                 const cnn_tune_trial *t, cnn_error *err);
cnn_status cnn_tune_result_read(const char *dir, const cnn_tune_space *sp, cnn_tune_trial *t,
                                int *found, cnn_error *err);

/* DIR/trials.csv, written atomically: trial_id, every hyper-parameter,
 * epochs, (hyperband: initial_epoch, bracket, round, parent), objective
 * (%.17g), status, seconds, ranks, seeds and execution_objectives (one
 * per execution, separated by spaces), message; the trials in id order. */
cnn_status cnn_tune_csv_write(const char *dir, const cnn_tune_space *sp, int hyperband,
                              const cnn_tune_trial *t, int n, cnn_error *err);

/* The best completed trial of t[0..n) (ties: the lowest id), or -1. */
int cnn_tune_best(const cnn_tune_trial *t, int n, int maximize);

/* A trial's config as a runnable INI: the search config's text with its
 * [tune] and [search] sections left out (blank lines keep every other
 * line's number) and the trial's values set, through cnn_config_text.
 * extra (nextra "section.key=value" overrides, may be NULL) comes after.
 * *out is the caller's to free(). */
cnn_status cnn_tune_trial_config(const cnn_config *search, const cnn_tune_space *sp,
                                 const cnn_tune_trial *t, const char *const *extra, int nextra,
                                 char **out, cnn_error *err);

/* The graphs of the search in DIR (its search.ini and trials.csv), as
 * PNG files (cnn_plot_lines): DIR/objective.png, the objective of each
 * completed trial against its id and the best so far (failed trials are
 * left out, and the title says how many); with Hyperband also
 * DIR/objective-bracket-B.png for each bracket B, the objective per epoch
 * of its trials (the mean over executions of their history.csv), a line
 * per trial of the bracket that was not promoted further (its history
 * holds its parents' epochs). paths (np bytes) receives the files'
 * names, each after a space. */
cnn_status cnn_tune_plot(const char *dir, char *paths, size_t np, cnn_error *err);

/* `cnn-tune --summary DIR`: the trials of DIR/trials.csv, best first, as
 * Keras Tuner's results_summary() prints them; then the budget (the epochs
 * trained in all, less those a Hyperband promotion inherited, times the
 * executions; and after how many of them, in the order of the trials, the
 * best objective was first reached) and the graphs, redrawn
 * (cnn_tune_plot; a failure to draw is a warning line, not an error). */
cnn_status cnn_tune_summary(const char *dir, FILE *out, cnn_error *err);

typedef struct cnn_dist cnn_dist;

/* Runs the search of config file `path`, with the nsets "section.key=value"
 * overrides of sets applied (cnn_config_override: tune.max_trials=3,
 * train.epochs=1; sets may be NULL when nsets is 0), on the ranks of d:
 * parses it (a
 * bad space or [tune] is CNN_ERR_CONFIG, one line naming the file and line,
 * before any training), cuts d into groups of ranks_per_trial ranks, runs
 * the trials a group at a time each, resuming what DIR already holds, and
 * writes DIR/trials.csv, DIR/best.ini and DIR/best.h5 as trials finish.
 * Rank 0 prints a line per finished trial to out. *stopped is set when a
 * signal stopped the search (resume by running it again). Collective. */
cnn_status cnn_tune_search(const char *path, const char *const *sets, int nsets,
                           const cnn_dist *d, FILE *out, int *stopped, cnn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* CNN_TUNE_H */
