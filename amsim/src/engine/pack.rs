//! Packing: operands split once into (scale, table index) and laid out in
//! the order the micro-kernels read them.

use super::{decompose, ExpRange, View, NR};

/// How the first operand's table index becomes an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// Offset of row `t` of the expansion `V[kk][t][0..NR]`:
    /// `(kk << (bits + 4)) | (t << 4)` (`NR = 16`), `kk` counted from the
    /// start of its expansion block.
    Expand,
    /// Offset of row `t` of the table: `t << bits`.
    Direct,
}

/// A block of `rows` rows of the first operand over `kc` values of `k`, in
/// micro-panels of `mr` rows: `scale[(mp * kc + kk) * mr + r]` and `off[..]`
/// the same, for row `mp * mr + r` of the block (rows past the end are zero
/// with scale 0), and the exponent range of each micro-panel.
#[derive(Default)]
pub(crate) struct PackedX {
    pub scale: Vec<f32>,
    pub off: Vec<u32>,
    pub range: Vec<ExpRange>,
}

/// Pack rows `i0..i0 + rows` and columns `k0..k0 + kc` of `x`, for
/// expansion blocks of `kblock` values of k.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pack_x(
    px: &mut PackedX,
    x: &View,
    i0: usize,
    rows: usize,
    k0: usize,
    kc: usize,
    mr: usize,
    bits: u32,
    kblock: usize,
    strategy: Strategy,
) {
    let panels = rows.div_ceil(mr);
    let len = panels * kc * mr;
    px.scale.clear();
    px.scale.resize(len, 0.0);
    px.off.clear();
    px.off.resize(len, 0);
    px.range.clear();
    px.range.resize(panels, ExpRange::EMPTY);
    for mp in 0..panels {
        let mut range = ExpRange::EMPTY;
        let base = mp * kc * mr;
        let scale = &mut px.scale[base..base + kc * mr];
        let off = &mut px.off[base..base + kc * mr];
        for r in 0..mr.min(rows - mp * mr) {
            let i = i0 + mp * mr + r;
            // Row i, columns k0.. as a strided run of the buffer.
            let row = &x.data[i * x.rs + k0 * x.cs..];
            // `kb` = kk modulo `kblock`, counted rather than divided.
            let mut kb = 0u32;
            for kk in 0..kc {
                let (s, t, e) = decompose(row[kk * x.cs], bits);
                range.add(e);
                let o = kk * mr + r;
                scale[o] = s;
                off[o] = match strategy {
                    Strategy::Expand => (kb << (bits + 4)) | (t << 4),
                    Strategy::Direct => t << bits,
                };
                kb += 1;
                if kb as usize == kblock {
                    kb = 0;
                }
            }
        }
        if strategy == Strategy::Expand {
            // Padding rows must still point at their own `kk` slice.
            for r in mr.min(rows - mp * mr)..mr {
                for kk in 0..kc {
                    px.off[base + kk * mr + r] = ((kk % kblock) as u32) << (bits + 4);
                }
            }
        }
        px.range[mp] = range;
    }
}

/// A panel of `NR` columns of the second operand over `kc` values of `k`:
/// `index[kk * NR + jj]`, `scale[..]` (columns past the end have scale 0),
/// and the panel's exponent range.
#[derive(Default)]
pub(crate) struct PackedY {
    pub index: Vec<u32>,
    pub scale: Vec<f32>,
    pub range: ExpRange,
}

/// Pack columns `j0..j0 + NR` (clipped to `y.cols`) and rows `k0..k0 + kc`.
pub(crate) fn pack_y(py: &mut PackedY, y: &View, k0: usize, kc: usize, j0: usize, bits: u32) {
    py.index.clear();
    py.index.resize(kc * NR, 0);
    py.scale.clear();
    py.scale.resize(kc * NR, 0.0);
    let mut range = ExpRange::EMPTY;
    let cols = NR.min(y.cols - j0);
    for kk in 0..kc {
        for jj in 0..cols {
            let (s, t, e) = decompose(y.at(k0 + kk, j0 + jj), bits);
            range.add(e);
            py.index[kk * NR + jj] = t;
            py.scale[kk * NR + jj] = s;
        }
    }
    py.range = range;
}
