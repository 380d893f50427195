//! Language-model runs: `--net transformer --dataset text:PATH`.
//!
//! The run directory holds the same files as an image run (`run.toml`,
//! `metrics.csv`, `checkpoint.bin`, see [`crate::run`]) plus `vocab.txt`
//! (the corpus's characters in id order, what `approxtrain sample` decodes
//! with). Training is counted in optimizer steps ([`RunSpec::steps`], or
//! `epochs` passes over the training text's characters when no step count
//! is given); every `eval_every` steps, and after the last step, the model
//! is evaluated on a fixed set of validation windows and one row is added
//! to `metrics.csv`:
//! - `epoch`: the 1-based evaluation number, `step`: steps so far;
//! - `train_loss`, `train_accuracy`: mean over the steps since the last
//!   row of the batch loss (nats per character) and of the next-character
//!   accuracy;
//! - `test_loss`, `test_accuracy`: the same on the validation windows;
//! - `test_perplexity` (an extra last column): `exp(test_loss)`;
//! - `macs`: the products of those steps and of the evaluation.
//!
//! The checkpoint is written at every evaluation (its `epoch` field, like
//! `epochs_completed` in `run.toml`, counts evaluations), so `--resume`
//! continues from the last row, bit-identically; `--resume DIR --steps N`
//! extends a run (the cosine schedule then spans the new length).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use amsim::{ModelInfo, MultiplierPlan};
use nets::data::{load_text, CharCorpus};
use nets::lm::{generate, validation_starts, LmTrainer};
use nets::schedule::{Granularity, LrSchedule, Schedule};
use nets::transformer::{Positions, Transformer, TransformerConfig};
use nets::NetError;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{ExperimentError, Result};
use crate::metrics::{write_metrics_with_perplexity, MetricsRow};
use crate::run::{
    optimizer, prepare, resolve_plans, round_ms, row_base, summary, write_state, Divergence,
    EpochStart, LmPeriod, RunDir, RunObserver, RunOutcome, Start, StartMode,
};
use crate::spec::{RunFile, RunSpec, RunStatus, ScheduleKind};

