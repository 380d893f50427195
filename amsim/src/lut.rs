//! Lookup tables over mantissa pairs.

use crate::{AmsimError, ModelFn, Result};

/// Largest supported table width: 2^22 entries (16 MiB).
pub const MAX_LUT_BITS: u32 = 11;

/// A model tabulated at `bits` mantissa bits: `2^(2 bits)` entries
/// `L[i][j] = model(1 + i/2^bits, 1 + j/2^bits, bits)`, stored `i` major
/// (index `(i << bits) | j`), each a normal float in [1, 4). The first
/// operand of a product is the row index.
#[derive(Debug, Clone, PartialEq)]
pub struct Lut {
    bits: u32,
    model: String,
    table: Vec<f32>,
}

/// Check that `bits` is a supported table width.
pub fn check_bits(bits: u32) -> Result<()> {
    if (1..=MAX_LUT_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(AmsimError::BitsOutOfRange {
            bits,
            max: MAX_LUT_BITS,
        })
    }
}

/// The operand value `1 + t / 2^bits` of table index `t`.
#[inline]
pub fn operand(t: u32, bits: u32) -> f32 {
    f32::from_bits(0x3f80_0000 | (t << (23 - bits)))
}

impl Lut {
    /// Tabulate `model` at `bits` mantissa bits, validating every entry.
    pub fn build(name: &str, model: ModelFn, bits: u32) -> Result<Lut> {
        check_bits(bits)?;
        let n = 1u32 << bits;
        let mut table = Vec::with_capacity((n * n) as usize);
        for i in 0..n {
            let a = operand(i, bits);
            for j in 0..n {
                table.push(model(a, operand(j, bits), bits));
            }
        }
        Lut::from_table(name, bits, table)
    }

    /// Wrap an existing table (from a file, say), validating every entry.
    pub fn from_table(name: &str, bits: u32, table: Vec<f32>) -> Result<Lut> {
        check_bits(bits)?;
        let n = 1usize << bits;
        if table.len() != n * n {
            return Err(AmsimError::Other(format!(
                "a {bits}-bit table has {} entries, got {}",
                n * n,
                table.len()
            )));
        }
        for (idx, &v) in table.iter().enumerate() {
            if !(v.is_normal() && (1.0..4.0).contains(&v)) {
                let (ta, tb) = ((idx >> bits) as u32, (idx & (n - 1)) as u32);
                return Err(AmsimError::BadModelOutput {
                    model: name.to_string(),
                    bits,
                    ta,
                    tb,
                    a: operand(ta, bits),
                    b: operand(tb, bits),
                    value: v,
                });
            }
        }
        Ok(Lut {
            bits,
            model: name.to_string(),
            table,
        })
    }

    /// Mantissa bits per operand.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Name of the model the table was built from.
    pub fn model_name(&self) -> &str {
        &self.model
    }

    /// All entries, `i` major.
    pub fn table(&self) -> &[f32] {
        &self.table
    }

    /// Entry `L[ta][tb]`.
    #[inline]
    pub fn get(&self, ta: u32, tb: u32) -> f32 {
        self.table[((ta << self.bits) | tb) as usize]
    }
}
