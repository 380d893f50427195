/*
 * ilm -- the Improved Logarithmic Multiplier (nearest-one approximation).
 *
 * Source: M. S. Ansari, B. F. Cockburn, J. Han, "An Improved Logarithmic
 * Multiplier for Energy-Efficient Neural Computing", IEEE Transactions on
 * Computers 70(4), 614-625, 2021. Mitchell's multiplier writes an operand as
 * 2^k (1 + x) with 2^k its leading one, so x is in [0, 1) and the dropped
 * term x1 x2 always makes the product too small. ILM takes 2^k as the power
 * of two *nearest* to the operand (a nearest-one detector), so x is in
 * [-1/4, 1/2), the dropped term x1 x2 takes both signs, and the error is
 * smaller and less biased:
 *     A B ~ 2^(k1 + k2) (1 + x1 + x2).
 *
 * On a mantissa a = 1 + ta/2^m in [1, 2) (ta its top m fraction bits):
 *     a <  1.5:  k = 0, x = a - 1       in [0, 1/2)
 *     a >= 1.5:  k = 1, x = a/2 - 1     in [-1/4, 0)
 *     Q = 2^(ka + kb) (1 + xa + xb)     (always in [1, 4): 1 + xa + xb < 2)
 * x is exact at m + 1 fraction bits; Q's fraction below its leading bit is
 * truncated to m bits. This is the nearest-one approximation at the core of
 * ILM applied to mantissas; the integer-specific parts of the paper's
 * designs (operand widths, zero handling) have no counterpart here.
 */
#include "approx_model.h"
#include "approx_fixed.h"

/* x of a mantissa at point m + 1, and its nearest-one exponent k. */
static int64_t ilm_log_fraction(uint32_t t, unsigned m, unsigned *k)
{
    if (t >= (1u << (m - 1))) {
        *k = 1;
        return (int64_t)t - ((int64_t)1 << m);
    }
    *k = 0;
    return 2 * (int64_t)t;
}

float ilm_mul(float a, float b, unsigned bits)
{
    unsigned m = approx_clamp_bits(bits, 1, 23);
    unsigned ka, kb;
    int64_t xa = ilm_log_fraction(approx_truncated_fraction(a, m), m, &ka);
    int64_t xb = ilm_log_fraction(approx_truncated_fraction(b, m), m, &kb);
    int64_t q = (((int64_t)1 << (m + 1)) + xa + xb) << (ka + kb);
    return approx_from_fixed((uint64_t)q, m + 1, m);
}

const struct approx_model_info ilm_info = {
    .name = "ilm",
    .description = "Improved Logarithmic Multiplier, nearest-one based (Ansari et al., IEEE TC 2021)",
    .min_bits = 1,
    .max_bits = 23,
    .area_um2 = 0,
    .power_mw = 0,
    .delay_ns = 0,
};
