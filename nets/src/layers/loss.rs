//! Softmax cross-entropy, the loss of every classifier here.
//!
//! Shapes: `logits [N, K]`, `labels [N]` (class indices < K),
//! `dlogits [N, K]`.
//!
//! - forward:  `p = softmax(z)` row-wise, `L = (1/N) Σ_n -log p[n, label_n]`
//!   (mean over the batch, in nats);
//! - backward: `dL/dz = (p - onehot(label)) / N`.
//!
//! Each row is computed in f64 with the maximum subtracted first
//! (log-sum-exp), so large logits neither overflow nor lose the loss; rows
//! are summed in batch order, which keeps the result deterministic.

use crate::{NetError, Result, Tensor};

/// What [`softmax_cross_entropy`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct LossOutput {
    /// Mean loss over the batch, in nats (NaN or infinite when the logits
    /// are).
    pub loss: f32,
    /// `dL/dlogits [N, K]`.
    pub dlogits: Tensor,
    /// Rows whose largest logit (the first, on ties) is the label.
    pub correct: usize,
}

/// Mean softmax cross-entropy of `logits [N, K]` against `labels`, with its
/// gradient and the number of correct predictions.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &[u8]) -> Result<LossOutput> {
    if logits.shape.len() != 2 || logits.shape[0] != labels.len() {
        return Err(NetError::shape(format!(
            "softmax cross-entropy: logits {:?} do not match {} labels",
            logits.shape,
            labels.len()
        )));
    }
    let (n, k) = (logits.shape[0], logits.shape[1]);
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= k) {
        return Err(NetError::shape(format!(
            "softmax cross-entropy: label {bad} is out of range for {k} classes"
        )));
    }
    let mut dlogits = Tensor::zeros(&[n, k]);
    let mut total = 0.0f64;
    let mut correct = 0;
    let inv_n = 1.0 / n.max(1) as f64;
    for ((row, drow), &label) in logits
        .data
        .chunks_exact(k)
        .zip(dlogits.data.chunks_exact_mut(k))
        .zip(labels)
    {
        let label = label as usize;
        let mut argmax = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[argmax] {
                argmax = j;
            }
        }
        if argmax == label {
            correct += 1;
        }
        let max = row[argmax] as f64;
        let mut sum = 0.0f64;
        for &v in row {
            sum += (v as f64 - max).exp();
        }
        total += sum.ln() + max - row[label] as f64;
        for (j, (d, &v)) in drow.iter_mut().zip(row).enumerate() {
            let p = (v as f64 - max).exp() / sum;
            let target = if j == label { 1.0 } else { 0.0 };
            *d = ((p - target) * inv_n) as f32;
        }
    }
    Ok(LossOutput {
        loss: (total * inv_n) as f32,
        dlogits,
        correct,
    })
}
