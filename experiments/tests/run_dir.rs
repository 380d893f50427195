//! Run directories through the library: interruption and resume, the
//! checkpoint as the source of truth, and the start modes. Tiny runs on
//! MNIST (the shared copy when present, else the shipped subset), with a
//! plan on a lookup table of a Rust Mitchell model so the products are
//! AMSim's. Seeds are fresh (or `$APPROXTRAIN_TEST_SEED`) and printed.

mod support;

use std::ops::ControlFlow;

use amsim::ModelInfo;
use experiments::metrics::read_metrics;
use experiments::run::{train, RunDir, RunObserver, RunOutcome, Silent, StartMode};
use experiments::{MetricsRow, RunFile, RunSpec, RunStatus};
use support::{test_seed, tiny_mnist_spec};

/// Mitchell's logarithmic multiplier (J. N. Mitchell, "Computer
/// multiplication and division using binary logarithms", IRE Trans.
/// Electronic Computers, 1962) on `bits`-bit truncated fractions:
/// S = xa + xb; 1 + S if S < 1, else 2S.
fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u32 << bits) as f32;
    let frac = |x: f32| ((x - 1.0) * scale).floor() / scale;
    let s = frac(a) + frac(b);
    if s < 1.0 {
        1.0 + s
    } else {
        2.0 * s
    }
}

static MODELS: &[ModelInfo] = &[ModelInfo {
    name: "mitchellrs",
    description: "Mitchell logarithmic multiplier (test copy)",
    min_bits: 1,
    max_bits: 11,
    area_um2: 0.0,
    power_mw: 0.0,
    delay_ns: 0.0,
    func: mitchell,
}];

fn small_spec(seed: u64) -> RunSpec {
    let mut spec = tiny_mnist_spec(seed, 3);
    spec.multiplier = "fwd=mitchellrs:7,dx=mitchellrs:7,dw=bf16".into();
    spec
}

fn without_seconds(rows: &[MetricsRow]) -> Vec<MetricsRow> {
    rows.iter()
        .map(|r| MetricsRow {
            seconds: 0.0,
            ..r.clone()
        })
        .collect()
}

/// Stops the run after batch `batch` of epoch `epoch`.
struct StopAt {
    epoch: usize,
    batch: usize,
    current: usize,
}

