/*
 * augment.c - one augmented, normalised copy of an image (see data.h).
 *
 * Shape legend: C channels, H height, W width; images are planar [C, H, W].
 *
 * Steps, in this order: one affine warp (flip, rotation, zoom, shift about
 * the image centre) done by mapping each output pixel back into the source
 * and sampling bilinearly, zero (black) outside; colour jitter for RGB
 * (brightness, contrast, saturation) in [0, 1] space; normalisation
 * (x/255 - mean[c]) / std[c]. Every random number comes from one generator
 * seeded by `seed`, drawn in a fixed order, so the result is a pure function
 * of its arguments whatever thread runs it.
 * Not here: crops with resize, blur, cutout (later, if a method needs them).
 */
#include "ecl/data.h"

#include "ecl/rng.h"

#include <math.h>
#include <stddef.h>

/* Luma weights (ITU-R BT.601) for contrast and saturation. */
#define AUG_LUMA_R 0.299f
#define AUG_LUMA_G 0.587f
#define AUG_LUMA_B 0.114f
#define AUG_PI 3.14159265358979323846

/* The random choices of one augmentation. */
typedef struct {
    float cos_a, sin_a;                 /* rotation */
    float zoom;                         /* > 1 enlarges the content */
    float tx, ty;                       /* shift, pixels */
    int flip;                           /* mirror left-right first */
    float bright, contrast, satur;      /* jitter factors, 1 = unchanged */
} aug_draw;

/* Uniform in [-amp, amp]. */
static float aug_sym(rng_state *r, float amp)
{
    return amp * (2.0f * rng_uniform(r) - 1.0f);
}

/* Draws every parameter, always all of them, so that the stream position of
 * one parameter does not depend on whether another is enabled. */
static aug_draw aug_sample(const augment_params *p, uint64_t seed)
{
    rng_state r = rng_seeded(seed);
    aug_draw d;
    float angle = aug_sym(&r, p->rotate_deg) * (float)(AUG_PI / 180.0);
    d.cos_a = cosf(angle);
    d.sin_a = sinf(angle);
    d.zoom = 1.0f + aug_sym(&r, p->scale);
    d.tx = aug_sym(&r, p->translate_px);
    d.ty = aug_sym(&r, p->translate_px);
    d.flip = rng_uniform(&r) < 0.5f && p->hflip;
    d.bright = 1.0f + aug_sym(&r, p->jitter);
    d.contrast = 1.0f + aug_sym(&r, p->jitter);
    d.satur = 1.0f + aug_sym(&r, p->jitter);
    return d;
}

static int aug_is_geometric(const augment_params *p)
{
    return p->translate_px != 0.0f || p->rotate_deg != 0.0f || p->scale != 0.0f ||
           p->hflip != 0;
}

/* One source pixel as a float, zero outside the image. */
static float aug_pixel(const uint8_t *plane, int h, int w, int x, int y)
{
    if (x < 0 || y < 0 || x >= w || y >= h)
        return 0.0f;
    return (float)plane[(ptrdiff_t)y * w + x];
}

/* Bilinear sample at (sx, sy); at integer points it returns the pixel exactly. */
static float aug_bilinear(const uint8_t *plane, int h, int w, float sx, float sy)
{
    float x0f = floorf(sx), y0f = floorf(sy);
    float fx = sx - x0f, fy = sy - y0f;
    int x0 = (int)x0f, y0 = (int)y0f;
    float top = (1.0f - fx) * aug_pixel(plane, h, w, x0, y0) +
                fx * aug_pixel(plane, h, w, x0 + 1, y0);
    float bottom = (1.0f - fx) * aug_pixel(plane, h, w, x0, y0 + 1) +
                   fx * aug_pixel(plane, h, w, x0 + 1, y0 + 1);
    return (1.0f - fy) * top + fy * bottom;
}

