/* fuzz_hdf5.h - after a load, no HDF5 object may be left open: a file,
 * group, dataset or attribute (what H5Fget_obj_count counts) that our
 * code opened and did not close on some path. (HDF5 closes what is left
 * at exit, so a sanitizer would never see such a leak.) */
#ifndef CNN_FUZZ_HDF5_H
#define CNN_FUZZ_HDF5_H

#include <stdio.h>
#include <stdlib.h>

#include <hdf5.h>

static inline void fuzz_no_open_hdf5(const char *after)
{
    ssize_t n = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
    if (n != 0) {
        fprintf(stderr, "fuzz: %zd HDF5 objects still open after %s\n", n, after);
        abort();
    }
}

#endif /* CNN_FUZZ_HDF5_H */
