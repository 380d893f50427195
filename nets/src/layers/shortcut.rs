//! The shortcut branch of a residual block (He et al., "Deep Residual
//! Learning for Image Recognition", CVPR 2016, section 3.3), shared by
//! [`super::ResidualBlock`] (basic and bottleneck).
//!
//! Shapes: `x [N, C_in, H, W]`, shortcut output `[N, C_out, OH, OW]` with
//! `OH = (H-1)/s + 1` (likewise OW), the output shape of the block's main
//! branch.
//!
//! - identity (`C_in = C_out`, `s = 1`): forward `x`, backward `dy`.
//! - projection (option B): `BN(conv1x1_stride_s(x))`, forward and backward
//!   those of the two layers; the convolution uses the block's plan.
//! - zero padding (option A, the paper's CIFAR ResNets): forward
//!   `x[:, :, ::s, ::s]` placed at channels `p .. p + C_in` of zeros, with
//!   `p = (C_out - C_in)/2`; backward: `dx[n,c,oh·s,ow·s] = dy[n,p+c,oh,ow]`,
//!   zero elsewhere. No products, no parameters.
//!
//! Convolutions inside residual blocks have no bias (BN's β plays its
//! role): their `Conv2d` bias stays zero and is not exposed as a parameter,
//! so no optimizer or checkpoint sees it.

use amsim::MultiplierPlan;
use rand::Rng;

use super::batchnorm::BatchNorm2d;
use super::conv2d::{Conv2d, Conv2dSpec};
use super::{Layer, MacCounts, Param};
use crate::init::Init;
use crate::{NetError, Result, Tensor};

/// What a residual block's shortcut does when the block changes the shape
/// (stride above 1 or a different channel count); with the same shape the
/// shortcut is always the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortcutKind {
    /// 1x1 convolution with the block's stride, then batch norm (option B).
    Projection,
    /// Subsample by the stride and zero-pad the new channels (option A);
    /// needs `C_out >= C_in`.
    ZeroPad,
}

/// A shortcut branch; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) enum Shortcut {
    Identity,
    // Boxed: the layers are large beside the other variants.
    Projection {
        conv: Box<Conv2d>,
        bn: Box<BatchNorm2d>,
    },
    ZeroPad {
        stride: usize,
        in_channels: usize,
        out_channels: usize,
        /// Backward cache: the input shape of the last training forward.
        cache_shape: Vec<usize>,
    },
}

/// The input gradient a layer asked with `need_input_grad = true` returns.
pub(crate) fn required(who: &str, dx: Option<Tensor>) -> Result<Tensor> {
    dx.ok_or_else(|| NetError::shape(format!("{who}: no input gradient returned")))
}

/// `a += b`, elementwise, for tensors of one shape.
pub(crate) fn add_into(who: &str, a: &mut Tensor, b: &Tensor) -> Result<()> {
    if a.shape != b.shape {
        return Err(NetError::shape(format!(
            "{who}: main branch {:?} and shortcut {:?} differ",
            a.shape, b.shape
        )));
    }
    for (x, y) in a.data.iter_mut().zip(&b.data) {
        *x += y;
    }
    Ok(())
}

