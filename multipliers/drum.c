/*
 * drum -- DRUM, the Dynamic Range Unbiased Multiplier, on mantissas.
 *
 * Source: S. Hashemi, R. I. Bahar, S. Reda, "DRUM: A Dynamic Range Unbiased
 * Multiplier for Approximate Applications", ICCAD 2015. DRUM-k keeps the k
 * bits of each operand starting at its leading one, sets the lowest kept bit
 * to 1 (so that the truncation error is unbiased on average), multiplies the
 * k-bit values exactly and shifts the product back. An operand with no more
 * than k significant bits is used as it is.
 *
 * Adaptation to FP32 mantissas: the leading one of a significand 1.f is
 * always its top bit, so DRUM-k keeps k - 1 fraction bits. At m bits we use
 *     kf = max(2, ceil(m / 2)) kept fraction bits (k = kf + 1),
 * which halves the width of the partial-product array as DRUM-6 does for
 * 12-bit operands. With t the top m fraction bits of an operand:
 *     m <= kf:  d = t                            (point m, used exactly)
 *     m >  kf:  d = (t >> (m - kf)) | 1           (point kf)
 *     P = (1 + da/2^p) * (1 + db/2^p)             (exact, p = min(m, kf))
 * and P's fraction below its leading bit is truncated to m bits.
 */
#include "approx_model.h"
#include "approx_fixed.h"

float drum_mul(float a, float b, unsigned bits)
{
    unsigned m = approx_clamp_bits(bits, 1, 23);
    unsigned kf = (m + 1) / 2 < 2 ? 2 : (m + 1) / 2;
    unsigned p = kf < m ? kf : m;
    uint64_t da = approx_truncated_fraction(a, m);
    uint64_t db = approx_truncated_fraction(b, m);
    if (m > kf) {
        da = (da >> (m - kf)) | 1u;
        db = (db >> (m - kf)) | 1u;
    }
    return approx_from_fixed((((uint64_t)1 << p) + da) * (((uint64_t)1 << p) + db), 2 * p, m);
}

const struct approx_model_info drum_info = {
    .name = "drum",
    .description = "DRUM unbiased truncating multiplier, ceil(m/2) kept bits (Hashemi et al., ICCAD 2015)",
    .min_bits = 1,
    .max_bits = 23,
    .area_um2 = 0,
    .power_mw = 0,
    .delay_ns = 0,
};
