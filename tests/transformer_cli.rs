//! End-to-end tests of `approxtrain train --net transformer` and
//! `approxtrain sample`: a tiny model learns a small text with fp32,
//! mbm:7 and int8 products, sampling, resume, per-layer plans for the attention
//! products, and bad input. Runs are tiny (1 layer, width 16, context 16,
//! 50 steps) and the text is generated from the printed seed.

mod support;

use std::path::Path;
use std::process::Output;

use rand::SeedableRng;
use support::{approxtrain, json_lines, random_text, stderr, test_seed};

/// A text of random sentences (see [`random_text`]) generated from `seed`.
fn write_text(path: &Path, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    std::fs::write(path, random_text(&mut rng, 12_000)).unwrap();
}

/// Flags of a tiny run: 1 layer, width 16, 2 heads, context 16; flags in
/// `extra` replace these.
fn tiny(dataset: &str, out: &Path, seed: u64, steps: usize, extra: &[&str]) -> Output {
    let (seed, steps) = (seed.to_string(), steps.to_string());
    let base = [
        ("--net", "transformer"),
        ("--dataset", dataset),
        ("--layers", "1"),
        ("--width", "16"),
        ("--heads", "2"),
        ("--context", "16"),
        ("--batch-size", "16"),
        ("--lr", "0.02"),
        ("--warmup-steps", "5"),
        ("--eval-every", "10"),
        ("--eval-windows", "32"),
        ("--steps", &steps),
        ("--seed", &seed),
        ("--out", out.to_str().unwrap()),
    ];
    let mut args = vec!["train"];
    for (flag, value) in base {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    approxtrain(&args)
}

fn metrics(dir: &Path) -> Vec<experiments::MetricsRow> {
    experiments::metrics::read_metrics(&dir.join("metrics.csv")).unwrap()
}

/// 50 steps lower the validation loss clearly below the loss of a uniform
/// guess (ln V nats/char) with fp32, with mbm:7 and with int8:exact8s in
/// every product, the attention scores and the tied head included (int8
/// quantizes them); `metrics.csv` has one row per evaluation
/// with the perplexity exp(test_loss) as its last column.
#[test]
fn tiny_transformer_learns_a_small_text_with_fp32_mbm7_and_int8() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("words.txt");
    write_text(&text, seed);
    let dataset = format!("text:{}", text.display());
    let vocab = {
        let mut c: Vec<char> = std::fs::read_to_string(&text).unwrap().chars().collect();
        c.sort();
        c.dedup();
        c.len()
    };
    let uniform = (vocab as f64).ln();
    for mult in ["fp32", "mbm:7", "int8:exact8s"] {
        let out = tmp.path().join(mult.replace(':', ""));
        assert!(tiny(&dataset, &out, seed, 50, &["--multiplier", mult])
            .status
            .success());
        let rows = metrics(&out);
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows.iter().map(|r| r.step).collect::<Vec<_>>(),
            [10, 20, 30, 40, 50]
        );
        let first = rows[0].test_loss as f64;
        let last = rows[4].test_loss as f64;
        eprintln!("{mult}: ln V = {uniform:.3}, validation loss {first:.3} -> {last:.3}");
        assert!(last < 0.7 * uniform, "{mult}: {last} vs ln V = {uniform}");
        assert!(last < first, "{mult}: {first} -> {last}");
        assert!(rows.iter().all(|r| r.plan == mult && r.macs > 0));
        let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
        let header = csv.lines().next().unwrap();
        assert!(header.ends_with(",test_loss,test_accuracy,seconds,macs,test_perplexity"));
        let last_line = csv.lines().last().unwrap();
        let ppl: f64 = last_line.rsplit(',').next().unwrap().parse().unwrap();
        assert!(
            (ppl - last.exp()).abs() < 1e-3 * ppl,
            "{ppl} vs exp({last})"
        );
    }
}

