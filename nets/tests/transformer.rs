//! The character-level Transformer as a whole: gradients of every
//! parameter against finite differences (tied and untied heads, learned
//! and sinusoidal positions), training that lowers the loss, sampling,
//! validation windows and configuration errors.

mod gradcheck_support;
mod support;

use amsim::{Multiplier, MultiplierPlan};
use gradcheck_support::{close, objective};
use nets::lm::{generate, validation_starts, LmTrainer};
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::{Granularity, LrSchedule, Schedule};
use nets::transformer::{Positions, Transformer, TransformerConfig};
use nets::PlannedModel;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{fp32, test_rng};

fn config(positions: Positions, tied_head: bool) -> TransformerConfig {
    TransformerConfig {
        vocab: 7,
        context: 5,
        layers: 2,
        width: 8,
        heads: 2,
        positions,
        tied_head,
    }
}

/// Give LayerNorm and bias parameters random values, so that every path
/// carries a non-trivial gradient, and the embeddings values of order 1
/// (at GPT-2's std of 0.02 a finite-difference step would be a large
/// relative change of the rows that LayerNorm normalises).
fn perturb_params(model: &mut Transformer, rng: &mut ChaCha8Rng) {
    for p in model.params_mut() {
        if p.name.ends_with(".table") {
            for v in p.value.iter_mut() {
                *v = rng.gen_range(-1.0..1.0);
            }
        } else if !p.decay {
            for v in p.value.iter_mut() {
                *v += rng.gen_range(-0.3..0.3);
            }
        }
    }
}

