//! End-to-end tests of `approxtrain lut`, `characterize` and `verify`: the
//! built binary is run on the registered C models and on hand-made files.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use amsim::lut_file;
use amsim::Lut;
use support::test_seed;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_approxtrain"))
}

fn run(args: &[&str], dir: &Path) -> Output {
    bin()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run approxtrain")
}

fn ok(args: &[&str], dir: &Path) -> String {
    let out = run(args, dir);
    assert!(
        out.status.success(),
        "approxtrain {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Run a command that must fail cleanly: exit status 1, one line on stderr
/// starting with "error:" and containing every one of `needles`, no panic.
fn fails(args: &[&str], dir: &Path, needles: &[&str]) {
    let out = run(args, dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line expected, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(lines[0].contains(n), "{args:?}: '{n}' missing in: {stderr}");
    }
}

fn read_lut(path: PathBuf) -> Lut {
    lut_file::read(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn approxtrain_export_then_import_gives_the_built_native_table() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for model in ["mbm", "mitchell"] {
        for bits in ["1", "3", "5", "7"] {
            ok(
                &[
                    "lut", "export", "--model", model, "--bits", bits, "-o", "t.bin", "--force",
                ],
                d,
            );
            ok(
                &[
                    "lut",
                    "import",
                    "t.bin",
                    "--bits",
                    bits,
                    "--name",
                    model,
                    "-o",
                    "imported.lut",
                    "--force",
                ],
                d,
            );
            ok(
                &[
                    "lut",
                    "build",
                    "--model",
                    model,
                    "--bits",
                    bits,
                    "-o",
                    "built.lut",
                    "--force",
                ],
                d,
            );
            let imported = read_lut(d.join("imported.lut"));
            let built = read_lut(d.join("built.lut"));
            assert_eq!(imported, built, "{model} at {bits} bits");
            // Native export is the same file as build.
            ok(
                &[
                    "lut", "export", "--model", model, "--bits", bits, "--format", "native", "-o",
                    "n.lut", "--force",
                ],
                d,
            );
            assert_eq!(
                std::fs::read(d.join("n.lut")).unwrap(),
                std::fs::read(d.join("built.lut")).unwrap()
            );
        }
    }
}

#[test]
fn exported_tables_match_approxtrain_files_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // ApproxTrain's lut/MBM_3.bin.
    let mbm3: Vec<u8> = [
        [2, 2, 4, 4, 6, 6, 0x80, 0x80],
        [2, 2, 4, 4, 6, 6, 0x80, 0x80],
        [4, 4, 6, 6, 0x80, 0x80, 0x82, 0x82],
        [4, 4, 6, 6, 0x80, 0x80, 0x82, 0x82],
        [6, 6, 0x80, 0x80, 0x82, 0x82, 0x84, 0x84],
        [6, 6, 0x80, 0x80, 0x82, 0x82, 0x84, 0x84],
        [0x80, 0x80, 0x82, 0x82, 0x84, 0x84, 0x86, 0x86],
        [0x80, 0x80, 0x82, 0x82, 0x84, 0x84, 0x86, 0x86],
    ]
    .concat();
    // Default output name is ApproxTrain's.
    ok(&["lut", "export", "--model", "mbm", "--bits", "3"], d);
    assert_eq!(std::fs::read(d.join("MBM_3.bin")).unwrap(), mbm3);

    ok(&["lut", "export", "--model", "mbm", "--bits", "7"], d);
    let mbm7 = std::fs::read(d.join("MBM_7.bin")).unwrap();
    assert_eq!(mbm7.len(), 1 << 14);
    // DESIGN.md spot checks: 1 x 1 = 1.09375 (fraction 12/128), 1.5 x 1.5 =
    // 2.109375 (carry, fraction 7/128).
    assert_eq!(mbm7[0], 12);
    assert_eq!(mbm7[(64 << 7) | 64], 0x80 | 7);

    // The whole table against DESIGN.md's MBM formula in units of 2^-7:
    // fractions with the lowest kept bit forced to 1, c = 10 (2^-4 + 2^-6)
    // below S = 1, else 5 (2^-5 + 2^-7) unless S - 1 + c reaches 1.
    for i in 0..128u32 {
        for j in 0..128u32 {
            let s = (i | 1) + (j | 1);
            let byte = if s < 128 {
                let q = 128 + s + 10; // may reach 2 (256): renormalised
                if q >= 256 {
                    0x80 | ((q >> 1) - 128)
                } else {
                    q - 128
                }
            } else if s - 128 + 5 >= 128 {
                0x80 | (s - 128)
            } else {
                0x80 | (s + 5 - 128)
            };
            assert_eq!(mbm7[((i << 7) | j) as usize] as u32, byte, "[{i}][{j}]");
        }
    }

    ok(&["lut", "export", "--model", "mitchell", "--bits", "7"], d);
    let mit7 = std::fs::read(d.join("MIT_7.bin")).unwrap();
    // Mitchell: 1.5 x 1.5 gives S = 1, Q = 2S = 2; 1 x 1 = 1; 1.25 x 1.25
    // gives 1.5.
    assert_eq!(mit7[(64 << 7) | 64], 0x80);
    assert_eq!(mit7[0], 0);
    assert_eq!(mit7[(32 << 7) | 32], 64);

    // ACC_7.bin is the exact product truncated to 7 bits: both `exact` and
    // `bf16trunc` give it.
    ok(
        &[
            "lut",
            "export",
            "--model",
            "exact",
            "--bits",
            "7",
            "-o",
            "exact.bin",
        ],
        d,
    );
    ok(
        &[
            "lut",
            "export",
            "--model",
            "bf16trunc",
            "--bits",
            "7",
            "-o",
            "bf16.bin",
        ],
        d,
    );
    let exact = std::fs::read(d.join("exact.bin")).unwrap();
    assert_eq!(exact, std::fs::read(d.join("bf16.bin")).unwrap());
    for i in 0..128u32 {
        for j in 0..128u32 {
            let x = (128 + i) * (128 + j); // product in units of 2^-14
            let byte = if x >= 2 << 14 {
                0x80 | ((x >> 8) & 0x7f)
            } else {
                (x >> 7) & 0x7f
            };
            assert_eq!(exact[((i << 7) | j) as usize] as u32, byte, "[{i}][{j}]");
        }
    }
}

#[test]
fn malformed_lut_files_give_one_line_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        &[
            "lut", "build", "--model", "mitchell", "--bits", "3", "-o", "good.lut",
        ],
        d,
    );
    let good = std::fs::read(d.join("good.lut")).unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(d.join(name), bytes).unwrap();

    write("truncated.lut", &good[..good.len() - 1]);
    let mut trailing = good.clone();
    trailing.push(0);
    write("trailing.lut", &trailing);
    let mut magic = good.clone();
    magic[..8].copy_from_slice(b"NOTALUT!");
    write("magic.lut", &magic);
    let mut version = good.clone();
    version[8] = 9;
    write("version.lut", &version);
    let mut bits = good.clone();
    bits[12] = 30;
    write("bits.lut", &bits);
    let mut corrupt = good.clone();
    let last = corrupt.len() - 2;
    corrupt[last] ^= 0x10;
    write("corrupt.lut", &corrupt);
    write("odd.bin", &[0u8; 100]);
    write("MBM_5.bin", &[0u8; 64]);
    let mut stray = vec![0u8; 64];
    stray[3] = 0x20;
    write("stray.bin", &stray);

    let cases: [(&str, &[&str]); 10] = [
        ("truncated.lut", &["truncated.lut", "truncated"]),
        ("trailing.lut", &["trailing.lut", "1 trailing bytes"]),
        ("magic.lut", &["magic.lut", "wrong magic"]),
        (
            "version.lut",
            &["version.lut", "unsupported format version 9"],
        ),
        ("bits.lut", &["bits.lut", "bit width 30"]),
        ("corrupt.lut", &["corrupt.lut", "checksum mismatch"]),
        ("odd.bin", &["odd.bin", "not 4^m"]),
        ("MBM_5.bin", &["MBM_5.bin", "does not match a 5-bit"]),
        ("stray.bin", &["stray.bin", "byte 3"]),
        ("missing.lut", &["missing.lut"]),
    ];
    for (file, needles) in cases {
        fails(&["lut", "show", file], d, needles);
        fails(&["characterize", "--lut", file], d, needles);
    }
    fails(&["lut", "import", "odd.bin"], d, &["odd.bin", "not 4^m"]);
    // The good file still reads.
    let shown = ok(&["lut", "show", "good.lut"], d);
    assert!(
        shown.contains("mitchell") && shown.contains("verified"),
        "{shown}"
    );
}

