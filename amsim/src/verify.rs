//! Verification of a table against its model: the table product
//! ([`crate::product::amsim_mul`]) and the model called on every product
//! ([`crate::product::direct_mul`] at the table's width) must agree bit for bit for
//! any model that looks only at the top `m` bits of each fraction, as
//! DESIGN.md's models do. A model that reads lower bits (or keeps state)
//! shows up here as mismatches.
//!
//! Operands are random normal FP32 values (random sign and 23-bit fraction).
//! Half of the pairs draw both exponents from the whole normal range
//! (biased 1..=254), so products overflow to infinity and underflow to zero
//! often and the flush boundaries of step 5 are exercised; the other half
//! draw exponents within 2^±16 of 1, where products stay in range.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::product::{amsim_mul, direct_mul};
use crate::{Lut, ModelFn, Result};

/// Default number of random pairs.
pub const DEFAULT_SAMPLES: u64 = 1_000_000;

/// A pair on which the table and the model disagree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mismatch {
    /// First operand.
    pub a: f32,
    /// Second operand.
    pub b: f32,
    /// Product through the table.
    pub table: f32,
    /// Product with the model called directly.
    pub direct: f32,
}

/// The outcome of [`verify_lut`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// Model name.
    pub model: String,
    /// Table width.
    pub bits: u32,
    /// Pairs compared.
    pub samples: u64,
    /// Seed of the operand generator.
    pub seed: u64,
    /// Pairs whose products differ in any bit (two NaNs count as equal).
    pub mismatches: u64,
    /// Products that overflowed to infinity (through the model).
    pub overflows: u64,
    /// Products that underflowed to zero (through the model).
    pub underflows: u64,
    /// `|table - direct| / |direct|` of largest size (0 when all agree;
    /// infinite when one side is zero or infinite and the other is not).
    pub worst_relative_difference: f64,
    /// The first mismatching pair, if any.
    pub first_mismatch: Option<Mismatch>,
}

impl VerifyReport {
    /// Share of pairs that agree bit for bit.
    pub fn bit_exact_rate(&self) -> f64 {
        if self.samples == 0 {
            1.0
        } else {
            (self.samples - self.mismatches) as f64 / self.samples as f64
        }
    }
}

/// A random normal FP32 value; `wide` draws the exponent from the whole
/// normal range, otherwise within 2^±16.
pub fn random_normal(rng: &mut impl Rng, wide: bool) -> f32 {
    let sign = (rng.gen::<u32>() & 1) << 31;
    let exp: u32 = if wide {
        rng.gen_range(1..=254)
    } else {
        rng.gen_range(111..=143)
    };
    let frac = rng.gen::<u32>() & 0x007f_ffff;
    f32::from_bits(sign | (exp << 23) | frac)
}

fn same(x: f32, y: f32) -> bool {
    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
}

fn relative_difference(table: f32, direct: f32) -> f64 {
    if same(table, direct) {
        0.0
    } else if direct == 0.0 || !direct.is_finite() || !table.is_finite() {
        f64::INFINITY
    } else {
        ((table as f64 - direct as f64) / direct as f64).abs()
    }
}

/// Compare `lut` with `model` at the table's width on `samples` random pairs
/// from a ChaCha8 generator seeded with `seed`.
pub fn verify_lut(lut: &Lut, model: ModelFn, samples: u64, seed: u64) -> VerifyReport {
    let bits = lut.bits();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut report = VerifyReport {
        model: lut.model_name().to_string(),
        bits,
        samples,
        seed,
        mismatches: 0,
        overflows: 0,
        underflows: 0,
        worst_relative_difference: 0.0,
        first_mismatch: None,
    };
    for k in 0..samples {
        let wide = k % 2 == 0;
        let (a, b) = (random_normal(&mut rng, wide), random_normal(&mut rng, wide));
        let table = amsim_mul(a, b, lut);
        let direct = direct_mul(a, b, model, bits);
        report.overflows += u64::from(direct.is_infinite());
        report.underflows += u64::from(direct == 0.0);
        if !same(table, direct) {
            report.mismatches += 1;
            report.first_mismatch.get_or_insert(Mismatch {
                a,
                b,
                table,
                direct,
            });
            let d = relative_difference(table, direct);
            if d > report.worst_relative_difference {
                report.worst_relative_difference = d;
            }
        }
    }
    report
}

/// Tabulate `model` at `bits` and verify the table against it.
pub fn verify_model(
    name: &str,
    model: ModelFn,
    bits: u32,
    samples: u64,
    seed: u64,
) -> Result<VerifyReport> {
    let lut = Lut::build(name, model, bits)?;
    Ok(verify_lut(&lut, model, samples, seed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{mitchell, test_seed};

    #[test]
    fn table_and_model_agree_bit_exactly_for_a_top_bits_model() {
        let seed = test_seed("table_and_model_agree_bit_exactly_for_a_top_bits_model");
        for bits in [1, 4, 7, 10] {
            let r = verify_model("mitchell", mitchell, bits, 100_000, seed).unwrap();
            assert_eq!(r.mismatches, 0, "{r:?}");
            assert_eq!(r.bit_exact_rate(), 1.0);
            assert_eq!(r.worst_relative_difference, 0.0);
            // The wide half of the pairs reaches both flush boundaries.
            assert!(r.overflows > 1000 && r.underflows > 1000, "{r:?}");
        }
    }

    #[test]
    fn a_model_reading_bits_below_the_table_width_is_caught() {
        // Exact product of the full mantissas: a table at 5 bits cannot
        // know the lower 18 bits, so nearly every pair differs.
        fn full(a: f32, b: f32, _bits: u32) -> f32 {
            a * b
        }
        let seed = test_seed("a_model_reading_bits_below_the_table_width_is_caught");
        let r = verify_model("full", full, 5, 10_000, seed).unwrap();
        assert!(r.bit_exact_rate() < 0.5, "{r:?}");
        let m = r.first_mismatch.unwrap();
        assert_eq!(
            amsim_mul(m.a, m.b, &Lut::build("full", full, 5).unwrap()),
            m.table
        );
        assert_eq!(direct_mul(m.a, m.b, full, 5), m.direct);
        // Truncating 18 bits of each operand changes a product by at most
        // 2 * 2^-5 relative, except where the flush boundary is crossed.
        assert!(r.worst_relative_difference > 0.0);
    }

    #[test]
    fn random_normals_are_normal_and_cover_the_exponent_range() {
        let seed = test_seed("random_normals_are_normal_and_cover_the_exponent_range");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut seen = [false; 256];
        for k in 0..100_000 {
            let x = random_normal(&mut rng, k % 2 == 0);
            assert!(x.is_normal(), "{x:e}");
            seen[((x.to_bits() >> 23) & 0xff) as usize] = true;
        }
        assert!(seen[1..=254].iter().all(|&s| s));
    }
}
