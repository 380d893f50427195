//! `approxtrain eval`: test loss and accuracy of a trained checkpoint under
//! one or more multiplier plans (see [`experiments::eval`]; for a
//! transformer run, validation loss, perplexity and next-character accuracy,
//! see [`experiments::lm_eval`]).

use std::path::PathBuf;

use anyhow::bail;
use experiments::eval::{write_eval_csv, EvalPlan, EvalResult, Evaluator};
use experiments::lm_eval::{perplexity, write_lm_eval_csv, LmEvaluator};
use experiments::run_dir::{load_checkpoint, LoadedCheckpoint};
use experiments::{PlanFile, Task};

/// Options of `approxtrain eval`.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  approxtrain eval --checkpoint runs/lenet5-fp32 --multiplier fp32,bf16,mbm:7,mitchell:7 --csv eval.csv
  approxtrain eval --checkpoint runs/lenet5-fp32/checkpoint.bin --plan greedy.toml
  approxtrain eval --checkpoint runs/lm-fp32 --multiplier fp32,bf16,mbm:7 --csv lm-eval.csv

--checkpoint takes a run directory (its checkpoint.bin is read) or a
checkpoint file inside a run directory; the run's run.toml says which
network, dataset and plan the weights were trained with. Only the forward
products run in evaluation, so only the fwd role of a plan matters. A plan
file applies on top of the run's own plan.

For a transformer run: validation loss (nats/char), perplexity and
next-character accuracy on the run's own validation windows (the last tenth
of its text; --eval-windows N takes N windows instead), or on the whole of
another text with --dataset text:PATH (its characters must be in the run's
vocabulary). The run's own plan reproduces the last test_loss of its
metrics.csv.")]
pub struct EvalArgs {
    /// Run directory, or a checkpoint file in one.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Comma-separated multipliers, one evaluation each: fp32,bf16,mbm:7,mitchell:7
    /// (a per-role plan fwd=..,dx=.. is one evaluation) [default: the run's own plan].
    #[arg(long, value_name = "SPEC[,SPEC...]", conflicts_with = "plan")]
    multiplier: Option<String>,
    /// Per-layer plan file (as for train --plan); may be given several times.
    #[arg(long, value_name = "FILE")]
    plan: Vec<PathBuf>,
    /// Evaluate on this dataset instead of the run's (same image shape, or
    /// text:PATH with the run's characters for a transformer run).
    #[arg(long)]
    dataset: Option<String>,
    /// Data directory [default: the run's, $APPROXTRAIN_DATA, ./data, the shipped MNIST subset].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Evaluate on the first N test images only.
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Transformer runs: validation windows to score [default: the run's --eval-windows].
    #[arg(long, value_name = "N")]
    eval_windows: Option<usize>,
    /// Write the table as CSV (refuses to replace a file without --force).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Replace an existing --csv file.
    #[arg(long)]
    force: bool,
}

/// Split `fp32,bf16,fwd=mbm:7,dx=fp32` into plans: a comma starts a new
/// plan unless the next item is a role key (`dx=...`) continuing a per-role
/// plan.
pub fn split_specs(list: &str) -> anyhow::Result<Vec<amsim::PlanSpec>> {
    let mut groups: Vec<String> = Vec::new();
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            bail!("--multiplier '{list}': empty item");
        }
        let continues = item
            .split_once('=')
            .is_some_and(|(k, _)| amsim::Role::from_key(k).is_some())
            && groups.last().is_some_and(|g| g.contains('='))
            && !item.starts_with("fwd=");
        match groups.last_mut() {
            Some(g) if continues => {
                g.push(',');
                g.push_str(item);
            }
            _ => groups.push(item.to_string()),
        }
    }
    groups
        .iter()
        .map(|g| Ok(g.parse::<amsim::PlanSpec>()?))
        .collect()
}

/// Print results as a table, with the change against the first row.
pub fn print_table(results: &[EvalResult]) {
    let width = results
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:>9}  {:>9}  {:>10}  {:>8}",
        "plan", "test loss", "accuracy", "vs first", "seconds"
    );
    let first = results.first().map(|r| r.accuracy).unwrap_or(0.0);
    for r in results {
        println!(
            "{:<width$}  {:>9.4}  {:>8.2}%  {:>+9.2}pt  {:>8.1}",
            r.label,
            r.loss,
            100.0 * r.accuracy,
            100.0 * (r.accuracy - first),
            r.seconds
        );
    }
}

/// Print language-model results as a table, with the change of the
/// validation loss against the first row.
pub fn print_lm_table(results: &[EvalResult]) {
    let width = results
        .iter()
        .map(|r| r.label.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$}  {:>9}  {:>10}  {:>8}  {:>9}  {:>8}",
        "plan", "val loss", "perplexity", "accuracy", "vs first", "seconds"
    );
    let first = results.first().map(|r| r.loss).unwrap_or(0.0);
    for r in results {
        println!(
            "{:<width$}  {:>9.4}  {:>10.4}  {:>7.2}%  {:>+9.4}  {:>8.1}",
            r.label,
            r.loss,
            perplexity(r),
            100.0 * r.accuracy,
            r.loss - first,
            r.seconds
        );
    }
    println!("(loss in nats/char; vs first: change of the validation loss against the first row)");
}

