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
pub mod quant;
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

    /// [`Layer::forward`] of an input the caller no longer needs: a layer
    /// that keeps its input for the backward pass takes it without a copy.
    fn forward_owned(&mut self, x: Tensor, train: bool) -> Result<Tensor> {
        self.forward(&x, train)
    }

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

    /// Start or end calibration of int8 activation ranges (layers with an
    /// `int8:` forward; see [`quant::QuantState::set_calibration`]).
    fn set_calibration(&mut self, _on: bool) {}
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
            let planes = (0..n).map(|img| {
                let start = (img * c + ch) * plane;
                (&a[start..start + plane], &b[start..start + plane])
            });
            plane_sums_k(planes, |x, y| f(ch, x, y))
        })
        .collect_into_vec(&mut out);
    out
}

/// The `K` sums of `f` over pairs of planes given in batch order, in
/// [`channel_sums`]'s order (the sums of one channel: layers that also
/// write the channel's outputs in the same task call this directly).
#[inline(always)]
pub(crate) fn plane_sums_k<'a, const K: usize>(
    planes: impl Iterator<Item = (&'a [f32], &'a [f32])>,
    f: impl Fn(f32, f32) -> [f32; K],
) -> [f32; K] {
    let mut lanes = [[0.0f32; SUM_LANES]; K];
    // Whole groups of 16 as fixed-size arrays, one loop per sum over the
    // lanes: this shape vectorises (`f` is inlined and its unused terms
    // dropped).
    let mut add = |xa: &[f32; SUM_LANES], xb: &[f32; SUM_LANES], live: usize| {
        for (k, lanes) in lanes.iter_mut().enumerate() {
            for l in 0..SUM_LANES {
                let t = f(xa[l], xb[l])[k];
                // A lane past the end adds +0.0, which leaves a sum that
                // started at +0.0 unchanged (it is never -0.0).
                lanes[l] += if l < live { t } else { 0.0 };
            }
        }
    };
    for (pa, pb) in planes {
        let mut ca = pa.chunks_exact(SUM_LANES);
        let mut cb = pb.chunks_exact(SUM_LANES);
        for (xa, xb) in (&mut ca).zip(&mut cb) {
            let (xa, xb) = (xa.try_into().unwrap(), xb.try_into().unwrap());
            add(xa, xb, SUM_LANES);
        }
        let (ra, rb) = (ca.remainder(), cb.remainder());
        let live = ra.len().min(rb.len());
        if live > 0 {
            let (mut ta, mut tb) = ([0.0f32; SUM_LANES], [0.0f32; SUM_LANES]);
            ta[..live].copy_from_slice(&ra[..live]);
            tb[..live].copy_from_slice(&rb[..live]);
            add(&ta, &tb, live);
        }
    }
    lanes.map(fold_lanes)
}

/// The planes of `[N, C, plane]` data (`chunks` yields its planes in
/// memory order) sorted by channel: entry `ch` holds channel `ch`'s planes
/// in batch order. With `chunks_mut`, one task per channel can write its
/// channel's planes.
pub(crate) fn planes_by_channel<T>(chunks: impl Iterator<Item = T>, c: usize) -> Vec<Vec<T>> {
    let mut by = Vec::with_capacity(c);
    by.resize_with(c, Vec::new);
    for (p, chunk) in chunks.enumerate() {
        by[p % c].push(chunk);
    }
    by
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Random values with signed zeros mixed in.
    fn values(rng: &mut impl Rng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| match rng.gen_range(0..8) {
                0 => 0.0,
                1 => -0.0,
                _ => rng.gen_range(-3.0f32..3.0),
            })
            .collect()
    }

    #[test]
    fn plane_sums_follow_the_documented_lane_order() {
        let mut rng = crate::rng::test_rng("plane_sums_follow_the_documented_lane_order");
        for _ in 0..50 {
            let n = rng.gen_range(1..5);
            let plane = [1, 5, 15, 16, 17, 49, 64, 100][rng.gen_range(0..8)];
            let (a, b) = (values(&mut rng, n * plane), values(&mut rng, n * plane));
            let f = |x: f32, y: f32| [x, x * y - y];
            let planes = a.chunks(plane).zip(b.chunks(plane));
            let got = plane_sums_k(planes, f);
            // Element j of each plane into partial sum j % 16, planes in
            // order, then the pairwise fold.
            let mut lanes = [[0.0f32; SUM_LANES]; 2];
            for (pa, pb) in a.chunks(plane).zip(b.chunks(plane)) {
                for (j, (&x, &y)) in pa.iter().zip(pb).enumerate() {
                    let t = f(x, y);
                    lanes[0][j % SUM_LANES] += t[0];
                    lanes[1][j % SUM_LANES] += t[1];
                }
            }
            let want = lanes.map(fold_lanes);
            assert_eq!(
                got.map(f32::to_bits),
                want.map(f32::to_bits),
                "n {n}, plane {plane}"
            );
        }
    }
}
