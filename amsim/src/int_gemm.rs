//! Matrix products through an 8-bit integer table: `C = A·B` with
//! `C[i][j] = sum_p T[A[i][p]][B[p][j]]`, the operands 8-bit codes (the
//! two's-complement byte of a signed operand, the value of an unsigned one),
//! `T` the [`IntLut`] and the sums exact in `i32`.
//!
//! Integer addition is associative, so every order of the sums gives the
//! same bits: the fast engine is free to block and split the loops as it
//! likes and is still bit-exact with [`int_gemm_reference`]. Sums wrap on
//! overflow (two's complement), which keeps that true even past `i32`; a
//! sum of up to 32768 products of a 16-bit table cannot overflow.
//!
//! The engine ([`int_gemm`]) has two loops. Outputs of at least a few
//! hundred rows on x86-64 with AVX-512F go to the expansion engine
//! (`int_expand`): for a panel of 16 columns and one `p` it tabulates
//! `T[t][B[p][j]]` for all 256 codes `t` once (from the transposed table,
//! transposed back 16 x 16 in registers), and every row of the job then adds
//! one contiguous vector per `p` for its 16 sums. Smaller outputs (and other
//! CPUs) take the gather loop: the 256 KiB table in L2 and, for a block of
//! [`ROWS`] output rows and [`COLS`] columns held in L1, a walk over `p` in
//! which each output row adds `T[A[i][p]][B[p][j]]` from the table row of
//! `A[i][p]` (1 KiB, in L1) by a gather over `j` (the compiler vectorizes
//! the lookups into `vpgatherdd` where AVX-512 is chosen at run time). Jobs
//! run in parallel with rayon (the `--threads` pool).

use rayon::prelude::*;

use crate::int_lut::IntLut;
use crate::{AmsimError, Result};

/// Output rows per block (one rayon job).
pub const ROWS: usize = 8;
/// Output columns per block: `ROWS x COLS` sums (16 KiB) stay in L1.
pub const COLS: usize = 512;

/// Check the sizes of row-major `A` (`m x k`), `B` (`k x n`), `C` (`m x n`).
fn check_shapes(a: &[u8], b: &[u8], c: &[i32], m: usize, n: usize, k: usize) -> Result<()> {
    let fits = |len: usize, rows: usize, cols: usize| rows.checked_mul(cols) == Some(len);
    if !fits(a.len(), m, k) || !fits(b.len(), k, n) || !fits(c.len(), m, n) {
        return Err(AmsimError::shape(format!(
            "integer GEMM: A has {} codes for {m} x {k}, B {} for {k} x {n}, C {} for {m} x {n}",
            a.len(),
            b.len(),
            c.len()
        )));
    }
    Ok(())
}

