//! The training loop: LeNet-5 learns, checkpoints resume bit-identically,
//! runs are deterministic at any thread count, divergence is an error.

mod support;

use amsim::{Multiplier, MultiplierPlan};
use nets::checkpoint::Checkpoint;
use nets::data::ImageDataset;
use nets::init::Init;
use nets::layers::{Dense, Dropout, Flatten, Layer, Relu};
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::{Granularity, LrSchedule, Schedule};
use nets::train::Trainer;
use nets::{NetError, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::{mitchell_lut, test_rng};

fn mitchell_plan(bits: u32) -> MultiplierPlan {
    MultiplierPlan::uniform(mitchell_lut(bits))
}

fn synthetic(rng: &mut ChaCha8Rng, len: usize, c: usize, h: usize, w: usize) -> ImageDataset {
    ImageDataset {
        images: (0..len * c * h * w)
            .map(|_| rng.gen_range(-1.0f32..1.0))
            .collect(),
        labels: (0..len).map(|_| rng.gen_range(0..10u8)).collect(),
        len,
        channels: c,
        height: h,
        width: w,
        num_classes: 10,
    }
}

fn param_bits(net: &Network) -> Vec<Vec<u32>> {
    net.params()
        .iter()
        .map(|p| p.value.iter().map(|v| v.to_bits()).collect())
        .collect()
}

/// A small MLP with dropout, so checkpoints must replay dropout masks too.
fn mlp_with_dropout(plan: MultiplierPlan, seed: u64) -> Network {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Flatten::new("flatten")),
        Box::new(Dense::new(
            "fc1",
            16,
            12,
            plan.clone(),
            Init::HeNormal,
            &mut rng,
        )),
        Box::new(Relu::new("relu1")),
        Box::new(Dropout::new("drop1", 0.3).unwrap()),
        Box::new(Dense::new(
            "fc2",
            12,
            10,
            plan,
            Init::GlorotUniform,
            &mut rng,
        )),
    ];
    Network::new("mlp", &[1, 4, 4], 10, layers).unwrap()
}

#[test]
fn lenet5_overfits_a_tiny_batch() {
    let mut rng = test_rng("lenet5_overfits_a_tiny_batch");
    let data = synthetic(&mut rng, 16, 1, 28, 28);
    let net = Network::lenet5(MultiplierPlan::uniform(Multiplier::Fp32), rng.gen());
    let opt = Optimizer::new(OptimizerConfig::adam()).unwrap();
    let mut trainer = Trainer::new(net, opt, LrSchedule::constant(2e-3), rng.gen()).unwrap();
    let first = trainer.evaluate(&data, 16).unwrap();
    for _ in 0..150 {
        trainer.train_epoch(&data, 8, &mut |_| {}).unwrap();
        let e = trainer.evaluate(&data, 16).unwrap();
        if e.accuracy == 1.0 && e.loss < 0.05 {
            break;
        }
    }
    let last = trainer.evaluate(&data, 16).unwrap();
    eprintln!(
        "loss {} -> {}, accuracy {}",
        first.loss, last.loss, last.accuracy
    );
    assert_eq!(
        last.accuracy, 1.0,
        "random labels of 16 images must be memorised"
    );
    assert!(last.loss < 0.05 && last.loss < first.loss / 10.0);
}

#[test]
fn lenet5_overfits_a_tiny_batch_through_an_approximate_multiplier() {
    let mut rng = test_rng("lenet5_overfits_a_tiny_batch_through_an_approximate_multiplier");
    let data = synthetic(&mut rng, 8, 1, 28, 28);
    let net = Network::lenet5(mitchell_plan(7), rng.gen());
    let opt = Optimizer::new(OptimizerConfig::sgd_momentum(0.9)).unwrap();
    let mut trainer = Trainer::new(net, opt, LrSchedule::constant(0.02), rng.gen()).unwrap();
    for _ in 0..150 {
        trainer.train_epoch(&data, 8, &mut |_| {}).unwrap();
        if trainer.evaluate(&data, 8).unwrap().accuracy == 1.0 {
            break;
        }
    }
    assert_eq!(trainer.evaluate(&data, 8).unwrap().accuracy, 1.0);
}

fn train_epochs(trainer: &mut Trainer, data: &ImageDataset, epochs: usize) {
    for _ in 0..epochs {
        trainer.train_epoch(data, 5, &mut |_| {}).unwrap();
    }
}

