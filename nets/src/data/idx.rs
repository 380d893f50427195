//! IDX files (MNIST, Fashion-MNIST), gzipped or not.
//!
//! Format (LeCun et al., <http://yann.lecun.com/exdb/mnist/>): a big-endian
//! u32 magic `0x0000 TT NN` (TT = element type, 0x08 for u8; NN = number of
//! dimensions), NN big-endian u32 sizes, then the elements row-major.
//! Images are `0x00000803` (N, rows, cols) and labels `0x00000801` (N).

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{read_file, DataError, Dataset, ImageDataset, Normalization, Result, Split};

/// Magic number of an IDX file of u8 images (N, rows, cols).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 labels (N).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// MNIST and Fashion-MNIST images are 28x28.
pub const MNIST_SIDE: usize = 28;
/// MNIST and Fashion-MNIST have ten classes.
pub const MNIST_CLASSES: usize = 10;
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// An IDX array of u8 elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes, outermost first (N, then the record's shape).
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// The file stems of a split: (images, labels), without `.gz`.
pub fn idx_stems(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// The file holding `stem` in `dir`: `stem.gz` if present, else `stem`
/// (`None` when neither exists). Whether the content is gzipped is decided
/// by its first bytes, not by the name.
pub fn find_idx_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    [format!("{stem}.gz"), stem.to_string()]
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Decompresses `bytes` if they start with the gzip magic, else returns
/// them as they are.
pub fn maybe_gunzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if bytes.len() < 2 || bytes[..2] != GZIP_MAGIC {
        return Ok(bytes);
    }
    // MultiGzDecoder: a concatenation of gzip members is one valid stream.
    let mut out = Vec::with_capacity(bytes.len() * 4);
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|error| DataError::Gzip {
            path: path.to_path_buf(),
            error,
        })?;
    Ok(out)
}

/// Parses an uncompressed IDX file of u8 elements whose magic must be
/// `expected_magic`; `path` only names the file in errors.
pub fn parse_idx(bytes: &[u8], expected_magic: u32, path: &Path) -> Result<IdxArray> {
    let what = if expected_magic == IDX_IMAGES_MAGIC {
        "images"
    } else {
        "labels"
    };
    let truncated = |expected: usize| DataError::Truncated {
        path: path.to_path_buf(),
        expected: expected as u64,
        found: bytes.len() as u64,
    };
    if bytes.len() < 4 {
        return Err(truncated(4));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let magic = word(0);
    if magic != expected_magic {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: magic,
            expected: expected_magic,
            what,
        });
    }
    let ndim = (magic & 0xff) as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(truncated(header));
    }
    let dims: Vec<usize> = (0..ndim).map(|d| word(4 + 4 * d) as usize).collect();
    let elements = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("dimensions {dims:?} overflow; the header is corrupt"),
        })?;
    let body = &bytes[header..];
    if body.len() < elements {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: elements as u64,
            found: body.len() as u64,
        });
    }
    if body.len() > elements {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            expected: elements as u64,
            found: body.len() as u64,
        });
    }
    Ok(IdxArray {
        dims,
        data: body.to_vec(),
    })
}

/// Reads an IDX file (gzipped or not) and parses it with [`parse_idx`].
pub fn read_idx_file(path: &Path, expected_magic: u32, hint: &str) -> Result<IdxArray> {
    let raw = maybe_gunzip(read_file(path, hint)?, path)?;
    parse_idx(&raw, expected_magic, path)
}

