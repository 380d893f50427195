//! AMSim products whose first operand is read straight from zero-padded,
//! pre-split image planes: the stride-1 convolutions (forward and input
//! gradient) without im2col and without packing.
//!
//! At stride 1, row `r = oy * row_w + ox` of the im2col matrix of one image
//! (with `row_w` the padded width) holds, at tap `k`, the padded plane
//! element at `koff[k] + r`: every tap is the same run of the padded image,
//! shifted by the tap's offset. Rows with `ox >= out_w` are computed and
//! dropped (the two to four padding columns of a row), and nothing is copied
//! per tap. The planes are split once into the engine's scale and table
//! offset (`split_planes`), so each input element is split once instead of
//! once per tap (9 times for a 3x3 kernel), and the micro-kernel reads the
//! scale and offset of its six rows at tap `k` at `koff[k] + r`.
//!
//! The products are the engine's fused ones (see the module docs of
//! `engine`): `acc = fma(s_a, V[k][t_a][j], acc)` over the taps in
//! increasing order, from `+0.0`, with `V` the same expansion of the weight
//! panels. This path is taken only when every product of the call is on the
//! fused path (no NaN or infinity on either side, exponents in range) and
//! the whole dot product is one accumulation block (`k <= ACC_BLOCK`), so
//! each sum is the reference's blocked sum bit for bit; any other call
//! keeps the lowering.

use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;

use super::kernel::{LutKernel, Portable};
use super::loops::aligned;
use super::pack::{pack_y, split_bits, PackedY, Rng};
use super::{layouts, ExpRange, Isa, OutPtr, View, NR};
use crate::accumulate::ACC_BLOCK;
use crate::gemm::MatRef;
use crate::Lut;

/// Rows of a micro-kernel tile (both kernels).
pub(crate) const PR: usize = 6;

/// Widest table this path expands (`2^bits` expansion rows per tap; wider
/// tables keep the lowering and its direct lookups).
pub(crate) const MAX_BITS: u32 = 8;

/// Micro-panels of a job at most: their accumulator tiles (two panels)
/// and the expansion of two panels stay in L2.
const JOB_PANELS: usize = 256;

/// Bytes of the expansion of one block of taps of a panel that the kernel
/// reads at a time (as the engine's `EXPANSION_BYTES`).
const EXPANSION_BYTES: usize = 64 * 1024;

/// Padded planes split into the engine's scale (`±2^(e-127)`, `0` for zeros
/// and subnormals) and `t << 4` (`t` the table index), with the exponent
/// range of all of them.
#[derive(Default)]
pub(crate) struct SplitPlanes {
    pub scale: Vec<f32>,
    pub t16: Vec<u32>,
    pub range: ExpRange,
}

thread_local! {
    static PLANES: RefCell<SplitPlanes> = RefCell::new(SplitPlanes::default());
}

/// Largest split planes a thread keeps for its next call, in elements
/// (2 x 64 MiB): a layer's planes are twice its input, so a large input's
/// are freed after the call instead of held for the rest of the run.
const KEEP_PLANES: usize = 16 << 20;

/// Put `planes` back for this thread's next call, if not too large.
fn keep_planes(planes: SplitPlanes) {
    if planes.scale.capacity() <= KEEP_PLANES {
        let _ = PLANES.try_with(|c| *c.borrow_mut() = planes);
    }
}

/// The geometry of padded planes: `planes` planes of `h x w` become
/// `hp x wp` with the source at row `top`, column `left`, zeros elsewhere.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlaneGeom {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub hp: usize,
    pub wp: usize,
    pub top: usize,
    pub left: usize,
}

