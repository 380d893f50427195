//! `approxtrain stats`: the operands one layer's products see in a trained
//! network, and the multiplier's error weighted by them (see
//! [`experiments::opstats`]).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use experiments::atomic::write_atomic;
use experiments::figure::histogram::write_histogram_png;
use experiments::opstats::{histogram_csv, layer_operand_stats, metrics_csv, role_name};
use experiments::run_dir::load_checkpoint;
use experiments::Task;
use nets::data::{resolve_dataset_dir, Split};

/// Options of `approxtrain stats`.
#[derive(clap::Args)]
#[command(after_help = "\
Example:
  approxtrain stats --checkpoint runs/lenet5-fp32 --layer conv2 --multiplier mbm:7 --out stats-conv2

For one batch (the first N training images), the layer's input x, weights W
and output gradient dy under the run's own plan; per product (forward x*W,
input gradient dy*W, weight gradient x*dy) histograms of the operands'
exponents and table indices, and the multiplier's error metrics weighted by
the index pairs the products actually look up, next to the uniform
characterization.

--out gets histograms.csv, metrics.csv and operands.png; it must not be a
run directory, and existing files need --force.

Image classifiers only: a transformer's layers sit inside its blocks, out of
the recorder's reach; for a transformer run use eval or sensitivity.")]
pub struct StatsArgs {
    /// Run directory, or a checkpoint file in one.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Layer with products (conv1, fc2, ...).
    #[arg(long)]
    layer: String,
    /// Table to characterize, MODEL:BITS with at most 8 bits.
    #[arg(long, value_name = "SPEC", default_value = "mbm:7")]
    multiplier: String,
    /// Images in the batch (the first N training images).
    #[arg(long, value_name = "N", default_value_t = 128)]
    batch: usize,
    /// Output directory [default: stats-LAYER-MULT next to the run directory].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Data directory [default: the run's, $APPROXTRAIN_DATA, ./data, the shipped MNIST subset].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Replace existing output files.
    #[arg(long)]
    force: bool,
}

const OUTPUTS: [&str; 3] = ["histograms.csv", "metrics.csv", "operands.png"];

/// Run `stats`.
pub fn run(a: StatsArgs) -> anyhow::Result<()> {
    let models = approxtrain::models::MODELS;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let spec: amsim::MultiplierSpec = a.multiplier.parse()?;
    let lut: Arc<amsim::Lut> = match amsim::spec::Resolver::new(models).resolve(&spec)? {
        amsim::Multiplier::Lut(l) => l,
        other => bail!(
            "--multiplier {other}: operand statistics characterize a table (MODEL:BITS or lut:PATH)"
        ),
    };
    let source = load_checkpoint(&a.checkpoint)?;
    if source.run.spec.task() == Task::LanguageModel {
        // The recorder steps through a classifier's layer list; a
        // Transformer's layers sit inside its blocks, out of its reach.
        bail!(
            "stats supports image classifiers only; transformer run {}: use eval or sensitivity",
            a.checkpoint.display()
        );
    }
    let out = a.out.clone().unwrap_or_else(|| {
        let name = format!(
            "stats-{}-{}",
            a.layer,
            spec.to_string().replace([':', '/', '='], "")
        );
        match source.run_dir.parent() {
            Some(p) => p.join(name),
            None => PathBuf::from(name),
        }
    });
    if out.join(experiments::run::RUN_TOML).exists() {
        bail!(
            "{}: is a run directory; choose another --out",
            out.display()
        );
    }
    let existing: Vec<&str> = OUTPUTS
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    if !existing.is_empty() && !a.force {
        bail!(
            "{}: already holds {}; choose another --out or pass --force to replace them",
            out.display(),
            existing.join(", ")
        );
    }
    let mut run_spec = source.run.spec.clone();
    if a.data_dir.is_some() {
        run_spec.data_dir = a.data_dir.clone();
    }
    let mut network = experiments::model::network_for_spec(&run_spec, models)?;
    source
        .checkpoint
        .apply_weights(&source.checkpoint_path, &mut network)?;
    // The layer name is checked before the data is read.
    network.layer_plan(&a.layer)?;
    let location = resolve_dataset_dir(run_spec.data_dir.as_deref(), &run_spec.dataset)?;
    let data = location.load_images(Split::Train, Some(a.batch))?;
    let mut x = nets::Tensor::zeros(&[data.len, data.channels, data.height, data.width]);
    x.data.copy_from_slice(&data.images);
    let stats = layer_operand_stats(&mut network, &a.layer, &x, &data.labels, &lut)?;

    println!(
        "layer {} of {}, batch of {} training images, table {}",
        stats.layer, run_spec.net, stats.batch, stats.multiplier
    );
    println!(
        "{:<12} {:>12} {:>13} {:>10} {:>11} {:>11} {:>9}",
        "operands", "products", "table share", "MRED", "mean rel", "max rel", "1-ulp"
    );
    let u = &stats.uniform;
    println!(
        "{:<12} {:>12} {:>13} {:>9.4}% {:>10.4}% {:>10.4}% {:>8.2}%",
        "uniform",
        u.pairs,
        "",
        100.0 * u.mred,
        100.0 * u.mean_relative_error,
        100.0 * u.max_relative_error,
        100.0 * u.within_one_ulp
    );
    for r in &stats.roles {
        let label = format!(
            "{}{}",
            role_name(r.role),
            if r.in_training { "" } else { "*" }
        );
        match &r.weighted {
            Some(c) => println!(
                "{:<12} {:>12} {:>12.1}% {:>9.4}% {:>10.4}% {:>10.4}% {:>8.2}%",
                label,
                r.products,
                100.0 * r.table_products() as f64 / r.products.max(1) as f64,
                100.0 * c.mred,
                100.0 * c.mean_relative_error,
                100.0 * c.max_relative_error,
                100.0 * c.within_one_ulp
            ),
            None => println!(
                "{label:<12} {:>12}  no product reached the table",
                r.products
            ),
        }
    }
    if stats.roles.iter().any(|r| !r.in_training) {
        println!("* not computed in training (the first layer needs no input gradient)");
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    write_atomic(&out.join(OUTPUTS[0]), &histogram_csv(&stats)?)?;
    write_atomic(&out.join(OUTPUTS[1]), &metrics_csv(&stats)?)?;
    write_histogram_png(&stats, &out.join(OUTPUTS[2]))?;
    eprintln!("wrote {}/{{{}}}", out.display(), OUTPUTS.join(","));
    Ok(())
}
