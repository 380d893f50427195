//! The options of a training run as a user gives them (the flags of
//! `approxtrain train`), turned into the [`RunSpec`], run directory and
//! [`StartMode`] of [`crate::run::train`]: defaults, `--spec` and `--init`
//! bases, plan files, `--resume`. Paths are made absolute here and every
//! value is range-checked ([`RunSpec::validate`]) before anything is
//! created; the CLI only parses and prints.

use std::path::{Path, PathBuf};

use amsim::ModelInfo;

use crate::error::{ExperimentError, Result};
use crate::eval::EvalPlan;
use crate::plan_file::PlanFile;
use crate::run_dir::{StartMode, RUN_TOML};
use crate::spec::{OptimizerKind, RunFile, RunSpec, ScheduleKind, Task};

/// The most worker threads a run (or `--threads`) may ask for: far above
/// any machine's cores, far below what starts to exhaust the process.
pub const MAX_THREADS: usize = 1024;

/// Check a `--threads` value: at least 1 and at most [`MAX_THREADS`].
pub fn check_threads(n: usize) -> Result<usize> {
    if n == 0 || n > MAX_THREADS {
        return Err(ExperimentError::Other(format!(
            "--threads {n}: give a count from 1 to {MAX_THREADS} (this machine has {} cores)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )));
    }
    Ok(n)
}

/// The options of one training run; `None` leaves the base spec's value
/// (the defaults, a `--spec` run.toml, or the run of `--init`).
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub net: Option<String>,
    pub dataset: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub multiplier: Option<String>,
    pub plan: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub batch_size: Option<usize>,
    pub eval_batch_size: Option<usize>,
    pub seed: Option<u64>,
    pub out: Option<PathBuf>,
    pub optimizer: Option<String>,
    pub lr: Option<f64>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub nesterov: Option<bool>,
    pub schedule: Option<String>,
    pub step_epochs: Option<usize>,
    pub gamma: Option<f64>,
    pub warmup_epochs: Option<usize>,
    pub augment: Option<bool>,
    pub label_smoothing: Option<f64>,
    pub decay_bn_bias: Option<bool>,
    pub train_limit: Option<usize>,
    pub test_limit: Option<usize>,
    /// Continue the run in this directory.
    pub resume: Option<PathBuf>,
    /// Base spec: a run.toml.
    pub spec: Option<PathBuf>,
    /// Fine-tune from the weights of this run.
    pub init: Option<PathBuf>,
    /// Start over (new run), or resume although the inputs changed.
    pub force: bool,
    pub lm: LmOptions,
}

/// The options of `--net transformer`.
#[derive(Debug, Clone, Default)]
pub struct LmOptions {
    pub steps: Option<usize>,
    pub eval_every: Option<usize>,
    pub clip_norm: Option<f64>,
    pub layers: Option<usize>,
    pub width: Option<usize>,
    pub heads: Option<usize>,
    pub context: Option<usize>,
    pub positions: Option<String>,
    pub tied_head: Option<bool>,
    pub warmup_steps: Option<usize>,
    pub eval_windows: Option<usize>,
}

impl LmOptions {
    /// Flags that change the run (all but --steps, which may extend a
    /// resumed run).
    fn given(&self) -> Vec<&'static str> {
        [
            (self.eval_every.is_some(), "--eval-every"),
            (self.clip_norm.is_some(), "--clip-norm"),
            (self.layers.is_some(), "--layers"),
            (self.width.is_some(), "--width"),
            (self.heads.is_some(), "--heads"),
            (self.context.is_some(), "--context"),
            (self.positions.is_some(), "--positions"),
            (self.tied_head.is_some(), "--tied-head"),
            (self.warmup_steps.is_some(), "--warmup-steps"),
            (self.eval_windows.is_some(), "--eval-windows"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect()
    }

    /// Apply the options to `spec`.
    fn apply(&self, spec: &mut RunSpec, epochs_given: bool) {
        if let Some(n) = self.steps {
            spec.steps = Some(n);
        } else if epochs_given && spec.task() == Task::LanguageModel {
            spec.steps = None;
        }
        if self.eval_every.is_some() {
            spec.eval_every = self.eval_every;
        }
        if self.clip_norm.is_some() {
            spec.clip_norm = self.clip_norm;
        }
        let model_flags = self.given().len()
            - usize::from(self.eval_every.is_some())
            - usize::from(self.clip_norm.is_some());
        if model_flags == 0 {
            return;
        }
        let t = spec.transformer.get_or_insert_with(Default::default);
        let set = |dst: &mut usize, src: Option<usize>| {
            if let Some(v) = src {
                *dst = v;
            }
        };
        set(&mut t.layers, self.layers);
        set(&mut t.width, self.width);
        set(&mut t.heads, self.heads);
        set(&mut t.context, self.context);
        set(&mut t.warmup_steps, self.warmup_steps);
        set(&mut t.eval_windows, self.eval_windows);
        if let Some(p) = &self.positions {
            t.positions = p.clone();
        }
        if let Some(v) = self.tied_head {
            t.tied_head = v;
        }
    }
}

/// A run ready for [`crate::run::train`]: its spec (validated, paths
/// absolute), its directory and how to start in it.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// The spec.
    pub spec: RunSpec,
    /// The run directory.
    pub dir: PathBuf,
    /// Fresh, resumed or forced.
    pub mode: StartMode,
}

/// `path` made absolute against the working directory, so that a run
/// resumed from elsewhere reads the same files.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| ExperimentError::io(path, e))
}

impl TrainOptions {
    /// Options other than --epochs / --steps / --data-dir, which cannot
    /// change a run that is resumed.
    fn resume_conflicts(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = [
            (self.batch_size.is_some(), "--batch-size"),
            (self.seed.is_some(), "--seed"),
            (self.optimizer.is_some(), "--optimizer"),
            (self.lr.is_some(), "--lr"),
            (self.momentum.is_some(), "--momentum"),
            (self.weight_decay.is_some(), "--weight-decay"),
            (self.nesterov.is_some(), "--nesterov"),
            (self.schedule.is_some(), "--schedule"),
            (self.step_epochs.is_some(), "--step-epochs"),
            (self.gamma.is_some(), "--gamma"),
            (self.warmup_epochs.is_some(), "--warmup-epochs"),
            (self.augment.is_some(), "--augment"),
            (self.label_smoothing.is_some(), "--label-smoothing"),
            (self.decay_bn_bias.is_some(), "--decay-bn-bias"),
            (self.train_limit.is_some(), "--train-limit"),
            (self.test_limit.is_some(), "--test-limit"),
            (self.eval_batch_size.is_some(), "--eval-batch-size"),
        ]
        .into_iter()
        .filter_map(|(given, flag)| given.then_some(flag))
        .collect();
        v.extend(self.lm.given());
        v
    }

    /// The run these options describe, `threads` worker threads recorded
    /// in its spec: a resumed one (`resume`) or a new one. Nothing is
    /// created; every error names the option or file and the fix.
    pub fn plan(&self, threads: usize, models: &[ModelInfo]) -> Result<PlannedRun> {
        check_threads(threads)?;
        let planned = match &self.resume {
            Some(dir) => PlannedRun {
                spec: self.resume_spec(dir)?,
                dir: dir.clone(),
                mode: if self.force {
                    StartMode::ResumeChanged
                } else {
                    StartMode::Resume
                },
            },
            None => {
                let spec = self.new_spec(models)?;
                let dir = self
                    .out
                    .clone()
                    .unwrap_or_else(|| Path::new("runs").join(spec.run_id()));
                PlannedRun {
                    spec,
                    dir,
                    mode: if self.force {
                        StartMode::Force
                    } else {
                        StartMode::New
                    },
                }
            }
        };
        let mut planned = planned;
        planned.spec.threads = Some(threads);
        planned.spec.validate()?;
        Ok(planned)
    }

    /// The spec recorded in `dir`, extended by --epochs / --steps and
    /// pointed at --data-dir.
    fn resume_spec(&self, dir: &Path) -> Result<RunSpec> {
        let conflicts = self.resume_conflicts();
        if !conflicts.is_empty() {
            return Err(ExperimentError::BadSpec(format!(
                "--resume continues the run as recorded in {}; it cannot change {}",
                dir.join(RUN_TOML).display(),
                conflicts.join(", ")
            )));
        }
        let run_toml = dir.join(RUN_TOML);
        let mut spec = match RunFile::read(&run_toml) {
            Ok(f) => f.spec,
            Err(ExperimentError::Io { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(ExperimentError::NotResumable {
                    dir: dir.to_path_buf(),
                    reason: format!("{} does not exist", run_toml.display()),
                })
            }
            Err(e) => return Err(e),
        };
        if let Some(e) = self.epochs {
            spec.epochs = e;
        }
        self.lm.apply(&mut spec, self.epochs.is_some());
        if let Some(d) = &self.data_dir {
            spec.data_dir = Some(absolute(d)?);
        }
        Ok(spec)
    }

    /// The attention roles (`attn_qk`, `attn_av`) in `--multiplier` or a
    /// plan file act in a Transformer only: for another network they are
    /// an error rather than ignored.
    fn refuse_attention_roles(&self, spec: &RunSpec) -> Result<()> {
        if spec.task() == Task::LanguageModel {
            return Ok(());
        }
        let is_role = |key: &str| matches!(key.trim(), "attn_qk" | "attn_av");
        let in_multiplier = self.multiplier.as_deref().is_some_and(|m| {
            m.split(',')
                .any(|part| part.split_once('=').is_some_and(|(k, _)| is_role(k)))
        });
        let in_plan = match &self.plan {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ExperimentError::io(p, e))?
                .lines()
                .any(|l| l.split_once('=').is_some_and(|(k, _)| is_role(k))),
            None => false,
        };
        let place = match (in_multiplier, in_plan, &self.plan) {
            (true, _, _) => "--multiplier".to_string(),
            (false, true, Some(p)) => format!("plan file {}", p.display()),
            _ => return Ok(()),
        };
        Err(ExperimentError::BadSpec(format!(
            "{place} sets attn_qk or attn_av, but {} has no attention (only --net transformer \
             does); remove them",
            spec.net
        )))
    }

    /// The spec of a new run: the base (defaults, --spec or --init) with
    /// the options given applied.
    fn new_spec(&self, models: &[ModelInfo]) -> Result<RunSpec> {
        let mut spec = match (&self.spec, &self.init) {
            (Some(p), _) => RunFile::read(p)?.spec,
            (None, Some(init)) => crate::run::fine_tuning_spec(init)?,
            (None, None) => RunSpec::with_defaults(
                self.net.as_deref().unwrap_or_default(),
                self.dataset.as_deref().unwrap_or("mnist"),
            ),
        };
        if self.init.is_some() {
            spec.init = self.init.clone();
        }
        if let Some(n) = &self.net {
            spec.net = n.clone();
        }
        if let Some(d) = &self.dataset {
            spec.dataset = d.clone();
        }
        if let Some(v) = self.augment {
            spec.augment = v;
        }
        if let Some(v) = self.label_smoothing {
            spec.label_smoothing = v;
        }
        if let Some(v) = self.decay_bn_bias {
            spec.optimizer.decay_bn_bias = v;
        }
        if let Some(d) = &self.data_dir {
            spec.data_dir = Some(absolute(d)?);
        }
        let set = |dst: &mut usize, src: Option<usize>| {
            if let Some(v) = src {
                *dst = v;
            }
        };
        set(&mut spec.epochs, self.epochs);
        self.lm.apply(&mut spec, self.epochs.is_some());
        set(&mut spec.batch_size, self.batch_size);
        set(&mut spec.eval_batch_size, self.eval_batch_size);
        set(&mut spec.schedule.step_epochs, self.step_epochs);
        if let Some(s) = self.seed {
            spec.seed = s;
        }
        if let Some(o) = &self.optimizer {
            spec.optimizer.switch_to(o.parse::<OptimizerKind>()?);
        }
        if let Some(v) = self.lr {
            spec.optimizer.lr = v;
        }
        if let Some(v) = self.momentum {
            spec.optimizer.momentum = v;
        }
        if let Some(v) = self.weight_decay {
            spec.optimizer.weight_decay = v;
        }
        if let Some(v) = self.nesterov {
            spec.optimizer.nesterov = v;
        }
        if let Some(s) = &self.schedule {
            spec.schedule.switch_to(s.parse::<ScheduleKind>()?);
        }
        set(&mut spec.schedule.warmup_epochs, self.warmup_epochs);
        if let Some(g) = self.gamma {
            spec.schedule.gamma = g;
        }
        if self.train_limit.is_some() {
            spec.train_limit = self.train_limit;
        }
        if self.test_limit.is_some() {
            spec.test_limit = self.test_limit;
        }
        if let Some(m) = &self.multiplier {
            let plan: amsim::PlanSpec = m.parse()?;
            spec.multiplier = plan.to_string();
            if self.spec.is_some() && self.plan.is_none() {
                spec.layers.clear();
            }
        }
        self.refuse_attention_roles(&spec)?;
        if let Some(path) = &self.plan {
            let file = PlanFile::read(path)?;
            if self.multiplier.is_some() && !file.default.is_empty() {
                return Err(ExperimentError::BadSpec(format!(
                    "{}: sets the default multiplier, and so does --multiplier; give it in one place",
                    path.display()
                )));
            }
            let plan = EvalPlan::from_file_for_spec(&file, &spec, models)?;
            spec.multiplier = plan.multiplier;
            spec.layers = plan.layers;
        }
        Ok(spec)
    }
}
