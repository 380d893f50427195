//! Finite-difference gradient checks of the ResNet layers (batch norm,
//! global average pooling, basic and bottleneck residual blocks) with the
//! `fp32` multiplier on tiny shapes; batch norm's running statistics in
//! inference, under the optimizers and in checkpoints; and a residual
//! block's convolutions on a LUT plan.
//!
//! Each check uses the scalar objective `L = Σ y·r` with a fixed random `r`
//! (so `dL/dy = r`), computes `L` in f64 from the layer's f32 outputs, and
//! compares the backward pass with the central difference for every input
//! and parameter element. Residual blocks have ReLUs after batch norm, whose
//! inputs cannot be kept away from the kink; where the central difference
//! straddles a kink, one of the one-sided differences does not, so a block
//! element passes when the analytic gradient matches the central or either
//! one-sided difference, at the step or at a quarter or a sixteenth of it
//! (where the step straddles kinks on both sides); a wrong gradient matches
//! none.

mod gradcheck_support;
mod support;

use gradcheck_support::{close, objective};
use support::{fp32, mitchell_lut, test_rng};

use amsim::conv::{conv2d_forward_reference, Conv2dShape};
use amsim::{Multiplier, MultiplierPlan};
use nets::init::Init;
use nets::layers::batchnorm::{BN_EPS, BN_MOMENTUM};
use nets::layers::{BatchNorm2d, GlobalAvgPool, Layer, Param, ResidualBlock, ShortcutKind};
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::LrSchedule;
use nets::train::Trainer;
use nets::{Network, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

fn random_tensor(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()).unwrap()
}

/// Randomise the trainable BN parameters (γ around 1, β around 0) so their
/// paths are exercised; running statistics are left alone. Kept near the
/// defaults: a large negative β would leave a channel almost dead after the
/// ReLU, and the next BN would then magnify its tiny variance and put many
/// kinks within a finite-difference step.
fn randomise_bn(layer: &mut dyn Layer, rng: &mut ChaCha8Rng) {
    for p in layer.params_mut() {
        // γ is the only undecayed weight: convolution weights are decayed.
        if !p.decay && p.name.ends_with(".weight") {
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.gen_range(0.75..1.25));
        } else if p.name.ends_with(".bias") {
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.gen_range(-0.25..0.25));
        }
    }
}

/// Check `layer`'s input and parameter gradients at `x` in training mode.
/// With `kinks`, an element also passes on either one-sided difference, at
/// `eps`, `eps/4` or `eps/16`.
fn check_layer(
    layer: &mut dyn Layer,
    x: &Tensor,
    eps: f32,
    (atol, rtol): (f64, f64),
    kinks: bool,
    rng: &mut ChaCha8Rng,
) {
    let y = layer.forward(x, true).unwrap();
    let r: Vec<f32> = (0..y.len()).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let dy = Tensor::from_vec(&y.shape, r.clone()).unwrap();
    let dx = layer.backward(&dy, true).unwrap().expect("input gradient");
    assert_eq!(dx.shape, x.shape, "{}: dx shape", layer.name());
    let grads: Vec<Vec<f32>> = layer.params().iter().map(|p| p.grad.clone()).collect();
    let eval = |layer: &mut dyn Layer, x: &Tensor| objective(&layer.forward(x, true).unwrap(), &r);
    let mid = eval(layer, x);
    // Steps to try: with kinks, smaller steps where the first one straddles
    // kinks on both sides (their rounding error is larger, so is `atol`).
    let steps: &[(f32, f64)] = if kinks {
        &[
            (eps, atol),
            (eps / 4.0, 4.0 * atol),
            (eps / 16.0, 16.0 * atol),
        ]
    } else {
        &[(eps, atol)]
    };
    // Panics unless `analytic` matches a difference for some step; `f(d)`
    // evaluates the objective with the element moved by `d`.
    let matches = |what: &str, analytic: f32, f: &mut dyn FnMut(f32) -> f64| {
        let mut seen = Vec::new();
        for &(step, tol) in steps {
            let (up, down) = (f(step), f(-step));
            let h = step as f64;
            let central = (up - down) / (2.0 * h);
            let one_sided = [(up - mid) / h, (mid - down) / h];
            if close(analytic, central, tol, rtol)
                || kinks && one_sided.iter().any(|&d| close(analytic, d, tol, rtol))
            {
                return;
            }
            seen.push((step, central, one_sided));
        }
        panic!("{what}: backward gives {analytic}; (step, central, one-sided) {seen:?}");
    };
    let mut xp = x.clone();
    for i in 0..x.len() {
        let orig = xp.data[i];
        matches(&format!("{} dx[{i}]", layer.name()), dx.data[i], &mut |d| {
            xp.data[i] = orig + d;
            let v = eval(layer, &xp);
            xp.data[i] = orig;
            v
        });
    }
    for (pi, grad) in grads.iter().enumerate() {
        for (i, &analytic) in grad.iter().enumerate() {
            let name = format!("{}[{i}]", layer.params()[pi].name);
            let orig = layer.params()[pi].value[i];
            matches(&name, analytic, &mut |d| {
                layer.params_mut()[pi].value[i] = orig + d;
                let v = eval(layer, x);
                layer.params_mut()[pi].value[i] = orig;
                v
            });
        }
    }
}

