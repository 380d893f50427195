//! Layers route their products through `amsim` with the right multiplier
//! for each role, and per-layer plans reach the right layer.

mod support;

use amsim::conv::{conv2d_forward_reference, conv2d_grad_input_reference, Conv2dShape};
use amsim::gemm::{gemm_reference, MatMut, MatRef};
use amsim::{Multiplier, MultiplierPlan};
use nets::init::Init;
use nets::layers::conv2d::Conv2dSpec;
use nets::layers::{Conv2d, Dense, Layer};
use nets::{NetError, Network, Tensor};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{mitchell_lut, test_rng};

fn random(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()).unwrap()
}

#[test]
fn dense_forward_with_a_lut_is_the_amsim_gemm_plus_bias_bit_exactly() {
    let mut rng = test_rng("dense_forward_with_a_lut_is_the_amsim_gemm_plus_bias_bit_exactly");
    let lut = mitchell_lut(4);
    let mut layer = Dense::new(
        "fc",
        7,
        5,
        MultiplierPlan::uniform(lut.clone()),
        Init::GlorotUniform,
        &mut rng,
    );
    for b in layer.bias.value.iter_mut() {
        *b = rng.gen_range(-1.0..1.0);
    }
    let x = random(&mut rng, &[3, 7]);
    let y = layer.forward(&x, false).unwrap();

    let mut want = vec![0.0f32; 15];
    gemm_reference(
        &lut,
        MatRef::row_major(&x.data, 3, 7).unwrap(),
        MatRef::row_major(&layer.weight.value, 7, 5).unwrap(),
        MatMut::row_major(&mut want, 3, 5).unwrap(),
        false,
    )
    .unwrap();
    for (i, w) in want.iter_mut().enumerate() {
        *w += layer.bias.value[i % 5];
    }
    assert_eq!(
        y.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );

    // And the approximate product really differs from the exact one.
    layer.set_plan(MultiplierPlan::uniform(Multiplier::Fp32));
    let exact = layer.forward(&x, false).unwrap();
    assert_ne!(
        exact.data, y.data,
        "a 4-bit Mitchell LUT must change the output"
    );
}

#[test]
fn dense_uses_each_roles_own_multiplier() {
    let mut rng = test_rng("dense_uses_each_roles_own_multiplier");
    let mut exact = Dense::new(
        "fc",
        6,
        4,
        MultiplierPlan::uniform(Multiplier::Fp32),
        Init::GlorotUniform,
        &mut rng,
    );
    let x = random(&mut rng, &[5, 6]);
    let dy = random(&mut rng, &[5, 4]);
    let y0 = exact.forward(&x, true).unwrap();
    let dx0 = exact.backward(&dy, true).unwrap().unwrap();
    let dw0 = exact.weight.grad.clone();

    // Only the weight gradient approximate: forward and dx equal fp32.
    let mut plan = MultiplierPlan::uniform(Multiplier::Fp32);
    plan.grad_weight = mitchell_lut(4);
    let mut dw_only = exact.clone();
    dw_only.set_plan(plan);
    assert_eq!(dw_only.forward(&x, true).unwrap(), y0);
    assert_eq!(dw_only.backward(&dy, true).unwrap().unwrap(), dx0);
    assert_ne!(dw_only.weight.grad, dw0, "dw must go through the LUT");
    assert_eq!(
        dw_only.bias.grad, exact.bias.grad,
        "bias gradients are plain sums"
    );

    // Only the input gradient approximate.
    let mut plan = MultiplierPlan::uniform(Multiplier::Fp32);
    plan.grad_input = mitchell_lut(4);
    let mut dx_only = exact.clone();
    dx_only.set_plan(plan);
    assert_eq!(dx_only.forward(&x, true).unwrap(), y0);
    assert_ne!(dx_only.backward(&dy, true).unwrap().unwrap(), dx0);
    assert_eq!(dx_only.weight.grad, dw0);

    // Only the forward product approximate.
    let mut plan = MultiplierPlan::uniform(Multiplier::Fp32);
    plan.forward = mitchell_lut(4);
    let mut fwd_only = exact.clone();
    fwd_only.set_plan(plan);
    assert_ne!(fwd_only.forward(&x, true).unwrap(), y0);
    assert_eq!(fwd_only.backward(&dy, true).unwrap().unwrap(), dx0);
    assert_eq!(fwd_only.weight.grad, dw0);
}

