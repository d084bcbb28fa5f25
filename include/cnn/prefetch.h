/* cnn/prefetch.h - training batches assembled in the background.
 *
 * A prefetcher reads, decodes, converts (pixel * rescale) and augments the
 * samples of the next step on a few threads of its own while the current
 * step trains. The trainer asks for a step's samples ahead, the step takes
 * them; what the step receives is exactly what cnn_dataset_gather() and
 * cnn_augment_image() give, since every sample's floats depend only on the
 * dataset, rescale and (seed, epoch, sample id):
 *
 *     cnn_prefetch_new(&p, train, &aug, rescale, threads, &err);
 *     cnn_prefetch_request(p, ids0, n0, seed, epoch);   // step 0's samples
 *     cnn_prefetch_request(p, ids1, n1, seed, epoch);   // step 1's, behind it
 *     // step 0, any part of ids0, from any thread:
 *     cnn_prefetch_fetch(p, ids0 + k, B, seed, epoch, x, y, &err);
 *     cnn_prefetch_request(p, ids2, n2, seed, epoch);   // reuses step 0's slot
 *     ...
 *     cnn_prefetch_free(p);                              // stops and joins
 *
 * Two requests are held at a time (a double buffer: about two steps'
 * samples of one rank as floats), so a new request reuses the slot of the
 * older one, whose fetches must be over. The threads work on the oldest
 * request first, a few samples at a time, each sample into its own place,
 * so the order they finish in changes nothing. A store whose reads may run
 * concurrently (cnn_store_ops.parallel: image folders, IDX, CIFAR-10,
 * memory) is read by all threads at once, which is how image-folder files
 * are decoded on several threads; another (HDF5) by one at a time.
 *
 * A sample that fails to read (an image that does not decode) fails the
 * fetch of any range that reaches it, with the message the synchronous
 * read gives (naming the file); the fetches before it succeed, as chunk by
 * chunk they would. A fetch of samples no request holds (or whose request
 * could not be allocated) assembles them on the caller's thread instead:
 * slower, never different. Memory: the two slots, and one image of
 * workspace a thread; the dataset is shared, never copied.
 */
#ifndef CNN_PREFETCH_H
#define CNN_PREFETCH_H

#include <stdint.h>

#include "cnn/augment.h"
#include "cnn/data.h"
#include "cnn/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_prefetch cnn_prefetch;

enum { CNN_PREFETCH_MAX_THREADS = 64 };

/* A prefetcher over d (which must outlive it) with `threads` (1 ..
 * CNN_PREFETCH_MAX_THREADS) background threads; aug is copied. *out = NULL
 * on failure (out of memory, no thread could be started). */
cnn_status cnn_prefetch_new(cnn_prefetch **out, const cnn_dataset *d, const cnn_augment_config *aug,
                            float rescale, int threads, cnn_error *err);

/* Stops the threads (each finishes the sample it is on), joins them and
 * frees p. NULL is ignored. */
void cnn_prefetch_free(cnn_prefetch *p);

/* Starts assembling samples ids[0 .. n) (ids into d, copied) of epoch
 * `epoch` in the background. Waits only if the slot it reuses is still
 * being filled. Out of memory leaves the request out (fetch then
 * assembles those samples itself). A request the same as one held (the
 * same ids, seed and epoch) does nothing, so a step may be asked for
 * twice: the trainer asks for the first step of an epoch at the end of
 * the epoch before and again when it starts. */
void cnn_prefetch_request(cnn_prefetch *p, const int64_t *ids, int n, uint64_t seed,
                          uint64_t epoch);

/* x (B, C, H, W) = samples ids[0 .. B) as floats, rescaled and augmented
 * (seed, epoch), labels y (B): copied from the request holding them as a
 * consecutive run (waiting for it to be done), else assembled here. Safe
 * to call from several threads at once. Returns the read's error, if any,
 * as cnn_dataset_read does. */
cnn_status cnn_prefetch_fetch(cnn_prefetch *p, const int64_t *ids, int B, uint64_t seed,
                              uint64_t epoch, float *x, int32_t *y, cnn_error *err);

/* Seconds fetches have waited for background work so far (the data
 * pipeline's wait; 0 when it keeps ahead). */
double cnn_prefetch_wait(const cnn_prefetch *p);

#ifdef __cplusplus
}
#endif
#endif /* CNN_PREFETCH_H */
