/* config_text.c - the effective config as INI text: what a checkpoint
 * stores as /config, so that the run can be read and run again exactly as
 * it was, --set overrides included. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/config.h"

/* A growing string. */
typedef struct text_buf {
    char *s;
    size_t n, cap;
    int failed;
} text_buf;

static void put(text_buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->n + n + 1 > cap)
            cap *= 2;
        char *g = realloc(b->s, cap);
        if (!g) {
            b->failed = 1;
            return;
        }
        b->s = g;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void puts_(text_buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_kv(text_buf *b, const cnn_kv *kv)
{
    puts_(b, kv->key);
    puts_(b, " = ");
    puts_(b, kv->value);
    puts_(b, "\n");
}

/* Index of the first kv of section i in a flat array over all sections. */
static size_t kv_base(const cnn_config *cfg, int i)
{
    size_t k = 0;
    for (int j = 0; j < i; j++)
        k += (size_t)cfg->sec[j].nkv;
    return k;
}

/* The keys --set added to section i (line 0, not yet written in place). */
static void put_added(text_buf *b, const cnn_config *cfg, int i, char *done)
{
    const cnn_section *s = &cfg->sec[i];
    size_t base = kv_base(cfg, i);
    for (int k = 0; k < s->nkv; k++)
        if (s->kv[k].line == 0 && !done[base + k]) {
            puts_(b, "; set on the command line (--set)\n");
            put_kv(b, &s->kv[k]);
            done[base + k] = 1;
        }
}

/* The key of an INI line "key = value" (or "key: value"), trimmed, in buf;
 * 0 if the line is blank, a comment or a header. */
static int line_key(const char *l, size_t n, char *buf, size_t cap)
{
    while (n && (*l == ' ' || *l == '\t')) {
        l++;
        n--;
    }
    if (n == 0 || l[0] == ';' || l[0] == '#' || l[0] == '[')
        return 0;
    size_t e = 0;
    while (e < n && l[e] != '=' && l[e] != ':')
        e++;
    if (e == n)
        return 0;
    while (e > 0 && (l[e - 1] == ' ' || l[e - 1] == '\t'))
        e--;
    if (e == 0 || e >= cap)
        return 0;
    memcpy(buf, l, e);
    buf[e] = 0;
    return 1;
}

/* Section whose [header] is at line, or -1. */
static int section_at(const cnn_config *cfg, int line)
{
    for (int i = 0; i < cfg->nsec; i++)
        if (cfg->sec[i].line == line)
            return i;
    return -1;
}

static int overridden(const cnn_config *cfg)
{
    for (int i = 0; i < cfg->nsec; i++) {
        if (cfg->sec[i].line == 0)
            return 1;
        for (int k = 0; k < cfg->sec[i].nkv; k++)
            if (cfg->sec[i].kv[k].line == 0)
                return 1;
    }
    return 0;
}

cnn_status cnn_config_text(const cnn_config *cfg, char **out, cnn_error *err)
{
    *out = NULL;
    const char *t = cfg->text ? cfg->text : "";
    if (!overridden(cfg)) { /* the file as written */
        if (!(*out = strdup(t)))
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", cfg->path);
        return CNN_OK;
    }
    size_t nkv = kv_base(cfg, cfg->nsec);
    char *done = calloc(nkv + 1, 1);
    text_buf b = {0};
    if (!done)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory", cfg->path);
    int cur = -1;
    for (int line = 1; *t; line++) {
        const char *nl = strchr(t, '\n');
        size_t n = nl ? (size_t)(nl - t) + 1 : strlen(t);
        size_t body = n - (nl ? 1 : 0);
        if (body && t[body - 1] == '\r')
            body--;
        int hdr = section_at(cfg, line);
        char key[256];
        if (hdr >= 0) {
            if (cur >= 0)
                put_added(&b, cfg, cur, done);
            cur = hdr;
            put(&b, t, n);
        } else if (cur >= 0 && line_key(t, body, key, sizeof key)) {
            const cnn_section *s = &cfg->sec[cur];
            size_t base = kv_base(cfg, cur);
            int k = s->nkv - 1;
            while (k >= 0 && strcmp(s->kv[k].key, key) != 0)
                k--;
            if (k >= 0 && s->kv[k].line == 0) {
                puts_(&b, "; set on the command line (--set); the file had: ");
                put(&b, t, body);
                puts_(&b, "\n");
                put_kv(&b, &s->kv[k]);
                done[base + (size_t)k] = 1;
            } else {
                put(&b, t, n);
            }
        } else {
            put(&b, t, n);
        }
        if (!nl && n && !b.failed)
            puts_(&b, "\n");
        t += n;
    }
    if (cur >= 0)
        put_added(&b, cfg, cur, done);
    for (int i = 0; i < cfg->nsec; i++)
        if (cfg->sec[i].line == 0) {
            puts_(&b, "\n; section added on the command line (--set)\n[");
            puts_(&b, cfg->sec[i].name);
            puts_(&b, "]\n");
            for (int k = 0; k < cfg->sec[i].nkv; k++)
                put_kv(&b, &cfg->sec[i].kv[k]);
        }
    free(done);
    if (b.failed || !b.s) {
        free(b.s);
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for the config text",
                             cfg->path);
    }
    *out = b.s;
    return CNN_OK;
}
