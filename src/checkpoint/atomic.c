/* atomic.c - replacing a file atomically: the bytes are written to
 * DIR/.NAME.tmp.PID in the same directory, fsync()ed, renamed over NAME
 * and the directory fsync()ed. On any failure the temporary file is
 * removed and whatever NAME held before is left untouched. Knows nothing
 * of HDF5. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "schema.h"

/* fsync() of a directory; 0 or an errno. A directory that cannot be
 * synced (EINVAL: the file system does not support it) is not an error. */
static int sync_dir(const char *p)
{
    int fd = open(p, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return errno;
    int e = fsync(fd) == 0 || errno == EINVAL ? 0 : errno;
    close(fd);
    return e;
}

/* All n bytes to fd; 0 or an errno. */
static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return errno;
        if (w == 0)
            return EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* tmp gets the file's contents, synced; 0 or an errno (what failed in *what). */
static int write_temp(const char *tmp, const void *data, size_t n, const char **what)
{
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        *what = "create";
        return errno;
    }
    int e = write_all(fd, data, n);
    *what = "write";
    if (!e && fsync(fd) != 0) {
        e = errno;
        *what = "sync";
    }
    if (close(fd) != 0 && !e) { /* NFS may report a failed write only here */
        e = errno;
        *what = "write";
    }
    return e;
}

cnn_status ckpt_atomic_replace(const char *path, const void *data, size_t n, cnn_error *err)
{
    /* DIR/.NAME.tmp.PID, in the final file's directory so rename() is atomic */
    char dir[CKPT_PATH_MAX] = ".", tmp[CKPT_PATH_MAX];
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    if (!*base)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: names a directory, not a file", path);
    if (slash) /* "/x.h5" lives in "/" */
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    if (snprintf(tmp, sizeof tmp, "%.*s.%s.tmp.%ld", (int)(base - path), path, base,
                 (long)getpid()) >= (int)sizeof tmp)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: path too long", path);
    const char *what = "";
    int e = write_temp(tmp, data, n, &what);
    if (e) {
        cnn_status st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot %s the temporary file %s: %s",
                                      path, what, tmp, strerror(e));
        unlink(tmp);
        return st;
    }
    if (rename(tmp, path) != 0) {
        cnn_status st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot rename %s over it: %s", path,
                                      tmp, strerror(errno));
        unlink(tmp);
        return st;
    }
    if ((e = sync_dir(dir)))
        return cnn_error_set(err, CNN_ERR_IO, "%s: written, but syncing directory %s failed: %s",
                             path, dir, strerror(e));
    return CNN_OK;
}
