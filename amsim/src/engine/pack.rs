//! Packing: operands split once into (scale, table index) and laid out in
//! the order the micro-kernels read them.

use super::{ExpRange, View, NR};

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
    /// `live[mp * kblocks + kb]`: whether micro-panel `mp` has a normal
    /// operand (a non-zero scale) in the `kb`-th expansion block of `kblock`
    /// values of k (`kblocks = kc.div_ceil(kblock)`). A block without one
    /// holds only zeros and subnormals, or NaNs and infinities (which
    /// `range` reports); see [`PackedX::live`].
    live: Vec<bool>,
    kblocks: usize,
}

impl PackedX {
    /// Whether the fused products of micro-panel `mp` over expansion block
    /// `kb` can change an accumulator. When it is `false` and the block
    /// takes the fused path (no NaN or infinity: `range[mp]` says so), every
    /// product is a signed zero, and adding a zero leaves a sum that started
    /// at `+0.0` unchanged (it is never `-0.0` under round-to-nearest), so
    /// the kernel call can be skipped: a causal attention's weights are zero
    /// above the diagonal, half of `A·V`, `dS·K`, `Aᵀ·dYh` and `dSᵀ·Q`.
    #[inline]
    pub fn live(&self, mp: usize, kb: usize) -> bool {
        self.live[mp * self.kblocks + kb]
    }

    /// Fill `live` for `panels` micro-panels of `kc` values of k.
    fn mark_live(&mut self, panels: usize, kc: usize, mr: usize, kblock: usize) {
        let kblocks = kc.div_ceil(kblock.max(1));
        self.kblocks = kblocks;
        self.live.clear();
        self.live.reserve(panels * kblocks);
        for mp in 0..panels {
            for kb in 0..kblocks {
                let k_lo = kb * kblock;
                let k_hi = (k_lo + kblock).min(kc);
                let s = &self.scale[(mp * kc + k_lo) * mr..(mp * kc + k_hi) * mr];
                // OR of 16 scales at a time (vectorised), stopping at the
                // first normal operand.
                let any = s
                    .chunks(16)
                    .any(|c| c.iter().fold(0u32, |a, v| a | v.to_bits()) != 0);
                self.live.push(any);
            }
        }
    }
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
    // Every element is written below; the buffers only grow.
    if px.scale.len() < len {
        px.scale.resize(len, 0.0);
        px.off.resize(len, 0);
    }
    px.range.clear();
    px.range.resize(panels, ExpRange::EMPTY);
    let job = XJob {
        x,
        i0,
        rows,
        k0,
        kc,
        mr,
        bits,
        kblock,
        strategy,
    };
    let (scale, off, range) = (&mut px.scale[..len], &mut px.off[..len], &mut px.range[..]);
    pack_x_isa(&job, scale, off, range);
    px.mark_live(panels, kc, mr, kblock);
}

/// The packing loops compiled for the widest vectors the CPU has (the
/// packing is integer work, identical on every path).
fn pack_x_isa(job: &XJob, scale: &mut [f32], off: &mut [u32], range: &mut [ExpRange]) {
    let (x, mr) = (job.x, job.mr);
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") {
            if x.rs == 1 && mr <= 16 {
                // SAFETY: the features were just detected.
                return unsafe { pack_x_rows_avx512(job, scale, off, range) };
            }
            if x.cs == 1 && mr <= 16 {
                // SAFETY: as above.
                return unsafe { pack_x_cols_avx512(job, scale, off, range) };
            }
            // SAFETY: the features were just detected.
            return unsafe { pack_x_avx512(job, scale, off, range) };
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            return unsafe { pack_x_avx2(job, scale, off, range) };
        }
    }
    let _ = (x, mr);
    pack_x_body(job, scale, off, range);
}

