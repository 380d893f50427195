//! Flatten: `[N, C, H, W]` (or any `[N, ...]`) to `[N, C·H·W]`; the
//! backward pass restores the shape. No arithmetic.

use super::{split_batch, Layer};
use crate::{NetError, Result, Tensor};

/// `[N, d1, d2, ...] -> [N, d1·d2·...]`.
#[derive(Debug, Clone)]
pub struct Flatten {
    name: String,
    /// Backward cache: the input shape of the last training forward.
    cache_shape: Vec<usize>,
}

impl Flatten {
    /// A flatten layer named `name`.
    pub fn new(name: &str) -> Flatten {
        Flatten {
            name: name.to_string(),
            cache_shape: Vec::new(),
        }
    }
}

impl Layer for Flatten {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        "Flatten".into()
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        Ok(vec![sample.iter().product()])
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let (n, sample) = split_batch(&self.name, x)?;
        let per: usize = sample.iter().product();
        if train {
            self.cache_shape.clone_from(&x.shape);
        }
        x.clone().reshape(&[n, per])
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let want: usize = self.cache_shape.iter().product();
        if dy.len() != want || self.cache_shape.is_empty() {
            return Err(NetError::shape(format!(
                "{}: backward got {:?} for a cached input of shape {:?}",
                self.name, dy.shape, self.cache_shape
            )));
        }
        if !need_input_grad {
            return Ok(None);
        }
        Ok(Some(dy.clone().reshape(&self.cache_shape)?))
    }
}
