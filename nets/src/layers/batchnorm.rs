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

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::{
    channel_sum_pair, min_planes_per_task, plane_sums_k, planes_by_channel, split_batch, Layer,
    Param,
};
use crate::vector::widened;
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
        if !train {
            let mut y = Tensor::zeros(&x.shape);
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
                    eval_plane(out, inp, mean[ch], scale[ch], beta[ch]);
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
        // One task per channel computes the mean, then the variance, then
        // writes the channel's outputs, so that the second and third reads
        // of the channel find it in the core's cache. The sums take
        // `channel_sums`'s order.
        let len = x.len();
        let mut out: Vec<f32> = Vec::with_capacity(len);
        self.cache_xhat.resize(len, 0.0);
        let (gamma, beta) = (&self.gamma.value, &self.beta.value);
        let xs = planes_by_channel(x.data.chunks(plane), c);
        let ys = planes_by_channel(out.spare_capacity_mut()[..len].chunks_mut(plane), c);
        let hs = planes_by_channel(self.cache_xhat.chunks_mut(plane), c);
        let mut stats: Vec<(f32, f32, f32)> = Vec::with_capacity(c);
        xs.into_par_iter()
            .zip(ys)
            .zip(hs)
            .enumerate()
            .map(|(ch, ((xs, mut ys), mut hs))| {
                train_channel(&xs, &mut ys, &mut hs, inv_m, gamma[ch], beta[ch])
            })
            .collect_into_vec(&mut stats);
        // SAFETY: the planes of every channel cover `out[..len]`, and each
        // of their elements was written above.
        unsafe { out.set_len(len) };
        let y = Tensor {
            shape: x.shape.clone(),
            data: out,
        };
        let unbias = m as f32 / (m - 1) as f32;
        self.cache_inv_std.clear();
        for (ch, &(mean, var, inv_std)) in stats.iter().enumerate() {
            let rm = &mut self.running_mean.value[ch];
            *rm = (1.0 - BN_MOMENTUM) * *rm + BN_MOMENTUM * mean;
            let rv = &mut self.running_var.value[ch];
            *rv = (1.0 - BN_MOMENTUM) * *rv + BN_MOMENTUM * var * unbias;
            self.cache_inv_std.push(inv_std);
        }
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
        let result = if need_input_grad {
            // One task per channel: the two sums, then the channel's input
            // gradient while its `dy` and `x̂` are in the core's cache.
            let inv_m = 1.0 / (n * plane) as f32;
            let gamma = &self.gamma.value;
            let inv_std = &self.cache_inv_std;
            let len = dyd.len();
            let mut out: Vec<f32> = Vec::with_capacity(len);
            let gs = planes_by_channel(dyd.chunks(plane), c);
            let hs = planes_by_channel(xhat.chunks(plane), c);
            let os = planes_by_channel(out.spare_capacity_mut()[..len].chunks_mut(plane), c);
            let mut sums: Vec<(f32, f32)> = Vec::with_capacity(c);
            gs.into_par_iter()
                .zip(hs)
                .zip(os)
                .enumerate()
                .map(|(ch, ((gs, hs), mut os))| {
                    let k = gamma[ch] * inv_std[ch];
                    backward_channel(&gs, &hs, &mut os, inv_m, k)
                })
                .collect_into_vec(&mut sums);
            // SAFETY: the planes of every channel cover `out[..len]`, and
            // each of their elements was written above.
            unsafe { out.set_len(len) };
            let (dbeta, dgamma) = sums.into_iter().unzip();
            (
                dbeta,
                dgamma,
                Some(Tensor {
                    shape: dy.shape.clone(),
                    data: out,
                }),
            )
        } else {
            let (dbeta, dgamma) =
                channel_sum_pair(n, c, plane, dyd, Some(xhat), |_, g, _| g, |_, g, h| g * h);
            (dbeta, dgamma, None)
        };
        // Running statistics are not trained: their gradient stays zero.
        self.running_mean.grad.fill(0.0);
        self.running_var.grad.fill(0.0);
        let (dbeta, dgamma, result) = result;
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

widened! {
    /// Training forward of one channel, given its planes in batch order:
    /// the mean, then the (biased) variance, each summed in
    /// `channel_sums`'s order, then `x̂` and `y = γ·x̂ + β` written. Returns
    /// `(μ, σ², 1/sqrt(σ²+ε))`.
    fn train_channel(
        xs: &[&[f32]],
        ys: &mut [&mut [MaybeUninit<f32>]],
        hs: &mut [&mut [f32]],
        inv_m: f32,
        gamma: f32,
        beta: f32,
    ) -> (f32, f32, f32) {
        let pairs = || xs.iter().map(|p| (*p, *p));
        let [sum] = plane_sums_k(pairs(), |v, _| [v]);
        let mean = sum * inv_m;
        let [sq] = plane_sums_k(pairs(), |v, _| {
            let d = v - mean;
            [d * d]
        });
        let var = sq * inv_m;
        let inv_std = 1.0 / (var + BN_EPS).sqrt();
        for ((xp, yp), hp) in xs.iter().zip(ys.iter_mut()).zip(hs.iter_mut()) {
            for ((o, h), &v) in yp.iter_mut().zip(hp.iter_mut()).zip(*xp) {
                *h = (v - mean) * inv_std;
                o.write(gamma * *h + beta);
            }
        }
        (mean, var, inv_std)
    }
}

widened! {
    /// Backward of one channel, given its planes of `dy` and `x̂` in batch
    /// order: `dβ = Σdy` and `dγ = Σdy·x̂` (in `channel_sums`'s order), then
    /// `dx = k·(dy - dβ/m - x̂·dγ/m)` with `k = γ/sqrt(σ²+ε)`. Returns
    /// `(dβ, dγ)`.
    fn backward_channel(
        gs: &[&[f32]],
        hs: &[&[f32]],
        os: &mut [&mut [MaybeUninit<f32>]],
        inv_m: f32,
        k: f32,
    ) -> (f32, f32) {
        let pairs = gs.iter().zip(hs).map(|(g, h)| (*g, *h));
        let [db, dg] = plane_sums_k(pairs, |g, h| [g, g * h]);
        let (mb, mg) = (db * inv_m, dg * inv_m);
        for ((op, gp), hp) in os.iter_mut().zip(gs).zip(hs) {
            for ((o, &g), &h) in op.iter_mut().zip(*gp).zip(*hp) {
                o.write(k * (g - mb - h * mg));
            }
        }
        (db, dg)
    }
}

widened! {
    /// Inference of one plane: `y = (x - mean)·scale + β`.
    fn eval_plane(out: &mut [f32], inp: &[f32], mean: f32, scale: f32, beta: f32) {
        for (o, &v) in out.iter_mut().zip(inp) {
            *o = (v - mean) * scale + beta;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every compiled version of the per-channel loops against the
    /// portable one, on random planes whose sizes leave partial lane
    /// groups: the same bits (outputs, caches and sums).
    #[test]
    fn every_vector_width_gives_the_bits_of_the_portable_loops() {
        type TrainFn = unsafe fn(
            &[&[f32]],
            &mut [&mut [MaybeUninit<f32>]],
            &mut [&mut [f32]],
            f32,
            f32,
            f32,
        ) -> (f32, f32, f32);
        type BackFn =
            unsafe fn(&[&[f32]], &[&[f32]], &mut [&mut [MaybeUninit<f32>]], f32, f32) -> (f32, f32);
        let mut versions: Vec<(&str, TrainFn, BackFn)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                versions.push(("avx512", train_channel::avx512, backward_channel::avx512));
            }
            if std::is_x86_feature_detected!("avx2") {
                versions.push(("avx2", train_channel::avx2, backward_channel::avx2));
            }
        }
        if versions.is_empty() {
            eprintln!("skipped: this CPU has neither AVX2 nor AVX-512, only the portable loops");
            return;
        }
        let mut rng =
            crate::rng::test_rng("every_vector_width_gives_the_bits_of_the_portable_loops");
        for _ in 0..30 {
            let n = rng.gen_range(1..4);
            let plane = [3, 16, 21, 49, 64][rng.gen_range(0..5)];
            let mut gen = |scale: f32| -> Vec<f32> {
                (0..n * plane)
                    .map(|_| rng.gen_range(-scale..scale))
                    .collect()
            };
            let (x, g) = (gen(4.0), gen(1.0));
            let (inv_m, gamma, beta) = (1.0 / (n * plane) as f32, 0.7, -0.2);
            let xs: Vec<&[f32]> = x.chunks(plane).collect();
            let run_train = |f: TrainFn| {
                let mut y = vec![MaybeUninit::new(f32::NAN); n * plane];
                let mut h = vec![f32::NAN; n * plane];
                let mut ys: Vec<&mut [MaybeUninit<f32>]> = y.chunks_mut(plane).collect();
                let mut hs: Vec<&mut [f32]> = h.chunks_mut(plane).collect();
                // SAFETY: the tests call only versions the CPU supports.
                let stats = unsafe { f(&xs, &mut ys, &mut hs, inv_m, gamma, beta) };
                // SAFETY: initialised above (and overwritten by `f`).
                let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
                let stats = [stats.0, stats.1, stats.2].map(f32::to_bits);
                (stats, bits(&y), bits(&h), h)
            };
            let want = run_train(train_channel::baseline);
            let hs: Vec<&[f32]> = want.3.chunks(plane).collect();
            let gs: Vec<&[f32]> = g.chunks(plane).collect();
            let run_back = |f: BackFn| {
                let mut o = vec![MaybeUninit::new(f32::NAN); n * plane];
                let mut os: Vec<&mut [MaybeUninit<f32>]> = o.chunks_mut(plane).collect();
                // SAFETY: as above.
                let sums = unsafe { f(&gs, &hs, &mut os, inv_m, 1.3) };
                // SAFETY: as above.
                let o: Vec<f32> = o.iter().map(|v| unsafe { v.assume_init() }).collect();
                (sums.0.to_bits(), sums.1.to_bits(), bits(&o))
            };
            let want_back = run_back(backward_channel::baseline);
            for (name, train, back) in &versions {
                let got = run_train(*train);
                assert_eq!(
                    (got.0, &got.1, &got.2),
                    (want.0, &want.1, &want.2),
                    "{name} forward, n {n}, plane {plane}"
                );
                assert_eq!(
                    run_back(*back),
                    want_back,
                    "{name} backward, n {n}, plane {plane}"
                );
            }
        }
    }
}