fn param<'a>(layer: &'a dyn Layer, name: &str) -> &'a Param {
    layer
        .params()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no parameter {name}"))
}

#[test]
fn batchnorm_training_gradients_match_finite_differences() {
    let mut rng = test_rng("batchnorm_training_gradients_match_finite_differences");
    let mut layer = BatchNorm2d::new("bn", 3);
    randomise_bn(&mut layer, &mut rng);
    // Channels with different means and spreads.
    let mut x = random_tensor(&mut rng, &[3, 3, 2, 3]);
    for (i, v) in x.data.iter_mut().enumerate() {
        let c = (i / 6) % 3;
        *v = *v * (0.5 + c as f32) + c as f32;
    }
    check_layer(&mut layer, &x, 1e-2, (1e-3, 1e-2), false, &mut rng);
    for p in layer.params() {
        assert!(!p.decay, "{}: BN parameters are not decayed", p.name);
    }
    assert!(layer.running_mean.grad.iter().all(|&g| g == 0.0));
    assert!(layer.running_var.grad.iter().all(|&g| g == 0.0));
}

#[test]
fn global_avgpool_gradients_match_finite_differences() {
    let mut rng = test_rng("global_avgpool_gradients_match_finite_differences");
    let mut layer = GlobalAvgPool::new("gap");
    let x = random_tensor(&mut rng, &[2, 3, 3, 2]);
    let y = layer.forward(&x, false).unwrap();
    assert_eq!(y.shape, vec![2, 3]);
    for (i, &v) in y.data.iter().enumerate() {
        let want: f32 = x.data[i * 6..(i + 1) * 6].iter().sum::<f32>() / 6.0;
        assert!((v - want).abs() <= 1e-6, "y[{i}] {v} vs {want}");
    }
    check_layer(&mut layer, &x, 0.25, (1e-5, 1e-5), false, &mut rng);
}

#[test]
fn basic_block_gradients_match_finite_differences_for_every_shortcut() {
    let mut rng = test_rng("basic_block_gradients_match_finite_differences_for_every_shortcut");
    for (cin, cout, stride, kind) in [
        (2, 2, 1, ShortcutKind::Projection),
        (2, 4, 2, ShortcutKind::Projection),
        (2, 4, 2, ShortcutKind::ZeroPad),
    ] {
        let mut block = ResidualBlock::basic(
            "block",
            cin,
            cout,
            stride,
            kind,
            fp32(),
            Init::HeNormal,
            &mut rng,
        )
        .unwrap();
        randomise_bn(&mut block, &mut rng);
        let x = random_tensor(&mut rng, &[2, cin, 4, 4]);
        assert_eq!(
            block.output_shape(&[cin, 4, 4]).unwrap(),
            vec![cout, 4 / stride, 4 / stride]
        );
        check_layer(&mut block, &x, 2e-3, (3e-3, 2e-2), true, &mut rng);
    }
}

#[test]
fn bottleneck_gradients_match_finite_differences() {
    let mut rng = test_rng("bottleneck_gradients_match_finite_differences");
    // Identity shortcut (4·2 = 8 channels in), then a projection with stride 2.
    for (cin, width, stride) in [(8, 2, 1), (4, 2, 2)] {
        let mut block = ResidualBlock::bottleneck(
            "block",
            cin,
            width,
            stride,
            fp32(),
            Init::HeNormal,
            &mut rng,
        )
        .unwrap();
        randomise_bn(&mut block, &mut rng);
        let x = random_tensor(&mut rng, &[2, cin, 4, 4]);
        assert_eq!(
            block.output_shape(&[cin, 4, 4]).unwrap(),
            vec![4 * width, 4 / stride, 4 / stride]
        );
        check_layer(&mut block, &x, 2e-3, (3e-3, 2e-2), true, &mut rng);
    }
}

