//! Global average pooling: the mean of each channel's plane.
//!
//! Shapes: `x [N, C, H, W]`, `y [N, C]`.
//!
//! - forward:  `y[n,c] = (1/(H·W)) Σ_(h,w) x[n,c,h,w]` (summed in memory order)
//! - backward: `dx[n,c,h,w] = dy[n,c] / (H·W)`

use super::{split_batch, Layer};
use crate::{NetError, Result, Tensor};

/// `[N, C, H, W] -> [N, C]` by averaging each plane.
#[derive(Debug, Clone)]
pub struct GlobalAvgPool {
    name: String,
    /// Backward cache: the input shape of the last training forward.
    cache_shape: Vec<usize>,
}

impl GlobalAvgPool {
    /// A global average pool named `name`.
    pub fn new(name: &str) -> GlobalAvgPool {
        GlobalAvgPool {
            name: name.to_string(),
            cache_shape: Vec::new(),
        }
    }
}

impl Layer for GlobalAvgPool {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        "GlobalAvgPool".into()
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        if sample.len() != 3 || sample[1] * sample[2] == 0 {
            return Err(NetError::shape(format!(
                "{}: expected non-empty samples [C, H, W], got {sample:?}",
                self.name
            )));
        }
        Ok(vec![sample[0]])
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Pooling);
        let (n, sample) = split_batch(&self.name, x)?;
        self.output_shape(sample)?;
        let (c, plane) = (sample[0], sample[1] * sample[2]);
        let scale = 1.0 / plane as f32;
        let data = x
            .data
            .chunks_exact(plane)
            .map(|p| p.iter().sum::<f32>() * scale)
            .collect();
        if train {
            self.cache_shape.clone_from(&x.shape);
        }
        Tensor::from_vec(&[n, c], data)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Pooling);
        if self.cache_shape.len() != 4 || dy.shape != self.cache_shape[..2] {
            return Err(NetError::shape(format!(
                "{}: backward expected dy [N, C] of the last training forward {:?}, got {:?}",
                self.name, self.cache_shape, dy.shape
            )));
        }
        if !need_input_grad {
            return Ok(None);
        }
        let plane = self.cache_shape[2] * self.cache_shape[3];
        let scale = 1.0 / plane as f32;
        let mut dx = Tensor::zeros(&self.cache_shape);
        for (out, &g) in dx.data.chunks_exact_mut(plane).zip(&dy.data) {
            out.fill(g * scale);
        }
        Ok(Some(dx))
    }
}
