/* step.h - one data-parallel training step on this rank.
 *
 * A step takes a global batch of Bg samples (ids into the training set, in
 * the epoch's shuffled order), computes this rank's part of the gradient
 * of the mean loss, and sums the parts across ranks, each rank receiving
 * the sum of its shard of the parameters only (a reduce-scatter). Each rank
 * then updates its shard and the shards are gathered, so every rank ends
 * the step with the same parameters (ZeRO stage 1: the optimizer's work is
 * split, not repeated).
 *
 * Two reductions ([dist] reduction):
 *
 *   exact  The global batch is cut into chunks of chunk_size samples, the
 *          same cut whatever the number of ranks; each rank computes whole
 *          chunks. A chunk's gradient is computed on its own (so it is the
 *          same float numbers on any rank) and added into a 64-bit
 *          fixed-point buffer (2^-44 resolution), whose sums are exact in
 *          any order. So the reduced gradient, and with it the whole
 *          training run, is bit-identical on 1, 2, 3 or 64 ranks.
 *   float  Rank r takes the slice [Bg*r/world, Bg*(r+1)/world) and the
 *          float gradients are summed in rank order: faster, but the sum
 *          depends on the rank count in its last bits, and training
 *          amplifies that.
 *
 * Either way the buffer is reduced in buckets that start while backward is
 * still running, by the exchange [dist] exchange names (see
 * cnn_dist_reducer); with [dist] timeout_s a watchdog ends the job when a
 * rank stops answering.
 *
 * Moving statistics (batch_normalization). A training forward call
 * normalises with the statistics of its own samples: a reduction chunk
 * (exact: ghost batches of chunk_size samples, the same cut on any rank
 * count, so the same numbers) or the rank's slice (float: they depend on
 * the rank count, as PyTorch DDP's per-rank BatchNorm). Each call's mean
 * and biased variance per channel are kept; after the step they are
 * averaged, weighted by the calls' sample counts, over all calls of all
 * ranks, in 64-bit fixed point (a shared exponent per value, agreed by a
 * max across ranks, so the sum is exact in any order), and once the
 * optimizer has stepped every rank folds the same average into the moving
 * statistics: moving = momentum * moving + (1 - momentum) * average. A
 * skipped step (nan_policy = skip_step) leaves them alone. This costs two
 * small collectives a step, not one per layer as SyncBatchNorm's.
 *
 * Threads ([train] threads; exact reduction). A rank's chunks of a step
 * are spread over its threads, each chunk whole on one thread: thread t
 * takes the chunks [n*t/T, n*(t+1)/T) of the rank's n (T = the threads
 * that get one). Each thread runs its own workspace of the model
 * (cnn_model_workspace: activations, layer caches and scratch, gradient
 * buffer; the parameters and moving statistics are the model's own,
 * shared) with BLAS on one thread, so a chunk's gradient is the same
 * floats on any thread. Integer sums do not depend on their order: a
 * model whose fixed-point sum is at most PRIVATE_SUM_BYTES (step.c; about
 * a core's L2) gives each thread a sum of its own, added together when
 * all are done; a larger one has one sum, which the threads add into under
 * a lock per stripe of parameters. Each chunk's loss and batch statistics go to that chunk's slot and
 * are combined in chunk order, so a run is bit-identical at any thread
 * count as at any rank count. When one thread has all of the rank's chunks
 * (one thread, or one chunk a rank) the buckets start during backward as
 * before; with several busy they start when the last thread is done.
 * Reading the data set (not thread-safe) is serialised; augmentation is
 * not. The conversion of the rank's shard from fixed point to floats and
 * the optimizer's update of it are element-wise: they too run on the
 * threads, each over its own range of the shard (the same arithmetic per
 * element, so the same bits). The float reduction runs on one thread (its
 * BLAS on [train] threads).
 */
#ifndef CNN_TRAIN_STEP_H
#define CNN_TRAIN_STEP_H

#include <pthread.h>
#include <stdint.h>

#include "cnn/augment.h"
#include "cnn/data.h"
#include "cnn/model.h"
#include "cnn/optim.h"
#include "cnn/prefetch.h"
#include "cnn/train.h"
#include "dist.h"

/* Per-step figures summed across ranks. STAT_STOP counts ranks that were
 * asked to stop (a signal), so all ranks stop after the same step. */
enum {
    STAT_LOSS,
    STAT_CORRECT,
    STAT_COUNT,
    STAT_FAILED,
    STAT_NONFINITE,
    STAT_STOP,
    STAT_SAVE, /* rank 0's clock says a checkpoint is due */
    STAT_N
};

typedef struct cnn_stepper cnn_stepper;

