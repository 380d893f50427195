//! [`RunSpec`]: everything that determines a training run, stored as the
//! `[spec]` table of `DIR/run.toml` so the run can be repeated or resumed
//! from that file alone.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use amsim::PlanSpec;
use nets::transformer::{Positions, TransformerConfig};
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{ExperimentError, Result};
use crate::identity::{FileIdentity, RunIdentity};

/// Networks `approxtrain train` can build: the classifiers of
/// [`nets::model::NETWORK_NAMES`] and [`TRANSFORMER`].
pub fn net_names() -> impl Iterator<Item = &'static str> {
    nets::model::NETWORK_NAMES
        .into_iter()
        .chain(std::iter::once(TRANSFORMER))
}

/// What a run's network learns from its data. Told apart once, from the
/// network's name ([`Task::of_net`]); `run.toml` stays flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// An image classifier (LeNet, ResNet) on an image dataset, trained in
    /// epochs; `metrics.csv` has a row per epoch.
    Classifier,
    /// The character-level Transformer on a text file (`text:PATH`),
    /// trained in steps ([`TransformerSpec`]); a row per evaluation.
    LanguageModel,
}

impl Task {
    /// The task of the network `net`.
    pub fn of_net(net: &str) -> Task {
        if net == TRANSFORMER {
            Task::LanguageModel
        } else {
            Task::Classifier
        }
    }
}

/// The most epochs (and epochs of a schedule) a run may ask for.
pub const MAX_EPOCHS: u64 = 1_000_000;
/// The largest training or evaluation batch.
pub const MAX_BATCH: u64 = 1 << 24;
/// The most optimizer steps of a language-model run.
pub const MAX_STEPS: u64 = 1 << 40;

/// Datasets `approxtrain train` can load (and `text:PATH`, a UTF-8 text
/// file, for the transformer).
pub const DATASETS: &[&str] = &["mnist", "fashion-mnist", "cifar10"];

/// The optimizer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with optional (Nesterov) momentum.
    Sgd,
    /// Adam with decoupled weight decay (AdamW when `weight_decay > 0`).
    Adam,
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        })
    }
}

impl FromStr for OptimizerKind {
    type Err = ExperimentError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(OptimizerKind::Sgd),
            "adam" | "adamw" => Ok(OptimizerKind::Adam),
            _ => Err(ExperimentError::BadSpec(format!(
                "unknown optimizer '{s}'; valid optimizers: sgd, adam"
            ))),
        }
    }
}

/// Optimizer and its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// Family.
    pub kind: OptimizerKind,
    /// Base learning rate (before the schedule).
    pub lr: f64,
    /// SGD momentum (ignored by Adam).
    pub momentum: f64,
    /// SGD: Nesterov momentum.
    pub nesterov: bool,
    /// L2 weight decay (SGD) or decoupled weight decay (Adam).
    pub weight_decay: f64,
    /// Adam beta1.
    pub beta1: f64,
    /// Adam beta2.
    pub beta2: f64,
    /// Adam epsilon.
    pub eps: f64,
    /// Apply weight decay to one-dimensional parameters too (biases and
    /// batch-norm γ, β). Off by default: decaying them only pulls the
    /// normalisation's scale towards zero (Goyal et al., "Accurate, Large
    /// Minibatch SGD", 2017, section 5.1, and the usual ResNet recipes).
    #[serde(default, skip_serializing_if = "is_false")]
    pub decay_bn_bias: bool,
}

impl OptimizerSpec {
    /// Change the family to `kind`; a switch from SGD to Adam takes Adam's
    /// default learning rate (1e-3), which a given `--lr` then replaces.
    pub fn switch_to(&mut self, kind: OptimizerKind) {
        if kind != self.kind && kind == OptimizerKind::Adam {
            self.lr = 1e-3;
        }
        self.kind = kind;
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Learning-rate schedule over the epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `step_epochs` epochs.
    Step,
    /// Cosine decay from the base rate to zero over the run's epochs
    /// (Loshchilov & Hutter, "SGDR", ICLR 2017, without restarts).
    Cosine,
    /// One cycle (Smith & Topin, "Super-Convergence", 2019): cosine up from
    /// lr/25 to lr over the warm-up epochs (30% of the run when none are
    /// given), then cosine down to lr/250000, per step.
    OneCycle,
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScheduleKind::Constant => "constant",
            ScheduleKind::Step => "step",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::OneCycle => "onecycle",
        })
    }
}

