//! Helpers shared by the `nets` integration tests: the printed test seed
//! and Mitchell's multiplier as a table.
//!
//! A test file includes it with `mod support;` (a file in a subdirectory of
//! `tests/` is not a test crate of its own); `data_support` and
//! `gradcheck_support` hold what only the data and gradient tests need.
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;

use amsim::{Lut, Multiplier, MultiplierPlan};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub use amsim::test_seed;

/// A generator seeded with [`test_seed`].
pub fn test_rng(test: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(test_seed(test))
}

/// The plan with native fp32 products in every role.
pub fn fp32() -> MultiplierPlan {
    MultiplierPlan::uniform(Multiplier::Fp32)
}

/// Mitchell's logarithmic multiplier (Mitchell, "Computer multiplication
/// and division using binary logarithms", IRE Trans. 1962) as DESIGN.md
/// specifies it: truncated fractions x, S = xa + xb, Q = 1 + S if S < 1
/// else 2S, the result fraction truncated to `bits`.
pub fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u32 << bits) as f32;
    let xa = ((a - 1.0) * scale).floor() / scale;
    let xb = ((b - 1.0) * scale).floor() / scale;
    let s = xa + xb;
    let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
    f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
}

/// [`mitchell`] as a `bits`-bit lookup table.
pub fn mitchell_lut(bits: u32) -> Multiplier {
    Multiplier::Lut(Arc::new(Lut::build("mitchell", mitchell, bits).unwrap()))
}
