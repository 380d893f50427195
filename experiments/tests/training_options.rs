//! The training options added for the ResNets, through the library on tiny
//! MNIST runs (the shared copy when present, else the shipped subset):
//! `decay_bn_bias` and `label_smoothing` change a run exactly when they
//! should. Seeds are fresh (or `$APPROXTRAIN_TEST_SEED`) and printed.

mod support;

use experiments::run::{train, RunOutcome, Silent, StartMode};
use experiments::{MetricsRow, RunSpec};
use support::{test_seed, tiny_mnist_spec};

/// Train/test loss and accuracy of each epoch.
fn run(spec: &RunSpec) -> Vec<[f32; 4]> {
    let tmp = tempfile::tempdir().unwrap();
    match train(spec, tmp.path(), StartMode::New, &[], &mut Silent).unwrap() {
        RunOutcome::Finished(s) => s
            .rows
            .iter()
            .map(|r: &MetricsRow| [r.train_loss, r.train_accuracy, r.test_loss, r.test_accuracy])
            .collect(),
        other => panic!("expected a finished run, got {other:?}"),
    }
}

/// Decaying biases changes nothing without weight decay, and changes the
/// run with it (LeNet-300-100's biases are otherwise not decayed).
#[test]
fn decay_bn_bias_matters_exactly_when_there_is_weight_decay() {
    let seed = test_seed();
    let mut base = tiny_mnist_spec(seed, 2);
    base.optimizer.weight_decay = 0.0;
    let mut with = base.clone();
    with.optimizer.decay_bn_bias = true;
    assert_eq!(run(&base), run(&with));
    base.optimizer.weight_decay = 0.05;
    with.optimizer.weight_decay = 0.05;
    assert_ne!(run(&base), run(&with));
}

/// ε = 0 is the plain run; ε = 0.2 changes the run, and its training loss
/// (the smoothed one, `(1-ε)·CE + ε·mean_j(-log p_j)`) is above the plain
/// one once the label is the likeliest class, since the other classes'
/// `-log p_j` are then larger than the label's.
#[test]
fn label_smoothing_changes_the_training_loss_only_when_nonzero() {
    let seed = test_seed();
    let base = tiny_mnist_spec(seed, 2);
    let mut zero = base.clone();
    zero.label_smoothing = 0.0;
    let plain = run(&base);
    assert_eq!(plain, run(&zero));
    let mut smooth = base.clone();
    smooth.label_smoothing = 0.2;
    let smoothed = run(&smooth);
    assert_ne!(plain, smoothed);
    assert!(
        smoothed[1][0] > plain[1][0],
        "smoothed training loss {} not above the plain {}",
        smoothed[1][0],
        plain[1][0]
    );
}
