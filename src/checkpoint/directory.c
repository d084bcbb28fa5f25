/* directory.c - the checkpoint directory's policy: file names, the latest
 * valid checkpoint, pruning old ones; and telling a checkpoint from an INI
 * file. Reads only headers (ckpt_read_info). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "schema.h"

typedef struct ckpt_entry {
    char name[256];
    int64_t global_step;
} ckpt_entry;

static int entry_order(const void *a, const void *b)
{
    const ckpt_entry *x = a, *y = b;
    if (x->global_step != y->global_step)
        return x->global_step < y->global_step ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The valid checkpoints of dir, oldest first: visible regular *.h5 files
 * whose header validates (only ckpt-*.h5 when ckpt_only). A missing dir is
 * an empty list. */
static cnn_status list_checkpoints(const char *dir, int ckpt_only, ckpt_entry **out, int *n,
                                   cnn_error *err)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? CNN_OK
                               : cnn_error_set(err, CNN_ERR_IO, "%s: cannot list: %s", dir,
                                               strerror(errno));
    ckpt_entry *list = NULL;
    int cap = 0;
    cnn_status st = CNN_OK;
    for (struct dirent *e; !st && (e = readdir(d));) {
        const char *name = e->d_name;
        char p[CKPT_PATH_MAX];
        struct stat sb;
        cnn_train_state s;
        cnn_error ignored;
        if (name[0] == '.' || !ends_with(name, ".h5") || strlen(name) >= sizeof list->name ||
            (ckpt_only && strncmp(name, "ckpt-", 5) != 0) ||
            snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p || stat(p, &sb) != 0 ||
            !S_ISREG(sb.st_mode) || ckpt_read_info(p, &s, NULL, &ignored) != CNN_OK)
            continue;
        if (*n == cap) {
            ckpt_entry *grown = realloc(list, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *list);
            if (!grown) {
                st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory listing checkpoints",
                                   dir);
                break;
            }
            list = grown;
        }
        snprintf(list[*n].name, sizeof list[*n].name, "%s", name);
        list[(*n)++].global_step = s.global_step;
    }
    closedir(d);
    if (st) {
        free(list);
        *n = 0;
        return st;
    }
    if (*n > 1)
        qsort(list, (size_t)*n, sizeof *list, entry_order);
    *out = list;
    return CNN_OK;
}

cnn_status cnn_checkpoint_find_latest(const char *dir, char *out, size_t outlen, int *found,
                                      cnn_error *err)
{
    cnn_h5_quiet();
    ckpt_entry *list;
    int n;
    *found = 0;
    cnn_status st = list_checkpoints(dir, 0, &list, &n, err);
    if (!st && n > 0) {
        if (snprintf(out, outlen, "%s/%s", dir, list[n - 1].name) >= (int)outlen)
            st = cnn_error_set(err, CNN_ERR_ARG, "%s/%s: path longer than the buffer (%zu)", dir,
                               list[n - 1].name, outlen);
        else
            *found = 1;
    }
    free(list);
    return st;
}

cnn_status cnn_checkpoint_prune(const char *dir, int keep, cnn_error *err)
{
    cnn_h5_quiet();
    if (keep < 1)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: prune must keep at least 1 checkpoint, not %d",
                             dir, keep);
    ckpt_entry *list;
    int n;
    cnn_status st = list_checkpoints(dir, 1, &list, &n, err);
    for (int i = 0; !st && i < n - keep; i++) {
        char p[CKPT_PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, list[i].name);
        if (unlink(p) != 0 && errno != ENOENT)
            st = cnn_error_set(err, CNN_ERR_IO, "%s: cannot remove: %s", p, strerror(errno));
    }
    free(list);
    return st;
}

void cnn_checkpoint_name(char *out, size_t n, const char *dir, const cnn_train_state *s)
{
    const int with_dir = dir && *dir;
    snprintf(out, n, "%s%sckpt-e%04lld-s%08lld.h5", with_dir ? dir : "", with_dir ? "/" : "",
             (long long)s->epoch, (long long)s->global_step);
}

int cnn_checkpoint_is_hdf5(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    unsigned char buf[8];
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return n == sizeof buf && !memcmp(buf, sig, sizeof sig);
}
