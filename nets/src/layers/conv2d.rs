//! 2-D convolution (cross-correlation), NCHW.
//!
//! Shapes: `x [N, C_in, H, W]`, `W [C_out, C_in/groups, KH, KW]`,
//! `b [C_out]`, `y [N, C_out, OH, OW]` with
//! `OH = (H + 2·pad - dil·(KH-1) - 1) / stride + 1` (likewise OW).
//!
//! - forward:         `y = conv(x, W) + b`   (`plan.forward`, operands x, W)
//! - input gradient:  `dx = conv_transpose(dy, W)` (`plan.grad_input`, operands dy, W)
//! - weight gradient: `dW = corr(x, dy)`, `db[o] = Σ_(n,oh,ow) dy[n,o,oh,ow]`
//!   (`plan.grad_weight`, operands x, dy)
//!
//! The three products are `amsim::conv`'s; see that module for the exact
//! summation order.

use amsim::conv::{conv2d_forward, conv2d_grad_input, conv2d_grad_weight, Conv2dShape};
use amsim::MultiplierPlan;
use rand::Rng;

use rayon::prelude::*;

use super::quant::{quantized, QuantState};
use super::{channel_sums, min_planes_per_task, split_batch, Layer, MacCounts, Param};
use crate::init::{self, Init};
use crate::{NetError, Result, Tensor};

/// The hyper-parameters of a convolution layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// Input channels C_in.
    pub in_channels: usize,
    /// Output channels C_out.
    pub out_channels: usize,
    /// Kernel (KH, KW).
    pub kernel: (usize, usize),
    /// Stride (vertical, horizontal).
    pub stride: (usize, usize),
    /// Zero padding on each side (vertical, horizontal).
    pub padding: (usize, usize),
    /// Dilation (vertical, horizontal).
    pub dilation: (usize, usize),
    /// Groups (C_in for depthwise).
    pub groups: usize,
}

impl Conv2dSpec {
    /// A square `k x k` kernel, stride 1, no padding, dilation 1, one group.
    pub fn square(in_channels: usize, out_channels: usize, k: usize) -> Conv2dSpec {
        Conv2dSpec {
            in_channels,
            out_channels,
            kernel: (k, k),
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }

    /// The same spec with this stride in both directions.
    pub fn stride(mut self, s: usize) -> Conv2dSpec {
        self.stride = (s, s);
        self
    }

    /// The same spec with this padding on every side.
    pub fn padding(mut self, p: usize) -> Conv2dSpec {
        self.padding = (p, p);
        self
    }

    /// The `amsim` geometry for a batch of `n` images of `h x w`.
    pub fn shape(&self, n: usize, h: usize, w: usize) -> Conv2dShape {
        Conv2dShape {
            batch: n,
            in_channels: self.in_channels,
            in_h: h,
            in_w: w,
            out_channels: self.out_channels,
            kernel_h: self.kernel.0,
            kernel_w: self.kernel.1,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }
}

/// `y = conv(x, W) + b`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    name: String,
    spec: Conv2dSpec,
    plan: MultiplierPlan,
    /// `W [C_out, C_in/groups, KH, KW]`.
    pub weight: Param,
    /// `b [C_out]`.
    pub bias: Param,
    /// Whether the bias is added and trained ([`Conv2d::without_bias`]
    /// clears it).
    biased: bool,
    /// Backward cache: the input `x` of the last training forward.
    cache_x: Vec<f32>,
    /// Backward cache: the geometry of that forward.
    cache_shape: Option<Conv2dShape>,
    /// With the CUDA engine: the input and weights of the last training
    /// forward, on the device, for the backward products.
    gpu_cache: crate::device::GpuCache,
    /// Integer quantization (an `int8:`, `int12:` or `int16:` forward
    /// multiplier).
    quant: QuantState,
}

impl Conv2d {
    /// A layer with weights drawn by `init` from `rng` (fan-in
    /// `C_in/groups·KH·KW`, fan-out `C_out/groups·KH·KW`) and zero biases;
    /// an error if the channel counts do not divide by the groups.
    pub fn new<R: Rng + ?Sized>(
        name: &str,
        spec: Conv2dSpec,
        plan: MultiplierPlan,
        init: Init,
        rng: &mut R,
    ) -> Result<Conv2d> {
        let g = spec.groups;
        if g == 0 || spec.in_channels % g != 0 || spec.out_channels % g != 0 {
            return Err(NetError::Config(format!(
                "{name}: groups {g} must divide in_channels {} and out_channels {}",
                spec.in_channels, spec.out_channels
            )));
        }
        let (kh, kw) = spec.kernel;
        let cpg = spec.in_channels / g;
        let mut weight = Param::zeros(
            format!("{name}.weight"),
            &[spec.out_channels, cpg, kh, kw],
            true,
        );
        let fan_in = cpg * kh * kw;
        let fan_out = spec.out_channels / g * kh * kw;
        init::fill(&mut weight.value, init, fan_in, fan_out, rng);
        Ok(Conv2d {
            name: name.to_string(),
            spec,
            plan,
            weight,
            bias: Param::zeros(format!("{name}.bias"), &[spec.out_channels], false),
            biased: true,
            cache_x: Vec::new(),
            cache_shape: None,
            gpu_cache: crate::device::GpuCache(None),
            quant: QuantState::default(),
        })
    }