/* Warps src into dst (values in [0, 1]) by inverse-mapping each output pixel. */
static void aug_warp(const uint8_t *src, int c, int h, int w, const aug_draw *d,
                     float *dst)
{
    ptrdiff_t plane = (ptrdiff_t)h * w;
    float cx = 0.5f * (float)(w - 1), cy = 0.5f * (float)(h - 1);
    float inv_zoom = 1.0f / d->zoom;

    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            /* Undo shift, rotation and zoom about the centre, then the flip. */
            float dx = (float)x - cx - d->tx, dy = (float)y - cy - d->ty;
            float sx = (d->cos_a * dx + d->sin_a * dy) * inv_zoom + cx;
            float sy = (d->cos_a * dy - d->sin_a * dx) * inv_zoom + cy;
            if (d->flip)
                sx = (float)(w - 1) - sx;

            /* Points more than a pixel outside see only the zero border. */
            int outside = sx <= -1.0f || sy <= -1.0f || sx >= (float)w || sy >= (float)h;
            for (int ch = 0; ch < c; ch++) {
                float v = outside ? 0.0f : aug_bilinear(src + ch * plane, h, w, sx, sy);
                dst[ch * plane + (ptrdiff_t)y * w + x] = v / 255.0f;
            }
        }
    }
}

static float aug_clamp01(float v)
{
    return v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
}

/* Brightness, contrast, saturation on an RGB image in [0, 1], clamped after
 * each step so a later step never sees values a real image cannot hold. */
static void aug_jitter(float *img, ptrdiff_t plane, const aug_draw *d)
{
    float *r = img, *g = img + plane, *b = img + 2 * plane;

    /* Brightness scales every channel; the mean luma is taken after it. */
    double luma_sum = 0.0;
    for (ptrdiff_t j = 0; j < plane; j++) {
        r[j] = aug_clamp01(r[j] * d->bright);
        g[j] = aug_clamp01(g[j] * d->bright);
        b[j] = aug_clamp01(b[j] * d->bright);
        luma_sum += AUG_LUMA_R * r[j] + AUG_LUMA_G * g[j] + AUG_LUMA_B * b[j];
    }
    float mean = (float)(luma_sum / (double)plane);

    /* Contrast pulls towards the mean luma, saturation towards the pixel's own. */
    for (ptrdiff_t j = 0; j < plane; j++) {
        float rv = aug_clamp01((r[j] - mean) * d->contrast + mean);
        float gv = aug_clamp01((g[j] - mean) * d->contrast + mean);
        float bv = aug_clamp01((b[j] - mean) * d->contrast + mean);
        float luma = AUG_LUMA_R * rv + AUG_LUMA_G * gv + AUG_LUMA_B * bv;
        r[j] = aug_clamp01((rv - luma) * d->satur + luma);
        g[j] = aug_clamp01((gv - luma) * d->satur + luma);
        b[j] = aug_clamp01((bv - luma) * d->satur + luma);
    }
}

/* (x - mean[c]) / std[c] in place, x already in [0, 1]. */
static void aug_normalise(float *img, int c, ptrdiff_t plane, const float *mean,
                          const float *std)
{
    for (int ch = 0; ch < c; ch++) {
        float *p = img + ch * plane;
        for (ptrdiff_t j = 0; j < plane; j++)
            p[j] = (p[j] - mean[ch]) / std[ch];
    }
}

void augment_image(const uint8_t *src, int c, int h, int w, const augment_params *p,
                   const float *mean, const float *std, uint64_t seed, float *dst)
{
    ptrdiff_t plane = (ptrdiff_t)h * w;
    int geometric = p && aug_is_geometric(p);
    int jitter = p && p->jitter != 0.0f && c == 3;

    /* No warp: a straight copy to [0, 1], the same arithmetic as the warp's
     * at integer points, so identity parameters give identical bits. */
    aug_draw d = { 1.0f, 0.0f, 1.0f, 0.0f, 0.0f, 0, 1.0f, 1.0f, 1.0f };
    if (geometric || jitter)
        d = aug_sample(p, seed);
    if (geometric) {
        aug_warp(src, c, h, w, &d, dst);
    } else {
        for (ptrdiff_t j = 0; j < c * plane; j++)
            dst[j] = (float)src[j] / 255.0f;
    }

    /* Colour, then normalisation. */
    if (jitter)
        aug_jitter(dst, plane, &d);
    aug_normalise(dst, c, plane, mean, std);
}
