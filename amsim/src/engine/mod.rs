//! The fast CPU GEMM engine behind [`crate::gemm::gemm`].
//!
//! Native `fp32` and `bf16` go to an optimised SGEMM (`native`); `direct`
//! is a parallel loop over the model. AMSim (`Lut`) products use the
//! *expansion* method, bit-exact with [`crate::gemm::gemm_reference`]:
//!
//! Every normal operand is split once into a power-of-two scale
//! `s = ±2^(e-127)` and a table index `t` (the top `m` fraction bits), so that
//! the AMSim product is `s_a * s_b * L[t_a][t_b]` (DESIGN.md, "The
//! arithmetic", step 5). For a block of `k` and a panel of 16 columns of the
//! second operand, `V[k][t][j] = L[t][t_b(k, j)] * s_b(k, j)` is tabulated once
//! for every possible first-operand index `t` (`2^m` rows). A row of the
//! output then accumulates `acc[j] = fma(s_a(i, k), V[k][t_a(i, k)][j],
//! acc[j])`: an ordinary broadcast FMA. While the product exponent stays in
//! the normal range, `s_a * V` is exact (a power of two times a float), so the
//! fused add rounds once, exactly like the reference's `acc + product`.
//! Accumulators run over one accumulation block of
//! [`ACC_BLOCK`](crate::accumulate::ACC_BLOCK) values of `k` at a time,
//! starting from `+0.0`, and the block sums are added in block order from
//! `+0.0`, as the reference's [`BlockedSum`](crate::accumulate::BlockedSum).
//! Zero and subnormal operands get scale `0`: their product is `±0`, and
//! adding `±0` never changes an accumulator that started at `+0.0` (it can
//! never become `-0.0` under round-to-nearest). Blocks holding NaN or
//! infinite operands, or exponents whose products could overflow or flush to
//! zero, take an exact per-product fallback (`ExpRange::fused_ok`).
//!
//! The expansion costs about `2^m * k * n / 16` vector rows and is shared by
//! all the rows of a job, so it is cheap for narrow tables and the dominant
//! cost for `m >= 10` (its rows are built from contiguous rows of the
//! transposed table, transposed in registers). Where `2^m` is large compared
//! with the rows that would share an expansion, each product is looked up
//! directly instead (`L[t_a][t_b] * s_b` by gather) with the same exact FMA.
//! The orientation (`C = A·B`, or `Cᵀ = Bᵀ Aᵀ` with the transposed table),
//! the strategy (expansion or direct lookups) and the cut of the output into
//! jobs are chosen together by a cost model (`loops::plan`): expansion rows,
//! kernel rows, gathers, packing, the adding up of block sums and the jobs
//! of the busiest thread. Small outputs over a long `k` (a convolution's
//! weight gradient) are cut along `k` at accumulation-block boundaries, so
//! that every thread has work without expanding the same panels twice, and
//! narrow outputs use whichever operand fills the vector lanes better.
//!
//! Layout: `loops` is the one loop nest (blocks of output rows x column
//! panels x runs of accumulation blocks, in parallel with rayon), `pack`
//! splits and packs operands, `kernel` holds the micro-kernel trait and the
//! portable kernel, `x86` the AVX-512 and AVX2 kernels, chosen once at run
//! time ([`Isa::detect`]).

mod kernel;
mod loops;
pub(crate) mod native;
mod pack;
pub(crate) mod planes;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86::transpose16;

use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::gemm::{MatMut, MatRef};
use crate::product::{compose, special, Split};
use crate::Lut;

/// Columns of a panel of the second operand: one AVX-512 register of f32.
pub(crate) const NR: usize = 16;

/// The instruction set whose micro-kernels the AMSim engine uses (see
/// [`crate::gemm::gemm_lut_with_isa`] to pick one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F (16 lanes, gathers and permutes).
    Avx512,
    /// AVX2 + FMA (8 lanes, gathers).
    Avx2,
    /// Plain Rust, for any target.
    Portable,
}

impl Isa {
    /// The best instruction set this CPU supports (detected once).
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(best_isa)
    }
}

