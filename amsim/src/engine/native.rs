//! Native `fp32` / `bf16` GEMM through an optimised SGEMM
//! (`matrixmultiply`, single-threaded calls), and the `direct` model loop.
//!
//! Threads come from the current rayon pool (so `--threads` governs them,
//! and a call from inside a rayon worker adds none): a product is cut into
//! blocks of output rows or columns, or, for a small output over a long `k`,
//! into ranges of `k`, and each block or range is one single-threaded SGEMM
//! call. The cut depends on the shape alone, so the result is the same at any
//! thread count.
//!
//! Why `matrixmultiply` and not the `gemm` crate: on the products our layers
//! lower to (`benches/sgemm_shapes.rs`; 2-core AMD EPYC, Zen 3, AVX2 + FMA;
//! best of three runs on a loaded machine), the ResNet-20 convolution
//! products of one batch-128 step took 1.27 s on one `matrixmultiply` thread
//! against 1.69 s on one `gemm` thread (first stage: input gradient
//! `14336x144x16` 15.9 against 8.3 GFLOP/s, weight gradient `144x131072x16`
//! 20.1 against 15.2; 1024³ 31.2 against 27.9). `gemm` was ahead only on the
//! dense layers with 10 outputs and on LeNet-5's `25x100352x6` weight
//! gradient.

use rayon::prelude::*;

use super::is_injective;
use crate::accumulate::{BlockedSum, ACC_BLOCK};
use crate::gemm::{MatMut, MatRef};
use crate::product::direct_mul;
#[cfg(test)]
use crate::product::round_bf16;
use crate::ModelFn;

/// `C = A·B (+ C)` with native FP32 products. Shapes are already checked.
///
/// A small output over a long `k` (a convolution's weight gradient:
/// `144 x 16` over `k = 131072` in ResNet-20's first stage) has too little
/// output to share among threads. Such a product is cut into ranges of `k`
/// (multiples of [`ACC_BLOCK`], so on the boundaries of the normative
/// accumulation blocks), each range's product is computed on one thread into
/// its own buffer, and the partial products are added in increasing range
/// order. Other products are cut into blocks of output rows (or columns).
pub(crate) fn sgemm(a: MatRef, b: MatRef, mut c: MatMut, accumulate: bool) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if m == 0 || n == 0 {
        return;
    }
    if !is_injective(m, n, c.row_stride(), c.col_stride()) {
        // The SGEMM needs distinct output elements: go through a dense block
        // written in the reference's (i, j) order.
        let mut dense = vec![0.0f32; m * n];
        let d = MatMut::row_major(&mut dense, m, n).expect("dense block fits");
        sgemm(a, b, d, false);
        write_dense(&dense, c, accumulate);
        return;
    }
    if k == 0 {
        fill_zero_sums(c, accumulate);
        return;
    }
    if let Some(len) = k_range_len(m, n, k) {
        sgemm_k_ranges(a, b, c, accumulate, len);
        return;
    }
    let (rs, cs) = (c.row_stride(), c.col_stride());
    let out = OutPtr(c.data_mut().as_mut_ptr());
    let (by_rows, block) = output_blocks(m, n, k);
    let along = if by_rows { m } else { n };
    let run = |bi: usize| {
        let span = bi * block..((bi + 1) * block).min(along);
        let (rows, cols) = if by_rows { (span, 0..n) } else { (0..m, span) };
        // SAFETY: C's elements are distinct (checked above) and C cannot
        // alias A or B (it is borrowed mutably); the blocks are disjoint
        // sets of rows (or columns) of C.
        unsafe { sgemm_block(&a, &b, rows, cols, 0..k, out, (rs, cs), accumulate) }
    };
    let blocks = along.div_ceil(block);
    if blocks == 1 {
        run(0);
    } else {
        (0..blocks).into_par_iter().for_each(run);
    }
}

/// Multiply-adds of one task (a block of output, or a range of `k`): worth a
/// task (~0.1-0.2 ms on one core), small enough to give two or three
/// threads several tasks each on the convolution products.
const TASK_MACS: usize = 1 << 22;

/// Fewest output rows (or columns) of a block: each block packs the whole
/// other operand again, a copy of one element per `MIN_BLOCK` multiply-adds.
const MIN_BLOCK: usize = 128;