impl FromStr for ScheduleKind {
    type Err = ExperimentError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "constant" => Ok(ScheduleKind::Constant),
            "step" => Ok(ScheduleKind::Step),
            "cosine" => Ok(ScheduleKind::Cosine),
            "onecycle" | "one-cycle" => Ok(ScheduleKind::OneCycle),
            _ => Err(ExperimentError::BadSpec(format!(
                "unknown schedule '{s}'; valid schedules: constant, step, cosine, onecycle"
            ))),
        }
    }
}

/// Schedule and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Family.
    pub kind: ScheduleKind,
    /// Step schedule: epochs between decays.
    pub step_epochs: usize,
    /// Step schedule: decay factor.
    pub gamma: f64,
    /// Cosine schedule: epochs of linear warm-up from zero before the decay,
    /// capped at half the run (so a one-epoch run warms up over half an
    /// epoch). Without it LeNet-5 at lr 0.05 loses its first epochs on
    /// small training sets (6,000 MNIST images: 86.6% test accuracy after
    /// 3 epochs without warm-up, 95.7% with one epoch of it).
    #[serde(default)]
    pub warmup_epochs: usize,
}

impl ScheduleSpec {
    /// Change the family to `kind`; one without warm-up (constant, step)
    /// drops the warm-up epochs, which a given `--warmup-epochs` then
    /// replaces.
    pub fn switch_to(&mut self, kind: ScheduleKind) {
        if !matches!(kind, ScheduleKind::Cosine | ScheduleKind::OneCycle) {
            self.warmup_epochs = 0;
        }
        self.kind = kind;
    }
}

/// Everything that determines the result of a training run.
///
/// Two specs that differ only in [`RunSpec::data_dir`] or
/// [`RunSpec::threads`] give identical metrics (the engines are
/// deterministic at any thread count), so [`RunSpec::differences`] ignores
/// them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Network (`lenet300100`, `lenet5`).
    pub net: String,
    /// Dataset (`mnist`, `fashion-mnist`).
    pub dataset: String,
    /// Data directory; absent: `APPROXTRAIN_DATA`, then `./data`, then the
    /// shipped subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Multiplier plan of every layer not in `layers` (`mbm:7`,
    /// `fwd=mbm:7,dx=fp32,dw=mbm:7`).
    pub multiplier: String,
    /// Per-layer plans, complete (already merged with `multiplier`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub layers: BTreeMap<String, String>,
    /// Epochs to train.
    pub epochs: usize,
    /// Training mini-batch size.
    pub batch_size: usize,
    /// Batch size of evaluation (does not change results).
    pub eval_batch_size: usize,
    /// Seed of initialisation, shuffling and dropout.
    pub seed: u64,
    /// Worker threads used (informational: results do not depend on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// Train on the first N training images only (quick runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test images only (quick runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_limit: Option<usize>,
    /// Fine-tuning: start from the weights of this checkpoint (a run
    /// directory or a checkpoint file in one) instead of the seed's
    /// initialisation; the optimizer state and the schedule start fresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// Optimizer.
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule.
    pub schedule: ScheduleSpec,
    /// Random crop (4-pixel zero padding) and horizontal flip of training
    /// images ([`nets::data::Augmentation::cifar`]); on by default for
    /// cifar10.
    #[serde(default, skip_serializing_if = "is_false")]
    pub augment: bool,
    /// Label smoothing ε of the training loss, in [0, 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub label_smoothing: f64,
    /// Transformer: optimizer steps of the run (instead of `epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Transformer: steps between evaluations (one `metrics.csv` row each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_every: Option<usize>,
    /// Transformer: clip the global gradient norm to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_norm: Option<f64>,
    /// Transformer: model size and options ([`TransformerSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformer: Option<TransformerSpec>,
}

