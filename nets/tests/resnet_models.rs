//! The ResNets of `Network::by_name`: parameter counts against the
//! published architectures, MAC counts, per-layer plan names, output shapes,
//! and a training epoch with augmentation that does not depend on the
//! thread count.

mod support;

use amsim::{Multiplier, MultiplierPlan};
use nets::data::{Augmentation, ImageDataset};
use nets::model::Network;
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::LrSchedule;
use nets::train::Trainer;
use nets::PlannedModel;
use nets::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{fp32, test_rng};

/// Trainable scalars: every parameter but the batch-norm running
/// statistics and the stem convolution's bias (which the reference
/// architectures do not have; see `Network::by_name`).
fn trainable(net: &Network) -> usize {
    net.params()
        .iter()
        .filter(|p| {
            !p.name.ends_with(".running_mean")
                && !p.name.ends_with(".running_var")
                && p.name != "conv1.bias"
        })
        .map(|p| p.len())
        .sum()
}

/// Published parameter counts for 10 classes: ResNet-20/32/56 with
/// option-A shortcuts, 0.27M / 0.46M / 0.85M in He et al. 2016, table 6
/// (exact counts 269,722 / 464,154 / 853,018, the sums of their layers);
/// ResNet-18/34/50 with a 3x3 stem and projection shortcuts,
/// 11,173,962 / 21,282,122 / 23,520,842 (the usual CIFAR adaptations of
/// He et al.'s table 1, e.g. the kuangliu/pytorch-cifar models).
#[test]
fn resnet_parameter_counts_match_the_published_architectures() {
    let seed = test_rng("resnet_parameter_counts").gen();
    for (name, want) in [
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet56", 853_018),
        ("resnet18", 11_173_962),
        ("resnet34", 21_282_122),
        ("resnet50", 23_520_842),
    ] {
        let net = Network::by_name(name, &[3, 32, 32], 10, fp32(), seed).unwrap();
        assert_eq!(trainable(&net), want, "{name}");
    }
}

/// ResNet-20's forward pass costs 40,551,040 multiply-accumulates per
/// 32x32 image ("41M" in He et al. 2016, section 4.2): the stem, 6 + 6 + 6
/// 3x3 convolutions of 2,359,296 MACs each except the two stride-2 ones
/// (1,179,648 each), and the dense layer. Each product role costs the
/// same, minus the stem's skipped input gradient.
#[test]
fn resnet20_mac_counts_follow_the_layer_shapes() {
    let net = Network::by_name("resnet20", &[3, 32, 32], 10, fp32(), 1).unwrap();
    let m = net.macs_per_image();
    let stem = 32 * 32 * 16 * 27;
    let forward = stem + 16 * 2_359_296 + 2 * 1_179_648 + 640;
    assert_eq!(m.forward, forward);
    assert_eq!(m.grad_weight, forward);
    assert_eq!(m.grad_input, forward - stem);
}

#[test]
fn resnet_layer_names_are_the_stem_the_blocks_and_fc() {
    let mut net = Network::by_name("resnet20", &[3, 32, 32], 10, fp32(), 1).unwrap();
    let mut want = vec!["conv1".to_string()];
    for s in 1..=3 {
        for b in 1..=3 {
            want.push(format!("s{s}b{b}"));
        }
    }
    want.push("fc".into());
    assert_eq!(net.layer_names(), want);
    let bf16 = MultiplierPlan::uniform(Multiplier::Bf16);
    net.set_layer_plan("s2b1", bf16.clone()).unwrap();
    assert_eq!(net.layer_plan("s2b1").unwrap().forward.label(), "bf16");
    assert_eq!(net.layer_plan("s2b2").unwrap().forward.label(), "fp32");
    let e = net.set_layer_plan("bn1", bf16).unwrap_err().to_string();
    assert!(e.contains("bn1") && e.contains("s3b3"), "{e}");
    let r50 = Network::by_name("resnet50", &[3, 32, 32], 10, fp32(), 1).unwrap();
    assert_eq!(r50.layer_names().len(), 1 + 3 + 4 + 6 + 3 + 1);
}