/// Multiply-adds of one range of `k` in a split product: half a task, as
/// the ranges of a weight gradient are few when its output is tiny (LeNet-5's
/// first one, `25 x 6` over `k = 100352`, gets 7).
const RANGE_MACS: usize = TASK_MACS / 2;

/// Outputs up to which a long product is split along `k`: larger outputs
/// are shared among threads by blocks, and their partial buffers would cost
/// memory traffic.
const SPLIT_MAX_OUTPUTS: usize = 1 << 16;

/// How a product's output is cut into tasks: along rows (`true`) or
/// columns, the longer side, into equal blocks of about [`TASK_MACS`] each,
/// but no more blocks than fit [`MIN_BLOCK`] rows, and a multiple of 16 rows
/// (whole micro-kernel tiles) unless the block is the whole side.
fn output_blocks(m: usize, n: usize, k: usize) -> (bool, usize) {
    let by_rows = m >= n;
    let (along, other) = if by_rows { (m, n) } else { (n, m) };
    let blocks = (along * other * k)
        .div_ceil(TASK_MACS)
        .min(along / MIN_BLOCK)
        .max(1);
    let block = along.div_ceil(blocks).next_multiple_of(16);
    (by_rows, block.min(along))
}

/// The length of the `k` ranges a product is split into, or `None` to leave
/// `k` whole: a multiple of [`ACC_BLOCK`] worth about [`RANGE_MACS`], taken
/// only for a small output and when it gives at least two ranges. It
/// depends on the shape alone.
pub(crate) fn k_range_len(m: usize, n: usize, k: usize) -> Option<usize> {
    let outputs = m * n;
    if outputs > SPLIT_MAX_OUTPUTS {
        return None;
    }
    let len = RANGE_MACS.div_ceil(outputs * ACC_BLOCK).max(1) * ACC_BLOCK;
    (k > len).then_some(len)
}

/// [`sgemm`] with `k` cut into ranges of `len`: one SGEMM per range into its
/// own dense block (in C's orientation), the ranges in parallel, then each
/// element's partial sums added in increasing range order from `+0.0`, and
/// written to C (added to it with `accumulate`).
fn sgemm_k_ranges(a: MatRef, b: MatRef, mut c: MatMut, accumulate: bool, len: usize) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    let ranges = k.div_ceil(len);
    // Dense partial blocks, column-major when C is (so that the SGEMM's
    // writes run along C's contiguous direction).
    let (prs, pcs) = if c.row_stride() == 1 && c.col_stride() != 1 {
        (1, m)
    } else {
        (n, 1)
    };
    let mut partial = vec![0.0f32; ranges * m * n];
    partial
        .par_chunks_mut(m * n)
        .enumerate()
        .for_each(|(r, block)| {
            let ks = r * len..((r + 1) * len).min(k);
            let out = OutPtr(block.as_mut_ptr());
            // SAFETY: `block` is a dense m x n block with strides (prs, pcs),
            // owned by this task.
            unsafe { sgemm_block(&a, &b, 0..m, 0..n, ks, out, (prs, pcs), false) }
        });
    // Each element's partial sums in increasing range order, from +0.0.
    let mut total = vec![0.0f32; m * n];
    for block in partial.chunks_exact(m * n) {
        for (t, p) in total.iter_mut().zip(block) {
            *t += p;
        }
    }
    for i in 0..m {
        for j in 0..n {
            let sum = total[i * prs + j * pcs];
            let out = c.at_mut(i, j);
            *out = if accumulate { *out + sum } else { sum };
        }
    }
}

