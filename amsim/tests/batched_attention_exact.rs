//! Batched GEMM with many slices per thread, where each slice of a table
//! product runs as one job on one thread (`gemm_batched` with at least
//! `ITEMS_PER_THREAD` slices per thread): bit-exact with
//! `gemm_batched_reference` on the six attention products (row-major and
//! transposed stacks, causal zeros above the diagonal), with special
//! values, in pools of 1 to 3 threads.

mod support;

use std::sync::Arc;

use amsim::batched::{
    gemm_batched, gemm_batched_reference, BatchedMut, BatchedRef, ITEMS_PER_THREAD,
};
use amsim::{Lut, Multiplier};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{same_bits, skewed_truncated, test_rng};

/// Mostly normal values of mixed magnitude; at rate `special` a zero, a
/// subnormal, an infinity, a NaN or a value near the ends of the range.
fn value(rng: &mut ChaCha8Rng, special: f64) -> f32 {
    if rng.gen_bool(special) {
        let frac = rng.gen_range(0..1u32 << 23);
        let sign = (rng.gen_range(0..2u32)) << 31;
        let bits = match rng.gen_range(0..5) {
            0 => 0,
            1 => frac.max(1),
            2 => 0x7f80_0000,
            3 => 0x7fc0_0000 | frac,
            _ => (rng.gen_range(250..=254u32) << 23) | frac,
        };
        f32::from_bits(sign | bits)
    } else {
        rng.gen_range(-2.0f32..2.0) * 2f32.powi(rng.gen_range(-6..6))
    }
}

#[test]
fn many_small_slices_match_reference_bit_exactly() {
    let mut rng = test_rng();
    let lut = Arc::new(Lut::build("skewed_truncated", skewed_truncated, 7).unwrap());
    let mult = Multiplier::Lut(lut);
    for case in 0..72 {
        let threads = 1 + case % 3;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let batch = ITEMS_PER_THREAD * threads + rng.gen_range(0..5);
        let t = rng.gen_range(1..=40);
        let d = rng.gen_range(1..=20);
        let special = [0.0, 0.0, 0.01, 0.2][case % 4];
        let accumulate = rng.gen_bool(0.5);
        // Stored shapes of A and B ([batch, rows, cols] row-major) and
        // whether each is used transposed: Q·Kᵀ, A·V, dYh·Vᵀ, Aᵀ·dYh,
        // dS·K, Qᵀ·dS.
        let (a_shape, b_shape) = match case % 6 {
            0 => ((t, d, false), (t, d, true)),
            1 => ((t, t, false), (t, d, false)),
            2 => ((t, d, false), (t, d, true)),
            3 => ((t, t, true), (t, d, false)),
            4 => ((t, t, false), (t, d, false)),
            _ => ((t, d, true), (t, t, false)),
        };
        let mut a_buf: Vec<f32> = (0..batch * a_shape.0 * a_shape.1)
            .map(|_| value(&mut rng, special))
            .collect();
        let mut b_buf: Vec<f32> = (0..batch * b_shape.0 * b_shape.1)
            .map(|_| value(&mut rng, special))
            .collect();
        // The [T, T] operands (A, dS) of a causal attention are zero above
        // the diagonal: whole blocks of zeros, which the engine skips.
        if rng.gen_bool(0.75) {
            for (buf, (r, c, _)) in [(&mut a_buf, a_shape), (&mut b_buf, b_shape)] {
                if r == t && c == t {
                    for (idx, v) in buf.iter_mut().enumerate() {
                        if idx % t > (idx / t) % t {
                            *v = 0.0;
                        }
                    }
                }
            }
        }
        let view = |data, (r, c, tr): (usize, usize, bool)| {
            let v = BatchedRef::row_major(data, batch, r, c).unwrap();
            if tr {
                v.t()
            } else {
                v
            }
        };
        let (a, b) = (view(&a_buf, a_shape), view(&b_buf, b_shape));
        let (m, n) = (a.rows(), b.cols());
        let c0: Vec<f32> = (0..batch * m * n).map(|_| value(&mut rng, 0.0)).collect();
        let mut got = c0.clone();
        pool.install(|| {
            let c = BatchedMut::row_major(&mut got, batch, m, n).unwrap();
            gemm_batched(&mult, a, b, c, accumulate).unwrap();
        });
        let mut want = c0;
        let c = BatchedMut::row_major(&mut want, batch, m, n).unwrap();
        gemm_batched_reference(&mult, a, b, c, accumulate).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                same_bits(*g, *w),
                "case {case}: {threads} threads, batch {batch}, {m}x{}x{n}, accumulate {accumulate}: element {i} is {g:e}, the reference gives {w:e}",
                a.cols()
            );
        }
    }
}
