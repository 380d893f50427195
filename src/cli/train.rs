//! `approxtrain train`: one training run in a run directory (see the
//! `experiments` crate for the directory's files). This module only parses
//! the flags (the library's [`options::TrainOptions`] turns them into a
//! run) and shows progress; the run itself is [`experiments::run::train`].

use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use experiments::device::Device;
use experiments::options::{self, PlannedRun};
use experiments::run::{train, EpochStart, RunObserver, RunOutcome};
use experiments::{MetricsRow, Task};
use indicatif::{ProgressBar, ProgressStyle};

/// Options of `approxtrain train`, boxed: they are many, and the CLI's
/// command enum holds its variants inline.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  approxtrain train --net lenet5 --dataset mnist --multiplier mbm:7 --epochs 10 --out runs/lenet5-mbm7
  approxtrain train --net lenet300100 --multiplier fwd=mbm:7,dx=fp32,dw=mbm:7 --out runs/mixed
  approxtrain train --net lenet5 --plan plan.toml --out runs/per-layer
  approxtrain train --net resnet20 --dataset cifar10 --multiplier mbm:7 --lr 0.1 --out runs/resnet20-mbm7
  approxtrain train --resume runs/lenet5-mbm7            # continue an interrupted run
  approxtrain train --init runs/lenet5-fp32 --multiplier mitchell:7 --epochs 1 --lr 0.01 --out runs/ft   # fine-tune
  approxtrain train --spec runs/lenet5-mbm7/run.toml --out runs/again   # repeat a run
  approxtrain train --net transformer --dataset text:data/shakespeare/first-folio.txt --multiplier mbm:7 --steps 2000 --out runs/lm-mbm7

A plan file sets multipliers per layer:
  multiplier = \"mbm:7\"      # default for every layer (or fwd/dx/dw keys)
  [layers.conv1]
  multiplier = \"fp32\"
  [layers.fc3]
  dx = \"fp32\"

Transformer plan files name block0 .. blockN-1 (every product of a block), blockI.attn (its
projections; attn_qk and attn_av keys set the score products), blockI.mlp.fc1, blockI.mlp.fc2
and head.

The run directory gets run.toml, metrics.csv (one row per epoch, or per evaluation for a
transformer) and checkpoint.bin.")]
pub struct TrainArgs {
    #[command(flatten)]
    options: Box<TrainOptions>,
    /// Where the products of convolution, dense and attention layers run: cpu or cuda. With cuda,
    /// AMSim results are bit-exact with the CPU, so the run is the same run
    /// (fp32 runs through cuBLAS and may differ in the last bits).
    #[arg(long, default_value_t = Device::Cpu)]
    device: Device,
}

