//! 2-D max pooling, NCHW, no padding.
//!
//! Shapes: `x [N, C, H, W]`, `y [N, C, OH, OW]` with
//! `OH = (H - K) / S + 1` (likewise OW).
//!
//! - forward:  `y[n,c,oh,ow] = max over the K x K window at (oh·S, ow·S)`;
//!   the first maximum in row-major window order wins a tie; a NaN in the
//!   window gives NaN.
//! - backward: each `dy` goes to the input position that won its window
//!   (summed where windows overlap).

use rayon::prelude::*;

use super::{min_planes_per_task, split_batch, Layer};
use crate::{NetError, Result, Tensor};

/// Max pooling with a square `k x k` window and stride `s`.
#[derive(Debug, Clone)]
pub struct MaxPool2d {
    name: String,
    kernel: usize,
    stride: usize,
    /// Backward cache: for each output, the flat index into `x` of its
    /// maximum.
    cache_argmax: Vec<usize>,
    /// Backward cache: the input shape of the last training forward.
    cache_shape: Vec<usize>,
}

impl MaxPool2d {
    /// A `kernel x kernel` pool with stride `stride` (both at least 1).
    pub fn new(name: &str, kernel: usize, stride: usize) -> MaxPool2d {
        MaxPool2d {
            name: name.to_string(),
            kernel: kernel.max(1),
            stride: stride.max(1),
            cache_argmax: Vec::new(),
            cache_shape: Vec::new(),
        }
    }
}

/// Output side of a `k`-window, stride-`s` pool over `n` inputs, or an
/// error naming the layer.
pub(crate) fn pool_out(who: &str, sample: &[usize], k: usize, s: usize) -> Result<(usize, usize)> {
    if sample.len() != 3 || sample[1] < k || sample[2] < k {
        return Err(NetError::shape(format!(
            "{who}: expected samples [C, H, W] with H, W >= {k}, got {sample:?}"
        )));
    }
    Ok(((sample[1] - k) / s + 1, (sample[2] - k) / s + 1))
}

impl Layer for MaxPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!(
            "MaxPool2d({}x{}, stride {})",
            self.kernel, self.kernel, self.stride
        )
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        let (oh, ow) = pool_out(&self.name, sample, self.kernel, self.stride)?;
        Ok(vec![sample[0], oh, ow])
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Pooling);
        let (n, sample) = split_batch(&self.name, x)?;
        let (k, s) = (self.kernel, self.stride);
        let (oh_n, ow_n) = pool_out(&self.name, sample, k, s)?;
        let (c, h, w) = (sample[0], sample[1], sample[2]);
        let mut y = Tensor::zeros(&[n, c, oh_n, ow_n]);
        let plane_out = oh_n * ow_n;
        // Reuse the cache's buffer in training; evaluation leaves it alone.
        let mut argmax = if train {
            std::mem::take(&mut self.cache_argmax)
        } else {
            Vec::new()
        };
        argmax.clear();
        argmax.resize(y.len(), 0);
        // Planes are independent: one task per group of planes.
        y.data
            .par_chunks_mut(plane_out)
            .zip(argmax.par_chunks_mut(plane_out))
            .enumerate()
            .with_min_len(min_planes_per_task(h * w))
            .for_each(|(p, (out, arg))| {
                let base = p * h * w;
                let xp = &x.data[base..base + h * w];
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let start = oh * s * w + ow * s;
                        let (mut best, mut bv) = (start, xp[start]);
                        for kh in 0..k {
                            let row = start + kh * w;
                            for (kw, &v) in xp[row..row + k].iter().enumerate() {
                                // `>` keeps the first maximum; the first NaN
                                // wins, so that NaN propagates. Selects, not
                                // branches: which element wins is data, and
                                // mispredicted branches cost more than the
                                // comparisons.
                                let take = v > bv || (v.is_nan() && !bv.is_nan());
                                best = if take { row + kw } else { best };
                                bv = if take { v } else { bv };
                            }
                        }
                        out[oh * ow_n + ow] = bv;
                        arg[oh * ow_n + ow] = base + best;
                    }
                }
            });
        if train {
            self.cache_argmax = argmax;
            self.cache_shape.clone_from(&x.shape);
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Pooling);
        if dy.len() != self.cache_argmax.len() || self.cache_shape.is_empty() {
            return Err(NetError::shape(format!(
                "{}: backward got {:?} for {} cached outputs",
                self.name,
                dy.shape,
                self.cache_argmax.len()
            )));
        }
        if !need_input_grad {
            return Ok(None);
        }
        let mut dx = Tensor::zeros(&self.cache_shape);
        let plane_in = self.cache_shape[2] * self.cache_shape[3];
        let plane_out = dy.per_sample() / self.cache_shape[1];
        // Each output's maximum lies in its own plane, so planes are
        // independent; inside one, overlapping windows add in output order.
        dx.data
            .par_chunks_mut(plane_in)
            .zip(dy.data.par_chunks(plane_out))
            .zip(self.cache_argmax.par_chunks(plane_out))
            .enumerate()
            .with_min_len(min_planes_per_task(plane_in))
            .for_each(|(p, ((dxp, dyp), arg))| {
                let base = p * plane_in;
                for (&g, &idx) in dyp.iter().zip(arg) {
                    dxp[idx - base] += g;
                }
            });
        Ok(Some(dx))
    }
}
