//! Error metrics of integer multipliers and their check against the C
//! model.
//!
//! Over all operand pairs `(a, b)` of an 8-bit table (65536) or a 12-bit
//! one (16M), or over random pairs of a 16-bit model (2^32 pairs are too
//! many to call the model for), with the approximate product `p`, the exact
//! product `x = a b` and the error `e = p - x`:
//!
//! | field | definition |
//! |---|---|
//! | `mae` | mean `abs(e)` (mean error distance) |
//! | `mae_percent` | `mae` as a share of the exact products' range, `2^(2n)` for `n`-bit operands (EvoApprox's MAE%) |
//! | `mred` | mean `abs(e) / abs(x)` over the pairs with `x != 0` (zero products have no relative error) |
//! | `wce` | largest `abs(e)` (worst-case error), first at `wce_at` |
//! | `error_probability` | share of pairs with `p != x` |
//! | `bias` | mean `e` |
//! | `mse` | mean `e^2` |
//!
//! These are the metrics of the EvoApprox library (Mrazek et al.,
//! "EvoApproxSb: Library of approximate adders and multipliers for circuit
//! design and benchmarking of approximation methods", DATE 2017).
//!
//! The sums of errors are exact integers and the relative errors are added
//! per row of the table in operand order, the rows then in order, so the
//! metrics are the same at any thread count.

use std::path::Path;

use crate::int_lut::{index, operand_value, IntLut, INT_LUT_ENTRIES};
use crate::int_wide::WideIntMul;
use crate::lut_file::write_whole;
use crate::metrics::ErrorGrid;
use crate::{AmsimError, IntModelFn, Result, WideIntModelFn};
use rayon::prelude::*;

/// Error metrics of an integer table; see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct IntCharacterization {
    /// Model name.
    pub model: String,
    /// Operand width: 8, 12 or 16.
    pub bits: u32,
    /// Signed or unsigned operands.
    pub signed: bool,
    /// Operand pairs measured: all of them for 8 and 12 bits, a random
    /// sample for 16.
    pub pairs: u64,
    /// Mean absolute error.
    pub mae: f64,
    /// `mae` in percent of `2^(2·bits)`.
    pub mae_percent: f64,
    /// Mean relative error distance over non-zero exact products.
    pub mred: f64,
    /// Worst-case absolute error.
    pub wce: i64,
    /// First operand pair `(a, b)` with the worst-case error.
    pub wce_at: (i32, i32),
    /// Share of pairs with any error.
    pub error_probability: f64,
    /// Mean signed error.
    pub bias: f64,
    /// Mean squared error.
    pub mse: f64,
}

/// Running sums of the metrics over pairs met in a fixed order.
#[derive(Debug, Clone, Copy, Default)]
struct ErrorSums {
    pairs: u64,
    sum_abs: i128,
    sum: i128,
    sum_sq: i128,
    sum_rel: f64,
    nonzero: u64,
    wrong: u64,
    /// The worst error and its first pair.
    wce: Option<(i64, (i32, i32))>,
}

impl ErrorSums {
    #[inline]
    fn add(&mut self, a: i32, b: i32, p: i64) {
        let x = i64::from(a) * i64::from(b);
        let e = p - x;
        let abs = e.abs();
        self.pairs += 1;
        self.sum_abs += i128::from(abs);
        self.sum += i128::from(e);
        self.sum_sq += i128::from(e) * i128::from(e);
        if x != 0 {
            self.nonzero += 1;
            self.sum_rel += abs as f64 / x.abs() as f64;
        }
        if e != 0 {
            self.wrong += 1;
        }
        if self.wce.is_none_or(|(w, _)| abs > w) {
            self.wce = Some((abs, (a, b)));
        }
    }

