//! Many run directories as one result: discovery, `summary.csv` and the
//! Markdown report.
//!
//! A run directory is any folder holding both `metrics.csv` and `run.toml`
//! ([`crate`] docs), at any depth below the results folder, so the shards
//! of a sweep copied side by side are merged by pointing at their parent.
//! Runs are grouped by (net, dataset); within a group, the `fp32` runs are
//! the reference for the accuracy gap, the slowdown and the energy.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::energy::{RunEnergy, FP32_MULTIPLY_PJ};
use crate::error::{ExperimentError, Result};
use crate::metrics::{read_metrics, MetricsRow};
use crate::spec::{RunFile, RunStatus, Task};

/// The merged metrics of every run, next to the report.
pub const SUMMARY_FILE: &str = "summary.csv";
/// The Markdown report.
pub const REPORT_FILE: &str = "report.md";
/// The plan that is the exact baseline of a group.
pub const REFERENCE_PLAN: &str = "fp32";
/// Deepest folder level searched below the results folder (symbolic links
/// are followed, so a loop of links stops here).
const MAX_DEPTH: usize = 16;

/// One run directory, read.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The directory, relative to the results folder (empty when the
    /// results folder is itself the run).
    pub dir: PathBuf,
    /// Its `run.toml`.
    pub file: RunFile,
    /// Its `metrics.csv`, sorted by epoch.
    pub rows: Vec<MetricsRow>,
}

impl RunRecord {
    /// The plan label, as in `metrics.csv`.
    pub fn plan(&self) -> String {
        self.file.spec.plan_label()
    }

    /// Whether `run.toml` says the run diverged.
    pub fn diverged(&self) -> bool {
        self.file.run.status == RunStatus::Diverged
    }

    /// Test accuracy after the last recorded epoch; `None` for a run that
    /// diverged or has no epoch yet.
    pub fn final_accuracy(&self) -> Option<f32> {
        if self.diverged() {
            return None;
        }
        self.rows.last().map(|r| r.test_accuracy)
    }

    /// Mean wall time of an epoch, seconds; `None` without epochs.
    pub fn mean_seconds(&self) -> Option<f64> {
        if self.rows.is_empty() {
            return None;
        }
        Some(self.rows.iter().map(|r| r.seconds).sum::<f64>() / self.rows.len() as f64)
    }
}

/// Order of plans in tables, legends and colours: `fp32`, `bf16`, then by
/// name.
pub fn plan_order(a: &str, b: &str) -> std::cmp::Ordering {
    let rank = |p: &str| match p {
        REFERENCE_PLAN => 0,
        "bf16" => 1,
        _ => 2,
    };
    rank(a).cmp(&rank(b)).then_with(|| a.cmp(b))
}

/// Every run directory below `root` (at any depth), read and sorted by
/// (net, dataset, plan, seed, run id). An error names the directory that is
/// missing, unreadable or holds no run at all, and a run id found in two
/// directories (the same run copied twice).
pub fn find_runs(root: &Path) -> Result<Vec<RunRecord>> {
    let meta = std::fs::metadata(root).map_err(|e| {
        ExperimentError::Other(format!(
            "{}: cannot read the results folder: {e}",
            root.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(ExperimentError::Other(format!(
            "{}: not a directory; give the folder that holds the run directories",
            root.display()
        )));
    }
    let mut dirs = Vec::new();
    collect_run_dirs(root, 0, &mut dirs)?;
    if dirs.is_empty() {
        return Err(ExperimentError::Other(format!(
            "{}: no run directories below it (a run directory holds metrics.csv and run.toml, \
             as written by `approxtrain train --out DIR`)",
            root.display()
        )));
    }
    let mut runs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let file = RunFile::read(&dir.join("run.toml"))?;
        let mut rows = read_metrics(&dir.join("metrics.csv"))?;
        rows.sort_by_key(|r| r.epoch);
        let rel = dir.strip_prefix(root).unwrap_or(&dir).to_path_buf();
        runs.push(RunRecord {
            dir: rel,
            file,
            rows,
        });
    }
    runs.sort_by(|a, b| {
        (&a.file.spec.net, &a.file.spec.dataset)
            .cmp(&(&b.file.spec.net, &b.file.spec.dataset))
            .then_with(|| plan_order(&a.plan(), &b.plan()))
            .then_with(|| a.file.spec.seed.cmp(&b.file.spec.seed))
            .then_with(|| a.file.run.run_id.cmp(&b.file.run.run_id))
            .then_with(|| a.dir.cmp(&b.dir))
    });
    let mut ids: Vec<(&str, &Path)> = runs
        .iter()
        .map(|r| (r.file.run.run_id.as_str(), r.dir.as_path()))
        .collect();
    ids.sort();
    if let Some(w) = ids.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(ExperimentError::Other(format!(
            "{}: run '{}' is in both {} and {}; keep one of them",
            root.display(),
            w[0].0,
            root.join(w[0].1).display(),
            root.join(w[1].1).display()
        )));
    }
    Ok(runs)
}

/// Depth-first search for folders holding both `metrics.csv` and
/// `run.toml`, in sorted order.
fn collect_run_dirs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    if dir.join("metrics.csv").is_file() && dir.join("run.toml").is_file() {
        out.push(dir.to_path_buf());
    }
    if depth >= MAX_DEPTH {
        return Ok(());
    }
    let mut children = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| ExperimentError::io(dir, e))? {
        let path = entry.map_err(|e| ExperimentError::io(dir, e))?.path();
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.is_dir() {
            children.push(path);
        }
    }
    children.sort();
    for child in children {
        collect_run_dirs(&child, depth + 1, out)?;
    }
    Ok(())
}