#[test]
fn checkpoint_round_trip_gives_identical_subsequent_training() {
    let mut rng = test_rng("checkpoint_round_trip_gives_identical_subsequent_training");
    let data = synthetic(&mut rng, 23, 1, 4, 4);
    let dir = tempfile::tempdir().unwrap();
    let configs = [
        OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 1e-3,
        },
        OptimizerConfig::adam(),
        OptimizerConfig::adamw(1e-2),
    ];
    for config in configs {
        let seed: u64 = rng.gen();
        let schedule = LrSchedule {
            base_lr: 0.05,
            schedule: Schedule::Cosine {
                warmup: 3,
                total: 20,
                min_lr: 0.0,
            },
            granularity: Granularity::Step,
        };
        let make = |init_seed: u64| {
            Trainer::new(
                mlp_with_dropout(mitchell_plan(5), init_seed),
                Optimizer::new(config).unwrap(),
                schedule,
                seed,
            )
            .unwrap()
        };
        let mut straight = make(seed);
        train_epochs(&mut straight, &data, 2);
        let path = dir.path().join(format!("{}.ckpt", config.name()));
        straight.save_state(&path).unwrap();
        assert!(!dir
            .path()
            .join(format!("{}.ckpt.tmp", config.name()))
            .exists());
        train_epochs(&mut straight, &data, 2);

        // A trainer built from other initial weights, restored from the file.
        let mut resumed = make(seed ^ 1);
        assert_ne!(param_bits(&resumed.network), param_bits(&straight.network));
        resumed.load_state(&path).unwrap();
        assert_eq!(resumed.epoch(), 2);
        train_epochs(&mut resumed, &data, 2);
        assert_eq!(resumed.epoch(), 4);
        assert_eq!(resumed.global_step(), straight.global_step());
        assert_eq!(
            param_bits(&resumed.network),
            param_bits(&straight.network),
            "{}: resumed training differs",
            config.name()
        );
        assert_eq!(resumed.optimizer.slots(), straight.optimizer.slots());
    }
}

#[test]
fn checkpoint_errors_name_the_file_and_the_problem() {
    let mut rng = test_rng("checkpoint_errors_name_the_file_and_the_problem");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.ckpt");
    let fp32 = MultiplierPlan::uniform(Multiplier::Fp32);
    let trainer = Trainer::new(
        mlp_with_dropout(fp32.clone(), rng.gen()),
        Optimizer::new(OptimizerConfig::adam()).unwrap(),
        LrSchedule::constant(0.1),
        1,
    )
    .unwrap();
    trainer.save_state(&path).unwrap();
    let ck = Checkpoint::load(&path).unwrap();
    assert_eq!(ck, trainer.checkpoint());

    // A flipped byte fails the checksum.
    let mut bytes = std::fs::read(&path).unwrap();
    let i = rng.gen_range(12..bytes.len() - 8);
    bytes[i] ^= 0x10;
    let bad = dir.path().join("flipped.ckpt");
    std::fs::write(&bad, &bytes).unwrap();
    let msg = Checkpoint::load(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("flipped.ckpt") && msg.contains("checksum"),
        "{msg}"
    );

    // Another network, another optimizer: clear refusals.
    let mut lenet = Trainer::new(
        Network::lenet300100(fp32.clone(), 1),
        Optimizer::new(OptimizerConfig::adam()).unwrap(),
        LrSchedule::constant(0.1),
        1,
    )
    .unwrap();
    let msg = lenet.load_state(&path).unwrap_err().to_string();
    assert!(
        msg.contains("'mlp'") && msg.contains("'lenet300100'"),
        "{msg}"
    );
    let mut sgd = Trainer::new(
        mlp_with_dropout(fp32, 2),
        Optimizer::new(OptimizerConfig::sgd()).unwrap(),
        LrSchedule::constant(0.1),
        1,
    )
    .unwrap();
    let msg = sgd.load_state(&path).unwrap_err().to_string();
    assert!(msg.contains("'adam'") && msg.contains("'sgd'"), "{msg}");
    let missing = dir.path().join("missing.ckpt");
    assert!(sgd
        .load_state(&missing)
        .unwrap_err()
        .to_string()
        .contains("missing.ckpt"));
}

fn short_run(plan: &MultiplierPlan, seed: u64, data: &ImageDataset) -> Vec<Vec<u32>> {
    let net = Network::lenet5(plan.clone(), seed);
    let opt = Optimizer::new(OptimizerConfig::sgd_momentum(0.9)).unwrap();
    let mut trainer = Trainer::new(net, opt, LrSchedule::constant(0.01), seed).unwrap();
    trainer.train_epoch(data, 6, &mut |_| {}).unwrap();
    param_bits(&trainer.network)
}

