//! The figures of classifier runs (`approxtrain plot`): one panel per
//! (net, dataset), [`COLUMNS`] panels a row: test accuracy and training
//! loss against the epoch (one line per run, named by its plan), and the
//! final test accuracy as bars with the `fp32` reference as a horizontal
//! line. A plan keeps its colour in every panel.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use plotters::style::text_anchor::VPos;

use super::{
    centred_text, draw_legend, draw_slot_labels, line_mark, plan_colour, register_embedded_font,
    write_png_with, write_svg_with, DrawResult, FONT_FAMILY,
};
use crate::error::Result;
use crate::report::{groups, Group, RunRecord, REFERENCE_PLAN};

/// Width of one panel, pixels.
pub const PANEL_WIDTH: u32 = 640;
/// Height of one panel, pixels.
pub const PANEL_HEIGHT: u32 = 440;
/// Height of the figure title, pixels.
pub const TITLE_HEIGHT: u32 = 40;
/// Panels per row.
pub const COLUMNS: usize = 2;

/// The figures, by file stem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Test accuracy against the epoch.
    TestAccuracy,
    /// Training loss against the epoch (log scale).
    TrainLoss,
    /// Final test accuracy per plan, with the `fp32` reference line.
    FinalAccuracy,
}

impl Figure {
    /// Every figure, in report order.
    pub const ALL: [Figure; 3] = [
        Figure::TestAccuracy,
        Figure::TrainLoss,
        Figure::FinalAccuracy,
    ];

    /// File name without extension.
    pub fn stem(self) -> &'static str {
        match self {
            Figure::TestAccuracy => "test_accuracy",
            Figure::TrainLoss => "train_loss",
            Figure::FinalAccuracy => "final_accuracy",
        }
    }

    /// Title and report caption.
    pub fn title(self) -> &'static str {
        match self {
            Figure::TestAccuracy => "Test accuracy",
            Figure::TrainLoss => "Training loss",
            Figure::FinalAccuracy => "Final test accuracy",
        }
    }
}

/// Pixel size of a figure of `panels` panels.
pub fn figure_size(panels: usize) -> (u32, u32) {
    let panels = panels.max(1);
    let cols = panels.min(COLUMNS);
    let rows = panels.div_ceil(COLUMNS);
    (
        cols as u32 * PANEL_WIDTH,
        rows as u32 * PANEL_HEIGHT + TITLE_HEIGHT,
    )
}

/// Draw `figure` of `runs` into `dir` as `STEM.png` and `STEM.svg`, each
/// written whole; the files written.
pub fn write_figure(
    dir: &Path,
    figure: Figure,
    runs: &[RunRecord],
    plans: &[String],
) -> Result<[PathBuf; 2]> {
    let size = figure_size(groups(runs).len());
    let png = dir.join(format!("{}.png", figure.stem()));
    write_png_with(&png, size, |area| draw(area.clone(), figure, runs, plans))?;
    let svg = dir.join(format!("{}.svg", figure.stem()));
    write_svg_with(&svg, size, |area| draw(area, figure, runs, plans))?;
    Ok([png, svg])
}

/// Draw `figure` on `root`: the title, then one panel per group.
fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    figure: Figure,
    runs: &[RunRecord],
    plans: &[String],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    register_embedded_font();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(TITLE_HEIGHT);
    title.titled(figure.title(), (FONT_FAMILY, 24))?;
    let groups = groups(runs);
    let rows = groups.len().div_ceil(COLUMNS);
    let cols = groups.len().clamp(1, COLUMNS);
    for (group, area) in groups.iter().zip(body.split_evenly((rows, cols))) {
        match figure {
            Figure::TestAccuracy => draw_curves(&area, group, plans, Curve::TestAccuracy)?,
            Figure::TrainLoss => draw_curves(&area, group, plans, Curve::TrainLoss)?,
            Figure::FinalAccuracy => draw_bars(&area, group, plans)?,
        }
    }
    root.present()?;
    Ok(())
}

/// The run's name in a legend or under its bar, marked when it diverged.
fn legend_label(group: &Group, run: &RunRecord) -> String {
    if run.diverged() {
        format!("{} (diverged)", group.label(run))
    } else {
        group.label(run)
    }
}

#[derive(Clone, Copy)]
enum Curve {
    TestAccuracy,
    TrainLoss,
}

/// (min, max) of finite `values`, or `None`.
fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

