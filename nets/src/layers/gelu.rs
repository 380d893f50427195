//! Gaussian error linear unit, tanh approximation, elementwise.
//!
//! Shapes: `x`, `y`, `dy`, `dx` all the same, any `[N, ...]`.
//!
//! The formula is eq. (2) of Hendrycks and Gimpel, "Gaussian Error Linear
//! Units (GELUs)", arXiv:1606.08415, as GPT-2 uses it (`gelu` in
//! openai/gpt-2 `src/model.py`, and llm.c's `gelu_forward`):
//!
//! - forward:  `u = k·(x + c·x³)`, `y = 0.5·x·(1 + tanh(u))`, with
//!   `k = sqrt(2/π)`, `c = 0.044715`
//! - backward: `dx = dy·(0.5·(1 + tanh(u)) + 0.5·x·(1 - tanh²(u))·k·(1 + 3c·x²))`
//!
//! `tanh` is [`crate::fastmath::tanh`] (vectorisable, same bits everywhere).

use rayon::prelude::*;

use super::{split_batch, Layer, PAR_MIN_ELEMS};
use crate::fastmath::tanh;
use crate::{NetError, Result, Tensor};

/// `sqrt(2/π)`.
const GELU_K: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_C: f32 = 0.044_715;

/// `y = 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))`.
#[derive(Debug, Clone)]
pub struct Gelu {
    name: String,
    /// Backward cache: the input `x` of the last training forward.
    cache_x: Vec<f32>,
}

impl Gelu {
    /// A GELU named `name`.
    pub fn new(name: &str) -> Gelu {
        Gelu {
            name: name.to_string(),
            cache_x: Vec::new(),
        }
    }
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    let u = GELU_K * (x + GELU_C * x * x * x);
    0.5 * x * (1.0 + tanh(u))
}

#[inline(always)]
fn gelu_derivative(x: f32) -> f32 {
    let u = GELU_K * (x + GELU_C * x * x * x);
    let t = tanh(u);
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 3.0 * GELU_C * x * x)
}

impl Layer for Gelu {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        "GELU(tanh)".into()
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        Ok(sample.to_vec())
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Activation);
        split_batch(&self.name, x)?;
        let mut y = Tensor::zeros(&x.shape);
        // Chunks of plain loops: the elementwise function vectorises.
        y.data
            .par_chunks_mut(PAR_MIN_ELEMS)
            .zip(x.data.par_chunks(PAR_MIN_ELEMS))
            .for_each(|(out, inp)| {
                for (o, &v) in out.iter_mut().zip(inp) {
                    *o = gelu(v);
                }
            });
        if train {
            self.cache_x.clear();
            self.cache_x.extend_from_slice(&x.data);
        }
        Ok(y)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Activation);
        if dy.len() != self.cache_x.len() {
            return Err(NetError::shape(format!(
                "{}: backward got {} gradients for {} cached inputs",
                self.name,
                dy.len(),
                self.cache_x.len()
            )));
        }
        if !need_input_grad {
            return Ok(None);
        }
        let mut data = vec![0.0f32; dy.len()];
        data.par_chunks_mut(PAR_MIN_ELEMS)
            .zip(dy.data.par_chunks(PAR_MIN_ELEMS))
            .zip(self.cache_x.par_chunks(PAR_MIN_ELEMS))
            .for_each(|((out, g), x)| {
                for ((o, &d), &x) in out.iter_mut().zip(g).zip(x) {
                    *o = d * gelu_derivative(x);
                }
            });
        Ok(Some(Tensor {
            shape: dy.shape.clone(),
            data,
        }))
    }
}
