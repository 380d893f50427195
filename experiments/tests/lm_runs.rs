//! Language-model runs against the options and commands shared with image
//! classifiers: options a Transformer cannot use are refused when the spec
//! is checked, `init` starts from another language-model run's weights,
//! `plot` computes the energy of language-model runs, and a prompt
//! character outside the vocabulary is an error naming the vocabulary file.
//! Runs are tiny (1 block, width 16, context 16) on a text generated from
//! the printed seed.

mod support;

use std::path::{Path, PathBuf};

use amsim::ModelInfo;
use experiments::lm::{Sampler, TRANSFORMER};
use experiments::metrics::read_metrics;
use experiments::plot::plot_dir;
use experiments::run::{train, RunOutcome, Silent, StartMode};
use experiments::spec::ScheduleKind;
use experiments::RunSpec;
use rand::{Rng, SeedableRng};
use support::test_seed;

/// `chars` characters of random sentences of a few short words.
fn write_text(path: &Path, seed: u64, chars: usize) {
    let words = [
        "the", "king", "queen", "and", "of", "to", "my", "lord", "is", "not",
    ];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut text = String::new();
    while text.len() < chars {
        let n = rng.gen_range(3..8);
        let sentence: Vec<&str> = (0..n)
            .map(|_| words[rng.gen_range(0..words.len())])
            .collect();
        text.push_str(&sentence.join(" "));
        text.push_str(".\n");
    }
    std::fs::write(path, text).unwrap();
}

/// A tiny language-model spec on `text`: 1 block of width 16, 2 heads,
/// context 16, batch 8, `steps` steps evaluated every 5 on 8 windows.
fn tiny_spec(text: &Path, plan: &str, seed: u64, steps: usize) -> RunSpec {
    let mut spec = RunSpec::with_defaults(TRANSFORMER, &format!("text:{}", text.display()));
    spec.multiplier = plan.into();
    spec.seed = seed;
    spec.batch_size = 8;
    spec.eval_batch_size = 8;
    spec.steps = Some(steps);
    spec.eval_every = Some(5);
    spec.optimizer.lr = 0.02;
    let t = spec.transformer.as_mut().unwrap();
    (t.layers, t.width, t.heads, t.context) = (1, 16, 2, 16);
    (t.warmup_steps, t.eval_windows) = (2, 8);
    spec
}

fn finished(outcome: RunOutcome) {
    assert!(
        matches!(outcome, RunOutcome::Finished(_)),
        "the run did not finish: {outcome:?}"
    );
}

/// `x * y` with `x` and `y` truncated to `bits` fraction bits, declaring
/// power and delay so that its energy per multiply is 2 mW x 0.5 ns = 1 pJ.
fn truncated(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u32 << bits) as f32;
    let t = |x: f32| 1.0 + ((x - 1.0) * scale).floor() / scale;
    t(a) * t(b)
}

fn declared_model() -> ModelInfo {
    ModelInfo {
        name: "cheap",
        description: "test model with declared figures",
        min_bits: 1,
        max_bits: 23,
        area_um2: 0.0,
        power_mw: 2.0,
        delay_ns: 0.5,
        func: truncated,
    }
}

/// A finished tiny run of `steps` steps on `text` in `dir`.
fn trained(text: &Path, dir: &Path, plan: &str, seed: u64, steps: usize) -> RunSpec {
    let spec = tiny_spec(text, plan, seed, steps);
    finished(train(&spec, dir, StartMode::New, &[declared_model()], &mut Silent).unwrap());
    spec
}

