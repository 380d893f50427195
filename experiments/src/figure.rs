//! What every figure shares: the colour of a plan, the same in every
//! figure of a folder, and the PNG writer that leaves either the whole
//! image or none (plotters encodes by the file's extension, so it draws
//! into a temporary `.png` next to the target, renamed over it once
//! complete). SVG figures are strings written with [`crate::atomic`].

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{ExperimentError, Result};

/// The colour of `plan`: its place among all plans of the figure.
pub(crate) fn plan_colour(plans: &[String], plan: &str) -> RGBColor {
    let k = plans.iter().position(|p| p == plan).unwrap_or(0);
    let c = Palette99::pick(k).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

/// Draw a PNG at `path` with `draw`, written whole: plotters encodes into a
/// temporary `.png` next to it (it picks the encoder by the extension),
/// renamed over `path` once complete.
pub(crate) fn write_png_with(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(
        &DrawingArea<BitMapBackend, Shift>,
    ) -> std::result::Result<(), Box<dyn std::error::Error>>,
) -> Result<()> {
    amsim::heatmap::register_embedded_font();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
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
