//! Running a [`RunSpec`] in a run directory: fresh, resumed, or forced.
//!
//! Per completed epoch the directory gets, in this order, `metrics.csv`
//! (all rows so far), `checkpoint.bin` (trainer state) and `run.toml` (spec and status), each written whole. The
//! checkpoint is the source of truth when resuming: rows of `metrics.csv`
//! past its epoch (an interruption between the two writes) are dropped and
//! recomputed, which gives the same values because training is
//! deterministic.
//!
//! The checkpoint is the trainer's own file ([`nets::checkpoint`]), which
//! holds the epoch and step counters.
//!
//! `macs` in `metrics.csv` counts, for the epoch, every multiply-accumulate
//! that goes through the multiplier plan: for each training image the
//! forward, weight-gradient and input-gradient products of every layer (the
//! first layer computes no input gradient), and for each test image the
//! forward products. Bias additions, activations, pooling and the loss are
//! not counted.

use std::path::Path;
use std::time::Instant;

use amsim::ModelInfo;
use nets::checkpoint::Checkpoint;
use nets::data::{resolve_dataset_dir, ImageDataset, Split};
use nets::layers::MacCounts;
use nets::schedule::{Granularity, LrSchedule, Schedule};
use nets::train::Trainer;
use nets::NetError;

use crate::error::Result;
use crate::identity::{data_identities, RunIdentity};
use crate::metrics::MetricsRow;
use crate::model::{network_for_spec, optimizer};
use crate::run_dir::{
    load_checkpoint, locked_start, prepare, round_ms, train_periods, Period, PeriodTrainer,
    Recorder, RunInputs, Start,
};
use crate::spec::{RunSpec, ScheduleKind, Task};
use nets::PlannedModel;

// The run directory's files and the outcome of a run, for the callers of
// [`train`].
pub use crate::run_dir::{
    lock_run_dir, Divergence, EpochStart, LmPeriod, RunDir, RunDirLock, RunObserver, RunOutcome,
    RunSummary, Silent, StartMode, CHECKPOINT_BIN, LOCK_FILE, METRICS_CSV, RUN_TOML,
};

/// The learning-rate schedule of `spec` for `batches` steps per epoch.
/// Cosine warms up and decays per step over the whole run (so extending a
/// resumed run changes its remaining schedule); step decays per epoch.
fn schedule(spec: &RunSpec, batches: usize) -> LrSchedule {
    let base_lr = spec.optimizer.lr as f32;
    let (schedule, granularity) = match spec.schedule.kind {
        ScheduleKind::Constant => (Schedule::Constant, Granularity::Epoch),
        ScheduleKind::Step => (
            Schedule::Step {
                every: spec.schedule.step_epochs as u64,
                gamma: spec.schedule.gamma as f32,
            },
            Granularity::Epoch,
        ),
        ScheduleKind::Cosine => (
            Schedule::Cosine {
                warmup: (spec.schedule.warmup_epochs * batches).min(spec.epochs * batches / 2)
                    as u64,
                total: (spec.epochs * batches) as u64,
                min_lr: 0.0,
            },
            Granularity::Step,
        ),
        ScheduleKind::OneCycle => {
            let total = (spec.epochs * batches) as u64;
            let rise = match spec.schedule.warmup_epochs {
                0 => (total * 3).div_ceil(10),
                w => (w * batches) as u64,
            };
            (
                Schedule::OneCycle {
                    rise: rise.clamp(1, total.saturating_sub(1).max(1)),
                    total,
                    div: 25.0,
                    final_div: 1e4,
                },
                Granularity::Step,
            )
        }
    };
    LrSchedule {
        base_lr,
        schedule,
        granularity,
    }
}

/// The spec `approxtrain train --init FROM` starts from: the network,
/// dataset and data directory of the run the weights come from (a
/// language model also keeps its size), the default hyper-parameters of
/// [`RunSpec::with_defaults`], and `init` set to `from`. A network that does
/// not match the weights is rejected when they are loaded.
pub fn fine_tuning_spec(from: &Path) -> Result<RunSpec> {
    let source = load_checkpoint(from)?.run.spec;
    let mut spec = RunSpec::with_defaults(&source.net, &source.dataset);
    spec.data_dir = source.data_dir;
    spec.transformer = source.transformer;
    spec.init = Some(from.to_path_buf());
    Ok(spec)
}

