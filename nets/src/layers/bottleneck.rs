//! The bottleneck residual block of ResNet-50/101/152 (He et al., "Deep
//! Residual Learning for Image Recognition", CVPR 2016, figure 5), with the
//! stride on the 3x3 convolution as torchvision's ResNet v1.5 has it.
//!
//! Shapes: `x [N, C_in, H, W]`, `y [N, 4·W_b, OH, OW]` with `W_b` the
//! bottleneck width and `OH = (H-1)/s + 1` (likewise OW).
//!
//! - forward: `h1 = ReLU(BN1(conv1x1(x)))` (`C_in -> W_b`),
//!   `h2 = ReLU(BN2(conv3x3_s(h1)))` (`W_b -> W_b`, padded by 1),
//!   `z = BN3(conv1x1(h2)) + shortcut(x)` (`W_b -> 4·W_b`), `y = ReLU(z)`.
//! - backward: `dz = dy·[z > 0]` back through BN3, conv3, ReLU, BN2, conv2,
//!   ReLU, BN1, conv1, and through the shortcut; `dx` is the sum of the two.
//!
//! The shortcut is the identity when `C_in = 4·W_b` and `s = 1`, else a
//! projection (1x1 convolution with stride `s`, then BN). Every convolution
//! uses the block's [`MultiplierPlan`] and has no bias (see
//! [`super::shortcut`]).

use amsim::MultiplierPlan;
use rand::Rng;

use super::batchnorm::BatchNorm2d;
use super::conv2d::{Conv2d, Conv2dSpec};
use super::shortcut::{add_into, required, Shortcut, ShortcutKind};
use super::{Layer, MacCounts, Param, Relu};
use crate::init::Init;
use crate::{NetError, Result, Tensor};

/// Output channels per bottleneck-width channel.
pub const BOTTLENECK_EXPANSION: usize = 4;

/// `y = ReLU(BN(conv1x1(ReLU(BN(conv3x3(ReLU(BN(conv1x1(x)))))))) + shortcut(x))`.
///
/// Parameters, in order: `NAME.conv1.weight`, `NAME.bn1.{weight, bias,
/// running_mean, running_var}`, `NAME.conv2.weight`, `NAME.bn2.*`,
/// `NAME.conv3.weight`, `NAME.bn3.*`, and for a projection shortcut
/// `NAME.shortcut.conv.weight`, `NAME.shortcut.bn.*`.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    name: String,
    in_channels: usize,
    width: usize,
    stride: usize,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    relu1: Relu,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    relu2: Relu,
    conv3: Conv2d,
    bn3: BatchNorm2d,
    shortcut: Shortcut,
    /// The output ReLU; its mask `[z > 0]` is part of the backward cache,
    /// the rest of which the inner layers hold.
    relu_out: Relu,
}

impl Bottleneck {
    /// A block from `in_channels` to `4·width` channels with stride
    /// `stride` on the 3x3 convolution. Convolution weights are drawn by
    /// `init` from `rng` (conv1, conv2, conv3, then the projection).
    pub fn new<R: Rng + ?Sized>(
        name: &str,
        in_channels: usize,
        width: usize,
        stride: usize,
        plan: MultiplierPlan,
        init: Init,
        rng: &mut R,
    ) -> Result<Bottleneck> {
        if stride == 0 {
            return Err(NetError::Config(format!(
                "{name}: stride must be at least 1"
            )));
        }
        let out_channels = width * BOTTLENECK_EXPANSION;
        let conv = |rng: &mut R, which: &str, spec: Conv2dSpec| {
            Conv2d::new(&format!("{name}.{which}"), spec, plan.clone(), init, rng)
        };
        let conv1 = conv(rng, "conv1", Conv2dSpec::square(in_channels, width, 1))?;
        let conv2 = conv(
            rng,
            "conv2",
            Conv2dSpec::square(width, width, 3)
                .stride(stride)
                .padding(1),
        )?;
        let conv3 = conv(rng, "conv3", Conv2dSpec::square(width, out_channels, 1))?;
        let shortcut = Shortcut::new(
            name,
            in_channels,
            out_channels,
            stride,
            ShortcutKind::Projection,
            plan.clone(),
            init,
            rng,
        )?;
        Ok(Bottleneck {
            name: name.to_string(),
            in_channels,
            width,
            stride,
            conv1,
            bn1: BatchNorm2d::new(&format!("{name}.bn1"), width),
            relu1: Relu::new(&format!("{name}.relu1")),
            conv2,
            bn2: BatchNorm2d::new(&format!("{name}.bn2"), width),
            relu2: Relu::new(&format!("{name}.relu2")),
            conv3,
            bn3: BatchNorm2d::new(&format!("{name}.bn3"), out_channels),
            shortcut,
            relu_out: Relu::new(&format!("{name}.relu3")),
        })
    }
}

