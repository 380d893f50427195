//! Helpers shared by the `amsim` integration tests: the printed test seed,
//! test multiplier models (operand order visible, Mitchell's product),
//! bit-for-bit comparison, and random convolution geometries.
//!
//! A test file includes it with `mod support;` (a file in a subdirectory of
//! `tests/` is not a test crate of its own).
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use amsim::conv::Conv2dShape;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A seed for a test's random inputs: [`amsim::test_seed`] (printed, and
/// replayed with `$APPROXTRAIN_TEST_SEED`).
pub fn test_seed() -> u64 {
    amsim::test_seed("the test")
}

/// A generator seeded with [`test_seed`].
pub fn test_rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(test_seed())
}

/// Keep the top `bits` fraction bits of `q` (a positive normal float).
pub fn truncate(q: f32, bits: u32) -> f32 {
    f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
}

/// Mitchell's logarithmic multiplier (Mitchell, "Computer multiplication
/// and division using binary logarithms", IRE Trans. 1962): with
/// `x = a - 1`, `y = b - 1`, `S = x + y`, the product is `1 + S` if `S < 1`,
/// else `2S`, truncated to `bits` fraction bits. Symmetric.
pub fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let s = (a - 1.0) + (b - 1.0);
    truncate(if s < 1.0 { 1.0 + s } else { 2.0 * s }, bits)
}

/// An asymmetric test model, `a b (1 - (a - 1) / 100)` (stays in [1, 4))
/// truncated to `bits + 3` fraction bits, so that swapping the operands
/// changes the result.
pub fn skewed(a: f32, b: f32, bits: u32) -> f32 {
    truncate(a * b * (1.0 - (a - 1.0) / 100.0), (bits + 3).min(23))
}

/// An asymmetric test model on truncated operands: the exact product of the
/// operands truncated to `bits`, scaled by `1 - (a - 1)/16` (which depends
/// on the first operand only), fraction truncated to `bits`. For a, b in
/// [1, 2) the result stays in [1, 4), and swapping the operands changes it,
/// so a lowering that swaps them fails.
pub fn skewed_truncated(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u64 << bits) as f64;
    let t = |v: f32| ((v as f64 - 1.0) * scale).floor() / scale + 1.0;
    let (ta, tb) = (t(a), t(b));
    let q = ta * tb * (1.0 - (ta - 1.0) / 16.0);
    let e = if q >= 2.0 { 2.0 } else { 1.0 };
    (((q / e - 1.0) * scale).floor() / scale + 1.0) as f32 * e as f32
}

/// The minimally biased multiplier (Saadat, Bokhari and Parameswaran, IEEE
/// TCAD 2018) as DESIGN.md and multipliers/mbm.c state it: Mitchell on the
/// operands' top `bits` fraction bits with the lowest one set, plus a
/// correction truncated to `bits` bits (2^-4 + 2^-6 without a carry,
/// 2^-5 + 2^-7 with one, dropped when it would carry again). The C models
/// live in the CLI crate; this is the stand-in for `mbm:BITS` here.
pub fn mbm(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u32 << bits) as f32;
    let top = |x: f32| ((x - 1.0) * scale).floor() as u32 | 1;
    let s = (top(a) + top(b)) as f32 / scale;
    let c = |v: f32| (v * scale).floor() / scale;
    let q = if s < 1.0 {
        1.0 + s + c(1.0 / 16.0 + 1.0 / 64.0)
    } else if s - 1.0 + c(1.0 / 32.0 + 1.0 / 128.0) >= 1.0 {
        2.0 * s
    } else {
        2.0 * (s + c(1.0 / 32.0 + 1.0 / 128.0))
    };
    truncate(q, bits)
}

/// Equal bit patterns, or both NaN (payloads may differ).
pub fn same_bits(x: f32, y: f32) -> bool {
    (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits()
}

/// The largest values [`random_conv_shape`] draws.
pub struct ConvShapeBounds {
    pub batch: usize,
    /// Input and output channels of an ungrouped convolution.
    pub channels: (usize, usize),
    /// Input and output channels per group of a 2-group convolution.
    pub group_channels: (usize, usize),
    /// Input rows and columns beyond the smallest the kernel allows.
    pub extra_size: usize,
}

/// A random geometry that `validate` accepts: 1x1, 3x3, 5x5 or rectangular
/// kernels, stride 1 to 3 (so also strides larger than the kernel),
/// dilation 1 or 2, padding up to 3 (also as large as the kernel), and
/// ungrouped, 2-group or depthwise (channel multiplier 1 or 2)
/// convolutions.
pub fn random_conv_shape(rng: &mut ChaCha8Rng, bounds: &ConvShapeBounds) -> Conv2dShape {
    let kernels = [(1, 1), (3, 3), (5, 5), (1, 3), (3, 2), (2, 3)];
    let (kh, kw) = kernels[rng.gen_range(0..kernels.len())];
    let stride = (rng.gen_range(1..=3), rng.gen_range(1..=3));
    let padding = (rng.gen_range(0..=3), rng.gen_range(0..=3));
    let dilation = (rng.gen_range(1..=2), rng.gen_range(1..=2));
    let (groups, in_channels, out_channels) = match rng.gen_range(0..3) {
        0 => (
            1,
            rng.gen_range(1..=bounds.channels.0),
            rng.gen_range(1..=bounds.channels.1),
        ),
        1 => (
            2,
            2 * rng.gen_range(1..=bounds.group_channels.0),
            2 * rng.gen_range(1..=bounds.group_channels.1),
        ),
        _ => {
            let c = rng.gen_range(2..=4);
            (c, c, c * rng.gen_range(1..=2))
        }
    };
    let min_in = |k: usize, d: usize, p: usize| (d * (k - 1) + 1).saturating_sub(2 * p).max(1);
    let s = Conv2dShape {
        batch: rng.gen_range(1..=bounds.batch),
        in_channels,
        in_h: min_in(kh, dilation.0, padding.0) + rng.gen_range(0..bounds.extra_size),
        in_w: min_in(kw, dilation.1, padding.1) + rng.gen_range(0..bounds.extra_size),
        out_channels,
        kernel_h: kh,
        kernel_w: kw,
        stride,
        padding,
        dilation,
        groups,
    };
    s.validate().expect("generated shape is valid");
    s
}
