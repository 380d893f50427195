//! Datasets: MNIST / Fashion-MNIST (IDX), CIFAR-10 (binary batches), text.
//!
//! A data directory holds one folder per dataset (`mnist/`,
//! `fashion-mnist/`, `cifar-10/`, `shakespeare/`); [`dir`] finds it
//! (`--data-dir`, else `APPROXTRAIN_DATA`, else `./data`) and falls back to
//! the MNIST subset embedded in the library when the full MNIST is absent.
//!
//! Every loader validates what it reads (magic numbers, dimensions, sizes,
//! label ranges) and reports a problem as a [`DataError`] naming the file,
//! what is wrong with it and what to do next.

pub mod augment;
pub mod cifar;
pub mod dir;
pub mod idx;
mod subset;
pub mod text;

use std::path::PathBuf;

pub use augment::Augmentation;
pub use cifar::load_cifar10;
pub use dir::{
    data_root, resolve_dataset_dir, DatasetFile, DatasetLocation, DatasetSource, DATA_ENV,
};
pub use idx::{load_mnist_like, load_mnist_like_with};
pub use subset::{SHIPPED_MNIST_DIR, SHIPPED_MNIST_TEST, SHIPPED_MNIST_TRAIN};
pub use text::{load_text, CharCorpus};

/// A dataset problem, naming the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{}: cannot read: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not a separate source, so that a
        /// printed error chain says it once).
        error: std::io::Error,
    },
    /// A file the dataset needs is absent.
    #[error("{}: file not found; {hint}", path.display())]
    Missing {
        /// The file that was looked for (the first accepted name).
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },
    /// The file starts like gzip but does not decompress.
    #[error("{}: corrupt gzip stream ({error}); delete the file and fetch it again", path.display())]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        error: std::io::Error,
    },
    /// An IDX file whose magic number is not the one expected.
    #[error(
        "{}: magic number {found:#010x}, expected {expected:#010x} for an IDX {what} file; \
         is this the right file?",
        path.display()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes, big-endian.
        found: u32,
        /// The magic the loader wanted.
        expected: u32,
        /// `images` or `labels`.
        what: &'static str,
    },
    /// A header whose dimensions are not the ones this dataset has.
    #[error("{}: {reason}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },
    /// Fewer bytes than the header (or the record size) promises.
    #[error(
        "{}: truncated: {found} bytes of data where {expected} are needed; \
         delete the file and fetch it again",
        path.display()
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header promises.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// A file of fixed-size records whose last record is cut short.
    #[error(
        "{}: truncated: record {index} has {found} of its {record} bytes (the file's {len} bytes \
         are not a whole number of records); delete the file and fetch it again",
        path.display()
    )]
    IncompleteRecord {
        /// The file.
        path: PathBuf,
        /// The incomplete record, from 0.
        index: usize,
        /// Bytes of it present.
        found: usize,
        /// Bytes of a record.
        record: usize,
        /// Bytes in the file.
        len: usize,
    },
    /// A CIFAR-10 batch that is whole records but not the 10,000 of a
    /// standard batch (cut at a record boundary).
    #[error(
        "{}: holds {records} records; a CIFAR-10 batch holds exactly {expected}, so the file is \
         cut short or not a CIFAR-10 batch: fetch it again with `approxtrain data fetch cifar10` \
         (for CIFAR-format files of other sizes set {any_size_env}=1)",
        path.display()
    )]
    WrongRecordCount {
        /// The file.
        path: PathBuf,
        /// Records in it.
        records: usize,
        /// Records of a standard batch.
        expected: usize,
        /// The variable that accepts other sizes.
        any_size_env: &'static str,
    },
    /// More bytes than the header promises: not the file it claims to be.
    #[error(
        "{}: {found} bytes of data where the header promises {expected}; \
         the file is corrupt, fetch it again",
        path.display()
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Bytes the header promises.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The image and label files disagree on the number of examples.
    #[error(
        "{} holds {images} images but {} holds {labels} labels; \
         the two files come from different sets, fetch them again",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// Images it holds.
        images: usize,
        /// The label file.
        labels_path: PathBuf,
        /// Labels it holds.
        labels: usize,
    },
    /// A label outside `0..num_classes`.
    #[error(
        "{}: label {label} of record {index} is out of range (the dataset has {num_classes} \
         classes); the file is corrupt, fetch it again",
        path.display()
    )]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Record number, from 0.
        index: usize,
        /// The label found.
        label: u8,
        /// Number of classes.
        num_classes: usize,
    },
    /// A text corpus that is not UTF-8.
    #[error("{}: not UTF-8 text (invalid byte at offset {offset}); save it as UTF-8", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// A text corpus too short to split into training and validation text.
    #[error(
        "{}: {chars} characters is too short for a 90/10 train/validation split \
         (need at least 10)",
        path.display()
    )]
    TextTooShort {
        /// The file.
        path: PathBuf,
        /// Characters it holds.
        chars: usize,
    },
    /// A dataset name this crate does not know.
    #[error(
        "unknown dataset `{name}`; expected one of mnist, fashion-mnist, cifar10, shakespeare"
    )]
    UnknownDataset {
        /// The name given.
        name: String,
    },
    /// The dataset's folder is absent or incomplete and there is no fallback.
    #[error(
        "dataset {name} not found in {} ({missing} missing); run `approxtrain data fetch {name}` \
         or pass --data-dir (or set APPROXTRAIN_DATA) to a folder that holds {folder}/",
        dir.display()
    )]
    DatasetNotFound {
        /// The dataset's command-line name.
        name: &'static str,
        /// Its folder name in a data directory.
        folder: &'static str,
        /// The folder that was searched.
        dir: PathBuf,
        /// The first file missing there.
        missing: String,
    },
    /// Asked for images from a text dataset or text from an image dataset.
    #[error("dataset {name} holds {holds}, not {asked}")]
    WrongKind {
        /// The dataset's name.
        name: &'static str,
        /// What it holds.
        holds: &'static str,
        /// What the caller asked for.
        asked: &'static str,
    },
}