#[test]
fn batchnorm_inference_uses_the_running_statistics_of_training_batches() {
    let mut rng = test_rng("batchnorm_inference_uses_the_running_statistics_of_training_batches");
    let (c, plane) = (2, 6);
    let mut layer = BatchNorm2d::new("bn", c);
    randomise_bn(&mut layer, &mut rng);
    let (mut rm, mut rv) = (vec![0.0f64; c], vec![1.0f64; c]);
    for _ in 0..3 {
        let mut x = random_tensor(&mut rng, &[3, c, 2, 3]);
        x.data.iter_mut().for_each(|v| *v = *v * 2.0 + 0.7);
        let y = layer.forward(&x, true).unwrap();
        for ch in 0..c {
            let vals: Vec<f64> = (0..3)
                .flat_map(|n| x.data[(n * c + ch) * plane..][..plane].to_vec())
                .map(|v| v as f64)
                .collect();
            let m = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / m;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m;
            // Training output: batch statistics, biased variance.
            let (g, b) = (layer.gamma.value[ch] as f64, layer.beta.value[ch] as f64);
            for n in 0..3 {
                for i in 0..plane {
                    let k = (n * c + ch) * plane + i;
                    let want = g * (x.data[k] as f64 - mean) / (var + BN_EPS as f64).sqrt() + b;
                    assert!((y.data[k] as f64 - want).abs() < 1e-5, "train y[{k}]");
                }
            }
            let mom = BN_MOMENTUM as f64;
            rm[ch] = (1.0 - mom) * rm[ch] + mom * mean;
            rv[ch] = (1.0 - mom) * rv[ch] + mom * var * m / (m - 1.0);
        }
    }
    for ch in 0..c {
        assert!((layer.running_mean.value[ch] as f64 - rm[ch]).abs() < 1e-5);
        assert!((layer.running_var.value[ch] as f64 - rv[ch]).abs() < 1e-5);
    }
    let before = (layer.running_mean.clone(), layer.running_var.clone());
    let x = random_tensor(&mut rng, &[2, c, 2, 3]);
    let y = layer.forward(&x, false).unwrap();
    for (k, (&v, &out)) in x.data.iter().zip(&y.data).enumerate() {
        let ch = (k / plane) % c;
        let (g, b) = (layer.gamma.value[ch] as f64, layer.beta.value[ch] as f64);
        let want = g * (v as f64 - rm[ch]) / (rv[ch] + BN_EPS as f64).sqrt() + b;
        assert!(
            (out as f64 - want).abs() < 1e-5,
            "inference y[{k}] {out} vs {want}"
        );
    }
    assert_eq!(
        (layer.running_mean, layer.running_var),
        before,
        "inference must not move the running statistics"
    );
}

#[test]
fn running_statistics_are_left_alone_by_the_optimizers_and_saved_in_checkpoints() {
    let mut rng =
        test_rng("running_statistics_are_left_alone_by_the_optimizers_and_saved_in_checkpoints");
    let configs = [
        OptimizerConfig::Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.1,
        },
        OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.1,
        },
        OptimizerConfig::Sgd {
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.1,
        },
        OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            decoupled: false,
        },
        OptimizerConfig::adamw(0.1),
    ];
    for config in configs {
        let mut layer = BatchNorm2d::new("bn", 2);
        let mut opt = Optimizer::new(config).unwrap();
        for _ in 0..3 {
            let x = random_tensor(&mut rng, &[2, 2, 3, 3]);
            let y = layer.forward(&x, true).unwrap();
            let dy = random_tensor(&mut rng, &y.shape);
            layer.backward(&dy, true).unwrap();
            let stats = (
                layer.running_mean.value.clone(),
                layer.running_var.value.clone(),
            );
            let gamma = layer.gamma.value.clone();
            opt.step(&mut layer.params_mut(), 0.1).unwrap();
            assert_eq!(layer.running_mean.value, stats.0, "{config:?}");
            assert_eq!(layer.running_var.value, stats.1, "{config:?}");
            assert_ne!(layer.gamma.value, gamma, "{config:?}: γ trains");
        }
    }

    // A network whose BN has seen training batches saves its running
    // statistics, and a fresh network restored from the checkpoint has them.
    let network = || {
        let layers: Vec<Box<dyn Layer>> = vec![
            Box::new(BatchNorm2d::new("bn", 3)),
            Box::new(GlobalAvgPool::new("gap")),
        ];
        Network::new("bnnet", &[3, 2, 2], 3, layers).unwrap()
    };
    let trainer = |net: Network| {
        let opt = Optimizer::new(OptimizerConfig::sgd_momentum(0.9)).unwrap();
        Trainer::new(net, opt, LrSchedule::constant(0.1), 7).unwrap()
    };
    let mut net = network();
    let x = random_tensor(&mut rng, &[4, 3, 2, 2]);
    net.forward(&x, true).unwrap();
    assert_eq!(net.params()[2].name, "bn.running_mean");
    let want_mean = net.params()[2].value.clone();
    assert!(want_mean.iter().all(|&v| v != 0.0));
    let ck = trainer(net).checkpoint();
    let saved = ck
        .params
        .iter()
        .find(|p| p.name == "bn.running_mean")
        .unwrap();
    assert_eq!(saved.values, want_mean);
    let mut fresh = trainer(network());
    fresh
        .restore(std::path::Path::new("memory"), ck.clone())
        .unwrap();
    assert_eq!(fresh.checkpoint().params, ck.params);
}

