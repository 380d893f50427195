//! End-to-end tests of `approxtrain eval`, `sensitivity` and `stats` on
//! `--net transformer` runs: a tiny model (1 block, width 32, 2 heads,
//! context 32, 20 steps, 8 validation windows) is trained in each test on a
//! text generated from the printed seed.

mod support;

use std::path::Path;

use rand::{Rng, SeedableRng};
use support::{approxtrain, failure_stderr, random_text, s, stderr, test_seed};

/// Train the tiny model on `text` into `out`; `extra` flags are appended.
fn train_tiny(text: &Path, out: &Path, seed: u64, extra: &[&str]) {
    let dataset = format!("text:{}", text.display());
    let seed = seed.to_string();
    let mut args = vec![
        "train",
        "--net",
        "transformer",
        "--dataset",
        &dataset,
        "--layers",
        "1",
        "--width",
        "32",
        "--heads",
        "2",
        "--context",
        "32",
        "--batch-size",
        "16",
        "--lr",
        "0.02",
        "--warmup-steps",
        "5",
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--eval-windows",
        "8",
        "--seed",
        &seed,
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    assert!(approxtrain(&args).status.success());
}

/// A trained tiny model on a fresh random text: (temp dir, text, run).
fn trained(seed: u64) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("words.txt");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    std::fs::write(&text, random_text(&mut rng, 12_000)).unwrap();
    let run = tmp.path().join("lm");
    train_tiny(&text, &run, seed, &[]);
    (tmp, text, run)
}

fn last_test_loss(run: &Path) -> f32 {
    experiments::metrics::read_metrics(&run.join("metrics.csv"))
        .unwrap()
        .last()
        .unwrap()
        .test_loss
}

/// The rows of an `eval` CSV of a transformer run, as header -> value maps.
fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect()
        })
        .collect()
}

fn eval_csv(
    run: &Path,
    csv: &Path,
    extra: &[&str],
) -> Vec<std::collections::HashMap<String, String>> {
    let mut args = vec!["eval", "--checkpoint", s(run), "--csv", s(csv), "--force"];
    args.extend_from_slice(extra);
    let o = approxtrain(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    csv_rows(csv)
}

fn loss(row: &std::collections::HashMap<String, String>) -> f32 {
    row["test_loss"].parse().unwrap()
}

/// The key property: `eval` scores the same fixed validation windows with
/// the same weights and plan as training's last evaluation, so the run's
/// own plan reproduces the last `test_loss` of `metrics.csv` to the bit,
/// for a run trained in fp32 and for one trained with a plan file (mbm:7
/// with exact attention products). Several multipliers give one row each,
/// with perplexity exp(loss) and the change against the first row.
#[test]
fn lm_eval_reproduces_the_runs_final_validation_loss_bit_exactly() {
    let seed = test_seed();
    let (tmp, text, run) = trained(seed);
    let csv = tmp.path().join("eval.csv");
    let rows = eval_csv(&run, &csv, &[]);
    assert_eq!(rows.len(), 1);
    assert_eq!(loss(&rows[0]), last_test_loss(&run));
    assert_eq!(rows[0]["windows"], "8");
    assert_eq!(rows[0]["characters"], (8 * 32).to_string());

    let rows = eval_csv(&run, &csv, &["--multiplier", "fp32,mbm:7"]);
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str()).collect();
    assert_eq!(labels, ["fp32", "mbm:7"]);
    assert_eq!(loss(&rows[0]), last_test_loss(&run));
    assert_ne!(loss(&rows[1]), loss(&rows[0]), "mbm:7 changes the products");
    for r in &rows {
        let ppl: f32 = r["test_perplexity"].parse().unwrap();
        assert_eq!(ppl, (loss(r) as f64).exp() as f32);
        let acc: f32 = r["test_accuracy"].parse().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{acc}");
    }
    let change: f64 = rows[1]["loss_vs_first"].parse().unwrap();
    assert!((change - (loss(&rows[1]) as f64 - loss(&rows[0]) as f64)).abs() < 1e-6);

    let plan = tmp.path().join("attn-exact.toml");
    std::fs::write(
        &plan,
        "multiplier = \"mbm:7\"\nattn_qk = \"fp32\"\nattn_av = \"fp32\"\n",
    )
    .unwrap();
    let planned = tmp.path().join("lm-plan");
    train_tiny(&text, &planned, seed, &["--plan", s(&plan)]);
    let rows = eval_csv(&planned, &csv, &[]);
    assert_eq!(loss(&rows[0]), last_test_loss(&planned));
    // --eval-windows overrides the run's count.
    let rows = eval_csv(&planned, &csv, &["--eval-windows", "3"]);
    assert_eq!(rows[0]["windows"], "3");
}

