//! End-to-end tests of `approxtrain sweep`: a tiny sweep (LeNet-300-100 on
//! a few hundred MNIST images, fp32 and an AMSim table) run as two shards,
//! then rerun whole, which must skip every entry and leave the metrics
//! untouched; a diverged entry that does not stop the others; and an
//! unknown model, which stops the sweep before it starts.
//!
//! Data: the full MNIST from `../shared/datasets` (or
//! `$APPROXTRAIN_SHARED_DATA`) when present, else the shipped subset.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{approxtrain_in, command, shared_data_with, stderr, stdout, test_seed};

/// A sweep file of one epoch on 200 training and 100 test images.
fn write_sweep(dir: &Path, multipliers: &str) -> PathBuf {
    let data = shared_data_with("mnist")
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
        let o = approxtrain_in(
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

    let o = approxtrain_in(tmp.path(), &["sweep", file, "--out", "out", "--jobs", "2"]);
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
    let o = approxtrain_in(
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
    let o = approxtrain_in(
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
    let o = approxtrain_in(
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

/// Three entries of 2 epochs of 4 batches (256 training images, batch 64).
fn write_two_epoch_sweep(dir: &Path, seed: u64) -> PathBuf {
    let file = write_sweep(dir, r#"["fp32", "mitchell:7", "bf16"]"#);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("seeds = [1]", &format!("seeds = [{seed}]"))
        .replace("epochs = 1", "epochs = 2")
        .replace("train_limit = 200", "train_limit = 256\nbatch_size = 64");
    std::fs::write(&file, text).unwrap();
    file
}

/// `summary.csv` of `dir` with the wall-clock column zeroed.
fn summary_without_times(dir: &Path) -> Vec<experiments::MetricsRow> {
    let mut rows = experiments::metrics::read_metrics(&dir.join("summary.csv")).unwrap();
    for r in &mut rows {
        r.seconds = 0.0;
    }
    rows
}

#[test]
fn a_sweep_interrupted_mid_entry_and_rerun_in_two_shards_equals_the_uninterrupted_sweep() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = test_seed();
    let file = write_two_epoch_sweep(tmp.path(), seed);
    let file = file.to_str().unwrap();
    let first = format!("lenet300100-mnist-fp32-s{seed}");

    // Shard 0/2 (entries 0 and 2) dies in entry 0, batch 2 of epoch 2: the
    // process aborts, as under `kill -9`.
    let o = command()
        .args(["sweep", file, "--out", "split", "--shard", "0/2"])
        .current_dir(tmp.path())
        .env("APPROXTRAIN_TEST_ABORT_AFTER_BATCHES", "6")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), Some(6), "killed by SIGABRT: {err}");
    }
    assert!(err.contains("aborting after batch 2 of 4"), "{err}");
    let dir = tmp.path().join("split").join(&first);
    let state = std::fs::read_to_string(dir.join("run.toml")).unwrap();
    assert!(
        state.contains("status = \"running\"") && state.contains("epochs_completed = 1"),
        "{state}"
    );
    let rows = experiments::metrics::read_metrics(&dir.join("metrics.csv")).unwrap();
    assert_eq!(rows.len(), 1, "only the checkpointed epoch is recorded");
    assert!(!tmp
        .path()
        .join("split")
        .join(format!("lenet300100-mnist-bf16-s{seed}"))
        .exists());

    // Rerun the shard: the entry resumes from its checkpoint.
    let o = approxtrain_in(
        tmp.path(),
        &["sweep", file, "--out", "split", "--shard", "0/2"],
    );
    assert!(o.status.success());
    let s = stdout(&o);
    assert!(
        s.contains(&format!("{first}: resuming from its checkpoint")),
        "{s}"
    );
    assert!(s.contains("2 trained, 0 already finished, 0 failed"), "{s}");
    let o = approxtrain_in(
        tmp.path(),
        &["sweep", file, "--out", "split", "--shard", "1/2"],
    );
    assert!(o.status.success());
    assert!(approxtrain_in(tmp.path(), &["plot", "split"])
        .status
        .success());

    // The same sweep, uninterrupted, in one shard.
    let o = approxtrain_in(tmp.path(), &["sweep", file, "--out", "whole"]);
    assert!(o.status.success());
    assert!(approxtrain_in(tmp.path(), &["plot", "whole"])
        .status
        .success());

    let split = summary_without_times(&tmp.path().join("split"));
    let whole = summary_without_times(&tmp.path().join("whole"));
    assert_eq!(split.len(), 6, "3 entries x 2 epochs");
    assert_eq!(split, whole);
}

#[test]
fn a_run_directory_held_by_another_process_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(tmp.path(), r#"["fp32", "bf16"]"#);
    let file = file.to_str().unwrap();
    let held = tmp.path().join("out").join("lenet300100-mnist-fp32-s1");
    let lock = experiments::sweep::lock_run_dir(&held).unwrap();
    // A second holder in this process is refused too.
    let e = experiments::sweep::lock_run_dir(&held)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lenet300100-mnist-fp32-s1") && e.contains("another process"),
        "{e}"
    );

    let o = approxtrain_in(tmp.path(), &["sweep", file, "--out", "out"]);
    assert!(!o.status.success());
    let s = stdout(&o);
    assert!(
        s.contains("lenet300100-mnist-fp32-s1: ")
            && s.contains("another process is running this entry"),
        "{s}"
    );
    // Not a failure of this sweep: the other process is training it.
    assert!(
        s.contains("1 trained, 0 already finished, 0 failed, 1 run by another process"),
        "{s}"
    );
    assert!(
        stderr(&o).contains("being trained by another process"),
        "{}",
        stderr(&o)
    );
    assert!(
        !held.join("metrics.csv").exists(),
        "the held entry was written"
    );

    drop(lock);
    let o = approxtrain_in(tmp.path(), &["sweep", file, "--out", "out"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("1 trained, 1 already finished, 0 failed"));
}

#[test]
fn the_paper_sweep_has_the_approxtrain_experiments() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/paper.toml");
    let sweep = experiments::sweep::Sweep::read(&path).unwrap();
    sweep.check_models(approxtrain::models::MODELS).unwrap();
    let mut pairs: Vec<(String, String)> = sweep
        .entries
        .iter()
        .map(|e| (e.spec.net.clone(), e.spec.dataset.clone()))
        .collect();
    pairs.dedup();
    let expect = [
        ("lenet300100", "mnist"),
        ("lenet5", "mnist"),
        ("resnet18", "cifar10"),
        ("resnet34", "cifar10"),
        ("resnet50", "cifar10"),
    ];
    assert_eq!(
        pairs,
        expect
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(sweep.entries.len(), 20);
    for e in &sweep.entries {
        let s = &e.spec;
        assert!(["fp32", "bf16", "mbm:7", "mitchell:7"].contains(&s.multiplier.as_str()));
        assert!(
            s.train_limit.is_none() && s.test_limit.is_none(),
            "full datasets"
        );
        if s.dataset == "cifar10" {
            assert_eq!((s.epochs, s.batch_size), (200, 128));
            assert_eq!((s.optimizer.lr, s.optimizer.momentum), (0.1, 0.9));
            assert_eq!(s.optimizer.weight_decay, 5e-4);
            assert!(s.augment);
        } else {
            assert_eq!((s.epochs, s.batch_size, s.optimizer.lr), (10, 128, 0.05));
        }
    }
}

/// Writes an executable `sbatch` into `dir` that logs its arguments and
/// prints a job id.
#[cfg(unix)]
fn fake_sbatch(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("sbatch");
    std::fs::write(
        &path,
        "#!/bin/sh\necho \"$@\" >> \"$SBATCH_LOG\"\nn=$(wc -l < \"$SBATCH_LOG\")\necho \"$((1000 + n));cluster\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[cfg(unix)]
#[test]
fn the_slurm_script_submits_one_task_per_entry_then_the_plot_and_each_task_runs_its_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(tmp.path(), r#"["fp32", "mitchell:7", "bf16"]"#);
    let file = file.to_str().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-sweep.sh");
    let bin_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    fake_sbatch(&bin_dir);
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = tmp.path().join("sbatch.log");
    let run = |envs: &[(&str, &str)]| {
        let mut c = Command::new("bash");
        c.arg(&script)
            .args([file, "runs"])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .env("APPROXTRAIN", env!("CARGO_BIN_EXE_approxtrain"))
            .env("SBATCH_LOG", &log)
            .env_remove("APPROXTRAIN_DATA")
            .env_remove("SLURM_ARRAY_TASK_ID")
            .env_remove("APPROXTRAIN_SLURM_PLOT");
        for (k, v) in envs {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        eprintln!(
            "-- stdout:\n{}\n-- stderr:\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        o
    };

    // On the login node: the array of 3 tasks, then the plot after it.
    let o = run(&[]);
    assert!(o.status.success());
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].contains("--array=0-2") && calls[0].ends_with(&format!("{file} runs 3")),
        "{calls:?}"
    );
    assert!(
        calls[1].contains("--dependency=afterany:1001")
            && calls[1].contains("APPROXTRAIN_SLURM_PLOT=1"),
        "{calls:?}"
    );
    assert!(stdout(&o).contains("sweep array 1001 (3 tasks) and plot job 1002"));

    // What the tasks then run: shard I/3 each, and the plot.
    for task in ["0", "1", "2"] {
        let o = run(&[("SLURM_ARRAY_TASK_ID", task), ("SLURM_CPUS_PER_TASK", "1")]);
        assert!(o.status.success());
        assert!(stdout(&o).contains(&format!("(shard {task}/3)")));
    }
    let o = run(&[
        ("SLURM_ARRAY_TASK_ID", "0"),
        ("APPROXTRAIN_SLURM_PLOT", "1"),
    ]);
    assert!(o.status.success());
    let report = std::fs::read_to_string(tmp.path().join("runs/report.md")).unwrap();
    for plan in ["fp32", "mitchell:7", "bf16"] {
        assert!(
            report.contains(&format!("| `{plan}` | 1 | finished |")),
            "{report}"
        );
    }
    // A task beyond the shards is an error, not a silent success.
    let o = run(&[("SLURM_ARRAY_TASK_ID", "3")]);
    assert!(!o.status.success());
}

#[test]
fn a_bad_shard_is_an_error_naming_it_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write_sweep(tmp.path(), r#"["fp32"]"#);
    for bad in ["3/2", "0/0", "2/2", "1"] {
        let o = approxtrain_in(
            tmp.path(),
            &[
                "sweep",
                file.to_str().unwrap(),
                "--shard",
                bad,
                "--out",
                "out",
            ],
        );
        assert_eq!(o.status.code(), Some(2), "{bad}: a usage error");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("bad shard '{bad}'")) && err.contains("0 <= I < N"),
            "{err}"
        );
    }
    assert!(!tmp.path().join("out").exists(), "nothing may run");
}
