//! Layers with a 12- or 16-bit integer forward multiplier (`int12:`,
//! `int16:`): with an exact model they compute the float products of the
//! fake-quantized operands at that width; their integer gradients track the
//! float ones far closer than 8-bit ones; attention's products go through
//! the model too.

mod support;

use std::sync::Arc;

use amsim::{IntScheme, Multiplier, MultiplierPlan, Role, WideIntMul};
use nets::init::Init;
use nets::layers::attention::CausalSelfAttention;
use nets::layers::conv2d::{Conv2d, Conv2dSpec};
use nets::layers::quant::QuantParams;
use nets::layers::{Dense, Layer};
use nets::Tensor;
use rand::Rng;
use support::test_rng;

fn exact(bits: u32, signed: bool, asymmetric: bool, per_channel: bool) -> Multiplier {
    Multiplier::IntWide {
        mul: Arc::new(
            WideIntMul::new("exact", bits, signed, |a, b| i64::from(a) * i64::from(b)).unwrap(),
        ),
        scheme: IntScheme {
            per_channel,
            asymmetric,
        },
    }
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

/// The largest relative difference of `got` from `want` (by `want`'s
/// largest magnitude).
fn worst(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    got.iter()
        .zip(want)
        .fold(0.0f32, |m, (g, w)| m.max((g - w).abs() / scale))
}

/// The activation quantization a layer's first training forward uses.
fn act_params(x: &[f32], bits: u32, signed: bool, asymmetric: bool) -> QuantParams {
    let lo = x.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if asymmetric {
        QuantParams::asymmetric_bits(lo, hi, signed, bits)
    } else {
        QuantParams::symmetric_bits(lo.abs().max(hi.abs()), bits)
    }
}

/// Symmetric `bits`-bit weights, per output channel (`channel(i)` is
/// element i's) or per tensor.
fn fake_weights(
    w: &[f32],
    out: usize,
    channel: impl Fn(usize) -> usize,
    per_channel: bool,
    bits: u32,
) -> Vec<f32> {
    let params: Vec<QuantParams> = (0..out)
        .map(|o| {
            let m = (0..w.len())
                .filter(|&i| !per_channel || channel(i) == o)
                .fold(0.0f32, |m, i| m.max(w[i].abs()));
            QuantParams::symmetric_bits(m, bits)
        })
        .collect();
    (0..w.len())
        .map(|i| params[channel(i)].fake(w[i]))
        .collect()
}

#[test]
fn wide_quantization_ranges_have_the_width_of_the_model() {
    for bits in [12, 16] {
        let half = 1 << (bits - 1);
        let p = QuantParams::symmetric_bits(1.0, bits);
        assert_eq!((p.qmin, p.qmax, p.zero), (1 - half, half - 1, 0));
        assert_eq!(p.quantize(1.0), half - 1);
        let p = QuantParams::asymmetric_bits(-1.0, 3.0, true, bits);
        assert_eq!((p.qmin, p.qmax), (-half, half - 1));
        assert_eq!(p.fake(0.0), 0.0);
        let p = QuantParams::asymmetric_bits(-1.0, 3.0, false, bits);
        assert_eq!((p.qmin, p.qmax), (0, 2 * half - 1));
        assert_eq!(p.quantize(-1.0), 0);
        assert_eq!(p.quantize(3.0), 2 * half - 1);
    }
}

#[test]
fn exact_wide_layers_compute_the_float_products_of_the_fake_quantized_operands() {
    let mut rng =
        test_rng("exact_wide_layers_compute_the_float_products_of_the_fake_quantized_operands");
    for (bits, signed, asymmetric, per_channel) in [
        (12, true, false, true),
        (12, false, true, false),
        (16, true, true, true),
        (16, false, false, true),
    ] {
        let what =
            format!("{bits} bits, signed {signed}, asym {asymmetric}, per-channel {per_channel}");
        let m = exact(bits, signed, asymmetric, per_channel);
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
        let px = act_params(&x.data, bits, signed, asymmetric);
        let xf: Vec<f32> = x.data.iter().map(|&v| px.fake(v)).collect();
        float.weight.value = fake_weights(&dense.weight.value, 5, |i| i % 5, per_channel, bits);
        float.set_plan(MultiplierPlan::uniform(Multiplier::Fp32));
        let want = float
            .forward(&Tensor::from_vec(&[3, 7], xf).unwrap(), false)
            .unwrap();
        close(&y.data, &want.data, 1e-5, &format!("dense, {what}"));

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
        let px = act_params(&x.data, bits, signed, asymmetric);
        let xf: Vec<f32> = x.data.iter().map(|&v| px.fake(v)).collect();
        let per = conv.weight.value.len() / 3;
        float.weight.value = fake_weights(&conv.weight.value, 3, |i| i / per, per_channel, bits);
        float.set_plan(MultiplierPlan::uniform(Multiplier::Fp32));
        let want = float
            .forward(&Tensor::from_vec(&x.shape, xf).unwrap(), true)
            .unwrap();
        close(&y.data, &want.data, 1e-5, &format!("conv, {what}"));
    }
}

#[test]
fn wide_integer_gradients_track_the_float_gradients_closer_than_8_bit_ones() {
    let mut rng =
        test_rng("wide_integer_gradients_track_the_float_gradients_closer_than_8_bit_ones");
    let int8 = Multiplier::Int8 {
        lut: Arc::new(amsim::IntLut::build("exact8s", true, |a, b| a * b).unwrap()),
        scheme: IntScheme {
            per_channel: true,
            asymmetric: false,
        },
    };
    let spec = Conv2dSpec::square(3, 4, 3).padding(1);
    let conv = Conv2d::new(
        "conv",
        spec,
        plan(int8.clone(), Multiplier::Fp32, Multiplier::Fp32),
        Init::HeNormal,
        &mut rng,
    )
    .unwrap();
    let x = random(&mut rng, &[2, 3, 5, 5], -1.0, 1.0);
    let dy = random(&mut rng, &[2, 4, 5, 5], -1.0, 1.0);
    // dx and dW of a plan, and of the same plan with float gradients (the
    // straight-through reference for its forward).
    let grads = |m: &Multiplier| {
        let (mut int, mut ste) = (conv.clone(), conv.clone());
        int.set_plan(plan(m.clone(), m.clone(), m.clone()));
        ste.set_plan(plan(m.clone(), Multiplier::Fp32, Multiplier::Fp32));
        int.forward(&x, true).unwrap();
        ste.forward(&x, true).unwrap();
        let (dx, dx_ste) = (
            int.backward(&dy, true).unwrap().unwrap(),
            ste.backward(&dy, true).unwrap().unwrap(),
        );
        (
            worst(&dx.data, &dx_ste.data),
            worst(&int.weight.grad, &ste.weight.grad),
        )
    };
    let (dx8, dw8) = grads(&int8);
    assert!(dx8 > 0.0 && dw8 > 0.0, "8-bit gradients are quantized");
    for bits in [12, 16] {
        let (dx, dw) = grads(&exact(bits, true, false, true));
        // 16x (12 bits) or 256x (16 bits) finer steps than 8 bits.
        let bound = 0.03 / (1 << (bits - 8)) as f32 * 4.0;
        assert!(
            dx <= bound && dw <= bound,
            "{bits} bits: dx {dx}, dW {dw} (bound {bound})"
        );
        assert!(
            dx < dx8 && dw < dw8,
            "{bits} bits: dx {dx} vs {dx8}, dW {dw} vs {dw8}"
        );
    }
}

#[test]
fn attention_products_under_a_wide_model_match_the_float_products_closely() {
    let mut rng =
        test_rng("attention_products_under_a_wide_model_match_the_float_products_closely");
    let mut float_plan = MultiplierPlan::uniform(Multiplier::Fp32);
    let att = CausalSelfAttention::new("att", 8, 2, float_plan.clone(), &mut rng).unwrap();
    let x = random(&mut rng, &[2, 5, 8], -1.0, 1.0);
    let want = att.clone().forward(&x, false).unwrap();
    for bits in [12, 16] {
        let m = exact(bits, true, false, false);
        float_plan.set(Role::AttnQk, m.clone());
        float_plan.set(Role::AttnAv, m);
        let mut wide = att.clone();
        wide.set_plan(float_plan.clone());
        let got = wide.forward(&x, false).unwrap();
        let d = worst(&got.data, &want.data);
        assert!(d > 0.0 && d < 2e-3, "{bits} bits: {d}");
    }
}