/// Plans reach single convolutions inside blocks by `BLOCK.convK` and
/// `BLOCK.shortcut.conv`, without touching the block's other convolutions.
#[test]
fn inner_convolutions_of_blocks_take_their_own_plans() {
    let mut net = Network::by_name("resnet20", &[3, 32, 32], 10, fp32(), 1).unwrap();
    let names = net.plan_names();
    assert_eq!(names.len(), 1 + 9 * 3 + 1);
    assert_eq!(&names[..4], ["conv1", "s1b1", "s1b1.conv1", "s1b1.conv2"]);
    let bf16 = MultiplierPlan::uniform(Multiplier::Bf16);
    net.set_plan_by_name("s2b2.conv2", bf16.clone()).unwrap();
    assert_eq!(
        net.plan_by_name("s2b2.conv2").unwrap().forward.label(),
        "bf16"
    );
    assert_eq!(
        net.plan_by_name("s2b2.conv1").unwrap().forward.label(),
        "fp32"
    );
    net.set_plan_by_name("s3b1", bf16.clone()).unwrap();
    assert_eq!(
        net.plan_by_name("s3b1.conv2").unwrap().forward.label(),
        "bf16"
    );
    let e = net
        .set_plan_by_name("s1b1.shortcut.conv", bf16.clone())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("s1b1.shortcut.conv") && e.contains("s3b3.conv2"),
        "{e}"
    );
    let mut r18 = Network::by_name("resnet18", &[3, 32, 32], 10, fp32(), 1).unwrap();
    assert!(r18.plan_names().iter().any(|n| n == "s2b1.shortcut.conv"));
    r18.set_plan_by_name("s2b1.shortcut.conv", bf16).unwrap();
    assert_eq!(
        r18.plan_by_name("s2b1.shortcut.conv")
            .unwrap()
            .forward
            .label(),
        "bf16"
    );
    assert_eq!(
        r18.plan_by_name("s2b1.conv1").unwrap().forward.label(),
        "fp32"
    );
}

#[test]
fn every_resnet_maps_a_batch_of_images_to_class_logits() {
    let mut rng = test_rng("every_resnet_maps_a_batch");
    let x = Tensor::from_vec(
        &[2, 3, 32, 32],
        (0..2 * 3 * 32 * 32)
            .map(|_| rng.gen_range(-2.0..2.0))
            .collect(),
    )
    .unwrap();
    for name in [
        "resnet20", "resnet32", "resnet56", "resnet18", "resnet34", "resnet50",
    ] {
        let mut net = Network::by_name(name, &[3, 32, 32], 10, fp32(), 3).unwrap();
        let y = net.forward(&x, false).unwrap();
        assert_eq!(y.shape, [2, 10], "{name}");
        assert!(y.data.iter().all(|v| v.is_finite()), "{name}: {:?}", y.data);
    }
}

/// A random 3x8x8 image set (ResNet-20 runs on any size its two stride-2
/// stages divide).
fn random_images(rng: &mut ChaCha8Rng, n: usize) -> ImageDataset {
    ImageDataset {
        images: (0..n * 3 * 64).map(|_| rng.gen_range(-2.0..2.0)).collect(),
        labels: (0..n).map(|_| rng.gen_range(0..10)).collect(),
        len: n,
        channels: 3,
        height: 8,
        width: 8,
        num_classes: 10,
    }
}

/// A 5-bit table of exact products of truncated operands: AMSim products
/// are bit-exact at any thread count by design.
fn exact5() -> MultiplierPlan {
    fn exact(a: f32, b: f32, _bits: u32) -> f32 {
        a * b
    }
    let lut = amsim::Lut::build("exact", exact, 5).unwrap();
    MultiplierPlan::uniform(Multiplier::Lut(std::sync::Arc::new(lut)))
}

