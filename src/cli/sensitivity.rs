//! `approxtrain sensitivity`: per-layer sensitivity of a trained network to
//! an approximate multiplier and a greedy per-layer plan (see
//! [`experiments::sensitivity`]); classifiers and transformer runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use experiments::atomic::write_atomic;
use experiments::eval::Evaluator;
use experiments::figure::sensitivity::write_sensitivity_png;
use experiments::lm_eval::LmEvaluator;
use experiments::run_dir::load_checkpoint;
use experiments::sensitivity::{
    plan_file_text, sensitivity, sensitivity_csv, Harm, PlanEvaluator, SensitivityReport,
};
use experiments::Task;

/// Options of `approxtrain sensitivity`.
#[derive(clap::Args)]
#[command(after_help = "\
Example:
  approxtrain sensitivity --checkpoint runs/lenet5-fp32 --multiplier mitchell:3 --max-drop 0.5 --out sens-mit3
  approxtrain sensitivity --checkpoint runs/lm-fp32 --multiplier mbm:7 --max-rise 0.05 --out sens-lm

For each layer with products: the test accuracy with only that layer's
forward products on the multiplier, and with all but that layer on it,
against the run's own plan (the baseline). Then a greedy search moves layers
onto the multiplier in order of least harm while the accuracy drop stays
within --max-drop percentage points, and writes the plan for
`eval --plan` / `train --plan`.

For a transformer run the items are, per block, the attention projections
(blockI.attn), the score products Q·Kᵀ (blockI.attn_qk) and A·V
(blockI.attn_av), the MLP layers (blockI.mlp.fc1, blockI.mlp.fc2), and the
head; the harm is the rise of the validation loss on the run's validation
windows, and the budget is --max-rise nats/char.