#[test]
fn bad_models_and_widths_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails(
        &["lut", "build", "--model", "nosuch", "--bits", "7"],
        d,
        &["nosuch", "mbm"],
    );
    fails(
        &["lut", "build", "--model", "mbm", "--bits", "0"],
        d,
        &["bits"],
    );
    fails(
        &["lut", "build", "--model", "mbm", "--bits", "12"],
        d,
        &["12"],
    );
    fails(
        &["lut", "export", "--model", "mbm", "--bits", "8"],
        d,
        &["at most 7"],
    );
    fails(
        &["characterize", "--model", "nosuch", "--bits", "7"],
        d,
        &["nosuch"],
    );
    fails(
        &["verify", "--model", "nosuch", "--bits", "7"],
        d,
        &["nosuch"],
    );
    fails(&["verify", "--model", "mbm", "--bits", "12"], d, &["12"]);
    fails(
        &[
            "lut",
            "build",
            "--model",
            "mbm",
            "--bits",
            "7",
            "-o",
            "no/such/dir/x.lut",
        ],
        d,
        &["x.lut"],
    );
}

#[test]
fn characterize_mitchell_at_7_bits_reports_published_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let table = ok(
        &[
            "characterize",
            "--model",
            "mitchell",
            "--bits",
            "7",
            "--csv",
            "m.csv",
            "--heatmap",
            "m.png",
            "--pairs-csv",
            "p.csv",
        ],
        d,
    );
    assert!(table.contains("MRED"), "{table}");
    let csv = std::fs::read_to_string(d.join("m.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| -> f64 {
        let k = header.iter().position(|h| *h == name).unwrap();
        row[k].parse().unwrap()
    };
    // Mitchell (1962): mean error about -3.8 %, worst -11.1 % at 1.5 x 1.5.
    assert!((-0.0395..=-0.0375).contains(&col("mean_relative_error")));
    assert!((col("max_relative_error") + 1.0 / 9.0).abs() < 1e-6);
    assert_eq!(col("max_relative_error_ta"), 64.0);
    assert_eq!(col("pairs"), 16384.0);
    assert_eq!(
        std::fs::read_to_string(d.join("p.csv"))
            .unwrap()
            .lines()
            .count(),
        16385
    );
    let png = std::fs::read(d.join("m.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // The C model's table is the DESIGN.md formula: x = truncated
    // fractions, S = xa + xb, Q = 1 + S or 2S, fraction truncated.
    let lut = amsim::Lut::build(
        "mitchell",
        amsim::model::find(approxtrain::models::MODELS, "mitchell")
            .unwrap()
            .func,
        7,
    )
    .unwrap();
    for ta in 0..128u32 {
        for tb in 0..128u32 {
            let s = (ta + tb) as f32 / 128.0;
            let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
            assert_eq!(lut.get(ta, tb), q, "[{ta}][{tb}]");
        }
    }

    let exact = ok(&["characterize", "--model", "exact", "--bits", "7"], d);
    assert!(exact.contains("error rate             0.0000%"), "{exact}");
}

#[test]
fn verify_all_models_is_bit_exact_at_7_bits() {
    let dir = tempfile::tempdir().unwrap();
    let s = test_seed().to_string();
    let out = ok(
        &[
            "verify",
            "--all",
            "--bits",
            "7",
            "--samples",
            "20000",
            "--seed",
            &s,
        ],
        dir.path(),
    );
    let rows: Vec<&str> = out.lines().skip(2).collect();
    assert_eq!(
        rows.len(),
        approxtrain::models::MODELS
            .iter()
            .filter(|m| m.supports_bits(7))
            .count()
    );
    for row in rows {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[3], "0", "{row}");
        assert_eq!(fields[4], "100.0000%", "{row}");
    }
}

#[test]
fn every_command_has_help_with_an_example() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in [
        &["lut", "build", "--help"][..],
        &["lut", "export", "--help"],
        &["lut", "import", "--help"],
        &["lut", "show", "--help"],
        &["characterize", "--help"],
        &["verify", "--help"],
    ] {
        let out = ok(cmd, dir.path());
        assert!(out.contains("approxtrain "), "{cmd:?}: {out}");
        assert!(out.contains("Example"), "{cmd:?}: {out}");
    }
}

