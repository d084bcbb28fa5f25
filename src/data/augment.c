/* augment.c - Keras-style random affine augmentation (see cnn/augment.h).
 *
 * One affine map from output pixel to input point, one bilinear resample;
 * flips fold into the output index. Every draw is hash(seed, AUGMENT|epoch,
 * sample, k) with a fixed k per parameter.
 */
#include <math.h>
#include <string.h>

#include "cnn/augment.h"
#include "cnn/rng.h"

cnn_status cnn_augment_config_read(cnn_augment_config *a, const cnn_config *cfg, cnn_error *err)
{
    static const char *const fills[] = {"nearest", "constant", NULL};
    const cnn_section *s = cnn_config_find(cfg, "augment");
    int fill;
    double cval = 0;
    cnn_status st;
    memset(a, 0, sizeof *a);
    if ((st = cnn_cfg_bool(s, "horizontal_flip", 0, &a->horizontal_flip, err)) ||
        (st = cnn_cfg_bool(s, "vertical_flip", 0, &a->vertical_flip, err)) ||
        (st = cnn_cfg_float(s, "rotation_range", 0, 0, 360, &a->rotation_range, err)) ||
        (st = cnn_cfg_float(s, "width_shift_range", 0, 0, 1 << 20, &a->width_shift_range, err)) ||
        (st = cnn_cfg_float(s, "height_shift_range", 0, 0, 1 << 20, &a->height_shift_range,
                            err)) ||
        /* shear 90 degrees would collapse the image onto a line */
        (st = cnn_cfg_float(s, "shear_range", 0, 0, 89, &a->shear_range, err)) ||
        /* a scale of 1 - z must stay positive */
        (st = cnn_cfg_float(s, "zoom_range", 0, 0, 0.99, &a->zoom_range, err)) ||
        (st = cnn_cfg_enum(s, "fill_mode", CNN_FILL_NEAREST, fills, &fill, err)) ||
        (st = cnn_cfg_int(s, "crop_padding", 0, 0, 1 << 16, &a->crop_padding, err)))
        return st;
    a->fill_mode = (cnn_fill_mode)fill;
    if (a->fill_mode == CNN_FILL_CONSTANT &&
        (st = cnn_cfg_float(s, "cval", 0, -HUGE_VAL, HUGE_VAL, &cval, err)))
        return st;
    a->cval = (float)cval;
    a->enabled = a->horizontal_flip || a->vertical_flip || a->rotation_range > 0 ||
                 a->width_shift_range > 0 || a->height_shift_range > 0 || a->shear_range > 0 ||
                 a->zoom_range > 0 || a->crop_padding > 0;
    return CNN_OK;
}

/* Draw numbers: fixed, so that one parameter's draw never depends on
 * another's setting. */
enum { D_THETA, D_TX, D_TY, D_SHEAR, D_ZX, D_ZY, D_HFLIP, D_VFLIP, D_CROPX, D_CROPY };

/* Uniform integer in [-r, r]. */
static int draw_offset(uint64_t seed, uint64_t stream, int64_t sample, int k, long r)
{
    int v = (int)floor(cnn_rng_uniform(cnn_rng_hash(seed, stream, (uint64_t)sample, (uint64_t)k)) *
                       (double)(2 * r + 1));
    return (v > 2 * r ? (int)(2 * r) : v) - (int)r;
}

static float draw_uniform(uint64_t seed, uint64_t stream, int64_t sample, int k)
{
    return cnn_rng_uniform(cnn_rng_hash(seed, stream, (uint64_t)sample, (uint64_t)k));
}

/* Uniform in [-r, r]. */
static float draw_symmetric(uint64_t seed, uint64_t stream, int64_t sample, int k, double r)
{
    return (float)(r * (2.0 * draw_uniform(seed, stream, sample, k) - 1.0));
}

void cnn_augment_draw(const cnn_augment_config *a, uint64_t seed, uint64_t epoch,
                      int64_t sample_index, int H, int W, cnn_augment_params *p)
{
    const uint64_t stream = CNN_STREAM_AUGMENT | (epoch << 8);
    /* Keras: a shift range below 1 is a fraction of the size, else pixels */
    double wr = a->width_shift_range < 1 ? a->width_shift_range * W : a->width_shift_range;
    double hr = a->height_shift_range < 1 ? a->height_shift_range * H : a->height_shift_range;
    p->theta = draw_symmetric(seed, stream, sample_index, D_THETA, a->rotation_range);
    p->tx = draw_symmetric(seed, stream, sample_index, D_TX, wr);
    p->ty = draw_symmetric(seed, stream, sample_index, D_TY, hr);
    p->shear = draw_symmetric(seed, stream, sample_index, D_SHEAR, a->shear_range);
    p->zx = 1.0f + draw_symmetric(seed, stream, sample_index, D_ZX, a->zoom_range);
    p->zy = 1.0f + draw_symmetric(seed, stream, sample_index, D_ZY, a->zoom_range);
    p->hflip = a->horizontal_flip && draw_uniform(seed, stream, sample_index, D_HFLIP) < 0.5f;
    p->vflip = a->vertical_flip && draw_uniform(seed, stream, sample_index, D_VFLIP) < 0.5f;
    p->crop_x = a->crop_padding ? draw_offset(seed, stream, sample_index, D_CROPX, a->crop_padding) : 0;
    p->crop_y = a->crop_padding ? draw_offset(seed, stream, sample_index, D_CROPY, a->crop_padding) : 0;
}

