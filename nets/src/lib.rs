//! Tensors, layers, optimizers, datasets and networks over `amsim`.
//!
//! Every matrix product and convolution of a layer goes through `amsim`
//! with the layer's [`amsim::MultiplierPlan`]: the forward product with
//! `plan.forward`, the input gradient with `plan.grad_input` and the weight
//! gradient with `plan.grad_weight`, operands in DESIGN.md's order.
//!
//! The pieces, bottom up:
//! - [`tensor::Tensor`]: shape + row-major `f32` data.
//! - [`layers`]: one file per layer kind implementing [`layers::Layer`]
//!   (`forward(x, train)` / `backward(dy, need_input_grad)` side by side),
//!   and [`layers::softmax_cross_entropy`].
//! - [`model::Network`]: a sequence of layers; `lenet300100`, `lenet5`,
//!   `by_name` (the LeNets and ResNet-20/32/56/18/34/50); per-layer plans (`layer_names`, `set_layer_plan`); MAC
//!   counts per role (`macs_per_image`).
//! - [`transformer::Transformer`]: the character-level language model
//!   (pre-LN blocks, attention scores on the plan's `attn_qk` / `attn_av`),
//!   trained step by step and sampled by [`lm`].
//! - [`planned::PlannedModel`]: what both models offer runs of either task
//!   (plan names, plans set by name, MACs per example).
//! - [`optim::Optimizer`] (SGD / Adam / AdamW) and [`schedule::LrSchedule`].
//! - [`init`]: He and Glorot initialisation; [`rng`]: every random stream is
//!   derived from the run seed.
//! - [`train::Trainer`]: one epoch, evaluation, checkpoint save / load
//!   ([`checkpoint`] documents the file format).
//!
//! Determinism: the same seed gives bit-identical parameters at any thread
//! count. AMSim products are bit-exact; every reduction in this crate (bias
//! gradients, loss) runs in a fixed order.
//!
//! ```no_run
//! use amsim::{Multiplier, MultiplierPlan};
//! use nets::{model::Network, optim::{Optimizer, OptimizerConfig},
//!            schedule::LrSchedule, train::Trainer};
//! # fn main() -> nets::Result<()> {
//! let net = Network::lenet5(MultiplierPlan::uniform(Multiplier::Fp32), 1);
//! let opt = Optimizer::new(OptimizerConfig::sgd_momentum(0.9))?;
//! let mut trainer = Trainer::new(net, opt, LrSchedule::constant(0.01), 1)?;
//! # let train_set: nets::data::ImageDataset = todo!();
//! let stats = trainer.train_epoch(&train_set, 64, &mut |_progress| {})?;
//! println!("loss {} accuracy {}", stats.loss, stats.accuracy);
//! # Ok(()) }
//! ```

// The workspace's rust-version (1.80) predates `usize::is_multiple_of`.
#![allow(clippy::manual_is_multiple_of)]

pub mod checkpoint;
pub mod data;
pub mod device;
pub mod error;
pub mod fastmath;
pub mod init;
pub mod layers;
pub mod lm;
pub mod model;
pub mod optim;
pub mod planned;
pub mod rng;
pub mod schedule;
pub mod tensor;
pub mod train;
pub mod transformer;
mod vector;

pub use error::{NetError, Result};
pub use model::Network;
pub use planned::PlannedModel;
pub use tensor::Tensor;
