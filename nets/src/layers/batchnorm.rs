//! Batch normalisation over the channels of an NCHW batch (Ioffe and
//! Szegedy, "Batch Normalization", ICML 2015, Algorithm 1 and section 3.1).
//!
//! Shapes: `x [N, C, H, W]`, `y` the same, `γ, β, running_mean,
//! running_var [C]`; `m = N·H·W` values per channel.
//!
//! - forward, training: `μ = Σx/m`, `σ² = Σ(x-μ)²/m` (biased),
//!   `x̂ = (x-μ)/sqrt(σ²+ε)`, `y = γ·x̂ + β`; then
//!   `running_mean = 0.9·running_mean + 0.1·μ` and
//!   `running_var = 0.9·running_var + 0.1·σ²·m/(m-1)`: the unbiased
//!   variance for the running estimate, as PyTorch's `BatchNorm2d` does
//!   (momentum 0.1, ε = 1e-5).
//! - forward, inference: `scale = γ/sqrt(running_var+ε)`,
//!   `y = (x - running_mean)·scale + β`.
//! - backward: `dβ = Σdy`, `dγ = Σdy·x̂`,
//!   `dx = γ/sqrt(σ²+ε) · (dy - dβ/m - x̂·dγ/m)`.
//!
//! All arithmetic is plain FP32 (there is no matrix product, so no
//! multiplier). Per-channel sums run in memory order (batch, then plane)
//! inside one task per channel, so results do not depend on the thread count.
//!
//! Running statistics are checkpointed as parameters: the checkpoint format
//! stores parameters only, so `running_mean` and `running_var` are
//! [`Param`]s with `decay = false` whose gradient is always zero. With a
//! zero gradient and no decay, SGD (with or without momentum or Nesterov),
//! Adam and AdamW all leave a value unchanged bit-exactly (the momentum and
//! moments stay zero, the step is `lr·0`); the layer alone writes them, in
//! training forwards. They are counted by `Network::num_params`.

use rayon::prelude::*;

use super::{channel_sum_pair, channel_sums, min_planes_per_task, split_batch, Layer, Param};
use crate::{NetError, Result, Tensor};

/// ε added to the variance.
pub const BN_EPS: f32 = 1e-5;
/// Weight of the new batch statistic in the running averages.
pub const BN_MOMENTUM: f32 = 0.1;

/// Batch normalisation of `[N, C, H, W]` per channel.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    name: String,
    channels: usize,
    /// `γ [C]`, starts at 1.
    pub gamma: Param,
    /// `β [C]`, starts at 0.
    pub beta: Param,
    /// Running mean `[C]`, starts at 0; non-trainable (gradient always 0).
    pub running_mean: Param,
    /// Running (unbiased) variance `[C]`, starts at 1; non-trainable.
    pub running_var: Param,
    /// Backward cache: `x̂` of the last training forward, `[N, C, H, W]`.
    cache_xhat: Vec<f32>,
    /// Backward cache: `1/sqrt(σ²+ε)` per channel.
    cache_inv_std: Vec<f32>,
    /// Backward cache: the input shape of the last training forward.
    cache_shape: Vec<usize>,
}

impl BatchNorm2d {
    /// A layer for `channels` channels: `γ = 1`, `β = 0`, running mean 0,
    /// running variance 1. Parameters are `name.weight` (γ), `name.bias`
    /// (β), `name.running_mean` and `name.running_var`, none decayed.
    pub fn new(name: &str, channels: usize) -> BatchNorm2d {
        let mut gamma = Param::zeros(format!("{name}.weight"), &[channels], false);
        gamma.value.fill(1.0);
        let mut running_var = Param::zeros(format!("{name}.running_var"), &[channels], false);
        running_var.value.fill(1.0);
        BatchNorm2d {
            name: name.to_string(),
            channels,
            gamma,
            beta: Param::zeros(format!("{name}.bias"), &[channels], false),
            running_mean: Param::zeros(format!("{name}.running_mean"), &[channels], false),
            running_var,
            cache_xhat: Vec::new(),
            cache_inv_std: Vec::new(),
            cache_shape: Vec::new(),
        }
    }

    /// Channels C.
    pub fn channels(&self) -> usize {
        self.channels
    }

    fn check_sample(&self, sample: &[usize]) -> Result<()> {
        if sample.len() != 3 || sample[0] != self.channels {
            return Err(NetError::shape(format!(
                "{}: expected samples [{}, H, W], got {sample:?}",
                self.name, self.channels
            )));
        }
        Ok(())
    }
}

