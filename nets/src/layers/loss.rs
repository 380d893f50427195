//! Softmax cross-entropy, the loss of every classifier here.
//!
//! Shapes: `logits [N, K]`, `labels [N]` (class indices < K),
//! `dlogits [N, K]`.
//!
//! - forward:  `p = softmax(z)` row-wise, `L = (1/N) Σ_n -log p[n, label_n]`
//!   (mean over the batch, in nats);
//! - backward: `dL/dz = (p - onehot(label)) / N`.
//!
//! With label smoothing ε (Szegedy et al., "Rethinking the Inception
//! Architecture for Computer Vision", CVPR 2016, section 7) the target is
//! `q = (1-ε)·onehot(label) + ε/K` instead of `onehot(label)`:
//! `L = (1/N) Σ_n (logsumexp(z_n) - Σ_j q_j z_nj)` and
//! `dL/dz = (p - q) / N`. With ε = 0 both are bit-identical to the plain
//! loss.
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
    softmax_cross_entropy_smoothed(logits, labels, 0.0)
}

/// [`softmax_cross_entropy`] against label-smoothed targets with smoothing
/// `epsilon` in `[0, 1)` (see the module documentation); the loss reported
/// is the smoothed one, the one whose gradient is returned.
pub fn softmax_cross_entropy_smoothed(
    logits: &Tensor,
    labels: &[u8],
    epsilon: f32,
) -> Result<LossOutput> {
    cross_entropy(logits, labels, epsilon)
}

/// [`softmax_cross_entropy`] with `u32` targets: the per-token loss of a
/// language model, `logits [N·T, V]` against the next token of each of
/// the `N·T` positions (vocabularies may exceed 256). The loss is the mean
/// over positions, in nats per token.
pub fn softmax_cross_entropy_tokens(logits: &Tensor, targets: &[u32]) -> Result<LossOutput> {
    cross_entropy(logits, targets, 0.0)
}