/// The arguments of one [`pack_x`].
struct XJob<'a, 'b> {
    x: &'a View<'b>,
    i0: usize,
    rows: usize,
    k0: usize,
    kc: usize,
    mr: usize,
    bits: u32,
    kblock: usize,
    strategy: Strategy,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn pack_x_avx512(j: &XJob, scale: &mut [f32], off: &mut [u32], range: &mut [ExpRange]) {
    pack_x_body(j, scale, off, range)
}

/// [`pack_x_body`] for rows adjacent in memory (`x.rs == 1`) and
/// `mr <= 16`, in AVX-512: the `live` rows of a micro-panel at one `k` are
/// one masked vector, split and stored at once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn pack_x_rows_avx512(j: &XJob, scale: &mut [f32], off: &mut [u32], range: &mut [ExpRange]) {
    use std::arch::x86_64::*;
    let XJob {
        x,
        i0,
        rows,
        k0,
        kc,
        mr,
        bits,
        kblock,
        strategy,
    } = *j;
    debug_assert!(x.rs == 1 && mr <= 16);
    let panels = rows.div_ceil(mr);
    let (tshift, kshift) = match strategy {
        Strategy::Expand => (4, bits + 4),
        Strategy::Direct => (bits, 0),
    };
    if panels == 0 || kc == 0 {
        return;
    }
    // Every element read lies below this bound (checked once).
    assert!(i0 + rows - 1 + (k0 + kc - 1) * x.cs < x.data.len());
    assert!(scale.len() >= panels * kc * mr && off.len() >= panels * kc * mr);
    let data = x.data.as_ptr();
    let exp_mask = _mm512_set1_epi32(0xff);
    let one = _mm512_set1_epi32(1);
    let n254 = _mm512_set1_epi32(254);
    let sign_exp = _mm512_set1_epi32(0xff80_0000u32 as i32);
    let frac = _mm512_set1_epi32(0x007f_ffff);
    let tcount = _mm_cvtsi32_si128((23 - bits) as i32);
    let scount = _mm_cvtsi32_si128(tshift as i32);
    const GROUP: usize = 16;
    let mut mp0 = 0;
    while mp0 < panels {
        let mp1 = (mp0 + GROUP).min(panels);
        let mut lo = [_mm512_set1_epi32(255); GROUP];
        let mut hi = [_mm512_setzero_si512(); GROUP];
        let mut raw = [_mm512_setzero_si512(); GROUP];
        for kk in 0..kc {
            let kb = if strategy == Strategy::Expand {
                ((kk % kblock) as u32) << kshift
            } else {
                0
            };
            let kbv = _mm512_set1_epi32(kb as i32);
            let start = i0 + (k0 + kk) * x.cs;
            // The next group's lines of this k (see `pack_x_body`).
            let ahead = data.wrapping_add(start + mp1 * mr);
            for l in (0..GROUP * mr).step_by(16) {
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(l) as *const i8);
            }
            for (g, mp) in (mp0..mp1).enumerate() {
                let live = mr.min(rows - mp * mr);
                let lm: __mmask16 = ((1u32 << live) - 1) as __mmask16;
                let v = _mm512_maskz_loadu_epi32(lm, data.add(start + mp * mr) as *const i32);
                let e = _mm512_and_si512(_mm512_srli_epi32::<23>(v), exp_mask);
                let normal = _mm512_mask_cmplt_epu32_mask(lm, _mm512_sub_epi32(e, one), n254);
                let sb = _mm512_maskz_and_epi32(normal, v, sign_exp);
                let t = _mm512_maskz_srl_epi32(normal, _mm512_and_si512(v, frac), tcount);
                let o = _mm512_or_si512(kbv, _mm512_sll_epi32(t, scount));
                let at = (mp * kc + kk) * mr;
                _mm512_mask_storeu_epi32(scale.as_mut_ptr().add(at) as *mut i32, lm, sb);
                _mm512_mask_storeu_epi32(off.as_mut_ptr().add(at) as *mut i32, lm, o);
                lo[g] = _mm512_mask_min_epu32(lo[g], normal, lo[g], e);
                hi[g] = _mm512_mask_max_epu32(hi[g], normal, hi[g], e);
                raw[g] = _mm512_mask_max_epu32(raw[g], lm, raw[g], e);
            }
        }
        for (g, mp) in (mp0..mp1).enumerate() {
            range[mp] = ExpRange {
                min: _mm512_reduce_min_epu32(lo[g]),
                max: _mm512_reduce_max_epu32(hi[g]),
                special: _mm512_reduce_max_epu32(raw[g]) == 255,
            };
        }
        mp0 = mp1;
    }
    // Padding rows: scale 0, and (for the expansion) an offset inside their
    // own `kk` slice.
    let mp = panels - 1;
    for r in (rows - mp * mr)..mr {
        for kk in 0..kc {
            scale[(mp * kc + kk) * mr + r] = 0.0;
            off[(mp * kc + kk) * mr + r] = if strategy == Strategy::Expand {
                ((kk % kblock) as u32) << kshift
            } else {
                0
            };
        }
    }
}