/// The definition: `C = A·B` through `lut`, one product at a time in the
/// order of `p`, row-major operands ([`int_gemm_offset_reference`] with
/// zero points 0: the table's products as they are).
pub fn int_gemm_reference(
    lut: &IntLut,
    a: &[u8],
    b: &[u8],
    c: &mut [i32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let s = lut.signed();
    int_gemm_offset_reference(
        lut,
        IntOperand::new(a, 0, s),
        IntOperand::new(b, 0, s),
        c,
        m,
        n,
        k,
    )
}

/// `C = A·B` through `lut` on the rayon pool; bit-exact with
/// [`int_gemm_reference`].
pub fn int_gemm(
    lut: &IntLut,
    a: &[u8],
    b: &[u8],
    c: &mut [i32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    check_shapes(a, b, c, m, n, k)?;
    if n == 0 || m == 0 {
        return Ok(());
    }
    if k == 0 {
        // Empty sums (and no rows of `a` to pair the output rows with).
        c.fill(0);
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if expands(m) {
        crate::int_expand::gemm(lut, a, b, c, m, n, k);
        return Ok(());
    }
    let kernel = Kernel::detect();
    let table: &[[i32; 256]] = table_rows(lut.table());
    c.par_chunks_mut(ROWS * n)
        .zip(a.par_chunks(ROWS * k))
        .for_each(|(c_rows, a_rows)| {
            c_rows.fill(0);
            for j0 in (0..n).step_by(COLS) {
                let cols = COLS.min(n - j0);
                kernel.block(table, a_rows, b, c_rows, n, k, j0, cols);
            }
        });
    Ok(())
}

/// Whether an output of `m` rows goes to the expansion engine (x86-64
/// with AVX-512F, at least `int_expand::MIN_ROWS` rows, not turned off by
/// `APPROXTRAIN_INT_GATHER`); otherwise [`int_gemm`] takes the gather loop.
pub fn expands(m: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        m >= crate::int_expand::MIN_ROWS && crate::int_expand::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = m;
        false
    }
}

/// The table as 256 rows of 256 products (row = first operand code).
fn table_rows(table: &[i32]) -> &[[i32; 256]] {
    let (rows, rest) = table.as_chunks::<256>();
    debug_assert!(rest.is_empty() && rows.len() == 256);
    rows
}

/// The instruction set the block loop is compiled for.
#[derive(Clone, Copy)]
enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Kernel::Avx512;
        }
        Kernel::Portable
    }

    /// Add the products of columns `j0..j0 + cols` to `c_rows` (the rows of
    /// `a_rows`, `n` columns each).
    #[allow(clippy::too_many_arguments)]
    fn block(
        self,
        table: &[[i32; 256]],
        a_rows: &[u8],
        b: &[u8],
        c_rows: &mut [i32],
        n: usize,
        k: usize,
        j0: usize,
        cols: usize,
    ) {
        match self {
            Kernel::Portable => block(table, a_rows, b, c_rows, n, k, j0, cols),
            // SAFETY: `detect` found AVX-512F on this CPU.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { block_avx512(table, a_rows, b, c_rows, n, k, j0, cols) },
        }
    }
}

/// The block loop of [`int_gemm`], compiled for AVX-512 (the compiler
/// turns the table lookups into gathers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block_avx512(
    table: &[[i32; 256]],
    a_rows: &[u8],
    b: &[u8],
    c_rows: &mut [i32],
    n: usize,
    k: usize,
    j0: usize,
    cols: usize,
) {
    block(table, a_rows, b, c_rows, n, k, j0, cols)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block(
    table: &[[i32; 256]],
    a_rows: &[u8],
    b: &[u8],
    c_rows: &mut [i32],
    n: usize,
    k: usize,
    j0: usize,
    cols: usize,
) {
    let rows = c_rows.len() / n;
    for p in 0..k {
        let b_row = &b[p * n + j0..p * n + j0 + cols];
        for r in 0..rows {
            let t_row = &table[a_rows[r * k + p] as usize];
            let c_row = &mut c_rows[r * n + j0..r * n + j0 + cols];
            for (c, &code) in c_row.iter_mut().zip(b_row) {
                *c = c.wrapping_add(t_row[code as usize]);
            }
        }
    }
}

/// An operand of an integer product: 8-bit codes, how they read as
/// values (two's complement or unsigned) and the code of the real value
/// zero (its *zero point*: `0` for a symmetric operand, anything for an
/// asymmetric one). The table's rows and columns are indexed by the codes
/// whatever they stand for; the zero-point corrections use the values.
#[derive(Debug, Clone, Copy)]
pub struct IntOperand<'a> {
    /// Row-major codes.
    pub codes: &'a [u8],
    /// The code of zero.
    pub zero: u8,
    /// Codes are two's complement (-128..=127), else unsigned (0..=255).
    pub signed: bool,
}

impl<'a> IntOperand<'a> {
    /// Codes with zero point `zero`, read as `signed` or unsigned values.
    pub fn new(codes: &'a [u8], zero: u8, signed: bool) -> Self {
        IntOperand {
            codes,
            zero,
            signed,
        }
    }

    /// The value of code `c`.
    #[inline]
    pub fn value(&self, c: u8) -> i32 {
        crate::int_lut::operand_value(c as usize, self.signed)
    }

