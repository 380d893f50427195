//! Error metrics of 8-bit integer multipliers and their check against the
//! C model.
//!
//! Over all 65536 operand pairs `(a, b)` of a table, with the approximate
//! product `p`, the exact product `x = a b` and the error `e = p - x`:
//!
//! | field | definition |
//! |---|---|
//! | `mae` | mean `abs(e)` (mean error distance) |
//! | `mae_percent` | `mae` as a share of the exact products' range, `2^16` (EvoApprox's MAE%) |
//! | `mred` | mean `abs(e) / abs(x)` over the pairs with `x != 0` (zero products have no relative error) |
//! | `wce` | largest `abs(e)` (worst-case error), first at `wce_at` |
//! | `error_probability` | share of pairs with `p != x` |
//! | `bias` | mean `e` |
//! | `mse` | mean `e^2` |
//!
//! These are the metrics of the EvoApprox library (Mrazek et al.,
//! "EvoApproxSb: Library of approximate adders and multipliers for circuit
//! design and benchmarking of approximation methods", DATE 2017).

use std::path::Path;

use crate::int_lut::{index, kind_name, operand_value, IntLut, INT_LUT_ENTRIES};
use crate::lut_file::write_whole;
use crate::metrics::ErrorGrid;
use crate::{AmsimError, IntModelFn, Result};

/// Error metrics of an integer table; see the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct IntCharacterization {
    /// Model name.
    pub model: String,
    /// Signed or unsigned operands.
    pub signed: bool,
    /// Mean absolute error.
    pub mae: f64,
    /// `mae` in percent of 2^16.
    pub mae_percent: f64,
    /// Mean relative error distance over non-zero exact products.
    pub mred: f64,
    /// Worst-case absolute error.
    pub wce: i32,
    /// First operand pair `(a, b)` with the worst-case error.
    pub wce_at: (i32, i32),
    /// Share of pairs with any error.
    pub error_probability: f64,
    /// Mean signed error.
    pub bias: f64,
    /// Mean squared error.
    pub mse: f64,
}

/// Characterize an integer table over all operand pairs.
pub fn characterize_int_lut(lut: &IntLut) -> IntCharacterization {
    let signed = lut.signed();
    let (mut sum_abs, mut sum, mut sum_sq, mut sum_rel) = (0f64, 0f64, 0f64, 0f64);
    let (mut nonzero, mut wrong) = (0u64, 0u64);
    let (mut wce, mut wce_at) = (0i32, (operand_value(0, signed), operand_value(0, signed)));
    for k in 0..INT_LUT_ENTRIES {
        let (a, b) = (
            operand_value(k >> 8, signed),
            operand_value(k & 255, signed),
        );
        let x = a * b;
        let e = lut.table()[k] - x;
        let abs = e.abs();
        sum_abs += abs as f64;
        sum += e as f64;
        sum_sq += (e as f64) * (e as f64);
        if x != 0 {
            nonzero += 1;
            sum_rel += abs as f64 / x.abs() as f64;
        }
        if e != 0 {
            wrong += 1;
        }
        if abs > wce {
            wce = abs;
            wce_at = (a, b);
        }
    }
    let n = INT_LUT_ENTRIES as f64;
    IntCharacterization {
        model: lut.model_name().to_string(),
        signed,
        mae: sum_abs / n,
        mae_percent: 100.0 * sum_abs / n / 65536.0,
        mred: sum_rel / nonzero as f64,
        wce,
        wce_at,
        error_probability: wrong as f64 / n,
        bias: sum / n,
        mse: sum_sq / n,
    }
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
            kind_name(self.signed).to_string(),
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

/// The result of checking a table against its C model.
#[derive(Debug, Clone, PartialEq)]
pub struct IntVerifyReport {
    /// Model name.
    pub model: String,
    /// Pairs compared (all of them).
    pub pairs: u64,
    /// Pairs where the table and the model differ.
    pub mismatches: u64,
    /// The first differing pair `(a, b, table, model)`.
    pub first_mismatch: Option<(i32, i32, i32, i32)>,
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
            first_mismatch.get_or_insert((a, b, t, m));
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
