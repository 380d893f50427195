//! Per-layer sensitivity of a trained network to an approximate multiplier
//! (`approxtrain sensitivity`), and a greedy per-layer plan.
//!
//! With `A` the approximate multiplier and the run's own plan as the
//! baseline, for every layer with products:
//! - *only this layer*: the layer's forward products on `A`, every other
//!   layer on the baseline;
//! - *all but this layer*: every other layer's forward products on `A`,
//!   this one on the baseline.
//!
//! The greedy search then takes the layers in order of least harm (highest
//! only-this accuracy first, ties by larger forward MAC count) and moves
//! each onto `A` when the accuracy of the plan so far plus that layer stays
//! within `max_drop` percentage points of the baseline; a layer that would
//! break the budget is skipped and the next one tried. The result is a plan
//! file ([`plan_file_text`]) that `eval --plan` and `train --plan` read.
//!
//! Only forward products run in evaluation, so layers are moved with
//! `fwd = A` and keep the baseline's gradient multipliers.
//!
//! Shares of multiplies are forward multiply-accumulates per image
//! ([`nets::Network::macs_per_layer`]). Energy per multiply is
//! [`crate::energy::multiply_energy_pj`]: the FP32 reference figure, and a
//! model's declared power x delay; without figures no energy is reported.

use std::collections::BTreeMap;

use amsim::{ModelInfo, MultiplierSpec, PlanSpec, Role};

use crate::energy::multiply_energy_pj;
use crate::error::{ExperimentError, Result};
use crate::eval::{EvalPlan, EvalResult, Evaluator};
use crate::run::network_for_spec;

/// The two accuracies of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSensitivity {
    /// Layer name.
    pub layer: String,
    /// Forward multiply-accumulates per image in this layer.
    pub forward_macs: u64,
    /// Test accuracy with only this layer's forward products approximate.
    pub only_this: EvalResult,
    /// Test accuracy with every layer but this one approximate.
    pub all_but_this: EvalResult,
}

/// One step of the greedy search.
#[derive(Debug, Clone, PartialEq)]
pub struct GreedyStep {
    /// The layer tried.
    pub layer: String,
    /// Accuracy of the plan so far with this layer added.
    pub result: EvalResult,
    /// Whether the layer stayed approximate (drop within budget).
    pub accepted: bool,
}

/// Everything `approxtrain sensitivity` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityReport {
    /// The approximate multiplier.
    pub approx: MultiplierSpec,
    /// The baseline plan (the run's own).
    pub baseline_plan: EvalPlan,
    /// Accuracy under the baseline.
    pub baseline: EvalResult,
    /// Accuracy with every layer's forward products approximate.
    pub all_approx: EvalResult,
    /// Per layer, sorted by least harm first.
    pub layers: Vec<LayerSensitivity>,
    /// The greedy search, in the order tried.
    pub greedy: Vec<GreedyStep>,
    /// The drop budget, percentage points.
    pub max_drop: f64,
    /// The layers the greedy plan makes approximate, in network order.
    pub chosen: Vec<String>,
    /// Forward MACs per image, all layers.
    pub total_forward_macs: u64,
    /// Forward MACs per image on the approximate multiplier in the greedy plan.
    pub chosen_forward_macs: u64,
    /// Accuracy of the greedy plan (the baseline when no layer was chosen).
    pub chosen_result: EvalResult,
    /// Energy per multiply of the approximate multiplier, pJ, when its
    /// model declares power and delay.
    pub approx_energy_pj: Option<f64>,
    /// Energy per multiply of the baseline's forward multiplier, pJ, when
    /// known.
    pub baseline_energy_pj: Option<f64>,
}

impl SensitivityReport {
    /// Share of forward multiplies moved onto the approximate multiplier.
    pub fn mac_share(&self) -> f64 {
        self.chosen_forward_macs as f64 / self.total_forward_macs.max(1) as f64
    }

