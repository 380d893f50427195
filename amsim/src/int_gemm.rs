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
/// order of `p`, row-major operands.
pub fn int_gemm_reference(
    lut: &IntLut,
    a: &[u8],
    b: &[u8],
    c: &mut [i32],
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    check_shapes(a, b, c, m, n, k)?;
    let table = lut.table();
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0i32;
            for p in 0..k {
                let at = ((a[i * k + p] as usize) << 8) | b[p * n + j] as usize;
                sum = sum.wrapping_add(table[at]);
            }
            c[i * n + j] = sum;
        }
    }
    Ok(())
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
    if m >= crate::int_expand::MIN_ROWS && crate::int_expand::available() {
        crate::int_expand::gemm(lut.table(), a, b, c, m, n, k);
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
