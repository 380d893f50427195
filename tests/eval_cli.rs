//! End-to-end tests of `approxtrain eval`, `train --init`, `sensitivity`
//! and `stats`: results that agree with training, fine-tuning provenance,
//! and clear errors on bad input (a checkpoint of another net, a plan naming
//! unknown layers, corrupt checkpoints) with nothing overwritten.
//!
//! Each test trains its own tiny LeNet (a few hundred images, one epoch) on
//! the full MNIST from `../shared/datasets` (or `$APPROXTRAIN_SHARED_DATA`),
//! else the shipped subset. Seeds are fresh (or `$APPROXTRAIN_TEST_SEED`)
//! and printed.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::{approxtrain, failure_stderr, s, shared_data_dir, stderr, test_seed};

/// Train `net` for one epoch on 256 images (test set: 200) into `out`.
fn tiny_run(out: &Path, net: &str, seed: u64, extra: &[&str]) {
    let data = shared_data_dir();
    let seed = seed.to_string();
    let mut args = vec![
        "train",
        "--net",
        net,
        "--data-dir",
        s(&data),
        "--train-limit",
        "256",
        "--test-limit",
        "200",
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
    assert!(approxtrain(&args).status.success());
}

/// `eval` of the run or checkpoint file `checkpoint` on the shared data
/// with `extra` flags, writing `csv`.
fn eval_into(checkpoint: &Path, extra: &[&str], csv: &Path) -> Output {
    let data = shared_data_dir();
    let mut args = vec![
        "eval",
        "--checkpoint",
        s(checkpoint),
        "--data-dir",
        s(&data),
    ];
    args.extend_from_slice(extra);
    args.extend(["--csv", s(csv)]);
    approxtrain(&args)
}

/// A temporary directory holding `run`, a tiny run of `net` from a fresh
/// seed, and the path of that run.
fn trained(net: &str) -> (tempfile::TempDir, PathBuf) {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    tiny_run(&run, net, seed, &[]);
    (tmp, run)
}

/// The recorded test accuracy of a run's last epoch.
fn run_accuracy(dir: &Path) -> f32 {
    let mut r = csv::Reader::from_path(dir.join("metrics.csv")).unwrap();
    let last = r.records().last().unwrap().unwrap();
    last[10].parse().unwrap()
}

/// Rows of an eval CSV as (label, accuracy).
fn eval_rows(path: &Path) -> Vec<(String, f32)> {
    let mut r = csv::Reader::from_path(path).unwrap();
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "checkpoint",
            "net",
            "dataset",
            "label",
            "plan",
            "samples",
            "test_loss",
            "test_accuracy",
            "seconds"
        ]
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (rec[3].to_string(), rec[7].parse().unwrap())
        })
        .collect()
}

#[test]
fn eval_reproduces_the_training_accuracy_and_refuses_to_overwrite_its_csv() {
    let (tmp, run) = trained("lenet5");
    let csv = tmp.path().join("eval.csv");
    let o = eval_into(
        &run,
        &[
            "--test-limit",
            "200",
            "--multiplier",
            "fp32,mbm:7,fwd=mitchell:4,dx=fp32",
        ],
        &csv,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = eval_rows(&csv);
    let labels: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        labels,
        ["fp32", "mbm:7", "fwd=mitchell:4,dx=fp32,dw=fp32"],
        "{rows:?}"
    );
    // The run evaluated the same weights on the same 200 images with fp32.
    assert_eq!(rows[0].1, run_accuracy(&run));

    // A checkpoint file inside the run directory names the same weights.
    let csv2 = tmp.path().join("eval2.csv");
    let o = eval_into(
        &run.join("checkpoint.bin"),
        &["--test-limit", "200", "--multiplier", "mbm:7"],
        &csv2,
    );
    assert!(o.status.success());
    assert_eq!(eval_rows(&csv2)[0], rows[1]);

    // The CSV exists: refused before any work, content unchanged.
    let before = std::fs::read(&csv).unwrap();
    let o = eval_into(&run, &["--multiplier", "bf16"], &csv);
    let e = failure_stderr(&o);
    assert!(e.contains("eval.csv") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&csv).unwrap(), before);
}

