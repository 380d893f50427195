//! `approxtrain data fetch`: download a dataset's public files into
//! `DATA_DIR/FOLDER/` (the layout of [`nets::data::dir`]).
//!
//! Every file is downloaded to a hidden `.NAME.part` file next to its
//! destination, checked (md5 where known, then parsed by the loader's own
//! validation), and only then renamed into place, so an interrupted or
//! failed download never leaves a partial file under the real name. Files
//! already present and valid are skipped.
//!
//! Sources (the defaults; `--base-url` replaces the URL prefix):
//! - MNIST: the PyTorch mirror <https://ossci-datasets.s3.amazonaws.com/mnist/>
//!   of LeCun et al.'s files.
//! - Fashion-MNIST: Zalando's bucket
//!   <http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/>.
//! - CIFAR-10: the authors' binary archive
//!   <https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz> (md5 from
//!   <https://www.cs.toronto.edu/~kriz/cifar.html>), extracted flat.
//! - Shakespeare: `input.txt` of Karpathy's char-rnn ("tiny Shakespeare",
//!   plays of Shakespeare, public-domain texts), from
//!   <https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/>.
//!   No md5 is published; the file is checked to be UTF-8 text.
//!
//! For the IDX datasets the md5 is that of the *uncompressed* file: it does
//! not depend on how a mirror compressed it, and it is the canonical one
//! (MNIST) or upstream's (Fashion-MNIST).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nets::data::cifar::{check_cifar10_batch, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES};
use nets::data::idx::{maybe_gunzip, parse_idx, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC};
use nets::data::{CharCorpus, DataError, Dataset};

/// A download problem, naming the URL or file and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered with an error status.
    #[error(
        "{url}: the server answered HTTP {status}; check the URL (--base-url) or try again later"
    )]
    Http {
        /// The URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// No answer: DNS, connection, TLS or a dropped transfer.
    #[error("{url}: download failed ({message}); check the network connection or --base-url")]
    Transport {
        /// The URL.
        url: String,
        /// What the HTTP client reported.
        message: String,
    },
    /// A local file could not be written or read.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not a separate source, so that a
        /// printed error chain says it once).
        error: std::io::Error,
    },
    /// The download's md5 is not the published one.
    #[error(
        "{url}: md5 {found} does not match the published {expected}; the download is corrupt or \
         the mirror serves a different copy. Nothing was written; try again (or pass --skip-md5 \
         for a mirror that serves another valid copy)"
    )]
    Md5 {
        /// The URL.
        url: String,
        /// The published md5.
        expected: String,
        /// The md5 of what arrived.
        found: String,
    },
    /// The download does not parse as the dataset's format.
    #[error("{url}: the downloaded file is not valid ({error}). Nothing was written; try again")]
    Invalid {
        /// The URL.
        url: String,
        /// What the loader's validation found.
        error: DataError,
    },
    /// The CIFAR-10 archive cannot be read or lacks a batch.
    #[error("{url}: {message}. Nothing more was written; try again")]
    Archive {
        /// The URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = FetchError> = std::result::Result<T, E>;

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// URL prefix replacing the dataset's default mirror (a file's URL is
    /// `BASE/NAME`).
    pub base_url: Option<String>,
    /// Compare md5s with the published ones (on by default). Off, files are
    /// still parsed and validated.
    pub verify_md5: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            base_url: None,
            verify_md5: true,
        }
    }
}

/// What happened to one file, reported while fetching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// Already present and valid: not downloaded.
    Skipped {
        /// The file.
        path: PathBuf,
    },
    /// A download begins; `total` is the announced size.
    Started {
        /// The URL.
        url: String,
        /// Content-Length, when sent.
        total: Option<u64>,
    },
    /// Bytes received so far.
    Progress {
        /// Bytes so far.
        done: u64,
    },
    /// The download is complete and checked.
    Downloaded {
        /// The URL.
        url: String,
        /// Bytes received.
        bytes: u64,
    },
    /// A file is in place.
    Written {
        /// The file.
        path: PathBuf,
    },
}

/// What a fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchReport {
    /// The dataset's folder.
    pub dir: PathBuf,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files already present and valid.
    pub skipped: Vec<PathBuf>,
}

