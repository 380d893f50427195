//! The training loop: one epoch, evaluation, checkpoints.
//!
//! A [`Trainer`] owns the network, the optimizer, the learning-rate
//! schedule and the run seed. Its randomness is a pure function of
//! (seed, epoch, batch): the shuffle of epoch `e` is a Fisher–Yates
//! permutation from the stream `(seed, Shuffle, e)`, and the dropout masks of
//! batch `b` come from `(seed, Dropout, e, b)`. So the state to save is the
//! parameters, the optimizer buffers and the counters, and a run resumed at
//! an epoch boundary is bit-identical to one that never stopped.
//!
//! With an [`Augmentation`], sample `i` of epoch `e` is transformed by the
//! stream `(seed, Augment, e, i)`. Training batches are gathered (and
//! augmented) on a background thread one or two batches ahead of the
//! compute, through a bounded channel, so data preparation overlaps the
//! products; what each batch holds does not depend on that thread.

use std::path::Path;
use std::time::Instant;

use rand::seq::SliceRandom;

use crate::checkpoint::{Checkpoint, SavedParam};
use crate::data::{Augmentation, ImageDataset};
use crate::layers::{softmax_cross_entropy, softmax_cross_entropy_smoothed};
use crate::model::Network;
use crate::optim::Optimizer;
use crate::rng::{derive_seed, rng_for, Purpose};
use crate::schedule::LrSchedule;
use crate::{NetError, Result, Tensor};

/// Reported after every training batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchProgress {
    /// Zero-based epoch.
    pub epoch: usize,
    /// Zero-based batch within the epoch.
    pub batch: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// Samples processed so far in the epoch, this batch included.
    pub samples: usize,
    /// This batch's mean loss.
    pub loss: f32,
    /// Accuracy over the epoch so far, in [0, 1].
    pub accuracy: f32,
    /// The learning rate used for this batch.
    pub lr: f32,
}

/// The result of one training epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Zero-based epoch that was trained.
    pub epoch: usize,
    /// Mean training loss over the epoch's samples (nats), as measured on
    /// each batch before its update.
    pub loss: f32,
    /// Training accuracy over the epoch, in [0, 1].
    pub accuracy: f32,
    /// Samples seen.
    pub samples: usize,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Learning rate of the last step.
    pub lr: f32,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// The result of an evaluation pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalStats {
    /// Mean loss (nats).
    pub loss: f32,
    /// Accuracy in [0, 1].
    pub accuracy: f32,
    /// Samples evaluated.
    pub samples: usize,
}

/// A network under training.
#[derive(Debug)]
pub struct Trainer {
    /// The network.
    pub network: Network,
    /// The optimizer and its state.
    pub optimizer: Optimizer,
    /// The learning-rate schedule.
    pub schedule: LrSchedule,
    seed: u64,
    /// Epochs completed.
    epoch: usize,
    /// Optimizer steps taken in the run.
    global_step: u64,
    /// Training-time augmentation (none by default).
    augmentation: Option<Augmentation>,
    /// Label smoothing ε of the training loss (0 by default).
    label_smoothing: f32,
}

/// Batches the background thread may prepare ahead of the compute.
const PREFETCH_BATCHES: usize = 2;

impl Trainer {
    /// A trainer at epoch 0; an error if the schedule is invalid.
    pub fn new(
        network: Network,
        optimizer: Optimizer,
        schedule: LrSchedule,
        seed: u64,
    ) -> Result<Trainer> {
        schedule.validate()?;
        Ok(Trainer {
            network,
            optimizer,
            schedule,
            seed,
            epoch: 0,
            global_step: 0,
            augmentation: None,
            label_smoothing: 0.0,
        })
    }

    /// Augment training batches with `augmentation` (`None`: use the
    /// images as they are). Evaluation is never augmented.
    pub fn set_augmentation(&mut self, augmentation: Option<Augmentation>) {
        self.augmentation = augmentation;
    }

    /// Train against label-smoothed targets with `epsilon` in `[0, 1)`
    /// ([`softmax_cross_entropy_smoothed`]); evaluation keeps the plain loss.
    pub fn set_label_smoothing(&mut self, epsilon: f32) -> Result<()> {
        if !(0.0..1.0).contains(&epsilon) {
            return Err(NetError::Config(format!(
                "label smoothing must be in [0, 1), got {epsilon}"
            )));
        }
        self.label_smoothing = epsilon;
        Ok(())
    }

