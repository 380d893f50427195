//! `approxtrain sweep`: run the entries of a sweep file (see
//! [`experiments::sweep`]), each in its own run directory `OUT/RUN_ID`,
//! optionally one shard of them and several at a time. Rerunning skips
//! finished entries and resumes interrupted ones.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::bail;
use experiments::run::{train, RunObserver, RunOutcome, StartMode, RUN_TOML};
use experiments::sweep::{lock_run_dir, start_mode, Shard, Sweep, SweepEntry};
use experiments::{ExperimentError, MetricsRow, RunFile, RunStatus};

/// Options of `approxtrain sweep`.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  approxtrain sweep experiments/quickstart.toml --out runs/quickstart
  approxtrain sweep experiments/big.toml --shard 0/4 --out runs/big   # shards 0/4 .. 3/4
  approxtrain sweep experiments/big.toml --jobs 4                     # 4 entries at a time
  approxtrain sweep experiments/paper.toml --list                     # index and run id of each entry
  scripts/slurm-sweep.sh experiments/paper.toml runs/paper            # a Slurm array, one task per entry

A sweep file sets shared RunSpec fields and lists whose cross product gives
the entries (nets outermost, then datasets, multipliers, seeds):
  nets = [\"lenet5\"]
  datasets = [\"mnist\"]
  multipliers = [\"fp32\", \"bf16\", \"mbm:7\", \"fwd=mbm:7,dx=fp32,dw=mbm:7\"]
  seeds = [1]
  epochs = 2                # any RunSpec field; top-level keys before tables
  [optimizer]
  lr = 0.05
  [[override]]              # settings for matching entries (net, dataset, multiplier)
  multiplier = \"mbm:7\"
  [override.set]
  optimizer.lr = 0.02
  [[exclude]]               # entries left out (net, dataset, multiplier)
  net = \"lenet5\"
  multiplier = \"bf16\"

Entry k (0-based) belongs to shard k % N. Rerunning skips finished entries and
resumes interrupted ones from their checkpoints.")]
pub struct SweepArgs {
    /// The sweep file (TOML).
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// Run only shard I of N (0-based: 0/N .. N-1/N): the entries k with k % N == I.
    #[arg(long, value_name = "I/N", default_value = "0/1")]
    shard: Shard,
    /// Directory holding one run directory per entry [default: runs/FILE_STEM].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Entries run at the same time; the worker threads are split among them.
    #[arg(long, value_name = "J", default_value_t = 1)]
    jobs: usize,
    /// Print the shard's entries (index and run id, one a line) and exit
    /// without running them; `--list | wc -l` counts the entries.
    #[arg(long)]
    list: bool,
}

/// How one entry ended, for the final summary.
enum EntryResult {
    Done,
    Skipped,
    /// Another process holds the entry's run directory (another sweep is
    /// training it): neither done nor failed here.
    Busy,
    Failed(String),
}

/// Run `sweep`.
pub fn run(args: SweepArgs) -> anyhow::Result<()> {
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let sweep = Sweep::read(&args.file)?;
    sweep.check_models(approxtrain::models::MODELS)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sweep".into());
        Path::new("runs").join(stem)
    });
    let entries = sweep.shard(args.shard);
    if args.list {
        for e in &entries {
            println!("{}\t{}", e.index, e.spec.run_id());
        }
        return Ok(());
    }
    let total = sweep.entries.len();
    println!(
        "sweep {}: {} of {total} entries (shard {}) into {}",
        args.file.display(),
        entries.len(),
        args.shard,
        out.display()
    );
    let threads = rayon::current_num_threads();
    let jobs = args.jobs.min(entries.len()).max(1);
    let results: Mutex<Vec<(String, EntryResult)>> = Mutex::new(Vec::new());
    let notices = Mutex::new(BTreeSet::new());
    let run_one = |entry: &SweepEntry, threads_per_entry: usize| {
        let id = entry.spec.run_id();
        let result = run_entry(entry, &out, threads_per_entry, &notices);
        results
            .lock()
            .expect("no entry panicked holding the lock")
            .push((id, result));
    };
    if jobs == 1 {
        for entry in &entries {
            run_one(entry, threads);
        }
    } else {
        // J plain threads take the entries in sweep order; each computes
        // on a rayon pool of its own so that the J entries share the cores
        // (results do not depend on the thread count). Plain threads, not
        // an outer rayon pool: a rayon worker waiting in another pool's
        // `install` would steal and start further entries meanwhile.
        let per_entry = (threads / jobs).max(1);
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(per_entry)
                        .build();
                    while let Some(entry) = entries.get(next.fetch_add(1, Ordering::Relaxed)) {
                        match &pool {
                            Ok(pool) => pool.install(|| run_one(entry, per_entry)),
                            // Without a pool of its own the entry computes
                            // on the global one.
                            Err(_) => run_one(entry, threads),
                        }
                    }
                });
            }
        });
    }
    let results = results.into_inner().expect("no entry panicked");
    let done = results
        .iter()
        .filter(|(_, r)| matches!(r, EntryResult::Done))
        .count();
    let skipped = results
        .iter()
        .filter(|(_, r)| matches!(r, EntryResult::Skipped))
        .count();
    let busy: Vec<&String> = results
        .iter()
        .filter_map(|(id, r)| matches!(r, EntryResult::Busy).then_some(id))
        .collect();
    let failed: Vec<(&String, &String)> = results
        .iter()
        .filter_map(|(id, r)| match r {
            EntryResult::Failed(why) => Some((id, why)),
            _ => None,
        })
        .collect();
    println!(
        "sweep finished: {done} trained, {skipped} already finished, {} failed{}; results in {}",
        failed.len(),
        if busy.is_empty() {
            String::new()
        } else {
            format!(", {} run by another process", busy.len())
        },
        out.display()
    );
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(id, why)| format!("  {id}: {why}"))
            .collect();
        bail!(
            "{} of {} entries failed:\n{}",
            failed.len(),
            results.len(),
            list.join("\n")
        );
    }
    if !busy.is_empty() {
        bail!(
            "{} entries are being trained by another process ({}); run the sweep again when it \
             has ended to check that they finished",
            busy.len(),
            busy.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Train one entry in `OUT/RUN_ID`, printing a line when it starts and one
/// when it ends.
fn run_entry(
    entry: &SweepEntry,
    out: &Path,
    threads: usize,
    notices: &Mutex<BTreeSet<String>>,
) -> EntryResult {
    let mut spec = entry.spec.clone();
    spec.threads = Some(threads);
    let id = spec.run_id();
    let dir = out.join(&id);
    let tag = format!("#{} {id}", entry.index);
    // `train` holds the run directory's lock while it runs the entry;
    // another sweep on the same folder skips it instead of writing the
    // same files. A held lock is seen here first so that the entry is not
    // read half-written.
    match lock_run_dir(&dir) {
        Ok(lock) => drop(lock),
        Err(ExperimentError::Locked { owner, .. }) => {
            println!("{tag}: another process is running this entry ({owner}); skipped");
            return EntryResult::Busy;
        }
        Err(e) => {
            println!("{tag}: {e}");
            return EntryResult::Failed(e.to_string());
        }
    }
    // `train` would refuse a stored diverged run and point to --force,
    // which a sweep does not have.
    if let Ok(stored) = RunFile::read(&dir.join(RUN_TOML)) {
        if stored.run.status == RunStatus::Diverged
            && stored.spec.differences(&spec, false).is_empty()
        {
            let why = format!(
                "diverged in an earlier run ({}); delete {} to run it again",
                stored.run.message.as_deref().unwrap_or("loss not finite"),
                dir.display()
            );
            println!("{tag}: {why}");
            return EntryResult::Failed(why);
        }
    }
    let mode = start_mode(&dir);
    match mode {
        StartMode::Resume => println!(
            "{tag}: resuming from its checkpoint (epochs {})",
            spec.epochs
        ),
        _ => println!("{tag}: start (epochs {})", spec.epochs),
    }
    let started = Instant::now();
    let mut observer = EntryLog {
        tag: &tag,
        notices,
        abort_after: abort_after_batches(),
    };
    let outcome = train(
        &spec,
        &dir,
        mode,
        approxtrain::models::MODELS,
        &mut observer,
    );
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(RunOutcome::Finished(s)) => {
            let last = s.rows.last();
            println!(
                "{tag}: finished: epochs {}, train loss {:.4}, test loss {:.4}, test accuracy {:.2}%, {seconds:.1} s",
                s.epochs,
                last.map_or(f32::NAN, |r| r.train_loss),
                last.map_or(f32::NAN, |r| r.test_loss),
                100.0 * s.test_accuracy
            );
            EntryResult::Done
        }
        Ok(RunOutcome::AlreadyFinished(s)) => {
            println!(
                "{tag}: already finished, skipped: epochs {}, test accuracy {:.2}%",
                s.epochs,
                100.0 * s.test_accuracy
            );
            EntryResult::Skipped
        }
        Ok(RunOutcome::Diverged(d)) => {
            println!("{tag}: diverged: {d}");
            EntryResult::Failed(format!("diverged at epoch {} step {}", d.epoch, d.step))
        }
        Ok(RunOutcome::Interrupted { epochs_completed }) => {
            let why = format!("interrupted after {epochs_completed} epochs");
            println!("{tag}: {why}");
            EntryResult::Failed(why)
        }
        Err(ExperimentError::Locked { owner, .. }) => {
            println!("{tag}: another process is running this entry ({owner}); skipped");
            EntryResult::Busy
        }
        Err(e) => {
            println!("{tag}: failed: {e}");
            EntryResult::Failed(e.to_string())
        }
    }
}

/// Plain per-epoch lines on stderr, tagged with the entry (entries may
/// interleave under --jobs, so there is no progress bar).
struct EntryLog<'a> {
    tag: &'a str,
    /// Messages already shown: the data-source notice is the same for
    /// every entry, so it is shown once.
    notices: &'a Mutex<BTreeSet<String>>,
    /// See [`ABORT_AFTER_BATCHES_ENV`].
    abort_after: Option<&'static AtomicUsize>,
}

