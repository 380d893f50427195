//! AVX-512 and AVX2 micro-kernels (x86-64, chosen at run time).
//!
//! The fused step is one `vfmadd` per row and `NR = 16` columns: broadcast
//! the first operand's scale, load its expansion row (or gather it from the
//! table and scale it, in the direct kernels). The expansion uses in-register
//! permutes while a table row fits in a few registers (`m <= 7`) and gathers
//! beyond.

use std::arch::x86_64::*;

use super::kernel::LutKernel;
use super::{padded_stride, NR};

/// AVX-512F kernels.
pub(crate) struct Avx512;

/// Rows of the AVX-512 tile: 12 accumulators + operands fit in 32 registers.
const MR512: usize = 12;

/// Widest table whose expansion uses in-register permutes (wider ones use
/// the transposed-table block expansion).
const PERMUTE_MAX_BITS: u32 = 4;

impl LutKernel for Avx512 {
    const MR: usize = MR512;

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
    ) {
        debug_assert!(v.len() >= kc << (bits + 4));
        debug_assert!(index.len() >= kc * NR && scale.len() >= kc * NR);
        expand_avx512(
            table.as_ptr(),
            table_t.as_ptr(),
            bits,
            index.as_ptr(),
            scale.as_ptr(),
            kc,
            v.as_mut_ptr(),
        )
    }

    unsafe fn expand_fma(&self, kc: usize, sa: &[f32], off: &[u32], v: &[f32], acc: &mut [f32]) {
        debug_assert!(sa.len() >= kc * MR512 && off.len() >= kc * MR512);
        debug_assert!(acc.len() >= MR512 * NR);
        expand_fma_avx512(kc, sa.as_ptr(), off.as_ptr(), v.as_ptr(), acc.as_mut_ptr())
    }

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
        debug_assert!(sa.len() >= kc * MR512 && off.len() >= kc * MR512);
        debug_assert!(acc.len() >= MR512 * NR && acc2.len() >= MR512 * NR);
        debug_assert!(v.len() == v2.len());
        expand_fma2_avx512(
            kc,
            sa.as_ptr(),
            off.as_ptr(),
            v.as_ptr(),
            v2.as_ptr(),
            acc.as_mut_ptr(),
            acc2.as_mut_ptr(),
        )
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
        debug_assert!(sa.len() >= kc * MR512 && off.len() >= kc * MR512);
        debug_assert!(index.len() >= kc * NR && scale.len() >= kc * NR);
        debug_assert!(acc.len() >= MR512 * NR);
        direct_fma_avx512(
            kc,
            rows,
            sa.as_ptr(),
            off.as_ptr(),
            table.as_ptr(),
            index.as_ptr(),
            scale.as_ptr(),
            acc.as_mut_ptr(),
        )
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn expand_avx512(
    table: *const f32,
    table_t: *const f32,
    bits: u32,
    index: *const u32,
    scale: *const f32,
    kc: usize,
    v: *mut f32,
) {
    let n = 1usize << bits;
    for kk in 0..kc {
        let idx = _mm512_loadu_si512(index.add(kk * NR) as *const _);
        let sc = _mm512_loadu_ps(scale.add(kk * NR));
        let vk = v.add(kk << (bits + 4));
        if bits <= 4 {
            // A table row is at most one register: a single permute.
            let live = ((1u32 << n) - 1) as __mmask16;
            for t in 0..n {
                let row = _mm512_maskz_loadu_ps(live, table.add(t * n));
                let e = _mm512_permutexvar_ps(idx, row);
                _mm512_storeu_ps(vk.add(t * NR), _mm512_mul_ps(e, sc));
            }
        } else if bits <= PERMUTE_MAX_BITS {
            // Rows of 32, 64 or 128 entries: one two-register permute per
            // 32 entries, merged by the index's bits above the fifth.
            let chunks = n / 32;
            let hi = _mm512_srli_epi32::<5>(idx);
            let s1 = _mm512_cmpeq_epi32_mask(hi, _mm512_set1_epi32(1));
            let s2 = _mm512_cmpeq_epi32_mask(hi, _mm512_set1_epi32(2));
            let s3 = _mm512_cmpeq_epi32_mask(hi, _mm512_set1_epi32(3));
            for t in 0..n {
                let row = table.add(t * n);
                let mut e =
                    _mm512_permutex2var_ps(_mm512_loadu_ps(row), idx, _mm512_loadu_ps(row.add(16)));
                if chunks > 1 {
                    let p = _mm512_permutex2var_ps(
                        _mm512_loadu_ps(row.add(32)),
                        idx,
                        _mm512_loadu_ps(row.add(48)),
                    );
                    e = _mm512_mask_blend_ps(s1, e, p);
                }
                if chunks > 2 {
                    let p = _mm512_permutex2var_ps(
                        _mm512_loadu_ps(row.add(64)),
                        idx,
                        _mm512_loadu_ps(row.add(80)),
                    );
                    e = _mm512_mask_blend_ps(s2, e, p);
                    let p = _mm512_permutex2var_ps(
                        _mm512_loadu_ps(row.add(96)),
                        idx,
                        _mm512_loadu_ps(row.add(112)),
                    );
                    e = _mm512_mask_blend_ps(s3, e, p);
                }
                _mm512_storeu_ps(vk.add(t * NR), _mm512_mul_ps(e, sc));
            }
        } else {
            expand_block_avx512(table_t, bits, index.add(kk * NR), scale.add(kk * NR), vk);
        }
    }
}

