//! The expansion engine of [`crate::int_gemm::int_gemm`] (x86-64 with
//! AVX-512F), for outputs with enough rows to share an expansion.
//!
//! For a panel of [`NR`] columns of `B` and one `p`, the column codes
//! `b_j = B[p][j]` select 16 columns of the table; the expansion
//! `V[p][t][j] = T[t][b_j]` holds them for every one of the 256 first-operand
//! codes `t`, so that each output row then adds the contiguous vector
//! `V[p][A[i][p]]` to its 16 sums: one load and one integer add per 16
//! products, where a lookup by gather costs 16 loads. The expansion is
//! built from 16 rows of the transposed table (`T^T[b_j]`, contiguous)
//! transposed 16 x 16 in registers, and serves every row of the job, so it
//! pays once a job has a few hundred rows ([`MIN_ROWS`]).
//!
//! Integer sums are associative (wrapping `i32`), so the blocking changes no
//! bit: the result equals [`crate::int_gemm::int_gemm_reference`].

use std::arch::x86_64::*;

use rayon::prelude::*;

use crate::IntLut;

/// Columns of a panel: one register of 16 `i32` sums.
const NR: usize = 16;
/// Output rows of the micro-kernel (two panels each: 24 sum registers).
const MR: usize = 12;
/// Values of `p` per expansion block: a pair of panels' expansions take
/// `2 * KC * 16 KiB` (512 KiB), in L2 beside the packed rows and sums.
const KC: usize = 16;
/// Rows per job at most: the packed codes of a chunk (`rows * KC` offsets)
/// stay in L1/L2 and each expansion serves all of them.
const ROW_CHUNK: usize = 2048;
/// Least rows of an output for which the expansion pays against the gather
/// loop (256 expansion rows per `p` and panel are shared by the rows).
pub(crate) const MIN_ROWS: usize = 192;

/// Whether this CPU runs the expansion engine. `APPROXTRAIN_INT_GATHER`
/// (any value) keeps every output on the gather loop, to compare the two
/// (read once).
pub(crate) fn available() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var_os("APPROXTRAIN_INT_GATHER").is_some());
    !off && is_x86_feature_detected!("avx512f")
}

/// `C = A·B` through `lut`, row-major `u8` codes, `c` overwritten;
/// `m, n, k > 0`. The caller checked the shapes and [`available`].
pub(crate) fn gemm(lut: &IntLut, a: &[u8], b: &[u8], c: &mut [i32], m: usize, n: usize, k: usize) {
    debug_assert!(available());
    assert!(a.len() == m * k && b.len() == k * n && c.len() == m * n);
    // Rows of the transposed table, `T^T[b][t] = T[t][b]`, are the columns
    // the expansion reads.
    let lut_t = lut.transposed();
    let tt = lut_t.table();
    let panels = n.div_ceil(NR);
    let threads = rayon::current_num_threads().max(1);
    // Jobs: column groups first (each expansion then serves all the rows
    // of a chunk), rows split further only when the columns are too few
    // to keep every thread busy, or a chunk would be too long.
    let col_jobs = panels.min(2 * threads);
    let want_row_jobs = (2 * threads).div_ceil(col_jobs);
    let row_jobs = want_row_jobs
        .max(m.div_ceil(ROW_CHUNK))
        .min(m.div_ceil(MIN_ROWS))
        .max(1);
    let rows_per_job = m.div_ceil(row_jobs).div_ceil(MR) * MR;
    let row_jobs = m.div_ceil(rows_per_job);
    let panels_per_job = panels.div_ceil(col_jobs);
    let col_jobs = panels.div_ceil(panels_per_job);
    let out = OutPtr(c.as_mut_ptr());
    (0..row_jobs * col_jobs).into_par_iter().for_each(|job| {
        let (rj, cj) = (job / col_jobs, job % col_jobs);
        let i0 = rj * rows_per_job;
        let rows = rows_per_job.min(m - i0);
        let p0 = cj * panels_per_job;
        let p1 = (p0 + panels_per_job).min(panels);
        let j0 = p0 * NR;
        let j1 = (p1 * NR).min(n);
        // SAFETY: AVX-512F was detected (`available`); jobs write disjoint
        // blocks of C (distinct rows or columns), all inside it.
        unsafe { run_job(tt, a, b, out, n, k, i0, rows, j0, j1) };
    });
}

