//! LUT files: the native format and ApproxTrain's `.bin` tables.
//!
//! # Native format (`.lut`)
//!
//! All integers little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `AMSIMLUT` |
//! | 8 | 4 | format version (`u32`, currently 1) |
//! | 12 | 4 | bits `m` (`u32`, 1..=[`MAX_LUT_BITS`]) |
//! | 16 | 4 | model name length `n` (`u32`, at most [`MAX_NAME_LEN`]) |
//! | 20 | n | model name, UTF-8 |
//! | 20+n | 8 | checksum: FNV-1a 64 over the entry bytes that follow |
//! | 28+n | 4 * 4^m | entries `L[i][j]` as `f32`, `i` major |
//!
//! The file must end exactly after the last entry. FNV-1a is five lines of
//! code (Fowler, Noll and Vo; offset basis and prime from the published
//! parameters), enough to catch a corrupted or hand-edited table, so it is
//! written here rather than pulled in as a dependency.
//!
//! # ApproxTrain format (`.bin`, m <= 7)
//!
//! `4^m` bytes, entry `(i << m) | j`; each byte is `carry << 7 | f`, where
//! `carry` says the product is >= 2 and `f` is the top `m` fraction bits of
//! the product, right-aligned. This is what ApproxTrain's `lut/lut_gen.cc`
//! writes (Gong et al., ApproxTrain, 2023): it masks the product's fraction
//! with the top `m` bits, i.e. it *truncates* lower fraction bits. Export
//! here does the same, so that `exact` at 7 bits gives ApproxTrain's
//! `ACC_7.bin` byte for byte; [`approxtrain_first_lossy_entry`] tells whether
//! a table loses bits on export. Import reconstructs
//! `L = (1 + f / 2^m) * (carry ? 2 : 1)`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::lut::check_bits;
use crate::{AmsimError, Lut, Result, MAX_LUT_BITS};

/// Magic bytes that open a native LUT file.
pub const MAGIC: &[u8; 8] = b"AMSIMLUT";
/// The native format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Longest model name a native file may carry, in bytes.
pub const MAX_NAME_LEN: u32 = 255;
/// Widest table the ApproxTrain `.bin` format can hold (7 fraction bits and a
/// carry bit per byte).
pub const MAX_APPROXTRAIN_BITS: u32 = 7;

/// Size of the native header before the name: magic, version, bits, name
/// length.
const HEADER_FIXED: usize = 8 + 4 + 4 + 4;

