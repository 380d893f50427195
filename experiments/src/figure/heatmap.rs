//! PNG heat map of a table's signed relative error over `(ta, tb)`.
//!
//! The grid is [`amsim::metrics::error_grid`]: the relative error
//! `(L - x) / x` of each entry, `x` the exact product of the truncated
//! operands, shown as the mean over square blocks of entries for tables
//! wider than [`MAX_CELLS`] per axis, so the image stays small while
//! systematic error patterns stay visible. Colours are diverging and
//! symmetric around zero ([`diverging_colour`]), scaled to the largest
//! magnitude. [`write_int_heatmap`] draws the same for an 8-bit integer
//! table: the signed error `p - a b` over the operand values.

use std::path::Path;

use amsim::int_metrics::int_error_grid;
use amsim::metrics::{error_grid, ErrorGrid};
use amsim::{IntLut, Lut};
use plotters::prelude::*;

use super::{write_png_with, FONT_FAMILY};
use crate::error::Result;

/// Most cells drawn per axis.
pub const MAX_CELLS: usize = 512;

/// Pixel size of the image.
pub const SIZE: (u32, u32) = (960, 820);

/// Diverging colour of `v` in `[-1, 1]`: blue (negative), white, red
/// (positive), the end points of ColorBrewer's RdBu scheme.
fn diverging_colour(v: f64) -> RGBColor {
    let t = v.clamp(-1.0, 1.0);
    let (end, t) = if t < 0.0 {
        ((33.0, 102.0, 172.0), -t)
    } else {
        ((178.0, 24.0, 43.0), t)
    };
    let mix = |e: f64| (255.0 + (e - 255.0) * t).round() as u8;
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}

/// Draw the heat map of `lut` into a PNG at `path`, written whole.
pub fn write_heatmap(lut: &Lut, path: &Path) -> Result<()> {
    let grid = error_grid(lut, MAX_CELLS);
    let n = (1u32 << lut.bits()) as f64;
    let title = if grid.block > 1 {
        format!(
            "{} at {} bits: relative error (mean of {}x{} blocks)",
            lut.model_name(),
            lut.bits(),
            grid.block,
            grid.block
        )
    } else {
        format!(
            "{} at {} bits: relative error",
            lut.model_name(),
            lut.bits()
        )
    };
    let axes = Axes {
        range: (0.0, n),
        x_desc: "tb (second operand fraction index)",
        y_desc: "ta (first operand fraction index)",
        caption: "rel. error",
        percent: true,
    };
    draw_grid(path, &title, &grid, &axes)
}

/// Draw the heat map of an integer table's error `p - a b` into a PNG.
pub fn write_int_heatmap(lut: &IntLut, path: &Path) -> Result<()> {
    let grid = int_error_grid(lut);
    let lo = *lut.operand_range().start() as f64;
    let title = format!(
        "{} ({}): error p - a b",
        lut.model_name(),
        amsim::int_lut::kind_name(lut.signed())
    );
    let axes = Axes {
        range: (lo, lo + 256.0),
        x_desc: "b (second operand)",
        y_desc: "a (first operand)",
        caption: "error",
        percent: false,
    };
    draw_grid(path, &title, &grid, &axes)
}

/// The heat map of a 12-bit integer table: errors `p - a b` as the means
/// of 16 x 16 blocks of pairs ([`amsim::int_metrics::wide_error_grid`]).
/// A 16-bit model has no table to draw: an error.
pub fn write_wide_int_heatmap(mul: &amsim::WideIntMul, path: &Path) -> Result<()> {
    let grid = amsim::int_metrics::wide_error_grid(mul).ok_or_else(|| {
        crate::error::ExperimentError::Other(format!(
            "{}: a 16-bit model has no table to draw (2^32 pairs); --heatmap takes 8- and 12-bit models",
            mul.model_name()
        ))
    })?;
    let lo = *mul.operand_range().start() as f64;
    let title = format!(
        "{} ({}): mean error p - a b of 16 x 16 blocks",
        mul.model_name(),
        amsim::int_wide::kind_name(mul.bits(), mul.signed())
    );
    let axes = Axes {
        range: (lo, lo + (1u32 << mul.bits()) as f64),
        x_desc: "b (second operand)",
        y_desc: "a (first operand)",
        caption: "error",
        percent: false,
    };
    draw_grid(path, &title, &grid, &axes)
}

