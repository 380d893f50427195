//! The fast GEMM engine against the scalar reference: bit-exact for AMSim
//! tables of every width, at 1 to 3 threads, with every kernel set, for
//! random shapes, strided and transposed views and special values, and for
//! dot products longer than one accumulation block; native `fp32` / `bf16`
//! within a rounding bound.
//!
//! Inputs are random with a fresh seed, printed; set `APPROXTRAIN_TEST_SEED`
//! to replay a run.

mod support;

use std::sync::Arc;

use amsim::accumulate::ACC_BLOCK;
use amsim::engine::Isa;
use amsim::gemm::{gemm, gemm_lut_with_isa, gemm_reference, MatMut, MatRef};
use amsim::{Lut, Multiplier};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{mitchell, same_bits, skewed, test_rng};

/// A value for an operand: mostly normal values of moderate exponent, with
/// NaN, infinities, signed zeros, subnormals and extreme exponents sprinkled
/// in at rate `special`.
fn value(rng: &mut ChaCha8Rng, special: f64) -> f32 {
    if rng.gen_bool(special) {
        let frac = rng.gen::<u32>() & 0x007f_ffff;
        let sign = if rng.gen() { 0x8000_0000u32 } else { 0 };
        let bits = match rng.gen_range(0..8) {
            0 => 0x7fc0_0000 | frac,
            1 => 0x7f80_0000,
            2 => 0,
            3 => frac.max(1),
            4 => (rng.gen_range(245..=254u32) << 23) | frac,
            5 => (rng.gen_range(1..=12u32) << 23) | frac,
            6 => (rng.gen_range(60..=80u32) << 23) | frac,
            _ => (rng.gen_range(170..=190u32) << 23) | frac,
        };
        f32::from_bits(sign | bits)
    } else {
        let e = rng.gen_range(117..=137u32);
        let sign = if rng.gen() { 0x8000_0000u32 } else { 0 };
        f32::from_bits(sign | (e << 23) | (rng.gen::<u32>() & 0x007f_ffff))
    }
}

/// A `rows x cols` matrix in a random layout: row-major, column-major
/// (a transposed view), or either with padding between rows/columns.
/// Returns (buffer, row stride, col stride).
fn matrix(
    rng: &mut ChaCha8Rng,
    rows: usize,
    cols: usize,
    special: f64,
) -> (Vec<f32>, usize, usize) {
    let pad = if rng.gen_bool(0.3) {
        rng.gen_range(1..4)
    } else {
        0
    };
    let (rs, cs) = if rng.gen() {
        (cols + pad, 1)
    } else {
        (1, rows + pad)
    };
    let len = if rows == 0 || cols == 0 {
        rng.gen_range(0..3)
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1 + rng.gen_range(0..3)
    };
    let data = (0..len).map(|_| value(rng, special)).collect();
    (data, rs, cs)
}

fn dim(rng: &mut ChaCha8Rng, max: usize) -> usize {
    match rng.gen_range(0..10) {
        0 => 1,
        1 => rng.gen_range(0..3),
        2 => rng.gen_range(15..=17),
        _ => rng.gen_range(1..=max),
    }
}