#[test]
fn bad_checkpoints_and_plans_are_one_line_errors_naming_the_problem() {
    let seed = test_seed();
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("lenet5");
    let other = tmp.path().join("lenet300100");
    tiny_run(&run, "lenet5", seed, &[]);
    tiny_run(&other, "lenet300100", seed, &[]);
    let data = shared_data_dir();
    let eval = |dir: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--checkpoint",
            s(dir),
            "--data-dir",
            s(&data),
            "--test-limit",
            "50",
        ];
        args.extend_from_slice(extra);
        approxtrain(&args)
    };
    let one_line_error = |o: &Output, needles: &[&str]| {
        let e = failure_stderr(o);
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(e.starts_with("error: "), "{e}");
        for n in needles {
            assert!(e.contains(n), "{e} lacks {n}");
        }
    };

    // A checkpoint of another net in a run directory.
    let swapped = tmp.path().join("swapped");
    std::fs::create_dir(&swapped).unwrap();
    std::fs::copy(run.join("run.toml"), swapped.join("run.toml")).unwrap();
    std::fs::copy(other.join("checkpoint.bin"), swapped.join("checkpoint.bin")).unwrap();
    one_line_error(
        &eval(&swapped, &[]),
        &["lenet300100", "lenet5", "checkpoint.bin"],
    );

    // Truncated and bit-flipped checkpoints.
    let bytes = std::fs::read(run.join("checkpoint.bin")).unwrap();
    let bad = tmp.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::copy(run.join("run.toml"), bad.join("run.toml")).unwrap();
    let mut rng_pos = seed as usize;
    for cut in [bytes.len() / 2, bytes.len() - 3] {
        std::fs::write(bad.join("checkpoint.bin"), &bytes[..cut]).unwrap();
        one_line_error(&eval(&bad, &[]), &["checkpoint.bin", "corrupt"]);
    }
    for _ in 0..3 {
        rng_pos = rng_pos
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut flipped = bytes.clone();
        let at = 12 + rng_pos % (bytes.len() - 12);
        flipped[at] ^= 1 << (rng_pos % 8);
        std::fs::write(bad.join("checkpoint.bin"), &flipped).unwrap();
        one_line_error(&eval(&bad, &[]), &["checkpoint.bin", "checksum"]);
    }

    // Not a run directory, and a missing path.
    one_line_error(&eval(tmp.path(), &[]), &["run.toml", "not a run directory"]);
    one_line_error(&eval(&tmp.path().join("nowhere"), &[]), &["nowhere"]);

    // A plan naming a layer the net does not have.
    let plan = tmp.path().join("plan.toml");
    std::fs::write(&plan, "[layers.conv9]\nfwd = \"mbm:7\"\n").unwrap();
    one_line_error(
        &eval(&run, &["--plan", s(&plan)]),
        &["plan.toml", "'conv9'", "conv1, conv2, fc1, fc2, fc3"],
    );
    // An unknown model.
    one_line_error(&eval(&run, &["--multiplier", "fp32,mbmm:7"]), &["'mbmm'"]);

    // Fine-tuning a lenet300100 from lenet5 weights: refused before the
    // output directory is created.
    let ft = tmp.path().join("ft");
    let o = approxtrain(&[
        "train",
        "--init",
        s(&run),
        "--net",
        "lenet300100",
        "--data-dir",
        s(&data),
        "--train-limit",
        "64",
        "--epochs",
        "1",
        "--out",
        s(&ft),
    ]);
    one_line_error(&o, &["lenet5", "lenet300100"]);
    assert!(!ft.exists());
}