/// The output pointer shared by the jobs.
#[derive(Clone, Copy)]
struct OutPtr(*mut i32);
// SAFETY: the jobs write disjoint elements (see `gemm`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Rows `i0..i0 + rows` and columns `j0..j1` of C.
///
/// The sums live in tiles of [`MR`] rows by two panels (`acc`, contiguous,
/// so that a tile is two cache lines a row and no 4 KiB-strided rows of C
/// fight over the same L1 sets) and are written to C at the end.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn run_job(
    tt: &[i32],
    a: &[u8],
    b: &[u8],
    out: OutPtr,
    n: usize,
    k: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    j1: usize,
) {
    let mpanels = rows.div_ceil(MR);
    let pairs = (j1 - j0).div_ceil(2 * NR);
    // acc[((q * mpanels + mp) * MR + r) * 2 * NR + jj]: pair q, row
    // mp*MR + r, column j0 + 2*NR*q + jj of the job.
    let tile = MR * 2 * NR;
    let mut acc = Aligned::new(pairs * mpanels * tile);
    // off[(mp * KC + kk) * MR + r]: where row mp*MR + r's expansion row for
    // p0 + kk starts (in i32), rows past the end pointing at code 0.
    let mut off = vec![0u32; mpanels * KC * MR];
    // The expansions are written before they are read: a buffer kept per
    // thread serves every job (zeroing 512 KiB per job costs more than
    // the products of a small one).
    thread_local! {
        static EXPANSIONS: std::cell::RefCell<Aligned> = std::cell::RefCell::new(Aligned::new(2 * KC * 256 * NR));
    }
    EXPANSIONS.with_borrow_mut(|v| {
        let mut p0 = 0;
        while p0 < k {
            let kc = KC.min(k - p0);
            for mp in 0..mpanels {
                let live = MR.min(rows - mp * MR);
                pack_offsets(a, k, i0 + mp * MR, live, p0, kc, &mut off[mp * KC * MR..]);
            }
            for q in 0..pairs {
                let j = j0 + q * 2 * NR;
                let cols1 = NR.min(j1 - j);
                let cols2 = NR.min(j1 - (j + cols1));
                let (v1, v2) = v.as_mut_slice().split_at_mut(KC * 256 * NR);
                expand(tt, b, n, p0, kc, j, cols1, v1.as_mut_ptr());
                if cols2 > 0 {
                    expand(tt, b, n, p0, kc, j + NR, cols2, v2.as_mut_ptr());
                }
                let tiles = acc.as_mut_slice()[q * mpanels * tile..].as_mut_ptr();
                for mp in 0..mpanels {
                    let o = off.as_ptr().add(mp * KC * MR);
                    add_tile(
                        o,
                        kc,
                        v1.as_ptr(),
                        v2.as_ptr(),
                        cols2 > 0,
                        tiles.add(mp * tile),
                    );
                }
            }
            p0 += kc;
        }
    });
    // Write the sums, a panel at a time with masked stores (a row of C may
    // hold fewer than 16 columns of the job: a memcpy call each costs more
    // than the products of such a row).
    let c = out.0;
    let acc = acc.as_mut_slice();
    for r in 0..rows {
        for q in 0..pairs {
            let (mp, rr) = (r / MR, r % MR);
            let src = acc[(q * mpanels + mp) * tile + rr * 2 * NR..].as_ptr();
            for half in 0..2 {
                let j = j0 + q * 2 * NR + half * NR;
                if j >= j1 {
                    break;
                }
                let mask = (u32::MAX >> (32 - NR.min(j1 - j))) as __mmask16;
                let sums = _mm512_load_si512(src.add(half * NR) as *const _);
                _mm512_mask_storeu_epi32(c.add((i0 + r) * n + j), mask, sums);
            }
        }
    }
}

