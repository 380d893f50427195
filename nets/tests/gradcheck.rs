//! Finite-difference gradient checks of every layer and of the loss, with
//! the `fp32` multiplier on tiny shapes.
//!
//! Each check uses the scalar objective `L = Σ y·r` with a fixed random `r`
//! (so `dL/dy = r`), computes `L` in f64 from the layer's f32 outputs, and
//! compares the layer's backward pass with the central difference
//! `(L(θ + ε) - L(θ - ε)) / 2ε` for every input and parameter element.
//! Inputs of piecewise-linear layers (ReLU, max pooling) are kept at least
//! 4ε away from their kinks so the difference does not straddle one.

mod gradcheck_support;
mod support;

use gradcheck_support::{assert_close, check_layer, no_setup};
use nets::init::Init;
use nets::layers::conv2d::Conv2dSpec;
use nets::layers::{
    softmax_cross_entropy, AvgPool2d, Conv2d, Dense, Dropout, Flatten, Layer, MaxPool2d, Relu,
};
use nets::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{fp32, test_rng};

fn random_tensor(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()).unwrap()
}

/// Values in ±[lo, 1): at least `lo` away from zero.
fn away_from_zero(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32) -> Tensor {
    let n = shape.iter().product();
    let data = (0..n)
        .map(|_| {
            let m = rng.gen_range(lo..1.0f32);
            if rng.gen::<bool>() {
                m
            } else {
                -m
            }
        })
        .collect();
    Tensor::from_vec(shape, data).unwrap()
}

#[test]
fn dense_gradients_match_finite_differences() {
    let mut rng = test_rng("dense_gradients_match_finite_differences");
    let mut layer = Dense::new("fc", 5, 4, fp32(), Init::GlorotUniform, &mut rng);
    for b in layer.bias.value.iter_mut() {
        *b = rng.gen_range(-1.0..1.0);
    }
    let x = random_tensor(&mut rng, &[3, 5]);
    // The objective is linear in each input and parameter, so a large step
    // costs no truncation error and keeps rounding small.
    check_layer(&mut layer, &x, true, 0.25, 1e-4, 1e-4, &mut rng, &no_setup);
}

#[test]
fn conv2d_gradients_match_finite_differences_with_stride_and_padding() {
    let mut rng = test_rng("conv2d_gradients_match_finite_differences_with_stride_and_padding");
    for (stride, pad, groups) in [(1, 0, 1), (2, 1, 1), (1, 2, 1), (2, 1, 2)] {
        let mut spec = Conv2dSpec::square(2, 4, 3).stride(stride).padding(pad);
        spec.groups = groups;
        let mut layer = Conv2d::new("conv", spec, fp32(), Init::HeNormal, &mut rng).unwrap();
        for b in layer.bias.value.iter_mut() {
            *b = rng.gen_range(-1.0..1.0);
        }
        let x = random_tensor(&mut rng, &[2, 2, 5, 6]);
        check_layer(&mut layer, &x, true, 0.25, 1e-4, 1e-4, &mut rng, &no_setup);
    }
}

#[test]
fn relu_gradients_match_finite_differences() {
    let mut rng = test_rng("relu_gradients_match_finite_differences");
    let mut layer = Relu::new("relu");
    let eps = 1e-2;
    let x = away_from_zero(&mut rng, &[3, 2, 4], 4.0 * eps);
    check_layer(&mut layer, &x, true, eps, 1e-4, 1e-4, &mut rng, &no_setup);
}

/// A tensor whose values are a random permutation of a grid with spacing
/// `gap`, so every pooling window has a unique maximum by a margin.
fn distinct_values(rng: &mut ChaCha8Rng, shape: &[usize], gap: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * gap).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.gen_range(0..=i));
    }
    Tensor::from_vec(shape, v).unwrap()
}

#[test]
fn maxpool_gradients_match_finite_differences() {
    let mut rng = test_rng("maxpool_gradients_match_finite_differences");
    let eps = 1e-2;
    for (k, s) in [(2, 2), (3, 2), (2, 1)] {
        let mut layer = MaxPool2d::new("pool", k, s);
        let x = distinct_values(&mut rng, &[2, 2, 5, 6], 5.0 * eps);
        check_layer(&mut layer, &x, true, eps, 1e-3, 1e-3, &mut rng, &no_setup);
    }
}