/// Plan files address the transformer's plan names: a file that puts every
/// block and the head on mbm:7 (through `block0` and `head` tables, or
/// through the default) evaluates exactly like `--multiplier mbm:7`, and
/// one that keeps the head exact does not.
#[test]
fn lm_eval_plan_files_address_blocks_and_head() {
    let seed = test_seed();
    let (tmp, _text, run) = trained(seed);
    let csv = tmp.path().join("eval.csv");
    let uniform = loss(&eval_csv(&run, &csv, &["--multiplier", "mbm:7"])[0]);
    let write = |name: &str, body: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let by_default = write("default.toml", "multiplier = \"mbm:7\"\n");
    let by_name = write(
        "names.toml",
        "[layers.block0]\nmultiplier = \"mbm:7\"\n[layers.head]\nmultiplier = \"mbm:7\"\n",
    );
    let head_exact = write(
        "head-exact.toml",
        "multiplier = \"mbm:7\"\n[layers.head]\nfwd = \"fp32\"\n",
    );
    let rows = eval_csv(
        &run,
        &csv,
        &[
            "--plan",
            s(&by_default),
            "--plan",
            s(&by_name),
            "--plan",
            s(&head_exact),
        ],
    );
    let labels: Vec<&str> = rows.iter().map(|r| r["label"].as_str()).collect();
    assert_eq!(labels, ["default.toml", "names.toml", "head-exact.toml"]);
    assert_eq!(loss(&rows[0]), uniform);
    assert_eq!(loss(&rows[1]), uniform);
    assert_ne!(loss(&rows[2]), uniform);

    let bad = write("bad.toml", "[layers.block7]\nmultiplier = \"mbm:7\"\n");
    let o = approxtrain(&["eval", "--checkpoint", s(&run), "--plan", s(&bad)]);
    let e = failure_stderr(&o);
    assert!(
        e.contains("'block7'") && e.contains("block0.mlp.fc1"),
        "{e}"
    );
}

/// `--dataset text:OTHER` scores another text with the run's vocabulary
/// (windows spread over the whole file); a character outside the
/// vocabulary, a dataset that is not text, image-only flags and `stats`
/// are one-line errors that say what to do.
#[test]
fn lm_eval_other_texts_and_bad_input() {
    let seed = test_seed();
    let (tmp, _text, run) = trained(seed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 1);
    let other = tmp.path().join("other.txt");
    std::fs::write(&other, random_text(&mut rng, 2_000)).unwrap();
    let dataset = format!("text:{}", other.display());
    let csv = tmp.path().join("eval.csv");
    let rows = eval_csv(&run, &csv, &["--dataset", &dataset]);
    assert_eq!(rows[0]["dataset"], dataset);
    assert_eq!(rows[0]["windows"], "8");
    let l = loss(&rows[0]);
    assert!(l.is_finite() && l > 0.0, "{l}");
    assert_ne!(l, last_test_loss(&run));

    let bad = tmp.path().join("bad.txt");
    let mut text = random_text(&mut rng, 2_000);
    text.insert(rng.gen_range(0..text.len() / 2), 'Q');
    std::fs::write(&bad, text).unwrap();
    let cases: [(Vec<String>, &[&str]); 5] = [
        (
            vec!["--dataset".into(), format!("text:{}", bad.display())],
            &["bad.txt", "'Q'", "vocab.txt"],
        ),
        (vec!["--dataset".into(), "mnist".into()], &["text:PATH"]),
        (vec!["--test-limit".into(), "5".into()], &["--eval-windows"]),
        (vec!["--eval-windows".into(), "0".into()], &["at least 1"]),
        (vec!["--multiplier".into(), "mbm:99".into()], &["mbm:99"]),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["eval", "--checkpoint", s(&run)];
        args.extend(extra.iter().map(String::as_str));
        let o = approxtrain(&args);
        let e = failure_stderr(&o);
        assert_eq!(e.trim().lines().count(), 1, "{e}");
        for n in needles {
            assert!(e.contains(n), "{n} in {e}");
        }
        assert!(!e.contains("unknown dataset"), "{e}");
    }

    let o = approxtrain(&[
        "stats",
        "--checkpoint",
        s(&run),
        "--layer",
        "block0.mlp.fc1",
        "--out",
        s(&tmp.path().join("stats")),
    ]);
    let e = failure_stderr(&o);
    assert!(
        e.contains("image classifiers only") && e.contains("use eval or sensitivity"),
        "{e}"
    );
}

