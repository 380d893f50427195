/*
 * mul8s_mitchell -- signed 8x8 Mitchell logarithmic multiplier.
 *
 * Sign-magnitude: Mitchell's multiplier of mul8u_mitchell on the operands' magnitudes (Mitchell, IRE Trans. EC 1962).
 */
#include "approx_int.h"

int16_t mul8s_mitchell(int8_t a, int8_t b)
{
    return (int16_t)approx_int_signed(approx_int_mitchell(approx_int_magnitude(a), approx_int_magnitude(b)), a, b);
}

const struct approx_model_int_info mul8s_mitchell_info = { .description = "8-bit signed (sign-magnitude) Mitchell logarithmic multiplier (Mitchell, IRE Trans. EC 1962)" };