#[test]
fn transformer_specs_refuse_the_image_options_naming_the_flag() {
    let spec = RunSpec::with_defaults(TRANSFORMER, "text:corpus.txt");
    spec.validate().unwrap();
    type Set = fn(&mut RunSpec);
    let cases: [(&str, Set); 4] = [
        ("--train-limit", |s| s.train_limit = Some(100)),
        ("--label-smoothing", |s| s.label_smoothing = 0.1),
        ("--augment", |s| s.augment = true),
        ("--decay-bn-bias", |s| s.optimizer.decay_bn_bias = true),
    ];
    for (flag, set) in cases {
        let mut bad = spec.clone();
        set(&mut bad);
        let e = bad
            .validate()
            .expect_err(&format!("{flag} accepted for a transformer"))
            .to_string();
        assert!(e.contains(flag) && e.contains("transformer"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// A run initialised from another language-model run starts from its
/// weights: with a learning rate too small to move them, its first
/// validation loss is that of the run it starts from, far below the
/// loss of a fresh model.
#[test]
fn transformer_init_starts_from_the_weights_of_another_run() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("words.txt");
    write_text(&text, seed, 8_000);
    let from = tmp.path().join("from");
    trained(&text, &from, "fp32", seed, 40);
    let from_loss = read_metrics(&from.join("metrics.csv"))
        .unwrap()
        .last()
        .unwrap()
        .test_loss;

    let mut spec = tiny_spec(&text, "fp32", seed + 1, 1);
    spec.optimizer.lr = 1e-9;
    spec.schedule.kind = ScheduleKind::Constant;
    spec.eval_every = Some(1);
    let scratch_dir = tmp.path().join("scratch");
    finished(train(&spec, &scratch_dir, StartMode::New, &[], &mut Silent).unwrap());
    let scratch_loss = read_metrics(&scratch_dir.join("metrics.csv")).unwrap()[0].test_loss;

    spec.init = Some(from.clone());
    assert!(spec.run_id().ends_with("-finetune"), "{}", spec.run_id());
    let tuned = tmp.path().join("tuned");
    finished(train(&spec, &tuned, StartMode::New, &[], &mut Silent).unwrap());
    let tuned_loss = read_metrics(&tuned.join("metrics.csv")).unwrap()[0].test_loss;
    assert!(
        from_loss < scratch_loss - 0.3,
        "the run to start from learned nothing: {from_loss} vs {scratch_loss}"
    );
    assert!(
        (tuned_loss - from_loss).abs() < 1e-3,
        "initialised run: validation loss {tuned_loss}, the run it starts from {from_loss}, \
         a fresh model {scratch_loss}"
    );

    // A run on another text (another vocabulary) cannot take these weights.
    let other = tmp.path().join("other.txt");
    std::fs::write(&other, "QWERTY zxcv. ".repeat(400)).unwrap();
    let mut spec = tiny_spec(&other, "fp32", seed, 1);
    spec.init = Some(from.clone());
    let e = train(
        &spec,
        &tmp.path().join("bad"),
        StartMode::New,
        &[],
        &mut Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("vocab.txt") && e.contains("other.txt"), "{e}");
}

#[test]
fn sample_names_a_prompt_character_outside_the_vocabulary_and_its_file() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("words.txt");
    write_text(&text, seed, 4_000);
    let run = tmp.path().join("run");
    trained(&text, &run, "fp32", seed, 5);
    let mut sampler = Sampler::load(&run, None, &[]).unwrap();
    let e = sampler
        .sample("the Zebra", 5, 0.0, seed)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'Z'") && e.contains(&run.join("vocab.txt").display().to_string()),
        "{e}"
    );
    assert!(!e.contains("invalid run spec"), "{e}");
    assert_eq!(
        sampler
            .sample("the king", 5, 0.0, seed)
            .unwrap()
            .chars()
            .count(),
        5
    );
}

/// `plot` on language-model runs whose multiplier declares power figures
/// writes their energy per training window: every product of the window
/// (forward, input and weight gradients, attention scores included) at
/// 1 pJ on `cheap:5`.
#[test]
fn plot_computes_the_energy_of_language_model_runs() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let root: PathBuf = tmp.path().join("runs");
    let text = tmp.path().join("words.txt");
    write_text(&text, seed, 4_000);
    trained(&text, &root.join("fp32"), "fp32", seed, 5);
    trained(&text, &root.join("cheap"), "cheap:5", seed, 5);
    let out = plot_dir(&root, &[declared_model()]).unwrap();
    assert_eq!(out.runs, 2);

    let vocab = std::fs::read_to_string(root.join("cheap/vocab.txt"))
        .unwrap()
        .chars()
        .count() as u64;
    // One block of width 16 over 16 positions: Q/K/V and output
    // projections 4tc², scores Q·Kᵀ and A·V t²c each, MLP 8tc²; the head
    // tcv; the same count in each of the three passes.
    let (t, c) = (16u64, 16u64);
    let per_pass = 4 * t * c * c + 2 * t * t * c + 8 * t * c * c + t * c * vocab;
    let energy = std::fs::read_to_string(root.join("energy.csv")).unwrap();
    let row = energy
        .lines()
        .find(|l| l.contains("cheap:5"))
        .unwrap_or_else(|| panic!("no cheap:5 row in\n{energy}"));
    let fields: Vec<&str> = row.split(',').collect();
    let per_pass = per_pass.to_string();
    assert_eq!(fields[5..8], [&per_pass, &per_pass, &per_pass], "{row}");
    let train_uj: f64 = fields[8].parse().unwrap();
    let expect = 3.0 * per_pass.parse::<f64>().unwrap() * 1e-6;
    assert!((train_uj - expect).abs() < 1e-9 * expect, "{row}");
}