/// One `k` of the expansion for `m >= 4` from the transposed table: column
/// `jj` of the block is row `tb_jj` of the transposed table (contiguous),
/// scaled; 16 such rows are loaded and transposed in registers, 16 values of
/// `t` at a time (no gathers: rows `2^m` floats apart alias in L1 sets).
#[target_feature(enable = "avx512f")]
unsafe fn expand_block_avx512(
    table_t: *const f32,
    bits: u32,
    index: *const u32,
    scale: *const f32,
    vk: *mut f32,
) {
    let n = 1usize << bits;
    let mut src = [table_t; NR];
    let mut sc = [_mm512_setzero_ps(); NR];
    for jj in 0..NR {
        src[jj] = table_t.add(*index.add(jj) as usize * padded_stride(bits));
        sc[jj] = _mm512_set1_ps(*scale.add(jj));
    }
    let mut t0 = 0;
    while t0 < n {
        let mut r = [_mm512_setzero_ps(); NR];
        for jj in 0..NR {
            r[jj] = _mm512_mul_ps(_mm512_loadu_ps(src[jj].add(t0)), sc[jj]);
        }
        let r = transpose16(r);
        for (tt, row) in r.iter().enumerate() {
            _mm512_storeu_ps(vk.add((t0 + tt) * NR), *row);
        }
        t0 += 16;
    }
}

