//! The MNIST subset shipped in the repository (`data-subset/mnist`: the
//! first 6,000 training and 1,000 test images, gzipped IDX), embedded in the
//! library so that an installed binary finds it wherever it runs.

/// Where the shipped subset lives in the repository (for messages).
pub const SHIPPED_MNIST_DIR: &str = "data-subset/mnist";
/// Training images in the shipped subset.
pub const SHIPPED_MNIST_TRAIN: usize = 6000;
/// Test images in the shipped subset.
pub const SHIPPED_MNIST_TEST: usize = 1000;

/// The shipped files: (file name, gzipped IDX bytes).
pub(crate) const SHIPPED_MNIST_FILES: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../../data-subset/mnist/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../../data-subset/mnist/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../../data-subset/mnist/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../../data-subset/mnist/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// The embedded bytes of the file named `name`.
pub(crate) fn shipped_file(name: &str) -> &'static [u8] {
    SHIPPED_MNIST_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, b)| *b)
        .unwrap_or(&[])
}
