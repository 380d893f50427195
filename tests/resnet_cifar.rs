//! ResNet-20 memorises 512 CIFAR-10 training images, with exact and with
//! approximate (mbm:7) products in every convolution and the dense layer.
//!
//! Accuracy is measured in evaluation mode (batch norm on its running
//! statistics) on the same 512 images after training, so it is the
//! network's own fit, not the running average of a changing network.
//! The recipe: no augmentation, batch 32, Adam at 2e-3 with one-cycle
//! (cosine up over 3 epochs, then down), at most 16 epochs, checked every
//! 2 epochs from epoch 8 on. The network's seed is fresh each run and
//! printed; set `APPROXTRAIN_TEST_SEED` to replay. Needs the shared
//! CIFAR-10 (`APPROXTRAIN_SHARED_DATA`, else `../shared/datasets`); without
//! it the tests print why and pass.

mod support;

use std::path::{Path, PathBuf};

use amsim::spec::Resolver;
use amsim::{Multiplier, MultiplierPlan, MultiplierSpec};
use nets::data::{load_cifar10, Dataset, ImageDataset, Split};
use nets::model::Network;
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::{Granularity, LrSchedule, Schedule};
use nets::train::Trainer;
use support::{shared_data_with, test_seed};

const IMAGES: usize = 512;
const BATCH: usize = 32;
const MAX_EPOCHS: usize = 16;
const TARGET: f32 = 0.99;

fn cifar_dir() -> Option<PathBuf> {
    let Some(root) = shared_data_with("cifar-10/data_batch_1.bin") else {
        eprintln!(
            "skipped: the shared datasets have no CIFAR-10 batches (set APPROXTRAIN_SHARED_DATA to the shared datasets folder)"
        );
        return None;
    };
    Some(root.join("cifar-10"))
}

fn first_images(dir: &Path) -> ImageDataset {
    let norm = Dataset::Cifar10.default_normalization();
    load_cifar10(dir, Split::Train, Some(IMAGES), &norm).unwrap()
}

/// Train ResNet-20 on `data` with `mult` everywhere until the eval-mode
/// accuracy on `data` reaches [`TARGET`] or [`MAX_EPOCHS`] pass; returns
/// the last accuracy and the epochs trained.
fn memorise(data: &ImageDataset, mult: Multiplier, seed: u64) -> (f32, usize) {
    let net = Network::by_name(
        "resnet20",
        &[3, 32, 32],
        10,
        MultiplierPlan::uniform(mult),
        seed,
    )
    .unwrap();
    let steps_per_epoch = data.len.div_ceil(BATCH) as u64;
    let schedule = LrSchedule {
        base_lr: 2e-3,
        schedule: Schedule::OneCycle {
            rise: 3 * steps_per_epoch,
            total: MAX_EPOCHS as u64 * steps_per_epoch,
            div: 25.0,
            final_div: 1e4,
        },
        granularity: Granularity::Step,
    };
    let opt = Optimizer::new(OptimizerConfig::adam()).unwrap();
    let mut trainer = Trainer::new(net, opt, schedule, seed).unwrap();
    let mut accuracy = 0.0;
    for epoch in 1..=MAX_EPOCHS {
        let stats = trainer.train_epoch(data, BATCH, &mut |_| {}).unwrap();
        if epoch >= 8 && epoch % 2 == 0 || epoch == MAX_EPOCHS {
            accuracy = trainer.evaluate(data, 256).unwrap().accuracy;
            eprintln!(
                "epoch {epoch}: train loss {:.4}, eval-mode accuracy on the {IMAGES} images {:.2}%",
                stats.loss,
                100.0 * accuracy
            );
            if accuracy >= TARGET {
                return (accuracy, epoch);
            }
        }
    }
    (accuracy, MAX_EPOCHS)
}

#[test]
fn resnet20_memorises_512_cifar_images_with_fp32_products() {
    let Some(dir) = cifar_dir() else { return };
    let data = first_images(&dir);
    let (accuracy, epochs) = memorise(&data, Multiplier::Fp32, test_seed());
    assert!(
        accuracy >= TARGET,
        "fp32: {:.2}% after {epochs} epochs",
        100.0 * accuracy
    );
}

#[test]
fn resnet20_memorises_512_cifar_images_with_mbm7_products() {
    let Some(dir) = cifar_dir() else { return };
    let data = first_images(&dir);
    let spec: MultiplierSpec = "mbm:7".parse().unwrap();
    let mult = Resolver::new(approxtrain::models::MODELS)
        .resolve(&spec)
        .unwrap();
    assert!(matches!(mult, Multiplier::Lut(_)), "mbm:7 is a table");
    let (accuracy, epochs) = memorise(&data, mult, test_seed());
    assert!(
        accuracy >= TARGET,
        "mbm:7: {:.2}% after {epochs} epochs",
        100.0 * accuracy
    );
}
