//! End to end on real data: LeNet-300-100 learns the MNIST subset shipped in
//! the repository (`data-subset/mnist`), exactly and through an approximate
//! multiplier.

mod support;

use std::path::PathBuf;

use amsim::{Multiplier, MultiplierPlan};
use nets::data::{load_mnist_like, Split};
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::LrSchedule;
use nets::train::Trainer;
use nets::Network;
use support::{mitchell_lut, test_seed};

fn subset_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data-subset/mnist")
}

#[test]
fn lenet300100_learns_the_shipped_mnist_subset_exactly_and_approximately() {
    let seed = test_seed("lenet300100_learns_the_shipped_mnist_subset");
    let train = load_mnist_like(&subset_dir(), Split::Train, Some(3000)).unwrap();
    let test = load_mnist_like(&subset_dir(), Split::Test, None).unwrap();
    let lut = mitchell_lut(7);
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
