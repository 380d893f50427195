//! `approxtrain data`: fetch datasets and show what is where.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use approxtrain::fetch::{fetch_dataset, FetchEvent, FetchOptions};
use nets::data::{data_root, resolve_dataset_dir, Dataset, ImageDataset, Split, DATA_ENV};

/// `approxtrain data ...`
#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Download a dataset's public files into DATA_DIR/FOLDER/.
    ///
    /// NAME is mnist, fashion-mnist, cifar10 or shakespeare. DATA_DIR is
    /// --data-dir, else $APPROXTRAIN_DATA, else ./data; FOLDER is mnist/,
    /// fashion-mnist/, cifar-10/ or shakespeare/. Files already present and
    /// valid are skipped; each download is checked (md5 where published,
    /// then parsed) before it is renamed into place.
    #[command(after_help = "Examples:\n  \
        approxtrain data fetch mnist\n  \
        approxtrain data fetch cifar10 --data-dir /scratch/datasets\n  \
        approxtrain data fetch fashion-mnist --base-url http://mirror.example.org/fashion")]
    Fetch(FetchArgs),
    /// Show a dataset: where it was found, example counts, label histogram.
    #[command(after_help = "Examples:\n  \
        approxtrain data show mnist\n  \
        approxtrain data show cifar10 --data-dir ../shared/datasets")]
    Show(ShowArgs),
}

/// Options of `approxtrain data fetch`.
#[derive(clap::Args)]
pub struct FetchArgs {
    /// mnist, fashion-mnist, cifar10 or shakespeare.
    name: String,
    /// Data directory (default: $APPROXTRAIN_DATA, else ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// URL prefix replacing the default mirror; files are fetched from URL/FILE.
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Do not compare md5s (for a mirror serving another valid copy); files
    /// are still parsed and validated.
    #[arg(long)]
    skip_md5: bool,
}

/// Options of `approxtrain data show`.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// mnist, fashion-mnist, cifar10 or shakespeare.
    name: String,
    /// Data directory (default: $APPROXTRAIN_DATA, else ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// Run `data`.
pub fn run(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Fetch(a) => fetch(a),
        DataCommand::Show(a) => match show(a, &mut std::io::stdout().lock()) {
            // `data show | head` closing the pipe early is not an error.
            Err(e)
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
            {
                Ok(())
            }
            r => r,
        },
    }
}

fn fetch(a: FetchArgs) -> Result<()> {
    let dataset = Dataset::parse(&a.name)?;
    let root = data_root(a.data_dir.as_deref());
    let opts = FetchOptions {
        base_url: a.base_url,
        verify_md5: !a.skip_md5,
    };
    let mut progress = Progress::new();
    let report = fetch_dataset(dataset, &root, &opts, &mut |e| progress.event(e));
    progress.finish();
    let report = report?;
    eprintln!(
        "{dataset}: {} file(s) written, {} already present, in {}",
        report.written.len(),
        report.skipped.len(),
        report.dir.display()
    );
    Ok(())
}

/// A progress bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    terminal: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            bar: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn event(&mut self, e: FetchEvent) {
        match e {
            FetchEvent::Skipped { path } => {
                eprintln!("present and valid, skipped: {}", path.display())
            }
            FetchEvent::Started { url, total } => {
                if self.terminal {
                    let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
                    if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    ) {
                        bar.set_style(style);
                    }
                    bar.set_message(url);
                    self.bar = Some(bar);
                } else {
                    match total {
                        Some(t) => eprintln!("downloading {url} ({t} bytes)"),
                        None => eprintln!("downloading {url}"),
                    }
                }
            }
            FetchEvent::Progress { done } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(done);
                }
            }
            FetchEvent::Downloaded { url, bytes } => {
                self.finish();
                if !self.terminal {
                    eprintln!("downloaded {url} ({bytes} bytes)");
                }
            }
            FetchEvent::Written { path } => eprintln!("wrote {}", path.display()),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn show(a: ShowArgs, out: &mut impl Write) -> Result<()> {
    let location = resolve_dataset_dir(a.data_dir.as_deref(), &a.name)?;
    if let Some(notice) = &location.notice {
        eprintln!("note: {notice}");
    }
    let dataset = location.dataset;
    writeln!(out, "{dataset}: {}", location.describe())?;
    if a.data_dir.is_none() && std::env::var_os(DATA_ENV).is_some_and(|v| !v.is_empty()) {
        writeln!(out, "data directory from ${DATA_ENV}")?;
    }
    if dataset.is_image() {
        for split in [Split::Train, Split::Test] {
            let set = location
                .load_images(split, None)
                .with_context(|| format!("loading the {} split of {dataset}", split.name()))?;
            print_images(out, dataset, split, &set)?;
        }
    } else {
        let corpus = location.load_text()?;
        writeln!(
            out,
            "{} characters, vocabulary of {}: train {} / validation {}",
            corpus.train.len() + corpus.valid.len(),
            corpus.vocab_size(),
            corpus.train.len(),
            corpus.valid.len()
        )?;
    }
    Ok(())
}

/// Counts and label histogram of one split.
fn print_images(
    out: &mut impl Write,
    dataset: Dataset,
    split: Split,
    set: &ImageDataset,
) -> std::io::Result<()> {
    writeln!(
        out,
        "{}: {} images of {}x{}x{}, {} classes",
        split.name(),
        set.len,
        set.channels,
        set.height,
        set.width,
        set.num_classes
    )?;
    let names = dataset.class_names();
    for (label, count) in set.label_histogram().iter().enumerate() {
        let name = names.get(label).copied().unwrap_or("");
        writeln!(out, "  {label} {name:<12} {count:>6}")?;
    }
    Ok(())
}