/// `conv(x, w)` by amsim's reference convolution, no bias.
fn reference_conv(
    lut: &Multiplier,
    x: &Tensor,
    w: &Param,
    stride: usize,
    padding: usize,
) -> Tensor {
    let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let shape = Conv2dShape {
        batch: n,
        in_channels: cin,
        in_h: h,
        in_w: wd,
        out_channels: w.shape[0],
        kernel_h: w.shape[2],
        kernel_w: w.shape[3],
        stride: (stride, stride),
        padding: (padding, padding),
        dilation: (1, 1),
        groups: 1,
    };
    let mut y = Tensor::zeros(&[n, w.shape[0], shape.out_h(), shape.out_w()]);
    conv2d_forward_reference(lut, &shape, &x.data, &w.value, &mut y.data).unwrap();
    y
}

/// Inference batch norm as the layer documents it.
fn reference_bn(block: &dyn Layer, bn: &str, x: &Tensor) -> Tensor {
    let p = |s: &str| param(block, &format!("{bn}.{s}")).value.clone();
    let (g, b, rm, rv) = (p("weight"), p("bias"), p("running_mean"), p("running_var"));
    let (c, plane) = (x.shape[1], x.shape[2] * x.shape[3]);
    let mut y = x.clone();
    for (k, v) in y.data.iter_mut().enumerate() {
        let ch = (k / plane) % c;
        *v = (*v - rm[ch]) * (g[ch] / (rv[ch] + BN_EPS).sqrt()) + b[ch];
    }
    y
}

fn relu(mut x: Tensor) -> Tensor {
    x.data
        .iter_mut()
        .for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v });
    x
}

#[test]
fn basic_block_on_a_lut_plan_routes_every_convolution_through_the_table() {
    let mut rng = test_rng("basic_block_on_a_lut_plan_routes_every_convolution_through_the_table");
    let lut = mitchell_lut(4);
    let mut block = ResidualBlock::basic(
        "block",
        2,
        4,
        2,
        ShortcutKind::Projection,
        fp32(),
        Init::HeNormal,
        &mut rng,
    )
    .unwrap();
    randomise_bn(&mut block, &mut rng);
    for p in block.params_mut() {
        if p.name.ends_with("running_mean") {
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.gen_range(-0.3..0.3));
        } else if p.name.ends_with("running_var") {
            p.value
                .iter_mut()
                .for_each(|v| *v = rng.gen_range(0.5..2.0));
        }
    }
    let names: Vec<String> = block.params().iter().map(|p| p.name.clone()).collect();
    for want in [
        "block.conv1.weight",
        "block.bn1.weight",
        "block.bn1.running_var",
        "block.conv2.weight",
        "block.bn2.bias",
        "block.shortcut.conv.weight",
        "block.shortcut.bn.running_mean",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    // MACs: 16 output positions of 4 channels each for conv1 (2 channels in,
    // 3x3), conv2 (4 in, 3x3) and the shortcut (2 in, 1x1).
    let fwd = (16 * 4 * (2 * 9 + 4 * 9 + 2)) as u64;
    assert_eq!(block.macs(&[2, 8, 8]).forward, fwd);

    let x = random_tensor(&mut rng, &[2, 2, 8, 8]);
    let y_fp32 = block.forward(&x, false).unwrap();
    assert!(block.set_plan(MultiplierPlan::uniform(lut.clone())));
    let y = block.forward(&x, false).unwrap();
    assert_ne!(y, y_fp32, "the LUT plan must change the output");

    let w = |s: &str| param(&block, s).clone();
    let h = reference_conv(&lut, &x, &w("block.conv1.weight"), 2, 1);
    let h = relu(reference_bn(&block, "block.bn1", &h));
    let h = reference_conv(&lut, &h, &w("block.conv2.weight"), 1, 1);
    let mut z = reference_bn(&block, "block.bn2", &h);
    let s = reference_conv(&lut, &x, &w("block.shortcut.conv.weight"), 2, 0);
    let s = reference_bn(&block, "block.shortcut.bn", &s);
    z.data.iter_mut().zip(&s.data).for_each(|(a, b)| *a += b);
    assert_eq!(y, relu(z), "block output vs the LUT composition");
}
