//! Characterization of a multiplier model over mantissa pairs.
//!
//! For a table (or model) at `m` bits, every pair of truncated operands
//! `a = 1 + ta/2^m`, `b = 1 + tb/2^m` (`ta`, `tb` in `0..2^m`) has an
//! approximate product `p` (the table entry, or the model's output) and an
//! exact product `x = a * b`, computed in f64 (exact: at most 48 significant
//! bits). With the error `e = p - x` and the relative error `r = e / x`, over
//! the `N` pairs considered:
//!
//! | field | definition |
//! |---|---|
//! | `error_rate` | share of pairs with `p != x` |
//! | `mean_error` | `sum(e) / N`, the bias |
//! | `mean_abs_error` | `sum(abs(e)) / N` |
//! | `mean_relative_error` | `sum(r) / N`, signed |
//! | `mred` | `sum(abs(r)) / N`, mean relative error distance |
//! | `max_relative_error` | the `r` of largest magnitude, with its sign (worst-case relative error, WCRE), at pair `max_relative_error_at` |
//! | `rms_relative_error` | `sqrt(sum(r^2) / N)` |
//! | `std_relative_error` | population standard deviation of `r`: `sqrt(sum((r - mean r)^2) / N)` |
//! | `within_one_ulp` | share of pairs with `abs(e) <= 2^-m * 2^floor(log2 x)`, i.e. within one unit in the last place of an `m`-bit result |
//!
//! Up to [`crate::MAX_LUT_BITS`] the characterization is exhaustive over all
//! `4^m` pairs; wider models (up to 23 bits, `direct` mode) are sampled with a
//! seeded RNG, pairs drawn uniformly.
//!
//! Mitchell's logarithmic multiplier has a mean relative error of about
//! -3.8 % and a worst case of -11.1 % (at `a = b = 1.5`; Mitchell, "Computer
//! multiplication and division using binary logarithms", IRE Trans.
//! Electronic Computers, 1962), which the tests check.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::lut::operand;
use crate::lut_file::write_whole;
use crate::spec::MAX_DIRECT_BITS;
use crate::{AmsimError, Lut, ModelFn, Result, MAX_LUT_BITS};

/// Widest table [`write_pairs_csv`] writes (65 536 rows).
pub const MAX_PAIRS_CSV_BITS: u32 = 8;

/// Error metrics of a model at one width; see the module doc for the
/// definitions.
#[derive(Debug, Clone, PartialEq)]
pub struct Characterization {
    /// Model name.
    pub model: String,
    /// Mantissa bits per operand.
    pub bits: u32,
    /// Number of pairs the metrics cover.
    pub pairs: u64,
    /// Whether every pair was covered (else a seeded sample).
    pub exhaustive: bool,
    /// Share of pairs with any error.
    pub error_rate: f64,
    /// Mean signed error (bias).
    pub mean_error: f64,
    /// Mean absolute error.
    pub mean_abs_error: f64,
    /// Mean signed relative error.
    pub mean_relative_error: f64,
    /// Mean absolute relative error (MRED).
    pub mred: f64,
    /// Relative error of largest magnitude, with its sign (WCRE).
    pub max_relative_error: f64,
    /// The pair `(ta, tb)` where `max_relative_error` occurs (the first one
    /// in `i`-major order when exhaustive).
    pub max_relative_error_at: (u32, u32),
    /// Root mean square relative error.
    pub rms_relative_error: f64,
    /// Population standard deviation of the relative error.
    pub std_relative_error: f64,
    /// Share of pairs within one `m`-bit ulp of the exact product.
    pub within_one_ulp: f64,
}

/// The exact product of the truncated operands of pair `(ta, tb)` at `bits`.
#[inline]
pub fn exact_product(ta: u32, tb: u32, bits: u32) -> f64 {
    let scale = 1.0 / (1u64 << bits) as f64;
    (1.0 + ta as f64 * scale) * (1.0 + tb as f64 * scale)
}

