/* test_idx.c - IDX files, plain and gzip-compressed, made on the spot:
 * pixels and labels read back, and headers that claim more than the file
 * holds refused as truncated (exit 2) on both paths, before any
 * allocation of the claimed size. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <zlib.h>

#include "cnn/data.h"
#include "testutil.h"
#include "datatest.h"

/* An IDX file at path (gzip-compressed when gz): magic 0x000008nd, the
 * nd big-endian sizes, then len bytes of body. */
static void write_idx(const char *path, int gz, int nd, const uint32_t *dims, const uint8_t *body,
                      size_t len)
{
    uint8_t head[16] = {0, 0, 8, (uint8_t)nd};
    for (int i = 0; i < nd; i++)
        for (int b = 0; b < 4; b++)
            head[4 + 4 * i + b] = (uint8_t)(dims[i] >> (24 - 8 * b));
    const size_t hl = 4 + 4 * (size_t)nd;
    if (!gz) {
        uint8_t *all = malloc(hl + len + 1);
        memcpy(all, head, hl);
        if (len)
            memcpy(all + hl, body, len);
        tf_write(path, all, hl + len);
        free(all);
        return;
    }
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, head, (unsigned)hl), (int)hl);
    if (len)
        assert_int_equal(gzwrite(f, body, (unsigned)len), (int)len);
    assert_int_equal(gzclose(f), Z_OK);
}

/* cnn_idx_load of i.idx and l.idx in the scratch directory. */
static cnn_status load(cnn_dataset **d, cnn_error *err)
{
    char images[512];
    snprintf(images, sizeof images, "%s", tf_path("i.idx")); /* tf_path's buffer is reused */
    return cnn_idx_load(d, images, tf_path("l.idx"), 0, err);
}

static void test_round_trip(void **state)
{
    (void)state;
    enum { N = 5, H = 3, W = 4 };
    uint8_t px[N * H * W], lab[N] = {3, 1, 4, 1, 5};
    for (int k = 0; k < N * H * W; k++)
        px[k] = (uint8_t)(k * 37 + 11);
    const uint32_t idim[3] = {N, H, W}, ldim[1] = {N};
    for (int gz = 0; gz < 2; gz++) {
        write_idx(tf_path("i.idx"), gz, 3, idim, px, sizeof px);
        write_idx(tf_path("l.idx"), gz, 1, ldim, lab, sizeof lab);
        cnn_dataset *d = NULL;
        cnn_error err = {0};
        TU_STATUS(load(&d, &err), CNN_OK, err);
        assert_int_equal(d->n, N);
        assert_int_equal(d->nclasses, 6);
        const int64_t idx[3] = {4, 0, 2};
        uint8_t out[3 * H * W];
        TU_STATUS(cnn_dataset_read(d, idx, 3, out, &err), CNN_OK, err);
        assert_memory_equal(out, px + 4 * H * W, H * W);
        assert_memory_equal(out + H * W, px, H * W);
        assert_memory_equal(out + 2 * H * W, px + 2 * H * W, H * W);
        for (int i = 0; i < N; i++)
            assert_int_equal(d->labels[i], lab[i]);
        cnn_dataset_free(d);
    }
}

/* Headers claiming 60000 images of 65536 x 65536 (2.6e14 bytes), and
 * 2^32 - 1 of them (more bytes than size_t counts), over 100 bytes of
 * pixels: truncated, a format error (exit 2), plain or gzip. The gzip
 * path used to try to allocate the claim and say "out of memory" (exit 1). */
static void test_header_claims_more_than_the_file(void **state)
{
    (void)state;
    uint8_t body[100] = {0}, lab[64] = {0};
    const uint32_t claims[2] = {60000, 0xffffffffu};
    for (int c = 0; c < 2; c++)
        for (int gz = 0; gz < 2; gz++) {
            const uint32_t idim[3] = {claims[c], 65536, 65536}, ldim[1] = {claims[c]};
            write_idx(tf_path("i.idx"), gz, 3, idim, body, sizeof body);
            write_idx(tf_path("l.idx"), gz, 1, ldim, lab, sizeof lab);
            cnn_dataset *d = NULL;
            cnn_error err = {0};
            TU_STATUS(load(&d, &err),
                      CNN_ERR_FORMAT, err);
            TU_MSG_HAS(err, tf_path("i.idx"));
            TU_MSG_HAS(err, "truncated");
            assert_int_equal(cnn_status_exit_code(err.status), 2);
            assert_null(d);
        }
}

/* A gzip file whose labels end early: truncated, naming the label file. */
static void test_short_labels(void **state)
{
    (void)state;
    uint8_t px[4 * 2 * 2] = {0}, lab[2] = {1, 2};
    const uint32_t idim[3] = {4, 2, 2}, ldim[1] = {4};
    write_idx(tf_path("i.idx"), 1, 3, idim, px, sizeof px);
    write_idx(tf_path("l.idx"), 1, 1, ldim, lab, sizeof lab);
    cnn_dataset *d = NULL;
    cnn_error err = {0};
    TU_STATUS(load(&d, &err), CNN_ERR_FORMAT, err);
    TU_MSG_HAS(err, "l.idx: truncated or corrupt: 2 of 4 labels");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_header_claims_more_than_the_file),
        cmocka_unit_test(test_short_labels),
    };
    return cmocka_run_group_tests(tests, tf_setup, tf_teardown);
}
