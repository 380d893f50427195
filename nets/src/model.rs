//! Networks: a named sequence of layers with a fixed per-sample input shape.

use amsim::MultiplierPlan;
use rand_chacha::ChaCha8Rng;

use crate::init::Init;
use crate::layers::conv2d::Conv2dSpec;
use crate::layers::{
    BatchNorm2d, Conv2d, Dense, Flatten, GlobalAvgPool, Layer, MacCounts, MaxPool2d, Param, Relu,
    ResidualBlock, ShortcutKind, BOTTLENECK_EXPANSION,
};
use crate::planned::PlannedModel;
use crate::rng::{derive_seed, rng_for, Purpose};
use crate::{NetError, Result, Tensor};

/// The networks [`Network::by_name`] builds.
pub const NETWORK_NAMES: [&str; 8] = [
    "lenet300100",
    "lenet5",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet18",
    "resnet34",
    "resnet50",
];

/// Weight initialisation of every ResNet convolution: He (Kaiming) normal,
/// std `sqrt(2 / fan_in)`, as He et al. 2016 train them (section 3.4, citing
/// "Delving Deep into Rectifiers", ICCV 2015). The final dense layer is
/// Glorot uniform.
pub const RESNET_CONV_INIT: Init = Init::HeNormal;

/// The residual-block layout of a ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResNetLayout {
    /// He et al. 2016, section 4.2: a 3x3 stem of 16 channels, three stages
    /// of `n` basic blocks with 16, 32, 64 channels (stride 2 at the start
    /// of stages 2 and 3), zero-padding (option A) shortcuts; depth 6n + 2.
    Cifar { blocks_per_stage: usize },
    /// He et al. 2016, table 1, adapted to 32x32 inputs: a 3x3 stride-1 stem
    /// of 64 channels and no max-pool; four stages of 64, 128, 256, 512
    /// channels (stride 2 at stages 2-4) with basic or bottleneck blocks and
    /// projection (option B) shortcuts.
    ImageNet {
        blocks: [usize; 4],
        bottleneck: bool,
    },
}

impl ResNetLayout {
    fn by_name(name: &str) -> Option<ResNetLayout> {
        Some(match name {
            "resnet20" => ResNetLayout::Cifar {
                blocks_per_stage: 3,
            },
            "resnet32" => ResNetLayout::Cifar {
                blocks_per_stage: 5,
            },
            "resnet56" => ResNetLayout::Cifar {
                blocks_per_stage: 9,
            },
            "resnet18" => ResNetLayout::ImageNet {
                blocks: [2, 2, 2, 2],
                bottleneck: false,
            },
            "resnet34" => ResNetLayout::ImageNet {
                blocks: [3, 4, 6, 3],
                bottleneck: false,
            },
            "resnet50" => ResNetLayout::ImageNet {
                blocks: [3, 4, 6, 3],
                bottleneck: true,
            },
            _ => return None,
        })
    }
}

