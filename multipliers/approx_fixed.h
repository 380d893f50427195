/*
 * approx_fixed.h -- fixed-point helpers shared by the models in this folder.
 *
 * Models compute on integer significands so that their results do not depend
 * on the C compiler's floating-point settings (excess precision, contraction
 * into fused multiply-adds): a value v is held as the integer q = v * 2^point.
 * Only `exact` uses a float multiply, whose IEEE rounding is the point of it.
 *
 * This header is not part of the ABI (approx_model.h is); a model may use it
 * or not.
 */
#ifndef APPROX_FIXED_H
#define APPROX_FIXED_H

#include <stdint.h>
#include <string.h>

/* Width of the FP32 fraction field. */
#define APPROX_FP32_FRACTION_BITS 23u

/* The 23-bit fraction field of x (the exponent and sign are ignored, which
 * makes every model defined for any float input). */
static inline uint32_t approx_fraction(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u & 0x007fffffu;
}

/* `bits` forced into [lo, hi], so that a caller outside the declared range
 * can never make a model shift by a negative or oversized amount. */
static inline unsigned approx_clamp_bits(unsigned bits, unsigned lo, unsigned hi)
{
    return bits < lo ? lo : (bits > hi ? hi : bits);
}

/* The top `bits` fraction bits of x, right-aligned: the truncated operand
 * t with x ~ 1 + t / 2^bits, 0 <= t < 2^bits. Requires 1 <= bits <= 23. */
static inline uint32_t approx_truncated_fraction(float x, unsigned bits)
{
    return approx_fraction(x) >> (APPROX_FP32_FRACTION_BITS - bits);
}

/* x truncated to `bits` fraction bits, as a float (exponent of x kept). */
static inline float approx_truncate_float(float x, unsigned bits)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u &= ~((1u << (APPROX_FP32_FRACTION_BITS - bits)) - 1u);
    memcpy(&x, &u, sizeof u);
    return x;
}

/* The float q / 2^point, with its fraction (the bits below the leading one)
 * truncated to `bits` bits, as the hardware drops the low product bits.
 * q must be positive and the result a normal float; the models call it with
 * values in [1, 4). Requires 1 <= bits <= 23. */
static inline float approx_from_fixed(uint64_t q, unsigned point, unsigned bits)
{
    unsigned msb = 0;
    uint64_t frac;
    uint32_t u;
    float out;

    if (q == 0) {
        return 0.0f; /* not a valid product: AMSim rejects it */
    }
    while (msb < 63 && (q >> (msb + 1)) != 0) {
        msb++;
    }
    frac = q - ((uint64_t)1 << msb);
    frac = msb >= bits ? frac >> (msb - bits) : frac << (bits - msb);
    u = ((uint32_t)(127 + (int)msb - (int)point) << APPROX_FP32_FRACTION_BITS)
        | ((uint32_t)frac << (APPROX_FP32_FRACTION_BITS - bits));
    memcpy(&out, &u, sizeof out);
    return out;
}

#endif /* APPROX_FIXED_H */
