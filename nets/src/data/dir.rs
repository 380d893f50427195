//! Where datasets are: the data directory and its per-dataset folders.
//!
//! The data directory is `--data-dir` if given, else `$APPROXTRAIN_DATA`,
//! else `./data`; dataset NAME lives in its folder there (`mnist/`,
//! `fashion-mnist/`, `cifar-10/`, `shakespeare/`, the layout of the shared
//! datasets). When no data directory is given at all (neither flag nor
//! environment) and `./data` has no MNIST, the subset embedded in the
//! library (see `data-subset/mnist`) stands in, with a notice for the user;
//! a data directory that is given must hold the dataset.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::cifar::{cifar10_files, load_cifar10_exact, CIFAR10_BATCH_RECORDS, CIFAR_ANY_SIZE_ENV};
use super::idx::{find_idx_file, idx_stems, load_mnist_like_from_bytes, load_mnist_like_with};
use super::subset::{shipped_file, SHIPPED_MNIST_DIR, SHIPPED_MNIST_FILES, SHIPPED_MNIST_TRAIN};
use super::text::{find_text_file, load_text, CharCorpus};
use super::{DataError, Dataset, ImageDataset, Normalization, Result, Split};

/// Environment variable naming the data directory.
pub const DATA_ENV: &str = "APPROXTRAIN_DATA";

/// The data directory from `--data-dir`, else `$APPROXTRAIN_DATA`, else
/// `./data`.
pub fn data_root(data_dir: Option<&Path>) -> PathBuf {
    data_root_from(data_dir, std::env::var_os(DATA_ENV).as_deref())
}

/// [`data_root`] with the environment value passed in (testable without
/// touching the process environment). An empty value counts as unset.
pub fn data_root_from(data_dir: Option<&Path>, env: Option<&OsStr>) -> PathBuf {
    match (data_dir, env) {
        (Some(d), _) => d.to_path_buf(),
        (None, Some(e)) if !e.is_empty() => PathBuf::from(e),
        _ => PathBuf::from("data"),
    }
}

/// Where a dataset's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetSource {
    /// A folder holding the dataset's files.
    Directory(PathBuf),
    /// The MNIST subset embedded in the library.
    ShippedMnistSubset,
}

/// A dataset found by [`resolve_dataset_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetLocation {
    /// Which dataset.
    pub dataset: Dataset,
    /// Where its files are.
    pub source: DatasetSource,
    /// A line for the user when the location is a fallback (the shipped
    /// MNIST subset), `None` otherwise. The library does not print it.
    pub notice: Option<String>,
}

/// The first file `dataset` needs that `dir` lacks, or `None` when all are
/// there (IDX files may be gzipped or not).
pub fn missing_file(dataset: Dataset, dir: &Path) -> Option<String> {
    match dataset {
        Dataset::Mnist | Dataset::FashionMnist => [Split::Train, Split::Test]
            .into_iter()
            .flat_map(|s| {
                let (i, l) = idx_stems(s);
                [i, l]
            })
            .find(|stem| find_idx_file(dir, stem).is_none())
            .map(|stem| format!("{stem}.gz")),
        Dataset::Cifar10 => [Split::Train, Split::Test]
            .into_iter()
            .flat_map(|s| cifar10_files(s).iter())
            .find(|f| !dir.join(f).is_file())
            .map(|f| f.to_string()),
        Dataset::Shakespeare => find_text_file(dir)
            .err()
            .map(|_| super::text::SHAKESPEARE_FILES[0].to_string()),
    }
}

/// Finds dataset `name` under the data directory ([`data_root`]).
///
/// When it is absent or incomplete there, it is a
/// [`DataError::DatasetNotFound`] naming the missing file and saying how to
/// get it; only MNIST without any data directory given (no `--data-dir`, no
/// `$APPROXTRAIN_DATA`) falls back to the shipped subset, with a
/// [`DatasetLocation::notice`] saying so.
pub fn resolve_dataset_dir(data_dir: Option<&Path>, name: &str) -> Result<DatasetLocation> {
    resolve_in(
        data_dir,
        std::env::var_os(DATA_ENV).as_deref(),
        Dataset::parse(name)?,
    )
}

/// [`resolve_dataset_dir`] with the environment value passed in.
pub fn resolve_in(
    data_dir: Option<&Path>,
    env: Option<&OsStr>,
    dataset: Dataset,
) -> Result<DatasetLocation> {
    let root = data_root_from(data_dir, env);
    let dir = root.join(dataset.folder());
    let Some(missing) = missing_file(dataset, &dir) else {
        return Ok(DatasetLocation {
            dataset,
            source: DatasetSource::Directory(dir),
            notice: None,
        });
    };
    let given = data_dir.is_some() || env.is_some_and(|e| !e.is_empty());
    if dataset == Dataset::Mnist && !given {
        let mut location = DatasetLocation::shipped_mnist_subset();
        location.notice = Some(format!(
            "using the {}-image MNIST subset shipped in {SHIPPED_MNIST_DIR} (no --data-dir \
             given, not found at {}); for the full set run `approxtrain data fetch mnist` or \
             pass --data-dir",
            thousands(SHIPPED_MNIST_TRAIN),
            dir.display()
        ));
        return Ok(location);
    }
    Err(DataError::DatasetNotFound {
        name: dataset.name(),
        folder: dataset.folder(),
        dir,
        missing,
    })
}

