//! Token embedding: a lookup of rows of a `vocab x dim` table.
//!
//! Shapes: ids `[N, T]`, `table [V, D]`, `y [N, T, D]`, `dy [N, T, D]`.
//!
//! - forward:  `y[n, t] = table[id[n, t]]`
//! - backward: `dtable[v] = Σ_{(n, t): id[n, t] = v} dy[n, t]`, accumulated
//!   in `(n, t)` order, so repeated ids add up and the result does not
//!   depend on the thread count. There is no input gradient: ids are not
//!   differentiable, so an embedding is the first layer of a network.
//!
//! A lookup is not a multiplication, so the layer has no multiplier plan.
//!
//! Passing ids: [`Embedding::forward_ids`] takes them as `&[u32]`. The
//! [`Layer`] impl takes a `[N, T]` tensor of ids stored as `f32` (exact for
//! ids below 2²⁴); a value that is not a whole number in `0..vocab` is an
//! error naming the position, never a panic.

use rand::Rng;

use super::{split_batch, Layer, Param};
use crate::init::standard_normal;
use crate::{NetError, Result, Tensor};

/// `y[n, t] = table[id[n, t]]`.
#[derive(Debug, Clone)]
pub struct Embedding {
    name: String,
    vocab: usize,
    dim: usize,
    /// `table [V, D]`; weight decay applies.
    pub table: Param,
    /// Backward cache: the ids `[N·T]` of the last training forward.
    cache_ids: Vec<u32>,
    /// Backward cache: `(N, T)` of those ids.
    cache_batch_seq: (usize, usize),
}

impl Embedding {
    /// A `vocab x dim` table drawn from `N(0, std²)` (GPT-2 uses
    /// `std = 0.02`).
    pub fn new<R: Rng + ?Sized>(
        name: &str,
        vocab: usize,
        dim: usize,
        std: f32,
        rng: &mut R,
    ) -> Embedding {
        let mut table = Param::zeros(format!("{name}.table"), &[vocab, dim], true);
        for v in table.value.iter_mut() {
            *v = (standard_normal(rng) * std as f64) as f32;
        }
        Embedding {
            name: name.to_string(),
            vocab,
            dim,
            table,
            cache_ids: Vec::new(),
            cache_batch_seq: (0, 0),
        }
    }

    /// Vocabulary size V.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Embedding dimension D.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `y [batch, seq, D]` for `ids [batch·seq]` (row-major `[batch, seq]`);
    /// an error if the length does not match or an id is not below the
    /// vocabulary size. With `train` the ids are kept for backward.
    pub fn forward_ids(
        &mut self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        train: bool,
    ) -> Result<Tensor> {
        if ids.len() != batch * seq {
            return Err(NetError::shape(format!(
                "{}: {} ids do not form [{batch}, {seq}]",
                self.name,
                ids.len()
            )));
        }
        if let Some((i, &id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| id as usize >= self.vocab)
        {
            return Err(NetError::shape(format!(
                "{}: token id {id} at position {i} is out of range for a vocabulary of {}",
                self.name, self.vocab
            )));
        }
        let d = self.dim;
        let mut y = Tensor::zeros(&[batch, seq, d]);
        if d > 0 {
            for (row, &id) in y.data.chunks_exact_mut(d).zip(ids) {
                let id = id as usize;
                row.copy_from_slice(&self.table.value[id * d..(id + 1) * d]);
            }
        }
        if train {
            self.cache_ids.clear();
            self.cache_ids.extend_from_slice(ids);
            self.cache_batch_seq = (batch, seq);
        }
        Ok(y)
    }

    /// The ids held in a `[N, T]` tensor of `f32`; an error naming the
    /// first value that is not a whole number in `0..vocab`.
    pub fn ids_from_tensor(&self, x: &Tensor) -> Result<Vec<u32>> {
        x.data
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && (v as usize) < self.vocab {
                    Ok(v as u32)
                } else {
                    Err(NetError::shape(format!(
                        "{}: input {i} is {v}, not a token id in 0..{}",
                        self.name, self.vocab
                    )))
                }
            })
            .collect()
    }
}

impl Layer for Embedding {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!("Embedding({} x {})", self.vocab, self.dim)
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        match sample {
            [t] => Ok(vec![*t, self.dim]),
            _ => Err(NetError::shape(format!(
                "{}: expected a sample of token ids [T], got shape {sample:?}",
                self.name
            ))),
        }
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let (n, sample) = split_batch(&self.name, x)?;
        self.output_shape(sample)?;
        let ids = self.ids_from_tensor(x)?;
        self.forward_ids(&ids, n, sample[0], train)
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let (n, t) = self.cache_batch_seq;
        let d = self.dim;
        if dy.shape != [n, t, d] {
            return Err(NetError::shape(format!(
                "{}: backward expected dy [{n}, {t}, {d}] (after a training forward), got {:?}",
                self.name, dy.shape
            )));
        }
        if need_input_grad {
            return Err(NetError::shape(format!(
                "{}: token ids have no gradient; an embedding must be the first layer",
                self.name
            )));
        }
        self.table.grad.fill(0.0);
        if d > 0 {
            // Positions in (n, t) order: a fixed accumulation order per row.
            for (g, &id) in dy.data.chunks_exact(d).zip(&self.cache_ids) {
                let id = id as usize;
                for (acc, &v) in self.table.grad[id * d..(id + 1) * d].iter_mut().zip(g) {
                    *acc += v;
                }
            }
        }
        Ok(None)
    }

    fn params(&self) -> Vec<&Param> {
        vec![&self.table]
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        vec![&mut self.table]
    }
}