    /// The same coding for other codes.
    pub fn with_codes<'b>(&self, codes: &'b [u8]) -> IntOperand<'b> {
        IntOperand::new(codes, self.zero, self.signed)
    }
}

/// The product of codes `a` and `b` of operands coded as `ao` and `bo`
/// with the zero points taken out: `T[a][b] - zb·a - za·b + za·zb` in
/// operand values, wrapping. For an exact table this is `(a - za)(b -
/// zb)`, the product of the quantized values; for an approximate one the
/// table's error stays and the corrections, which hardware computes from
/// exact operand sums (as gemmlowp does), are exact.
#[inline]
pub fn offset_product(lut: &IntLut, a: u8, ao: IntOperand, b: u8, bo: IntOperand) -> i32 {
    let (va, vza, vb, vzb) = (
        ao.value(a),
        ao.value(ao.zero),
        bo.value(b),
        bo.value(bo.zero),
    );
    lut.table()[((a as usize) << 8) | b as usize]
        .wrapping_sub(vzb.wrapping_mul(va))
        .wrapping_sub(vza.wrapping_mul(vb))
        .wrapping_add(vza.wrapping_mul(vzb))
}

/// The definition of [`int_gemm_offset`]: `C[i][j] = sum_p
/// offset_product(A[i][p], B[p][j])`, one product at a time.
pub fn int_gemm_offset_reference(
    lut: &IntLut,
    a: IntOperand,
    b: IntOperand,
    c: &mut [i32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    check_shapes(a.codes, b.codes, c, m, n, k)?;
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0i32;
            for p in 0..k {
                let (x, y) = (a.codes[i * k + p], b.codes[p * n + j]);
                sum = sum.wrapping_add(offset_product(lut, x, a, y, b));
            }
            c[i * n + j] = sum;
        }
    }
    Ok(())
}

/// `C = A·B` through `lut` with the operands' zero points taken out
/// (`sum_p` of [`offset_product`]): [`int_gemm`] and the exact corrections
/// `- zb·rowsum(A) - za·colsum(B) + k·za·zb`. Bit-exact with
/// [`int_gemm_offset_reference`] (integer sums in any order).
pub fn int_gemm_offset(
    lut: &IntLut,
    a: IntOperand,
    b: IntOperand,
    c: &mut [i32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    int_gemm(lut, a.codes, b.codes, c, m, n, k)?;
    take_out_zero_points(a, b, c, n, k);
    Ok(())
}

/// Turn the table sums `c` (`m x n`) of `A·B` (`k` terms each) into
/// [`offset_product`] sums: add `- zb·rowsum(A) - za·colsum(B) +
/// k·za·zb` (wrapping).
pub(crate) fn take_out_zero_points(
    a: IntOperand,
    b: IntOperand,
    c: &mut [i32],
    n: usize,
    k: usize,
) {
    let (za, zb) = (a.value(a.zero), b.value(b.zero));
    if za == 0 && zb == 0 {
        return;
    }
    let mut col_terms = vec![0i32; n];
    if za != 0 {
        for row in b.codes.chunks_exact(n.max(1)).take(k) {
            for (t, &code) in col_terms.iter_mut().zip(row) {
                *t = t.wrapping_add(b.value(code));
            }
        }
        for t in &mut col_terms {
            *t = t.wrapping_mul(za);
        }
    }
    let constant = (k as i32).wrapping_mul(za).wrapping_mul(zb);
    // Jobs of many rows: a row may be a handful of columns (a convolution's
    // output channels).
    let rows_per_job = (4096 / n.max(1)).max(1);
    c.par_chunks_mut(rows_per_job * n.max(1))
        .zip(a.codes.par_chunks(rows_per_job * k.max(1)))
        .for_each(|(c_rows, a_rows)| {
            for (c_row, a_row) in c_rows
                .chunks_exact_mut(n.max(1))
                .zip(a_rows.chunks(k.max(1)))
            {
                let row_sum = if zb != 0 && k > 0 {
                    a_row
                        .iter()
                        .fold(0i32, |acc, &code| acc.wrapping_add(a.value(code)))
                } else {
                    0
                };
                let row_term = constant.wrapping_sub(zb.wrapping_mul(row_sum));
                for (x, t) in c_row.iter_mut().zip(&col_terms) {
                    *x = x.wrapping_add(row_term).wrapping_sub(*t);
                }
            }
        });
}

/// `c_row[j] += table[code][b_row[j]]` for each `(code, b_row)` of
/// `terms`: the gather loop's step for a caller that picks the terms (the
/// nonzero codes of a sparse operand). `table` is 256 x 256, `b_row`s as
/// long as `c_row`.
pub(crate) fn add_table_terms<'a>(
    table: &[i32],
    terms: impl Iterator<Item = (u8, &'a [u8])>,
    c_row: &mut [i32],
) {
    let rows = table_rows(table);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present on this CPU.
        unsafe { add_table_terms_avx512(rows, terms, c_row) };
        return;
    }
    add_terms(rows, terms, c_row);
}