/// Split `src` (`g.planes` planes of `g.h x g.w`) into padded planes,
/// followed by `slack` zeros.
fn split_planes(src: &[f32], g: &PlaneGeom, bits: u32, slack: usize, out: &mut SplitPlanes) {
    let plane = g.hp * g.wp;
    let len = g.planes * plane + slack;
    out.scale.resize(len, 0.0);
    out.t16.resize(len, 0);
    let shift = 4;
    let rng = out.scale[..g.planes * plane]
        .par_chunks_mut(plane)
        .zip(out.t16[..g.planes * plane].par_chunks_mut(plane))
        .zip(src.par_chunks(g.h * g.w))
        .map(|((sc, tt), s)| {
            // Zero the padding only: the rows above and below the source,
            // and the columns left and right of each source row.
            let (above, below) = (g.top * g.wp, (g.top + g.h) * g.wp);
            sc[..above].fill(0.0);
            tt[..above].fill(0);
            sc[below..].fill(0.0);
            tt[below..].fill(0);
            let mut rng = Rng::EMPTY;
            for y in 0..g.h {
                let row0 = (y + g.top) * g.wp;
                let at = row0 + g.left;
                sc[row0..at].fill(0.0);
                tt[row0..at].fill(0);
                sc[at + g.w..row0 + g.wp].fill(0.0);
                tt[at + g.w..row0 + g.wp].fill(0);
                let row = &s[y * g.w..(y + 1) * g.w];
                let mut r = Rng::EMPTY;
                for ((v, d), t) in row
                    .iter()
                    .zip(&mut sc[at..at + g.w])
                    .zip(&mut tt[at..at + g.w])
                {
                    let (sb, ti, e, m) = split_bits(v.to_bits(), bits);
                    r.add(e, m);
                    *d = f32::from_bits(sb);
                    *t = ti << shift;
                }
                rng = rng.merge(r);
            }
            rng
        })
        .reduce(|| Rng::EMPTY, Rng::merge);
    out.scale[g.planes * plane..].fill(0.0);
    out.t16[g.planes * plane..].fill(0);
    out.range = rng.range();
}

/// The exponent range of the values of a view.
fn view_range(b: &View) -> ExpRange {
    let mut r = Rng::EMPTY;
    for i in 0..b.rows {
        for j in 0..b.cols {
            let (_, _, e, m) = split_bits(b.at(i, j).to_bits(), 0);
            r.add(e, m);
        }
    }
    r.range()
}

/// A stride-1 convolution product as a GEMM over padded planes:
/// `out[n][j][oy][ox] = sum_k A(n, oy * geom.wp + ox, k) * B[k][j]` with
/// `A(n, r, k)` the padded plane element `koff[k] + r` of image `n` (its
/// `channels` planes), for `oy < out_h`, `ox < out_w`.
pub(crate) struct PlanesProduct<'a> {
    pub geom: PlaneGeom,
    pub channels: usize,
    pub koff: &'a [u32],
    pub out_h: usize,
    pub out_w: usize,
}

/// Whether the planes path runs products through `lut` on this CPU, and
/// with which kernels (`None`: keep the lowering). The AVX2 kernels are
/// used where AVX2 is the widest the engine has; CPUs with AVX-512 keep the
/// lowering and its AVX-512 kernels, unless `APPROXTRAIN_CONV_PLANES=1`.
/// `APPROXTRAIN_CONV_PLANES=0` turns the path off everywhere.
pub(crate) fn planes_isa(lut: &Lut) -> Option<Isa> {
    static MODE: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let mode = *MODE.get_or_init(
        || match std::env::var("APPROXTRAIN_CONV_PLANES").as_deref() {
            Ok("0") => Some(false),
            Ok("1") => Some(true),
            _ => None,
        },
    );
    if lut.bits() > MAX_BITS || mode == Some(false) {
        return None;
    }
    match (Isa::detect(), mode) {
        (Isa::Avx2, _) => Some(Isa::Avx2),
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx512, Some(true)) => Some(Isa::Avx2),
        _ => None,
    }
}

