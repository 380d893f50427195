//! End to end with integer multipliers: post-training quantization in
//! `eval` (calibrated on training images, one row per multiplier in the CSV),
//! quantization-aware fine-tuning with `train --init`, and one-line errors
//! for int8 specs with float-only options.

mod support;

use std::path::Path;

use support::{approxtrain, failure_stderr, s, shared_data_dir, stderr, test_seed};

fn train(out: &Path, seed: u64, extra: &[&str]) -> std::process::Output {
    let data = shared_data_dir();
    let seed = seed.to_string();
    let mut args = vec![
        "train",
        "--data-dir",
        s(&data),
        "--train-limit",
        "512",
        "--test-limit",
        "300",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--seed",
        &seed,
        "--out",
        s(out),
    ];
    args.extend_from_slice(extra);
    approxtrain(&args)
}

#[test]
fn lenet5_is_quantized_after_training_and_fine_tuned_under_int8_models() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let fp32 = tmp.path().join("fp32");
    let out = train(&fp32, seed, &["--net", "lenet5", "--multiplier", "fp32"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let csv = tmp.path().join("ptq.csv");
    let data = shared_data_dir();
    let out = approxtrain(&[
        "eval",
        "--checkpoint",
        s(&fp32),
        "--data-dir",
        s(&data),
        "--multiplier",
        "fp32,int8:exact8s,int8:mul8s_BAM08,int8:mul8u_BAM61",
        "--csv",
        s(&csv),
    ]);
    assert!(out.status.success(), "seed {seed}: {}", stderr(&out));
    let text = std::fs::read_to_string(&csv).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let labels: Vec<&str> = rows.iter().map(|r| r[3]).collect();
    assert_eq!(
        labels,
        [
            "fp32",
            "int8:exact8s",
            "int8:mul8s_BAM08",
            "int8:mul8u_BAM61"
        ],
        "seed {seed}"
    );
    let accuracy = |i: usize| rows[i][7].parse::<f64>().unwrap();
    // The exact int8 table keeps the fp32 accuracy within two points; the
    // harsh broken array changes it.
    assert!(
        (accuracy(1) - accuracy(0)).abs() <= 0.02,
        "seed {seed}: {text}"
    );
    assert_ne!(rows[2][6], rows[0][6], "seed {seed}: {text}");

    // A plan file with int8 specs per layer (and one that names a float
    // model under int8:, refused with one line).
    let plan = tmp.path().join("int8.toml");
    std::fs::write(
        &plan,
        "multiplier = \"int8:mul8s_BAM08\"\n[layers.conv1]\nmultiplier = \"fp32\"\n[layers.fc3]\nfwd = \"int8:exact8s:per-tensor\"\n",
    )
    .unwrap();
    let csv = tmp.path().join("plan.csv");
    let out = approxtrain(&[
        "eval",
        "--checkpoint",
        s(&fp32),
        "--data-dir",
        s(&data),
        "--plan",
        s(&plan),
        "--csv",
        s(&csv),
    ]);
    assert!(out.status.success(), "seed {seed}: {}", stderr(&out));
    std::fs::write(&plan, "multiplier = \"int8:mbm\"\n").unwrap();
    let out = approxtrain(&["eval", "--checkpoint", s(&fp32), "--plan", s(&plan)]);
    let err = failure_stderr(&out);
    assert!(
        err.contains("use mbm:BITS") && err.contains("int8.toml"),
        "{err}"
    );

    // Fine-tuning on the EvoApprox-form model, straight-through and with
    // integer gradients.
    for plan in ["fwd=int8:mul8u_BAM61,dx=fp32,dw=fp32", "int8:mul8s_BAM08"] {
        let ft = tmp.path().join(format!("ft-{}", plan.len()));
        let out = train(
            &ft,
            seed,
            &["--init", s(&fp32), "--multiplier", plan, "--lr", "0.01"],
        );
        assert!(
            out.status.success(),
            "seed {seed}, {plan}: {}",
            stderr(&out)
        );
        let run = std::fs::read_to_string(ft.join("run.toml")).unwrap();
        assert!(run.contains("status = \"finished\""), "{plan}: {run}");
        let metrics = std::fs::read_to_string(ft.join("metrics.csv")).unwrap();
        assert!(metrics.contains(plan), "{plan}: {metrics}");
    }
}

#[test]
fn int8_specs_with_float_only_options_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (spec, says) in [
        ("int8:exact8s:7", "no bit width"),
        ("exact8s:7", "use int8:exact8s"),
        ("direct:exact8u", "use int8:exact8u"),
        ("int8:mbm", "use mbm:BITS"),
        ("int8:mul8s_none", "known models: exact8s"),
        ("fwd=fp32,dx=int8:exact8s", "need an integer forward"),
    ] {
        let out = train(
            &tmp.path().join("bad"),
            1,
            &["--net", "lenet5", "--multiplier", spec],
        );
        let err = failure_stderr(&out);
        assert!(err.contains(says), "{spec}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{spec}: {err}");
    }
}
