/* h5_surgery.h - controlled damage to checkpoint files, for the checkpoint
 * tests only (a test tool, built for the tests and not into libcnn). Each
 * function returns 0 on success and -1 on failure, and prints nothing. */
#ifndef CNN_H5_SURGERY_H
#define CNN_H5_SURGERY_H

/* File offset and size in bytes of the first chunk of a chunked dataset
 * (the whole tensor for the small tensors of the tests). */
int h5s_chunk_location(const char *path, const char *dataset, long long *offset,
                       long long *nbytes);

/* Removes the link obj ("/model/cv2/bias") from the file. */
int h5s_unlink(const char *path, const char *obj);

/* Overwrites the existing integer attribute attr of obj ("/" for the root). */
int h5s_set_int_attr(const char *path, const char *obj, const char *attr, int value);

#endif /* CNN_H5_SURGERY_H */