/// `6000` -> `6,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).unwrap_or_default())
        .collect();
    groups.join(",")
}

/// One file of a dataset, for recording what a run trained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetFile {
    /// A file on disk.
    Path(PathBuf),
    /// A file embedded in the library (the shipped MNIST subset): its
    /// name, as `data-subset/mnist/NAME`, and bytes.
    Embedded(String, &'static [u8]),
}

impl DatasetLocation {
    /// The MNIST subset embedded in the library, without a notice.
    pub fn shipped_mnist_subset() -> DatasetLocation {
        DatasetLocation {
            dataset: Dataset::Mnist,
            source: DatasetSource::ShippedMnistSubset,
            notice: None,
        }
    }

    /// The files the dataset is read from, in a fixed order.
    pub fn files(&self) -> Vec<DatasetFile> {
        let splits = [Split::Train, Split::Test];
        match (&self.source, self.dataset) {
            (DatasetSource::ShippedMnistSubset, _) => SHIPPED_MNIST_FILES
                .iter()
                .map(|(name, bytes)| {
                    DatasetFile::Embedded(format!("{SHIPPED_MNIST_DIR}/{name}"), bytes)
                })
                .collect(),
            (DatasetSource::Directory(dir), Dataset::Mnist | Dataset::FashionMnist) => splits
                .into_iter()
                .flat_map(|s| {
                    let (i, l) = idx_stems(s);
                    [i, l]
                })
                .filter_map(|stem| find_idx_file(dir, stem))
                .map(DatasetFile::Path)
                .collect(),
            (DatasetSource::Directory(dir), Dataset::Cifar10) => splits
                .into_iter()
                .flat_map(|s| cifar10_files(s).iter())
                .map(|f| DatasetFile::Path(dir.join(f)))
                .collect(),
            (DatasetSource::Directory(dir), Dataset::Shakespeare) => find_text_file(dir)
                .map(DatasetFile::Path)
                .into_iter()
                .collect(),
        }
    }

    /// Where the files are, in words (a folder, or the shipped subset).
    pub fn describe(&self) -> String {
        match &self.source {
            DatasetSource::Directory(d) => d.display().to_string(),
            DatasetSource::ShippedMnistSubset => {
                format!("{SHIPPED_MNIST_DIR} (the subset embedded in approxtrain)")
            }
        }
    }

    /// Loads a split of an image dataset with its default normalisation
    /// ([`Dataset::default_normalization`]).
    pub fn load_images(&self, split: Split, limit: Option<usize>) -> Result<ImageDataset> {
        self.load_images_with(split, limit, &self.dataset.default_normalization())
    }

    /// Loads a split of an image dataset normalised with `norm`.
    pub fn load_images_with(
        &self,
        split: Split,
        limit: Option<usize>,
        norm: &Normalization,
    ) -> Result<ImageDataset> {
        match (&self.source, self.dataset) {
            (DatasetSource::ShippedMnistSubset, _) => {
                let (image_stem, label_stem) = idx_stems(split);
                let image_name = format!("{image_stem}.gz");
                let label_name = format!("{label_stem}.gz");
                let image_path = Path::new(SHIPPED_MNIST_DIR).join(&image_name);
                let label_path = Path::new(SHIPPED_MNIST_DIR).join(&label_name);
                load_mnist_like_from_bytes(
                    (shipped_file(&image_name), &image_path),
                    (shipped_file(&label_name), &label_path),
                    limit,
                    norm,
                )
            }
            (DatasetSource::Directory(dir), Dataset::Mnist | Dataset::FashionMnist) => {
                load_mnist_like_with(dir, split, limit, norm)
            }
            (DatasetSource::Directory(dir), Dataset::Cifar10) => {
                let any_size = std::env::var_os(CIFAR_ANY_SIZE_ENV).is_some_and(|v| !v.is_empty());
                let exact = (!any_size).then_some(CIFAR10_BATCH_RECORDS);
                load_cifar10_exact(dir, split, limit, norm, exact)
            }
            (DatasetSource::Directory(_), Dataset::Shakespeare) => Err(DataError::WrongKind {
                name: self.dataset.name(),
                holds: "text",
                asked: "images",
            }),
        }
    }

    /// Loads a text dataset as a character-level corpus.
    pub fn load_text(&self) -> Result<CharCorpus> {
        match (&self.source, self.dataset) {
            (DatasetSource::Directory(dir), Dataset::Shakespeare) => {
                load_text(&find_text_file(dir)?)
            }
            _ => Err(DataError::WrongKind {
                name: self.dataset.name(),
                holds: "images",
                asked: "text",
            }),
        }
    }
}