/// Shorthand for results of this module.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Which part of a dataset to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training set.
    Train,
    /// The test set (MNIST's `t10k-*`, CIFAR-10's `test_batch.bin`).
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// The datasets this crate knows, with their folder in a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    /// MNIST handwritten digits, 28x28 grey, 10 classes.
    Mnist,
    /// Fashion-MNIST (Zalando), 28x28 grey, 10 classes.
    FashionMnist,
    /// CIFAR-10, 32x32 RGB, 10 classes.
    Cifar10,
    /// Shakespeare plain text for character-level language models.
    Shakespeare,
}

impl Dataset {
    /// All datasets, in the order the CLI lists them.
    pub const ALL: [Dataset; 4] = [
        Dataset::Mnist,
        Dataset::FashionMnist,
        Dataset::Cifar10,
        Dataset::Shakespeare,
    ];

    /// Parses a command-line name. Accepts the folder names too
    /// (`cifar-10`) and `_` for `-`, case-insensitively.
    pub fn parse(name: &str) -> Result<Dataset> {
        let n = name.trim().to_ascii_lowercase().replace('_', "-");
        match n.as_str() {
            "mnist" => Ok(Dataset::Mnist),
            "fashion-mnist" | "fashionmnist" | "fashion" => Ok(Dataset::FashionMnist),
            "cifar10" | "cifar-10" => Ok(Dataset::Cifar10),
            "shakespeare" => Ok(Dataset::Shakespeare),
            _ => Err(DataError::UnknownDataset {
                name: name.to_string(),
            }),
        }
    }

    /// The name used on the command line (`approxtrain data fetch NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
            Dataset::Cifar10 => "cifar10",
            Dataset::Shakespeare => "shakespeare",
        }
    }

    /// The dataset's folder inside a data directory.
    pub fn folder(self) -> &'static str {
        match self {
            Dataset::Mnist => "mnist",
            Dataset::FashionMnist => "fashion-mnist",
            Dataset::Cifar10 => "cifar-10",
            Dataset::Shakespeare => "shakespeare",
        }
    }

    /// Whether the dataset holds labelled images (else plain text).
    pub fn is_image(self) -> bool {
        !matches!(self, Dataset::Shakespeare)
    }

    /// The normalisation the loaders apply by default; see
    /// [`Normalization`] for the constants and their sources. Text has none.
    pub fn default_normalization(self) -> Normalization {
        match self {
            Dataset::Mnist => Normalization::mnist(),
            Dataset::FashionMnist => Normalization::fashion_mnist(),
            Dataset::Cifar10 => Normalization::cifar10(),
            Dataset::Shakespeare => Normalization::UnitRange,
        }
    }

    /// Class names in label order, for image datasets.
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            Dataset::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            Dataset::FashionMnist => &[
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            Dataset::Cifar10 => &cifar::CIFAR10_CLASSES,
            Dataset::Shakespeare => &[],
        }
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How 8-bit pixels become the f32 inputs of a network.
///
/// Every loader first maps a pixel p to p / 255 in [0, 1]. `MeanStd` then
/// standardises channel c as (p / 255 - mean[c]) / std[c], which centres the
/// inputs and is what the usual reference training recipes do; `UnitRange`
/// stops at [0, 1]. The loaders default to `MeanStd` with the dataset's own
/// training-set statistics ([`Dataset::default_normalization`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Normalization {
    /// p / 255, in [0, 1].
    UnitRange,
    /// (p / 255 - mean[c]) / std[c] per channel c.
    MeanStd {
        /// Per-channel mean of p / 255 over the training set.
        mean: Vec<f32>,
        /// Per-channel standard deviation of p / 255 over the training set.
        std: Vec<f32>,
    },
}