/// `sensitivity` on a transformer run measures every item (per block the
/// projections, the two score products and the MLP layers, and the head),
/// sorts them by validation-loss rise, and writes a plan whose loss `eval
/// --plan` reproduces exactly and whose rise is within `--max-rise`;
/// `--max-drop` is refused for a language model.
#[test]
fn lm_sensitivity_writes_a_plan_within_the_loss_budget_that_eval_reproduces() {
    let seed = test_seed();
    let (tmp, _text, run) = trained(seed);
    let out = tmp.path().join("sens");
    let max_rise = 0.02;
    let o = approxtrain(&[
        "sensitivity",
        "--checkpoint",
        s(&run),
        "--multiplier",
        "mitchell:2",
        "--max-rise",
        &max_rise.to_string(),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut r = csv::Reader::from_path(out.join("sensitivity.csv")).unwrap();
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "layer",
            "forward_macs_per_window",
            "mac_share",
            "only_this_loss",
            "only_this_rise_nats",
            "all_but_this_loss",
            "all_but_this_rise_nats",
            "greedy_chosen"
        ]
    );
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let mut items: Vec<&str> = rows.iter().map(|x| x.get(0).unwrap()).collect();
    items.sort();
    assert_eq!(
        items,
        [
            "block0.attn",
            "block0.attn_av",
            "block0.attn_qk",
            "block0.mlp.fc1",
            "block0.mlp.fc2",
            "head"
        ]
    );
    // Sorted by least harm: the only-this rise does not decrease.
    let rise: Vec<f64> = rows.iter().map(|x| x[4].parse().unwrap()).collect();
    assert!(rise.windows(2).all(|w| w[0] <= w[1]), "{rise:?}");
    assert!(
        std::fs::metadata(out.join("sensitivity.png"))
            .unwrap()
            .len()
            > 1000
    );

    let plan = out.join("plan.toml");
    let text = std::fs::read_to_string(&plan).unwrap();
    let reported: f32 = text
        .lines()
        .find_map(|l| l.split("this plan ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("plan comment names its loss");
    let csv = tmp.path().join("plan-eval.csv");
    let rows = eval_csv(&run, &csv, &["--multiplier", "fp32"]);
    let baseline = loss(&rows[0]);
    let rows = eval_csv(&run, &csv, &["--plan", s(&plan)]);
    let planned = loss(&rows[0]);
    assert!(
        (planned - reported).abs() < 0.00006,
        "{planned} vs {reported}"
    );
    assert!(
        planned as f64 - baseline as f64 <= max_rise + 1e-6,
        "{planned} - {baseline} > {max_rise}"
    );

    let o = approxtrain(&[
        "sensitivity",
        "--checkpoint",
        s(&run),
        "--multiplier",
        "mitchell:2",
        "--max-drop",
        "1",
        "--out",
        s(&tmp.path().join("sens2")),
    ]);
    let e = failure_stderr(&o);
    assert!(e.contains("--max-drop") && e.contains("--max-rise"), "{e}");
    assert!(!tmp.path().join("sens2").exists());
}
