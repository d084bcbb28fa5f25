/* cnn/augment.h - random image augmentation, as Keras's ImageDataGenerator.
 *
 * The [augment] section of the config:
 *
 *     [augment]
 *     rotation_range = 10       ; degrees, angle uniform in [-r, r]
 *     width_shift_range = 0.1   ; < 1: fraction of the width; >= 1: pixels
 *     height_shift_range = 0.1  ; likewise, of the height
 *     shear_range = 5           ; degrees, uniform in [-s, s]
 *     zoom_range = 0.1          ; x and y scales each uniform in [1-z, 1+z]
 *     horizontal_flip = true    ; mirror left-right with probability 1/2
 *     vertical_flip = false     ; mirror top-bottom with probability 1/2
 *     fill_mode = nearest       ; nearest | constant: what lies outside
 *     cval = 0                  ; the value outside, fill_mode = constant only
 *     crop_padding = 4          ; random crop after zero-padding by this many
 *                               ; pixels (torchvision's RandomCrop(padding=4),
 *                               ; the CIFAR recipe): an integer shift in
 *                               ; [-4, 4] on each axis, zeros moving in
 *
 * An absent section (or one whose ranges are all 0 and flips off) means no
 * augmentation. Every random draw is a pure function of
 * (seed, CNN_STREAM_AUGMENT, epoch, sample index): a sample gets the same
 * transform whichever rank or batch position handles it, and a resumed run
 * draws what the uninterrupted one would have.
 *
 * Rotation, shift, shear and zoom are one affine map about the image centre
 * ((W-1)/2, (H-1)/2), composed in Keras's apply_affine_transform order
 * (rotation . shift . shear . zoom, mapping output pixels to input points),
 * and the image is resampled once with bilinear interpolation. Flips are
 * exact index reversals applied after it, as Keras applies them; the crop
 * shift comes last and moves whole pixels, so it is exact. Unlike
 * Keras, the centre is the true pixel centre (Keras uses H/2 + 0.5), so a
 * 90-degree turn of a square image or an integer shift moves whole pixels.
 */
#ifndef CNN_AUGMENT_H
#define CNN_AUGMENT_H

#include <stdint.h>

#include "cnn/config.h"
#include "cnn/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CNN_FILL_NEAREST = 0, CNN_FILL_CONSTANT } cnn_fill_mode;

/* The [augment] section, resolved. */
typedef struct cnn_augment_config {
    int enabled; /* 0: cnn_augment_image copies; the trainer may skip it */
    int horizontal_flip, vertical_flip;
    double rotation_range;     /* degrees */
    double width_shift_range;  /* < 1: fraction of W; >= 1: pixels */
    double height_shift_range; /* < 1: fraction of H; >= 1: pixels */
    double shear_range;        /* degrees */
    double zoom_range;         /* scales in [1 - z, 1 + z] */
    cnn_fill_mode fill_mode;
    float cval;
    long crop_padding;         /* pixels: random crop after zero-padding */
} cnn_augment_config;

/* Reads [augment] (absent: a disabled config). Malformed or out-of-range
 * values give CNN_ERR_CONFIG with "FILE:LINE: [augment] key: ...". cval is
 * read only with fill_mode = constant, so it is an unknown key otherwise. */
cnn_status cnn_augment_config_read(cnn_augment_config *a, const cnn_config *cfg, cnn_error *err);

/* One sample's transform. The map from an output pixel o = (x, y) (x to
 * the right, y down, relative to the centre c) to the input point it
 * samples is
 *     input = c + R(theta) * (Sh(shear) * Z(zx, zy) * (o - c) - (tx, ty))
 * so that, in what one sees:
 *   theta > 0 turns the content counter-clockwise (as Keras),
 *   tx, ty > 0 move the content right and down by tx, ty pixels (zoom
 *     and shear then scale that move as they scale the content),
 *   zx, zy < 1 enlarge the content 1/zx times (Keras's zoom convention:
 *     zoom_range draws the sampling scale, 1 = unchanged),
 *   shear slants it (Keras's shear matrix [[1, -sin s], [0, cos s]]). */
typedef struct cnn_augment_params {
    float theta;  /* degrees */
    float tx, ty; /* pixels */
    float shear;  /* degrees */
    float zx, zy; /* 1 = no zoom */
    int hflip, vflip;
    int crop_x, crop_y; /* the crop's shift: content moves right/down, zeros move in */
} cnn_augment_params;

/* The parameters sample sample_index gets in epoch epoch, for an image of
 * H x W pixels (shift fractions are scaled by them). Draws that a zero
 * range or an off flag make moot still keep their place, so changing one
 * setting does not change the others' draws. */
void cnn_augment_draw(const cnn_augment_config *a, uint64_t seed, uint64_t epoch,
                      int64_t sample_index, int H, int W, cnn_augment_params *p);

/* out (C, H, W) = in (C, H, W) transformed by p. in and out must not
 * overlap. Points outside the input take the nearest edge pixel
 * (CNN_FILL_NEAREST) or cval (CNN_FILL_CONSTANT, per bilinear tap, so an
 * edge blends into cval over one pixel). The identity copies in exactly;
 * sampling points within 1e-4 pixel of a pixel centre read that pixel, so
 * turns by multiples of 90 degrees and integer shifts are exact too. */
void cnn_augment_apply_params(const cnn_augment_params *p, cnn_fill_mode fill, float cval,
                              const float *in, float *out, int C, int H, int W);

/* img (C, H, W) shifted in place by whole pixels: content moves dx right
 * and dy down, zeros fill what it leaves (zero-padding then a crop). */
void cnn_augment_crop_shift(float *img, int C, int H, int W, int dx, int dy);

/* cnn_augment_draw + cnn_augment_apply_params with a's fill, then the
 * crop shift: one CHW float
 * image (already rescaled) of sample sample_index in epoch epoch. A
 * disabled config copies in to out. */
void cnn_augment_image(const cnn_augment_config *a, uint64_t seed, uint64_t epoch,
                       int64_t sample_index, const float *in, float *out, int C, int H, int W);

#ifdef __cplusplus
}
#endif
#endif /* CNN_AUGMENT_H */