/// [`pack_x_body`] for a row-major first operand (`x.cs == 1`, the usual
/// case: activations, attention weights) and `mr <= 16`, in AVX-512. The
/// scalar walk stores each element `mr` floats from the previous one; here
/// 16 values of k of each row of a micro-panel are loaded and split as one
/// vector, and the `mr x 16` block is transposed in registers into the
/// k-major layout of the packed block. Padding rows get scale 0 and the
/// offset of their own `kk` slice, as in [`pack_x_body`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn pack_x_cols_avx512(j: &XJob, scale: &mut [f32], off: &mut [u32], range: &mut [ExpRange]) {
    use std::arch::x86_64::*;
    let XJob {
        x,
        i0,
        rows,
        k0,
        kc,
        mr,
        bits,
        kblock,
        strategy,
    } = *j;
    debug_assert!(x.cs == 1 && mr <= 16);
    let panels = rows.div_ceil(mr);
    let (tshift, kshift) = match strategy {
        Strategy::Expand => (4, bits + 4),
        Strategy::Direct => (bits, 0),
    };
    if panels == 0 || kc == 0 {
        return;
    }
    // Every element read lies below this bound (checked once).
    assert!((i0 + rows - 1) * x.rs + k0 + kc - 1 < x.data.len());
    assert!(scale.len() >= panels * kc * mr && off.len() >= panels * kc * mr);
    let data = x.data.as_ptr();
    let exp_mask = _mm512_set1_epi32(0xff);
    let one = _mm512_set1_epi32(1);
    let n254 = _mm512_set1_epi32(254);
    let sign_exp = _mm512_set1_epi32(0xff80_0000u32 as i32);
    let frac = _mm512_set1_epi32(0x007f_ffff);
    let tcount = _mm_cvtsi32_si128((23 - bits) as i32);
    let scount = _mm_cvtsi32_si128(tshift as i32);
    let row_mask: __mmask16 = ((1u32 << mr) - 1) as __mmask16;
    for (mp, range) in range.iter_mut().enumerate().take(panels) {
        let live = mr.min(rows - mp * mr);
        let mut lo = _mm512_set1_epi32(255);
        let mut hi = _mm512_setzero_si512();
        let mut raw = _mm512_setzero_si512();
        let mut kk0 = 0;
        while kk0 < kc {
            let klen = 16.min(kc - kk0);
            let km: __mmask16 = ((1u32 << klen) - 1) as __mmask16;
            // Lane l: the offset of k = kk0 + l inside its expansion block.
            let mut kb = [0u32; 16];
            if strategy == Strategy::Expand {
                for (l, o) in kb.iter_mut().enumerate().take(klen) {
                    *o = (((kk0 + l) % kblock) as u32) << kshift;
                }
            }
            let kbv = _mm512_loadu_si512(kb.as_ptr() as *const _);
            let mut sc = [_mm512_setzero_ps(); 16];
            let mut of = [_mm512_castsi512_ps(kbv); 16];
            for r in 0..live {
                let p = data.add((i0 + mp * mr + r) * x.rs + k0 + kk0);
                let v = _mm512_maskz_loadu_epi32(km, p as *const i32);
                let e = _mm512_and_si512(_mm512_srli_epi32::<23>(v), exp_mask);
                let normal = _mm512_mask_cmplt_epu32_mask(km, _mm512_sub_epi32(e, one), n254);
                let sb = _mm512_maskz_and_epi32(normal, v, sign_exp);
                let t = _mm512_maskz_srl_epi32(normal, _mm512_and_si512(v, frac), tcount);
                sc[r] = _mm512_castsi512_ps(sb);
                of[r] = _mm512_castsi512_ps(_mm512_or_si512(kbv, _mm512_sll_epi32(t, scount)));
                lo = _mm512_mask_min_epu32(lo, normal, lo, e);
                hi = _mm512_mask_max_epu32(hi, normal, hi, e);
                raw = _mm512_mask_max_epu32(raw, km, raw, e);
            }
            // Row r of the block becomes lane r of the vector of k = kk0 + l.
            let sc = super::x86::transpose16(sc);
            let of = super::x86::transpose16(of);
            for l in 0..klen {
                let at = (mp * kc + kk0 + l) * mr;
                _mm512_mask_storeu_ps(scale.as_mut_ptr().add(at), row_mask, sc[l]);
                _mm512_mask_storeu_epi32(
                    off.as_mut_ptr().add(at) as *mut i32,
                    row_mask,
                    _mm512_castps_si512(of[l]),
                );
            }
            kk0 += klen;
        }
        *range = ExpRange {
            min: _mm512_reduce_min_epu32(lo),
            max: _mm512_reduce_max_epu32(hi),
            special: _mm512_reduce_max_epu32(raw) == 255,
        };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_x_avx2(j: &XJob, scale: &mut [f32], off: &mut [u32], range: &mut [ExpRange]) {
    pack_x_body(j, scale, off, range)
}

/// Split an operand's bits once, without branches: `(scale, index, biased
/// exponent, mask)`. `scale` is the bits of `±2^(e-127)` for a normal value
/// and `0` otherwise (then the index is `0` too), `mask` is all ones for a
/// normal value.
#[inline(always)]
fn split_bits(b: u32, bits: u32) -> (u32, u32, u32, u32) {
    let e = (b >> 23) & 0xff;
    let mask = 0u32.wrapping_sub((e.wrapping_sub(1) < 254) as u32);
    (
        b & 0xff80_0000 & mask,
        ((b & 0x007f_ffff) >> (23 - bits)) & mask,
        e,
        mask,
    )
}

/// Running exponent range in a vectorisable form: `lo` over normal
/// exponents (255 otherwise), `hi` over normal exponents (0 otherwise),
/// `raw` the largest biased exponent (255: a NaN or infinity).
#[derive(Clone, Copy)]
struct Rng {
    lo: u32,
    hi: u32,
    raw: u32,
}

impl Rng {
    const EMPTY: Rng = Rng {
        lo: 255,
        hi: 0,
        raw: 0,
    };

    #[inline(always)]
    fn add(&mut self, e: u32, mask: u32) {
        self.lo = self.lo.min(e | (!mask & 0xff));
        self.hi = self.hi.max(e & mask);
        self.raw = self.raw.max(e);
    }

    #[inline(always)]
    fn merge(self, o: Rng) -> Rng {
        Rng {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
            raw: self.raw.max(o.raw),
        }
    }

    fn range(self) -> ExpRange {
        ExpRange {
            min: self.lo,
            max: self.hi,
            special: self.raw == 255,
        }
    }
}

#[inline(always)]
fn pack_x_body(j: &XJob, scale: &mut [f32], off: &mut [u32], range: &mut [ExpRange]) {
    let XJob {
        x,
        i0,
        rows,
        k0,
        kc,
        mr,
        bits,
        kblock,
        strategy,
    } = *j;
    let panels = rows.div_ceil(mr);
    let (tshift, kshift) = match strategy {
        Strategy::Expand => (4, bits + 4),
        Strategy::Direct => (bits, 0),
    };
    // Offsets of the expansion count k within its block; the direct path's
    // offsets do not depend on k (shift 0 of a zero).
    let kb_of = |kk: usize| -> u32 {
        if strategy == Strategy::Expand {
            ((kk % kblock) as u32) << kshift
        } else {
            0
        }
    };
    if x.rs == 1 {
        // Rows adjacent in memory: each k is a contiguous run of the block's
        // rows. Micro-panels are packed `GROUP` at a time with k outermost,
        // so that the reads are runs of several cache lines (a k-innermost
        // walk would touch a new distant line at every step).
        const GROUP: usize = 16;
        let mut mp0 = 0;
        while mp0 < panels {
            let mp1 = (mp0 + GROUP).min(panels);
            let mut rngs = [Rng::EMPTY; GROUP];
            for kk in 0..kc {
                let kb = kb_of(kk);
                let start = i0 + (k0 + kk) * x.cs;
                let col = &x.data[start..];
                // Ask for the next group's lines of this k now: the walk
                // jumps between distant runs, which the hardware prefetchers
                // do not follow.
                #[cfg(target_arch = "x86_64")]
                {
                    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                    let ahead = x.data.as_ptr().wrapping_add(start + mp1 * mr);
                    for l in (0..GROUP * mr).step_by(16) {
                        // SAFETY: a prefetch never faults, wherever it points.
                        unsafe { _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(l) as *const i8) };
                    }
                }
                for (g, mp) in (mp0..mp1).enumerate() {
                    let live = mr.min(rows - mp * mr);
                    let src = &col[mp * mr..mp * mr + live];
                    let o0 = (mp * kc + kk) * mr;
                    let sc = &mut scale[o0..o0 + live];
                    let of = &mut off[o0..o0 + live];
                    let mut r = Rng::EMPTY;
                    for ((v, s), o) in src.iter().zip(sc.iter_mut()).zip(of.iter_mut()) {
                        let (sb, t, e, m) = split_bits(v.to_bits(), bits);
                        r.add(e, m);
                        *s = f32::from_bits(sb);
                        *o = kb | (t << tshift);
                    }
                    rngs[g] = rngs[g].merge(r);
                }
            }
            for (g, mp) in (mp0..mp1).enumerate() {
                range[mp] = rngs[g].range();
            }
            mp0 = mp1;
        }
    } else {
        for (mp, range) in range.iter_mut().enumerate().take(panels) {
            let base = mp * kc * mr;
            let live = mr.min(rows - mp * mr);
            let mut rng = Rng::EMPTY;
            for r in 0..live {
                let i = i0 + mp * mr + r;
                let row = &x.data[i * x.rs + k0 * x.cs..];
                let mut kb0 = 0;
                while kb0 < kc {
                    let len = kblock.min(kc - kb0);
                    let mut g = Rng::EMPTY;
                    for kb in 0..len {
                        let kk = kb0 + kb;
                        let (sb, t, e, m) = split_bits(row[kk * x.cs].to_bits(), bits);
                        g.add(e, m);
                        let o = base + kk * mr + r;
                        scale[o] = f32::from_bits(sb);
                        off[o] = if strategy == Strategy::Expand {
                            ((kb as u32) << kshift) | (t << tshift)
                        } else {
                            t << tshift
                        };
                    }
                    rng = rng.merge(g);
                    kb0 += len;
                }
            }
            *range = rng.range();
        }
    }
    if panels > 0 {
        // Padding rows: scale 0, and (for the expansion) an offset inside
        // their own `kk` slice.
        let mp = panels - 1;
        for r in (rows - mp * mr)..mr {
            for kk in 0..kc {
                scale[(mp * kc + kk) * mr + r] = 0.0;
                off[(mp * kc + kk) * mr + r] = kb_of(kk);
            }
        }
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
    let len = kc * NR;
    if py.index.len() < len {
        py.index.resize(len, 0);
        py.scale.resize(len, 0.0);
    }
    let (index, scale) = (&mut py.index[..len], &mut py.scale[..len]);
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx2") {
            // SAFETY: the features were just detected.
            py.range = unsafe { pack_y_avx512(y, k0, kc, j0, bits, index, scale) };
            return;
        }
        if is_x86_feature_detected!("avx2") {
            // SAFETY: as above.
            py.range = unsafe { pack_y_avx2(y, k0, kc, j0, bits, index, scale) };
            return;
        }
    }
    py.range = pack_y_body(y, k0, kc, j0, bits, index, scale);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn pack_y_avx512(
    y: &View,
    k0: usize,
    kc: usize,
    j0: usize,
    bits: u32,
    index: &mut [u32],
    scale: &mut [f32],
) -> ExpRange {
    pack_y_body(y, k0, kc, j0, bits, index, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_y_avx2(
    y: &View,
    k0: usize,
    kc: usize,
    j0: usize,
    bits: u32,
    index: &mut [u32],
    scale: &mut [f32],
) -> ExpRange {
    pack_y_body(y, k0, kc, j0, bits, index, scale)
}

/// Every lane of `index` and `scale` is written (columns past the end as
/// zeros), a row of `NR` values of k at a time: the elements are gathered
/// into a row with plain loads, then split as one vector.
#[inline(always)]
fn pack_y_body(
    y: &View,
    k0: usize,
    kc: usize,
    j0: usize,
    bits: u32,
    index: &mut [u32],
    scale: &mut [f32],
) -> ExpRange {
    let cols = NR.min(y.cols - j0);
    let mut rng = Rng::EMPTY;
    let base = j0 * y.cs + k0 * y.rs;
    // The last element read, checked once so that the loop can index freely.
    assert!(kc == 0 || base + (kc - 1) * y.rs + (cols - 1) * y.cs < y.data.len());
    for (kk, (idx, sc)) in index
        .chunks_exact_mut(NR)
        .zip(scale.chunks_exact_mut(NR))
        .enumerate()
    {
        let mut row = [0u32; NR];
        let start = base + kk * y.rs;
        for (jj, r) in row.iter_mut().enumerate().take(cols) {
            // SAFETY: inside the range checked above.
            *r = unsafe { y.data.get_unchecked(start + jj * y.cs) }.to_bits();
        }
        for ((b, i), s) in row.iter().zip(idx.iter_mut()).zip(sc.iter_mut()) {
            let (sb, t, e, m) = split_bits(*b, bits);
            rng.add(e, m);
            *i = t;
            *s = f32::from_bits(sb);
        }
    }
    rng.range()
}
