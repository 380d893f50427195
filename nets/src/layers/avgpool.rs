//! 2-D average pooling, NCHW, no padding.
//!
//! Shapes: `x [N, C, H, W]`, `y [N, C, OH, OW]` with
//! `OH = (H - K) / S + 1` (likewise OW).
//!
//! - forward:  `y[n,c,oh,ow] = (1/K²) Σ_(kh,kw) x[n,c,oh·S+kh,ow·S+kw]`
//! - backward: `dx[n,c,oh·S+kh,ow·S+kw] += dy[n,c,oh,ow] / K²`

use super::maxpool::pool_out;
use super::{split_batch, Layer};
use crate::{NetError, Result, Tensor};

/// Average pooling with a square `k x k` window and stride `s`.
#[derive(Debug, Clone)]
pub struct AvgPool2d {
    name: String,
    kernel: usize,
    stride: usize,
    /// Backward cache: the input shape of the last training forward.
    cache_shape: Vec<usize>,
}

impl AvgPool2d {
    /// A `kernel x kernel` pool with stride `stride` (both at least 1).
    pub fn new(name: &str, kernel: usize, stride: usize) -> AvgPool2d {
        AvgPool2d {
            name: name.to_string(),
            kernel: kernel.max(1),
            stride: stride.max(1),
            cache_shape: Vec::new(),
        }
    }
}

impl Layer for AvgPool2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!(
            "AvgPool2d({}x{}, stride {})",
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
        let scale = 1.0 / (k * k) as f32;
        let mut y = Tensor::zeros(&[n, c, oh_n, ow_n]);
        for (p, out) in y.data.chunks_exact_mut(oh_n * ow_n).enumerate() {
            let plane = &x.data[p * h * w..(p + 1) * h * w];
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut acc = 0.0f32;
                    for kh in 0..k {
                        for kw in 0..k {
                            acc += plane[(oh * s + kh) * w + ow * s + kw];
                        }
                    }
                    out[oh * ow_n + ow] = acc * scale;
                }
            }
        }
        if train {
            self.cache_shape.clone_from(&x.shape);
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Pooling);
        let out = self
            .output_shape(self.cache_shape.get(1..).unwrap_or(&[]))
            .map_err(|_| {
                NetError::shape(format!("{}: backward before a training forward", self.name))
            })?;
        let want: Vec<usize> = [self.cache_shape[0]].into_iter().chain(out).collect();
        if dy.shape != want {
            return Err(NetError::shape(format!(
                "{}: backward expected dy {want:?}, got {:?}",
                self.name, dy.shape
            )));
        }
        if !need_input_grad {
            return Ok(None);
        }
        let (k, s) = (self.kernel, self.stride);
        let (h, w) = (self.cache_shape[2], self.cache_shape[3]);
        let (oh_n, ow_n) = (want[2], want[3]);
        let scale = 1.0 / (k * k) as f32;
        let mut dx = Tensor::zeros(&self.cache_shape);
        for (g_plane, dx_plane) in dy
            .data
            .chunks_exact(oh_n * ow_n)
            .zip(dx.data.chunks_exact_mut(h * w))
        {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let g = g_plane[oh * ow_n + ow] * scale;
                    for kh in 0..k {
                        for kw in 0..k {
                            dx_plane[(oh * s + kh) * w + ow * s + kw] += g;
                        }
                    }
                }
            }
        }
        Ok(Some(dx))
    }
}
