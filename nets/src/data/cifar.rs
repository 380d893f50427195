//! CIFAR-10 binary batches.
//!
//! Format (Krizhevsky, "Learning Multiple Layers of Features from Tiny
//! Images", 2009; <https://www.cs.toronto.edu/~kriz/cifar.html>): each file
//! is a sequence of 3073-byte records, one label byte (0-9) then 3072 pixel
//! bytes: the 1024 red, then green, then blue values of a 32x32 image, each
//! plane row-major. That is already the `[C, H, W]` layout of a record.

use std::path::Path;

use super::{read_file, DataError, ImageDataset, Normalization, Result, Split};

/// Bytes of one record: a label and a 3x32x32 image.
pub const CIFAR10_RECORD: usize = 1 + CIFAR10_PIXELS;
/// Pixel bytes of one image.
pub const CIFAR10_PIXELS: usize = 3 * 32 * 32;
/// The five training batches, in order.
pub const CIFAR10_TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
/// The test batch.
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";
/// Class names in label order (as in `batches.meta.txt`).
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The batch files of a split, in reading order.
pub fn cifar10_files(split: Split) -> &'static [&'static str] {
    match split {
        Split::Train => &CIFAR10_TRAIN_FILES,
        Split::Test => std::slice::from_ref(&CIFAR10_TEST_FILE),
    }
}

/// Checks one batch file's bytes: a positive whole number of records and
/// every label `< 10`. Returns the number of records. A size that is not a
/// multiple of [`CIFAR10_RECORD`] names the incomplete record.
pub fn check_cifar10_batch(bytes: &[u8], path: &Path) -> Result<usize> {
    let whole = bytes.len() / CIFAR10_RECORD;
    if bytes.is_empty() || whole * CIFAR10_RECORD != bytes.len() {
        return Err(DataError::IncompleteRecord {
            path: path.to_path_buf(),
            index: whole,
            found: bytes.len() - whole * CIFAR10_RECORD,
            record: CIFAR10_RECORD,
            len: bytes.len(),
        });
    }
    for (index, record) in bytes.chunks_exact(CIFAR10_RECORD).enumerate() {
        if record[0] as usize >= CIFAR10_CLASSES.len() {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label: record[0],
                num_classes: CIFAR10_CLASSES.len(),
            });
        }
    }
    Ok(bytes.len() / CIFAR10_RECORD)
}

/// Records of each standard batch file (five training batches and the test
/// batch of 10,000 images each).
pub const CIFAR10_BATCH_RECORDS: usize = 10_000;

/// Environment variable that lets [`super::DatasetLocation`] read
/// CIFAR-format batches of any whole number of records (files a user made);
/// without it a batch must hold [`CIFAR10_BATCH_RECORDS`].
pub const CIFAR_ANY_SIZE_ENV: &str = "APPROXTRAIN_CIFAR_ANY_SIZE";

/// [`load_cifar10`], each batch read also checked to hold exactly
/// `records` records when given.
pub fn load_cifar10_exact(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
    norm: &Normalization,
    records: Option<usize>,
) -> Result<ImageDataset> {
    if let Some(expected) = records {
        for name in cifar10_files(split) {
            let path = dir.join(name);
            let len = std::fs::metadata(&path)
                .map(|m| m.len() as usize)
                .unwrap_or(0);
            // Whole records only; a cut record is named by the loader.
            if len % CIFAR10_RECORD == 0 && len / CIFAR10_RECORD != expected && len > 0 {
                return Err(DataError::WrongRecordCount {
                    path,
                    records: len / CIFAR10_RECORD,
                    expected,
                    any_size_env: CIFAR_ANY_SIZE_ENV,
                });
            }
        }
    }
    load_cifar10(dir, split, limit, norm)
}

/// Loads a split of CIFAR-10 from `dir` (which holds `data_batch_1.bin` ..
/// `data_batch_5.bin` and `test_batch.bin`): `[N, 3, 32, 32]` images
/// normalised with `norm` (the loaders' default is
/// [`Normalization::cifar10`]), labels `< 10`. With `limit`, keeps the first
/// `limit` records and reads no batch beyond them.
pub fn load_cifar10(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
    norm: &Normalization,
) -> Result<ImageDataset> {
    let hint = "fetch it with `approxtrain data fetch cifar10` or pass --data-dir";
    let want = limit.unwrap_or(usize::MAX);
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for name in cifar10_files(split) {
        if labels.len() >= want {
            break;
        }
        let path = dir.join(name);
        let bytes = read_file(&path, hint)?;
        let records = check_cifar10_batch(&bytes, &path)?;
        if labels.is_empty() {
            norm.check(3, &path)?;
        }
        for record in bytes
            .chunks_exact(CIFAR10_RECORD)
            .take(records.min(want - labels.len()))
        {
            labels.push(record[0]);
            pixels.extend_from_slice(&record[1..]);
        }
    }
    Ok(ImageDataset {
        images: norm.apply(&pixels, 3, 32 * 32),
        len: labels.len(),
        labels,
        channels: 3,
        height: 32,
        width: 32,
        num_classes: CIFAR10_CLASSES.len(),
    })
}