#[cfg(target_arch = "x86_64")]
fn best_isa() -> Isa {
    if is_x86_feature_detected!("avx512f") {
        Isa::Avx512
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Isa::Avx2
    } else {
        Isa::Portable
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn best_isa() -> Isa {
    Isa::Portable
}

/// A read-only strided view inside the engine (a transpose is a stride
/// swap). Indices are validated by [`MatRef::new`].
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    pub fn of(m: &MatRef<'a>) -> Self {
        View {
            data: m.data(),
            rows: m.rows(),
            cols: m.cols(),
            rs: m.row_stride(),
            cs: m.col_stride(),
        }
    }

    pub fn t(self) -> Self {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// A table in the orientation the engine uses: `entries[(tx << bits) | ty]`
/// is the value for first engine operand `x` and second `y`. When the engine
/// works on the transposed problem (`swapped`), `x` is the user's second
/// operand and `entries` is the transpose of the user's table.
pub(crate) struct Table<'a> {
    pub entries: &'a [f32],
    /// The transpose of `entries` with padded rows:
    /// `entries_t[ty * padded_stride(bits) + tx]`.
    pub entries_t: &'a [f32],
    pub bits: u32,
    pub swapped: bool,
}

impl Table<'_> {
    /// The AMSim product of engine operands `x` and `y` (the scalar
    /// reference, with the IEEE product of special operands taken in the
    /// user's order so that NaN payloads match too).
    #[inline]
    pub fn mul(&self, x: f32, y: f32) -> f32 {
        let (sx, sy) = (Split::of(x), Split::of(y));
        let sp = if self.swapped {
            special(sy, sx, y, x)
        } else {
            special(sx, sy, x, y)
        };
        if let Some(r) = sp {
            return r;
        }
        let idx = (sx.index(self.bits) << self.bits) | sy.index(self.bits);
        compose(
            sx.sign ^ sy.sign,
            self.entries[idx as usize],
            sx.exp,
            sy.exp,
        )
    }
}

/// The biased exponents of the normal operands of a block, and whether it
/// holds a NaN or an infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExpRange {
    pub min: u32,
    pub max: u32,
    pub special: bool,
}

impl ExpRange {
    /// No operand seen yet.
    pub const EMPTY: ExpRange = ExpRange {
        min: 255,
        max: 0,
        special: false,
    };
}

impl Default for ExpRange {
    fn default() -> Self {
        ExpRange::EMPTY
    }
}

impl ExpRange {
    #[cfg(test)]
    pub fn add(&mut self, exp: u32) {
        if exp == 255 {
            self.special = true;
        } else if exp != 0 {
            self.min = self.min.min(exp);
            self.max = self.max.max(exp);
        }
    }

    /// Whether the second operand's block can be expanded: `L * s_b` stays
    /// finite (`L < 4`, so its exponent is at most `e_b + 1 - 127 <= 127`).
    #[inline]
    pub fn expandable(&self) -> bool {
        !self.special && self.max <= 253
    }

    /// Whether every product of an `x` in `self` and a `y` in `y` is a
    /// normal float computed exactly by the fused path: no NaN or infinity,
    /// and `e = e_L + e_x + e_y - 254` in `1..=254` for `e_L` in `{127, 128}`
    /// (`L` in [1, 4)), so nothing overflows or flushes to zero.
    #[inline]
    pub fn fused_ok(&self, y: &ExpRange) -> bool {
        if self.special || !y.expandable() {
            return false;
        }
        if self.max == 0 || y.max == 0 {
            // One side is all zeros or subnormals: every product is a zero.
            return true;
        }
        self.min + y.min >= 128 && self.max + y.max <= 380
    }
}

/// Floats of padding after each row of a table read along its rows by the
/// expansion: rows of `2^m` floats (a multiple of 4 KiB for `m >= 10`) would
/// otherwise all fall in the same L1 sets, and the 16 rows read together
/// would evict each other.
pub(crate) const ROW_PAD: usize = 16;

/// Distance between rows of a padded table (`Table::entries_t`).
#[inline]
pub(crate) fn padded_stride(bits: u32) -> usize {
    (1usize << bits) + ROW_PAD
}

/// The layouts of a table that the engine reads besides the table itself.
struct Layouts {
    /// The transpose, `n x n` (the table of the transposed problem).
    transposed: Vec<f32>,
    /// The transpose with padded rows (what the expansion reads).
    padded_t: Vec<f32>,
    /// The table with padded rows (the expansion of the transposed problem).
    padded: Vec<f32>,
}

