//! The one loop nest of the AMSim engine, shared by every instruction set.
//!
//! The output is cut into jobs (a block of rows x a group of `NR`-column
//! panels, as [`plan`] prices best) run in parallel by rayon; `k` is never
//! split, so each output element is summed by one thread in increasing `k`.
//! Inside a job:
//!
//! ```text
//! for each chunk of ROW_CHUNK rows of the job:
//!     for each block of X_BLOCK values of k:
//!         pack the chunk's rows of X for the block            (scale, offset)
//!         for each pair of column panels of the job:
//!             for each k-block (kc values of k):
//!                 pack both panels of Y, expand them (2^m rows) (V)
//!                 for each micro-panel of MR rows:
//!                     skip it if its k-block of X is all zeros (fused path),
//!                     else fused micro-kernel on both panels, or per panel the
//!                     exact fallback where a block holds special values or
//!                     out-of-range exponents
//!     write the chunk's sums to C
//! ```
//!
//! Chunks keep the packed rows and the accumulator tiles in cache when a job
//! has many rows; when the whole of `k` is one k-block (short `k`), the
//! packed and expanded panels of the first chunk serve the later ones. The
//! accumulator tiles live in a buffer between k-blocks; buffers are
//! thread-local and reused across calls.

use std::cell::RefCell;

use rayon::prelude::*;

use super::kernel::{LutKernel, Portable};
use super::pack::{pack_x, pack_y, PackedX, PackedY, Strategy};
use super::{Isa, OutPtr, Table, View, NR};

/// Bytes of the expansion of one k-block of a panel, for 4 to 16 values of
/// k (`kc`): 64 KiB at 7 bits, 16 KiB at 4 bits, 256 KiB at 10 bits, so the
/// expansions of a pair of panels stay in L2. Measured on a Zen 4 core:
/// 7 bits ran faster at 64 KiB than at 16 KiB, 4 bits faster with kc = 16
/// than with kc = 64.
const EXPANSION_BYTES: usize = 64 * 1024;

/// Values of k for which the first operand is packed at once (in chunks of
/// [`ROW_CHUNK`] rows; longer chunks pack fewer, see [`chunk_for`]).
const X_BLOCK: usize = 128;

/// Rows of a job computed at a time (a multiple of every `MR`): their
/// packed operand (`ROW_CHUNK * X_BLOCK` scales and offsets) and their
/// accumulator tiles stay in L2, instead of streaming through memory when a
/// job holds many rows. Each chunk expands the second operand again, unless
/// the whole of `k` is one expansion block (see [`WHOLE_K_BYTES`]). Tables
/// wider than this many rows take longer chunks (see [`chunk_for`]).
const ROW_CHUNK: usize = 480;

/// Least rows of a chunk for tables wider than [`ROW_CHUNK`] rows (see
/// [`chunk_for`]).
const WIDE_CHUNK: usize = 1024;

/// Largest expansion of a job's panels over the whole of `k`: below it, `k`
/// is one expansion block, expanded once and shared by every row chunk.
const WHOLE_K_BYTES: usize = 256 * 1024;

/// Largest job accumulator, in floats.
const MAX_ACC: usize = 1 << 20;

/// Scratch buffers of one thread.
#[derive(Default)]
struct Scratch {
    acc: Vec<f32>,
    v: Vec<f32>,
    px: PackedX,
    py: [PackedY; 2],
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Rows of the micro-kernel tile that [`run_isa`] will use for `isa`.
pub(crate) fn kernel_mr(isa: Isa) -> usize {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if is_x86_feature_detected!("avx512f") => super::x86::Avx512::MR,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => {
            super::x86::Avx2::MR
        }
        _ => Portable::MR,
    }
}

/// Run the loop nest with the kernels of `isa` and a plan made by [`plan`]
/// for this shape and `kernel_mr(isa)`.
pub(crate) fn run_isa(isa: Isa, x: View, y: View, table: &Table, out: OutPtr, p: &Plan) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if is_x86_feature_detected!("avx512f") => {
            run(&super::x86::Avx512, x, y, table, out, p)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => {
            run(&super::x86::Avx2, x, y, table, out, p)
        }
        _ => run(&Portable, x, y, table, out, p),
    }
}

/// How the work is cut: rows per job, panels per job, k-block, strategy,
/// and the estimated cost (in units of one vector FMA row).
pub(crate) struct Plan {
    mc: usize,
    row_jobs: usize,
    panels_per_job: usize,
    col_jobs: usize,
    kc: usize,
    strategy: Strategy,
    /// Rows per chunk of a job (a multiple of `MR`).
    chunk: usize,
    /// Values of k for which the first operand is packed at once.
    xblock: usize,
    pub cost: f64,
}

