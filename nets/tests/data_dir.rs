//! Data-directory resolution and the MNIST subset shipped in the library.

mod data_support;
mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use data_support::{random_mnist, shared_dataset, write_mnist};
use nets::data::dir::{data_root_from, resolve_in};
use nets::data::{
    load_mnist_like, resolve_dataset_dir, DataError, Dataset, DatasetLocation, DatasetSource,
    Split, SHIPPED_MNIST_TEST, SHIPPED_MNIST_TRAIN,
};
use support::test_rng;

#[test]
fn data_root_prefers_the_flag_then_the_environment_then_dot_data() {
    let flag = Path::new("flag-dir");
    let env = OsStr::new("env-dir");
    assert_eq!(
        data_root_from(Some(flag), Some(env)),
        PathBuf::from("flag-dir")
    );
    assert_eq!(data_root_from(None, Some(env)), PathBuf::from("env-dir"));
    assert_eq!(
        data_root_from(None, Some(OsStr::new(""))),
        PathBuf::from("data")
    );
    assert_eq!(data_root_from(None, None), PathBuf::from("data"));
}

#[test]
fn dataset_names_parse_and_map_to_the_shared_folder_layout() {
    let folders: Vec<&str> = Dataset::ALL.iter().map(|d| d.folder()).collect();
    assert_eq!(
        folders,
        ["mnist", "fashion-mnist", "cifar-10", "shakespeare"]
    );
    for d in Dataset::ALL {
        assert_eq!(Dataset::parse(d.name()).unwrap(), d);
        assert_eq!(Dataset::parse(d.folder()).unwrap(), d);
    }
    assert_eq!(
        Dataset::parse("Fashion_MNIST").unwrap(),
        Dataset::FashionMnist
    );
    let err = resolve_dataset_dir(None, "imagenet").unwrap_err();
    assert!(matches!(err, DataError::UnknownDataset { .. }), "{err:?}");
    assert!(err.to_string().contains("imagenet"));
}

#[test]
fn a_complete_dataset_folder_is_used_where_found() {
    let mut rng = test_rng("a_complete_dataset_folder_is_used_where_found");
    let (pixels, labels) = random_mnist(&mut rng, 3);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fashion-mnist");
    write_mnist(&dir, false, &pixels, &labels, true);
    write_mnist(&dir, true, &pixels, &labels, false);
    let loc = resolve_in(Some(tmp.path()), None, Dataset::FashionMnist).unwrap();
    assert_eq!(loc.source, DatasetSource::Directory(dir));
    assert_eq!(loc.notice, None);
    assert_eq!(loc.load_images(Split::Test, None).unwrap().labels, labels);
    // The environment value is used when no flag is given.
    let loc = resolve_in(None, Some(tmp.path().as_os_str()), Dataset::FashionMnist).unwrap();
    assert!(matches!(loc.source, DatasetSource::Directory(_)));
}

#[test]
fn missing_mnist_falls_back_to_the_shipped_subset_only_without_a_data_directory() {
    let loc = resolve_in(None, None, Dataset::Mnist);
    if let Ok(DatasetSource::ShippedMnistSubset) = loc.as_ref().map(|l| l.source.clone()) {
        let notice = loc.unwrap().notice.unwrap();
        eprintln!("{notice}");
        assert!(notice.contains("6,000-image MNIST subset shipped in data-subset/mnist"));
        assert!(notice.contains("no --data-dir given"));
        assert!(notice.contains("approxtrain data fetch mnist"));
    }
    // A data directory that is given (flag or environment) must hold the
    // dataset: no silent training on the subset.
    let tmp = tempfile::tempdir().unwrap();
    for (flag, env) in [
        (Some(tmp.path()), None),
        (None, Some(tmp.path().as_os_str())),
    ] {
        let e = resolve_in(flag, env, Dataset::Mnist)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&tmp.path().join("mnist").display().to_string())
                && e.contains("train-images-idx3-ubyte"),
            "{e}"
        );
    }
    // One of the four files missing is an error naming it too.
    let (pixels, labels) = random_mnist(&mut test_rng("mnist_missing_one_file"), 3);
    let dir = tmp.path().join("mnist");
    write_mnist(&dir, false, &pixels, &labels, true);
    write_mnist(&dir, true, &pixels, &labels, true);
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let e = resolve_in(Some(tmp.path()), None, Dataset::Mnist)
        .unwrap_err()
        .to_string();
    assert!(e.contains("t10k-labels-idx1-ubyte"), "{e}");
}

#[test]
fn shipped_subset_holds_the_documented_counts_and_histograms() {
    let loc = DatasetLocation::shipped_mnist_subset();
    let train = loc.load_images(Split::Train, None).unwrap();
    let test = loc.load_images(Split::Test, None).unwrap();
    assert_eq!(
        (train.len, test.len),
        (SHIPPED_MNIST_TRAIN, SHIPPED_MNIST_TEST)
    );
    assert_eq!(
        train.label_histogram(),
        [592, 671, 581, 608, 623, 514, 608, 651, 551, 601]
    );
    assert_eq!(
        test.label_histogram(),
        [85, 126, 116, 107, 110, 87, 87, 99, 89, 94]
    );
}

#[test]
fn shipped_subset_is_the_head_of_the_full_mnist() {
    let Some(dir) = shared_dataset("mnist") else {
        return;
    };
    let loc = DatasetLocation::shipped_mnist_subset();
    for (split, n) in [
        (Split::Train, SHIPPED_MNIST_TRAIN),
        (Split::Test, SHIPPED_MNIST_TEST),
    ] {
        let subset = loc.load_images(split, None).unwrap();
        let full = load_mnist_like(&dir, split, Some(n)).unwrap();
        assert_eq!(subset.labels, full.labels);
        assert_eq!(subset.images, full.images);
    }
}

#[test]
fn other_missing_datasets_are_an_error_saying_how_to_fetch_them() {
    let tmp = tempfile::tempdir().unwrap();
    for d in [
        Dataset::FashionMnist,
        Dataset::Cifar10,
        Dataset::Shakespeare,
    ] {
        let err = resolve_in(Some(tmp.path()), None, d).unwrap_err();
        eprintln!("{err}");
        assert!(matches!(err, DataError::DatasetNotFound { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("approxtrain data fetch {}", d.name())),
            "{msg}"
        );
        assert!(
            msg.contains(&tmp.path().join(d.folder()).display().to_string()),
            "{msg}"
        );
    }
}

#[test]
fn shared_datasets_resolve_to_their_folders_and_hold_the_right_kind() {
    let Some(mnist) = shared_dataset("mnist") else {
        return;
    };
    let root = mnist.parent().unwrap();
    for d in Dataset::ALL {
        let loc = resolve_in(Some(root), None, d).unwrap();
        assert_eq!(loc.source, DatasetSource::Directory(root.join(d.folder())));
    }
    let text = resolve_in(Some(root), None, Dataset::Shakespeare).unwrap();
    assert!(matches!(
        text.load_images(Split::Train, Some(1)),
        Err(DataError::WrongKind { .. })
    ));
    let images = resolve_in(Some(root), None, Dataset::Mnist).unwrap();
    assert!(matches!(
        images.load_text(),
        Err(DataError::WrongKind { .. })
    ));
}
