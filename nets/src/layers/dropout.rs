//! Inverted dropout (Srivastava et al., "Dropout: A Simple Way to Prevent
//! Neural Networks from Overfitting", JMLR 2014), seeded.
//!
//! Shapes: `x`, `y`, `dy`, `dx` all the same, any `[N, ...]`.
//!
//! - forward (training): keep each element with probability `1 - p`,
//!   `y = x·mask/(1 - p)`; at evaluation `y = x`.
//! - backward: `dx = dy·mask/(1 - p)`.
//!
//! The mask comes from a ChaCha8 stream seeded by [`Layer::reseed`]; the
//! trainer reseeds every layer before each batch from (run seed, epoch,
//! batch, layer), so a run replays exactly.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{split_batch, Layer};
use crate::{NetError, Result, Tensor};

/// Dropout with drop probability `p`.
#[derive(Debug, Clone)]
pub struct Dropout {
    name: String,
    p: f32,
    rng: ChaCha8Rng,
    /// Backward cache: the scale `mask/(1 - p)` applied to each element in
    /// the last training forward.
    cache_scale: Vec<f32>,
}

impl Dropout {
    /// Dropout with drop probability `p` in [0, 1).
    pub fn new(name: &str, p: f32) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(NetError::Config(format!(
                "{name}: dropout probability must be in [0, 1), got {p}"
            )));
        }
        Ok(Dropout {
            name: name.to_string(),
            p,
            rng: ChaCha8Rng::seed_from_u64(0),
            cache_scale: Vec::new(),
        })
    }
}

impl Layer for Dropout {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!("Dropout({})", self.p)
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        Ok(sample.to_vec())
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Activation);
        split_batch(&self.name, x)?;
        if !train {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let inv_keep = 1.0 / keep;
        self.cache_scale.clear();
        for _ in 0..x.len() {
            let kept = self.rng.gen::<f32>() < keep;
            self.cache_scale.push(if kept { inv_keep } else { 0.0 });
        }
        let data = x
            .data
            .iter()
            .zip(&self.cache_scale)
            .map(|(v, s)| v * s)
            .collect();
        Ok(Tensor {
            shape: x.shape.clone(),
            data,
        })
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Activation);
        if dy.len() != self.cache_scale.len() {
            return Err(NetError::shape(format!(
                "{}: backward got {} gradients for {} cached elements",
                self.name,
                dy.len(),
                self.cache_scale.len()
            )));
        }
        if !need_input_grad {
            return Ok(None);
        }
        let data = dy
            .data
            .iter()
            .zip(&self.cache_scale)
            .map(|(g, s)| g * s)
            .collect();
        Ok(Some(Tensor {
            shape: dy.shape.clone(),
            data,
        }))
    }

    fn reseed(&mut self, seed: u64) {
        self.rng = ChaCha8Rng::seed_from_u64(seed);
    }
}