impl Normalization {
    /// MNIST training-set mean 0.1307 and standard deviation 0.3081 of
    /// p / 255: the constants of PyTorch's MNIST example
    /// (`transforms.Normalize((0.1307,), (0.3081,))`), which the full
    /// training set reproduces to four digits.
    pub fn mnist() -> Self {
        Normalization::MeanStd {
            mean: vec![0.1307],
            std: vec![0.3081],
        }
    }

    /// Fashion-MNIST training-set mean 0.2860 and standard deviation 0.3530
    /// of p / 255, computed over the 60,000 training images.
    pub fn fashion_mnist() -> Self {
        Normalization::MeanStd {
            mean: vec![0.2860],
            std: vec![0.3530],
        }
    }

    /// CIFAR-10 per-channel (R, G, B) training-set statistics of p / 255:
    /// mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616), as
    /// computed on the original release. The JPEG re-encoding in the shared
    /// datasets gives (0.4913, 0.4821, 0.4465) and (0.2452, 0.2428, 0.2606),
    /// under 1% away, so one set of constants serves both.
    pub fn cifar10() -> Self {
        Normalization::MeanStd {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// Converts `pixels` laid out `[N, C, H*W]` (plane size `plane`) into
    /// f32 inputs. `MeanStd` must hold `channels` values (or one, shared).
    pub(crate) fn apply(&self, pixels: &[u8], channels: usize, plane: usize) -> Vec<f32> {
        match self {
            Normalization::UnitRange => pixels.iter().map(|&p| p as f32 / 255.0).collect(),
            Normalization::MeanStd { mean, std } => {
                let pick = |v: &[f32], c: usize| if v.len() == 1 { v[0] } else { v[c] };
                let mut out = Vec::with_capacity(pixels.len());
                for (i, chunk) in pixels.chunks(plane).enumerate() {
                    let c = i % channels;
                    let (m, s) = (pick(mean, c), pick(std, c));
                    out.extend(chunk.iter().map(|&p| (p as f32 / 255.0 - m) / s));
                }
                out
            }
        }
    }

    /// Checks that a `MeanStd` has one value, or one per channel, and no
    /// zero standard deviation.
    pub(crate) fn check(&self, channels: usize, path: &std::path::Path) -> Result<()> {
        if let Normalization::MeanStd { mean, std } = self {
            let ok_len = |n: usize| n == 1 || n == channels;
            if !ok_len(mean.len()) || !ok_len(std.len()) || std.iter().any(|&s| s <= 0.0) {
                return Err(DataError::BadHeader {
                    path: path.to_path_buf(),
                    reason: format!(
                        "normalisation mean {mean:?} std {std:?} does not fit {channels}-channel \
                         images; give one value or one per channel, with positive standard \
                         deviations"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// An image-classification set held in memory.
#[derive(Debug, Clone)]
pub struct ImageDataset {
    /// Images as `[N, C, H, W]` f32, already normalised.
    pub images: Vec<f32>,
    /// Labels, one per image, each `< num_classes`.
    pub labels: Vec<u8>,
    /// Number of images N.
    pub len: usize,
    /// Channels C.
    pub channels: usize,
    /// Height H.
    pub height: usize,
    /// Width W.
    pub width: usize,
    /// Number of classes.
    pub num_classes: usize,
}

impl ImageDataset {
    /// Elements of one image (`C * H * W`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Image `i` as a slice.
    pub fn image(&self, i: usize) -> &[f32] {
        let l = self.image_len();
        &self.images[i * l..(i + 1) * l]
    }

    /// Number of images of each class, indexed by label.
    pub fn label_histogram(&self) -> Vec<usize> {
        let mut h = vec![0; self.num_classes];
        for &l in &self.labels {
            h[l as usize] += 1;
        }
        h
    }
}

/// Reads a whole file, mapping "not found" to [`DataError::Missing`] with
/// `hint`.
pub(crate) fn read_file(path: &std::path::Path, hint: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::Missing {
                path: path.to_path_buf(),
                hint: hint.to_string(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                error: source,
            }
        }
    })
}
