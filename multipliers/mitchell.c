/*
 * mitchell -- Mitchell's logarithmic multiplier applied to the mantissas.
 *
 * Source: J. N. Mitchell, "Computer Multiplication and Division Using Binary
 * Logarithms", IRE Transactions on Electronic Computers EC-11(4), 512-517,
 * 1962. log2(1 + x) is approximated by x, so the mantissa product becomes a
 * sum of fractions, and the antilogarithm 2^y by 1 + y on each octave.
 * The truncation and carry handling follow ApproxTrain's Mitchell model
 * (Gong et al., IEEE TCAD 2023), whose tables MIT_m.bin this reproduces.
 *
 * Formula at m bits: xa = ta/2^m, xb = tb/2^m (truncated fractions),
 *     S = xa + xb
 *     Q = 1 + S      if S < 1
 *     Q = 2 S        if S >= 1   (the carry into the exponent)
 * Q's fraction below its leading bit is truncated to m bits (a no-op here:
 * S already lies on the 2^-m grid).
 */
#include "approx_model.h"
#include "approx_fixed.h"

float mitchell_mul(float a, float b, unsigned bits)
{
    unsigned m = approx_clamp_bits(bits, 1, 23);
    uint64_t one = (uint64_t)1 << m;
    uint64_t s = (uint64_t)approx_truncated_fraction(a, m) + approx_truncated_fraction(b, m);
    uint64_t q = s < one ? one + s : 2 * s;
    return approx_from_fixed(q, m, m);
}

const struct approx_model_info mitchell_info = {
    .name = "mitchell",
    .description = "Mitchell logarithmic multiplier (Mitchell 1962; ApproxTrain MIT tables)",
    .min_bits = 1,
    .max_bits = 23,
    .area_um2 = 0,
    .power_mw = 0,
    .delay_ns = 0,
};
