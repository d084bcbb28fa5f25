/* image.c - image files decoded (JPEG by libjpeg-turbo, the other formats
 * by stb_image), resized by stb_image_resize. The one place that includes
 * stb and libjpeg. stb_image's implementation comes from libstb (pkg-config
 * stb); stb_image_resize's is compiled here, file-local, because Debian's
 * libstb aborts on ordinary sizes (see STBIR_ASSERT). */
#include <errno.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h> /* the JWRN_ codes */
#include <stb_image.h>

#include "cnn/image.h"
#include "internal.h"

/* Shrinking, stb_image_resize checks that the filter weights of each
 * output pixel sum to within 10% of 1 before it normalises them to 1. By a
 * factor s between 1/2 and 1, the triangle it samples (half-width 1/s
 * source pixels, one sample a source pixel) sums to between s (2 - s) and
 * s (3 - 2s) depending on where the samples fall: 0.89 at s = 2/3, 1.125
 * at s = 3/4. So those two checks fail for ordinary sizes (41 -> 28,
 * 36 -> 28, 300 -> 224), and Debian's build, with assert on, aborts. Here
 * they are dropped: the weights are normalised as they always were. Any
 * other failed check (none is known to fail: the sweep in test_image.c
 * covers every side up to 600 to each shipped size) makes the resize
 * return an error instead of aborting. */
static _Thread_local int resize_fault;
static void stbir_check(int ok, const char *what)
{
    if (!ok && strcmp(what, "total > 0.9f") && strcmp(what, "total < 1.1f"))
        resize_fault = 1;
}
#define STBIR_ASSERT(x) stbir_check(!!(x), #x)
#define STB_IMAGE_RESIZE_STATIC
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include <stb_image_resize.h>
#pragma GCC diagnostic pop

cnn_status cnn_image_resize(const uint8_t *in, int ih, int iw, int c, uint8_t *out, int h, int w,
                            cnn_error *err)
{
    if (ih < 1 || iw < 1 || h < 1 || w < 1 || c < 1 || c > 4)
        return cnn_error_set(err, CNN_ERR_ARG, "cannot resize %dx%dx%d to %dx%dx%d (HxWxC)", ih,
                             iw, c, h, w, c);
    resize_fault = 0;
    int ok = stbir_resize_uint8_generic(in, iw, ih, 0, out, w, h, 0, c, STBIR_ALPHA_CHANNEL_NONE,
                                        0, STBIR_EDGE_CLAMP, STBIR_FILTER_TRIANGLE,
                                        STBIR_COLORSPACE_LINEAR, NULL);
    if (resize_fault)
        return cnn_error_set(err, CNN_ERR_FORMAT,
                             "cannot resize %dx%d to %dx%d: stb_image_resize failed a check", ih,
                             iw, h, w);
    if (!ok)
        return cnn_error_set(err, CNN_ERR_NOMEM, "out of memory resizing %dx%d to %dx%d", ih, iw,
                             h, w);
    return CNN_OK;
}

/* An image of iw x ih pixels from its header: refused when empty (a PNM
 * header may say 0) or over the limits of image.h. */
static cnn_status size_check(const char *path, long iw, long ih, cnn_error *err)
{
    if (iw < 1 || ih < 1)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot decode: the image is %ldx%ld pixels",
                             path, iw, ih);
    if (iw > CNN_IMAGE_MAX_SIDE || ih > CNN_IMAGE_MAX_SIDE)
        return cnn_error_set(err, CNN_ERR_FORMAT,
                             "%s: %ldx%ld pixels, a side longer than the %d allowed", path, iw, ih,
                             CNN_IMAGE_MAX_SIDE);
    if ((int64_t)iw * ih > CNN_IMAGE_MAX_PIXELS)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: %ldx%ld pixels, more than the %lld allowed",
                             path, iw, ih, (long long)CNN_IMAGE_MAX_PIXELS);
    return CNN_OK;
}

/* Decodes f with stb_image into *px (*ih, *iw, c), freed by stbi_image_free. */
static cnn_status stb_load(FILE *f, const char *path, int c, uint8_t **px, int *iw, int *ih,
                           cnn_error *err)
{
    int ic;
    if (!stbi_info_from_file(f, iw, ih, &ic))
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot decode: %s", path,
                             stbi_failure_reason());
    cnn_status st = size_check(path, *iw, *ih, err);
    if (st)
        return st;
    if (!(*px = stbi_load_from_file(f, iw, ih, &ic, c)))
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot decode: %s", path,
                             stbi_failure_reason());
    return CNN_OK;
}

/* ---- JPEG (libjpeg-turbo) ------------------------------------------------ */

/* A progressive JPEG may hold any number of scans, each a pass over the
 * whole image, so a small crafted file can keep the decoder busy for a
 * long time. Photos have a few dozen at most (libjpeg's simple
 * progression writes 10). */
enum { JPEG_MAX_SCANS = 500 };