/// Loads a split of MNIST or Fashion-MNIST from `dir` (which holds
/// `train-images-idx3-ubyte[.gz]` etc.), keeping the first `limit` examples
/// when given, normalised with `norm`: `[N, 1, 28, 28]` images and labels
/// `< 10`.
pub fn load_mnist_like_with(
    dir: &Path,
    split: Split,
    limit: Option<usize>,
    norm: &Normalization,
) -> Result<ImageDataset> {
    let (image_stem, label_stem) = idx_stems(split);
    let hint = "fetch the dataset with `approxtrain data fetch mnist` (or fashion-mnist) \
                or pass --data-dir";
    let locate = |stem: &str| {
        find_idx_file(dir, stem).ok_or_else(|| DataError::Missing {
            path: dir.join(format!("{stem}.gz")),
            hint: format!("neither {stem}.gz nor {stem} is there; {hint}"),
        })
    };
    let image_path = locate(image_stem)?;
    let label_path = locate(label_stem)?;
    let images = read_idx_file(&image_path, IDX_IMAGES_MAGIC, hint)?;
    let labels = read_idx_file(&label_path, IDX_LABELS_MAGIC, hint)?;
    assemble_mnist_like(images, &image_path, labels, &label_path, limit, norm)
}

/// [`load_mnist_like_with`] with MNIST's standardisation
/// ([`Normalization::mnist`]). For Fashion-MNIST's own statistics use
/// [`load_mnist_like_with`] with [`Normalization::fashion_mnist`], or
/// [`super::DatasetLocation::load_images`], which picks them by dataset.
pub fn load_mnist_like(dir: &Path, split: Split, limit: Option<usize>) -> Result<ImageDataset> {
    load_mnist_like_with(dir, split, limit, &Dataset::Mnist.default_normalization())
}

/// Loads a split from in-memory IDX files (gzipped or not); the paths only
/// name them in errors.
pub(crate) fn load_mnist_like_from_bytes(
    (image_bytes, image_path): (&[u8], &Path),
    (label_bytes, label_path): (&[u8], &Path),
    limit: Option<usize>,
    norm: &Normalization,
) -> Result<ImageDataset> {
    let images = parse_idx(
        &maybe_gunzip(image_bytes.to_vec(), image_path)?,
        IDX_IMAGES_MAGIC,
        image_path,
    )?;
    let labels = parse_idx(
        &maybe_gunzip(label_bytes.to_vec(), label_path)?,
        IDX_LABELS_MAGIC,
        label_path,
    )?;
    assemble_mnist_like(images, image_path, labels, label_path, limit, norm)
}

/// Checks that images and labels agree and builds the dataset.
fn assemble_mnist_like(
    images: IdxArray,
    image_path: &Path,
    labels: IdxArray,
    label_path: &Path,
    limit: Option<usize>,
    norm: &Normalization,
) -> Result<ImageDataset> {
    if images.dims[1..] != [MNIST_SIDE, MNIST_SIDE] {
        return Err(DataError::BadHeader {
            path: image_path.to_path_buf(),
            reason: format!(
                "images are {}x{}, expected {MNIST_SIDE}x{MNIST_SIDE} (MNIST / Fashion-MNIST)",
                images.dims[1], images.dims[2]
            ),
        });
    }
    let (n_images, n_labels) = (images.dims[0], labels.dims[0]);
    if n_images == 0 {
        return Err(DataError::BadHeader {
            path: image_path.to_path_buf(),
            reason: "holds 0 images; the file is empty or cut short, fetch it again".into(),
        });
    }
    if n_images != n_labels {
        return Err(DataError::CountMismatch {
            images_path: image_path.to_path_buf(),
            images: n_images,
            labels_path: label_path.to_path_buf(),
            labels: n_labels,
        });
    }
    if let Some((index, &label)) = labels
        .data
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= MNIST_CLASSES)
    {
        return Err(DataError::LabelOutOfRange {
            path: label_path.to_path_buf(),
            index,
            label,
            num_classes: MNIST_CLASSES,
        });
    }
    norm.check(1, image_path)?;
    let len = limit.map_or(n_images, |l| l.min(n_images));
    let plane = MNIST_SIDE * MNIST_SIDE;
    Ok(ImageDataset {
        images: norm.apply(&images.data[..len * plane], 1, plane),
        labels: labels.data[..len].to_vec(),
        len,
        channels: 1,
        height: MNIST_SIDE,
        width: MNIST_SIDE,
        num_classes: MNIST_CLASSES,
    })
}
