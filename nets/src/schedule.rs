//! Learning-rate schedules, evaluated per epoch or per step.
//!
//! The schedule's time `t` is the epoch index (granularity
//! [`Granularity::Epoch`]) or the global step (granularity
//! [`Granularity::Step`]); every length in a schedule is in that unit.
//!
//! - constant: `lr = base`;
//! - step: `lr = base·γ^floor(t / every)`;
//! - cosine with linear warm-up (warm-up: Goyal et al., "Accurate, Large
//!   Minibatch SGD", 2017; cosine: Loshchilov and Hutter, "SGDR", ICLR
//!   2017): `lr = base·(t+1)/warmup` for `t < warmup`, then
//!   `lr = min + (base - min)·(1 + cos(π·p))/2` with
//!   `p = min(1, (t - warmup)/(total - warmup))`.
//! - one-cycle (Smith and Topin, "Super-Convergence", 2019; the cosine
//!   annealing form and defaults of PyTorch's `OneCycleLR`): from
//!   `base/div` up to `base` over `rise` units, then down to
//!   `base/(div·final_div)` at `total`, both halves cosine:
//!   `lr = a + (b - a)·(1 - cos(π·p))/2` going from `a` to `b` with `p` the
//!   fraction of the half done.

use crate::{NetError, Result};

/// The shape of a schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` units.
    Step {
        /// Period, in units of the granularity.
        every: u64,
        /// Factor per period.
        gamma: f32,
    },
    /// Linear warm-up over `warmup` units, then cosine decay to `min_lr` at
    /// `total`.
    Cosine {
        /// Warm-up length (0 for none).
        warmup: u64,
        /// Length of the whole schedule, warm-up included.
        total: u64,
        /// The rate at the end.
        min_lr: f32,
    },
    /// One cycle: cosine up from `base/div` to `base` over `rise` units,
    /// then cosine down to `base/(div·final_div)` at `total`.
    OneCycle {
        /// Length of the rising half.
        rise: u64,
        /// Length of the whole schedule.
        total: u64,
        /// Initial rate is `base / div` (PyTorch's default 25).
        div: f32,
        /// Final rate is the initial one over `final_div` (default 1e4).
        final_div: f32,
    },
}

/// Whether the schedule's time is epochs or steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// Updated once per epoch.
    Epoch,
    /// Updated every optimizer step.
    Step,
}

