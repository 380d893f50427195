//! Native `fp32` / `bf16` GEMM through an optimised SGEMM
//! (`matrixmultiply`), and the `direct` model loop.

use rayon::prelude::*;

use super::is_injective;
use crate::accumulate::BlockedSum;
use crate::gemm::{MatMut, MatRef};
use crate::product::direct_mul;
#[cfg(test)]
use crate::product::round_bf16;
use crate::ModelFn;

/// `C = A·B (+ C)` with native FP32 products (`matrixmultiply::sgemm`,
/// `beta = 1` to accumulate). Shapes are already checked.
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
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: every view was validated against its buffer (`MatRef::new`,
    // `MatMut::new`), C's elements are distinct (checked above) and C cannot
    // alias A or B (it is borrowed mutably). Strides fit in isize because the
    // buffers do.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data().as_ptr(),
            a.row_stride() as isize,
            a.col_stride() as isize,
            b.data().as_ptr(),
            b.row_stride() as isize,
            b.col_stride() as isize,
            beta,
            c.data_mut().as_mut_ptr(),
            c.row_stride() as isize,
            c.col_stride() as isize,
        );
    }
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
fn round_bf16_bits(x: f32) -> f32 {
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