/// Relative costs of the work of one `k` (a fused micro-kernel row = 1),
/// measured roughly on a Zen 4 core at 7 bits: an expansion row, a direct
/// row (a gather from the table), and the packing of one element.
const COST_EXPAND_ROW: f64 = 1.5;
const COST_DIRECT_ROW: f64 = 12.0;
const COST_PACK: f64 = 1.0;
/// Fixed cost of a job (scheduling, buffers, writing the tile).
const COST_JOB: f64 = 4000.0;

/// The cheapest way to cut an `m x n` output with depth `k` over `threads`
/// threads: every split of the rows and column panels into jobs (a few per
/// thread at most) with either strategy, each priced by [`COST_EXPAND_ROW`]
/// and friends, the jobs of the slowest thread counting.
pub(crate) fn plan(m: usize, n: usize, k: usize, bits: u32, mr: usize, threads: usize) -> Plan {
    let panels = n.div_ceil(NR).max(1);
    let threads = threads.max(1);
    let max_jobs = if threads <= 1 { 1 } else { 2 * threads };
    let mpanels_all = m.div_ceil(mr).max(1);
    let mut best: Option<Plan> = None;
    for col_jobs in 1..=panels.min(max_jobs) {
        let panels_per_job = panels.div_ceil(col_jobs);
        let col_jobs = panels.div_ceil(panels_per_job);
        let cols = panels_per_job * NR;
        let min_rows = (m * cols).div_ceil(MAX_ACC).max(1);
        for rj in 1..=mpanels_all.min(max_jobs) {
            let rj = rj.max(min_rows);
            let mc = m.div_ceil(rj).div_ceil(mr).max(1) * mr;
            let row_jobs = m.div_ceil(mc).max(1);
            let jobs = row_jobs * col_jobs;
            let rounds = jobs.div_ceil(threads) as f64;
            let tile_rows = mc as f64;
            let live_rows = mc.min(m) as f64;
            let (chunk, xblock) = chunk_for(bits, mc, mr);
            let whole_k = k * ((NR * 4) << bits) * panels_per_job <= WHOLE_K_BYTES;
            let expansions = if whole_k && panels_per_job <= 2 {
                1
            } else {
                mc.div_ceil(chunk)
            };
            for strategy in [Strategy::Expand, Strategy::Direct] {
                let per_k = match strategy {
                    Strategy::Expand => {
                        panels_per_job as f64
                            * ((1usize << bits) as f64 * COST_EXPAND_ROW * expansions as f64
                                + tile_rows)
                    }
                    Strategy::Direct => panels_per_job as f64 * live_rows * COST_DIRECT_ROW,
                } + (live_rows + cols as f64) * COST_PACK;
                let cost = rounds * (per_k * k as f64 + COST_JOB);
                if best.as_ref().is_none_or(|b| cost < b.cost) {
                    let kc = match strategy {
                        Strategy::Expand if whole_k => k,
                        Strategy::Expand => (EXPANSION_BYTES / ((NR * 4) << bits)).clamp(4, 16),
                        Strategy::Direct => 256,
                    }
                    .min(k)
                    .max(1);
                    best = Some(Plan {
                        mc,
                        row_jobs,
                        panels_per_job,
                        col_jobs,
                        kc,
                        strategy,
                        chunk,
                        xblock,
                        cost,
                    });
                }
            }
        }
    }
    best.expect("at least one plan")
}

/// Rows per chunk and values of k per packing of the first operand, for
/// jobs of `mc` rows.
///
/// A chunk expands the second operand again, at `2^bits` rows per `k`, so a
/// chunk of [`ROW_CHUNK`] rows is enough while `2^bits` is small against it
/// (up to 8 bits). Wider tables take chunks of at least [`WIDE_CHUNK`] and
/// `2^bits` rows (all the rows of a 1024-row job at 9 and 10 bits: one
/// expansion instead of two or three), and pack the first operand for fewer
/// values of k, so that its packed block (`chunk * xblock` scales and
/// offsets) keeps the size it has at [`ROW_CHUNK`] rows and stays in L2 with
/// the expansions and the accumulator tiles. Measured on a 2-core Zen 4 at
/// 1024x1024x1024: 10 bits went from about 4.2x to 2.0-2.4x the time of
/// 7 bits, 9 bits from about 2.4x to 1.4-1.7x.
fn chunk_for(bits: u32, mc: usize, mr: usize) -> (usize, usize) {
    let base = (ROW_CHUNK / mr).max(1) * mr;
    let rows = 1usize << bits;
    if rows <= ROW_CHUNK {
        return (base, X_BLOCK);
    }
    let chunk = rows.max(WIDE_CHUNK).div_ceil(mr) * mr;
    let chunk = chunk.min(mc.div_ceil(mr).max(1) * mr).max(base);
    (chunk, (X_BLOCK * base / chunk).max(1))
}

