//! Datasets: MNIST / Fashion-MNIST (IDX), CIFAR-10 (binary batches), text.
//!
//! A data directory holds one folder per dataset (`mnist/`,
//! `fashion-mnist/`, `cifar-10/`, `shakespeare/`).

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
}
