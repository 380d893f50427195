//! The harm per layer or item of a sensitivity analysis
//! (`approxtrain sensitivity`, [`crate::sensitivity`]) as a PNG.

use std::path::Path;

use plotters::prelude::*;

use super::{draw_legend, draw_slot_labels, line_mark, write_png_with, FONT_FAMILY};
use crate::error::Result;
use crate::sensitivity::{Harm, SensitivityReport};

/// Bar chart of the harm per item against the baseline (accuracy drop in
/// points, or validation-loss rise in nats/char): only this item
/// approximate, and all but this item.
pub fn write_sensitivity_png(report: &SensitivityReport, path: &Path) -> Result<()> {
    let n = report.layers.len();
    let drops: Vec<(f64, f64)> = report
        .layers
        .iter()
        .map(|l| {
            (
                report.harm_of(&l.only_this),
                report.harm_of(&l.all_but_this),
            )
        })
        .collect();
    let hi = drops
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .chain([report.budget, report.harm_of(&report.all_approx)])
        .fold(
            // The smallest top of the axis, so that an all-zero chart
            // still has a scale.
            match report.harm {
                Harm::AccuracyDrop => 0.1f64,
                Harm::LossRise => 0.005,
            },
            f64::max,
        );
    let lo = drops
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .fold(0.0f64, f64::min);
    let item_word = match report.harm {
        Harm::AccuracyDrop => "layer",
        Harm::LossRise => "item",
    };
    let prec = match report.harm {
        Harm::AccuracyDrop => 2,
        Harm::LossRise => 3,
    };
    let width = 160 + 110 * n as u32;
    write_png_with(path, (width.max(640), 480), |area| {
        area.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(area)
            .margin(14)
            .caption(
                format!(
                    "{} per {}, forward products on {}",
                    match report.harm {
                        Harm::AccuracyDrop => "accuracy drop",
                        Harm::LossRise => "validation loss rise",
                    },
                    item_word,
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
            .x_desc(format!("{item_word} (sorted by least harm)"))
            .y_desc(report.harm.axis())
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 15))
            .y_label_formatter(&|v| format!("{v:.prec$}"))
            .draw()?;
        let only = RGBColor(0x1f, 0x77, 0xb4);
        let allbut = RGBColor(0xff, 0x7f, 0x0e);
        chart
            .draw_series(drops.iter().enumerate().map(|(i, (a, _))| {
                let x = i as f64;
                Rectangle::new([(x + 0.1, 0.0), (x + 0.48, *a)], only.filled())
            }))?
            .label(format!("only this {item_word} approximate"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], only.filled()));
        chart
            .draw_series(drops.iter().enumerate().map(|(i, (_, b))| {
                let x = i as f64;
                Rectangle::new([(x + 0.52, 0.0), (x + 0.9, *b)], allbut.filled())
            }))?
            .label(format!("all but this {item_word} approximate"))
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], allbut.filled()));
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, report.budget), (n as f64, report.budget)],
                8,
                5,
                BLACK.stroke_width(2),
            ))?
            .label(format!(
                "{} {} {}",
                report.harm.flag(),
                report.budget,
                report.harm.unit()
            ))
            .legend(line_mark(BLACK));
        let items = report.layers.iter().map(|l| l.layer.clone());
        draw_slot_labels(area, &chart, items, lo * 1.1, 14)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 14)?;
        Ok(())
    })
}
