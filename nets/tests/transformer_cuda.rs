//! The character-level Transformer on the CUDA engine against the CPU
//! engine.
//!
//! - A few AdamW training steps of a small model (2 layers, width 32,
//!   2 heads, context 16, batch 4, tied head) leave bit-identical losses,
//!   parameters and validation loss on the GPU and on the CPU for table and
//!   bf16 plans: mbm:7 everywhere, and a mixed plan (bf16 `Q·Kᵀ`, mbm:7
//!   `A·V`, mitchell:5 forward and weight gradient, mbm:7 input gradient).
//! - With fp32 everywhere (cuBLAS on the GPU, the CPU's SGEMM) the two agree
//!   within a rounding tolerance. These steps use SGD, so a parameter's
//!   difference is the learning rate times the gradients' differences
//!   (AdamW's normalised steps would hide a wrong gradient). A mixed plan
//!   with an fp32 role and table roles has no such bound: a last-bit fp32
//!   difference can move a later operand across a table index.
//! - Every product of attention and of the tied head runs on the engine: a
//!   CPU-only `direct` multiplier in one of those roles makes the GPU step
//!   fail with the engine's message, and an attention backward pass brings
//!   back exactly its four score-gradient products and its projections'
//!   gradients.
//!
//! Without a usable GPU each test prints `SKIPPED <test>: no usable GPU
//! (<reason>)` and passes, unless `APPROXTRAIN_REQUIRE_GPU=1` (set by
//! scripts/gpu-check.sh) makes that a failure. Inputs are random with a
//! fresh seed, printed; set `APPROXTRAIN_TEST_SEED` to replay.

mod support;

use std::sync::{Arc, Mutex, MutexGuard};

use amsim::cuda::CudaEngine;
use amsim::{Lut, Multiplier, MultiplierPlan};
use nets::layers::{CausalSelfAttention, Layer};
use nets::lm::{validation_starts, LmTrainer};
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::{Granularity, LrSchedule, Schedule};
use nets::transformer::{Positions, Transformer, TransformerConfig};
use nets::PlannedModel;
use nets::Tensor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::test_rng;

fn required(var: &str) -> bool {
    std::env::var(var).map(|v| v == "1").unwrap_or(false)
}

/// The GPU engine, or `None` with the reason printed (a failure when
/// `APPROXTRAIN_REQUIRE_GPU=1`).
fn engine(test: &str) -> Option<Arc<CudaEngine>> {
    match CudaEngine::global() {
        Ok(e) => {
            eprintln!("{test}: running on {} ({})", e.device_name(), e.arch());
            Some(e)
        }
        Err(e) if required("APPROXTRAIN_REQUIRE_GPU") => {
            panic!("{test}: APPROXTRAIN_REQUIRE_GPU=1 but the GPU engine is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no usable GPU ({e})");
            None
        }
    }
}

/// The engine choice is process-wide ([`nets::device::use_cuda`]) and tests
/// run in parallel: each test holds this lock, so that a CPU reference run
/// never runs on the GPU because another test switched it on.
static DEVICE: Mutex<()> = Mutex::new(());

fn device_lock() -> MutexGuard<'static, ()> {
    DEVICE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs products on `engine` until dropped, then on the CPU again (also
/// when an assertion fails).
struct OnDevice;

impl OnDevice {
    fn new(engine: Option<Arc<CudaEngine>>) -> OnDevice {
        nets::device::use_cuda(engine);
        OnDevice
    }
}

impl Drop for OnDevice {
    fn drop(&mut self) {
        nets::device::use_cuda(None);
    }
}

/// Keep the top `bits` fraction bits of a positive normal `q`.
fn truncate(q: f32, bits: u32) -> f32 {
    f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
}

/// Mitchell's logarithmic multiplier (Mitchell 1962), truncated to `bits`.
fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let s = (a - 1.0) + (b - 1.0);
    truncate(if s < 1.0 { 1.0 + s } else { 2.0 * s }, bits)
}