impl RunSpec {
    /// The run's task, from its network.
    pub fn task(&self) -> Task {
        Task::of_net(&self.net)
    }

    /// The identities of the `lut:` table files of the run's plans, each
    /// once (recorded in [`RunIdentity`]).
    pub fn table_identities(&self) -> Result<Vec<FileIdentity>> {
        let (default, layers) = self.plans()?;
        let mut paths = Vec::new();
        for plan in std::iter::once(&default).chain(layers.iter().map(|(_, p)| p)) {
            for m in [
                &plan.forward,
                &plan.grad_input,
                &plan.grad_weight,
                &plan.attn_qk,
                &plan.attn_av,
            ] {
                if let amsim::MultiplierSpec::LutFile(p) = m {
                    if !paths.contains(p) {
                        paths.push(p.clone());
                    }
                }
            }
        }
        paths.iter().map(|p| FileIdentity::of_file(p)).collect()
    }

    /// The Transformer's size and options (the defaults when the spec has
    /// no `[transformer]` table).
    pub fn transformer_spec(&self) -> TransformerSpec {
        self.transformer.clone().unwrap_or_default()
    }

    /// Check names and ranges; the error says which value is wrong.
    pub fn validate(&self) -> Result<()> {
        if !net_names().any(|n| n == self.net) {
            return Err(ExperimentError::UnknownNet {
                name: self.net.clone(),
                valid: net_names().collect::<Vec<_>>().join(", "),
            });
        }
        if !DATASETS.contains(&self.dataset.as_str()) && text_path(&self.dataset).is_none() {
            return Err(ExperimentError::UnknownDataset {
                name: self.dataset.clone(),
                valid: format!(
                    "{}, text:PATH (a UTF-8 file, for --net transformer)",
                    DATASETS.join(", ")
                ),
            });
        }
        self.plans()?;
        let bad = |m: String| Err(ExperimentError::BadSpec(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 || self.eval_batch_size == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            return bad("--train-limit and --test-limit must be at least 1".into());
        }
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", o.lr));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", o.momentum));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return bad(format!("weight decay must be >= 0, got {}", o.weight_decay));
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) || o.eps <= 0.0 {
            return bad("Adam needs beta1, beta2 in [0, 1) and eps > 0".into());
        }
        if self.schedule.kind == ScheduleKind::Step
            && (self.schedule.step_epochs == 0
                || self.schedule.gamma.is_nan()
                || self.schedule.gamma <= 0.0)
        {
            return bad("step schedule needs step_epochs >= 1 and gamma > 0".into());
        }
        if self.schedule.warmup_epochs > 0
            && !matches!(
                self.schedule.kind,
                ScheduleKind::Cosine | ScheduleKind::OneCycle
            )
        {
            return bad("warm-up is available with the cosine and onecycle schedules only".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label smoothing must be in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        self.validate_ranges()?;
        validate_task(self)
    }

    /// Counts within what a run can do and `run.toml` can hold (TOML
    /// integers are signed 64-bit), and paths that are UTF-8 (TOML text):
    /// checked before a run directory is created, so a value the parser
    /// accepts never fails half-way.
    fn validate_ranges(&self) -> Result<()> {
        let t = self.transformer.clone().unwrap_or_default();
        let limits: [(&str, Option<u64>, u64); 16] = [
            ("--seed", Some(self.seed), i64::MAX as u64),
            ("--epochs", Some(self.epochs as u64), MAX_EPOCHS),
            ("--batch-size", Some(self.batch_size as u64), MAX_BATCH),
            (
                "--eval-batch-size",
                Some(self.eval_batch_size as u64),
                MAX_BATCH,
            ),
            (
                "--train-limit",
                self.train_limit.map(|v| v as u64),
                i64::MAX as u64,
            ),
            (
                "--test-limit",
                self.test_limit.map(|v| v as u64),
                i64::MAX as u64,
            ),
            (
                "--step-epochs",
                Some(self.schedule.step_epochs as u64),
                MAX_EPOCHS,
            ),
            (
                "--warmup-epochs",
                Some(self.schedule.warmup_epochs as u64),
                MAX_EPOCHS,
            ),
            ("--steps", self.steps.map(|v| v as u64), MAX_STEPS),
            ("--eval-every", self.eval_every.map(|v| v as u64), MAX_STEPS),
            ("--threads", self.threads.map(|v| v as u64), i64::MAX as u64),
            ("--layers", Some(t.layers as u64), 1 << 16),
            ("--width", Some(t.width as u64), 1 << 24),
            ("--context", Some(t.context as u64), 1 << 24),
            ("--warmup-steps", Some(t.warmup_steps as u64), MAX_STEPS),
            ("--eval-windows", Some(t.eval_windows as u64), 1 << 24),
        ];
        for (flag, value, max) in limits {
            if let Some(v) = value.filter(|&v| v > max) {
                return Err(ExperimentError::BadSpec(format!(
                    "{flag} {v} is out of range; the largest value is {max}"
                )));
            }
        }
        for (flag, path) in [("--data-dir", &self.data_dir), ("--init", &self.init)] {
            if let Some(p) = path.as_ref().filter(|p| p.to_str().is_none()) {
                return Err(ExperimentError::BadSpec(format!(
                    "{flag} {}: the path is not valid UTF-8, which run.toml cannot record; \
                     rename the folder or use a link with a UTF-8 name",
                    p.display()
                )));
            }
        }
        Ok(())
    }

    /// The parsed default plan.
    pub fn plan(&self) -> Result<PlanSpec> {
        self.multiplier
            .parse()
            .map_err(|e| ExperimentError::BadSpec(format!("multiplier: {e}")))
    }

    /// The parsed plans: the default, then each per-layer plan by layer
    /// name (in name order, so a block's plan comes before those of its
    /// inner layers). The one place a spec's plan strings are parsed; they
    /// become multipliers in [`crate::model`].
    pub fn plans(&self) -> Result<(PlanSpec, Vec<(String, PlanSpec)>)> {
        let default = self.plan()?;
        let layers = self
            .layers
            .iter()
            .map(|(name, plan)| {
                plan.parse::<PlanSpec>()
                    .map(|p| (name.clone(), p))
                    .map_err(|e| ExperimentError::BadSpec(format!("plan of layer '{name}': {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((default, layers))
    }

    /// The full plan label for `metrics.csv`: the default plan, then
    /// `;LAYER=PLAN` for each per-layer plan (`mbm:7;fc3=fwd=mbm:7,dx=fp32,dw=fp32`).
    pub fn plan_label(&self) -> String {
        let mut s = self.multiplier.clone();
        for (layer, plan) in &self.layers {
            s.push_str(&format!(";{layer}={plan}"));
        }
        s
    }

    /// A deterministic name: `NET-DATASET-PLAN-sSEED`, the plan squeezed to
    /// file-name characters (`lenet5-mnist-mbm7-s1`). Runs with per-layer
    /// plans append a hash of them, so different per-layer plans get
    /// different names.
    pub fn run_id(&self) -> String {
        let squeeze = |s: &str| -> String {
            s.chars()
                .filter_map(|c| match c {
                    ':' => None,
                    '=' => Some('_'),
                    ',' | ';' => Some('.'),
                    c if c.is_ascii_alphanumeric() || c == '.' || c == '_' => Some(c),
                    _ => Some('_'),
                })
                .collect()
        };
        // A text corpus is named by its file stem (`text-first-folio`).
        let dataset = match text_path(&self.dataset) {
            Some(p) => format!(
                "text-{}",
                squeeze(&p.file_stem().unwrap_or_default().to_string_lossy())
            ),
            None => self.dataset.clone(),
        };
        let mut id = format!(
            "{}-{}-{}-s{}",
            self.net,
            dataset,
            squeeze(&self.multiplier),
            self.seed
        );
        if !self.layers.is_empty() {
            id.push_str(&format!(
                "-layers{:08x}",
                fnv1a32(self.plan_label().as_bytes())
            ));
        }
        if self.init.is_some() {
            id.push_str("-finetune");
        }
        id
    }

    /// Fields that differ between `self` (stored) and `other` (requested),
    /// as `field: old -> new`, ignoring `data_dir` and `threads`, and
    /// `epochs` when `ignore_epochs` (a resumed run may be extended).
    pub fn differences(&self, other: &RunSpec, ignore_epochs: bool) -> Vec<String> {
        let mut a = self.clone();
        let mut b = other.clone();
        for s in [&mut a, &mut b] {
            s.data_dir = None;
            s.threads = None;
            if ignore_epochs {
                s.epochs = 0;
                s.steps = None;
            }
        }
        let (ta, tb) = (flat_toml(&a), flat_toml(&b));
        let mut out = Vec::new();
        for (k, va) in &ta {
            match tb.get(k) {
                Some(vb) if vb == va => {}
                Some(vb) => out.push(format!("{k}: {va} -> {vb}")),
                None => out.push(format!("{k}: {va} -> (none)")),
            }
        }
        for (k, vb) in &tb {
            if !ta.contains_key(k) {
                out.push(format!("{k}: (none) -> {vb}"));
            }
        }
        out
    }
}

/// The network name of language-model runs.
pub const TRANSFORMER: &str = nets::transformer::TRANSFORMER_NAME;
/// The dataset prefix of a text file: `text:PATH`.
pub const TEXT_PREFIX: &str = "text:";

/// The path of a `text:PATH` dataset.
pub fn text_path(dataset: &str) -> Option<&Path> {
    dataset
        .strip_prefix(TEXT_PREFIX)
        .filter(|p| !p.is_empty())
        .map(Path::new)
}

/// Size and options of the Transformer of a run (the `[spec.transformer]`
/// table of `run.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerSpec {
    /// Blocks.
    pub layers: usize,
    /// Width C.
    pub width: usize,
    /// Attention heads (must divide the width).
    pub heads: usize,
    /// Context T: the length of training and validation windows.
    pub context: usize,
    /// `learned` or `sinusoidal`.
    pub positions: String,
    /// Output head tied to the token embedding.
    pub tied_head: bool,
    /// Steps of linear learning-rate warm-up before the cosine decay.
    pub warmup_steps: usize,
    /// Validation windows per evaluation (spread evenly over the
    /// validation text).
    pub eval_windows: usize,
}

impl Default for TransformerSpec {
    /// The default model: 4 layers, width 128, 4 heads, context 128,
    /// learned positions, tied head; 100 warm-up steps; 128 validation
    /// windows (16,384 characters).
    fn default() -> Self {
        TransformerSpec {
            layers: 4,
            width: 128,
            heads: 4,
            context: 128,
            positions: Positions::Learned.name().into(),
            tied_head: true,
            warmup_steps: 100,
            eval_windows: 128,
        }
    }
}

impl TransformerSpec {
    /// The model configuration for a vocabulary of `vocab` characters.
    pub fn config(&self, vocab: usize) -> Result<TransformerConfig> {
        let config = TransformerConfig {
            vocab,
            context: self.context,
            layers: self.layers,
            width: self.width,
            heads: self.heads,
            positions: Positions::parse(&self.positions)?,
            tied_head: self.tied_head,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Set the language-model defaults on a spec made for `--net transformer`:
/// AdamW (lr 1e-3, β2 0.99, weight decay 0.1), batch 32, 2000 steps with
/// an evaluation every 100, gradients clipped to norm 1, cosine decay to a
/// tenth of the rate after 100 warm-up steps (the nanoGPT character-level
/// Shakespeare recipe, scaled to the smaller model).
fn apply_language_model_defaults(spec: &mut RunSpec) {
    spec.optimizer.kind = OptimizerKind::Adam;
    spec.optimizer.lr = 1e-3;
    spec.optimizer.beta2 = 0.99;
    spec.optimizer.weight_decay = 0.1;
    spec.optimizer.nesterov = false;
    spec.batch_size = 32;
    spec.eval_batch_size = 32;
    spec.schedule.kind = ScheduleKind::Cosine;
    spec.schedule.warmup_epochs = 0;
    spec.steps = Some(2000);
    spec.eval_every = Some(100);
    spec.clip_norm = Some(1.0);
    spec.transformer = Some(TransformerSpec::default());
    spec.augment = false;
}

/// The checks of [`RunSpec::validate`] that depend on the task: options
/// that only a Transformer takes are errors for classifiers, and image
/// options are errors for a Transformer.
fn validate_task(spec: &RunSpec) -> Result<()> {
    let bad = |m: String| Err(ExperimentError::BadSpec(m));
    if spec.task() == Task::Classifier {
        for (given, flag) in [
            (spec.steps.is_some(), "--steps"),
            (spec.eval_every.is_some(), "--eval-every"),
            (spec.clip_norm.is_some(), "--clip-norm"),
            (spec.transformer.is_some(), "the transformer options"),
        ] {
            if given {
                return bad(format!("{flag} is available with --net transformer only"));
            }
        }
        if spec.dataset.starts_with(TEXT_PREFIX) {
            return bad(format!(
                "{} is a text corpus; train it with --net transformer",
                spec.dataset
            ));
        }
        return Ok(());
    }
    if text_path(&spec.dataset).is_none() {
        return bad(format!(
            "--net transformer trains on a text file: --dataset text:PATH (got '{}')",
            spec.dataset
        ));
    }
    // Image-classifier options a language model has no use for: refused
    // rather than recorded in run.toml and ignored.
    for (given, flag) in [
        (spec.train_limit.is_some(), "--train-limit"),
        (spec.label_smoothing != 0.0, "--label-smoothing"),
        (spec.augment, "--augment"),
        (spec.optimizer.decay_bn_bias, "--decay-bn-bias"),
    ] {
        if given {
            return bad(format!(
                "{flag} is available for image classifiers only, not with --net transformer"
            ));
        }
    }
    let Some(t) = &spec.transformer else {
        return bad("a transformer run needs its [transformer] table".into());
    };
    t.config(1)?;
    if t.eval_windows == 0 {
        return bad("--eval-windows must be at least 1".into());
    }
    if spec.steps == Some(0) || spec.eval_every == Some(0) {
        return bad("--steps and --eval-every must be at least 1".into());
    }
    if let Some(c) = spec.clip_norm {
        if !(c.is_finite() && c > 0.0) {
            return bad(format!("--clip-norm must be positive, got {c}"));
        }
    }
    if !matches!(
        spec.schedule.kind,
        ScheduleKind::Cosine | ScheduleKind::Constant
    ) {
        return bad(format!(
            "a transformer run takes the cosine or constant schedule, not {}",
            spec.schedule.kind
        ));
    }
    Ok(())
}

/// 32-bit FNV-1a (Fowler, Noll, Vo): a short stable hash for run names.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// `spec` as dotted keys to displayed values, for comparisons.
fn flat_toml(spec: &RunSpec) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = toml::Value::try_from(spec) {
        walk("", &v, &mut out);
    }
    out
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started; `epochs_completed` epochs are checkpointed (an interrupted
    /// run stays in this state and can be resumed).
    Running,
    /// All epochs done.
    Finished,
    /// Stopped because the loss became NaN or infinite.
    Diverged,
    /// Stopped by an error (a full disk, an unreadable file); the
    /// completed epochs are checkpointed and `--resume` continues.
    Failed,
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
        })
    }
}

/// The `[run]` table of `run.toml`: the state of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunState {
    /// [`RunSpec::run_id`].
    pub run_id: String,
    /// Status.
    pub status: RunStatus,
    /// Epochs finished and checkpointed.
    pub epochs_completed: usize,
    /// Test accuracy after the last completed epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f32>,
    /// Where the data came from (a folder, or the shipped MNIST subset):
    /// runs of one spec on different data do not compare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Why the run stopped, when it diverged or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What defines the run besides its spec (data and table files, code
    /// version); absent in runs recorded before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<RunIdentity>,
}

/// The whole `run.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFile {
    /// State.
    pub run: RunState,
    /// Specification.
    pub spec: RunSpec,
}

impl RunFile {
    /// Parse `run.toml` text; `path` names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| ExperimentError::BadFile {
            path: path.to_path_buf(),
            reason: e.message().replace('\n', " "),
        })
    }

    /// Read `run.toml`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Write `run.toml` whole.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = toml::to_string(self)
            .map_err(|e| ExperimentError::Other(format!("cannot serialise run.toml: {e}")))?;
        let text = format!(
            "# Written by approxtrain train. Repeat the run with\n\
             #   approxtrain train --spec {} --out NEW_DIR\n\
             # or continue it, if interrupted, with\n\
             #   approxtrain train --resume DIR\n{text}",
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        write_atomic(path, text.as_bytes())
    }
}

