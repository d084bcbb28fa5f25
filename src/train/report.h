/* report.h - what `cnn-train --evaluate` prints and writes: the confusion
 * matrix, per-class precision/recall/F1 (as sklearn's classification_report
 * that the seed tutorials print), and the misclassified samples. */
#ifndef CNN_REPORT_H
#define CNN_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/data.h"
#include "cnn/error.h"

typedef struct cnn_report {
    int k;              /* classes */
    int64_t *confusion; /* (k, k): [true][predicted] counts */
    int64_t n;          /* samples */
    double loss;        /* mean loss */
} cnn_report;

/* Builds the confusion matrix from per-sample labels and predictions. */
cnn_status cnn_report_build(cnn_report *r, int k, const int32_t *labels, const int32_t *pred,
                            int64_t n, double loss, cnn_error *err);
void cnn_report_free(cnn_report *r);

/* Accuracy, then a table of precision, recall, F1 and support per class
 * (names may be NULL: class numbers), then the confusion matrix. */
void cnn_report_print(const cnn_report *r, const char *const *names, FILE *out);

/* confusion.csv: a header of predicted classes, one row per true class. */
cnn_status cnn_report_write_confusion(const cnn_report *r, const char *const *names,
                                      const char *path, cnn_error *err);

/* misclassified.csv: index,source,true,predicted,probability for every
 * sample whose prediction is wrong; source is cnn_dataset_describe(): the
 * file of an image-folder sample, else "FILE sample I". */
cnn_status cnn_report_write_misclassified(const cnn_dataset *d, const int32_t *pred,
                                          const float *prob, const char *const *names,
                                          const char *path, int64_t *written, cnn_error *err);

#endif /* CNN_REPORT_H */
