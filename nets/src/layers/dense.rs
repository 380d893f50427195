//! Fully connected layer.
//!
//! Shapes: `x [N, IN]`, `W [IN, OUT]` (row-major, so the forward product is
//! `x·W` with no transpose), `b [OUT]`, `y [N, OUT]`.
//!
//! - forward:        `y = x·W + b`            (`plan.forward`, operands x, W)
//! - input gradient: `dx = dy·Wᵀ`             (`plan.grad_input`, operands dy, W)
//! - weight gradient:`dW = xᵀ·dy`, `db = Σ_n dy[n]` (`plan.grad_weight`, operands x, dy)
//!
//! Transposes are strided views; nothing is copied.

use amsim::gemm::{gemm, MatMut, MatRef};
use amsim::MultiplierPlan;
use rand::Rng;

use super::quant::{quantized, QuantState};
use super::{split_batch, Layer, MacCounts, Param};
use crate::init::{self, Init};
use crate::{NetError, Result, Tensor};

/// `y = x·W + b`.
#[derive(Debug, Clone)]
pub struct Dense {
    name: String,
    in_features: usize,
    out_features: usize,
    plan: MultiplierPlan,
    /// `W [IN, OUT]`.
    pub weight: Param,
    /// `b [OUT]`.
    pub bias: Param,
    /// Backward cache: the input `x [N, IN]` of the last training forward.
    cache_x: Vec<f32>,
    /// Batch size of `cache_x`.
    cache_batch: usize,
    /// With the CUDA engine: the input and weights of the last training
    /// forward, on the device, for the backward products.
    gpu_cache: crate::device::GpuCache,
    /// Integer quantization (an `int8:`, `int12:` or `int16:` forward
    /// multiplier).
    quant: QuantState,
}

impl Dense {
    /// A layer with weights drawn by `init` from `rng` and zero biases.
    pub fn new<R: Rng + ?Sized>(
        name: &str,
        in_features: usize,
        out_features: usize,
        plan: MultiplierPlan,
        init: Init,
        rng: &mut R,
    ) -> Dense {
        let mut weight = Param::zeros(format!("{name}.weight"), &[in_features, out_features], true);
        init::fill(&mut weight.value, init, in_features, out_features, rng);
        Dense {
            name: name.to_string(),
            in_features,
            out_features,
            plan,
            weight,
            bias: Param::zeros(format!("{name}.bias"), &[out_features], false),
            cache_x: Vec::new(),
            cache_batch: 0,
            gpu_cache: crate::device::GpuCache(None),
            quant: QuantState::default(),
        }
    }

    /// Input features IN.
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// Output features OUT.
    pub fn out_features(&self) -> usize {
        self.out_features
    }
}

/// `db = Σ_n dy[n]` of `dy [N, OUT]`, summed in batch order.
fn bias_grad(db: &mut [f32], dy: &[f32]) {
    db.fill(0.0);
    for row in dy.chunks_exact(db.len()) {
        for (g, d) in db.iter_mut().zip(row) {
            *g += d;
        }
    }
}

