/*
 * kern_tiles.h - the tile driver shared by the SIMD kernel tables
 * (kern_avx2.c, kern_avx512.c). Each table defines its tiles
 * TILE(NW, NX, n, w, ws, x, xs, y, ys, pf) for NW weight rows x NX
 * activation rows (NW, NX <= 4) and passes its target attribute as ATTR.
 *
 * A dot function covers nw x nx with tiles: groups of 4 activation rows
 * take NWB x 4 tiles (then 1 x 4 for leftover weight rows); leftover
 * activation rows take 4 x 1 tiles (then 1 x 1). Loops run activation groups
 * outermost so a group stays in L1 while the weight rows stream past it; the
 * first group (and decode) prefetches the next tile's weights. Every shape
 * keeps each (weight row, activation row) sum in the same order, so a row's
 * result does not depend on the batch (batch invariance).
 */
#ifndef CEL_ENGINE_CPU_KERN_TILES_H
#define CEL_ENGINE_CPU_KERN_TILES_H

/* One non-inlined function per tile shape keeps each function small (the
 * compilers' sanitizer builds grow superlinearly with function size). */
#define CEL__TILE_SHAPE(ATTR, TILE, NW, NX)                                                                        \
    ATTR __attribute__((noinline)) static void TILE##_##NW##x##NX(int64_t n, const uint8_t *w, size_t ws,          \
                                                                const uint8_t *x, size_t xs, float *y, size_t ys,  \
                                                                const uint8_t *pf)                                 \
    {                                                                                                              \
        TILE(NW, NX, n, w, ws, x, xs, y, ys, pf);                                                                  \
    }
#define CEL__TILE_SHAPES(ATTR, TILE)                                                                               \
    CEL__TILE_SHAPE(ATTR, TILE, 1, 4)                                                                              \
    CEL__TILE_SHAPE(ATTR, TILE, 4, 1)                                                                              \
    CEL__TILE_SHAPE(ATTR, TILE, 1, 1)

#define CEL__DOT_FN(ATTR, LINK, NAME, TILE, NWB)                                                                   \
    ATTR LINK void NAME(int64_t n, const void *wp, size_t ws, int nw, const void *xp, size_t xs, int nx, float *y, \
                        size_t ys)                                                                                 \
    {                                                                                                              \
        const uint8_t *w = wp, *x = xp;                                                                            \
        int r = 0;                                                                                                 \
        for (; r + 4 <= nx; r += 4) {                                                                              \
            int o = 0;                                                                                             \
            for (; o + NWB <= nw; o += NWB) {                                                                      \
                /* the first group pulls the weights from memory: prefetch */                                      \
                const uint8_t *pf = (r == 0 && o + 2 * NWB <= nw) ? w + (size_t)(o + NWB) * ws : NULL;              \
                TILE##_##NWB##x4(n, w + (size_t)o * ws, ws, x + (size_t)r * xs, xs, y + (size_t)r * ys + o, ys, pf); \
            }                                                                                                      \
            for (; o < nw; o++)                                                                                    \
                TILE##_1x4(n, w + (size_t)o * ws, ws, x + (size_t)r * xs, xs, y + (size_t)r * ys + o, ys, NULL);   \
        }                                                                                                          \
        for (; r < nx; r++) {                                                                                      \
            int o = 0;                                                                                             \
            for (; o + 4 <= nw; o += 4) {                                                                          \
                const uint8_t *pf = (nx < 4 && o + 8 <= nw) ? w + (size_t)(o + 4) * ws : NULL;                     \
                TILE##_4x1(n, w + (size_t)o * ws, ws, x + (size_t)r * xs, xs, y + (size_t)r * ys + o, ys, pf);     \
            }                                                                                                      \
            for (; o < nw; o++)                                                                                    \
                TILE##_1x1(n, w + (size_t)o * ws, ws, x + (size_t)r * xs, xs, y + (size_t)r * ys + o, ys, NULL);   \
        }                                                                                                          \
    }

#endif
