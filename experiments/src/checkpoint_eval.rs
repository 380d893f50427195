//! `approxtrain eval` of a trained run of either task: one evaluator over
//! the classifier's [`Evaluator`] and the language model's
//! [`LmEvaluator`], which both score plans through
//! [`crate::eval::evaluate_plan`]. What differs between the tasks (the
//! options that apply, the data described, the table's columns, the CSV)
//! is decided here, once, from the run's [`Task`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use amsim::ModelInfo;

use crate::error::{ExperimentError, Result};
use crate::eval::{write_eval_csv, EvalPlan, EvalResult, Evaluator};
use crate::lm_eval::{perplexity, write_lm_eval_csv, LmEvaluator};
use crate::run_dir::LoadedCheckpoint;
use crate::spec::{RunSpec, Task};

/// What may replace the data a checkpoint is scored on.
#[derive(Debug, Clone, Default)]
pub struct EvalData {
    /// Another dataset (same image shape), or `text:PATH` for a language
    /// model.
    pub dataset: Option<String>,
    /// Classifiers: the data directory.
    pub data_dir: Option<PathBuf>,
    /// Classifiers: the first N test images only.
    pub test_limit: Option<usize>,
    /// Language models: validation windows to score.
    pub eval_windows: Option<usize>,
}

/// A trained run of either task and the data it is scored on.
pub enum CheckpointEvaluator {
    /// An image classifier on its test images.
    Classifier(Evaluator),
    /// A language model on text windows.
    LanguageModel(LmEvaluator),
}

impl EvalData {
    /// An error when an option is given that the task of the run `spec`
    /// (named `named` on the command line) cannot use, saying what to use
    /// instead.
    pub fn check(&self, spec: &RunSpec, named: &Path) -> Result<()> {
        let misplaced = match spec.task() {
            Task::Classifier => self.eval_windows.is_some().then(|| {
                format!(
                    "--eval-windows applies to transformer runs; {} is a {} run (use --test-limit)",
                    named.display(),
                    spec.net
                )
            }),
            Task::LanguageModel => [
                (self.test_limit.is_some(), "--test-limit"),
                (self.data_dir.is_some(), "--data-dir"),
            ]
            .into_iter()
            .find(|(given, _)| *given)
            .map(|(_, flag)| {
                format!(
                    "{flag} applies to image classifiers; {} is a transformer run (use \
                     --eval-windows N, or --dataset text:PATH for another text)",
                    named.display()
                )
            }),
        };
        misplaced.map_or(Ok(()), |m| Err(ExperimentError::Other(m)))
    }
}

impl CheckpointEvaluator {
    /// Prepare the evaluation of `source` (named `named` on the command
    /// line) on `data`, checked with [`EvalData::check`].
    pub fn new(source: LoadedCheckpoint, data: &EvalData, named: &Path) -> Result<Self> {
        data.check(&source.run.spec, named)?;
        Ok(match source.run.spec.task() {
            Task::Classifier => CheckpointEvaluator::Classifier(Evaluator::new(
                source,
                data.dataset.as_deref(),
                data.data_dir.as_deref(),
                data.test_limit,
            )?),
            Task::LanguageModel => CheckpointEvaluator::LanguageModel(LmEvaluator::new(
                source,
                data.dataset.as_deref(),
                data.eval_windows,
            )?),
        })
    }

    /// Where the weights come from.
    pub fn source(&self) -> &LoadedCheckpoint {
        match self {
            CheckpointEvaluator::Classifier(e) => &e.source,
            CheckpointEvaluator::LanguageModel(e) => &e.source,
        }
    }

    /// The spec models are built from.
    pub fn spec(&self) -> &RunSpec {
        match self {
            CheckpointEvaluator::Classifier(e) => &e.spec,
            CheckpointEvaluator::LanguageModel(e) => &e.spec,
        }
    }

    /// A notice about the data source, if any (the shipped MNIST subset).
    pub fn data_notice(&self) -> Option<&str> {
        match self {
            CheckpointEvaluator::Classifier(e) => e.data_notice.as_deref(),
            CheckpointEvaluator::LanguageModel(_) => None,
        }
    }

    /// One line: the checkpoint, how far it trained, its plan and the data
    /// it is scored on.
    pub fn describe(&self) -> String {
        let source = self.source();
        match self {
            CheckpointEvaluator::Classifier(e) => format!(
                "{} ({} epochs, trained with {}) on {} test images of {} from {}",
                source.checkpoint_path.display(),
                source.checkpoint.epoch,
                source.run.spec.plan_label(),
                e.test_set.len,
                e.spec.dataset,
                e.data_source
            ),
            CheckpointEvaluator::LanguageModel(e) => format!(
                "{} (step {}, trained with {}) on {} windows ({} characters) of {}",
                source.checkpoint_path.display(),
                source.checkpoint.global_step,
                source.run.spec.plan_label(),
                e.starts.len(),
                e.characters(),
                e.text_source
            ),
        }
    }

