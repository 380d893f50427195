//! Residual blocks (He et al., "Deep Residual Learning for Image
//! Recognition", CVPR 2016): the basic block of ResNet-18/34 and the CIFAR
//! ResNet-20/32/56 (figure 2, section 4.2), and the bottleneck block of
//! ResNet-50/101/152 (figure 5) with the stride on the 3x3 convolution, as
//! torchvision's ResNet v1.5 has it.
//!
//! Both are one mechanism: a main branch of stages `conv -> BN -> ReLU`,
//! the last stage without its ReLU, added to a shortcut, then a ReLU.
//!
//! Shapes: `x [N, C_in, H, W]`, `y [N, C_out, OH, OW]` with
//! `OH = (H-1)/s + 1` (likewise OW).
//! - basic: `conv3x3_s (C_in -> C_out)`, `conv3x3 (C_out -> C_out)`;
//! - bottleneck: `conv1x1 (C_in -> W_b)`, `conv3x3_s (W_b -> W_b)`,
//!   `conv1x1 (W_b -> 4·W_b)`.
//!
//! - forward: `h = stages(x)`, `z = h + shortcut(x)`, `y = ReLU(z)`.
//! - backward: `dz = dy·[z > 0]`; `dz` goes back through the stages in
//!   reverse and through the shortcut; `dx` is the sum of the two.
//!
//! Every convolution (the stages' and a projection shortcut's) uses the
//! block's [`MultiplierPlan`] and has no bias; see [`super::shortcut`].

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

/// One stage of the main branch: `ReLU(BN(conv(x)))`, the ReLU left out in
/// the last stage (it comes after the shortcut is added).
#[derive(Debug, Clone)]
struct Stage {
    conv: Conv2d,
    bn: BatchNorm2d,
    relu: Option<Relu>,
}

/// `y = ReLU(stages(x) + shortcut(x))`.
///
/// Parameters, in order: `NAME.conv1.weight`, `NAME.bn1.{weight, bias,
/// running_mean, running_var}`, `NAME.conv2.weight`, `NAME.bn2.*`, (for a
/// bottleneck `NAME.conv3.weight`, `NAME.bn3.*`), and for a projection
/// shortcut `NAME.shortcut.conv.weight`, `NAME.shortcut.bn.*`.
#[derive(Debug, Clone)]
pub struct ResidualBlock {
    name: String,
    /// What `describe` prints.
    description: String,
    stages: Vec<Stage>,
    shortcut: Shortcut,
    /// The output ReLU; its mask `[z > 0]` is part of the backward cache,
    /// the rest of which the inner layers hold.
    relu_out: Relu,
}

impl ResidualBlock {
    /// A basic block from `in_channels` to `out_channels` whose first
    /// convolution has stride `stride`; `shortcut` says what to do when the
    /// shape changes. Convolution weights are drawn by `init` from `rng`
    /// (conv1, conv2, then the projection); BN starts at γ = 1, β = 0.
    #[allow(clippy::too_many_arguments)]
    pub fn basic<R: Rng + ?Sized>(
        name: &str,
        in_channels: usize,
        out_channels: usize,
        stride: usize,
        shortcut: ShortcutKind,
        plan: MultiplierPlan,
        init: Init,
        rng: &mut R,
    ) -> Result<ResidualBlock> {
        let specs = [
            Conv2dSpec::square(in_channels, out_channels, 3)
                .stride(stride)
                .padding(1),
            Conv2dSpec::square(out_channels, out_channels, 3).padding(1),
        ];
        let description = format!("BasicBlock({in_channels} -> {out_channels}, stride {stride}");
        Self::build(name, description, &specs, stride, shortcut, plan, init, rng)
    }

    /// A bottleneck block from `in_channels` to `4·width` channels with
    /// stride `stride` on the 3x3 convolution and a projection shortcut when
    /// the shape changes. Convolution weights are drawn by `init` from `rng`
    /// (conv1, conv2, conv3, then the projection).
    pub fn bottleneck<R: Rng + ?Sized>(
        name: &str,
        in_channels: usize,
        width: usize,
        stride: usize,
        plan: MultiplierPlan,
        init: Init,
        rng: &mut R,
    ) -> Result<ResidualBlock> {
        let out_channels = width * BOTTLENECK_EXPANSION;
        let specs = [
            Conv2dSpec::square(in_channels, width, 1),
            Conv2dSpec::square(width, width, 3)
                .stride(stride)
                .padding(1),
            Conv2dSpec::square(width, out_channels, 1),
        ];
        let description =
            format!("Bottleneck({in_channels} -> {width} -> {out_channels}, stride {stride}");
        Self::build(
            name,
            description,
            &specs,
            stride,
            ShortcutKind::Projection,
            plan,
            init,
            rng,
        )
    }

