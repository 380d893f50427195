//! Criterion benches of the three convolution products (forward, input
//! gradient, weight gradient) on LeNet-5 and ResNet-20 layer shapes at
//! batch 32, native FP32 against a 7-bit table (`mbm:7`).
//!
//! Run with `cargo bench --bench conv`; filter with e.g.
//! `cargo bench --bench conv -- resnet20-layer1`.

use std::hint::black_box;
use std::time::Duration;

use amsim::bench::named_conv_shape;
use amsim::conv::{conv2d_forward, conv2d_grad_input, conv2d_grad_weight};
use amsim::spec::Resolver;
use amsim::{Lut, Multiplier, MultiplierSpec};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BATCH: usize = 32;
const SHAPES: &[&str] = &[
    "lenet5-conv1",
    "lenet5-conv2",
    "resnet20-layer1",
    "resnet20-layer2",
    "resnet20-layer3",
];

/// Exact product of operands truncated to `bits` fraction bits: stands in
/// for `mbm` when the C models are not compiled in (a table lookup costs the
/// same whatever its contents).
fn truncated_exact(a: f32, b: f32, bits: u32) -> f32 {
    let mask = !((1u32 << (23 - bits)) - 1);
    f32::from_bits(a.to_bits() & mask) * f32::from_bits(b.to_bits() & mask)
}

/// The 7-bit table: `mbm:7` from the registry, or the stand-in.
fn lut7() -> Multiplier {
    let spec: MultiplierSpec = "mbm:7".parse().expect("valid spec");
    Resolver::new(approxtrain::models::MODELS)
        .resolve(&spec)
        .unwrap_or_else(|e| {
            eprintln!("note: {e}; timing a 7-bit truncated-exact table instead");
            Multiplier::Lut(std::sync::Arc::new(
                Lut::build("truncated_exact", truncated_exact, 7).expect("valid model"),
            ))
        })
}

fn random(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn conv_products(c: &mut Criterion) {
    let mults = [Multiplier::Fp32, lut7()];
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for name in SHAPES {
        let s = named_conv_shape(name, BATCH).expect("known shape");
        let x = random(&mut rng, s.x_len());
        let w = random(&mut rng, s.w_len());
        let dy = random(&mut rng, s.y_len());
        let mut y = vec![0.0f32; s.y_len()];
        let mut dx = vec![0.0f32; s.x_len()];
        let mut dw = vec![0.0f32; s.w_len()];
        let mut group = c.benchmark_group(format!("conv/{name}"));
        group
            .throughput(Throughput::Elements(s.macs()))
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for m in &mults {
            let label = m.label();
            group.bench_function(BenchmarkId::new("forward", &label), |b| {
                b.iter(|| conv2d_forward(m, &s, black_box(&x), black_box(&w), &mut y).unwrap())
            });
            group.bench_function(BenchmarkId::new("grad_input", &label), |b| {
                b.iter(|| conv2d_grad_input(m, &s, black_box(&dy), black_box(&w), &mut dx).unwrap())
            });
            group.bench_function(BenchmarkId::new("grad_weight", &label), |b| {
                b.iter(|| {
                    conv2d_grad_weight(m, &s, black_box(&x), black_box(&dy), &mut dw).unwrap()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, conv_products);
criterion_main!(benches);
