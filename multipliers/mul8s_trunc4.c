/*
 * mul8s_trunc4 -- signed 8x8 truncated (broken-array) multiplier, columns 0..3 dropped.
 *
 * Sign-magnitude: the truncated array multiplier of mul8u_trunc4 on the operands' magnitudes (Mahdiani et al., IEEE TCAS-I 2010).
 */
#include "approx_int.h"

int16_t mul8s_trunc4(int8_t a, int8_t b)
{
    return (int16_t)approx_int_signed(approx_int_truncated(approx_int_magnitude(a), approx_int_magnitude(b), 4), a, b);
}

const struct approx_model_int_info mul8s_trunc4_info = { .description = "8-bit signed (sign-magnitude) truncated array multiplier, 4 columns dropped (Mahdiani et al., TCAS-I 2010)" };
