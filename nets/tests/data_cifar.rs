//! CIFAR-10 binary batches: the full set's counts and histograms, layout and
//! normalisation of synthetic batches, and malformed batches.

mod data_support;
mod support;

use data_support::{random_cifar_records, shared_dataset};
use nets::data::cifar::{load_cifar10, CIFAR10_RECORD, CIFAR10_TEST_FILE, CIFAR10_TRAIN_FILES};
use nets::data::{DataError, Normalization, Split};
use rand::Rng;
use support::test_rng;

#[test]
fn full_cifar10_has_5000_train_and_1000_test_images_per_class() {
    let Some(dir) = shared_dataset("cifar-10") else {
        return;
    };
    let norm = Normalization::UnitRange;
    let test = load_cifar10(&dir, Split::Test, None, &norm).unwrap();
    assert_eq!(
        (test.len, test.channels, test.height, test.width),
        (10000, 3, 32, 32)
    );
    assert_eq!(test.label_histogram(), [1000; 10]);
    let train = load_cifar10(&dir, Split::Train, None, &norm).unwrap();
    assert_eq!(train.len, 50000);
    assert_eq!(train.images.len(), 50000 * 3072);
    assert_eq!(train.label_histogram(), [5000; 10]);
}

/// Writes the five training batches and the test batch with `per_batch`
/// random records each; returns the concatenated training records.
fn write_batches(dir: &std::path::Path, rng: &mut impl Rng, per_batch: usize) -> Vec<u8> {
    let mut all = Vec::new();
    for name in CIFAR10_TRAIN_FILES {
        let records = random_cifar_records(rng, per_batch);
        std::fs::write(dir.join(name), &records).unwrap();
        all.extend(records);
    }
    std::fs::write(
        dir.join(CIFAR10_TEST_FILE),
        random_cifar_records(rng, per_batch),
    )
    .unwrap();
    all
}

#[test]
fn records_become_chw_images_normalised_per_channel_across_batches() {
    let mut rng = test_rng("records_become_chw_images_normalised_per_channel");
    let per_batch = rng.gen_range(1..6);
    let tmp = tempfile::tempdir().unwrap();
    let records = write_batches(tmp.path(), &mut rng, per_batch);
    let limit = rng.gen_range(1..=5 * per_batch);
    let norm = Normalization::cifar10();
    let set = load_cifar10(tmp.path(), Split::Train, Some(limit), &norm).unwrap();
    assert_eq!(set.len, limit);
    let (mean, std) = ([0.4914f32, 0.4822, 0.4465], [0.2470f32, 0.2435, 0.2616]);
    for (i, record) in records.chunks(CIFAR10_RECORD).take(limit).enumerate() {
        assert_eq!(set.labels[i], record[0]);
        let image = set.image(i);
        for c in 0..3 {
            for p in 0..1024 {
                let px = record[1 + c * 1024 + p] as f32;
                assert_eq!(image[c * 1024 + p], (px / 255.0 - mean[c]) / std[c]);
            }
        }
    }
}

#[test]
fn batch_that_is_not_whole_records_is_an_error_naming_it() {
    let mut rng = test_rng("batch_that_is_not_whole_records");
    let tmp = tempfile::tempdir().unwrap();
    write_batches(tmp.path(), &mut rng, 3);
    let path = tmp.path().join("data_batch_3.bin");
    let bytes = std::fs::read(&path).unwrap();
    let cut = rng.gen_range(1..CIFAR10_RECORD);
    std::fs::write(&path, &bytes[..bytes.len() - cut]).unwrap();
    let err = load_cifar10(tmp.path(), Split::Train, None, &Normalization::UnitRange).unwrap_err();
    eprintln!("{err}");
    let DataError::IncompleteRecord { index, found, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!((*index, *found), (2, CIFAR10_RECORD - cut));
    let msg = err.to_string();
    assert!(
        msg.contains("data_batch_3.bin") && msg.contains("record 2") && !msg.contains('\n'),
        "{msg}"
    );
}

#[test]
fn label_out_of_range_is_an_error_naming_the_batch_and_record() {
    let mut rng = test_rng("cifar_label_out_of_range");
    let tmp = tempfile::tempdir().unwrap();
    write_batches(tmp.path(), &mut rng, 4);
    let path = tmp.path().join(CIFAR10_TEST_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let index = rng.gen_range(0..4);
    bytes[index * CIFAR10_RECORD] = rng.gen_range(10..=255);
    std::fs::write(&path, &bytes).unwrap();
    let err = load_cifar10(tmp.path(), Split::Test, None, &Normalization::UnitRange).unwrap_err();
    eprintln!("{err}");
    let DataError::LabelOutOfRange { index: found, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*found, index);
    assert!(err.to_string().contains(CIFAR10_TEST_FILE));
}

#[test]
fn missing_batch_is_an_error_naming_it() {
    let mut rng = test_rng("missing_cifar_batch");
    let tmp = tempfile::tempdir().unwrap();
    write_batches(tmp.path(), &mut rng, 2);
    let gone = CIFAR10_TRAIN_FILES[rng.gen_range(0..5)];
    std::fs::remove_file(tmp.path().join(gone)).unwrap();
    let err = load_cifar10(tmp.path(), Split::Train, None, &Normalization::UnitRange).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, DataError::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains(gone));
    assert!(err.to_string().contains("approxtrain data fetch cifar10"));
}

#[test]
fn a_batch_cut_at_a_record_boundary_is_an_error_naming_it_unless_any_size_is_allowed() {
    let mut rng = test_rng("cifar_batch_cut_at_a_record_boundary");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10");
    std::fs::create_dir(&dir).unwrap();
    // Whole records, but not the 10,000 of a standard batch.
    write_batches(&dir, &mut rng, 3);
    let loc =
        nets::data::dir::resolve_in(Some(tmp.path()), None, nets::data::Dataset::Cifar10).unwrap();
    let err = loc.load_images(Split::Test, None).unwrap_err();
    eprintln!("{err}");
    assert!(
        matches!(
            err,
            DataError::WrongRecordCount {
                records: 3,
                expected: 10_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(CIFAR10_TEST_FILE), "{err}");
    // Files a user made in the CIFAR format: any whole number of records.
    let set = load_cifar10(&dir, Split::Test, None, &Normalization::UnitRange).unwrap();
    assert_eq!(set.len, 3);
}
