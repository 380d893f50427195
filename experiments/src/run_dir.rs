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
use crate::identity::RunIdentity;
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
    /// [`StartMode::Resume`] although what defines the run changed (its
    /// data files, tables or code version; `--resume DIR --force`): the
    /// changes are accepted and the new identity recorded.
    ResumeChanged,
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
    /// The loss (NaN or infinite), or NaN when the weights stopped being
    /// finite.
    pub loss: f64,
    /// What stopped being finite, as a phrase (`loss is NaN`, `test loss is
    /// inf`, `12 weights are not finite (first in conv1.weight)`).
    pub what: String,
}

impl Divergence {
    /// A divergence at `epoch` (1-based) and `step` whose `quantity`
    /// (`loss`, `test loss`) is the non-finite `value`.
    pub fn of_loss(epoch: usize, step: u64, quantity: &str, value: f64) -> Divergence {
        let shown = if value.is_nan() {
            "NaN".to_string()
        } else {
            format!("{value}")
        };
        Divergence {
            epoch,
            step,
            loss: value,
            what: format!("{quantity} is {shown}"),
        }
    }
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "training diverged at epoch {} step {}: {}; try a lower learning rate (--lr), \
             a smaller batch, or a multiplier plan with exact gradients (dx=fp32,dw=fp32)",
            self.epoch, self.step, self.what
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

/// The lock file inside a run directory (see [`lock_run_dir`]).
pub const LOCK_FILE: &str = ".lock";

/// An exclusive hold on a run directory, released when dropped or when
/// the process ends in any way (the operating system drops the lock of a
/// killed process, so an interruption never leaves a stale lock).
#[derive(Debug)]
pub struct RunDirLock {
    _file: std::fs::File,
    /// The directory, when taking the lock created it: removed again on
    /// release if nothing but the lock file was written there (a run
    /// refused before its first file leaves nothing behind).
    created: Option<PathBuf>,
}

impl Drop for RunDirLock {
    fn drop(&mut self) {
        let Some(dir) = &self.created else { return };
        let only_lock = std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()
                .is_ok_and(|names| names == [std::ffi::OsString::from(LOCK_FILE)])
        });
        if only_lock {
            let _ = std::fs::remove_file(dir.join(LOCK_FILE));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Take the run directory `dir` (created if needed) for this process: the
/// one lock of a run directory, held by `train` (new, `--resume`,
/// `--force`), every sweep entry, `eval --force` and `sensitivity` while
/// they write there, so that two processes never write the same files. It
/// is an advisory lock (`flock` on Unix, `LockFileEx` on Windows) on
/// `dir/.lock`; the file stays, holding the pid of its last owner. A held
/// lock is [`ExperimentError::Locked`].
pub fn lock_run_dir(dir: &Path) -> Result<RunDirLock> {
    use std::io::Write as _;
    let created = (!dir.exists()).then(|| dir.to_path_buf());
    std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    let path = dir.join(LOCK_FILE);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| ExperimentError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let owner = std::fs::read_to_string(&path).unwrap_or_default();
            let owner = owner.trim();
            return Err(ExperimentError::Locked {
                dir: dir.to_path_buf(),
                owner: if owner.is_empty() {
                    "lock held".into()
                } else {
                    owner.into()
                },
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(ExperimentError::io(&path, e)),
    }
    // Who holds it, for the message above; not needed for correctness.
    let _ = file
        .set_len(0)
        .and_then(|_| write!(file, "pid {}", std::process::id()));
    Ok(RunDirLock {
        _file: file,
        created,
    })
}

/// [`lock_run_dir`] of `dir` when it is a run directory (holds
/// `run.toml`); `None` for any other folder, which is left as it is.
pub fn lock_if_run_dir(dir: Option<&Path>) -> Result<Option<RunDirLock>> {
    let dir = match dir {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => return Ok(None),
    };
    if dir.join(RUN_TOML).is_file() {
        lock_run_dir(dir).map(Some)
    } else {
        Ok(None)
    }
}

/// What a run reads, resolved before its directory is touched: where its
/// data comes from (in words, for `run.toml`) and its identity.
#[derive(Debug, Clone)]
pub(crate) struct RunInputs {
    pub(crate) data_source: String,
    pub(crate) identity: RunIdentity,
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
    inputs: &RunInputs,
) -> Result<Start> {
    let resume = matches!(mode, StartMode::Resume | StartMode::ResumeChanged);
    let fresh = Start::Train {
        rows: Vec::new(),
        state: None,
    };
    let run_toml = dir.run_toml();
    if !run_toml.exists() {
        if resume {
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
        StartMode::Resume | StartMode::ResumeChanged => {
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
            let state = if ckpt.exists() {
                Some(Checkpoint::load(&ckpt)?)
            } else {
                None
            };
            let mut changes = identity_changes(&stored.run, inputs);
            if let Some(state) = state.as_ref().filter(|s| s.seed != spec.seed) {
                changes.push(format!(
                    "{}: saved by a run of seed {}, but this run has seed {}",
                    ckpt.display(),
                    state.seed,
                    spec.seed
                ));
            }
            if !changes.is_empty() && mode == StartMode::Resume {
                return Err(ExperimentError::RunChanged {
                    dir: dir.path().to_path_buf(),
                    changes: changes.join("; "),
                });
            }
            let Some(state) = state else {
                return Ok(fresh);
            };
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
                // Killed after its last checkpoint, before run.toml said
                // so: record the end now.
                if stored.run.status != RunStatus::Finished {
                    write_state(spec, dir, inputs, RunStatus::Finished, &rows, None)?;
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

/// Lock `dir` (see [`RunDirLock`]: a directory the lock created is
/// removed again if the run stops before writing to it), remove the temp
/// files a killed process left there, and decide where to start
/// (`prepare`).
pub(crate) fn locked_start(
    dir: &RunDir,
    prepare: impl FnOnce(&RunDir) -> Result<Start>,
) -> Result<(RunDirLock, Start)> {
    let lock = lock_run_dir(dir.path())?;
    // Temp files of a whole-file write that a killed process left: no
    // other process writes here while the lock is held.
    for name in [RUN_TOML, METRICS_CSV, CHECKPOINT_BIN, VOCAB_TXT] {
        let tmp = dir.path().join(format!("{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(|e| ExperimentError::io(&tmp, e))?;
        }
    }
    Ok((lock, prepare(dir)?))
}

/// What changed between the run recorded in `stored` and the inputs of
/// this one: the identity's changes, or for a run recorded without an
/// identity, where its data came from.
fn identity_changes(stored: &RunState, inputs: &RunInputs) -> Vec<String> {
    if let Some(was) = &stored.identity {
        return was.changes(&inputs.identity);
    }
    let Some(was) = &stored.data else {
        return Vec::new();
    };
    let now = &inputs.data_source;
    let same = was == now
        || matches!(
            (std::path::absolute(was), std::path::absolute(now)),
            (Ok(a), Ok(b)) if a == b
        );
    if same {
        Vec::new()
    } else {
        vec![format!("data: {was} -> {now}")]
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
    inputs: &RunInputs,
    status: RunStatus,
    rows: &[MetricsRow],
    message: Option<String>,
) -> Result<()> {
    let completed: Vec<&MetricsRow> = rows
        .iter()
        .filter(|r| {
            r.test_accuracy.is_finite() && r.test_loss.is_finite() && r.train_loss.is_finite()
        })
        .collect();
    RunFile {
        run: RunState {
            run_id: spec.run_id(),
            status,
            epochs_completed: completed.len(),
            test_accuracy: completed.last().map(|r| r.test_accuracy),
            data: Some(inputs.data_source.clone()),
            message,
            identity: Some(inputs.identity.clone()),
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
    /// The trainer state, as the checkpoint holds it.
    fn checkpoint(&self) -> Checkpoint;
}

/// The training loop of every task: from the rows `recorder` holds to its
/// last period, each period announced, trained, checked ([`divergence`]),
/// then recorded (row, checkpoint, status) or ended as a divergence or an
/// interruption. An error (a full disk, an unreadable file) is recorded as
/// the status `failed` before it is returned.
pub(crate) fn train_periods(
    mut recorder: Recorder<'_>,
    trainer: &mut impl PeriodTrainer,
    observer: &mut dyn RunObserver,
) -> Result<RunOutcome> {
    match run_periods(&mut recorder, trainer, observer) {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            // Best effort: the disk may be the reason it failed.
            let _ = recorder.write_state(RunStatus::Failed, Some(e.to_string()));
            Err(e)
        }
    }
}

fn run_periods(
    recorder: &mut Recorder<'_>,
    trainer: &mut impl PeriodTrainer,
    observer: &mut dyn RunObserver,
) -> Result<RunOutcome> {
    for k in recorder.rows.len()..recorder.units {
        observer.epoch_started(&trainer.announce(k));
        match trainer.period(k, recorder.row(), observer)? {
            Period::Done(row) => {
                let checkpoint = trainer.checkpoint();
                if let Some(d) = divergence(&row, &checkpoint) {
                    return recorder.diverged(d, row);
                }
                recorder.record(row.clone(), &checkpoint)?;
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

/// The one divergence check of a completed period, for every network and
/// task: its training and test losses and every weight of the state about
/// to be checkpointed must be finite.
pub(crate) fn divergence(row: &MetricsRow, checkpoint: &Checkpoint) -> Option<Divergence> {
    for (quantity, value) in [
        ("training loss", row.train_loss),
        ("test loss", row.test_loss),
    ] {
        if !value.is_finite() {
            return Some(Divergence::of_loss(
                row.epoch,
                row.step,
                quantity,
                value as f64,
            ));
        }
    }
    let mut first = None;
    let mut count = 0usize;
    for p in &checkpoint.params {
        let bad = p.values.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 && first.is_none() {
            first = Some(p.name.clone());
        }
        count += bad;
    }
    first.map(|name| Divergence {
        epoch: row.epoch,
        step: row.step,
        loss: f64::NAN,
        what: format!("{count} weights are not finite (first in {name})"),
    })
}

/// Writes what a training loop completes, the same way for every task:
/// per completed epoch (or evaluation) `metrics.csv`, then the trainer
/// state, then `run.toml`; a divergence as a last partial row and the
/// status `diverged`. Holds the run directory's lock.
pub(crate) struct Recorder<'a> {
    spec: &'a RunSpec,
    dir: RunDir,
    inputs: RunInputs,
    rows: Vec<MetricsRow>,
    /// Rows of the finished run: its epochs, or a language model's
    /// evaluations.
    units: usize,
    base: MetricsRow,
    _lock: RunDirLock,
}

impl<'a> Recorder<'a> {
    /// Open `dir` (locked by `lock`) to train `spec` on from `rows`
    /// (`units` rows when finished): remove the metrics and checkpoint of
    /// an earlier run when starting from scratch (`fresh`), write the rows
    /// so far and the status `running` with the run's `inputs`.
    pub(crate) fn begin(
        spec: &'a RunSpec,
        dir: RunDir,
        lock: RunDirLock,
        inputs: RunInputs,
        rows: Vec<MetricsRow>,
        units: usize,
        fresh: bool,
    ) -> Result<Self> {
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
            inputs,
            rows,
            units,
            base: row_base(spec),
            _lock: lock,
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
    /// state `checkpoint`, then the status.
    pub(crate) fn record(&mut self, row: MetricsRow, checkpoint: &Checkpoint) -> Result<()> {
        self.rows.push(row);
        let written = self
            .write_metrics()
            .and_then(|()| Ok(checkpoint.save(&self.dir.checkpoint())?));
        if let Err(e) = written {
            // Not completed: the state records the checkpointed rows only.
            self.rows.pop();
            return Err(e);
        }
        let status = if self.rows.len() == self.units {
            RunStatus::Finished
        } else {
            RunStatus::Running
        };
        self.write_state(status, None)
    }

    /// End the run: the status `finished` once every row is there.
    pub(crate) fn finish(&mut self) -> Result<RunOutcome> {
        if self.rows.len() == self.units {
            self.write_state(RunStatus::Finished, None)?;
        }
        Ok(RunOutcome::Finished(summary(self.spec, self.rows.clone())))
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
            &self.inputs,
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

#[cfg(test)]
mod tests {
    use super::*;
    use nets::checkpoint::SavedParam;

    /// A trainer whose periods end with the given losses and weights.
    struct Scripted {
        losses: Vec<(f32, f32)>,
        weights: Vec<f32>,
        done: usize,
    }

    impl PeriodTrainer for Scripted {
        fn announce(&self, k: usize) -> EpochStart {
            EpochStart {
                epoch: k + 1,
                epochs: self.losses.len(),
                batches: 1,
                images: 1,
                lm: None,
            }
        }

        fn period(
            &mut self,
            k: usize,
            row: MetricsRow,
            _observer: &mut dyn RunObserver,
        ) -> Result<Period> {
            self.done = k + 1;
            let (train_loss, test_loss) = self.losses[k];
            Ok(Period::Done(MetricsRow {
                epoch: k + 1,
                step: k as u64 + 1,
                train_loss,
                train_accuracy: 0.5,
                test_loss,
                test_accuracy: 0.5,
                ..row
            }))
        }

        fn checkpoint(&self) -> Checkpoint {
            Checkpoint {
                network: "lenet300100".into(),
                seed: 1,
                epoch: self.done as u64,
                global_step: self.done as u64,
                optimizer: "sgd".into(),
                optimizer_steps: self.done as u64,
                params: vec![SavedParam {
                    name: "fc1.weight".into(),
                    shape: vec![self.weights.len()],
                    values: self.weights.clone(),
                }],
                optimizer_slots: vec![],
            }
        }
    }

    /// Train `trainer` in a fresh directory: its outcome and `run.toml`.
    fn outcome_of(trainer: &mut Scripted) -> (RunOutcome, RunFile) {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = RunSpec::with_defaults("lenet300100", "mnist");
        spec.epochs = trainer.losses.len();
        let dir = RunDir::new(tmp.path().join("run"));
        let lock = lock_run_dir(dir.path()).unwrap();
        let inputs = RunInputs {
            data_source: "test data".into(),
            identity: RunIdentity::new(Vec::new(), spec.table_identities().unwrap()),
        };
        let recorder = Recorder::begin(
            &spec,
            dir.clone(),
            lock,
            inputs,
            Vec::new(),
            spec.epochs,
            true,
        )
        .unwrap();
        let outcome = train_periods(recorder, trainer, &mut Silent).unwrap();
        (outcome, RunFile::read(&dir.run_toml()).unwrap())
    }

    #[test]
    fn a_non_finite_test_loss_or_weight_is_a_divergence_not_a_finished_run() {
        // (training and test loss of each epoch, the weights, what diverged)
        type Case = (Vec<(f32, f32)>, Vec<f32>, &'static str);
        let cases: [Case; 3] = [
            (
                vec![(0.5, 0.4), (9.8e29, f32::NAN)],
                vec![0.1, 0.2],
                "test loss is NaN",
            ),
            (
                vec![(f32::INFINITY, 0.4)],
                vec![0.1],
                "training loss is inf",
            ),
            (
                vec![(0.5, 0.4), (0.5, 0.4)],
                vec![f32::NAN, 0.2, f32::INFINITY],
                "2 weights are not finite (first in fc1.weight)",
            ),
        ];
        for (losses, weights, what) in cases {
            let mut trainer = Scripted {
                losses,
                weights,
                done: 0,
            };
            let (outcome, file) = outcome_of(&mut trainer);
            let RunOutcome::Diverged(d) = outcome else {
                panic!("{what}: {outcome:?}")
            };
            assert_eq!(d.what, what);
            assert_eq!(file.run.status, RunStatus::Diverged);
            assert!(file.run.message.unwrap().contains(what));
        }
        // Finite throughout: finished.
        let mut trainer = Scripted {
            losses: vec![(0.5, 0.4), (0.3, 0.2)],
            weights: vec![0.1],
            done: 0,
        };
        let (outcome, file) = outcome_of(&mut trainer);
        assert!(matches!(outcome, RunOutcome::Finished(_)), "{outcome:?}");
        assert_eq!(file.run.status, RunStatus::Finished);
    }
}
