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
    // Every element is written below; the buffers only grow. The AVX2
    // packers store whole vectors past a micro-panel's last row: the slack
    // takes the last one.
    if px.scale.len() < len + PACK_SLACK {
        px.scale.resize(len + PACK_SLACK, 0.0);
        px.off.resize(len + PACK_SLACK, 0);
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
    let (scale, off, range) = (
        &mut px.scale[..len + PACK_SLACK],
        &mut px.off[..len + PACK_SLACK],
        &mut px.range[..],
    );
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
            if x.rs == 1 && mr == AVX2_MR {
                // SAFETY: as above; `scale` and `off` have the slack.
                return unsafe { pack_x_rows_avx2(job, scale, off, range) };
            }
            if x.cs == 1 && mr == AVX2_MR {
                // SAFETY: as above.
                return unsafe { pack_x_cols_avx2(job, scale, off, range) };
            }
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

/// Floats past the end of a packed block that a packer may overwrite.
const PACK_SLACK: usize = 8;

/// The micro-panel height of the AVX2 kernels, for which the AVX2 packers
/// are written.
#[cfg(target_arch = "x86_64")]
const AVX2_MR: usize = super::x86::MR256;

/// The split of 8 operands at once, as [`split_bits`]: `(scale bits, table
/// index, biased exponent, normal mask)`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn split_avx2(
    v: std::arch::x86_64::__m256i,
    tcount: std::arch::x86_64::__m128i,
) -> (
    std::arch::x86_64::__m256i,
    std::arch::x86_64::__m256i,
    std::arch::x86_64::__m256i,
    std::arch::x86_64::__m256i,
) {
    use std::arch::x86_64::*;
    let e = _mm256_and_si256(_mm256_srli_epi32::<23>(v), _mm256_set1_epi32(0xff));
    // 1 <= e <= 254 (e is 0..=255, so signed compares are exact).
    let normal = _mm256_and_si256(
        _mm256_cmpgt_epi32(e, _mm256_setzero_si256()),
        _mm256_cmpgt_epi32(_mm256_set1_epi32(255), e),
    );
    let sb = _mm256_and_si256(
        normal,
        _mm256_and_si256(v, _mm256_set1_epi32(0xff80_0000u32 as i32)),
    );
    let t = _mm256_and_si256(
        normal,
        _mm256_srl_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0x007f_ffff)), tcount),
    );
    (sb, t, e, normal)
}

/// Per-lane exponent range in AVX2 registers (the vector form of `Rng`).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct RngAvx2 {
    lo: std::arch::x86_64::__m256i,
    hi: std::arch::x86_64::__m256i,
    raw: std::arch::x86_64::__m256i,
}

#[cfg(target_arch = "x86_64")]
impl RngAvx2 {
    #[inline(always)]
    unsafe fn empty() -> Self {
        use std::arch::x86_64::*;
        RngAvx2 {
            lo: _mm256_set1_epi32(255),
            hi: _mm256_setzero_si256(),
            raw: _mm256_setzero_si256(),
        }
    }

    #[inline(always)]
    unsafe fn add(&mut self, e: std::arch::x86_64::__m256i, normal: std::arch::x86_64::__m256i) {
        use std::arch::x86_64::*;
        let ff = _mm256_set1_epi32(0xff);
        self.lo = _mm256_min_epu32(self.lo, _mm256_or_si256(e, _mm256_andnot_si256(normal, ff)));
        self.hi = _mm256_max_epu32(self.hi, _mm256_and_si256(e, normal));
        self.raw = _mm256_max_epu32(self.raw, e);
    }

    #[inline(always)]
    unsafe fn range(self) -> ExpRange {
        use std::arch::x86_64::*;
        let mut lo = [0u32; 8];
        let mut hi = [0u32; 8];
        let mut raw = [0u32; 8];
        _mm256_storeu_si256(lo.as_mut_ptr() as *mut __m256i, self.lo);
        _mm256_storeu_si256(hi.as_mut_ptr() as *mut __m256i, self.hi);
        _mm256_storeu_si256(raw.as_mut_ptr() as *mut __m256i, self.raw);
        Rng {
            lo: lo.into_iter().min().unwrap_or(255),
            hi: hi.into_iter().max().unwrap_or(0),
            raw: raw.into_iter().max().unwrap_or(0),
        }
        .range()
    }
}