    /// The sums of `self`'s pairs followed by `later`'s.
    fn then(self, later: ErrorSums) -> ErrorSums {
        ErrorSums {
            pairs: self.pairs + later.pairs,
            sum_abs: self.sum_abs + later.sum_abs,
            sum: self.sum + later.sum,
            sum_sq: self.sum_sq + later.sum_sq,
            sum_rel: self.sum_rel + later.sum_rel,
            nonzero: self.nonzero + later.nonzero,
            wrong: self.wrong + later.wrong,
            wce: match (self.wce, later.wce) {
                (Some(w), Some(l)) if l.0 > w.0 => Some(l),
                (None, l) => l,
                (w, _) => w,
            },
        }
    }

    fn finish(self, model: &str, bits: u32, signed: bool) -> IntCharacterization {
        let n = self.pairs.max(1) as f64;
        let (wce, wce_at) = self.wce.unwrap_or((0, (0, 0)));
        IntCharacterization {
            model: model.to_string(),
            bits,
            signed,
            pairs: self.pairs,
            mae: self.sum_abs as f64 / n,
            mae_percent: 100.0 * self.sum_abs as f64 / n / (2.0f64).powi(2 * bits as i32),
            mred: if self.nonzero == 0 {
                0.0
            } else {
                self.sum_rel / self.nonzero as f64
            },
            wce,
            wce_at,
            error_probability: self.wrong as f64 / n,
            bias: self.sum as f64 / n,
            mse: self.sum_sq as f64 / n,
        }
    }
}

/// The metrics of the products `product(a, b)` of every pair of `values`
/// (`a` major), rows in parallel, combined in row order.
fn characterize_all_pairs(
    model: &str,
    bits: u32,
    signed: bool,
    values: &[i32],
    product: impl Fn(i32, i32) -> i64 + Sync,
) -> IntCharacterization {
    let rows: Vec<ErrorSums> = values
        .par_iter()
        .map(|&a| {
            let mut row = ErrorSums::default();
            for &b in values {
                row.add(a, b, product(a, b));
            }
            row
        })
        .collect();
    rows.into_iter()
        .fold(ErrorSums::default(), ErrorSums::then)
        .finish(model, bits, signed)
}

/// Characterize an 8-bit integer table over all operand pairs.
pub fn characterize_int_lut(lut: &IntLut) -> IntCharacterization {
    let values: Vec<i32> = lut.operand_range().collect();
    // Pairs in table order: operand codes 0..=255 (two's complement).
    let mut in_code_order = values.clone();
    in_code_order.sort_by_key(|&v| v as u8);
    characterize_all_pairs(lut.model_name(), 8, lut.signed(), &in_code_order, |a, b| {
        i64::from(lut.mul(a, b))
    })
}

/// Characterize a 12- or 16-bit model: over all pairs of a 12-bit table,
/// over `samples` random pairs (from `seed`) of a 16-bit model.
pub fn characterize_wide(mul: &WideIntMul, samples: u64, seed: u64) -> IntCharacterization {
    let r = mul.operand_range();
    if mul.is_table() {
        let values: Vec<i32> = r.collect();
        return characterize_all_pairs(
            mul.model_name(),
            mul.bits(),
            mul.signed(),
            &values,
            |a, b| mul.mul(a, b),
        );
    }
    use rand::{Rng, SeedableRng};
    // Chunks of pairs from their own seeds: the same pairs at any thread
    // count.
    const CHUNK: u64 = 1 << 16;
    let chunks: Vec<ErrorSums> = (0..samples.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                seed ^ c.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let mut sums = ErrorSums::default();
            for _ in 0..CHUNK.min(samples - c * CHUNK) {
                let (a, b) = (rng.gen_range(r.clone()), rng.gen_range(r.clone()));
                sums.add(a, b, mul.mul(a, b));
            }
            sums
        })
        .collect();
    chunks
        .into_iter()
        .fold(ErrorSums::default(), ErrorSums::then)
        .finish(mul.model_name(), mul.bits(), mul.signed())
}

/// Column names of the integer summary CSV, in order.
pub const INT_CSV_COLUMNS: [&str; 11] = [
    "model",
    "kind",
    "mae",
    "mae_percent",
    "mred",
    "wce",
    "wce_a",
    "wce_b",
    "error_probability",
    "bias",
    "mse",
];

