//! End-to-end tests of `approxtrain train`: the run directory's files,
//! determinism across repeats and thread counts, resume, plan files and
//! divergence. Runs are tiny (a few hundred images, 1-2 epochs).
//!
//! Data: the full MNIST from `../shared/datasets` (or
//! `$APPROXTRAIN_SHARED_DATA`) when present, else the subset shipped in the
//! library. The seed of every run is fresh (or `$APPROXTRAIN_TEST_SEED`) and
//! printed.

mod support;

use std::path::Path;
use std::process::Output;

use support::{
    approxtrain, failure_stderr, json_lines, metrics_without_seconds, shared_data_dir, test_seed,
};

/// `train` with small-run flags, the given seed and output directory.
fn quick_train(out: &Path, seed: u64, extra: &[&str]) -> Output {
    let data = shared_data_dir();
    let seed = seed.to_string();
    let mut args = vec![
        "train",
        "--dataset",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--train-limit",
        "320",
        "--test-limit",
        "200",
        "--batch-size",
        "32",
        "--seed",
        &seed,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    approxtrain(&args)
}

/// [`quick_train`] of LeNet-300-100 with `multiplier` for `epochs`.
fn lenet300100(out: &Path, seed: u64, multiplier: &str, epochs: &str) -> Output {
    quick_train(
        out,
        seed,
        &[
            "--net",
            "lenet300100",
            "--multiplier",
            multiplier,
            "--epochs",
            epochs,
        ],
    )
}

/// One epoch of [`quick_train`] of `net` from a fresh seed into
/// `dir/run`, with the plan file `dir/plan.toml` holding `plan`.
fn train_with_plan(dir: &Path, net: &str, plan: &str) -> Output {
    let path = dir.join("plan.toml");
    std::fs::write(&path, plan).unwrap();
    let args = [
        "--net",
        net,
        "--plan",
        path.to_str().unwrap(),
        "--epochs",
        "1",
    ];
    quick_train(&dir.join("run"), test_seed(), &args)
}

#[test]
fn quick_run_writes_metrics_with_exact_header_and_a_parsable_run_toml() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = lenet300100(&out, seed, "fp32", "2");
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("final test accuracy"), "{stdout}");
    assert!(stdout.contains(out.to_str().unwrap()), "{stdout}");

    let text = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(
        text.lines().next().unwrap(),
        "run_id,net,dataset,plan,seed,epoch,step,train_loss,train_accuracy,test_loss,test_accuracy,seconds,macs"
    );
    let rows = metrics_without_seconds(&out);
    assert_eq!(rows.len(), 2);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], format!("lenet300100-mnist-fp32-s{seed}"));
        assert_eq!(&r[1..4], ["lenet300100", "mnist", "fp32"]);
        assert_eq!(r[4], seed.to_string());
        assert_eq!(r[5], (i + 1).to_string());
        // 320 images in batches of 32: 10 steps per epoch.
        assert_eq!(r[6], (10 * (i + 1)).to_string());
        let f = |j: usize| r[j].parse::<f64>().unwrap();
        assert!(f(7) > 0.0 && f(7) < 5.0, "train loss {}", f(7));
        assert!((0.0..=1.0).contains(&f(8)) && (0.0..=1.0).contains(&f(10)));
        assert!(f(9) > 0.0 && f(9) < 5.0, "test loss {}", f(9));
        // LeNet-300-100: 784*300 + 300*100 + 100*10 = 266,200 MACs per image
        // forward; training adds dw for every layer and dx for all but the
        // first; evaluation is forward only.
        let fwd = 266_200u64;
        let dx = 300 * 100 + 100 * 10;
        let expect = 320 * (2 * fwd + dx) + 200 * fwd;
        assert_eq!(r[12].parse::<u64>().unwrap(), expect);
    }
    let seconds: f64 = text
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(11)
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds > 0.0, "seconds {seconds}");
    // Two epochs of SGD from chance (loss ln 10 = 2.30) must learn something.
    let last_loss: f64 = rows[1][7].parse().unwrap();
    assert!(last_loss < 2.2, "train loss after 2 epochs {last_loss}");

    let run = experiments::RunFile::read(&out.join("run.toml")).unwrap();
    assert_eq!(run.run.status, experiments::RunStatus::Finished);
    assert_eq!(run.run.epochs_completed, 2);
    assert_eq!(run.spec.net, "lenet300100");
    assert_eq!(run.spec.seed, seed);
    assert_eq!(run.spec.train_limit, Some(320));
    assert!(out.join("checkpoint.bin").is_file());

    // The same command again finds the finished run and does nothing.
    let before = std::fs::read(out.join("metrics.csv")).unwrap();
    let o = lenet300100(&out, seed, "fp32", "2");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("already holds this finished run"));
    assert_eq!(std::fs::read(out.join("metrics.csv")).unwrap(), before);

    // run.toml alone repeats the run.
    let again = tmp.path().join("again");
    let o = approxtrain(&[
        "train",
        "--spec",
        out.join("run.toml").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert_eq!(metrics_without_seconds(&again), rows);

    // More epochs for the same run point to --resume.
    let o = lenet300100(&out, seed, "fp32", "3");
    let e = failure_stderr(&o);
    assert!(e.contains("--resume") && e.contains("--epochs 3"), "{e}");

    // A different spec in the same directory is an error naming the difference.
    let o = lenet300100(&out, seed, "bf16", "2");
    let e = failure_stderr(&o);
    assert!(
        e.contains("different run") && e.contains("multiplier: \"fp32\" -> \"bf16\""),
        "{e}"
    );
}

#[test]
fn lut_runs_are_byte_identical_across_repeats_and_thread_counts() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for (i, threads) in ["1", "1", "2", "2"].iter().enumerate() {
        let out = tmp.path().join(format!("run{i}"));
        let o = quick_train(
            &out,
            seed,
            &[
                "--threads",
                threads,
                "--net",
                "lenet5",
                "--multiplier",
                "mbm:7",
                "--epochs",
                "2",
            ],
        );
        assert!(o.status.success());
        results.push(metrics_without_seconds(&out));
    }
    assert_eq!(results[0].len(), 2);
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
}

