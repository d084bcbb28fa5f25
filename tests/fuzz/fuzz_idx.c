/* fuzz_idx.c - an IDX image file and its IDX label file (cnn_idx_load).
 *
 * Input: flags (1 byte), the label file's length L (2 bytes, little
 * endian), the label file (L bytes), the image file (the rest).
 * flags bit 0: the image file is written gzip-compressed (read whole into
 * memory), bit 1: the label file too; bits 2-3: limit 0, 1, 3 or 1000.
 * Every sample is then read, and the set split in two. */
#include <zlib.h>

#include "fuzz_data.h"
#include "fuzz_util.h"

static void write_gz(char *path, size_t n, const char *name, const uint8_t *data, size_t size)
{
    fuzz_path(path, n, name);
    gzFile f = gzopen(path, "wb");
    if (!f || (size && gzwrite(f, data, (unsigned)size) != (int)size) || gzclose(f) != Z_OK) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t limits[4] = {0, 1, 3, 1000};
    if (size < 1)
        return 0;
    int flags = data[0];
    data++, size--;
    size_t nlab = fuzz_take_len(&data, &size);
    char images[512], labels[512];
    if (flags & 1)
        write_gz(images, sizeof images, "images.gz", data + nlab, size - nlab);
    else
        fuzz_write(images, sizeof images, "images", data + nlab, size - nlab);
    if (flags & 2)
        write_gz(labels, sizeof labels, "labels.gz", data, nlab);
    else
        fuzz_write(labels, sizeof labels, "labels", data, nlab);
    cnn_error err = {0};
    cnn_dataset *d = NULL;
    if (cnn_idx_load(&d, images, labels, limits[(flags >> 2) & 3], &err) != CNN_OK)
        return 0;
    cnn_dataset *tail = NULL;
    if (d->n >= 2 && cnn_dataset_split_tail(d, 0.5, &tail, &err) == CNN_OK)
        fuzz_read_all(tail, 64);
    fuzz_read_all(d, 64);
    return 0;
}
