//! Layers with an `int8:` forward multiplier: with the exact integer table
//! they compute the float products of the fake-quantized operands; the
//! straight-through and integer gradients; calibration; the plan errors;
//! LeNet-5 learning the shipped MNIST subset under int8.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use amsim::{IntLut, IntScheme, Multiplier, MultiplierPlan};
use nets::data::{load_mnist_like, Split};
use nets::init::Init;
use nets::layers::conv2d::{Conv2d, Conv2dSpec};
use nets::layers::quant::QuantParams;
use nets::layers::{Dense, Layer};
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::LrSchedule;
use nets::train::Trainer;
use nets::{Network, Tensor};
use rand::Rng;
use support::test_rng;

fn int8(
    signed: bool,
    asymmetric: bool,
    per_channel: bool,
    func: fn(i32, i32) -> i32,
) -> Multiplier {
    Multiplier::Int8 {
        lut: Arc::new(IntLut::build("test", signed, func).unwrap()),
        scheme: IntScheme {
            per_channel,
            asymmetric,
        },
    }
}

fn exact(signed: bool, asymmetric: bool, per_channel: bool) -> Multiplier {
    int8(signed, asymmetric, per_channel, |a, b| a * b)
}

fn plan(fwd: Multiplier, dx: Multiplier, dw: Multiplier) -> MultiplierPlan {
    let mut p = MultiplierPlan::uniform(fwd);
    p.grad_input = dx;
    p.grad_weight = dw;
    p
}

fn random(rng: &mut impl Rng, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.gen_range(lo..hi)).collect()).unwrap()
}

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * scale, "{what}: [{i}] {g} vs {w}");
    }
}

/// The activation quantization a layer's first training forward uses.
fn act_params(x: &[f32], signed: bool, asymmetric: bool) -> QuantParams {
    let lo = x.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if asymmetric {
        QuantParams::asymmetric(lo, hi, signed)
    } else {
        QuantParams::symmetric(lo.abs().max(hi.abs()))
    }
}

/// Symmetric weights, per output channel: `channel(i)` is element i's.
fn fake_weights(
    w: &[f32],
    out: usize,
    channel: impl Fn(usize) -> usize,
    per_channel: bool,
) -> Vec<f32> {
    let params: Vec<QuantParams> = (0..out)
        .map(|o| {
            let m = (0..w.len())
                .filter(|&i| !per_channel || channel(i) == o)
                .fold(0.0f32, |m, i| m.max(w[i].abs()));
            QuantParams::symmetric(m)
        })
        .collect();
    (0..w.len())
        .map(|i| params[channel(i)].fake(w[i]))
        .collect()
}

#[test]
fn exact_int8_layers_compute_the_float_products_of_the_fake_quantized_operands() {
    let mut rng =
        test_rng("exact_int8_layers_compute_the_float_products_of_the_fake_quantized_operands");
    for (signed, asymmetric, per_channel) in [
        (true, false, true),
        (true, true, false),
        (false, true, true),
        (false, false, false),
    ] {
        let what = format!("signed {signed}, asym {asymmetric}, per-channel {per_channel}");
        let m = exact(signed, asymmetric, per_channel);
        // Dense: W [IN, OUT], channel = column.
        let mut dense = Dense::new(
            "fc",
            7,
            5,
            plan(m.clone(), m.clone(), m.clone()),
            Init::GlorotUniform,
            &mut rng,
        );
        let mut float = dense.clone();
        let x = random(&mut rng, &[3, 7], -0.5, 2.0);
        let y = dense.forward(&x, true).unwrap();
        let px = act_params(&x.data, signed, asymmetric);
        let xf: Vec<f32> = x.data.iter().map(|&v| px.fake(v)).collect();
        float.weight.value = fake_weights(&dense.weight.value, 5, |i| i % 5, per_channel);
        float.set_plan(MultiplierPlan::uniform(Multiplier::Fp32));
        let want = float
            .forward(&Tensor::from_vec(&[3, 7], xf.clone()).unwrap(), false)
            .unwrap();
        close(&y.data, &want.data, 1e-5, &format!("dense, {what}"));

        // Conv2d with padding: the padding is the activation's zero point.
        let spec = Conv2dSpec::square(2, 3, 3).padding(1).stride(2);
        let mut conv = Conv2d::new(
            "conv",
            spec,
            plan(m.clone(), Multiplier::Fp32, Multiplier::Fp32),
            Init::HeNormal,
            &mut rng,
        )
        .unwrap();
        let mut float = conv.clone();
        let x = random(&mut rng, &[2, 2, 6, 5], -1.0, 3.0);
        let y = conv.forward(&x, true).unwrap();
        let px = act_params(&x.data, signed, asymmetric);
        let xf: Vec<f32> = x.data.iter().map(|&v| px.fake(v)).collect();
        let per = conv.weight.value.len() / 3;
        float.weight.value = fake_weights(&conv.weight.value, 3, |i| i / per, per_channel);
        float.set_plan(MultiplierPlan::uniform(Multiplier::Fp32));
        let want = float
            .forward(&Tensor::from_vec(&x.shape, xf.clone()).unwrap(), true)
            .unwrap();
        close(&y.data, &want.data, 1e-5, &format!("conv, {what}"));

        // Straight-through gradients: the float products of the fake
        // operands (nothing clipped: the range is this batch's).
        let dy = random(&mut rng, &y.shape, -1.0, 1.0);
        let dx = conv.backward(&dy, true).unwrap().unwrap();
        let dx_want = float.backward(&dy, true).unwrap().unwrap();
        close(&dx.data, &dx_want.data, 1e-5, &format!("conv dx, {what}"));
        close(
            &conv.weight.grad,
            &float.weight.grad,
            1e-5,
            &format!("conv dW, {what}"),
        );
        close(
            &conv.bias.grad,
            &float.bias.grad,
            1e-6,
            &format!("conv db, {what}"),
        );
    }
}

