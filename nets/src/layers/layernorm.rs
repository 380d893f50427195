//! Layer normalisation over the last dimension (Ba, Kiros and Hinton, 2016,
//! "Layer Normalization", arXiv:1607.06450), plain FP32.
//!
//! Shapes: `x`, `y`, `dy`, `dx` all `[N, ..., D]`; `gamma [D]`, `beta [D]`.
//! Each of the `R = len / D` rows is normalised on its own:
//!
//! - forward:  `mean = Σ_j x_j / D`, `var = Σ_j (x_j - mean)² / D`,
//!   `rstd = 1 / sqrt(var + eps)`, `x̂ = (x - mean)·rstd`,
//!   `y = gamma·x̂ + beta`
//! - backward: `dgamma = Σ_rows dy·x̂`, `dbeta = Σ_rows dy`, and with
//!   `g = dy·gamma`: `dx = rstd·(g - mean(g) - x̂·mean(g·x̂))`
//!
//! Sums over a row run in index order and parameter gradients in row order,
//! so results do not depend on the thread count.

use rayon::prelude::*;

use super::{min_planes_per_task, split_batch, Layer, Param};
use crate::{NetError, Result, Tensor};

/// `y = gamma·(x - mean)/sqrt(var + eps) + beta` over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    name: String,
    dim: usize,
    eps: f32,
    /// `gamma [D]`, initialised to 1; no weight decay.
    pub gamma: Param,
    /// `beta [D]`, initialised to 0; no weight decay.
    pub beta: Param,
    /// Backward cache: the normalised input `x̂ [R, D]` of the last training
    /// forward.
    cache_xhat: Vec<f32>,
    /// Backward cache: `rstd [R]`, one per row.
    cache_rstd: Vec<f32>,
    /// Backward cache: the shape of that input.
    cache_shape: Vec<usize>,
}

impl LayerNorm {
    /// The epsilon added to the variance (as in PyTorch and GPT-2).
    pub const EPS: f32 = 1e-5;

    /// A layer normalising over a last dimension of `dim`, with
    /// `gamma = 1`, `beta = 0`.
    pub fn new(name: &str, dim: usize) -> LayerNorm {
        let mut gamma = Param::zeros(format!("{name}.gamma"), &[dim], false);
        gamma.value.fill(1.0);
        LayerNorm {
            name: name.to_string(),
            dim,
            eps: Self::EPS,
            gamma,
            beta: Param::zeros(format!("{name}.beta"), &[dim], false),
            cache_xhat: Vec::new(),
            cache_rstd: Vec::new(),
            cache_shape: Vec::new(),
        }
    }

    /// The normalised dimension D.
    pub fn dim(&self) -> usize {
        self.dim
    }
}

impl Layer for LayerNorm {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!("LayerNorm({})", self.dim)
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        if sample.last() != Some(&self.dim) {
            return Err(NetError::shape(format!(
                "{}: expected a last dimension of {}, got a sample of shape {sample:?}",
                self.name, self.dim
            )));
        }
        Ok(sample.to_vec())
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Norm);
        let (_, sample) = split_batch(&self.name, x)?;
        self.output_shape(sample)?;
        let d = self.dim;
        let rows = x.len() / d.max(1);
        let mut xhat = vec![0.0f32; x.len()];
        let mut rstd = vec![0.0f32; rows];
        let per_task = min_planes_per_task(d);
        xhat.par_chunks_mut(d.max(1))
            .zip(rstd.par_iter_mut())
            .zip(x.data.par_chunks(d.max(1)))
            .with_min_len(per_task)
            .for_each(|((h, r), row)| {
                let mean = row.iter().sum::<f32>() / d as f32;
                let var = row.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
                *r = 1.0 / (var + self.eps).sqrt();
                for (h, &v) in h.iter_mut().zip(row) {
                    *h = (v - mean) * *r;
                }
            });
        let mut y = Tensor::zeros(&x.shape);
        y.data
            .par_chunks_mut(d.max(1))
            .zip(xhat.par_chunks(d.max(1)))
            .with_min_len(per_task)
            .for_each(|(y, h)| {
                for ((y, &h), (&g, &b)) in y
                    .iter_mut()
                    .zip(h)
                    .zip(self.gamma.value.iter().zip(&self.beta.value))
                {
                    *y = g * h + b;
                }
            });
        if train {
            self.cache_xhat = xhat;
            self.cache_rstd = rstd;
            self.cache_shape = x.shape.clone();
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Norm);
        if dy.shape != self.cache_shape || self.cache_shape.is_empty() {
            return Err(NetError::shape(format!(
                "{}: backward expected dy {:?} (after a training forward), got {:?}",
                self.name, self.cache_shape, dy.shape
            )));
        }
        let d = self.dim.max(1);
        // Parameter gradients, summed over rows in row order.
        self.gamma.grad.fill(0.0);
        self.beta.grad.fill(0.0);
        for (dy_row, h_row) in dy.data.chunks_exact(d).zip(self.cache_xhat.chunks_exact(d)) {
            for (((gg, gb), &g), &h) in self
                .gamma
                .grad
                .iter_mut()
                .zip(self.beta.grad.iter_mut())
                .zip(dy_row)
                .zip(h_row)
            {
                *gg += g * h;
                *gb += g;
            }
        }
        if !need_input_grad {
            return Ok(None);
        }
        let mut dx = Tensor::zeros(&dy.shape);
        let gamma = &self.gamma.value;
        dx.data
            .par_chunks_mut(d)
            .zip(dy.data.par_chunks(d))
            .zip(self.cache_xhat.par_chunks(d))
            .zip(self.cache_rstd.par_iter())
            .with_min_len(min_planes_per_task(d))
            .for_each(|(((dx, dy), h), &rstd)| {
                // g = dy·gamma; mean(g) and mean(g·x̂) in index order.
                let mut sum_g = 0.0f32;
                let mut sum_gh = 0.0f32;
                for ((&dy, &gm), &h) in dy.iter().zip(gamma).zip(h) {
                    sum_g += dy * gm;
                    sum_gh += dy * gm * h;
                }
                let mean_g = sum_g / d as f32;
                let mean_gh = sum_gh / d as f32;
                for (((dx, &dy), &gm), &h) in dx.iter_mut().zip(dy).zip(gamma).zip(h) {
                    *dx = rstd * (dy * gm - mean_g - h * mean_gh);
                }
            });
        Ok(Some(dx))
    }

    fn params(&self) -> Vec<&Param> {
        vec![&self.gamma, &self.beta]
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.gamma, &mut self.beta]
    }
}
