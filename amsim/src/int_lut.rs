//! Tables of 8-bit integer multipliers and their files.
//!
//! An [`IntLut`] holds the product of every pair of 8-bit operand codes:
//! 256 x 256 entries, index `(a as u8) << 8 | (b as u8)` (the operand's
//! two's-complement byte for a signed model, its value for an unsigned
//! one), the first operand major. Entries are `i32` so that the engines add
//! them to `i32` sums without a conversion; each lies in the model's 16-bit
//! product range.
//!
//! # File format (`.ilut`)
//!
//! All integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `AMSIMI8L` |
//! | 8 | 4 | format version (`u32`, currently 1) |
//! | 12 | 4 | signed operands (`u32`, 0 or 1) |
//! | 16 | 4 | model name length `n` (`u32`, at most [`MAX_NAME_LEN`]) |
//! | 20 | n | model name, UTF-8 |
//! | 20+n | 8 | checksum: FNV-1a 64 over the entry bytes that follow |
//! | 28+n | 4 * 65536 | entries as `i32`, first operand major |

use std::fs;
use std::path::Path;

use crate::lut_file::{
    bad, fnv1a64, io_err, read_u32, table_file_bytes, table_file_payload, write_whole, MAX_NAME_LEN,
};
use crate::model::{operand_range, product_range};
use crate::{AmsimError, IntModelFn, IntModelInfo, Result};

/// Entries of an 8-bit integer table.
pub const INT_LUT_ENTRIES: usize = 256 * 256;
/// Magic bytes that open an integer table file.
pub const INT_MAGIC: &[u8; 8] = b"AMSIMI8L";
/// The integer table format version this crate writes and reads.
pub const INT_FORMAT_VERSION: u32 = 1;
/// Size of the fixed header before the name.
const HEADER_FIXED: usize = 8 + 4 + 4 + 4;

/// An 8-bit integer multiplier tabulated over all operand pairs.
#[derive(Debug, Clone)]
pub struct IntLut {
    model: String,
    signed: bool,
    table: Vec<i32>,
    /// [`IntLut::transposed`], built on first use (the engines ask for it
    /// on every product; building it costs about as much as a small one).
    transposed: std::sync::OnceLock<Box<IntLut>>,
}

impl PartialEq for IntLut {
    /// The same model and entries (whether the transpose was built yet
    /// does not matter).
    fn eq(&self, other: &IntLut) -> bool {
        (&self.model, self.signed, &self.table) == (&other.model, other.signed, &other.table)
    }
}

/// `int8s` or `int8u`, for messages.
pub fn kind_name(signed: bool) -> &'static str {
    if signed {
        "int8s"
    } else {
        "int8u"
    }
}

/// The table index of the operand pair `(a, b)` (values in the operand
/// range; only their low bytes are used).
#[inline]
pub fn index(a: i32, b: i32) -> usize {
    ((a as u8 as usize) << 8) | b as u8 as usize
}

/// The operand value of the code `c` (0..=255).
#[inline]
pub fn operand_value(c: usize, signed: bool) -> i32 {
    if signed {
        c as u8 as i8 as i32
    } else {
        c as i32
    }
}

impl IntLut {
    /// Tabulate a registered integer model.
    pub fn of(model: &IntModelInfo) -> Result<IntLut> {
        IntLut::build(model.name, model.signed, model.func)
    }

    /// Tabulate `func` over all operand pairs, validating every product.
    pub fn build(name: &str, signed: bool, func: IntModelFn) -> Result<IntLut> {
        let table = (0..INT_LUT_ENTRIES)
            .map(|k| {
                func(
                    operand_value(k >> 8, signed),
                    operand_value(k & 255, signed),
                )
            })
            .collect();
        IntLut::from_table(name, signed, table)
    }

    /// Wrap an existing table (from a file, say), validating its size and
    /// every entry.
    pub fn from_table(name: &str, signed: bool, table: Vec<i32>) -> Result<IntLut> {
        if table.len() != INT_LUT_ENTRIES {
            return Err(AmsimError::Other(format!(
                "an 8-bit integer table has {INT_LUT_ENTRIES} entries (256 x 256), got {}",
                table.len()
            )));
        }
        let range = product_range(signed);
        if let Some(k) = table.iter().position(|v| !range.contains(v)) {
            return Err(AmsimError::BadIntModelOutput {
                model: name.to_string(),
                kind: kind_name(signed),
                a: operand_value(k >> 8, signed),
                b: operand_value(k & 255, signed),
                value: table[k],
                lo: *range.start(),
                hi: *range.end(),
            });
        }
        Ok(IntLut {
            model: name.to_string(),
            signed,
            table,
            transposed: Default::default(),
        })
    }

    /// Name of the model the table was built from.
    pub fn model_name(&self) -> &str {
        &self.model
    }

