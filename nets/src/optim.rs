//! Optimizers: SGD (momentum, weight decay, Nesterov) and Adam / AdamW.
//!
//! Update rules, per parameter element, with gradient `g`, learning rate
//! `lr` and weight decay `wd` (applied only to parameters with
//! [`Param::decay`], i.e. weights, not biases):
//!
//! - SGD, in the form PyTorch's `torch.optim.SGD` documents (Sutskever et
//!   al., ICML 2013, for the momentum and Nesterov variants):
//!   `g += wd·w; v = μ·v + g; d = nesterov ? g + μ·v : v; w -= lr·d`
//!   (`d = g` when `μ = 0`).
//! - Adam (Kingma and Ba, ICLR 2015, Algorithm 1), L2 decay folded into the
//!   gradient: `g += wd·w; m = β1·m + (1-β1)·g; v = β2·v + (1-β2)·g²;
//!   w -= lr·(m/(1-β1^t)) / (sqrt(v/(1-β2^t)) + ε)`.
//! - AdamW (Loshchilov and Hutter, ICLR 2019): as Adam without the L2 term,
//!   and `w -= lr·wd·w` decoupled, before the Adam step.
//!
//! The state (momentum buffers or Adam moments, and the step count `t`) is
//! exposed for checkpoints.

use crate::layers::Param;
use crate::{NetError, Result};

/// Which optimizer, with its hyper-parameters (the learning rate comes from
/// the schedule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerConfig {
    /// Stochastic gradient descent.
    Sgd {
        /// Momentum μ (0 for plain SGD).
        momentum: f32,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 weight decay.
        weight_decay: f32,
    },
    /// Adam (`decoupled = false`) or AdamW (`decoupled = true`).
    Adam {
        /// β1.
        beta1: f32,
        /// β2.
        beta2: f32,
        /// ε.
        eps: f32,
        /// Weight decay: L2 for Adam, decoupled for AdamW.
        weight_decay: f32,
        /// AdamW's decoupled decay.
        decoupled: bool,
    },
}

impl OptimizerConfig {
    /// Plain SGD.
    pub fn sgd() -> Self {
        OptimizerConfig::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// SGD with momentum `momentum`.
    pub fn sgd_momentum(momentum: f32) -> Self {
        OptimizerConfig::Sgd {
            momentum,
            nesterov: false,
            weight_decay: 0.0,
        }
    }

    /// Adam with the paper's defaults (β1 0.9, β2 0.999, ε 1e-8).
    pub fn adam() -> Self {
        OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// AdamW with the paper's defaults and decoupled decay `weight_decay`.
    pub fn adamw(weight_decay: f32) -> Self {
        OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            decoupled: true,
        }
    }

    /// Short name: `sgd`, `adam` or `adamw`.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd { .. } => "sgd",
            OptimizerConfig::Adam {
                decoupled: false, ..
            } => "adam",
            OptimizerConfig::Adam {
                decoupled: true, ..
            } => "adamw",
        }
    }

    /// Check the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(NetError::Config(m));
        match *self {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                if !(0.0..1.0).contains(&momentum) {
                    return bad(format!("SGD momentum must be in [0, 1), got {momentum}"));
                }
                if nesterov && momentum == 0.0 {
                    return bad("Nesterov SGD needs a momentum above 0".into());
                }
                if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return bad(format!("weight decay must be >= 0, got {weight_decay}"));
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                ..
            } => {
                if !(0.0..1.0).contains(&beta1) || !(0.0..1.0).contains(&beta2) {
                    return bad(format!(
                        "Adam betas must be in [0, 1), got ({beta1}, {beta2})"
                    ));
                }
                if !(eps > 0.0 && eps.is_finite()) {
                    return bad(format!("Adam epsilon must be > 0, got {eps}"));
                }
                if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
                    return bad(format!("weight decay must be >= 0, got {weight_decay}"));
                }
            }
        }
        Ok(())
    }

    /// State buffers kept per parameter: 1 for SGD with momentum, 0 for
    /// plain SGD, 2 for Adam.
    fn slots_per_param(&self) -> usize {
        match *self {
            OptimizerConfig::Sgd { momentum, .. } => usize::from(momentum != 0.0),
            OptimizerConfig::Adam { .. } => 2,
        }
    }
}

