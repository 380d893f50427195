/*
 * exact16s -- the exact product of two signed 16-bit integers (operands
 * -2^15..=2^15-1, the product at most 2^30 in magnitude, so it fits
 * int32_t), the reference against which the signed 16-bit models are
 * measured. EvoApprox's form for 16-bit signed multipliers:
 * int32_t mul16s_NAME(int16_t, int16_t).
 */
#include <stdint.h>

int32_t exact16s(int16_t a, int16_t b)
{
    return (int32_t)a * (int32_t)b;
}

const struct approx_model_int_info exact16s_info = { .description = "exact 16-bit signed product" };
