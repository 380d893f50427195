//! The run directory, the same for every task: its files, where a run
//! starts (`prepare`: fresh, resumed, forced, or already done), the
//! progress a run reports ([`RunObserver`]) and how it ends
//! ([`RunOutcome`]), and the one training loop of every task
//! (`train_periods`): a task supplies its periods (a classifier's epochs,
//! a language model's steps up to each evaluation) and `Recorder` writes
//! what each completes in the order [`crate::run`] describes.
//!
//! A checkpoint of a finished or interrupted run is read back with its
//! `run.toml` by [`load_checkpoint`] (evaluation, sampling, fine-tuning).

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use nets::checkpoint::Checkpoint;

use crate::error::{ExperimentError, Result};
use crate::metrics::{read_metrics, write_metrics, write_metrics_with_perplexity, MetricsRow};
use crate::spec::{RunFile, RunSpec, RunState, RunStatus, Task};

/// File names inside a run directory.
pub const RUN_TOML: &str = "run.toml";
/// See [`RUN_TOML`].
pub const METRICS_CSV: &str = "metrics.csv";
/// See [`RUN_TOML`].
pub const CHECKPOINT_BIN: &str = "checkpoint.bin";

/// How [`crate::run::train`] treats an output directory that already holds a run.
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

/// How [`crate::run::train`] ended.
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

/// The summary of a run with `rows`.
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

/// Seconds rounded to milliseconds for the CSV.
pub(crate) fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Write `run.toml` with the current state.
fn write_state(
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
fn row_base(spec: &RunSpec) -> MetricsRow {
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

/// `DIR/vocab.txt`: the vocabulary of a language-model run.
pub const VOCAB_TXT: &str = "vocab.txt";

/// How one period of training ended: a classifier's epoch, or a language
/// model's steps up to its next evaluation.
pub(crate) enum Period {
    /// Trained and evaluated: its row.
    Done(MetricsRow),
    /// The loss stopped being finite: where, and the period's partial row.
    Diverged(Divergence, MetricsRow),
    /// The observer stopped it; nothing of it is recorded.
    Interrupted,
}

/// A task's training, one period at a time, for [`train_periods`].
pub(crate) trait PeriodTrainer {
    /// What the observer is told when period `k` (0-based) begins.
    fn announce(&self, k: usize) -> EpochStart;
    /// Train and evaluate period `k`, reporting batches to `observer`;
    /// `row` holds the run's identity columns, for the period's row.
    fn period(
        &mut self,
        k: usize,
        row: MetricsRow,
        observer: &mut dyn RunObserver,
    ) -> Result<Period>;
    /// Write the trainer state (the checkpoint) to `path`.
    fn save(&self, path: &Path) -> Result<()>;
}

/// The training loop of every task: from the rows `recorder` holds to its
/// last period, each period announced, trained, then recorded (row,
/// checkpoint, status) or ended as a divergence or an interruption.
pub(crate) fn train_periods(
    mut recorder: Recorder<'_>,
    trainer: &mut impl PeriodTrainer,
    observer: &mut dyn RunObserver,
) -> Result<RunOutcome> {
    for k in recorder.rows.len()..recorder.units {
        observer.epoch_started(&trainer.announce(k));
        match trainer.period(k, recorder.row(), observer)? {
            Period::Done(row) => {
                recorder.record(row.clone(), |path| trainer.save(path))?;
                observer.epoch_done(&row);
            }
            Period::Diverged(d, row) => return recorder.diverged(d, row),
            Period::Interrupted => {
                return Ok(RunOutcome::Interrupted {
                    epochs_completed: k,
                })
            }
        }
    }
    recorder.finish()
}

/// Writes what a training loop completes, the same way for every task:
/// per completed epoch (or evaluation) `metrics.csv`, then the trainer
/// state, then `run.toml`; a divergence as a last partial row and the
/// status `diverged`.
pub(crate) struct Recorder<'a> {
    spec: &'a RunSpec,
    dir: RunDir,
    data_source: String,
    rows: Vec<MetricsRow>,
    /// Rows of the finished run: its epochs, or a language model's
    /// evaluations.
    units: usize,
    base: MetricsRow,
}

impl<'a> Recorder<'a> {
    /// Open `dir` to train `spec` on from `rows` (`units` rows when
    /// finished): create it, remove the metrics and checkpoint of an
    /// earlier run when starting from scratch (`fresh`), write the rows so
    /// far and the status `running`. `data_source` says where the data came
    /// from (recorded in `run.toml`).
    pub(crate) fn begin(
        spec: &'a RunSpec,
        dir: RunDir,
        data_source: String,
        rows: Vec<MetricsRow>,
        units: usize,
        fresh: bool,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir.path()).map_err(|e| ExperimentError::io(dir.path(), e))?;
        if fresh {
            for stale in [dir.metrics_csv(), dir.checkpoint()] {
                if stale.exists() {
                    std::fs::remove_file(&stale).map_err(|e| ExperimentError::io(&stale, e))?;
                }
            }
        }
        let recorder = Recorder {
            spec,
            dir,
            data_source,
            rows,
            units,
            base: row_base(spec),
        };
        recorder.write_metrics()?;
        recorder.write_state(RunStatus::Running, None)?;
        Ok(recorder)
    }

    /// The run directory.
    pub(crate) fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// A row with the run's identity columns, the measured ones empty.
    pub(crate) fn row(&self) -> MetricsRow {
        self.base.clone()
    }

    /// Record the divergence `d`, with the partial row of the epoch or
    /// period it happened in.
    pub(crate) fn diverged(&mut self, d: Divergence, row: MetricsRow) -> Result<RunOutcome> {
        self.rows.push(row);
        self.write_metrics()?;
        self.write_state(RunStatus::Diverged, Some(d.to_string()))?;
        Ok(RunOutcome::Diverged(d))
    }

    /// Record a completed epoch or evaluation: its row, then the trainer
    /// state (`save` writes it to the path it is given), then the status.
    pub(crate) fn record(
        &mut self,
        row: MetricsRow,
        save: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        self.rows.push(row);
        self.write_metrics()?;
        save(&self.dir.checkpoint())?;
        let status = if self.rows.len() == self.units {
            RunStatus::Finished
        } else {
            RunStatus::Running
        };
        self.write_state(status, None)
    }

    /// End the run: the status `finished` once every row is there.
    pub(crate) fn finish(self) -> Result<RunOutcome> {
        if self.rows.len() == self.units {
            self.write_state(RunStatus::Finished, None)?;
        }
        Ok(RunOutcome::Finished(summary(self.spec, self.rows)))
    }

    /// `metrics.csv`: a language model's with its perplexity column.
    fn write_metrics(&self) -> Result<()> {
        match self.spec.task() {
            Task::Classifier => write_metrics(&self.dir.metrics_csv(), &self.rows),
            Task::LanguageModel => {
                write_metrics_with_perplexity(&self.dir.metrics_csv(), &self.rows)
            }
        }
    }

    fn write_state(&self, status: RunStatus, message: Option<String>) -> Result<()> {
        write_state(
            self.spec,
            &self.dir,
            &self.data_source,
            status,
            &self.rows,
            message,
        )
    }
}

