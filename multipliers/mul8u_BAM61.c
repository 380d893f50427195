/*
 * mul8u_BAM61 -- an 8x8 unsigned broken-array multiplier in the form of an
 * EvoApprox library model: one self-contained function
 * `uint16_t mul8u_NAME(uint8_t A, uint8_t B)` over the bits of A and B.
 *
 * Design (Mahdiani et al., "Bio-Inspired Imprecise Computational Blocks for
 * Efficient VLSI Implementation of Soft-Computing Applications", IEEE
 * TCAS-I 57(4), 2010): the broken-array multiplier with horizontal break
 * level 1 (the partial-product row of B's bit 0 is not built) and vertical
 * break level 6 (no partial-product bit in columns 0..5). Only the last
 * line (the info record) is not EvoApprox's form; the model works without
 * it too.
 */
#include <stdint.h>

uint16_t mul8u_BAM61(uint8_t A, uint8_t B)
{
    uint16_t O = 0;
    for (int row = 1; row < 8; row++) {
        if (!((B >> row) & 1)) {
            continue;
        }
        for (int col = 0; col < 8; col++) {
            if (((A >> col) & 1) && row + col >= 6) {
                O = (uint16_t)(O + (1u << (row + col)));
            }
        }
    }
    return O;
}

const struct approx_model_int_info mul8u_BAM61_info = { .description = "8-bit unsigned broken-array multiplier, HBL 1, VBL 6, EvoApprox form (Mahdiani et al., TCAS-I 2010)" };