/// The network name of language-model runs.
pub const TRANSFORMER: &str = "transformer";
/// The dataset prefix of a text file: `text:PATH`.
pub const TEXT_PREFIX: &str = "text:";
/// `DIR/vocab.txt`: the vocabulary of a language-model run.
pub const VOCAB_TXT: &str = "vocab.txt";

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
pub fn apply_defaults(spec: &mut RunSpec) {
    spec.optimizer.kind = crate::spec::OptimizerKind::Adam;
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

/// The language-model checks of [`RunSpec::validate`]; options that only a
/// Transformer takes are errors for other networks.
pub fn validate(spec: &RunSpec) -> Result<()> {
    let bad = |m: String| Err(ExperimentError::BadSpec(m));
    if spec.net != TRANSFORMER {
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

/// The Transformer table of a language-model `spec`; `None` for a
/// classifier.
pub fn transformer_of(spec: &RunSpec) -> Option<&TransformerSpec> {
    spec.transformer
        .as_ref()
        .filter(|_| spec.net == TRANSFORMER)
}

/// The products of one training window of the model `t` with a vocabulary
/// of `vocab` characters, by plan name, each counted in all three passes
/// as [`Transformer::macs_per_sequence`] counts them: per block the Q/K/V
/// and output projections (`block{i}.attn`, `4tc²`), the scores `Q·Kᵀ`
/// (role `attn_qk`) and `A·V` (role `attn_av`, `t²c` each), the MLP
/// (`block{i}.mlp.fc1`, `block{i}.mlp.fc2`, `4tc²` each); then the head
/// (`tcv`).
pub fn products_per_window(t: &TransformerSpec, vocab: usize) -> Vec<crate::energy::Products> {
    use amsim::Role;
    use nets::layers::MacCounts;
    let (c, w, v) = (t.width as u64, t.context as u64, vocab as u64);
    let every_pass = |n: u64| MacCounts {
        forward: n,
        grad_input: n,
        grad_weight: n,
    };
    let products = |layer: String, n: u64, role: Option<Role>| crate::energy::Products {
        layer,
        macs: every_pass(n),
        role,
    };
    let mut out = Vec::new();
    for i in 0..t.layers {
        let attn = format!("block{i}.attn");
        out.push(products(attn.clone(), 4 * w * c * c, None));
        out.push(products(attn.clone(), w * w * c, Some(Role::AttnQk)));
        out.push(products(attn, w * w * c, Some(Role::AttnAv)));
        for fc in ["fc1", "fc2"] {
            out.push(products(format!("block{i}.mlp.{fc}"), 4 * w * c * c, None));
        }
    }
    out.push(products("head".into(), w * c * v, None));
    out
}

/// Names a plan file may give a plan to in the model of `spec`.
pub fn plan_names(spec: &RunSpec) -> Result<Vec<String>> {
    let t = spec.transformer.clone().unwrap_or_default();
    let mut small = t.clone();
    // The names depend on the number of blocks only.
    (small.width, small.heads, small.context) = (2, 1, 1);
    small.positions = Positions::Learned.name().into();
    let model = Transformer::new(
        small.config(1)?,
        MultiplierPlan::uniform(amsim::Multiplier::Fp32),
        0,
    )?;
    Ok(model.plan_names())
}

/// The model of `spec` for `vocab` characters, plans resolved against
/// `models`, weights from the spec's seed.
pub fn model_for_spec(spec: &RunSpec, vocab: usize, models: &[ModelInfo]) -> Result<Transformer> {
    let t = spec.transformer.clone().unwrap_or_default();
    let (default_plan, layer_plans) = resolve_plans(spec, models, &plan_names(spec)?)?;
    let mut model = Transformer::new(t.config(vocab)?, default_plan, spec.seed)?;
    // BTreeMap order: `block0` before `block0.attn`, so a block's plan is
    // applied first and its inner layers' plans override it.
    for (name, plan) in layer_plans {
        model.set_plan_by_name(&name, plan)?;
    }
    Ok(model)
}

/// The corpus of a `text:PATH` spec, checked against the context: both
/// splits must hold at least one window of `context + 1` characters.
pub fn load_corpus(spec: &RunSpec) -> Result<(PathBuf, CharCorpus)> {
    let path = text_path(&spec.dataset)
        .ok_or_else(|| ExperimentError::BadSpec(format!("'{}' is not text:PATH", spec.dataset)))?
        .to_path_buf();
    let corpus = load_text(&path)?;
    let context = spec.transformer.as_ref().map_or(0, |t| t.context);
    for (part, len) in [
        ("training", corpus.train.len()),
        ("validation", corpus.valid.len()),
    ] {
        if len <= context {
            return Err(ExperimentError::BadFile {
                path,
                reason: format!(
                    "its {part} split holds {len} characters, too few for --context {context} \
                     (a window needs {} characters); use a smaller --context or a longer text",
                    context + 1
                ),
            });
        }
    }
    Ok((path, corpus))
}

/// Optimizer steps of the run: `steps`, or else `epochs` passes over the
/// training characters in windows of the context.
pub fn total_steps(spec: &RunSpec, train_len: usize) -> usize {
    spec.steps.unwrap_or_else(|| {
        let t = spec.transformer.as_ref().map_or(1, |t| t.context.max(1));
        spec.epochs * train_len.div_ceil(spec.batch_size.max(1) * t).max(1)
    })
}

/// The steps after which an evaluation is recorded: every `eval_every`
/// and the last.
fn evaluation_steps(total: usize, every: usize) -> Vec<u64> {
    let mut at: Vec<u64> = (1..=total / every.max(1))
        .map(|k| (k * every) as u64)
        .collect();
    if at.last() != Some(&(total as u64)) {
        at.push(total as u64);
    }
    at
}

fn lm_schedule(spec: &RunSpec, total: usize) -> LrSchedule {
    let base_lr = spec.optimizer.lr as f32;
    let warmup = spec.transformer.as_ref().map_or(0, |t| t.warmup_steps);
    let schedule = match spec.schedule.kind {
        ScheduleKind::Constant => Schedule::Constant,
        _ => Schedule::Cosine {
            warmup: warmup.min(total / 2) as u64,
            total: total as u64,
            min_lr: base_lr / 10.0,
        },
    };
    LrSchedule {
        base_lr,
        schedule,
        granularity: Granularity::Step,
    }
}

/// Train a language-model `spec` in `dir`; the counterpart of
/// [`crate::run::train`], which calls it for `--net transformer`.
pub fn train_lm(
    spec: &RunSpec,
    dir: &Path,
    mode: StartMode,
    models: &[ModelInfo],
    observer: &mut dyn RunObserver,
) -> Result<RunOutcome> {
    let dir = RunDir::new(dir);
    let (path, corpus) = load_corpus(spec)?;
    let t_spec = spec.transformer.clone().unwrap_or_default();
    let mut model = model_for_spec(spec, corpus.vocab_size(), models)?;
    let total = total_steps(spec, corpus.train.len());
    let every = spec.eval_every.unwrap_or(total).max(1);
    let eval_at = evaluation_steps(total, every);
    let (mut rows, state) = match prepare(spec, &dir, mode, eval_at.len())? {
        Start::Done(s) => return Ok(RunOutcome::AlreadyFinished(s)),
        Start::Train { rows, state } => (rows, state),
    };
    // Fine-tuning starts from the weights of another language-model run
    // (same size, same vocabulary), with fresh optimizer state, counters
    // and schedule; a resumed run continues from its own checkpoint.
    let init = match (&spec.init, &state) {
        (Some(from), None) => {
            let init = crate::eval::load_checkpoint(from)?;
            let init_vocab_path = init.run_dir.join(VOCAB_TXT);
            if crate::lm_eval::read_vocab(&init.run_dir)? != corpus.vocab {
                return Err(ExperimentError::BadFile {
                    path: path.clone(),
                    reason: format!(
                        "its characters differ from those of {}, the vocabulary of the weights \
                         given by --init; fine-tune on the text that run trained on",
                        init_vocab_path.display()
                    ),
                });
            }
            nets::lm::apply_weights(&init.checkpoint, &init.checkpoint_path, &mut model)?;
            Some(init)
        }
        _ => None,
    };
    let context = t_spec.context;
    let valid_starts = validation_starts(corpus.valid.len(), context, t_spec.eval_windows)?;
    let mut trainer = LmTrainer::new(
        model,
        optimizer(spec)?,
        lm_schedule(spec, total),
        spec.seed,
        spec.clip_norm.map(|c| c as f32),
    )?;
    observer.message(&trainer.model.summary());
    if let Some(ck) = state {
        trainer.restore(&dir.checkpoint(), ck)?;
        observer.message(&format!(
            "resuming {} after step {} of {total}",
            dir.path().display(),
            trainer.step()
        ));
    } else if let Some(init) = &init {
        observer.message(&format!(
            "starting from the weights of {} (step {})",
            init.checkpoint_path.display(),
            init.checkpoint.global_step
        ));
    }
    std::fs::create_dir_all(dir.path()).map_err(|e| ExperimentError::io(dir.path(), e))?;
    if trainer.step() == 0 {
        for stale in [dir.metrics_csv(), dir.checkpoint()] {
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|e| ExperimentError::io(&stale, e))?;
            }
        }
    }
    let vocab: String = corpus.vocab.iter().collect();
    write_atomic(&dir.path().join(VOCAB_TXT), vocab.as_bytes())?;
    let data_source = path.display().to_string();
    write_metrics_with_perplexity(&dir.metrics_csv(), &rows)?;
    write_state(spec, &dir, &data_source, RunStatus::Running, &rows, None)?;

    let macs = trainer.model.macs_per_sequence(context);
    let row_base = row_base(spec);
    let batch = spec.batch_size;
    for (k, &until) in eval_at.iter().enumerate().skip(rows.len()) {
        let evaluation = k + 1;
        let first = trainer.step();
        let steps = (until - first) as usize;
        observer.epoch_started(&EpochStart {
            epoch: evaluation,
            epochs: eval_at.len(),
            batches: steps,
            images: steps * batch,
            lm: Some(LmPeriod {
                first_step: first,
                total_steps: total as u64,
                context,
            }),
        });
        let started = Instant::now();
        let (mut loss_sum, mut acc_sum) = (0.0f64, 0.0f64);
        for i in 0..steps {
            let s = match trainer.train_step(&corpus.train, batch) {
                Ok(s) => s,
                Err(NetError::NonFiniteLoss { loss, .. }) => {
                    let d = Divergence {
                        epoch: evaluation,
                        step: trainer.step() + 1,
                        loss: loss as f64,
                    };
                    rows.push(MetricsRow {
                        epoch: evaluation,
                        step: d.step,
                        train_loss: loss,
                        seconds: round_ms(started.elapsed().as_secs_f64()),
                        macs: (i * batch) as u64 * macs.total() + batch as u64 * macs.forward,
                        ..row_base.clone()
                    });
                    write_metrics_with_perplexity(&dir.metrics_csv(), &rows)?;
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
            loss_sum += s.loss as f64;
            acc_sum += s.accuracy as f64;
            if observer
                .batch_done(i + 1, steps, s.loss as f64, batch)
                .is_break()
            {
                return Ok(RunOutcome::Interrupted {
                    epochs_completed: k,
                });
            }
        }
        let eval = trainer.evaluate(&corpus.valid, &valid_starts, spec.eval_batch_size)?;
        trainer.record_evaluation();
        let row = MetricsRow {
            epoch: evaluation,
            step: trainer.step(),
            train_loss: (loss_sum / steps.max(1) as f64) as f32,
            train_accuracy: (acc_sum / steps.max(1) as f64) as f32,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            seconds: round_ms(started.elapsed().as_secs_f64()),
            macs: (steps * batch) as u64 * macs.total() + valid_starts.len() as u64 * macs.forward,
            ..row_base.clone()
        };
        rows.push(row.clone());
        write_metrics_with_perplexity(&dir.metrics_csv(), &rows)?;
        trainer.checkpoint().save(&dir.checkpoint())?;
        let status = if evaluation == eval_at.len() {
            RunStatus::Finished
        } else {
            RunStatus::Running
        };
        write_state(spec, &dir, &data_source, status, &rows, None)?;
        observer.epoch_done(&row);
    }
    write_state(spec, &dir, &data_source, RunStatus::Finished, &rows, None)?;
    Ok(RunOutcome::Finished(summary(spec, rows)))
}

/// A trained language model ready to generate text.
#[derive(Debug)]
pub struct Sampler {
    /// The model with the trained weights.
    pub model: Transformer,
    /// Characters by id.
    pub vocab: Vec<char>,
    /// The file they come from (the run's `vocab.txt`), for messages.
    pub vocab_path: PathBuf,
    /// The run's spec.
    pub spec: RunSpec,
}

impl Sampler {
    /// Load the run in `checkpoint` (a run directory, or a checkpoint file
    /// in one) with its own plans, or with `plan` (a default plan string)
    /// and `layers` (per-layer plans) instead when given.
    pub fn load(
        checkpoint: &Path,
        plan: Option<(String, BTreeMap<String, String>)>,
        models: &[ModelInfo],
    ) -> Result<Sampler> {
        let loaded = crate::eval::load_checkpoint(checkpoint)?;
        let RunFile { mut spec, .. } = loaded.run;
        if spec.net != TRANSFORMER {
            return Err(ExperimentError::BadFile {
                path: loaded.run_dir.join(crate::run::RUN_TOML),
                reason: format!("a {} run; sample needs a --net transformer run", spec.net),
            });
        }
        let vocab = crate::lm_eval::read_vocab(&loaded.run_dir)?;
        if let Some((default, layers)) = plan {
            spec.multiplier = default;
            spec.layers = layers;
        }
        let mut model = model_for_spec(&spec, vocab.len(), models)?;
        nets::lm::apply_weights(&loaded.checkpoint, &loaded.checkpoint_path, &mut model)?;
        Ok(Sampler {
            model,
            vocab,
            vocab_path: loaded.run_dir.join(VOCAB_TXT),
            spec,
        })
    }

    /// `tokens` characters following `prompt`, drawn at `temperature` (0:
    /// the most likely each time) from the stream of `seed`. An error
    /// naming the first prompt character outside the vocabulary.
    pub fn sample(
        &mut self,
        prompt: &str,
        tokens: usize,
        temperature: f32,
        seed: u64,
    ) -> Result<String> {
        let ids = prompt
            .chars()
            .map(|c| {
                self.vocab
                    .iter()
                    .position(|&v| v == c)
                    .map(|i| i as u32)
                    .ok_or_else(|| ExperimentError::BadFile {
                        path: self.vocab_path.clone(),
                        reason: format!(
                            "the --prompt character {c:?} is not in the run's vocabulary \
                             (the {} characters of its training text, listed in this file)",
                            self.vocab.len()
                        ),
                    })
            })
            .collect::<Result<Vec<u32>>>()?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let out = generate(&mut self.model, &ids, tokens, temperature, &mut rng)?;
        Ok(out.iter().map(|&i| self.vocab[i as usize]).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The products of a window add up to the model's own count, pass by
    /// pass, and name only plan names of the model.
    #[test]
    fn products_per_window_cover_every_product_once() {
        for (layers, width, heads, context, vocab) in [(1, 16, 2, 16, 11), (3, 24, 4, 9, 40)] {
            let t = TransformerSpec {
                layers,
                width,
                heads,
                context,
                ..TransformerSpec::default()
            };
            let model = Transformer::new(
                t.config(vocab).unwrap(),
                MultiplierPlan::uniform(amsim::Multiplier::Fp32),
                1,
            )
            .unwrap();
            let products = products_per_window(&t, vocab);
            let mut sum = nets::layers::MacCounts::default();
            for p in &products {
                sum += p.macs;
            }
            assert_eq!(sum, model.macs_per_sequence(context));
            let names = model.plan_names();
            assert!(products.iter().all(|p| names.contains(&p.layer)));
        }
    }

    #[test]
    fn evaluations_fall_every_n_steps_and_at_the_last_step() {
        assert_eq!(evaluation_steps(50, 10), [10, 20, 30, 40, 50]);
        assert_eq!(evaluation_steps(45, 10), [10, 20, 30, 40, 45]);
        assert_eq!(evaluation_steps(5, 10), [5]);
    }

    #[test]
    fn epochs_count_passes_over_the_training_characters_without_steps() {
        let mut spec = RunSpec::with_defaults(TRANSFORMER, "text:corpus.txt");
        assert_eq!(total_steps(&spec, 1_000_000), 2000);
        spec.steps = None;
        spec.epochs = 2;
        // 32 windows of 128 characters a step: 245 steps a pass.
        assert_eq!(total_steps(&spec, 1_000_000), 2 * 245);
    }

    #[test]
    fn transformer_options_are_checked_and_refused_for_other_nets() {
        let spec = RunSpec::with_defaults(TRANSFORMER, "text:corpus.txt");
        spec.validate().unwrap();
        assert_eq!(spec.run_id(), "transformer-text-corpus-fp32-s1");
        let mut bad = spec.clone();
        bad.transformer.as_mut().unwrap().heads = 3;
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("--heads 3") && e.contains("--width 128"), "{e}");
        let mut bad = spec.clone();
        bad.dataset = "mnist".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("text:PATH"));
        let mut lenet = RunSpec::with_defaults("lenet5", "mnist");
        lenet.steps = Some(10);
        let e = lenet.validate().unwrap_err().to_string();
        assert!(e.contains("--steps") && e.contains("transformer"), "{e}");
        // run.toml round trip with the [transformer] table.
        let text = toml::to_string(&spec).unwrap();
        assert!(text.contains("[transformer]"), "{text}");
        assert_eq!(toml::from_str::<RunSpec>(&text).unwrap(), spec);
    }
}