/// Test hook: when set to K, the process aborts (no unwinding, no file
/// closed in order: what `kill -9` or a lost node does) after the K-th
/// training batch of this process, counted over all entries. The tests of
/// resumption use it to interrupt a sweep in the middle of an entry.
pub const ABORT_AFTER_BATCHES_ENV: &str = "APPROXTRAIN_TEST_ABORT_AFTER_BATCHES";

/// The batches left before the abort of [`ABORT_AFTER_BATCHES_ENV`], shared
/// by the entries of this process; `None` when the variable is not set.
fn abort_after_batches() -> Option<&'static AtomicUsize> {
    static LEFT: std::sync::OnceLock<Option<AtomicUsize>> = std::sync::OnceLock::new();
    LEFT.get_or_init(|| {
        std::env::var(ABORT_AFTER_BATCHES_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .map(AtomicUsize::new)
    })
    .as_ref()
}

impl RunObserver for EntryLog<'_> {
    fn batch_done(
        &mut self,
        batch: usize,
        batches: usize,
        _loss: f64,
        _images: usize,
    ) -> std::ops::ControlFlow<()> {
        if let Some(left) = self.abort_after {
            if left.fetch_sub(1, Ordering::SeqCst) <= 1 {
                eprintln!(
                    "{}: {ABORT_AFTER_BATCHES_ENV}: aborting after batch {batch} of {batches}",
                    self.tag
                );
                std::process::abort();
            }
        }
        std::ops::ControlFlow::Continue(())
    }

    fn message(&mut self, text: &str) {
        let new = self
            .notices
            .lock()
            .map(|mut seen| seen.insert(text.to_string()))
            .unwrap_or(true);
        if new {
            eprintln!("{}: {text}", self.tag);
        }
    }

    fn epoch_done(&mut self, row: &MetricsRow) {
        eprintln!(
            "{}: epoch {}: train loss {:.4} acc {:.2}%, test loss {:.4} acc {:.2}%, {:.1} s",
            self.tag,
            row.epoch,
            row.train_loss,
            100.0 * row.train_accuracy,
            row.test_loss,
            100.0 * row.test_accuracy,
            row.seconds
        );
    }
}
