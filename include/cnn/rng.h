/* cnn/rng.h - counter-based random numbers.
 *
 * There is no generator state to carry around: every random number is a
 * pure function of (seed, stream, a, b), hashed with a SplitMix64-style
 * finaliser. Weight k of tensor t is hash(seed, INIT, t, k); the dropout
 * decision of element e of global sample g in epoch ep is
 * hash(seed, DROPOUT|layer|ep, g, e). Results therefore do not depend on the
 * order in which numbers are drawn, on the batch split or on the number of
 * processes, and a resumed run needs nothing but (seed, epoch, position).
 */
#ifndef CNN_RNG_H
#define CNN_RNG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNN_STREAM_INIT = 1,
    CNN_STREAM_SHUFFLE = 2,
    CNN_STREAM_DROPOUT = 3,
    CNN_STREAM_AUGMENT = 4
} cnn_stream;

uint64_t cnn_rng_hash(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b);

/* Uniform float in [0, 1) with 24 random bits. */
static inline float cnn_rng_uniform(uint64_t h) { return (float)(h >> 40) * (1.0f / 16777216.0f); }

/* Standard normal from counter (seed, stream, a, b): Box-Muller over two
 * hashes derived from the counter. */
float cnn_rng_normal(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b);

/* perm[0..n) = a permutation of 0..n-1 that depends only on (seed, epoch):
 * Fisher-Yates where swap i draws hash(seed, SHUFFLE, epoch, i). */
void cnn_rng_permutation(int64_t *perm, int64_t n, uint64_t seed, uint64_t epoch);

#ifdef __cplusplus
}
#endif
#endif /* CNN_RNG_H */
