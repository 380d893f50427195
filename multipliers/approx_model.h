/*
 * approx_model.h -- the ABI between a C multiplier model and approxtrain.
 *
 * A model is the functional description of the mantissa datapath of a
 * floating-point multiplier. approxtrain tabulates it over every pair of
 * truncated mantissas (AMSim) or calls it for every product (`direct:` mode);
 * signs, exponents, zeros, infinities and NaNs are handled outside the model.
 *
 * Convention (build.rs relies on it; see multipliers/README.md):
 *
 *   A file `multipliers/NAME.c`, NAME made of [a-z0-9_] and starting with a
 *   letter, defines exactly one model with two external symbols:
 *
 *     float NAME_mul(float a, float b, unsigned bits);
 *     const struct approx_model_info NAME_info = {
 *         .name = "NAME",
 *         .description = "one line",
 *         .min_bits = 1,
 *         .max_bits = 23,
 *         .area_um2 = 0,
 *         .power_mw = 0,
 *         .delay_ns = 0,
 *     };
 *
 *   The info record is a designated initializer of literal values (string
 *   literals and decimal numbers, no macros): build.rs reads it from the
 *   source to build the Rust registry, and a test checks that what it read
 *   equals the record compiled into the library.
 *
 * Contract of NAME_mul:
 *   - a and b are in [1, 2). The model keeps the top `bits` fraction bits of
 *     each operand and ignores the rest (it truncates its inputs itself, so it
 *     may be called with full 23-bit mantissas). It reads only the fraction
 *     field of a and b, so it is defined for every float input.
 *   - `bits` is in [min_bits, max_bits] (at most 23). For any other value
 *     the model must still return without undefined behaviour (the shipped
 *     models clamp it into 1..=23), since Rust calls it through a safe
 *     wrapper.
 *   - It returns the approximate product: a normal float in [1, 4). AMSim
 *     rejects a table holding anything else.
 *   - It is a pure function: no state, no I/O, thread safe.
 *
 * Integer models (8-, 12- and 16-bit operands, the forms of the EvoApprox
 * library):
 *
 *   A file `multipliers/NAME.c`, NAME a lowercase letter followed by
 *   [A-Za-z0-9_], that has no NAME_mul but defines a function named NAME
 *   with one of the signatures
 *
 *     uint16_t NAME(uint8_t a, uint8_t b);    (8-bit unsigned, `mul8u_...`)
 *     int16_t  NAME(int8_t a, int8_t b);      (8-bit signed, `mul8s_...`)
 *     uint32_t NAME(uint16_t a, uint16_t b);  (12- or 16-bit unsigned)
 *     int32_t  NAME(int16_t a, int16_t b);    (12- or 16-bit signed)
 *
 *   is an integer model: the approximate product of two integers. The
 *   12- and 16-bit forms share a signature, so their width is the first
 *   number in NAME, as EvoApprox names them (`mul12u_2NDH`, `mul16s_HDG`,
 *   `exact12s`); that number must be 12 or 16. An n-bit model is called
 *   with operands in the n-bit range only (-2^(n-1)..=2^(n-1)-1 or
 *   0..=2^n-1) and must return a product in the 2n-bit range of its sign
 *   (for 12 bits: -2^23..=2^23-1 or 0..=2^24-1); a product outside it is an
 *   error naming the pair. 8-bit models are tabulated over all 256 x 256
 *   operand pairs (`int8:NAME`), 12-bit ones over all 4096 x 4096
 *   (`int12:NAME`), and 16-bit ones are called for every product
 *   (`int16:NAME`). A model must be a pure function defined for every
 *   operand pair of its width. An info record is optional, one line is
 *   enough:
 *
 *     const struct approx_model_int_info NAME_info = { .description = "..." };
 *
 *   with the optional fields .name (equal to NAME), .area_um2, .power_mw and
 *   .delay_ns (0 or absent: "not declared"). Every file is compiled with
 *   this header included first, so a file in EvoApprox's form needs no
 *   #include line for the record.
 */
#ifndef APPROX_MODEL_H
#define APPROX_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The signature of a model: the approximate product of a and b in [1, 2)
 * at `bits` fraction bits, a normal float in [1, 4). */
typedef float (*approx_model_fn)(float a, float b, unsigned bits);

/* What a designer declares about a model. */
struct approx_model_info {
    /* Short name used in multiplier specs (`mbm:7`); equals the file stem. */
    const char *name;
    /* One-line description, ideally naming the source of the design. */
    const char *description;
    /* Smallest and largest supported fraction width, 1 <= min <= max <= 23. */
    unsigned min_bits;
    unsigned max_bits;
    /* Hardware figures for energy estimates, only where a cited source gives
     * them; 0 means "not declared". */
    double area_um2;
    double power_mw;
    double delay_ns;
};

/* The signatures of integer models: the approximate product of two
 * unsigned or two signed 8-bit integers, and of two 12- or 16-bit ones
 * (the width is in the model's name). */
typedef uint16_t (*approx_model_mul8u_fn)(uint8_t a, uint8_t b);
typedef int16_t (*approx_model_mul8s_fn)(int8_t a, int8_t b);
typedef uint32_t (*approx_model_mul16u_fn)(uint16_t a, uint16_t b);
typedef int32_t (*approx_model_mul16s_fn)(int16_t a, int16_t b);

/* What a designer declares about an integer model (all fields optional but
 * .description). */
struct approx_model_int_info {
    /* Equals the file stem (the function name) when given. */
    const char *name;
    /* One-line description, ideally naming the source of the design. */
    const char *description;
    /* Hardware figures, as in approx_model_info; 0 means "not declared". */
    double area_um2;
    double power_mw;
    double delay_ns;
};

#ifdef __cplusplus
}
#endif

#endif /* APPROX_MODEL_H */