/// The default URL prefix of a dataset's files.
pub fn default_base_url(dataset: Dataset) -> &'static str {
    match dataset {
        Dataset::Mnist => "https://ossci-datasets.s3.amazonaws.com/mnist",
        Dataset::FashionMnist => "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        Dataset::Cifar10 => "https://www.cs.toronto.edu/~kriz",
        Dataset::Shakespeare => {
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare"
        }
    }
}

/// One IDX file to fetch: served name, magic, md5 of the uncompressed file.
struct IdxFile {
    name: &'static str,
    magic: u32,
    md5: &'static str,
}

/// MNIST's files; md5s of the uncompressed files, those of the canonical
/// release (also listed in the shared datasets' README).
const MNIST_FILES: [IdxFile; 4] = [
    IdxFile {
        name: "train-images-idx3-ubyte.gz",
        magic: IDX_IMAGES_MAGIC,
        md5: "6bbc9ace898e44ae57da46a324031adb",
    },
    IdxFile {
        name: "train-labels-idx1-ubyte.gz",
        magic: IDX_LABELS_MAGIC,
        md5: "a25bea736e30d166cdddb491f175f624",
    },
    IdxFile {
        name: "t10k-images-idx3-ubyte.gz",
        magic: IDX_IMAGES_MAGIC,
        md5: "2646ac647ad5339dbf082846283269ea",
    },
    IdxFile {
        name: "t10k-labels-idx1-ubyte.gz",
        magic: IDX_LABELS_MAGIC,
        md5: "27ae3e4e09519cfbb04c329615203637",
    },
];

/// Fashion-MNIST's files; md5s of the uncompressed upstream files.
const FASHION_MNIST_FILES: [IdxFile; 4] = [
    IdxFile {
        name: "train-images-idx3-ubyte.gz",
        magic: IDX_IMAGES_MAGIC,
        md5: "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    },
    IdxFile {
        name: "train-labels-idx1-ubyte.gz",
        magic: IDX_LABELS_MAGIC,
        md5: "9018921c3c673c538a1fc5bad174d6f9",
    },
    IdxFile {
        name: "t10k-images-idx3-ubyte.gz",
        magic: IDX_IMAGES_MAGIC,
        md5: "8181f5470baa50b63fa0f6fddb340f0a",
    },
    IdxFile {
        name: "t10k-labels-idx1-ubyte.gz",
        magic: IDX_LABELS_MAGIC,
        md5: "15d484375f8d13e6eb1aabb0c3f46965",
    },
];

/// The CIFAR-10 binary archive and its published md5.
const CIFAR10_ARCHIVE: &str = "cifar-10-binary.tar.gz";
const CIFAR10_ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The Shakespeare file fetched.
const SHAKESPEARE_FILE: &str = "input.txt";

/// Downloads `dataset` into `data_root/FOLDER/`, skipping files already
/// present and valid, reporting each step to `progress`.
pub fn fetch_dataset(
    dataset: Dataset,
    data_root: &Path,
    opts: &FetchOptions,
    progress: &mut dyn FnMut(FetchEvent),
) -> Result<FetchReport> {
    let dir = data_root.join(dataset.folder());
    std::fs::create_dir_all(&dir).map_err(|source| FetchError::Io {
        path: dir.clone(),
        error: source,
    })?;
    let base = opts
        .base_url
        .as_deref()
        .unwrap_or(default_base_url(dataset))
        .trim_end_matches('/')
        .to_string();
    let mut report = FetchReport {
        dir: dir.clone(),
        ..FetchReport::default()
    };
    let mut fetcher = Fetcher {
        agent: ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(60))
            .build(),
        progress,
    };
    match dataset {
        Dataset::Mnist | Dataset::FashionMnist => {
            let files = if dataset == Dataset::Mnist {
                &MNIST_FILES
            } else {
                &FASHION_MNIST_FILES
            };
            for f in files {
                let md5 = opts.verify_md5.then_some(f.md5);
                let check = |bytes: &[u8], path: &Path| check_idx(bytes, path, f.magic, md5);
                fetcher.fetch_file(&base, f.name, &dir, &check, &mut report)?;
            }
        }
        Dataset::Shakespeare => {
            let check = |bytes: &[u8], path: &Path| check_text(bytes, path);
            fetcher.fetch_file(&base, SHAKESPEARE_FILE, &dir, &check, &mut report)?;
        }
        Dataset::Cifar10 => fetcher.fetch_cifar10(&base, &dir, opts.verify_md5, &mut report)?,
    }
    Ok(report)
}