impl Layer for Dense {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!("Dense({} -> {})", self.in_features, self.out_features)
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        if sample != [self.in_features] {
            return Err(NetError::shape(format!(
                "{}: expected {} input features, got a sample of shape {sample:?}",
                self.name, self.in_features
            )));
        }
        Ok(vec![self.out_features])
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Bias);
        let (n, sample) = split_batch(&self.name, x)?;
        self.output_shape(sample)?;
        let (inf, outf) = (self.in_features, self.out_features);
        let mut y = Tensor::zeros(&[n, outf]);
        self.gpu_cache = crate::device::GpuCache(None);
        if quantized(&self.name, &self.plan)? {
            let w = &self.weight.value;
            self.quant
                .dense_forward(&self.plan, &x.data, w, &mut y.data, n, inf, outf, train)?;
        } else if let Some(eng) = crate::device::cuda() {
            let gx = eng.upload(&x.data)?;
            let gw = eng.upload(&self.weight.value)?;
            let mut gy = eng.alloc(y.data.len())?;
            eng.gemm_dev(
                &self.plan.forward,
                n,
                outf,
                inf,
                &gx,
                false,
                &gw,
                false,
                &mut gy,
                false,
            )?;
            eng.download(&gy, &mut y.data)?;
            if train {
                self.gpu_cache = crate::device::GpuCache(Some((gx, gw)));
            }
        } else {
            gemm(
                &self.plan.forward,
                MatRef::row_major(&x.data, n, inf)?,
                MatRef::row_major(&self.weight.value, inf, outf)?,
                MatMut::row_major(&mut y.data, n, outf)?,
                false,
            )?;
        }
        for row in y.data.chunks_exact_mut(outf) {
            for (v, b) in row.iter_mut().zip(&self.bias.value) {
                *v += b;
            }
        }
        if train {
            self.cache_x.clear();
            if self.gpu_cache.0.is_none() {
                self.cache_x.extend_from_slice(&x.data);
            }
            self.cache_batch = n;
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Bias);
        let (n, outf, inf) = (self.cache_batch, self.out_features, self.in_features);
        if dy.shape != [n, outf] {
            return Err(NetError::shape(format!(
                "{}: backward expected dy [{n}, {outf}] (after a training forward), got {:?}",
                self.name, dy.shape
            )));
        }
        if quantized(&self.name, &self.plan)? {
            let dx = self.quant.dense_backward(
                &self.name,
                &self.plan,
                &self.cache_x,
                &self.weight.value,
                &dy.data,
                &mut self.weight.grad,
                n,
                inf,
                outf,
                need_input_grad,
            )?;
            bias_grad(&mut self.bias.grad, &dy.data);
            return dx.map(|d| Tensor::from_vec(&[n, inf], d)).transpose();
        }
        // On the GPU: dy goes up once for both products.
        let gpu = match (&self.gpu_cache.0, crate::device::cuda()) {
            (Some(cache), Some(eng)) => Some((cache, eng.upload(&dy.data)?, eng)),
            _ => None,
        };
        // dW [IN, OUT] = xᵀ [IN, N] · dy [N, OUT]
        if let Some(((gx, _), gdy, eng)) = &gpu {
            let mut gdw = eng.alloc(self.weight.grad.len())?;
            eng.gemm_dev(
                &self.plan.grad_weight,
                inf,
                outf,
                n,
                gx,
                true,
                gdy,
                false,
                &mut gdw,
                false,
            )?;
            eng.download(&gdw, &mut self.weight.grad)?;
        } else {
            gemm(
                &self.plan.grad_weight,
                MatRef::row_major(&self.cache_x, n, inf)?.t(),
                MatRef::row_major(&dy.data, n, outf)?,
                MatMut::row_major(&mut self.weight.grad, inf, outf)?,
                false,
            )?;
        }
        bias_grad(&mut self.bias.grad, &dy.data);
        if !need_input_grad {
            return Ok(None);
        }
        // dx [N, IN] = dy [N, OUT] · Wᵀ [OUT, IN]
        let mut dx = Tensor::zeros(&[n, inf]);
        if let Some(((_, gw), gdy, eng)) = &gpu {
            let mut gdx = eng.alloc(dx.data.len())?;
            eng.gemm_dev(
                &self.plan.grad_input,
                n,
                inf,
                outf,
                gdy,
                false,
                gw,
                true,
                &mut gdx,
                false,
            )?;
            eng.download(&gdx, &mut dx.data)?;
        } else {
            gemm(
                &self.plan.grad_input,
                MatRef::row_major(&dy.data, n, outf)?,
                MatRef::row_major(&self.weight.value, inf, outf)?.t(),
                MatMut::row_major(&mut dx.data, n, inf)?,
                false,
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

    fn macs(&self, _sample: &[usize]) -> MacCounts {
        let m = (self.in_features * self.out_features) as u64;
        MacCounts {
            forward: m,
            grad_input: m,
            grad_weight: m,
        }
    }
}
