//! `approxtrain plot DIR`: merge every run below `DIR` into
//! `DIR/summary.csv`, draw the figures (PNG and SVG, [`crate::figure`])
//! and write `DIR/report.md` ([`crate::report`]).
//!
//! Classifier runs get the figures of [`crate::figure::training`],
//! language-model runs that of [`crate::figure::validation_loss`]. Each
//! table a run uses (`MODEL:BITS`) also gets its relative-error heat map
//! (`heatmap_MODEL_BITS.png`, [`crate::figure::heatmap`]) and a row of
//! error metrics in the report; where a C model declares power and delay,
//! the report adds the energy of the multiplies ([`crate::energy`]) and
//! [`ENERGY_FILE`].

use std::path::{Path, PathBuf};

use amsim::metrics::characterize_lut;
use amsim::{Lut, ModelInfo, MultiplierSpec, PlanSpec, Role, MAX_LUT_BITS};

use crate::atomic::write_atomic;
use crate::energy::{declares_energy, energy_of_products, products_of_run, Products, RunEnergy};
use crate::error::{ExperimentError, Result};
use crate::figure::heatmap::write_heatmap;
use crate::figure::training::{write_figure, Figure};
use crate::figure::validation_loss::{plot_validation_loss, VALIDATION_LOSS_FIGURE};
use crate::metrics::write_metrics;
use crate::report::{
    all_plans, find_runs, groups, markdown, summary_rows, ModelSection, ReportExtras, RunRecord,
    REPORT_FILE, SUMMARY_FILE,
};
use crate::spec::Task;

/// What [`plot_dir`] read and wrote.
#[derive(Debug, Clone)]
pub struct PlotOutput {
    /// Run directories found.
    pub runs: usize,
    /// Rows in `summary.csv`.
    pub rows: usize,
    /// Files written: `summary.csv`, the figures, `report.md`.
    pub files: Vec<PathBuf>,
}

/// Merge, draw and report every run below `dir` (see the module docs),
/// with `models` (the C-model registry) for the heat maps and energy
/// figures. Every file is written whole; an error names the offending
/// directory or file.
pub fn plot_dir(dir: &Path, models: &[ModelInfo]) -> Result<PlotOutput> {
    let runs = find_runs(dir)?;
    let summary = summary_rows(&runs);
    let mut files = Vec::new();
    let summary_path = dir.join(SUMMARY_FILE);
    write_metrics(&summary_path, &summary)?;
    files.push(summary_path);

    let plans = all_plans(&runs);
    // Language-model runs get their validation loss against the step; the
    // per-epoch accuracy figures are drawn only where a classifier is.
    let lm_files = plot_validation_loss(dir)?;
    let mut pngs: Vec<(String, &str)> = Vec::new();
    if !lm_files.is_empty() {
        pngs.push((
            format!("{}.png", VALIDATION_LOSS_FIGURE),
            "Validation loss (nats per character) against the step",
        ));
        files.extend(lm_files);
    }
    let classifiers = runs.iter().any(|r| r.file.spec.task() == Task::Classifier);
    let figures: &[Figure] = if classifiers { &Figure::ALL } else { &[] };
    for &figure in figures {
        files.extend(write_figure(dir, figure, &runs, &plans)?);
    }

    let title = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    pngs.extend(
        figures
            .iter()
            .map(|f| (format!("{}.png", f.stem()), f.title())),
    );

    let model_sections = draw_heatmaps(dir, &runs, models, &mut files)?;
    let energy = energies(dir, &runs, models)?;
    let energy_path = dir.join(ENERGY_FILE);
    if energy.is_empty() {
        // A file of an earlier plot whose figures are gone would mislead.
        if energy_path.exists() {
            std::fs::remove_file(&energy_path).map_err(|e| ExperimentError::io(&energy_path, e))?;
        }
    } else {
        write_energy_csv(&energy_path, &runs, &energy)?;
        files.push(energy_path);
    }

    let extras = ReportExtras {
        figures: pngs.iter().map(|(f, c)| (f.as_str(), *c)).collect(),
        energy_csv: (!energy.is_empty()).then_some(ENERGY_FILE),
        energy,
        models: model_sections,
    };
    let report_path = dir.join(REPORT_FILE);
    let text = markdown(&format!("Results: {title}"), &runs, &extras);
    write_atomic(&report_path, text.as_bytes())?;
    files.push(report_path);
    Ok(PlotOutput {
        runs: runs.len(),
        rows: summary.len(),
        files,
    })
}

