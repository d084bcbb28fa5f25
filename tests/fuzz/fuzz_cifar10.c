/* fuzz_cifar10.c - a CIFAR-10 binary batch and its batches.meta.txt
 * (cnn_cifar10_load).
 *
 * Input: flags (1 byte), the meta file's length M (2 bytes, little endian),
 * batches.meta.txt (M bytes), the batch (the rest).
 * flags bit 0: the batch is the test set (test_batch.bin) instead of
 * data_batch_1.bin; bit 1: batches.meta.txt is written; bit 2: the batch
 * is also data_batch_2.bin (two parts); bits 3-4: limit 0, 1, 3 or 20000.
 * Every sample is then read. */
#include "fuzz_data.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int64_t limits[4] = {0, 1, 3, 20000};
    static const char *const files[] = {"data_batch_1.bin", "data_batch_2.bin", "test_batch.bin",
                                        "batches.meta.txt"};
    if (size < 1)
        return 0;
    int flags = data[0];
    data++, size--;
    size_t nmeta = fuzz_take_len(&data, &size);
    char path[512];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) { /* last input's files */
        fuzz_path(path, sizeof path, files[i]);
        unlink(path);
    }
    int test = flags & 1;
    fuzz_write(path, sizeof path, test ? "test_batch.bin" : "data_batch_1.bin", data + nmeta,
               size - nmeta);
    if (flags & 2)
        fuzz_write(path, sizeof path, "batches.meta.txt", data, nmeta);
    if (flags & 4)
        fuzz_write(path, sizeof path, "data_batch_2.bin", data + nmeta, size - nmeta);
    cnn_error err = {0};
    cnn_dataset *d = NULL;
    if (cnn_cifar10_load(&d, fuzz_dir(), test, limits[(flags >> 3) & 3], &err) != CNN_OK)
        return 0;
    for (int c = 0; d->class_names && c < d->nclasses; c++)
        if (!d->class_names[c]) {
            fprintf(stderr, "fuzz: class %d of %d has no name\n", c, d->nclasses);
            abort();
        }
    fuzz_read_all(d, 64);
    return 0;
}