#[test]
fn integer_table_builds_round_trips_and_characterizes_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(&["lut", "build", "--model", "mul8s_trunc4"], d);
    assert!(
        out.contains("mul8s_trunc4.ilut") && out.contains("int8s"),
        "{out}"
    );
    let lut = amsim::IntLut::read(&d.join("mul8s_trunc4.ilut")).unwrap();
    let model = approxtrain::models::find_int("mul8s_trunc4").unwrap();
    assert_eq!(lut, amsim::IntLut::of(model).unwrap());

    let from_file = ok(
        &[
            "characterize",
            "--lut",
            "mul8s_trunc4.ilut",
            "--csv",
            "f.csv",
        ],
        d,
    );
    let from_model = ok(
        &[
            "characterize",
            "--model",
            "mul8s_trunc4",
            "--csv",
            "m.csv",
            "--heatmap",
            "m.png",
        ],
        d,
    );
    assert!(
        from_model.contains("MRED") && from_model.contains("WCE"),
        "{from_model}"
    );
    let csv = std::fs::read_to_string(d.join("m.csv")).unwrap();
    assert_eq!(csv, std::fs::read_to_string(d.join("f.csv")).unwrap());
    assert!(
        from_file.contains("WCE                    49 at (15, 15)"),
        "{from_file}"
    );
    assert!(std::fs::read(d.join("m.png"))
        .unwrap()
        .starts_with(b"\x89PNG"));
    let verified = ok(&["verify", "--model", "mul8u_BAM61"], d);
    assert!(verified.contains("65536          0"), "{verified}");
}

