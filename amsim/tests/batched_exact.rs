//! Batched GEMM against `gemm_reference` slice by slice: bit-exact for
//! AMSim multipliers over random strides (row-major, transposed, shared
//! operands), with and without accumulation; and every slice that would
//! leave its buffer, or output slices that overlap, rejected before any
//! work.

mod support;

use std::sync::Arc;

use amsim::batched::{gemm_batched, gemm_batched_reference, BatchedMut, BatchedRef};
use amsim::gemm::{gemm_reference, MatMut, MatRef};
use amsim::{Lut, Multiplier};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{skewed_truncated, test_rng};

fn values(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| rng.gen_range(-2.0f32..2.0) * 2f32.powi(rng.gen_range(-4..4)))
        .collect()
}

/// A stack of `batch` `rows x cols` matrices in a random layout: row- or
/// column-major slices, padded strides, or (when `may_share`) one matrix
/// shared by every slice. Returns the buffer and the strides.
fn random_layout(
    rng: &mut ChaCha8Rng,
    batch: usize,
    rows: usize,
    cols: usize,
    may_share: bool,
) -> (Vec<f32>, usize, usize, usize) {
    let pad = rng.gen_range(0..3);
    let (rs, cs) = if rng.gen_bool(0.5) {
        (cols + pad, 1)
    } else {
        (1, rows + pad)
    };
    let span = (rows - 1) * rs + (cols - 1) * cs + 1;
    let bs = if may_share && rng.gen_range(0..4) == 0 {
        0
    } else {
        span + rng.gen_range(0..4)
    };
    let len = (batch - 1) * bs + span + rng.gen_range(0..3);
    (values(rng, len), bs, rs, cs)
}

#[test]
fn batched_gemm_matches_per_slice_reference_bit_exactly() {
    let mut rng = test_rng();
    let mults = [
        Multiplier::Lut(Arc::new(Lut::build("skewed", skewed_truncated, 7).unwrap())),
        Multiplier::Lut(Arc::new(Lut::build("skewed", skewed_truncated, 3).unwrap())),
        Multiplier::Direct {
            name: "skewed".into(),
            func: skewed_truncated,
            bits: 15,
        },
    ];
    for case in 0..60 {
        let mult = &mults[case % mults.len()];
        let batch = rng.gen_range(1..=6);
        let (m, n, k) = (
            rng.gen_range(1..=9),
            rng.gen_range(1..=9),
            rng.gen_range(1..=17),
        );
        let (a_buf, abs, ars, acs) = random_layout(&mut rng, batch, m, k, true);
        let (b_buf, bbs, brs, bcs) = random_layout(&mut rng, batch, k, n, true);
        let (c_init, cbs, crs, ccs) = random_layout(&mut rng, batch, m, n, false);
        let accumulate = rng.gen_bool(0.5);

        let a = BatchedRef::new(&a_buf, batch, m, k, abs, ars, acs).unwrap();
        let b = BatchedRef::new(&b_buf, batch, k, n, bbs, brs, bcs).unwrap();
        let mut got = c_init.clone();
        let c = BatchedMut::new(&mut got, batch, m, n, cbs, crs, ccs).unwrap();
        gemm_batched(mult, a, b, c, accumulate).unwrap();

        // The definition: each slice through gemm_reference on its own.
        let mut want = c_init.clone();
        for i in 0..batch {
            let ai = MatRef::new(&a_buf[i * abs..], m, k, ars, acs).unwrap();
            let bi = MatRef::new(&b_buf[i * bbs..], k, n, brs, bcs).unwrap();
            let ci = MatMut::new(&mut want[i * cbs..], m, n, crs, ccs).unwrap();
            gemm_reference(mult, ai, bi, ci, accumulate).unwrap();
        }
        for (j, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{mult}, batch {batch}, {m}x{k}x{n}, accumulate {accumulate}: element {j} is {g:e}, per-slice reference gives {w:e}"
            );
        }

        // The batched reference is the same definition.
        let mut again = c_init.clone();
        let c = BatchedMut::new(&mut again, batch, m, n, cbs, crs, ccs).unwrap();
        gemm_batched_reference(mult, a, b, c, accumulate).unwrap();
        assert!(again
            .iter()
            .zip(&want)
            .all(|(x, y)| x.to_bits() == y.to_bits()));
    }
}

#[test]
fn long_slices_match_blocked_reference_bit_exactly() {
    // Slices whose dot products span several accumulation blocks (1024
    // terms), both as many small items run one per thread and as a few
    // items each cut into jobs (k split at block boundaries), at 1 to 3
    // threads.
    let mut rng = test_rng();
    let mult = Multiplier::Lut(Arc::new(Lut::build("skewed", skewed_truncated, 7).unwrap()));
    for threads in 1..=3 {
        for batch in [1, 2 * threads + 1] {
            let (m, n) = (rng.gen_range(1..=20), rng.gen_range(1..=20));
            let k = rng.gen_range(1025..=3 * 1024 + 5);
            let (a_buf, abs, ars, acs) = random_layout(&mut rng, batch, m, k, true);
            let (b_buf, bbs, brs, bcs) = random_layout(&mut rng, batch, k, n, true);
            let (c_init, cbs, crs, ccs) = random_layout(&mut rng, batch, m, n, false);
            let accumulate = rng.gen_bool(0.5);
            let a = BatchedRef::new(&a_buf, batch, m, k, abs, ars, acs).unwrap();
            let b = BatchedRef::new(&b_buf, batch, k, n, bbs, brs, bcs).unwrap();
            let mut want = c_init.clone();
            let c = BatchedMut::new(&mut want, batch, m, n, cbs, crs, ccs).unwrap();
            gemm_batched_reference(&mult, a, b, c, accumulate).unwrap();
            let mut got = c_init.clone();
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| {
                    let c = BatchedMut::new(&mut got, batch, m, n, cbs, crs, ccs).unwrap();
                    gemm_batched(&mult, a, b, c, accumulate).unwrap()
                });
            for (j, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{threads} threads, batch {batch}, {m}x{k}x{n}, accumulate {accumulate}: element {j} is {g:e}, reference {w:e}"
                );
            }
        }
    }
}