    /// Whether the operands are signed (-128..=127) or unsigned (0..=255).
    pub fn signed(&self) -> bool {
        self.signed
    }

    /// The operand values of the table.
    pub fn operand_range(&self) -> std::ops::RangeInclusive<i32> {
        operand_range(self.signed)
    }

    /// All entries, first operand major ([`index`]).
    pub fn table(&self) -> &[i32] {
        &self.table
    }

    /// The approximate product of operand values `a` and `b`.
    #[inline]
    pub fn mul(&self, a: i32, b: i32) -> i32 {
        self.table[index(a, b)]
    }

    /// The table with its operands swapped: `T'[b][a] = T[a][b]`, for a
    /// product lowered with the second operand as the GEMM's first.
    /// Built once per table and kept.
    pub fn transposed(&self) -> &IntLut {
        self.transposed.get_or_init(|| {
            let mut table = vec![0; INT_LUT_ENTRIES];
            for (k, &v) in self.table.iter().enumerate() {
                table[((k & 255) << 8) | (k >> 8)] = v;
            }
            Box::new(IntLut {
                model: self.model.clone(),
                signed: self.signed,
                table,
                transposed: Default::default(),
            })
        })
    }

    /// The table for operands coded as two's complement (`a_signed`,
    /// `b_signed`) or unsigned values. A signed model's table is itself
    /// (its operands are two's complement). An unsigned model multiplies
    /// magnitudes, and a two's-complement operand takes it in
    /// sign-magnitude, as a signed array built around an unsigned core does
    /// (`mul8s_trunc4` around `mul8u_trunc4`): `T[a][b] = sign(a)·sign(b)·
    /// U[|a|][|b|]`. Such entries may reach ±65535 (sums wrap past 32768
    /// of them).
    pub fn with_signs(&self, a_signed: bool, b_signed: bool) -> IntLut {
        if self.signed || !(a_signed || b_signed) {
            return self.clone();
        }
        let split = |c: usize, signed: bool| -> (i32, usize) {
            let v = operand_value(c, signed);
            (if v < 0 { -1 } else { 1 }, v.unsigned_abs() as usize)
        };
        let table = (0..INT_LUT_ENTRIES)
            .map(|k| {
                let (sa, ma) = split(k >> 8, a_signed);
                let (sb, mb) = split(k & 255, b_signed);
                sa * sb * self.table[(ma << 8) | mb]
            })
            .collect();
        IntLut {
            model: self.model.clone(),
            signed: true,
            table,
            transposed: Default::default(),
        }
    }

    /// The checksum a file stores (FNV-1a 64 of the entry bytes).
    pub fn checksum(&self) -> u64 {
        fnv1a64(&self.entry_bytes())
    }

    fn entry_bytes(&self) -> Vec<u8> {
        self.table.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// The file image of the table.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        table_file_bytes(
            INT_MAGIC,
            INT_FORMAT_VERSION,
            u32::from(self.signed),
            &self.model,
            &self.entry_bytes(),
        )
    }

    /// Write the table to `path` (whole: temp file + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_whole(path, &self.to_bytes()?)
    }

    /// Parse a file image; `path` only names the file in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<IntLut> {
        if !bytes.starts_with(INT_MAGIC) {
            return Err(bad(
                path,
                "wrong magic: not an integer table file (AMSIMI8L); write one with `approxtrain lut build --model MODEL` for an integer model",
            ));
        }
        if bytes.len() < HEADER_FIXED {
            return Err(bad(
                path,
                format!("truncated header: {} bytes", bytes.len()),
            ));
        }
        let version = read_u32(bytes, 8);
        if version != INT_FORMAT_VERSION {
            return Err(bad(
                path,
                format!("unsupported format version {version} (this build reads version {INT_FORMAT_VERSION})"),
            ));
        }
        let signed = match read_u32(bytes, 12) {
            0 => false,
            1 => true,
            v => return Err(bad(path, format!("signedness flag {v} is not 0 or 1"))),
        };
        let (model, entries) = table_file_payload(
            bytes,
            path,
            4 * INT_LUT_ENTRIES,
            "an 8-bit integer table (256 x 256 entries)",
        )?;
        let table = entries
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        IntLut::from_table(&model, signed, table).map_err(|e| bad(path, e.to_string()))
    }

    /// Read a table file.
    pub fn read(path: &Path) -> Result<IntLut> {
        let len = fs::metadata(path).map_err(|e| io_err(path, e))?.len();
        let most = (HEADER_FIXED + MAX_NAME_LEN as usize + 8 + 4 * INT_LUT_ENTRIES) as u64;
        if len > most {
            return Err(bad(
                path,
                format!("is {len} bytes, larger than any integer table ({most} bytes at most); is it the right file?"),
            ));
        }
        IntLut::parse(&fs::read(path).map_err(|e| io_err(path, e))?, path)
    }
}