    /// Accuracy drop of a result against the baseline, percentage points.
    pub fn drop_points(&self, r: &EvalResult) -> f64 {
        100.0 * (self.baseline.accuracy as f64 - r.accuracy as f64)
    }

    /// Forward multiply energy per image of the greedy plan relative to the
    /// baseline, when both multipliers declare energy figures.
    pub fn energy_ratio(&self) -> Option<f64> {
        let (a, b) = (self.approx_energy_pj?, self.baseline_energy_pj?);
        let total = self.total_forward_macs as f64;
        let moved = self.chosen_forward_macs as f64;
        Some((moved * a + (total - moved) * b) / (total * b))
    }
}

/// The plan of `base` with the forward products of `layers` on `approx`.
fn with_approx_layers(
    label: String,
    base: &EvalPlan,
    approx: &MultiplierSpec,
    layers: &[&str],
) -> Result<EvalPlan> {
    let mut plan = base.clone();
    plan.label = label;
    for name in layers {
        let mut p: PlanSpec = match base.layers.get(*name) {
            Some(s) => s.parse()?,
            None => base.multiplier.parse()?,
        };
        p.set(Role::Forward, approx.clone());
        plan.layers.insert(name.to_string(), p.to_string());
    }
    Ok(plan)
}

/// Run the sensitivity analysis of `evaluator`'s network under `approx`
/// with a drop budget of `max_drop` percentage points; `progress` gets a
/// line per evaluation.
pub fn sensitivity(
    evaluator: &Evaluator,
    approx: &MultiplierSpec,
    max_drop: f64,
    models: &[ModelInfo],
    progress: &mut dyn FnMut(&str),
) -> Result<SensitivityReport> {
    if !(max_drop.is_finite() && max_drop >= 0.0) {
        return Err(ExperimentError::BadSpec(format!(
            "--max-drop must be a number of percentage points >= 0, got {max_drop}"
        )));
    }
    crate::plan_file::check_model(approx, models)?;
    let base = EvalPlan::of_run(&evaluator.spec);
    let network = network_for_spec(&evaluator.spec_with(&base), models)?;
    let macs: Vec<(String, u64)> = network
        .macs_per_layer()
        .into_iter()
        .map(|(n, m)| (n, m.forward))
        .collect();
    let names: Vec<&str> = macs.iter().map(|(n, _)| n.as_str()).collect();
    let mut eval = |plan: &EvalPlan| -> Result<EvalResult> {
        let r = evaluator.evaluate(plan, models)?;
        progress(&format!(
            "{:<40} accuracy {:6.2}%  ({:.1} s)",
            plan.label,
            100.0 * r.accuracy,
            r.seconds
        ));
        Ok(r)
    };
    let mut baseline_plan = base.clone();
    baseline_plan.label = format!("baseline ({})", base.label);
    let baseline = eval(&baseline_plan)?;
    let all_approx = eval(&with_approx_layers(
        format!("all layers fwd={approx}"),
        &base,
        approx,
        &names,
    )?)?;
    let mut layers = Vec::new();
    for (i, (name, m)) in macs.iter().enumerate() {
        let only_this = eval(&with_approx_layers(
            format!("only {name}"),
            &base,
            approx,
            &[name.as_str()],
        )?)?;
        let others: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| *n)
            .collect();
        let all_but_this = eval(&with_approx_layers(
            format!("all but {name}"),
            &base,
            approx,
            &others,
        )?)?;
        layers.push(LayerSensitivity {
            layer: name.clone(),
            forward_macs: *m,
            only_this,
            all_but_this,
        });
    }
    layers.sort_by(|a, b| {
        b.only_this
            .accuracy
            .total_cmp(&a.only_this.accuracy)
            .then(b.forward_macs.cmp(&a.forward_macs))
    });
    let mut chosen: Vec<&str> = Vec::new();
    let mut greedy = Vec::new();
    let mut chosen_result = baseline.clone();
    let limit = baseline.accuracy as f64 - max_drop / 100.0;
    for l in &layers {
        let mut trial = chosen.clone();
        trial.push(&l.layer);
        let result = eval(&with_approx_layers(
            format!("greedy + {}", l.layer),
            &base,
            approx,
            &trial,
        )?)?;
        // Compare in f32 units of the accuracy: a drop of exactly the budget
        // is accepted.
        let accepted = result.accuracy as f64 >= limit - 1e-9;
        if accepted {
            chosen = trial;
            chosen_result = result.clone();
        }
        greedy.push(GreedyStep {
            layer: l.layer.clone(),
            result,
            accepted,
        });
    }
    let chosen_in_order: Vec<String> = names
        .iter()
        .filter(|n| chosen.contains(n))
        .map(|n| n.to_string())
        .collect();
    let chosen_forward_macs = macs
        .iter()
        .filter(|(n, _)| chosen.contains(&n.as_str()))
        .map(|(_, m)| m)
        .sum();
    let base_plan: PlanSpec = base.multiplier.parse()?;
    Ok(SensitivityReport {
        approx: approx.clone(),
        baseline_plan: base,
        baseline,
        all_approx,
        layers,
        greedy,
        max_drop,
        chosen: chosen_in_order,
        total_forward_macs: macs.iter().map(|(_, m)| m).sum(),
        chosen_forward_macs,
        chosen_result,
        approx_energy_pj: multiply_energy_pj(approx, models),
        baseline_energy_pj: multiply_energy_pj(base_plan.get(Role::Forward), models),
    })
}