/// Every row of every run, sorted by run id then epoch: the content of
/// `summary.csv`.
pub fn summary_rows(runs: &[RunRecord]) -> Vec<MetricsRow> {
    let mut rows: Vec<MetricsRow> = runs.iter().flat_map(|r| r.rows.clone()).collect();
    rows.sort_by(|a, b| (&a.run_id, a.epoch).cmp(&(&b.run_id, b.epoch)));
    rows
}

/// The runs of one (net, dataset), in [`find_runs`] order.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    /// Network.
    pub net: String,
    /// Dataset.
    pub dataset: String,
    /// Its runs.
    pub runs: Vec<&'a RunRecord>,
}

impl Group<'_> {
    /// Mean final test accuracy and mean seconds per epoch of the `fp32`
    /// runs that finished an epoch without diverging; `None` without such a
    /// run.
    pub fn reference(&self) -> Option<(f64, f64)> {
        let base: Vec<(f32, f64)> = self
            .runs
            .iter()
            .filter(|r| r.plan() == REFERENCE_PLAN)
            .filter_map(|r| Some((r.final_accuracy()?, r.mean_seconds()?)))
            .collect();
        if base.is_empty() {
            return None;
        }
        let n = base.len() as f64;
        Some((
            base.iter().map(|b| b.0 as f64).sum::<f64>() / n,
            base.iter().map(|b| b.1).sum::<f64>() / n,
        ))
    }

    /// The name of a run in legends and tables: its plan, with the seed
    /// when another run of the group has the same plan.
    pub fn label(&self, run: &RunRecord) -> String {
        let plan = run.plan();
        let same = self.runs.iter().filter(|r| r.plan() == plan).count();
        if same > 1 {
            format!("{plan} s{}", run.file.spec.seed)
        } else {
            plan
        }
    }
}

/// `runs` grouped by (net, dataset), in order.
pub fn groups(runs: &[RunRecord]) -> Vec<Group<'_>> {
    let mut out: Vec<Group> = Vec::new();
    for r in runs {
        let (net, dataset) = (&r.file.spec.net, &r.file.spec.dataset);
        match out.last_mut() {
            Some(g) if &g.net == net && &g.dataset == dataset => g.runs.push(r),
            _ => out.push(Group {
                net: net.clone(),
                dataset: dataset.clone(),
                runs: vec![r],
            }),
        }
    }
    out
}

/// Every plan of `runs`, once, in [`plan_order`]: plans keep their colour
/// across figures and panels.
pub fn all_plans(runs: &[RunRecord]) -> Vec<String> {
    let mut plans: Vec<String> = runs.iter().map(|r| r.plan()).collect();
    plans.sort_by(|a, b| plan_order(a, b));
    plans.dedup();
    plans
}

/// A multiplier model used by the runs, for the report's last section.
#[derive(Debug, Clone)]
pub struct ModelSection {
    /// The table spec, `MODEL:BITS`.
    pub spec: String,
    /// Its heat-map PNG, relative to the report.
    pub heatmap: Option<String>,
    /// Its error metrics over every pair of truncated mantissas.
    pub characterization: Option<amsim::metrics::Characterization>,
    /// Why there is no heat map, when there is none.
    pub note: Option<String>,
}

/// Everything [`markdown`] writes beyond the runs' own numbers.
#[derive(Debug, Clone, Default)]
pub struct ReportExtras<'a> {
    /// Figures (file name relative to the report, caption), embedded above
    /// the tables.
    pub figures: Vec<(&'a str, &'a str)>,
    /// Energy per image by run id, for the runs of groups where a model
    /// declares figures ([`crate::energy`]).
    pub energy: Vec<(String, RunEnergy)>,
    /// The name of the energy CSV, when written.
    pub energy_csv: Option<&'a str>,
    /// The multiplier models used, with their heat maps.
    pub models: Vec<ModelSection>,
}