void cnn_augment_crop_shift(float *img, int C, int H, int W, int dx, int dy)
{
    if (dx == 0 && dy == 0)
        return;
    const size_t plane = (size_t)H * W;
    for (int c = 0; c < C; c++) {
        float *pl = img + c * plane;
        /* rows in the order that reads each source row before it is written */
        for (int k = 0; k < H; k++) {
            const int y = dy > 0 ? H - 1 - k : k, sy = y - dy;
            float *dst = pl + (size_t)y * W;
            if (sy < 0 || sy >= H || dx >= W || -dx >= W) {
                memset(dst, 0, (size_t)W * sizeof *dst);
                continue;
            }
            const float *src = pl + (size_t)sy * W;
            if (dx >= 0) {
                memmove(dst + dx, src, (size_t)(W - dx) * sizeof *dst);
                memset(dst, 0, (size_t)dx * sizeof *dst);
            } else {
                memmove(dst, src - dx, (size_t)(W + dx) * sizeof *dst);
                memset(dst + W + dx, 0, (size_t)(-dx) * sizeof *dst);
            }
        }
    }
}

/* A coordinate within this distance of a pixel centre reads that pixel:
 * cos(90 deg) is 6e-17, not 0, in floating point. */
#define SNAP 1e-4

static double snap(double v)
{
    double r = nearbyint(v);
    return fabs(v - r) < SNAP ? r : v;
}

/* One bilinear tap along an axis of length n: index i, or what lies there. */
static int tap_inside(int i, int n, cnn_fill_mode fill, int *clamped)
{
    if (i >= 0 && i < n) {
        *clamped = i;
        return 1;
    }
    *clamped = i < 0 ? 0 : n - 1;
    return fill == CNN_FILL_NEAREST;
}

void cnn_augment_apply_params(const cnn_augment_params *p, cnn_fill_mode fill, float cval,
                              const float *in, float *out, int C, int H, int W)
{
    const size_t plane = (size_t)H * W;
    if (p->theta == 0 && p->tx == 0 && p->ty == 0 && p->shear == 0 && p->zx == 1 &&
        p->zy == 1) {
        /* no resampling: copy, reversing indices for flips */
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++) {
                const float *src = in + c * plane + (size_t)(p->vflip ? H - 1 - y : y) * W;
                float *dst = out + c * plane + (size_t)y * W;
                for (int x = 0; x < W; x++)
                    dst[x] = src[p->hflip ? W - 1 - x : x];
            }
        return;
    }
    /* input = c + M (o - c) - R t, with M = R * Sh * Z (cnn/augment.h) */
    const double th = p->theta * (M_PI / 180.0), sh = p->shear * (M_PI / 180.0);
    const double cr = cos(th), sr = sin(th);
    const double m00 = cr * p->zx, m01 = (-cr * sin(sh) - sr * cos(sh)) * p->zy;
    const double m10 = sr * p->zx, m11 = (-sr * sin(sh) + cr * cos(sh)) * p->zy;
    const double cx = 0.5 * (W - 1), cy = 0.5 * (H - 1);
    const double bx = cx - m00 * cx - m01 * cy - (cr * p->tx - sr * p->ty);
    const double by = cy - m10 * cx - m11 * cy - (sr * p->tx + cr * p->ty);
    for (int y = 0; y < H; y++) {
        const double oy = p->vflip ? H - 1 - y : y; /* flips come after the map */
        for (int x = 0; x < W; x++) {
            const double ox = p->hflip ? W - 1 - x : x;
            const double ix = snap(m00 * ox + m01 * oy + bx), iy = snap(m10 * ox + m11 * oy + by);
            const double fx0 = floor(ix), fy0 = floor(iy);
            const float wx = (float)(ix - fx0), wy = (float)(iy - fy0);
            /* taps far outside: clamp the double before converting to int */
            const int x0 = (int)fmax(-2.0, fmin(fx0, (double)W)),
                      y0 = (int)fmax(-2.0, fmin(fy0, (double)H));
            int xa, xb, ya, yb;
            const int inx0 = tap_inside(x0, W, fill, &xa), inx1 = tap_inside(x0 + 1, W, fill, &xb);
            const int iny0 = tap_inside(y0, H, fill, &ya), iny1 = tap_inside(y0 + 1, H, fill, &yb);
            const float w00 = (1 - wx) * (1 - wy), w01 = wx * (1 - wy);
            const float w10 = (1 - wx) * wy, w11 = wx * wy;
            for (int c = 0; c < C; c++) {
                const float *img = in + c * plane;
                const float v00 = inx0 && iny0 ? img[ya * W + xa] : cval;
                const float v01 = inx1 && iny0 ? img[ya * W + xb] : cval;
                const float v10 = inx0 && iny1 ? img[yb * W + xa] : cval;
                const float v11 = inx1 && iny1 ? img[yb * W + xb] : cval;
                out[c * plane + (size_t)y * W + x] = w00 * v00 + w01 * v01 + w10 * v10 + w11 * v11;
            }
        }
    }
}

void cnn_augment_image(const cnn_augment_config *a, uint64_t seed, uint64_t epoch,
                       int64_t sample_index, const float *in, float *out, int C, int H, int W)
{
    if (!a->enabled) {
        memcpy(out, in, (size_t)C * H * W * sizeof *out);
        return;
    }
    cnn_augment_params p;
    cnn_augment_draw(a, seed, epoch, sample_index, H, W, &p);
    cnn_augment_apply_params(&p, a->fill_mode, a->cval, in, out, C, H, W);
    cnn_augment_crop_shift(out, C, H, W, p.crop_x, p.crop_y);
}
