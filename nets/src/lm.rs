//! Training and sampling of the character-level [`Transformer`], step by
//! step.
//!
//! Data: a training text and a validation text as token ids
//! ([`crate::data::CharCorpus`]). Step `s` trains on `batch` windows of
//! `T + 1` consecutive tokens whose starts are drawn uniformly from the
//! training text by the stream `(seed, Shuffle, s)`; the model reads the
//! first `T` tokens and is scored on each next one. So the state to save
//! is the parameters, the optimizer buffers and the step counter, and a run
//! resumed at a checkpoint is bit-identical to one that never stopped.
//! Validation uses a fixed set of windows ([`validation_starts`]).
//!
//! Gradient clipping ([`clip_grad_norm`]) rescales all gradients together
//! when their global L2 norm exceeds a bound (Pascanu, Mikolov and Bengio,
//! "On the difficulty of training recurrent neural networks", ICML 2013).

use std::path::Path;

use rand::Rng;

use crate::checkpoint::{Checkpoint, SavedParam};
use crate::layers::{softmax_cross_entropy_tokens, Param};
use crate::optim::Optimizer;
use crate::rng::{rng_for, Purpose};
use crate::schedule::LrSchedule;
use crate::train::EvalStats;
use crate::transformer::Transformer;
use crate::{NetError, Result};

/// What one training step measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Zero-based step that was taken.
    pub step: u64,
    /// Mean loss over the batch's positions (nats per token), before the
    /// update.
    pub loss: f32,
    /// Fraction of positions whose most likely next token was right.
    pub accuracy: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// A [`Transformer`] under training.
#[derive(Debug)]
pub struct LmTrainer {
    /// The model.
    pub model: Transformer,
    /// The optimizer and its state.
    pub optimizer: Optimizer,
    /// The learning-rate schedule, per step.
    pub schedule: LrSchedule,
    seed: u64,
    /// Steps taken.
    step: u64,
    /// Evaluations recorded (the checkpoint's `epoch` field).
    evaluations: u64,
    /// Clip the global gradient norm to this (none: no clipping).
    clip_norm: Option<f32>,
}

/// The first `len - (T + 1) + 1` positions can start a window of `T + 1`
/// tokens; an error when the text is too short for one.
fn window_starts(len: usize, t: usize, what: &str) -> Result<usize> {
    if len < t + 1 {
        return Err(NetError::Config(format!(
            "the {what} text holds {len} characters, too few for one window of the context \
             {t} plus the next character; use a smaller --context or a longer text"
        )));
    }
    Ok(len - t)
}

/// `count` window starts spread evenly over a text of `len` tokens (at most
/// one per possible start), each window `t + 1` tokens long: the fixed
/// validation set.
pub fn validation_starts(len: usize, t: usize, count: usize) -> Result<Vec<usize>> {
    let positions = window_starts(len, t, "validation")?;
    let count = count.clamp(1, positions);
    let last = positions - 1;
    Ok((0..count)
        .map(|i| {
            if count == 1 {
                0
            } else {
                i * last / (count - 1)
            }
        })
        .collect())
}

/// Rescale every gradient by `max_norm / norm` when the global L2 norm
/// (summed in f64 in parameter order) exceeds `max_norm`; returns the norm
/// before clipping.
pub fn clip_grad_norm(params: &mut [&mut Param], max_norm: f32) -> f32 {
    let _span = amsim::timing::span(amsim::timing::Op::Optimizer);
    let sq: f64 = params
        .iter()
        .flat_map(|p| p.grad.iter())
        .map(|&g| (g as f64) * (g as f64))
        .sum();
    let norm = sq.sqrt();
    if norm > max_norm as f64 && norm.is_finite() {
        let scale = (max_norm as f64 / norm) as f32;
        for p in params.iter_mut() {
            for g in p.grad.iter_mut() {
                *g *= scale;
            }
        }
    }
    norm as f32
}

/// Gather windows starting at `starts` into model inputs (`T` tokens each)
/// and next-token targets.
fn gather_windows(text: &[u32], starts: &[usize], t: usize) -> (Vec<u32>, Vec<u32>) {
    let mut ids = Vec::with_capacity(starts.len() * t);
    let mut targets = Vec::with_capacity(starts.len() * t);
    for &s in starts {
        ids.extend_from_slice(&text[s..s + t]);
        targets.extend_from_slice(&text[s + 1..s + t + 1]);
    }
    (ids, targets)
}