/// With `L = Σ logits·r`, every parameter's gradient matches the central
/// difference of `L` (a sample of entries of each parameter).
#[test]
fn transformer_parameter_gradients_match_finite_differences() {
    let mut rng = test_rng("transformer_parameter_gradients_match_finite_differences");
    for (positions, tied) in [(Positions::Learned, true), (Positions::Sinusoidal, false)] {
        let cfg = config(positions, tied);
        let mut model = Transformer::new(cfg, fp32(), rng.gen()).unwrap();
        perturb_params(&mut model, &mut rng);
        let (n, t) = (2, 4);
        let ids: Vec<u32> = (0..n * t)
            .map(|_| rng.gen_range(0..cfg.vocab as u32))
            .collect();
        let logits = model.forward(&ids, n, t, true).unwrap();
        assert_eq!(logits.shape, vec![n * t, cfg.vocab]);
        let r: Vec<f32> = (0..logits.len())
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();
        let dlogits = nets::Tensor::from_vec(&logits.shape, r.clone()).unwrap();
        model.backward(&dlogits).unwrap();
        let grads: Vec<(String, Vec<f32>)> = model
            .params()
            .iter()
            .map(|p| (p.name.clone(), p.grad.clone()))
            .collect();
        if tied {
            assert!(grads.iter().all(|(name, _)| !name.starts_with("head")));
        } else {
            assert!(grads.iter().any(|(name, _)| name == "head.weight"));
        }
        let eps = 1e-2f32;
        let mut failures = Vec::new();
        for (pi, (name, grad)) in grads.iter().enumerate() {
            for _ in 0..6 {
                let i = rng.gen_range(0..grad.len());
                let mut at = |delta: f32| {
                    let mut params = model.params_mut();
                    let old = params[pi].value[i];
                    params[pi].value[i] = old + delta;
                    let step = params[pi].value[i] as f64 - old as f64;
                    let y = model.forward(&ids, n, t, false).unwrap();
                    model.params_mut()[pi].value[i] = old;
                    (objective(&y, &r), step)
                };
                let ((lp, sp), (lm, sm)) = (at(eps), at(-eps));
                let numeric = (lp - lm) / (sp - sm);
                if !close(grad[i], numeric, 2e-3, 2e-2) {
                    failures.push(format!(
                        "{name}[{i}]: backward {} numeric {numeric}",
                        grad[i]
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{positions:?} tied={tied}: {}",
            failures.join("; ")
        );
    }
}

/// Logits at position t depend on the tokens up to t only.
#[test]
fn transformer_predictions_do_not_see_later_tokens() {
    let mut rng = test_rng("transformer_predictions_do_not_see_later_tokens");
    let cfg = config(Positions::Learned, true);
    let mut model = Transformer::new(cfg, fp32(), rng.gen()).unwrap();
    let t = cfg.context;
    let ids: Vec<u32> = (0..t).map(|_| rng.gen_range(0..cfg.vocab as u32)).collect();
    let y = model.forward(&ids, 1, t, false).unwrap();
    let mut changed = ids.clone();
    changed[t - 1] = (ids[t - 1] + 1) % cfg.vocab as u32;
    let y2 = model.forward(&changed, 1, t, false).unwrap();
    let v = cfg.vocab;
    assert_eq!(y.data[..(t - 1) * v], y2.data[..(t - 1) * v]);
    assert_ne!(y.data[(t - 1) * v..], y2.data[(t - 1) * v..]);
}

/// A text with an obvious structure: a repeated phrase.
fn tiny_text(rng: &mut ChaCha8Rng) -> Vec<u32> {
    let phrase: Vec<u32> = "to be or not to be, that is the question. "
        .bytes()
        .map(|b| b as u32)
        .collect();
    let mut vocab: Vec<u32> = phrase.clone();
    vocab.sort();
    vocab.dedup();
    let shift = rng.gen_range(0..phrase.len());
    (0..2000)
        .map(|i| {
            vocab
                .binary_search(&phrase[(i + shift) % phrase.len()])
                .unwrap() as u32
        })
        .collect()
}

fn trainer(vocab: usize, plan: MultiplierPlan, seed: u64) -> LmTrainer {
    let cfg = TransformerConfig {
        vocab,
        context: 16,
        layers: 1,
        width: 16,
        heads: 2,
        positions: Positions::Learned,
        tied_head: true,
    };
    let model = Transformer::new(cfg, plan, seed).unwrap();
    let opt = Optimizer::new(OptimizerConfig::adamw(0.01)).unwrap();
    let schedule = LrSchedule {
        base_lr: 2e-2,
        schedule: Schedule::Cosine {
            warmup: 5,
            total: 50,
            min_lr: 2e-3,
        },
        granularity: Granularity::Step,
    };
    LmTrainer::new(model, opt, schedule, seed, Some(1.0)).unwrap()
}

/// 50 AdamW steps of a 1-layer, width-16 model on a repetitive text lower
/// the validation loss well below its starting value (ln V for a fresh
/// model), with fp32 and with bf16 products.
#[test]
fn tiny_transformer_validation_loss_decreases_in_50_steps() {
    let mut rng = test_rng("tiny_transformer_validation_loss_decreases_in_50_steps");
    let text = tiny_text(&mut rng);
    let vocab = *text.iter().max().unwrap() as usize + 1;
    let (train, valid) = text.split_at(1800);
    let starts = validation_starts(valid.len(), 16, 16).unwrap();
    for mult in [Multiplier::Fp32, Multiplier::Bf16] {
        let mut tr = trainer(vocab, MultiplierPlan::uniform(mult.clone()), rng.gen());
        let before = tr.evaluate(valid, &starts, 8).unwrap();
        for _ in 0..50 {
            let s = tr.train_step(train, 8).unwrap();
            assert!(s.loss.is_finite() && s.grad_norm.is_finite());
        }
        let after = tr.evaluate(valid, &starts, 8).unwrap();
        eprintln!(
            "{mult:?}: validation loss {} -> {}",
            before.loss, after.loss
        );
        assert!(
            after.loss < 0.7 * before.loss,
            "{mult:?}: validation loss {} -> {}",
            before.loss,
            after.loss
        );
        assert_eq!(tr.step(), 50);
    }
}

/// Training is a function of the seed: the same steps from a saved and
/// restored state give bit-identical parameters.
#[test]
fn restored_lm_trainer_continues_bit_identically() {
    let mut rng = test_rng("restored_lm_trainer_continues_bit_identically");
    let text = tiny_text(&mut rng);
    let vocab = *text.iter().max().unwrap() as usize + 1;
    let seed = rng.gen();
    let mut a = trainer(vocab, fp32(), seed);
    for _ in 0..4 {
        a.train_step(&text, 4).unwrap();
    }
    let ck = a.checkpoint();
    let mut b = trainer(vocab, fp32(), seed);
    b.restore(std::path::Path::new("memory"), ck).unwrap();
    for _ in 0..3 {
        let sa = a.train_step(&text, 4).unwrap();
        let sb = b.train_step(&text, 4).unwrap();
        assert_eq!(sa.loss.to_bits(), sb.loss.to_bits());
    }
    for (pa, pb) in a.model.params().iter().zip(b.model.params()) {
        assert_eq!(pa.value, pb.value, "{}", pa.name);
    }
}

#[test]
fn generate_returns_the_requested_number_of_tokens_from_the_vocabulary() {
    let mut rng = test_rng("generate_returns_the_requested_number_of_tokens_from_the_vocabulary");
    let cfg = config(Positions::Learned, false);
    let mut model = Transformer::new(cfg, fp32(), rng.gen()).unwrap();
    let n = rng.gen_range(1..20);
    // Longer than the context: generation slides its window.
    let out = generate(&mut model, &[1, 2, 3], n + cfg.context, 1.0, &mut rng).unwrap();
    assert_eq!(out.len(), n + cfg.context);
    assert!(out.iter().all(|&id| (id as usize) < cfg.vocab));
    // Temperature 0 is greedy, hence repeatable.
    let g1 = generate(&mut model, &[0], 8, 0.0, &mut rng).unwrap();
    let g2 = generate(&mut model, &[0], 8, 0.0, &mut rng).unwrap();
    assert_eq!(g1, g2);
    assert!(generate(&mut model, &[], 3, 1.0, &mut rng).is_err());
}

#[test]
fn validation_windows_are_spread_over_the_text_and_short_texts_are_errors() {
    let mut rng = test_rng("validation_windows_are_spread_over_the_text");
    let len = rng.gen_range(50..500);
    let t = rng.gen_range(1..40);
    let count = rng.gen_range(1..20);
    let starts = validation_starts(len, t, count).unwrap();
    assert_eq!(starts.len(), count.min(len - t));
    assert_eq!(starts[0], 0);
    assert!(starts.windows(2).all(|w| w[0] < w[1]));
    assert!(starts.iter().all(|&s| s + t < len));
    if count > 1 && count <= len - t {
        assert_eq!(*starts.last().unwrap(), len - t - 1);
    }
    let err = validation_starts(10, 10, 4).unwrap_err().to_string();
    assert!(
        err.contains("10 characters") && err.contains("--context"),
        "{err}"
    );
}

#[test]
fn heads_that_do_not_divide_the_width_are_a_configuration_error() {
    let mut cfg = config(Positions::Learned, true);
    cfg.heads = 3;
    let err = Transformer::new(cfg, fp32(), 1).unwrap_err().to_string();
    assert!(
        err.contains("--heads 3") && err.contains("--width 8"),
        "{err}"
    );
    cfg.heads = 2;
    cfg.width = 6;
    cfg.positions = Positions::Sinusoidal;
    Transformer::new(cfg, fp32(), 1).unwrap();
    cfg.width = 7;
    cfg.heads = 7;
    assert!(Transformer::new(cfg, fp32(), 1).is_err());
}

#[test]
fn plan_names_reach_their_products_and_unknown_names_list_the_valid_ones() {
    let cfg = config(Positions::Learned, true);
    let mut model = Transformer::new(cfg, fp32(), 1).unwrap();
    assert_eq!(
        model.plan_names(),
        [
            "block0",
            "block0.attn",
            "block0.mlp.fc1",
            "block0.mlp.fc2",
            "block1",
            "block1.attn",
            "block1.mlp.fc1",
            "block1.mlp.fc2",
            "head"
        ]
    );
    let bf16 = MultiplierPlan::uniform(Multiplier::Bf16);
    let ids = [1u32, 2, 3, 4];
    let y = model.forward(&ids, 1, 4, false).unwrap();
    for name in ["block1.attn", "block0.mlp.fc2", "head", "block0"] {
        let mut m = model.clone();
        m.set_plan_by_name(name, bf16.clone()).unwrap();
        assert!(matches!(
            m.plan_by_name(name).unwrap().forward,
            Multiplier::Bf16
        ));
        assert_ne!(m.forward(&ids, 1, 4, false).unwrap(), y, "{name}");
    }
    let err = model
        .set_plan_by_name("block2.attn", bf16)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("block2.attn") && err.contains("block1.mlp.fc2"),
        "{err}"
    );
}

/// The per-token loss with `u32` targets is the classifier loss for
/// targets below 256, and takes larger vocabularies too.
#[test]
fn token_cross_entropy_matches_the_classifier_loss_and_takes_large_vocabularies() {
    use nets::layers::{softmax_cross_entropy, softmax_cross_entropy_tokens};
    let mut rng = test_rng("token_cross_entropy_matches_the_classifier_loss");
    let (n, k) = (rng.gen_range(1..8), rng.gen_range(2..40));
    let logits: Vec<f32> = (0..n * k).map(|_| rng.gen_range(-3.0..3.0)).collect();
    let z = nets::Tensor::from_vec(&[n, k], logits).unwrap();
    let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..k) as u8).collect();
    let ids: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
    assert_eq!(
        softmax_cross_entropy_tokens(&z, &ids).unwrap(),
        softmax_cross_entropy(&z, &labels).unwrap()
    );
    let big = nets::Tensor::zeros(&[1, 300]);
    let out = softmax_cross_entropy_tokens(&big, &[299]).unwrap();
    assert!((out.loss as f64 - 300f64.ln()).abs() < 1e-5);
    assert!(softmax_cross_entropy_tokens(&big, &[300]).is_err());
}