/// Run `p` through `lut` with the kernels of `isa` (`Avx2`, or anything
/// else for the portable kernels). Returns `false`, having written nothing,
/// when the path does not apply (a product off the fused path, or `k` over
/// one accumulation block); the caller then takes the lowering.
pub(crate) fn planes_product(
    isa: Isa,
    lut: &Arc<Lut>,
    p: &PlanesProduct,
    src: &[f32],
    b: MatRef,
    out: &mut [f32],
) -> bool {
    let k = p.koff.len();
    let n = b.cols();
    let bits = lut.bits();
    if k == 0 || k > ACC_BLOCK || bits > MAX_BITS || b.rows() != k || n == 0 {
        return false;
    }
    let bv = View::of(&b);
    let brange = view_range(&bv);
    if !brange.expandable() {
        return false;
    }
    let g = &p.geom;
    if g.h * g.w == 0 {
        // An empty input (padding only) is left to the lowering.
        return false;
    }
    let images = g.planes / p.channels;
    // The kernels read and write through raw pointers: the buffers must
    // hold what the geometry says (the callers check them; this keeps a
    // mistake from becoming an out-of-bounds access).
    if p.channels == 0
        || !g.planes.is_multiple_of(p.channels)
        || src.len() < g.planes * g.h * g.w
        || out.len() < images * n * p.out_h * p.out_w
        || p.out_h == 0
        || p.out_w == 0
        || p.out_w > g.wp
        || p.koff
            .iter()
            .any(|&o| o as usize + (p.out_h - 1) * g.wp + p.out_w > p.channels * g.hp * g.wp)
    {
        return false;
    }
    // Rows of an image: the last one needed is `(out_h - 1) * wp + out_w - 1`.
    let rows = (p.out_h - 1) * g.wp + p.out_w;
    let mpanels = rows.div_ceil(PR);
    let image_len = p.channels * g.hp * g.wp;
    let mut planes = PLANES
        .try_with(|c| std::mem::take(&mut *c.borrow_mut()))
        .unwrap_or_default();
    {
        let _lowering = crate::timing::span(crate::timing::Op::Lowering);
        // The last micro-panel reads up to `PR - 1` rows past the image.
        split_planes(src, g, bits, PR + 8, &mut planes);
    }
    if !planes.range.fused_ok(&brange) {
        keep_planes(planes);
        return false;
    }
    let lay = layouts(lut);
    let table_t: &[f32] = &lay.padded_t;
    let panels = n.div_ceil(NR);
    // Outputs of at most 8 columns keep only the first half of each
    // expansion row (8 floats): half the bytes for the kernel to read.
    let half = n <= NR / 2;
    let vsh = bits + if half { 3 } else { 4 };
    let kc = (EXPANSION_BYTES / (4 << vsh)).clamp(4, 16).min(k);
    // The expansion of every panel over the whole of k, made once and read
    // by every job: `V[panel][k][t][jj]`, `jj < 16` (`< 8` when `half`).
    let vpanel = k << vsh;
    if panels * vpanel > MAX_EXPANSION {
        keep_planes(planes);
        return false;
    }
    let mut vbuf = EXPANDED
        .try_with(|c| std::mem::take(&mut *c.borrow_mut()))
        .unwrap_or_default();
    // Expansion rows are 16 floats: start on a 64-byte boundary so that no
    // row load splits a cache line.
    let v = aligned(&mut vbuf, panels * vpanel);
    v.par_chunks_mut(vpanel)
        .enumerate()
        .flat_map(|(panel, vp)| {
            vp.par_chunks_mut(kc << vsh)
                .enumerate()
                .map(move |(kb, vb)| (panel, kb, vb))
        })
        .for_each_init(
            || (PackedY::default(), Vec::new()),
            |(py, wide), (panel, kb, vb)| {
                let k0 = kb * kc;
                let kn = kc.min(k - k0);
                pack_y(py, &bv, k0, kn, panel * NR, bits);
                if !half {
                    // SAFETY: `py` was packed with `kn` and `bits`; `vb`
                    // holds `kn << (bits + 4)` floats.
                    unsafe { expand(isa, lut.table(), table_t, bits, py, kn, vb) };
                    return;
                }
                wide.resize(kn << (bits + 4), 0.0);
                // SAFETY: as above, for `wide`.
                unsafe { expand(isa, lut.table(), table_t, bits, py, kn, wide) };
                for (d, w) in vb.chunks_exact_mut(NR / 2).zip(wide.chunks_exact(NR)) {
                    d.copy_from_slice(&w[..NR / 2]);
                }
            },
        );
    let v: &[f32] = v;
    let total = images * mpanels;
    let threads = rayon::current_num_threads().max(1);
    let jobs = total.div_ceil(JOB_PANELS).max(threads).min(total);
    let per_job = total.div_ceil(jobs);
    let out_ptr = OutPtr {
        ptr: out.as_mut_ptr(),
        rs: 1,
        cs: p.out_h * p.out_w,
        accumulate: false,
    };
    let work = Work {
        p,
        planes: &planes,
        image_len,
        mpanels,
        rows,
        bits,
        vsh,
        kc,
        panels,
        n,
        v,
        out: out_ptr,
    };
    (0..total.div_ceil(per_job))
        .into_par_iter()
        .for_each(|jid| {
            let q0 = jid * per_job;
            let q1 = (q0 + per_job).min(total);
            JOB.with(|s| {
                let mut s = s.try_borrow_mut();
                match s.as_deref_mut() {
                    Ok(s) => work.run(isa, q0..q1, s),
                    Err(_) => work.run(isa, q0..q1, &mut Vec::new()),
                }
            });
        });
    keep_planes(planes);
    let _ = EXPANDED.try_with(|c| *c.borrow_mut() = vbuf);
    true
}