/// The Markdown report of `runs`: one table per (net, dataset), the
/// energy of the multiplies where figures exist, and the models used, with
/// the figures of `extras` embedded.
pub fn markdown(title: &str, runs: &[RunRecord], extras: &ReportExtras) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "Written by `approxtrain plot` from {} run director{}; every row of their \
         `metrics.csv` is in [{SUMMARY_FILE}]({SUMMARY_FILE}). Accuracies are after \
         the last recorded epoch; the gap is in percentage points against the mean \
         of the group's `{REFERENCE_PLAN}` runs (`-` without one); seconds per epoch \
         are wall time, only comparable between runs on the same machine.\n",
        runs.len(),
        if runs.len() == 1 { "y" } else { "ies" }
    );
    for (file, caption) in &extras.figures {
        let _ = writeln!(s, "![{caption}]({file})\n");
    }
    for g in groups(runs) {
        let _ = writeln!(s, "## {} on {}\n", g.net, g.dataset);
        if Task::of_net(&g.net) == Task::LanguageModel {
            lm_table(&mut s, &g);
            continue;
        }
        let _ = writeln!(
            s,
            "| plan | seed | status | epochs | final test accuracy | gap to {REFERENCE_PLAN} (points) \
             | s/epoch | slowdown vs {REFERENCE_PLAN} | run |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        let reference = g.reference();
        for r in &g.runs {
            let acc = r.final_accuracy();
            let secs = r.mean_seconds();
            let accuracy = match acc {
                Some(a) => format!("{:.2}%", a as f64 * 100.0),
                None if r.diverged() => "diverged".into(),
                None => "-".into(),
            };
            let gap = match (acc, reference) {
                (Some(a), Some((base, _))) => format!("{:+.2}", (a as f64 - base) * 100.0),
                _ => "-".into(),
            };
            let slowdown = match (secs, reference) {
                (Some(t), Some((_, base))) if base > 0.0 => format!("{:.2}x", t / base),
                _ => "-".into(),
            };
            let dir = r.dir.to_string_lossy().replace('\\', "/");
            let link = if dir.is_empty() {
                "`.`".to_string()
            } else {
                format!("[{dir}]({dir}/)")
            };
            let _ = writeln!(
                s,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
                g.label(r),
                r.file.spec.seed,
                r.file.run.status,
                r.rows.last().map_or(0, |x| x.epoch),
                accuracy,
                gap,
                secs.map_or("-".into(), |t| format!("{t:.2}")),
                slowdown,
                link
            );
        }
        let diverged: Vec<_> = g.runs.iter().filter(|r| r.diverged()).collect();
        if !diverged.is_empty() {
            let _ = writeln!(s, "\nDiverged:\n");
            for r in diverged {
                let _ = writeln!(
                    s,
                    "- `{}`: {}",
                    g.label(r),
                    r.file
                        .run
                        .message
                        .as_deref()
                        .unwrap_or("the loss became NaN or infinite")
                );
            }
        }
        s.push('\n');
        energy_table(&mut s, &g, extras);
    }
    models_section(&mut s, &extras.models);
    s
}

/// Format microjoules with three significant digits.
/// The table of a language-model group: final validation loss (nats per
/// character), perplexity and next-character accuracy after the last
/// validation, the loss gap to the mean of the group's `fp32` runs, and
/// wall seconds per optimizer step.
fn lm_table(s: &mut String, g: &Group) {
    let finals = |r: &RunRecord| -> Option<(f64, f64, f64)> {
        if r.diverged() {
            return None;
        }
        let last = r.rows.last()?;
        let secs: f64 = r.rows.iter().map(|x| x.seconds).sum();
        Some((
            last.test_loss as f64,
            last.test_accuracy as f64,
            secs / last.step.max(1) as f64,
        ))
    };
    let base: Vec<(f64, f64, f64)> = g
        .runs
        .iter()
        .filter(|r| r.plan() == REFERENCE_PLAN)
        .filter_map(|r| finals(r))
        .collect();
    let n = base.len() as f64;
    let reference = (!base.is_empty()).then(|| {
        (
            base.iter().map(|b| b.0).sum::<f64>() / n,
            base.iter().map(|b| b.2).sum::<f64>() / n,
        )
    });
    let _ = writeln!(
        s,
        "A language model: the loss, perplexity and accuracy are those of the last \
         validation; the gap is against the mean loss of the `{REFERENCE_PLAN}` runs; \
         s/step is the wall time of training and validation over the steps.\n"
    );
    let _ = writeln!(
        s,
        "| plan | seed | status | steps | validation loss (nats/char) | perplexity \
         | next-character accuracy | gap to {REFERENCE_PLAN} (nats/char) | s/step \
         | slowdown vs {REFERENCE_PLAN} | run |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &g.runs {
        let f = finals(r);
        let cell = |v: Option<String>| {
            v.unwrap_or_else(|| if r.diverged() { "diverged" } else { "-" }.into())
        };
        let gap = match (f, reference) {
            (Some((loss, _, _)), Some((base, _))) => Some(format!("{:+.4}", loss - base)),
            _ => None,
        };
        let slowdown = match (f, reference) {
            (Some((_, _, t)), Some((_, base))) if base > 0.0 => Some(format!("{:.2}x", t / base)),
            _ => None,
        };
        let dir = r.dir.to_string_lossy().replace('\\', "/");
        let link = if dir.is_empty() {
            "`.`".to_string()
        } else {
            format!("[{dir}]({dir}/)")
        };
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            g.label(r),
            r.file.spec.seed,
            r.file.run.status,
            r.rows.last().map_or(0, |x| x.step),
            cell(f.map(|f| format!("{:.4}", f.0))),
            cell(f.map(|f| format!("{:.3}", f.0.exp()))),
            cell(f.map(|f| format!("{:.2}%", f.1 * 100.0))),
            cell(gap),
            cell(f.map(|f| format!("{:.3}", f.2))),
            cell(slowdown),
            link
        );
    }
    s.push('\n');
}

