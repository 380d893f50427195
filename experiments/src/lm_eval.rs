//! Inference of a trained language model under other multiplier plans:
//! `approxtrain eval` and `approxtrain sensitivity` on a `--net transformer`
//! run.
//!
//! The weights come from the run's checkpoint and the vocabulary from its
//! `vocab.txt`; the model is rebuilt from the run's spec with the plan asked
//! for ([`crate::model::transformer_for_spec`]). By default it is scored on the same
//! fixed validation windows as the run's `metrics.csv` rows (the last tenth
//! of the training text, [`nets::lm::validation_starts`] with the run's
//! `eval_windows`), with the same function ([`nets::lm::evaluate_windows`])
//! and batch size, so evaluating the run's own plan reproduces the last
//! `test_loss` of its `metrics.csv` to the bit. Another text
//! (`--dataset text:OTHER`) is read whole (the model never trained on it)
//! and encoded with the run's vocabulary.
//!
//! A result is the mean validation loss in nats per character, its
//! perplexity `exp(loss)` and the next-character accuracy. Only forward
//! products run: the plan roles `fwd`, `attn_qk` and `attn_av` matter.

use std::path::Path;

use amsim::ModelInfo;
use nets::data::load_text;
use nets::lm::{apply_weights, evaluate_windows, validation_starts};

use crate::error::{ExperimentError, Result};
use crate::eval::{evaluate_plan, write_csv, EvalPlan, EvalResult};
use crate::lm::load_corpus;
use crate::model::transformer_for_spec;
use crate::run_dir::{read_vocab, LoadedCheckpoint, RUN_TOML, VOCAB_TXT};
use crate::sensitivity::{transformer_items, Harm, PlanEvaluator, SensitivityItem};
use crate::spec::{text_path, RunSpec, Task};

/// A trained language model and the text windows it is scored on, ready
/// to evaluate plans.
pub struct LmEvaluator {
    /// Where the weights come from.
    pub source: LoadedCheckpoint,
    /// The spec models are built from: the run's, with the dataset asked
    /// for.
    pub spec: RunSpec,
    /// Characters by id (the run's `vocab.txt`).
    pub vocab: Vec<char>,
    /// The encoded text the windows are drawn from.
    pub text: Vec<u32>,
    /// Window starts in `text` (each window holds `context + 1` characters).
    pub starts: Vec<usize>,
    /// What `text` is, for messages: the run's validation split or another
    /// file.
    pub text_source: String,
}

impl LmEvaluator {
    /// Prepare the evaluation of the transformer run `source` on its
    /// validation windows, or on the whole text of `dataset` (`text:PATH`)
    /// when it names another file; `eval_windows` replaces the run's
    /// number of windows. Errors: not a transformer run, a dataset that is
    /// not a text file, a character outside the run's vocabulary (naming
    /// the file and the character), a text shorter than one window.
    pub fn new(
        source: LoadedCheckpoint,
        dataset: Option<&str>,
        eval_windows: Option<usize>,
    ) -> Result<LmEvaluator> {
        let mut spec = source.run.spec.clone();
        if spec.task() != Task::LanguageModel {
            return Err(ExperimentError::BadFile {
                path: source.run_dir.join(RUN_TOML),
                reason: format!(
                    "a {} run; language-model evaluation needs a --net transformer run",
                    spec.net
                ),
            });
        }
        if eval_windows == Some(0) {
            return Err(ExperimentError::Other(
                "--eval-windows must be at least 1".into(),
            ));
        }
        let t_spec = spec.transformer_spec();
        let windows = eval_windows.unwrap_or(t_spec.eval_windows);
        let vocab = read_vocab(&source.run_dir)?;
        let vocab_path = source.run_dir.join(VOCAB_TXT);
        let own = dataset.is_none_or(|d| d == spec.dataset);
        let (text, text_source) = if own {
            let (path, corpus) = load_corpus(&spec)?;
            if corpus.vocab != vocab {
                return Err(ExperimentError::BadFile {
                    path,
                    reason: format!(
                        "its characters differ from the run's {} (the text changed since \
                         training); pass the training text, or another one with --dataset",
                        vocab_path.display()
                    ),
                });
            }
            let what = format!("the validation split of {}", path.display());
            (corpus.valid, what)
        } else {
            let dataset = dataset.unwrap_or_default();
            let path = text_path(dataset).ok_or_else(|| {
                ExperimentError::Other(format!(
                    "--dataset {dataset}: a transformer run evaluates on a text file, \
                     --dataset text:PATH"
                ))
            })?;
            spec.dataset = dataset.to_string();
            (
                encode_with(path, &vocab, &vocab_path)?,
                path.display().to_string(),
            )
        };
        let context = t_spec.context;
        if text.len() <= context {
            return Err(ExperimentError::BadFile {
                path: text_path(&spec.dataset).unwrap_or(Path::new("")).into(),
                reason: format!(
                    "{} holds {} characters, too few for one window of the run's context \
                     {context} plus the next character",
                    text_source,
                    text.len()
                ),
            });
        }
        let starts = validation_starts(text.len(), context, windows)?;
        Ok(LmEvaluator {
            source,
            spec,
            vocab,
            text,
            starts,
            text_source,
        })
    }

    /// Characters scored per evaluation: `context` per window.
    pub fn characters(&self) -> usize {
        self.starts.len() * self.context()
    }

    fn context(&self) -> usize {
        self.spec.transformer.as_ref().map_or(0, |t| t.context)
    }

