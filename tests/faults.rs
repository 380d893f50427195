//! Fault injection on `approxtrain train`: what survives a `kill -9`, a
//! full disk, a second process and a changed input. Every run is a small
//! LeNet-300-100 on the MNIST subset shipped in the repository (copied into
//! a data directory of the test), so the suite needs no shared data and
//! runs in well under two minutes.
//!
//! - `kill -9` at 20 random moments of a run, then `--resume`: the
//!   checkpoint and `metrics.csv` are byte-identical to an uninterrupted
//!   run's (the moments come from the printed seed);
//! - a full disk while the checkpoint or `metrics.csv` is written (an
//!   injected write failure, [`FAIL_WRITES_ENV`]): a clear error, no temp
//!   file left, the previous checkpoint intact, `run.toml` saying `failed`,
//!   and `--resume` finishes the run identically;
//! - a second process on the same run directory, new or `--resume`: refused
//!   while the first holds it;
//! - `--resume` after the `lut:` table, the data directory's files or the
//!   checkpoint's seed changed: refused naming the change, accepted with
//!   `--force`.
#![cfg(unix)]

mod support;

use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use nets::checkpoint::{Checkpoint, FAIL_WRITES_ENV};
use rand::Rng;
use support::{
    command, failure_stderr, metrics_without_seconds, s, shipped_mnist, stderr, test_rng,
};

/// The arguments of the small run into `out`: 3 epochs of 32 batches.
fn run_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--net",
        "lenet300100",
        "--data-dir",
        s(data),
        "--train-limit",
        "1024",
        "--test-limit",
        "300",
        "--batch-size",
        "32",
        "--epochs",
        "3",
        "--out",
        s(out),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    v.extend(extra.iter().map(|a| a.to_string()));
    v
}

fn run(args: &[String], envs: &[(&str, &str)]) -> Output {
    let mut c = command();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    eprintln!(
        "approxtrain {}\n-- status {:?}\n-- stderr:\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn spawn(args: &[String]) -> Child {
    command()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn resume(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train".to_string(), "--resume".into(), s(dir).into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    run(&args, &[])
}

/// What must be identical between two runs: the checkpoint's bytes and the
/// metrics without their wall-clock column.
fn result_of(dir: &Path) -> (Vec<u8>, Vec<Vec<String>>) {
    (
        std::fs::read(dir.join("checkpoint.bin")).unwrap(),
        metrics_without_seconds(dir),
    )
}

fn run_toml(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("run.toml")).unwrap_or_default()
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn kill_9_at_20_random_moments_then_resume_gives_the_uninterrupted_result_byte_for_byte() {
    let mut rng = test_rng();
    let tmp = tempfile::tempdir().unwrap();
    let data = shipped_mnist(&tmp.path().join("data"));
    let reference = tmp.path().join("reference");
    let started = Instant::now();
    assert!(run(&run_args(&data, &reference, &[]), &[]).status.success());
    let wall = started.elapsed();
    eprintln!("uninterrupted run: {} ms", wall.as_millis());
    let expected = result_of(&reference);
    for point in 0..20 {
        let dir = tmp.path().join(format!("killed-{point}"));
        let args = run_args(&data, &dir, &[]);
        let at = Duration::from_secs_f64(wall.as_secs_f64() * rng.gen_range(0.0..1.0));
        let mut child = spawn(&args);
        std::thread::sleep(at);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let state = run_toml(&dir);
        let completed = state
            .lines()
            .find(|l| l.starts_with("epochs_completed"))
            .unwrap_or("no run.toml yet")
            .to_string();
        eprintln!(
            "kill {point}: after {} ms ({status}): {completed}",
            at.as_millis()
        );
        let out = if state.is_empty() {
            // Killed before the run was recorded: start it again.
            run(&args, &[])
        } else {
            resume(&dir, &[])
        };
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
        assert!(run_toml(&dir).contains("status = \"finished\""));
        assert!(
            result_of(&dir) == expected,
            "kill {point} after {} ms: the resumed run differs from the uninterrupted one",
            at.as_millis()
        );
    }
}

/// A run whose write of `file` fails (disk full) at its `k`-th write:
/// a one-line error naming it, no temp file, `run.toml` says `failed`,
/// the checkpoint is the last completed epoch's, and `--resume` then
/// finishes the run as an uninterrupted one.
fn disk_full_during(file: &str, k: usize, checkpointed_epochs: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let data = shipped_mnist(&tmp.path().join("data"));
    let reference = tmp.path().join("reference");
    assert!(run(&run_args(&data, &reference, &[]), &[]).status.success());
    let dir = tmp.path().join("full");
    let fail = format!("{file}@{k}");
    let out = run(&run_args(&data, &dir, &[]), &[(FAIL_WRITES_ENV, &fail)]);
    let err = failure_stderr(&out);
    assert_eq!(
        err.trim().lines().last().map(|l| l.starts_with("error: ")),
        Some(true),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}.tmp")) && err.contains("No space left on device"),
        "{err}"
    );
    assert_eq!(err.matches("No space left on device").count(), 1, "{err}");
    assert!(
        temp_files(&dir).is_empty(),
        "left behind: {:?}",
        temp_files(&dir)
    );
    let state = run_toml(&dir);
    assert!(
        state.contains("status = \"failed\"") && state.contains("No space left on device"),
        "{state}"
    );
    assert!(
        state.contains(&format!("epochs_completed = {checkpointed_epochs}\n")),
        "{state}"
    );
    let ck = Checkpoint::load(&dir.join("checkpoint.bin")).unwrap();
    assert_eq!(ck.epoch, checkpointed_epochs);
    let out = resume(&dir, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        result_of(&dir) == result_of(&reference),
        "the resumed run differs"
    );
}

#[test]
fn disk_full_while_writing_the_checkpoint_keeps_the_previous_one_and_records_the_failure() {
    // The second checkpoint (epoch 2) fails.
    disk_full_during("checkpoint.bin", 2, 1);
}

#[test]
fn disk_full_while_writing_the_metrics_keeps_the_checkpoint_and_records_the_failure() {
    // Writes of metrics.csv: the header, then after epochs 1, 2: the third fails.
    disk_full_during("metrics.csv", 3, 1);
}

/// Send `signal` (STOP, CONT) to a process.
fn signal(child: &Child, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal}");
}

