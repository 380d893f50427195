//! Sweep files: the cross product and its order, overrides, errors that
//! name the file and key, shards that partition the entries, and the start
//! mode of an interrupted entry.

use std::ops::ControlFlow;
use std::path::Path;

use experiments::run::{train, RunObserver, RunOutcome, StartMode};
use experiments::sweep::{start_mode, Shard, Sweep};

fn parse(text: &str) -> experiments::Result<Sweep> {
    Sweep::parse(Path::new("sweeps/test.toml"), text)
}

fn parse_err(text: &str) -> String {
    let e = parse(text).unwrap_err().to_string();
    assert!(
        e.contains("sweeps/test.toml"),
        "error does not name the file: {e}"
    );
    e
}

const LISTS: &str = r#"
nets = ["lenet5", "lenet300100"]
datasets = ["mnist", "fashion-mnist"]
multipliers = ["fp32", "mbm:7"]
seeds = [1, 2]
"#;

#[test]
fn entries_are_the_cross_product_nets_outermost_seeds_innermost() {
    let sweep = parse(&format!("epochs = 3\nbatch_size = 64\n{LISTS}")).unwrap();
    assert_eq!(sweep.entries.len(), 16);
    let ids: Vec<String> = sweep.entries.iter().map(|e| e.spec.run_id()).collect();
    assert_eq!(
        &ids[..5],
        &[
            "lenet5-mnist-fp32-s1",
            "lenet5-mnist-fp32-s2",
            "lenet5-mnist-mbm7-s1",
            "lenet5-mnist-mbm7-s2",
            "lenet5-fashion-mnist-fp32-s1",
        ]
    );
    assert_eq!(ids[8], "lenet300100-mnist-fp32-s1");
    assert_eq!(ids[15], "lenet300100-fashion-mnist-mbm7-s2");
    for (i, e) in sweep.entries.iter().enumerate() {
        assert_eq!(e.index, i);
        assert_eq!(e.spec.epochs, 3);
        assert_eq!(e.spec.batch_size, 64);
        // Unset fields keep the defaults of `approxtrain train`.
        assert_eq!(e.spec.optimizer.lr, 0.05);
    }
}

#[test]
fn overrides_set_fields_of_matching_entries_only_later_ones_winning() {
    let sweep = parse(&format!(
        r#"
epochs = 2
{LISTS}
[optimizer]
lr = 0.05
[[override]]
net = "lenet300100"
[override.set]
optimizer.lr = 0.1
epochs = 4

[[override]]
net = "lenet300100"
multiplier = "mbm:7"
[override.set]
optimizer = {{ lr = 1 }}
train_limit = 500
"#
    ))
    .unwrap();
    for e in &sweep.entries {
        let s = &e.spec;
        match (s.net.as_str(), s.multiplier.as_str()) {
            ("lenet5", _) => {
                assert_eq!((s.optimizer.lr, s.epochs, s.train_limit), (0.05, 2, None))
            }
            ("lenet300100", "fp32") => {
                assert_eq!((s.optimizer.lr, s.epochs, s.train_limit), (0.1, 4, None))
            }
            ("lenet300100", "mbm:7") => {
                assert_eq!(
                    (s.optimizer.lr, s.epochs, s.train_limit),
                    (1.0, 4, Some(500))
                )
            }
            other => panic!("unexpected entry {other:?}"),
        }
        // An override of one optimizer field keeps the others.
        assert_eq!(s.optimizer.momentum, 0.9);
    }
}