/// [`add_table_terms`] compiled for AVX-512 (the lookups become gathers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn add_table_terms_avx512<'a>(
    rows: &[[i32; 256]],
    terms: impl Iterator<Item = (u8, &'a [u8])>,
    c_row: &mut [i32],
) {
    add_terms(rows, terms, c_row)
}

#[inline(always)]
fn add_terms<'a>(
    rows: &[[i32; 256]],
    terms: impl Iterator<Item = (u8, &'a [u8])>,
    c_row: &mut [i32],
) {
    for (code, b_row) in terms {
        let t_row = &rows[code as usize];
        for (c, &x) in c_row.iter_mut().zip(b_row) {
            *c = c.wrapping_add(t_row[x as usize]);
        }
    }
}

/// The transpose of a row-major `rows x cols` matrix of codes (bytes of
/// the 8-bit engine, integers of the 12- and 16-bit one).
pub fn transpose_codes<T: Copy + Default>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); src.len()];
    for (r, row) in src.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::test_seed;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A table with no structure: random 16-bit products.
    fn random_lut(rng: &mut ChaCha8Rng, signed: bool) -> IntLut {
        let table = (0..65536)
            .map(|_| {
                if signed {
                    rng.gen_range(-32768..=32767)
                } else {
                    rng.gen_range(0..=65535)
                }
            })
            .collect();
        IntLut::from_table("random", signed, table).unwrap()
    }

    /// `cases` random tables and shapes drawn from the ranges, each
    /// product compared with the reference (the seed printed on failure).
    fn check_random_shapes(
        name: &str,
        cases: usize,
        ms: std::ops::Range<usize>,
        ns: std::ops::Range<usize>,
        ks: std::ops::Range<usize>,
    ) {
        let seed = test_seed(name);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for case in 0..cases {
            let lut = random_lut(&mut rng, case % 2 == 0);
            let (m, n, k) = (
                rng.gen_range(ms.clone()),
                rng.gen_range(ns.clone()),
                rng.gen_range(ks.clone()),
            );
            let a: Vec<u8> = (0..m * k).map(|_| rng.gen()).collect();
            let b: Vec<u8> = (0..k * n).map(|_| rng.gen()).collect();
            let mut want = vec![0; m * n];
            int_gemm_reference(&lut, &a, &b, &mut want, m, n, k).unwrap();
            let mut got = vec![7; m * n];
            int_gemm(&lut, &a, &b, &mut got, m, n, k).unwrap();
            assert_eq!(got, want, "seed {seed}, case {case}: {m} x {n} x {k}");
        }
    }

    #[test]
    fn int_gemm_matches_the_reference_bit_exactly_on_random_shapes() {
        check_random_shapes(
            "int_gemm_matches_the_reference_bit_exactly_on_random_shapes",
            24,
            1..40,
            1..1100,
            0..70,
        );
    }

    #[test]
    fn int_gemm_expansion_path_matches_the_reference_bit_exactly() {
        // Outputs of at least `int_expand::MIN_ROWS` rows take the expansion
        // engine on CPUs with AVX-512F (the gather loop elsewhere): partial
        // panels, partial micro-panels and partial blocks of p.
        check_random_shapes(
            "int_gemm_expansion_path_matches_the_reference_bit_exactly",
            6,
            192..700,
            1..90,
            1..40,
        );
    }

    #[test]
    fn int_gemm_reference_is_the_sum_of_table_products() {
        let exact = IntLut::build("exact", true, |a, b| a * b).unwrap();
        // [-1 2; 3 -128] x [5 -7; 127 0] = [249 7; -16241 -21]
        let codes = |v: &[i32]| v.iter().map(|&x| x as i8 as u8).collect::<Vec<u8>>();
        let (a, b) = (codes(&[-1, 2, 3, -128]), codes(&[5, -7, 127, 0]));
        let mut c = vec![0; 4];
        int_gemm_reference(&exact, &a, &b, &mut c, 2, 2, 2).unwrap();
        assert_eq!(c, [249, 7, 3 * 5 - 128 * 127, -21]);
        let err = int_gemm(&exact, &a, &b, &mut c, 2, 3, 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 x 3"), "{err}");
    }

    #[test]
    fn int_gemm_offset_matches_its_reference_and_is_the_quantized_product_for_exact_tables() {
        let seed = test_seed(
            "int_gemm_offset_matches_its_reference_and_is_the_quantized_product_for_exact_tables",
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for case in 0..16 {
            let signed = case % 2 == 0;
            let lut = random_lut(&mut rng, signed);
            let exact = IntLut::build("exact", signed, |a, b| a * b).unwrap();
            let (m, n, k) = (
                rng.gen_range(1..20),
                rng.gen_range(1..600),
                rng.gen_range(0..50),
            );
            let a: Vec<u8> = (0..m * k).map(|_| rng.gen()).collect();
            let b: Vec<u8> = (0..k * n).map(|_| rng.gen()).collect();
            let (za, zb) = (rng.gen::<u8>(), if case % 3 == 0 { 0 } else { rng.gen() });
            let (ao, bo) = (
                IntOperand::new(&a, za, signed),
                IntOperand::new(&b, zb, signed),
            );
            let mut want = vec![0; m * n];
            int_gemm_offset_reference(&lut, ao, bo, &mut want, m, n, k).unwrap();
            let mut got = vec![5; m * n];
            int_gemm_offset(&lut, ao, bo, &mut got, m, n, k).unwrap();
            assert_eq!(got, want, "seed {seed}, case {case}: {m} x {n} x {k}");
            // With the exact table: the sum of (a - za)(b - zb).
            int_gemm_offset(&exact, ao, bo, &mut got, m, n, k).unwrap();
            let v = |c: u8| crate::int_lut::operand_value(c as usize, signed);
            for i in 0..m {
                for j in 0..n {
                    let sum: i32 = (0..k)
                        .map(|p| (v(a[i * k + p]) - v(za)) * (v(b[p * n + j]) - v(zb)))
                        .sum();
                    assert_eq!(got[i * n + j], sum, "seed {seed}, case {case}: ({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn int_gemm_is_the_same_on_one_and_three_threads() {
        let seed = test_seed("int_gemm_is_the_same_on_one_and_three_threads");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let lut = random_lut(&mut rng, true);
        // 67 rows take the gather loop, 401 the expansion (on AVX-512F).
        for (m, n, k) in [(67, 300, 129), (401, 53, 77)] {
            let a: Vec<u8> = (0..m * k).map(|_| rng.gen()).collect();
            let b: Vec<u8> = (0..k * n).map(|_| rng.gen()).collect();
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut c = vec![0; m * n];
                pool.install(|| int_gemm(&lut, &a, &b, &mut c, m, n, k))
                    .unwrap();
                c
            };
            assert_eq!(run(1), run(3), "seed {seed}, {m} x {n} x {k}");
        }
    }
}