/// The flags of `approxtrain train`.
#[derive(clap::Args)]
struct TrainOptions {
    /// Network: lenet300100, lenet5, resnet20, resnet32, resnet56, resnet18, resnet34, resnet50 or transformer (a character-level language model).
    #[arg(long, required_unless_present_any = ["resume", "spec", "init"])]
    net: Option<String>,
    /// Dataset: mnist, fashion-mnist, cifar10, or text:PATH (any UTF-8 file, for --net transformer) [default: mnist].
    #[arg(long)]
    dataset: Option<String>,
    /// Data directory holding mnist/, fashion-mnist/, cifar-10/ [default: $APPROXTRAIN_DATA, ./data, then the shipped MNIST subset].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Multiplier plan: fp32, bf16, MODEL:BITS (mbm:7), lut:PATH, or fwd=..,dx=..,dw=.. [default: fp32].
    #[arg(long, value_name = "SPEC")]
    multiplier: Option<String>,
    /// Per-layer plan file (TOML, see below).
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// Epochs [default: 10].
    #[arg(long)]
    epochs: Option<usize>,
    /// Mini-batch size [default: 128].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Evaluation batch size (does not change results) [default: 1000].
    #[arg(long)]
    eval_batch_size: Option<usize>,
    /// Seed of initialisation and shuffling [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// Run directory [default: runs/RUN_ID].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Optimizer: sgd or adam [default: sgd].
    #[arg(long)]
    optimizer: Option<String>,
    /// Learning rate [default: 0.05 for sgd, 0.001 for adam].
    #[arg(long)]
    lr: Option<f64>,
    /// SGD momentum [default: 0.9].
    #[arg(long)]
    momentum: Option<f64>,
    /// Weight decay [default: 5e-4].
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Nesterov momentum for SGD [default: true]; --nesterov false turns it off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    nesterov: Option<bool>,
    /// Learning-rate schedule: constant, step, cosine or onecycle [default: cosine]; --warmup-epochs needs cosine or onecycle.
    #[arg(long)]
    schedule: Option<String>,
    /// Step schedule: epochs between decays [default: 5].
    #[arg(long)]
    step_epochs: Option<usize>,
    /// Step schedule: decay factor [default: 0.1].
    #[arg(long)]
    gamma: Option<f64>,
    /// Cosine: epochs of linear warm-up, at most half the run [default: 1]; onecycle: epochs of the rise [default: 30% of the run].
    #[arg(long, value_name = "N")]
    warmup_epochs: Option<usize>,
    /// Random crop (4-pixel padding) and horizontal flip of training images [default: true for cifar10, else false]; --augment false turns it off.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    augment: Option<bool>,
    /// Label smoothing of the training loss, in [0, 1) [default: 0].
    #[arg(long, value_name = "EPS")]
    label_smoothing: Option<f64>,
    /// Weight decay on biases and batch-norm parameters too [default: false].
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    decay_bn_bias: Option<bool>,
    /// Train on the first N training images only (quick runs).
    #[arg(long, value_name = "N")]
    train_limit: Option<usize>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long, value_name = "N")]
    test_limit: Option<usize>,
    /// Continue the interrupted run in DIR from its last completed epoch
    /// (with --epochs: extend it to that many epochs).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["net", "dataset", "multiplier", "plan", "spec", "out", "init"])]
    resume: Option<PathBuf>,
    /// Take the run specification from a run.toml (flags given override it).
    #[arg(long, value_name = "RUN_TOML")]
    spec: Option<PathBuf>,
    /// Fine-tune: start from the weights of a run directory (or a checkpoint
    /// file in one) with fresh optimizer state and schedule; net and dataset
    /// (and a transformer's size) default to that run's. Recorded as `init` in run.toml.
    #[arg(long, value_name = "DIR")]
    init: Option<PathBuf>,
    /// Start over in an output directory that already holds this run; with
    /// --resume, continue although the run's data, tables or code changed
    /// (the new ones are recorded).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    lm: LmOptions,
}

/// The flags of `--net transformer`.
#[derive(clap::Args)]
struct LmOptions {
    /// Transformer: optimizer steps, instead of --epochs [default: 2000].
    #[arg(long, value_name = "N")]
    steps: Option<usize>,
    /// Transformer: steps between validation evaluations (one metrics.csv row each) [default: 100].
    #[arg(long, value_name = "N")]
    eval_every: Option<usize>,
    /// Transformer: clip the global gradient norm to this [default: 1].
    #[arg(long, value_name = "NORM")]
    clip_norm: Option<f64>,
    /// Transformer: blocks [default: 4].
    #[arg(long, value_name = "N")]
    layers: Option<usize>,
    /// Transformer: width [default: 128].
    #[arg(long, value_name = "C")]
    width: Option<usize>,
    /// Transformer: attention heads, dividing the width [default: 4].
    #[arg(long, value_name = "H")]
    heads: Option<usize>,
    /// Transformer: context length of training and validation windows [default: 128].
    #[arg(long, value_name = "T")]
    context: Option<usize>,
    /// Transformer: position encoding, learned or sinusoidal [default: learned].
    #[arg(long, value_name = "KIND")]
    positions: Option<String>,
    /// Transformer: output head tied to the token embedding [default: true]; --tied-head false unties it.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    tied_head: Option<bool>,
    /// Transformer: steps of learning-rate warm-up before the cosine decay [default: 100].
    #[arg(long, value_name = "N")]
    warmup_steps: Option<usize>,
    /// Transformer: validation windows per evaluation [default: 128].
    #[arg(long, value_name = "N")]
    eval_windows: Option<usize>,
}