#[test]
fn resumed_run_matches_an_uninterrupted_one() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let parts = tmp.path().join("parts");
    let with_epochs = |e: &'static str| {
        vec![
            "--net",
            "lenet300100",
            "--multiplier",
            "mbm:7",
            "--schedule",
            "constant",
            "--epochs",
            e,
        ]
    };
    assert!(quick_train(&whole, seed, &with_epochs("2"))
        .status
        .success());
    assert!(quick_train(&parts, seed, &with_epochs("1"))
        .status
        .success());
    assert_eq!(metrics_without_seconds(&parts).len(), 1);
    let o = approxtrain(&[
        "train",
        "--resume",
        parts.to_str().unwrap(),
        "--epochs",
        "2",
    ]);
    assert!(o.status.success());
    assert_eq!(
        metrics_without_seconds(&parts),
        metrics_without_seconds(&whole)
    );
}

#[test]
fn plan_file_naming_a_missing_layer_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let o = train_with_plan(
        tmp.path(),
        "lenet5",
        "multiplier = \"mbm:7\"\n[layers.conv7]\nmultiplier = \"fp32\"\n",
    );
    let e = failure_stderr(&o);
    assert!(
        e.contains("'conv7'") && e.contains("plan.toml") && e.contains("conv1"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    assert!(!tmp.path().join("run").join("metrics.csv").exists());
}

#[test]
fn plan_file_sets_per_layer_plans_recorded_in_metrics_and_run_toml() {
    let tmp = tempfile::tempdir().unwrap();
    let o = train_with_plan(
        tmp.path(),
        "lenet300100",
        "multiplier = \"mbm:7\"\n[layers.fc1]\nmultiplier = \"fp32\"\n[layers.fc3]\ndx = \"bf16\"\n",
    );
    let out = tmp.path().join("run");
    assert!(o.status.success());
    let rows = metrics_without_seconds(&out);
    assert_eq!(rows[0][3], "mbm:7;fc1=fp32;fc3=fwd=mbm:7,dx=bf16,dw=mbm:7");
    let run = experiments::RunFile::read(&out.join("run.toml")).unwrap();
    assert_eq!(run.spec.multiplier, "mbm:7");
    assert_eq!(run.spec.layers["fc1"], "fp32");
    assert_eq!(run.spec.layers["fc3"], "fwd=mbm:7,dx=bf16,dw=mbm:7");
}

#[test]
fn divergence_is_reported_cleanly_and_recorded() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = quick_train(
        &out,
        seed,
        &[
            "--net",
            "lenet300100",
            "--multiplier",
            "fp32",
            "--lr",
            "1e6",
            "--epochs",
            "2",
        ],
    );
    let e = failure_stderr(&o);
    assert!(e.contains("training diverged at epoch 1 step"), "{e}");
    assert!(e.contains("lower learning rate"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let run = experiments::RunFile::read(&out.join("run.toml")).unwrap();
    assert_eq!(run.run.status, experiments::RunStatus::Diverged);
    let rows = metrics_without_seconds(&out);
    assert_eq!(rows.len(), 1, "a row records the diverged epoch");
    let loss: f64 = rows[0][7].parse().unwrap();
    assert!(!loss.is_finite(), "train loss of the diverged epoch {loss}");
}

#[test]
fn unknown_net_and_dataset_errors_list_the_valid_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = quick_train(&out, 1, &["--net", "alexnet"]);
    let e = failure_stderr(&o);
    assert!(
        e.contains("'alexnet'") && e.contains("lenet300100, lenet5"),
        "{e}"
    );
    let o = approxtrain(&[
        "train",
        "--net",
        "lenet5",
        "--dataset",
        "imagenet",
        "--out",
        out.to_str().unwrap(),
    ]);
    let e = failure_stderr(&o);
    assert!(
        e.contains("'imagenet'") && e.contains("mnist, fashion-mnist"),
        "{e}"
    );
}

/// `bench train` on a classifier times one epoch per multiplier, fp32
/// first, over the images asked for; the JSON profile's parts (with
/// `other`) add up to the timed epoch.
#[test]
fn bench_train_times_a_classifier_epoch_per_multiplier() {
    let out = approxtrain(&[
        "bench",
        "train",
        "--net",
        "lenet300100",
        "--images",
        "256",
        "--batch-size",
        "64",
        "--multiplier",
        "mbm:7",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = json_lines(&out);
    let labels: Vec<&str> = rows
        .iter()
        .map(|r| r["multiplier"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["fp32", "mbm:7"]);
    for r in &rows {
        assert_eq!(r["net"], "lenet300100");
        assert_eq!(
            (r["images"].as_u64(), r["batch_size"].as_u64()),
            (Some(256), Some(64))
        );
        let seconds = r["seconds"].as_f64().unwrap();
        assert!(seconds > 0.0, "{r}");
        let profile = r["profile"].as_object().expect("a profile object");
        let total: f64 = profile.values().map(|v| v.as_f64().unwrap()).sum();
        assert!((total - seconds).abs() <= 0.05 * seconds + 1e-3, "{r}");
        assert!(profile["products"].as_f64().unwrap() > 0.0, "{r}");
    }
    assert_eq!(rows[0]["ratio_vs_fp32"].as_f64(), Some(1.0));
}
