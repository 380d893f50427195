/*
 * mul12u_trunc6 -- unsigned 12x12 truncated (broken-array) multiplier,
 * columns 0..5 dropped.
 *
 * The partial-product bits a_i b_j with i + j < 6 are not built: the
 * broken-array multiplier with vertical break level 6 and no horizontal
 * break (H. R. Mahdiani, A. Ahmadi, S. M. Fakhraie, C. Lucas, "Bio-Inspired
 * Imprecise Computational Blocks for Efficient VLSI Implementation of
 * Soft-Computing Applications", IEEE TCAS-I 57(4), 2010), the design of
 * mul8u_trunc4 at 12 bits with the break at 6 columns, as in the paper's
 * exploration of break levels (approx_int_truncated in approx_int.h). The
 * product falls short of the exact one by the sum of the dropped bits,
 * at most 5 x 2^6 + 1 = 321 (all the dropped bits set).
 */
#include "approx_int.h"

uint32_t mul12u_trunc6(uint16_t a, uint16_t b)
{
    return approx_int_truncated(a, b, 6);
}

const struct approx_model_int_info mul12u_trunc6_info = { .description = "12-bit unsigned truncated array multiplier, 6 columns dropped (Mahdiani et al., TCAS-I 2010)" };
