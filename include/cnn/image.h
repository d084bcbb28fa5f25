/* cnn/image.h - one image file into a channel-first uint8 array.
 *
 *     uint8_t x[3 * 224 * 224];
 *     if (cnn_image_load("cats/001.jpg", 3, 224, 224, x, &err) != CNN_OK)
 *         ... err.msg: "cats/001.jpg: cannot decode: Corrupt JPEG"
 *
 * Decoding is stb_image's (JPEG baseline and progressive, PNG including
 * 16-bit, BMP, GIF first frame, also TGA, PSD, PNM), in this module only.
 * Used by the image-folder store and by programs that classify single files.
 */
#ifndef CNN_IMAGE_H
#define CNN_IMAGE_H

#include <stdint.h>

#include "cnn/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Images with more pixels than this are refused rather than decoded (a
 * 12000 x 12000 photo would take 430 MB as RGB). */
#define CNN_IMAGE_MAX_PIXELS ((int64_t)1 << 27)
/* Nor a side longer than JPEG's 65,535: a 2,200,000 x 1 PBM from the fuzzer
 * took minutes to resize. */
#define CNN_IMAGE_MAX_SIDE 65535

/* Decodes the image file at path into out (c, h, w): c channels (1 =
 * grayscale; 3 = RGB; an alpha channel is dropped, a grayscale file is
 * replicated), resized to h x w when its size differs.
 *
 * JPEG files are decoded by libjpeg-turbo (integer IDCT, the same bits on
 * every machine); one channel is their luma Y = 0.299 R + 0.587 G +
 * 0.114 B. A JPEG at least twice h x w on both sides is shrunk in the IDCT
 * itself, by 1/d for the largest d of 8, 4 and 2 with width >= d w and
 * height >= d h (as PIL's Image.draft picks it), then resized: 224 x 224
 * to 64 x 64 decodes at 112 x 112. Damaged pixel data (truncated or
 * corrupt entropy data, libjpeg's warnings about it) and more than 500
 * progressive scans are errors; its other warnings (padding between
 * markers, an unknown JFIF revision) are not. CMYK JPEGs and the other
 * formats (PNG, BMP, GIF, PNM...) go to stb_image, whose one channel is
 * (77 R + 150 G + 29 B) >> 8.
 *
 * Resizing is bilinear: stb_image_resize's triangle filter on linear
 * (not sRGB-decoded) values, pixel centres aligned, the edge pixels
 * repeated beyond the border. Enlarging, this is exactly bilinear
 * interpolation; shrinking, the triangle widens with the scale factor, so
 * every source pixel contributes (no aliasing), as in PIL's
 * Image.resize(BILINEAR), which differs only at the borders. Keras's
 * flow_from_directory defaults to interpolation = "nearest", so resized
 * images differ slightly from a default Keras pipeline; images already of
 * size h x w are copied unchanged.
 *
 * Errors (out untouched): CNN_ERR_IO when the file cannot be opened,
 * CNN_ERR_FORMAT when it does not decode or is over CNN_IMAGE_MAX_PIXELS,
 * CNN_ERR_NOMEM; the message names path and the decoder's reason. */
cnn_status cnn_image_load(const char *path, int c, int h, int w, uint8_t *out, cnn_error *err);

/* The resizing of cnn_image_load on its own: in (ih, iw, c) -> out (h, w,
 * c), channel-last, 1 <= c <= 4. Any sizes of at least 1 x 1 work (the
 * pixel limit is the caller's); CNN_ERR_ARG for a side below 1,
 * CNN_ERR_NOMEM when its work buffers cannot be allocated. */
cnn_status cnn_image_resize(const uint8_t *in, int ih, int iw, int c, uint8_t *out, int h, int w,
                            cnn_error *err);

#ifdef __cplusplus
}
#endif
#endif /* CNN_IMAGE_H */