/// Whether a file image is an integer table (by its magic).
pub fn is_int_table(bytes: &[u8]) -> bool {
    bytes.starts_with(INT_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::test_seed;
    use rand::{Rng, SeedableRng};

    fn exact(a: i32, b: i32) -> i32 {
        a * b
    }

    /// Products shifted up by 1000: the first above 65535 is 254 x 255.
    fn too_wide(a: i32, b: i32) -> i32 {
        a * b + 1000
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("amsim-int-lut-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn int_lut_entries_are_the_products_of_their_operand_codes() {
        let seed = test_seed("int_lut_entries_are_the_products_of_their_operand_codes");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for signed in [false, true] {
            let lut = IntLut::build("exact", signed, exact).unwrap();
            for _ in 0..10_000 {
                let r = operand_range(signed);
                let (a, b) = (rng.gen_range(r.clone()), rng.gen_range(r));
                assert_eq!(lut.mul(a, b), a * b, "seed {seed}: {a} x {b}");
            }
            assert_eq!(lut.table().len(), INT_LUT_ENTRIES);
        }
    }

    #[test]
    fn transposed_table_swaps_the_operands_and_equality_ignores_whether_it_was_built() {
        let seed = test_seed(
            "transposed_table_swaps_the_operands_and_equality_ignores_whether_it_was_built",
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let table = (0..INT_LUT_ENTRIES)
            .map(|_| rng.gen_range(-32768..=32767))
            .collect();
        let lut = IntLut::from_table("random", true, table).unwrap();
        let fresh = lut.clone();
        let t = lut.transposed();
        for _ in 0..10_000 {
            let (a, b) = (rng.gen_range(-128..=127), rng.gen_range(-128..=127));
            assert_eq!(t.mul(b, a), lut.mul(a, b), "seed {seed}: {a} x {b}");
        }
        assert_eq!(t.transposed(), &lut, "seed {seed}");
        assert!(std::ptr::eq(lut.transposed(), t), "built once");
        assert_eq!(lut, fresh);
    }

    #[test]
    fn unsigned_tables_take_twos_complement_operands_in_sign_magnitude() {
        let seed = test_seed("unsigned_tables_take_twos_complement_operands_in_sign_magnitude");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let table = (0..INT_LUT_ENTRIES)
            .map(|_| rng.gen_range(0..=65535))
            .collect();
        let u = IntLut::from_table("random", false, table).unwrap();
        assert_eq!(u.with_signs(false, false), u);
        for _ in 0..1000 {
            let (a, b) = (rng.gen_range(-128..=127i32), rng.gen_range(-128..=127i32));
            let c = rng.gen_range(0..=255);
            let sign = |v: i32| if v < 0 { -1 } else { 1 };
            let want = sign(a) * sign(b) * u.mul(a.abs(), b.abs());
            assert_eq!(
                u.with_signs(true, true).mul(a, b),
                want,
                "seed {seed}: {a} x {b}"
            );
            assert_eq!(
                u.with_signs(false, true).mul(c, b),
                sign(b) * u.mul(c, b.abs()),
                "seed {seed}: {c} x {b}"
            );
        }
        let s = IntLut::build("exact", true, exact).unwrap();
        assert_eq!(s.with_signs(true, false), s, "a signed table is its own");
    }

    #[test]
    fn int_lut_file_round_trips_and_rejects_damage() {
        let lut = IntLut::build("exact8s", true, exact).unwrap();
        let path = scratch("exact8s.ilut");
        lut.write(&path).unwrap();
        assert_eq!(IntLut::read(&path).unwrap(), lut);

        let bytes = fs::read(&path).unwrap();
        let short = &bytes[..bytes.len() - 4];
        let err = IntLut::parse(short, &path).unwrap_err().to_string();
        assert!(
            err.contains("truncated") && err.contains("exact8s.ilut"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);

        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let err = IntLut::parse(&flipped, &path).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");

        let err = IntLut::parse(b"AMSIMLUT....", &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an integer table"), "{err}");
        fs::remove_file(&path).unwrap();
    }

    #[test]
    fn int_lut_rejects_products_outside_the_16_bit_range_and_wrong_sizes() {
        let err = IntLut::build("wide", false, too_wide)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'wide'")
                && err.contains("65770 for the operands (254, 255)")
                && err.contains("0..=65535"),
            "{err}"
        );
        let err = IntLut::from_table("small", true, vec![0; 1000])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("65536 entries") && err.contains("1000"),
            "{err}"
        );
        assert!(
            IntLut::build("wide", true, too_wide).is_ok(),
            "signed products stay within i16 here"
        );
    }
}