/// `sample` prints the prompt and N more characters, all from the
/// training text's vocabulary, under the run's plan or another one; the
/// same seed gives the same text.
#[test]
fn sample_generates_n_characters_from_the_vocabulary() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("words.txt");
    write_text(&text, seed);
    let vocab: Vec<char> = std::fs::read_to_string(&text).unwrap().chars().collect();
    let run = tmp.path().join("run");
    assert!(
        tiny(&format!("text:{}", text.display()), &run, seed, 10, &[])
            .status
            .success()
    );
    let n = 40 + (seed % 40) as usize;
    let n_arg = n.to_string();
    let run_arg = run.to_str().unwrap();
    for extra in [&[][..], &["--multiplier", "mbm:7"][..]] {
        let mut args = vec![
            "sample",
            "--checkpoint",
            run_arg,
            "--prompt",
            "the king",
            "--tokens",
            &n_arg,
        ];
        args.extend_from_slice(extra);
        let out = approxtrain(&args);
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout.clone()).unwrap();
        let generated = stdout
            .strip_prefix("the king")
            .unwrap()
            .strip_suffix('\n')
            .unwrap();
        assert_eq!(generated.chars().count(), n, "{generated:?}");
        assert!(
            generated.chars().all(|c| vocab.contains(&c)),
            "{generated:?}"
        );
        assert_eq!(approxtrain(&args).stdout, out.stdout);
    }
    let out = approxtrain(&["sample", "--checkpoint", run_arg, "--prompt", "Zebra"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'Z'") && err.contains("vocabulary"), "{err}");
}

/// A run of 20 steps resumed to 40 writes the same metrics (every column
/// but the wall time) and the same checkpoint as a run of 40 steps in one
/// go. (A constant learning rate: the cosine schedule spans the whole run,
/// so extending a run changes it.)
#[test]
fn resumed_transformer_run_matches_an_uninterrupted_one() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("words.txt");
    write_text(&text, seed);
    let dataset = format!("text:{}", text.display());
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    let flags = ["--multiplier", "mbm:7", "--schedule", "constant"];
    assert!(tiny(&dataset, &whole, seed, 40, &flags).status.success());
    assert!(tiny(&dataset, &parts, seed, 20, &flags).status.success());
    assert_eq!(metrics(&parts).len(), 2);
    let out = approxtrain(&[
        "train",
        "--resume",
        parts.to_str().unwrap(),
        "--steps",
        "40",
    ]);
    assert!(out.status.success());
    let without_seconds = |dir: &Path| {
        metrics(dir)
            .into_iter()
            .map(|mut r| {
                r.seconds = 0.0;
                r
            })
            .collect::<Vec<_>>()
    };
    let rows = without_seconds(&whole);
    assert_eq!(rows.len(), 4);
    assert_eq!(without_seconds(&parts), rows);
    assert_eq!(
        std::fs::read(parts.join("checkpoint.bin")).unwrap(),
        std::fs::read(whole.join("checkpoint.bin")).unwrap()
    );
    // `plot` draws the validation-loss curves of language-model runs (and
    // not the classifiers' per-epoch accuracy figures), and its report
    // gives the last validation's loss, perplexity and accuracy.
    assert!(approxtrain(&["plot", whole.to_str().unwrap()])
        .status
        .success());
    for ext in ["png", "svg"] {
        let f = whole.join(format!("validation_loss.{ext}"));
        assert!(
            std::fs::metadata(&f).unwrap().len() > 1000,
            "{}",
            f.display()
        );
        assert!(!whole.join(format!("test_accuracy.{ext}")).exists());
    }
    let report = std::fs::read_to_string(whole.join("report.md")).unwrap();
    let last = rows.last().unwrap();
    let row = report
        .lines()
        .find(|l| l.starts_with("| `mbm:7` |"))
        .unwrap_or_else(|| panic!("no mbm:7 row in\n{report}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[4], "40", "{row}");
    assert_eq!(cells[5], format!("{:.4}", last.test_loss), "{row}");
    assert_eq!(
        cells[6],
        format!("{:.3}", (last.test_loss as f64).exp()),
        "{row}"
    );
    assert_eq!(
        cells[7],
        format!("{:.2}%", last.test_accuracy as f64 * 100.0),
        "{row}"
    );
    assert!(report.contains("![Validation loss"), "{report}");
}

/// A plan file can keep the attention products exact while every other
/// product is approximate; the run records the per-layer plans, and they
/// change the result.
#[test]
fn plan_file_sets_the_attention_products_of_each_block() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("words.txt");
    write_text(&text, seed);
    let dataset = format!("text:{}", text.display());
    let plan = tmp.path().join("attn-exact.toml");
    std::fs::write(
        &plan,
        "multiplier = \"mbm:7\"\n[layers.\"block0.attn\"]\nattn_qk = \"fp32\"\nattn_av = \"fp32\"\n",
    )
    .unwrap();
    let (planned, uniform) = (tmp.path().join("planned"), tmp.path().join("uniform"));
    assert!(tiny(
        &dataset,
        &planned,
        seed,
        10,
        &["--plan", plan.to_str().unwrap()]
    )
    .status
    .success());
    assert!(
        tiny(&dataset, &uniform, seed, 10, &["--multiplier", "mbm:7"])
            .status
            .success()
    );
    let (p, u) = (metrics(&planned), metrics(&uniform));
    assert!(
        p[0].plan.contains("block0.attn=") && p[0].plan.contains("attn_qk=fp32"),
        "{}",
        p[0].plan
    );
    assert_ne!(p[0].test_loss, u[0].test_loss);
    // A name the model does not have is an error listing the valid ones.
    std::fs::write(&plan, "[layers.\"block3.attn\"]\nattn_qk = \"fp32\"\n").unwrap();
    let out = tiny(
        &dataset,
        &tmp.path().join("bad"),
        seed,
        10,
        &["--plan", plan.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("block3.attn") && err.contains("block0.mlp.fc1"),
        "{err}"
    );
}

/// Bad input ends with a one-line error naming the file or the option,
/// never a panic.
#[test]
fn bad_text_files_and_sizes_are_one_line_errors() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("words.txt");
    write_text(&good, seed);
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let binary = tmp.path().join("latin1.txt");
    std::fs::write(&binary, b"caf\xe9 au lait, encore du caf\xe9\n".repeat(20)).unwrap();
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "to be or not to be, that is the question\n").unwrap();
    let cases: Vec<(String, Vec<&str>, Vec<&str>)> = vec![
        (
            format!("text:{}", empty.display()),
            vec![],
            vec!["empty.txt"],
        ),
        (
            format!("text:{}", binary.display()),
            vec![],
            vec!["latin1.txt", "UTF-8"],
        ),
        // 41 characters: a 4-character validation split.
        (
            format!("text:{}", short.display()),
            vec![],
            vec!["short.txt", "--context 16"],
        ),
        (
            format!("text:{}", good.display()),
            vec!["--heads", "3"],
            vec!["--heads 3", "--width 16"],
        ),
        (
            format!("text:{}", good.display()),
            vec!["--context", "100000"],
            vec!["words.txt", "--context 100000"],
        ),
        (
            format!("text:{}", tmp.path().join("missing.txt").display()),
            vec![],
            vec!["missing.txt"],
        ),
        ("mnist".to_string(), vec![], vec!["text:PATH"]),
    ];
    for (i, (dataset, extra, needles)) in cases.iter().enumerate() {
        let out = tiny(
            dataset,
            &tmp.path().join(format!("run{i}")),
            seed,
            10,
            extra,
        );
        assert_eq!(out.status.code(), Some(1), "{dataset} {extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        for n in needles {
            assert!(err.contains(n), "{dataset} {extra:?}: '{n}' not in {err}");
        }
    }
}