/// The minimally biased multiplier (Saadat, Bokhari and Parameswaran, IEEE
/// TCAD 2018) as DESIGN.md and multipliers/mbm.c state it: Mitchell on the
/// operands' top `bits` fraction bits with the lowest one set, plus a
/// correction truncated to `bits` bits (2^-4 + 2^-6 without a carry,
/// 2^-5 + 2^-7 with one, dropped when it would carry again).
fn mbm(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u32 << bits) as f32;
    let top = |x: f32| ((x - 1.0) * scale).floor() as u32 | 1;
    let s = (top(a) + top(b)) as f32 / scale;
    let c = |v: f32| (v * scale).floor() / scale;
    let q = if s < 1.0 {
        1.0 + s + c(1.0 / 16.0 + 1.0 / 64.0)
    } else if s - 1.0 + c(1.0 / 32.0 + 1.0 / 128.0) >= 1.0 {
        2.0 * s
    } else {
        2.0 * (s + c(1.0 / 32.0 + 1.0 / 128.0))
    };
    truncate(q, bits)
}

fn table(name: &str, model: amsim::ModelFn, bits: u32) -> Multiplier {
    Multiplier::Lut(Arc::new(Lut::build(name, model, bits).unwrap()))
}

fn mbm7() -> Multiplier {
    table("mbm", mbm, 7)
}

/// Mixed: bf16 `Q·Kᵀ`, mbm:7 `A·V` and input gradient, mitchell:5 forward
/// and weight gradient.
fn mixed_plan() -> MultiplierPlan {
    let mitchell5 = table("mitchell", mitchell, 5);
    MultiplierPlan {
        forward: mitchell5.clone(),
        grad_input: mbm7(),
        grad_weight: mitchell5,
        attn_qk: Multiplier::Bf16,
        attn_av: mbm7(),
    }
}

/// A CPU-only multiplier: the engine rejects it by name.
fn direct() -> Multiplier {
    Multiplier::Direct {
        name: "mitchell".into(),
        func: mitchell,
        bits: 7,
    }
}

const VOCAB: usize = 23;
const BATCH: usize = 4;

fn config() -> TransformerConfig {
    TransformerConfig {
        vocab: VOCAB,
        context: 16,
        layers: 2,
        width: 32,
        heads: 2,
        positions: Positions::Learned,
        tied_head: true,
    }
}

fn trainer(plan: MultiplierPlan, seed: u64, opt: OptimizerConfig) -> LmTrainer {
    let model = Transformer::new(config(), plan, seed).unwrap();
    let schedule = LrSchedule {
        base_lr: 1e-2,
        schedule: Schedule::Cosine {
            warmup: 2,
            total: 10,
            min_lr: 1e-3,
        },
        granularity: Granularity::Step,
    };
    LmTrainer::new(
        model,
        Optimizer::new(opt).unwrap(),
        schedule,
        seed,
        Some(1.0),
    )
    .unwrap()
}

/// What a run leaves: every step's loss, the parameters (initial and
/// final, by name) and the validation loss.
struct Run {
    losses: Vec<f32>,
    initial: Vec<Vec<f32>>,
    params: Vec<(String, Vec<f32>)>,
    valid_loss: f32,
}

/// `steps` training steps on `text` and one evaluation, with products on
/// `engine` (`None`: the CPU).
fn run(
    plan: &MultiplierPlan,
    opt: OptimizerConfig,
    seed: u64,
    text: &[u32],
    steps: usize,
    engine: Option<Arc<CudaEngine>>,
) -> Run {
    let _on = OnDevice::new(engine);
    let mut tr = trainer(plan.clone(), seed, opt);
    let initial = tr.model.params().iter().map(|p| p.value.clone()).collect();
    let losses = (0..steps)
        .map(|_| tr.train_step(text, BATCH).unwrap().loss)
        .collect();
    let starts = validation_starts(text.len(), config().context, 8).unwrap();
    let valid_loss = tr.evaluate(text, &starts, BATCH).unwrap().loss;
    let params = tr
        .model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    Run {
        losses,
        initial,
        params,
        valid_loss,
    }
}

fn random_text(rng: &mut ChaCha8Rng) -> Vec<u32> {
    (0..2000).map(|_| rng.gen_range(0..VOCAB as u32)).collect()
}