/// A base learning rate, a schedule and its granularity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// The base (peak) learning rate.
    pub base_lr: f32,
    /// The schedule.
    pub schedule: Schedule,
    /// Its time unit.
    pub granularity: Granularity,
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant(base_lr: f32) -> LrSchedule {
        LrSchedule {
            base_lr,
            schedule: Schedule::Constant,
            granularity: Granularity::Epoch,
        }
    }

    /// Check the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(NetError::Config(m));
        if !(self.base_lr > 0.0 && self.base_lr.is_finite()) {
            return bad(format!("learning rate must be > 0, got {}", self.base_lr));
        }
        match self.schedule {
            Schedule::Constant => {}
            Schedule::Step { every, gamma } => {
                if every == 0 {
                    return bad("step schedule period must be at least 1".into());
                }
                if !(gamma > 0.0 && gamma.is_finite()) {
                    return bad(format!("step schedule gamma must be > 0, got {gamma}"));
                }
            }
            Schedule::Cosine {
                warmup,
                total,
                min_lr,
            } => {
                if total <= warmup {
                    return bad(format!(
                        "cosine schedule length {total} must exceed its warm-up {warmup}"
                    ));
                }
                if !(min_lr >= 0.0 && min_lr <= self.base_lr) {
                    return bad(format!(
                        "cosine minimum rate {min_lr} must be in [0, {}]",
                        self.base_lr
                    ));
                }
            }
            Schedule::OneCycle {
                rise,
                total,
                div,
                final_div,
            } => {
                if rise == 0 || total <= rise {
                    return bad(format!(
                        "one-cycle schedule needs 0 < rise {rise} < length {total}"
                    ));
                }
                if !(div >= 1.0 && div.is_finite() && final_div >= 1.0 && final_div.is_finite()) {
                    return bad(format!(
                        "one-cycle divisors must be >= 1, got {div} and {final_div}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rate for a step taken in `epoch` (zero-based) as global step
    /// `step` (zero-based, counting every step of the run).
    pub fn lr(&self, epoch: usize, step: u64) -> f32 {
        let t = match self.granularity {
            Granularity::Epoch => epoch as u64,
            Granularity::Step => step,
        };
        self.lr_at(t)
    }

    /// The rate at time `t` in the schedule's unit.
    pub fn lr_at(&self, t: u64) -> f32 {
        let base = self.base_lr as f64;
        let lr = match self.schedule {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => {
                base * (gamma as f64).powi((t / every.max(1)).min(i32::MAX as u64) as i32)
            }
            Schedule::Cosine {
                warmup,
                total,
                min_lr,
            } => {
                if t < warmup {
                    base * (t + 1) as f64 / warmup as f64
                } else {
                    let span = total.saturating_sub(warmup).max(1) as f64;
                    let p = ((t - warmup) as f64 / span).min(1.0);
                    let min = min_lr as f64;
                    min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
                }
            }
            Schedule::OneCycle {
                rise,
                total,
                div,
                final_div,
            } => {
                let start = base / div as f64;
                let end = start / final_div as f64;
                let anneal = |a: f64, b: f64, p: f64| {
                    a + (b - a) * 0.5 * (1.0 - (std::f64::consts::PI * p).cos())
                };
                if t < rise {
                    anneal(start, base, t as f64 / rise as f64)
                } else {
                    let span = total.saturating_sub(rise).max(1) as f64;
                    anneal(base, end, ((t - rise) as f64 / span).min(1.0))
                }
            }
        };
        lr as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_schedule_multiplies_by_gamma_every_period() {
        let s = LrSchedule {
            base_lr: 0.1,
            schedule: Schedule::Step {
                every: 3,
                gamma: 0.5,
            },
            granularity: Granularity::Epoch,
        };
        let lrs: Vec<f32> = (0..7).map(|e| s.lr(e, 1000)).collect();
        assert_eq!(lrs, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]);
    }

    #[test]
    fn cosine_schedule_warms_up_linearly_then_decays_to_the_minimum() {
        let s = LrSchedule {
            base_lr: 1.0,
            schedule: Schedule::Cosine {
                warmup: 4,
                total: 14,
                min_lr: 0.1,
            },
            granularity: Granularity::Step,
        };
        s.validate().unwrap();
        assert_eq!(
            (0..4).map(|t| s.lr(0, t)).collect::<Vec<_>>(),
            [0.25, 0.5, 0.75, 1.0]
        );
        assert_eq!(s.lr_at(4), 1.0);
        // Half-way through the decay: the mean of base and minimum.
        assert!((s.lr_at(9) - 0.55).abs() < 1e-6);
        assert!((s.lr_at(14) - 0.1).abs() < 1e-7);
        assert!((s.lr_at(100) - 0.1).abs() < 1e-7);
        // Monotone after the warm-up.
        for t in 4..20 {
            assert!(s.lr_at(t + 1) <= s.lr_at(t));
        }
    }

    #[test]
    fn one_cycle_rises_to_the_peak_then_falls_to_the_final_rate() {
        let s = LrSchedule {
            base_lr: 0.5,
            schedule: Schedule::OneCycle {
                rise: 30,
                total: 100,
                div: 25.0,
                final_div: 1e4,
            },
            granularity: Granularity::Step,
        };
        s.validate().unwrap();
        assert!((s.lr_at(0) - 0.02).abs() < 1e-8);
        assert_eq!(s.lr_at(30), 0.5);
        // Half-way up: the mean of the start and the peak.
        assert!((s.lr_at(15) - 0.26).abs() < 1e-6);
        assert!((s.lr_at(100) - 0.02 / 1e4).abs() < 1e-10);
        assert!((s.lr_at(500) - 0.02 / 1e4).abs() < 1e-10);
        for t in 0..30 {
            assert!(s.lr_at(t + 1) > s.lr_at(t), "not rising at {t}");
        }
        for t in 30..100 {
            assert!(s.lr_at(t + 1) < s.lr_at(t), "not falling at {t}");
        }
    }

    #[test]
    fn per_epoch_granularity_ignores_the_step() {
        let s = LrSchedule {
            base_lr: 1.0,
            schedule: Schedule::Cosine {
                warmup: 0,
                total: 2,
                min_lr: 0.0,
            },
            granularity: Granularity::Epoch,
        };
        assert_eq!(s.lr(0, 0), s.lr(0, 500));
        assert!((s.lr(1, 0) - 0.5).abs() < 1e-7);
    }

    #[test]
    fn invalid_schedules_are_errors() {
        let bad = [
            LrSchedule::constant(0.0),
            LrSchedule {
                schedule: Schedule::Step {
                    every: 0,
                    gamma: 0.5,
                },
                ..LrSchedule::constant(0.1)
            },
            LrSchedule {
                schedule: Schedule::Cosine {
                    warmup: 5,
                    total: 5,
                    min_lr: 0.0,
                },
                ..LrSchedule::constant(0.1)
            },
            LrSchedule {
                schedule: Schedule::OneCycle {
                    rise: 10,
                    total: 10,
                    div: 25.0,
                    final_div: 1e4,
                },
                ..LrSchedule::constant(0.1)
            },
            LrSchedule {
                schedule: Schedule::OneCycle {
                    rise: 3,
                    total: 10,
                    div: 0.5,
                    final_div: 1e4,
                },
                ..LrSchedule::constant(0.1)
            },
        ];
        for s in bad {
            assert!(s.validate().is_err(), "{s:?}");
        }
    }
}