#[test]
fn errors_name_the_file_and_the_key() {
    let cases: &[(&str, &str)] = &[
        ("epochz = 2", "key 'epochz'"),
        ("[optimizer]\nlrr = 0.1", "key 'optimizer.lrr'"),
        (
            "[optimizer]\nlr = 0.1\nepochs = 2",
            "move it above the first [table]",
        ),
        ("epochs = \"two\"", "key 'epochs'"),
        ("multiplier = \"fp32\"", "key 'multiplier'"),
        ("threads = 4", "key 'threads'"),
    ];
    for (settings, key) in cases {
        let e = parse_err(&format!("{LISTS}\n{settings}"));
        assert!(e.contains(key), "{settings}: {e}");
    }
    let e = parse_err(&LISTS.replace("seeds = [1, 2]", "seeds = []"));
    assert!(e.contains("key 'seeds'") && e.contains("empty"), "{e}");
    let e = parse_err(&LISTS.replace("\"mbm:7\"", "\"mbm:77\""));
    assert!(
        e.contains("key 'multipliers'") && e.contains("mbm:77"),
        "{e}"
    );
    let e = parse_err(&LISTS.replace("nets = [\"lenet5\", \"lenet300100\"]\n", ""));
    assert!(e.contains("key 'nets'") && e.contains("missing"), "{e}");
    let e = parse_err(&format!(
        "{LISTS}[[override]]\nnet = \"resnet\"\n[override.set]\nepochs = 1\n"
    ));
    assert!(
        e.contains("key 'override[0]'") && e.contains("matches no entry"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{LISTS}[[override]]\nseed = 1\n[override.set]\nepochs = 1\n"
    ));
    assert!(e.contains("key 'override[0].seed'"), "{e}");
    let e = parse_err(&format!(
        "{LISTS}[[override]]\n[override.set]\noptimizer.momentum = true\n"
    ));
    assert!(
        e.contains("key 'override[0].set.optimizer.momentum'"),
        "{e}"
    );
    // Range errors of a spec name the entry.
    let e = parse_err(&format!("epochs = 0\n{LISTS}"));
    assert!(
        e.contains("lenet5-mnist-fp32-s1") && e.contains("epochs"),
        "{e}"
    );
    let e = parse_err(&LISTS.replace("\"lenet5\"", "\"lenet7\""));
    assert!(e.contains("lenet7"), "{e}");
}

#[test]
fn unknown_models_are_errors_naming_the_file_and_key() {
    let sweep = parse(LISTS).unwrap();
    let e = sweep.check_models(&[]).unwrap_err().to_string();
    assert!(
        e.contains("sweeps/test.toml") && e.contains("'multipliers'") && e.contains("mbm"),
        "{e}"
    );
    let fp32_only = LISTS.replace(", \"mbm:7\"", "");
    parse(&fp32_only).unwrap().check_models(&[]).unwrap();
}

#[test]
fn shards_partition_the_entries() {
    let sweep = parse(LISTS).unwrap();
    for count in 1..=5 {
        let mut seen = vec![0usize; sweep.entries.len()];
        for index in 0..count {
            let shard: Shard = format!("{index}/{count}").parse().unwrap();
            let entries = sweep.shard(shard);
            assert!(entries.len().abs_diff(sweep.entries.len() / count) <= 1);
            for e in entries {
                seen[e.index] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n == 1), "{count} shards: {seen:?}");
    }
    for bad in ["2/2", "3/2", "0/0", "1", "a/2", "-1/2", "1/0"] {
        assert!(bad.parse::<Shard>().is_err(), "{bad}");
    }
}