/// The greedy plan as a plan file: the baseline's default plan, the
/// baseline's own per-layer plans, and `fwd = A` for every chosen layer.
/// A comment block records where it came from and what it measured.
pub fn plan_file_text(report: &SensitivityReport, checkpoint: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "# Written by approxtrain sensitivity --checkpoint {checkpoint} --multiplier {} --max-drop {}\n",
        report.approx, report.max_drop
    ));
    s.push_str(&format!(
        "# baseline accuracy {:.2}%, this plan {:.2}% (drop {:.2} points);\n",
        100.0 * report.baseline.accuracy,
        100.0 * report.chosen_result.accuracy,
        report.drop_points(&report.chosen_result)
    ));
    s.push_str(&format!(
        "# forward multiplies on {}: {:.1}% ({} of {} per image)\n",
        report.approx,
        100.0 * report.mac_share(),
        report.chosen_forward_macs,
        report.total_forward_macs
    ));
    s.push_str(&format!(
        "multiplier = \"{}\"\n",
        report.baseline_plan.multiplier
    ));
    let mut layers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &report.baseline_plan.layers {
        layers.insert(k.clone(), format!("multiplier = \"{v}\"\n"));
    }
    for name in &report.chosen {
        let entry = layers.entry(name.clone()).or_default();
        entry.push_str(&format!("fwd = \"{}\"\n", report.approx));
    }
    for (name, body) in layers {
        s.push_str(&format!("\n[layers.{name}]\n{body}"));
    }
    s
}

/// Header of the sensitivity CSV.
pub const SENSITIVITY_CSV_HEADER: [&str; 8] = [
    "layer",
    "forward_macs_per_image",
    "mac_share",
    "only_this_accuracy",
    "only_this_drop_points",
    "all_but_this_accuracy",
    "all_but_this_drop_points",
    "greedy_chosen",
];

/// The sensitivity table as CSV bytes (rows sorted by least harm first).
pub fn sensitivity_csv(report: &SensitivityReport) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| ExperimentError::Other(format!("sensitivity CSV: {e}"));
    w.write_record(SENSITIVITY_CSV_HEADER).map_err(err)?;
    for l in &report.layers {
        w.write_record([
            l.layer.clone(),
            l.forward_macs.to_string(),
            format!(
                "{:.6}",
                l.forward_macs as f64 / report.total_forward_macs.max(1) as f64
            ),
            l.only_this.accuracy.to_string(),
            format!("{:.2}", report.drop_points(&l.only_this)),
            l.all_but_this.accuracy.to_string(),
            format!("{:.2}", report.drop_points(&l.all_but_this)),
            report.chosen.contains(&l.layer).to_string(),
        ])
        .map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| ExperimentError::Other(format!("sensitivity CSV: {e}")))
}

