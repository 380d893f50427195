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

use amsim::ModelInfo;
use nets::checkpoint::Checkpoint;
use nets::data::{load_text, CharCorpus};
use nets::layers::MacCounts;
use nets::lm::{generate, validation_starts, LmTrainer};
use nets::schedule::{Granularity, LrSchedule, Schedule};
use nets::transformer::Transformer;
use nets::NetError;
use rand::SeedableRng;

use crate::atomic::write_atomic;
use crate::error::{ExperimentError, Result};
use crate::identity::{FileIdentity, RunIdentity};
use crate::metrics::MetricsRow;
use crate::model::{optimizer, transformer_for_spec};
use crate::run_dir::{
    load_checkpoint, locked_start, prepare, read_vocab, round_ms, train_periods, Divergence,
    EpochStart, LmPeriod, Period, PeriodTrainer, Recorder, RunDir, RunInputs, RunObserver,
    RunOutcome, Start, StartMode, RUN_TOML, VOCAB_TXT,
};
pub use crate::spec::{text_path, TransformerSpec, TEXT_PREFIX, TRANSFORMER};
use crate::spec::{RunFile, RunSpec, ScheduleKind, Task};
use nets::PlannedModel;

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

/// Bytes a Transformer run of `spec` over `vocab` characters needs, about:
/// the parameters with their gradients and two optimizer slots (4 copies),
/// and the activations a training batch keeps for backward (per block
/// about 16 values per position and channel, plus the attention scores
/// and probabilities of every head), all `f32`.
pub fn memory_estimate(spec: &RunSpec, vocab: usize) -> u128 {
    let t = spec.transformer_spec();
    let (c, l, ctx, h) = (
        t.width as u128,
        t.layers as u128,
        t.context as u128,
        t.heads as u128,
    );
    let b = spec.batch_size.max(spec.eval_batch_size) as u128;
    let params = 12 * c * c * l + (vocab as u128 + ctx) * c + 2 * vocab as u128 * c;
    let activations = b * ctx * (l * (16 * c + 2 * h * ctx) + 2 * vocab as u128);
    4 * (4 * params + activations)
}

/// Refuse a Transformer too large for this machine's memory, before any
/// allocation: the estimate ([`memory_estimate`]), what is available and
/// the options that size it.
pub fn check_memory(spec: &RunSpec, vocab: usize) -> Result<()> {
    let need = memory_estimate(spec, vocab);
    let available = available_memory().unwrap_or(u64::MAX) as u128;
    if need > available {
        let t = spec.transformer_spec();
        let gb = |b: u128| b as f64 / 1e9;
        return Err(ExperimentError::BadSpec(format!(
            "the transformer needs about {:.1} GB of memory (--width {}, --layers {}, --context {}, \
             --batch-size {}), more than the {:.1} GB available; use a smaller --width, --layers, \
             --context or --batch-size",
            gb(need),
            t.width,
            t.layers,
            t.context,
            spec.batch_size,
            gb(available)
        )));
    }
    Ok(())
}

