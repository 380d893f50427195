/*
 * mul8u_trunc4 -- unsigned 8x8 truncated (broken-array) multiplier, columns 0..3 dropped.
 *
 * The partial-product bits of the four least significant columns are not built (approx_int_truncated in approx_int.h; Mahdiani et al., IEEE TCAS-I 2010).
 */
#include "approx_int.h"

uint16_t mul8u_trunc4(uint8_t a, uint8_t b)
{
    return (uint16_t)approx_int_truncated(a, b, 4);
}

const struct approx_model_int_info mul8u_trunc4_info = { .description = "8-bit unsigned truncated array multiplier, 4 columns dropped (Mahdiani et al., TCAS-I 2010)" };
