/*
 * exact8u -- the exact product of two unsigned 8-bit integers, the
 * reference against which the unsigned integer models are measured.
 */
#include <stdint.h>

uint16_t exact8u(uint8_t a, uint8_t b)
{
    return (uint16_t)((uint32_t)a * (uint32_t)b);
}

const struct approx_model_int_info exact8u_info = { .description = "exact 8-bit unsigned product" };