/// Running sums over pairs, each pair with a weight (1 for the uniform
/// characterization, an observed product count for
/// [`characterize_lut_weighted`]).
struct Accumulator {
    bits: u32,
    n: u64,
    /// Sum of the weights.
    weight: f64,
    errors: f64,
    sum_e: f64,
    sum_abs_e: f64,
    sum_r: f64,
    sum_abs_r: f64,
    sum_r2: f64,
    worst: f64,
    worst_at: (u32, u32),
    within_ulp: f64,
    /// Every relative error with its weight, kept for the two-pass
    /// standard deviation.
    rel: Vec<(f64, f64)>,
}

impl Accumulator {
    fn new(bits: u32, capacity: usize) -> Self {
        Accumulator {
            bits,
            n: 0,
            weight: 0.0,
            errors: 0.0,
            sum_e: 0.0,
            sum_abs_e: 0.0,
            sum_r: 0.0,
            sum_abs_r: 0.0,
            sum_r2: 0.0,
            worst: 0.0,
            worst_at: (0, 0),
            within_ulp: 0.0,
            rel: Vec::with_capacity(capacity),
        }
    }

    fn add(&mut self, ta: u32, tb: u32, approx: f64, exact: f64) {
        self.add_weighted(ta, tb, approx, exact, 1.0);
    }

    fn add_weighted(&mut self, ta: u32, tb: u32, approx: f64, exact: f64, w: f64) {
        let e = approx - exact;
        let r = e / exact;
        self.n += 1;
        self.weight += w;
        self.errors += if e != 0.0 { w } else { 0.0 };
        self.sum_e += w * e;
        self.sum_abs_e += w * e.abs();
        self.sum_r += w * r;
        self.sum_abs_r += w * r.abs();
        self.sum_r2 += w * r * r;
        if r.abs() > self.worst.abs() {
            self.worst = r;
            self.worst_at = (ta, tb);
        }
        // exact is in [1, 4): floor(log2 exact) is 0 below 2 and 1 above.
        let ulp = (if exact >= 2.0 { 2.0 } else { 1.0 }) / (1u64 << self.bits) as f64;
        if e.abs() <= ulp {
            self.within_ulp += w;
        }
        self.rel.push((r, w));
    }

    fn finish(self, model: &str, exhaustive: bool) -> Characterization {
        let n = if self.weight > 0.0 { self.weight } else { 1.0 };
        let mean_r = self.sum_r / n;
        let var = self
            .rel
            .iter()
            .map(|(r, w)| w * (r - mean_r) * (r - mean_r))
            .sum::<f64>()
            / n;
        Characterization {
            model: model.to_string(),
            bits: self.bits,
            pairs: self.n,
            exhaustive,
            error_rate: self.errors / n,
            mean_error: self.sum_e / n,
            mean_abs_error: self.sum_abs_e / n,
            mean_relative_error: mean_r,
            mred: self.sum_abs_r / n,
            max_relative_error: self.worst,
            max_relative_error_at: self.worst_at,
            rms_relative_error: (self.sum_r2 / n).sqrt(),
            std_relative_error: var.sqrt(),
            within_one_ulp: self.within_ulp / n,
        }
    }
}

/// Characterize a table exhaustively over all its `4^m` entries.
pub fn characterize_lut(lut: &Lut) -> Characterization {
    let bits = lut.bits();
    let n = 1u32 << bits;
    let mut acc = Accumulator::new(bits, lut.table().len());
    for ta in 0..n {
        for tb in 0..n {
            acc.add(ta, tb, lut.get(ta, tb) as f64, exact_product(ta, tb, bits));
        }
    }
    acc.finish(lut.model_name(), true)
}