--out gets sensitivity.csv, sensitivity.png and plan.toml; it must be a new
or empty directory (or pass --force to replace those three files), and never
a run directory.")]
pub struct SensitivityArgs {
    /// Run directory, or a checkpoint file in one.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// The approximate multiplier (one spec, e.g. mitchell:3).
    #[arg(long, value_name = "SPEC")]
    multiplier: String,
    /// Classifiers: largest accuracy drop of the greedy plan, percentage points [default: 0.5].
    #[arg(long, value_name = "P")]
    max_drop: Option<f64>,
    /// Transformer runs: largest validation-loss rise of the greedy plan, nats/char [default: 0.05].
    #[arg(long, value_name = "NATS")]
    max_rise: Option<f64>,
    /// Transformer runs: validation windows to score [default: the run's --eval-windows].
    #[arg(long, value_name = "N")]
    eval_windows: Option<usize>,
    /// Output directory [default: sensitivity-MULT next to the run directory].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Evaluate on the first N test images only.
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Data directory [default: the run's, $APPROXTRAIN_DATA, ./data, the shipped MNIST subset].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Replace the output files of an earlier sensitivity run in --out.
    #[arg(long)]
    force: bool,
}

/// The files `sensitivity` writes into its output directory.
const OUTPUTS: [&str; 3] = ["sensitivity.csv", "sensitivity.png", "plan.toml"];

/// Check that `out` may receive the outputs: not a run directory, and
/// either empty, new, or holding only our files with `force`.
pub fn check_output_dir(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.join(experiments::run::RUN_TOML).exists() {
        bail!(
            "{}: is a run directory; choose another --out for the analysis",
            out.display()
        );
    }
    if !out.exists() {
        return Ok(());
    }
    if !out.is_dir() {
        bail!("{}: exists and is not a directory", out.display());
    }
    let existing: Vec<&str> = OUTPUTS
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    if !existing.is_empty() && !force {
        bail!(
            "{}: already holds {}; choose another --out or pass --force to replace them",
            out.display(),
            existing.join(", ")
        );
    }
    Ok(())
}

fn print_report(r: &SensitivityReport) {
    let h = r.harm;
    let metric = |e: &experiments::eval::EvalResult| match h {
        Harm::AccuracyDrop => format!("{:.2}%", 100.0 * e.accuracy),
        Harm::LossRise => format!("{:.4}", e.loss),
    };
    let (unit, digits) = match h {
        Harm::AccuracyDrop => ("pt", 2),
        Harm::LossRise => ("", 4),
    };
    println!(
        "baseline ({}): {}; all items fwd={}: {} ({} {:+.digits$}{unit})",
        r.baseline_plan.label,
        metric(&r.baseline),
        r.approx,
        metric(&r.all_approx),
        h.word(),
        r.harm_of(&r.all_approx),
    );
    let name_width = r
        .layers
        .iter()
        .map(|l| l.layer.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let what = match h {
        Harm::AccuracyDrop => "accuracy",
        Harm::LossRise => "loss",
    };
    println!(
        "{:<name_width$} {:>10} {:>7} {:>12} {:>10} {:>14} {:>10}  greedy",
        match h {
            Harm::AccuracyDrop => "layer",
            Harm::LossRise => "item",
        },
        "fwd MACs",
        "share",
        format!("only: {what}"),
        h.word(),
        format!("all but: {what}"),
        h.word()
    );
    for l in &r.layers {
        println!(
            "{:<name_width$} {:>10} {:>6.1}% {:>12} {:>+8.digits$}{unit:2} {:>14} {:>+8.digits$}{unit:2}  {}",
            l.layer,
            l.forward_macs,
            100.0 * l.forward_macs as f64 / r.total_forward_macs.max(1) as f64,
            metric(&l.only_this),
            r.harm_of(&l.only_this),
            metric(&l.all_but_this),
            r.harm_of(&l.all_but_this),
            if r.chosen.contains(&l.layer) {
                "approximate"
            } else {
                "baseline"
            }
        );
    }
    println!(
        "greedy plan ({} {} {}): {} on {}; {} ({} {:.digits$} {}); {:.1}% of forward multiplies ({} of {} per {}) on {}",
        h.flag(),
        r.budget,
        h.unit(),
        if r.chosen.is_empty() {
            "nothing".to_string()
        } else {
            r.chosen.join(", ")
        },
        r.approx,
        match h {
            Harm::AccuracyDrop => format!("accuracy {}", metric(&r.chosen_result)),
            Harm::LossRise => format!("validation loss {} nats/char", metric(&r.chosen_result)),
        },
        h.word(),
        r.harm_of(&r.chosen_result),
        h.unit(),
        100.0 * r.mac_share(),
        r.chosen_forward_macs,
        r.total_forward_macs,
        r.mac_unit,
        r.approx
    );
    match (r.approx_energy_pj, r.energy_ratio()) {
        (Some(e), Some(ratio)) => println!(
            "forward multiply energy: {:.1}% of the baseline's ({e} pJ per approximate multiply)",
            100.0 * ratio
        ),
        (Some(e), None) => println!(
            "energy: {e} pJ per approximate multiply; the baseline multiplier declares no energy figures"
        ),
        _ => println!("energy: the model declares no energy figures (power and delay in its info record)"),
    }
}

/// Run `sensitivity`.
pub fn run(a: SensitivityArgs) -> anyhow::Result<()> {
    let models = approxtrain::models::MODELS;
    let approx: amsim::MultiplierSpec = a.multiplier.parse()?;
    amsim::spec::Resolver::new(models).resolve(&approx)?;
    let source = load_checkpoint(&a.checkpoint)?;
    let net = source.run.spec.net.clone();
    let lm = source.run.spec.task() == Task::LanguageModel;
    let wrong = |flag: &str, right: &str| {
        anyhow::anyhow!(
            "{flag} does not apply to {}, a {net} run: use {right}",
            a.checkpoint.display()
        )
    };
    let budget = if lm {
        if a.max_drop.is_some() {
            return Err(wrong(
                "--max-drop (accuracy points)",
                "--max-rise NATS (validation-loss rise, nats/char)",
            ));
        }
        for (given, flag) in [
            (a.test_limit.is_some(), "--test-limit"),
            (a.data_dir.is_some(), "--data-dir"),
        ] {
            if given {
                return Err(wrong(flag, "--eval-windows N"));
            }
        }
        a.max_rise.unwrap_or(0.05)
    } else {
        if a.max_rise.is_some() {
            return Err(wrong(
                "--max-rise (validation-loss rise of a language model)",
                "--max-drop POINTS (test-accuracy drop)",
            ));
        }
        if a.eval_windows.is_some() {
            return Err(wrong("--eval-windows", "--test-limit N"));
        }
        a.max_drop.unwrap_or(0.5)
    };
    let out = a.out.clone().unwrap_or_else(|| {
        let name = format!(
            "sensitivity-{}",
            approx.to_string().replace([':', '/', '='], "")
        );
        match source.run_dir.parent() {
            Some(p) => p.join(name),
            None => PathBuf::from(name),
        }
    });
    check_output_dir(&out, a.force)?;
    // Held while the analysis writes there: two analyses never interleave
    // their files.
    let _lock = experiments::run_dir::lock_run_dir(&out)?;
    let checkpoint_label = a.checkpoint.display().to_string();
    let evaluator: Box<dyn PlanEvaluator> = if lm {
        let e = LmEvaluator::new(source, None, a.eval_windows)?;
        eprintln!(
            "{} ({}) on {} windows ({} characters) of {}",
            e.source.checkpoint_path.display(),
            e.spec.net,
            e.starts.len(),
            e.characters(),
            e.text_source
        );
        Box::new(e)
    } else {
        let e = Evaluator::new(source, None, a.data_dir.as_deref(), a.test_limit)?;
        if let Some(n) = &e.data_notice {
            eprintln!("{n}");
        }
        eprintln!(
            "{} ({}) on {} test images of {}",
            e.source.checkpoint_path.display(),
            e.spec.net,
            e.test_set.len,
            e.spec.dataset
        );
        Box::new(e)
    };
    let report = sensitivity(evaluator.as_ref(), &approx, budget, models, &mut |line| {
        eprintln!("{line}")
    })?;
    print_report(&report);
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join(OUTPUTS[0]), &sensitivity_csv(&report)?)?;
    write_sensitivity_png(&report, &out.join(OUTPUTS[1]))?;
    write_atomic(
        &out.join(OUTPUTS[2]),
        plan_file_text(&report, &checkpoint_label).as_bytes(),
    )?;
    eprintln!("wrote {}/{{{}}}", out.display(), OUTPUTS.join(","));
    Ok(())
}
