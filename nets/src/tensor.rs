//! A minimal dense tensor: a shape and row-major `f32` data.
//!
//! Layers use it at their boundaries only; inside, they work on slices and
//! hand them to `amsim` as strided matrix views.

use crate::{NetError, Result};

/// A dense row-major tensor. Image batches are `[N, C, H, W]`, dense
/// activations `[N, features]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tensor {
    /// Extent of each dimension, outermost first.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` elements, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Wrap `data`; an error if its length does not match `shape`.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Tensor> {
        let want: usize = shape.iter().product();
        if data.len() != want {
            return Err(NetError::shape(format!(
                "a tensor of shape {shape:?} needs {want} elements, got {}",
                data.len()
            )));
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The leading (batch) dimension, 0 for a scalar shape.
    pub fn batch(&self) -> usize {
        self.shape.first().copied().unwrap_or(0)
    }

    /// Elements per leading index (`len / batch`).
    pub fn per_sample(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The same data under another shape with the same number of elements.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Tensor> {
        let want: usize = shape.iter().product();
        if want != self.data.len() {
            return Err(NetError::shape(format!(
                "cannot reshape {:?} ({} elements) to {shape:?}",
                self.shape,
                self.data.len()
            )));
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// Check that the tensor is `[N, per_sample...]` for some N, naming
    /// `who` in the error.
    pub fn expect_sample_shape(&self, who: &str, sample: &[usize]) -> Result<()> {
        if self.shape.len() != sample.len() + 1 || self.shape[1..] != *sample {
            return Err(NetError::shape(format!(
                "{who}: expected input [N, {}], got {:?}",
                sample
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.shape
            )));
        }
        Ok(())
    }
}
