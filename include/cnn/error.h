/* cnn/error.h - status codes and error messages of the cnn-train library.
 *
 * Every library function that can fail returns a cnn_status and, when it
 * fails, fills a caller-owned cnn_error with one line that names the culprit
 * (file, line, key, layer or shape). Library code never prints and never
 * exits: only a program's main() turns a status into an exit code.
 *
 *     cnn_error err = {0};
 *     if (cnn_config_load(&cfg, "x.ini", &err) != CNN_OK) {
 *         fprintf(stderr, "cnn-train: %s\n", err.msg);
 *         return cnn_status_exit_code(err.status);
 *     }
 */
#ifndef CNN_ERROR_H
#define CNN_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CNN_OK = 0,
    CNN_ERR_CONFIG,  /* malformed or inconsistent configuration            */
    CNN_ERR_IO,      /* a file could not be opened, read or written        */
    CNN_ERR_FORMAT,  /* a file was read but its content is not valid       */
    CNN_ERR_NOMEM,   /* an allocation failed                               */
    CNN_ERR_SHAPE,   /* tensor shapes do not fit together                  */
    CNN_ERR_NUMERIC, /* NaN or Inf where a finite number is required       */
    CNN_ERR_ARG,     /* a caller passed an invalid argument                */
    CNN_ERR_DIST,    /* another rank failed or communication failed        */
    CNN_STATUS_COUNT
} cnn_status;

enum { CNN_ERROR_MSG_MAX = 512 };

typedef struct cnn_error {
    cnn_status status;
    char msg[CNN_ERROR_MSG_MAX];
} cnn_error;

/* Records status s and a printf-style message in err. err may be NULL in
 * every call of the library that takes one: the status is still returned,
 * only the message is lost.
 * Returns s, so that a failing path can read: return cnn_error_set(...). */
cnn_status cnn_error_set(cnn_error *err, cnn_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Puts a printf-style prefix and ": " before err's message, keeping its
 * status (err may be NULL): "epoch 2 step 5: x.png: cannot decode". */
void cnn_error_prefix(cnn_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends printf-style text to err's message (err may be NULL). */
void cnn_error_append(cnn_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Short name of a status ("config error", "I/O error", ...). */
const char *cnn_status_name(cnn_status s);

/* Process exit code for a status: 0 for CNN_OK, 2 for configuration and
 * input errors (bad config, bad file), 1 for everything else. */
int cnn_status_exit_code(cnn_status s);

#ifdef __cplusplus
}
#endif
#endif /* CNN_ERROR_H */
