/*
 * mul8s_BAM08 -- an 8x8 signed broken-array multiplier in the form of an
 * EvoApprox library model: one self-contained function
 * `int16_t mul8s_NAME(int8_t A, int8_t B)` over the bits of the operands.
 *
 * Design (Mahdiani et al., "Bio-Inspired Imprecise Computational Blocks for
 * Efficient VLSI Implementation of Soft-Computing Applications", IEEE
 * TCAS-I 57(4), 2010): the broken-array multiplier with horizontal break
 * level 0 and vertical break level 8 (no partial-product bit in columns
 * 0..7) on the operands' magnitudes, the sign applied to the result
 * (sign-magnitude). The product falls short by the sum of the dropped bits,
 * at most 1537 (127 x 127 = 16129 becomes 14592); two magnitudes below 16
 * multiply to 0. Only the last line (the info record) is not
 * EvoApprox's form; the model works without it too.
 */
#include <stdint.h>

int16_t mul8s_BAM08(int8_t A, int8_t B)
{
    uint32_t a = A < 0 ? (uint32_t)(-(int32_t)A) : (uint32_t)A;
    uint32_t b = B < 0 ? (uint32_t)(-(int32_t)B) : (uint32_t)B;
    uint32_t O = 0;
    for (int row = 0; row < 9; row++) {
        if (!((b >> row) & 1u)) {
            continue;
        }
        for (int col = 0; col < 9; col++) {
            if (((a >> col) & 1u) && row + col >= 8) {
                O += 1u << (row + col);
            }
        }
    }
    return (int16_t)(((A < 0) != (B < 0)) ? -(int32_t)O : (int32_t)O);
}

const struct approx_model_int_info mul8s_BAM08_info = { .description = "8-bit signed (sign-magnitude) broken-array multiplier, HBL 0, VBL 8, EvoApprox form (Mahdiani et al., TCAS-I 2010)" };
