//! End to end on real data: LeNet-300-100 learns the MNIST subset shipped in
//! the repository (`data-subset/mnist`), exactly and through an approximate
//! multiplier.

use std::path::PathBuf;
use std::sync::Arc;

use amsim::{Lut, Multiplier, MultiplierPlan};
use nets::data::{load_mnist_like, Split};
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::LrSchedule;
use nets::train::Trainer;
use nets::Network;
use rand::Rng;

/// Mitchell's multiplier as DESIGN.md specifies it (see
/// `multiplier_plan.rs`).
fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u32 << bits) as f32;
    let xa = ((a - 1.0) * scale).floor() / scale;
    let xb = ((b - 1.0) * scale).floor() / scale;
    let s = xa + xb;
    let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
    f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
}

fn subset_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data-subset/mnist")
}

#[test]
fn lenet300100_learns_the_shipped_mnist_subset_exactly_and_approximately() {
    let seed = std::env::var("APPROXTRAIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen::<u64>());
    eprintln!("seed {seed} (set APPROXTRAIN_TEST_SEED to replay)");
    let train = load_mnist_like(&subset_dir(), Split::Train, Some(3000)).unwrap();
    let test = load_mnist_like(&subset_dir(), Split::Test, None).unwrap();
    let lut = Multiplier::Lut(Arc::new(Lut::build("mitchell", mitchell, 7).unwrap()));
    for plan in [
        MultiplierPlan::uniform(Multiplier::Fp32),
        MultiplierPlan::uniform(lut),
    ] {
        let label = plan.label();
        let net = Network::lenet300100(plan, seed);
        let opt = Optimizer::new(OptimizerConfig::sgd_momentum(0.9)).unwrap();
        let mut trainer = Trainer::new(net, opt, LrSchedule::constant(0.02), seed).unwrap();
        let before = trainer.evaluate(&test, 500).unwrap();
        let mut batches = 0;
        let stats = trainer
            .train_epoch(&train, 32, &mut |p| {
                batches += 1;
                assert_eq!(p.batch + 1, batches);
                assert_eq!(p.batches, 3000usize.div_ceil(32));
            })
            .unwrap();
        let after = trainer.evaluate(&test, 500).unwrap();
        eprintln!(
            "{label}: test accuracy {} -> {}, train loss {}",
            before.accuracy, after.accuracy, stats.loss
        );
        assert_eq!(batches, 3000usize.div_ceil(32));
        assert_eq!((stats.samples, after.samples), (3000, 1000));
        assert!(after.accuracy > 0.8, "{label}: accuracy {}", after.accuracy);
        assert!(
            after.loss < before.loss / 2.0,
            "{label}: loss {}",
            after.loss
        );
    }
}
