/*
 * mul16s_trunc8 -- signed 16x16 truncated (broken-array) multiplier,
 * columns 0..7 dropped.
 *
 * Sign-magnitude: the truncated array multiplier of mul16u_trunc8 on the
 * operands' magnitudes (up to 2^15 for -2^15), the sign of the exact
 * product applied to the result (Mahdiani et al., IEEE TCAS-I 2010; the
 * 8-bit design of mul8s_trunc4 at 16 bits).
 */
#include "approx_int.h"

int32_t mul16s_trunc8(int16_t a, int16_t b)
{
    return approx_int_signed(approx_int_truncated(approx_int_magnitude(a), approx_int_magnitude(b), 8), a, b);
}

const struct approx_model_int_info mul16s_trunc8_info = { .description = "16-bit signed (sign-magnitude) truncated array multiplier, 8 columns dropped (Mahdiani et al., TCAS-I 2010)" };