/// The extra layouts of `lut`, cached per table.
fn layouts(lut: &Arc<Lut>) -> Arc<Layouts> {
    type Entry = (Weak<Lut>, Arc<Layouts>);
    static CACHE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|(w, _)| w.strong_count() > 0);
    if let Some((_, t)) = cache
        .iter()
        .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(lut)))
    {
        return t.clone();
    }
    let n = 1usize << lut.bits();
    let st = padded_stride(lut.bits());
    let src = lut.table();
    let mut transposed = vec![0.0f32; n * n];
    let mut padded_t = vec![0.0f32; n * st];
    let mut padded = vec![0.0f32; n * st];
    for i in 0..n {
        for j in 0..n {
            transposed[j * n + i] = src[i * n + j];
            padded_t[j * st + i] = src[i * n + j];
            padded[i * st + j] = src[i * n + j];
        }
    }
    let t = Arc::new(Layouts {
        transposed,
        padded_t,
        padded,
    });
    cache.push((Arc::downgrade(lut), t.clone()));
    t
}

/// Whether distinct `(i, j)` of a `rows x cols` view with these strides are
/// distinct elements (a sufficient test: the larger stride steps over the
/// whole extent of the smaller one).
pub(crate) fn is_injective(rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows <= 1 || cols <= 1 {
        return (rows <= 1 || rs > 0) && (cols <= 1 || cs > 0);
    }
    let ((s1, n1), s2) = if rs <= cs {
        ((rs, rows), cs)
    } else {
        ((cs, cols), rs)
    };
    s1 > 0 && s2 >= s1 * n1
}

/// Where a job writes its finished block: `out[i * rs + j * cs]`, set to the
/// block's sums, or to `old + sum` with `accumulate`.
#[derive(Clone, Copy)]
pub(crate) struct OutPtr {
    ptr: *mut f32,
    rs: usize,
    cs: usize,
    accumulate: bool,
}

// SAFETY: jobs write disjoint elements of an injective view (checked by
// `lut_gemm` before any job starts), so sharing the pointer is sound.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Write the sum `v` to element `(i, j)`.
    ///
    /// # Safety
    /// `(i, j)` is inside the view the pointer was made from, and no other
    /// thread accesses that element.
    #[inline]
    pub unsafe fn write(&self, i: usize, j: usize, v: f32) {
        let p = self.ptr.add(i * self.rs + j * self.cs);
        *p = if self.accumulate { *p + v } else { v };
    }
}

/// `C = A·B (+ C)` through `lut`, bit-exact with the reference, with the
/// kernels of [`Isa::detect`]. Shapes are already checked.
pub(crate) fn lut_gemm(lut: &Arc<Lut>, a: MatRef, b: MatRef, mut c: MatMut, accumulate: bool) {
    lut_gemm_isa(Isa::detect(), lut, a, b, c.reborrow(), accumulate)
}

/// [`lut_gemm`] planned for, and run on, the calling thread alone.
///
/// For callers that already run many products side by side (the items of
/// a batched GEMM, see [`crate::batched::gemm_batched`]): cutting each small
/// product into jobs for every thread of the pool would pack its first
/// operand and expand its second once per job, while the other threads are
/// busy with other items anyway. The sums are the same at any thread count.
pub(crate) fn lut_gemm_single_thread(
    lut: &Arc<Lut>,
    a: MatRef,
    b: MatRef,
    mut c: MatMut,
    accumulate: bool,
) {
    lut_gemm_threads(Isa::detect(), lut, a, b, c.reborrow(), accumulate, 1)
}

/// [`lut_gemm`] with an explicit instruction set (falls back to the portable
/// kernels when the CPU lacks `isa`).
pub(crate) fn lut_gemm_isa(
    isa: Isa,
    lut: &Arc<Lut>,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    lut_gemm_threads(isa, lut, a, b, c, accumulate, threads)
}

