/*
 * mul8u_drum4 -- unsigned 8x8 DRUM-4.
 *
 * Each operand keeps 4 bits from its leading one, the lowest set to 1 (approx_int_drum in approx_int.h; Hashemi et al., ICCAD 2015).
 */
#include "approx_int.h"

uint16_t mul8u_drum4(uint8_t a, uint8_t b)
{
    return (uint16_t)approx_int_drum(a, b, 4);
}

const struct approx_model_int_info mul8u_drum4_info = { .description = "8-bit unsigned DRUM, 4 kept bits (Hashemi et al., ICCAD 2015)" };