/// A checkpoint with the run it belongs to.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The checkpoint file.
    pub checkpoint_path: PathBuf,
    /// The run's `run.toml`.
    pub run: RunFile,
    /// The decoded checkpoint (format and checksum verified).
    pub checkpoint: Checkpoint,
}

/// Load a checkpoint named by `path`: a run directory (its
/// `checkpoint.bin`) or a checkpoint file whose directory holds the run's
/// `run.toml`. Errors name the missing or corrupt file, and a checkpoint
/// saved from another network than `run.toml` describes.
pub fn load_checkpoint(path: &Path) -> Result<LoadedCheckpoint> {
    let not_found = |reason: String| ExperimentError::BadFile {
        path: path.to_path_buf(),
        reason,
    };
    let (run_dir, checkpoint_path) = if path.is_dir() {
        (path.to_path_buf(), path.join(CHECKPOINT_BIN))
    } else if path.is_file() {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, path.to_path_buf())
    } else {
        return Err(not_found(
            "no such run directory or checkpoint file".to_string(),
        ));
    };
    let run_toml = run_dir.join(RUN_TOML);
    if !run_toml.is_file() {
        return Err(not_found(format!(
            "not a run directory: {} is missing (a checkpoint is read with the run.toml of its run)",
            run_toml.display()
        )));
    }
    if !checkpoint_path.is_file() {
        return Err(not_found(format!(
            "{} is missing: the run has no completed epoch",
            checkpoint_path.display()
        )));
    }
    let run = RunFile::read(&run_toml)?;
    let checkpoint = Checkpoint::load(&checkpoint_path)?;
    if checkpoint.network != run.spec.net {
        return Err(ExperimentError::BadFile {
            path: checkpoint_path,
            reason: format!(
                "saved from network '{}', but {} describes '{}'",
                checkpoint.network,
                run_toml.display(),
                run.spec.net
            ),
        });
    }
    Ok(LoadedCheckpoint {
        run_dir,
        checkpoint_path,
        run,
        checkpoint,
    })
}

/// The vocabulary of the run in `run_dir`: the characters of its
/// `vocab.txt`, in id order.
pub fn read_vocab(run_dir: &Path) -> Result<Vec<char>> {
    let path = run_dir.join(VOCAB_TXT);
    let vocab: Vec<char> = std::fs::read_to_string(&path)
        .map_err(|e| ExperimentError::io(&path, e))?
        .chars()
        .collect();
    if vocab.is_empty() {
        return Err(ExperimentError::BadFile {
            path,
            reason: "is empty; it should hold the training text's characters".into(),
        });
    }
    Ok(vocab)
}
