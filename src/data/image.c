/* image.c - image files decoded by stb_image, resized by stb_image_resize.
 * The one place that includes stb; the implementations come from libstb
 * (pkg-config stb), so no *_IMPLEMENTATION is defined here. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>
#include <stb_image_resize.h>

#include "cnn/image.h"
#include "internal.h"

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
    if (iw != w || ih != h) {
        rs = malloc((size_t)h * w * c);
        if (!rs || !stbir_resize_uint8_generic(px, iw, ih, 0, rs, w, h, 0, c,
                                               STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP,
                                               STBIR_FILTER_TRIANGLE, STBIR_COLORSPACE_LINEAR,
                                               NULL)) {
            free(rs);
            stbi_image_free(px);
            return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory resizing %dx%d to %dx%d",
                                 path, ih, iw, h, w);
        }
        src = rs;
    }
    cnn_hwc_to_chw(src, c, h, w, out);
    free(rs);
    stbi_image_free(px);
    return CNN_OK;
}