typedef struct jpeg_fail {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_fail;

static void jpeg_error_exit(j_common_ptr cinfo)
{
    jpeg_fail *f = (jpeg_fail *)(void *)cinfo->err;
    cinfo->err->format_message(cinfo, f->msg);
    longjmp(f->jump, 1);
}

/* A warning that the pixels are damaged (truncated or corrupt entropy
 * data, which libjpeg would fill with grey or garbage) is an error: the
 * image is not what the file meant. The others (padding between markers,
 * an unknown JFIF revision or Adobe transform code, a bad ICC marker)
 * leave the pixels as stb_image decoded them, and are let through. */
static void jpeg_emit(j_common_ptr cinfo, int level)
{
    if (level >= 0)
        return;
    switch (cinfo->err->msg_code) {
    case JWRN_ARITH_BAD_CODE:
    case JWRN_BOGUS_PROGRESSION:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_JPEG_EOF:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
        jpeg_error_exit(cinfo);
        break;
    default:
        break;
    }
}

static void jpeg_scans(j_common_ptr cinfo)
{
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (cinfo->is_decompressor && d->input_scan_number > JPEG_MAX_SCANS) {
        jpeg_fail *f = (jpeg_fail *)(void *)cinfo->err;
        snprintf(f->msg, sizeof f->msg, "more than %d progressive scans", JPEG_MAX_SCANS);
        longjmp(f->jump, 1);
    }
}

/* The scale 1/8, 1/4 or 1/2 at which libjpeg's IDCT itself shrinks an
 * image of iw x ih: the largest d with iw >= d w and ih >= d h, as PIL's
 * Image.draft picks it (1 when none). libjpeg's output, ceil(iw / d), is
 * then at least w x h. */
static int jpeg_denom(int iw, int ih, int w, int h)
{
    for (int d = 8; d > 1; d /= 2)
        if (iw / d >= w && ih / d >= h)
            return d;
    return 1;
}

/* Decodes the JPEG file f into *px (*ih, *iw, c), shrunk in the IDCT
 * toward h x w (jpeg_denom). A CMYK or YCCK file, which libjpeg cannot
 * turn into RGB, is left to stb_image: CNN_OK, *px NULL, f rewound. */
static cnn_status jpeg_load(FILE *f, const char *path, int c, int h, int w, uint8_t **px,
                            int *iw, int *ih, cnn_error *err)
{
    struct jpeg_decompress_struct d;
    jpeg_fail fail;
    uint8_t *volatile buf = NULL;
    d.err = jpeg_std_error(&fail.pub);
    fail.pub.error_exit = jpeg_error_exit;
    fail.pub.emit_message = jpeg_emit;
    fail.msg[0] = 0;
    if (setjmp(fail.jump)) {
        jpeg_destroy_decompress(&d);
        free(buf);
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot decode: %s", path, fail.msg);
    }
    jpeg_create_decompress(&d);
    fail.progress.progress_monitor = jpeg_scans;
    d.progress = &fail.progress;
    jpeg_stdio_src(&d, f);
    jpeg_read_header(&d, TRUE);
    const long W = (long)d.image_width, H = (long)d.image_height;
    if (d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&d);
        rewind(f);
        return CNN_OK;
    }
    cnn_status st = size_check(path, W, H, err);
    if (st) {
        jpeg_destroy_decompress(&d);
        return st;
    }
    d.out_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
    d.scale_num = 1;
    d.scale_denom = (unsigned)jpeg_denom((int)W, (int)H, w, h);
    d.dct_method = JDCT_ISLOW; /* integer, the same bits on every machine */
    jpeg_start_decompress(&d);
    /* GRAYSCALE and RGB output: c components a pixel */
    const size_t stride = (size_t)d.output_width * (size_t)c;
    if (!(buf = malloc(stride * d.output_height + 1))) {
        jpeg_destroy_decompress(&d);
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory decoding %ldx%ld", path, W, H);
    }
    while (d.output_scanline < d.output_height) {
        JSAMPROW rows[8];
        JDIMENSION k = 0;
        for (; k < 8 && d.output_scanline + k < d.output_height; k++)
            rows[k] = buf + (d.output_scanline + k) * stride;
        jpeg_read_scanlines(&d, rows, k);
    }
    jpeg_finish_decompress(&d);
    *iw = (int)d.output_width;
    *ih = (int)d.output_height;
    jpeg_destroy_decompress(&d);
    *px = buf;
    return CNN_OK;
}

static void release(uint8_t *px, int from_stb)
{
    if (from_stb)
        stbi_image_free(px);
    else
        free(px);
}

static int is_jpeg(FILE *f)
{
    unsigned char m[3] = {0};
    const size_t got = fread(m, 1, sizeof m, f);
    rewind(f);
    return got == 3 && m[0] == 0xff && m[1] == 0xd8 && m[2] == 0xff;
}

cnn_status cnn_image_load(const char *path, int c, int h, int w, uint8_t *out, cnn_error *err)
{
    if ((c != 1 && c != 3) || h < 1 || w < 1)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: cannot load as %dx%dx%d (HxWxC, C 1 or 3)",
                             path, h, w, c);
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int iw = 0, ih = 0;
    uint8_t *px = NULL; /* (ih, iw, c) */
    cnn_status st = is_jpeg(f) ? jpeg_load(f, path, c, h, w, &px, &iw, &ih, err) : CNN_OK;
    const int from_stb = !st && !px; /* not a JPEG, or one libjpeg leaves to stb_image */
    if (from_stb)
        st = stb_load(f, path, c, &px, &iw, &ih, err);
    fclose(f);
    if (st)
        return st;
    const uint8_t *src = px;
    uint8_t *rs = NULL; /* (h, w, c) when resized */
    if (iw != w || ih != h) {
        if (!(rs = malloc((size_t)h * w * c)))
            st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory resizing %dx%d to %dx%d",
                               path, ih, iw, h, w);
        else if ((st = cnn_image_resize(px, ih, iw, c, rs, h, w, err)))
            cnn_error_prefix(err, "%s", path);
        if (st) {
            free(rs);
            release(px, from_stb);
            return st;
        }
        src = rs;
    }
    cnn_hwc_to_chw(src, c, h, w, out);
    free(rs);
    release(px, from_stb);
    return CNN_OK;
}