/// Characterize a table over an observed distribution of operand pairs:
/// `weights[ta << m | tb]` is how often pair `(ta, tb)` occurred (product
/// counts from a layer's real operands, say), and every metric of the
/// module doc becomes the weighted one (`mred = sum(w |r|) / sum(w)`, the
/// shares weighted likewise); `max_relative_error` is the worst over the
/// pairs that occur, and `pairs` counts the distinct pairs that occur. With
/// all weights equal it is [`characterize_lut`]. An error when `weights`
/// does not have `4^m` entries or sums to zero.
pub fn characterize_lut_weighted(lut: &Lut, weights: &[u64]) -> Result<Characterization> {
    let bits = lut.bits();
    let n = 1u32 << bits;
    if weights.len() != lut.table().len() {
        return Err(AmsimError::Other(format!(
            "weighted characterization at {bits} bits needs {} pair weights, got {}",
            lut.table().len(),
            weights.len()
        )));
    }
    if weights.iter().all(|&w| w == 0) {
        return Err(AmsimError::Other(
            "weighted characterization: no operand pair occurs (all weights are zero)".into(),
        ));
    }
    let mut acc = Accumulator::new(bits, 0);
    for ta in 0..n {
        for tb in 0..n {
            let w = weights[((ta << bits) | tb) as usize];
            if w > 0 {
                let x = exact_product(ta, tb, bits);
                acc.add_weighted(ta, tb, lut.get(ta, tb) as f64, x, w as f64);
            }
        }
    }
    Ok(acc.finish(lut.model_name(), true))
}

/// Call `model` on pair `(ta, tb)` and check its output as a table build
/// would.
fn model_entry(name: &str, model: ModelFn, ta: u32, tb: u32, bits: u32) -> Result<f32> {
    let (a, b) = (operand(ta, bits), operand(tb, bits));
    let v = model(a, b, bits);
    if v.is_normal() && (1.0..4.0).contains(&v) {
        Ok(v)
    } else {
        Err(AmsimError::BadModelOutput {
            model: name.to_string(),
            bits,
            ta,
            tb,
            a,
            b,
            value: v,
        })
    }
}

