//! Helpers shared by the `data_*` integration tests: the shared datasets
//! folder, and writers of IDX / CIFAR-10 files.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// The shared datasets folder (`APPROXTRAIN_SHARED_DATA`, else
/// `../shared/datasets` next to the workspace), or `None` with a printed
/// reason when it is absent.
pub fn shared_dataset(folder: &str) -> Option<PathBuf> {
    let root = std::env::var_os("APPROXTRAIN_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets"));
    let dir = root.join(folder);
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: {} not found (set APPROXTRAIN_SHARED_DATA to the shared datasets folder)",
            dir.display()
        );
        None
    }
}

/// An uncompressed IDX file of u8 elements.
pub fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `bytes` gzipped.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Random 28x28 images and labels < 10, as raw pixels and labels.
pub fn random_mnist(rng: &mut impl rand::Rng, n: usize) -> (Vec<u8>, Vec<u8>) {
    let pixels = (0..n * 784).map(|_| rng.gen()).collect();
    let labels = (0..n).map(|_| rng.gen_range(0..10)).collect();
    (pixels, labels)
}

/// Writes one split of an IDX dataset into `dir` under the standard names
/// (`t10k-*` for test), gzipped or not.
pub fn write_mnist(dir: &Path, test_split: bool, pixels: &[u8], labels: &[u8], gz: bool) {
    let n = labels.len() as u32;
    let prefix = if test_split { "t10k" } else { "train" };
    let files = [
        (
            format!("{prefix}-images-idx3-ubyte"),
            idx_bytes(0x803, &[pixels.len() as u32 / 784, 28, 28], pixels),
        ),
        (
            format!("{prefix}-labels-idx1-ubyte"),
            idx_bytes(0x801, &[n], labels),
        ),
    ];
    std::fs::create_dir_all(dir).unwrap();
    for (stem, bytes) in files {
        if gz {
            std::fs::write(dir.join(format!("{stem}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(stem), bytes).unwrap();
        }
    }
}

/// `n` random CIFAR-10 records (label byte + 3072 pixels).
pub fn random_cifar_records(rng: &mut impl rand::Rng, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 3073);
    for _ in 0..n {
        out.push(rng.gen_range(0..10));
        out.extend((0..3072).map(|_| rng.gen::<u8>()));
    }
    out
}