/// For table and bf16 plans the GPU computes every product of the model
/// to the bit, so training on it is the same run as on the CPU.
#[test]
fn transformer_training_on_the_gpu_is_bit_identical_for_table_and_bf16_plans() {
    let test = "transformer_training_on_the_gpu_is_bit_identical_for_table_and_bf16_plans";
    let _lock = device_lock();
    let mut rng = test_rng(test);
    let Some(eng) = engine(test) else { return };
    let text = random_text(&mut rng);
    for (label, plan) in [
        ("mbm:7", MultiplierPlan::uniform(mbm7())),
        ("mixed", mixed_plan()),
    ] {
        let seed = rng.gen();
        let steps = 4;
        let cpu = run(
            &plan,
            OptimizerConfig::adamw(0.01),
            seed,
            &text,
            steps,
            None,
        );
        eng.reset_transfer_stats();
        let gpu = run(
            &plan,
            OptimizerConfig::adamw(0.01),
            seed,
            &text,
            steps,
            Some(eng.clone()),
        );
        assert!(
            eng.transfer_stats().h2d_bytes > 0,
            "{label}: the GPU run moved no data"
        );
        eprintln!("{label}: losses {:?}", cpu.losses);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&cpu.losses),
            bits(&gpu.losses),
            "{label}: step losses differ: CPU {:?}, GPU {:?}",
            cpu.losses,
            gpu.losses
        );
        assert_eq!(
            cpu.valid_loss.to_bits(),
            gpu.valid_loss.to_bits(),
            "{label}: validation loss CPU {} GPU {}",
            cpu.valid_loss,
            gpu.valid_loss
        );
        for ((name, c), (_, g)) in cpu.params.iter().zip(&gpu.params) {
            if let Some(i) = (0..c.len()).find(|&i| c[i].to_bits() != g[i].to_bits()) {
                panic!(
                    "{label}: {name}[{i}] is {} on the CPU, {} on the GPU",
                    c[i], g[i]
                );
            }
        }
        // Training changed the parameters, so the comparison covers updates.
        assert!(cpu
            .params
            .iter()
            .zip(&cpu.initial)
            .any(|((_, p), i)| p != i));
    }
}

/// fp32 runs through cuBLAS on the GPU and the CPU's SGEMM: sums in another
/// order, so the runs agree to rounding. Bounds: each step's loss and the
/// validation loss agree to 1e-5 relative; each parameter differs by at
/// most 1e-3 of the largest change training made to its tensor, plus the
/// rounding of the stored value (one ulp per step, twice over). Rounding
/// differences are a few ulps, amplified a little by softmax and
/// LayerNorm; a wrong product gives differences of the order of the change.
#[test]
fn transformer_training_on_the_gpu_matches_the_cpu_within_rounding_for_fp32() {
    let test = "transformer_training_on_the_gpu_matches_the_cpu_within_rounding_for_fp32";
    let _lock = device_lock();
    let mut rng = test_rng(test);
    let Some(eng) = engine(test) else { return };
    let text = random_text(&mut rng);
    let seed = rng.gen();
    let plan = MultiplierPlan::uniform(Multiplier::Fp32);
    let opt = OptimizerConfig::sgd_momentum(0.9);
    let steps = 4;
    let cpu = run(&plan, opt, seed, &text, steps, None);
    let gpu = run(&plan, opt, seed, &text, steps, Some(eng));
    for (s, (c, g)) in cpu.losses.iter().zip(&gpu.losses).enumerate() {
        assert!(
            (c - g).abs() <= 1e-5 * c.abs(),
            "step {s}: loss {c} on the CPU, {g} on the GPU"
        );
    }
    assert!(
        (cpu.valid_loss - gpu.valid_loss).abs() <= 1e-5 * cpu.valid_loss.abs(),
        "validation loss {} on the CPU, {} on the GPU",
        cpu.valid_loss,
        gpu.valid_loss
    );
    for (((name, c), (_, g)), init) in cpu.params.iter().zip(&gpu.params).zip(&cpu.initial) {
        let moved = c
            .iter()
            .zip(init)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(moved > 0.0, "{name}: training did not change it");
        for i in 0..c.len() {
            let ulps = 2.0 * steps as f32 * f32::EPSILON * c[i].abs().max(init[i].abs());
            let tol = 1e-3 * moved + ulps;
            assert!(
                (c[i] - g[i]).abs() <= tol,
                "{name}[{i}]: {} on the CPU, {} on the GPU (tolerance {tol}; training moved the tensor by up to {moved})",
                c[i],
                g[i]
            );
        }
    }
}