#[test]
fn conv2d_routes_each_role_through_its_multiplier_with_design_operand_order() {
    let mut rng =
        test_rng("conv2d_routes_each_role_through_its_multiplier_with_design_operand_order");
    let lut = mitchell_lut(4);
    let spec = Conv2dSpec::square(2, 3, 3).stride(2).padding(1);
    let mut plan = MultiplierPlan::uniform(Multiplier::Fp32);
    plan.grad_input = lut.clone();
    let mut layer = Conv2d::new("conv", spec, plan, Init::HeNormal, &mut rng).unwrap();
    let x = random(&mut rng, &[2, 2, 7, 6]);
    let y = layer.forward(&x, true).unwrap();
    let shape: Conv2dShape = spec.shape(2, 7, 6);
    assert_eq!(y.shape, vec![2, 3, shape.out_h(), shape.out_w()]);

    // Forward is fp32 (biases are zero at init); native fp32 may use an
    // optimised kernel with another summation order, so compare with a
    // tolerance.
    let mut want = vec![0.0; shape.y_len()];
    conv2d_forward_reference(
        &Multiplier::Fp32,
        &shape,
        &x.data,
        &layer.weight.value,
        &mut want,
    )
    .unwrap();
    for (a, b) in y.data.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "forward {a} vs fp32 {b}"
        );
    }

    // The input gradient is the LUT reference, dy first, bit-exactly.
    let dy = random(&mut rng, &y.shape);
    let dx = layer.backward(&dy, true).unwrap().unwrap();
    let mut want_dx = vec![0.0; shape.x_len()];
    conv2d_grad_input_reference(&lut, &shape, &dy.data, &layer.weight.value, &mut want_dx).unwrap();
    assert_eq!(
        dx.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want_dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let mut exact_dx = vec![0.0; shape.x_len()];
    conv2d_grad_input_reference(
        &Multiplier::Fp32,
        &shape,
        &dy.data,
        &layer.weight.value,
        &mut exact_dx,
    )
    .unwrap();
    assert_ne!(dx.data, exact_dx);
}

#[test]
fn per_layer_plans_reach_only_their_layer_and_unknown_names_are_errors() {
    let mut rng = test_rng("per_layer_plans_reach_only_their_layer_and_unknown_names_are_errors");
    let seed: u64 = rng.gen();
    let fp32 = MultiplierPlan::uniform(Multiplier::Fp32);
    let mut net = Network::lenet5(fp32.clone(), seed);
    assert_eq!(net.layer_names(), ["conv1", "conv2", "fc1", "fc2", "fc3"]);
    let x = random(&mut rng, &[2, 1, 28, 28]);
    let y0 = net.forward(&x, false).unwrap();

    net.set_layer_plan("fc3", MultiplierPlan::uniform(mitchell_lut(4)))
        .unwrap();
    assert_eq!(net.layer_plan("fc3").unwrap().forward.label(), "mitchell:4");
    assert_eq!(net.layer_plan("conv1").unwrap().forward.label(), "fp32");
    let y1 = net.forward(&x, false).unwrap();
    assert_ne!(y0, y1);

    let err = net.set_layer_plan("fc9", fp32).unwrap_err();
    assert!(matches!(err, NetError::UnknownLayer { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("'fc9'") && msg.contains("conv1, conv2, fc1, fc2, fc3"),
        "{msg}"
    );
    // A layer without products is not a valid target either.
    assert!(net
        .set_layer_plan("relu1", MultiplierPlan::uniform(Multiplier::Fp32))
        .is_err());
}

#[test]
fn shape_and_configuration_errors_name_the_layer() {
    let mut rng = test_rng("shape_and_configuration_errors_name_the_layer");
    let fp32 = MultiplierPlan::uniform(Multiplier::Fp32);
    let mut fc = Dense::new("fc7", 5, 3, fp32.clone(), Init::HeNormal, &mut rng);
    let msg = fc
        .forward(&random(&mut rng, &[2, 4]), true)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("fc7") && msg.contains("5 input features"),
        "{msg}"
    );

    let mut spec = Conv2dSpec::square(3, 4, 3);
    spec.groups = 2;
    let msg = Conv2d::new("conv9", spec, fp32.clone(), Init::HeNormal, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("conv9") && msg.contains("groups 2"), "{msg}");

    let mut conv = Conv2d::new(
        "conv9",
        Conv2dSpec::square(3, 4, 5),
        fp32.clone(),
        Init::HeNormal,
        &mut rng,
    )
    .unwrap();
    let msg = conv
        .forward(&random(&mut rng, &[1, 3, 4, 4]), false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("conv9") && msg.contains("does not fit"),
        "{msg}"
    );

    let mut net = Network::lenet5(fp32, 1);
    let msg = net
        .forward(&random(&mut rng, &[2, 28, 28]), false)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("lenet5") && msg.contains("[N, 1, 28, 28]"),
        "{msg}"
    );
    // Backward before any training forward is an error, not a panic.
    assert!(conv
        .backward(&random(&mut rng, &[1, 4, 1, 1]), true)
        .is_err());
}