/// Stops the run after the first batch of epoch 2.
struct StopInEpoch2 {
    epoch: usize,
}
impl RunObserver for StopInEpoch2 {
    fn epoch_started(&mut self, e: &experiments::run::EpochStart) {
        self.epoch = e.epoch;
    }
    fn batch_done(&mut self, _: usize, _: usize, _: f64, _: usize) -> ControlFlow<()> {
        if self.epoch == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

#[test]
fn an_interrupted_entry_is_resumed_and_a_finished_one_is_left_alone() {
    let sweep = parse(
        r#"
epochs = 2
train_limit = 200
test_limit = 100
nets = ["lenet300100"]
datasets = ["mnist"]
multipliers = ["fp32"]
seeds = [1]
"#,
    )
    .unwrap();
    let spec = &sweep.entries[0].spec;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(spec.run_id());
    assert_eq!(start_mode(&dir), StartMode::New);
    let outcome = train(
        spec,
        &dir,
        StartMode::New,
        &[],
        &mut StopInEpoch2 { epoch: 0 },
    )
    .unwrap();
    assert!(matches!(
        outcome,
        RunOutcome::Interrupted {
            epochs_completed: 1
        }
    ));
    assert_eq!(start_mode(&dir), StartMode::Resume);
    let outcome = train(
        spec,
        &dir,
        start_mode(&dir),
        &[],
        &mut experiments::run::Silent,
    )
    .unwrap();
    assert!(
        matches!(outcome, RunOutcome::Finished(ref s) if s.epochs == 2),
        "{outcome:?}"
    );
    assert_eq!(start_mode(&dir), StartMode::New);
    let outcome = train(
        spec,
        &dir,
        start_mode(&dir),
        &[],
        &mut experiments::run::Silent,
    )
    .unwrap();
    assert!(
        matches!(outcome, RunOutcome::AlreadyFinished(_)),
        "{outcome:?}"
    );
}

#[test]
fn errors_name_the_line_of_the_offending_key() {
    // (file text, key named, its 1-based line)
    let cases: &[(&str, &str, usize)] = &[
        ("epochs = 2\nepochz = 3\n", "key 'epochz'", 7),
        (
            "[optimizer]\nlr = 0.1\n# a comment\nlrr = 0.2\n",
            "key 'optimizer.lrr'",
            9,
        ),
        (
            "[[override]]\nnet = \"lenet5\"\n[override.set]\nepochs = 1\n\
             [[override]]\nnet = \"lenet5\"\n[override.set]\noptimizer.momentum = true\n",
            "key 'override[1].set.optimizer.momentum'",
            13,
        ),
        (
            "[[override]]\nseed = 1\n[override.set]\nepochs = 1\n",
            "key 'override[0].seed'",
            7,
        ),
        (
            "schedule = { kind = \"cosine\", gamma = \"x\" }\n",
            "key 'schedule.gamma'",
            6,
        ),
    ];
    for (settings, key, line) in cases {
        // The lists take lines 1-4, line 5 is empty, the settings start
        // at line 6.
        let e = parse_err(&format!("{}\n{settings}", LISTS.trim_start()));
        assert!(
            e.contains(&format!("line {line}: {key}")),
            "{settings:?}: expected line {line}: {e}"
        );
    }
    // A TOML syntax error names its line too.
    let e = parse_err(&format!("{}\nepochs = = 2\n", LISTS.trim_start()));
    assert!(e.contains("line 6"), "{e}");
}

#[test]
fn excludes_drop_matching_entries_and_must_match_something() {
    let sweep = parse(&format!(
        "{LISTS}[[exclude]]\nnet = \"lenet300100\"\ndataset = \"fashion-mnist\"\n\
         [[exclude]]\nmultiplier = \"mbm:7\"\ndataset = \"mnist\"\n"
    ))
    .unwrap();
    let ids: Vec<String> = sweep.entries.iter().map(|e| e.spec.run_id()).collect();
    // 16 - 4 (lenet300100 on fashion-mnist) - 2 x 2 (mbm:7 on mnist) = 8.
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert!(ids
        .iter()
        .all(|id| !id.contains("mnist-mbm7") || id.contains("fashion")));
    assert!(!ids.iter().any(|id| id.starts_with("lenet300100-fashion")));
    for (i, e) in sweep.entries.iter().enumerate() {
        assert_eq!(e.index, i, "indices stay dense for the shards");
    }
    let e = parse_err(&format!("{LISTS}[[exclude]]\nnet = \"resnet18\"\n"));
    assert!(
        e.contains("'exclude[0]'") && e.contains("matches no entry"),
        "{e}"
    );
    let e = parse_err(&format!("{LISTS}[[exclude]]\n"));
    assert!(
        e.contains("'exclude[0]'") && e.contains("every entry"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{LISTS}[[exclude]]\nnet = \"lenet5\"\nepochs = 2\n"
    ));
    assert!(
        e.contains("'exclude[0].epochs'") && e.contains("unknown key"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{LISTS}[[exclude]]\nnets = [\"lenet5\"]\n[[exclude]]\nnet = \"lenet300100\"\n"
    ));
    assert!(e.contains("'exclude[0].nets'"), "{e}");
    let e = parse_err(&format!(
        "{LISTS}[[exclude]]\nnet = \"lenet5\"\n[[exclude]]\nnet = \"lenet300100\"\n"
    ));
    assert!(e.contains("drop every entry"), "{e}");
}

#[test]
fn fields_the_defaults_leave_out_can_be_set_and_are_type_checked() {
    let sweep = parse(&format!(
        "augment = true\nlabel_smoothing = 0.1\n{LISTS}[optimizer]\ndecay_bn_bias = true\n"
    ))
    .unwrap();
    for e in &sweep.entries {
        assert!(e.spec.augment && e.spec.optimizer.decay_bn_bias);
        assert_eq!(e.spec.label_smoothing, 0.1);
    }
    let e = parse_err(&format!("augment = 3\n{LISTS}"));
    assert!(e.contains("line 1: key 'augment'"), "{e}");
    let e = parse_err(&format!("{LISTS}[optimizer]\ndecay_bn_bias = \"yes\"\n"));
    assert!(e.contains("key 'optimizer.decay_bn_bias'"), "{e}");
}
