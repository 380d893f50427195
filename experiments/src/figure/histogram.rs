//! Operand histograms of one layer (`approxtrain stats`,
//! [`crate::opstats`]) as a PNG.

use std::path::Path;

use plotters::prelude::*;

use super::{draw_legend, write_png_with, FONT_FAMILY};
use crate::error::Result;
use crate::opstats::{role_name, LayerOperandStats, OperandHistogram};

/// Histograms as a PNG: one row per role, exponent histogram on the left
/// and table-index histogram on the right, both operands in each panel as
/// shares of their elements.
pub fn write_histogram_png(stats: &LayerOperandStats, path: &Path) -> Result<()> {
    let colours = [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xd6, 0x27, 0x28)];
    let rows = stats.roles.len();
    write_png_with(path, (1280, 360 * rows as u32 + 40), |root| {
        root.fill(&WHITE)?;
        let (title, body) = root.split_vertically(40);
        title.titled(
            &format!(
                "layer {}: operands of a batch of {} ({} indices)",
                stats.layer, stats.batch, stats.multiplier
            ),
            (FONT_FAMILY, 20),
        )?;
        let panels = body.split_evenly((rows, 2));
        for (r, role) in stats.roles.iter().enumerate() {
            let ops = [&role.first, &role.second];
            // Exponent panel over the unbiased exponents that occur.
            let used: Vec<i32> = (1..255)
                .filter(|&e| ops.iter().any(|h| h.exponents[e] > 0))
                .map(|e| e as i32 - 127)
                .collect();
            let (e0, e1) = (
                used.first().copied().unwrap_or(-1) - 1,
                used.last().copied().unwrap_or(1) + 1,
            );
            let share = |h: &OperandHistogram, c: u64| c as f64 / h.elements.max(1) as f64;
            let ymax = ops
                .iter()
                .flat_map(|h| h.exponents[1..255].iter().map(move |&c| share(h, c)))
                .fold(0.01f64, f64::max);
            let mut chart = ChartBuilder::on(&panels[2 * r])
                .margin(10)
                .caption(
                    format!("{}: exponents", role_name(role.role)),
                    (FONT_FAMILY, 16),
                )
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(e0 as f64..e1 as f64 + 1.0, 0.0..ymax * 1.1)?;
            chart
                .configure_mesh()
                .x_desc("unbiased exponent (value = 1.f x 2^e)")
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_desc("share of elements")
                .label_style((FONT_FAMILY, 12))
                .axis_desc_style((FONT_FAMILY, 13))
                .draw()?;
            for (k, h) in ops.iter().enumerate() {
                let col = colours[k];
                let off = 0.1 + 0.4 * k as f64;
                chart
                    .draw_series(used.iter().map(|&e| {
                        let c = h.exponents[(e + 127) as usize];
                        let x = e as f64 + off;
                        Rectangle::new([(x, 0.0), (x + 0.4, share(h, c))], col.filled())
                    }))?
                    .label(format!(
                        "{} ({:.1}% zero or subnormal)",
                        h.operand,
                        100.0 * share(h, h.zero_or_subnormal())
                    ))
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], col.filled())
                    });
            }
            draw_legend(&mut chart, SeriesLabelPosition::UpperLeft, 12)?;
            // Index panel.
            let n = 1u32 << stats.bits;
            let ishare = |h: &OperandHistogram, c: u64| {
                c as f64 / h.indices.iter().sum::<u64>().max(1) as f64
            };
            let imax = ops
                .iter()
                .flat_map(|h| h.indices.iter().map(move |&c| ishare(h, c)))
                .fold(1.0 / n as f64, f64::max);
            let mut chart = ChartBuilder::on(&panels[2 * r + 1])
                .margin(10)
                .caption(
                    format!(
                        "{}: table indices (top {} fraction bits)",
                        role_name(role.role),
                        stats.bits
                    ),
                    (FONT_FAMILY, 16),
                )
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(0.0..n as f64, 0.0..imax * 1.1)?;
            chart
                .configure_mesh()
                .x_desc("table index")
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_desc("share of normal elements")
                .label_style((FONT_FAMILY, 12))
                .axis_desc_style((FONT_FAMILY, 13))
                .draw()?;
            for (k, h) in ops.iter().enumerate() {
                let col = colours[k];
                chart
                    .draw_series(LineSeries::new(
                        h.indices
                            .iter()
                            .enumerate()
                            .map(|(i, &c)| (i as f64 + 0.5, ishare(h, c))),
                        col.stroke_width(2),
                    ))?
                    .label(h.operand)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2))
                    });
            }
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.0, 1.0 / n as f64), (n as f64, 1.0 / n as f64)],
                    6,
                    4,
                    BLACK.stroke_width(1),
                ))?
                .label("uniform")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK));
            draw_legend(&mut chart, SeriesLabelPosition::UpperRight, 12)?;
        }
        Ok(())
    })
}
