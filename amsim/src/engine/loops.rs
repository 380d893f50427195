//! The one loop nest of the AMSim engine, shared by every instruction set.
//!
//! Sums follow DESIGN.md's blocked accumulation ([`crate::accumulate`]):
//! each output element sums its products in blocks of [`ACC_BLOCK`]
//! consecutive `k`, each block from `+0.0` in increasing `k`, then the block
//! sums in increasing block order from `+0.0`.
//!
//! The output is cut into jobs (a block of rows x a group of `NR`-column
//! panels x a run of whole accumulation blocks of `k`, as [`plan`] prices
//! best) run in parallel by rayon. A job over the whole of `k` adds its
//! block sums into running totals and writes them; when `k` is split (a
//! small output over a long `k`), each job stores the sums of its blocks
//! and they are added up in block order once every job is done. Either
//! way each element gets the same bits at any thread count. Inside a job:
//!
//! ```text
//! for each chunk of ROW_CHUNK rows of the job:
//!     for each accumulation block (ACC_BLOCK values of k) of the job:
//!         for each block of X_BLOCK values of k (clipped to the block):
//!             pack the chunk's rows of X for the block        (scale, offset)
//!             for each pair of column panels of the job:
//!                 for each k-block (kc values of k):
//!                     pack both panels of Y, expand them (2^m rows) (V)
//!                     for each micro-panel of MR rows:
//!                         skip it if its k-block of X is all zeros (fused
//!                         path), else fused micro-kernel on both panels, or
//!                         per panel the exact fallback where a block holds
//!                         special values or out-of-range exponents
//!         add the tiles to the chunk's totals (or store them as the
//!         block's sums), and start the next block's tiles at +0.0
//!     write the chunk's totals to C
//! ```
//!
//! Chunks keep the packed rows and the accumulator tiles in cache when a job
//! has many rows; when the whole of the job's `k` is one k-block (short
//! `k`), the packed and expanded panels of the first chunk serve the later
//! ones. The accumulator tiles live in a buffer between k-blocks; buffers
//! are thread-local and reused across calls.

use std::cell::RefCell;
use std::ops::Range;

use rayon::prelude::*;

use super::kernel::{LutKernel, Portable};
use super::pack::{pack_x, pack_y, PackedX, PackedY, Strategy};
use super::{Isa, OutPtr, Table, View, NR};
use crate::accumulate::ACC_BLOCK;

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
/// accumulator tiles stay in L2 or the near part of L3, instead of
/// streaming through memory when a job holds many rows. Each chunk expands
/// the second operand again, unless the whole of `k` is one expansion block
/// (see [`WHOLE_K_BYTES`]), so longer chunks share each expansion among
/// more rows. Tables wider than this many rows take longer chunks (see
/// [`chunk_for`]). Measured at 7 bits on 2-core machines: with the AVX2
/// kernels on a Zen 3 (512 KiB L2), 1,920 rows ran 10-25% faster than 480
/// on the 1024^3 GEMM and ResNet-20's convolution shapes, 960 in between;
/// with the AVX-512 kernels on a Xeon (2 MiB L2), the 1024^3 GEMM went from
/// 18-20 to 28-30 GMAC/s and ResNet-20's stride-1 shapes 0-30% faster.
const ROW_CHUNK: usize = 1920;

/// The rows per chunk for micro-kernel tiles of `mr` rows.
fn row_chunk(mr: usize) -> usize {
    (ROW_CHUNK / mr).max(1) * mr
}

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
    /// Running totals of the block sums (jobs over several blocks).
    tot: Vec<f32>,
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

