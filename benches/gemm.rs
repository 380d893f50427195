//! Criterion benches of `amsim::gemm::gemm`: square products for every
//! multiplier kind (native FP32 and bf16, 7- and 10-bit tables, and the
//! direct model loop at the smallest size), and the GEMM shapes that
//! convolution and dense layers lower to at batch 32 / 128.
//!
//! Run with `cargo bench --bench gemm`; filter with e.g.
//! `cargo bench --bench gemm -- square/1024`. Threads come from rayon
//! (`RAYON_NUM_THREADS`).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use amsim::gemm::{gemm, MatMut, MatRef};
use amsim::{Lut, Multiplier};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mitchell's logarithmic multiplier (Mitchell 1962), truncated to `bits`
/// fraction bits: a table lookup costs the same whatever the model, so any
/// valid model measures the engine.
fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let s = (a - 1.0) + (b - 1.0);
    let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
    f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
}

fn lut(bits: u32) -> Multiplier {
    Multiplier::Lut(Arc::new(
        Lut::build("mitchell", mitchell, bits).expect("valid model"),
    ))
}

fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-2.0f32..2.0)).collect()
}

/// Time `C = A·B` for row-major operands of the given shape.
fn bench_shape(
    c: &mut Criterion,
    group: &str,
    name: &str,
    (m, n, k): (usize, usize, usize),
    mults: &[Multiplier],
) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let a = random(&mut rng, m * k);
    let b = random(&mut rng, k * n);
    let mut out = vec![0.0f32; m * n];
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements((m * n * k) as u64));
    if m * n * k >= 1 << 28 {
        g.sample_size(10).measurement_time(Duration::from_secs(10));
    }
    for mult in mults {
        g.bench_with_input(BenchmarkId::new(mult.label(), name), &(), |bench, _| {
            bench.iter(|| {
                let av = MatRef::row_major(&a, m, k).unwrap();
                let bv = MatRef::row_major(&b, k, n).unwrap();
                let cv = MatMut::row_major(&mut out, m, n).unwrap();
                gemm(mult, black_box(av), black_box(bv), cv, false).unwrap();
            })
        });
    }
    g.finish();
}

fn square(c: &mut Criterion) {
    let kinds = [Multiplier::Fp32, Multiplier::Bf16, lut(7), lut(10)];
    for size in [256, 512, 1024] {
        bench_shape(c, "square", &size.to_string(), (size, size, size), &kinds);
    }
    let direct = Multiplier::Direct {
        name: "mitchell".into(),
        func: mitchell,
        bits: 7,
    };
    bench_shape(c, "square", "256", (256, 256, 256), &[direct]);
}

/// GEMMs of lowered layers: M = batch x output pixels, N = output channels,
/// K = input channels x kernel area (forward products).
fn layers(c: &mut Criterion) {
    let kinds = [Multiplier::Fp32, Multiplier::Bf16, lut(7), lut(10)];
    let shapes = [
        ("lenet5-conv1", (32 * 28 * 28, 6, 25)),
        ("lenet5-conv2", (32 * 10 * 10, 16, 6 * 25)),
        ("lenet300-fc1", (128, 300, 784)),
        ("lenet300-fc3", (128, 10, 100)),
        ("resnet20-layer1", (32 * 32 * 32, 16, 16 * 9)),
        ("resnet20-layer3", (32 * 8 * 8, 64, 64 * 9)),
    ];
    for (name, shape) in shapes {
        bench_shape(c, "layer", name, shape, &kinds);
    }
}

criterion_group!(benches, square, layers);
criterion_main!(benches);
