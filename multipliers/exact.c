/*
 * exact -- the exact product of the truncated operands.
 *
 * Formula: with ta, tb the top m fraction bits of a and b,
 *     exact(a, b, m) = (1 + ta/2^m) * (1 + tb/2^m), rounded to FP32
 * (round to nearest even). The product of two (m+1)-bit significands has at
 * most 2m+2 bits, so it is exact for m <= 11; above that the single IEEE
 * rounding is the only error. This is the reference against which the
 * approximate models are measured: it isolates the cost of the operand
 * truncation that every AMSim table applies (DESIGN.md, "The arithmetic").
 */
#include "approx_model.h"
#include "approx_fixed.h"

float exact_mul(float a, float b, unsigned bits)
{
    unsigned m = approx_clamp_bits(bits, 1, 23);
    float at = 1.0f + (float)approx_truncated_fraction(a, m) / (float)(1u << m);
    float bt = 1.0f + (float)approx_truncated_fraction(b, m) / (float)(1u << m);
    return at * bt;
}

const struct approx_model_info exact_info = {
    .name = "exact",
    .description = "exact product of the truncated operands, rounded to FP32",
    .min_bits = 1,
    .max_bits = 23,
    .area_um2 = 0,
    .power_mw = 0,
    .delay_ns = 0,
};