impl TrainOptions {
    /// The options as the library takes them.
    fn to_library(&self) -> options::TrainOptions {
        let lm = &self.lm;
        options::TrainOptions {
            net: self.net.clone(),
            dataset: self.dataset.clone(),
            data_dir: self.data_dir.clone(),
            multiplier: self.multiplier.clone(),
            plan: self.plan.clone(),
            epochs: self.epochs,
            batch_size: self.batch_size,
            eval_batch_size: self.eval_batch_size,
            seed: self.seed,
            out: self.out.clone(),
            optimizer: self.optimizer.clone(),
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            schedule: self.schedule.clone(),
            step_epochs: self.step_epochs,
            gamma: self.gamma,
            warmup_epochs: self.warmup_epochs,
            augment: self.augment,
            label_smoothing: self.label_smoothing,
            decay_bn_bias: self.decay_bn_bias,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            resume: self.resume.clone(),
            spec: self.spec.clone(),
            init: self.init.clone(),
            force: self.force,
            lm: options::LmOptions {
                steps: lm.steps,
                eval_every: lm.eval_every,
                clip_norm: lm.clip_norm,
                layers: lm.layers,
                width: lm.width,
                heads: lm.heads,
                context: lm.context,
                positions: lm.positions.clone(),
                tied_head: lm.tied_head,
                warmup_steps: lm.warmup_steps,
                eval_windows: lm.eval_windows,
            },
        }
    }
}

/// Run `train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let PlannedRun { spec, dir, mode } = args
        .options
        .to_library()
        .plan(rayon::current_num_threads(), approxtrain::models::MODELS)?;
    let engine = crate::cli::bench::cuda_engine(args.device)?;
    if let Some(e) = &engine {
        e.reset_transfer_stats();
    }
    nets::device::use_cuda(engine.clone());
    let started = Instant::now();
    let mut progress = Progress::new();
    let outcome = train(
        &spec,
        &dir,
        mode,
        approxtrain::models::MODELS,
        &mut progress,
    )?;
    progress.finish();
    if let Some(e) = &engine {
        let t = e.transfer_stats();
        let wall = started.elapsed().as_secs_f64();
        eprintln!(
            "GPU transfers: {:.2} GB to the device, {:.2} GB back, {:.1} s = {:.1}% of the {:.1} s run",
            t.h2d_bytes as f64 / 1e9,
            t.d2h_bytes as f64 / 1e9,
            t.time.as_secs_f64(),
            100.0 * t.time.as_secs_f64() / wall.max(1e-9),
            wall
        );
    }
    match outcome {
        RunOutcome::Finished(summary) if spec.task() == Task::LanguageModel => {
            let last = summary.rows.last();
            let loss = last.map_or(f32::NAN, |r| r.test_loss);
            println!(
                "{}: validation loss {loss:.4} nats/char (perplexity {:.3}) after {} steps; results in {}",
                summary.run_id,
                (loss as f64).exp(),
                last.map_or(0, |r| r.step),
                dir.display()
            );
            Ok(())
        }
        RunOutcome::Finished(summary) => {
            println!(
                "{}: final test accuracy {:.2}% after {} epoch{}; results in {}",
                summary.run_id,
                100.0 * summary.test_accuracy,
                summary.epochs,
                if summary.epochs == 1 { "" } else { "s" },
                dir.display()
            );
            Ok(())
        }
        RunOutcome::AlreadyFinished(summary) => {
            println!(
                "{} already holds this finished run ({} epochs, test accuracy {:.2}%); nothing to do (--force starts it over)",
                dir.display(),
                summary.epochs,
                100.0 * summary.test_accuracy
            );
            Ok(())
        }
        RunOutcome::Diverged(d) => bail!(
            "{d}; metrics and status are in {}",
            dir.display()
        ),
        RunOutcome::Interrupted { epochs_completed } => bail!(
            "interrupted after {epochs_completed} completed epochs; continue with: approxtrain train --resume {}",
            dir.display()
        ),
    }
}

