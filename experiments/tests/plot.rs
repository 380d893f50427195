//! `plot_dir` on synthetic run directories written through the crate's own
//! writers: the merged `summary.csv`, the report's numbers, the figures, and
//! the errors for a folder without runs.

use std::path::Path;

use experiments::figure::training::{figure_size, Figure};
use experiments::metrics::{read_metrics, write_metrics};
use experiments::plot::plot_dir;
use experiments::{MetricsRow, RunFile, RunSpec, RunState, RunStatus, METRICS_HEADER};

/// Write a run directory at `dir` whose epoch `e` (1-based) has test
/// accuracy `accs[e - 1]` and takes `seconds` seconds.
fn write_run(
    dir: &Path,
    net: &str,
    multiplier: &str,
    seed: u64,
    accs: &[f32],
    seconds: f64,
    status: RunStatus,
) {
    std::fs::create_dir_all(dir).unwrap();
    let mut spec = RunSpec::with_defaults(net, "mnist");
    spec.multiplier = multiplier.into();
    spec.seed = seed;
    spec.epochs = accs.len();
    let run_id = spec.run_id();
    let rows: Vec<MetricsRow> = accs
        .iter()
        .enumerate()
        .map(|(i, &acc)| MetricsRow {
            run_id: run_id.clone(),
            net: net.into(),
            dataset: "mnist".into(),
            plan: spec.plan_label(),
            seed,
            epoch: i + 1,
            step: 10 * (i as u64 + 1),
            train_loss: 1.0 / (i as f32 + 2.0),
            train_accuracy: acc,
            test_loss: 0.5,
            test_accuracy: acc,
            seconds,
            macs: 1000,
        })
        .collect();
    // Written in reverse epoch order: the merge sorts.
    let reversed: Vec<MetricsRow> = rows.iter().rev().cloned().collect();
    write_metrics(&dir.join("metrics.csv"), &reversed).unwrap();
    RunFile {
        run: RunState {
            run_id,
            status,
            epochs_completed: accs.len(),
            test_accuracy: accs.last().copied(),
            data: None,
            message: (status == RunStatus::Diverged)
                .then(|| "training diverged at epoch 3 step 25: loss is NaN".to_string()),
            identity: None,
        },
        spec,
    }
    .write(&dir.join("run.toml"))
    .unwrap();
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let png = std::fs::read(path).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert_eq!(&png[12..16], b"IHDR");
    (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    )
}

