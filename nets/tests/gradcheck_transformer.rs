//! Finite-difference gradient checks of the Transformer building blocks
//! (LayerNorm, GELU, Embedding, causal self-attention) with the `fp32`
//! multiplier on tiny shapes, in the style of
//! `gradcheck.rs`: the objective is `L = Σ y·r` with a fixed random `r`
//! (so `dL/dy = r`), evaluated in f64 from the layer's f32 outputs, and the
//! backward pass is compared with `(L(θ + ε) - L(θ - ε)) / 2ε`.

mod gradcheck_support;
mod support;

use amsim::{Multiplier, MultiplierPlan};
use gradcheck_support::{assert_close, check_layer, no_setup};
use nets::layers::{CausalSelfAttention, Embedding, Gelu, Layer, LayerNorm};
use nets::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::test_rng;

fn random_tensor(rng: &mut ChaCha8Rng, shape: &[usize], scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(
        shape,
        (0..n)
            .map(|_| scale * rng.gen_range(-1.0f32..1.0))
            .collect(),
    )
    .unwrap()
}

#[test]
fn layernorm_input_and_parameter_gradients_match_finite_differences() {
    let mut rng = test_rng("layernorm_input_and_parameter_gradients_match_finite_differences");
    let mut layer = LayerNorm::new("ln", 5);
    for v in layer.gamma.value.iter_mut() {
        *v = rng.gen_range(0.5..1.5);
    }
    for v in layer.beta.value.iter_mut() {
        *v = rng.gen_range(-0.5..0.5);
    }
    assert!(!layer.gamma.decay && !layer.beta.decay);
    let x = random_tensor(&mut rng, &[2, 3, 5], 2.0);
    check_layer(&mut layer, &x, true, 1e-2, 1e-3, 1e-2, &mut rng, &no_setup);
}

#[test]
fn layernorm_output_rows_have_zero_mean_and_unit_variance() {
    let mut rng = test_rng("layernorm_output_rows_have_zero_mean_and_unit_variance");
    let mut layer = LayerNorm::new("ln", 16);
    let x = random_tensor(&mut rng, &[3, 16], 4.0);
    let y = layer.forward(&x, false).unwrap();
    for row in y.data.chunks(16) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / 16.0;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 16.0;
        assert!(mean.abs() < 1e-5, "row mean {mean}");
        // eps = 1e-5 shrinks the variance a little below 1.
        assert!((var - 1.0).abs() < 1e-3, "row variance {var}");
    }
    let err = layer
        .forward(&Tensor::zeros(&[2, 15]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("last dimension of 16"), "{err}");
}

#[test]
fn gelu_gradients_match_finite_differences_and_the_tanh_formula() {
    let mut rng = test_rng("gelu_gradients_match_finite_differences_and_the_tanh_formula");
    let mut layer = Gelu::new("gelu");
    let x = random_tensor(&mut rng, &[3, 2, 4], 4.0);
    check_layer(&mut layer, &x, true, 1e-2, 1e-3, 1e-2, &mut rng, &no_setup);
    // Values against the formula evaluated in f64.
    let y = layer.forward(&x, false).unwrap();
    for (&xv, &yv) in x.data.iter().zip(&y.data) {
        let x = xv as f64;
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let want = 0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh());
        assert_close(&format!("gelu({x})"), yv, want, 1e-6, 1e-5);
    }
}

