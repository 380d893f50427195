//! End to end with 12- and 16-bit integer multipliers: LeNet-5 trains under
//! `int12:` (4096 x 4096 table) and `int16:` (the model called per product)
//! with integer products in all three roles, and wrong-width specs are
//! one-line errors naming the right prefix.

mod support;

use std::path::Path;

use support::{approxtrain, failure_stderr, s, shared_data_dir, stderr, test_seed};

fn train(out: &Path, seed: u64, multiplier: &str) -> std::process::Output {
    let data = shared_data_dir();
    let seed = seed.to_string();
    approxtrain(&[
        "train",
        "--net",
        "lenet5",
        "--data-dir",
        s(&data),
        "--train-limit",
        "256",
        "--test-limit",
        "100",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--seed",
        &seed,
        "--multiplier",
        multiplier,
        "--out",
        s(out),
    ])
}

/// `(train_loss, test_loss)` of each epoch of a run's metrics.csv.
fn losses(dir: &Path) -> Vec<(f64, f64)> {
    let mut r = csv::Reader::from_path(dir.join("metrics.csv")).unwrap();
    let header = r.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (tr, te) = (col("train_loss"), col("test_loss"));
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[tr].parse().unwrap(), rec[te].parse().unwrap())
        })
        .collect()
}

#[test]
fn lenet5_trains_under_12_and_16_bit_integer_models() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    for spec in [
        "int12:exact12s",
        "int16:mul16s_trunc8",
        "fwd=int12:mul12u_trunc6,dx=fp32,dw=fp32",
    ] {
        let dir = tmp.path().join(spec.replace([':', ',', '='], "-"));
        let out = train(&dir, seed, spec);
        assert!(
            out.status.success(),
            "seed {seed}, {spec}: {}",
            stderr(&out)
        );
        let l = losses(&dir);
        assert_eq!(l.len(), 2, "seed {seed}, {spec}: {l:?}");
        // From chance (ln 10 = 2.30) down: the second epoch's training loss
        // is below the first's, and the test loss well below chance.
        assert!(l[1].0 < l[0].0, "seed {seed}, {spec}: {l:?}");
        assert!(l[1].1 < 0.8 * 10f64.ln(), "seed {seed}, {spec}: {l:?}");
        let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
        assert!(metrics.contains(spec), "{spec}: {metrics}");
    }
}

#[test]
fn integer_specs_of_the_wrong_width_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    for (spec, says) in [
        ("int12:mul8s_trunc4", "use int8:mul8s_trunc4"),
        ("int8:mul12s_trunc6", "use int12:mul12s_trunc6"),
        ("int12:mul16s_trunc8", "use int16:mul16s_trunc8"),
        ("mul16u_trunc8:7", "use int16:mul16u_trunc8"),
        ("int16:exact16s:12", "no bit width"),
        ("fwd=fp32,dw=int12:exact12s", "need an integer forward"),
    ] {
        let out = train(&tmp.path().join("bad"), 1, spec);
        let err = failure_stderr(&out);
        assert!(err.contains(says), "{spec}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{spec}: {err}");
    }
}
