/*
 * mbm -- the Minimally Biased Multiplier for floating-point mantissas.
 *
 * Source: H. Saadat, H. Bokhari, S. Parameswaran, "Minimally Biased
 * Multipliers for Approximate Integer and Floating-Point Multiplication",
 * IEEE TCAD 37(11), 2763-2774, 2018. Mitchell's approximation with each
 * truncated operand's lowest kept bit set to 1 (which centres the truncation
 * error) and a constant error-correction term c added to the fraction sum,
 * chosen to make the mean error of the product close to zero. The rounding,
 * carry and corner-case behaviour follow ApproxTrain's MBM model (Gong et al.,
 * IEEE TCAD 2023), whose tables MBM_m.bin this reproduces.
 *
 * Formula at m bits: ta', tb' = the top m fraction bits with bit 0 forced to
 * 1; xa = ta'/2^m, xb = tb'/2^m; S = xa + xb.
 *     S <  1:  c = 2^-4 + 2^-6,  Q = 1 + S + c   (renormalised if >= 2)
 *     S >= 1:  c = 2^-5 + 2^-7,  Q = 2 (S + c)
 *              except when S - 1 + c >= 1: the correction is dropped, Q = 2 S
 * c is truncated to m fraction bits (it vanishes for m <= 3), and Q's
 * fraction below its leading bit is truncated to m bits.
 * At m = 7: mbm(1, 1) = 1.09375, mbm(1.5, 1.5) = 2.109375,
 * mbm(1.5, 1.75) = 2.609375.
 */
#include "approx_model.h"
#include "approx_fixed.h"

/* c in 128ths: 2^-4 + 2^-6 = 10/128 without carry, 2^-5 + 2^-7 = 5/128 with. */
#define MBM_CORRECTION_NO_CARRY_128THS 10u
#define MBM_CORRECTION_CARRY_128THS 5u

/* c = k/128 truncated to m fraction bits, in units of 2^-m. */
static uint64_t mbm_correction(unsigned k, unsigned m)
{
    return ((uint64_t)k << m) >> 7;
}

float mbm_mul(float a, float b, unsigned bits)
{
    unsigned m = approx_clamp_bits(bits, 1, 23);
    uint64_t one = (uint64_t)1 << m;
    uint64_t s = (uint64_t)(approx_truncated_fraction(a, m) | 1u)
                 + (approx_truncated_fraction(b, m) | 1u);
    uint64_t q;
    if (s < one) {
        q = one + s + mbm_correction(MBM_CORRECTION_NO_CARRY_128THS, m);
    } else {
        uint64_t corrected = s - one + mbm_correction(MBM_CORRECTION_CARRY_128THS, m);
        q = corrected >= one ? 2 * s : 2 * (one + corrected);
    }
    return approx_from_fixed(q, m, m);
}

const struct approx_model_info mbm_info = {
    .name = "mbm",
    .description = "Minimally Biased Multiplier (Saadat et al., TCAD 2018; ApproxTrain MBM tables)",
    .min_bits = 1,
    .max_bits = 23,
    .area_um2 = 0,
    .power_mw = 0,
    .delay_ns = 0,
};