#[test]
fn embedding_table_gradient_matches_finite_differences_and_accumulates_repeated_ids() {
    let mut rng = test_rng(
        "embedding_table_gradient_matches_finite_differences_and_accumulates_repeated_ids",
    );
    let (vocab, dim, n, t) = (6, 3, 2, 5);
    let mut layer = Embedding::new("emb", vocab, dim, 0.5, &mut rng);
    // Ids 0 and 1 appear more than once; ids drawn from 0..4 leave 4 and 5
    // unused (their gradient rows must be zero).
    let mut ids: Vec<u32> = vec![0, 1, 0, 1];
    ids.extend((ids.len()..n * t).map(|_| rng.gen_range(0..4u32)));
    let x = Tensor::from_vec(&[n, t], ids.iter().map(|&i| i as f32).collect()).unwrap();
    let y = layer.forward(&x, true).unwrap();
    assert_eq!(y.shape, vec![n, t, dim]);
    for (pos, &id) in ids.iter().enumerate() {
        let id = id as usize;
        assert_eq!(
            &y.data[pos * dim..(pos + 1) * dim],
            &layer.table.value[id * dim..(id + 1) * dim]
        );
    }
    check_layer(&mut layer, &x, false, 0.25, 1e-5, 1e-5, &mut rng, &no_setup);

    // The gradient row of an id is the sum of dy over its positions.
    let dy = random_tensor(&mut rng, &[n, t, dim], 1.0);
    layer.forward(&x, true).unwrap();
    assert!(layer.backward(&dy, false).unwrap().is_none());
    for v in 0..vocab {
        for j in 0..dim {
            let want: f32 = ids
                .iter()
                .enumerate()
                .filter(|(_, &id)| id as usize == v)
                .map(|(pos, _)| dy.data[pos * dim + j])
                .sum();
            assert_eq!(layer.table.grad[v * dim + j], want, "dtable[{v}, {j}]");
        }
    }
    // The same ids through `forward_ids` give the same output.
    let y2 = layer.forward_ids(&ids, n, t, false).unwrap();
    assert_eq!(y2, y);
}

#[test]
fn embedding_rejects_out_of_range_and_non_integer_ids_with_an_error() {
    let mut rng = test_rng("embedding_rejects_out_of_range_and_non_integer_ids_with_an_error");
    let mut layer = Embedding::new("emb", 4, 2, 0.02, &mut rng);
    let err = layer
        .forward_ids(&[0, 4], 1, 2, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("token id 4") && err.contains("vocabulary of 4"),
        "{err}"
    );
    assert!(layer.forward_ids(&[0, 1, 2], 1, 2, false).is_err());
    for bad in [4.0f32, -1.0, 1.5, f32::NAN, f32::INFINITY] {
        let x = Tensor::from_vec(&[1, 2], vec![0.0, bad]).unwrap();
        let err = layer.forward(&x, false).unwrap_err().to_string();
        assert!(err.contains("input 1"), "{bad}: {err}");
    }
    // Ids have no gradient: asking for one is an error, not a panic.
    let x = Tensor::from_vec(&[1, 2], vec![3.0, 0.0]).unwrap();
    layer.forward(&x, true).unwrap();
    assert!(layer.backward(&Tensor::zeros(&[1, 2, 2]), true).is_err());
}

fn attention(rng: &mut ChaCha8Rng, dim: usize, heads: usize) -> CausalSelfAttention {
    let plan = MultiplierPlan::uniform(Multiplier::Fp32);
    let mut layer = CausalSelfAttention::new("attn", dim, heads, plan, rng).unwrap();
    // Non-zero biases, so their paths are exercised too.
    for p in layer.params_mut() {
        if !p.decay {
            for v in p.value.iter_mut() {
                *v = rng.gen_range(-0.5..0.5);
            }
        }
    }
    layer
}

#[test]
fn attention_input_and_parameter_gradients_match_finite_differences() {
    let mut rng = test_rng("attention_input_and_parameter_gradients_match_finite_differences");
    let mut layer = attention(&mut rng, 4, 2);
    assert_eq!(layer.params().len(), 4);
    let x = random_tensor(&mut rng, &[2, 4, 4], 1.0);
    check_layer(&mut layer, &x, true, 1e-2, 1e-3, 1e-2, &mut rng, &no_setup);
}