fn format_uj(uj: f64) -> String {
    if uj >= 100.0 {
        format!("{uj:.0}")
    } else if uj >= 10.0 {
        format!("{uj:.1}")
    } else if uj >= 1.0 {
        format!("{uj:.2}")
    } else {
        format!("{uj:.3}")
    }
}

/// The energy table of group `g`, when some of its runs have figures.
fn energy_table(s: &mut String, g: &Group, extras: &ReportExtras) {
    let rows: Vec<(&RunRecord, &RunEnergy)> = g
        .runs
        .iter()
        .filter_map(|r| {
            extras
                .energy
                .iter()
                .find(|(id, _)| *id == r.file.run.run_id)
                .map(|(_, e)| (*r, e))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    // A language model's example is a window of its context.
    let unit = match Task::of_net(&g.net) {
        Task::Classifier => "image",
        Task::LanguageModel => "window",
    };
    let _ = writeln!(
        s,
        "Energy of the multiplies per {unit} (µJ): multiply-accumulates per role \
         times each role's energy per multiply (the power x delay its C model \
         declares), against the same counts at {FP32_MULTIPLY_PJ} pJ per FP32 \
         multiply (Horowitz, ISSCC 2014, 45 nm). `-`: a multiplier of the plan \
         declares no figure.{}\n",
        extras
            .energy_csv
            .map(|f| format!(" All numbers: [{f}]({f})."))
            .unwrap_or_default()
    );
    let _ = writeln!(
        s,
        "| plan | MACs fwd | MACs dx | MACs dw | training {unit} | {REFERENCE_PLAN} | ratio \
         | inference {unit} | {REFERENCE_PLAN} | ratio |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for (r, e) in rows {
        let ratio =
            |x: Option<f64>, base: f64| x.map_or("-".into(), |x| format!("{:.3}", x / base));
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            g.label(r),
            e.macs.forward,
            e.macs.grad_input,
            e.macs.grad_weight,
            e.train_image_uj.map_or("-".into(), format_uj),
            format_uj(e.fp32_train_image_uj),
            ratio(e.train_image_uj, e.fp32_train_image_uj),
            e.inference_image_uj.map_or("-".into(), format_uj),
            format_uj(e.fp32_inference_image_uj),
            ratio(e.inference_image_uj, e.fp32_inference_image_uj),
        );
    }
    s.push('\n');
}

/// The models section: error metrics and heat map of each table used.
fn models_section(s: &mut String, models: &[ModelSection]) {
    if models.is_empty() {
        return;
    }
    let _ = writeln!(s, "## Multipliers\n");
    let _ = writeln!(
        s,
        "Error of each table used, over every pair of truncated mantissas \
         (`approxtrain characterize`): relative error (L - x) / x against the \
         exact product x of the truncated operands.\n"
    );
    let _ = writeln!(
        s,
        "| table | mean relative error (bias) | mean absolute relative error | \
         largest relative error | share of products with an error |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for m in models {
        match &m.characterization {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "| `{}` | {:+.3}% | {:.3}% | {:+.3}% | {:.1}% |",
                    m.spec,
                    c.mean_relative_error * 100.0,
                    c.mred * 100.0,
                    c.max_relative_error * 100.0,
                    c.error_rate * 100.0
                );
            }
            None => {
                let _ = writeln!(s, "| `{}` | - | - | - | - |", m.spec);
            }
        }
    }
    s.push('\n');
    for m in models {
        if let Some(file) = &m.heatmap {
            let _ = writeln!(s, "![{} relative error]({file})\n", m.spec);
        }
        if let Some(note) = &m.note {
            let _ = writeln!(s, "`{}`: {note}\n", m.spec);
        }
    }
}