/// [`pack_x_body`] for rows adjacent in memory (`x.rs == 1`, a column-major
/// operand such as an im2col block) and `mr == 6`, in AVX2. As in the body,
/// `GROUP` micro-panels are packed with k outermost; the six rows of a
/// micro-panel at one k are one 8-lane load (the two lanes of the next
/// micro-panel masked off) split at once and stored as 4 + 2 lanes. Padding
/// rows load as zeros, which split to scale 0 and table index 0, as the body
/// writes them.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_x_rows_avx2(j: &XJob, scale: &mut [f32], off: &mut [u32], range: &mut [ExpRange]) {
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
    debug_assert!(x.rs == 1 && mr == AVX2_MR);
    let panels = rows.div_ceil(AVX2_MR);
    let (tshift, kshift) = match strategy {
        Strategy::Expand => (4, bits + 4),
        Strategy::Direct => (bits, 0),
    };
    if panels == 0 || kc == 0 {
        return;
    }
    // Every element read lies below this bound (checked once; the loads of
    // the last micro-panels are masked to the rows).
    assert!(i0 + rows - 1 + (k0 + kc - 1) * x.cs < x.data.len());
    assert!(scale.len() >= panels * kc * AVX2_MR && off.len() >= panels * kc * AVX2_MR);
    let data = x.data.as_ptr();
    let tcount = _mm_cvtsi32_si128((23 - bits) as i32);
    let scount = _mm_cvtsi32_si128(tshift as i32);
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let six = _mm256_cmpgt_epi32(_mm256_set1_epi32(AVX2_MR as i32), iota);
    const GROUP: usize = 16;
    let mut mp0 = 0;
    while mp0 < panels {
        let mp1 = (mp0 + GROUP).min(panels);
        let mut rngs = [RngAvx2::empty(); GROUP];
        for kk in 0..kc {
            let kb = if strategy == Strategy::Expand {
                ((kk % kblock) as u32) << kshift
            } else {
                0
            };
            let kbv = _mm256_set1_epi32(kb as i32);
            let start = i0 + (k0 + kk) * x.cs;
            // The next group's lines of this k (see `pack_x_body`).
            let ahead = data.wrapping_add(start + mp1 * AVX2_MR);
            for l in (0..GROUP * AVX2_MR).step_by(16) {
                _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(l) as *const i8);
            }
            for (g, mp) in (mp0..mp1).enumerate() {
                let r0 = mp * AVX2_MR;
                let p = data.add(start + r0);
                let v = if r0 + 8 <= rows {
                    _mm256_and_si256(_mm256_loadu_si256(p as *const __m256i), six)
                } else {
                    let live = _mm256_set1_epi32((rows - r0).min(AVX2_MR) as i32);
                    _mm256_maskload_epi32(p as *const i32, _mm256_cmpgt_epi32(live, iota))
                };
                let (sb, t, e, normal) = split_avx2(v, tcount);
                rngs[g].add(e, normal);
                let o = _mm256_or_si256(kbv, _mm256_sll_epi32(t, scount));
                let at = (mp * kc + kk) * AVX2_MR;
                let sp = scale.as_mut_ptr().add(at) as *mut __m128i;
                let op = off.as_mut_ptr().add(at) as *mut __m128i;
                _mm_storeu_si128(sp, _mm256_castsi256_si128(sb));
                _mm_storel_epi64(sp.add(1), _mm256_extracti128_si256::<1>(sb));
                _mm_storeu_si128(op, _mm256_castsi256_si128(o));
                _mm_storel_epi64(op.add(1), _mm256_extracti128_si256::<1>(o));
            }
        }
        for (g, mp) in (mp0..mp1).enumerate() {
            range[mp] = rngs[g].range();
        }
        mp0 = mp1;
    }
}

