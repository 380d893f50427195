//! The AMSim product of two FP32 values: the scalar reference that defines
//! every result of this crate (DESIGN.md, "The arithmetic").
//!
//! For a table built at `m` bits:
//! 1. NaN or infinite operand: the IEEE product `a * b`.
//! 2. Zero or subnormal operand: zero with sign `sign(a) ^ sign(b)`.
//! 3. Otherwise `ta`, `tb` = the top `m` fraction bits of each operand
//!    (the rest truncated), `L = table[ta][tb]` in [1, 4), and the result is
//!    `(-1)^(sa^sb) * L * 2^(ea + eb - 254)`; above the FP32 range it is an
//!    infinity with that sign, below the smallest normal a zero with that sign.

use crate::Lut;

const SIGN: u32 = 0x8000_0000;
const FRAC: u32 = 0x007f_ffff;

/// An FP32 operand split into the parts AMSim uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// The sign bit in place (`0` or `0x8000_0000`).
    pub sign: u32,
    /// The biased exponent, 0..=255.
    pub exp: u32,
    /// The 23 fraction bits.
    pub frac: u32,
}

impl Split {
    /// Split the bits of `x`.
    #[inline]
    pub fn of(x: f32) -> Split {
        let b = x.to_bits();
        Split {
            sign: b & SIGN,
            exp: (b >> 23) & 0xff,
            frac: b & FRAC,
        }
    }

    /// The table index of this operand at `bits` mantissa bits (the top
    /// `bits` of the fraction).
    #[inline]
    pub fn index(&self, bits: u32) -> u32 {
        self.frac >> (23 - bits)
    }
}

/// Compose `(-1)^sign * l * 2^(ea + eb - 254)` where `l` is a positive
/// normal float (normally in [1, 4)), flushing below the smallest normal to
/// a signed zero and above the largest finite value to a signed infinity.
#[inline]
pub fn compose(sign: u32, l: f32, ea: u32, eb: u32) -> f32 {
    let lb = l.to_bits();
    let el = ((lb >> 23) & 0xff) as i32;
    let e = el + ea as i32 + eb as i32 - 254;
    if e >= 255 {
        f32::from_bits(sign | 0x7f80_0000)
    } else if e <= 0 {
        f32::from_bits(sign)
    } else {
        f32::from_bits(sign | ((e as u32) << 23) | (lb & FRAC))
    }
}

/// Handle the special operands of steps 1 and 2. Returns `Some(result)` when
/// `a` or `b` is NaN, infinite, zero or subnormal.
#[inline]
pub fn special(a: Split, b: Split, af: f32, bf: f32) -> Option<f32> {
    if a.exp == 255 || b.exp == 255 {
        Some(af * bf)
    } else if a.exp == 0 || b.exp == 0 {
        Some(f32::from_bits(a.sign ^ b.sign))
    } else {
        None
    }
}

/// The AMSim product of `a` and `b` through `lut` (the scalar reference).
#[inline]
pub fn amsim_mul(a: f32, b: f32, lut: &Lut) -> f32 {
    let (sa, sb) = (Split::of(a), Split::of(b));
    if let Some(r) = special(sa, sb, a, b) {
        return r;
    }
    let bits = lut.bits();
    let l = lut.get(sa.index(bits), sb.index(bits));
    compose(sa.sign ^ sb.sign, l, sa.exp, sb.exp)
}

/// The product of `a` and `b` with the model called directly on the full
/// mantissas (`direct` mode): steps 1, 2 and 5 as for a table, with
/// `L = model(1.fa, 1.fb, bits)` and the model doing its own truncation.
#[inline]
pub fn direct_mul(a: f32, b: f32, model: crate::ModelFn, bits: u32) -> f32 {
    let (sa, sb) = (Split::of(a), Split::of(b));
    if let Some(r) = special(sa, sb, a, b) {
        return r;
    }
    let ma = f32::from_bits(0x3f80_0000 | sa.frac);
    let mb = f32::from_bits(0x3f80_0000 | sb.frac);
    let l = model(ma, mb, bits);
    if !(l.is_normal() && l > 0.0) {
        // A model that misbehaves on an input pair gives NaN rather than a
        // plausible number; the table path rejects such models up front.
        return f32::NAN;
    }
    compose(sa.sign ^ sb.sign, l, sa.exp, sb.exp)
}

/// Round to bfloat16 (round to nearest, ties to even) and back to f32.
#[inline]
pub fn round_bf16(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

/// The `bf16` multiplier: operands rounded to bfloat16, exact product
/// (a product of two 8-bit significands fits an f32 significand).
#[inline]
pub fn bf16_mul(a: f32, b: f32) -> f32 {
    round_bf16(a) * round_bf16(b)
}
