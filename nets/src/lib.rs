//! Tensors, layers, optimizers, datasets and networks over `amsim`.
//!
//! Every matrix product and convolution of a layer goes through `amsim`
//! with the layer's [`amsim::MultiplierPlan`].

pub mod data;