/// An optimizer and its state.
#[derive(Debug, Clone)]
pub struct Optimizer {
    config: OptimizerConfig,
    /// Steps taken (Adam's `t`).
    steps: u64,
    /// Per parameter, `slots_per_param` buffers of its length, parameter
    /// major: SGD momentum `v`, or Adam `m` then `v`. Empty until the first
    /// step.
    slots: Vec<Vec<f32>>,
}

impl Optimizer {
    /// An optimizer with fresh state; an error if the hyper-parameters are
    /// invalid.
    pub fn new(config: OptimizerConfig) -> Result<Optimizer> {
        config.validate()?;
        Ok(Optimizer {
            config,
            steps: 0,
            slots: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The state buffers (see the field documentation), for checkpoints.
    pub fn slots(&self) -> &[Vec<f32>] {
        &self.slots
    }

    /// Restore state saved from [`Optimizer::steps`] and
    /// [`Optimizer::slots`]; the buffers are checked against `params` at the
    /// next step.
    pub fn restore(&mut self, steps: u64, slots: Vec<Vec<f32>>) {
        self.steps = steps;
        self.slots = slots;
    }

    /// Make sure the state fits `params` (allocating it on the first step).
    fn ensure_slots(&mut self, params: &[&mut Param]) -> Result<()> {
        let k = self.config.slots_per_param();
        let fits = self.slots.len() == k * params.len()
            && self
                .slots
                .iter()
                .enumerate()
                .all(|(i, s)| s.len() == params[i / k.max(1)].len());
        if fits {
            return Ok(());
        }
        if !self.slots.is_empty() {
            return Err(NetError::Config(format!(
                "optimizer state has {} buffers that do not fit the {} parameters given",
                self.slots.len(),
                params.len()
            )));
        }
        self.slots = params
            .iter()
            .flat_map(|p| (0..k).map(|_| vec![0.0; p.len()]))
            .collect();
        Ok(())
    }

    /// One update of every parameter from its gradient, at learning rate
    /// `lr`.
    pub fn step(&mut self, params: &mut [&mut Param], lr: f32) -> Result<()> {
        let _span = amsim::timing::span(amsim::timing::Op::Optimizer);
        self.ensure_slots(params)?;
        self.steps += 1;
        match self.config {
            OptimizerConfig::Sgd {
                momentum,
                nesterov,
                weight_decay,
            } => {
                for (i, p) in params.iter_mut().enumerate() {
                    let wd = if p.decay { weight_decay } else { 0.0 };
                    let Param { value, grad, .. } = &mut **p;
                    if momentum == 0.0 {
                        for (w, &g) in value.iter_mut().zip(grad.iter()) {
                            *w -= lr * (g + wd * *w);
                        }
                        continue;
                    }
                    let v = &mut self.slots[i];
                    for ((w, &g), v) in value.iter_mut().zip(grad.iter()).zip(v.iter_mut()) {
                        let g = g + wd * *w;
                        *v = momentum * *v + g;
                        let d = if nesterov { g + momentum * *v } else { *v };
                        *w -= lr * d;
                    }
                }
            }
            OptimizerConfig::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled,
            } => {
                let t = self.steps as i32;
                let bc1 = 1.0 - (beta1 as f64).powi(t);
                let bc2 = 1.0 - (beta2 as f64).powi(t);
                let (bc1, bc2) = (bc1 as f32, bc2 as f32);
                for (i, p) in params.iter_mut().enumerate() {
                    let wd = if p.decay { weight_decay } else { 0.0 };
                    let Param { value, grad, .. } = &mut **p;
                    let (ms, vs) = self.slots[2 * i..2 * i + 2].split_at_mut(1);
                    for (((w, &g), m), v) in value
                        .iter_mut()
                        .zip(grad.iter())
                        .zip(ms[0].iter_mut())
                        .zip(vs[0].iter_mut())
                    {
                        let g = if decoupled {
                            *w -= lr * wd * *w;
                            g
                        } else {
                            g + wd * *w
                        };
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        let m_hat = *m / bc1;
                        let v_hat = *v / bc2;
                        *w -= lr * m_hat / (v_hat.sqrt() + eps);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(value: Vec<f32>, grad: Vec<f32>, decay: bool) -> Param {
        Param {
            name: "p".into(),
            shape: vec![value.len()],
            value,
            grad,
            decay,
        }
    }

    #[test]
    fn sgd_momentum_nesterov_and_decay_follow_the_documented_formulas() {
        let config = OptimizerConfig::Sgd {
            momentum: 0.5,
            nesterov: true,
            weight_decay: 0.1,
        };
        let mut opt = Optimizer::new(config).unwrap();
        let mut w = param(vec![1.0, -2.0], vec![0.5, 0.25], true);
        let mut b = param(vec![3.0], vec![1.0], false);
        // Step 1: g = grad + 0.1 w; v = g; d = g + 0.5 v = 1.5 g.
        opt.step(&mut [&mut w, &mut b], 0.1).unwrap();
        let g0 = [0.5 + 0.1, 0.25 - 0.2];
        let w1 = [1.0 - 0.1 * 1.5 * g0[0], -2.0 - 0.1 * 1.5 * g0[1]];
        assert!((w.value[0] - w1[0]).abs() < 1e-7 && (w.value[1] - w1[1]).abs() < 1e-7);
        assert!(
            (b.value[0] - (3.0 - 0.1 * 1.5)).abs() < 1e-7,
            "no decay on biases"
        );
        // Step 2 with the same gradient: v = 0.5 v + g, d = g + 0.5 v.
        opt.step(&mut [&mut w, &mut b], 0.1).unwrap();
        let g1 = 0.5 + 0.1 * w1[0];
        let v1 = 0.5 * g0[0] + g1;
        let want = w1[0] - 0.1 * (g1 + 0.5 * v1);
        assert!((w.value[0] - want).abs() < 1e-6, "{} vs {want}", w.value[0]);
        assert_eq!(opt.steps(), 2);
        assert_eq!(opt.slots().len(), 2);
    }

    #[test]
    fn adam_first_step_moves_each_weight_by_the_learning_rate() {
        // With bias correction, m̂ = g and v̂ = g², so the first step is
        // lr·g/(|g| + ε) ≈ lr·sign(g).
        let mut opt = Optimizer::new(OptimizerConfig::adam()).unwrap();
        let mut w = param(vec![1.0, 1.0, 1.0], vec![3.0, -0.01, 1e-3], true);
        opt.step(&mut [&mut w], 0.01).unwrap();
        for (v, s) in w.value.iter().zip([-1.0f32, 1.0, -1.0]) {
            assert!((v - (1.0 + 0.01 * s)).abs() < 1e-5, "{v}");
        }
        assert_eq!(opt.slots().len(), 2);
    }

    #[test]
    fn adamw_decays_weights_but_not_biases_even_with_zero_gradient() {
        let mut opt = Optimizer::new(OptimizerConfig::adamw(0.5)).unwrap();
        let mut w = param(vec![2.0], vec![0.0], true);
        let mut b = param(vec![2.0], vec![0.0], false);
        opt.step(&mut [&mut w, &mut b], 0.1).unwrap();
        assert!((w.value[0] - 2.0 * (1.0 - 0.1 * 0.5)).abs() < 1e-7);
        assert_eq!(b.value[0], 2.0);
    }

    #[test]
    fn invalid_hyper_parameters_are_errors() {
        for c in [
            OptimizerConfig::Sgd {
                momentum: 1.0,
                nesterov: false,
                weight_decay: 0.0,
            },
            OptimizerConfig::Sgd {
                momentum: 0.0,
                nesterov: true,
                weight_decay: 0.0,
            },
            OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: false,
                weight_decay: -1.0,
            },
        ] {
            assert!(Optimizer::new(c).is_err(), "{c:?}");
        }
        let mut adam = OptimizerConfig::adam();
        if let OptimizerConfig::Adam { eps, .. } = &mut adam {
            *eps = 0.0;
        }
        let msg = Optimizer::new(adam).unwrap_err().to_string();
        assert!(msg.contains("epsilon"), "{msg}");
    }

    #[test]
    fn state_that_does_not_fit_the_parameters_is_an_error() {
        let mut opt = Optimizer::new(OptimizerConfig::sgd_momentum(0.9)).unwrap();
        opt.restore(1, vec![vec![0.0; 3]]);
        let mut w = param(vec![1.0, 2.0], vec![0.0, 0.0], true);
        assert!(opt.step(&mut [&mut w], 0.1).is_err());
    }
}