impl RunObserver for StopAt {
    fn epoch_started(&mut self, e: &experiments::run::EpochStart) {
        self.current = e.epoch;
    }
    fn batch_done(&mut self, batch: usize, _: usize, _: f64, _: usize) -> ControlFlow<()> {
        if self.current == self.epoch && batch == self.batch {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

fn finished_rows(o: RunOutcome) -> Vec<MetricsRow> {
    match o {
        RunOutcome::Finished(s) => s.rows,
        other => panic!("expected a finished run, got {other:?}"),
    }
}

#[test]
fn run_interrupted_mid_epoch_resumes_to_the_metrics_of_an_uninterrupted_run() {
    let seed = test_seed();
    let spec = small_spec(seed);
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let parts = tmp.path().join("parts");
    let expected =
        finished_rows(train(&spec, &whole, StartMode::New, MODELS, &mut Silent).unwrap());
    assert_eq!(expected.len(), 3);

    let mut stop = StopAt {
        epoch: 2,
        batch: 3,
        current: 0,
    };
    match train(&spec, &parts, StartMode::New, MODELS, &mut stop).unwrap() {
        RunOutcome::Interrupted { epochs_completed } => assert_eq!(epochs_completed, 1),
        other => panic!("expected an interruption, got {other:?}"),
    }
    let run = RunFile::read(&RunDir::new(&parts).run_toml()).unwrap();
    assert_eq!(run.run.status, RunStatus::Running);
    assert_eq!(run.run.epochs_completed, 1);
    assert_eq!(
        read_metrics(&RunDir::new(&parts).metrics_csv())
            .unwrap()
            .len(),
        1
    );

    // A fresh start on an unfinished run is refused with a pointer to --resume.
    let e = train(&spec, &parts, StartMode::New, MODELS, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--resume"), "{e}");

    let resumed =
        finished_rows(train(&spec, &parts, StartMode::Resume, MODELS, &mut Silent).unwrap());
    assert_eq!(without_seconds(&resumed), without_seconds(&expected));
    assert_eq!(
        without_seconds(&read_metrics(&RunDir::new(&parts).metrics_csv()).unwrap()),
        without_seconds(&expected)
    );
    assert_eq!(
        std::fs::read(RunDir::new(&parts).checkpoint()).unwrap(),
        std::fs::read(RunDir::new(&whole).checkpoint()).unwrap(),
        "the final checkpoints are byte-identical"
    );
}

#[test]
fn resume_trusts_the_checkpoint_over_extra_metrics_rows() {
    let seed = test_seed();
    let mut spec = small_spec(seed);
    spec.epochs = 2;
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let parts = tmp.path().join("parts");
    let expected =
        finished_rows(train(&spec, &whole, StartMode::New, MODELS, &mut Silent).unwrap());

    let mut stop = StopAt {
        epoch: 2,
        batch: 1,
        current: 0,
    };
    train(&spec, &parts, StartMode::New, MODELS, &mut stop).unwrap();
    // As if the process died after writing epoch 2's row but before its
    // checkpoint: metrics.csv holds a row the checkpoint does not cover.
    let dir = RunDir::new(&parts);
    let mut rows = read_metrics(&dir.metrics_csv()).unwrap();
    rows.push(MetricsRow {
        epoch: 2,
        train_loss: 99.0,
        ..rows[0].clone()
    });
    experiments::metrics::write_metrics(&dir.metrics_csv(), &rows).unwrap();

    let resumed =
        finished_rows(train(&spec, &parts, StartMode::Resume, MODELS, &mut Silent).unwrap());
    assert_eq!(without_seconds(&resumed), without_seconds(&expected));
}

#[test]
fn finished_runs_are_left_alone_and_force_starts_over() {
    let seed = test_seed();
    let mut spec = small_spec(seed);
    spec.epochs = 1;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let first = finished_rows(train(&spec, &dir, StartMode::New, MODELS, &mut Silent).unwrap());
    match train(&spec, &dir, StartMode::New, MODELS, &mut Silent).unwrap() {
        RunOutcome::AlreadyFinished(s) => {
            assert_eq!(s.rows, first);
            assert_eq!(s.test_accuracy, first[0].test_accuracy as f64);
        }
        other => panic!("expected AlreadyFinished, got {other:?}"),
    }
    let again = finished_rows(train(&spec, &dir, StartMode::Force, MODELS, &mut Silent).unwrap());
    assert_eq!(without_seconds(&again), without_seconds(&first));

    let mut other = spec.clone();
    other.optimizer.lr = 0.5;
    let e = train(&other, &dir, StartMode::Force, MODELS, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("optimizer.lr: 0.05 -> 0.5"), "{e}");
}

#[test]
fn diverged_run_is_recorded_and_cannot_be_resumed() {
    let seed = test_seed();
    let mut spec = small_spec(seed);
    spec.multiplier = "fp32".into();
    spec.optimizer.lr = 1e6;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let d = match train(&spec, &dir, StartMode::New, MODELS, &mut Silent).unwrap() {
        RunOutcome::Diverged(d) => d,
        other => panic!("expected divergence, got {other:?}"),
    };
    assert!(!d.loss.is_finite());
    assert!(d.to_string().starts_with(&format!(
        "training diverged at epoch {} step {}: loss is",
        d.epoch, d.step
    )));
    let run = RunFile::read(&RunDir::new(&dir).run_toml()).unwrap();
    assert_eq!(run.run.status, RunStatus::Diverged);
    assert_eq!(run.run.message.as_deref(), Some(d.to_string().as_str()));
    let rows = read_metrics(&RunDir::new(&dir).metrics_csv()).unwrap();
    assert_eq!(rows.last().unwrap().epoch, d.epoch);
    assert_eq!(rows.last().unwrap().step, d.step);
    let e = train(&spec, &dir, StartMode::Resume, MODELS, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("diverged"), "{e}");
}

#[test]
fn unknown_layer_in_a_spec_is_an_error_before_anything_is_written() {
    let mut spec = small_spec(1);
    spec.layers.insert("conv1".into(), "fp32".into());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let e = train(&spec, &dir, StartMode::New, MODELS, &mut Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'conv1'") && e.contains("fc1, fc2, fc3"), "{e}");
    assert!(!dir.exists());
}