/// Memory this process can still use, in bytes: `MemAvailable` of
/// `/proc/meminfo` (Linux), or `None` where it cannot be read.
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
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
    let t_spec = spec.transformer_spec();
    check_memory(spec, corpus.vocab_size())?;
    let mut model = transformer_for_spec(spec, corpus.vocab_size(), models)?;
    let total = total_steps(spec, corpus.train.len());
    let every = spec.eval_every.unwrap_or(total).max(1);
    let eval_at = evaluation_steps(total, every);
    let inputs = RunInputs {
        data_source: path.display().to_string(),
        identity: RunIdentity::new(
            vec![FileIdentity::of_file(&path)?],
            spec.table_identities()?,
        ),
    };
    let (lock, start) = locked_start(&dir, |dir| prepare(spec, dir, mode, eval_at.len(), &inputs))?;
    let (rows, state) = match start {
        Start::Done(s) => return Ok(RunOutcome::AlreadyFinished(s)),
        Start::Train { rows, state } => (rows, state),
    };
    // Fine-tuning starts from the weights of another language-model run
    // (same size, same vocabulary), with fresh optimizer state, counters
    // and schedule; a resumed run continues from its own checkpoint.
    let init = match (&spec.init, &state) {
        (Some(from), None) => {
            let init = load_checkpoint(from)?;
            let init_vocab_path = init.run_dir.join(VOCAB_TXT);
            if read_vocab(&init.run_dir)? != corpus.vocab {
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
    let fresh = trainer.step() == 0;
    let recorder = Recorder::begin(spec, dir, lock, inputs, rows, eval_at.len(), fresh)?;
    let vocab: String = corpus.vocab.iter().collect();
    write_atomic(&recorder.dir().path().join(VOCAB_TXT), vocab.as_bytes())?;

    let macs = trainer.model.macs_per_example();
    let mut periods = Evaluations {
        spec,
        trainer,
        corpus,
        valid_starts,
        eval_at,
        total,
        context,
        macs,
    };
    train_periods(recorder, &mut periods, observer)
}

/// A language model's training for [`train_periods`]: one period per
/// evaluation, the steps up to it.
struct Evaluations<'a> {
    spec: &'a RunSpec,
    trainer: LmTrainer,
    corpus: CharCorpus,
    valid_starts: Vec<usize>,
    /// The steps after which an evaluation is recorded.
    eval_at: Vec<u64>,
    total: usize,
    context: usize,
    macs: MacCounts,
}

impl PeriodTrainer for Evaluations<'_> {
    fn announce(&self, k: usize) -> EpochStart {
        let first = self.trainer.step();
        let steps = (self.eval_at[k] - first) as usize;
        EpochStart {
            epoch: k + 1,
            epochs: self.eval_at.len(),
            batches: steps,
            images: steps * self.spec.batch_size,
            lm: Some(LmPeriod {
                first_step: first,
                total_steps: self.total as u64,
                context: self.context,
            }),
        }
    }

    fn period(
        &mut self,
        k: usize,
        row: MetricsRow,
        observer: &mut dyn RunObserver,
    ) -> Result<Period> {
        let (batch, macs) = (self.spec.batch_size, self.macs);
        let evaluation = k + 1;
        let steps = (self.eval_at[k] - self.trainer.step()) as usize;
        let started = Instant::now();
        let (mut loss_sum, mut acc_sum) = (0.0f64, 0.0f64);
        for i in 0..steps {
            let s = match self.trainer.train_step(&self.corpus.train, batch) {
                Ok(s) => s,
                Err(NetError::NonFiniteLoss { loss, .. }) => {
                    let d = Divergence::of_loss(
                        evaluation,
                        self.trainer.step() + 1,
                        "loss",
                        loss as f64,
                    );
                    let row = MetricsRow {
                        epoch: evaluation,
                        step: d.step,
                        train_loss: loss,
                        seconds: round_ms(started.elapsed().as_secs_f64()),
                        macs: (i * batch) as u64 * macs.total() + batch as u64 * macs.forward,
                        ..row
                    };
                    return Ok(Period::Diverged(d, row));
                }
                Err(e) => return Err(e.into()),
            };
            loss_sum += s.loss as f64;
            acc_sum += s.accuracy as f64;
            if observer
                .batch_done(i + 1, steps, s.loss as f64, batch)
                .is_break()
            {
                return Ok(Period::Interrupted);
            }
        }
        let eval = self.trainer.evaluate(
            &self.corpus.valid,
            &self.valid_starts,
            self.spec.eval_batch_size,
        )?;
        self.trainer.record_evaluation();
        Ok(Period::Done(MetricsRow {
            epoch: evaluation,
            step: self.trainer.step(),
            train_loss: (loss_sum / steps.max(1) as f64) as f32,
            train_accuracy: (acc_sum / steps.max(1) as f64) as f32,
            test_loss: eval.loss,
            test_accuracy: eval.accuracy,
            seconds: round_ms(started.elapsed().as_secs_f64()),
            macs: (steps * batch) as u64 * macs.total()
                + self.valid_starts.len() as u64 * macs.forward,
            ..row
        }))
    }

    fn checkpoint(&self) -> Checkpoint {
        self.trainer.checkpoint()
    }
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
        let loaded = load_checkpoint(checkpoint)?;
        let RunFile { mut spec, .. } = loaded.run;
        if spec.task() != Task::LanguageModel {
            return Err(ExperimentError::BadFile {
                path: loaded.run_dir.join(RUN_TOML),
                reason: format!("a {} run; sample needs a --net transformer run", spec.net),
            });
        }
        let vocab = read_vocab(&loaded.run_dir)?;
        if let Some((default, layers)) = plan {
            spec.multiplier = default;
            spec.layers = layers;
        }
        let mut model = transformer_for_spec(&spec, vocab.len(), models)?;
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