/// One line per run of `group`: test accuracy (percent) or training loss
/// (log scale) against the epoch.
fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    group: &Group,
    plans: &[String],
    curve: Curve,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let value = |r: &crate::MetricsRow| match curve {
        Curve::TestAccuracy => r.test_accuracy as f64 * 100.0,
        Curve::TrainLoss => r.train_loss as f64,
    };
    let usable = |v: f64| v.is_finite() && (matches!(curve, Curve::TestAccuracy) || v > 0.0);
    let max_epoch = group
        .runs
        .iter()
        .flat_map(|r| r.rows.iter().map(|x| x.epoch))
        .max()
        .unwrap_or(1)
        .max(2);
    let (lo, hi) = finite_range(
        group
            .runs
            .iter()
            .flat_map(|r| r.rows.iter().map(value))
            .filter(|v| usable(*v)),
    )
    .unwrap_or((1.0, 2.0));
    let caption = format!("{} on {}", group.net, group.dataset);
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(12)
        .caption(&caption, (FONT_FAMILY, 18))
        .x_label_area_size(40)
        .y_label_area_size(60);
    let series = |r: &RunRecord| -> Vec<(f64, f64)> {
        r.rows
            .iter()
            .map(|x| (x.epoch as f64, value(x)))
            .filter(|p| usable(p.1))
            .collect()
    };
    let x_range = 1.0..max_epoch as f64;
    // Epochs are whole numbers: a tick per epoch up to a dozen, and no
    // label on a tick between two epochs.
    let x_labels = max_epoch.min(12);
    let epoch_label = |v: &f64| {
        if (v - v.round()).abs() < 1e-6 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    match curve {
        Curve::TestAccuracy => {
            let pad = ((hi - lo) * 0.05).max(0.05);
            let mut chart =
                builder.build_cartesian_2d(x_range, (lo - pad)..(hi + pad).min(100.0 + pad))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc("test accuracy (%)")
                .label_style((FONT_FAMILY, 14))
                .axis_desc_style((FONT_FAMILY, 15))
                .x_labels(x_labels)
                .x_label_formatter(&epoch_label)
                .y_label_formatter(&|v| format!("{v:.1}"))
                .draw()?;
            for r in &group.runs {
                let colour = plan_colour(plans, &r.plan());
                chart
                    .draw_series(LineSeries::new(series(r), colour.stroke_width(2)))?
                    .label(legend_label(group, r))
                    .legend(line_mark(colour));
            }
            draw_legend(&mut chart, SeriesLabelPosition::LowerRight, 14)?;
        }
        Curve::TrainLoss => {
            // log10 of the loss on a linear axis, labelled with the loss:
            // plotters' own log axis crowds its labels within a decade.
            let (l0, l1) = (lo.log10(), hi.log10());
            let pad = ((l1 - l0) * 0.05).max(0.02);
            let mut chart = builder.build_cartesian_2d(x_range, (l0 - pad)..(l1 + pad))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc("training loss (nats, log scale)")
                .label_style((FONT_FAMILY, 14))
                .axis_desc_style((FONT_FAMILY, 15))
                .x_labels(x_labels)
                .x_label_formatter(&epoch_label)
                .y_label_formatter(&|v| format!("{:.3}", 10f64.powf(*v)))
                .draw()?;
            for r in &group.runs {
                let colour = plan_colour(plans, &r.plan());
                let points = series(r).into_iter().map(|(x, y)| (x, y.log10()));
                chart
                    .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                    .label(legend_label(group, r))
                    .legend(line_mark(colour));
            }
            draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 14)?;
        }
    }
    Ok(())
}

/// One bar per run of `group` (final test accuracy, percent), diverged
/// runs as an empty slot named so, and the `fp32` reference as a dashed
/// horizontal line. The axis starts near the lowest bar so that gaps of a
/// tenth of a point stay visible.
fn draw_bars<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    group: &Group,
    plans: &[String],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let n = group.runs.len();
    let accs: Vec<Option<f64>> = group
        .runs
        .iter()
        .map(|r| r.final_accuracy().map(|a| a as f64 * 100.0))
        .collect();
    let reference = group.reference().map(|(a, _)| a * 100.0);
    let (lo, hi) =
        finite_range(accs.iter().flatten().copied().chain(reference)).unwrap_or((0.0, 100.0));
    let pad = ((hi - lo) * 0.5).max(0.2);
    let (y0, y1) = ((lo - pad).max(0.0), (hi + pad * 0.6).min(100.0));
    let labels: Vec<String> = group.runs.iter().map(|r| legend_label(group, r)).collect();
    let caption = format!("{} on {}", group.net, group.dataset);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .caption(&caption, (FONT_FAMILY, 18))
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..n as f64, y0..y1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .x_desc("multiplier plan")
        .y_desc("final test accuracy (%)")
        .label_style((FONT_FAMILY, 14))
        .axis_desc_style((FONT_FAMILY, 15))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    chart.draw_series(
        group
            .runs
            .iter()
            .zip(&accs)
            .enumerate()
            .filter_map(|(i, (r, acc))| {
                let acc = (*acc)?;
                let x = i as f64;
                Some(Rectangle::new(
                    [(x + 0.15, y0), (x + 0.85, acc.max(y0))],
                    plan_colour(plans, &r.plan()).filled(),
                ))
            }),
    )?;
    // Value above each bar, name below the axis.
    chart.draw_series(accs.iter().enumerate().filter_map(|(i, acc)| {
        let acc = (*acc)?;
        Some(Text::new(
            format!("{acc:.2}"),
            (i as f64 + 0.5, acc.max(y0)),
            centred_text(14, VPos::Bottom),
        ))
    }))?;
    draw_slot_labels(area, &chart, labels, y0, 13)?;
    if let Some(base) = reference {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, base), (n as f64, base)],
                8,
                5,
                BLACK.stroke_width(2),
            ))?
            .label(format!("{REFERENCE_PLAN} reference ({base:.2})"))
            .legend(line_mark(BLACK));
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 14)?;
    }
    Ok(())
}
