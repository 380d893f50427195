//! `approxtrain plot DIR`: summary CSV, figures and Markdown report of every
//! run below a folder (`experiments::plot`).

use std::path::PathBuf;

use anyhow::Result;

/// Options of `approxtrain plot`.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    approxtrain plot results/mnist-lenet\n  \
    approxtrain plot runs/   # merges the shards of a sweep copied side by side")]
pub struct PlotArgs {
    /// Folder searched, at any depth, for run directories (metrics.csv +
    /// run.toml); summary.csv, report.md, the figures (PNG and SVG), a
    /// heat map per table used and, where models declare power figures,
    /// energy.csv are written into it.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
}

/// Merge, draw and report.
pub fn run(args: PlotArgs) -> Result<()> {
    let out = experiments::plot::plot_dir(&args.dir, approxtrain::models::MODELS)?;
    println!("{} runs, {} rows merged; wrote:", out.runs, out.rows);
    for f in &out.files {
        println!("  {}", f.display());
    }
    Ok(())
}
