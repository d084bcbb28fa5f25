/* fuzz_util.h - what the libFuzzer harnesses share: a private scratch
 * directory (in /dev/shm when there is one) and writing bytes to a file in
 * it, for the parsers that take a path. Header-only: each harness is one
 * translation unit linked with libFuzzer's main. */
#ifndef CNN_FUZZ_UTIL_H
#define CNN_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_dir_buf[256];

static inline void fuzz_dir_remove(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir_buf);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir_buf);
}

/* The scratch directory of this process, made on first use and removed at
 * exit (with the files the harness left in it). */
static inline const char *fuzz_dir(void)
{
    if (!fuzz_dir_buf[0]) {
        const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_dir_buf, sizeof fuzz_dir_buf, "%s/cnn-fuzz-XXXXXX", base);
        if (!mkdtemp(fuzz_dir_buf)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(fuzz_dir_remove);
    }
    return fuzz_dir_buf;
}

/* path = scratch dir / name. */
static inline void fuzz_path(char *path, size_t n, const char *name)
{
    snprintf(path, n, "%s/%s", fuzz_dir(), name);
}

/* Writes data (size bytes) to scratch dir / name; its path into path. */
static inline void fuzz_write(char *path, size_t n, const char *name, const uint8_t *data, size_t size)
{
    fuzz_path(path, n, name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

/* Reads a little-endian 16-bit length from the front of the input,
 * clamped to what is left; advances data and size. */
static inline size_t fuzz_take_len(const uint8_t **data, size_t *size)
{
    if (*size < 2) {
        *size = 0;
        return 0;
    }
    size_t len = (size_t)(*data)[0] | (size_t)(*data)[1] << 8;
    *data += 2;
    *size -= 2;
    return len < *size ? len : *size;
}

#endif /* CNN_FUZZ_UTIL_H */
