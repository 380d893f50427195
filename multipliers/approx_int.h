/*
 * approx_int.h -- helpers shared by the integer models in this folder.
 *
 * Each design is written once on unsigned magnitudes of any width up to 16
 * bits (the value 2^(n-1) = |-2^(n-1)| of a signed n-bit operand included);
 * the 8-, 12- and 16-bit models call it with their own width, and the
 * signed models apply it to the operands' magnitudes and give the product
 * the sign of the exact one (sign-magnitude multiplication, as in the
 * signed variants of the cited papers). Magnitudes are at most 2^16, and
 * every design here returns at most the exact product of its operands'
 * magnitudes (DRUM: at most that of the rounded-up operands, below 2^32),
 * so `uint32_t` holds the products of every width. Like approx_fixed.h this
 * header is not part of the ABI.
 */
#ifndef APPROX_INT_H
#define APPROX_INT_H

#include <stdint.h>

/* Position of the leading one of x > 0 (floor(log2 x)). */
static inline unsigned approx_int_leading_one(uint32_t x)
{
    unsigned k = 0;
    while (x >> (k + 1)) {
        k++;
    }
    return k;
}

/* Truncated array multiplier: the partial-product bits a_i b_j of the
 * columns i + j < k are not built, so the product lacks their sum (always
 * an underestimate, by at most sum_{c<k} (c + 1) 2^c = (k - 1) 2^k + 1, for
 * k no more than the operand width). The "broken-array multiplier" with a
 * vertical break level k and no horizontal break: H. R. Mahdiani,
 * A. Ahmadi, S. M. Fakhraie, C. Lucas, "Bio-Inspired Imprecise
 * Computational Blocks for Efficient VLSI Implementation of Soft-Computing
 * Applications", IEEE TCAS-I 57(4), 2010.
 * Row i of the array (a_i = 1) is b shifted by i, with the bits b_j of the
 * columns i + j < k cleared: b with its k - i lowest bits cleared. The same
 * for every operand width (a, b <= 2^16). */
static inline uint32_t approx_int_truncated(uint32_t a, uint32_t b, unsigned k)
{
    uint32_t p = 0;
    for (unsigned i = 0; i <= 16; i++) {
        if (!((a >> i) & 1u)) {
            continue;
        }
        uint32_t row = i >= k ? b : (k - i >= 32 ? 0 : (b >> (k - i)) << (k - i));
        p += row << i;
    }
    return p;
}

/* Mitchell's logarithmic multiplier on integers: with a = 2^ka (1 + fa),
 * b = 2^kb (1 + fb), fa, fb in [0, 1), log2 p ~ ka + kb + fa + fb and
 *     p = 2^(ka+kb) (1 + fa + fb)        if fa + fb < 1,
 *     p = 2^(ka+kb+1) (fa + fb)          otherwise;
 * with xa = a - 2^ka (so fa = xa / 2^ka) both are integers:
 *     2^(ka+kb) + xa 2^kb + xb 2^ka  and  2 (xa 2^kb + xb 2^ka).
 * J. N. Mitchell, "Computer Multiplication and Division Using Binary
 * Logarithms", IRE Trans. Electronic Computers EC-11(4), 1962. */
static inline uint32_t approx_int_mitchell(uint32_t a, uint32_t b)
{
    if (a == 0 || b == 0) {
        return 0;
    }
    unsigned ka = approx_int_leading_one(a), kb = approx_int_leading_one(b);
    uint32_t xa = a - ((uint32_t)1 << ka), xb = b - ((uint32_t)1 << kb);
    uint32_t cross = (xa << kb) + (xb << ka);
    uint32_t base = (uint32_t)1 << (ka + kb);
    return cross < base ? base + cross : 2 * cross;
}

/* DRUM-k on integers: an operand with more than k significant bits keeps
 * the k bits from its leading one, its lowest kept bit set to 1 (which
 * makes the truncation error unbiased on average), the rest dropped; the
 * kept values are multiplied exactly and the product shifted back.
 * S. Hashemi, R. I. Bahar, S. Reda, "DRUM: A Dynamic Range Unbiased
 * Multiplier for Approximate Applications", ICCAD 2015. */
static inline uint32_t approx_int_drum_operand(uint32_t x, unsigned k)
{
    if (x >> k == 0) {
        return x;
    }
    unsigned shift = approx_int_leading_one(x) + 1 - k;
    return ((x >> shift) | 1u) << shift;
}

static inline uint32_t approx_int_drum(uint32_t a, uint32_t b, unsigned k)
{
    return approx_int_drum_operand(a, k) * approx_int_drum_operand(b, k);
}

/* The magnitude of a signed operand of any width up to 16 bits (128 for
 * -128, 32768 for -32768). */
static inline uint32_t approx_int_magnitude(int32_t x)
{
    return x < 0 ? (uint32_t)(-x) : (uint32_t)x;
}

/* A signed product from its magnitude p (at most 2^30, the product of two
 * 16-bit signed magnitudes) and the operands' signs; the 8-bit models cast
 * it to int16_t, the 12- and 16-bit ones return it as it is. */
static inline int32_t approx_int_signed(uint32_t p, int32_t a, int32_t b)
{
    int32_t v = (int32_t)p;
    return (a < 0) != (b < 0) ? -v : v;
}

#endif /* APPROX_INT_H */