/// The offsets of a micro-panel: `off[kk * MR + r] = (kk * 256 + A[i0 +
/// r][p0 + kk]) * NR` for `kk < kc` (`kc <= 16`), rows `r >= live` taking
/// code 0. Each row's `kc` codes are one vector, and the `MR x 16` block is
/// transposed in registers into the k-major layout.
#[target_feature(enable = "avx512f")]
unsafe fn pack_offsets(
    a: &[u8],
    k: usize,
    i0: usize,
    live: usize,
    p0: usize,
    kc: usize,
    off: &mut [u32],
) {
    debug_assert!(kc <= 16 && live <= MR && off.len() >= kc * MR);
    let kk = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    let base = _mm512_slli_epi32::<8>(kk);
    let mut rows = [_mm512_setzero_ps(); 16];
    for (r, row) in rows.iter_mut().enumerate() {
        let codes = if r < live {
            let mut bytes = [0u8; 16];
            bytes[..kc].copy_from_slice(&a[(i0 + r) * k + p0..][..kc]);
            _mm512_cvtepu8_epi32(_mm_loadu_si128(bytes.as_ptr() as *const __m128i))
        } else {
            _mm512_setzero_si512()
        };
        let o = _mm512_slli_epi32::<4>(_mm512_add_epi32(base, codes));
        *row = _mm512_castsi512_ps(o);
    }
    let cols = crate::engine::transpose16(rows);
    let rm: __mmask16 = ((1u32 << MR) - 1) as __mmask16;
    for (kk, col) in cols.iter().enumerate().take(kc) {
        _mm512_mask_storeu_ps(off.as_mut_ptr().add(kk * MR) as *mut f32, rm, *col);
    }
}

/// `V[kk][t][0..16] = T[t][B[p0 + kk][j..j + cols]]` (columns past `cols`
/// take code 0; their sums are never stored).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn expand(
    tt: &[i32],
    b: &[u8],
    n: usize,
    p0: usize,
    kc: usize,
    j: usize,
    cols: usize,
    v: *mut i32,
) {
    for kk in 0..kc {
        let codes = &b[(p0 + kk) * n + j..][..cols];
        let mut rows = [tt.as_ptr(); NR];
        for (r, &code) in rows.iter_mut().zip(codes) {
            *r = tt.as_ptr().add(code as usize * 256);
        }
        let vk = v.add(kk * 256 * NR);
        for t0 in (0..256).step_by(16) {
            let mut blk = [_mm512_setzero_ps(); 16];
            for (jj, r) in blk.iter_mut().enumerate() {
                *r = _mm512_loadu_ps(rows[jj].add(t0) as *const f32);
            }
            // Row t0 + q of the expansion: lane jj = T^T[b_jj][t0 + q].
            let tr = crate::engine::transpose16(blk);
            for (q, r) in tr.iter().enumerate() {
                _mm512_store_ps(vk.add((t0 + q) * NR) as *mut f32, *r);
            }
        }
    }
}

/// Add the products of `kc` values of `p` to a tile of [`MR`] rows by two
/// panels of sums (`tile`, rows of `2 * NR`); `two` says whether the second
/// panel exists (otherwise its sums are left alone).
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn add_tile(
    off: *const u32,
    kc: usize,
    v1: *const i32,
    v2: *const i32,
    two: bool,
    tile: *mut i32,
) {
    let mut s = [_mm512_setzero_si512(); MR];
    let mut t = [_mm512_setzero_si512(); MR];
    for r in 0..MR {
        s[r] = _mm512_load_si512(tile.add(r * 2 * NR) as *const _);
        t[r] = _mm512_load_si512(tile.add(r * 2 * NR + NR) as *const _);
    }
    if two {
        for kk in 0..kc {
            let o = off.add(kk * MR);
            for r in 0..MR {
                let at = *o.add(r) as usize;
                s[r] = _mm512_add_epi32(s[r], _mm512_load_si512(v1.add(at) as *const _));
                t[r] = _mm512_add_epi32(t[r], _mm512_load_si512(v2.add(at) as *const _));
            }
        }
    } else {
        for kk in 0..kc {
            let o = off.add(kk * MR);
            for (r, sr) in s.iter_mut().enumerate() {
                let at = *o.add(r) as usize;
                *sr = _mm512_add_epi32(*sr, _mm512_load_si512(v1.add(at) as *const _));
            }
        }
    }
    for r in 0..MR {
        _mm512_store_si512(tile.add(r * 2 * NR) as *mut _, s[r]);
        _mm512_store_si512(tile.add(r * 2 * NR + NR) as *mut _, t[r]);
    }
}

/// A zeroed `i32` buffer whose start is 64-byte aligned (the expansion rows
/// are read with aligned loads).
struct Aligned {
    buf: Vec<i32>,
    at: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let buf = vec![0i32; len + 16];
        let at = buf.as_ptr().align_offset(64);
        Aligned { buf, at, len }
    }

    fn as_mut_slice(&mut self) -> &mut [i32] {
        &mut self.buf[self.at..self.at + self.len]
    }
}