/* One thread of a step: a workspace of the model and one chunk's buffers. */
typedef struct cnn_step_worker {
    cnn_stepper *s;
    cnn_model *m;          /* thread 0: the stepper's model; the others: workspaces of it */
    float *x;              /* (cap, input) */
    int32_t *y;            /* (cap) */
    int64_t *ids;          /* (cap) training-set ids of the chunk */
    uint8_t *raw;          /* (cap, input) pixels as stored; made by the first read without the prefetch */
    float *tmp;            /* (input) one augmented image */
    /* during backward */
    size_t done_from;      /* grads[done_from .. nparams) already added into acc */
    int last;              /* the rank's last chunk of the step: buckets may start */
    int first;             /* the thread's first chunk of the step: sets its sum */
    int64_t *acc;          /* (nparams) its own fixed-point sum (private sums, threads
                            * 1..; thread 0's is the stepper's acc), or NULL */
    int bad;               /* a gradient was non-finite or beyond fixed-point range */
    uint8_t *stripe_done;  /* (nstripes) scratch of add_shared (several threads) */
    /* this step */
    int k0, k1;            /* its chunks: [k0, k1) of the rank's */
    cnn_status st;         /* of its first failing chunk */
    cnn_error err;
    double loss, correct, count; /* loss: float reduction only (exact: per chunk) */
    pthread_t tid;
    int started;           /* tid runs worker_main */
} cnn_step_worker;

/* What the threads of a step share (cnn_stepper_run). */
typedef struct cnn_step_job {
    const cnn_dataset *train;
    const int64_t *batch;
    int Bg, first, csize, nblocks;
    int T;                 /* threads with chunks */
    float rescale;
    uint64_t seed, epoch;
} cnn_step_job;

struct cnn_stepper {
    cnn_model *m;
    const cnn_dist *d;
    cnn_dist_config c;     /* [dist] */
    cnn_augment_config aug; /* [augment], training images only */
    cnn_prefetch *prefetch; /* the trainer's, or NULL: chunks come from it, augmented */
    struct cnn_profile *prof; /* --profile: data and exchange spans go there, or NULL */
    int64_t *acc;          /* (nparams) fixed-point gradient sum (exact); red's buffer */
    cnn_dist_reducer *red; /* over acc (exact) or m->grads (float) */
    float *shared;         /* red's parameter window, or NULL; the model's (and the
                            * workspaces') m->params from the first step on */
    float *own_params;     /* the model's own buffer meanwhile (back at free) */
    char exchange_why[192]; /* the exchange used and why ([dist] exchange) */
    size_t lo, hi;         /* this rank's shard of the parameters */
    int cap;               /* samples a forward pass may hold */
    double limit;          /* largest |gradient| * 2^44 a chunk may add (exact) */
    /* threads (see "Threads" above) */
    int nthreads;          /* threads of a step: at most the chunks a rank may get */
    cnn_step_worker *w;    /* (nthreads) w[0] is the calling thread */
    cnn_step_job job;      /* the step under way */
    int kind;              /* what the threads run when woken: a step_job_kind (step.c) */
    int busy;              /* threads running it: w[0 .. busy) */
    cnn_optim *opt;        /* the update under way (cnn_stepper_update) */
    int grads_clear;       /* m->grads[lo, hi) is zero (the update cleared it) */
    pthread_mutex_t mu;    /* guards gen, pending, quit */
    pthread_cond_t go, done;
    unsigned long gen;     /* jobs handed to the threads (atomic: polled unlocked) */
    unsigned long pending; /* threads still running the job (atomic: polled unlocked) */
    int quit;
    pthread_mutex_t data_mu; /* cnn_dataset_gather is not thread-safe */
    int private_sums;      /* several threads: each adds into its own sum (w[t].acc) */
    int sum_pending;       /* this step's own sums are still to be added into acc */
    size_t nstripes;       /* acc in stripes of STRIPE parameters, each with a lock */
    pthread_mutex_t *stripe_mu; /* (nstripes) */
    uint64_t *stripe_step; /* (nstripes) step_no of the last step that cleared it */
    uint64_t step_no;
    int sync_ok;           /* mu, go, done, data_mu initialised */
    int bad;               /* a thread's gradient was non-finite or beyond fixed-point range */
    double wait;           /* seconds spent waiting for communication, in total */
    cnn_fault fault;       /* test seam: make this step fail (cnn_fault_plan) */
    int stop;              /* this rank was asked to stop: sent with the stats */
    int save;              /* rank 0 wants a checkpoint after this step */
    int nsums;             /* STAT_N + the chunks of the largest global batch (exact) */
    double *sums;          /* (nsums) the step's figures, then each chunk's loss (exact) */
    /* batch statistics (batch_normalization; nstats = 0 without it): see
     * "Moving statistics" below */
    size_t nstats;         /* cnn_model_stats_count */
    int max_chunks;        /* forward calls a rank may make in one step */
    int nrec;              /* forward calls recorded this step */
    float *chunk_stats;    /* (max_chunks, nstats) each forward call's statistics */
    int *chunk_n;          /* (max_chunks) its sample count */
    uint8_t *stat_exp;     /* (nstats) exponent code of the largest |value| (all ranks) */
    int64_t *stat_acc;     /* (nstats + 1) fixed-point sums of count * value; the count */
    double *stat_mean;     /* (nstats) the step's statistics, averaged */
    int stats_ready;       /* stat_mean is this step's, for cnn_stepper_update */
    /* cnn_stepper_blocks under way */
    cnn_status (*blocks_fn)(cnn_step_worker *w, int t, int64_t k, void *arg, cnn_error *err);
    void *blocks_arg;
    int64_t blocks_n;
};