/// Train `spec` in directory `dir` (created if needed), per `mode`,
/// resolving model specs against the registry `models`, reporting progress
/// to `observer`. Bad specs, unknown layers and missing data are errors
/// before anything is written; a diverged run is an outcome, recorded in
/// the directory.
pub fn train(
    spec: &RunSpec,
    dir: &Path,
    mode: StartMode,
    models: &[ModelInfo],
    observer: &mut dyn RunObserver,
) -> Result<RunOutcome> {
    spec.validate()?;
    if spec.task() == Task::LanguageModel {
        return crate::lm::train_lm(spec, dir, mode, models, observer);
    }
    let dir = RunDir::new(dir);
    let mut network = network_for_spec(spec, models)?;
    // Everything the run reads is found, fingerprinted and loaded before
    // the run directory is touched.
    let location = resolve_dataset_dir(spec.data_dir.as_deref(), &spec.dataset)?;
    let inputs = RunInputs {
        data_source: location.describe(),
        identity: RunIdentity::new(data_identities(&location)?, spec.table_identities()?),
    };
    let train_set = location.load_images(Split::Train, spec.train_limit)?;
    let test_set = location.load_images(Split::Test, spec.test_limit)?;
    let batches = train_set.len.div_ceil(spec.batch_size);
    let init = spec.init.as_deref().map(load_checkpoint).transpose()?;

    let (lock, start) = locked_start(&dir, |dir| prepare(spec, dir, mode, spec.epochs, &inputs))?;
    let (rows, state) = match start {
        Start::Done(s) => return Ok(RunOutcome::AlreadyFinished(s)),
        Start::Train { rows, state } => (rows, state),
    };
    // Fine-tuning starts from the weights of another run's checkpoint, with
    // fresh optimizer state, counters and schedule; a resumed fine-tuning
    // run continues from its own checkpoint and does not need it again.
    let init = match (init, &state) {
        (Some(init), None) => {
            init.checkpoint
                .apply_weights(&init.checkpoint_path, &mut network)?;
            Some(init)
        }
        _ => None,
    };

    if let Some(notice) = &location.notice {
        observer.message(notice);
    }
    if spec.optimizer.decay_bn_bias {
        for p in network.params_mut() {
            // One-dimensional parameters: biases and batch-norm γ, β; the
            // running statistics are never trained.
            if p.shape.len() == 1
                && !p.name.ends_with(".running_mean")
                && !p.name.ends_with(".running_var")
            {
                p.decay = true;
            }
        }
    }
    let mut trainer = Trainer::new(
        network,
        optimizer(spec)?,
        schedule(spec, batches),
        spec.seed,
    )?;
    trainer.set_augmentation(spec.augment.then(nets::data::Augmentation::cifar));
    trainer.set_label_smoothing(spec.label_smoothing as f32)?;
    if let Some(ck) = state {
        trainer.restore(&dir.checkpoint(), ck)?;
        observer.message(&format!(
            "resuming {} after epoch {} of {}",
            dir.path().display(),
            trainer.epoch(),
            spec.epochs
        ));
    } else if let Some(init) = &init {
        observer.message(&format!(
            "starting from the weights of {} (epoch {})",
            init.checkpoint_path.display(),
            init.checkpoint.epoch
        ));
    }

    let fresh = trainer.epoch() == 0;
    let recorder = Recorder::begin(spec, dir, lock, inputs, rows, spec.epochs, fresh)?;

    let macs = trainer.network.macs_per_example();
    let mut periods = Epochs {
        spec,
        trainer,
        train_set,
        test_set,
        batches,
        macs,
    };
    train_periods(recorder, &mut periods, observer)
}

/// A classifier's training for [`train_periods`]: one period per epoch.
struct Epochs<'a> {
    spec: &'a RunSpec,
    trainer: Trainer,
    train_set: ImageDataset,
    test_set: ImageDataset,
    batches: usize,
    macs: MacCounts,
}

impl PeriodTrainer for Epochs<'_> {
    fn announce(&self, k: usize) -> EpochStart {
        EpochStart {
            epoch: k + 1,
            epochs: self.spec.epochs,
            batches: self.batches,
            images: self.train_set.len,
            lm: None,
        }
    }

    fn period(
        &mut self,
        k: usize,
        row: MetricsRow,
        observer: &mut dyn RunObserver,
    ) -> Result<Period> {
        let (spec, macs) = (self.spec, self.macs);
        let epoch = k + 1;
        let steps_before = self.trainer.global_step();
        let started = Instant::now();
        let mut stop = false;
        let mut seen = 0usize;
        let mut last_accuracy = f32::NAN;
        let result = self
            .trainer
            .train_epoch(&self.train_set, spec.batch_size, &mut |p| {
                let images = p.samples - seen;
                seen = p.samples;
                last_accuracy = p.accuracy;
                if observer
                    .batch_done(p.batch + 1, p.batches, p.loss as f64, images)
                    .is_break()
                {
                    stop = true;
                }
            });
        let stats = match result {
            Ok(stats) => stats,
            Err(NetError::NonFiniteLoss { batch, loss, .. }) => {
                let batch_images = spec
                    .batch_size
                    .min(self.train_set.len - batch * spec.batch_size);
                let d = Divergence::of_loss(
                    epoch,
                    steps_before + batch as u64 + 1,
                    "loss",
                    loss as f64,
                );
                let row = MetricsRow {
                    epoch,
                    step: d.step,
                    train_loss: loss,
                    train_accuracy: last_accuracy,
                    seconds: round_ms(started.elapsed().as_secs_f64()),
                    macs: seen as u64 * macs.total() + batch_images as u64 * macs.forward,
                    ..row
                };
                return Ok(Period::Diverged(d, row));
            }
            Err(e) => return Err(e.into()),
        };
        if stop {
            return Ok(Period::Interrupted);
        }
        let eval = self
            .trainer
            .evaluate(&self.test_set, spec.eval_batch_size)?;
        Ok(Period::Done(MetricsRow {
            epoch,
            step: self.trainer.global_step(),
            train_loss: stats.loss,
            train_accuracy: stats.accuracy,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            seconds: round_ms(started.elapsed().as_secs_f64()),
            macs: self.train_set.len as u64 * macs.total()
                + self.test_set.len as u64 * macs.forward,
            ..row
        }))
    }

    fn checkpoint(&self) -> Checkpoint {
        self.trainer.checkpoint()
    }
}