/// The six score products and the tied head's three run on the engine:
/// with a CPU-only `direct` multiplier on `attn_qk`, `attn_av` or one of
/// the head's roles, the CPU step works and the GPU step fails with the
/// engine's message naming the multiplier.
#[test]
fn attention_and_head_products_run_on_the_engine() {
    let test = "attention_and_head_products_run_on_the_engine";
    let _lock = device_lock();
    let mut rng = test_rng(test);
    let Some(eng) = engine(test) else { return };
    let text = random_text(&mut rng);
    let base = MultiplierPlan::uniform(mbm7());
    let cases: Vec<(&str, &str, MultiplierPlan)> = vec![
        (
            "block1.attn",
            "attn_qk",
            MultiplierPlan {
                attn_qk: direct(),
                ..base.clone()
            },
        ),
        (
            "block0.attn",
            "attn_av",
            MultiplierPlan {
                attn_av: direct(),
                ..base.clone()
            },
        ),
        (
            "head",
            "forward",
            MultiplierPlan {
                forward: direct(),
                ..base.clone()
            },
        ),
        (
            "head",
            "grad_weight",
            MultiplierPlan {
                grad_weight: direct(),
                ..base.clone()
            },
        ),
        (
            "head",
            "grad_input",
            MultiplierPlan {
                grad_input: direct(),
                ..base.clone()
            },
        ),
    ];
    let seed = rng.gen();
    for (layer, role, plan) in cases {
        for device in [None, Some(eng.clone())] {
            let _on = OnDevice::new(device.clone());
            let mut tr = trainer(base.clone(), seed, OptimizerConfig::adamw(0.01));
            tr.model.set_plan_by_name(layer, plan.clone()).unwrap();
            let got = tr.train_step(&text, BATCH);
            match (device, got) {
                (None, Ok(s)) => assert!(s.loss.is_finite()),
                (None, Err(e)) => panic!("{layer} {role} direct on the CPU: {e}"),
                (Some(_), Ok(_)) => {
                    panic!(
                        "{layer} {role}: a direct multiplier ran, so the product stayed on the CPU"
                    )
                }
                (Some(_), Err(e)) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("direct:mitchell") && msg.contains("CPU only"),
                        "{layer} {role}: unexpected error: {msg}"
                    );
                    assert!(!msg.contains('\n'), "{layer} {role}: not one line: {msg}");
                }
            }
        }
    }
}

/// An attention backward pass on the GPU brings back exactly its four
/// batched score-gradient products (`dA`, `dV`, `dQ`, `dKᵀ`) and the
/// projections' weight and input gradients, no more and no less; and its
/// input gradient is bit-identical to the CPU's (mbm:7).
#[test]
fn attention_backward_brings_back_exactly_its_products() {
    let test = "attention_backward_brings_back_exactly_its_products";
    let _lock = device_lock();
    let mut rng = test_rng(test);
    let Some(eng) = engine(test) else { return };
    let (n, t, c, h) = (
        rng.gen_range(1..4),
        rng.gen_range(1..20),
        8 * rng.gen_range(1..5),
        2,
    );
    let d = c / h;
    let b = n * h;
    let seed: u64 = rng.gen();
    let x: Vec<f32> = (0..n * t * c).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let dy: Vec<f32> = (0..n * t * c).map(|_| rng.gen_range(-1.0..1.0)).collect();
    eprintln!("N {n}, T {t}, C {c}, H {h}");
    let mut grads = Vec::new();
    for device in [None, Some(eng.clone())] {
        let _on = OnDevice::new(device.clone());
        let mut layer = CausalSelfAttention::new(
            "attn",
            c,
            h,
            MultiplierPlan::uniform(mbm7()),
            &mut ChaCha8Rng::seed_from_u64(seed),
        )
        .unwrap();
        let xt = Tensor::from_vec(&[n, t, c], x.clone()).unwrap();
        layer.forward(&xt, true).unwrap();
        eng.reset_transfer_stats();
        let dyt = Tensor::from_vec(&[n, t, c], dy.clone()).unwrap();
        let dx = layer.backward(&dyt, true).unwrap().unwrap();
        if device.is_some() {
            let floats = eng.transfer_stats().d2h_bytes / 4;
            let scores = b * t * t + 3 * b * t * d;
            let projections = (c * c + n * t * c) + (3 * c * c + n * t * c);
            assert_eq!(
                floats,
                (scores + projections) as u64,
                "floats brought back by the backward pass"
            );
        }
        grads.push((
            dx.data,
            layer
                .params()
                .iter()
                .map(|p| p.grad.clone())
                .collect::<Vec<_>>(),
        ));
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&grads[0].0),
        bits(&grads[1].0),
        "input gradients differ"
    );
    for (gc, gg) in grads[0].1.iter().zip(&grads[1].1) {
        assert_eq!(bits(gc), bits(gg), "parameter gradients differ");
    }
}