/* Sizes buffers for global batches of up to max_batch, and starts the
 * threads of the exact reduction: up to `threads` (at most the chunks a
 * rank may get), each with a workspace of m; it then sets BLAS to one
 * thread. The float reduction sets BLAS to `threads`. */
cnn_status cnn_stepper_init(cnn_stepper *s, cnn_model *m, const cnn_dist *d,
                            const cnn_dist_config *c, const cnn_augment_config *aug,
                            long max_batch, int threads, cnn_error *err);
void cnn_stepper_free(cnn_stepper *s);

/* Ranks that receive samples of a global batch of Bg (all, unless exact
 * chunks are fewer than ranks). */
int cnn_stepper_busy_ranks(const cnn_stepper *s, long Bg);

/* One step over batch[0 .. Bg): afterwards m->grads[s->lo .. s->hi) holds
 * this rank's shard of the summed gradient of the mean loss (the rest of
 * m->grads is scratch), and stats (STAT_N) the loss, correct, count and
 * failure flags summed over all ranks. A failure of this rank's data or
 * loss is returned (err set) but the step's collectives are still all
 * made, so the caller can agree on it with the others. A non-finite loss
 * returns CNN_ERR_NUMERIC unless skip_nan, which marks STAT_NONFINITE
 * instead. Collective. */
cnn_status cnn_stepper_run(cnn_stepper *s, const cnn_dataset *train, const int64_t *batch,
                           int Bg, float rescale, uint64_t seed, uint64_t epoch, int skip_nan,
                           double *stats, cnn_error *err);

/* This rank's samples of a global batch of Bg: batch[*lo .. *hi) (the
 * ones cnn_stepper_run reads, for a prefetch). */
void cnn_stepper_share(const cnn_stepper *s, int Bg, int *lo, int *hi);

/* The optimizer step after cnn_stepper_run(): this rank updates its shard
 * of the parameters, then every rank receives the others'. Collective. */
void cnn_stepper_update(cnn_stepper *s, cnn_optim *o);

/* One line on what batch_normalization normalises over for global batches
 * of Bg (for the start-up banner), written into buf; 0 when the model has
 * no such layer. */
int cnn_stepper_stats_note(const cnn_stepper *s, long Bg, char *buf, size_t n);

/* Each rank holds the optimizer's moments of its own shard up to date
 * only; this gathers them all on every rank (before a checkpoint).
 * Collective. */
void cnn_stepper_gather_optimizer(cnn_stepper *s, cnn_optim *o);

/* Work on the rank's threads between steps (evaluation): fn(w, t, k, arg,
 * err) for every k in [0, n), thread t of T = min(n, nthreads) taking
 * [n*t/T, n*(t+1)/T) in order with its own workspace w->m (thread 0's is
 * the model itself) and buffers w->x, w->y, w->ids of s->cap samples. fn
 * makes no MPI call. Returns the status of the lowest block that failed,
 * its message in err; a thread stops at its first failure. */
typedef cnn_status (*cnn_stepper_block_fn)(cnn_step_worker *w, int t, int64_t k, void *arg,
                                           cnn_error *err);
cnn_status cnn_stepper_blocks(cnn_stepper *s, int64_t n, cnn_stepper_block_fn fn, void *arg,
                              cnn_error *err);
/* For fn: samples w->ids[0 .. B) of ds into w->x and w->y (the data set
 * read under the stepper's lock when several threads run). */
cnn_status cnn_stepper_read(cnn_step_worker *w, const cnn_dataset *ds, int B, float rescale,
                            cnn_error *err);

#endif /* CNN_TRAIN_STEP_H */