impl Layer for Bottleneck {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!(
            "Bottleneck({} -> {} -> {}, stride {}, {} shortcut)",
            self.in_channels,
            self.width,
            self.width * BOTTLENECK_EXPANSION,
            self.stride,
            self.shortcut.describe()
        )
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        let h = self.conv1.output_shape(sample)?;
        let h = self.conv2.output_shape(&h)?;
        let out = self.conv3.output_shape(&h)?;
        let short = self.shortcut.output_shape(sample)?;
        if out != short {
            return Err(NetError::shape(format!(
                "{}: main branch gives {out:?}, shortcut {short:?}",
                self.name
            )));
        }
        Ok(out)
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.conv1.forward(x, train)?;
        let h = self.bn1.forward(&h, train)?;
        let h = self.relu1.forward(&h, train)?;
        let h = self.conv2.forward(&h, train)?;
        let h = self.bn2.forward(&h, train)?;
        let h = self.relu2.forward(&h, train)?;
        let h = self.conv3.forward(&h, train)?;
        let mut z = self.bn3.forward(&h, train)?;
        self.shortcut.add_forward(x, &mut z, train)?;
        self.relu_out.forward(&z, train)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let dz = required(&self.name, self.relu_out.backward(dy, true)?)?;
        let g = required(&self.name, self.bn3.backward(&dz, true)?)?;
        let g = required(&self.name, self.conv3.backward(&g, true)?)?;
        let g = required(&self.name, self.relu2.backward(&g, true)?)?;
        let g = required(&self.name, self.bn2.backward(&g, true)?)?;
        let g = required(&self.name, self.conv2.backward(&g, true)?)?;
        let g = required(&self.name, self.relu1.backward(&g, true)?)?;
        let g = required(&self.name, self.bn1.backward(&g, true)?)?;
        let dx_main = self.conv1.backward(&g, need_input_grad)?;
        let dx_short = self.shortcut.backward(&dz, need_input_grad)?;
        match (dx_main, dx_short) {
            (Some(mut dx), Some(ds)) => {
                add_into(&self.name, &mut dx, &ds)?;
                Ok(Some(dx))
            }
            _ => Ok(None),
        }
    }

    fn params(&self) -> Vec<&Param> {
        let mut p = vec![&self.conv1.weight];
        p.extend(self.bn1.params());
        p.push(&self.conv2.weight);
        p.extend(self.bn2.params());
        p.push(&self.conv3.weight);
        p.extend(self.bn3.params());
        p.extend(self.shortcut.params());
        p
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = vec![&mut self.conv1.weight];
        p.extend(self.bn1.params_mut());
        p.push(&mut self.conv2.weight);
        p.extend(self.bn2.params_mut());
        p.push(&mut self.conv3.weight);
        p.extend(self.bn3.params_mut());
        p.extend(self.shortcut.params_mut());
        p
    }

    fn plan(&self) -> Option<&MultiplierPlan> {
        self.conv1.plan()
    }

    fn set_plan(&mut self, plan: MultiplierPlan) -> bool {
        self.conv1.set_plan(plan.clone());
        self.conv2.set_plan(plan.clone());
        self.conv3.set_plan(plan.clone());
        self.shortcut.set_plan(plan);
        true
    }

    fn macs(&self, sample: &[usize]) -> MacCounts {
        let mut m = self.conv1.macs(sample);
        if let Ok(h1) = self.conv1.output_shape(sample) {
            m += self.conv2.macs(&h1);
            if let Ok(h2) = self.conv2.output_shape(&h1) {
                m += self.conv3.macs(&h2);
            }
        }
        m += self.shortcut.macs(sample);
        m
    }
}