/// [`pack_x_body`] for a row-major first operand (`x.cs == 1`) and
/// `mr == 6`, in AVX2: 8 values of k of each row of a micro-panel are loaded
/// and split as one vector, the `8 x 8` block (two rows of zeros) is
/// transposed in registers into the k-major layout of the packed block, and
/// each k is stored as a whole vector whose last two lanes the next store
/// overwrites (the last one lands in the next micro-panel, packed after it,
/// or in the slack). Padding rows get scale 0 and the offset of their own
/// `kk` slice, as in the body.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pack_x_cols_avx2(j: &XJob, scale: &mut [f32], off: &mut [u32], range: &mut [ExpRange]) {
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
    debug_assert!(x.cs == 1 && mr == AVX2_MR);
    let panels = rows.div_ceil(AVX2_MR);
    let (tshift, kshift) = match strategy {
        Strategy::Expand => (4, bits + 4),
        Strategy::Direct => (bits, 0),
    };
    if panels == 0 || kc == 0 {
        return;
    }
    // Every element read lies below this bound (checked once; loads past k
    // are masked).
    assert!((i0 + rows - 1) * x.rs + k0 + kc - 1 < x.data.len());
    assert!(scale.len() >= panels * kc * AVX2_MR + 2 && off.len() >= panels * kc * AVX2_MR + 2);
    let data = x.data.as_ptr();
    let tcount = _mm_cvtsi32_si128((23 - bits) as i32);
    let scount = _mm_cvtsi32_si128(tshift as i32);
    let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (mp, range) in range.iter_mut().enumerate().take(panels) {
        let live = AVX2_MR.min(rows - mp * AVX2_MR);
        let mut rng = RngAvx2::empty();
        let mut kk0 = 0;
        while kk0 < kc {
            let klen = 8.min(kc - kk0);
            let kmask = _mm256_cmpgt_epi32(_mm256_set1_epi32(klen as i32), iota);
            // Lane l: the offset of k = kk0 + l inside its expansion block.
            let mut kb = [0u32; 8];
            if strategy == Strategy::Expand {
                for (l, o) in kb.iter_mut().enumerate().take(klen) {
                    *o = (((kk0 + l) % kblock) as u32) << kshift;
                }
            }
            let kbv = _mm256_loadu_si256(kb.as_ptr() as *const __m256i);
            let mut sc = [_mm256_setzero_ps(); 8];
            let mut of = [_mm256_setzero_ps(); 8];
            for r in 0..AVX2_MR {
                if r >= live {
                    of[r] = _mm256_castsi256_ps(kbv);
                    continue;
                }
                let p = data.add((i0 + mp * AVX2_MR + r) * x.rs + k0 + kk0) as *const i32;
                let v = if klen == 8 {
                    _mm256_loadu_si256(p as *const __m256i)
                } else {
                    _mm256_maskload_epi32(p, kmask)
                };
                let (sb, t, e, normal) = split_avx2(v, tcount);
                // Lanes past k load as zeros: not normal, no effect on
                // the range.
                rng.add(e, normal);
                sc[r] = _mm256_castsi256_ps(sb);
                of[r] = _mm256_castsi256_ps(_mm256_or_si256(kbv, _mm256_sll_epi32(t, scount)));
            }
            // Row r of the block becomes lane r of the vector of k = kk0 + l.
            let sc = super::x86::transpose8(sc);
            let of = super::x86::transpose8(of);
            for l in 0..klen {
                let at = (mp * kc + kk0 + l) * AVX2_MR;
                _mm256_storeu_ps(scale.as_mut_ptr().add(at), sc[l]);
                _mm256_storeu_ps(off.as_mut_ptr().add(at) as *mut f32, of[l]);
            }
            kk0 += klen;
        }
        *range = rng.range();
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
pub(super) fn split_bits(b: u32, bits: u32) -> (u32, u32, u32, u32) {
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
pub(super) struct Rng {
    lo: u32,
    hi: u32,
    raw: u32,
}

impl Rng {
    pub(super) const EMPTY: Rng = Rng {
        lo: 255,
        hi: 0,
        raw: 0,
    };

    #[inline(always)]
    pub(super) fn add(&mut self, e: u32, mask: u32) {
        self.lo = self.lo.min(e | (!mask & 0xff));
        self.hi = self.hi.max(e & mask);
        self.raw = self.raw.max(e);
    }

    #[inline(always)]
    pub(super) fn merge(self, o: Rng) -> Rng {
        Rng {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
            raw: self.raw.max(o.raw),
        }
    }

    pub(super) fn range(self) -> ExpRange {
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

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use rand::Rng as _;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Random operand bits with NaNs, infinities, zeros, subnormals and
    /// extreme exponents among ordinary values.
    fn operand(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| match rng.gen_range(0..40) {
                0 => f32::NAN,
                1 => f32::NEG_INFINITY,
                2 => -0.0,
                3 => 1e-40,
                4 => f32::from_bits(rng.gen::<u32>() | 0x7f00_0000),
                _ => f32::from_bits(
                    (rng.gen::<u32>() & 0x8000_0000)
                        | (rng.gen_range(100..=150u32) << 23)
                        | (rng.gen::<u32>() & 0x007f_ffff),
                ),
            })
            .collect()
    }

    /// The AVX2 packers (rows adjacent or k adjacent, `mr = 6`) write what
    /// the portable body writes, element for element, with the same
    /// exponent ranges, for blocks that end inside a micro-panel, short and
    /// long `kc`, both strategies and expansion blocks that split `kc`.
    #[test]
    fn avx2_packers_match_the_portable_body() {
        if !is_x86_feature_detected!("avx2") {
            eprintln!("skipped: this CPU has no AVX2, the AVX2 packers cannot run");
            return;
        }
        let mut rng = crate::engine::test_rng();
        for case in 0..300 {
            let rows = rng.gen_range(1..140usize);
            let kc = rng.gen_range(1..40usize);
            let i0 = rng.gen_range(0..5usize);
            let k0 = rng.gen_range(0..5usize);
            let bits = rng.gen_range(1..=10u32);
            let kblock = rng.gen_range(1..=kc + 2);
            let strategy = if rng.gen() {
                Strategy::Expand
            } else {
                Strategy::Direct
            };
            let by_rows = case % 2 == 0;
            let (r_all, k_all) = (
                i0 + rows + rng.gen_range(0..3),
                k0 + kc + rng.gen_range(0..3),
            );
            let data = operand(&mut rng, r_all * k_all);
            let x = if by_rows {
                View {
                    data: &data,
                    rows: r_all,
                    cols: k_all,
                    rs: 1,
                    cs: r_all,
                }
            } else {
                View {
                    data: &data,
                    rows: r_all,
                    cols: k_all,
                    rs: k_all,
                    cs: 1,
                }
            };
            let job = XJob {
                x: &x,
                i0,
                rows,
                k0,
                kc,
                mr: AVX2_MR,
                bits,
                kblock,
                strategy,
            };
            let len = rows.div_ceil(AVX2_MR) * kc * AVX2_MR;
            let panels = rows.div_ceil(AVX2_MR);
            let mut want = (
                vec![0.0f32; len],
                vec![0u32; len],
                vec![ExpRange::EMPTY; panels],
            );
            pack_x_body(&job, &mut want.0, &mut want.1, &mut want.2);
            let mut got = (
                vec![f32::NAN; len + PACK_SLACK],
                vec![u32::MAX; len + PACK_SLACK],
                vec![ExpRange::EMPTY; panels],
            );
            // SAFETY: AVX2 was detected; the buffers have the slack.
            unsafe {
                if by_rows {
                    pack_x_rows_avx2(&job, &mut got.0, &mut got.1, &mut got.2);
                } else {
                    pack_x_cols_avx2(&job, &mut got.0, &mut got.1, &mut got.2);
                }
            }
            let what = format!(
                "case {case} ({}): rows {rows} kc {kc} i0 {i0} k0 {k0} bits {bits} kblock \
                 {kblock} {strategy:?}",
                if by_rows {
                    "rows adjacent"
                } else {
                    "k adjacent"
                }
            );
            for e in 0..len {
                assert_eq!(
                    got.0[e].to_bits(),
                    want.0[e].to_bits(),
                    "{what}: scale {e} differs"
                );
                assert_eq!(got.1[e], want.1[e], "{what}: offset {e} differs");
            }
            assert_eq!(got.2, want.2, "{what}: exponent ranges differ");
        }
    }
}