#[test]
fn fine_tuning_starts_from_the_checkpoint_weights_and_records_its_origin() {
    let (tmp, run) = trained("lenet300100");
    let data = shared_data_dir();
    let ft = tmp.path().join("ft");
    // One step at a learning rate of 1e-30 leaves the weights as they were
    // (to the last bit for all but the tiniest weights): the test accuracy
    // is then that of the checkpoint, which a fresh initialisation would
    // not reach.
    let o = approxtrain(&[
        "train",
        "--init",
        s(&run),
        "--multiplier",
        "mbm:7",
        "--data-dir",
        s(&data),
        "--train-limit",
        "32",
        "--test-limit",
        "200",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--schedule",
        "constant",
        "--lr",
        "1e-30",
        "--out",
        s(&ft),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("starting from the weights of"),
        "{}",
        stderr(&o)
    );
    let toml = std::fs::read_to_string(ft.join("run.toml")).unwrap();
    assert!(toml.contains("init = "), "{toml}");
    assert!(toml.contains("multiplier = \"mbm:7\""), "{toml}");
    let o = eval_into(
        &run,
        &["--test-limit", "200", "--multiplier", "mbm:7"],
        &tmp.path().join("e.csv"),
    );
    assert!(o.status.success());
    let expected = eval_rows(&tmp.path().join("e.csv"))[0].1;
    assert_eq!(run_accuracy(&ft), expected);
    // The optimizer and schedule are fresh: one step in this run.
    let mut r = csv::Reader::from_path(ft.join("metrics.csv")).unwrap();
    let row = r.records().next().unwrap().unwrap();
    assert_eq!(&row[6], "1");
    assert!(row[0].ends_with("-finetune"), "{}", &row[0]);
}

#[test]
fn sensitivity_writes_a_plan_that_eval_reproduces_and_never_writes_into_a_run_directory() {
    let (tmp, run) = trained("lenet5");
    let data = shared_data_dir();
    let out = tmp.path().join("sens");
    let args = |out: &Path| {
        vec![
            "sensitivity".to_string(),
            "--checkpoint".into(),
            s(&run).into(),
            "--multiplier".into(),
            "mitchell:2".into(),
            "--max-drop".into(),
            "1".into(),
            "--data-dir".into(),
            s(&data).into(),
            "--test-limit".into(),
            "100".into(),
            "--out".into(),
            s(out).into(),
        ]
    };
    let a = args(&out);
    let o = approxtrain(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let mut r = csv::Reader::from_path(out.join("sensitivity.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let mut layers: Vec<String> = rows.iter().map(|x| x[0].to_string()).collect();
    layers.sort();
    assert_eq!(layers, ["conv1", "conv2", "fc1", "fc2", "fc3"]);
    // Sorted by least harm: only-this accuracy does not increase.
    let only: Vec<f32> = rows.iter().map(|x| x[3].parse().unwrap()).collect();
    assert!(only.windows(2).all(|w| w[0] >= w[1]), "{only:?}");
    assert!(
        std::fs::metadata(out.join("sensitivity.png"))
            .unwrap()
            .len()
            > 1000
    );

    // The plan evaluates to the accuracy the search reported for it.
    let plan = std::fs::read_to_string(out.join("plan.toml")).unwrap();
    let reported: f32 = plan
        .lines()
        .find_map(|l| l.split("this plan ").nth(1))
        .and_then(|rest| rest.split('%').next())
        .and_then(|v| v.parse().ok())
        .expect("plan comment names its accuracy");
    let chosen: Vec<&str> = rows
        .iter()
        .filter(|x| &x[7] == "true")
        .map(|x| x.get(0).unwrap())
        .collect();
    for l in &chosen {
        assert!(
            plan.contains(&format!("[layers.{l}]\nfwd = \"mitchell:2\"")),
            "{plan}"
        );
    }
    let csv = tmp.path().join("plan-eval.csv");
    let o = eval_into(
        &run,
        &["--test-limit", "100", "--plan", s(&out.join("plan.toml"))],
        &csv,
    );
    assert!(o.status.success());
    let acc = eval_rows(&csv)[0].1;
    assert!(
        (100.0 * acc - reported).abs() < 0.006,
        "{acc} vs {reported}"
    );

    // Existing outputs need --force; a run directory is refused outright.
    let o = approxtrain(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let before = std::fs::read_dir(&run).unwrap().count();
    let a = args(&run);
    let o = approxtrain(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("run directory"), "{}", stderr(&o));
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), before);
}

#[test]
fn stats_report_uniform_and_operand_weighted_metrics_for_each_product() {
    let (tmp, run) = trained("lenet5");
    let data = shared_data_dir();
    let out = tmp.path().join("stats");
    let o = approxtrain(&[
        "stats",
        "--checkpoint",
        s(&run),
        "--layer",
        "conv2",
        "--multiplier",
        "mbm:5",
        "--batch",
        "4",
        "--data-dir",
        s(&data),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut r = csv::Reader::from_path(out.join("metrics.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let dists: Vec<&str> = rows.iter().map(|x| x.get(2).unwrap()).collect();
    assert_eq!(dists, ["uniform", "forward", "grad_input", "grad_weight"]);
    // Uniform: all 4^5 pairs of the table.
    assert_eq!(&rows[0][5], "1024");
    for row in &rows[1..] {
        // conv2: 16 x 10 x 10 outputs of 150 products, 4 images.
        assert_eq!(&row[4], "960000");
        let table: u64 = row[5].parse().unwrap();
        assert!(table > 0 && table <= 960_000);
        let mred: f64 = row[8].parse().unwrap();
        assert!(mred > 0.0 && mred < 0.2, "{mred}");
    }
    let hist = std::fs::read_to_string(out.join("histograms.csv")).unwrap();
    assert!(hist.starts_with("layer,role,operand,kind,bin,count,share\n"));
    // Each operand's exponent bins count all its elements: x of conv2 is
    // 4 x 6 x 14 x 14.
    let x_elements: u64 = hist
        .lines()
        .filter(|l| l.starts_with("conv2,forward,x,exponent,"))
        .map(|l| l.split(',').nth(5).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(x_elements, 4 * 6 * 14 * 14);
    assert!(std::fs::metadata(out.join("operands.png")).unwrap().len() > 1000);

    let o = approxtrain(&[
        "stats",
        "--checkpoint",
        s(&run),
        "--layer",
        "conv9",
        "--data-dir",
        s(&data),
        "--out",
        s(&tmp.path().join("x")),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("'conv9'"), "{}", stderr(&o));
}
