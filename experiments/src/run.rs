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

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use amsim::spec::Resolver;
use amsim::{ModelInfo, PlanSpec};

use nets::checkpoint::Checkpoint;
use nets::data::{resolve_dataset_dir, Split};
use nets::model::Network;
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::{Granularity, LrSchedule, Schedule};
use nets::train::Trainer;
use nets::NetError;

use crate::error::{ExperimentError, Result};
use crate::metrics::{read_metrics, write_metrics, MetricsRow};
use crate::plan_file::check_layer_names;
use crate::spec::{OptimizerKind, RunFile, RunSpec, RunState, RunStatus, ScheduleKind};

/// File names inside a run directory.
pub const RUN_TOML: &str = "run.toml";
/// See [`RUN_TOML`].
pub const METRICS_CSV: &str = "metrics.csv";
/// See [`RUN_TOML`].
pub const CHECKPOINT_BIN: &str = "checkpoint.bin";

/// How [`train`] treats an output directory that already holds a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Start a run; a finished run of the same spec is left alone, an
    /// unfinished one or a different spec is an error.
    New,
    /// Continue the run recorded in the directory from its last completed
    /// epoch (the spec may only change `epochs`, `data_dir`, `threads`).
    Resume,
    /// Start over, discarding the directory's run of the same spec.
    Force,
}

/// Sent to the observer when an epoch begins.
#[derive(Debug, Clone)]
pub struct EpochStart {
    /// 1-based epoch.
    pub epoch: usize,
    /// Epochs of the run.
    pub epochs: usize,
    /// Training batches in this epoch.
    pub batches: usize,
    /// Training images in this epoch.
    pub images: usize,
    /// Language models, whose "epochs" are the periods between
    /// validations: where this period starts in the run's steps.
    pub lm: Option<LmPeriod>,
}

/// Steps of a language-model run, for progress in steps and characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmPeriod {
    /// Steps completed before this period.
    pub first_step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// Characters per training window (the context).
    pub context: usize,
}

/// Receives progress of a run; the library itself prints nothing.
pub trait RunObserver {
    /// A line for the user (data source notices, resume information).
    fn message(&mut self, _text: &str) {}
    /// An epoch begins.
    fn epoch_started(&mut self, _e: &EpochStart) {}
    /// Training batch `batch` (1-based) of `batches` is done with mean loss
    /// `loss` over its `images` images. `Break` stops the run after this
    /// batch as if it had been interrupted: the epoch is not recorded.
    fn batch_done(
        &mut self,
        _batch: usize,
        _batches: usize,
        _loss: f64,
        _images: usize,
    ) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }
    /// An epoch's row has been recorded.
    fn epoch_done(&mut self, _row: &MetricsRow) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl RunObserver for Silent {}

/// A finished run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// [`RunSpec::run_id`].
    pub run_id: String,
    /// Epochs completed.
    pub epochs: usize,
    /// Test accuracy after the last epoch.
    pub test_accuracy: f64,
    /// All rows of `metrics.csv`.
    pub rows: Vec<MetricsRow>,
}

/// Where and how a run diverged.
#[derive(Debug, Clone, PartialEq)]
pub struct Divergence {
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimizer steps since the start of the run, counting the step
    /// whose loss was not finite.
    pub step: u64,
    /// The loss (NaN or infinite).
    pub loss: f64,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.loss.is_nan() {
            "NaN".to_string()
        } else {
            format!("{}", self.loss)
        };
        write!(
            f,
            "training diverged at epoch {} step {}: loss is {what}; try a lower learning rate (--lr), \
             a smaller batch, or a multiplier plan with exact gradients (dx=fp32,dw=fp32)",
            self.epoch, self.step
        )
    }
}

/// How [`train`] ended.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    /// All epochs done.
    Finished(RunSummary),
    /// The directory already held this finished run; nothing was done.
    AlreadyFinished(RunSummary),
    /// The loss became NaN or infinite; recorded in `metrics.csv` and
    /// `run.toml` (status `diverged`).
    Diverged(Divergence),
    /// The observer stopped the run; it can be resumed.
    Interrupted {
        /// Epochs completed and checkpointed.
        epochs_completed: usize,
    },
}

/// The files of a run directory.
#[derive(Debug, Clone)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// The run directory `dir` (not created yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunDir { dir: dir.into() }
    }
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
    /// `DIR/run.toml`.
    pub fn run_toml(&self) -> PathBuf {
        self.dir.join(RUN_TOML)
    }
    /// `DIR/metrics.csv`.
    pub fn metrics_csv(&self) -> PathBuf {
        self.dir.join(METRICS_CSV)
    }
    /// `DIR/checkpoint.bin`.
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_BIN)
    }
}