/// Run one random case through `run` and the reference; panic with the case
/// on the first differing element.
fn check_case(
    rng: &mut ChaCha8Rng,
    mult: &Multiplier,
    (m, n, k): (usize, usize, usize),
    special: f64,
    run: &dyn Fn(MatRef, MatRef, MatMut, bool),
) {
    let (a, ars, acs) = matrix(rng, m, k, special);
    let (b, brs, bcs) = matrix(rng, k, n, special);
    let accumulate = rng.gen();
    // C is dense in either order, or (rarely) a view whose elements alias.
    let (crs, ccs, clen) = match rng.gen_range(0..8) {
        0 if n > 2 && m > 1 => (n - 1, 1, m * n),
        1..=3 => (1, m.max(1), m * n),
        _ => (n.max(1), 1, m * n),
    };
    let c0: Vec<f32> = (0..clen).map(|_| value(rng, special)).collect();
    let av = MatRef::new(&a, m, k, ars, acs).unwrap();
    let bv = MatRef::new(&b, k, n, brs, bcs).unwrap();
    let mut want = c0.clone();
    gemm_reference(
        mult,
        av,
        bv,
        MatMut::new(&mut want, m, n, crs, ccs).unwrap(),
        accumulate,
    )
    .unwrap();
    let mut got = c0.clone();
    run(
        av,
        bv,
        MatMut::new(&mut got, m, n, crs, ccs).unwrap(),
        accumulate,
    );
    for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            same_bits(*g, *w),
            "{mult}: {m}x{k} by {k}x{n}, strides A ({ars},{acs}) B ({brs},{bcs}) C ({crs},{ccs}), \
             accumulate {accumulate}: element {idx} is {g:e} ({:#010x}), reference {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

fn luts() -> Vec<Arc<Lut>> {
    let mut out = Vec::new();
    for bits in 1..=amsim::MAX_LUT_BITS {
        out.push(Arc::new(Lut::build("mitchell", mitchell, bits).unwrap()));
        out.push(Arc::new(Lut::build("skewed", skewed, bits).unwrap()));
    }
    out
}

#[test]
fn lut_gemm_matches_reference_bit_exactly() {
    let mut rng = test_rng();
    for lut in luts() {
        let mult = Multiplier::Lut(lut.clone());
        for threads in [1, 2] {
            pool(threads).install(|| {
                for case in 0..12 {
                    let special = [0.0, 0.002, 0.05, 0.3][case % 4];
                    let shape = (dim(&mut rng, 70), dim(&mut rng, 40), dim(&mut rng, 90));
                    check_case(&mut rng, &mult, shape, special, &|a, b, c, acc| {
                        gemm(&mult, a, b, c, acc).unwrap()
                    });
                }
            });
        }
    }
}

#[test]
fn lut_gemm_large_blocks_match_reference_bit_exactly() {
    // Shapes with several jobs, k-blocks and both orientations (n > m makes
    // the engine work on the transposed problem with the transposed table).
    let mut rng = test_rng();
    for lut in luts()
        .into_iter()
        .filter(|l| [2, 5, 7, 8, 10].contains(&l.bits()))
    {
        let mult = Multiplier::Lut(lut.clone());
        for (threads, shape) in [(2, (300, 50, 530)), (1, (40, 260, 150)), (2, (2500, 20, 9))] {
            pool(threads).install(|| {
                check_case(&mut rng, &mult, shape, 0.0005, &|a, b, c, acc| {
                    gemm(&mult, a, b, c, acc).unwrap()
                })
            });
        }
    }
}

#[test]
fn wide_tables_in_multi_chunk_jobs_match_reference_bit_exactly() {
    // From 9 bits on, one expansion serves row chunks of 2^bits rows or more:
    // jobs of several chunks, chunks capped at the job's rows, and the
    // transposed orientation (n > m).
    let mut rng = test_rng();
    for lut in luts().into_iter().filter(|l| l.bits() >= 9) {
        let mult = Multiplier::Lut(lut.clone());
        for (threads, shape) in [
            (2, (1100, 40, 70)),
            (1, (2200, 17, 30)),
            (2, (50, 1500, 40)),
            (2, (2100, 64, 9)),
        ] {
            pool(threads).install(|| {
                check_case(&mut rng, &mult, shape, 0.0005, &|a, b, c, acc| {
                    gemm(&mult, a, b, c, acc).unwrap()
                })
            });
        }
    }
}

#[test]
fn every_kernel_set_matches_reference_bit_exactly() {
    let mut rng = test_rng();
    for lut in luts() {
        let mult = Multiplier::Lut(lut.clone());
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            pool(2).install(|| {
                for special in [0.0, 0.01] {
                    let shape = (dim(&mut rng, 60), dim(&mut rng, 40), dim(&mut rng, 50));
                    check_case(&mut rng, &mult, shape, special, &|a, b, c, acc| {
                        gemm_lut_with_isa(isa, &lut, a, b, c, acc).unwrap()
                    });
                }
            });
        }
    }
}