    /// Validation loss, perplexity and accuracy of the trained weights
    /// under `plan`.
    pub fn evaluate(&self, plan: &EvalPlan, models: &[ModelInfo]) -> Result<EvalResult> {
        let build = |spec: &RunSpec| {
            let mut model = transformer_for_spec(spec, self.vocab.len(), models)?;
            let source = &self.source;
            apply_weights(&source.checkpoint, &source.checkpoint_path, &mut model)?;
            Ok(model)
        };
        evaluate_plan(plan, &self.spec, build, |mut model, spec| {
            let batch = spec.eval_batch_size;
            Ok(evaluate_windows(
                &mut model,
                &self.text,
                &self.starts,
                batch,
            )?)
        })
    }

    /// Forward products per window of every item [`transformer_items`]
    /// lists, for the run's model.
    pub fn items(&self) -> Vec<SensitivityItem> {
        let t = self.spec.transformer_spec();
        transformer_items(t.layers, t.width, t.context, self.vocab.len())
    }
}

/// `path`'s whole text as ids of `vocab`; an error naming the file and the
/// characters it holds outside the vocabulary (read from `vocab_path`).
fn encode_with(path: &Path, vocab: &[char], vocab_path: &Path) -> Result<Vec<u32>> {
    let corpus = load_text(path)?;
    // The file's own ids, sorted by character, mapped onto the run's.
    let unknown: Vec<String> = corpus
        .vocab
        .iter()
        .filter(|c| !vocab.contains(c))
        .map(|c| format!("{c:?}"))
        .collect();
    if !unknown.is_empty() {
        let shown = unknown.len().min(5);
        return Err(ExperimentError::BadFile {
            path: path.to_path_buf(),
            reason: format!(
                "holds {} character{} outside the run's vocabulary ({}, {} characters): {}{}",
                unknown.len(),
                if unknown.len() == 1 { "" } else { "s" },
                vocab_path.display(),
                vocab.len(),
                unknown[..shown].join(", "),
                if unknown.len() > shown { ", ..." } else { "" }
            ),
        });
    }
    let to_run: Vec<u32> = corpus
        .vocab
        .iter()
        .map(|c| vocab.iter().position(|v| v == c).expect("checked above") as u32)
        .collect();
    Ok(corpus
        .train
        .iter()
        .chain(&corpus.valid)
        .map(|&i| to_run[i as usize])
        .collect())
}

impl PlanEvaluator for LmEvaluator {
    fn harm(&self) -> Harm {
        Harm::LossRise
    }

    fn run_spec(&self) -> &RunSpec {
        &self.spec
    }

    fn items(&self, _models: &[ModelInfo]) -> Result<Vec<SensitivityItem>> {
        Ok(LmEvaluator::items(self))
    }

    fn evaluate(&self, plan: &EvalPlan, models: &[ModelInfo]) -> Result<EvalResult> {
        LmEvaluator::evaluate(self, plan, models)
    }

    fn mac_unit(&self) -> &'static str {
        "window"
    }
}

/// Header of the language-model evaluation CSV. `test_loss` is the mean
/// validation loss (nats per character), as in `metrics.csv`;
/// `loss_vs_first` its change against the first row.
pub const LM_EVAL_CSV_HEADER: [&str; 12] = [
    "checkpoint",
    "net",
    "dataset",
    "label",
    "plan",
    "windows",
    "characters",
    "test_loss",
    "test_perplexity",
    "test_accuracy",
    "loss_vs_first",
    "seconds",
];

/// Write language-model evaluation results as CSV, whole; an existing file
/// is an error unless `overwrite`.
pub fn write_lm_eval_csv(
    path: &Path,
    evaluator: &LmEvaluator,
    results: &[EvalResult],
    overwrite: bool,
) -> Result<()> {
    let first = results.first().map_or(0.0, |r| r.loss as f64);
    let records = results.iter().map(|r| {
        vec![
            evaluator.source.checkpoint_path.display().to_string(),
            evaluator.spec.net.clone(),
            evaluator.spec.dataset.clone(),
            r.label.clone(),
            r.plan.clone(),
            r.samples.to_string(),
            (r.samples * evaluator.context()).to_string(),
            r.loss.to_string(),
            perplexity(r).to_string(),
            r.accuracy.to_string(),
            format!("{:.6}", r.loss as f64 - first),
            format!("{:.3}", r.seconds),
        ]
    });
    write_csv(path, overwrite, &LM_EVAL_CSV_HEADER, records)
}

/// `exp(loss)`, as `metrics.csv`'s `test_perplexity` column computes it.
pub fn perplexity(r: &EvalResult) -> f32 {
    (r.loss as f64).exp() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use amsim::{Multiplier, MultiplierPlan};
    use nets::transformer::{Positions, Transformer, TransformerConfig};
    use nets::PlannedModel;

    /// The items partition the model's forward products: their MACs add up
    /// to `macs_per_sequence`, whatever the size.
    #[test]
    fn transformer_items_cover_every_forward_product_once() {
        for (layers, c, heads, t, v) in [(1, 16, 2, 16, 11), (3, 24, 4, 9, 40)] {
            let model = Transformer::new(
                TransformerConfig {
                    vocab: v,
                    context: t,
                    layers,
                    width: c,
                    heads,
                    positions: Positions::Learned,
                    tied_head: true,
                },
                MultiplierPlan::uniform(Multiplier::Fp32),
                1,
            )
            .unwrap();
            let items = transformer_items(layers, c, t, v);
            assert_eq!(items.len(), 5 * layers + 1);
            let sum: u64 = items.iter().map(|i| i.forward_macs).sum();
            assert_eq!(sum, model.macs_per_sequence(t).forward);
            let names = model.plan_names();
            assert!(items.iter().all(|i| names.contains(&i.layer)), "{names:?}");
        }
    }
}
