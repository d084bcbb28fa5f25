/* model_stats.c - batch statistics of the layers that keep them
 * (batch_normalization), for the trainer's moving-statistics update (see
 * cnn/model.h). The model's statistics are the concatenation, in layer
 * order, of each such layer's stats_count floats. */
#include "cnn/model.h"

static int keeps_stats(const cnn_layer *l) { return l->ops->stats_count != NULL; }

size_t cnn_model_stats_count(const cnn_model *m)
{
    size_t n = 0;
    for (int i = 0; i < m->nlayers; i++)
        if (keeps_stats(&m->layers[i]))
            n += m->layers[i].ops->stats_count(&m->layers[i]);
    return n;
}

int cnn_model_stats_layers(const cnn_model *m, int *min_hw)
{
    int n = 0;
    if (min_hw)
        *min_hw = 0;
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        if (!keeps_stats(l))
            continue;
        int hw = l->in.h * l->in.w;
        if (min_hw && (n == 0 || hw < *min_hw))
            *min_hw = hw;
        n++;
    }
    return n;
}

void cnn_model_stats_get(const cnn_model *m, float *out)
{
    for (int i = 0; i < m->nlayers; i++) {
        const cnn_layer *l = &m->layers[i];
        if (!keeps_stats(l))
            continue;
        l->ops->stats_get(l, out);
        out += l->ops->stats_count(l);
    }
}

void cnn_model_stats_update(cnn_model *m, const double *mean)
{
    for (int i = 0; i < m->nlayers; i++) {
        cnn_layer *l = &m->layers[i];
        if (!keeps_stats(l))
            continue;
        l->ops->stats_update(l, m->buffers, mean);
        mean += l->ops->stats_count(l);
    }
}
