//! `approxtrain sensitivity`: per-layer sensitivity of a trained network to
//! an approximate multiplier and a greedy per-layer plan (see
//! [`experiments::sensitivity`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use experiments::atomic::write_atomic;
use experiments::eval::{load_checkpoint, Evaluator};
use experiments::sensitivity::{
    plan_file_text, sensitivity, sensitivity_csv, write_sensitivity_png, SensitivityReport,
};

/// Options of `approxtrain sensitivity`.
#[derive(clap::Args)]
#[command(after_help = "\
Example:
  approxtrain sensitivity --checkpoint runs/lenet5-fp32 --multiplier mitchell:3 --max-drop 0.5 --out sens-mit3

For each layer with products: the test accuracy with only that layer's
forward products on the multiplier, and with all but that layer on it,
against the run's own plan (the baseline). Then a greedy search moves layers
onto the multiplier in order of least harm while the accuracy drop stays
within --max-drop percentage points, and writes the plan for
`eval --plan` / `train --plan`.

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
    /// Largest accuracy drop of the greedy plan, percentage points.
    #[arg(long, value_name = "P", default_value_t = 0.5)]
    max_drop: f64,
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
    println!(
        "baseline ({}): {:.2}%; all layers fwd={}: {:.2}% ({:+.2} pt)",
        r.baseline_plan.label,
        100.0 * r.baseline.accuracy,
        r.approx,
        100.0 * r.all_approx.accuracy,
        -r.drop_points(&r.all_approx)
    );
    println!(
        "{:<10} {:>10} {:>7} {:>12} {:>10} {:>14} {:>10}  greedy",
        "layer", "fwd MACs", "share", "only this", "drop", "all but this", "drop"
    );
    for l in &r.layers {
        println!(
            "{:<10} {:>10} {:>6.1}% {:>11.2}% {:>8.2}pt {:>13.2}% {:>8.2}pt  {}",
            l.layer,
            l.forward_macs,
            100.0 * l.forward_macs as f64 / r.total_forward_macs.max(1) as f64,
            100.0 * l.only_this.accuracy,
            r.drop_points(&l.only_this),
            100.0 * l.all_but_this.accuracy,
            r.drop_points(&l.all_but_this),
            if r.chosen.contains(&l.layer) {
                "approximate"
            } else {
                "baseline"
            }
        );
    }
    println!(
        "greedy plan (--max-drop {}): {} on {}; accuracy {:.2}% (drop {:.2} pt); {:.1}% of forward multiplies ({} of {} per image) on {}",
        r.max_drop,
        if r.chosen.is_empty() {
            "no layer".to_string()
        } else {
            r.chosen.join(", ")
        },
        r.approx,
        100.0 * r.chosen_result.accuracy,
        r.drop_points(&r.chosen_result),
        100.0 * r.mac_share(),
        r.chosen_forward_macs,
        r.total_forward_macs,
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
    let checkpoint_label = a.checkpoint.display().to_string();
    let evaluator = Evaluator::new(source, None, a.data_dir.as_deref(), a.test_limit)?;
    if let Some(n) = &evaluator.data_notice {
        eprintln!("{n}");
    }
    eprintln!(
        "{} ({}) on {} test images of {}",
        evaluator.source.checkpoint_path.display(),
        evaluator.spec.net,
        evaluator.test_set.len,
        evaluator.spec.dataset
    );
    let report = sensitivity(&evaluator, &approx, a.max_drop, models, &mut |line| {
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
