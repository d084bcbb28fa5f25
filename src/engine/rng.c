/* rng.c - counter-based random numbers (see cnn/rng.h). */
#include <math.h>

#include "cnn/rng.h"

static inline uint64_t mix64(uint64_t z)
{
    /* SplitMix64 finaliser: a bijection with full avalanche. */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t cnn_rng_hash(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b)
{
    /* Absorb one word at a time, each through the full mixer, so that
     * (a, b) and (b, a) or neighbouring counters give unrelated outputs. */
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL);
    h = mix64(h ^ (stream * 0xd1b54a32d192ed03ULL));
    h = mix64(h ^ (a + 0x8cb92ba72f3d8dd7ULL));
    return mix64(h ^ (b * 0xaef17502108ef2d9ULL + 0x632be59bd9b4e019ULL));
}

float cnn_rng_normal(uint64_t seed, uint64_t stream, uint64_t a, uint64_t b)
{
    uint64_t h1 = cnn_rng_hash(seed, stream, a, 2 * b);
    uint64_t h2 = cnn_rng_hash(seed, stream, a, 2 * b + 1);
    /* u1 in (0, 1] so that log() is finite. */
    double u1 = ((double)(h1 >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(h2 >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

void cnn_rng_permutation(int64_t *perm, int64_t n, uint64_t seed, uint64_t epoch)
{
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        /* Multiply-shift maps 64 random bits to [0, i] without modulo bias
         * worth mentioning at these sizes (< 2^40). */
        uint64_t h = cnn_rng_hash(seed, CNN_STREAM_SHUFFLE, epoch, (uint64_t)i);
        int64_t j = (int64_t)(((unsigned __int128)h * (uint64_t)(i + 1)) >> 64);
        int64_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}
