/* error.c - status names and the error record. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cnn/error.h"

static const char *const status_names[CNN_STATUS_COUNT] = {
    [CNN_OK] = "ok",
    [CNN_ERR_CONFIG] = "config error",
    [CNN_ERR_IO] = "I/O error",
    [CNN_ERR_FORMAT] = "format error",
    [CNN_ERR_NOMEM] = "out of memory",
    [CNN_ERR_SHAPE] = "shape error",
    [CNN_ERR_NUMERIC] = "numeric error",
    [CNN_ERR_ARG] = "invalid argument",
    [CNN_ERR_DIST] = "distributed error",
};

void cnn_error_prefix(cnn_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    char old[CNN_ERROR_MSG_MAX];
    snprintf(old, sizeof old, "%s", err->msg);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    /* ": " and the old message, cut at the end of the buffer */
    size_t len = strlen(err->msg);
    const char *const parts[2] = {": ", old};
    for (int i = 0; i < 2; i++) {
        size_t k = strlen(parts[i]), room = sizeof err->msg - 1 - len;
        k = k < room ? k : room;
        memcpy(err->msg + len, parts[i], k);
        len += k;
    }
    err->msg[len] = 0;
}

void cnn_error_append(cnn_error *err, const char *fmt, ...)
{
    if (!err)
        return;
    size_t len = strlen(err->msg);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + len, sizeof err->msg - len, fmt, ap);
    va_end(ap);
}

cnn_status cnn_error_set(cnn_error *err, cnn_status s, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = s;
    }
    return s;
}

const char *cnn_status_name(cnn_status s)
{
    return (s >= 0 && s < CNN_STATUS_COUNT) ? status_names[s] : "unknown error";
}

int cnn_status_exit_code(cnn_status s)
{
    switch (s) {
    case CNN_OK: return 0;
    case CNN_ERR_CONFIG:
    case CNN_ERR_IO:
    case CNN_ERR_FORMAT:
    case CNN_ERR_SHAPE:
    case CNN_ERR_ARG: return 2;
    default: return 1;
    }
}