    /// The stages of `specs` in order (named `conv1`, `bn1`, `relu1`, ...),
    /// then the shortcut.
    #[allow(clippy::too_many_arguments)]
    fn build<R: Rng + ?Sized>(
        name: &str,
        description: String,
        specs: &[Conv2dSpec],
        stride: usize,
        shortcut: ShortcutKind,
        plan: MultiplierPlan,
        init: Init,
        rng: &mut R,
    ) -> Result<ResidualBlock> {
        if stride == 0 {
            return Err(NetError::Config(format!(
                "{name}: stride must be at least 1"
            )));
        }
        let mut stages = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let k = i + 1;
            let last = k == specs.len();
            stages.push(Stage {
                conv: Conv2d::new(&format!("{name}.conv{k}"), *spec, plan.clone(), init, rng)?
                    .without_bias(),
                bn: BatchNorm2d::new(&format!("{name}.bn{k}"), spec.out_channels),
                relu: (!last).then(|| Relu::new(&format!("{name}.relu{k}"))),
            });
        }
        let (in_channels, out_channels) =
            (specs[0].in_channels, specs[specs.len() - 1].out_channels);
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
        Ok(ResidualBlock {
            name: name.to_string(),
            description: format!("{description}, {} shortcut)", shortcut.describe()),
            stages,
            shortcut,
            relu_out: Relu::new(&format!("{name}.relu{}", specs.len())),
        })
    }
}

impl Layer for ResidualBlock {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        let mut out = sample.to_vec();
        for s in &self.stages {
            out = s.conv.output_shape(&out)?;
        }
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
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        // The first stage reads the block's input itself (no copy).
        let mut h: Option<Tensor> = None;
        for s in &mut self.stages {
            // Later stages hand their input over (the conv keeps it).
            let mut t = match h.take() {
                Some(h) => s.conv.forward_owned(h, train)?,
                None => s.conv.forward(x, train)?,
            };
            t = s.bn.forward(&t, train)?;
            if let Some(relu) = &mut s.relu {
                t = relu.forward(&t, train)?;
            }
            h = Some(t);
        }
        let mut h = required(&self.name, h)?;
        self.shortcut.add_forward(x, &mut h, train)?;
        self.relu_out.forward(&h, train)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let dz = required(&self.name, self.relu_out.backward(dy, true)?)?;
        // The last stage reads dz itself (no copy).
        let mut g: Option<Tensor> = None;
        let mut dx_main = None;
        for (i, s) in self.stages.iter_mut().enumerate().rev() {
            let mut t = None;
            if let Some(relu) = &mut s.relu {
                t = Some(required(
                    &self.name,
                    relu.backward(g.as_ref().unwrap_or(&dz), true)?,
                )?);
            }
            let t = required(
                &self.name,
                s.bn.backward(t.as_ref().or(g.as_ref()).unwrap_or(&dz), true)?,
            )?;
            if i == 0 {
                dx_main = s.conv.backward(&t, need_input_grad)?;
            } else {
                g = Some(required(&self.name, s.conv.backward(&t, true)?)?);
            }
        }
        if matches!(self.shortcut, Shortcut::Identity) {
            // The identity's input gradient is dz: added as it is.
            return match dx_main {
                Some(mut dx) if need_input_grad => {
                    add_into(&self.name, &mut dx, &dz)?;
                    Ok(Some(dx))
                }
                _ => Ok(None),
            };
        }
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
        let mut p = Vec::new();
        for s in &self.stages {
            p.push(&s.conv.weight);
            p.extend(s.bn.params());
        }
        p.extend(self.shortcut.params());
        p
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = Vec::new();
        for s in &mut self.stages {
            p.push(&mut s.conv.weight);
            p.extend(s.bn.params_mut());
        }
        p.extend(self.shortcut.params_mut());
        p
    }

    fn plan(&self) -> Option<&MultiplierPlan> {
        self.stages[0].conv.plan()
    }

    fn set_plan(&mut self, plan: MultiplierPlan) -> bool {
        for s in &mut self.stages {
            s.conv.set_plan(plan.clone());
        }
        self.shortcut.set_plan(plan);
        true
    }

    fn set_calibration(&mut self, on: bool) {
        for s in &mut self.stages {
            s.conv.set_calibration(on);
        }
        if let Some(conv) = self.shortcut.conv_mut() {
            conv.set_calibration(on);
        }
    }

    /// `NAME.conv1`, `NAME.conv2` (`NAME.conv3` for a bottleneck), and
    /// `NAME.shortcut.conv` for a projection shortcut.
    fn inner_plan_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .stages
            .iter()
            .map(|s| s.conv.name().to_string())
            .collect();
        if let Some(conv) = self.shortcut.conv() {
            names.push(conv.name().to_string());
        }
        names
    }

    fn set_inner_plan(&mut self, name: &str, plan: MultiplierPlan) -> bool {
        let conv = self
            .stages
            .iter_mut()
            .map(|s| &mut s.conv)
            .chain(self.shortcut.conv_mut())
            .find(|c| c.name() == name);
        match conv {
            Some(c) => c.set_plan(plan),
            None => false,
        }
    }

    fn inner_plan(&self, name: &str) -> Option<&MultiplierPlan> {
        self.stages
            .iter()
            .map(|s| &s.conv)
            .chain(self.shortcut.conv())
            .find(|c| c.name() == name)
            .and_then(|c| c.plan())
    }

    fn macs(&self, sample: &[usize]) -> MacCounts {
        let mut m = MacCounts::default();
        let mut shape = Some(sample.to_vec());
        for s in &self.stages {
            let Some(input) = shape else { break };
            m += s.conv.macs(&input);
            shape = s.conv.output_shape(&input).ok();
        }
        m += self.shortcut.macs(sample);
        m
    }
}