#[test]
fn avgpool_gradients_match_finite_differences() {
    let mut rng = test_rng("avgpool_gradients_match_finite_differences");
    for (k, s) in [(2, 2), (3, 2), (2, 1)] {
        let mut layer = AvgPool2d::new("pool", k, s);
        let x = random_tensor(&mut rng, &[2, 2, 5, 6]);
        check_layer(&mut layer, &x, true, 0.25, 1e-4, 1e-4, &mut rng, &no_setup);
    }
}

#[test]
fn dropout_gradients_match_finite_differences_with_a_fixed_mask() {
    let mut rng = test_rng("dropout_gradients_match_finite_differences_with_a_fixed_mask");
    let mask_seed: u64 = rng.gen();
    let mut layer = Dropout::new("drop", 0.4).unwrap();
    let x = random_tensor(&mut rng, &[4, 8]);
    // Reseeding before every forward pass fixes the mask.
    let setup = move |l: &mut dyn Layer| l.reseed(mask_seed);
    check_layer(&mut layer, &x, true, 0.25, 1e-4, 1e-4, &mut rng, &setup);
    // The mask drops something and keeps something, and scales by 1/(1-p).
    setup(&mut layer);
    let y = layer.forward(&x, true).unwrap();
    let dropped = y.data.iter().filter(|&&v| v == 0.0).count();
    assert!(
        dropped > 0 && dropped < y.len(),
        "dropped {dropped} of {}",
        y.len()
    );
    for (a, b) in x.data.iter().zip(&y.data) {
        assert!(*b == 0.0 || (*b - a / 0.6).abs() <= 1e-6 * a.abs().max(1.0));
    }
    // At evaluation dropout is the identity.
    assert_eq!(layer.forward(&x, false).unwrap(), x);
}

#[test]
fn flatten_gradients_match_finite_differences() {
    let mut rng = test_rng("flatten_gradients_match_finite_differences");
    let mut layer = Flatten::new("flatten");
    let x = random_tensor(&mut rng, &[2, 3, 2, 2]);
    assert_eq!(layer.forward(&x, true).unwrap().shape, vec![2, 12]);
    check_layer(&mut layer, &x, true, 0.25, 1e-5, 1e-5, &mut rng, &no_setup);
}

#[test]
fn softmax_cross_entropy_gradient_matches_finite_differences() {
    let mut rng = test_rng("softmax_cross_entropy_gradient_matches_finite_differences");
    let (n, k) = (4, 5);
    let mut logits = random_tensor(&mut rng, &[n, k]);
    for v in logits.data.iter_mut() {
        *v *= 3.0;
    }
    let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..k as u8)).collect();
    let out = softmax_cross_entropy(&logits, &labels).unwrap();

    // The loss against a direct f64 evaluation of its definition.
    let mut want = 0.0f64;
    for (row, &l) in logits.data.chunks(k).zip(&labels) {
        let z: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
        want += -((row[l as usize] as f64).exp() / z).ln();
    }
    want /= n as f64;
    assert_close("loss", out.loss, want, 1e-6, 1e-6);

    let eps = 1e-2f32;
    for i in 0..logits.len() {
        let mut p = logits.clone();
        p.data[i] += eps;
        let up = softmax_cross_entropy(&p, &labels).unwrap().loss as f64;
        p.data[i] -= 2.0 * eps;
        let down = softmax_cross_entropy(&p, &labels).unwrap().loss as f64;
        let numeric = (up - down) / (2.0 * eps as f64);
        assert_close(
            &format!("dlogits[{i}]"),
            out.dlogits.data[i],
            numeric,
            2e-4,
            1e-2,
        );
    }

    // Correct counts the rows whose largest logit is the label.
    let correct = logits
        .data
        .chunks(k)
        .zip(&labels)
        .filter(|(row, &l)| row.iter().all(|&v| v <= row[l as usize]))
        .count();
    assert_eq!(out.correct, correct);
}

