//! Criterion benches of the products of the default character-level
//! Transformer (width 128, 4 heads, context 128, batch 32, vocabulary 79)
//! through a 7-bit table against native FP32: the six batched attention
//! score products over `N·H = 128` heads, and the three products of the
//! tied output head.
//!
//! Run with `cargo bench -p amsim --bench transformer`; filter with e.g.
//! `cargo bench -p amsim --bench transformer -- attn-qk`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use amsim::batched::{gemm_batched, BatchedMut, BatchedRef};
use amsim::gemm::{gemm, MatMut, MatRef};
use amsim::{Lut, Multiplier};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Heads over the batch (`N·H`), context `T`, head width `d`.
const B: usize = 128;
const T: usize = 128;
const D: usize = 32;
/// Positions of a batch (`N·T`), width `C`, vocabulary `V`.
const NT: usize = 4096;
const C: usize = 128;
const V: usize = 79;

/// Exact product of operands truncated to `bits` fraction bits: a 7-bit
/// table costs the same to look up whatever its contents (amsim does not
/// link the C models).
fn truncated_exact(a: f32, b: f32, bits: u32) -> f32 {
    let mask = !((1u32 << (23 - bits)) - 1);
    f32::from_bits(a.to_bits() & mask) * f32::from_bits(b.to_bits() & mask)
}

fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn multipliers() -> [(&'static str, Multiplier); 2] {
    let lut = Lut::build("truncated_exact", truncated_exact, 7).expect("valid model");
    [
        ("fp32", Multiplier::Fp32),
        ("lut7", Multiplier::Lut(Arc::new(lut))),
    ]
}

/// One batched product: `(rows, cols)` of each operand as stored
/// (row-major `[B, rows, cols]`) and whether it is used transposed.
struct Batched {
    name: &'static str,
    a: (usize, usize, bool),
    b: (usize, usize, bool),
}

fn attention(c: &mut Criterion) {
    // As in nets/src/layers/attention.rs.
    let products = [
        Batched {
            name: "attn-qk",
            a: (T, D, false),
            b: (T, D, true),
        },
        Batched {
            name: "attn-av",
            a: (T, T, false),
            b: (T, D, false),
        },
        Batched {
            name: "attn-dA",
            a: (T, D, false),
            b: (T, D, true),
        },
        Batched {
            name: "attn-dV",
            a: (T, T, true),
            b: (T, D, false),
        },
        Batched {
            name: "attn-dQ",
            a: (T, T, false),
            b: (T, D, false),
        },
        Batched {
            name: "attn-dKt",
            a: (T, D, true),
            b: (T, T, false),
        },
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut g = c.benchmark_group("transformer");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for p in &products {
        let mut a = random(&mut rng, B * p.a.0 * p.a.1);
        let mut b = random(&mut rng, B * p.b.0 * p.b.1);
        // The [T, T] operands (attention weights A, score gradient dS) are
        // causal: zero above the diagonal, as the layer computes them.
        for (buf, (r, c, _)) in [(&mut a, p.a), (&mut b, p.b)] {
            if r == T && c == T {
                for (idx, v) in buf.iter_mut().enumerate() {
                    if idx % T > (idx / T) % T {
                        *v = 0.0;
                    }
                }
            }
        }
        let view = |data, (r, c, t): (usize, usize, bool)| {
            let v = BatchedRef::row_major(data, B, r, c).unwrap();
            if t {
                v.t()
            } else {
                v
            }
        };
        let (m, k) = (view(&a, p.a).rows(), view(&a, p.a).cols());
        let n = view(&b, p.b).cols();
        let mut out = vec![0.0f32; B * m * n];
        g.throughput(Throughput::Elements((B * m * n * k) as u64));
        for (kind, mult) in multipliers() {
            g.bench_function(BenchmarkId::new(p.name, kind), |bench| {
                bench.iter(|| {
                    let cv = BatchedMut::row_major(&mut out, B, m, n).unwrap();
                    gemm_batched(&mult, black_box(view(&a, p.a)), view(&b, p.b), cv, false)
                        .unwrap();
                })
            });
        }
    }
    g.finish();
}

fn head(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let h = random(&mut rng, NT * C);
    let e = random(&mut rng, V * C);
    let dlogits = random(&mut rng, NT * V);
    let mut g = c.benchmark_group("transformer");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    for (kind, mult) in multipliers() {
        // logits [NT, V] = h [NT, C] · Eᵀ [C, V]
        let mut y = vec![0.0f32; NT * V];
        g.bench_function(BenchmarkId::new("head-fwd", kind), |bench| {
            bench.iter(|| {
                let a = MatRef::row_major(&h, NT, C).unwrap();
                let b = MatRef::row_major(&e, V, C).unwrap().t();
                let cv = MatMut::row_major(&mut y, NT, V).unwrap();
                gemm(&mult, black_box(a), b, cv, false).unwrap();
            })
        });
        // dEᵀ [C, V] = hᵀ [C, NT] · dlogits [NT, V]
        let mut de = vec![0.0f32; C * V];
        g.bench_function(BenchmarkId::new("head-dw", kind), |bench| {
            bench.iter(|| {
                let a = MatRef::row_major(&h, NT, C).unwrap().t();
                let b = MatRef::row_major(&dlogits, NT, V).unwrap();
                let cv = MatMut::row_major(&mut de, C, V).unwrap();
                gemm(&mult, black_box(a), b, cv, false).unwrap();
            })
        });
        // dh [NT, C] = dlogits [NT, V] · E [V, C]
        let mut dh = vec![0.0f32; NT * C];
        g.bench_function(BenchmarkId::new("head-dx", kind), |bench| {
            bench.iter(|| {
                let a = MatRef::row_major(&dlogits, NT, V).unwrap();
                let b = MatRef::row_major(&e, V, C).unwrap();
                let cv = MatMut::row_major(&mut dh, NT, C).unwrap();
                gemm(&mult, black_box(a), b, cv, false).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, attention, head);
criterion_main!(benches);