fn train_one_epoch(
    data: &ImageDataset,
    seed: u64,
    augmentation: Option<Augmentation>,
    threads: usize,
) -> Vec<Vec<f32>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let net = Network::by_name("resnet20", &[3, 8, 8], 10, exact5(), seed).unwrap();
        let opt = Optimizer::new(OptimizerConfig::sgd_momentum(0.9)).unwrap();
        let mut t = Trainer::new(net, opt, LrSchedule::constant(0.05), seed).unwrap();
        t.set_augmentation(augmentation);
        t.train_epoch(data, 8, &mut |_| {}).unwrap();
        t.network.params().iter().map(|p| p.value.clone()).collect()
    })
}

/// Batches are augmented per (seed, epoch, sample) on a background thread:
/// the trained parameters are the same bit for bit with 1 and 3 compute
/// threads, and differ from training without augmentation.
#[test]
fn augmented_training_is_reproducible_at_any_thread_count() {
    let mut rng = test_rng("augmented_training_is_reproducible");
    let data = random_images(&mut rng, 20);
    let seed = rng.gen();
    let aug = Some(Augmentation { pad: 2, flip: true });
    let one = train_one_epoch(&data, seed, aug, 1);
    let three = train_one_epoch(&data, seed, aug, 3);
    assert!(one == three, "parameters depend on the thread count");
    let plain = train_one_epoch(&data, seed, None, 2);
    assert!(one != plain, "augmentation changed nothing");
}

/// A convolution inside a residual block has no bias (`without_bias`):
/// skipping the zero bias gives the same bits as adding it (a sum that
/// starts at +0.0 is never -0.0), forward and backward, with native and
/// table products, on inputs and weights full of signed zeros; its bias
/// gets no gradient.
#[test]
fn a_convolution_without_bias_gives_the_bits_of_a_zero_bias() {
    use nets::init::Init;
    use nets::layers::conv2d::{Conv2d, Conv2dSpec};
    use nets::layers::Layer;
    let mut rng = test_rng("a_convolution_without_bias_gives_the_bits_of_a_zero_bias");
    for plan in [fp32(), MultiplierPlan::uniform(support::mitchell_lut(7))] {
        for (stride, pad) in [(1, 1), (2, 1), (1, 0)] {
            let spec = Conv2dSpec::square(3, 5, 3).stride(stride).padding(pad);
            let mut with = Conv2d::new("c", spec, plan.clone(), Init::HeNormal, &mut rng).unwrap();
            let mut without = with.clone().without_bias();
            let mut signed_zeros = |v: &mut [f32]| {
                for x in v.iter_mut() {
                    // Mostly zeros, so that many sums are exact zeros
                    // made of signed zero products.
                    *x = match rng.gen_range(0..10) {
                        0..=3 => 0.0,
                        4..=7 => -0.0,
                        _ => rng.gen_range(-1.0f32..1.0),
                    };
                }
            };
            signed_zeros(&mut with.weight.value);
            without.weight.value.clone_from(&with.weight.value);
            let mut x = Tensor::zeros(&[2, 3, 7, 6]);
            signed_zeros(&mut x.data);
            let (ya, yb) = (
                with.forward(&x, true).unwrap(),
                without.forward(&x, true).unwrap(),
            );
            let bits = |t: &Tensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&ya), bits(&yb), "forward, stride {stride} pad {pad}");
            assert!(ya.data.contains(&0.0), "no zero output to check");
            let mut dy = Tensor::zeros(&ya.shape);
            signed_zeros(&mut dy.data);
            let (da, db) = (
                with.backward(&dy, true).unwrap().unwrap(),
                without.backward(&dy, true).unwrap().unwrap(),
            );
            assert_eq!(bits(&da), bits(&db), "input gradient");
            let wbits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(wbits(&with.weight.grad), wbits(&without.weight.grad));
            assert!(without.bias.grad.iter().all(|g| *g == 0.0));
            assert!(with.bias.grad.iter().any(|g| *g != 0.0));
        }
    }
}
