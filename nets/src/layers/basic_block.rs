//! The basic residual block of ResNet-18/34 and the CIFAR ResNet-20/32/56
//! (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016,
//! figure 2 and section 4.2).
//!
//! Shapes: `x [N, C_in, H, W]`, `y [N, C_out, OH, OW]` with
//! `OH = (H-1)/s + 1` (likewise OW).
//!
//! - forward: `h = ReLU(BN1(conv3x3_s(x)))`, `z = BN2(conv3x3(h)) +
//!   shortcut(x)`, `y = ReLU(z)` (convolutions padded by 1, no bias).
//! - backward: `dz = dy·[z > 0]`; `dz` goes back through BN2, conv2, ReLU,
//!   BN1 and conv1, and through the shortcut; `dx` is the sum of the two.
//!
//! Every convolution (conv1, conv2 and a projection shortcut's) uses the
//! block's [`MultiplierPlan`]; see [`super::shortcut`] for the shortcut.

use amsim::MultiplierPlan;
use rand::Rng;

use super::batchnorm::BatchNorm2d;
use super::conv2d::{Conv2d, Conv2dSpec};
use super::shortcut::{add_into, required, Shortcut, ShortcutKind};
use super::{Layer, MacCounts, Param, Relu};
use crate::init::Init;
use crate::{NetError, Result, Tensor};

/// `y = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x))`.
///
/// Parameters, in order: `NAME.conv1.weight`, `NAME.bn1.{weight, bias,
/// running_mean, running_var}`, `NAME.conv2.weight`, `NAME.bn2.*`, and for
/// a projection shortcut `NAME.shortcut.conv.weight`, `NAME.shortcut.bn.*`.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    name: String,
    in_channels: usize,
    out_channels: usize,
    stride: usize,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    relu1: Relu,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    shortcut: Shortcut,
    /// The output ReLU; its mask `[z > 0]` is part of the backward cache,
    /// the rest of which the inner layers hold.
    relu_out: Relu,
}

impl BasicBlock {
    /// A block from `in_channels` to `out_channels` whose first convolution
    /// has stride `stride`; `shortcut` says what to do when the shape
    /// changes. Convolution weights are drawn by `init` from `rng` (conv1,
    /// conv2, then the projection), BN starts at γ = 1, β = 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new<R: Rng + ?Sized>(
        name: &str,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        shortcut: ShortcutKind,
        plan: MultiplierPlan,
        init: Init,
        rng: &mut R,
    ) -> Result<BasicBlock> {
        if stride == 0 {
            return Err(NetError::Config(format!(
                "{name}: stride must be at least 1"
            )));
        }
        let conv1 = Conv2d::new(
            &format!("{name}.conv1"),
            Conv2dSpec::square(in_channels, out_channels, 3)
                .stride(stride)
                .padding(1),
            plan.clone(),
            init,
            rng,
        )?;
        let conv2 = Conv2d::new(
            &format!("{name}.conv2"),
            Conv2dSpec::square(out_channels, out_channels, 3).padding(1),
            plan.clone(),
            init,
            rng,
        )?;
        let shortcut = Shortcut::new(
            name,
            in_channels,
            out_channels,
            stride,
            shortcut,
            plan,
            init,
            rng,
        )?;
        Ok(BasicBlock {
            name: name.to_string(),
            in_channels,
            out_channels,
            stride,
            conv1,
            bn1: BatchNorm2d::new(&format!("{name}.bn1"), out_channels),
            relu1: Relu::new(&format!("{name}.relu1")),
            conv2,
            bn2: BatchNorm2d::new(&format!("{name}.bn2"), out_channels),
            shortcut,
            relu_out: Relu::new(&format!("{name}.relu2")),
        })
    }
}

impl Layer for BasicBlock {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!(
            "BasicBlock({} -> {}, stride {}, {} shortcut)",
            self.in_channels,
            self.out_channels,
            self.stride,
            self.shortcut.describe()
        )
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        let h = self.conv1.output_shape(sample)?;
        let out = self.conv2.output_shape(&h)?;
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
        let mut z = self.bn2.forward(&h, train)?;
        self.shortcut.add_forward(x, &mut z, train)?;
        self.relu_out.forward(&z, train)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let dz = required(&self.name, self.relu_out.backward(dy, true)?)?;
        let g = required(&self.name, self.bn2.backward(&dz, true)?)?;
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
        p.extend(self.shortcut.params());
        p
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = vec![&mut self.conv1.weight];
        p.extend(self.bn1.params_mut());
        p.push(&mut self.conv2.weight);
        p.extend(self.bn2.params_mut());
        p.extend(self.shortcut.params_mut());
        p
    }

    fn plan(&self) -> Option<&MultiplierPlan> {
        self.conv1.plan()
    }

    fn set_plan(&mut self, plan: MultiplierPlan) -> bool {
        self.conv1.set_plan(plan.clone());
        self.conv2.set_plan(plan.clone());
        self.shortcut.set_plan(plan);
        true
    }

    fn macs(&self, sample: &[usize]) -> MacCounts {
        let mut m = self.conv1.macs(sample);
        if let Ok(h) = self.conv1.output_shape(sample) {
            m += self.conv2.macs(&h);
        }
        m += self.shortcut.macs(sample);
        m
    }
}
