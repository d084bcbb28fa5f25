/* report.c - evaluation report (see report.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "report.h"

cnn_status cnn_report_build(cnn_report *r, int k, const int32_t *labels, const int32_t *pred,
                            int64_t n, double loss, cnn_error *err)
{
    memset(r, 0, sizeof *r);
    r->confusion = calloc((size_t)k * k, sizeof *r->confusion);
    if (!r->confusion)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory for a %dx%d confusion matrix", k,
                             k);
    r->k = k;
    r->n = n;
    r->loss = loss;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] >= 0 && labels[i] < k && pred[i] >= 0 && pred[i] < k)
            r->confusion[(size_t)labels[i] * k + pred[i]]++;
    return CNN_OK;
}

void cnn_report_free(cnn_report *r)
{
    free(r->confusion);
    memset(r, 0, sizeof *r);
}

static const char *class_name(const char *const *names, int c, char *buf, size_t n)
{
    if (names && names[c])
        return names[c];
    snprintf(buf, n, "%d", c);
    return buf;
}

void cnn_report_print(const cnn_report *r, const char *const *names, FILE *out)
{
    const int k = r->k;
    int64_t correct = 0;
    int width = 9;
    char buf[32];
    for (int c = 0; c < k; c++) {
        correct += r->confusion[(size_t)c * k + c];
        int len = (int)strlen(class_name(names, c, buf, sizeof buf));
        if (len > width)
            width = len < 24 ? len : 24;
    }
    fprintf(out, "samples: %lld  loss: %.4f  accuracy: %.4f\n\n", (long long)r->n, r->loss,
            r->n ? (double)correct / (double)r->n : 0.0);
    fprintf(out, "%*s %9s %9s %9s %9s\n", width, "class", "precision", "recall", "f1-score",
            "support");
    double sum_p = 0, sum_r = 0, sum_f = 0;
    for (int c = 0; c < k; c++) {
        int64_t tp = r->confusion[(size_t)c * k + c], support = 0, predicted = 0;
        for (int j = 0; j < k; j++) {
            support += r->confusion[(size_t)c * k + j];
            predicted += r->confusion[(size_t)j * k + c];
        }
        double p = predicted ? (double)tp / (double)predicted : 0;
        double rc = support ? (double)tp / (double)support : 0;
        double f = p + rc > 0 ? 2 * p * rc / (p + rc) : 0;
        sum_p += p;
        sum_r += rc;
        sum_f += f;
        fprintf(out, "%*.*s %9.4f %9.4f %9.4f %9lld\n", width, width,
                class_name(names, c, buf, sizeof buf), p, rc, f, (long long)support);
    }
    fprintf(out, "%*s %9.4f %9.4f %9.4f %9lld\n\n", width, "macro avg", sum_p / k, sum_r / k,
            sum_f / k, (long long)r->n);
    fprintf(out, "confusion matrix (rows: true class, columns: predicted)\n%*s", width, "");
    for (int j = 0; j < k; j++)
        fprintf(out, " %6.6s", class_name(names, j, buf, sizeof buf));
    fputc('\n', out);
    for (int c = 0; c < k; c++) {
        fprintf(out, "%*.*s", width, width, class_name(names, c, buf, sizeof buf));
        for (int j = 0; j < k; j++)
            fprintf(out, " %6lld", (long long)r->confusion[(size_t)c * k + j]);
        fputc('\n', out);
    }
}

/* Writes a CSV field, quoted when it holds a comma, quote or newline. */
static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static cnn_status close_checked(FILE *f, const char *path, cnn_error *err)
{
    int bad = ferror(f);
    if (fclose(f) != 0 || bad)
        return cnn_error_set(err, CNN_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return CNN_OK;
}

cnn_status cnn_report_write_confusion(const cnn_report *r, const char *const *names,
                                      const char *path, cnn_error *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    char buf[32];
    fputs("true\\predicted", f);
    for (int j = 0; j < r->k; j++) {
        fputc(',', f);
        csv_field(f, class_name(names, j, buf, sizeof buf));
    }
    fputc('\n', f);
    for (int c = 0; c < r->k; c++) {
        csv_field(f, class_name(names, c, buf, sizeof buf));
        for (int j = 0; j < r->k; j++)
            fprintf(f, ",%lld", (long long)r->confusion[(size_t)c * r->k + j]);
        fputc('\n', f);
    }
    return close_checked(f, path, err);
}

cnn_status cnn_report_write_misclassified(const cnn_dataset *d, const int32_t *pred,
                                          const float *prob, const char *const *names,
                                          const char *path, int64_t *written, cnn_error *err)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    char a[32], b[32], src[1200];
    *written = 0;
    fputs("index,source,true,predicted,probability\n", f);
    for (int64_t i = 0; i < d->n; i++) {
        if (pred[i] == d->labels[i])
            continue;
        fprintf(f, "%lld,", (long long)i);
        csv_field(f, cnn_dataset_describe(d, i, src, sizeof src));
        fputc(',', f);
        csv_field(f, class_name(names, d->labels[i], a, sizeof a));
        fputc(',', f);
        csv_field(f, class_name(names, pred[i], b, sizeof b));
        fprintf(f, ",%.4f\n", prob[i]);
        (*written)++;
    }
    return close_checked(f, path, err);
}