/// What a checked file turned out to be.
enum Check {
    Valid,
    Md5Mismatch { expected: String, found: String },
    Invalid(DataError),
}

/// An IDX file (gzipped or not) with the right magic and size, and the
/// given md5 of its uncompressed bytes.
fn check_idx(bytes: &[u8], path: &Path, magic: u32, md5: Option<&str>) -> Check {
    let raw = match maybe_gunzip(bytes.to_vec(), path) {
        Ok(r) => r,
        Err(e) => return Check::Invalid(e),
    };
    if let Some(expected) = md5 {
        let found = format!("{:x}", md5::compute(&raw));
        if found != expected {
            return Check::Md5Mismatch {
                expected: expected.to_string(),
                found,
            };
        }
    }
    match parse_idx(&raw, magic, path) {
        Ok(_) => Check::Valid,
        Err(e) => Check::Invalid(e),
    }
}

/// A UTF-8 text long enough for a train/validation split.
fn check_text(bytes: &[u8], path: &Path) -> Check {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Check::Invalid(DataError::NotUtf8 {
                path: path.to_path_buf(),
                offset: e.valid_up_to(),
            })
        }
    };
    match CharCorpus::from_text(text, path) {
        Ok(_) => Check::Valid,
        Err(e) => Check::Invalid(e),
    }
}

/// The HTTP agent and the progress sink.
struct Fetcher<'p> {
    agent: ureq::Agent,
    progress: &'p mut dyn FnMut(FetchEvent),
}

/// A `.NAME.part` file that is deleted when dropped unless kept by
/// [`Partial::persist`].
struct Partial {
    path: PathBuf,
    kept: bool,
}

impl Partial {
    fn new(dir: &Path, name: &str) -> Partial {
        Partial {
            path: dir.join(format!(".{name}.part")),
            kept: false,
        }
    }