/// Draw a PNG at `path` with `draw`, written whole: plotters encodes into a
/// temporary `.png` next to it (it picks the encoder by the extension),
/// renamed over `path` once complete.
pub(crate) fn write_png_with(
    path: &std::path::Path,
    size: (u32, u32),
    draw: impl FnOnce(
        &plotters::drawing::DrawingArea<plotters::prelude::BitMapBackend, plotters::coord::Shift>,
    ) -> std::result::Result<(), Box<dyn std::error::Error>>,
) -> Result<()> {
    use plotters::prelude::*;
    amsim::heatmap::register_embedded_font();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{stem}-{}.tmp.png", std::process::id()));
    let drawn = {
        let area = BitMapBackend::new(&tmp, size).into_drawing_area();
        draw(&area).and_then(|_| area.present().map_err(|e| e.into()))
    };
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(ExperimentError::Other(format!(
            "{}: cannot draw figure: {e}",
            path.display()
        )));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ExperimentError::io(path, e)
    })
}

/// Bar chart of the accuracy drop per layer (percentage points against
/// the baseline): only this layer approximate, and all but this layer.
pub fn write_sensitivity_png(report: &SensitivityReport, path: &std::path::Path) -> Result<()> {
    use amsim::heatmap::FONT_FAMILY;
    use plotters::prelude::*;
    let n = report.layers.len();
    let drops: Vec<(f64, f64)> = report
        .layers
        .iter()
        .map(|l| {
            (
                report.drop_points(&l.only_this),
                report.drop_points(&l.all_but_this),
            )
        })
        .collect();
    let hi = drops
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .chain([report.max_drop, report.drop_points(&report.all_approx)])
        .fold(0.1f64, f64::max);
    let lo = drops
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .fold(0.0f64, f64::min);
    let width = 160 + 110 * n as u32;
    write_png_with(path, (width.max(640), 480), |area| {
        area.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .caption(
                format!(
                    "accuracy drop per layer, forward products on {}",
                    report.approx
                ),
                (FONT_FAMILY, 18),
            )
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n as f64, (lo * 1.1)..(hi * 1.6))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .x_desc("layer (sorted by least harm)")
            .y_desc("test accuracy drop vs baseline (percentage points)")
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 15))
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()?;
        let only = RGBColor(0x1f, 0x77, 0xb4);
        let allbut = RGBColor(0xff, 0x7f, 0x0e);
        chart
            .draw_series(drops.iter().enumerate().map(|(i, (a, _))| {
                let x = i as f64;
                Rectangle::new([(x + 0.1, 0.0), (x + 0.48, *a)], only.filled())
            }))?
            .label("only this layer approximate")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], only.filled()));
        chart
            .draw_series(drops.iter().enumerate().map(|(i, (_, b))| {
                let x = i as f64;
                Rectangle::new([(x + 0.52, 0.0), (x + 0.9, *b)], allbut.filled())
            }))?
            .label("all but this layer approximate")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], allbut.filled()));
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, report.max_drop), (n as f64, report.max_drop)],
                8,
                5,
                BLACK.stroke_width(2),
            ))?
            .label(format!("--max-drop {} points", report.max_drop))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        let base = area.get_base_pixel();
        for (i, l) in report.layers.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, lo * 1.1));
            area.draw(&Text::new(
                l.layer.clone(),
                (px - base.0, py - base.1 + 6),
                TextStyle::from((FONT_FAMILY, 14).into_font()).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Top,
                    ),
                ),
            ))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT_FAMILY, 14))
            .draw()?;
        Ok(())
    })
}