#[test]
fn plot_dir_merges_runs_at_any_depth_and_reports_gaps_to_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let finished = RunStatus::Finished;
    // lenet5: fp32 reference, mbm:7 at two depths (shards), a diverged run.
    write_run(
        &root.join("a/l5-fp32"),
        "lenet5",
        "fp32",
        1,
        &[0.9, 0.98],
        2.0,
        finished,
    );
    write_run(
        &root.join("b/deep/l5-mbm"),
        "lenet5",
        "mbm:7",
        1,
        &[0.85, 0.9725],
        5.0,
        finished,
    );
    write_run(
        &root.join("l5-mit"),
        "lenet5",
        "mitchell:7",
        1,
        &[0.5, 0.1],
        3.0,
        RunStatus::Diverged,
    );
    // lenet300100: no fp32 run, so no gap.
    write_run(
        &root.join("l3-bf16"),
        "lenet300100",
        "bf16",
        2,
        &[0.95, 0.96, 0.97],
        1.0,
        finished,
    );
    // Not a run (no run.toml): ignored.
    std::fs::create_dir_all(root.join("notes")).unwrap();
    std::fs::write(root.join("notes/metrics.csv"), METRICS_HEADER).unwrap();

    let out = plot_dir(root, &[]).unwrap();
    assert_eq!((out.runs, out.rows), (4, 9));

    // summary.csv: the same header, every row, sorted by run id then epoch.
    let text = std::fs::read_to_string(root.join("summary.csv")).unwrap();
    assert_eq!(text.lines().next().unwrap(), METRICS_HEADER);
    let rows = read_metrics(&root.join("summary.csv")).unwrap();
    let keys: Vec<(String, usize)> = rows.iter().map(|r| (r.run_id.clone(), r.epoch)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 9);
    assert_eq!(keys[0], ("lenet300100-mnist-bf16-s2".to_string(), 1));
    assert_eq!(keys[8], ("lenet5-mnist-mitchell7-s1".to_string(), 2));

    // report.md: gap = (0.9725 - 0.98) * 100 = -0.75 points, slowdown 5/2.
    let report = std::fs::read_to_string(root.join("report.md")).unwrap();
    let line = |plan: &str| {
        report
            .lines()
            .find(|l| l.starts_with(&format!("| `{plan}` |")))
            .unwrap_or_else(|| panic!("no row for {plan} in\n{report}"))
            .to_string()
    };
    let mbm = line("mbm:7");
    assert!(mbm.contains("| 97.25% | -0.75 | 5.00 | 2.50x |"), "{mbm}");
    assert!(mbm.contains("[b/deep/l5-mbm](b/deep/l5-mbm/)"), "{mbm}");
    let fp32 = line("fp32");
    assert!(fp32.contains("| 98.00% | +0.00 | 2.00 | 1.00x |"), "{fp32}");
    let mit = line("mitchell:7");
    assert!(
        mit.contains("| diverged | 2 | diverged | - | 3.00 | 1.50x |"),
        "{mit}"
    );
    assert!(report.contains("loss is NaN"), "{report}");
    let bf16 = line("bf16");
    assert!(bf16.contains("| 97.00% | - | 1.00 | - |"), "{bf16}");
    assert!(report.contains("## lenet300100 on mnist") && report.contains("## lenet5 on mnist"));

    // Figures: PNG and SVG of each, linked from the report; two panels.
    for figure in Figure::ALL {
        let png = root.join(format!("{}.png", figure.stem()));
        assert_eq!(png_size(&png), figure_size(2));
        assert!(
            report.contains(&format!("]({}.png)", figure.stem())),
            "{report}"
        );
        let svg = std::fs::read_to_string(root.join(format!("{}.svg", figure.stem()))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains(figure.title()),
            "{}",
            &svg[..80]
        );
    }
    assert_eq!(figure_size(2), (1280, 480));
    // No temporary file is left behind.
    let hidden: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "{hidden:?}");

    // A second run gives the same summary (the report does not count
    // itself or summary.csv as runs).
    let again = plot_dir(root, &[]).unwrap();
    assert_eq!((again.runs, again.rows), (4, 9));
    assert_eq!(
        std::fs::read_to_string(root.join("summary.csv")).unwrap(),
        text
    );
}

#[test]
fn plot_dir_without_runs_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let e = plot_dir(tmp.path(), &[]).unwrap_err().to_string();
    assert!(
        e.contains("no run directories") && e.contains("run.toml"),
        "{e}"
    );
    let missing = tmp.path().join("missing");
    let e = plot_dir(&missing, &[]).unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("results folder"), "{e}");
}

#[test]
fn plot_dir_rejects_the_same_run_in_two_directories() {
    let tmp = tempfile::tempdir().unwrap();
    for shard in ["s0", "s1"] {
        let dir = tmp.path().join(shard).join("run");
        write_run(&dir, "lenet5", "fp32", 1, &[0.9], 1.0, RunStatus::Finished);
    }
    let e = plot_dir(tmp.path(), &[]).unwrap_err().to_string();
    assert!(
        e.contains("lenet5-mnist-fp32-s1") && e.contains("s0") && e.contains("s1"),
        "{e}"
    );
}

/// A test-only model: Mitchell's logarithmic product of the operands
/// truncated to `bits` (in [1, 4) for operands in [1, 2)), with declared
/// power and delay so that its energy per multiply is 2 mW x 0.5 ns = 1 pJ.
fn mitchell_like(a: f32, b: f32, bits: u32) -> f32 {
    let scale = (1u32 << bits) as f32;
    let xa = ((a - 1.0) * scale).floor() / scale;
    let xb = ((b - 1.0) * scale).floor() / scale;
    let s = xa + xb;
    if s < 1.0 {
        1.0 + s
    } else {
        2.0 * s
    }
}

fn declared_model() -> amsim::ModelInfo {
    amsim::ModelInfo {
        name: "cheap",
        description: "test model with declared figures",
        min_bits: 1,
        max_bits: 23,
        area_um2: 0.0,
        power_mw: 2.0,
        delay_ns: 0.5,
        func: mitchell_like,
    }
}

