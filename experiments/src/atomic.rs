//! Whole-file writes: a temp file in the same directory, then a rename, so
//! that a reader (or a run interrupted half-way) only ever sees the old or
//! the new content, never a half-written file. A rename within one directory
//! is atomic on POSIX file systems and replaces the target on Windows too.

use std::path::Path;

use crate::error::Result;

/// Write `bytes` to `path` whole (temp file, flushed to disk, rename); the
/// one implementation lives with the checkpoints in `nets`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(nets::checkpoint::write_atomically(path, bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
