/* imageio.c - PNG and JPEG files: a buffer of pixels, and feature maps as one
 * grayscale grid (see cnn/imageio.h).
 *
 * The PNG encoder is stb_image_write from Debian's libstb, which already
 * contains the implementation: this file must not define
 * STB_IMAGE_WRITE_IMPLEMENTATION. Bytes go through our own FILE so that a
 * failed write reports why.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image_write.h>

#include "cnn/imageio.h"

void cnn_png_grid_shape(int C, int *cols, int *rows)
{
    int k = 0;
    while ((long)k * k < C) /* ceil(sqrt(C)) without floating point */
        k++;
    *cols = k;
    *rows = k ? (C + k - 1) / k : 0;
}

/* Sides as 64-bit numbers, so that absurd arguments cannot overflow. */
static void grid_size64(int C, int H, int W, int scale, int64_t *width, int64_t *height)
{
    int cols, rows;
    cnn_png_grid_shape(C, &cols, &rows);
    *width = cols ? (int64_t)cols * W * scale + (cols - 1) : 0;
    *height = rows ? (int64_t)rows * H * scale + (rows - 1) : 0;
}

void cnn_png_grid_size(int C, int H, int W, int scale, int *width, int *height)
{
    int64_t w, h;
    grid_size64(C, H, W, scale, &w, &h);
    *width = w > INT32_MAX ? INT32_MAX : (int)w;
    *height = h > INT32_MAX ? INT32_MAX : (int)h;
}

/* Draws one map into its tile: min..max of the finite values -> 0..255. */
static void draw_tile(const float *map, int H, int W, int scale, uint8_t *tile, int stride)
{
    float mn = INFINITY, mx = -INFINITY;
    for (int i = 0; i < H * W; i++)
        if (isfinite(map[i])) {
            mn = fminf(mn, map[i]);
            mx = fmaxf(mx, map[i]);
        }
    const double k = mx > mn ? 255.0 / ((double)mx - mn) : 0.0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const float v = map[y * W + x];
            /* NaN and the minimum -> 0; +Inf and the maximum -> 255 */
            const uint8_t g = !(v > mn) ? 0 : !(v < mx) ? 255 : (uint8_t)(((double)v - mn) * k + 0.5);
            for (int dy = 0; dy < scale; dy++)
                memset(tile + (size_t)(y * scale + dy) * stride + (size_t)x * scale, g,
                       (size_t)scale);
        }
}

typedef struct png_sink {
    FILE *f;
    int failed; /* errno of the first failed write, or 0 */
} png_sink;

static void write_bytes(void *context, void *data, int size)
{
    png_sink *s = context;
    errno = 0;
    if (!s->failed && fwrite(data, 1, (size_t)size, s->f) != (size_t)size)
        s->failed = errno ? errno : EIO;
}

/* Writes pix (height, width, comp) to path as PNG (quality 0) or JPEG. */
static cnn_status encode(const char *path, const unsigned char *pix, int width, int height,
                         int comp, int quality, cnn_error *err)
{
    const char *kind = quality ? "JPEG" : "PNG";
    if (width < 1 || height < 1 || (comp != 1 && comp != 3) || quality < 0 || quality > 100)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: cannot write a %dx%d %s of %d channels", path,
                             width, height, kind, comp);
    png_sink sink = {fopen(path, "wb"), 0};
    if (!sink.f)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write %s: %s", path, kind,
                             strerror(errno));
    int ok = quality ? stbi_write_jpg_to_func(write_bytes, &sink, width, height, comp, pix, quality)
                     : stbi_write_png_to_func(write_bytes, &sink, width, height, comp, pix,
                                              width * comp);
    if (fclose(sink.f) != 0 && !sink.failed) /* a full disk may show only here */
        sink.failed = errno ? errno : EIO;
    if (!ok)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: %s encoder failed (out of memory)", path,
                             kind);
    if (sink.failed)
        return cnn_error_set(err, CNN_ERR_IO, "%s: cannot write %s: %s", path, kind,
                             strerror(sink.failed));
    return CNN_OK;
}

cnn_status cnn_png_write(const char *path, const unsigned char *pix, int width, int height,
                         int comp, cnn_error *err)
{
    return encode(path, pix, width, height, comp, 0, err);
}

cnn_status cnn_jpeg_write(const char *path, const unsigned char *pix, int width, int height,
                          int comp, int quality, cnn_error *err)
{
    if (quality < 1)
        return cnn_error_set(err, CNN_ERR_ARG, "%s: JPEG quality %d (1 to 100)", path, quality);
    return encode(path, pix, width, height, comp, quality, err);
}

cnn_status cnn_png_write_grid(const char *path, const float *maps, int C, int H, int W,
                              int scale, cnn_error *err)
{
    if (C < 1 || H < 1 || W < 1 || scale < 1)
        return cnn_error_set(err, CNN_ERR_ARG,
                             "%s: cannot draw %d maps of %dx%d pixels at scale %d", path, C, H, W,
                             scale);
    int64_t width64, height64;
    grid_size64(C, H, W, scale, &width64, &height64);
    if (width64 > CNN_PNG_MAX_SIDE || height64 > CNN_PNG_MAX_SIDE)
        return cnn_error_set(err, CNN_ERR_ARG,
                             "%s: a grid of %d maps of %dx%d at scale %d would be %lldx%lld "
                             "pixels (at most %d a side)",
                             path, C, H, W, scale, (long long)width64, (long long)height64,
                             CNN_PNG_MAX_SIDE);
    const int width = (int)width64, height = (int)height64;
    int cols, rows;
    cnn_png_grid_shape(C, &cols, &rows);
    uint8_t *pix = malloc((size_t)width * height);
    if (!pix)
        return cnn_error_set(err, CNN_ERR_NOMEM, "%s: out of memory for a %dx%d image", path,
                             width, height);
    memset(pix, 255, (size_t)width * height); /* separators and empty tiles */
    const size_t plane = (size_t)H * W;
    for (int k = 0; k < C; k++) {
        const int ty = (k / cols) * (H * scale + 1), tx = (k % cols) * (W * scale + 1);
        draw_tile(maps + k * plane, H, W, scale, pix + (size_t)ty * width + tx, width);
    }

    cnn_status st = cnn_png_write(path, pix, width, height, 1, err);
    free(pix);
    return st;
}
