//! Whole-file writes: a temp file in the same directory, then a rename, so
//! that a reader (or a run interrupted half-way) only ever sees the old or
//! the new content, never a half-written file. A rename within one directory
//! is atomic on POSIX file systems and replaces the target on Windows too.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{ExperimentError, Result};

/// The temporary name used for `path` while it is written.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp{}", std::process::id()));
    path.with_file_name(name)
}

/// Write `bytes` to `path` whole: temp file, flush to disk, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(ExperimentError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        write_atomic(&p, b"first").unwrap();
        write_atomic(&p, b"second, longer").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second, longer");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.csv")]);
    }

    #[test]
    fn write_atomic_into_missing_directory_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("a.csv");
        let e = write_atomic(&p, b"x").unwrap_err().to_string();
        assert!(e.contains("a.csv"), "{e}");
    }
}