/// Per-sample input shape and classes of a dataset the CLI trains on.
pub fn dataset_shape(dataset: &str) -> Result<(Vec<usize>, usize)> {
    match dataset {
        "mnist" | "fashion-mnist" => Ok((vec![1, 28, 28], 10)),
        "cifar10" => Ok((vec![3, 32, 32], 10)),
        _ => Err(ExperimentError::UnknownDataset {
            name: dataset.to_string(),
            valid: crate::spec::DATASETS.join(", "),
        }),
    }
}

/// Names of the layers of `net` that take a multiplier plan (what a plan
/// file may name), in order: `Network::plan_names`, so ResNet blocks
/// (`s1b1`) and their inner convolutions (`s1b1.conv1`).
pub fn layer_names(net: &str) -> Result<Vec<String>> {
    if !crate::spec::NETS.contains(&net) {
        return Err(ExperimentError::UnknownNet {
            name: net.to_string(),
            valid: crate::spec::NETS.join(", "),
        });
    }
    let home = if net.starts_with("resnet") {
        "cifar10"
    } else {
        "mnist"
    };
    let (shape, classes) = dataset_shape(home)?;
    let network = nets::model::Network::by_name(
        net,
        &shape,
        classes,
        amsim::MultiplierPlan::uniform(amsim::Multiplier::Fp32),
        0,
    )?;
    Ok(network.plan_names())
}

/// The network of `spec` with its plans resolved against `models` (every
/// layer on the default plan, the per-layer plans applied), weights
/// initialised from the spec's seed.
pub fn network_for_spec(spec: &RunSpec, models: &[ModelInfo]) -> Result<Network> {
    let (shape, classes) = dataset_shape(&spec.dataset)?;
    // Built once on fp32, which tells the layer names the plans are checked
    // against; the plans are then set (they do not change the weights).
    let mut network = Network::by_name(
        &spec.net,
        &shape,
        classes,
        amsim::MultiplierPlan::uniform(amsim::Multiplier::Fp32),
        spec.seed,
    )?;
    let (default_plan, layer_plans) = resolve_plans(spec, models, &network.plan_names())?;
    network.set_plan(&default_plan);
    // In name order, so a block's plan comes before those of its inner
    // convolutions (`s1b1` < `s1b1.conv1`): the more specific name wins.
    for (name, plan) in layer_plans {
        network.set_plan_by_name(&name, plan)?;
    }
    Ok(network)
}

/// What [`prepare`] found in the run directory.
pub(crate) enum Start {
    /// Nothing to do: the run is finished.
    Done(RunSummary),
    /// Train on from the trainer state `state` (`None`: from scratch),
    /// continuing `rows`.
    Train {
        rows: Vec<MetricsRow>,
        state: Option<Checkpoint>,
    },
}

pub(crate) fn summary(spec: &RunSpec, rows: Vec<MetricsRow>) -> RunSummary {
    RunSummary {
        run_id: spec.run_id(),
        epochs: rows.len(),
        test_accuracy: rows.last().map_or(0.0, |r| r.test_accuracy as f64),
        rows,
    }
}

