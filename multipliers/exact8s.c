/*
 * exact8s -- the exact product of two signed 8-bit integers (at most
 * 2^14 = (-128)^2 in magnitude, so it fits int16_t), the reference against
 * which the signed integer models are measured.
 */
#include <stdint.h>

int16_t exact8s(int8_t a, int8_t b)
{
    return (int16_t)((int32_t)a * (int32_t)b);
}

const struct approx_model_int_info exact8s_info = { .description = "exact 8-bit signed product" };
