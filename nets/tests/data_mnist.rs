//! MNIST / Fashion-MNIST IDX loading: the full sets' counts and histograms,
//! gzipped vs plain files, normalisation, and every malformed case.

mod data_support;
mod support;

use std::path::Path;

use data_support::{gzip, idx_bytes, random_mnist, shared_dataset, write_mnist};
use nets::data::idx::load_mnist_like_with;
use nets::data::{load_mnist_like, DataError, Normalization, Split};
use rand::Rng;
use support::test_rng;

const MNIST_TRAIN_HIST: [usize; 10] = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const MNIST_TEST_HIST: [usize; 10] = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

#[test]
fn full_mnist_counts_and_label_histograms_match_the_shared_readme() {
    let Some(dir) = shared_dataset("mnist") else {
        return;
    };
    let train = load_mnist_like(&dir, Split::Train, None).unwrap();
    assert_eq!(
        (train.len, train.channels, train.height, train.width),
        (60000, 1, 28, 28)
    );
    assert_eq!(train.images.len(), 60000 * 784);
    assert_eq!(train.label_histogram(), MNIST_TRAIN_HIST);
    let test = load_mnist_like(&dir, Split::Test, None).unwrap();
    assert_eq!(test.len, 10000);
    assert_eq!(test.label_histogram(), MNIST_TEST_HIST);
}

#[test]
fn full_fashion_mnist_has_6000_and_1000_images_per_class() {
    let Some(dir) = shared_dataset("fashion-mnist") else {
        return;
    };
    let norm = Normalization::fashion_mnist();
    let train = load_mnist_like_with(&dir, Split::Train, None, &norm).unwrap();
    assert_eq!(train.len, 60000);
    assert_eq!(train.label_histogram(), [6000; 10]);
    let test = load_mnist_like_with(&dir, Split::Test, None, &norm).unwrap();
    assert_eq!(test.len, 10000);
    assert_eq!(test.label_histogram(), [1000; 10]);
}

#[test]
fn mnist_standardisation_gives_zero_mean_unit_std_on_the_full_training_set() {
    let Some(dir) = shared_dataset("mnist") else {
        return;
    };
    let train = load_mnist_like(&dir, Split::Train, None).unwrap();
    let n = train.images.len() as f64;
    let mean = train.images.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = train
        .images
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(mean.abs() < 1e-3, "mean {mean}");
    assert!((var.sqrt() - 1.0).abs() < 1e-3, "std {}", var.sqrt());
}

#[test]
fn gzipped_and_plain_idx_files_load_identically_and_hold_the_written_pixels() {
    let mut rng = test_rng("gzipped_and_plain_idx_files_load_identically");
    let n = rng.gen_range(1..50);
    let (pixels, labels) = random_mnist(&mut rng, n);
    let tmp = tempfile::tempdir().unwrap();
    let (plain, gz) = (tmp.path().join("plain"), tmp.path().join("gz"));
    for test_split in [false, true] {
        write_mnist(&plain, test_split, &pixels, &labels, false);
        write_mnist(&gz, test_split, &pixels, &labels, true);
    }
    for split in [Split::Train, Split::Test] {
        let a = load_mnist_like_with(&plain, split, None, &Normalization::UnitRange).unwrap();
        let b = load_mnist_like_with(&gz, split, None, &Normalization::UnitRange).unwrap();
        assert_eq!(a.images, b.images);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.labels, labels);
        let expected: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        assert_eq!(a.images, expected);
    }
}

#[test]
fn gzip_is_detected_by_content_not_by_file_name() {
    let mut rng = test_rng("gzip_is_detected_by_content_not_by_file_name");
    let (pixels, labels) = random_mnist(&mut rng, 7);
    let tmp = tempfile::tempdir().unwrap();
    // Gzipped content under the plain names, plain content under .gz names.
    std::fs::write(
        tmp.path().join("train-images-idx3-ubyte"),
        gzip(&idx_bytes(0x803, &[7, 28, 28], &pixels)),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("train-labels-idx1-ubyte.gz"),
        idx_bytes(0x801, &[7], &labels),
    )
    .unwrap();
    let set =
        load_mnist_like_with(tmp.path(), Split::Train, None, &Normalization::UnitRange).unwrap();
    assert_eq!(set.labels, labels);
    assert_eq!(
        set.images[..784],
        pixels[..784]
            .iter()
            .map(|&p| p as f32 / 255.0)
            .collect::<Vec<_>>()[..]
    );
}