/// The start of C, shared by the tasks that write disjoint blocks of it.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: tasks write disjoint elements through it (see `sgemm`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `C[rows, cols] = A[rows, ks]·B[ks, cols] (+ C[rows, cols])` on this
/// thread (`matrixmultiply::sgemm`, `beta = 1` to accumulate), C starting at
/// `out` with strides `(row, col)`.
///
/// # Safety
/// `out` must address the `A.rows() x B.cols()` distinct elements of C with
/// these strides, valid for reads and writes, aliasing neither A nor B, and
/// no other thread may access C's `rows x cols` block during the call.
/// The ranges must lie inside the operands.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_block(
    a: &MatRef,
    b: &MatRef,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    ks: std::ops::Range<usize>,
    out: OutPtr,
    (rs, cs): (usize, usize),
    accumulate: bool,
) {
    let (ars, acs) = (a.row_stride(), a.col_stride());
    let (brs, bcs) = (b.row_stride(), b.col_stride());
    // The first elements of the blocks: inside their buffers (the views were
    // validated by `MatRef::new`). Strides fit in isize because the buffers
    // do.
    let a0 = a
        .data()
        .as_ptr()
        .wrapping_add(rows.start * ars + ks.start * acs);
    let b0 = b
        .data()
        .as_ptr()
        .wrapping_add(ks.start * brs + cols.start * bcs);
    let c0 = out.0.wrapping_add(rows.start * rs + cols.start * cs);
    matrixmultiply::sgemm(
        rows.len(),
        ks.len(),
        cols.len(),
        1.0,
        a0,
        ars as isize,
        acs as isize,
        b0,
        brs as isize,
        bcs as isize,
        if accumulate { 1.0 } else { 0.0 },
        c0,
        rs as isize,
        cs as isize,
    );
}

/// `C = A·B (+ C)` with operands rounded to bfloat16 (nearest even): the
/// operands are rounded once into dense copies, then multiplied by the FP32
/// SGEMM (a product of two bf16 values is exact in FP32).
pub(crate) fn bf16_gemm(a: MatRef, b: MatRef, c: MatMut, accumulate: bool) {
    // The copies reuse this thread's buffers (taken out while in use, so a
    // nested call simply allocates its own).
    let (mut ab, mut bb) = BF16_COPIES.with(|s| {
        let mut s = s.borrow_mut();
        (std::mem::take(&mut s.0), std::mem::take(&mut s.1))
    });
    {
        let a2 = rounded_copy(&a, &mut ab);
        let b2 = rounded_copy(&b, &mut bb);
        sgemm(a2, b2, c, accumulate);
    }
    BF16_COPIES.with(|s| *s.borrow_mut() = (ab, bb));
}

thread_local! {
    static BF16_COPIES: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// [`round_bf16`] on the bits (round to nearest even by adding `0x7fff` plus
/// the lowest kept bit, then truncating; NaNs keep their sign and become
/// quiet), branch-light so that the copy loop vectorises.
#[inline]
pub(crate) fn round_bf16_bits(x: f32) -> f32 {
    let b = x.to_bits();
    let r = if b & 0x7fff_ffff > 0x7f80_0000 {
        b | 0x0040_0000
    } else {
        b.wrapping_add(0x7fff + ((b >> 16) & 1))
    };
    f32::from_bits(r & 0xffff_0000)
}

/// A dense copy of `x` in `buf` with every element rounded to bf16, in the
/// orientation of `x` (row-major unless `x` is stored by columns), so that
/// the source is read along its contiguous direction.
fn rounded_copy<'b>(x: &MatRef, buf: &'b mut Vec<f32>) -> MatRef<'b> {
    let (rows, cols) = (x.rows(), x.cols());
    let by_rows = x.col_stride() <= x.row_stride();
    // (outer, inner) dimensions and strides of the source walk.
    let (outer, inner, so, si) = if by_rows {
        (rows, cols, x.row_stride(), x.col_stride())
    } else {
        (cols, rows, x.col_stride(), x.row_stride())
    };
    buf.resize(rows * cols, 0.0);
    let data = x.data();
    if let Some(per) = 16384usize.checked_div(inner) {
        // Blocks of whole outer lines, about 16 Ki elements per task.
        let block = per.max(1);
        let fill = |(bi, dst): (usize, &mut [f32])| {
            for (r, line) in dst.chunks_mut(inner).enumerate() {
                let start = (bi * block + r) * so;
                if si == 1 {
                    for (o, &v) in line.iter_mut().zip(&data[start..start + inner]) {
                        *o = round_bf16_bits(v);
                    }
                } else {
                    for (j, o) in line.iter_mut().enumerate() {
                        *o = round_bf16_bits(data[start + j * si]);
                    }
                }
            }
        };
        if outer * inner >= 1 << 16 {
            buf.par_chunks_mut(block * inner).enumerate().for_each(fill);
        } else {
            buf.chunks_mut(block * inner).enumerate().for_each(fill);
        }
    }
    let (rs, cs) = if by_rows {
        (cols.max(1), 1)
    } else {
        (1, rows.max(1))
    };
    MatRef::new(buf, rows, cols, rs, cs).expect("dense copy fits")
}

