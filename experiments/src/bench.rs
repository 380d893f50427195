//! The harness of `approxtrain bench train`: time training under one
//! multiplier, with the seconds spent in AMSim products and an exclusive
//! per-operation profile of the training thread ([`amsim::timing`]).
//!
//! Each timed repeat starts from the same freshly initialised model (the
//! seed is 1) and draws the same batches, so every multiplier does the same
//! work; the median repeat is reported.

use std::time::Instant;

use amsim::{Multiplier, MultiplierPlan};
use nets::data::{CharCorpus, ImageDataset};
use nets::lm::LmTrainer;
use nets::model::Network;
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::LrSchedule;
use nets::train::Trainer;
use nets::transformer::Transformer;

use crate::error::{ExperimentError, Result};
use crate::spec::TransformerSpec;

/// One timed run: wall seconds, seconds with an AMSim product call in
/// flight, and exclusive seconds per operation on the training thread.
#[derive(Debug, Clone)]
pub struct Timed {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Seconds with an AMSim product call in flight.
    pub product_seconds: f64,
    /// Exclusive seconds per operation on the training thread.
    pub profile: Vec<(amsim::timing::Op, f64)>,
}

impl Timed {
    /// The per-operation breakdown, with the unaccounted rest as `other`,
    /// as `(name, seconds)`.
    pub fn breakdown(&self) -> Vec<(&'static str, f64)> {
        let mut rows: Vec<(&'static str, f64)> =
            self.profile.iter().map(|&(op, s)| (op.name(), s)).collect();
        let counted: f64 = rows.iter().map(|r| r.1).sum();
        rows.push(("other", (self.seconds - counted).max(0.0)));
        rows
    }
}

/// Reset and start the product clock and the per-operation profile of the
/// calling thread.
fn start_timing() -> Instant {
    amsim::timing::reset();
    amsim::timing::reset_profile();
    amsim::timing::set_enabled(true);
    amsim::timing::profile_thread(true);
    Instant::now()
}

/// Stop the clocks started by [`start_timing`] and read them.
fn stop_timing(start: Instant) -> Timed {
    let seconds = start.elapsed().as_secs_f64();
    amsim::timing::profile_thread(false);
    amsim::timing::set_enabled(false);
    Timed {
        seconds,
        product_seconds: amsim::timing::product_nanos() as f64 * 1e-9,
        profile: amsim::timing::profile(),
    }
}

/// The median of `times` by wall seconds.
fn median(mut times: Vec<Timed>) -> Timed {
    times.sort_by(|x, y| x.seconds.total_cmp(&y.seconds));
    times.swap_remove(times.len() / 2)
}

/// Time `repeats` (at least 1) epochs of the classifier `net` under `mult`
/// on `data` in batches of `batch` (SGD with momentum 0.9, lr 0.01): the
/// median epoch.
pub fn time_training(
    net: &str,
    mult: &Multiplier,
    data: &ImageDataset,
    batch: usize,
    repeats: usize,
) -> Result<Timed> {
    let shape = [data.channels, data.height, data.width];
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let plan = MultiplierPlan::uniform(mult.clone());
        let network = Network::by_name(net, &shape, data.num_classes, plan, 1)?;
        let opt = Optimizer::new(OptimizerConfig::sgd_momentum(0.9))?;
        let mut trainer = Trainer::new(network, opt, LrSchedule::constant(0.01), 1)?;
        let start = start_timing();
        // A diverging multiplier still did the work of its batches up to
        // the failure; report it rather than a misleading time.
        trainer.train_epoch(data, batch, &mut |_| {}).map_err(|e| {
            ExperimentError::Other(format!(
                "{mult}: training failed during the timed epoch: {e}"
            ))
        })?;
        times.push(stop_timing(start));
    }
    Ok(median(times))
}

/// Time `repeats` (at least 1) runs of `steps` optimizer steps of the
/// default Transformer ([`TransformerSpec::default`], AdamW, gradients
/// clipped to norm 1) under `mult` on `corpus` in batches of `batch`, each
/// after one untimed step (which allocates the optimizer state): the
/// median run.
pub fn time_lm_training(
    mult: &Multiplier,
    corpus: &CharCorpus,
    batch: usize,
    steps: usize,
    repeats: usize,
) -> Result<Timed> {
    let config = TransformerSpec::default().config(corpus.vocab_size())?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let plan = MultiplierPlan::uniform(mult.clone());
        let model = Transformer::new(config, plan, 1)?;
        let opt = Optimizer::new(OptimizerConfig::adamw(0.1))?;
        let mut trainer = LmTrainer::new(model, opt, LrSchedule::constant(1e-3), 1, Some(1.0))?;
        let step = |t: &mut LmTrainer| -> Result<()> {
            t.train_step(&corpus.train, batch).map(|_| ()).map_err(|e| {
                ExperimentError::Other(format!(
                    "{mult}: training failed during the timed steps: {e}"
                ))
            })
        };
        step(&mut trainer)?;
        let start = start_timing();
        for _ in 0..steps {
            step(&mut trainer)?;
        }
        times.push(stop_timing(start));
    }
    Ok(median(times))
}