#[test]
fn a_second_process_on_a_run_directory_is_refused_while_the_first_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shipped_mnist(&tmp.path().join("data"));
    let reference = tmp.path().join("reference");
    assert!(run(&run_args(&data, &reference, &[]), &[]).status.success());
    let dir = tmp.path().join("shared");
    let args = run_args(&data, &dir, &[]);
    let mut first = spawn(&args);
    // Hold the first process still once it has recorded its run.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !run_toml(&dir).contains("status = \"running\"") {
        assert!(Instant::now() < deadline, "the first run never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&first, "STOP");
    let second = run(&args, &[]);
    let resumed = resume(&dir, &[]);
    let forced = run(&run_args(&data, &dir, &["--force"]), &[]);
    signal(&first, "CONT");
    assert!(first.wait().unwrap().success());
    for out in [second, resumed, forced] {
        let err = failure_stderr(&out);
        assert!(
            err.contains("another process is using this run directory")
                && err.contains(&format!("pid {}", first.id())),
            "{err}"
        );
    }
    assert!(
        result_of(&dir) == result_of(&reference),
        "a result was lost"
    );
}

/// A run stopped after its first epoch (its second checkpoint write fails).
fn interrupted_run(data: &Path, dir: &Path, extra: &[&str]) {
    let out = run(
        &run_args(data, dir, extra),
        &[(FAIL_WRITES_ENV, "checkpoint.bin@2")],
    );
    assert!(!out.status.success());
    assert!(
        run_toml(dir).contains("epochs_completed = 1"),
        "{}",
        run_toml(dir)
    );
}

#[test]
fn resume_refuses_a_changed_table_data_directory_or_seed_naming_it_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let data = shipped_mnist(&tmp.path().join("data"));
    let lut = tmp.path().join("t.lut");
    let lut_build = |model: &str| {
        let out = run(
            &[
                "lut",
                "build",
                "--model",
                model,
                "--bits",
                "5",
                "-o",
                s(&lut),
                "--force",
            ]
            .map(String::from),
            &[],
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };

    // The lut: table replaced between the runs.
    lut_build("mbm");
    let table_run = tmp.path().join("table");
    let plan = format!("lut:{}", s(&lut));
    interrupted_run(&data, &table_run, &["--multiplier", &plan]);
    lut_build("mitchell");
    let err = failure_stderr(&resume(&table_run, &[]));
    assert!(
        err.contains("table t.lut") && err.contains("--force"),
        "{err}"
    );
    assert!(resume(&table_run, &["--force"]).status.success());
    assert!(run_toml(&table_run).contains("status = \"finished\""));

    // The data directory's files changed: a label of the test set.
    let data_run = tmp.path().join("data-changed");
    interrupted_run(&data, &data_run, &[]);
    let other = tmp.path().join("other-data");
    let mnist = other.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    for f in std::fs::read_dir(data.join("mnist")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), mnist.join(f.file_name())).unwrap();
    }
    let labels = mnist.join("t10k-labels-idx1-ubyte.gz");
    let mut raw = Vec::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(std::fs::File::open(&labels).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    raw[8] = (raw[8] + 1) % 10;
    std::fs::remove_file(&labels).unwrap();
    std::fs::write(mnist.join("t10k-labels-idx1-ubyte"), &raw).unwrap();
    let err = failure_stderr(&resume(&data_run, &["--data-dir", s(&other)]));
    assert!(
        err.contains("data file t10k-labels-idx1-ubyte") && err.contains("--force"),
        "{err}"
    );
    // The same files in another folder are the same data.
    let moved = tmp.path().join("moved");
    std::fs::rename(&data, &moved).unwrap();
    assert!(resume(&data_run, &["--data-dir", s(&moved)])
        .status
        .success());
    std::fs::rename(&moved, &data).unwrap();

    // A checkpoint copied from a run of another seed.
    let seed1 = tmp.path().join("seed1");
    let seed2 = tmp.path().join("seed2");
    interrupted_run(&data, &seed1, &["--seed", "1"]);
    interrupted_run(&data, &seed2, &["--seed", "2"]);
    std::fs::copy(seed2.join("checkpoint.bin"), seed1.join("checkpoint.bin")).unwrap();
    let err = failure_stderr(&resume(&seed1, &[]));
    assert!(
        err.contains("saved by a run of seed 2, but this run has seed 1"),
        "{err}"
    );
}
