//! End-to-end `approxtrain train` of ResNet-20 on CIFAR-10: the ResNet
//! options reach run.toml, a per-block plan file is applied, a resumed run
//! (augmentation and label smoothing included) matches an uninterrupted
//! one, a one-cycle run records its schedule, and a missing dataset is a one-line error. Runs are
//! tiny (96 training and 64 test images).
//!
//! Data: the shared CIFAR-10 (`$APPROXTRAIN_SHARED_DATA`, else
//! `../shared/datasets`); without it the tests print why and pass.

mod support;

use std::path::Path;

use support::{approxtrain, metrics_without_seconds, shared_data_with, test_seed};

#[test]
fn resnet20_cifar10_run_records_its_options_and_resumes_exactly() {
    let Some(data) = shared_data_with("cifar-10/test_batch.bin") else {
        eprintln!("skipped: no CIFAR-10 in the shared datasets (set APPROXTRAIN_SHARED_DATA)");
        return;
    };
    let seed = test_seed().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan.toml");
    std::fs::write(
        &plan,
        "multiplier = \"mbm:7\"\n[layers.s2b1]\nmultiplier = \"fp32\"\n\
         [layers.\"s3b3.conv2\"]\nmultiplier = \"bf16\"\n",
    )
    .unwrap();
    let run = |out: &Path, epochs: &str, schedule: &[&str]| {
        let mut args = vec![
            "train",
            "--net",
            "resnet20",
            "--dataset",
            "cifar10",
            "--data-dir",
            data.to_str().unwrap(),
            "--plan",
            plan.to_str().unwrap(),
            "--train-limit",
            "96",
            "--test-limit",
            "64",
            "--batch-size",
            "32",
            "--epochs",
            epochs,
            "--label-smoothing",
            "0.1",
            "--seed",
            &seed,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(schedule);
        approxtrain(&args)
    };
    // A per-epoch step schedule does not depend on the run's length, so a
    // 1-epoch run extended to 2 must repeat the 2-epoch run.
    let step = ["--schedule", "step", "--step-epochs", "1", "--gamma", "0.5"];
    let whole = tmp.path().join("whole");
    let parts = tmp.path().join("parts");
    assert!(run(&whole, "2", &step).status.success());
    let toml = std::fs::read_to_string(whole.join("run.toml")).unwrap();
    for line in [
        "net = \"resnet20\"",
        "dataset = \"cifar10\"",
        "augment = true",
        "label_smoothing = 0.1",
        "kind = \"step\"",
        "s2b1 = \"fp32\"",
        "\"s3b3.conv2\" = \"bf16\"",
        "multiplier = \"mbm:7\"",
    ] {
        assert!(toml.contains(line), "run.toml lacks {line}:\n{toml}");
    }
    let rows = metrics_without_seconds(&whole);
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let acc: f64 = r[10].parse().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{r:?}");
        assert_eq!(r[3], "mbm:7;s2b1=fp32;s3b3.conv2=bf16");
    }
    assert!(run(&parts, "1", &step).status.success());
    let o = approxtrain(&[
        "train",
        "--resume",
        parts.to_str().unwrap(),
        "--epochs",
        "2",
    ]);
    assert!(o.status.success());
    assert_eq!(metrics_without_seconds(&parts), rows);
    let cycle = tmp.path().join("cycle");
    assert!(run(&cycle, "1", &["--schedule", "onecycle"])
        .status
        .success());
    let toml = std::fs::read_to_string(cycle.join("run.toml")).unwrap();
    assert!(toml.contains("kind = \"onecycle\""), "{toml}");
}

#[test]
fn missing_cifar10_is_a_one_line_error_saying_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let o = approxtrain(&[
        "train",
        "--net",
        "resnet20",
        "--dataset",
        "cifar10",
        "--data-dir",
        tmp.path().to_str().unwrap(),
        "--out",
        tmp.path().join("run").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("cifar10") && e.contains("data fetch cifar10") && e.contains("data_batch_1.bin"),
        "{e}"
    );
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}
