/*
 * mul12s_trunc6 -- signed 12x12 truncated (broken-array) multiplier,
 * columns 0..5 dropped.
 *
 * Sign-magnitude: the truncated array multiplier of mul12u_trunc6 on the
 * operands' magnitudes (up to 2^11 for -2^11), the sign of the exact
 * product applied to the result (Mahdiani et al., IEEE TCAS-I 2010; the
 * 8-bit design of mul8s_trunc4 at 12 bits).
 */
#include "approx_int.h"

int32_t mul12s_trunc6(int16_t a, int16_t b)
{
    return approx_int_signed(approx_int_truncated(approx_int_magnitude(a), approx_int_magnitude(b), 6), a, b);
}

const struct approx_model_int_info mul12s_trunc6_info = { .description = "12-bit signed (sign-magnitude) truncated array multiplier, 6 columns dropped (Mahdiani et al., TCAS-I 2010)" };