/// [`lut_gemm_isa`] with the work cut for `threads` threads (1: one job, run
/// on the calling thread).
fn lut_gemm_threads(
    isa: Isa,
    lut: &Arc<Lut>,
    a: MatRef,
    b: MatRef,
    mut c: MatMut,
    accumulate: bool,
    threads: usize,
) {
    let (m, n) = (c.rows(), c.cols());
    if m == 0 || n == 0 {
        return;
    }
    let (rs, cs) = (c.row_stride(), c.col_stride());
    if !is_injective(m, n, rs, cs) {
        // Elements of C alias: compute into a dense block, then write it in
        // the reference's (i, j) order so that later writes win as there.
        let mut dense = vec![0.0f32; m * n];
        let out = OutPtr {
            ptr: dense.as_mut_ptr(),
            rs: n,
            cs: 1,
            accumulate: false,
        };
        run_oriented(isa, lut, a, b, m, n, out, threads);
        for i in 0..m {
            for j in 0..n {
                let o = c.at_mut(i, j);
                *o = if accumulate {
                    *o + dense[i * n + j]
                } else {
                    dense[i * n + j]
                };
            }
        }
        return;
    }
    let out = OutPtr {
        ptr: c.data_mut().as_mut_ptr(),
        rs,
        cs,
        accumulate,
    };
    run_oriented(isa, lut, a, b, m, n, out, threads);
}

/// Pick the orientation (`C = A·B`, or `Cᵀ = Bᵀ Aᵀ` with the transposed
/// table) and the cut of the work over `threads` threads whose estimated
/// cost is the lower, and run the loop nest.
#[allow(clippy::too_many_arguments)]
fn run_oriented(
    isa: Isa,
    lut: &Arc<Lut>,
    a: MatRef,
    b: MatRef,
    m: usize,
    n: usize,
    out: OutPtr,
    threads: usize,
) {
    let bits = lut.bits();
    let lay = layouts(lut);
    let k = a.cols();
    let mr = loops::kernel_mr(isa);
    let plain = loops::plan(m, n, k, bits, mr, threads);
    let swapped = loops::plan(n, m, k, bits, mr, threads);
    if plain.cost <= swapped.cost {
        let table = Table {
            entries: lut.table(),
            entries_t: &lay.padded_t,
            bits,
            swapped: false,
        };
        loops::run_isa(isa, View::of(&a), View::of(&b), &table, out, &plain);
    } else {
        // C^T = B^T A^T with the transposed table: L^T[tb][ta] = L[ta][tb].
        let table = Table {
            entries: &lay.transposed,
            entries_t: &lay.padded,
            bits,
            swapped: true,
        };
        let out_t = OutPtr {
            rs: out.cs,
            cs: out.rs,
            ..out
        };
        loops::run_isa(
            isa,
            View::of(&b).t(),
            View::of(&a).t(),
            &table,
            out_t,
            &swapped,
        );
    }
}

/// A generator seeded with [`crate::test_seed`].
#[cfg(test)]
pub(crate) fn test_rng() -> rand_chacha::ChaCha8Rng {
    use rand::SeedableRng;
    rand_chacha::ChaCha8Rng::seed_from_u64(crate::test_seed("engine"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused-path conditions must exclude exactly the products the
    /// reference flushes or overflows (checked on the boundary exponents).
    #[test]
    fn fused_range_matches_compose_boundaries() {
        for ex in 1..=254u32 {
            for ey in 1..=253u32 {
                let mut rx = ExpRange::EMPTY;
                rx.add(ex);
                let mut ry = ExpRange::EMPTY;
                ry.add(ey);
                if rx.fused_ok(&ry) {
                    for l in [1.0f32, 3.999_999_8] {
                        let p = compose(0, l, ex, ey);
                        assert!(p.is_normal(), "ex {ex} ey {ey} l {l} gives {p}");
                        let exact =
                            l as f64 * 2f64.powi(ex as i32 - 127) * 2f64.powi(ey as i32 - 127);
                        assert_eq!(p as f64, exact);
                    }
                }
            }
        }
    }

    #[test]
    fn injectivity_test_accepts_dense_and_rejects_overlap() {
        assert!(is_injective(3, 4, 4, 1));
        assert!(is_injective(3, 4, 1, 3));
        assert!(!is_injective(3, 3, 2, 1));
        assert!(is_injective(1, 5, 0, 1));
        assert!(!is_injective(2, 1, 0, 7));
    }
}