impl LmTrainer {
    /// A trainer at step 0; an error if the schedule or clip bound is
    /// invalid.
    pub fn new(
        model: Transformer,
        optimizer: Optimizer,
        schedule: LrSchedule,
        seed: u64,
        clip_norm: Option<f32>,
    ) -> Result<LmTrainer> {
        schedule.validate()?;
        if let Some(c) = clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(NetError::Config(format!(
                    "--clip-norm must be positive, got {c}"
                )));
            }
        }
        Ok(LmTrainer {
            model,
            optimizer,
            schedule,
            seed,
            step: 0,
            evaluations: 0,
            clip_norm,
        })
    }

    /// Steps taken.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Evaluations recorded so far.
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Count one more recorded evaluation (saved in the checkpoint).
    pub fn record_evaluation(&mut self) {
        self.evaluations += 1;
    }

    /// The window starts of step `step` in a training text of `len`
    /// tokens: `batch` draws from the stream `(seed, Shuffle, step)`.
    pub fn train_starts(&self, step: u64, len: usize, batch: usize) -> Result<Vec<usize>> {
        let t = self.model.config().context;
        let positions = window_starts(len, t, "training")?;
        let mut rng = rng_for(self.seed, Purpose::Shuffle, &[step]);
        Ok((0..batch).map(|_| rng.gen_range(0..positions)).collect())
    }

    /// One optimizer step on `batch` random windows of `train`. A loss that
    /// is NaN or infinite is [`NetError::NonFiniteLoss`] before the update.
    pub fn train_step(&mut self, train: &[u32], batch: usize) -> Result<StepStats> {
        if batch == 0 {
            return Err(NetError::Config("batch size must be at least 1".into()));
        }
        let t = self.model.config().context;
        let starts = self.train_starts(self.step, train.len(), batch)?;
        let (ids, targets) = {
            let _span = amsim::timing::span(amsim::timing::Op::Data);
            gather_windows(train, &starts, t)
        };
        let logits = self.model.forward(&ids, batch, t, true)?;
        let out = softmax_cross_entropy_tokens(&logits, &targets)?;
        if !out.loss.is_finite() {
            return Err(NetError::NonFiniteLoss {
                epoch: self.evaluations as usize,
                batch: self.step as usize,
                loss: out.loss,
            });
        }
        self.model.backward(&out.dlogits)?;
        let mut params = self.model.params_mut();
        let grad_norm = match self.clip_norm {
            Some(c) => clip_grad_norm(&mut params, c),
            None => clip_grad_norm(&mut params, f32::INFINITY),
        };
        let lr = self.schedule.lr_at(self.step);
        self.optimizer.step(&mut params, lr)?;
        let stats = StepStats {
            step: self.step,
            loss: out.loss,
            accuracy: out.correct as f32 / targets.len() as f32,
            lr,
            grad_norm,
        };
        self.step += 1;
        Ok(stats)
    }

    /// Mean loss (nats per token) and next-token accuracy over the windows
    /// of `text` starting at `starts`, `batch` windows at a time, without
    /// training caches ([`evaluate_windows`]).
    pub fn evaluate(&mut self, text: &[u32], starts: &[usize], batch: usize) -> Result<EvalStats> {
        evaluate_windows(&mut self.model, text, starts, batch)
    }

    /// The current state as a [`Checkpoint`] (`epoch` counts evaluations).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            network: self.model.name().to_string(),
            seed: self.seed,
            epoch: self.evaluations,
            global_step: self.step,
            optimizer: self.optimizer.config().name().to_string(),
            optimizer_steps: self.optimizer.steps(),
            params: self
                .model
                .params()
                .into_iter()
                .map(|p| SavedParam {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                    values: p.value.clone(),
                })
                .collect(),
            optimizer_slots: self.optimizer.slots().to_vec(),
        }
    }

    /// Restore a state saved by [`LmTrainer::checkpoint`] for the same
    /// model and optimizer; `path` names the file in errors (nothing is
    /// changed then).
    pub fn restore(&mut self, path: &Path, ck: Checkpoint) -> Result<()> {
        let bad = |reason: String| NetError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let opt = self.optimizer.config().name();
        if ck.optimizer != opt {
            return Err(bad(format!(
                "saved with optimizer '{}', this run uses '{opt}'",
                ck.optimizer
            )));
        }
        ck.check_network(path, self.model.name())?;
        {
            let params = self.model.params();
            ck.check_params(path, &params)?;
            ck.check_optimizer_slots(path, &params)?;
        }
        ck.copy_params(self.model.params_mut());
        self.optimizer
            .restore(ck.optimizer_steps, ck.optimizer_slots);
        self.seed = ck.seed;
        self.evaluations = ck.epoch;
        self.step = ck.global_step;
        Ok(())
    }
}