#[test]
fn mean_std_normalisation_and_limit_apply_to_the_first_images() {
    let mut rng = test_rng("mean_std_normalisation_and_limit");
    let n = rng.gen_range(5..40);
    let limit = rng.gen_range(1..n);
    let (pixels, labels) = random_mnist(&mut rng, n);
    let tmp = tempfile::tempdir().unwrap();
    write_mnist(tmp.path(), false, &pixels, &labels, true);
    let set = load_mnist_like(tmp.path(), Split::Train, Some(limit)).unwrap();
    assert_eq!(set.len, limit);
    assert_eq!(set.labels, labels[..limit]);
    for (x, &p) in set.images.iter().zip(&pixels[..limit * 784]) {
        assert_eq!(*x, (p as f32 / 255.0 - 0.1307) / 0.3081);
    }
}

/// Writes a valid random training split, lets `spoil` damage it, and
/// returns the loader's error.
fn load_spoiled(test: &str, spoil: impl FnOnce(&Path, &mut Vec<u8>, &mut Vec<u8>)) -> DataError {
    let mut rng = test_rng(test);
    let n = rng.gen_range(2..30);
    let (mut pixels, mut labels) = random_mnist(&mut rng, n);
    let tmp = tempfile::tempdir().unwrap();
    write_mnist(tmp.path(), false, &pixels, &labels, true);
    spoil(tmp.path(), &mut pixels, &mut labels);
    let err = load_mnist_like(tmp.path(), Split::Train, None).unwrap_err();
    eprintln!("{test}: {err}");
    err
}

fn assert_names(err: &DataError, file: &str) {
    let msg = err.to_string();
    assert!(msg.contains(file), "error `{msg}` does not name {file}");
    assert!(!msg.contains('\n'), "error `{msg}` is not one line");
}

#[test]
fn truncated_image_file_is_an_error_naming_it() {
    let err = load_spoiled("truncated_image_file", |dir, pixels, _| {
        let n = pixels.len() / 784;
        let cut = pixels.len() - 1 - (pixels[0] as usize % 783);
        let bytes = idx_bytes(0x803, &[n as u32, 28, 28], &pixels[..cut]);
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&bytes)).unwrap();
    });
    assert!(matches!(err, DataError::Truncated { .. }), "{err:?}");
    assert_names(&err, "train-images-idx3-ubyte.gz");
}

#[test]
fn truncated_header_is_an_error_naming_the_file() {
    let err = load_spoiled("truncated_header", |dir, _, _| {
        std::fs::write(
            dir.join("train-labels-idx1-ubyte.gz"),
            gzip(&[0, 0, 8, 1, 0]),
        )
        .unwrap();
    });
    assert!(
        matches!(
            err,
            DataError::Truncated {
                expected: 8,
                found: 5,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "train-labels-idx1-ubyte.gz");
}

#[test]
fn truncated_gzip_stream_is_an_error_naming_the_file() {
    let err = load_spoiled("truncated_gzip_stream", |dir, _, _| {
        let path = dir.join("train-images-idx3-ubyte.gz");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
    assert_names(&err, "train-images-idx3-ubyte.gz");
}

#[test]
fn wrong_magic_is_an_error_naming_the_file() {
    // A labels file where images are expected: magic 0x801, not 0x803.
    let err = load_spoiled("wrong_magic", |dir, _, labels| {
        let bytes = idx_bytes(0x801, &[labels.len() as u32], labels);
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&bytes)).unwrap();
    });
    assert!(
        matches!(
            err,
            DataError::BadMagic {
                found: 0x801,
                expected: 0x803,
                ..
            }
        ),
        "{err:?}"
    );
    assert_names(&err, "train-images-idx3-ubyte.gz");
}

#[test]
fn wrong_image_size_is_an_error_naming_the_file() {
    let err = load_spoiled("wrong_image_size", |dir, pixels, _| {
        let n = (pixels.len() / (32 * 32)) as u32;
        let bytes = idx_bytes(0x803, &[n, 32, 32], &pixels[..n as usize * 1024]);
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&bytes)).unwrap();
    });
    assert!(matches!(err, DataError::BadHeader { .. }), "{err:?}");
    assert_names(&err, "train-images-idx3-ubyte.gz");
}