/// Lengths of `k` around the accumulation blocks (`ACC_BLOCK = 1024`):
/// one block exactly, one term either side of it, two blocks, a short last
/// block; then random lengths up to about five blocks.
fn long_ks(rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut ks = vec![
        ACC_BLOCK - 1,
        ACC_BLOCK,
        ACC_BLOCK + 1,
        2 * ACC_BLOCK,
        2 * ACC_BLOCK + 1,
        3 * ACC_BLOCK + 5,
    ];
    ks.extend((0..3).map(|_| rng.gen_range(ACC_BLOCK + 2..5 * ACC_BLOCK)));
    ks
}

#[test]
fn long_dot_products_match_blocked_reference_bit_exactly() {
    // Small outputs over a long k are what the engine splits across threads
    // at block boundaries; larger ones are cut by rows or columns. Every
    // kernel set, 1 to 3 threads, special values mixed in.
    let mut rng = test_rng();
    let tables: Vec<Arc<Lut>> = luts()
        .into_iter()
        .filter(|l| [2, 7, 10].contains(&l.bits()))
        .collect();
    for (case, k) in long_ks(&mut rng).into_iter().enumerate() {
        for threads in 1..=3 {
            for (i, isa) in [Isa::Avx512, Isa::Avx2, Isa::Portable]
                .into_iter()
                .enumerate()
            {
                let lut = &tables[(case + threads + i) % tables.len()];
                let mult = Multiplier::Lut(lut.clone());
                let shape = match (case + i) % 3 {
                    0 => (rng.gen_range(1..=12), rng.gen_range(1..=12), k),
                    1 => (rng.gen_range(1..=40), rng.gen_range(1..=20), k),
                    _ => (rng.gen_range(40..=70), rng.gen_range(1..=6), k),
                };
                let special = [0.0, 0.001, 0.02][(case + threads) % 3];
                pool(threads).install(|| {
                    check_case(&mut rng, &mult, shape, special, &|a, b, c, acc| {
                        gemm_lut_with_isa(isa, lut, a, b, c, acc).unwrap()
                    })
                });
            }
        }
    }
}

#[test]
fn long_dot_products_are_blocked_not_sequential() {
    // 1.0 followed by terms of 2^-25, each below half an ulp of 1: a plain
    // sequential sum never moves off 1.0, the blocked sum collects them in
    // the blocks after the first (exactly 2^-15 a full block). With
    // Mitchell's table the products are the operands' exact products (their
    // fractions are 0).
    let lut = Arc::new(Lut::build("mitchell", mitchell, 7).unwrap());
    let mult = Multiplier::Lut(lut.clone());
    let k = 3 * ACC_BLOCK + 5;
    let (m, n) = (3, 20);
    let tiny = 2f32.powi(-25);
    let mut a = vec![tiny; m * k];
    for i in 0..m {
        a[i * k] = 1.0;
    }
    let b = vec![1.0f32; k * n];
    let av = MatRef::row_major(&a, m, k).unwrap();
    let bv = MatRef::row_major(&b, k, n).unwrap();
    let mut want = vec![0.0f32; m * n];
    gemm_reference(
        &mult,
        av,
        bv,
        MatMut::row_major(&mut want, m, n).unwrap(),
        false,
    )
    .unwrap();
    let sum = |ks: std::ops::Range<usize>| ks.fold(0.0f32, |s, p| s + mult.mul(a[p], b[p * n]));
    assert_eq!(sum(0..k), 1.0, "the plain sequential sum");
    // Block sums 1.0, 2^-15, 2^-15 and 5 * 2^-25, added in order from +0.0.
    let blocked = [0..1024, 1024..2048, 2048..3072, 3072..k]
        .into_iter()
        .fold(0.0f32, |t, ks| t + sum(ks));
    assert_eq!(blocked, 1.0 + 2f32.powi(-14) + 2f32.powi(-23));
    assert!(want.iter().all(|&w| w == blocked), "reference {want:?}");
    for threads in 1..=3 {
        for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
            let mut got = vec![f32::NAN; m * n];
            pool(threads).install(|| {
                gemm_lut_with_isa(
                    isa,
                    &lut,
                    av,
                    bv,
                    MatMut::row_major(&mut got, m, n).unwrap(),
                    false,
                )
                .unwrap()
            });
            assert!(
                got.iter().all(|&g| g == blocked),
                "{isa:?} at {threads} threads: {got:?}"
            );
        }
    }
}