/// Mean loss (nats per token) and next-token accuracy of `model` over the
/// windows of `text` starting at `starts` (each `T + 1` tokens, `T` the
/// model's context), `batch` windows at a time, without training caches.
/// Training's validation rows and `approxtrain eval` both measure with
/// this, so the two agree to the bit for the same weights and plan.
pub fn evaluate_windows(
    model: &mut Transformer,
    text: &[u32],
    starts: &[usize],
    batch: usize,
) -> Result<EvalStats> {
    let t = model.config().context;
    if let Some(&s) = starts.iter().find(|&&s| s + t + 1 > text.len()) {
        return Err(NetError::Config(format!(
            "a validation window at {s} runs past the text's {} tokens",
            text.len()
        )));
    }
    let (mut loss_sum, mut correct, mut tokens) = (0.0f64, 0usize, 0usize);
    for chunk in starts.chunks(batch.max(1)) {
        let (ids, targets) = gather_windows(text, chunk, t);
        let logits = model.forward(&ids, chunk.len(), t, false)?;
        let out = softmax_cross_entropy_tokens(&logits, &targets)?;
        loss_sum += out.loss as f64 * targets.len() as f64;
        correct += out.correct;
        tokens += targets.len();
    }
    let n = tokens.max(1) as f64;
    Ok(EvalStats {
        loss: (loss_sum / n) as f32,
        accuracy: (correct as f64 / n) as f32,
        samples: starts.len(),
    })
}

/// Copy the parameters of `ck` into `model`; an error naming the file and
/// the mismatch (with `model` unchanged) when the checkpoint is of another
/// network or another size.
pub fn apply_weights(ck: &Checkpoint, path: &Path, model: &mut Transformer) -> Result<()> {
    ck.check_network(path, model.name())?;
    ck.check_params(path, &model.params())?;
    ck.copy_params(model.params_mut());
    Ok(())
}

/// Draw the next token from one row of logits: `softmax(logits /
/// temperature)` (in f64) sampled with `rng`, or the most likely token
/// (the first on ties) at temperature 0.
pub fn sample_token<R: Rng + ?Sized>(logits: &[f32], temperature: f32, rng: &mut R) -> u32 {
    let argmax = logits
        .iter()
        .enumerate()
        .fold(0, |best, (i, &v)| if v > logits[best] { i } else { best });
    if temperature <= 0.0 {
        return argmax as u32;
    }
    let max = logits[argmax] as f64;
    let weights: Vec<f64> = logits
        .iter()
        .map(|&v| ((v as f64 - max) / temperature as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, &w) in weights.iter().enumerate() {
        if u < w {
            return i as u32;
        }
        u -= w;
    }
    argmax as u32
}

/// Continue `prompt` (non-empty) by `tokens` sampled tokens, each from the
/// model's prediction given the last `context` tokens; returns only the
/// new tokens.
pub fn generate<R: Rng + ?Sized>(
    model: &mut Transformer,
    prompt: &[u32],
    tokens: usize,
    temperature: f32,
    rng: &mut R,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(NetError::Config(
            "the prompt must hold at least one character".into(),
        ));
    }
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(NetError::Config(format!(
            "--temperature must be >= 0, got {temperature}"
        )));
    }
    let (context, vocab) = (model.config().context, model.config().vocab);
    let mut seq = prompt.to_vec();
    for _ in 0..tokens {
        let window = &seq[seq.len().saturating_sub(context)..];
        let logits = model.forward(window, 1, window.len(), false)?;
        let last = &logits.data[(window.len() - 1) * vocab..window.len() * vocab];
        seq.push(sample_token(last, temperature, rng));
    }
    Ok(seq.split_off(prompt.len()))
}