/// Progress display: an indicatif bar on a terminal, plain lines
/// otherwise (one per epoch, and one at most every 15 seconds within an
/// epoch).
struct Progress {
    bar: Option<ProgressBar>,
    terminal: bool,
    epoch: usize,
    epochs: usize,
    started: Instant,
    last_line: Instant,
    images: usize,
    /// Language models: progress counts steps of the run and characters.
    lm: Option<experiments::run::LmPeriod>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            bar: None,
            terminal: std::io::stderr().is_terminal(),
            epoch: 0,
            epochs: 0,
            started: Instant::now(),
            last_line: Instant::now(),
            images: 0,
            lm: None,
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn images_per_second(&self) -> f64 {
        self.images as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// `123 img/s`, or `45678 chars/s` for a language model (windows of
    /// `context` characters).
    fn rate(&self) -> String {
        match self.lm {
            Some(p) => format!("{:.0} chars/s", self.images_per_second() * p.context as f64),
            None => format!("{:.0} img/s", self.images_per_second()),
        }
    }
}

impl RunObserver for Progress {
    fn message(&mut self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn epoch_started(&mut self, e: &EpochStart) {
        self.finish();
        self.epoch = e.epoch;
        self.epochs = e.epochs;
        self.started = Instant::now();
        self.last_line = Instant::now();
        self.images = 0;
        self.lm = e.lm;
        if self.terminal {
            let (bar, template) = match e.lm {
                // One bar over the run's steps; it restarts its rate and
                // ETA after each validation.
                Some(p) => {
                    let bar = ProgressBar::new(p.total_steps);
                    bar.set_position(p.first_step);
                    bar.reset_eta();
                    (bar, "step [{bar:25}] {pos}/{len} {msg} {eta}")
                }
                None => {
                    let bar = ProgressBar::new(e.batches as u64);
                    bar.set_prefix(format!("{}/{}", e.epoch, e.epochs));
                    (bar, "epoch {prefix} [{bar:25}] {pos}/{len} {msg} {eta}")
                }
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid progress template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(250));
            self.bar = Some(bar);
        }
    }

    fn batch_done(
        &mut self,
        batch: usize,
        batches: usize,
        loss: f64,
        images: usize,
    ) -> ControlFlow<()> {
        self.images += images;
        let first = self.lm.map_or(0, |p| p.first_step);
        match &self.bar {
            Some(bar) => {
                bar.set_position(first + batch as u64);
                if batch == batches {
                    bar.set_message(if self.lm.is_some() {
                        "evaluating on the validation windows"
                    } else {
                        "evaluating on the test set"
                    });
                } else {
                    bar.set_message(format!("loss {loss:.4} {}", self.rate()));
                }
            }
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(15) && batch < batches {
                    self.last_line = Instant::now();
                    match self.lm {
                        Some(p) => eprintln!(
                            "step {}/{}: loss {loss:.4}, {}",
                            first + batch as u64,
                            p.total_steps,
                            self.rate()
                        ),
                        None => eprintln!(
                            "epoch {}/{}: batch {batch}/{batches}, loss {loss:.4}, {}",
                            self.epoch,
                            self.epochs,
                            self.rate()
                        ),
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn epoch_done(&mut self, row: &MetricsRow) {
        if self.lm.is_some() {
            self.finish();
            eprintln!(
                "step {}: train loss {:.4}, validation loss {:.4} nats/char (perplexity {:.3}, \
                 next-character accuracy {:.2}%), {:.1} s",
                row.step,
                row.train_loss,
                row.test_loss,
                (row.test_loss as f64).exp(),
                100.0 * row.test_accuracy,
                row.seconds
            );
            return;
        }
        let line = format!(
            "epoch {}/{}: train loss {:.4} acc {:.2}%, test loss {:.4} acc {:.2}%, {:.1} s",
            row.epoch,
            self.epochs,
            row.train_loss,
            100.0 * row.train_accuracy,
            row.test_loss,
            100.0 * row.test_accuracy,
            row.seconds,
        );
        self.finish();
        eprintln!("{line}");
    }
}