/// Look at the directory and decide where to start, per [`StartMode`];
/// `units` is the number of rows (and checkpoints) the finished run has:
/// its epochs, or a language model's evaluations.
pub(crate) fn prepare(
    spec: &RunSpec,
    dir: &RunDir,
    mode: StartMode,
    units: usize,
) -> Result<Start> {
    let fresh = Start::Train {
        rows: Vec::new(),
        state: None,
    };
    let run_toml = dir.run_toml();
    if !run_toml.exists() {
        if mode == StartMode::Resume {
            return Err(ExperimentError::NotResumable {
                dir: dir.path().to_path_buf(),
                reason: format!("{} does not exist", run_toml.display()),
            });
        }
        return Ok(fresh);
    }
    let stored = RunFile::read(&run_toml)?;
    let differences = stored.spec.differences(spec, true);
    let length_changed = stored.spec.epochs != spec.epochs || stored.spec.steps != spec.steps;
    if differences.is_empty() && length_changed && mode == StartMode::New {
        return Err(ExperimentError::Other(format!(
            "{}: holds this run with {} epochs, not {}; extend it with --resume {} --epochs {}, \
             or start over with --force",
            dir.path().display(),
            stored.spec.epochs,
            spec.epochs,
            dir.path().display(),
            spec.epochs
        )));
    }
    if !differences.is_empty() {
        return Err(ExperimentError::SpecMismatch {
            dir: dir.path().to_path_buf(),
            differences: differences.join(", "),
        });
    }
    match mode {
        StartMode::Force => Ok(fresh),
        StartMode::New => match stored.run.status {
            RunStatus::Finished => Ok(Start::Done(summary(
                spec,
                read_metrics(&dir.metrics_csv())?,
            ))),
            RunStatus::Diverged => Err(ExperimentError::Other(format!(
                "{}: holds a diverged run of this spec ({}); start over with --force",
                dir.path().display(),
                stored.run.message.as_deref().unwrap_or("loss not finite")
            ))),
            status => Err(ExperimentError::Other(format!(
                "{}: holds a {status} run of this spec ({} of {} epochs); continue it with \
                 --resume {}, or start over with --force",
                dir.path().display(),
                stored.run.epochs_completed,
                stored.spec.epochs,
                dir.path().display()
            ))),
        },
        StartMode::Resume => {
            if stored.run.status == RunStatus::Diverged {
                return Err(ExperimentError::NotResumable {
                    dir: dir.path().to_path_buf(),
                    reason: format!(
                        "the run diverged ({}); start a new run with a lower learning rate",
                        stored.run.message.as_deref().unwrap_or("loss not finite")
                    ),
                });
            }
            let ckpt = dir.checkpoint();
            if !ckpt.exists() {
                return Ok(fresh);
            }
            let state = Checkpoint::load(&ckpt)?;
            let epochs_completed = state.epoch as usize;
            let mut rows = read_metrics(&dir.metrics_csv())?;
            rows.retain(|r| r.epoch <= epochs_completed);
            if rows.len() != epochs_completed || rows.iter().zip(1..).any(|(r, e)| r.epoch != e) {
                return Err(ExperimentError::NotResumable {
                    dir: dir.path().to_path_buf(),
                    reason: format!(
                        "{} does not hold one row for each of the {epochs_completed} checkpointed epochs; start over with --force",
                        dir.metrics_csv().display()
                    ),
                });
            }
            if epochs_completed >= units {
                if epochs_completed > units {
                    return Err(ExperimentError::NotResumable {
                        dir: dir.path().to_path_buf(),
                        reason: format!(
                            "{epochs_completed} epochs are already done, more than the {} asked for",
                            units
                        ),
                    });
                }
                return Ok(Start::Done(summary(spec, rows)));
            }
            Ok(Start::Train {
                rows,
                state: Some(state),
            })
        }
    }
}

/// Resolve the run's plans and check per-layer names against the network.
pub(crate) fn resolve_plans(
    spec: &RunSpec,
    models: &[ModelInfo],
    layer_names: &[String],
) -> Result<(amsim::MultiplierPlan, Vec<(String, amsim::MultiplierPlan)>)> {
    let resolver = Resolver::new(models);
    let default = resolver.resolve_plan(&spec.plan()?)?;
    check_layer_names(spec.layers.keys(), layer_names, &spec.net, "run spec")?;
    let mut layers = Vec::new();
    for (name, plan) in &spec.layers {
        let plan: PlanSpec = plan
            .parse()
            .map_err(|e| ExperimentError::BadSpec(format!("plan of layer '{name}': {e}")))?;
        layers.push((name.clone(), resolver.resolve_plan(&plan)?));
    }
    Ok((default, layers))
}

/// The optimizer of `spec`.
pub(crate) fn optimizer(spec: &RunSpec) -> Result<Optimizer> {
    let o = &spec.optimizer;
    let config = match o.kind {
        OptimizerKind::Sgd => OptimizerConfig::Sgd {
            momentum: o.momentum as f32,
            nesterov: o.nesterov,
            weight_decay: o.weight_decay as f32,
        },
        OptimizerKind::Adam => OptimizerConfig::Adam {
            beta1: o.beta1 as f32,
            beta2: o.beta2 as f32,
            eps: o.eps as f32,
            weight_decay: o.weight_decay as f32,
            decoupled: true,
        },
    };
    Ok(Optimizer::new(config)?)
}

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

/// Seconds rounded to milliseconds for the CSV.
pub(crate) fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Write `run.toml` with the current state.
pub(crate) fn write_state(
    spec: &RunSpec,
    dir: &RunDir,
    data_source: &str,
    status: RunStatus,
    rows: &[MetricsRow],
    message: Option<String>,
) -> Result<()> {
    let completed: Vec<&MetricsRow> = rows
        .iter()
        .filter(|r| r.test_accuracy.is_finite())
        .collect();
    RunFile {
        run: RunState {
            run_id: spec.run_id(),
            status,
            epochs_completed: completed.len(),
            test_accuracy: completed.last().map(|r| r.test_accuracy),
            data: Some(data_source.to_string()),
            message,
        },
        spec: spec.clone(),
    }
    .write(&dir.run_toml())
}

