//! Every figure of the project, and what they share: the embedded font,
//! the colours, and the PNG writer that leaves either the whole image or
//! none.
//!
//! - [`heatmap`]: a table's relative error over its index pairs
//!   (`approxtrain characterize --heatmap`, `approxtrain plot`);
//! - [`training`]: test accuracy, training loss and final accuracy of
//!   classifier runs (`approxtrain plot`);
//! - [`validation_loss`]: validation loss of language-model runs
//!   (`approxtrain plot`);
//! - [`histogram`]: operand histograms of one layer (`approxtrain stats`);
//! - [`sensitivity`]: harm per layer or item (`approxtrain sensitivity`).
//!
//! Text is drawn with DejaVu Sans, embedded in the binary
//! (`assets/DejaVuSans.ttf`, Bitstream Vera license in
//! `assets/DejaVuSans-LICENSE.txt`), so no system font library is needed.
//! A plan keeps its colour ([`plan_colour`]) in every figure of a folder.
//! PNGs are drawn into a temporary `.png` next to the target (plotters
//! picks the encoder by the file's extension) and renamed over it once
//! complete; SVGs are strings written with [`crate::atomic`].

pub mod heatmap;
pub mod histogram;
pub mod sensitivity;
pub mod training;
pub mod validation_loss;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::atomic::write_atomic;
use crate::error::{ExperimentError, Result};

/// The embedded font (DejaVu Sans).
static FONT_TTF: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Family name under which the embedded font is registered.
pub(crate) const FONT_FAMILY: &str = "sans-serif";

/// Register the embedded font as plotters' `sans-serif` family (once per
/// process). Anything that draws text with plotters' `ab_glyph` backend,
/// which has no system fonts, calls this first.
pub(crate) fn register_embedded_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font checked by a test; a failure
        // here would only mean text is not drawn, which the test catches.
        let _ = register_font(FONT_FAMILY, FontStyle::Normal, FONT_TTF);
    });
}

/// The colour of `plan`: its place among all plans of the figure.
pub(crate) fn plan_colour(plans: &[String], plan: &str) -> RGBColor {
    let k = plans.iter().position(|p| p == plan).unwrap_or(0);
    let c = Palette99::pick(k).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// The legend mark of a line series: a 20-pixel stroke of `colour`.
pub(crate) fn line_mark(colour: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
}

/// Draw the legend of `chart`'s labelled series at `position`: a
/// translucent white box with a black border, text of `size` pixels.
pub(crate) fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
    size: u32,
) -> DrawResult
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT_FAMILY, size))
        .draw()?;
    Ok(())
}

/// Text of `size` pixels, centred on its anchor horizontally and placed
/// at `v` of it vertically.
pub(crate) fn centred_text(size: u32, v: VPos) -> TextStyle<'static> {
    TextStyle::from((FONT_FAMILY, size).into_font()).pos(Pos::new(HPos::Center, v))
}

/// Write `labels` under the slots of a bar chart (label `i` centred under
/// `x = i + 0.5`), below the x axis at `y0`, in `size`-pixel text. They go
/// in pixels of the panel `area`: outside the chart's coordinate range
/// plotters would clamp them onto the axis.
pub(crate) fn draw_slot_labels<DB>(
    area: &DrawingArea<DB, Shift>,
    chart: &ChartContext<DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    labels: impl IntoIterator<Item = String>,
    y0: f64,
    size: u32,
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let base = area.get_base_pixel();
    for (i, label) in labels.into_iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, y0));
        area.draw(&Text::new(
            label,
            (px - base.0, py - base.1 + 6),
            centred_text(size, VPos::Top),
        ))?;
    }
    Ok(())
}

/// What drawing on a plotters backend returns.
pub(crate) type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw_error(path: &Path, e: impl std::fmt::Display) -> ExperimentError {
    ExperimentError::Other(format!("{}: cannot draw figure: {e}", path.display()))
}

/// Draw a PNG at `path` with `draw`, written whole: plotters encodes into a
/// temporary `.png` next to it (it picks the encoder by the extension),
/// renamed over `path` once complete. The temporary name carries the
/// process id and a counter, so concurrent writers never share one.
pub(crate) fn write_png_with(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> DrawResult,
) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    register_embedded_font();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let k = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{stem}-{}-{k}.tmp.png", std::process::id()));
    let drawn = {
        let area = BitMapBackend::new(&tmp, size).into_drawing_area();
        draw(&area).and_then(|_| area.present().map_err(|e| e.into()))
    };
    if let Err(e) = drawn {
        let _ = std::fs::remove_file(&tmp);
        return Err(draw_error(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ExperimentError::io(path, e)
    })
}

/// Draw an SVG at `path` with `draw`, written whole.
pub(crate) fn write_svg_with(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> Result<()> {
    register_embedded_font();
    let mut svg = String::new();
    draw(SVGBackend::with_string(&mut svg, size).into_drawing_area())
        .map_err(|e| draw_error(path, e))?;
    write_atomic(path, svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(register_font("experiments-test-font", FontStyle::Normal, FONT_TTF).is_ok());
    }

    #[test]
    fn a_failed_drawing_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        let err = write_png_with(&path, (10, 10), |_| Err("no data".into())).unwrap_err();
        assert!(err.to_string().contains("broken.png"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