impl IntCharacterization {
    /// The values of one CSV row, in [`INT_CSV_COLUMNS`] order.
    pub fn csv_record(&self) -> Vec<String> {
        vec![
            self.model.clone(),
            crate::int_wide::kind_name(self.bits, self.signed),
            format!("{:e}", self.mae),
            format!("{:e}", self.mae_percent),
            format!("{:e}", self.mred),
            self.wce.to_string(),
            self.wce_at.0.to_string(),
            self.wce_at.1.to_string(),
            format!("{:e}", self.error_probability),
            format!("{:e}", self.bias),
            format!("{:e}", self.mse),
        ]
    }
}

/// Write a summary CSV of integer characterizations, written whole.
pub fn write_int_csv(rows: &[IntCharacterization], path: &Path) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| {
        AmsimError::Other(format!("{}: cannot write CSV: {e}", path.display()))
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(INT_CSV_COLUMNS).map_err(|e| err(&e))?;
    for c in rows {
        w.write_record(c.csv_record()).map_err(|e| err(&e))?;
    }
    let bytes = w.into_inner().map_err(|e| err(&e))?;
    write_whole(path, &bytes)
}

/// The signed errors `p - a b` of the table on a 256 x 256 grid, row `a`
/// and column `b` in increasing operand value (for a signed table row 0 is
/// a = -128): what the heat map draws.
pub fn int_error_grid(lut: &IntLut) -> ErrorGrid {
    let signed = lut.signed();
    let lo = *lut.operand_range().start();
    let mut values = Vec::with_capacity(INT_LUT_ENTRIES);
    for i in 0..256 {
        for j in 0..256 {
            let (a, b) = (lo + i, lo + j);
            values.push((lut.mul(a, b) - a * b) as f64);
        }
    }
    debug_assert!(signed || lo == 0);
    ErrorGrid {
        cells: 256,
        block: 1,
        values,
    }
}

/// The signed errors `p - a b` of a 12-bit table on a 256 x 256 grid of
/// 16 x 16 blocks, each the mean of its block, rows (`a`) and columns in
/// increasing operand value; `None` for a model without a table.
pub fn wide_error_grid(mul: &WideIntMul) -> Option<ErrorGrid> {
    mul.table()?;
    let lo = *mul.operand_range().start();
    let side = 1usize << mul.bits();
    let cells = 256;
    let block = side / cells;
    let values = (0..cells * cells)
        .into_par_iter()
        .map(|cell| {
            let (ci, cj) = (cell / cells, cell % cells);
            let mut sum = 0i64;
            for i in 0..block {
                for j in 0..block {
                    let a = lo + (ci * block + i) as i32;
                    let b = lo + (cj * block + j) as i32;
                    sum += mul.mul(a, b) - i64::from(a) * i64::from(b);
                }
            }
            sum as f64 / (block * block) as f64
        })
        .collect();
    Some(ErrorGrid {
        cells,
        block,
        values,
    })
}

/// Compare every entry of a 12-bit table with the model called directly
/// (`None` for a model without a table: its products are the model's).
pub fn verify_wide(mul: &WideIntMul, model: WideIntModelFn) -> Option<IntVerifyReport> {
    let table = mul.table()?;
    let r = mul.operand_range();
    let values: Vec<i32> = r.collect();
    let side = values.len();
    let rows: Vec<(u64, Option<Mismatch>)> = values
        .par_iter()
        .map(|&a| {
            let mut row = (0u64, None);
            for &b in &values {
                let mask = (side - 1) as u32;
                let t = i64::from(
                    table
                        [(((a as u32 & mask) as usize) << mul.bits()) | (b as u32 & mask) as usize],
                );
                let m = model(a, b);
                if t != m {
                    row.0 += 1;
                    row.1.get_or_insert((a, b, t, m));
                }
            }
            row
        })
        .collect();
    Some(IntVerifyReport {
        model: mul.model_name().to_string(),
        pairs: (side * side) as u64,
        mismatches: rows.iter().map(|r| r.0).sum(),
        first_mismatch: rows.iter().find_map(|r| r.1),
    })
}