    /// The run seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Epochs completed (the zero-based index of the next epoch).
    pub fn epoch(&self) -> usize {
        self.epoch
    }

    /// Optimizer steps taken in the run.
    pub fn global_step(&self) -> u64 {
        self.global_step
    }

    /// Check that `data` fits the network's input and classes.
    fn check_data(&self, data: &ImageDataset, batch_size: usize) -> Result<()> {
        if batch_size == 0 {
            return Err(NetError::Config("batch size must be at least 1".into()));
        }
        let shape = [data.channels, data.height, data.width];
        if self.network.input_shape() != shape {
            return Err(NetError::shape(format!(
                "{} takes inputs {:?}, the dataset has images {shape:?}",
                self.network.name(),
                self.network.input_shape()
            )));
        }
        if data.num_classes > self.network.num_classes() {
            return Err(NetError::shape(format!(
                "{} has {} outputs, the dataset has {} classes",
                self.network.name(),
                self.network.num_classes(),
                data.num_classes
            )));
        }
        if data.labels.len() != data.len || data.images.len() != data.len * data.image_len() {
            return Err(NetError::shape(format!(
                "dataset holds {} labels and {} values for {} images",
                data.labels.len(),
                data.images.len(),
                data.len
            )));
        }
        Ok(())
    }