    /// The layer with no bias: its bias stays zero, is not added and gets
    /// no gradient (a convolution followed by batch norm, whose β plays its
    /// role). The outputs are the same bits as adding the zero bias: a sum
    /// that starts at `+0.0` is never `-0.0`, so `y + 0.0 == y`; the layer
    /// only skips that pass over its output and the bias-gradient pass over
    /// its output gradient.
    pub fn without_bias(mut self) -> Conv2d {
        self.biased = false;
        self
    }

    /// The layer's hyper-parameters.
    pub fn spec(&self) -> &Conv2dSpec {
        &self.spec
    }

    /// The geometry for a batch of `n` samples of shape `sample`.
    fn geometry(&self, n: usize, sample: &[usize]) -> Result<Conv2dShape> {
        if sample.len() != 3 || sample[0] != self.spec.in_channels {
            return Err(NetError::shape(format!(
                "{}: expected samples [{}, H, W], got {sample:?}",
                self.name, self.spec.in_channels
            )));
        }
        let s = self.spec.shape(n, sample[1], sample[2]);
        s.validate()
            .map_err(|e| NetError::shape(format!("{}: {e}", self.name)))?;
        Ok(s)
    }
}

impl Conv2d {
    /// The forward output (products, then the bias) and the geometry, for
    /// both forwards; with `train` on the GPU, the device operands are kept
    /// for the backward pass. The caller keeps `x` (or not).
    fn output(&mut self, x: &Tensor, train: bool) -> Result<(Tensor, Conv2dShape)> {
        let _span = amsim::timing::span(amsim::timing::Op::Bias);
        let (n, sample) = split_batch(&self.name, x)?;
        let s = self.geometry(n, sample)?;
        let (oh, ow) = (s.out_h(), s.out_w());
        let mut y = Tensor::zeros(&[n, s.out_channels, oh, ow]);
        self.gpu_cache = crate::device::GpuCache(None);
        if quantized(&self.name, &self.plan)? {
            let w = &self.weight.value;
            self.quant
                .conv_forward(&self.plan, &s, &x.data, w, &mut y.data, train)?;
        } else if let Some(eng) = crate::device::cuda() {
            let dx = eng.upload(&x.data)?;
            let dw = eng.upload(&self.weight.value)?;
            let mut dy = eng.alloc(y.data.len())?;
            eng.conv2d_forward_dev(&self.plan.forward, &s, &dx, &dw, &mut dy)?;
            eng.download(&dy, &mut y.data)?;
            if train {
                self.gpu_cache = crate::device::GpuCache(Some((dx, dw)));
            }
        } else {
            conv2d_forward(
                &self.plan.forward,
                &s,
                &x.data,
                &self.weight.value,
                &mut y.data,
            )?;
        }
        let plane = oh * ow;
        let bias = &self.bias.value;
        if self.biased {
            y.data
                .par_chunks_mut(plane)
                .enumerate()
                .with_min_len(min_planes_per_task(plane))
                .for_each(|(i, chunk)| {
                    let b = bias[i % s.out_channels];
                    for v in chunk {
                        *v += b;
                    }
                });
        }
        Ok((y, s))
    }
}

impl Layer for Conv2d {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        let s = &self.spec;
        format!(
            "Conv2d({} -> {}, {}x{}, stride {:?}, pad {:?}{})",
            s.in_channels,
            s.out_channels,
            s.kernel.0,
            s.kernel.1,
            s.stride,
            s.padding,
            if s.groups > 1 {
                format!(", groups {}", s.groups)
            } else {
                String::new()
            }
        )
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        let s = self.geometry(1, sample)?;
        Ok(vec![s.out_channels, s.out_h(), s.out_w()])
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (y, s) = self.output(x, train)?;
        if train {
            self.cache_x.clear();
            if self.gpu_cache.0.is_none() {
                self.cache_x.extend_from_slice(&x.data);
            }
            self.cache_shape = Some(s);
        }
        Ok(y)
    }

