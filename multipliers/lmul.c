/*
 * lmul -- L-Mul, linear-complexity multiplication by addition.
 *
 * Source: H. Luo, W. Sun, "Addition is All You Need for Energy-efficient
 * Language Models", arXiv:2410.00907, 2024. L-Mul replaces the mantissa
 * product by a sum plus a constant offset,
 *     (1 + xa)(1 + xb) ~ 1 + xa + xb + 2^-l(m),
 *     l(m) = m if m <= 3, 3 if m = 4, 4 if m > 4,
 * which drops the xa xb term and adds back a constant for its mean.
 *
 * The carry is handled as in Mitchell's multiplier, i.e. as the integer
 * addition of the fraction fields that realises L-Mul in hardware: with
 * xa = ta/2^m, xb = tb/2^m the truncated fractions and F = xa + xb + 2^-l(m),
 *     Q = 1 + F   if F < 1
 *     Q = 2 F     if F >= 1   (the carry into the exponent)
 * except that when F >= 2 (both fractions close to 1 and a large offset,
 * m >= 4) the offset is dropped, F = xa + xb, so that Q stays below 4, as
 * MBM does with its correction. Q is on the 2^-m grid (l(m) <= m), so the
 * final truncation to m bits is exact.
 */
#include "approx_model.h"
#include "approx_fixed.h"

/* The offset exponent l(m) of the paper. */
static unsigned lmul_offset_exponent(unsigned m)
{
    return m <= 3 ? m : (m == 4 ? 3 : 4);
}

float lmul_mul(float a, float b, unsigned bits)
{
    unsigned m = approx_clamp_bits(bits, 1, 23);
    uint64_t one = (uint64_t)1 << m;
    uint64_t s = (uint64_t)approx_truncated_fraction(a, m) + approx_truncated_fraction(b, m);
    uint64_t f = s + ((uint64_t)1 << (m - lmul_offset_exponent(m)));
    uint64_t q;
    if (f >= 2 * one) {
        f = s;
    }
    q = f < one ? one + f : 2 * f;
    return approx_from_fixed(q, m, m);
}

const struct approx_model_info lmul_info = {
    .name = "lmul",
    .description = "L-Mul: fraction sum plus 2^-l(m) offset (Luo and Sun, arXiv 2024)",
    .min_bits = 1,
    .max_bits = 23,
    .area_um2 = 0,
    .power_mw = 0,
    .delay_ns = 0,
};
