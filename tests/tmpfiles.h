/* tmpfiles.h - scratch directories and files for the data tests.
 *
 * Header-only, like testutil.h. tf_dir() makes a fresh directory under
 * /tmp (removed with everything in it by tf_rmtree); tf_write() writes
 * bytes to a file, creating its parent directories. */
#ifndef CNN_TMPFILES_H
#define CNN_TMPFILES_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static inline char *tf_dir(const char *tag)
{
    char *p = malloc(256);
    snprintf(p, 256, "/tmp/cnn-%s-XXXXXX", tag);
    if (!p || !mkdtemp(p))
        fail_msg("cannot create a directory under /tmp");
    return p;
}

/* mkdir -p of the directory part of path. */
static inline void tf_parents(const char *path)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *s = buf + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(buf, 0755);
            *s = '/';
        }
}

static inline void tf_write(const char *path, const void *data, size_t n)
{
    tf_parents(path);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0)
        fail_msg("cannot write %s", path);
}

/* rm -rf path (links are removed, not followed). */
static inline void tf_rm(const char *path)
{
    struct stat sb;
    DIR *d = lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode) ? opendir(path) : NULL;
    for (struct dirent *e; d && (e = readdir(d));) {
        char sub[1024];
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub)
                tf_rm(sub);
        }
    }
    if (d)
        closedir(d);
    remove(path);
}

static inline void tf_rmtree(char *dir)
{
    tf_rm(dir);
    free(dir);
}

#endif /* CNN_TMPFILES_H */
