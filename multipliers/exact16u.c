/*
 * exact16u -- the exact product of two unsigned 16-bit integers (operands
 * 0..=2^16-1, the product below 2^32, so it fits uint32_t; the operands are
 * widened to uint32_t before the product, since uint16_t promotes to int,
 * where 65535 x 65535 overflows), the reference against which the unsigned
 * 16-bit models are measured. EvoApprox's form for 16-bit unsigned
 * multipliers: uint32_t mul16u_NAME(uint16_t, uint16_t).
 */
#include <stdint.h>

uint32_t exact16u(uint16_t a, uint16_t b)
{
    return (uint32_t)a * (uint32_t)b;
}

const struct approx_model_int_info exact16u_info = { .description = "exact 16-bit unsigned product" };
