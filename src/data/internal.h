/* internal.h - helpers shared by the data stores (not installed). */
#ifndef CNN_DATA_INTERNAL_H
#define CNN_DATA_INTERNAL_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

#include "cnn/data.h"

/* Rows rows[0..B) of store s into out through cache c (cache.c): kept
 * bytes where there are some, else s's read, kept for next time. */
cnn_status cnn_data_cache_read(cnn_data_cache *c, cnn_store *s, const int64_t *rows, int B,
                               uint8_t *out, cnn_error *err);
void cnn_data_cache_free(cnn_data_cache *c); /* NULL is ignored */

/* Reads n bytes at offset at, retrying short reads and EINTR. Returns 0,
 * or -1 with errno set (0 when the file ended first). */
static inline int cnn_pread_full(int fd, void *buf, size_t n, off_t at)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, at + (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = 0;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* out (c, h, w) = in (h, w, c): decoders and HDF5 files hold channel-last
 * pixels, the engine wants channel-first. */
static inline void cnn_hwc_to_chw(const uint8_t *in, int c, int h, int w, uint8_t *out)
{
    const size_t plane = (size_t)h * w;
    for (size_t p = 0; p < plane; p++)
        for (int k = 0; k < c; k++)
            out[(size_t)k * plane + p] = in[p * (size_t)c + (size_t)k];
}

/* out (h, w, c) = in (c, h, w), the inverse. */
static inline void cnn_chw_to_hwc(const uint8_t *in, int c, int h, int w, uint8_t *out)
{
    const size_t plane = (size_t)h * w;
    for (size_t p = 0; p < plane; p++)
        for (int k = 0; k < c; k++)
            out[p * (size_t)c + (size_t)k] = in[(size_t)k * plane + p];
}

#endif /* CNN_DATA_INTERNAL_H */
