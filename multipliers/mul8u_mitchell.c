/*
 * mul8u_mitchell -- unsigned 8x8 Mitchell logarithmic multiplier.
 *
 * p = 2^(ka+kb) (1 + fa + fb) or 2^(ka+kb+1) (fa + fb), in integers (approx_int_mitchell in approx_int.h; Mitchell, IRE Trans. EC 1962).
 */
#include "approx_int.h"

uint16_t mul8u_mitchell(uint8_t a, uint8_t b)
{
    return (uint16_t)approx_int_mitchell(a, b);
}

const struct approx_model_int_info mul8u_mitchell_info = { .description = "8-bit unsigned Mitchell logarithmic multiplier (Mitchell, IRE Trans. EC 1962)" };