#[test]
fn integer_models_and_tables_reject_float_only_options_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails(
        &["lut", "build", "--model", "exact8s", "--bits", "7"],
        d,
        &["exact8s", "integer model", "leave out --bits 7"],
    );
    fails(
        &[
            "lut",
            "export",
            "--model",
            "exact8u",
            "--format",
            "approxtrain",
        ],
        d,
        &["exact8u", "--format native"],
    );
    fails(
        &[
            "characterize",
            "--model",
            "mul8u_drum4",
            "--pairs-csv",
            "p.csv",
        ],
        d,
        &["--pairs-csv", "integer table"],
    );
    ok(&["lut", "build", "--model", "exact8s", "-o", "e.ilut"], d);
    let bytes = std::fs::read(d.join("e.ilut")).unwrap();
    std::fs::write(d.join("short.ilut"), &bytes[..bytes.len() - 400]).unwrap();
    fails(
        &["characterize", "--lut", "short.ilut"],
        d,
        &["short.ilut", "truncated", "256 x 256"],
    );
}

#[test]
fn bench_gemm_times_int8_tables_against_the_fp32_row_of_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(
        &[
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
            "int8:mul8s_trunc4,int8:exact8u",
        ],
        dir.path(),
    );
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["multiplier"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["fp32", "int8:mul8s_trunc4", "int8:exact8u"],
        "{out}"
    );
    let fp32 = rows[0]["seconds"].as_f64().unwrap();
    for r in &rows[1..] {
        let ratio = r["ratio_vs_fp32"].as_f64().unwrap();
        let want = r["seconds"].as_f64().unwrap() / fp32;
        assert!((ratio - want).abs() <= 1e-9 * want, "{r}");
    }
    fails(
        &["bench", "gemm", "--multiplier", "int8:mul8u_none"],
        dir.path(),
        &["int8:mul8u_none", "exact8s"],
    );
}