pub(crate) fn bad(path: &Path, reason: impl Into<String>) -> AmsimError {
    AmsimError::BadLutFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

pub(crate) fn io_err(path: &Path, error: std::io::Error) -> AmsimError {
    AmsimError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// FNV-1a 64-bit hash of `bytes` (offset basis 0xcbf29ce484222325, prime
/// 0x100000001b3).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The little-endian bytes of the table entries.
fn entry_bytes(lut: &Lut) -> Vec<u8> {
    lut.table().iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The checksum a native file stores for `lut` (FNV-1a 64 of its entries).
pub fn checksum(lut: &Lut) -> u64 {
    fnv1a64(&entry_bytes(lut))
}

/// Write `bytes` to `path` whole: into a temporary file in the same
/// directory, then renamed over `path`, so a reader never sees a half file.
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| AmsimError::Other(format!("{}: not a file path", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    // Process id and a counter keep concurrent writers (processes or
    // threads) off each other's temporary files.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let k = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp_name.push(format!(".tmp{}-{k}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path, e));
    }
    Ok(())
}

/// The native file image of `lut`.
pub fn to_native_bytes(lut: &Lut) -> Result<Vec<u8>> {
    table_file_bytes(
        MAGIC,
        FORMAT_VERSION,
        lut.bits(),
        lut.model_name(),
        &entry_bytes(lut),
    )
}

/// The image of a table file of the layout shared by the native and the
/// integer formats: magic, version, one format field (`u32`), name length
/// and name, FNV-1a 64 checksum of the entries, entries.
pub(crate) fn table_file_bytes(
    magic: &[u8; 8],
    version: u32,
    field: u32,
    name: &str,
    entries: &[u8],
) -> Result<Vec<u8>> {
    let name_bytes = name.as_bytes();
    if name_bytes.len() > MAX_NAME_LEN as usize {
        return Err(AmsimError::Other(format!(
            "model name '{name}' is {} bytes long; a LUT file holds at most {MAX_NAME_LEN}",
            name_bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(HEADER_FIXED + name_bytes.len() + 8 + entries.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&field.to_le_bytes());
    out.extend_from_slice(&(name_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(name_bytes);
    out.extend_from_slice(&fnv1a64(entries).to_le_bytes());
    out.extend_from_slice(entries);
    Ok(out)
}

/// The name and the checksum-verified entries of a table file image (the
/// layout of [`table_file_bytes`], magic and version already checked),
/// given the size of its entries; errors name `path`.
pub(crate) fn table_file_payload<'a>(
    bytes: &'a [u8],
    path: &Path,
    entries_len: usize,
    what: &str,
) -> Result<(String, &'a [u8])> {
    let name_len = read_u32(bytes, 16);
    if name_len > MAX_NAME_LEN {
        return Err(bad(
            path,
            format!("model name length {name_len} exceeds the limit of {MAX_NAME_LEN} bytes"),
        ));
    }
    let name_end = HEADER_FIXED + name_len as usize;
    let entries_start = name_end + 8;
    let expected = entries_start + entries_len;
    if bytes.len() < expected {
        return Err(bad(
            path,
            format!(
                "truncated: {what} needs {expected} bytes, the file has {}",
                bytes.len()
            ),
        ));
    }
    if bytes.len() > expected {
        return Err(bad(
            path,
            format!(
                "{} trailing bytes after the entries of {what}",
                bytes.len() - expected
            ),
        ));
    }
    let model = std::str::from_utf8(&bytes[HEADER_FIXED..name_end])
        .map_err(|_| bad(path, "model name is not valid UTF-8"))?
        .to_string();
    let stored = u64::from_le_bytes(bytes[name_end..entries_start].try_into().expect("8 bytes"));
    let entries = &bytes[entries_start..];
    let actual = fnv1a64(entries);
    if stored != actual {
        return Err(bad(
            path,
            format!("checksum mismatch: header says {stored:016x}, entries hash to {actual:016x} (file corrupted?)"),
        ));
    }
    Ok((model, entries))
}

/// Write `lut` to `path` in the native format (whole: temp file + rename).
pub fn write_native(lut: &Lut, path: &Path) -> Result<()> {
    write_whole(path, &to_native_bytes(lut)?)
}

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Header of a native LUT file, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeHeader {
    /// Format version.
    pub version: u32,
    /// Table width.
    pub bits: u32,
    /// Model name.
    pub model: String,
    /// Stored checksum (FNV-1a 64 of the entries).
    pub checksum: u64,
}

/// Parse a native LUT image; `path` only names the file in errors.
pub fn parse_native(bytes: &[u8], path: &Path) -> Result<(NativeHeader, Lut)> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(bad(path, "wrong magic: not a native AMSIM LUT file"));
    }
    if bytes.len() < HEADER_FIXED {
        return Err(bad(
            path,
            format!(
                "truncated header: {} bytes, the fixed header alone is {HEADER_FIXED}",
                bytes.len()
            ),
        ));
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(bad(
            path,
            format!(
                "unsupported format version {version} (this build reads version {FORMAT_VERSION})"
            ),
        ));
    }
    let bits = read_u32(bytes, 12);
    if check_bits(bits).is_err() {
        return Err(bad(
            path,
            format!("bit width {bits} is out of range 1..={MAX_LUT_BITS}"),
        ));
    }
    let n_entries = 1usize << (2 * bits);
    let what = format!("a {bits}-bit table");
    let (model, entries) = table_file_payload(bytes, path, 4 * n_entries, &what)?;
    let stored = fnv1a64(entries);
    let table: Vec<f32> = entries
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    let lut = table_to_lut(&model, bits, table, path)?;
    Ok((
        NativeHeader {
            version,
            bits,
            model,
            checksum: stored,
        },
        lut,
    ))
}

/// Validate a table read from `path`, turning an invalid entry into a
/// [`AmsimError::BadLutFile`] that names the file and the entry.
fn table_to_lut(name: &str, bits: u32, table: Vec<f32>, path: &Path) -> Result<Lut> {
    Lut::from_table(name, bits, table).map_err(|e| match e {
        AmsimError::BadModelOutput { ta, tb, value, .. } => bad(
            path,
            format!(
                "invalid entry L[{ta}][{tb}] = {value:e}: entries must be normal floats in [1, 4)"
            ),
        ),
        other => bad(path, other.to_string()),
    })
}

/// The bytes of a table file, its size checked first: no file larger than
/// the largest table is read.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let len = fs::metadata(path).map_err(|e| io_err(path, e))?.len();
    let max = max_file_len();
    if len > max {
        return Err(bad(
            path,
            format!(
                "is {len} bytes, larger than any table ({max} bytes at most, for {MAX_LUT_BITS} bits); \
                 is it the right file?"
            ),
        ));
    }
    fs::read(path).map_err(|e| io_err(path, e))
}

/// The size of the largest table file: a native table of
/// [`MAX_LUT_BITS`] bits, with room for its header.
fn max_file_len() -> u64 {
    4 * (1u64 << (2 * MAX_LUT_BITS)) + 65536
}

/// Read the header and table of a native LUT file.
pub fn read_native_with_header(path: &Path) -> Result<(NativeHeader, Lut)> {
    parse_native(&read_bytes(path)?, path)
}

/// The ApproxTrain byte of one entry: carry (entry >= 2) in bit 7, the top
/// `bits` fraction bits of the entry right-aligned below it; lower fraction
/// bits are truncated as ApproxTrain's generator does.
#[inline]
fn approxtrain_byte(v: f32, bits: u32) -> u8 {
    let b = v.to_bits();
    let carry = if v >= 2.0 { 0x80 } else { 0 };
    carry | ((b & 0x007f_ffff) >> (23 - bits)) as u8
}

/// The ApproxTrain `.bin` image of `lut` (m <= 7), truncating entry
/// fractions to `m` bits like ApproxTrain's `lut_gen.cc`.
pub fn to_approxtrain_bytes(lut: &Lut) -> Result<Vec<u8>> {
    let bits = lut.bits();
    if bits > MAX_APPROXTRAIN_BITS {
        return Err(AmsimError::Other(format!(
            "the ApproxTrain .bin format holds tables of at most {MAX_APPROXTRAIN_BITS} bits; this one has {bits} (use the native format)"
        )));
    }
    Ok(lut
        .table()
        .iter()
        .map(|&v| approxtrain_byte(v, bits))
        .collect())
}

/// The first entry `(ta, tb, value)` of `lut` whose fraction has bits below
/// the top `m` (so an ApproxTrain export truncates it), or `None` when the
/// export is lossless.
pub fn approxtrain_first_lossy_entry(lut: &Lut) -> Option<(u32, u32, f32)> {
    let bits = lut.bits();
    let low_mask = (1u32 << (23 - bits.min(23))) - 1;
    lut.table()
        .iter()
        .position(|v| v.to_bits() & low_mask != 0)
        .map(|idx| {
            let n = 1usize << bits;
            (
                (idx >> bits) as u32,
                (idx & (n - 1)) as u32,
                lut.table()[idx],
            )
        })
}

/// Write `lut` as an ApproxTrain `.bin` file (whole: temp file + rename).
pub fn write_approxtrain(lut: &Lut, path: &Path) -> Result<()> {
    write_whole(path, &to_approxtrain_bytes(lut)?)
}

/// The ApproxTrain name of a model's table at `bits`: `NAME_m.bin` with
/// ApproxTrain's short names for the models it ships (`MBM`, `MIT`, `ACC`
/// for the truncated bfloat16 product) and the upper-cased name otherwise.
pub fn approxtrain_file_name(model: &str, bits: u32) -> String {
    let short = match model {
        "mbm" => "MBM".to_string(),
        "mitchell" => "MIT".to_string(),
        "bf16trunc" | "exact" => "ACC".to_string(),
        other => other.to_ascii_uppercase(),
    };
    format!("{short}_{bits}.bin")
}

/// The width `m` with `4^m == len`, if there is one in 1..=7.
fn bits_from_size(len: usize) -> Option<u32> {
    (1..=MAX_APPROXTRAIN_BITS).find(|&m| len == 1usize << (2 * m))
}

/// `(NAME, m)` from a file name `NAME_m.bin`.
fn parse_approxtrain_name(path: &Path) -> Option<(String, u32)> {
    let stem = path.file_stem()?.to_str()?;
    let (name, m) = stem.rsplit_once('_')?;
    let m: u32 = m.parse().ok()?;
    (!name.is_empty()).then(|| (name.to_string(), m))
}

/// Decode an ApproxTrain image of `bits` bits; `path` names the file in
/// errors.
pub fn parse_approxtrain(bytes: &[u8], bits: u32, name: &str, path: &Path) -> Result<Lut> {
    if !(1..=MAX_APPROXTRAIN_BITS).contains(&bits) {
        return Err(bad(
            path,
            format!("bit width {bits} is out of range for an ApproxTrain table (1..={MAX_APPROXTRAIN_BITS})"),
        ));
    }
    let expected = 1usize << (2 * bits);
    if bytes.len() != expected {
        return Err(bad(
            path,
            format!(
                "size {} bytes does not match a {bits}-bit ApproxTrain table (4^{bits} = {expected} bytes)",
                bytes.len()
            ),
        ));
    }
    let n = 1usize << bits;
    let frac_mask = (n - 1) as u8;
    let scale = 1.0 / n as f32;
    let mut table = Vec::with_capacity(expected);
    for (idx, &byte) in bytes.iter().enumerate() {
        if byte & 0x7f & !frac_mask != 0 {
            return Err(bad(
                path,
                format!(
                    "byte {idx} (entry [{}][{}]) is 0x{byte:02x}: bits between the {bits} fraction bits and the carry must be 0",
                    idx >> bits,
                    idx & (n - 1)
                ),
            ));
        }
        let frac = (byte & frac_mask) as f32;
        let carry = if byte & 0x80 != 0 { 2.0 } else { 1.0 };
        // Exact in f32: a fraction of at most 7 bits scaled by a power of two.
        table.push((1.0 + frac * scale) * carry);
    }
    table_to_lut(name, bits, table, path)
}

/// Decode the bytes of an ApproxTrain file at `path`, working out the
/// width and name as [`read_approxtrain`] describes.
fn decode_approxtrain_file(
    bytes: &[u8],
    path: &Path,
    bits: Option<u32>,
    name: Option<&str>,
) -> Result<Lut> {
    let from_name = parse_approxtrain_name(path);
    let bits = match (bits, &from_name) {
        (Some(b), _) => b,
        (None, Some((_, m))) => *m,
        (None, None) => bits_from_size(bytes.len()).ok_or_else(|| {
            bad(
                path,
                format!(
                    "size {} bytes is not 4^m for any m in 1..={MAX_APPROXTRAIN_BITS}, so it is no ApproxTrain table",
                    bytes.len()
                ),
            )
        })?,
    };
    let default_name = match &from_name {
        Some((n, _)) => n.to_ascii_lowercase(),
        None => path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("lut")
            .to_string(),
    };
    parse_approxtrain(bytes, bits, name.unwrap_or(&default_name), path)
}

/// Read an ApproxTrain `.bin` table. The width is `bits` when given (the
/// size must then be `4^bits`), else the `m` of a file name `NAME_m.bin`,
/// else the one width with `4^m` bytes. The model name is `name` when given,
/// else `NAME` lower-cased (or the file stem).
pub fn read_approxtrain(path: &Path, bits: Option<u32>, name: Option<&str>) -> Result<Lut> {
    decode_approxtrain_file(&read_bytes(path)?, path, bits, name)
}

/// The two formats a LUT file can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LutFormat {
    /// This crate's format with header and checksum.
    Native,
    /// ApproxTrain's one-byte-per-entry `.bin` table.
    ApproxTrain,
}

/// Decide the format of a file image: a `.bin` extension means ApproxTrain,
/// `.lut` means native; otherwise the magic decides, then a size of `4^m`
/// bytes.
fn detect(bytes: &[u8], path: &Path) -> Result<LutFormat> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("bin") => return Ok(LutFormat::ApproxTrain),
        Some("lut") => return Ok(LutFormat::Native),
        _ => {}
    }
    if bytes.starts_with(MAGIC) {
        Ok(LutFormat::Native)
    } else if bits_from_size(bytes.len()).is_some() {
        Ok(LutFormat::ApproxTrain)
    } else {
        Err(bad(
            path,
            format!(
                "not a LUT file: no AMSIMLUT magic, and its size ({} bytes) is not 4^m for an ApproxTrain table",
                bytes.len()
            ),
        ))
    }
}

/// Read a table from a file in either format (see [`LutFormat`] for how the
/// format is chosen), with its format.
pub fn read_with_format(path: &Path) -> Result<(Lut, LutFormat)> {
    let bytes = read_bytes(path)?;
    let format = detect(&bytes, path)?;
    let lut = match format {
        LutFormat::Native => parse_native(&bytes, path)?.1,
        LutFormat::ApproxTrain => decode_approxtrain_file(&bytes, path, None, None)?,
    };
    Ok((lut, format))
}

/// Read a table from a file in either format (chosen by extension, magic or
/// size).
pub fn read(path: &Path) -> Result<Lut> {
    Ok(read_with_format(path)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{exact, mitchell, test_seed};
    use rand::{Rng, SeedableRng};

    /// MBM (Saadat et al., "Minimally biased multipliers for approximate
    /// integer and floating-point multiplication", IEEE TCAD 2018) as
    /// ApproxTrain tabulates it; DESIGN.md gives the formula.
    fn mbm(a: f32, b: f32, bits: u32) -> f32 {
        let scale = (1u32 << bits) as f32;
        let t = |x: f32| ((x - 1.0) * scale).floor() as u32 | 1;
        let (xa, xb) = (t(a) as f32 / scale, t(b) as f32 / scale);
        let s = xa + xb;
        let trunc = |c: f32| (c * scale).floor() / scale;
        let q = if s < 1.0 {
            // May reach 2: the result is then renormalised (ApproxTrain's
            // FPmultMBM_fast16 shifts the mantissa and bumps the exponent).
            1.0 + s + trunc(1.0 / 16.0 + 1.0 / 64.0)
        } else {
            let c = trunc(1.0 / 32.0 + 1.0 / 128.0);
            if s - 1.0 + c >= 1.0 {
                2.0 * s
            } else {
                2.0 * (s + c)
            }
        };
        f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
    }

    #[test]
    fn fnv1a64_matches_published_test_vectors() {
        // From the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn native_round_trip_preserves_every_entry_and_the_name() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [1, 5, 9] {
            let lut = Lut::build("mitchell", mitchell, bits).unwrap();
            let path = dir.path().join(format!("mit{bits}.lut"));
            write_native(&lut, &path).unwrap();
            let (header, back) = read_native_with_header(&path).unwrap();
            assert_eq!(back, lut);
            assert_eq!(header.version, FORMAT_VERSION);
            assert_eq!(header.checksum, checksum(&lut));
            assert_eq!(read(&path).unwrap(), lut);
        }
    }

    #[test]
    fn mbm_at_3_bits_exports_approxtrain_bytes() {
        // ApproxTrain's lut/MBM_3.bin, row by row.
        let expected: Vec<u8> = [
            [2, 2, 4, 4, 6, 6, 0x80, 0x80],
            [2, 2, 4, 4, 6, 6, 0x80, 0x80],
            [4, 4, 6, 6, 0x80, 0x80, 0x82, 0x82],
            [4, 4, 6, 6, 0x80, 0x80, 0x82, 0x82],
            [6, 6, 0x80, 0x80, 0x82, 0x82, 0x84, 0x84],
            [6, 6, 0x80, 0x80, 0x82, 0x82, 0x84, 0x84],
            [0x80, 0x80, 0x82, 0x82, 0x84, 0x84, 0x86, 0x86],
            [0x80, 0x80, 0x82, 0x82, 0x84, 0x84, 0x86, 0x86],
        ]
        .concat();
        let lut = Lut::build("mbm", mbm, 3).unwrap();
        assert_eq!(to_approxtrain_bytes(&lut).unwrap(), expected);
        assert_eq!(approxtrain_first_lossy_entry(&lut), None);
    }

    #[test]
    fn approxtrain_round_trip_is_exact_for_tables_with_m_fraction_bits() {
        let dir = tempfile::tempdir().unwrap();
        for bits in 1..=7 {
            for (name, model) in [("mitchell", mitchell as crate::ModelFn), ("mbm", mbm)] {
                let lut = Lut::build(name, model, bits).unwrap();
                let path = dir.path().join(approxtrain_file_name(name, bits));
                write_approxtrain(&lut, &path).unwrap();
                assert_eq!(fs::metadata(&path).unwrap().len(), 1 << (2 * bits));
                let back = read_approxtrain(&path, None, Some(name)).unwrap();
                assert_eq!(back, lut, "{name} at {bits} bits");
                let auto = read(&path).unwrap();
                assert_eq!(auto.table(), lut.table());
            }
        }
    }

    #[test]
    fn approxtrain_export_truncates_like_lut_gen() {
        // exact at 7 bits has products with up to 14 fraction bits; the
        // export keeps the top 7, as ApproxTrain's ACC_7.bin does.
        let lut = Lut::build("exact", exact, 7).unwrap();
        let (ta, tb, v) = approxtrain_first_lossy_entry(&lut).unwrap();
        assert_eq!((ta, tb), (1, 1));
        assert_eq!(v, (1.0 + 1.0 / 128.0) * (1.0 + 1.0 / 128.0));
        let bytes = to_approxtrain_bytes(&lut).unwrap();
        let seed = test_seed("approxtrain_export_truncates_like_lut_gen");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..1000 {
            let (i, j) = (rng.gen_range(0..128u32), rng.gen_range(0..128u32));
            let x = (1.0 + i as f64 / 128.0) * (1.0 + j as f64 / 128.0);
            let (carry, m) = if x >= 2.0 { (0x80, x / 2.0) } else { (0, x) };
            let frac = ((m - 1.0) * 128.0).floor() as u8;
            assert_eq!(bytes[((i << 7) | j) as usize], carry | frac, "[{i}][{j}]");
        }
        let wide = Lut::build("exact", exact, 8).unwrap();
        assert!(to_approxtrain_bytes(&wide).is_err());
    }

    fn err_of(path: &Path) -> String {
        let e = read(path).unwrap_err();
        assert!(matches!(e, AmsimError::BadLutFile { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(!msg.contains('\n'), "one line: {msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        msg
    }

    #[test]
    fn every_malformed_native_file_is_a_bad_lut_file_error_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let lut = Lut::build("mitchell", mitchell, 3).unwrap();
        let good = to_native_bytes(&lut).unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            fs::write(&p, bytes).unwrap();
            p
        };
        let name_end = HEADER_FIXED + "mitchell".len();

        let p = write("truncated.lut", &good[..good.len() - 3]);
        assert!(err_of(&p).contains("truncated"));
        let p = write("short_header.lut", &good[..10]);
        assert!(err_of(&p).contains("truncated header"));
        let mut b = good.clone();
        b.extend_from_slice(&[0, 0]);
        let p = write("trailing.lut", &b);
        assert!(err_of(&p).contains("2 trailing bytes"));
        let mut b = good.clone();
        b[0] = b'X';
        let p = write("magic.lut", &b);
        assert!(err_of(&p).contains("wrong magic"));
        let mut b = good.clone();
        b[8] = 7;
        let p = write("version.lut", &b);
        assert!(err_of(&p).contains("unsupported format version 7"));
        let mut b = good.clone();
        b[12] = 12;
        let p = write("bits.lut", &b);
        assert!(err_of(&p).contains("bit width 12 is out of range"));
        let mut b = good.clone();
        b[12] = 0;
        let p = write("bits0.lut", &b);
        assert!(err_of(&p).contains("bit width 0"));
        let mut b = good.clone();
        b[16] = 0;
        b[17] = 1; // name length 256
        let p = write("name.lut", &b);
        assert!(err_of(&p).contains("name length 256"));
        let mut b = good.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        let p = write("checksum.lut", &b);
        assert!(err_of(&p).contains("checksum mismatch"));
        let mut b = good.clone();
        b[HEADER_FIXED] = 0xff;
        let p = write("utf8.lut", &b);
        assert!(err_of(&p).contains("UTF-8"));

        // An entry outside [1, 4) with a consistent checksum.
        let entries_start = name_end + 8;
        let mut b = good.clone();
        b[entries_start + 4 * 9..entries_start + 4 * 10].copy_from_slice(&4.5f32.to_le_bytes());
        let sum = fnv1a64(&b[entries_start..]);
        b[name_end..entries_start].copy_from_slice(&sum.to_le_bytes());
        let p = write("entry.lut", &b);
        assert!(err_of(&p).contains("invalid entry L[1][1]"));
        let mut b = good.clone();
        b[entries_start..entries_start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let sum = fnv1a64(&b[entries_start..]);
        b[name_end..entries_start].copy_from_slice(&sum.to_le_bytes());
        let p = write("nan.lut", &b);
        assert!(err_of(&p).contains("invalid entry L[0][0]"));

        let missing = dir.path().join("missing.lut");
        let e = read(&missing).unwrap_err();
        assert!(e.to_string().contains("missing.lut"), "{e}");
    }

    #[test]
    fn every_malformed_approxtrain_file_is_a_bad_lut_file_error_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            fs::write(&p, bytes).unwrap();
            p
        };
        let p = write("odd.bin", &[0u8; 65]);
        assert!(err_of(&p).contains("not 4^m"));
        let p = write("MBM_3.bin", &[0u8; 16]);
        assert!(err_of(&p).contains("does not match a 3-bit"));
        let p = write("MBM_9.bin", &[0u8; 16]);
        assert!(err_of(&p).contains("bit width 9 is out of range"));
        let mut b = vec![0u8; 64];
        b[10] = 0x40;
        let p = write("MIT_3.bin", &b);
        assert!(err_of(&p).contains("byte 10 (entry [1][2]) is 0x40"));
        let p = write("noise.dat", &[1u8; 100]);
        assert!(err_of(&p).contains("not a LUT file"));
        let p = write("sized.bin", &[0u8; 256]);
        let e = read_approxtrain(&p, Some(3), None).unwrap_err();
        assert!(e.to_string().contains("does not match a 3-bit"), "{e}");
        assert_eq!(read(&p).unwrap().bits(), 4);
    }
}