thread_local! {
    /// A job's accumulator tiles.
    static JOB: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The expansion buffer of a call, kept between calls.
    static EXPANDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Largest expansion of a call, in floats (64 MiB; beyond it the call
/// keeps the lowering, which expands block by block).
const MAX_EXPANSION: usize = 16 << 20;

struct Work<'a> {
    p: &'a PlanesProduct<'a>,
    planes: &'a SplitPlanes,
    image_len: usize,
    mpanels: usize,
    rows: usize,
    bits: u32,
    /// Floats of one value of k's expansion, as a shift: `bits + 4`, or
    /// `bits + 3` for outputs of at most 8 columns (half rows).
    vsh: u32,
    kc: usize,
    panels: usize,
    n: usize,
    /// The expansion of every panel over all of k.
    v: &'a [f32],
    /// The output as rows `img * n * out_plane + oy * out_w + ox` and
    /// columns `j` (stride `out_plane`); jobs write disjoint rows.
    out: OutPtr,
}

impl Work<'_> {
    /// Micro-panels `qs` (numbered image by image) for every panel of
    /// output columns.
    fn run(&self, isa: Isa, qs: std::ops::Range<usize>, acc_buf: &mut Vec<f32>) {
        let tile = PR * NR;
        let nq = qs.len();
        let k = self.p.koff.len();
        let vpanel = k << self.vsh;
        let bases: Vec<usize> = qs
            .clone()
            .map(|q| (q / self.mpanels) * self.image_len + (q % self.mpanels) * PR)
            .collect();
        let mut g0 = 0;
        while g0 < self.panels {
            let g1 = (g0 + 2).min(self.panels);
            let group = g1 - g0;
            let acc = aligned(acc_buf, group * nq * tile);
            acc.fill(0.0);
            let mut k0 = 0;
            while k0 < k {
                let kc = self.kc.min(k - k0);
                let koff = &self.p.koff[k0..k0 + kc];
                let v0 = &self.v[g0 * vpanel + (k0 << self.vsh)..][..kc << self.vsh];
                let v1 = &self.v[(g1 - 1) * vpanel + (k0 << self.vsh)..][..kc << self.vsh];
                // The next block's expansion comes from L3 or memory (it
                // was made before the jobs started): ask for a share of its
                // lines at each micro-panel, so that it is in L2 when the
                // sweep reaches it.
                let next = if k0 + kc < k {
                    let kn = self.kc.min(k - k0 - kc);
                    let len = kn << self.vsh;
                    let at = (k0 + kc) << self.vsh;
                    Some((at, len))
                } else {
                    None
                };
                let lines_per_q = next.map_or(0, |(_, len)| (len / 16).div_ceil(nq));
                for (qi, &base) in bases.iter().enumerate() {
                    #[cfg(target_arch = "x86_64")]
                    if let Some((at, len)) = next {
                        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                        let lo = (qi * lines_per_q * 16).min(len);
                        let hi = ((qi + 1) * lines_per_q * 16).min(len);
                        for g in g0..g1 {
                            let p = self.v.as_ptr().wrapping_add(g * vpanel + at);
                            for l in (lo..hi).step_by(16) {
                                // SAFETY: a prefetch never faults.
                                unsafe {
                                    _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(l) as *const i8)
                                };
                            }
                        }
                    }
                    let (a0, a1) = acc.split_at_mut(nq * tile);
                    let t0 = &mut a0[qi * tile..(qi + 1) * tile];
                    // SAFETY: `base + koff[kk] + r` is inside the planes for
                    // every tap and row (the slack covers the last
                    // micro-panel's padding rows); `v0`/`v1` hold this
                    // block's expansions.
                    unsafe {
                        let sp = self.planes.scale.as_ptr().add(base);
                        let tp = self.planes.t16.as_ptr().add(base);
                        if group == 2 {
                            let t1 = &mut a1[qi * tile..(qi + 1) * tile];
                            fma2(
                                isa,
                                self.bits,
                                sp,
                                tp,
                                Rows::Consecutive,
                                koff,
                                v0,
                                v1,
                                t0,
                                t1,
                            );
                        } else {
                            let half = self.n <= NR / 2;
                            fma1(
                                isa,
                                self.bits,
                                sp,
                                tp,
                                Rows::Consecutive,
                                koff,
                                v0,
                                t0,
                                half,
                            );
                        }
                    }
                }
                k0 += kc;
            }
            // Write the finished tiles.
            let out_plane = self.p.out_h * self.p.out_w;
            for (gi, panel) in (g0..g1).enumerate() {
                let j0 = panel * NR;
                let jn = NR.min(self.n - j0);
                for (qi, q) in qs.clone().enumerate() {
                    let (img, mp) = (q / self.mpanels, q % self.mpanels);
                    let t = &acc[(gi * nq + qi) * tile..(gi * nq + qi + 1) * tile];
                    for r in 0..PR {
                        let ri = mp * PR + r;
                        if ri >= self.rows {
                            break;
                        }
                        let (oy, ox) = (ri / self.p.geom.wp, ri % self.p.geom.wp);
                        if ox >= self.p.out_w {
                            continue;
                        }
                        let row = img * self.n * out_plane + oy * self.p.out_w + ox;
                        for jj in 0..jn {
                            // SAFETY: output `(img, j0 + jj, oy, ox)` is
                            // inside `out` (checked against the geometry)
                            // and computed by this job only (row `ri` of
                            // image `img`).
                            unsafe { self.out.write(row, j0 + jj, t[r * NR + jj]) };
                        }
                    }
                }
            }
            g0 = g1;
        }
    }
}

