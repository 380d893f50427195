//! Inputs a run must refuse, or resolve the same wherever it is resumed
//! from, before anything is written: a data directory without its dataset,
//! a relative data directory seen from another working directory, values
//! `run.toml` cannot hold, absurd thread counts, a Transformer larger than
//! memory, and the smaller cases (`text:` without a path, attention roles
//! for nets without attention, an oversized LUT file, `lut build` over an
//! existing file, OS errors said once).
//!
//! Data: the MNIST subset shipped in the repository, copied into a data
//! directory of the test.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{
    approxtrain, approxtrain_in, command, failure_stderr, metrics_without_seconds, s, shipped_mnist,
};

const SMALL: [&str; 10] = [
    "--net",
    "lenet300100",
    "--train-limit",
    "256",
    "--test-limit",
    "100",
    "--batch-size",
    "64",
    "--epochs",
    "2",
];

/// `train` with the small-run flags and `extra`, in `cwd`.
fn train_in(cwd: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["train"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    approxtrain_in(cwd, &args)
}

#[test]
fn an_explicit_data_directory_without_the_dataset_is_an_error_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = tmp.path().join("run");
    let err = failure_stderr(&train_in(
        tmp.path(),
        &["--data-dir", s(&empty), "--out", s(&out)],
    ));
    assert!(
        err.contains(&empty.join("mnist").display().to_string())
            && err.contains("train-images-idx3-ubyte")
            && err.contains("data fetch mnist"),
        "{err}"
    );
    assert!(!out.exists(), "a run directory was created");
    // One of the four files missing: named.
    let data = shipped_mnist(&tmp.path().join("three"));
    std::fs::remove_file(data.join("mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    let err = failure_stderr(&train_in(
        tmp.path(),
        &["--data-dir", s(&data), "--out", s(&out)],
    ));
    assert!(err.contains("t10k-labels-idx1-ubyte"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_run_with_a_relative_data_directory_resumes_on_the_same_data_from_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    shipped_mnist(&work.join("data1"));
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    // Uninterrupted reference, and a run stopped after its first epoch.
    assert!(
        train_in(&work, &["--data-dir", "data1", "--out", "reference"])
            .status
            .success()
    );
    let o = command()
        .current_dir(&work)
        .args(["train"])
        .args(SMALL)
        .args(["--data-dir", "data1", "--out", "run"])
        .env(nets::checkpoint::FAIL_WRITES_ENV, "checkpoint.bin@2")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let run = work.join("run");
    let recorded = std::fs::read_to_string(run.join("run.toml")).unwrap();
    assert!(
        recorded.contains(&format!("data_dir = \"{}\"", work.join("data1").display())),
        "{recorded}"
    );
    // Resumed from another working directory: the same data, the same
    // result.
    let o = approxtrain_in(&elsewhere, &["train", "--resume", s(&run)]);
    assert!(o.status.success());
    assert_eq!(
        metrics_without_seconds(&run),
        metrics_without_seconds(&work.join("reference"))
    );
}

#[test]
fn values_run_toml_cannot_hold_are_refused_before_a_directory_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for (flag, value) in [
        ("--seed", "9223372036854775808"),
        ("--batch-size", "1000000000000"),
        ("--epochs", "1000000000000"),
    ] {
        let err = failure_stderr(&approxtrain_in(
            tmp.path(),
            &[
                "train",
                "--net",
                "lenet300100",
                flag,
                value,
                "--out",
                s(&out),
            ],
        ));
        assert!(err.contains(flag) && err.contains(value), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!out.exists(), "{flag} {value}: a run directory was created");
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let bad = tmp.path().join(std::ffi::OsStr::from_bytes(b"data-\xff"));
        shipped_mnist(&bad);
        let o = command()
            .current_dir(tmp.path())
            .arg("train")
            .args(SMALL)
            .arg("--data-dir")
            .arg(&bad)
            .args(["--out", s(&out)])
            .output()
            .unwrap();
        let err = failure_stderr(&o);
        assert!(err.contains("--data-dir") && err.contains("UTF-8"), "{err}");
        assert!(
            !out.exists(),
            "non-UTF-8 --data-dir: a run directory was created"
        );
    }
}

/// Run `approxtrain args`, killing it after `limit`: `None` when it did
/// not answer in time.
fn answer_within(args: &[&str], limit: Duration) -> Option<std::process::Output> {
    let mut child = command()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    let _ = child.wait();
    None
}

#[test]
fn absurd_thread_counts_are_refused_at_once() {
    for args in [
        &["--threads", "100000", "models"][..],
        &["--threads", "100000", "train", "--net", "lenet5"],
        &["--threads", "0", "models"],
    ] {
        let o = answer_within(args, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("approxtrain {} did not answer", args.join(" ")));
        let err = failure_stderr(&o);
        assert!(err.contains(&format!("--threads {}", args[1])), "{err}");
    }
    // A sensible count still works, and `models` starts no pool.
    let o = answer_within(&["--threads", "3", "models"], Duration::from_secs(20)).unwrap();
    assert!(o.status.success());
}

#[test]
fn a_transformer_larger_than_memory_is_refused_with_its_size_and_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    let text = tmp.path().join("t.txt");
    std::fs::write(
        &text,
        "to be or not to be, that is the question. ".repeat(200),
    )
    .unwrap();
    let dataset = format!("text:{}", s(&text));
    let out = tmp.path().join("lm");
    let o = approxtrain(&[
        "train",
        "--net",
        "transformer",
        "--dataset",
        &dataset,
        "--width",
        "65536",
        "--heads",
        "4",
        "--context",
        "16",
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1), "ended by a signal (an abort)?");
    let err = failure_stderr(&o);
    assert!(
        err.contains("GB") && err.contains("--width 65536") && err.contains("smaller --width"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn smaller_input_errors_say_what_is_wrong_once() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // `--dataset text:` without a path lists text:PATH among the datasets.
    let err = failure_stderr(&approxtrain_in(
        d,
        &["train", "--net", "transformer", "--dataset", "text:"],
    ));
    assert!(err.contains("text:PATH"), "{err}");
    // Attention roles for a net without attention.
    let err = failure_stderr(&approxtrain_in(
        d,
        &[
            "train",
            "--net",
            "lenet5",
            "--multiplier",
            "fwd=fp32,attn_qk=mbm:7",
        ],
    ));
    assert!(
        err.contains("attn_qk") && err.contains("no attention"),
        "{err}"
    );
    // `lut build -o EXISTING` refuses without --force.
    std::fs::write(d.join("keep.lut"), b"precious").unwrap();
    let err = failure_stderr(&approxtrain_in(
        d,
        &[
            "lut", "build", "--model", "mbm", "--bits", "3", "-o", "keep.lut",
        ],
    ));
    assert!(err.contains("keep.lut") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(d.join("keep.lut")).unwrap(), b"precious");
    assert!(approxtrain_in(
        d,
        &["lut", "build", "--model", "mbm", "--bits", "3", "-o", "keep.lut", "--force"],
    )
    .status
    .success());
    // A file far larger than any table is refused by its size, unread.
    let big = d.join("big.lut");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let start = Instant::now();
    let err = failure_stderr(&approxtrain_in(d, &["lut", "show", "big.lut"]));
    assert!(
        err.contains("big.lut") && err.contains("larger than any table"),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    // An OS error is said once.
    let err = failure_stderr(&approxtrain_in(d, &["lut", "show", "missing.lut"]));
    assert_eq!(err.matches("(os error 2)").count(), 1, "{err}");
}