    /// Renames the file to `dest`.
    fn persist(mut self, dest: &Path) -> Result<()> {
        std::fs::rename(&self.path, dest).map_err(|source| FetchError::Io {
            path: dest.to_path_buf(),
            error: source,
        })?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Fetcher<'_> {
    /// Downloads `base/name` into `dir/name` unless a valid copy is there;
    /// `check` decides validity of both the present copy and the download.
    fn fetch_file(
        &mut self,
        base: &str,
        name: &str,
        dir: &Path,
        check: &dyn Fn(&[u8], &Path) -> Check,
        report: &mut FetchReport,
    ) -> Result<()> {
        let dest = dir.join(name);
        if let Ok(bytes) = std::fs::read(&dest) {
            if matches!(check(&bytes, &dest), Check::Valid) {
                (self.progress)(FetchEvent::Skipped { path: dest.clone() });
                report.skipped.push(dest);
                return Ok(());
            }
        }
        let url = format!("{base}/{name}");
        let part = Partial::new(dir, name);
        self.download(&url, &part.path)?;
        let bytes = std::fs::read(&part.path).map_err(|source| FetchError::Io {
            path: part.path.clone(),
            error: source,
        })?;
        match check(&bytes, &dest) {
            Check::Valid => {}
            Check::Md5Mismatch { expected, found } => {
                return Err(FetchError::Md5 {
                    url,
                    expected,
                    found,
                })
            }
            Check::Invalid(source) => return Err(FetchError::Invalid { url, error: source }),
        }
        part.persist(&dest)?;
        (self.progress)(FetchEvent::Written { path: dest.clone() });
        report.written.push(dest);
        Ok(())
    }

    /// Streams `url` into `to`, reporting progress; returns the bytes read.
    fn download(&mut self, url: &str, to: &Path) -> Result<u64> {
        let response = self.agent.get(url).call().map_err(|e| match e {
            ureq::Error::Status(status, _) => FetchError::Http {
                url: url.to_string(),
                status,
            },
            // The transport error's Display repeats the URL; keep kind and
            // detail only.
            ureq::Error::Transport(t) => FetchError::Transport {
                url: url.to_string(),
                message: match t.message() {
                    Some(m) => format!("{}: {m}", t.kind()),
                    None => t.kind().to_string(),
                },
            },
        })?;
        let total = response
            .header("Content-Length")
            .and_then(|v| v.parse::<u64>().ok());
        (self.progress)(FetchEvent::Started {
            url: url.to_string(),
            total,
        });
        let io_err = |source| FetchError::Io {
            path: to.to_path_buf(),
            error: source,
        };
        let mut file = File::create(to).map_err(io_err)?;
        let mut reader = response.into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut done = 0u64;
        loop {
            let n = reader.read(&mut buf).map_err(|e| FetchError::Transport {
                url: url.to_string(),
                message: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(io_err)?;
            done += n as u64;
            (self.progress)(FetchEvent::Progress { done });
        }
        file.sync_all().map_err(io_err)?;
        if let Some(t) = total.filter(|&t| t != done) {
            return Err(FetchError::Transport {
                url: url.to_string(),
                message: format!("connection closed after {done} of {t} bytes"),
            });
        }
        (self.progress)(FetchEvent::Downloaded {
            url: url.to_string(),
            bytes: done,
        });
        Ok(done)
    }

    /// Downloads the CIFAR-10 archive (unless all six batches are present
    /// and valid), checks its md5 and extracts the batches and
    /// `batches.meta.txt` flat into `dir`, each checked before its rename.
    fn fetch_cifar10(
        &mut self,
        base: &str,
        dir: &Path,
        verify_md5: bool,
        report: &mut FetchReport,
    ) -> Result<()> {
        let batches: Vec<&str> = CIFAR10_TRAIN_FILES
            .iter()
            .copied()
            .chain([CIFAR10_TEST_FILE])
            .collect();
        let present = |name: &&str| {
            let path = dir.join(name);
            std::fs::read(&path)
                .ok()
                .is_some_and(|b| check_cifar10_batch(&b, &path).is_ok())
        };
        if batches.iter().all(present) {
            for name in &batches {
                let path = dir.join(name);
                (self.progress)(FetchEvent::Skipped { path: path.clone() });
                report.skipped.push(path);
            }
            return Ok(());
        }
        let url = format!("{base}/{CIFAR10_ARCHIVE}");
        let archive = Partial::new(dir, CIFAR10_ARCHIVE);
        self.download(&url, &archive.path)?;
        let io_err = |source| FetchError::Io {
            path: archive.path.clone(),
            error: source,
        };
        if verify_md5 {
            let mut ctx = md5::Context::new();
            let mut f = File::open(&archive.path).map_err(io_err)?;
            std::io::copy(&mut f, &mut ctx).map_err(io_err)?;
            let found = format!("{:x}", ctx.compute());
            if found != CIFAR10_ARCHIVE_MD5 {
                return Err(FetchError::Md5 {
                    url,
                    expected: CIFAR10_ARCHIVE_MD5.to_string(),
                    found,
                });
            }
        }
        let bad_archive = |e: std::io::Error| FetchError::Archive {
            url: url.clone(),
            message: format!("not a readable tar.gz archive ({e})"),
        };
        let file = File::open(&archive.path).map_err(io_err)?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut found = Vec::new();
        for entry in tar.entries().map_err(bad_archive)? {
            let mut entry = entry.map_err(bad_archive)?;
            // The archive holds `cifar-10-batches-bin/NAME`; only the file
            // name is used, so no entry can write outside `dir`.
            let name = match entry.path().ok().and_then(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .map(|n| n.to_string())
            }) {
                Some(n) if batches.contains(&n.as_str()) || n == "batches.meta.txt" => n,
                _ => continue,
            };
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(bad_archive)?;
            let dest = dir.join(&name);
            if name != "batches.meta.txt" {
                check_cifar10_batch(&bytes, &dest).map_err(|source| FetchError::Invalid {
                    url: url.clone(),
                    error: source,
                })?;
            }
            let part = Partial::new(dir, &name);
            std::fs::write(&part.path, &bytes).map_err(|source| FetchError::Io {
                path: part.path.clone(),
                error: source,
            })?;
            part.persist(&dest)?;
            (self.progress)(FetchEvent::Written { path: dest.clone() });
            report.written.push(dest);
            found.push(name);
        }
        if let Some(missing) = batches.iter().find(|b| !found.iter().any(|f| f == *b)) {
            return Err(FetchError::Archive {
                url,
                message: format!("the archive lacks {missing}"),
            });
        }
        Ok(())
    }
}