#[test]
fn int8_gradients_through_the_exact_table_approximate_the_float_gradients() {
    let mut rng =
        test_rng("int8_gradients_through_the_exact_table_approximate_the_float_gradients");
    for signed in [true, false] {
        let m = exact(signed, !signed, true);
        let spec = Conv2dSpec::square(3, 4, 3).padding(1);
        let mut conv = Conv2d::new(
            "conv",
            spec,
            plan(m.clone(), m.clone(), m.clone()),
            Init::HeNormal,
            &mut rng,
        )
        .unwrap();
        let mut ste = conv.clone();
        ste.set_plan(plan(m.clone(), Multiplier::Fp32, Multiplier::Fp32));
        let x = random(&mut rng, &[2, 3, 5, 5], -1.0, 1.0);
        let dy = random(&mut rng, &[2, 4, 5, 5], -1.0, 1.0);
        conv.forward(&x, true).unwrap();
        ste.forward(&x, true).unwrap();
        let dx = conv.backward(&dy, true).unwrap().unwrap();
        let dx_ste = ste.backward(&dy, true).unwrap().unwrap();
        // 8-bit operands: a few percent of the largest gradient.
        close(
            &dx.data,
            &dx_ste.data,
            0.03,
            &format!("dx, signed {signed}"),
        );
        close(
            &conv.weight.grad,
            &ste.weight.grad,
            0.03,
            &format!("dW, signed {signed}"),
        );
        assert_ne!(
            dx.data, dx_ste.data,
            "signed {signed}: the int8 dx is quantized"
        );

        let mut dense = Dense::new(
            "fc",
            6,
            4,
            plan(m.clone(), m.clone(), m.clone()),
            Init::GlorotUniform,
            &mut rng,
        );
        let mut ste = dense.clone();
        ste.set_plan(plan(m.clone(), Multiplier::Fp32, Multiplier::Fp32));
        let x = random(&mut rng, &[5, 6], -1.0, 1.0);
        let dy = random(&mut rng, &[5, 4], -1.0, 1.0);
        dense.forward(&x, true).unwrap();
        ste.forward(&x, true).unwrap();
        let dx = dense.backward(&dy, true).unwrap().unwrap();
        let dx_ste = ste.backward(&dy, true).unwrap().unwrap();
        close(
            &dx.data,
            &dx_ste.data,
            0.03,
            &format!("dense dx, signed {signed}"),
        );
        close(
            &dense.weight.grad,
            &ste.weight.grad,
            0.03,
            &format!("dense dW, signed {signed}"),
        );
    }
}