/// How the work is cut: rows per job, panels per job, accumulation blocks
/// per job, k-block, strategy, and the estimated cost (in units of one
/// vector FMA row).
pub(crate) struct Plan {
    mc: usize,
    row_jobs: usize,
    panels_per_job: usize,
    col_jobs: usize,
    /// Consecutive accumulation blocks ([`ACC_BLOCK`] values of k) per job.
    blocks_per_job: usize,
    /// Jobs along k (1: every job runs over the whole of k).
    k_jobs: usize,
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
/// Cost of storing one block sum of an output element and adding it into
/// the total afterwards, per [`NR`] elements (memory bound).
const COST_FOLD: f64 = 2.0;

/// Most block sums kept for a split of `k` (`blocks * m * n` floats, 32 MiB):
/// outputs that would need more have rows and columns enough to share out.
const MAX_BLOCK_SUMS: usize = 1 << 23;

/// The cheapest way to cut an `m x n` output with depth `k` over `threads`
/// threads: every split of the rows and column panels into jobs (a few per
/// thread at most), and of `k` into runs of whole accumulation blocks where
/// the output alone gives fewer jobs than that, with either strategy, each
/// priced by [`COST_EXPAND_ROW`] and friends, the jobs of the slowest thread
/// counting.
///
/// A split of `k` is how a small output over a long `k` (a convolution's
/// weight gradient: `C_out x C_in*KH*KW` over `N*OH*OW`) keeps every thread
/// busy without each job expanding the same panels again, as a split of its
/// few rows would.
pub(crate) fn plan(m: usize, n: usize, k: usize, bits: u32, mr: usize, threads: usize) -> Plan {
    let panels = n.div_ceil(NR).max(1);
    let threads = threads.max(1);
    let max_jobs = if threads <= 1 { 1 } else { 2 * threads };
    let mpanels_all = m.div_ceil(mr).max(1);
    let blocks = k.div_ceil(ACC_BLOCK).max(1);
    let max_k_jobs = if blocks * m * n <= MAX_BLOCK_SUMS {
        blocks.min(max_jobs)
    } else {
        1
    };
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
            let out_jobs = row_jobs * col_jobs;
            let tile_rows = mc as f64;
            let live_rows = mc.min(m) as f64;
            let (chunk, xblock) = chunk_for(bits, mc, mr);
            for kj in 1..=max_k_jobs.min(max_jobs.div_ceil(out_jobs)) {
                let blocks_per_job = blocks.div_ceil(kj);
                let k_jobs = blocks.div_ceil(blocks_per_job);
                // The longest k of a job.
                let kjob = (blocks_per_job * ACC_BLOCK).min(k);
                let jobs = out_jobs * k_jobs;
                let rounds = jobs.div_ceil(threads) as f64;
                // One expansion block for the whole of the job's k: it has
                // to lie in one accumulation block.
                let whole_k = kjob <= ACC_BLOCK
                    && kjob * ((NR * 4) << bits) * panels_per_job <= WHOLE_K_BYTES;
                let expansions = if whole_k && panels_per_job <= 2 {
                    1
                } else {
                    mc.div_ceil(chunk)
                };
                let fold = if k_jobs > 1 {
                    (blocks * m * n) as f64 / NR as f64 * COST_FOLD / threads as f64
                } else {
                    0.0
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
                    let cost = rounds * (per_k * kjob as f64 + COST_JOB) + fold;
                    if best.as_ref().is_none_or(|b| cost < b.cost) {
                        // Every kc below divides ACC_BLOCK, or is the job's
                        // whole k inside one block.
                        let kc = match strategy {
                            Strategy::Expand if whole_k => kjob,
                            Strategy::Expand => (EXPANSION_BYTES / ((NR * 4) << bits)).clamp(4, 16),
                            Strategy::Direct => 256,
                        }
                        .min(kjob)
                        .max(1);
                        best = Some(Plan {
                            mc,
                            row_jobs,
                            panels_per_job,
                            col_jobs,
                            blocks_per_job,
                            k_jobs,
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
    let base = row_chunk(mr);
    let rows = 1usize << bits;
    if rows <= base {
        return (base, X_BLOCK);
    }
    let chunk = rows.max(WIDE_CHUNK).div_ceil(mr) * mr;
    let chunk = chunk.min(mc.div_ceil(mr).max(1) * mr).max(base);
    (chunk, (X_BLOCK * base / chunk).max(1))
}

/// Where a job's sums go.
#[derive(Clone, Copy)]
enum Sink {
    /// The job runs over the whole of k: it adds its block sums in order
    /// and writes the totals to C.
    Out(OutPtr),
    /// The job runs over some of the blocks: it stores the sum of block `b`
    /// for element `(i, j)` at `sums[(b * m + i) * n + j]`, and [`run`]
    /// adds them up once every job is done.
    Blocks(BlockSums),
}

/// The per-block sums of a split `k`: `[blocks][m][n]`.
#[derive(Clone, Copy)]
struct BlockSums {
    ptr: *mut f32,
    m: usize,
    n: usize,
}

// SAFETY: jobs store disjoint elements (distinct blocks, rows or columns),
// and the buffer outlives them (see `run`).
unsafe impl Send for BlockSums {}
unsafe impl Sync for BlockSums {}

thread_local! {
    /// The block-sum buffer of a split `k`, kept between calls on the
    /// thread that runs the product (taken out while in use, so that a
    /// product started on this thread while it waits simply allocates).
    static BLOCK_SUMS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out = X·Y` through `table` with kernel `kern`.
fn run<K: LutKernel>(kern: &K, x: View, y: View, table: &Table, out: OutPtr, p: &Plan) {
    let jobs = p.row_jobs * p.col_jobs * p.k_jobs;
    let job = |jid: usize, sink: Sink| {
        SCRATCH.with(|s| match s.try_borrow_mut() {
            Ok(mut s) => run_job(kern, &x, &y, table, sink, p, jid, &mut s),
            Err(_) => run_job(kern, &x, &y, table, sink, p, jid, &mut Scratch::default()),
        })
    };
    if p.k_jobs == 1 {
        if jobs == 1 {
            job(0, Sink::Out(out));
        } else {
            (0..jobs)
                .into_par_iter()
                .for_each(|jid| job(jid, Sink::Out(out)));
        }
        return;
    }
    // k split at block boundaries: every job stores the sums of its blocks,
    // then each element adds its block sums in increasing block order from
    // +0.0, exactly as `BlockedSum` does.
    let (m, n, k) = (x.rows, y.cols, x.cols);
    let blocks = k.div_ceil(ACC_BLOCK);
    let mut sums = BLOCK_SUMS
        .try_with(|b| std::mem::take(&mut *b.borrow_mut()))
        .unwrap_or_default();
    // Every element is stored by exactly one job before it is read.
    if sums.len() < blocks * m * n {
        sums.resize(blocks * m * n, 0.0);
    }
    let sink = Sink::Blocks(BlockSums {
        ptr: sums.as_mut_ptr(),
        m,
        n,
    });
    (0..jobs).into_par_iter().for_each(|jid| job(jid, sink));
    let sums_ref = &sums[..blocks * m * n];
    const FOLD_ROWS: usize = 8;
    (0..m.div_ceil(FOLD_ROWS)).into_par_iter().for_each(|rb| {
        let mut total = vec![0.0f32; n];
        for i in rb * FOLD_ROWS..((rb + 1) * FOLD_ROWS).min(m) {
            total.fill(0.0);
            for b in 0..blocks {
                let row = &sums_ref[(b * m + i) * n..][..n];
                for (t, v) in total.iter_mut().zip(row) {
                    *t += *v;
                }
            }
            for (j, t) in total.iter().enumerate() {
                // SAFETY: (i, j) is inside C, and each row is written by one
                // task only.
                unsafe { out.write(i, j, *t) };
            }
        }
    });
    let _ = BLOCK_SUMS.try_with(|b| *b.borrow_mut() = sums);
}

#[allow(clippy::too_many_arguments)]
fn run_job<K: LutKernel>(
    kern: &K,
    x: &View,
    y: &View,
    table: &Table,
    sink: Sink,
    p: &Plan,
    jid: usize,
    s: &mut Scratch,
) {
    let (m, n, k) = (x.rows, y.cols, x.cols);
    let (oj, kj) = (jid / p.k_jobs, jid % p.k_jobs);
    let (rj, cj) = (oj / p.col_jobs, oj % p.col_jobs);
    let i0 = rj * p.mc;
    let rows = p.mc.min(m - i0);
    let panel0 = cj * p.panels_per_job;
    let panel1 = (panel0 + p.panels_per_job).min(n.div_ceil(NR));
    let k0 = (kj * p.blocks_per_job * ACC_BLOCK).min(k);
    let k1 = ((kj + 1) * p.blocks_per_job * ACC_BLOCK).min(k);
    // With one k-block and one group of panels, the packed and expanded
    // second operand of the first chunk serves every later chunk.
    let group = if p.strategy == Strategy::Expand { 2 } else { 1 };
    let reusable = p.kc >= k1 - k0 && panel1 - panel0 <= group;
    let mut c0 = 0;
    while c0 < rows {
        let crows = p.chunk.min(rows - c0);
        let cols = Cols { panel0, panel1 };
        let reuse = reusable && c0 > 0;
        run_rows(
            kern,
            x,
            y,
            table,
            sink,
            p,
            i0 + c0,
            crows,
            cols,
            k0..k1,
            reuse,
            s,
        );
        c0 += crows;
    }
}

/// The column panels `panel0..panel1` of a job.
#[derive(Clone, Copy)]
struct Cols {
    panel0: usize,
    panel1: usize,
}

/// Rows `i0..i0 + rows` of a job (one chunk) over `ks`, a run of whole
/// accumulation blocks (the last one possibly short). With `reuse`, the
/// scratch buffers already hold the packed and expanded second operand for
/// these panels and the whole of `ks` (from the job's previous chunk).
///
/// Each block is summed from `+0.0` in the accumulator tiles; at its end
/// the tiles are added into the running totals (`tot`, from `+0.0`, in
/// block order) or, for a split `k`, stored as that block's sums.
#[allow(clippy::too_many_arguments)]
fn run_rows<K: LutKernel>(
    kern: &K,
    x: &View,
    y: &View,
    table: &Table,
    sink: Sink,
    p: &Plan,
    i0: usize,
    rows: usize,
    cols: Cols,
    ks: Range<usize>,
    reuse: bool,
    s: &mut Scratch,
) {
    let n = y.cols;
    let mr = K::MR;
    let bits = table.bits;
    let mpanels = rows.div_ceil(mr);
    let Cols { panel0, panel1 } = cols;
    let tile = mr * NR;
    let tiles = Tiles {
        i0,
        rows,
        panel0,
        panel1,
        mpanels,
        mr,
        n,
    };
    let Scratch {
        acc: acc_buf,
        tot: tot_buf,
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
    let mut bufs = Buffers { px, py, v };
    // Over one block (k <= ACC_BLOCK, the common case) the block sum is the
    // total: `+0.0 + s` is `s` bit for bit (a block sum is never `-0.0`, and
    // a NaN sum is already quiet), so it is written as it is. Over several,
    // the totals start at +0.0 and take the block sums in order.
    let several = matches!(sink, Sink::Out(_)) && ks.len() > ACC_BLOCK;
    let tot = aligned(tot_buf, if several { acc.len() } else { 0 });
    tot.fill(0.0);
    let mut b0 = ks.start;
    while b0 < ks.end {
        let b1 = ((b0 / ACC_BLOCK + 1) * ACC_BLOCK).min(ks.end);
        if b0 > ks.start {
            acc.fill(0.0);
        }
        run_block(kern, x, y, table, p, &tiles, b0..b1, reuse, acc, &mut bufs);
        match sink {
            Sink::Out(_) if several => {
                for (t, a) in tot.iter_mut().zip(acc.iter()) {
                    *t += *a;
                }
            }
            Sink::Out(_) => {}
            Sink::Blocks(sums) => tiles.for_each(acc, |i, j, v| {
                // SAFETY: block `b0 / ACC_BLOCK`, row `i` and column `j` are
                // inside the buffer and belong to this job only.
                unsafe { *sums.ptr.add(((b0 / ACC_BLOCK) * sums.m + i) * sums.n + j) = v }
            }),
        }
        b0 = b1;
    }
    if let Sink::Out(out) = sink {
        let sums: &[f32] = if several { tot } else { acc };
        // SAFETY: (i, j) is inside C and belongs to this job only.
        tiles.for_each(sums, |i, j, v| unsafe { out.write(i, j, v) });
    }
}

/// The output elements of a chunk's accumulator tiles.
#[derive(Clone, Copy)]
struct Tiles {
    i0: usize,
    rows: usize,
    panel0: usize,
    panel1: usize,
    mpanels: usize,
    mr: usize,
    n: usize,
}

impl Tiles {
    /// Call `f(i, j, value)` for every live element of the tiles `acc`.
    fn for_each(&self, acc: &[f32], mut f: impl FnMut(usize, usize, f32)) {
        let tile = self.mr * NR;
        for panel in self.panel0..self.panel1 {
            let j0 = panel * NR;
            for mp in 0..self.mpanels {
                let t0 = ((panel - self.panel0) * self.mpanels + mp) * tile;
                for r in 0..self.mr.min(self.rows - mp * self.mr) {
                    for jj in 0..NR.min(self.n - j0) {
                        f(self.i0 + mp * self.mr + r, j0 + jj, acc[t0 + r * NR + jj]);
                    }
                }
            }
        }
    }
}

/// The packing and expansion buffers of a chunk.
struct Buffers<'a> {
    px: &'a mut PackedX,
    py: &'a mut [PackedY; 2],
    v: &'a mut [f32],
}

/// Add the products of `ks` (inside one accumulation block) to the
/// accumulator tiles `acc` of a chunk.
#[allow(clippy::too_many_arguments)]
fn run_block<K: LutKernel>(
    kern: &K,
    x: &View,
    y: &View,
    table: &Table,
    p: &Plan,
    tiles: &Tiles,
    ks: Range<usize>,
    reuse: bool,
    acc: &mut [f32],
    bufs: &mut Buffers,
) {
    let Tiles {
        i0,
        rows,
        panel0,
        panel1,
        mpanels,
        mr,
        n,
    } = *tiles;
    let Buffers { px, py, v } = bufs;
    let bits = table.bits;
    let tile = mr * NR;
    let group = if p.strategy == Strategy::Expand { 2 } else { 1 };
    let vsz = p.kc << (bits + 4);
    // X is packed for `xc` values of k at a time (a multiple of `kc`), so
    // that it is read along its rows even when the expansion block is short.
    let xc = p.kc * (p.xblock / p.kc).max(1);
    let mut x0 = ks.start;
    while x0 < ks.end {
        let xlen = xc.min(ks.end - x0);
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
}

/// A `len`-float window of `buf` that starts on a 64-byte boundary (the
/// buffer grows as needed and is reused across calls).
pub(super) fn aligned(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len + NR {
        buf.resize(len + NR, 0.0);
    }
    let start = buf.as_ptr().align_offset(64).min(NR);
    &mut buf[start..start + len]
}

/// The exact fallback: one reference product per element, added in
/// increasing `k` to the tile's running sums (`ks` lies inside one
/// accumulation block, like every k-block of the loop nest).
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::engine::test_rng;
    use crate::gemm::{gemm_reference, MatMut, MatRef};
    use crate::{Lut, Multiplier};

    /// Mitchell's product on truncated fractions (see the integration
    /// tests' `support::mitchell`), skewed by the first operand so that a
    /// swapped operand order would show.
    fn model(a: f32, b: f32, bits: u32) -> f32 {
        let s = (a - 1.0) + (b - 1.0);
        let q = if s < 1.0 { 1.0 + s } else { 2.0 * s } * (1.0 - (a - 1.0) / 64.0);
        let q = q.max(1.0);
        f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
    }

    /// Normal values of moderate exponent; with `special`, a few NaNs,
    /// infinities, zeros, subnormals and extreme exponents; and, in every
    /// third row, a run of zeros over a whole accumulation block (the
    /// dead-block skip).
    fn operand(rng: &mut ChaCha8Rng, rows: usize, cols: usize, special: bool) -> Vec<f32> {
        let mut v: Vec<f32> = (0..rows * cols)
            .map(|_| {
                let e = if special && rng.gen_bool(0.002) {
                    match rng.gen_range(0..5) {
                        0 => return f32::NAN,
                        1 => return f32::NEG_INFINITY,
                        2 => return -0.0,
                        3 => return 1e-40,
                        _ => rng.gen_range(1..=10u32),
                    }
                } else {
                    rng.gen_range(117..=137u32)
                };
                let sign = if rng.gen() { 0x8000_0000u32 } else { 0 };
                f32::from_bits(sign | (e << 23) | (rng.gen::<u32>() & 0x007f_ffff))
            })
            .collect();
        for r in (0..rows).step_by(3) {
            let lo = (ACC_BLOCK + 7).min(cols);
            let hi = (2 * ACC_BLOCK + 7).min(cols);
            v[r * cols + lo..r * cols + hi].fill(0.0);
        }
        v
    }

    /// Every strategy, split of k (1 to 4 jobs along k), expansion block
    /// (dividing ACC_BLOCK or not) and kernel set, forced rather than
    /// planned, at 1 to 3 threads: the blocked reference, bit for bit.
    #[test]
    fn forced_plans_match_blocked_reference_bit_exactly() {
        let mut rng = test_rng();
        let (m, n) = (29, 37);
        for (bits, k, special) in [
            (3, 3 * ACC_BLOCK + 5, false),
            (7, 2 * ACC_BLOCK + 1, true),
            (10, 2 * ACC_BLOCK, false),
            (7, ACC_BLOCK - 3, true),
        ] {
            let lut = Arc::new(Lut::build("skewed", model, bits).unwrap());
            let lay = super::super::layouts(&lut);
            let table = Table {
                entries: lut.table(),
                entries_t: &lay.padded_t,
                bits,
                swapped: false,
            };
            let xs = operand(&mut rng, m, k, special);
            let ys = operand(&mut rng, k, n, special);
            let x = MatRef::row_major(&xs, m, k).unwrap();
            // The second operand stored by columns.
            let y = MatRef::new(&ys, k, n, 1, k).unwrap();
            let mut want = vec![0.0f32; m * n];
            let mult = Multiplier::Lut(lut.clone());
            gemm_reference(
                &mult,
                x,
                y,
                MatMut::row_major(&mut want, m, n).unwrap(),
                false,
            )
            .unwrap();
            let blocks = k.div_ceil(ACC_BLOCK);
            for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
                let mr = kernel_mr(isa);
                for strategy in [Strategy::Expand, Strategy::Direct] {
                    for k_jobs in 1..=blocks.min(4) {
                        let blocks_per_job = blocks.div_ceil(k_jobs);
                        let kjob = (blocks_per_job * ACC_BLOCK).min(k);
                        let kcs: &[usize] = match strategy {
                            Strategy::Expand => &[8, 1000],
                            Strategy::Direct => &[256],
                        };
                        for &kc in kcs {
                            let plan = Plan {
                                mc: m.div_ceil(2).div_ceil(mr) * mr,
                                row_jobs: m.div_ceil(m.div_ceil(2).div_ceil(mr) * mr),
                                panels_per_job: 2,
                                col_jobs: n.div_ceil(NR).div_ceil(2),
                                blocks_per_job,
                                k_jobs: blocks.div_ceil(blocks_per_job),
                                kc: kc.min(kjob),
                                strategy,
                                // Several chunks per job (one for the
                                // wide table, whose expansion is long).
                                chunk: if bits < 10 { mr } else { 4 * mr },
                                xblock: 60,
                                cost: 0.0,
                            };
                            {
                                let threads = 1 + (k_jobs + kc) % 3;
                                let mut got = vec![f32::NAN; m * n];
                                let out = OutPtr {
                                    ptr: got.as_mut_ptr(),
                                    rs: n,
                                    cs: 1,
                                    accumulate: false,
                                };
                                let xv = View::of(&x);
                                let yv = View::of(&y);
                                rayon::ThreadPoolBuilder::new()
                                    .num_threads(threads)
                                    .build()
                                    .unwrap()
                                    .install(|| run_isa(isa, xv, yv, &table, out, &plan));
                                for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                                    assert!(
                                        (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits(),
                                        "{bits} bits, k {k}, {isa:?}, {strategy:?}, {k_jobs} k-jobs, \
                                         kc {kc}, {threads} threads: element {idx} is {g:e}, \
                                         reference {w:e}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The planner splits k for a weight-gradient shape on several threads
    /// (and never on one), and only where the block sums stay small.
    #[test]
    fn planner_splits_long_k_of_small_outputs() {
        // ResNet-20's first stage at batch 128: 144 x 16 over 131072.
        let p = plan(144, 16, 131_072, 7, 12, 2);
        assert!(p.k_jobs >= 2, "k_jobs {}", p.k_jobs);
        assert_eq!(p.k_jobs * p.blocks_per_job, 128);
        assert_eq!(plan(144, 16, 131_072, 7, 12, 1).k_jobs, 1);
        // A short k is one block: nothing to split.
        assert_eq!(plan(16, 16, 1024, 7, 12, 4).k_jobs, 1);
        // Too many block sums to keep.
        assert_eq!(plan(1024, 1024, 65_536, 7, 12, 4).k_jobs, 1);
    }
}
