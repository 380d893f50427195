//! End-to-end tests of `approxtrain sweep`: a tiny sweep (LeNet-300-100 on
//! a few hundred MNIST images, fp32 and an AMSim table) run as two shards,
//! then rerun whole, which must skip every entry and leave the metrics
//! untouched; a diverged entry that does not stop the others; and an
//! unknown model, which stops the sweep before it starts.
//!
//! Data: the full MNIST from `../shared/datasets` (or
//! `$APPROXTRAIN_SHARED_DATA`) when present, else the shipped subset.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("APPROXTRAIN_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"));
    dir.join("mnist").is_dir().then_some(dir)
}

fn approxtrain(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_approxtrain"))
        .args(args)
        .current_dir(cwd)
        .env_remove("APPROXTRAIN_DATA")
        .output()
        .expect("run approxtrain");
    eprintln!(
        "approxtrain {}\n-- status {:?}\n-- stdout:\n{}\n-- stderr:\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A sweep file of one epoch on 200 training and 100 test images.
fn write_sweep(dir: &Path, multipliers: &str) -> PathBuf {
    let data = data_dir()
        .map(|d| format!("data_dir = {:?}\n", d.display().to_string()))
        .unwrap_or_default();
    let text = format!(
        "nets = [\"lenet300100\"]\ndatasets = [\"mnist\"]\nmultipliers = {multipliers}\n\
         seeds = [1]\nepochs = 1\ntrain_limit = 200\ntest_limit = 100\n{data}"
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn shards_run_disjoint_entries_and_a_rerun_skips_finished_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(tmp.path(), r#"["fp32", "mitchell:7"]"#);
    let file = file.to_str().unwrap();
    let ids = [
        "lenet300100-mnist-fp32-s1",
        "lenet300100-mnist-mitchell7-s1",
    ];

    for (shard, id) in ["0/2", "1/2"].iter().zip(ids) {
        let o = approxtrain(
            tmp.path(),
            &["sweep", file, "--out", "out", "--shard", shard],
        );
        assert!(o.status.success());
        let s = stdout(&o);
        assert!(s.contains(&format!("{id}: finished")), "{s}");
        assert_eq!(s.matches(": finished:").count(), 1, "{s}");
        assert!(s.contains("1 trained, 0 already finished, 0 failed"), "{s}");
    }
    let metrics: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| std::fs::read(tmp.path().join("out").join(id).join("metrics.csv")).unwrap())
        .collect();
    for m in &metrics {
        assert_eq!(
            String::from_utf8_lossy(m).lines().count(),
            2,
            "header + 1 epoch"
        );
    }

    let o = approxtrain(tmp.path(), &["sweep", file, "--out", "out", "--jobs", "2"]);
    assert!(o.status.success());
    let s = stdout(&o);
    for id in ids {
        assert!(
            s.contains(&format!("{id}: already finished, skipped")),
            "{s}"
        );
    }
    assert!(s.contains("0 trained, 2 already finished, 0 failed"), "{s}");
    for (id, before) in ids.iter().zip(&metrics) {
        let after = std::fs::read(tmp.path().join("out").join(id).join("metrics.csv")).unwrap();
        assert_eq!(&after, before, "{id}: metrics.csv changed on rerun");
    }
}

#[test]
fn a_diverged_entry_is_reported_and_the_sweep_goes_on_exiting_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(tmp.path(), r#"["bf16", "fp32"]"#);
    // A learning rate of 1e30 makes the loss NaN within a few steps.
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(
        "[[override]]\nmultiplier = \"bf16\"\n[override.set]\noptimizer.lr = 1e30\n\
         schedule = { kind = \"constant\", warmup_epochs = 0 }\n",
    );
    std::fs::write(&file, text).unwrap();
    let o = approxtrain(
        tmp.path(),
        &["sweep", file.to_str().unwrap(), "--out", "out"],
    );
    assert!(!o.status.success());
    let s = stdout(&o);
    assert!(s.contains("lenet300100-mnist-bf16-s1: diverged"), "{s}");
    assert!(s.contains("lenet300100-mnist-fp32-s1: finished"), "{s}");
    assert!(s.contains("1 trained, 0 already finished, 1 failed"), "{s}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("1 of 2 entries failed")
            && err.contains("lenet300100-mnist-bf16-s1: diverged"),
        "{err}"
    );

    // A rerun leaves the diverged entry alone and still fails.
    let o = approxtrain(
        tmp.path(),
        &["sweep", file.to_str().unwrap(), "--out", "out"],
    );
    assert!(!o.status.success());
    let s = stdout(&o);
    assert!(s.contains("bf16-s1: diverged in an earlier run"), "{s}");
    assert!(s.contains("0 trained, 1 already finished, 1 failed"), "{s}");
}

#[test]
fn an_unknown_model_stops_the_sweep_before_any_entry_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(tmp.path(), r#"["fp32", "nosuchmodel:7"]"#);
    let o = approxtrain(
        tmp.path(),
        &["sweep", file.to_str().unwrap(), "--out", "out"],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tiny.toml") && err.contains("'multipliers'") && err.contains("nosuchmodel"),
        "{err}"
    );
    assert!(!tmp.path().join("out").exists(), "nothing may run");
}

#[test]
fn the_quickstart_sweep_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/quickstart.toml");
    let sweep = experiments::sweep::Sweep::read(&path).unwrap();
    let plans: Vec<&str> = sweep
        .entries
        .iter()
        .map(|e| e.spec.multiplier.as_str())
        .collect();
    assert_eq!(plans, ["fp32", "bf16", "mbm:7", "mitchell:7"]);
    assert!(sweep
        .entries
        .iter()
        .all(|e| e.spec.net == "lenet5" && e.spec.epochs == 2 && e.spec.data_dir.is_none()));
}