/// The identity columns of a run's `metrics.csv` rows, every measured
/// column empty (NaN or 0), for the rows to fill in.
pub(crate) fn row_base(spec: &RunSpec) -> MetricsRow {
    MetricsRow {
        run_id: spec.run_id(),
        net: spec.net.clone(),
        dataset: spec.dataset.clone(),
        plan: spec.plan_label(),
        seed: spec.seed,
        epoch: 0,
        step: 0,
        train_loss: f32::NAN,
        train_accuracy: f32::NAN,
        test_loss: f32::NAN,
        test_accuracy: f32::NAN,
        seconds: 0.0,
        macs: 0,
    }
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
    if spec.net == crate::lm::TRANSFORMER {
        return crate::lm::train_lm(spec, dir, mode, models, observer);
    }
    let dir = RunDir::new(dir);
    let mut network = network_for_spec(spec, models)?;

    let (mut rows, state) = match prepare(spec, &dir, mode, spec.epochs)? {
        Start::Done(s) => return Ok(RunOutcome::AlreadyFinished(s)),
        Start::Train { rows, state } => (rows, state),
    };
    // Fine-tuning starts from the weights of another run's checkpoint, with
    // fresh optimizer state, counters and schedule; a resumed fine-tuning
    // run continues from its own checkpoint and does not need it again.
    let init = match (&spec.init, &state) {
        (Some(from), None) => {
            let init = crate::eval::load_checkpoint(from)?;
            init.checkpoint
                .apply_weights(&init.checkpoint_path, &mut network)?;
            Some(init)
        }
        _ => None,
    };

    let location = resolve_dataset_dir(spec.data_dir.as_deref(), &spec.dataset)?;
    let data_source = location.describe();
    if let Some(notice) = &location.notice {
        observer.message(notice);
    }
    let train_set = location.load_images(Split::Train, spec.train_limit)?;
    let test_set = location.load_images(Split::Test, spec.test_limit)?;
    let batches = train_set.len.div_ceil(spec.batch_size);
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

    std::fs::create_dir_all(dir.path()).map_err(|e| ExperimentError::io(dir.path(), e))?;
    if trainer.epoch() == 0 {
        for stale in [dir.metrics_csv(), dir.checkpoint()] {
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|e| ExperimentError::io(&stale, e))?;
            }
        }
    }
    write_metrics(&dir.metrics_csv(), &rows)?;
    write_state(spec, &dir, &data_source, RunStatus::Running, &rows, None)?;

    let macs = trainer.network.macs_per_image();
    let row_base = row_base(spec);
    while trainer.epoch() < spec.epochs {
        let epoch = trainer.epoch() + 1;
        let steps_before = trainer.global_step();
        observer.epoch_started(&EpochStart {
            epoch,
            epochs: spec.epochs,
            batches,
            images: train_set.len,
            lm: None,
        });
        let started = Instant::now();
        let mut stop = false;
        let mut seen = 0usize;
        let mut last_accuracy = f32::NAN;
        let result = trainer.train_epoch(&train_set, spec.batch_size, &mut |p| {
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
                let batch_images = spec.batch_size.min(train_set.len - batch * spec.batch_size);
                let d = Divergence {
                    epoch,
                    step: steps_before + batch as u64 + 1,
                    loss: loss as f64,
                };
                rows.push(MetricsRow {
                    epoch,
                    step: d.step,
                    train_loss: loss,
                    train_accuracy: last_accuracy,
                    seconds: round_ms(started.elapsed().as_secs_f64()),
                    macs: seen as u64 * macs.total() + batch_images as u64 * macs.forward,
                    ..row_base.clone()
                });
                write_metrics(&dir.metrics_csv(), &rows)?;
                write_state(
                    spec,
                    &dir,
                    &data_source,
                    RunStatus::Diverged,
                    &rows,
                    Some(d.to_string()),
                )?;
                return Ok(RunOutcome::Diverged(d));
            }
            Err(e) => return Err(e.into()),
        };
        if stop {
            return Ok(RunOutcome::Interrupted {
                epochs_completed: epoch - 1,
            });
        }
        let eval = trainer.evaluate(&test_set, spec.eval_batch_size)?;
        let row = MetricsRow {
            epoch,
            step: trainer.global_step(),
            train_loss: stats.loss,
            train_accuracy: stats.accuracy,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            seconds: round_ms(started.elapsed().as_secs_f64()),
            macs: train_set.len as u64 * macs.total() + test_set.len as u64 * macs.forward,
            ..row_base.clone()
        };
        rows.push(row.clone());
        write_metrics(&dir.metrics_csv(), &rows)?;
        trainer.save_state(&dir.checkpoint())?;
        let status = if epoch == spec.epochs {
            RunStatus::Finished
        } else {
            RunStatus::Running
        };
        write_state(spec, &dir, &data_source, status, &rows, None)?;
        observer.epoch_done(&row);
    }
    if rows.len() == spec.epochs {
        write_state(spec, &dir, &data_source, RunStatus::Finished, &rows, None)?;
    }
    Ok(RunOutcome::Finished(summary(spec, rows)))
}
