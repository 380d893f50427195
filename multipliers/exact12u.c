/*
 * exact12u -- the exact product of two unsigned 12-bit integers (operands
 * 0..=2^12-1, the product below 2^24, so it fits uint32_t; the operands are
 * widened to uint32_t before the product, since uint16_t promotes to int,
 * where 65535 x 65535 overflows), the reference against which the unsigned
 * 12-bit models are measured. EvoApprox's form for 12-bit unsigned
 * multipliers: uint32_t mul12u_NAME(uint16_t, uint16_t).
 */
#include <stdint.h>

uint32_t exact12u(uint16_t a, uint16_t b)
{
    return (uint32_t)a * (uint32_t)b;
}

const struct approx_model_int_info exact12u_info = { .description = "exact 12-bit unsigned product" };