/// The loss and gradient of both entry points, for labels of any unsigned
/// width.
fn cross_entropy<L: Copy + Into<u32>>(
    logits: &Tensor,
    labels: &[L],
    epsilon: f32,
) -> Result<LossOutput> {
    let _span = amsim::timing::span(amsim::timing::Op::Loss);
    if !(0.0..1.0).contains(&epsilon) {
        return Err(NetError::Config(format!(
            "label smoothing must be in [0, 1), got {epsilon}"
        )));
    }
    if logits.shape.len() != 2 || logits.shape[0] != labels.len() {
        return Err(NetError::shape(format!(
            "softmax cross-entropy: logits {:?} do not match {} labels",
            logits.shape,
            labels.len()
        )));
    }
    let (n, k) = (logits.shape[0], logits.shape[1]);
    if let Some(bad) = labels.iter().map(|&l| l.into()).find(|&l| l as usize >= k) {
        return Err(NetError::shape(format!(
            "softmax cross-entropy: label {bad} is out of range for {k} classes"
        )));
    }
    let mut dlogits = Tensor::zeros(&[n, k]);
    let mut total = 0.0f64;
    let mut correct = 0;
    let inv_n = 1.0 / n.max(1) as f64;
    let eps = epsilon as f64;
    let off = eps / k.max(1) as f64;
    let on = 1.0 - eps + off;
    for ((row, drow), &label) in logits
        .data
        .chunks_exact(k)
        .zip(dlogits.data.chunks_exact_mut(k))
        .zip(labels)
    {
        let label = label.into() as usize;
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
        // Σ_j q_j z_j = (1-ε)·z_label + (ε/K)·Σ_j z_j; the second term is
        // skipped at ε = 0 so the plain loss is reproduced exactly.
        let mut target_dot = (1.0 - eps) * row[label] as f64;
        if eps > 0.0 {
            target_dot += off * row.iter().map(|&v| v as f64).sum::<f64>();
        }
        total += sum.ln() + max - target_dot;
        for (j, (d, &v)) in drow.iter_mut().zip(row).enumerate() {
            let p = (v as f64 - max).exp() / sum;
            let target = if j == label { on } else { off };
            *d = ((p - target) * inv_n) as f32;
        }
    }
    Ok(LossOutput {
        loss: (total * inv_n) as f32,
        dlogits,
        correct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;
    use rand_chacha::ChaCha8Rng;

    fn rng(test: &str) -> ChaCha8Rng {
        crate::rng::test_rng(test)
    }

    fn random_batch(rng: &mut ChaCha8Rng) -> (Tensor, Vec<u8>) {
        let (n, k) = (rng.gen_range(1..6), rng.gen_range(2..8));
        let logits = (0..n * k).map(|_| rng.gen_range(-4.0f32..4.0)).collect();
        let labels = (0..n).map(|_| rng.gen_range(0..k) as u8).collect();
        (Tensor::from_vec(&[n, k], logits).unwrap(), labels)
    }

    #[test]
    fn zero_smoothing_is_bit_identical_to_the_plain_loss() {
        let mut rng = rng("zero_smoothing");
        for _ in 0..20 {
            let (z, y) = random_batch(&mut rng);
            let plain = softmax_cross_entropy(&z, &y).unwrap();
            let smoothed = softmax_cross_entropy_smoothed(&z, &y, 0.0).unwrap();
            assert_eq!(plain.loss.to_bits(), smoothed.loss.to_bits());
            assert_eq!(plain.dlogits, smoothed.dlogits);
            // The plain loss is -log p[label] averaged over the rows.
            let k = z.shape[1];
            let want: f64 = z
                .data
                .chunks(k)
                .zip(&y)
                .map(|(row, &l)| {
                    let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
                    lse - row[l as usize] as f64
                })
                .sum::<f64>()
                / y.len() as f64;
            assert!(
                (plain.loss as f64 - want).abs() < 1e-5,
                "{} vs {want}",
                plain.loss
            );
        }
    }

    /// With smoothing ε the loss is the cross-entropy against
    /// q = (1-ε)·onehot + ε/K, and its gradient matches central finite
    /// differences of that loss.
    #[test]
    fn smoothed_loss_and_gradient_match_the_formula_and_finite_differences() {
        let mut rng = rng("smoothed_loss");
        for _ in 0..20 {
            let (z, y) = random_batch(&mut rng);
            let eps: f32 = rng.gen_range(0.01..0.5);
            let (n, k) = (z.shape[0], z.shape[1]);
            let loss_f64 = |z: &[f32]| -> f64 {
                let mut total = 0.0;
                for (row, &l) in z.chunks(k).zip(&y) {
                    let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
                    for (j, &v) in row.iter().enumerate() {
                        let q = if j == l as usize {
                            1.0 - eps as f64
                        } else {
                            0.0
                        } + eps as f64 / k as f64;
                        total += q * (lse - v as f64);
                    }
                }
                total / n as f64
            };
            let out = softmax_cross_entropy_smoothed(&z, &y, eps).unwrap();
            assert!((out.loss as f64 - loss_f64(&z.data)).abs() < 1e-5);
            let h = 1e-3f32;
            for i in 0..z.data.len() {
                let mut plus = z.data.clone();
                plus[i] += h;
                let mut minus = z.data.clone();
                minus[i] -= h;
                // Divide by the step the f32 inputs really took.
                let step = plus[i] as f64 - minus[i] as f64;
                let fd = (loss_f64(&plus) - loss_f64(&minus)) / step;
                assert!(
                    (out.dlogits.data[i] as f64 - fd).abs() < 1e-4,
                    "element {i}: analytic {} finite difference {fd}",
                    out.dlogits.data[i]
                );
            }
        }
    }

    #[test]
    fn smoothing_outside_zero_to_one_is_an_error() {
        let z = Tensor::from_vec(&[1, 2], vec![0.0, 1.0]).unwrap();
        for eps in [-0.1, 1.0, f32::NAN] {
            let e = softmax_cross_entropy_smoothed(&z, &[0], eps).unwrap_err();
            assert!(e.to_string().contains("label smoothing"), "{e}");
        }
    }
}