/// Expand a packed panel (see `LutKernel::expand`).
///
/// # Safety
/// As [`LutKernel::expand`].
unsafe fn expand(
    isa: Isa,
    table: &[f32],
    table_t: &[f32],
    bits: u32,
    py: &PackedY,
    kc: usize,
    v: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        return super::x86::Avx2.expand(table, table_t, bits, &py.index, &py.scale, kc, v);
    }
    let _ = isa;
    Portable.expand(table, table_t, bits, &py.index, &py.scale, kc, v)
}

/// Where the six rows of a kernel tile read the planes at value `o` of k:
/// consecutive positions at `o + r` (forward and input gradient: `o` a
/// tap's offset), or taps at `rb[r] + o` (weight gradient: `o` a
/// position's offset).
#[derive(Clone, Copy)]
enum Rows<'a> {
    Consecutive,
    Taps(&'a [u32; PR]),
}

impl Rows<'_> {
    #[inline]
    fn at(self, r: usize, o: u32) -> usize {
        match self {
            Rows::Consecutive => o as usize + r,
            Rows::Taps(rb) => (rb[r] + o) as usize,
        }
    }
}

/// `acc[r][jj] = fma(s[at], v[(kk << (bits + 4)) + t16[at] + jj], acc[r][jj])`
/// with `at = rows.at(r, kpos[kk])`, for `kk` in order, `r < PR`, and
/// `jj < NR`; with `half` (consecutive rows only), `jj < NR / 2` on half
/// rows, `v[(kk << (bits + 3)) + t16[at] / 2 + jj]` (the other columns are
/// padding and left as they are).
///
/// # Safety
/// Every `rows.at(r, kpos[kk])` is inside the planes behind `s` and `t16`,
/// and `v` holds `kpos.len() << (bits + 4)` floats (`bits + 3` with `half`).
#[allow(clippy::too_many_arguments)]
unsafe fn fma1(
    isa: Isa,
    bits: u32,
    s: *const f32,
    t16: *const u32,
    rows: Rows,
    kpos: &[u32],
    v: &[f32],
    acc: &mut [f32],
    half: bool,
) {
    debug_assert!(v.len() >= kpos.len() << (bits + 3 + u32::from(!half)));
    debug_assert!(acc.len() >= PR * NR);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        use super::x86::{planes_fma_avx2, planes_fma_half_avx2, rows_fma_avx2};
        let (v, acc) = (v.as_ptr(), acc.as_mut_ptr());
        return match (rows, half) {
            (Rows::Consecutive, true) => planes_fma_half_avx2(bits, s, t16, kpos, v, acc),
            (Rows::Consecutive, false) => planes_fma_avx2(bits, s, t16, kpos, v, acc),
            (Rows::Taps(rb), _) => rows_fma_avx2(bits, s, t16, rb, kpos, v, acc),
        };
    }
    let _ = isa;
    portable_rows(bits, s, t16, kpos, |r, o| rows.at(r, o), v, acc, half)
}

