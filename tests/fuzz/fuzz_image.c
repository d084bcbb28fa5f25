/* fuzz_image.c - an image file decoded and resized (cnn_image_load):
 * PNG, JPEG, BMP, GIF, PNM, TGA, PSD through stb_image, then
 * stb_image_resize.
 *
 * Input: flags (1 byte), the file (the rest). flags bit 0: 3 channels
 * (else 1); bits 1-3: the target size, from the table below (28 x 28, the
 * Fashion-MNIST size, twice as often). */
#include "cnn/image.h"

#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int sizes[8][2] = {{28, 28}, {32, 32}, {1, 1},   {5, 17},
                                    {64, 48}, {28, 28}, {3, 100}, {100, 3}};
    if (size < 1)
        return 0;
    int flags = data[0];
    int c = flags & 1 ? 3 : 1, h = sizes[(flags >> 1) & 7][0], w = sizes[(flags >> 1) & 7][1];
    char path[512];
    fuzz_write(path, sizeof path, "image", data + 1, size - 1);
    uint8_t out[3 * 100 * 100];
    cnn_error err = {0};
    cnn_image_load(path, c, h, w, out, &err);
    return 0;
}
