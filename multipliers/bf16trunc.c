/*
 * bf16trunc -- ApproxTrain's bfloat16 multiplier model.
 *
 * Source: J. Gong, H. Saadat, H. Gamaarachchi, H. Javaid, X. S. Hu,
 * S. Parameswaran, "ApproxTrain: Fast Simulation of Approximate Multipliers
 * for DNN Training and Inference", IEEE TCAD 42(11), 2023; its bfloat16
 * model (the table it ships as ACC_7.bin) masks both FP32 operands to their
 * top 16 bits, multiplies, and masks the product to its top 16 bits.
 *
 * Formula: a bfloat16 significand has 7 fraction bits, so with ta, tb the
 * top 7 fraction bits of a and b,
 *     P = (1 + ta/2^7) * (1 + tb/2^7)           (exact: 16 bits at most)
 *     bf16trunc(a, b) = P with the fraction below its leading one
 *                       truncated to 7 bits      (carry: if P >= 2, the
 *                       fraction of P/2 is truncated)
 * The width is that of the format, so the model supports 7 bits only and
 * ignores `bits`.
 */
#include "approx_model.h"
#include "approx_fixed.h"

#define BF16_FRACTION_BITS 7u

float bf16trunc_mul(float a, float b, unsigned bits)
{
    uint64_t sa = (1u << BF16_FRACTION_BITS) + approx_truncated_fraction(a, BF16_FRACTION_BITS);
    uint64_t sb = (1u << BF16_FRACTION_BITS) + approx_truncated_fraction(b, BF16_FRACTION_BITS);
    (void)bits;
    return approx_from_fixed(sa * sb, 2 * BF16_FRACTION_BITS, BF16_FRACTION_BITS);
}

const struct approx_model_info bf16trunc_info = {
    .name = "bf16trunc",
    .description = "bfloat16 product, operands and result truncated to 7 bits (ApproxTrain)",
    .min_bits = 7,
    .max_bits = 7,
    .area_um2 = 0,
    .power_mw = 0,
    .delay_ns = 0,
};