#[test]
fn direct_gemm_matches_reference_bit_exactly() {
    let mut rng = test_rng();
    for bits in [3, 7, 23] {
        let mult = Multiplier::Direct {
            name: "skewed".into(),
            func: skewed,
            bits,
        };
        pool(2).install(|| {
            for special in [0.0, 0.05] {
                let shape = (dim(&mut rng, 30), dim(&mut rng, 30), dim(&mut rng, 30));
                check_case(&mut rng, &mult, shape, special, &|a, b, c, acc| {
                    gemm(&mult, a, b, c, acc).unwrap()
                });
            }
            // Several accumulation blocks.
            let k = rng.gen_range(2 * ACC_BLOCK..3 * ACC_BLOCK);
            check_case(&mut rng, &mult, (3, 4, k), 0.01, &|a, b, c, acc| {
                gemm(&mult, a, b, c, acc).unwrap()
            });
        });
    }
}

/// Native paths: each element within `4 k eps` of the sum of the absolute
/// products (plus the old value), the usual forward bound for a dot product.
#[test]
fn native_gemm_is_within_rounding_of_reference() {
    let mut rng = test_rng();
    for mult in [Multiplier::Fp32, Multiplier::Bf16] {
        for threads in [1, 2] {
            pool(threads).install(|| {
                for _ in 0..20 {
                    let (m, n, k) = (dim(&mut rng, 80), dim(&mut rng, 80), dim(&mut rng, 200));
                    let (a, ars, acs) = matrix(&mut rng, m, k, 0.0);
                    let (b, brs, bcs) = matrix(&mut rng, k, n, 0.0);
                    let accumulate = rng.gen();
                    let c0: Vec<f32> = (0..m * n).map(|_| value(&mut rng, 0.0)).collect();
                    let av = MatRef::new(&a, m, k, ars, acs).unwrap();
                    let bv = MatRef::new(&b, k, n, brs, bcs).unwrap();
                    let mut want = c0.clone();
                    gemm_reference(&mult, av, bv, MatMut::new(&mut want, m, n, n.max(1), 1).unwrap(), accumulate)
                        .unwrap();
                    let mut got = c0.clone();
                    gemm(&mult, av, bv, MatMut::new(&mut got, m, n, n.max(1), 1).unwrap(), accumulate).unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let mag: f32 = (0..k).map(|p| mult.mul(av.at(i, p), bv.at(p, j)).abs()).sum::<f32>()
                                + if accumulate { c0[i * n + j].abs() } else { 0.0 };
                            let tol = 4.0 * (k as f32 + 1.0) * f32::EPSILON * mag;
                            let (g, w) = (got[i * n + j], want[i * n + j]);
                            assert!(
                                (g - w).abs() <= tol,
                                "{mult} {m}x{k}x{n} at ({i},{j}): {g} vs reference {w} (tolerance {tol})"
                            );
                        }
                    }
                }
            });
        }
    }
}

#[test]
fn mismatched_shapes_are_errors() {
    let a = vec![1.0f32; 6];
    let b = vec![1.0f32; 6];
    let mut c = vec![0.0f32; 4];
    for mult in [
        Multiplier::Fp32,
        Multiplier::Bf16,
        Multiplier::Lut(Arc::new(Lut::build("m", mitchell, 4).unwrap())),
    ] {
        let av = MatRef::row_major(&a, 2, 3).unwrap();
        let bv = MatRef::row_major(&b, 2, 3).unwrap();
        let err = gemm(
            &mult,
            av,
            bv,
            MatMut::row_major(&mut c, 2, 2).unwrap(),
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("cannot multiply 2x3 by 2x3"),
            "{err}"
        );
        assert_eq!(c, vec![0.0; 4], "no work before the error");
    }
}
