//! What defines a run besides its spec: the bytes of the files it reads
//! (dataset files, `lut:` tables) and the code that trains it. Recorded in
//! `run.toml` as `[run.identity]` when a run starts, and compared when it
//! is resumed, so that a run never continues silently on other data,
//! another table or other code ([`RunIdentity::changes`]).

use std::io::Read;
use std::path::Path;

use nets::data::{DatasetFile, DatasetLocation};
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result};

/// The code version recorded with every run.
pub const CODE_VERSION: &str = concat!("approxtrain ", env!("CARGO_PKG_VERSION"));

/// One file a run reads: where it was (an absolute path, or the name of a
/// file embedded in the library), its size and its MD5 (as a content
/// fingerprint, not for security).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIdentity {
    /// Absolute path, or `data-subset/mnist/NAME (embedded)`.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// MD5 of the content, 32 hex digits.
    pub md5: String,
}

impl FileIdentity {
    /// The identity of the file at `path` (made absolute), read in chunks.
    pub fn of_file(path: &Path) -> Result<FileIdentity> {
        let abs = std::path::absolute(path).map_err(|e| ExperimentError::io(path, e))?;
        let mut file = std::fs::File::open(&abs).map_err(|e| ExperimentError::io(&abs, e))?;
        let mut ctx = md5::Context::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| ExperimentError::io(&abs, e))?;
            if n == 0 {
                break;
            }
            ctx.consume(&buf[..n]);
            bytes += n as u64;
        }
        Ok(FileIdentity {
            path: abs.display().to_string(),
            bytes,
            md5: format!("{:x}", ctx.compute()),
        })
    }

    /// The identity of bytes embedded in the library, named `name`.
    pub fn of_embedded(name: &str, bytes: &[u8]) -> FileIdentity {
        FileIdentity {
            path: format!("{name} (embedded)"),
            bytes: bytes.len() as u64,
            md5: format!("{:x}", md5::compute(bytes)),
        }
    }

    /// The file's name without its folder, which is what is compared: the
    /// same files moved to another folder are the same data.
    fn name(&self) -> &str {
        let p = self.path.trim_end_matches(" (embedded)");
        p.rsplit(['/', '\\']).next().unwrap_or(p)
    }

    fn describe(&self) -> String {
        format!("{} ({} bytes, md5 {})", self.path, self.bytes, &self.md5)
    }
}

/// What defines a run besides its spec (the `[run.identity]` table of
/// `run.toml`; absent in runs recorded before it existed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunIdentity {
    /// [`CODE_VERSION`] of the code that trained it.
    pub code_version: String,
    /// The dataset files, in reading order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<FileIdentity>,
    /// The `lut:` tables of its plans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<FileIdentity>,
}

impl RunIdentity {
    /// The identity of a run on the files `data` and the `lut:` tables
    /// `tables` ([`crate::spec::RunSpec::table_identities`]), with this code.
    pub fn new(data: Vec<FileIdentity>, tables: Vec<FileIdentity>) -> RunIdentity {
        RunIdentity {
            code_version: CODE_VERSION.to_string(),
            data,
            tables,
        }
    }

    /// What changed from `self` (recorded) to `now`, one item each, naming
    /// the file or value; empty when nothing did.
    pub fn changes(&self, now: &RunIdentity) -> Vec<String> {
        let mut out = Vec::new();
        if self.code_version != now.code_version {
            out.push(format!(
                "code version: {} -> {}",
                self.code_version, now.code_version
            ));
        }
        file_changes("data file", &self.data, &now.data, &mut out);
        file_changes("table", &self.tables, &now.tables, &mut out);
        out
    }
}

fn file_changes(kind: &str, was: &[FileIdentity], now: &[FileIdentity], out: &mut Vec<String>) {
    for w in was {
        match now.iter().find(|n| n.name() == w.name()) {
            Some(n) if n.bytes == w.bytes && n.md5 == w.md5 => {}
            Some(n) => out.push(format!(
                "{kind} {}: {} -> {}",
                w.name(),
                w.describe(),
                n.describe()
            )),
            None => out.push(format!("{kind} {}: {} -> (none)", w.name(), w.describe())),
        }
    }
    for n in now {
        if !was.iter().any(|w| w.name() == n.name()) {
            out.push(format!("{kind} {}: (none) -> {}", n.name(), n.describe()));
        }
    }
}

/// The identities of the files of a dataset.
pub fn data_identities(location: &DatasetLocation) -> Result<Vec<FileIdentity>> {
    location
        .files()
        .iter()
        .map(|f| match f {
            DatasetFile::Path(p) => FileIdentity::of_file(p),
            DatasetFile::Embedded(name, bytes) => Ok(FileIdentity::of_embedded(name, bytes)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, bytes: u64, md5: &str) -> FileIdentity {
        FileIdentity {
            path: path.into(),
            bytes,
            md5: md5.into(),
        }
    }

    #[test]
    fn changes_name_the_changed_file_and_ignore_a_moved_folder() {
        let was = RunIdentity {
            code_version: CODE_VERSION.into(),
            data: vec![
                file("/a/mnist/x.gz", 10, "aa"),
                file("/a/mnist/y.gz", 5, "bb"),
            ],
            tables: vec![file("/t/m.lut", 7, "cc")],
        };
        let mut now = was.clone();
        for f in &mut now.data {
            f.path = f.path.replace("/a/", "/b/");
        }
        assert!(was.changes(&now).is_empty());
        now.data[1].md5 = "bd".into();
        now.tables[0].md5 = "cd".into();
        now.code_version = "approxtrain 9".into();
        let c = was.changes(&now);
        assert_eq!(c.len(), 3, "{c:?}");
        assert!(c[0].starts_with("code version"), "{c:?}");
        assert!(
            c[1].contains("data file y.gz") && c[1].contains("md5 bd"),
            "{c:?}"
        );
        assert!(c[2].contains("table m.lut"), "{c:?}");
    }
}