impl Shortcut {
    /// The shortcut of block `block` from `in_channels` to `out_channels`
    /// with `stride`: the identity when nothing changes, else `kind`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new<R: Rng + ?Sized>(
        block: &str,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        kind: ShortcutKind,
        plan: MultiplierPlan,
        init: Init,
        rng: &mut R,
    ) -> Result<Shortcut> {
        if in_channels == out_channels && stride == 1 {
            return Ok(Shortcut::Identity);
        }
        match kind {
            ShortcutKind::Projection => Ok(Shortcut::Projection {
                conv: Box::new(
                    Conv2d::new(
                        &format!("{block}.shortcut.conv"),
                        Conv2dSpec::square(in_channels, out_channels, 1).stride(stride),
                        plan,
                        init,
                        rng,
                    )?
                    .without_bias(),
                ),
                bn: Box::new(BatchNorm2d::new(
                    &format!("{block}.shortcut.bn"),
                    out_channels,
                )),
            }),
            ShortcutKind::ZeroPad => {
                if out_channels < in_channels || stride == 0 {
                    return Err(NetError::Config(format!(
                        "{block}: a zero-padding shortcut needs out_channels {out_channels} >= \
                         in_channels {in_channels} and a stride above 0"
                    )));
                }
                Ok(Shortcut::ZeroPad {
                    stride,
                    in_channels,
                    out_channels,
                    cache_shape: Vec::new(),
                })
            }
        }
    }

    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Shortcut::Identity => "identity",
            Shortcut::Projection { .. } => "projection",
            Shortcut::ZeroPad { .. } => "zero-pad",
        }
    }

    pub(crate) fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        match self {
            Shortcut::Identity => Ok(sample.to_vec()),
            Shortcut::Projection { conv, .. } => conv.output_shape(sample),
            Shortcut::ZeroPad {
                stride,
                in_channels,
                out_channels,
                ..
            } => {
                if sample.len() != 3 || sample[0] != *in_channels {
                    return Err(NetError::shape(format!(
                        "zero-pad shortcut: expected samples [{in_channels}, H, W], got {sample:?}"
                    )));
                }
                let out = |d: usize| if d == 0 { 0 } else { (d - 1) / stride + 1 };
                Ok(vec![*out_channels, out(sample[1]), out(sample[2])])
            }
        }
    }

    /// `main += shortcut(x)`.
    pub(crate) fn add_forward(&mut self, x: &Tensor, main: &mut Tensor, train: bool) -> Result<()> {
        match self {
            Shortcut::Identity => add_into("identity shortcut", main, x),
            Shortcut::Projection { conv, bn } => {
                let s = conv.forward(x, train)?;
                let s = bn.forward(&s, train)?;
                add_into(conv.name(), main, &s)
            }
            Shortcut::ZeroPad {
                stride,
                in_channels,
                out_channels,
                cache_shape,
            } => {
                let (n, (h, w)) = (x.batch(), (x.shape[2], x.shape[3]));
                let (oh, ow) = (main.shape[2], main.shape[3]);
                let want = [n, *out_channels, oh, ow];
                if main.shape != want || x.shape[1] != *in_channels {
                    return Err(NetError::shape(format!(
                        "zero-pad shortcut: input {:?} does not fit output {:?}",
                        x.shape, main.shape
                    )));
                }
                let pad = (*out_channels - *in_channels) / 2;
                for b in 0..n {
                    for c in 0..*in_channels {
                        let src = &x.data[(b * *in_channels + c) * h * w..][..h * w];
                        let dst =
                            &mut main.data[(b * *out_channels + pad + c) * oh * ow..][..oh * ow];
                        for i in 0..oh {
                            for j in 0..ow {
                                dst[i * ow + j] += src[i * *stride * w + j * *stride];
                            }
                        }
                    }
                }
                if train {
                    cache_shape.clone_from(&x.shape);
                }
                Ok(())
            }
        }
    }

    /// The shortcut's contribution to `dx` for the block's `dy` (after the
    /// output ReLU); fills the projection's parameter gradients.
    pub(crate) fn backward(
        &mut self,
        dy: &Tensor,
        need_input_grad: bool,
    ) -> Result<Option<Tensor>> {
        match self {
            Shortcut::Identity => Ok(need_input_grad.then(|| dy.clone())),
            Shortcut::Projection { conv, bn } => {
                let g = required("projection shortcut", bn.backward(dy, true)?)?;
                conv.backward(&g, need_input_grad)
            }
            Shortcut::ZeroPad {
                stride,
                in_channels,
                out_channels,
                cache_shape,
            } => {
                if cache_shape.len() != 4 || dy.shape.len() != 4 || dy.shape[0] != cache_shape[0] {
                    return Err(NetError::shape(format!(
                        "zero-pad shortcut: backward got dy {:?} for input {cache_shape:?}",
                        dy.shape
                    )));
                }
                if !need_input_grad {
                    return Ok(None);
                }
                let (n, h, w) = (cache_shape[0], cache_shape[2], cache_shape[3]);
                let (oh, ow) = (dy.shape[2], dy.shape[3]);
                let pad = (*out_channels - *in_channels) / 2;
                let mut dx = Tensor::zeros(cache_shape);
                for b in 0..n {
                    for c in 0..*in_channels {
                        let src = &dy.data[(b * *out_channels + pad + c) * oh * ow..][..oh * ow];
                        let dst = &mut dx.data[(b * *in_channels + c) * h * w..][..h * w];
                        for i in 0..oh {
                            for j in 0..ow {
                                dst[i * *stride * w + j * *stride] = src[i * ow + j];
                            }
                        }
                    }
                }
                Ok(Some(dx))
            }
        }
    }

    pub(crate) fn params(&self) -> Vec<&Param> {
        match self {
            Shortcut::Projection { conv, bn } => {
                let mut p = vec![&conv.weight];
                p.extend(bn.params());
                p
            }
            _ => Vec::new(),
        }
    }

    pub(crate) fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Shortcut::Projection { conv, bn } => {
                let mut p = vec![&mut conv.weight];
                p.extend(bn.params_mut());
                p
            }
            _ => Vec::new(),
        }
    }

    /// The projection's convolution, if any.
    pub(crate) fn conv(&self) -> Option<&Conv2d> {
        match self {
            Shortcut::Projection { conv, .. } => Some(conv),
            _ => None,
        }
    }

    /// The projection's convolution, mutably, if any.
    pub(crate) fn conv_mut(&mut self) -> Option<&mut Conv2d> {
        match self {
            Shortcut::Projection { conv, .. } => Some(conv),
            _ => None,
        }
    }

    pub(crate) fn set_plan(&mut self, plan: MultiplierPlan) {
        if let Shortcut::Projection { conv, .. } = self {
            conv.set_plan(plan);
        }
    }

    pub(crate) fn macs(&self, sample: &[usize]) -> MacCounts {
        match self {
            Shortcut::Projection { conv, .. } => conv.macs(sample),
            _ => MacCounts::default(),
        }
    }
}