/// [`fma1`] for two panels of the same rows (full rows).
///
/// # Safety
/// As [`fma1`], for `v` and `v2`.
#[allow(clippy::too_many_arguments)]
unsafe fn fma2(
    isa: Isa,
    bits: u32,
    s: *const f32,
    t16: *const u32,
    rows: Rows,
    kpos: &[u32],
    v: &[f32],
    v2: &[f32],
    acc: &mut [f32],
    acc2: &mut [f32],
) {
    debug_assert!(v2.len() >= kpos.len() << (bits + 4) && acc2.len() >= PR * NR);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        debug_assert!(v.len() >= kpos.len() << (bits + 4) && acc.len() >= PR * NR);
        let (v, v2, a, a2) = (v.as_ptr(), v2.as_ptr(), acc.as_mut_ptr(), acc2.as_mut_ptr());
        for r0 in [0, 3] {
            match rows {
                Rows::Consecutive => {
                    super::x86::planes_fma2_avx2(bits, r0, s, t16, kpos, v, v2, a, a2)
                }
                Rows::Taps(rb) => {
                    super::x86::rows_fma2_avx2(bits, r0, s, t16, rb, kpos, v, v2, a, a2)
                }
            }
        }
        return;
    }
    fma1(isa, bits, s, t16, rows, kpos, v, acc, false);
    fma1(isa, bits, s, t16, rows, kpos, v2, acc2, false);
}

/// The portable [`fma1`]: row `r` at `kpos[kk]` reads
/// its scale and offset at `at(r, kpos[kk])` (full or half expansion rows,
/// as in [`fma1`]). The product `s * v` is exact on the fused path, so a
/// separate multiply and add round as a fused multiply-add.
#[allow(clippy::too_many_arguments)]
unsafe fn portable_rows(
    bits: u32,
    s: *const f32,
    t16: *const u32,
    kpos: &[u32],
    at: impl Fn(usize, u32) -> usize,
    v: &[f32],
    acc: &mut [f32],
    half: bool,
) {
    let (vsh, cols) = if half {
        (bits + 3, NR / 2)
    } else {
        (bits + 4, NR)
    };
    for (kk, &o) in kpos.iter().enumerate() {
        let vk = &v[kk << vsh..];
        for r in 0..PR {
            let a = at(r, o);
            let sc = *s.add(a);
            let t = (*t16.add(a) >> u32::from(half)) as usize;
            for jj in 0..cols {
                acc[r * NR + jj] += sc * vk[t + jj];
            }
        }
    }
}

/// A stride-1 convolution's weight gradient over padded planes of its
/// input: `out[j * rows + row] = sum_k A(row, k) * B[k][j]` with `A(row, k)`
/// the padded plane element `koff[row] + pos[k]` (`row` a tap
/// `(c, kh, kw)`, `k` an output position `(n, oh, ow)` of the batch, at
/// `n * image + oh * wp + ow`), in blocked accumulation over `k`.
pub(crate) struct PlanesWeightGrad<'a> {
    pub geom: PlaneGeom,
    pub koff: &'a [u32],
    pub pos: &'a [u32],
}

/// Largest block sums of a weight-gradient call, in floats (64 MiB).
const MAX_BLOCK_SUMS: usize = 16 << 20;

