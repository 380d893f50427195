//! End to end with 12- and 16-bit integer multipliers: LeNet-5 trains under
//! `int12:` (4096 x 4096 table) and `int16:` (the model called per product)
//! with integer products in all three roles; `models`, `characterize`,
//! `verify` and `bench gemm` take the new models; wrong-width specs are
//! one-line errors naming the right prefix.

mod support;

use std::path::Path;

use support::{
    approxtrain, failure_stderr, json_lines, s, shared_data_dir, stderr, stdout, test_seed,
};

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

    // Post-training quantization of an fp32 run: the exact 12-bit model
    // keeps the fp32 test loss within 1%.
    let fp32 = tmp.path().join("fp32");
    let out = train(&fp32, seed, "fp32");
    assert!(out.status.success(), "seed {seed}: {}", stderr(&out));
    let csv = tmp.path().join("ptq.csv");
    let data = shared_data_dir();
    let out = approxtrain(&[
        "eval",
        "--checkpoint",
        s(&fp32),
        "--data-dir",
        s(&data),
        "--test-limit",
        "200",
        "--multiplier",
        "fp32,int12:exact12s",
        "--csv",
        s(&csv),
    ]);
    assert!(out.status.success(), "seed {seed}: {}", stderr(&out));
    let mut r = csv::Reader::from_path(&csv).unwrap();
    let header = r.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let labels: Vec<&str> = rows.iter().map(|x| &x[col("label")]).collect();
    assert_eq!(labels, ["fp32", "int12:exact12s"], "seed {seed}");
    let loss = |i: usize| rows[i][col("test_loss")].parse::<f64>().unwrap();
    assert!(
        (loss(1) - loss(0)).abs() <= 0.01 * loss(0),
        "seed {seed}: {} vs {}",
        loss(1),
        loss(0)
    );
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

#[test]
fn models_characterize_verify_and_bench_take_12_and_16_bit_models() {
    let tmp = tempfile::tempdir().unwrap();
    let out = approxtrain(&["models"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    for (name, kind) in [
        ("exact12s", "int12s"),
        ("mul12u_trunc6", "int12u"),
        ("exact16u", "int16u"),
        ("mul16s_trunc8", "int16s"),
    ] {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed: {table}"));
        assert_eq!(line.split_whitespace().nth(1), Some(kind), "{line}");
    }

    // Every pair of a 12-bit table: the truncated array's worst error is
    // all six dropped columns set, 5 x 2^6 + 1 = 321, at 63 x 63.
    let csv = tmp.path().join("m.csv");
    let png = tmp.path().join("m.png");
    let out = approxtrain(&[
        "characterize",
        "--model",
        "mul12u_trunc6",
        "--csv",
        s(&csv),
        "--heatmap",
        s(&png),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("16777216 (all pairs)"),
        "{}",
        stdout(&out)
    );
    let mut r = csv::Reader::from_path(&csv).unwrap();
    let header = r.headers().unwrap().clone();
    let row = r.records().next().unwrap().unwrap();
    let field = |name: &str| &row[header.iter().position(|h| h == name).unwrap()];
    assert_eq!(field("kind"), "int12u");
    assert_eq!(
        (field("wce"), field("wce_a"), field("wce_b")),
        ("321", "63", "63")
    );
    let bias: f64 = field("bias").parse().unwrap();
    let mae: f64 = field("mae").parse().unwrap();
    assert!(
        bias < 0.0 && (mae + bias).abs() < 1e-9,
        "an underestimate everywhere: {bias} {mae}"
    );
    assert!(std::fs::metadata(&png).unwrap().len() > 1000);

    // 16 bits: sampled pairs; no heat map, no table file.
    let out = approxtrain(&[
        "characterize",
        "--model",
        "mul16s_trunc8",
        "--samples",
        "20000",
        "--seed",
        "5",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("20000 (random)"), "{}", stdout(&out));
    for args in [
        &[
            "characterize",
            "--model",
            "mul16s_trunc8",
            "--heatmap",
            "x.png",
        ][..],
        &["lut", "build", "--model", "mul16s_trunc8"][..],
        &["lut", "build", "--model", "mul12s_trunc6"][..],
        &["verify", "--model", "mul12s_trunc6", "--bits", "7"][..],
    ] {
        let err = failure_stderr(&approxtrain(args));
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }

    let out = approxtrain(&["verify", "--model", "mul12s_trunc6"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("16777216          0"),
        "{}",
        stdout(&out)
    );

    let out = approxtrain(&[
        "bench",
        "gemm",
        "--m",
        "16",
        "--n",
        "24",
        "--k",
        "8",
        "--repeats",
        "1",
        "--json",
        "--multiplier",
        "int12:mul12s_trunc6,int16:exact16u",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = json_lines(&out)
        .iter()
        .map(|r| r["multiplier"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["fp32", "int12:mul12s_trunc6", "int16:exact16u"]);
    let out = approxtrain(&[
        "bench",
        "conv",
        "--shape",
        "lenet5-conv2",
        "--batch",
        "2",
        "--repeats",
        "1",
        "--json",
        "--multiplier",
        "int12:mul12s_trunc6,int16:exact16u",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<(String, String)> = json_lines(&out)
        .iter()
        .map(|r| {
            (
                r["multiplier"].as_str().unwrap().to_string(),
                r["product"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(rows.len(), 9, "{rows:?}");
    assert_eq!(rows[3], ("int12:mul12s_trunc6".into(), "forward".into()));
    assert_eq!(rows[8], ("int16:exact16u".into(), "grad_weight".into()));
    let err = failure_stderr(&approxtrain(&[
        "bench",
        "gemm",
        "--multiplier",
        "int12:exact16u",
    ]));
    assert!(err.contains("use int16:exact16u"), "{err}");
}