/// A feed-forward network: layers applied in order.
pub struct Network {
    name: String,
    input_shape: Vec<usize>,
    num_classes: usize,
    layers: Vec<Box<dyn Layer>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("name", &self.name)
            .field("input_shape", &self.input_shape)
            .field(
                "layers",
                &self.layers.iter().map(|l| l.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Weight initialisation of the LeNets: Glorot uniform, the Keras default
/// (`kernel_initializer="glorot_uniform"`) that ApproxTrain's TensorFlow
/// LeNet models train with, so that results compare with theirs.
pub const LENET_INIT: Init = Init::GlorotUniform;

/// One initialisation stream per layer, so adding a layer does not change
/// the weights of the others.
fn layer_rng(seed: u64, layer: u64) -> ChaCha8Rng {
    rng_for(seed, Purpose::Init, &[layer])
}

impl Network {
    /// A network from explicit layers; checks that the shapes chain from
    /// `input_shape` to `[num_classes]` and that names are unique.
    pub fn new(
        name: &str,
        input_shape: &[usize],
        num_classes: usize,
        layers: Vec<Box<dyn Layer>>,
    ) -> Result<Network> {
        let mut shape = input_shape.to_vec();
        for (i, l) in layers.iter().enumerate() {
            if layers[..i].iter().any(|o| o.name() == l.name()) {
                return Err(NetError::Config(format!(
                    "{name}: two layers are named '{}'",
                    l.name()
                )));
            }
            shape = l.output_shape(&shape)?;
        }
        if shape != [num_classes] {
            return Err(NetError::shape(format!(
                "{name}: the last layer outputs {shape:?} per sample, expected [{num_classes}]"
            )));
        }
        Ok(Network {
            name: name.to_string(),
            input_shape: input_shape.to_vec(),
            num_classes,
            layers,
        })
    }

    /// LeNet-300-100 (LeCun et al., "Gradient-based learning applied to
    /// document recognition", Proc. IEEE 1998): 784-300-100-10, ReLU,
    /// Glorot-uniform weights ([`LENET_INIT`]), for `[1, 28, 28]` inputs
    /// and 10 classes.
    pub fn lenet300100(plan: MultiplierPlan, seed: u64) -> Network {
        Self::build_lenet300100(&[1, 28, 28], 10, plan, seed)
            .expect("LeNet-300-100 fits MNIST shapes")
    }

    /// LeNet-5 as ApproxTrain trains it: conv 1->6 5x5 pad 2, ReLU, maxpool
    /// 2; conv 6->16 5x5, ReLU, maxpool 2; dense 400-120-84-10 with ReLU;
    /// Glorot-uniform weights ([`LENET_INIT`]); for `[1, 28, 28]` inputs and
    /// 10 classes.
    pub fn lenet5(plan: MultiplierPlan, seed: u64) -> Network {
        Self::build_lenet5(&[1, 28, 28], 10, plan, seed).expect("LeNet-5 fits MNIST shapes")
    }

    /// A network by name (see [`NETWORK_NAMES`]) for per-sample inputs of
    /// `input_shape` (`[C, H, W]`) and `num_classes` classes, every layer on
    /// `plan`, weights from `seed`.
    pub fn by_name(
        name: &str,
        input_shape: &[usize],
        num_classes: usize,
        plan: MultiplierPlan,
        seed: u64,
    ) -> Result<Network> {
        match name {
            "lenet300100" | "lenet-300-100" => {
                Self::build_lenet300100(input_shape, num_classes, plan, seed)
            }
            "lenet5" | "lenet-5" => Self::build_lenet5(input_shape, num_classes, plan, seed),
            _ if ResNetLayout::by_name(name).is_some() => {
                Self::build_resnet(name, input_shape, num_classes, plan, seed)
            }
            _ => Err(NetError::UnknownNetwork {
                name: name.to_string(),
                known: NETWORK_NAMES.join(", "),
            }),
        }
    }

    fn build_lenet300100(
        input_shape: &[usize],
        classes: usize,
        plan: MultiplierPlan,
        seed: u64,
    ) -> Result<Network> {
        let inputs: usize = input_shape.iter().product();
        let init = LENET_INIT;
        let layers: Vec<Box<dyn Layer>> = vec![
            Box::new(Flatten::new("flatten")),
            Box::new(Dense::new(
                "fc1",
                inputs,
                300,
                plan.clone(),
                init,
                &mut layer_rng(seed, 1),
            )),
            Box::new(Relu::new("relu1")),
            Box::new(Dense::new(
                "fc2",
                300,
                100,
                plan.clone(),
                init,
                &mut layer_rng(seed, 2),
            )),
            Box::new(Relu::new("relu2")),
            Box::new(Dense::new(
                "fc3",
                100,
                classes,
                plan,
                init,
                &mut layer_rng(seed, 3),
            )),
        ];
        Network::new("lenet300100", input_shape, classes, layers)
    }

    fn build_lenet5(
        input_shape: &[usize],
        classes: usize,
        plan: MultiplierPlan,
        seed: u64,
    ) -> Result<Network> {
        if input_shape.len() != 3 {
            return Err(NetError::shape(format!(
                "lenet5 needs image inputs [C, H, W], got {input_shape:?}"
            )));
        }
        let init = LENET_INIT;
        let conv1 = Conv2d::new(
            "conv1",
            Conv2dSpec::square(input_shape[0], 6, 5).padding(2),
            plan.clone(),
            init,
            &mut layer_rng(seed, 1),
        )?;
        let conv2 = Conv2d::new(
            "conv2",
            Conv2dSpec::square(6, 16, 5),
            plan.clone(),
            init,
            &mut layer_rng(seed, 2),
        )?;
        let mut shape = conv1.output_shape(input_shape)?;
        let pool1 = MaxPool2d::new("pool1", 2, 2);
        shape = pool1.output_shape(&shape)?;
        shape = conv2.output_shape(&shape)?;
        let pool2 = MaxPool2d::new("pool2", 2, 2);
        shape = pool2.output_shape(&shape)?;
        let flat: usize = shape.iter().product();
        let layers: Vec<Box<dyn Layer>> = vec![
            Box::new(conv1),
            Box::new(Relu::new("relu1")),
            Box::new(pool1),
            Box::new(conv2),
            Box::new(Relu::new("relu2")),
            Box::new(pool2),
            Box::new(Flatten::new("flatten")),
            Box::new(Dense::new(
                "fc1",
                flat,
                120,
                plan.clone(),
                init,
                &mut layer_rng(seed, 3),
            )),
            Box::new(Relu::new("relu3")),
            Box::new(Dense::new(
                "fc2",
                120,
                84,
                plan.clone(),
                init,
                &mut layer_rng(seed, 4),
            )),
            Box::new(Relu::new("relu4")),
            Box::new(Dense::new(
                "fc3",
                84,
                classes,
                plan,
                init,
                &mut layer_rng(seed, 5),
            )),
        ];
        Network::new("lenet5", input_shape, classes, layers)
    }

    /// A ResNet ([`NETWORK_NAMES`] `resnet*`) for image inputs `[C, H, W]`.
    ///
    /// Layers, and so the names plan files address (every name here but
    /// `bn1`, `relu1`, `pool` takes a plan; see [`Network::plan_names`]):
    /// - `conv1` (3x3 stem convolution, stride 1, padding 1), `bn1`, `relu1`;
    /// - `sSbB`: block B of stage S, both from 1 (`s1b1`, `s1b2`, ...,
    ///   `s3b3` for ResNet-20); its plan covers every convolution of the
    ///   block, the projection shortcut's included; one convolution of it
    ///   is `sSbB.conv1`, `sSbB.conv2` (`sSbB.conv3` in a bottleneck) or
    ///   `sSbB.shortcut.conv`;
    /// - `pool` (global average pool), `fc` (dense to the classes).
    ///
    /// The stem convolution keeps the zero-initialised bias every `Conv2d`
    /// has; batch norm right after it makes it redundant (its gradient is
    /// zero up to rounding) but harmless. Block convolutions have none.
    /// Weights: [`RESNET_CONV_INIT`] for convolutions, one stream per layer.
    fn build_resnet(
        name: &str,
        input_shape: &[usize],
        classes: usize,
        plan: MultiplierPlan,
        seed: u64,
    ) -> Result<Network> {
        let layout = ResNetLayout::by_name(name)
            .ok_or_else(|| NetError::Config(format!("{name} is not a ResNet")))?;
        if input_shape.len() != 3 {
            return Err(NetError::shape(format!(
                "{name} needs image inputs [C, H, W], got {input_shape:?}"
            )));
        }
        let init = RESNET_CONV_INIT;
        let (stem, widths, blocks, bottleneck, shortcut): (usize, Vec<usize>, Vec<usize>, bool, _) =
            match layout {
                ResNetLayout::Cifar { blocks_per_stage } => (
                    16,
                    vec![16, 32, 64],
                    vec![blocks_per_stage; 3],
                    false,
                    ShortcutKind::ZeroPad,
                ),
                ResNetLayout::ImageNet { blocks, bottleneck } => (
                    64,
                    vec![64, 128, 256, 512],
                    blocks.to_vec(),
                    bottleneck,
                    ShortcutKind::Projection,
                ),
            };
        let mut layers: Vec<Box<dyn Layer>> = vec![
            Box::new(Conv2d::new(
                "conv1",
                Conv2dSpec::square(input_shape[0], stem, 3).padding(1),
                plan.clone(),
                init,
                &mut layer_rng(seed, 1),
            )?),
            Box::new(BatchNorm2d::new("bn1", stem)),
            Box::new(Relu::new("relu1")),
        ];
        let mut channels = stem;
        let mut rng_index = 2;
        for (s, (&width, &count)) in widths.iter().zip(&blocks).enumerate() {
            for b in 0..count {
                let stride = if s > 0 && b == 0 { 2 } else { 1 };
                let block_name = format!("s{}b{}", s + 1, b + 1);
                let mut rng = layer_rng(seed, rng_index);
                rng_index += 1;
                let block = if bottleneck {
                    ResidualBlock::bottleneck(
                        &block_name,
                        channels,
                        width,
                        stride,
                        plan.clone(),
                        init,
                        &mut rng,
                    )?
                } else {
                    ResidualBlock::basic(
                        &block_name,
                        channels,
                        width,
                        stride,
                        shortcut,
                        plan.clone(),
                        init,
                        &mut rng,
                    )?
                };
                channels = if bottleneck {
                    width * BOTTLENECK_EXPANSION
                } else {
                    width
                };
                layers.push(Box::new(block));
            }
        }
        layers.push(Box::new(GlobalAvgPool::new("pool")));
        layers.push(Box::new(Dense::new(
            "fc",
            channels,
            classes,
            plan,
            Init::GlorotUniform,
            &mut layer_rng(seed, rng_index),
        )));
        Network::new(name, input_shape, classes, layers)
    }

    /// The network's name (`lenet5`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Per-sample input shape (`[C, H, W]`).
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Number of output classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The layers, mutably: for tools that run a network layer by layer
    /// (per-layer operand statistics need one layer's input and output
    /// gradient).
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer>] {
        &mut self.layers
    }

    /// Names of the layers that have a multiplier plan (those
    /// [`Network::set_layer_plan`] accepts), in order: `conv1, conv2, fc1, ...`.
    pub fn layer_names(&self) -> Vec<String> {
        self.layers
            .iter()
            .filter(|l| l.plan().is_some())
            .map(|l| l.name().to_string())
            .collect()
    }

    /// The plan of any of [`Network::plan_names`].
    pub fn plan_by_name(&self, name: &str) -> Result<&MultiplierPlan> {
        if let Ok(p) = self.layer_plan(name) {
            return Ok(p);
        }
        self.layers
            .iter()
            .find_map(|l| l.inner_plan(name))
            .ok_or_else(|| NetError::UnknownLayer {
                net: self.name.clone(),
                name: name.to_string(),
                valid: self.plan_names().join(", "),
            })
    }

    /// The plan of layer `name`.
    pub fn layer_plan(&self, name: &str) -> Result<&MultiplierPlan> {
        self.layers
            .iter()
            .find(|l| l.name() == name)
            .and_then(|l| l.plan())
            .ok_or_else(|| self.unknown_layer(name))
    }

    /// Give layer `name` its own plan; an error naming the layer and listing
    /// the valid names if there is no such layer with products.
    pub fn set_layer_plan(&mut self, name: &str, plan: MultiplierPlan) -> Result<()> {
        let layer = self
            .layers
            .iter_mut()
            .find(|l| l.name() == name && l.plan().is_some());
        match layer {
            Some(l) => {
                l.set_plan(plan);
                Ok(())
            }
            None => Err(self.unknown_layer(name)),
        }
    }

    /// Set the same plan on every layer with products.
    pub fn set_plan(&mut self, plan: &MultiplierPlan) {
        for l in &mut self.layers {
            l.set_plan(plan.clone());
        }
    }

    fn unknown_layer(&self, name: &str) -> NetError {
        NetError::UnknownLayer {
            net: self.name.clone(),
            name: name.to_string(),
            valid: self.layer_names().join(", "),
        }
    }

    /// Logits `[N, classes]` of a batch `[N, input_shape...]`. With `train`,
    /// layers cache what [`Network::backward`] needs and dropout is active.
    pub fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        x.expect_sample_shape(&self.name, &self.input_shape)?;
        let mut layers = self.layers.iter_mut();
        let Some(first) = layers.next() else {
            return Ok(x.clone());
        };
        let mut h = first.forward(x, train)?;
        for l in layers {
            h = l.forward_owned(h, train)?;
        }
        Ok(h)
    }

    /// Back-propagate `dlogits` through the last training forward pass,
    /// filling every parameter's gradient. Input gradients are computed only
    /// down to the first layer with parameters (nothing below needs them).
    pub fn backward(&mut self, dlogits: &Tensor) -> Result<()> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let first = self.first_param_layer();
        let mut g = dlogits.clone();
        for i in (first..self.layers.len()).rev() {
            if let Some(dx) = self.layers[i].backward(&g, i > first)? {
                g = dx;
            }
        }
        Ok(())
    }