/// `approxtrain bench train --net transformer` on a random text (printed
/// seed), batches of 2 windows, with `extra` flags.
fn bench_transformer(extra: &[&str]) -> Output {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("words.txt");
    write_text(&text, test_seed());
    let dataset = format!("text:{}", text.display());
    let mut args = vec![
        "bench",
        "train",
        "--net",
        "transformer",
        "--dataset",
        &dataset,
        "--batch-size",
        "2",
    ];
    args.extend_from_slice(extra);
    approxtrain(&args)
}

/// `bench train --net transformer` times the default model's optimizer
/// steps for FP32 (first, the baseline) and each multiplier asked for, and
/// reports seconds per step, the ratio to FP32 and the share in AMSim
/// products; without a text dataset it is a one-line error.
#[test]
fn bench_train_times_transformer_steps_per_multiplier() {
    let out = bench_transformer(&["--multiplier", "mbm:7", "--steps", "2", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json_lines(&out);
    let labels: Vec<&str> = rows
        .iter()
        .map(|r| r["multiplier"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["fp32", "mbm:7"]);
    for r in &rows {
        assert_eq!(r["net"], "transformer");
        assert_eq!(
            (r["steps"].as_u64(), r["batch_size"].as_u64()),
            (Some(2), Some(2))
        );
        let seconds = r["seconds"].as_f64().unwrap();
        assert!(seconds > 0.0, "{r}");
        let per_step = r["seconds_per_step"].as_f64().unwrap();
        assert!((per_step * 2.0 - seconds).abs() <= 1e-9 * seconds, "{r}");
        let share = r["product_share"].as_f64().unwrap();
        assert!(share > 0.0 && share <= 1.0, "{r}");
        // The per-operation profile: exclusive seconds that, with `other`,
        // add up to the timed run, products and attention included.
        let profile = r["profile"].as_object().expect("a profile object");
        let total: f64 = profile.values().map(|v| v.as_f64().unwrap()).sum();
        assert!(profile.values().all(|v| v.as_f64().unwrap() >= 0.0), "{r}");
        assert!((total - seconds).abs() <= 0.05 * seconds + 1e-3, "{r}");
        for op in [
            "products",
            "attention",
            "activation",
            "norm",
            "optimizer",
            "other",
        ] {
            assert!(profile.contains_key(op), "{op} missing in {r}");
        }
        assert!(profile["products"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(rows[0]["ratio_vs_fp32"].as_f64(), Some(1.0));
    let ratio = rows[1]["ratio_vs_fp32"].as_f64().unwrap();
    let expected = rows[1]["seconds"].as_f64().unwrap() / rows[0]["seconds"].as_f64().unwrap();
    assert!(
        (ratio - expected).abs() <= 1e-9 * expected,
        "{ratio} vs {expected}"
    );

    let out = approxtrain(&["bench", "train", "--net", "transformer"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--dataset text:PATH"), "{err}");
}

/// `bench train --net transformer` names the model it timed (the default
/// Transformer of the library), not fixed text.
#[test]
fn bench_train_names_the_transformer_it_times() {
    let out = bench_transformer(&["--multiplier", "fp32", "--steps", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let spec = experiments::lm::TransformerSpec::default();
    let want = format!(
        "train transformer ({} layers, width {}, {} heads, context {})",
        spec.layers, spec.width, spec.heads, spec.context
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&want), "{want} not in {stdout}");
}
