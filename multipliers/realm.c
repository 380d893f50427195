/*
 * realm -- REALM, Mitchell's multiplier with segment-wise error reduction.
 *
 * Source: H. Saadat, H. Javaid, A. Ignjatovic, S. Parameswaran, "REALM:
 * Reduced-Error Approximate Log-based Integer Multiplier", DATE 2020. The
 * square of fractions [0, 1) x [0, 1) of the two operands is partitioned
 * into M x M segments; each segment gets an error-reduction factor, found
 * analytically so that the mean error of the product over that segment is
 * zero, and the M^2 quantised factors sit in a small hard-wired table.
 *
 * This model: M = 8 segments per operand (indexed by the top 3 fraction
 * bits), the factor applied additively to Mitchell's product, as the same
 * group's MBM applies its single correction (mbm.c):
 *     S = xa + xb,  Qm = 1 + S if S < 1, else 2 S      (Mitchell, mitchell.c)
 *     Q = Qm + s[i][j]   (i, j the segments of xa, xb)
 * and when Q would reach 4 the factor is dropped (Q = Qm). The factor of a
 * segment cancels the mean relative error of the untruncated approximation
 * over it:
 *     s_ij = Int_seg (P - Qm)/P dxa dxb / Int_seg 1/P dxa dxb,
 *     P = (1 + xa)(1 + xb),
 * evaluated by the midpoint rule on a 400 x 400 grid per segment and rounded
 * to units of 2^-12 (the table below). At m bits the factor is truncated to
 * m fraction bits, like MBM's correction, and Q's fraction below its leading
 * bit is truncated to m bits.
 */
#include "approx_model.h"
#include "approx_fixed.h"

#define REALM_SEGMENT_BITS 3u
#define REALM_FACTOR_BITS 12u

/* s[i][j] in units of 2^-12; symmetric, largest where Mitchell is worst
 * (xa + xb close to 1). */
static const uint16_t realm_factors[8][8] = {
    {15, 47, 78, 110, 141, 172, 204, 154},
    {47, 142, 238, 333, 429, 524, 538, 211},
    {78, 238, 397, 557, 717, 794, 531, 178},
    {110, 333, 557, 781, 923, 723, 434, 146},
    {141, 429, 717, 923, 787, 562, 338, 113},
    {172, 524, 794, 723, 562, 402, 242, 81},
    {204, 538, 531, 434, 338, 242, 145, 49},
    {154, 211, 178, 146, 113, 81, 49, 16},
};

/* The segment of a fraction t at m bits: its top 3 bits. */
static unsigned realm_segment(uint32_t t, unsigned m)
{
    return m >= REALM_SEGMENT_BITS ? t >> (m - REALM_SEGMENT_BITS) : t << (REALM_SEGMENT_BITS - m);
}

float realm_mul(float a, float b, unsigned bits)
{
    unsigned m = approx_clamp_bits(bits, 1, 23);
    uint64_t one = (uint64_t)1 << m;
    uint32_t ta = approx_truncated_fraction(a, m);
    uint32_t tb = approx_truncated_fraction(b, m);
    uint64_t s = (uint64_t)ta + tb;
    uint64_t qm = s < one ? one + s : 2 * s;
    uint64_t factor = realm_factors[realm_segment(ta, m)][realm_segment(tb, m)];
    uint64_t q;
    factor = m >= REALM_FACTOR_BITS ? factor << (m - REALM_FACTOR_BITS)
                                    : factor >> (REALM_FACTOR_BITS - m);
    q = qm + factor;
    if (q >= 4 * one) {
        q = qm;
    }
    return approx_from_fixed(q, m, m);
}

const struct approx_model_info realm_info = {
    .name = "realm",
    .description = "REALM: Mitchell with 8x8 segment error-reduction factors (Saadat et al., DATE 2020)",
    .min_bits = 1,
    .max_bits = 23,
    .area_um2 = 0,
    .power_mw = 0,
    .delay_ns = 0,
};
