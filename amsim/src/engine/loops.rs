//! The one loop nest of the AMSim engine, shared by every instruction set.
//!
//! The output is cut into jobs (a block of rows x a group of `NR`-column
//! panels) run in parallel by rayon; `k` is never split, so each output
//! element is summed by one thread in increasing `k`. Inside a job:
//!
//! ```text
//! for each block of X_BLOCK values of k:
//!     pack the job's rows of X for the block                (scale, offset)
//!     for each pair of column panels of the job:
//!         for each k-block (kc values of k):
//!             pack both panels of Y, expand them (2^m rows) (V)
//!             for each micro-panel of MR rows:
//!                 fused micro-kernel on both panels, or per panel the
//!                 exact fallback where a block holds special values or
//!                 out-of-range exponents
//! write the job's sums to C
//! ```
//!
//! The accumulator tiles live in a job buffer between k-blocks; buffers are
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

/// Values of k for which the first operand is packed at once.
const X_BLOCK: usize = 256;

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

/// Run the loop nest with the kernels of `isa`.
pub(crate) fn run_isa(isa: Isa, x: View, y: View, table: &Table, out: OutPtr) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if is_x86_feature_detected!("avx512f") => {
            run(&super::x86::Avx512, x, y, table, out)
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") => {
            run(&super::x86::Avx2, x, y, table, out)
        }
        _ => run(&Portable, x, y, table, out),
    }
}

/// How the work is cut: rows per job, panels per job, k-block, strategy.
struct Plan {
    mc: usize,
    row_jobs: usize,
    panels_per_job: usize,
    col_jobs: usize,
    kc: usize,
    strategy: Strategy,
}

fn plan(m: usize, n: usize, k: usize, bits: u32, mr: usize, threads: usize) -> Plan {
    let panels = n.div_ceil(NR);
    let target = if threads <= 1 { 1 } else { 2 * threads };
    // Each extra column job packs X again (about m * k element splits);
    // each extra row job expands Y again (about 2^bits * k * n / NR vector
    // rows). Pick the split of `target` jobs that repeats the least.
    let expand_rows = ((1usize << bits) * n).div_ceil(NR);
    let (mut col_jobs, mut best) = (1, usize::MAX);
    for cj in 1..=panels.min(target).max(1) {
        let rj = target.div_ceil(cj).min(m.div_ceil(mr)).max(1);
        let cost = (cj - 1) * m + (rj - 1) * expand_rows;
        if cost < best {
            (col_jobs, best) = (cj, cost);
        }
    }
    let panels_per_job = panels.div_ceil(col_jobs).max(1);
    let col_jobs = panels.div_ceil(panels_per_job).max(1);
    let mut row_jobs = target.div_ceil(col_jobs).max(1);
    let cols = panels_per_job * NR;
    row_jobs = row_jobs.max((m * cols).div_ceil(MAX_ACC));
    let mc = m.div_ceil(row_jobs).div_ceil(mr).max(1) * mr;
    let row_jobs = m.div_ceil(mc).max(1);
    // The expansion costs about 2^m vector rows per k and panel and serves
    // the job's rows; a direct lookup per product (a gather from the whole
    // table, measured at about ten times the cost of an expansion row at
    // 10 bits) wins only when the rows are far fewer than 2^m.
    let strategy = if (1usize << bits) <= 8 * mc {
        Strategy::Expand
    } else {
        Strategy::Direct
    };
    let kc = match strategy {
        Strategy::Expand => (EXPANSION_BYTES / ((NR * 4) << bits)).clamp(4, 16),
        Strategy::Direct => 256,
    }
    .min(k.max(1));
    Plan {
        mc,
        row_jobs,
        panels_per_job,
        col_jobs,
        kc,
        strategy,
    }
}

/// `out = X·Y` through `table` with kernel `kern`.
fn run<K: LutKernel>(kern: &K, x: View, y: View, table: &Table, out: OutPtr) {
    let (m, n, k) = (x.rows, y.cols, x.cols);
    let p = plan(m, n, k, table.bits, K::MR, rayon::current_num_threads());
    let jobs = p.row_jobs * p.col_jobs;
    let job = |jid: usize| {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => run_job(kern, &x, &y, table, out, &p, jid, &mut s),
            Err(_) => run_job(kern, &x, &y, table, out, &p, jid, &mut Scratch::default()),
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
    let mr = K::MR;
    let bits = table.bits;
    let (rj, cj) = (jid / p.col_jobs, jid % p.col_jobs);
    let i0 = rj * p.mc;
    let rows = p.mc.min(m - i0);
    let mpanels = rows.div_ceil(mr);
    let panel0 = cj * p.panels_per_job;
    let panel1 = (panel0 + p.panels_per_job).min(n.div_ceil(NR));
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
    let xc = p.kc * (X_BLOCK / p.kc).max(1);
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
