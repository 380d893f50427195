//! Rectified linear unit, elementwise.
//!
//! Shapes: `x`, `y`, `dy`, `dx` all the same, any `[N, ...]`.
//!
//! - forward:  `y = max(x, 0)` (NaN stays NaN)
//! - backward: `dx = dy` where `x > 0`, else 0 (the subgradient at 0 is 0).

use rayon::prelude::*;

use super::{split_batch, Layer, PAR_MIN_ELEMS};
use crate::{NetError, Result, Tensor};

/// `y = max(x, 0)`.
#[derive(Debug, Clone)]
pub struct Relu {
    name: String,
    /// Backward cache: whether each input of the last training forward was
    /// positive.
    cache_positive: Vec<bool>,
}

impl Relu {
    /// A ReLU named `name`.
    pub fn new(name: &str) -> Relu {
        Relu {
            name: name.to_string(),
            cache_positive: Vec::new(),
        }
    }
}

impl Layer for Relu {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        "ReLU".into()
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        Ok(sample.to_vec())
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Activation);
        split_batch(&self.name, x)?;
        // `v < 0` rather than `max`: a NaN must propagate so that a
        // diverging run is noticed, not hidden.
        let mut y = Tensor {
            shape: x.shape.clone(),
            data: Vec::new(),
        };
        x.data
            .par_iter()
            .with_min_len(PAR_MIN_ELEMS)
            .map(|&v| if v < 0.0 { 0.0 } else { v })
            .collect_into_vec(&mut y.data);
        if train {
            x.data
                .par_iter()
                .with_min_len(PAR_MIN_ELEMS)
                .map(|&v| v > 0.0)
                .collect_into_vec(&mut self.cache_positive);
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Activation);
        if dy.len() != self.cache_positive.len() {
            return Err(NetError::shape(format!(
                "{}: backward got {} gradients for {} cached inputs",
                self.name,
                dy.len(),
                self.cache_positive.len()
            )));
        }
        if !need_input_grad {
            return Ok(None);
        }
        let mut data = Vec::new();
        dy.data
            .par_iter()
            .zip(&self.cache_positive)
            .with_min_len(PAR_MIN_ELEMS)
            .map(|(&d, &p)| if p { d } else { 0.0 })
            .collect_into_vec(&mut data);
        Ok(Some(Tensor {
            shape: dy.shape.clone(),
            data,
        }))
    }
}
