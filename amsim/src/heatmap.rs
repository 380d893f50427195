//! PNG heat map of a table's signed relative error over `(ta, tb)`.
//!
//! The relative error of entry `L[ta][tb]` is `(L - x) / x` with `x` the
//! exact product of the truncated operands ([`crate::metrics`]). Colours are
//! diverging and symmetric around zero: blue below, white at zero, red above,
//! scaled to the largest magnitude. Tables wider than [`MAX_CELLS`] per axis
//! are shown as the mean over square blocks of entries, so the image stays
//! small while systematic error patterns stay visible.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary
//! (`assets/DejaVuSans.ttf`, Bitstream Vera license in
//! `assets/DejaVuSans-LICENSE.txt`), so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::metrics::relative_errors;
use crate::{AmsimError, Lut, Result};

/// Most cells drawn per axis.
pub const MAX_CELLS: usize = 512;

/// The embedded font (DejaVu Sans).
pub static FONT_TTF: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Family name under which the embedded font is registered.
pub const FONT_FAMILY: &str = "sans-serif";

static REGISTER: Once = Once::new();

/// Register the embedded font as plotters' `sans-serif` family (once per
/// process). Anything that draws text with plotters' `ab_glyph` backend,
/// which has no system fonts, calls this first.
pub fn register_embedded_font() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font checked by a test; a failure
        // here would only mean text is not drawn, which the test catches.
        let _ = register_font(FONT_FAMILY, FontStyle::Normal, FONT_TTF);
    });
}

/// A relative-error grid, possibly block-averaged.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorGrid {
    /// Cells per axis.
    pub cells: usize,
    /// Table entries per cell along each axis.
    pub block: usize,
    /// Mean relative error of each cell, row (`ta`) major.
    pub values: Vec<f64>,
}

/// The signed relative errors of `lut` on at most `max_cells` cells per
/// axis (a power of two), each the mean of its `block x block` entries.
pub fn error_grid(lut: &Lut, max_cells: usize) -> ErrorGrid {
    let n = 1usize << lut.bits();
    let mut cells = n;
    while cells > max_cells.max(1) {
        cells /= 2;
    }
    let block = n / cells;
    let rel = relative_errors(lut);
    let mut values = vec![0.0; cells * cells];
    for ta in 0..n {
        for tb in 0..n {
            values[(ta / block) * cells + tb / block] += rel[ta * n + tb];
        }
    }
    let per_cell = (block * block) as f64;
    values.iter_mut().for_each(|v| *v /= per_cell);
    ErrorGrid {
        cells,
        block,
        values,
    }
}

/// Diverging colour of `v` in `[-1, 1]`: blue (negative), white, red
/// (positive), the end points of ColorBrewer's RdBu scheme.
fn colour(v: f64) -> RGBColor {
    let t = v.clamp(-1.0, 1.0);
    let (end, t) = if t < 0.0 {
        ((33.0, 102.0, 172.0), -t)
    } else {
        ((178.0, 24.0, 43.0), t)
    };
    let mix = |e: f64| (255.0 + (e - 255.0) * t).round() as u8;
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> AmsimError {
    AmsimError::Other(format!("{}: cannot draw heat map: {e}", path.display()))
}

/// Draw the heat map of `lut` into a PNG at `path` (written whole: drawn
/// into a temporary file next to it, then renamed over `path`).
pub fn write_heatmap(lut: &Lut, path: &Path) -> Result<()> {
    register_embedded_font();
    let grid = error_grid(lut, MAX_CELLS);
    let scale = grid
        .values
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-9);
    let n = (1u32 << lut.bits()) as f64;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    // plotters picks the encoder from the extension, so the temporary file
    // ends in .png; the counter separates concurrent writers in a process.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let k = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".heatmap-{}-{k}.png", std::process::id()));
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
    let drawn = (|| -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(&tmp, (960, 820)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(&title, (FONT_FAMILY, 26))?;
        let (left, right) = root.split_horizontally(810);

        let mut chart = ChartBuilder::on(&left)
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(65)
            .build_cartesian_2d(0.0..n, 0.0..n)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("tb (second operand fraction index)")
            .y_desc("ta (first operand fraction index)")
            .label_style((FONT_FAMILY, 16))
            .axis_desc_style((FONT_FAMILY, 18))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        let step = grid.block as f64;
        chart.draw_series((0..grid.cells * grid.cells).map(|k| {
            let (i, j) = ((k / grid.cells) as f64, (k % grid.cells) as f64);
            Rectangle::new(
                [(j * step, i * step), ((j + 1.0) * step, (i + 1.0) * step)],
                colour(grid.values[k] / scale).filled(),
            )
        }))?;

        let mut bar = ChartBuilder::on(&right)
            .margin_top(15)
            .margin_bottom(65)
            .margin_right(10)
            .y_label_area_size(90)
            .caption("rel. error", (FONT_FAMILY, 16))
            .build_cartesian_2d(0.0..1.0, -scale..scale)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .label_style((FONT_FAMILY, 15))
            .y_label_formatter(&|v| format!("{:+.2}%", v * 100.0))
            .draw()?;
        let steps = 256;
        bar.draw_series((0..steps).map(|s| {
            let lo = -scale + 2.0 * scale * s as f64 / steps as f64;
            let hi = -scale + 2.0 * scale * (s + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, lo), (1.0, hi)],
                colour((lo + hi) / (2.0 * scale)).filled(),
            )
        }))?;
        root.present()?;
        Ok(())
    })();
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(draw_err(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        AmsimError::Io {
            path: path.to_path_buf(),
            error: e,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::tests::{exact, mitchell};

    #[test]
    fn grid_is_block_mean_of_relative_errors() {
        let lut = Lut::build("mitchell", mitchell, 4).unwrap();
        let full = error_grid(&lut, 512);
        assert_eq!((full.cells, full.block), (16, 1));
        assert_eq!(full.values, relative_errors(&lut));
        let coarse = error_grid(&lut, 5);
        assert_eq!((coarse.cells, coarse.block), (4, 4));
        let v = &full.values;
        let expect: f64 = (0..4)
            .flat_map(|i| (4..8).map(move |j| v[i * 16 + j]))
            .sum::<f64>()
            / 16.0;
        assert!((coarse.values[1] - expect).abs() < 1e-15);
    }

    #[test]
    fn colours_are_white_at_zero_and_diverge_by_sign() {
        assert_eq!(colour(0.0), RGBColor(255, 255, 255));
        assert_eq!(colour(-1.0), RGBColor(33, 102, 172));
        assert_eq!(colour(1.0), RGBColor(178, 24, 43));
        assert_eq!(colour(7.0), colour(1.0));
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
        assert_eq!((width, height), (960, 820));
        let other = dir.path().join("exact.png");
        write_heatmap(&Lut::build("exact", exact, 6).unwrap(), &other).unwrap();
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn text_renders_with_the_embedded_font() {
        register_embedded_font();
        let (w, h) = (200u32, 60u32);
        let mut buf = vec![255u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
            root.draw(&Text::new("ta 0.5%", (5, 10), (FONT_FAMILY, 30)))
                .unwrap();
            root.present().unwrap();
        }
        let inked = buf.chunks(3).filter(|p| p[0] < 128).count();
        // A 30 px string of 7 glyphs covers hundreds of pixels.
        assert!(inked > 200, "only {inked} dark pixels: text not drawn");
    }

    #[test]
    fn embedded_font_parses() {
        assert!(register_font("amsim-test-font", FontStyle::Normal, FONT_TTF).is_ok());
    }
}