/// What the axes of a heat map show.
struct Axes {
    /// Operand range of both axes (each cell one `block` of it).
    range: (f64, f64),
    x_desc: &'static str,
    y_desc: &'static str,
    /// Title of the colour bar.
    caption: &'static str,
    /// Colour bar labels in percent (relative errors) or plain numbers.
    percent: bool,
}

/// Draw `grid` (row major, rows the first operand) into a PNG at `path`.
fn draw_grid(path: &Path, title: &str, grid: &ErrorGrid, axes: &Axes) -> Result<()> {
    let scale = grid
        .values
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-9);
    let (lo, hi) = axes.range;
    write_png_with(path, SIZE, |root| {
        root.fill(&WHITE)?;
        let root = root.titled(title, (FONT_FAMILY, 26))?;
        let (left, right) = root.split_horizontally(810);

        let mut chart = ChartBuilder::on(&left)
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(65)
            .build_cartesian_2d(lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(axes.x_desc)
            .y_desc(axes.y_desc)
            .label_style((FONT_FAMILY, 16))
            .axis_desc_style((FONT_FAMILY, 18))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        let step = grid.block as f64;
        chart.draw_series((0..grid.cells * grid.cells).map(|k| {
            let (i, j) = ((k / grid.cells) as f64, (k % grid.cells) as f64);
            Rectangle::new(
                [
                    (lo + j * step, lo + i * step),
                    (lo + (j + 1.0) * step, lo + (i + 1.0) * step),
                ],
                diverging_colour(grid.values[k] / scale).filled(),
            )
        }))?;

        let mut bar = ChartBuilder::on(&right)
            .margin_top(15)
            .margin_bottom(65)
            .margin_right(10)
            .y_label_area_size(90)
            .caption(axes.caption, (FONT_FAMILY, 16))
            .build_cartesian_2d(0.0..1.0, -scale..scale)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .label_style((FONT_FAMILY, 15))
            .y_label_formatter(&|v| {
                if axes.percent {
                    format!("{:+.2}%", v * 100.0)
                } else {
                    format!("{v:+.0}")
                }
            })
            .draw()?;
        let steps = 256;
        bar.draw_series((0..steps).map(|s| {
            let lo = -scale + 2.0 * scale * s as f64 / steps as f64;
            let hi = -scale + 2.0 * scale * (s + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, lo), (1.0, hi)],
                diverging_colour((lo + hi) / (2.0 * scale)).filled(),
            )
        }))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mitchell(a: f32, b: f32, _bits: u32) -> f32 {
        let s = (a - 1.0) + (b - 1.0);
        if s < 1.0 {
            1.0 + s
        } else {
            2.0 * s
        }
    }

    fn exact(a: f32, b: f32, _bits: u32) -> f32 {
        a * b
    }

    #[test]
    fn colours_are_white_at_zero_and_diverge_by_sign() {
        assert_eq!(diverging_colour(0.0), RGBColor(255, 255, 255));
        assert_eq!(diverging_colour(-1.0), RGBColor(33, 102, 172));
        assert_eq!(diverging_colour(1.0), RGBColor(178, 24, 43));
        assert_eq!(diverging_colour(7.0), diverging_colour(1.0));
    }

    #[test]
    fn heatmap_is_a_png_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mit.png");
        write_heatmap(&Lut::build("mitchell", mitchell, 6).unwrap(), &path).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((width, height), SIZE);
        let other = dir.path().join("exact.png");
        write_heatmap(&Lut::build("exact", exact, 6).unwrap(), &other).unwrap();
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn int_heatmap_is_a_png_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trunc.png");
        let lut = IntLut::build("floor16", true, |a, b| (a * b) & !15).unwrap();
        write_int_heatmap(&lut, &path).unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
        assert_eq!((width, height), SIZE);
    }
}