/// Transpose a 16x16 block held as 16 rows: interleave pairs of rows,
/// then pairs of pairs, then move 128-bit lanes twice.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // s[4g + q]: column 4L + q of rows 4g..4g+4, in each 128-bit lane L.
    let mut s = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let b = 4 * g;
        s[b] = _mm512_shuffle_ps::<0x44>(t[b], t[b + 2]);
        s[b + 1] = _mm512_shuffle_ps::<0xee>(t[b], t[b + 2]);
        s[b + 2] = _mm512_shuffle_ps::<0x44>(t[b + 1], t[b + 3]);
        s[b + 3] = _mm512_shuffle_ps::<0xee>(t[b + 1], t[b + 3]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for q in 0..4 {
        u[q] = _mm512_shuffle_f32x4::<0x88>(s[q], s[4 + q]);
        u[4 + q] = _mm512_shuffle_f32x4::<0xdd>(s[q], s[4 + q]);
        u[8 + q] = _mm512_shuffle_f32x4::<0x88>(s[8 + q], s[12 + q]);
        u[12 + q] = _mm512_shuffle_f32x4::<0xdd>(s[8 + q], s[12 + q]);
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for q in 0..8 {
        out[q] = _mm512_shuffle_f32x4::<0x88>(u[q], u[8 + q]);
        out[8 + q] = _mm512_shuffle_f32x4::<0xdd>(u[q], u[8 + q]);
    }
    out
}

#[target_feature(enable = "avx512f")]
unsafe fn expand_fma_avx512(
    kc: usize,
    sa: *const f32,
    off: *const u32,
    v: *const f32,
    acc: *mut f32,
) {
    let mut c = [_mm512_setzero_ps(); MR512];
    for (r, cr) in c.iter_mut().enumerate() {
        *cr = _mm512_loadu_ps(acc.add(r * NR));
    }
    for kk in 0..kc {
        let sk = sa.add(kk * MR512);
        let ok = off.add(kk * MR512);
        for (r, cr) in c.iter_mut().enumerate() {
            let row = _mm512_loadu_ps(v.add(*ok.add(r) as usize));
            *cr = _mm512_fmadd_ps(_mm512_set1_ps(*sk.add(r)), row, *cr);
        }
    }
    for (r, cr) in c.iter().enumerate() {
        _mm512_storeu_ps(acc.add(r * NR), *cr);
    }
}

/// Two panels per step: one scale broadcast and offset load serve two
/// expansion rows (the second panel's expansion is `v2`).
#[target_feature(enable = "avx512f")]
unsafe fn expand_fma2_avx512(
    kc: usize,
    sa: *const f32,
    off: *const u32,
    v: *const f32,
    v2: *const f32,
    acc: *mut f32,
    acc2: *mut f32,
) {
    let mut c = [_mm512_setzero_ps(); MR512];
    let mut d = [_mm512_setzero_ps(); MR512];
    for r in 0..MR512 {
        c[r] = _mm512_loadu_ps(acc.add(r * NR));
        d[r] = _mm512_loadu_ps(acc2.add(r * NR));
    }
    for kk in 0..kc {
        let sk = sa.add(kk * MR512);
        let ok = off.add(kk * MR512);
        for r in 0..MR512 {
            let s = _mm512_set1_ps(*sk.add(r));
            let o = *ok.add(r) as usize;
            c[r] = _mm512_fmadd_ps(s, _mm512_loadu_ps(v.add(o)), c[r]);
            d[r] = _mm512_fmadd_ps(s, _mm512_loadu_ps(v2.add(o)), d[r]);
        }
    }
    for r in 0..MR512 {
        _mm512_storeu_ps(acc.add(r * NR), c[r]);
        _mm512_storeu_ps(acc2.add(r * NR), d[r]);
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn direct_fma_avx512(
    kc: usize,
    rows: usize,
    sa: *const f32,
    off: *const u32,
    table: *const f32,
    index: *const u32,
    scale: *const f32,
    acc: *mut f32,
) {
    let mut c = [_mm512_setzero_ps(); MR512];
    for (r, cr) in c.iter_mut().enumerate() {
        *cr = _mm512_loadu_ps(acc.add(r * NR));
    }
    for kk in 0..kc {
        let idx = _mm512_loadu_si512(index.add(kk * NR) as *const _);
        let sc = _mm512_loadu_ps(scale.add(kk * NR));
        let sk = sa.add(kk * MR512);
        let ok = off.add(kk * MR512);
        for (r, cr) in c.iter_mut().enumerate() {
            if r >= rows {
                // Padding rows of the last micro-panel: no lookups.
                break;
            }
            let row = _mm512_i32gather_ps::<4>(idx, table.add(*ok.add(r) as usize));
            let e = _mm512_mul_ps(row, sc);
            *cr = _mm512_fmadd_ps(_mm512_set1_ps(*sk.add(r)), e, *cr);
        }
    }
    for (r, cr) in c.iter().enumerate() {
        _mm512_storeu_ps(acc.add(r * NR), *cr);
    }
}

/// AVX2 + FMA kernels (a 16-column row is two 8-lane registers).
pub(crate) struct Avx2;

/// Rows of the AVX2 tile: 12 accumulator registers of 16.
pub(crate) const MR256: usize = 6;

impl LutKernel for Avx2 {
    const MR: usize = MR256;

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
        debug_assert!(v.len() >= kc << (bits + 4));
        debug_assert!(index.len() >= kc * NR && scale.len() >= kc * NR);
        expand_avx2(
            table_t.as_ptr(),
            bits,
            index.as_ptr(),
            scale.as_ptr(),
            kc,
            v.as_mut_ptr(),
        )
    }

    unsafe fn expand_fma(&self, kc: usize, sa: &[f32], off: &[u32], v: &[f32], acc: &mut [f32]) {
        debug_assert!(sa.len() >= kc * MR256 && off.len() >= kc * MR256);
        debug_assert!(acc.len() >= MR256 * NR);
        expand_fma_avx2(kc, sa.as_ptr(), off.as_ptr(), v.as_ptr(), acc.as_mut_ptr())
    }

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
        debug_assert!(sa.len() >= kc * MR256 && off.len() >= kc * MR256);
        debug_assert!(acc.len() >= MR256 * NR && acc2.len() >= MR256 * NR);
        debug_assert!(v.len() == v2.len());
        for half in 0..2 {
            expand_fma2_avx2(
                kc,
                half * 3,
                sa.as_ptr(),
                off.as_ptr(),
                v.as_ptr(),
                v2.as_ptr(),
                acc.as_mut_ptr(),
                acc2.as_mut_ptr(),
            )
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
        debug_assert!(sa.len() >= kc * MR256 && off.len() >= kc * MR256);
        debug_assert!(index.len() >= kc * NR && scale.len() >= kc * NR);
        debug_assert!(acc.len() >= MR256 * NR);
        direct_fma_avx2(
            kc,
            rows,
            sa.as_ptr(),
            off.as_ptr(),
            table.as_ptr(),
            index.as_ptr(),
            scale.as_ptr(),
            acc.as_mut_ptr(),
        )
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn expand_avx2(
    table_t: *const f32,
    bits: u32,
    index: *const u32,
    scale: *const f32,
    kc: usize,
    v: *mut f32,
) {
    let n = 1usize << bits;
    if n >= 8 {
        return expand_transpose_avx2(table_t, bits, index, scale, kc, v);
    }
    for kk in 0..kc {
        let i0 = _mm256_loadu_si256(index.add(kk * NR) as *const _);
        let i1 = _mm256_loadu_si256(index.add(kk * NR + 8) as *const _);
        let s0 = _mm256_loadu_ps(scale.add(kk * NR));
        let s1 = _mm256_loadu_ps(scale.add(kk * NR + 8));
        let vk = v.add(kk << (bits + 4));
        // Gather from the transposed table (lane j reads along row `tb_j`).
        let st = _mm256_set1_epi32(padded_stride(bits) as i32);
        let (r0, r1) = (_mm256_mullo_epi32(i0, st), _mm256_mullo_epi32(i1, st));
        for t in 0..n {
            let e0 = _mm256_i32gather_ps::<4>(table_t.add(t), r0);
            let e1 = _mm256_i32gather_ps::<4>(table_t.add(t), r1);
            _mm256_storeu_ps(vk.add(t * NR), _mm256_mul_ps(e0, s0));
            _mm256_storeu_ps(vk.add(t * NR + 8), _mm256_mul_ps(e1, s1));
        }
    }
}

/// [`expand_avx2`] for tables of at least 8 rows, without gathers: column
/// `j` of the expansion, `V[t][j] = L[t][tb_j]·s_j` for every `t`, is a
/// contiguous row of the transposed table times `s_j`, so blocks of 8 `t` x
/// 8 columns are loaded as 8 rows (rows `j` and `j + 4` into the two
/// 128-bit halves of one register, so that the transpose needs no
/// lane-crossing permute: 5% faster than an 8x8 register transpose on a
/// Zen 3), transposed, and scaled lane by lane. The products are the same as
/// the gathering form's (same operands), and on CPUs with slow gathers
/// (Zen 3: a 256-bit gather per 8 cycles or so) this takes a fraction of
/// the time.
#[target_feature(enable = "avx2,fma")]
unsafe fn expand_transpose_avx2(
    table_t: *const f32,
    bits: u32,
    index: *const u32,
    scale: *const f32,
    kc: usize,
    v: *mut f32,
) {
    let n = 1usize << bits;
    let stride = padded_stride(bits);
    for kk in 0..kc {
        let vk = v.add(kk << (bits + 4));
        for j0 in [0, 8] {
            let first = kk * NR + j0;
            let rows: [*const f32; 8] =
                std::array::from_fn(|j| table_t.add(*index.add(first + j) as usize * stride));
            // Lane j of an output row is scaled by s_j.
            let sc = _mm256_loadu_ps(scale.add(first));
            let mut t0 = 0;
            while t0 < n {
                // Rows j and j + 4 go to the two 128-bit halves as they are
                // loaded, so the transpose stays within the halves (no
                // lane-crossing permutes).
                for h in [0, 4] {
                    let r: [__m256; 4] = std::array::from_fn(|j| {
                        _mm256_insertf128_ps::<1>(
                            _mm256_castps128_ps256(_mm_loadu_ps(rows[j].add(t0 + h))),
                            _mm_loadu_ps(rows[j + 4].add(t0 + h)),
                        )
                    });
                    let u0 = _mm256_unpacklo_ps(r[0], r[1]);
                    let u1 = _mm256_unpackhi_ps(r[0], r[1]);
                    let u2 = _mm256_unpacklo_ps(r[2], r[3]);
                    let u3 = _mm256_unpackhi_ps(r[2], r[3]);
                    let o = [
                        _mm256_shuffle_ps::<0x44>(u0, u2),
                        _mm256_shuffle_ps::<0xEE>(u0, u2),
                        _mm256_shuffle_ps::<0x44>(u1, u3),
                        _mm256_shuffle_ps::<0xEE>(u1, u3),
                    ];
                    for (tt, ot) in o.iter().enumerate() {
                        _mm256_storeu_ps(vk.add((t0 + h + tt) * NR + j0), _mm256_mul_ps(*ot, sc));
                    }
                }
                t0 += 8;
            }
        }
    }
}

/// The transpose of the 8x8 matrix whose rows are `r`.
#[inline(always)]
pub(crate) unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ]
}

#[target_feature(enable = "avx2,fma")]
unsafe fn expand_fma_avx2(
    kc: usize,
    sa: *const f32,
    off: *const u32,
    v: *const f32,
    acc: *mut f32,
) {
    let mut c = [_mm256_setzero_ps(); 2 * MR256];
    for (q, cq) in c.iter_mut().enumerate() {
        *cq = _mm256_loadu_ps(acc.add(q * 8));
    }
    for kk in 0..kc {
        let sk = sa.add(kk * MR256);
        let ok = off.add(kk * MR256);
        for r in 0..MR256 {
            let s = _mm256_set1_ps(*sk.add(r));
            let row = v.add(*ok.add(r) as usize);
            c[2 * r] = _mm256_fmadd_ps(s, _mm256_loadu_ps(row), c[2 * r]);
            c[2 * r + 1] = _mm256_fmadd_ps(s, _mm256_loadu_ps(row.add(8)), c[2 * r + 1]);
        }
    }
    for (q, cq) in c.iter().enumerate() {
        _mm256_storeu_ps(acc.add(q * 8), *cq);
    }
}

/// Rows `r0..r0 + 3` of a 6-row tile on two panels at once: one scale
/// broadcast and offset load serve four expansion loads (a 6-row tile of
/// two panels would need 24 accumulator registers; three rows take 12).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn expand_fma2_avx2(
    kc: usize,
    r0: usize,
    sa: *const f32,
    off: *const u32,
    v: *const f32,
    v2: *const f32,
    acc: *mut f32,
    acc2: *mut f32,
) {
    const H: usize = 3;
    let mut c = [_mm256_setzero_ps(); 2 * H];
    let mut d = [_mm256_setzero_ps(); 2 * H];
    for q in 0..2 * H {
        c[q] = _mm256_loadu_ps(acc.add(r0 * NR + q * 8));
        d[q] = _mm256_loadu_ps(acc2.add(r0 * NR + q * 8));
    }
    for kk in 0..kc {
        let sk = sa.add(kk * MR256 + r0);
        let ok = off.add(kk * MR256 + r0);
        for r in 0..H {
            let s = _mm256_set1_ps(*sk.add(r));
            let o = *ok.add(r) as usize;
            let (row, row2) = (v.add(o), v2.add(o));
            c[2 * r] = _mm256_fmadd_ps(s, _mm256_loadu_ps(row), c[2 * r]);
            c[2 * r + 1] = _mm256_fmadd_ps(s, _mm256_loadu_ps(row.add(8)), c[2 * r + 1]);
            d[2 * r] = _mm256_fmadd_ps(s, _mm256_loadu_ps(row2), d[2 * r]);
            d[2 * r + 1] = _mm256_fmadd_ps(s, _mm256_loadu_ps(row2.add(8)), d[2 * r + 1]);
        }
    }
    for q in 0..2 * H {
        _mm256_storeu_ps(acc.add(r0 * NR + q * 8), c[q]);
        _mm256_storeu_ps(acc2.add(r0 * NR + q * 8), d[q]);
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn direct_fma_avx2(
    kc: usize,
    rows: usize,
    sa: *const f32,
    off: *const u32,
    table: *const f32,
    index: *const u32,
    scale: *const f32,
    acc: *mut f32,
) {
    let mut c = [_mm256_setzero_ps(); 2 * MR256];
    for (q, cq) in c.iter_mut().enumerate() {
        *cq = _mm256_loadu_ps(acc.add(q * 8));
    }
    for kk in 0..kc {
        let i0 = _mm256_loadu_si256(index.add(kk * NR) as *const _);
        let i1 = _mm256_loadu_si256(index.add(kk * NR + 8) as *const _);
        let s0 = _mm256_loadu_ps(scale.add(kk * NR));
        let s1 = _mm256_loadu_ps(scale.add(kk * NR + 8));
        let sk = sa.add(kk * MR256);
        let ok = off.add(kk * MR256);
        for r in 0..MR256.min(rows) {
            let s = _mm256_set1_ps(*sk.add(r));
            let row = table.add(*ok.add(r) as usize);
            let e0 = _mm256_mul_ps(_mm256_i32gather_ps::<4>(row, i0), s0);
            let e1 = _mm256_mul_ps(_mm256_i32gather_ps::<4>(row, i1), s1);
            c[2 * r] = _mm256_fmadd_ps(s, e0, c[2 * r]);
            c[2 * r + 1] = _mm256_fmadd_ps(s, e1, c[2 * r + 1]);
        }
    }
    for (q, cq) in c.iter().enumerate() {
        _mm256_storeu_ps(acc.add(q * 8), *cq);
    }
}

/// The micro-kernel of the planes path over six rows: for each value of k
/// in order (`kpos[kk]`), row `r` reads its scale and offset at
/// `at(r, kpos[kk])` of pre-split planes and its expansion row at
/// `(kk << (bits + 4)) + t16`, and accumulates one 16-column panel.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn planes_rows_body(
    bits: u32,
    s: *const f32,
    t16: *const u32,
    kpos: &[u32],
    at: impl Fn(usize, u32) -> usize,
    v: *const f32,
    acc: *mut f32,
) {
    const R: usize = super::planes::PR;
    let mut c = [_mm256_setzero_ps(); 2 * R];
    for (q, cq) in c.iter_mut().enumerate() {
        *cq = _mm256_loadu_ps(acc.add(q * 8));
    }
    let step = 1usize << (bits + 4);
    let mut vk = v;
    for &o in kpos {
        for r in 0..R {
            let a = at(r, o);
            let sc = _mm256_set1_ps(*s.add(a));
            let row = vk.add(*t16.add(a) as usize);
            c[2 * r] = _mm256_fmadd_ps(sc, _mm256_loadu_ps(row), c[2 * r]);
            c[2 * r + 1] = _mm256_fmadd_ps(sc, _mm256_loadu_ps(row.add(8)), c[2 * r + 1]);
        }
        vk = vk.add(step);
    }
    for (q, cq) in c.iter().enumerate() {
        _mm256_storeu_ps(acc.add(q * 8), *cq);
    }
}

/// Rows `r0..r0 + 3` of [`planes_rows_body`] on two panels at once (as
/// [`expand_fma2_avx2`]: one scale and offset load serve four expansion
/// loads).
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn planes_rows2_body(
    bits: u32,
    r0: usize,
    s: *const f32,
    t16: *const u32,
    kpos: &[u32],
    at: impl Fn(usize, u32) -> usize,
    v: *const f32,
    v2: *const f32,
    acc: *mut f32,
    acc2: *mut f32,
) {
    const H: usize = 3;
    let mut c = [_mm256_setzero_ps(); 2 * H];
    let mut d = [_mm256_setzero_ps(); 2 * H];
    for q in 0..2 * H {
        c[q] = _mm256_loadu_ps(acc.add(r0 * NR + q * 8));
        d[q] = _mm256_loadu_ps(acc2.add(r0 * NR + q * 8));
    }
    let step = 1usize << (bits + 4);
    let (mut vk, mut vk2) = (v, v2);
    for &o in kpos {
        for r in 0..H {
            let a = at(r0 + r, o);
            let sc = _mm256_set1_ps(*s.add(a));
            let t = *t16.add(a) as usize;
            let (row, row2) = (vk.add(t), vk2.add(t));
            c[2 * r] = _mm256_fmadd_ps(sc, _mm256_loadu_ps(row), c[2 * r]);
            c[2 * r + 1] = _mm256_fmadd_ps(sc, _mm256_loadu_ps(row.add(8)), c[2 * r + 1]);
            d[2 * r] = _mm256_fmadd_ps(sc, _mm256_loadu_ps(row2), d[2 * r]);
            d[2 * r + 1] = _mm256_fmadd_ps(sc, _mm256_loadu_ps(row2.add(8)), d[2 * r + 1]);
        }
        vk = vk.add(step);
        vk2 = vk2.add(step);
    }
    for q in 0..2 * H {
        _mm256_storeu_ps(acc.add(r0 * NR + q * 8), c[q]);
        _mm256_storeu_ps(acc2.add(r0 * NR + q * 8), d[q]);
    }
}

/// The forward and input-gradient kernel of the planes path
/// (`planes::fma1`): rows are consecutive positions, read at
/// `koff[kk] + r`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn planes_fma_avx2(
    bits: u32,
    s: *const f32,
    t16: *const u32,
    koff: &[u32],
    v: *const f32,
    acc: *mut f32,
) {
    planes_rows_body(bits, s, t16, koff, |r, o| o as usize + r, v, acc)
}

/// [`planes_fma_avx2`] on two panels, rows `r0..r0 + 3`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn planes_fma2_avx2(
    bits: u32,
    r0: usize,
    s: *const f32,
    t16: *const u32,
    koff: &[u32],
    v: *const f32,
    v2: *const f32,
    acc: *mut f32,
    acc2: *mut f32,
) {
    let at = |r, o| o as usize + r;
    planes_rows2_body(bits, r0, s, t16, koff, at, v, v2, acc, acc2)
}

