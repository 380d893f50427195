//! Helpers shared by the integration tests of the `approxtrain` binary and
//! its crate: the printed test seed, the shared datasets folder, and a
//! runner of the built binary that logs what it did.
//!
//! A test file includes it with `mod support;` (a file in a subdirectory of
//! `tests/` is not a test crate of its own).
// Each test crate uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A seed for a test's random inputs: [`amsim::test_seed`] (printed, and
/// replayed with `$APPROXTRAIN_TEST_SEED`).
pub fn test_seed() -> u64 {
    amsim::test_seed("this test")
}

/// A generator seeded with [`test_seed`].
pub fn test_rng() -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(test_seed())
}

/// The shared datasets folder: `$APPROXTRAIN_SHARED_DATA`, else
/// `../shared/datasets` next to the workspace. It may not exist; commands
/// given it then fall back to the MNIST subset shipped in the library.
pub fn shared_data_dir() -> PathBuf {
    std::env::var_os("APPROXTRAIN_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/datasets"))
}

/// The shared datasets folder when it holds `path` (relative to it).
pub fn shared_data_with(path: &str) -> Option<PathBuf> {
    let root = shared_data_dir();
    root.join(path).exists().then_some(root)
}

/// Run the built `approxtrain` with `args` and print the command, its exit
/// status and output (shown when the test fails). `APPROXTRAIN_DATA` is
/// removed from its environment so that only the flags choose the data.
pub fn approxtrain(args: &[&str]) -> Output {
    run_logged(&mut command(), args)
}

/// [`approxtrain`] in the working directory `cwd`.
pub fn approxtrain_in(cwd: &Path, args: &[&str]) -> Output {
    run_logged(command().current_dir(cwd), args)
}

/// The built `approxtrain` without `APPROXTRAIN_DATA` in its environment.
pub fn command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_approxtrain"));
    c.env_remove("APPROXTRAIN_DATA");
    c
}

fn run_logged(cmd: &mut Command, args: &[&str]) -> Output {
    let out = cmd.args(args).output().expect("run approxtrain");
    eprintln!(
        "approxtrain {}\n-- status {:?}\n-- stdout:\n{}\n-- stderr:\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The standard error of a command, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The standard output of a command, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The JSON rows (one per line) of a command's standard output.
pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row per line"))
        .collect()
}

/// The standard error of a command that must have failed.
pub fn failure_stderr(o: &Output) -> String {
    assert!(!o.status.success(), "the command succeeded");
    stderr(o)
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The rows of an image classifier run's `metrics.csv` (13 columns) with
/// the `seconds` column (the 12th) blanked, so that two runs can be
/// compared.
pub fn metrics_without_seconds(dir: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(dir.join("metrics.csv")).unwrap();
    r.records()
        .map(|rec| {
            let mut f: Vec<String> = rec.unwrap().iter().map(str::to_string).collect();
            assert_eq!(f.len(), 13, "{f:?}");
            f[11] = "_".into();
            f
        })
        .collect()
}

/// A text of random sentences over a small word list, `chars` characters
/// or a little more: structured enough that a tiny model learns it in a
/// few dozen steps.
pub fn random_text(rng: &mut impl rand::Rng, chars: usize) -> String {
    const WORDS: [&str; 12] = [
        "the", "king", "queen", "is", "dead", "long", "live", "and", "to", "be", "or", "not",
    ];
    let mut text = String::new();
    while text.len() < chars {
        let n = rng.gen_range(3..9);
        let sentence: Vec<&str> = (0..n)
            .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
            .collect();
        text.push_str(&sentence.join(" "));
        text.push_str(".\n");
    }
    text
}

/// Make `dir` a data directory holding `mnist/`: the subset shipped in the
/// repository (its `.gz` files). Returns `dir`.
pub fn shipped_mnist(dir: &Path) -> PathBuf {
    let mnist = dir.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("data-subset/mnist");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().ends_with(".gz") {
            std::fs::copy(entry.path(), mnist.join(entry.file_name())).unwrap();
        }
    }
    dir.to_path_buf()
}
