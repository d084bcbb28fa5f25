/* testutil.h - small helpers shared by the cmocka unit and gradcheck tests.
 *
 * Header-only (static functions), so each test stays one executable built
 * from one .c file. Include after the cmocka prerequisites, e.g.:
 *
 *     #include <setjmp.h>
 *     #include <stdarg.h>
 *     #include <stddef.h>
 *     #include <stdint.h>
 *     #include <cmocka.h>
 *     #include "testutil.h"
 */
#ifndef CNN_TESTUTIL_H
#define CNN_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/config.h"
#include "cnn/error.h"
#include "cnn/model.h"

/* |a - b| <= tol, or the test fails with both values and where. */
#define TU_NEAR(a, b, tol)                                                                        \
    do {                                                                                          \
        double tu_a_ = (double)(a), tu_b_ = (double)(b);                                          \
        if (!(fabs(tu_a_ - tu_b_) <= (double)(tol)))                                              \
            fail_msg("%s = %.9g, expected %s = %.9g (tolerance %g)", #a, tu_a_, #b, tu_b_,        \
                     (double)(tol));                                                              \
    } while (0)

/* The error message contains needle, or the test fails showing the message. */
#define TU_MSG_HAS(err, needle)                                                                   \
    do {                                                                                          \
        if (!strstr((err).msg, (needle)))                                                         \
            fail_msg("error message \"%s\" does not contain \"%s\"", (err).msg, (needle));        \
    } while (0)

/* A status equals the expected one, or the test fails showing the message. */
#define TU_STATUS(st, expected, err)                                                              \
    do {                                                                                          \
        cnn_status tu_st_ = (st);                                                                 \
        if (tu_st_ != (expected))                                                                 \
            fail_msg("status %d (%s), expected %d (%s); message: \"%s\"", (int)tu_st_,            \
                     cnn_status_name(tu_st_), (int)(expected), cnn_status_name(expected),         \
                     (err).msg);                                                                  \
    } while (0)

/* Parses INI text, builds the model with `loss` and reserves max_batch.
 * Fails the test (showing the library's message) if any step fails. */
static inline cnn_model *tu_model(const char *ini, cnn_loss loss, int max_batch)
{
    cnn_error err = {0};
    cnn_config *cfg = NULL;
    cnn_model *m = NULL;
    if (cnn_config_parse_string(&cfg, ini, "test.ini", &err) != CNN_OK)
        fail_msg("parse: %s", err.msg);
    if (cnn_model_create(&m, cfg, loss, &err) != CNN_OK) {
        cnn_config_free(cfg);
        fail_msg("model: %s", err.msg);
    }
    cnn_config_free(cfg);
    if (max_batch > 0 && cnn_model_reserve(m, max_batch, &err) != CNN_OK) {
        cnn_model_free(m);
        fail_msg("reserve: %s", err.msg);
    }
    return m;
}

/* Deterministic test data that does not use the library's own RNG:
 * xorshift64* values uniform in [lo, hi). */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static inline double tu_uniform(tu_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return (double)((r->s * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
}

static inline void tu_fill(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    tu_rng r = {seed * 0x9e3779b97f4a7c15ULL + 1};
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (float)tu_uniform(&r);
}

#endif /* CNN_TESTUTIL_H */
