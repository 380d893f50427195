//! `approxtrain eval`: test loss and accuracy of a trained checkpoint under
//! one or more multiplier plans; for a transformer run, validation loss,
//! perplexity and next-character accuracy. One path for both tasks over
//! [`experiments::checkpoint_eval`], which holds what differs.

use std::path::PathBuf;

use anyhow::bail;
use experiments::checkpoint_eval::{CheckpointEvaluator, EvalData};
use experiments::eval::EvalPlan;
use experiments::run_dir::load_checkpoint;

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
    let models = approxtrain::models::MODELS;
    let source = load_checkpoint(&a.checkpoint)?;
    let data = EvalData {
        dataset: a.dataset.clone(),
        data_dir: a.data_dir.clone(),
        test_limit: a.test_limit,
        eval_windows: a.eval_windows,
    };
    data.check(&source.run.spec, &a.checkpoint)?;
    // Plans are resolved before any data is read: a wrong model or width
    // fails at once.
    let uniform = match &a.multiplier {
        Some(list) => split_specs(list)?,
        None => Vec::new(),
    };
    let plans = EvalPlan::asked(&uniform, &a.plan, &source.run.spec, models)?;
    let evaluator = CheckpointEvaluator::new(source, &data, &a.checkpoint)?;
    if let Some(n) = evaluator.data_notice() {
        eprintln!("{n}");
    }
    eprintln!("{}", evaluator.describe());
    let mut results = Vec::new();
    for plan in &plans {
        let r = evaluator.evaluate(plan, models)?;
        eprintln!("{}", evaluator.result_line(&r));
        results.push(r);
    }
    print!("{}", evaluator.table(&results));
    if let Some(csv) = &a.csv {
        evaluator.write_csv(csv, &results, a.force)?;
        eprintln!("wrote {}", csv.display());
    }
    Ok(())
}