    /// Score the trained weights under `plan`.
    pub fn evaluate(&self, plan: &EvalPlan, models: &[ModelInfo]) -> Result<EvalResult> {
        match self {
            CheckpointEvaluator::Classifier(e) => e.evaluate(plan, models),
            CheckpointEvaluator::LanguageModel(e) => e.evaluate(plan, models),
        }
    }

    /// One line of progress for a result.
    pub fn result_line(&self, r: &EvalResult) -> String {
        match self {
            CheckpointEvaluator::Classifier(_) => format!(
                "{}: accuracy {:.2}%, loss {:.4} ({:.1} s)",
                r.label,
                100.0 * r.accuracy,
                r.loss,
                r.seconds
            ),
            CheckpointEvaluator::LanguageModel(_) => format!(
                "{}: loss {:.4} nats/char, accuracy {:.2}% ({:.1} s)",
                r.label,
                r.loss,
                100.0 * r.accuracy,
                r.seconds
            ),
        }
    }

    /// The results as a text table, one line each, with the change
    /// against the first row: of the accuracy for a classifier, of the
    /// validation loss for a language model.
    pub fn table(&self, results: &[EvalResult]) -> String {
        let width = results
            .iter()
            .map(|r| r.label.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut out = String::new();
        match self {
            CheckpointEvaluator::Classifier(_) => {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>9}  {:>9}  {:>10}  {:>8}",
                    "plan", "test loss", "accuracy", "vs first", "seconds"
                );
                let first = results.first().map(|r| r.accuracy).unwrap_or(0.0);
                for r in results {
                    let _ = writeln!(
                        out,
                        "{:<width$}  {:>9.4}  {:>8.2}%  {:>+9.2}pt  {:>8.1}",
                        r.label,
                        r.loss,
                        100.0 * r.accuracy,
                        100.0 * (r.accuracy - first),
                        r.seconds
                    );
                }
            }
            CheckpointEvaluator::LanguageModel(_) => {
                let _ = writeln!(
                    out,
                    "{:<width$}  {:>9}  {:>10}  {:>8}  {:>9}  {:>8}",
                    "plan", "val loss", "perplexity", "accuracy", "vs first", "seconds"
                );
                let first = results.first().map(|r| r.loss).unwrap_or(0.0);
                for r in results {
                    let _ = writeln!(
                        out,
                        "{:<width$}  {:>9.4}  {:>10.4}  {:>7.2}%  {:>+9.4}  {:>8.1}",
                        r.label,
                        r.loss,
                        perplexity(r),
                        100.0 * r.accuracy,
                        r.loss - first,
                        r.seconds
                    );
                }
                out.push_str(
                    "(loss in nats/char; vs first: change of the validation loss against the \
                     first row)\n",
                );
            }
        }
        out
    }

    /// Write the results as CSV, whole: the classifier's or the language
    /// model's columns. An existing file is an error unless `overwrite`.
    pub fn write_csv(&self, path: &Path, results: &[EvalResult], overwrite: bool) -> Result<()> {
        match self {
            CheckpointEvaluator::Classifier(e) => write_eval_csv(path, e, results, overwrite),
            CheckpointEvaluator::LanguageModel(e) => write_lm_eval_csv(path, e, results, overwrite),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TRANSFORMER;

    /// Each task refuses the options of the other one, naming the option,
    /// the run and what to use instead; options a task uses pass.
    #[test]
    fn an_option_of_the_other_task_is_a_one_line_error() {
        let named = Path::new("runs/r");
        let lenet = RunSpec::with_defaults("lenet5", "mnist");
        let lm = RunSpec::with_defaults(TRANSFORMER, "text:corpus.txt");
        let windows = EvalData {
            eval_windows: Some(4),
            ..EvalData::default()
        };
        let e = windows.check(&lenet, named).unwrap_err().to_string();
        assert!(
            e.contains("--eval-windows") && e.contains("runs/r") && e.contains("--test-limit"),
            "{e}"
        );
        assert!(windows.check(&lm, named).is_ok());
        for (flag, data) in [
            (
                "--test-limit",
                EvalData {
                    test_limit: Some(3),
                    ..EvalData::default()
                },
            ),
            (
                "--data-dir",
                EvalData {
                    data_dir: Some("data".into()),
                    ..EvalData::default()
                },
            ),
        ] {
            let e = data.check(&lm, named).unwrap_err().to_string();
            assert!(
                e.starts_with(flag) && e.contains("--eval-windows") && !e.contains('\n'),
                "{e}"
            );
            assert!(data.check(&lenet, named).is_ok());
        }
    }
}