/// The energy table of every run, written next to `summary.csv` only when
/// some model of the runs declares figures ([`crate::energy`]).
pub const ENERGY_FILE: &str = "energy.csv";

/// The tables (`MODEL:BITS`, `direct:MODEL:BITS` up to the table limit)
/// used by any product of any run, once each, in name then width order.
fn tables_used(runs: &[RunRecord]) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for r in runs {
        let spec = &r.file.spec;
        let plans = std::iter::once(spec.multiplier.as_str())
            .chain(spec.layers.values().map(|p| p.as_str()))
            .filter_map(|p| p.parse::<PlanSpec>().ok());
        for plan in plans {
            for role in Role::ALL {
                if let MultiplierSpec::Model { name, bits }
                | MultiplierSpec::Direct { name, bits } = plan.get(role)
                {
                    if *bits <= MAX_LUT_BITS && !out.iter().any(|(n, b)| n == name && b == bits) {
                        out.push((name.clone(), *bits));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

/// Draw the heat map of every table the runs use into `dir`
/// (`heatmap_MODEL_BITS.png`) and characterize it, for the report.
fn draw_heatmaps(
    dir: &Path,
    runs: &[RunRecord],
    models: &[ModelInfo],
    files: &mut Vec<PathBuf>,
) -> Result<Vec<ModelSection>> {
    let mut sections = Vec::new();
    for (name, bits) in tables_used(runs) {
        let spec = format!("{name}:{bits}");
        let Some(model) = models.iter().find(|m| m.name == name) else {
            sections.push(ModelSection {
                spec,
                heatmap: None,
                characterization: None,
                note: Some(
                    "this approxtrain has no such C model compiled in; no heat map".to_string(),
                ),
            });
            continue;
        };
        let lut = Lut::build(&name, model.func, bits)?;
        let file = format!("heatmap_{name}_{bits}.png");
        let path = dir.join(&file);
        write_heatmap(&lut, &path)?;
        files.push(path);
        sections.push(ModelSection {
            spec,
            heatmap: Some(file),
            characterization: Some(characterize_lut(&lut)),
            note: None,
        });
    }
    Ok(sections)
}

/// Energy per image of every run of each (net, dataset) group in which
/// some run uses a model that declares figures; empty when none does.
fn energies(
    dir: &Path,
    runs: &[RunRecord],
    models: &[ModelInfo],
) -> Result<Vec<(String, RunEnergy)>> {
    let mut out = Vec::new();
    for g in groups(runs) {
        if !g.runs.iter().any(|r| declares_energy(&r.file.spec, models)) {
            continue;
        }
        // One count per network and seed is enough for a classifier: plans
        // do not change the multiply-accumulates. A language model's
        // depend on its size and vocabulary, counted per run.
        let mut layers_of: Vec<(u64, Vec<Products>)> = Vec::new();
        for r in &g.runs {
            let spec = &r.file.spec;
            let cached = layers_of.iter().find(|(seed, _)| *seed == spec.seed);
            let products = match cached {
                Some((_, p)) if spec.task() == Task::Classifier => p.clone(),
                _ => {
                    let p = products_of_run(spec, &dir.join(&r.dir))?;
                    layers_of.push((spec.seed, p.clone()));
                    p
                }
            };
            out.push((
                r.file.run.run_id.clone(),
                energy_of_products(&products, spec, models)?,
            ));
        }
    }
    Ok(out)
}

/// Write [`ENERGY_FILE`]: one row per run with energy figures.
fn write_energy_csv(path: &Path, runs: &[RunRecord], energy: &[(String, RunEnergy)]) -> Result<()> {
    let mut text = String::from(
        "run_id,net,dataset,plan,seed,macs_forward,macs_grad_input,macs_grad_weight,\
         train_image_uj,fp32_train_image_uj,inference_image_uj,fp32_inference_image_uj\n",
    );
    let opt = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:e}"));
    for (id, e) in energy {
        let Some(r) = runs.iter().find(|r| &r.file.run.run_id == id) else {
            continue;
        };
        let spec = &r.file.spec;
        // The plan label may hold commas: quoted as CSV.
        text.push_str(&format!(
            "{id},{},{},\"{}\",{},{},{},{},{},{:e},{},{:e}\n",
            spec.net,
            spec.dataset,
            r.plan().replace('"', "\"\""),
            spec.seed,
            e.macs.forward,
            e.macs.grad_input,
            e.macs.grad_weight,
            opt(e.train_image_uj),
            e.fp32_train_image_uj,
            opt(e.inference_image_uj),
            e.fp32_inference_image_uj,
        ));
    }
    write_atomic(path, text.as_bytes())
}
