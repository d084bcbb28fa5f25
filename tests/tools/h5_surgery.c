/* h5_surgery.c - see h5_surgery.h. */
#include <hdf5.h>

#include "h5_surgery.h"

/* Opens path read-write with HDF5's error printing off. */
static hid_t open_rw(const char *path)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
}

int h5s_chunk_location(const char *path, const char *dataset, long long *offset,
                       long long *nbytes)
{
    hid_t f = open_rw(path), ds = f < 0 ? -1 : H5Dopen2(f, dataset, H5P_DEFAULT);
    hsize_t origin[H5S_MAX_RANK] = {0}, size = 0;
    haddr_t addr = HADDR_UNDEF;
    unsigned mask;
    /* H5Dget_offset() only answers for contiguous datasets; ours are chunked */
    int ok = ds >= 0 && H5Dget_chunk_info_by_coord(ds, origin, &mask, &addr, &size) >= 0 &&
             addr != HADDR_UNDEF;
    if (ds >= 0)
        H5Dclose(ds);
    if (f >= 0)
        H5Fclose(f);
    *offset = (long long)addr;
    *nbytes = (long long)size;
    return ok ? 0 : -1;
}

int h5s_unlink(const char *path, const char *obj)
{
    hid_t f = open_rw(path);
    int ok = f >= 0 && H5Ldelete(f, obj, H5P_DEFAULT) >= 0;
    if (f >= 0)
        ok = H5Fclose(f) >= 0 && ok;
    return ok ? 0 : -1;
}

int h5s_set_int_attr(const char *path, const char *obj, const char *attr, int value)
{
    hid_t f = open_rw(path);
    hid_t a = f < 0 ? -1 : H5Aopen_by_name(f, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, H5T_NATIVE_INT, &value) >= 0;
    if (a >= 0)
        H5Aclose(a);
    if (f >= 0)
        ok = H5Fclose(f) >= 0 && ok;
    return ok ? 0 : -1;
}
