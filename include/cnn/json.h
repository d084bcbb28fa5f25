/* cnn/json.h - the one JSON helper the programs share (--summary --json,
 * cnn-predict --json, profile traces). */
#ifndef CNN_JSON_H
#define CNN_JSON_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Writes s as a JSON string: quotes, backslashes and control characters
 * escaped. */
void cnn_json_string(FILE *f, const char *s);

#ifdef __cplusplus
}
#endif

#endif
