/* cnn/imageio.h - images written as PNG or JPEG files, feature maps as PNG.
 *
 * cnn_png_write() writes a buffer of pixels. A stack of C maps of H x W floats (CHW, e.g. one image's channels or a
 * conv layer's activations) becomes one grayscale PNG: a grid of tiles,
 * cols = ceil(sqrt(C)) per row, rows = ceil(C / cols), map k at row
 * k / cols, column k % cols, tiles 1 pixel apart on a white (255)
 * background. Each tile is scaled to its own min..max -> 0..255 (as
 * matplotlib's imshow does per subplot); a constant map is black, NaN is
 * black, +-Inf is ignored for the range and drawn as the nearest end.
 * Each map pixel becomes a scale x scale block. The PNG is therefore
 *     width  = cols * W * scale + (cols - 1)
 *     height = rows * H * scale + (rows - 1)
 * pixels, which cnn_png_grid_size() computes.
 */
#ifndef CNN_IMAGEIO_H
#define CNN_IMAGEIO_H

#include "cnn/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes pix (height, width, comp) 8-bit samples, comp 1 (gray) or 3
 * (RGB), rows top to bottom, to path as a PNG. CNN_ERR_IO names path and
 * the reason when it cannot be written. */
cnn_status cnn_png_write(const char *path, const unsigned char *pix, int width, int height,
                         int comp, cnn_error *err);

/* The same as a JPEG of quality 1 to 100 (stb_image_write's baseline
 * encoder; 90 looks like the source). */
cnn_status cnn_jpeg_write(const char *path, const unsigned char *pix, int width, int height,
                          int comp, int quality, cnn_error *err);

/* Largest width or height of a grid PNG. */
enum { CNN_PNG_MAX_SIDE = 32768 };

/* Grid columns and rows for C maps (0 and 0 if C < 1). */
void cnn_png_grid_shape(int C, int *cols, int *rows);

/* Pixel size of the PNG cnn_png_write_grid writes for these arguments. */
void cnn_png_grid_size(int C, int H, int W, int scale, int *width, int *height);

/* Writes maps (C, H, W) to path as the grid described above. Fails with
 * CNN_ERR_ARG for C, H, W or scale < 1 or a side over CNN_PNG_MAX_SIDE,
 * CNN_ERR_NOMEM, or CNN_ERR_IO naming path when it cannot be written. */
cnn_status cnn_png_write_grid(const char *path, const float *maps, int C, int H, int W,
                              int scale, cnn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* CNN_IMAGEIO_H */
