//! The `approxtrain` command line: parses arguments and dispatches to the
//! library crates. Each subcommand lives in `src/cli/`.

use clap::{Parser, Subcommand};

mod cli;

/// Train and run deep neural networks on simulated approximate
/// floating-point multipliers.
#[derive(Parser)]
#[command(name = "approxtrain", version, about, long_about = None)]
struct Cli {
    /// Worker threads for the compute engines (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the multiplier models compiled from multipliers/*.c.
    ///
    /// Example: approxtrain models
    Models(cli::models::ModelsArgs),
    /// Build, export, import and inspect lookup tables.
    #[command(subcommand)]
    Lut(cli::lut::LutCommand),
    /// Error metrics of a model over all mantissa pairs (CSV, heat map).
    ///
    /// Example: approxtrain characterize --model mitchell --bits 7 --heatmap mit7.png
    Characterize(cli::lut::CharacterizeArgs),
    /// Check table products against the C model called directly.
    ///
    /// Example: approxtrain verify --model mbm --bits 7 --samples 1000000
    Verify(cli::lut::VerifyArgs),
    /// Time the engines against native FP32.
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
    /// Train a network with a multiplier plan.
    ///
    /// Example: approxtrain train --net lenet5 --dataset mnist --multiplier mbm:7 --epochs 2 --out runs/mbm7
    Train(cli::train::TrainArgs),
    /// Run a sweep file: many training runs, resumable and shardable.
    ///
    /// Example: approxtrain sweep experiments/quickstart.toml --out runs/quickstart
    Sweep(cli::sweep::SweepArgs),
    /// Merge every run below DIR into summary.csv, figures and report.md.
    ///
    /// Example: approxtrain plot results/mnist-lenet
    Plot(cli::plot::PlotArgs),
    /// Test accuracy of a trained checkpoint under other multiplier plans.
    ///
    /// Example: approxtrain eval --checkpoint runs/lenet5-fp32 --multiplier fp32,bf16,mbm:7,mitchell:7
    Eval(cli::eval::EvalArgs),
    /// Per-layer sensitivity to a multiplier and a greedy per-layer plan.
    ///
    /// Example: approxtrain sensitivity --checkpoint runs/lenet5-fp32 --multiplier mitchell:3 --max-drop 0.5
    Sensitivity(cli::sensitivity::SensitivityArgs),
    /// Operand histograms of one layer and operand-weighted error metrics.
    ///
    /// Example: approxtrain stats --checkpoint runs/lenet5-fp32 --layer conv2 --multiplier mbm:7
    Stats(cli::stats::StatsArgs),
    /// Generate text with a trained transformer run.
    ///
    /// Example: approxtrain sample --checkpoint runs/lm-fp32 --prompt 'ROMEO.' --tokens 300
    Sample(cli::sample::SampleArgs),
    /// Datasets: download the public files.
    #[command(subcommand)]
    Data(cli::data::DataCommand),
}

/// Training frees and allocates the same large activation buffers every
/// step. By default glibc hands freed blocks of a few MB back to the OS
/// (`munmap`, heap trimming) and the next step faults their pages in again,
/// zeroed; keeping them in the process (blocks up to 32 MiB from the heap,
/// no trimming) made a ResNet-20 fp32 step about 7% faster on a 2-core
/// Xeon. The peak memory is the same; the process keeps it until it exits.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: `mallopt` only sets allocator parameters; this runs before
    // any other thread starts. A refused value leaves glibc's default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() {
    keep_freed_memory();
    amsim::model::register_int_models(approxtrain::models::INT_MODELS);
    amsim::model::register_wide_int_models(approxtrain::models::WIDE_INT_MODELS);
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        if let Err(e) = experiments::options::check_threads(n) {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
        // Commands that compute nothing start no pool.
        let computes = !matches!(
            cli.command,
            Command::Models(_) | Command::Plot(_) | Command::Data(_)
        );
        if computes {
            if let Err(e) = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
            {
                eprintln!("error: cannot start {n} threads: {e}");
                std::process::exit(1);
            }
        }
    }
    let result = match cli.command {
        Command::Models(a) => cli::models::run(a),
        Command::Lut(c) => cli::lut::run_lut(c),
        Command::Characterize(a) => cli::lut::run_characterize(a),
        Command::Verify(a) => cli::lut::run_verify(a),
        Command::Bench(c) => cli::bench::run(c),
        Command::Train(a) => cli::train::run(a),
        Command::Sweep(a) => cli::sweep::run(a),
        Command::Data(c) => cli::data::run(c),
        Command::Plot(a) => cli::plot::run(a),
        Command::Eval(a) => cli::eval::run(a),
        Command::Sensitivity(a) => cli::sensitivity::run(a),
        Command::Stats(a) => cli::stats::run(a),
        Command::Sample(a) => cli::sample::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