impl Layer for BatchNorm2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!("BatchNorm2d({})", self.channels)
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        self.check_sample(sample)?;
        Ok(sample.to_vec())
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Norm);
        let (n, sample) = split_batch(&self.name, x)?;
        self.check_sample(sample)?;
        let (c, plane) = (self.channels, sample[1] * sample[2]);
        let mut y = Tensor::zeros(&x.shape);
        if !train {
            let scale: Vec<f32> = (0..c)
                .map(|ch| self.gamma.value[ch] / (self.running_var.value[ch] + BN_EPS).sqrt())
                .collect();
            let (mean, beta) = (&self.running_mean.value, &self.beta.value);
            y.data
                .par_chunks_mut(plane)
                .zip(x.data.par_chunks(plane))
                .enumerate()
                .with_min_len(min_planes_per_task(plane))
                .for_each(|(p, (out, inp))| {
                    let ch = p % c;
                    for (o, &v) in out.iter_mut().zip(inp) {
                        *o = (v - mean[ch]) * scale[ch] + beta[ch];
                    }
                });
            return Ok(y);
        }
        let m = n * plane;
        if m < 2 {
            return Err(NetError::shape(format!(
                "{}: training needs more than one value per channel, got input {:?}",
                self.name, x.shape
            )));
        }
        let inv_m = 1.0 / m as f32;
        let xd = &x.data;
        let mean: Vec<f32> = channel_sums(n, c, plane, xd, None, |_, v, _| v)
            .into_iter()
            .map(|s| s * inv_m)
            .collect();
        let var: Vec<f32> = channel_sums(n, c, plane, xd, None, |ch, v, _| {
            let d = v - mean[ch];
            d * d
        })
        .into_iter()
        .map(|s| s * inv_m)
        .collect();
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + BN_EPS).sqrt()).collect();
        self.cache_xhat.resize(x.len(), 0.0);
        let (gamma, beta) = (&self.gamma.value, &self.beta.value);
        y.data
            .par_chunks_mut(plane)
            .zip(self.cache_xhat.par_chunks_mut(plane))
            .zip(x.data.par_chunks(plane))
            .enumerate()
            .with_min_len(min_planes_per_task(plane))
            .for_each(|(p, ((out, xhat), inp))| {
                let ch = p % c;
                for ((o, h), &v) in out.iter_mut().zip(xhat.iter_mut()).zip(inp) {
                    *h = (v - mean[ch]) * inv_std[ch];
                    *o = gamma[ch] * *h + beta[ch];
                }
            });
        let unbias = m as f32 / (m - 1) as f32;
        for ch in 0..c {
            let rm = &mut self.running_mean.value[ch];
            *rm = (1.0 - BN_MOMENTUM) * *rm + BN_MOMENTUM * mean[ch];
            let rv = &mut self.running_var.value[ch];
            *rv = (1.0 - BN_MOMENTUM) * *rv + BN_MOMENTUM * var[ch] * unbias;
        }
        self.cache_inv_std = inv_std;
        self.cache_shape.clone_from(&x.shape);
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Norm);
        if self.cache_shape.is_empty() || dy.shape != self.cache_shape {
            return Err(NetError::shape(format!(
                "{}: backward expected dy {:?} (after a training forward), got {:?}",
                self.name, self.cache_shape, dy.shape
            )));
        }
        let (n, c) = (self.cache_shape[0], self.channels);
        let plane = self.cache_shape[2] * self.cache_shape[3];
        let dyd = &dy.data;
        let xhat = &self.cache_xhat;
        let (dbeta, dgamma) =
            channel_sum_pair(n, c, plane, dyd, Some(xhat), |_, g, _| g, |_, g, h| g * h);
        // Running statistics are not trained: their gradient stays zero.
        self.running_mean.grad.fill(0.0);
        self.running_var.grad.fill(0.0);
        let result = if need_input_grad {
            let inv_m = 1.0 / (n * plane) as f32;
            let gamma = &self.gamma.value;
            let inv_std = &self.cache_inv_std;
            let mut dx = Tensor::zeros(&dy.shape);
            dx.data
                .par_chunks_mut(plane)
                .zip(dyd.par_chunks(plane))
                .zip(xhat.par_chunks(plane))
                .enumerate()
                .with_min_len(min_planes_per_task(plane))
                .for_each(|(p, ((out, g), h))| {
                    let ch = p % c;
                    let k = gamma[ch] * inv_std[ch];
                    let (mb, mg) = (dbeta[ch] * inv_m, dgamma[ch] * inv_m);
                    for ((o, &g), &h) in out.iter_mut().zip(g).zip(h) {
                        *o = k * (g - mb - h * mg);
                    }
                });
            Some(dx)
        } else {
            None
        };
        self.beta.grad = dbeta;
        self.gamma.grad = dgamma;
        Ok(result)
    }

    fn params(&self) -> Vec<&Param> {
        vec![
            &self.gamma,
            &self.beta,
            &self.running_mean,
            &self.running_var,
        ]
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![
            &mut self.gamma,
            &mut self.beta,
            &mut self.running_mean,
            &mut self.running_var,
        ]
    }
}
