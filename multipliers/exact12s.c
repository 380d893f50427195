/*
 * exact12s -- the exact product of two signed 12-bit integers (operands
 * -2^11..=2^11-1, the product at most 2^22 in magnitude, so it fits
 * int32_t), the reference against which the signed 12-bit models are
 * measured. EvoApprox's form for 12-bit signed multipliers:
 * int32_t mul12s_NAME(int16_t, int16_t).
 */
#include <stdint.h>

int32_t exact12s(int16_t a, int16_t b)
{
    return (int32_t)a * (int32_t)b;
}

const struct approx_model_int_info exact12s_info = { .description = "exact 12-bit signed product" };