#[test]
fn identical_trainings_give_bitwise_equal_parameters_at_one_and_two_threads() {
    let mut rng =
        test_rng("identical_trainings_give_bitwise_equal_parameters_at_one_and_two_threads");
    let data = synthetic(&mut rng, 20, 1, 28, 28);
    let seed: u64 = rng.gen();
    for plan in [mitchell_plan(7), MultiplierPlan::uniform(Multiplier::Fp32)] {
        let label = plan.label();
        let run_on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| short_run(&plan, seed, &data))
        };
        let one = run_on(1);
        assert_eq!(one, run_on(1), "{label}: the same run twice differs");
        assert_eq!(one, run_on(2), "{label}: 1 and 2 threads differ");
        assert_ne!(
            one,
            short_run(&plan, seed ^ 1, &data),
            "{label}: the seed must matter"
        );
    }
}

#[test]
fn a_diverging_loss_is_an_error_not_a_panic() {
    let mut rng = test_rng("a_diverging_loss_is_an_error_not_a_panic");
    let mut data = synthetic(&mut rng, 10, 1, 4, 4);
    let i = rng.gen_range(0..data.images.len());
    data.images[i] = f32::NAN;
    let mut trainer = Trainer::new(
        mlp_with_dropout(MultiplierPlan::uniform(Multiplier::Fp32), 3),
        Optimizer::new(OptimizerConfig::sgd()).unwrap(),
        LrSchedule::constant(0.1),
        4,
    )
    .unwrap();
    let before = param_bits(&trainer.network);
    let mut batches = 0;
    let err = trainer
        .train_epoch(&data, 10, &mut |_| batches += 1)
        .unwrap_err();
    assert!(
        matches!(err, NetError::NonFiniteLoss { epoch: 0, batch: 0, loss } if loss.is_nan()),
        "{err}"
    );
    assert_eq!(batches, 0);
    assert_eq!(
        param_bits(&trainer.network),
        before,
        "no update after a NaN loss"
    );
}

#[test]
fn mismatched_data_and_unknown_networks_are_errors() {
    let mut rng = test_rng("mismatched_data_and_unknown_networks_are_errors");
    let fp32 = MultiplierPlan::uniform(Multiplier::Fp32);
    let cifar_like = synthetic(&mut rng, 4, 3, 32, 32);
    let mut trainer = Trainer::new(
        Network::lenet5(fp32.clone(), 1),
        Optimizer::new(OptimizerConfig::sgd()).unwrap(),
        LrSchedule::constant(0.1),
        1,
    )
    .unwrap();
    let msg = trainer.evaluate(&cifar_like, 4).unwrap_err().to_string();
    assert!(msg.contains("[3, 32, 32]"), "{msg}");
    let msg = Network::by_name("resnet7", &[1, 28, 28], 10, fp32.clone(), 1)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("'resnet7'") && msg.contains("lenet5"), "{msg}");
    // LeNet-5 adapts to CIFAR-sized inputs: 16·6·6 features into fc1.
    let net = Network::by_name("lenet5", &[3, 32, 32], 10, fp32, 1).unwrap();
    let mut t = Trainer::new(
        net,
        Optimizer::new(OptimizerConfig::sgd()).unwrap(),
        LrSchedule::constant(0.1),
        1,
    )
    .unwrap();
    let e = t.evaluate(&cifar_like, 3).unwrap();
    assert_eq!(e.samples, 4);
    assert!(e.loss.is_finite());
}

#[test]
fn lenet_sizes_and_mac_counts_match_the_architecture() {
    let fp32 = MultiplierPlan::uniform(Multiplier::Fp32);
    let lenet5 = Network::lenet5(fp32.clone(), 1);
    // conv1 6·25+6, conv2 16·150+16, fc 400·120+120, 120·84+84, 84·10+10.
    assert_eq!(lenet5.num_params(), 156 + 2416 + 48120 + 10164 + 850);
    let m = lenet5.macs_per_image();
    let forward = 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 400 * 120 + 120 * 84 + 84 * 10;
    assert_eq!(m.forward, forward);
    assert_eq!(m.grad_weight, forward);
    // conv1 computes no input gradient.
    assert_eq!(m.grad_input, forward - 28 * 28 * 6 * 25);

    let mlp = Network::lenet300100(fp32, 1);
    assert_eq!(
        mlp.num_params(),
        784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    );
    let m = mlp.macs_per_image();
    assert_eq!(m.forward, 784 * 300 + 300 * 100 + 100 * 10);
    assert_eq!(m.grad_input, 300 * 100 + 100 * 10);
}