#[test]
fn attention_scores_through_transposed_view_match_reference() {
    // S[b] = Q[b]·K[b]ᵀ on [batch*heads, T, d] tensors, K transposed by its
    // strides only; the query is the first operand.
    let mut rng = test_rng();
    let mult = Multiplier::Lut(Arc::new(Lut::build("skewed", skewed_truncated, 6).unwrap()));
    let (bh, t, d) = (5, 7, 4);
    let q = values(&mut rng, bh * t * d);
    let k = values(&mut rng, bh * t * d);
    let mut s = vec![0.0f32; bh * t * t];
    gemm_batched(
        &mult,
        BatchedRef::row_major(&q, bh, t, d).unwrap(),
        BatchedRef::row_major(&k, bh, t, d).unwrap().t(),
        BatchedMut::row_major(&mut s, bh, t, t).unwrap(),
        false,
    )
    .unwrap();
    for b in 0..bh {
        for i in 0..t {
            for j in 0..t {
                let mut acc = 0.0f32;
                for p in 0..d {
                    acc += mult.mul(q[(b * t + i) * d + p], k[(b * t + j) * d + p]);
                }
                assert_eq!(s[(b * t + i) * t + j].to_bits(), acc.to_bits());
            }
        }
    }
}

#[test]
fn slices_outside_their_buffer_or_overlapping_outputs_are_errors() {
    let mult = Multiplier::Fp32;
    let buf = vec![1.0f32; 24];
    // 3 slices of 2x4, 8 apart: exactly 24 elements.
    assert!(BatchedRef::new(&buf, 3, 2, 4, 8, 4, 1).is_ok());
    // A fourth slice would leave the buffer.
    let err = BatchedRef::new(&buf, 4, 2, 4, 8, 4, 1).unwrap_err();
    assert!(err.to_string().contains("need 32 elements"), "{err}");
    // A transposed slice with a too-long stride.
    assert!(BatchedRef::new(&buf, 1, 4, 2, 0, 1, 23).is_err());
    // Overlapping output slices are refused; shared input slices are fine.
    let mut out = vec![0.0f32; 24];
    let err = BatchedMut::new(&mut out, 3, 2, 4, 4, 4, 1).unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
    assert!(BatchedRef::new(&buf, 3, 2, 4, 0, 4, 1).is_ok());
    // Aliasing inside one output slice.
    assert!(BatchedMut::new(&mut out, 2, 2, 2, 8, 1, 1).is_err());

    // Mismatched batch sizes or inner dimensions leave C untouched.
    let a = BatchedRef::row_major(&buf, 3, 2, 4).unwrap();
    let b2 = BatchedRef::row_major(&buf[..16], 2, 4, 2).unwrap();
    let mut c = vec![7.0f32; 12];
    let cm = BatchedMut::row_major(&mut c, 3, 2, 2).unwrap();
    assert!(gemm_batched(&mult, a, b2, cm, false).is_err());
    let b3 = BatchedRef::row_major(&buf, 3, 2, 4).unwrap();
    let cm = BatchedMut::row_major(&mut c, 3, 2, 2).unwrap();
    assert!(gemm_batched(&mult, a, b3, cm, false).is_err());
    assert!(c.iter().all(|&v| v == 7.0));
}

#[test]
fn empty_batches_and_empty_dot_products_follow_the_definition() {
    let mult = Multiplier::Lut(Arc::new(Lut::build("skewed", skewed_truncated, 5).unwrap()));
    // No slices: nothing is read or written.
    let mut c = vec![3.0f32; 4];
    gemm_batched(
        &mult,
        BatchedRef::row_major(&[], 0, 2, 3).unwrap(),
        BatchedRef::row_major(&[], 0, 3, 2).unwrap(),
        BatchedMut::row_major(&mut c, 0, 2, 2).unwrap(),
        false,
    )
    .unwrap();
    assert_eq!(c, [3.0; 4]);
    // k = 0: every element is the empty sum +0.0, or C unchanged when
    // accumulating.
    let mut c = vec![3.0f32; 8];
    let run = |c: &mut [f32], accumulate| {
        gemm_batched(
            &mult,
            BatchedRef::row_major(&[], 2, 2, 0).unwrap(),
            BatchedRef::row_major(&[], 2, 0, 2).unwrap(),
            BatchedMut::row_major(c, 2, 2, 2).unwrap(),
            accumulate,
        )
        .unwrap()
    };
    run(&mut c, true);
    assert_eq!(c, [3.0; 8]);
    run(&mut c, false);
    assert!(c.iter().all(|v| v.to_bits() == 0), "{c:?}");
}