/// Run the weight gradient `p` through `lut` (see [`PlanesWeightGrad`]):
/// the rows (taps) read the split planes in place, so there is neither an
/// im2col copy nor a packing of it; `B` (the output gradient, `k x n`) is
/// packed and expanded a few positions at a time and shared by every tap.
/// Every accumulation block of `k` is a job, whose sums are added in block
/// order afterwards (the reference's blocked sum, at any thread count).
/// Returns `false`, having written nothing, when a product is off the fused
/// path; the caller then takes the lowering.
pub(crate) fn planes_weight_product(
    isa: Isa,
    lut: &Arc<Lut>,
    p: &PlanesWeightGrad,
    src: &[f32],
    b: MatRef,
    out: &mut [f32],
) -> bool {
    let (k, n, rows) = (p.pos.len(), b.cols(), p.koff.len());
    let bits = lut.bits();
    let g = &p.geom;
    // An empty input (padding only) is left to the lowering.
    if k == 0 || rows == 0 || n == 0 || bits > MAX_BITS || b.rows() != k || g.h * g.w == 0 {
        return false;
    }
    let span = g.planes * g.hp * g.wp;
    let (kmax, pmax) = (
        p.koff.iter().copied().max().unwrap_or(0) as usize,
        p.pos.iter().copied().max().unwrap_or(0) as usize,
    );
    if src.len() < g.planes * g.h * g.w || out.len() < n * rows || kmax + pmax >= span {
        return false;
    }
    let panels = n.div_ceil(NR);
    let rtiles = rows.div_ceil(PR);
    let prows = rtiles * PR;
    let blocks = k.div_ceil(ACC_BLOCK);
    let per_block = panels * prows * NR;
    if blocks * per_block > MAX_BLOCK_SUMS {
        return false;
    }
    // Tiles past the last tap read tap 0 (inside the planes); their sums
    // are dropped.
    let rb: Vec<u32> = (0..prows)
        .map(|r| p.koff.get(r).copied().unwrap_or(p.koff[0]))
        .collect();
    let mut planes = PLANES
        .try_with(|c| std::mem::take(&mut *c.borrow_mut()))
        .unwrap_or_default();
    {
        let _lowering = crate::timing::span(crate::timing::Op::Lowering);
        split_planes(src, g, bits, 0, &mut planes);
    }
    if planes.range.special {
        keep_planes(planes);
        return false;
    }
    let lay = layouts(lut);
    let table_t: &[f32] = &lay.padded_t;
    // At most 8 columns: each product is looked up in the table directly
    // (one 8-lane gather per row and position) instead of expanding 2^bits
    // rows of a 16-column panel per position for a few taps to share.
    let direct = n <= NR / 2;
    let kc = if direct {
        DIRECT_POSITIONS
    } else {
        (EXPANSION_BYTES / ((NR * 4) << bits)).clamp(4, 16)
    };
    let bv = View::of(&b);
    let declined = std::sync::atomic::AtomicBool::new(false);
    let mut sums = vec![0.0f32; blocks * per_block];
    {
        let planes = &planes;
        let (rb, bv, declined) = (&rb, &bv, &declined);
        sums.par_chunks_mut(per_block).enumerate().for_each_init(
            WeightScratch::default,
            |ws, (blk, bsum)| {
                if declined.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let (k0, k1) = (blk * ACC_BLOCK, ((blk + 1) * ACC_BLOCK).min(k));
                let vsz = kc << (bits + 4);
                let v = aligned(&mut ws.v, 2 * vsz);
                let (v0, v1) = v.split_at_mut(vsz);
                let mut g0 = 0;
                while g0 < panels {
                    let g1 = (g0 + 2).min(panels);
                    let acc = &mut bsum[g0 * prows * NR..g1 * prows * NR];
                    acc.fill(0.0);
                    let (a0, a1) = acc.split_at_mut(prows * NR);
                    let mut c0 = k0;
                    while c0 < k1 {
                        let kn = kc.min(k1 - c0);
                        for (gi, vg) in [&mut *v0, &mut *v1].into_iter().enumerate().take(g1 - g0) {
                            let py = &mut ws.py[gi];
                            pack_y(py, bv, c0, kn, (g0 + gi) * NR, bits);
                            if !planes.range.fused_ok(&py.range) {
                                declined.store(true, std::sync::atomic::Ordering::Relaxed);
                                return;
                            }
                            if direct {
                                continue;
                            }
                            // SAFETY: `py` was packed with `kn` and `bits`;
                            // `vg` holds `kc << (bits + 4)` floats.
                            unsafe { expand(isa, lut.table(), table_t, bits, py, kn, vg) };
                        }
                        let pos = &p.pos[c0..c0 + kn];
                        if direct {
                            let py = &ws.py[0];
                            for t in 0..rtiles {
                                let rbt: &[u32; PR] = rb[t * PR..(t + 1) * PR].try_into().unwrap();
                                let at = t * PR * NR..(t + 1) * PR * NR;
                                // SAFETY: as below; `py` holds `kn` packed
                                // positions and the table `2^(2 bits)` entries.
                                unsafe {
                                    rows_direct(
                                        isa,
                                        bits,
                                        planes,
                                        rbt,
                                        pos,
                                        lut.table(),
                                        py,
                                        &mut a0[at],
                                    )
                                };
                            }
                            c0 += kn;
                            continue;
                        }
                        for t in 0..rtiles {
                            let rbt: &[u32; PR] = rb[t * PR..(t + 1) * PR].try_into().unwrap();
                            let at = t * PR * NR..(t + 1) * PR * NR;
                            // SAFETY: `rb[r] + pos[kk] < span` for every
                            // row and position (checked above); `v0`/`v1`
                            // hold this chunk's expansions.
                            unsafe {
                                let (sp, tp) = (planes.scale.as_ptr(), planes.t16.as_ptr());
                                if g1 - g0 == 2 {
                                    fma2(
                                        isa,
                                        bits,
                                        sp,
                                        tp,
                                        Rows::Taps(rbt),
                                        pos,
                                        v0,
                                        v1,
                                        &mut a0[at.clone()],
                                        &mut a1[at],
                                    );
                                } else {
                                    let rows = Rows::Taps(rbt);
                                    fma1(isa, bits, sp, tp, rows, pos, v0, &mut a0[at], false);
                                }
                            }
                        }
                        c0 += kn;
                    }
                    g0 = g1;
                }
            },
        );
    }
    keep_planes(planes);
    if declined.into_inner() {
        return false;
    }
    // The block sums in block order, from +0.0.
    out[..n * rows]
        .par_chunks_mut(rows)
        .enumerate()
        .for_each(|(j, orow)| {
            let (panel, jj) = (j / NR, j % NR);
            for (row, o) in orow.iter_mut().enumerate() {
                let mut tot = 0.0f32;
                for blk in 0..blocks {
                    tot += sums[blk * per_block + (panel * prows + row) * NR + jj];
                }
                *o = tot;
            }
        });
    true
}