/// A pair whose table entry and model product differ: `(a, b, table,
/// model)`.
pub type Mismatch = (i32, i32, i64, i64);

/// The result of checking a table against its C model.
#[derive(Debug, Clone, PartialEq)]
pub struct IntVerifyReport {
    /// Model name.
    pub model: String,
    /// Pairs compared (all of them).
    pub pairs: u64,
    /// Pairs where the table and the model differ.
    pub mismatches: u64,
    /// The first differing pair.
    pub first_mismatch: Option<Mismatch>,
}

/// Compare every entry of `lut` with the model called directly.
pub fn verify_int_lut(lut: &IntLut, model: IntModelFn) -> IntVerifyReport {
    let signed = lut.signed();
    let mut mismatches = 0;
    let mut first_mismatch = None;
    for k in 0..INT_LUT_ENTRIES {
        let (a, b) = (
            operand_value(k >> 8, signed),
            operand_value(k & 255, signed),
        );
        let (t, m) = (lut.table()[index(a, b)], model(a, b));
        if t != m {
            mismatches += 1;
            first_mismatch.get_or_insert((a, b, i64::from(t), i64::from(m)));
        }
    }
    IntVerifyReport {
        model: lut.model_name().to_string(),
        pairs: INT_LUT_ENTRIES as u64,
        mismatches,
        first_mismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Truncation of the product's lowest 4 bits: e = -(x mod 16) for x >= 0.
    fn floor16(a: i32, b: i32) -> i32 {
        (a * b) & !15
    }

    #[test]
    fn metrics_of_the_exact_table_are_zero() {
        let c = characterize_int_lut(&IntLut::build("exact", true, |a, b| a * b).unwrap());
        assert_eq!(
            (c.mae, c.mred, c.wce, c.error_probability, c.bias, c.mse),
            (0.0, 0.0, 0, 0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn metrics_of_product_truncation_match_a_direct_count() {
        let lut = IntLut::build("floor16", false, floor16).unwrap();
        let c = characterize_int_lut(&lut);
        let mut errors = Vec::new();
        let mut rel = Vec::new();
        for a in 0..256 {
            for b in 0..256 {
                let e = ((a * b) % 16) as f64;
                errors.push(e);
                if a * b != 0 {
                    rel.push(e / (a * b) as f64);
                }
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!((c.mae - mean(&errors)).abs() < 1e-12);
        assert!(
            (c.bias + mean(&errors)).abs() < 1e-12,
            "truncation is biased low"
        );
        assert!((c.mred - mean(&rel)).abs() < 1e-12);
        assert_eq!(c.wce, 15);
        // The first pair (a major) with a b = 15 mod 16: 1 x 15.
        assert_eq!(c.wce_at, (1, 15));
        let wrong = errors.iter().filter(|&&e| e != 0.0).count() as f64;
        assert!((c.error_probability - wrong / 65536.0).abs() < 1e-12);
    }

    #[test]
    fn verify_finds_the_first_entry_that_differs_from_the_model() {
        let mut table = IntLut::build("exact", true, |a, b| a * b)
            .unwrap()
            .table()
            .to_vec();
        table[index(-3, 5)] += 1;
        let lut = IntLut::from_table("exact", true, table).unwrap();
        let r = verify_int_lut(&lut, |a, b| a * b);
        assert_eq!(r.mismatches, 1);
        assert_eq!(r.first_mismatch, Some((-3, 5, -14, -15)));
    }

    /// The 12-bit product with its 4 lowest bits cleared (two's complement:
    /// rounded down), as a model.
    fn floor16_12s(a: i32, b: i32) -> i64 {
        i64::from((a * b) & !15)
    }

    #[test]
    fn wide_metrics_cover_every_pair_of_a_12_bit_table_and_match_a_direct_count() {
        let mul = WideIntMul::new("floor16", 12, true, floor16_12s).unwrap();
        let c = characterize_wide(&mul, 0, 0);
        assert_eq!((c.bits, c.pairs), (12, 4096 * 4096));
        let (mut sum, mut wrong, mut rel, mut nonzero) = (0i64, 0u64, 0f64, 0u64);
        let mut wce = (0i64, (0, 0));
        for a in -2048..2048i32 {
            for b in -2048..2048i32 {
                let x = i64::from(a * b);
                let e = floor16_12s(a, b) - x;
                sum += e;
                wrong += u64::from(e != 0);
                if x != 0 {
                    nonzero += 1;
                    rel += e.abs() as f64 / x.abs() as f64;
                }
                if e.abs() > wce.0 {
                    wce = (e.abs(), (a, b));
                }
            }
        }
        let n = (4096 * 4096) as f64;
        assert!((c.bias - sum as f64 / n).abs() < 1e-12, "{c:?}");
        assert!(
            (c.mae + c.bias).abs() < 1e-12,
            "rounding down: e <= 0 everywhere"
        );
        assert!((c.error_probability - wrong as f64 / n).abs() < 1e-12);
        assert!((c.mred - rel / nonzero as f64).abs() < 1e-12 * c.mred.max(1.0));
        assert_eq!((c.wce, c.wce_at), wce);
        assert!((c.mae_percent - 100.0 * c.mae / 2f64.powi(24)).abs() < 1e-15);
        // The same at any thread count.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(pool.install(|| characterize_wide(&mul, 0, 0)), c);
        let g = wide_error_grid(&mul).unwrap();
        assert_eq!((g.cells, g.block, g.values.len()), (256, 16, 65536));
        assert!(g.values.iter().all(|&v| (-15.0..=0.0).contains(&v)));
    }

    #[test]
    fn wide_metrics_of_16_bit_models_sample_pairs_reproducibly() {
        let exact =
            WideIntMul::new("exact", 16, false, |a, b| i64::from(a) * i64::from(b)).unwrap();
        let c = characterize_wide(&exact, 100_000, 7);
        assert_eq!(
            (c.pairs, c.wce, c.mae, c.error_probability),
            (100_000, 0, 0.0, 0.0)
        );
        let floor = WideIntMul::new("floor", 16, true, |a, b| {
            (i64::from(a) * i64::from(b)) & !255
        })
        .unwrap();
        let (c, again) = (
            characterize_wide(&floor, 100_000, 7),
            characterize_wide(&floor, 100_000, 7),
        );
        assert_eq!(c, again, "the same seed, the same pairs");
        assert!(c.wce <= 255 && c.wce > 200 && c.bias < -100.0, "{c:?}");
        assert!(wide_error_grid(&floor).is_none(), "no table to draw");
        assert!(verify_wide(&floor, |a, b| i64::from(a) * i64::from(b)).is_none());
    }

    #[test]
    fn verify_wide_finds_the_first_table_entry_that_differs_from_the_model() {
        let mul = WideIntMul::new("floor16", 12, true, floor16_12s).unwrap();
        let r = verify_wide(&mul, floor16_12s).unwrap();
        assert_eq!(
            (r.pairs, r.mismatches, r.first_mismatch),
            (4096 * 4096, 0, None)
        );
        // Against the exact product: the first pair (in operand order from
        // -2048) whose product is not a multiple of 16 is (-2047, -2047).
        let r = verify_wide(&mul, |a, b| i64::from(a * b)).unwrap();
        let (a, b, t, m) = r.first_mismatch.unwrap();
        assert_eq!((a, b, m), (-2047, -2047, 2047 * 2047));
        assert_eq!(t, m & !15);
        assert!(r.mismatches > 0);
    }

    #[test]
    fn error_grid_rows_run_in_increasing_operand_value() {
        let lut = IntLut::build("floor16", true, |a, b| (a * b) & !15).unwrap();
        let g = int_error_grid(&lut);
        // Row 0 is a = -128, column 255 is b = 127: -16256 is a multiple of 16.
        assert_eq!(g.values[255], 0.0);
        // a = -127 (row 1), b = 1 (column 129): -127 & !15 = -128, e = -1.
        assert_eq!(g.values[256 + 129], -1.0);
    }
}
