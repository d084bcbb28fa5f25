/* history.c - the per-epoch history a checkpoint carries: a growable
 * array of cnn_epoch_record (cnn/checkpoint.h). */
#include <stdlib.h>

#include "cnn/checkpoint.h"

cnn_status cnn_history_append(cnn_history *h, const cnn_epoch_record *r, cnn_error *err)
{
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 16;
        cnn_epoch_record *rows = realloc(h->rows, (size_t)cap * sizeof *rows);
        if (!rows)
            return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for the history (%d epochs)",
                                 cap);
        h->rows = rows;
        h->cap = cap;
    }
    h->rows[h->n++] = *r;
    return CNN_OK;
}

void cnn_history_free(cnn_history *h)
{
    free(h->rows);
    h->rows = NULL;
    h->n = h->cap = 0;
}