/// Positions packed at a time by the direct weight gradient.
const DIRECT_POSITIONS: usize = 64;

/// `acc[r][jj] = fma(s[at], L[t(at)][tb(kk, jj)] * sb(kk, jj), acc[r][jj])`
/// with `at = rb[r] + pos[kk]`, for `kk` in order, `r < PR` and `jj < NR / 2`
/// (the other lanes are left as they are): the direct lookups of narrow
/// weight gradients, exact on the fused path as the expansion's products.
///
/// # Safety
/// Every `rb[r] + pos[kk]` is inside `planes`, `py` holds `pos.len()`
/// packed positions, and `table` is the `2^bits x 2^bits` table.
#[allow(clippy::too_many_arguments)]
unsafe fn rows_direct(
    isa: Isa,
    bits: u32,
    planes: &SplitPlanes,
    rb: &[u32; PR],
    pos: &[u32],
    table: &[f32],
    py: &PackedY,
    acc: &mut [f32],
) {
    debug_assert!(py.index.len() >= pos.len() * NR && acc.len() >= PR * NR);
    debug_assert!(table.len() >= 1 << (2 * bits));
    let (s, t16) = (planes.scale.as_ptr(), planes.t16.as_ptr());
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        return super::x86::rows_direct_avx2(
            bits,
            s,
            t16,
            rb,
            pos,
            table.as_ptr(),
            py.index.as_ptr(),
            py.scale.as_ptr(),
            acc.as_mut_ptr(),
        );
    }
    let _ = isa;
    for (kk, &o) in pos.iter().enumerate() {
        let (idx, sb) = (&py.index[kk * NR..], &py.scale[kk * NR..]);
        for (r, &b) in rb.iter().enumerate() {
            let at = (b + o) as usize;
            let sc = *s.add(at);
            let row = &table[((*t16.add(at) >> 4) as usize) << bits..];
            for jj in 0..NR / 2 {
                acc[r * NR + jj] += sc * (row[idx[jj] as usize] * sb[jj]);
            }
        }
    }
}

/// A weight-gradient job's buffers.
#[derive(Default)]
struct WeightScratch {
    v: Vec<f32>,
    py: [PackedY; 2],
}