    /// Index of the first layer with parameters (the number of layers when
    /// none has any).
    fn first_param_layer(&self) -> usize {
        self.layers
            .iter()
            .position(|l| !l.params().is_empty())
            .unwrap_or(self.layers.len())
    }

    /// Set the activation ranges of the layers with an `int8:` forward from
    /// the first `images` images of `data` (min and max over all of them,
    /// in evaluation forwards of `batch_size`: batch norm uses its running
    /// statistics and nothing trains): what post-training quantization
    /// calibrates on. Layers without an `int8:` forward are untouched.
    pub fn calibrate(
        &mut self,
        data: &crate::data::ImageDataset,
        images: usize,
        batch_size: usize,
    ) -> Result<()> {
        let (len, per) = (images.min(data.len), data.image_len());
        let shape = |b: usize| vec![b, data.channels, data.height, data.width];
        for l in &mut self.layers {
            l.set_calibration(true);
        }
        let result = (0..len).step_by(batch_size.max(1)).try_for_each(|i| {
            let b = batch_size.max(1).min(len - i);
            let x = Tensor::from_vec(&shape(b), data.images[i * per..(i + b) * per].to_vec())?;
            self.forward(&x, false).map(|_| ())
        });
        for l in &mut self.layers {
            l.set_calibration(false);
        }
        result
    }

