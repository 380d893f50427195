/*
 * mul16u_trunc8 -- unsigned 16x16 truncated (broken-array) multiplier,
 * columns 0..7 dropped.
 *
 * The partial-product bits a_i b_j with i + j < 8 are not built: the
 * broken-array multiplier with vertical break level 8 and no horizontal
 * break (H. R. Mahdiani, A. Ahmadi, S. M. Fakhraie, C. Lucas, "Bio-Inspired
 * Imprecise Computational Blocks for Efficient VLSI Implementation of
 * Soft-Computing Applications", IEEE TCAS-I 57(4), 2010), the design of
 * mul8u_trunc4 at 16 bits with the break at 8 columns, as in the paper's
 * exploration of break levels (approx_int_truncated in approx_int.h). The
 * product falls short of the exact one by the sum of the dropped bits,
 * at most 7 x 2^8 + 1 = 1793 (all the dropped bits set).
 */
#include "approx_int.h"

uint32_t mul16u_trunc8(uint16_t a, uint16_t b)
{
    return approx_int_truncated(a, b, 8);
}

const struct approx_model_int_info mul16u_trunc8_info = { .description = "16-bit unsigned truncated array multiplier, 8 columns dropped (Mahdiani et al., TCAS-I 2010)" };
