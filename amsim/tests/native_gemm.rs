//! Native `fp32` / `bf16` GEMM on long dot products (the weight-gradient
//! shapes whose `k` is split into ranges) and across thread counts: within
//! a rounding bound of the reference, and the same bits at 1, 2 and 3
//! threads for every layout.
//!
//! Inputs are random with a fresh seed, printed; set `APPROXTRAIN_TEST_SEED`
//! to replay a run.

mod support;

use amsim::gemm::{gemm, gemm_reference, MatMut, MatRef};
use amsim::Multiplier;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::test_rng;

/// A dense `rows x cols` matrix of values in [-1, 1), row- or column-major
/// at random. Returns (buffer, row stride, col stride).
fn matrix(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> (Vec<f32>, usize, usize) {
    let data = (0..rows * cols)
        .map(|_| rng.gen_range(-1.0f32..1.0))
        .collect();
    if rng.gen() {
        (data, cols.max(1), 1)
    } else {
        (data, 1, rows.max(1))
    }
}

/// Shapes `(m, n, k)`: weight gradients of ResNet-20 and LeNet-5 (cut down
/// in `k`), products just past a range length (a short last range) and at
/// the largest split output, and products left whole (large output, short
/// `k`).
const SHAPES: [(usize, usize, usize); 9] = [
    (144, 16, 40_000),
    (27, 16, 30_001),
    (25, 6, 50_000),
    (576, 64, 3_000),
    (256, 256, 2_049),
    (10, 10, 1_025),
    (300, 300, 5_000),
    (128, 300, 784),
    (1, 7, 9_000),
];

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// One product at `threads` threads, C dense in the given order, starting
/// from `c0` (added to with `accumulate`).
#[allow(clippy::too_many_arguments)]
fn run(
    threads: usize,
    mult: &Multiplier,
    (a, ars, acs): &(Vec<f32>, usize, usize),
    (b, brs, bcs): &(Vec<f32>, usize, usize),
    (m, n, k): (usize, usize, usize),
    c_by_cols: bool,
    c0: &[f32],
    accumulate: bool,
) -> Vec<f32> {
    let mut c = c0.to_vec();
    let (crs, ccs) = if c_by_cols { (1, m) } else { (n, 1) };
    pool(threads).install(|| {
        gemm(
            mult,
            MatRef::new(a, m, k, *ars, *acs).unwrap(),
            MatRef::new(b, k, n, *brs, *bcs).unwrap(),
            MatMut::new(&mut c, m, n, crs, ccs).unwrap(),
            accumulate,
        )
        .unwrap()
    });
    c
}

#[test]
fn native_gemm_gives_the_same_bits_at_1_2_and_3_threads() {
    let mut rng = test_rng();
    for mult in [Multiplier::Fp32, Multiplier::Bf16] {
        for (m, n, k) in SHAPES {
            let a = matrix(&mut rng, m, k);
            let b = matrix(&mut rng, k, n);
            let c_by_cols = rng.gen();
            let accumulate = rng.gen();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let one = run(1, &mult, &a, &b, (m, n, k), c_by_cols, &c0, accumulate);
            for threads in [2, 3] {
                let got = run(
                    threads,
                    &mult,
                    &a,
                    &b,
                    (m, n, k),
                    c_by_cols,
                    &c0,
                    accumulate,
                );
                for (idx, (g, w)) in got.iter().zip(&one).enumerate() {
                    assert_eq!(
                        g.to_bits(),
                        w.to_bits(),
                        "{mult} {m}x{k}x{n} (A strides ({}, {}), B ({}, {}), C by columns \
                         {c_by_cols}, accumulate {accumulate}): element {idx} is {g:e} at \
                         {threads} threads, {w:e} at 1",
                        a.1,
                        a.2,
                        b.1,
                        b.2
                    );
                }
            }
        }
    }
}

/// Each element within `4 (k + 1) eps` of the sum of the absolute products
/// (plus the old value) from the reference, as for short products in
/// `gemm_exact.rs`, with `k` long enough to be split.
#[test]
fn long_native_products_are_within_rounding_of_reference() {
    let mut rng = test_rng();
    for mult in [Multiplier::Fp32, Multiplier::Bf16] {
        for (m, n, k) in [(144, 16, 20_000), (7, 5, 70_000), (64, 40, 2_500)] {
            let a = matrix(&mut rng, m, k);
            let b = matrix(&mut rng, k, n);
            let accumulate = rng.gen();
            let c_by_cols = rng.gen();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let got = run(2, &mult, &a, &b, (m, n, k), c_by_cols, &c0, accumulate);
            let (crs, ccs) = if c_by_cols { (1, m) } else { (n, 1) };
            let av = MatRef::new(&a.0, m, k, a.1, a.2).unwrap();
            let bv = MatRef::new(&b.0, k, n, b.1, b.2).unwrap();
            let mut want = c0.clone();
            gemm_reference(
                &mult,
                av,
                bv,
                MatMut::new(&mut want, m, n, crs, ccs).unwrap(),
                accumulate,
            )
            .unwrap();
            for i in 0..m {
                for j in 0..n {
                    let e = i * crs + j * ccs;
                    let mag: f32 = (0..k)
                        .map(|p| mult.mul(av.at(i, p), bv.at(p, j)).abs())
                        .sum::<f32>()
                        + if accumulate { c0[e].abs() } else { 0.0 };
                    let tol = 4.0 * (k as f32 + 1.0) * f32::EPSILON * mag;
                    assert!(
                        (got[e] - want[e]).abs() <= tol,
                        "{mult} {m}x{k}x{n} at ({i},{j}): {} vs reference {} (tolerance {tol})",
                        got[e],
                        want[e]
                    );
                }
            }
        }
    }
}