#[test]
fn attention_output_at_position_t_does_not_depend_on_later_inputs() {
    let mut rng = test_rng("attention_output_at_position_t_does_not_depend_on_later_inputs");
    let (n, t, c) = (2, 5, 6);
    let mut layer = attention(&mut rng, c, 3);
    let x = random_tensor(&mut rng, &[n, t, c], 1.0);
    let y = layer.forward(&x, false).unwrap();
    for pos in 0..t {
        // Replace every input after `pos` with fresh values.
        let mut xp = x.clone();
        for ni in 0..n {
            for ti in pos + 1..t {
                for ci in 0..c {
                    xp.data[(ni * t + ti) * c + ci] = rng.gen_range(-3.0..3.0);
                }
            }
        }
        let yp = layer.forward(&xp, false).unwrap();
        for ni in 0..n {
            for ti in 0..=pos {
                let at = (ni * t + ti) * c;
                assert_eq!(
                    &yp.data[at..at + c],
                    &y.data[at..at + c],
                    "batch {ni} position {ti} changed when inputs after {pos} did"
                );
            }
        }
        // And the last position does see the change (when there is one).
        if pos + 1 < t {
            let last = (n * t - 1) * c;
            assert_ne!(&yp.data[last..last + c], &y.data[last..last + c]);
        }
    }
    // The first position attends only to itself: its gradient reaches no
    // later input.
    layer.forward(&x, true).unwrap();
    let mut dy = Tensor::zeros(&[n, t, c]);
    for ci in 0..c {
        dy.data[ci] = rng.gen_range(-1.0..1.0);
    }
    let dx = layer.backward(&dy, true).unwrap().unwrap();
    assert!(dx.data[c..t * c].iter().all(|&g| g == 0.0));
}

#[test]
fn attention_rejects_heads_that_do_not_divide_the_channels() {
    let mut rng = test_rng("attention_rejects_heads_that_do_not_divide_the_channels");
    let plan = MultiplierPlan::uniform(Multiplier::Fp32);
    let err = CausalSelfAttention::new("attn", 6, 4, plan, &mut rng)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("6 channels") && err.contains("4 heads"),
        "{err}"
    );
}

#[test]
fn attention_routes_score_products_through_their_plan_roles() {
    let mut rng = test_rng("attention_routes_score_products_through_their_plan_roles");
    let base = attention(&mut rng, 8, 2);
    let x = random_tensor(&mut rng, &[2, 6, 8], 1.0);
    let dy = random_tensor(&mut rng, &[2, 6, 8], 1.0);
    let run = |edit: &dyn Fn(&mut MultiplierPlan)| {
        let mut layer = base.clone();
        let mut plan = MultiplierPlan::uniform(Multiplier::Fp32);
        edit(&mut plan);
        layer.set_plan(plan);
        let y = layer.forward(&x, true).unwrap();
        let dx = layer.backward(&dy, true).unwrap().unwrap();
        (y, dx, layer.params()[0].grad.clone())
    };
    let (y, dx, dw) = run(&|_| {});
    // bf16 truncation of the score products changes the output and every
    // gradient that passes through them.
    for (role, edit) in [
        (
            "attn_qk",
            &(|p: &mut MultiplierPlan| p.attn_qk = Multiplier::Bf16) as &dyn Fn(&mut _),
        ),
        ("attn_av", &|p: &mut MultiplierPlan| {
            p.attn_av = Multiplier::Bf16
        }),
    ] {
        let (y2, dx2, dw2) = run(edit);
        assert_ne!(y2, y, "{role} does not reach the forward pass");
        assert_ne!(dx2, dx, "{role} does not reach the input gradient");
        assert_ne!(dw2, dw, "{role} does not reach the weight gradient");
    }
    // The gradient roles leave the forward pass alone.
    let (y2, dx2, _) = run(&|p| {
        p.grad_input = Multiplier::Bf16;
        p.grad_weight = Multiplier::Bf16;
    });
    assert_eq!(y2, y);
    assert_ne!(dx2, dx);
}
