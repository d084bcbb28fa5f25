/* fuzz_data.h - reads every sample of a dataset a harness loaded, as the
 * batches of a training run would, and frees it. */
#ifndef CNN_FUZZ_DATA_H
#define CNN_FUZZ_DATA_H

#include <stdlib.h>

#include "cnn/data.h"

/* Reads up to max_samples samples of d in batches of up to 8 (rows in
 * reverse order within a batch, so stores that sort rows have work), names
 * the first one and frees d. */
static inline void fuzz_read_all(cnn_dataset *d, int64_t max_samples)
{
    enum { B = 8 };
    size_t img = cnn_shape_size(d->shape);
    int64_t n = d->n < max_samples ? d->n : max_samples;
    uint8_t *raw = img ? malloc(B * img) : NULL;
    float *x = img ? malloc(B * img * sizeof *x) : NULL;
    if (raw && x) {
        cnn_error err = {0};
        int64_t idx[B];
        int32_t labels[B];
        for (int64_t i = 0; i < n; i += B) {
            int b = (int)(n - i < B ? n - i : B);
            for (int k = 0; k < b; k++)
                idx[k] = i + b - 1 - k;
            if (cnn_dataset_gather(d, idx, b, 1.0f / 255, raw, x, labels, &err) != CNN_OK)
                break;
        }
        char name[1200];
        if (d->n > 0)
            cnn_dataset_describe(d, 0, name, sizeof name);
    }
    free(raw);
    free(x);
    cnn_dataset_free(d);
}

#endif /* CNN_FUZZ_DATA_H */