    /// Seed every layer's randomness (dropout) for the next forward pass;
    /// each layer gets its own stream derived from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        for (i, l) in self.layers.iter_mut().enumerate() {
            l.reseed(derive_seed(seed, Purpose::Dropout, &[i as u64]));
        }
    }

    /// All trainable parameters in a fixed order (layer order, weight before
    /// bias): the order optimizers and checkpoints use.
    pub fn params(&self) -> Vec<&Param> {
        self.layers.iter().flat_map(|l| l.params()).collect()
    }

    /// All trainable parameters, mutably, in the order of [`Network::params`].
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        self.layers
            .iter_mut()
            .flat_map(|l| l.params_mut())
            .collect()
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    /// Multiply-accumulates per role for one training image: forward,
    /// input gradient (not for the first layer with parameters, whose input
    /// gradient is skipped) and weight
    /// gradient. An evaluation image costs `forward` only.
    pub fn macs_per_image(&self) -> MacCounts {
        let mut total = MacCounts::default();
        for (_, m) in self.macs_per_layer() {
            total += m;
        }
        total
    }

    /// Multiply-accumulates per role for one image, per layer with products:
    /// `(name, counts)`.
    pub fn macs_per_layer(&self) -> Vec<(String, MacCounts)> {
        let first = self.first_param_layer();
        let mut out = Vec::new();
        let mut shape = self.input_shape.clone();
        for (i, l) in self.layers.iter().enumerate() {
            let mut m = l.macs(&shape);
            if i <= first {
                m.grad_input = 0;
            }
            if l.plan().is_some() {
                out.push((l.name().to_string(), m));
            }
            shape = l.output_shape(&shape).unwrap_or_default();
        }
        out
    }

    /// A one-line-per-layer summary: name, description, output shape.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let mut shape = self.input_shape.clone();
        for l in &self.layers {
            shape = l.output_shape(&shape).unwrap_or_default();
            s.push_str(&format!(
                "{:<8} {:<40} -> {:?}\n",
                l.name(),
                l.describe(),
                shape
            ));
        }
        s.push_str(&format!("{} parameters\n", self.num_params()));
        s
    }
}