#[test]
fn plot_dir_draws_a_heat_map_per_table_and_an_energy_table_where_figures_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let finished = RunStatus::Finished;
    write_run(
        &root.join("fp32"),
        "lenet300100",
        "fp32",
        1,
        &[0.9],
        1.0,
        finished,
    );
    write_run(
        &root.join("cheap"),
        "lenet300100",
        "cheap:5",
        1,
        &[0.8],
        1.0,
        finished,
    );
    write_run(
        &root.join("bf16"),
        "lenet300100",
        "bf16",
        1,
        &[0.85],
        1.0,
        finished,
    );
    write_run(
        &root.join("mbm"),
        "lenet300100",
        "mbm:7",
        1,
        &[0.85],
        1.0,
        finished,
    );
    let models = [declared_model()];

    let out = plot_dir(root, &models).unwrap();
    // One heat map per table used, at its width; a model this build does
    // not have is named in the report instead.
    let heatmap = root.join("heatmap_cheap_5.png");
    assert_eq!(png_size(&heatmap), (960, 820));
    assert!(out.files.contains(&heatmap));
    assert!(!root.join("heatmap_mbm_7.png").exists());
    let report = std::fs::read_to_string(root.join("report.md")).unwrap();
    assert!(report.contains("## Multipliers"), "{report}");
    assert!(
        report.contains("![cheap:5 relative error](heatmap_cheap_5.png)"),
        "{report}"
    );
    assert!(
        report.contains("`mbm:7`: this approxtrain has no such C model"),
        "{report}"
    );
    // Mitchell's worst case at 5 bits is -1/9 = -11.111% (at xa = xb = 1/2).
    let row = report
        .lines()
        .find(|l| l.starts_with("| `cheap:5` | -"))
        .unwrap_or_else(|| panic!("no metrics row in\n{report}"));
    assert!(row.contains("| -11.111% |"), "{row}");

    // LeNet-300-100 on 28x28 inputs, per training image: forward and
    // weight gradient 784*300 + 300*100 + 100*10 each, input gradient
    // without the first layer.
    let forward = 784 * 300 + 300 * 100 + 100 * 10;
    let grad_input = 300 * 100 + 100 * 10;
    let train_pj = (2 * forward + grad_input) as f64; // 1 pJ each
    let fp32_pj = train_pj * experiments::energy::FP32_MULTIPLY_PJ;
    let energy = std::fs::read_to_string(root.join("energy.csv")).unwrap();
    let lines: Vec<&str> = energy.lines().collect();
    assert_eq!(lines.len(), 5, "header + 4 runs:\n{energy}");
    let cheap: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("lenet300100-mnist-cheap5-s1,"))
        .unwrap()
        .split(',')
        .collect();
    assert_eq!(
        &cheap[5..8],
        &[
            forward.to_string(),
            grad_input.to_string(),
            forward.to_string()
        ]
    );
    let num = |s: &str| s.parse::<f64>().unwrap();
    assert!((num(cheap[8]) - train_pj * 1e-6).abs() < 1e-12, "{cheap:?}");
    assert!((num(cheap[9]) - fp32_pj * 1e-6).abs() < 1e-12, "{cheap:?}");
    assert!((num(cheap[10]) - forward as f64 * 1e-6).abs() < 1e-12);
    // bf16 declares nothing: empty, not zero.
    let bf16 = lines.iter().find(|l| l.contains("-bf16-")).unwrap();
    assert_eq!(bf16.split(',').nth(8), Some(""), "{bf16}");
    // The report's row: the plan's figure, the fp32 one, their ratio.
    let row = report
        .lines()
        .find(|l| l.starts_with("| `cheap:5` |") && l.contains(&forward.to_string()))
        .unwrap_or_else(|| panic!("no energy row in\n{report}"));
    let ratio = format!("{:.3}", 1.0 / experiments::energy::FP32_MULTIPLY_PJ);
    // 563400 pJ = 0.563 µJ; x 3.7 = 2.08 µJ; inference 266200 pJ.
    assert_eq!(
        row,
        format!(
            "| `cheap:5` | {forward} | {grad_input} | {forward} | 0.563 | 2.08 | {ratio} \
             | 0.266 | 0.985 | {ratio} |"
        )
    );

    // Without figures there is no energy: no table, and the old file goes.
    plot_dir(root, &[]).unwrap();
    assert!(!root.join("energy.csv").exists());
    let report = std::fs::read_to_string(root.join("report.md")).unwrap();
    assert!(!report.contains("Energy of the multiplies"), "{report}");
    eprintln!("{report}");
}
