//! The micro-kernel interface and the portable kernel.
//!
//! A micro-kernel updates an `MR x NR` accumulator tile (`acc[r * NR + jj]`)
//! over `kc` steps of `k`, in increasing `k`, with one exact fused step per
//! product (see the module docs of `engine`). Only the kernels know how a
//! product is formed; the loop nest and packing are shared.

use super::NR;

/// One instruction set's micro-kernels.
///
/// # Safety (all methods)
/// The slices come from `pack_x` / `pack_y` with the same `kc` and `bits`
/// (offsets in `off` point inside `v` for [`LutKernel::expand_fma`] and
/// inside `table` for [`LutKernel::direct_fma`]), `table` has `2^(2 bits)`
/// entries, `v` has at least `kc << (bits + 4)` and `acc` `MR * NR`.
pub(crate) trait LutKernel: Sync {
    /// Rows of the accumulator tile.
    const MR: usize;

    /// Tabulate a panel for every first-operand index `t`:
    /// `v[(kk << (bits + 4)) + (t << 4) + jj] = table[(t << bits) | index[kk * NR + jj]] * scale[kk * NR + jj]`;
    /// `table_t` is the transpose of `table` with padded rows (see
    /// `Table::entries_t`).
    #[allow(clippy::too_many_arguments)]
    unsafe fn expand(
        &self,
        table: &[f32],
        table_t: &[f32],
        bits: u32,
        index: &[u32],
        scale: &[f32],
        kc: usize,
        v: &mut [f32],
    );

    /// `acc[r][jj] = fma(sa[kk * MR + r], v[off[kk * MR + r] + jj], acc[r][jj])`
    /// for `kk` in `0..kc`.
    unsafe fn expand_fma(&self, kc: usize, sa: &[f32], off: &[u32], v: &[f32], acc: &mut [f32]);

    /// [`LutKernel::expand_fma`] on two panels that share the first
    /// operand (`v`/`acc` and `v2`/`acc2`).
    #[allow(clippy::too_many_arguments)]
    unsafe fn expand_fma2(
        &self,
        kc: usize,
        sa: &[f32],
        off: &[u32],
        v: &[f32],
        v2: &[f32],
        acc: &mut [f32],
        acc2: &mut [f32],
    ) {
        self.expand_fma(kc, sa, off, v, acc);
        self.expand_fma(kc, sa, off, v2, acc2);
    }

    /// As [`LutKernel::expand_fma`] with the expansion row formed on the fly:
    /// `table[off[kk * MR + r] + index[kk * NR + jj]] * scale[kk * NR + jj]`,
    /// for the first `rows` rows of the tile only (the others are padding
    /// and are left as they are).
    #[allow(clippy::too_many_arguments)]
    unsafe fn direct_fma(
        &self,
        kc: usize,
        rows: usize,
        sa: &[f32],
        off: &[u32],
        table: &[f32],
        index: &[u32],
        scale: &[f32],
        acc: &mut [f32],
    );
}

/// Plain Rust kernels (any target). The product `sa * v` is exact on the
/// fused path, so a separate multiply and add round exactly like an FMA.
pub(crate) struct Portable;

impl LutKernel for Portable {
    const MR: usize = 4;

    #[allow(clippy::too_many_arguments)]
    unsafe fn expand(
        &self,
        _table: &[f32],
        table_t: &[f32],
        bits: u32,
        index: &[u32],
        scale: &[f32],
        kc: usize,
        v: &mut [f32],
    ) {
        let n = 1usize << bits;
        let st = super::padded_stride(bits);
        for kk in 0..kc {
            let vk = &mut v[(kk << (bits + 4))..((kk + 1) << (bits + 4))];
            // Column jj of the expansion is row `tb` of the transposed
            // table, scaled.
            for jj in 0..NR {
                let tb = index[kk * NR + jj] as usize;
                let sc = scale[kk * NR + jj];
                let src = &table_t[tb * st..tb * st + n];
                for (t, &l) in src.iter().enumerate() {
                    vk[t * NR + jj] = l * sc;
                }
            }
        }
    }

    unsafe fn expand_fma(&self, kc: usize, sa: &[f32], off: &[u32], v: &[f32], acc: &mut [f32]) {
        const MR: usize = Portable::MR;
        let mut c = [[0.0f32; NR]; MR];
        for (r, row) in c.iter_mut().enumerate() {
            row.copy_from_slice(&acc[r * NR..r * NR + NR]);
        }
        for kk in 0..kc {
            for (r, row) in c.iter_mut().enumerate() {
                let s = sa[kk * MR + r];
                let o = off[kk * MR + r] as usize;
                let vr = &v[o..o + NR];
                for jj in 0..NR {
                    row[jj] += s * vr[jj];
                }
            }
        }
        for (r, row) in c.iter().enumerate() {
            acc[r * NR..r * NR + NR].copy_from_slice(row);
        }
    }

    unsafe fn direct_fma(
        &self,
        kc: usize,
        rows: usize,
        sa: &[f32],
        off: &[u32],
        table: &[f32],
        index: &[u32],
        scale: &[f32],
        acc: &mut [f32],
    ) {
        const MR: usize = Portable::MR;
        for kk in 0..kc {
            let idx = &index[kk * NR..kk * NR + NR];
            let sc = &scale[kk * NR..kk * NR + NR];
            for r in 0..MR.min(rows) {
                let s = sa[kk * MR + r];
                let o = off[kk * MR + r] as usize;
                let row = &mut acc[r * NR..r * NR + NR];
                for jj in 0..NR {
                    row[jj] += s * (table[o + idx[jj] as usize] * sc[jj]);
                }
            }
        }
    }
}
