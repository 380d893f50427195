//! `exp` and `tanh` for the elementwise layers, written so that loops over
//! slices vectorise (branch-free, no library calls), with results that
//! depend on the input alone: the same bits on every CPU, instruction set and
//! thread count (plain IEEE operations, no fused multiply-add).
//!
//! The standard library's `f32::exp` and `f32::tanh` call the C library one
//! element at a time; in a Transformer step they cost more than the matrix
//! products of the MLP they sit between.
//!
//! `exp` is the Cephes `expf` scheme (S. L. Moshier, Cephes Math Library,
//! `expf.c`): `x = n·ln2 + r` with a two-part `ln2` (Cody and Waite), a
//! degree-6 polynomial for `e^r` on `|r| <= ln2/2`, and `2^n` made from its
//! exponent bits. `tanh(u) = 1 - 2/(e^(2u) + 1)`.

/// `log2(e)`.
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` split so that `n·LN2_HI` is exact for `|n| < 2^10`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `1.5·2^23`: adding and subtracting it rounds to the nearest integer.
const ROUND: f32 = 12_582_912.0;
/// Inputs below this give `exp(-87)` (about `1.6e-38`) instead of a smaller
/// or subnormal value; inputs above [`EXP_MAX`] give `exp(88)`.
const EXP_MIN: f32 = -87.0;
const EXP_MAX: f32 = 88.0;
/// `tanh` is `±1` in FP32 beyond this (`1 - tanh(10) < 2^-27`).
const TANH_MAX: f32 = 10.0;

/// `e^x` within about 1 ulp for `x` in `[-87, 88]` (clamped outside that
/// range); NaN gives NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // NaN passes through the clamp.
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    // Cephes's 5.0000001e-1, which is 0.5 in FP32.
    p = p * r + 0.5;
    let e = p * (r * r) + r + 1.0;
    // n is in [-126, 127] here (0 for NaN, whose e is NaN anyway).
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    e * scale
}

/// `tanh(u)` within about `1e-7` absolute error; NaN gives NaN, `±inf`
/// gives `±1`.
#[inline(always)]
pub fn tanh(u: f32) -> f32 {
    let u = u.clamp(-TANH_MAX, TANH_MAX);
    1.0 - 2.0 / (exp(2.0 * u) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_of_the_library_over_its_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.000_731;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn tanh_is_within_2e7_of_the_library() {
        let mut worst = 0.0f64;
        let mut u = -12.0f32;
        while u <= 12.0 {
            worst = worst.max((tanh(u) as f64 - (u as f64).tanh()).abs());
            u += 0.000_37;
        }
        assert!(worst < 2e-7, "worst absolute error {worst:e}");
        assert_eq!(tanh(0.0), 0.0);
    }

    #[test]
    fn special_values_propagate() {
        assert!(exp(f32::NAN).is_nan());
        assert!(tanh(f32::NAN).is_nan());
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NEG_INFINITY) < 1e-37);
    }
}