impl PlannedModel for Network {
    /// Every name a plan can be given to, in order: each layer of
    /// [`Network::layer_names`] followed by its inner layers with products
    /// (for a ResNet block `s1b1`: `s1b1.conv1`, `s1b1.conv2`, and
    /// `s1b1.shortcut.conv` with a projection shortcut).
    fn plan_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for l in self.layers.iter().filter(|l| l.plan().is_some()) {
            names.push(l.name().to_string());
            names.extend(l.inner_plan_names());
        }
        names
    }

    /// [`Network::set_layer_plan`] for any of [`Network::plan_names`]: a
    /// layer (for a block, all its convolutions) or one inner layer. An
    /// error listing the valid names when there is no such name.
    fn set_plan_by_name(&mut self, name: &str, plan: MultiplierPlan) -> Result<()> {
        if self
            .layers
            .iter()
            .any(|l| l.name() == name && l.plan().is_some())
        {
            return self.set_layer_plan(name, plan);
        }
        for l in &mut self.layers {
            if l.inner_plan_names().iter().any(|n| n == name) {
                l.set_inner_plan(name, plan);
                return Ok(());
            }
        }
        Err(NetError::UnknownLayer {
            net: self.name.clone(),
            name: name.to_string(),
            valid: self.plan_names().join(", "),
        })
    }

    fn macs_per_example(&self) -> MacCounts {
        self.macs_per_image()
    }
}