    /// The order in which epoch `epoch` visits the samples.
    pub fn epoch_permutation(&self, epoch: usize, len: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..len).collect();
        order.shuffle(&mut rng_for(self.seed, Purpose::Shuffle, &[epoch as u64]));
        order
    }

    /// Train one epoch (the next one) over `data` in shuffled mini-batches
    /// of `batch_size` (the last may be smaller), calling `on_batch` after
    /// each step. A loss that is NaN or infinite stops the epoch with
    /// [`NetError::NonFiniteLoss`] before that batch's update.
    pub fn train_epoch(
        &mut self,
        data: &ImageDataset,
        batch_size: usize,
        on_batch: &mut dyn FnMut(BatchProgress),
    ) -> Result<EpochStats> {
        self.check_data(data, batch_size)?;
        let start = Instant::now();
        let epoch = self.epoch;
        let order = self.epoch_permutation(epoch, data.len);
        let batches = data.len.div_ceil(batch_size);
        let img = data.image_len();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        let mut lr = self.schedule.lr(epoch, self.global_step);
        let (seed, augmentation) = (self.seed, self.augmentation);
        std::thread::scope(|scope| -> Result<()> {
            // The producer stops when the receiver is dropped (an error
            // below ends the epoch early).
            let (tx, rx) = std::sync::mpsc::sync_channel(PREFETCH_BATCHES);
            let order = &order;
            scope.spawn(move || {
                for idx in order.chunks(batch_size) {
                    let mut x = Tensor::zeros(&[0]);
                    let mut labels = Vec::with_capacity(idx.len());
                    gather(data, idx, &mut x, &mut labels);
                    if let Some(aug) = &augmentation {
                        for (&i, out) in idx.iter().zip(x.data.chunks_exact_mut(img)) {
                            aug.apply(data.image(i), data.height, data.width, seed, epoch, i, out);
                        }
                    }
                    if tx.send((x, labels, idx.len())).is_err() {
                        break;
                    }
                }
            });
            for b in 0..batches {
                let (x, labels, count) = {
                    let _span = amsim::timing::span(amsim::timing::Op::Data);
                    rx.recv().map_err(|_| {
                        NetError::Config("the batch preparation thread stopped early".into())
                    })?
                };
                self.network.reseed(derive_seed(
                    self.seed,
                    Purpose::Dropout,
                    &[epoch as u64, b as u64],
                ));
                let logits = self.network.forward(&x, true)?;
                let out = softmax_cross_entropy_smoothed(&logits, &labels, self.label_smoothing)?;
                if !out.loss.is_finite() {
                    return Err(NetError::NonFiniteLoss {
                        epoch,
                        batch: b,
                        loss: out.loss,
                    });
                }
                self.network.backward(&out.dlogits)?;
                lr = self.schedule.lr(epoch, self.global_step);
                self.optimizer.step(&mut self.network.params_mut(), lr)?;
                self.global_step += 1;
                loss_sum += out.loss as f64 * count as f64;
                correct += out.correct;
                seen += count;
                on_batch(BatchProgress {
                    epoch,
                    batch: b,
                    batches,
                    samples: seen,
                    loss: out.loss,
                    accuracy: correct as f32 / seen as f32,
                    lr,
                });
            }
            Ok(())
        })?;
        debug_assert_eq!(seen * img, data.images.len());
        self.epoch += 1;
        Ok(EpochStats {
            epoch,
            loss: (loss_sum / seen.max(1) as f64) as f32,
            accuracy: correct as f32 / seen.max(1) as f32,
            samples: seen,
            steps: batches,
            lr,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Loss and accuracy over `data` in order, in batches of `batch_size`,
    /// without training behaviour (no dropout, no caches, no updates). A
    /// non-finite loss is reported in the result, not as an error.
    pub fn evaluate(&mut self, data: &ImageDataset, batch_size: usize) -> Result<EvalStats> {
        self.check_data(data, batch_size)?;
        let mut x = Tensor::zeros(&[0]);
        let mut labels = Vec::with_capacity(batch_size);
        let (mut loss_sum, mut correct) = (0.0f64, 0usize);
        let all: Vec<usize> = (0..data.len).collect();
        for idx in all.chunks(batch_size) {
            gather(data, idx, &mut x, &mut labels);
            let logits = self.network.forward(&x, false)?;
            let out = softmax_cross_entropy(&logits, &labels)?;
            loss_sum += out.loss as f64 * idx.len() as f64;
            correct += out.correct;
        }
        let n = data.len.max(1);
        Ok(EvalStats {
            loss: (loss_sum / n as f64) as f32,
            accuracy: correct as f32 / n as f32,
            samples: data.len,
        })
    }

    /// The current state as a [`Checkpoint`].
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            network: self.network.name().to_string(),
            seed: self.seed,
            epoch: self.epoch as u64,
            global_step: self.global_step,
            optimizer: self.optimizer.config().name().to_string(),
            optimizer_steps: self.optimizer.steps(),
            params: self
                .network
                .params()
                .into_iter()
                .map(|p| SavedParam {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                    values: p.value.clone(),
                })
                .collect(),
            optimizer_slots: self.optimizer.slots().to_vec(),
        }
    }

    /// Write parameters, optimizer state, counters and seed to `path`
    /// (whole: temp file + rename; format in [`crate::checkpoint`]).
    pub fn save_state(&self, path: &Path) -> Result<()> {
        self.checkpoint().save(path)
    }

    /// Restore a state written by [`Trainer::save_state`] for the same
    /// network and optimizer; an error naming the file and the mismatch
    /// otherwise (nothing is changed then).
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        let ck = Checkpoint::load(path)?;
        self.restore(path, ck)
    }

    /// Restore from a decoded checkpoint; `path` names it in errors.
    pub fn restore(&mut self, path: &Path, ck: Checkpoint) -> Result<()> {
        let bad = |reason: String| NetError::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if ck.network != self.network.name() {
            return Err(bad(format!(
                "saved from network '{}', this run trains '{}'",
                ck.network,
                self.network.name()
            )));
        }
        let opt = self.optimizer.config().name();
        if ck.optimizer != opt {
            return Err(bad(format!(
                "saved with optimizer '{}', this run uses '{opt}'",
                ck.optimizer
            )));
        }
        {
            let params = self.network.params();
            ck.check_params(path, &params)?;
            ck.check_optimizer_slots(path, &params)?;
        }
        for (p, s) in self.network.params_mut().into_iter().zip(ck.params) {
            p.value = s.values;
        }
        self.optimizer
            .restore(ck.optimizer_steps, ck.optimizer_slots);
        self.seed = ck.seed;
        self.epoch = ck.epoch as usize;
        self.global_step = ck.global_step;
        Ok(())
    }
}

/// Copy the samples `idx` of `data` into the batch tensor `x` (reusing its
/// buffer) and their labels into `labels`.
fn gather(data: &ImageDataset, idx: &[usize], x: &mut Tensor, labels: &mut Vec<u8>) {
    let img = data.image_len();
    x.shape.clear();
    x.shape
        .extend_from_slice(&[idx.len(), data.channels, data.height, data.width]);
    x.data.clear();
    labels.clear();
    for &i in idx {
        x.data.extend_from_slice(data.image(i));
        labels.push(data.labels[i]);
    }
    debug_assert_eq!(x.data.len(), idx.len() * img);
}