impl RunSpec {
    /// A spec with the default hyper-parameters of `approxtrain train`:
    /// SGD with Nesterov momentum 0.9, learning rate 0.05 with one epoch of
    /// linear warm-up and cosine decay, weight decay 5e-4, batch 128, 10
    /// epochs, seed 1, `fp32` everywhere; random crop and flip for
    /// cifar10.
    /// For `transformer`, the language-model defaults of
    /// `apply_language_model_defaults` instead.
    pub fn with_defaults(net: &str, dataset: &str) -> RunSpec {
        let mut spec = RunSpec {
            net: net.to_string(),
            dataset: dataset.to_string(),
            data_dir: None,
            multiplier: "fp32".into(),
            layers: BTreeMap::new(),
            epochs: 10,
            batch_size: 128,
            eval_batch_size: 1000,
            seed: 1,
            threads: None,
            train_limit: None,
            test_limit: None,
            init: None,
            optimizer: OptimizerSpec {
                kind: OptimizerKind::Sgd,
                lr: 0.05,
                momentum: 0.9,
                nesterov: true,
                weight_decay: 5e-4,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                decay_bn_bias: false,
            },
            schedule: ScheduleSpec {
                kind: ScheduleKind::Cosine,
                step_epochs: 5,
                gamma: 0.1,
                warmup_epochs: 1,
            },
            augment: dataset == "cifar10",
            label_smoothing: 0.0,
            steps: None,
            eval_every: None,
            clip_norm: None,
            transformer: None,
        };
        if spec.task() == Task::LanguageModel {
            apply_language_model_defaults(&mut spec);
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_file_round_trips_through_toml() {
        let mut spec = RunSpec::with_defaults("lenet5", "mnist");
        spec.multiplier = "fwd=mbm:7,dx=fp32,dw=mbm:7".into();
        spec.layers.insert("fc3".into(), "fp32".into());
        spec.train_limit = Some(500);
        let file = RunFile {
            run: RunState {
                run_id: spec.run_id(),
                status: RunStatus::Diverged,
                epochs_completed: 1,
                test_accuracy: Some(0.5),
                data: Some("data/mnist".into()),
                message: Some("training diverged at epoch 2 step 9: loss is NaN".into()),
                identity: None,
            },
            spec,
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.toml");
        file.write(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("status = \"diverged\""), "{text}");
        assert_eq!(RunFile::read(&p).unwrap(), file);
    }

    #[test]
    fn run_id_is_deterministic_and_distinguishes_layer_plans() {
        let mut a = RunSpec::with_defaults("lenet5", "mnist");
        a.multiplier = "mbm:7".into();
        a.seed = 3;
        assert_eq!(a.run_id(), "lenet5-mnist-mbm7-s3");
        let mut b = a.clone();
        b.layers.insert("conv1".into(), "fp32".into());
        let mut c = a.clone();
        c.layers.insert("conv1".into(), "bf16".into());
        assert_ne!(b.run_id(), c.run_id());
        assert!(b.run_id().starts_with("lenet5-mnist-mbm7-s3-layers"));
        assert_eq!(b.run_id(), b.clone().run_id());
    }

    #[test]
    fn differences_ignore_threads_and_data_dir_and_name_changed_fields() {
        let a = RunSpec::with_defaults("lenet5", "mnist");
        let mut b = a.clone();
        b.threads = Some(2);
        b.data_dir = Some("elsewhere".into());
        assert!(a.differences(&b, false).is_empty());
        b.optimizer.lr = 0.1;
        b.epochs = 3;
        let d = a.differences(&b, false);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|x| x == "optimizer.lr: 0.05 -> 0.1"), "{d:?}");
        assert_eq!(a.differences(&b, true).len(), 1);
    }

    #[test]
    fn validate_rejects_unknown_names_listing_valid_ones() {
        let e = RunSpec::with_defaults("lenet7", "mnist")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'lenet7'") && e.contains("lenet300100, lenet5"),
            "{e}"
        );
        let e = RunSpec::with_defaults("lenet5", "cifar")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("'cifar'") && e.contains("fashion-mnist"), "{e}");
        let mut s = RunSpec::with_defaults("lenet5", "mnist");
        s.multiplier = "mbm:77".into();
        assert!(s.validate().unwrap_err().to_string().contains("mbm:77"));
        RunSpec::with_defaults("lenet300100", "fashion-mnist")
            .validate()
            .unwrap();
    }

    #[test]
    fn switching_families_takes_their_defaults() {
        let mut spec = RunSpec::with_defaults("lenet5", "mnist");
        spec.optimizer.switch_to(OptimizerKind::Adam);
        assert_eq!(
            (spec.optimizer.kind, spec.optimizer.lr),
            (OptimizerKind::Adam, 1e-3)
        );
        spec.optimizer.lr = 0.02;
        spec.optimizer.switch_to(OptimizerKind::Adam);
        assert_eq!(spec.optimizer.lr, 0.02);
        assert_eq!(spec.schedule.warmup_epochs, 1);
        spec.schedule.switch_to(ScheduleKind::OneCycle);
        assert_eq!(spec.schedule.warmup_epochs, 1);
        spec.schedule.switch_to(ScheduleKind::Step);
        assert_eq!(
            (spec.schedule.kind, spec.schedule.warmup_epochs),
            (ScheduleKind::Step, 0)
        );
        spec.validate().unwrap();
    }

    /// CIFAR-10 runs augment by default and MNIST runs do not; the fields
    /// added for ResNets are left out of run.toml at their defaults, so a
    /// run.toml written before them still reads as the same spec.
    #[test]
    fn resnet_fields_default_per_dataset_and_old_run_files_still_parse() {
        let cifar = RunSpec::with_defaults("resnet20", "cifar10");
        cifar.validate().unwrap();
        assert!(cifar.augment && cifar.label_smoothing == 0.0 && !cifar.optimizer.decay_bn_bias);
        let mnist = RunSpec::with_defaults("lenet5", "mnist");
        assert!(!mnist.augment);
        let text = toml::to_string(&mnist).unwrap();
        for key in ["augment", "label_smoothing", "decay_bn_bias"] {
            assert!(!text.contains(key), "{key} written at its default:\n{text}");
        }
        let back: RunSpec = toml::from_str(&text).unwrap();
        assert_eq!(back, mnist);
        let mut smoothed = cifar.clone();
        smoothed.label_smoothing = 0.1;
        smoothed.schedule.kind = "onecycle".parse().unwrap();
        let back: RunSpec = toml::from_str(&toml::to_string(&smoothed).unwrap()).unwrap();
        assert_eq!(back, smoothed);
        assert_eq!(
            smoothed.differences(&cifar, false),
            [
                "label_smoothing: 0.1 -> (none)",
                "schedule.kind: \"onecycle\" -> \"cosine\""
            ]
        );
        smoothed.label_smoothing = 1.0;
        let e = smoothed.validate().unwrap_err().to_string();
        assert!(e.contains("label smoothing"), "{e}");
    }
}
