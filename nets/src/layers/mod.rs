//! Layers: one file per kind, forward and backward side by side.
//!
//! A layer is called as `y = forward(x, train)` and then
//! `dx = backward(dy, need_input_grad)`; `forward` keeps in the layer
//! whatever `backward` needs (named `cache` fields), `backward` overwrites
//! the gradients of the layer's parameters (it does not accumulate: every
//! layer appears once in a network). The first layer of a network is asked
//! for no input gradient, which saves its input-gradient product.
//!
//! Matrix products and convolutions go through `amsim` with the layer's
//! [`MultiplierPlan`]: `plan.forward` for the forward product,
//! `plan.grad_input` for the input gradient and `plan.grad_weight` for the
//! weight gradient, operand order as in DESIGN.md. Bias additions,
//! activations, pooling and the loss are plain FP32.

pub mod attention;
pub mod avgpool;
pub mod batchnorm;
pub mod conv2d;
pub mod dense;
pub mod dropout;
pub mod embedding;
pub mod flatten;
pub mod gelu;
pub mod global_avgpool;
pub mod layernorm;
pub mod loss;
pub mod maxpool;
pub mod relu;
pub mod residual;
pub mod shortcut;

pub use attention::CausalSelfAttention;
pub use avgpool::AvgPool2d;
pub use batchnorm::BatchNorm2d;
pub use conv2d::Conv2d;
pub use dense::Dense;
pub use dropout::Dropout;
pub use embedding::Embedding;
pub use flatten::Flatten;
pub use gelu::Gelu;
pub use global_avgpool::GlobalAvgPool;
pub use layernorm::LayerNorm;
pub use loss::{
    softmax_cross_entropy, softmax_cross_entropy_smoothed, softmax_cross_entropy_tokens, LossOutput,
};
pub use maxpool::MaxPool2d;
pub use relu::Relu;
pub use residual::{ResidualBlock, BOTTLENECK_EXPANSION};
pub use shortcut::ShortcutKind;

use amsim::MultiplierPlan;

use crate::{Result, Tensor};

/// A trainable parameter: its values and the gradient of the loss with
/// respect to them, of the same length.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Qualified name, `layer.weight` or `layer.bias`.
    pub name: String,
    /// Shape, for reports and checkpoints.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub value: Vec<f32>,
    /// Gradient from the last backward pass.
    pub grad: Vec<f32>,
    /// Whether weight decay applies (weights yes, biases no, as is usual).
    pub decay: bool,
}

impl Param {
    /// A zero-initialised parameter.
    pub fn zeros(name: String, shape: &[usize], decay: bool) -> Param {
        let n = shape.iter().product();
        Param {
            name,
            shape: shape.to_vec(),
            value: vec![0.0; n],
            grad: vec![0.0; n],
            decay,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.value.len()
    }

    /// Whether the parameter is empty.
    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// Multiply-accumulates of one image through a layer, per product role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MacCounts {
    /// Forward product.
    pub forward: u64,
    /// Input-gradient product.
    pub grad_input: u64,
    /// Weight-gradient product.
    pub grad_weight: u64,
}

impl MacCounts {
    /// All three roles together.
    pub fn total(&self) -> u64 {
        self.forward + self.grad_input + self.grad_weight
    }
}

impl std::ops::AddAssign for MacCounts {
    fn add_assign(&mut self, o: MacCounts) {
        self.forward += o.forward;
        self.grad_input += o.grad_input;
        self.grad_weight += o.grad_weight;
    }
}

/// A network layer. Shapes are per batch: the leading dimension of every
/// tensor is the batch size N; `sample` shapes leave it out.
pub trait Layer: Send {
    /// The layer's name (`conv1`, `fc2`, `relu3`, ...), unique in a network.
    fn name(&self) -> &str;

    /// A short description (`Dense(400 -> 120)`).
    fn describe(&self) -> String;

    /// The per-sample output shape for a per-sample input shape; an error
    /// if the input does not fit.
    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>>;

    /// `y = layer(x)`; with `train` the layer keeps what backward needs and
    /// applies training-only behaviour (dropout).
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// Gradients from `dy = dL/dy` of the last training forward pass: fills
    /// the parameters' `grad` and returns `dL/dx` when `need_input_grad`.
    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>>;

    /// The trainable parameters, in a fixed order.
    fn params(&self) -> Vec<&Param> {
        Vec::new()
    }

    /// The trainable parameters, mutably, in the same order.
    fn params_mut(&mut self) -> Vec<&mut Param> {
        Vec::new()
    }

    /// The multiplier plan of a layer with products (`None` otherwise).
    fn plan(&self) -> Option<&MultiplierPlan> {
        None
    }

    /// Replace the plan; `false` when the layer has no products.
    fn set_plan(&mut self, _plan: MultiplierPlan) -> bool {
        false
    }

