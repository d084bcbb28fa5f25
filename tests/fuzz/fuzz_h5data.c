/* fuzz_h5data.c - an HDF5 dataset file (cnn_h5data_load).
 *
 * Input: the file. Every sample (up to 256) is then read, and each class
 * name looked at; no HDF5 object may stay open. */
#include <string.h>

#include "fuzz_data.h"
#include "fuzz_hdf5.h"
#include "fuzz_util.h"

volatile size_t name_chars; /* keeps the strlen calls */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[512];
    fuzz_write(path, sizeof path, "data.h5", data, size);
    cnn_error err = {0};
    cnn_dataset *d = NULL;
    if (cnn_h5data_load(&d, path, 0, &err) != CNN_OK) {
        fuzz_no_open_hdf5("a failed cnn_h5data_load");
        return 0;
    }
    for (int c = 0; d->class_names && c < d->nclasses; c++)
        name_chars += strlen(d->class_names[c]); /* as a program printing them would */
    fuzz_read_all(d, 256);
    fuzz_no_open_hdf5("cnn_dataset_free of an HDF5 set");
    return 0;
}
