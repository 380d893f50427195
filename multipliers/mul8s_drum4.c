/*
 * mul8s_drum4 -- signed 8x8 DRUM-4.
 *
 * Sign-magnitude: DRUM-4 of mul8u_drum4 on the operands' magnitudes (Hashemi et al., ICCAD 2015).
 */
#include "approx_int.h"

int16_t mul8s_drum4(int8_t a, int8_t b)
{
    return (int16_t)approx_int_signed(approx_int_drum(approx_int_magnitude(a), approx_int_magnitude(b), 4), a, b);
}

const struct approx_model_int_info mul8s_drum4_info = { .description = "8-bit signed (sign-magnitude) DRUM, 4 kept bits (Hashemi et al., ICCAD 2015)" };