/// Characterize `model` at `bits` (1..=23): exhaustively up to
/// [`MAX_LUT_BITS`] (`samples` and `seed` unused), else over `samples` pairs
/// drawn uniformly with a ChaCha8 RNG seeded by `seed`.
pub fn characterize_model(
    name: &str,
    model: ModelFn,
    bits: u32,
    samples: u64,
    seed: u64,
) -> Result<Characterization> {
    if !(1..=MAX_DIRECT_BITS).contains(&bits) {
        return Err(AmsimError::BitsOutOfRange {
            bits,
            max: MAX_DIRECT_BITS,
        });
    }
    if bits <= MAX_LUT_BITS {
        let n = 1u32 << bits;
        let mut acc = Accumulator::new(bits, (n as usize) * (n as usize));
        for ta in 0..n {
            for tb in 0..n {
                let v = model_entry(name, model, ta, tb, bits)?;
                acc.add(ta, tb, v as f64, exact_product(ta, tb, bits));
            }
        }
        return Ok(acc.finish(name, true));
    }
    if samples == 0 {
        return Err(AmsimError::Other(format!(
            "characterizing '{name}' at {bits} bits samples pairs; the sample count must be at least 1"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = 1u32 << bits;
    let mut acc = Accumulator::new(bits, samples.min(1 << 24) as usize);
    for _ in 0..samples {
        let (ta, tb) = (rng.gen_range(0..n), rng.gen_range(0..n));
        let v = model_entry(name, model, ta, tb, bits)?;
        acc.add(ta, tb, v as f64, exact_product(ta, tb, bits));
    }
    Ok(acc.finish(name, false))
}

/// The signed relative error `(L[ta][tb] - x) / x` of every entry, `ta`
/// major, as [`characterize_lut`] defines it.
pub fn relative_errors(lut: &Lut) -> Vec<f64> {
    let bits = lut.bits();
    let n = 1u32 << bits;
    let mut out = Vec::with_capacity(lut.table().len());
    for ta in 0..n {
        for tb in 0..n {
            let x = exact_product(ta, tb, bits);
            out.push((lut.get(ta, tb) as f64 - x) / x);
        }
    }
    out
}

/// A relative-error grid of a table, possibly block-averaged: what a heat
/// map of the table draws.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorGrid {
    /// Cells per axis.
    pub cells: usize,
    /// Table entries per cell along each axis.
    pub block: usize,
    /// Mean relative error of each cell, row (`ta`) major.
    pub values: Vec<f64>,
}

/// The signed relative errors of `lut` ([`relative_errors`]) on at most
/// `max_cells` cells per axis (a power of two), each the mean of its
/// `block x block` entries, so that a wide table shrinks while its
/// systematic error patterns stay visible.
pub fn error_grid(lut: &Lut, max_cells: usize) -> ErrorGrid {
    let n = 1usize << lut.bits();
    let mut cells = n;
    while cells > max_cells.max(1) {
        cells /= 2;
    }
    let block = n / cells;
    let rel = relative_errors(lut);
    let mut values = vec![0.0; cells * cells];
    for ta in 0..n {
        for tb in 0..n {
            values[(ta / block) * cells + tb / block] += rel[ta * n + tb];
        }
    }
    let per_cell = (block * block) as f64;
    values.iter_mut().for_each(|v| *v /= per_cell);
    ErrorGrid {
        cells,
        block,
        values,
    }
}

/// Column names of the summary CSV, in order.
pub const CSV_COLUMNS: [&str; 16] = [
    "model",
    "bits",
    "pairs",
    "exhaustive",
    "error_rate",
    "mean_error",
    "mean_abs_error",
    "mean_relative_error",
    "mred",
    "max_relative_error",
    "max_relative_error_ta",
    "max_relative_error_tb",
    "rms_relative_error",
    "std_relative_error",
    "within_one_ulp",
    "approxtrain_lossless",
];

fn csv_err(path: &Path, e: impl std::fmt::Display) -> AmsimError {
    AmsimError::Other(format!("{}: cannot write CSV: {e}", path.display()))
}

impl Characterization {
    /// The values of one summary CSV row, in [`CSV_COLUMNS`] order. The last
    /// column says whether an ApproxTrain `.bin` export would be lossless;
    /// it needs the table and is empty when `lut` is `None`.
    pub fn csv_record(&self, lut: Option<&Lut>) -> Vec<String> {
        let lossless = match lut {
            Some(l) if l.bits() <= crate::lut_file::MAX_APPROXTRAIN_BITS => {
                crate::lut_file::approxtrain_first_lossy_entry(l)
                    .is_none()
                    .to_string()
            }
            Some(_) => "false".to_string(),
            None => String::new(),
        };
        vec![
            self.model.clone(),
            self.bits.to_string(),
            self.pairs.to_string(),
            self.exhaustive.to_string(),
            format!("{:e}", self.error_rate),
            format!("{:e}", self.mean_error),
            format!("{:e}", self.mean_abs_error),
            format!("{:e}", self.mean_relative_error),
            format!("{:e}", self.mred),
            format!("{:e}", self.max_relative_error),
            self.max_relative_error_at.0.to_string(),
            self.max_relative_error_at.1.to_string(),
            format!("{:e}", self.rms_relative_error),
            format!("{:e}", self.std_relative_error),
            format!("{:e}", self.within_one_ulp),
            lossless,
        ]
    }
}

/// Write a summary CSV: a header row of [`CSV_COLUMNS`] and one row per
/// characterization (with its table when there is one), written whole.
pub fn write_csv(rows: &[(Characterization, Option<&Lut>)], path: &Path) -> Result<()> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_COLUMNS).map_err(|e| csv_err(path, e))?;
    for (c, lut) in rows {
        w.write_record(c.csv_record(*lut))
            .map_err(|e| csv_err(path, e))?;
    }
    let bytes = w.into_inner().map_err(|e| csv_err(path, e))?;
    write_whole(path, &bytes)
}

/// Write one CSV row per entry of `lut` (at most [`MAX_PAIRS_CSV_BITS`]
/// bits): `ta, tb, a, b, approx, exact, error, relative_error`, written whole.
pub fn write_pairs_csv(lut: &Lut, path: &Path) -> Result<()> {
    let bits = lut.bits();
    if bits > MAX_PAIRS_CSV_BITS {
        return Err(AmsimError::Other(format!(
            "a per-pair CSV is limited to {MAX_PAIRS_CSV_BITS} bits ({} rows); this table has {bits}",
            1u64 << (2 * MAX_PAIRS_CSV_BITS)
        )));
    }
    let n = 1u32 << bits;
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "ta",
        "tb",
        "a",
        "b",
        "approx",
        "exact",
        "error",
        "relative_error",
    ])
    .map_err(|e| csv_err(path, e))?;
    for ta in 0..n {
        for tb in 0..n {
            let p = lut.get(ta, tb) as f64;
            let x = exact_product(ta, tb, bits);
            w.write_record([
                ta.to_string(),
                tb.to_string(),
                operand(ta, bits).to_string(),
                operand(tb, bits).to_string(),
                p.to_string(),
                x.to_string(),
                format!("{:e}", p - x),
                format!("{:e}", (p - x) / x),
            ])
            .map_err(|e| csv_err(path, e))?;
        }
    }
    let bytes = w.into_inner().map_err(|e| csv_err(path, e))?;
    write_whole(path, &bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use crate::test_seed;

    /// Truncate the fraction of `x` (normal, positive) to `bits` bits.
    fn truncate(x: f32, bits: u32) -> f32 {
        f32::from_bits(x.to_bits() & !((1u32 << (23 - bits)) - 1))
    }

    /// Mitchell's logarithmic multiplier as ApproxTrain tabulates it:
    /// x = truncated fractions, S = xa + xb, Q = 1 + S if S < 1 else 2S,
    /// result fraction truncated to `bits` bits.
    pub(crate) fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
        let xa = truncate(a, bits) - 1.0;
        let xb = truncate(b, bits) - 1.0;
        let s = xa + xb;
        let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
        truncate(q, bits)
    }

    /// The exact product of the truncated operands (representable in f32 up
    /// to 11 bits).
    pub(crate) fn exact(a: f32, b: f32, bits: u32) -> f32 {
        truncate(a, bits) * truncate(b, bits)
    }

    #[test]
    fn grid_is_block_mean_of_relative_errors() {
        let lut = Lut::build("mitchell", mitchell, 4).unwrap();
        let full = error_grid(&lut, 512);
        assert_eq!((full.cells, full.block), (16, 1));
        assert_eq!(full.values, relative_errors(&lut));
        let coarse = error_grid(&lut, 5);
        assert_eq!((coarse.cells, coarse.block), (4, 4));
        let v = &full.values;
        let expect: f64 = (0..4)
            .flat_map(|i| (4..8).map(move |j| v[i * 16 + j]))
            .sum::<f64>()
            / 16.0;
        assert!((coarse.values[1] - expect).abs() < 1e-15);
    }

    #[test]
    fn exact_model_has_no_error() {
        let lut = Lut::build("exact", exact, 7).unwrap();
        let c = characterize_lut(&lut);
        assert_eq!(c.pairs, 1 << 14);
        assert!(c.exhaustive);
        assert_eq!(c.error_rate, 0.0);
        assert_eq!(c.mean_error, 0.0);
        assert_eq!(c.mred, 0.0);
        assert_eq!(c.max_relative_error, 0.0);
        assert_eq!(c.std_relative_error, 0.0);
        assert_eq!(c.within_one_ulp, 1.0);
    }

    #[test]
    fn mitchell_at_7_bits_matches_published_error_figures() {
        let c = characterize_lut(&Lut::build("mitchell", mitchell, 7).unwrap());
        eprintln!("{c:?}");
        // Mitchell (1962): average error about -3.8 %, worst -11.1 % at
        // a = b = 1.5 (table index 64 at 7 bits); truncating the result to 7
        // bits adds a little more negative bias.
        assert!(
            (-0.0395..=-0.0375).contains(&c.mean_relative_error),
            "{}",
            c.mean_relative_error
        );
        assert!(
            (c.mred + c.mean_relative_error).abs() < 1e-12,
            "never above"
        );
        assert!(
            (c.max_relative_error + 1.0 / 9.0).abs() < 1e-3,
            "{}",
            c.max_relative_error
        );
        assert!(c.error_rate > 0.9);
        assert!(c.mean_error < 0.0);
    }

    #[test]
    fn metrics_of_a_hand_made_one_bit_table_follow_their_definitions() {
        // Operands 1 and 1.5; exact products 1, 1.5, 1.5, 2.25. One entry
        // off: 3.5 instead of 2.25 (error 1.25, relative 5/9).
        let lut = Lut::from_table("hand", 1, vec![1.0, 1.5, 1.5, 3.5]).unwrap();
        let c = characterize_lut(&lut);
        let r = 1.25 / 2.25;
        assert_eq!(c.pairs, 4);
        assert_eq!(c.error_rate, 0.25);
        assert!((c.mean_error - 1.25 / 4.0).abs() < 1e-15);
        assert!((c.mean_abs_error - 1.25 / 4.0).abs() < 1e-15);
        assert!((c.mean_relative_error - r / 4.0).abs() < 1e-15);
        assert!((c.mred - r / 4.0).abs() < 1e-15);
        assert!((c.max_relative_error - r).abs() < 1e-15);
        assert_eq!(c.max_relative_error_at, (1, 1));
        assert!((c.rms_relative_error - (r * r / 4.0).sqrt()).abs() < 1e-15);
        let mean = r / 4.0;
        let var = (3.0 * mean * mean + (r - mean) * (r - mean)) / 4.0;
        assert!((c.std_relative_error - var.sqrt()).abs() < 1e-15);
        // One ulp at 1 bit for 2.25 is 2^-1 * 2 = 1 < 1.25.
        assert_eq!(c.within_one_ulp, 0.75);

        // A negative error within one ulp: 2.0 for 2.25.
        let lut = Lut::from_table("hand", 1, vec![1.0, 1.5, 1.5, 2.0]).unwrap();
        let c = characterize_lut(&lut);
        assert!((c.max_relative_error + 1.0 / 9.0).abs() < 1e-15);
        assert_eq!(c.within_one_ulp, 1.0);
    }

    #[test]
    fn weighted_characterization_weights_each_pair_by_its_count() {
        // Same hand table: the wrong entry (1, 1) has relative error 5/9.
        let lut = Lut::from_table("hand", 1, vec![1.0, 1.5, 1.5, 3.5]).unwrap();
        let r = 1.25 / 2.25;
        // Counts 1, 0, 2, 3: the wrong pair has 3 of 6 products.
        let c = characterize_lut_weighted(&lut, &[1, 0, 2, 3]).unwrap();
        assert_eq!(c.pairs, 3);
        assert_eq!(c.error_rate, 0.5);
        assert!((c.mred - r * 3.0 / 6.0).abs() < 1e-15);
        assert!((c.mean_error - 1.25 * 3.0 / 6.0).abs() < 1e-15);
        let mean = r / 2.0;
        let var = (3.0 * mean * mean + 3.0 * (r - mean) * (r - mean)) / 6.0;
        assert!((c.std_relative_error - var.sqrt()).abs() < 1e-15);
        assert_eq!(c.within_one_ulp, 0.5);
        // A pair that never occurs does not count, even as the worst case.
        let c = characterize_lut_weighted(&lut, &[5, 1, 1, 0]).unwrap();
        assert_eq!((c.error_rate, c.max_relative_error), (0.0, 0.0));
        assert!(characterize_lut_weighted(&lut, &[0; 4]).is_err());
        assert!(characterize_lut_weighted(&lut, &[1; 3]).is_err());
    }

    #[test]
    fn weighted_characterization_with_equal_weights_is_the_uniform_one() {
        let seed = test_seed("weighted_characterization_with_equal_weights_is_the_uniform_one");
        let w = 1 + seed % 1000;
        let lut = Lut::build("mitchell", mitchell, 5).unwrap();
        let u = characterize_lut(&lut);
        let c = characterize_lut_weighted(&lut, &vec![w; 1 << 10]).unwrap();
        for (a, b) in [
            (u.mred, c.mred),
            (u.mean_relative_error, c.mean_relative_error),
            (u.error_rate, c.error_rate),
            (u.std_relative_error, c.std_relative_error),
            (u.within_one_ulp, c.within_one_ulp),
            (u.max_relative_error, c.max_relative_error),
        ] {
            assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
        }
        assert_eq!(u.pairs, c.pairs);
    }

    #[test]
    fn model_characterization_equals_table_characterization_when_exhaustive() {
        let lut = Lut::build("mitchell", mitchell, 6).unwrap();
        let from_lut = characterize_lut(&lut);
        let from_model = characterize_model("mitchell", mitchell, 6, 0, 0).unwrap();
        assert_eq!(from_lut, from_model);
    }

    #[test]
    fn sampled_characterization_above_11_bits_agrees_with_exhaustive_trend() {
        let seed = test_seed("sampled_characterization");
        let wide = characterize_model("mitchell", mitchell, 14, 200_000, seed).unwrap();
        assert!(!wide.exhaustive);
        assert_eq!(wide.pairs, 200_000);
        let narrow = characterize_model("mitchell", mitchell, 11, 0, 0).unwrap();
        // Mitchell's mean error converges as the width grows; 200k samples
        // estimate the mean to about 1e-4 (std of r is about 3e-2).
        assert!(
            (wide.mean_relative_error - narrow.mean_relative_error).abs() < 1e-3,
            "{} vs {}",
            wide.mean_relative_error,
            narrow.mean_relative_error
        );
        // Same seed, same numbers.
        let again = characterize_model("mitchell", mitchell, 14, 200_000, seed).unwrap();
        assert_eq!(wide, again);
    }

    #[test]
    fn model_output_outside_one_to_four_is_rejected_naming_the_pair() {
        fn bad(a: f32, b: f32, _bits: u32) -> f32 {
            if a > 1.5 && b > 1.5 {
                4.5
            } else {
                a * b
            }
        }
        let err = characterize_model("bad", bad, 3, 0, 0).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("'bad'") && msg.contains("[5][5]"), "{msg}");
        let err = characterize_model("bad", bad, 24, 10, 0).unwrap_err();
        assert!(err.to_string().contains("24"), "{err}");
    }

    #[test]
    fn csv_files_have_named_columns_and_one_row_per_entry() {
        let dir = tempfile::tempdir().unwrap();
        let lut = Lut::build("mitchell", mitchell, 3).unwrap();
        let c = characterize_lut(&lut);
        let summary = dir.path().join("summary.csv");
        write_csv(&[(c.clone(), Some(&lut))], &summary).unwrap();
        let text = std::fs::read_to_string(&summary).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], CSV_COLUMNS.join(","));
        let fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(fields[0], "mitchell");
        assert_eq!(fields[1], "3");
        let mred: f64 = fields[8].parse().unwrap();
        assert_eq!(mred, c.mred);
        // Mitchell at 3 bits truncates nothing below the top 3 bits.
        assert_eq!(fields[15], "true");

        let pairs = dir.path().join("pairs.csv");
        write_pairs_csv(&lut, &pairs).unwrap();
        let text = std::fs::read_to_string(&pairs).unwrap();
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|f| f.parse().unwrap()).collect())
            .collect();
        assert_eq!(rows.len(), 64);
        let rel = relative_errors(&lut);
        for (k, row) in rows.iter().enumerate() {
            assert_eq!(row[0] as usize, k >> 3);
            assert_eq!(row[1] as usize, k & 7);
            assert_eq!(row[4], lut.table()[k] as f64);
            assert!((row[7] - rel[k]).abs() <= 1e-12 * rel[k].abs().max(1e-300));
        }
        let wide = Lut::build("exact", exact, 9).unwrap();
        assert!(write_pairs_csv(&wide, &pairs).is_err());
    }
}