/// The weight-gradient kernel of the planes path (`planes::fma1` with `Rows::Taps`):
/// rows are taps, read at `rb[r] + pos[kk]` for output position `kk`.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn rows_fma_avx2(
    bits: u32,
    s: *const f32,
    t16: *const u32,
    rb: &[u32; super::planes::PR],
    pos: &[u32],
    v: *const f32,
    acc: *mut f32,
) {
    planes_rows_body(bits, s, t16, pos, |r, o| (rb[r] + o) as usize, v, acc)
}

/// [`rows_fma_avx2`] on two panels, rows `r0..r0 + 3`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn rows_fma2_avx2(
    bits: u32,
    r0: usize,
    s: *const f32,
    t16: *const u32,
    rb: &[u32; super::planes::PR],
    pos: &[u32],
    v: *const f32,
    v2: *const f32,
    acc: *mut f32,
    acc2: *mut f32,
) {
    let at = |r: usize, o: u32| (rb[r] + o) as usize;
    planes_rows2_body(bits, r0, s, t16, pos, at, v, v2, acc, acc2)
}

/// [`planes_fma_avx2`] for outputs of at most 8 columns, on half rows:
/// the expansion keeps 8 floats per row (`(kk << (bits + 3)) + t16 / 2`),
/// one load and one fused multiply-add per row and tap.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn planes_fma_half_avx2(
    bits: u32,
    s: *const f32,
    t16: *const u32,
    koff: &[u32],
    v: *const f32,
    acc: *mut f32,
) {
    const R: usize = super::planes::PR;
    let mut c = [_mm256_setzero_ps(); R];
    for (r, cr) in c.iter_mut().enumerate() {
        *cr = _mm256_loadu_ps(acc.add(r * NR));
    }
    let step = 1usize << (bits + 3);
    let mut vk = v;
    for &o in koff {
        let (sk, tk) = (s.add(o as usize), t16.add(o as usize));
        for (r, cr) in c.iter_mut().enumerate() {
            let sc = _mm256_set1_ps(*sk.add(r));
            let row = vk.add((*tk.add(r) >> 1) as usize);
            *cr = _mm256_fmadd_ps(sc, _mm256_loadu_ps(row), *cr);
        }
        vk = vk.add(step);
    }
    for (r, cr) in c.iter().enumerate() {
        _mm256_storeu_ps(acc.add(r * NR), *cr);
    }
}