/// The plans asked for: one per `--multiplier` item and `--plan` file, or
/// the run's own.
fn plans_of(a: &EvalArgs, source: &LoadedCheckpoint) -> anyhow::Result<Vec<EvalPlan>> {
    let models = approxtrain::models::MODELS;
    let mut plans = Vec::new();
    if let Some(list) = &a.multiplier {
        for spec in split_specs(list)? {
            // Resolving checks models and widths before any data is read.
            amsim::spec::Resolver::new(models).resolve_plan(&spec)?;
            plans.push(EvalPlan::uniform(&spec));
        }
    }
    for path in &a.plan {
        let file = PlanFile::read(path)?;
        plans.push(EvalPlan::from_file_for_spec(
            &file,
            &source.run.spec,
            models,
        )?);
    }
    if plans.is_empty() {
        plans.push(EvalPlan::of_run(&source.run.spec));
    }
    Ok(plans)
}

/// Evaluate each plan in turn, printing `line` of each result as it comes.
fn evaluate_each(
    plans: &[EvalPlan],
    evaluate: impl Fn(&EvalPlan) -> experiments::Result<EvalResult>,
    line: impl Fn(&EvalResult) -> String,
) -> anyhow::Result<Vec<EvalResult>> {
    let mut results = Vec::new();
    for plan in plans {
        let r = evaluate(plan)?;
        eprintln!("{}", line(&r));
        results.push(r);
    }
    Ok(results)
}

/// Run `eval`.
pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    if let Some(csv) = &a.csv {
        experiments::eval::refuse_existing(csv, a.force)?;
    }
    // A table replaced (--force) inside a run directory is written under
    // that directory's lock, so no training or other evaluation writes
    // there at the same time.
    let _lock = match (&a.csv, a.force) {
        (Some(csv), true) => experiments::run_dir::lock_if_run_dir(csv.parent())?,
        _ => None,
    };
    let source = load_checkpoint(&a.checkpoint)?;
    if source.run.spec.task() == Task::LanguageModel {
        return run_lm(a, source);
    }
    if a.eval_windows.is_some() {
        bail!(
            "--eval-windows applies to transformer runs; {} is a {} run (use --test-limit)",
            a.checkpoint.display(),
            source.run.spec.net
        );
    }
    let models = approxtrain::models::MODELS;
    let plans = plans_of(&a, &source)?;
    let evaluator = Evaluator::new(
        source,
        a.dataset.as_deref(),
        a.data_dir.as_deref(),
        a.test_limit,
    )?;
    if let Some(n) = &evaluator.data_notice {
        eprintln!("{n}");
    }
    eprintln!(
        "{} ({} epochs, trained with {}) on {} test images of {} from {}",
        evaluator.source.checkpoint_path.display(),
        evaluator.source.checkpoint.epoch,
        evaluator.source.run.spec.plan_label(),
        evaluator.test_set.len,
        evaluator.spec.dataset,
        evaluator.data_source
    );
    let results = evaluate_each(
        &plans,
        |p| evaluator.evaluate(p, models),
        |r| {
            format!(
                "{}: accuracy {:.2}%, loss {:.4} ({:.1} s)",
                r.label,
                100.0 * r.accuracy,
                r.loss,
                r.seconds
            )
        },
    )?;
    print_table(&results);
    if let Some(csv) = &a.csv {
        write_eval_csv(csv, &evaluator, &results, a.force)?;
        eprintln!("wrote {}", csv.display());
    }
    Ok(())
}

/// `eval` of a transformer run.
fn run_lm(a: EvalArgs, source: LoadedCheckpoint) -> anyhow::Result<()> {
    let models = approxtrain::models::MODELS;
    for (given, flag) in [
        (a.test_limit.is_some(), "--test-limit"),
        (a.data_dir.is_some(), "--data-dir"),
    ] {
        if given {
            bail!(
                "{flag} applies to image classifiers; {} is a transformer run (use --eval-windows N, \
                 or --dataset text:PATH for another text)",
                a.checkpoint.display()
            );
        }
    }
    let plans = plans_of(&a, &source)?;
    let evaluator = LmEvaluator::new(source, a.dataset.as_deref(), a.eval_windows)?;
    eprintln!(
        "{} (step {}, trained with {}) on {} windows ({} characters) of {}",
        evaluator.source.checkpoint_path.display(),
        evaluator.source.checkpoint.global_step,
        evaluator.source.run.spec.plan_label(),
        evaluator.starts.len(),
        evaluator.characters(),
        evaluator.text_source
    );
    let results = evaluate_each(
        &plans,
        |p| evaluator.evaluate(p, models),
        |r| {
            format!(
                "{}: loss {:.4} nats/char, accuracy {:.2}% ({:.1} s)",
                r.label,
                r.loss,
                100.0 * r.accuracy,
                r.seconds
            )
        },
    )?;
    print_lm_table(&results);
    if let Some(csv) = &a.csv {
        write_lm_eval_csv(csv, &evaluator, &results, a.force)?;
        eprintln!("wrote {}", csv.display());
    }
    Ok(())
}
