//! The validation-loss figure of language-model runs
//! (`validation_loss.png` / `.svg`), drawn by `approxtrain plot`
//! ([`crate::plot`]) next to the figures of [`super::training`] when the folder holds `--net transformer`
//! runs: one line per run, validation loss (nats per character) against
//! the optimizer step.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    draw_legend, line_mark, plan_colour, write_png_with, write_svg_with, DrawResult, FONT_FAMILY,
};
use crate::error::Result;
use crate::report::{all_plans, find_runs, RunRecord};
use crate::spec::Task;

/// File stem of the figure.
pub const VALIDATION_LOSS_FIGURE: &str = "validation_loss";

/// Pixel size of the figure.
const SIZE: (u32, u32) = (800, 520);

/// Draw the figure for the transformer runs below `dir`; the files written
/// (none when there is no such run).
pub fn plot_validation_loss(dir: &Path) -> Result<Vec<PathBuf>> {
    let runs: Vec<RunRecord> = find_runs(dir)?
        .into_iter()
        .filter(|r| r.file.spec.task() == Task::LanguageModel && !r.rows.is_empty())
        .collect();
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let svg_path = dir.join(format!("{VALIDATION_LOSS_FIGURE}.svg"));
    write_svg_with(&svg_path, SIZE, |area| draw(area, &runs))?;
    let png_path = dir.join(format!("{VALIDATION_LOSS_FIGURE}.png"));
    write_png_with(&png_path, SIZE, |area| draw(area.clone(), &runs))?;
    Ok(vec![png_path, svg_path])
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, runs: &[RunRecord]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let points = |r: &RunRecord| -> Vec<(f64, f64)> {
        r.rows
            .iter()
            .filter(|x| x.test_loss.is_finite())
            .map(|x| (x.step as f64, x.test_loss as f64))
            .collect()
    };
    let all: Vec<(f64, f64)> = runs.iter().flat_map(points).collect();
    let max_step = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let lo = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = all.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (1.0, 2.0) };
    let pad = ((hi - lo) * 0.05).max(0.01);
    let mut chart = ChartBuilder::on(&root)
        .margin(14)
        .caption(
            "Validation loss of the character-level Transformer",
            (FONT_FAMILY, 20),
        )
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_step, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("validation loss (nats/char)")
        .label_style((FONT_FAMILY, 14))
        .axis_desc_style((FONT_FAMILY, 15))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    // The colours of `approxtrain plot`'s other figures: one per plan.
    let plans = all_plans(runs);
    for r in runs {
        let colour = plan_colour(&plans, &r.plan());
        let label = format!("{} ({})", r.plan(), r.dir.display());
        chart
            .draw_series(LineSeries::new(points(r), colour.stroke_width(2)))?
            .label(label)
            .legend(line_mark(colour));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 13)?;
    root.present()?;
    Ok(())
}