    fn forward_owned(&mut self, x: Tensor, train: bool) -> Result<Tensor> {
        let (y, s) = self.output(&x, train)?;
        if train {
            // The input is kept for the weight gradient by moving it in.
            self.cache_x = if self.gpu_cache.0.is_none() {
                x.data
            } else {
                Vec::new()
            };
            self.cache_shape = Some(s);
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Bias);
        let s = self.cache_shape.ok_or_else(|| {
            NetError::shape(format!("{}: backward before a training forward", self.name))
        })?;
        let want = [s.batch, s.out_channels, s.out_h(), s.out_w()];
        if dy.shape != want {
            return Err(NetError::shape(format!(
                "{}: backward expected dy {want:?}, got {:?}",
                self.name, dy.shape
            )));
        }
        let quantized = quantized(&self.name, &self.plan)?;
        let mut quant_dx = None;
        if quantized {
            quant_dx = self.quant.conv_backward(
                &self.name,
                &self.plan,
                &s,
                &self.cache_x,
                &self.weight.value,
                &dy.data,
                &mut self.weight.grad,
                need_input_grad,
            )?;
        }
        // On the GPU: dy goes up once for both products.
        let gpu = match (&self.gpu_cache.0, crate::device::cuda()) {
            (Some(cache), Some(eng)) => Some((cache, eng.upload(&dy.data)?, eng)),
            _ => None,
        };
        if quantized {
            // The weight gradient is the quantized backward's.
        } else if let Some(((gx, _), gdy, eng)) = &gpu {
            let mut gdw = eng.alloc(self.weight.grad.len())?;
            eng.conv2d_grad_weight_dev(&self.plan.grad_weight, &s, gx, gdy, &mut gdw)?;
            eng.download(&gdw, &mut self.weight.grad)?;
        } else {
            conv2d_grad_weight(
                &self.plan.grad_weight,
                &s,
                &self.cache_x,
                &dy.data,
                &mut self.weight.grad,
            )?;
        }
        // db[o] = Σ over the batch and the plane, in an order fixed by the
        // shapes (see `channel_sums`), not by the threads.
        let plane = s.out_h() * s.out_w();
        if self.biased {
            self.bias.grad =
                channel_sums(s.batch, s.out_channels, plane, &dy.data, None, |_, g, _| g);
        }
        if !need_input_grad {
            return Ok(None);
        }
        let dx_shape = [s.batch, s.in_channels, s.in_h, s.in_w];
        if let Some(dx) = quant_dx {
            return Ok(Some(Tensor::from_vec(&dx_shape, dx)?));
        }
        let mut dx = Tensor::zeros(&dx_shape);
        if let Some(((_, gw), gdy, eng)) = &gpu {
            let mut gdx = eng.alloc(dx.data.len())?;
            eng.conv2d_grad_input_dev(&self.plan.grad_input, &s, gdy, gw, &mut gdx)?;
            eng.download(&gdx, &mut dx.data)?;
        } else {
            conv2d_grad_input(
                &self.plan.grad_input,
                &s,
                &dy.data,
                &self.weight.value,
                &mut dx.data,
            )?;
        }
        Ok(Some(dx))
    }

    fn params(&self) -> Vec<&Param> {
        vec![&self.weight, &self.bias]
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.weight, &mut self.bias]
    }

    fn plan(&self) -> Option<&MultiplierPlan> {
        Some(&self.plan)
    }

    fn set_plan(&mut self, plan: MultiplierPlan) -> bool {
        self.plan = plan;
        true
    }

    fn set_calibration(&mut self, on: bool) {
        self.quant.set_calibration(on);
    }

    fn macs(&self, sample: &[usize]) -> MacCounts {
        match self.geometry(1, sample) {
            Ok(s) => MacCounts {
                forward: s.macs(),
                grad_input: s.macs(),
                grad_weight: s.macs(),
            },
            Err(_) => MacCounts::default(),
        }
    }
}
