/* error.c - status names and the error record. */
#include <stdarg.h>
#include <stdio.h>

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
