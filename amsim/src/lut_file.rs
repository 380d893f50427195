//! LUT files: the native format and ApproxTrain's `.bin` tables.

use std::path::Path;

use crate::{AmsimError, Lut, Result};

/// Read a table from a file in either format (chosen by content).
pub fn read(path: &Path) -> Result<Lut> {
    Err(AmsimError::BadLutFile {
        path: path.to_path_buf(),
        reason: "LUT file reading is not available yet".into(),
    })
}
