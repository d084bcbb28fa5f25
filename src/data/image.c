/* image.c - image files decoded by stb_image, resized by stb_image_resize.
 * The one place that includes stb. stb_image's implementation comes from
 * libstb (pkg-config stb); stb_image_resize's is compiled here, file-local,
 * because Debian's libstb aborts on ordinary sizes (see STBIR_ASSERT). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

cnn_status cnn_image_load(const char *path, int c, int h, int w, uint8_t *out, cnn_error *err)
{
    if ((c != 1 && c != 3) || h < 1 || w < 1)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: cannot load as %dx%dx%d (HxWxC, C 1 or 3)",
                             path, h, w, c);
    FILE *f = fopen(path, "rb");
    if (!f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    int iw, ih, ic;
    if (!stbi_info_from_file(f, &iw, &ih, &ic)) {
        fclose(f);
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot decode: %s", path,
                             stbi_failure_reason());
    }
    if (iw < 1 || ih < 1) { /* a PNM header may say 0 */
        fclose(f);
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot decode: the image is %dx%d pixels",
                             path, iw, ih);
    }
    if (iw > CNN_IMAGE_MAX_SIDE || ih > CNN_IMAGE_MAX_SIDE) {
        fclose(f);
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: %dx%d pixels, a side longer than the %d allowed",
                             path, iw, ih, CNN_IMAGE_MAX_SIDE);
    }
    if ((int64_t)iw * ih > CNN_IMAGE_MAX_PIXELS) {
        fclose(f);
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: %dx%d pixels, more than the %lld allowed",
                             path, iw, ih, (long long)CNN_IMAGE_MAX_PIXELS);
    }
    uint8_t *px = stbi_load_from_file(f, &iw, &ih, &ic, c); /* (ih, iw, c) */
    fclose(f);
    if (!px)
        return cnn_error_set(err, CNN_ERR_FORMAT, "%s: cannot decode: %s", path,
                             stbi_failure_reason());
    const uint8_t *src = px;
    uint8_t *rs = NULL; /* (h, w, c) when resized */
    cnn_status st = CNN_OK;
    if (iw != w || ih != h) {
        if (!(rs = malloc((size_t)h * w * c)))
            st = cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory resizing %dx%d to %dx%d",
                               path, ih, iw, h, w);
        else if ((st = cnn_image_resize(px, ih, iw, c, rs, h, w, err)))
            cnn_error_prefix(err, "%s", path);
        if (st) {
            free(rs);
            stbi_image_free(px);
            return st;
        }
        src = rs;
    }
    cnn_hwc_to_chw(src, c, h, w, out);
    free(rs);
    stbi_image_free(px);
    return CNN_OK;
}