/// `out = X·Y` through `table` with kernel `kern`.
fn run<K: LutKernel>(kern: &K, x: View, y: View, table: &Table, out: OutPtr, p: &Plan) {
    let jobs = p.row_jobs * p.col_jobs;
    let job = |jid: usize| {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => run_job(kern, &x, &y, table, out, p, jid, &mut s),
            Err(_) => run_job(kern, &x, &y, table, out, p, jid, &mut Scratch::default()),
        })
    };
    if jobs == 1 {
        job(0);
    } else {
        (0..jobs).into_par_iter().for_each(job);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_job<K: LutKernel>(
    kern: &K,
    x: &View,
    y: &View,
    table: &Table,
    out: OutPtr,
    p: &Plan,
    jid: usize,
    s: &mut Scratch,
) {
    let (m, n, k) = (x.rows, y.cols, x.cols);
    let (rj, cj) = (jid / p.col_jobs, jid % p.col_jobs);
    let i0 = rj * p.mc;
    let rows = p.mc.min(m - i0);
    let panel0 = cj * p.panels_per_job;
    let panel1 = (panel0 + p.panels_per_job).min(n.div_ceil(NR));
    // With one k-block and one group of panels, the packed and expanded
    // second operand of the first chunk serves every later chunk.
    let group = if p.strategy == Strategy::Expand { 2 } else { 1 };
    let reusable = p.kc >= k && panel1 - panel0 <= group;
    let mut c0 = 0;
    while c0 < rows {
        let crows = p.chunk.min(rows - c0);
        let cols = Cols { panel0, panel1 };
        let reuse = reusable && c0 > 0;
        run_rows(kern, x, y, table, out, p, i0 + c0, crows, cols, reuse, s);
        c0 += crows;
    }
}

/// The column panels `panel0..panel1` of a job.
#[derive(Clone, Copy)]
struct Cols {
    panel0: usize,
    panel1: usize,
}

/// Rows `i0..i0 + rows` of a job (one chunk). With `reuse`, the scratch
/// buffers already hold the packed and expanded second operand for these
/// panels and the whole of `k` (from the job's previous chunk).
#[allow(clippy::too_many_arguments)]
fn run_rows<K: LutKernel>(
    kern: &K,
    x: &View,
    y: &View,
    table: &Table,
    out: OutPtr,
    p: &Plan,
    i0: usize,
    rows: usize,
    cols: Cols,
    reuse: bool,
    s: &mut Scratch,
) {
    let (n, k) = (y.cols, x.cols);
    let mr = K::MR;
    let bits = table.bits;
    let mpanels = rows.div_ceil(mr);
    let Cols { panel0, panel1 } = cols;
    let tile = mr * NR;
    let Scratch {
        acc: acc_buf,
        v: v_buf,
        px,
        py,
    } = s;
    // Accumulator tiles and expansion rows are 16 floats: start both on a
    // 64-byte boundary so that no register load or store splits a cache line.
    let acc = aligned(acc_buf, (panel1 - panel0) * mpanels * tile);
    acc.fill(0.0);
    // Panels go through the fused kernel two at a time where they can: the
    // pair shares each row's scale and offset loads.
    let group = if p.strategy == Strategy::Expand { 2 } else { 1 };
    let vsz = p.kc << (bits + 4);
    let v = aligned(
        v_buf,
        if p.strategy == Strategy::Expand {
            group * vsz
        } else {
            0
        },
    );
    // X is packed for `xc` values of k at a time (a multiple of `kc`), so
    // that it is read along its rows even when the expansion block is short.
    let xc = p.kc * (p.xblock / p.kc).max(1);
    let mut x0 = 0;
    while x0 < k {
        let xlen = xc.min(k - x0);
        pack_x(px, x, i0, rows, x0, xlen, mr, bits, p.kc, p.strategy);
        let mut g0 = panel0;
        while g0 < panel1 {
            let g1 = (g0 + group).min(panel1);
            let mut k0 = x0;
            while k0 < x0 + xlen {
                let kc = p.kc.min(x0 + xlen - k0);
                let mut expandable = [false; 2];
                for (g, panel) in (g0..g1).enumerate() {
                    if reuse {
                        expandable[g] = py[g].range.expandable();
                        continue;
                    }
                    pack_y(&mut py[g], y, k0, kc, panel * NR, bits);
                    expandable[g] = py[g].range.expandable();
                    if expandable[g] && p.strategy == Strategy::Expand {
                        // SAFETY: `py[g]` was packed with this `kc` and
                        // `bits`, and the slice holds `p.kc << (bits + 4)`.
                        unsafe {
                            kern.expand(
                                table.entries,
                                table.entries_t,
                                bits,
                                &py[g].index,
                                &py[g].scale,
                                kc,
                                &mut v[g * vsz..(g + 1) * vsz],
                            )
                        };
                    }
                }
                for mp in 0..mpanels {
                    let first = (mp * xlen + (k0 - x0)) * mr;
                    let sa = &px.scale[first..first + kc * mr];
                    let off = &px.off[first..first + kc * mr];
                    let fused = |g: usize| expandable[g] && px.range[mp].fused_ok(&py[g].range);
                    // Only zeros and subnormals on the fused path: nothing
                    // to add (see `PackedX::live`).
                    let dead = !px.live(mp, (k0 - x0) / p.kc);
                    if dead && (g0..g1).all(|g| fused(g - g0)) {
                        continue;
                    }
                    let t0 = ((g0 - panel0) * mpanels + mp) * tile;
                    if g1 - g0 == 2 && fused(0) && fused(1) {
                        // The second panel's tile is `mpanels` tiles on.
                        let (lo, hi) = acc.split_at_mut(t0 + mpanels * tile);
                        let (v0, v1) = v.split_at(vsz);
                        // SAFETY: as for `expand_fma`, for both panels.
                        unsafe {
                            kern.expand_fma2(
                                kc,
                                sa,
                                off,
                                v0,
                                v1,
                                &mut lo[t0..t0 + tile],
                                &mut hi[..tile],
                            )
                        };
                        continue;
                    }
                    for (g, panel) in (g0..g1).enumerate() {
                        let tg = ((panel - panel0) * mpanels + mp) * tile;
                        let acc_tile = &mut acc[tg..tg + tile];
                        if fused(g) {
                            // SAFETY: `px` and `py[g]` were packed for this
                            // block with this `bits` and strategy, offsets
                            // relative to blocks of `p.kc`.
                            unsafe {
                                match p.strategy {
                                    Strategy::Expand => kern.expand_fma(
                                        kc,
                                        sa,
                                        off,
                                        &v[g * vsz..(g + 1) * vsz],
                                        acc_tile,
                                    ),
                                    Strategy::Direct => kern.direct_fma(
                                        kc,
                                        mr.min(rows - mp * mr),
                                        sa,
                                        off,
                                        table.entries,
                                        &py[g].index,
                                        &py[g].scale,
                                        acc_tile,
                                    ),
                                }
                            }
                        } else {
                            let i_tile = i0 + mp * mr;
                            let j0 = panel * NR;
                            exact_tile(
                                x,
                                y,
                                table,
                                i_tile..(i_tile + mr).min(i0 + rows),
                                j0..(j0 + NR).min(n),
                                k0..k0 + kc,
                                acc_tile,
                            );
                        }
                    }
                }
                k0 += kc;
            }
            g0 = g1;
        }
        x0 += xlen;
    }
    for panel in panel0..panel1 {
        let j0 = panel * NR;
        for mp in 0..mpanels {
            let t0 = ((panel - panel0) * mpanels + mp) * tile;
            for r in 0..mr.min(rows - mp * mr) {
                for jj in 0..NR.min(n - j0) {
                    // SAFETY: (i, j) is inside C and belongs to this job only.
                    unsafe { out.write(i0 + mp * mr + r, j0 + jj, acc[t0 + r * NR + jj]) };
                }
            }
        }
    }
}

/// A `len`-float window of `buf` that starts on a 64-byte boundary (the
/// buffer grows as needed and is reused across calls).
fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + NR {
        buf.resize(len + NR, 0.0);
    }
    let start = buf.as_ptr().align_offset(64).min(NR);
    &mut buf[start..start + len]
}

/// The exact fallback: one reference product per element, added in
/// increasing `k` to the tile's running sums.
fn exact_tile(
    x: &View,
    y: &View,
    table: &Table,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    ks: std::ops::Range<usize>,
    acc: &mut [f32],
) {
    for (r, i) in rows.enumerate() {
        for (jj, j) in cols.clone().enumerate() {
            let mut sum = acc[r * NR + jj];
            for kk in ks.clone() {
                sum += table.mul(x.at(i, kk), y.at(kk, j));
            }
            acc[r * NR + jj] = sum;
        }
    }
}