    /// Names of the inner layers of a composite layer that can take their
    /// own plan (`s1b1.conv1`, ...), in order; empty for simple layers.
    fn inner_plan_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Give inner layer `name` (one of [`Layer::inner_plan_names`]) its own
    /// plan; `false` when there is no such inner layer.
    fn set_inner_plan(&mut self, _name: &str, _plan: MultiplierPlan) -> bool {
        false
    }

    /// The plan of inner layer `name`.
    fn inner_plan(&self, _name: &str) -> Option<&MultiplierPlan> {
        None
    }

    /// Multiply-accumulates of one sample with this per-sample input shape.
    fn macs(&self, _sample: &[usize]) -> MacCounts {
        MacCounts::default()
    }

    /// Seed the layer's randomness for the next forward pass (dropout).
    fn reseed(&mut self, _seed: u64) {}
}

/// The batch size and per-sample shape of an `[N, ...]` tensor.
pub(crate) fn split_batch<'a>(who: &str, x: &'a Tensor) -> Result<(usize, &'a [usize])> {
    if x.shape.is_empty() {
        return Err(crate::NetError::shape(format!(
            "{who}: expected a batched tensor [N, ...], got a scalar"
        )));
    }
    Ok((x.shape[0], &x.shape[1..]))
}

/// Elements below which splitting elementwise work over threads costs more
/// than it saves.
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 14;

/// How many planes of `plane` elements one rayon task should take at least.
/// Work is split by whole planes, and each element is computed by one task
/// in a fixed order, so results do not depend on the thread count.
pub(crate) fn min_planes_per_task(plane: usize) -> usize {
    (PAR_MIN_ELEMS / plane.max(1)).max(1)
}

/// Independent partial sums of [`channel_sums`].
const SUM_LANES: usize = 16;

/// Per-channel `Σ f(ch, a[i], b[i])` over the indices `i` of channel `ch`
/// of `[N, C, plane]` data (`b` defaults to `a`).
///
/// The order is fixed by the shapes alone, never by the thread count: one
/// task per channel; within it, element `j` of each plane goes to partial
/// sum `j % 16`, planes in batch order, and the 16 partial sums are added
/// pairwise at the end. The independent partial sums let the compiler keep
/// them in one vector register instead of waiting on one FP add per element.
pub(crate) fn channel_sums(
    n: usize,
    c: usize,
    plane: usize,
    a: &[f32],
    b: Option<&[f32]>,
    f: impl Fn(usize, f32, f32) -> f32 + Sync,
) -> Vec<f32> {
    channel_sums_k(n, c, plane, a, b, |ch, x, y| [f(ch, x, y)])
        .into_iter()
        .map(|[s]| s)
        .collect()
}

/// Two [`channel_sums`] in one pass over the data: `(Σ f, Σ g)` per
/// channel, each in exactly the order [`channel_sums`] takes.
pub(crate) fn channel_sum_pair(
    n: usize,
    c: usize,
    plane: usize,
    a: &[f32],
    b: Option<&[f32]>,
    f: impl Fn(usize, f32, f32) -> f32 + Sync,
    g: impl Fn(usize, f32, f32) -> f32 + Sync,
) -> (Vec<f32>, Vec<f32>) {
    channel_sums_k(n, c, plane, a, b, |ch, x, y| [f(ch, x, y), g(ch, x, y)])
        .into_iter()
        .map(|[s, t]| (s, t))
        .unzip()
}

/// `K` sums of [`channel_sums`] at once: `f` gives the `K` terms of an
/// element, each summed in [`channel_sums`]'s order.
fn channel_sums_k<const K: usize>(
    n: usize,
    c: usize,
    plane: usize,
    a: &[f32],
    b: Option<&[f32]>,
    f: impl Fn(usize, f32, f32) -> [f32; K] + Sync,
) -> Vec<[f32; K]> {
    use rayon::prelude::*;
    let b = b.unwrap_or(a);
    let mut out = Vec::with_capacity(c);
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut lanes = [[0.0f32; SUM_LANES]; K];
            for img in 0..n {
                let start = (img * c + ch) * plane;
                let (pa, pb) = (&a[start..start + plane], &b[start..start + plane]);
                let mut ca = pa.chunks_exact(SUM_LANES);
                let mut cb = pb.chunks_exact(SUM_LANES);
                for (xa, xb) in (&mut ca).zip(&mut cb) {
                    for l in 0..SUM_LANES {
                        let t = f(ch, xa[l], xb[l]);
                        for k in 0..K {
                            lanes[k][l] += t[k];
                        }
                    }
                }
                for (l, (&xa, &xb)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
                    let t = f(ch, xa, xb);
                    for k in 0..K {
                        lanes[k][l] += t[k];
                    }
                }
            }
            lanes.map(fold_lanes)
        })
        .collect_into_vec(&mut out);
    out
}

/// The partial sums added pairwise: lane `l` and lane `l + width / 2`.
fn fold_lanes(mut lanes: [f32; SUM_LANES]) -> f32 {
    let mut width = SUM_LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
    }
    lanes[0]
}
