//! Helpers shared by the `experiments` integration tests: the printed test
//! seed and a tiny MNIST run specification.
//!
//! A test file includes it with `mod support;` (a file in a subdirectory of
//! `tests/` is not a test crate of its own).
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use experiments::RunSpec;

/// A seed for a test's random inputs: [`amsim::test_seed`] (printed, and
/// replayed with `$APPROXTRAIN_TEST_SEED`).
pub fn test_seed() -> u64 {
    amsim::test_seed("this test")
}

/// The shared datasets folder (`$APPROXTRAIN_SHARED_DATA`, else
/// `../shared/datasets` next to the workspace) when it holds MNIST. Without
/// it the loader falls back to the shipped subset, but only when no data
/// directory is named.
pub fn mnist_data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("APPROXTRAIN_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"));
    dir.join("mnist").is_dir().then_some(dir)
}

/// LeNet-300-100 on 200 MNIST training and 100 test images in batches of
/// 40, for `epochs`, from `seed`.
pub fn tiny_mnist_spec(seed: u64, epochs: usize) -> RunSpec {
    let mut spec = RunSpec::with_defaults("lenet300100", "mnist");
    spec.data_dir = mnist_data_dir();
    spec.epochs = epochs;
    spec.batch_size = 40;
    spec.train_limit = Some(200);
    spec.test_limit = Some(100);
    spec.seed = seed;
    spec
}