/// The direct weight-gradient kernel of the planes path
/// (`planes::rows_direct`): six rows (taps) read at `rb[r] + pos[kk]` of
/// pre-split planes, each product `L[t_a][tb_j] * sb_j` loaded from the
/// table row of `t_a` (8 lanes, the first half of a packed panel), then
/// `acc = fma(s_a, product, acc)` as in [`direct_fma_avx2`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn rows_direct_avx2(
    bits: u32,
    s: *const f32,
    t16: *const u32,
    rb: &[u32; super::planes::PR],
    pos: &[u32],
    table: *const f32,
    index: *const u32,
    scale: *const f32,
    acc: *mut f32,
) {
    const R: usize = super::planes::PR;
    let mut c = [_mm256_setzero_ps(); R];
    for (r, cr) in c.iter_mut().enumerate() {
        *cr = _mm256_loadu_ps(acc.add(r * NR));
    }
    for (kk, &o) in pos.iter().enumerate() {
        // Scalar loads instead of a gather: on a Zen 3, eight loads and
        // seven inserts took a fraction of a 256-bit gather's time.
        let ix = index.add(kk * NR);
        let i: [usize; 8] = std::array::from_fn(|j| *ix.add(j) as usize);
        let s0 = _mm256_loadu_ps(scale.add(kk * NR));
        for (r, cr) in c.iter_mut().enumerate() {
            let at = (rb[r] + o) as usize;
            let sc = _mm256_set1_ps(*s.add(at));
            let row = table.add(((*t16.add(at) >> 4) as usize) << bits);
            let lo = _mm_set_ps(
                *row.add(i[3]),
                *row.add(i[2]),
                *row.add(i[1]),
                *row.add(i[0]),
            );
            let hi = _mm_set_ps(
                *row.add(i[7]),
                *row.add(i[6]),
                *row.add(i[5]),
                *row.add(i[4]),
            );
            let e = _mm256_mul_ps(_mm256_set_m128(hi, lo), s0);
            *cr = _mm256_fmadd_ps(sc, e, *cr);
        }
    }
    for (r, cr) in c.iter().enumerate() {
        _mm256_storeu_ps(acc.add(r * NR), *cr);
    }
}
