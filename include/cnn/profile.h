/* cnn/profile.h - where a training step's time goes: per layer, the data
 * pipeline and the gradient exchange (`cnn-train --profile`, `cnn-bench
 * --profile`), and a Chrome trace of a few steps (chrome://tracing,
 * ui.perfetto.dev), what PyTorch's profiler and Horovod's timeline give.
 *
 *     cnn_profile *p = NULL;
 *     cnn_profile_create(&p, m, 5, &err);    // trace the first 5 steps
 *     cnn_profile_attach(p, m);               // the model times its layers
 *     ... steps, each ended by cnn_profile_step(p, B); waits recorded with
 *         cnn_profile_span(p, CNN_SPAN_DATA, t0, cnn_profile_now()) ...
 *     cnn_profile_print(p, m, cnn_profile_fma_peak(), stdout);
 *     cnn_profile_write_trace(p, m, "trace.rank0.json", 0, &err);
 *
 * The profile knows nothing of MPI: each rank writes its own trace (pid =
 * rank); cnn_profile_merge_traces() joins the files into one. Recording is
 * thread-safe (a mutex per event; a few hundred events a step). FLOPs of a
 * layer are 2 x (output pixels) x (kernel weights) forward, twice that
 * backward (input and weight gradients); layers without kernels show none.
 */
#ifndef CNN_PROFILE_H
#define CNN_PROFILE_H

#include <stdio.h>

#include "cnn/error.h"
#include "cnn/model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_profile cnn_profile;

/* Spans outside the layers. */
typedef enum {
    CNN_SPAN_STEP = 0, /* a whole training step */
    CNN_SPAN_DATA,     /* getting a chunk's samples: the prefetch's wait and copy, or
                        * reading, decoding and augmenting them without one */
    CNN_SPAN_EXCHANGE, /* waiting for the gradient exchange */
    CNN_SPAN_OPTIMIZER,
    CNN_SPAN_COUNT
} cnn_span;

/* trace_steps: steps whose events go into the trace (0: none). */
cnn_status cnn_profile_create(cnn_profile **out, const cnn_model *m, int trace_steps,
                              cnn_error *err);
void cnn_profile_free(cnn_profile *p);

/* Makes m report each layer's forward and backward to p (m->layer_hook);
 * p NULL detaches. The timer keeps a layer's start per thread, so models
 * that run on several threads may share one profile. */
void cnn_profile_attach(cnn_profile *p, cnn_model *m);

/* Seconds on a monotonic clock. */
double cnn_profile_now(void);

/* Layer i ran forward (backward = 0) or backward from t0 to t1 (seconds). */
void cnn_profile_layer(cnn_profile *p, int i, int backward, double t0, double t1);
void cnn_profile_span(cnn_profile *p, cnn_span what, double t0, double t1);
/* Ends a step of B images (this rank's): per-image figures divide by the
 * images of all ended steps. */
void cnn_profile_step(cnn_profile *p, long B);
long cnn_profile_steps(const cnn_profile *p);
/* Seconds per image spent in a span so far. */
double cnn_profile_span_per_image(const cnn_profile *p, cnn_span what);

/* The per-layer table: forward and backward us per image, GFLOP/s and %
 * of peak_gflops (0: no % column), then the spans. Times are summed over
 * the threads that recorded them (a rank's chunks on several threads). */
void cnn_profile_print(const cnn_profile *p, const cnn_model *m, double peak_gflops, FILE *f);

/* The traced steps as Chrome trace JSON (an array of events; pid = rank,
 * tid = the recording thread). */
cnn_status cnn_profile_write_trace(const cnn_profile *p, const cnn_model *m, const char *path,
                                   int rank, cnn_error *err);
/* Joins n trace files written by cnn_profile_write_trace into out. */
cnn_status cnn_profile_merge_traces(const char *const *paths, int n, const char *out,
                                    cnn_error *err);

/* One core's single-precision FMA peak, GFLOP/s, measured now (~50 ms). */
double cnn_profile_fma_peak(void);

#ifdef __cplusplus
}
#endif

#endif