/// `C = A·B (+ C)` calling the model for every product, rows in parallel
/// (the slow oracle; the sums are the reference's blocked sums, see
/// [`crate::accumulate`]).
pub(crate) fn direct_gemm(
    func: ModelFn,
    bits: u32,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    if m == 0 || n == 0 {
        return;
    }
    let mut dense = vec![0.0f32; m * n];
    dense.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for (j, o) in row.iter_mut().enumerate() {
            let mut acc = BlockedSum::new();
            for p in 0..k {
                acc.add(direct_mul(a.at(i, p), b.at(p, j), func, bits));
            }
            *o = acc.finish();
        }
    });
    write_dense(&dense, c, accumulate);
}

/// Write a dense row-major block of sums into `c`, in (i, j) order.
fn write_dense(dense: &[f32], mut c: MatMut, accumulate: bool) {
    let n = c.cols();
    for i in 0..c.rows() {
        for j in 0..n {
            let o = c.at_mut(i, j);
            *o = if accumulate {
                *o + dense[i * n + j]
            } else {
                dense[i * n + j]
            };
        }
    }
}

/// An empty sum (`k = 0`): `+0.0`, added to C with `accumulate`.
fn fill_zero_sums(mut c: MatMut, accumulate: bool) {
    for i in 0..c.rows() {
        for j in 0..c.cols() {
            let o = c.at_mut(i, j);
            *o = if accumulate { *o + 0.0 } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output blocks: along the longer side, equal, at least [`MIN_BLOCK`]
    /// rows (or the whole side), whole tiles of 16.
    #[test]
    fn output_blocks_follow_the_longer_side() {
        // ResNet-20's first-stage forward chunk, LeNet-300-100, 1024³.
        assert_eq!(output_blocks(14_336, 16, 144), (true, 1792));
        assert_eq!(output_blocks(128, 300, 784), (false, 160));
        assert_eq!(output_blocks(1024, 1024, 1024), (true, 128));
        assert_eq!(output_blocks(100, 10, 128), (true, 100));
        assert_eq!(output_blocks(784, 128, 300), (true, 144));
    }

    /// Ranges are whole accumulation blocks, at least two of them, and
    /// only small outputs are split.
    #[test]
    fn k_ranges_are_accumulation_blocks() {
        // ResNet-20 weight gradients at batch 128, LeNet-5's first.
        assert_eq!(k_range_len(144, 16, 131_072), Some(1024));
        assert_eq!(k_range_len(576, 64, 8_192), Some(1024));
        assert_eq!(k_range_len(25, 6, 100_352), Some(14 * 1024));
        assert_eq!(k_range_len(144, 16, 1024), None);
        assert_eq!(k_range_len(1024, 1024, 1 << 20), None);
        for (m, n, k) in [(1, 1, 1 << 22), (16, 16, 20_000), (255, 257, 2049)] {
            let len = k_range_len(m, n, k).unwrap();
            assert_eq!(len % ACC_BLOCK, 0, "{m}x{n}x{k}: {len}");
            assert!(len < k, "{m}x{n}x{k}: {len}");
        }
    }

    /// The bit-level rounding agrees with the `half` crate's on random bit
    /// patterns and on the ties, overflow and NaN edge cases.
    #[test]
    fn bf16_bit_rounding_matches_round_bf16() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        eprintln!("seed {seed}");
        let mut state = seed | 1;
        let edges = [
            0x3f80_8000u32,
            0x3f81_8000,
            0x7f7f_ffff,
            0xff7f_8000,
            0x7fc0_0001,
            0xff80_0001,
            0x0000_8000,
            0x8000_0001,
        ];
        for i in 0..2_000_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let b = if (i as usize) < edges.len() {
                edges[i as usize]
            } else {
                state as u32
            };
            let (x, y) = (
                round_bf16_bits(f32::from_bits(b)),
                round_bf16(f32::from_bits(b)),
            );
            assert!(
                (x.is_nan() && y.is_nan() && x.is_sign_negative() == y.is_sign_negative())
                    || x.to_bits() == y.to_bits(),
                "{b:#010x}: {:#010x} vs {:#010x}",
                x.to_bits(),
                y.to_bits()
            );
        }
    }
}
