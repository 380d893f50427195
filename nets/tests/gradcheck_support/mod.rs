//! Finite-difference gradient checking shared by the gradcheck tests.
//!
//! Each check uses the scalar objective `L = Σ y·r` with a fixed random `r`
//! (so `dL/dy = r`), computes `L` in f64 from the layer's f32 outputs, and
//! compares the layer's backward pass with the central difference
//! `(L(θ + ε) - L(θ - ε)) / 2ε`.
#![allow(dead_code)] // each test file uses its own subset

use nets::layers::Layer;
use nets::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

pub fn objective(y: &Tensor, r: &[f32]) -> f64 {
    y.data
        .iter()
        .zip(r)
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

pub fn assert_close(what: &str, analytic: f32, numeric: f64, atol: f64, rtol: f64) {
    let a = analytic as f64;
    let tol = atol + rtol * a.abs().max(numeric.abs());
    assert!(
        (a - numeric).abs() <= tol,
        "{what}: backward gives {a}, finite difference {numeric} (tolerance {tol})"
    );
}

/// Whether `analytic` is within `atol + rtol·max(|analytic|, |numeric|)`.
pub fn close(analytic: f32, numeric: f64, atol: f64, rtol: f64) -> bool {
    let a = analytic as f64;
    (a - numeric).abs() <= atol + rtol * a.abs().max(numeric.abs())
}

/// For checks that need nothing done before a forward pass.
pub fn no_setup(_: &mut dyn Layer) {}

/// Check `layer`'s parameter gradients at `x`, and its input gradient when
/// `check_input` (an embedding has none). `before_forward` runs before every
/// forward pass (to fix a dropout mask).
#[allow(clippy::too_many_arguments)]
pub fn check_layer(
    layer: &mut dyn Layer,
    x: &Tensor,
    check_input: bool,
    eps: f32,
    atol: f64,
    rtol: f64,
    rng: &mut ChaCha8Rng,
    before_forward: &dyn Fn(&mut dyn Layer),
) {
    before_forward(layer);
    let y = layer.forward(x, true).unwrap();
    let r: Vec<f32> = (0..y.len()).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let dy = Tensor::from_vec(&y.shape, r.clone()).unwrap();
    let dx = layer.backward(&dy, check_input).unwrap();
    let grads: Vec<Vec<f32>> = layer.params().iter().map(|p| p.grad.clone()).collect();
    let eval = |layer: &mut dyn Layer, x: &Tensor| {
        before_forward(layer);
        objective(&layer.forward(x, true).unwrap(), &r)
    };

    if check_input {
        let dx = dx.expect("input gradient");
        assert_eq!(dx.shape, x.shape, "{}: dx shape", layer.name());
        let mut xp = x.clone();
        for i in 0..x.len() {
            let orig = xp.data[i];
            xp.data[i] = orig + eps;
            let up = eval(layer, &xp);
            xp.data[i] = orig - eps;
            let down = eval(layer, &xp);
            xp.data[i] = orig;
            let numeric = (up - down) / (2.0 * eps as f64);
            let what = format!("{} dx[{i}]", layer.name());
            assert_close(&what, dx.data[i], numeric, atol, rtol);
        }
    }
    for (pi, grad) in grads.iter().enumerate() {
        for (i, &analytic) in grad.iter().enumerate() {
            let orig = layer.params()[pi].value[i];
            layer.params_mut()[pi].value[i] = orig + eps;
            let up = eval(layer, x);
            layer.params_mut()[pi].value[i] = orig - eps;
            let down = eval(layer, x);
            layer.params_mut()[pi].value[i] = orig;
            let numeric = (up - down) / (2.0 * eps as f64);
            let name = layer.params()[pi].name.clone();
            assert_close(&format!("{name}[{i}]"), analytic, numeric, atol, rtol);
        }
    }
}