#[test]
fn trailing_bytes_are_an_error_naming_the_file() {
    let err = load_spoiled("trailing_bytes", |dir, _, labels| {
        let mut data = labels.clone();
        data.push(3);
        let bytes = idx_bytes(0x801, &[labels.len() as u32], &data);
        std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&bytes)).unwrap();
    });
    assert!(matches!(err, DataError::TrailingBytes { .. }), "{err:?}");
    assert_names(&err, "train-labels-idx1-ubyte.gz");
}

#[test]
fn image_and_label_count_mismatch_is_an_error_naming_both_files() {
    let err = load_spoiled("count_mismatch", |dir, _, labels| {
        let short = &labels[..labels.len() - 1];
        let bytes = idx_bytes(0x801, &[short.len() as u32], short);
        std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&bytes)).unwrap();
    });
    let DataError::CountMismatch { images, labels, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*images, *labels + 1);
    assert_names(&err, "train-images-idx3-ubyte.gz");
    assert_names(&err, "train-labels-idx1-ubyte.gz");
}

#[test]
fn label_out_of_range_is_an_error_naming_the_file_and_record() {
    let mut spoiled = (0, 0);
    let err = load_spoiled("label_out_of_range", |dir, _, labels| {
        let i = labels[0] as usize % labels.len();
        labels[i] = 10 + labels[labels.len() - 1] * 20;
        spoiled = (i, labels[i]);
        let bytes = idx_bytes(0x801, &[labels.len() as u32], labels);
        std::fs::write(dir.join("train-labels-idx1-ubyte.gz"), gzip(&bytes)).unwrap();
    });
    let DataError::LabelOutOfRange { index, label, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*index, *label), spoiled);
    assert_names(&err, "train-labels-idx1-ubyte.gz");
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let err = load_spoiled("missing_file", |dir, _, _| {
        std::fs::remove_file(dir.join("train-labels-idx1-ubyte.gz")).unwrap();
    });
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    assert_names(&err, "train-labels-idx1-ubyte");
    assert!(err.to_string().contains("approxtrain data fetch"));
}

#[test]
fn normalisation_with_the_wrong_number_of_channels_is_an_error() {
    let mut rng = test_rng("normalisation_with_the_wrong_number_of_channels");
    let (pixels, labels) = random_mnist(&mut rng, 3);
    let tmp = tempfile::tempdir().unwrap();
    write_mnist(tmp.path(), false, &pixels, &labels, false);
    // CIFAR-10's three channel means on one-channel images.
    let err = load_mnist_like_with(tmp.path(), Split::Train, None, &Normalization::cifar10())
        .unwrap_err();
    assert!(matches!(err, DataError::BadHeader { .. }), "{err:?}");
    assert!(err.to_string().contains("does not fit 1-channel images"));
    let zero_std = Normalization::MeanStd {
        mean: vec![0.5],
        std: vec![0.0],
    };
    let err = load_mnist_like_with(tmp.path(), Split::Train, None, &zero_std).unwrap_err();
    assert!(matches!(err, DataError::BadHeader { .. }), "{err:?}");
}

#[test]
fn an_mnist_file_with_no_images_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    for test_split in [false, true] {
        write_mnist(tmp.path(), test_split, &[], &[], true);
    }
    let err = load_mnist_like(tmp.path(), Split::Train, None).unwrap_err();
    eprintln!("{err}");
    assert_names(&err, "train-images-idx3-ubyte");
    assert!(err.to_string().contains("0 images"), "{err}");
}
