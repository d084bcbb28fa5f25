/* datatest.h - helpers of the data tests: scratch files and [data] loading.
 *
 * Header-only, like testutil.h (include it after testutil.h). tf_dir()
 * makes a fresh directory under /tmp (removed with everything in it by
 * tf_rmtree); tf_write() writes bytes to a file, creating its parent
 * directories; tf_setup/tf_teardown/tf_path give a test group one scratch
 * directory; tf_data_load() runs [data] text through the config reader
 * and cnn_data_load, as cnn-train does. */
#ifndef CNN_DATATEST_H
#define CNN_DATATEST_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cnn/config.h"
#include "cnn/data.h"

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

/* One scratch directory for a group: cmocka_run_group_tests(t, tf_setup,
 * tf_teardown); tf_path("x.png") names a file in it. */
static char *tf_scratch;

static inline int tf_setup(void **state)
{
    (void)state;
    tf_scratch = tf_dir("data");
    return 0;
}

static inline int tf_teardown(void **state)
{
    (void)state;
    tf_rmtree(tf_scratch);
    return 0;
}

static inline const char *tf_path(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", tf_scratch, name);
    return p;
}

/* Parses ini (named "d.ini" in messages), reads [data], rejects unused
 * keys and loads the sets. */
static inline cnn_status tf_data_load(const char *ini, cnn_dataset **train, cnn_dataset **val,
                                      cnn_dataset **test, cnn_error *err)
{
    cnn_config *cfg = NULL;
    cnn_data_config dc;
    cnn_status st = cnn_config_parse_string(&cfg, ini, "d.ini", err);
    if (!st && !(st = cnn_data_config_read(&dc, cfg, err)) &&
        !(st = cnn_config_check_unused(cfg, err)))
        st = cnn_data_load(&dc, 0, 1, train, val, test, err);
    cnn_config_free(cfg);
    return st;
}

/* Frees what tf_data_load loaded (val may be test). */
static inline void tf_data_free(cnn_dataset *train, cnn_dataset *val, cnn_dataset *test)
{
    if (val != test)
        cnn_dataset_free(val);
    cnn_dataset_free(train);
    cnn_dataset_free(test);
}

#endif /* CNN_DATATEST_H */