#[test]
fn an_approximate_table_changes_the_forward_and_a_truncating_one_lowers_it() {
    let mut rng =
        test_rng("an_approximate_table_changes_the_forward_and_a_truncating_one_lowers_it");
    // Products of non-negative operands with their 4 low bits cleared.
    let trunc = int8(false, true, true, |a, b| (a * b) & !15);
    let mut layer = Dense::new(
        "fc",
        16,
        8,
        MultiplierPlan::uniform(exact(false, true, true)),
        Init::GlorotUniform,
        &mut rng,
    );
    for v in &mut layer.weight.value {
        *v = v.abs();
    }
    let x = random(&mut rng, &[4, 16], 0.0, 1.0);
    let y_exact = layer.forward(&x, false).unwrap();
    layer.set_plan(MultiplierPlan::uniform(trunc));
    let y_trunc = layer.forward(&x, false).unwrap();
    // Unsigned table: weights are offset by 128 and the zero point's
    // corrections are exact, so the truncation error is that of the
    // table's products of codes, the same sign for every one.
    assert_ne!(y_exact.data, y_trunc.data);
    let lowered = y_exact
        .data
        .iter()
        .zip(&y_trunc.data)
        .filter(|(e, t)| t < e)
        .count();
    assert!(lowered > y_exact.data.len() / 2, "{y_exact:?} {y_trunc:?}");
}

#[test]
fn int8_gradients_under_a_float_forward_are_a_one_line_error_naming_the_layer() {
    let mut rng =
        test_rng("int8_gradients_under_a_float_forward_are_a_one_line_error_naming_the_layer");
    let m = exact(true, false, true);
    let mut layer = Dense::new(
        "fc2",
        3,
        2,
        plan(Multiplier::Fp32, m, Multiplier::Fp32),
        Init::GlorotUniform,
        &mut rng,
    );
    let e = layer
        .forward(&random(&mut rng, &[1, 3], 0.0, 1.0), true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("fc2") && e.contains("integer forward"), "{e}");
    assert_eq!(e.lines().count(), 1);
}

fn subset_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data-subset/mnist")
}

/// Post-training quantization with the exact table keeps an fp32 LeNet-5's
/// accuracy within two points after calibration; calibrated ranges make the
/// evaluation independent of the batch size; quantization-aware training
/// from scratch learns.
#[test]
fn lenet5_quantizes_after_training_and_trains_under_int8() {
    let seed = support::test_seed("lenet5_quantizes_after_training_and_trains_under_int8");
    let train = load_mnist_like(&subset_dir(), Split::Train, Some(3000)).unwrap();
    let test = load_mnist_like(&subset_dir(), Split::Test, Some(500)).unwrap();
    let opt = || Optimizer::new(OptimizerConfig::sgd_momentum(0.9)).unwrap();
    let mut fp32 = Trainer::new(
        Network::lenet5(MultiplierPlan::uniform(Multiplier::Fp32), seed),
        opt(),
        LrSchedule::constant(0.02),
        seed,
    )
    .unwrap();
    fp32.train_epoch(&train, 32, &mut |_| {}).unwrap();
    let base = fp32.evaluate(&test, 100).unwrap();

    fp32.network
        .set_plan(&MultiplierPlan::uniform(exact(true, false, true)));
    fp32.network.calibrate(&train, 512, 64).unwrap();
    let ptq = fp32.evaluate(&test, 100).unwrap();
    let ptq_small_batches = fp32.evaluate(&test, 7).unwrap();
    eprintln!("fp32 {} -> int8 exact {}", base.accuracy, ptq.accuracy);
    assert!(base.accuracy > 0.6, "seed {seed}: fp32 {}", base.accuracy);
    assert!(
        (ptq.accuracy - base.accuracy).abs() <= 0.02,
        "seed {seed}: {} vs {}",
        ptq.accuracy,
        base.accuracy
    );
    assert_eq!(ptq.accuracy, ptq_small_batches.accuracy, "seed {seed}");

    let m = int8(true, false, true, |a, b| a * b);
    let mut qat = Trainer::new(
        Network::lenet5(MultiplierPlan::uniform(m), seed),
        opt(),
        LrSchedule::constant(0.02),
        seed,
    )
    .unwrap();
    qat.train_epoch(&train, 32, &mut |_| {}).unwrap();
    let after = qat.evaluate(&test, 100).unwrap();
    eprintln!(
        "int8 exact, int8 gradients, from scratch: {}",
        after.accuracy
    );
    assert!(after.accuracy > 0.6, "seed {seed}: {}", after.accuracy);
}