#[test]
fn softmax_cross_entropy_is_finite_for_huge_logits_and_rejects_bad_labels() {
    let logits = Tensor::from_vec(&[1, 3], vec![1e30, -1e30, 0.0]).unwrap();
    let out = softmax_cross_entropy(&logits, &[1]).unwrap();
    assert_eq!(out.loss, 2e30);
    let err = softmax_cross_entropy(&logits, &[3])
        .unwrap_err()
        .to_string();
    assert!(err.contains("label 3"), "{err}");
}

#[test]
fn relu_and_maxpool_propagate_nan_so_divergence_is_seen() {
    let mut rng = test_rng("relu_and_maxpool_propagate_nan_so_divergence_is_seen");
    let mut x = random_tensor(&mut rng, &[1, 1, 4, 4]);
    let i = rng.gen_range(0..16);
    x.data[i] = f32::NAN;
    let y = Relu::new("relu").forward(&x, false).unwrap();
    assert!(y.data[i].is_nan());
    assert_eq!(y.data.iter().filter(|v| v.is_nan()).count(), 1);
    let p = MaxPool2d::new("pool", 2, 2).forward(&x, false).unwrap();
    let window = (i / 4 / 2) * 2 + (i % 4) / 2;
    for (j, v) in p.data.iter().enumerate() {
        assert_eq!(v.is_nan(), j == window, "pool output {j}: {v}");
    }
}

#[test]
fn network_backward_chains_layer_gradients_to_every_parameter() {
    // A smooth network (no ReLU or max kinks, a fixed dropout mask) so that
    // every parameter can be checked through the whole chain and the loss.
    let mut rng = test_rng("network_backward_chains_layer_gradients_to_every_parameter");
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(
            Conv2d::new(
                "conv1",
                Conv2dSpec::square(2, 3, 3).padding(1),
                fp32(),
                Init::HeNormal,
                &mut rng,
            )
            .unwrap(),
        ),
        Box::new(AvgPool2d::new("pool1", 2, 2)),
        Box::new(
            Conv2d::new(
                "conv2",
                Conv2dSpec::square(3, 4, 2).stride(2),
                fp32(),
                Init::HeNormal,
                &mut rng,
            )
            .unwrap(),
        ),
        Box::new(Flatten::new("flatten")),
        Box::new(Dense::new(
            "fc1",
            16,
            6,
            fp32(),
            Init::GlorotUniform,
            &mut rng,
        )),
        Box::new(Dropout::new("drop", 0.25).unwrap()),
        Box::new(Dense::new(
            "fc2",
            6,
            3,
            fp32(),
            Init::GlorotUniform,
            &mut rng,
        )),
    ];
    let mut net = nets::Network::new("smooth", &[2, 8, 8], 3, layers).unwrap();
    // Non-zero biases, so their paths are exercised too.
    for p in net.params_mut() {
        if !p.decay {
            for v in p.value.iter_mut() {
                *v = rng.gen_range(-0.5..0.5);
            }
        }
    }
    let x = random_tensor(&mut rng, &[3, 2, 8, 8]);
    let labels: Vec<u8> = (0..3).map(|_| rng.gen_range(0..3)).collect();
    let mask_seed: u64 = rng.gen();
    let loss = |net: &mut nets::Network| {
        net.reseed(mask_seed);
        let logits = net.forward(&x, true).unwrap();
        softmax_cross_entropy(&logits, &labels).unwrap()
    };
    let out = loss(&mut net);
    net.backward(&out.dlogits).unwrap();
    let grads: Vec<Vec<f32>> = net.params().iter().map(|p| p.grad.clone()).collect();
    assert_eq!(grads.len(), 8);
    // Softmax curvature makes the truncation error of a wide step
    // noticeable; 2e-3 keeps it and f32 rounding both well under tolerance.
    let eps = 2e-3f32;
    for (pi, grad) in grads.iter().enumerate() {
        for (i, &analytic) in grad.iter().enumerate() {
            let orig = net.params()[pi].value[i];
            net.params_mut()[pi].value[i] = orig + eps;
            let up = loss(&mut net).loss as f64;
            net.params_mut()[pi].value[i] = orig - eps;
            let down = loss(&mut net).loss as f64;
            net.params_mut()[pi].value[i] = orig;
            let numeric = (up - down) / (2.0 * eps as f64);
            let name = net.params()[pi].name.clone();
            assert_close(&format!("{name}[{i}]"), analytic, numeric, 5e-4, 2e-2);
        }
    }
}
