//! Run specs, run directories, CSV logs, plots and reports.
//!
//! A training run lives in one directory:
//! - `run.toml`: the [`spec::RunSpec`] (everything needed to repeat the run)
//!   and its [`spec::RunState`] (running, finished, diverged);
//! - `metrics.csv`: one [`metrics::MetricsRow`] per epoch;
//! - `checkpoint.bin`: the trainer state after the last completed epoch,
//!   from which `--resume` continues bit-exactly.
//!
//! [`run::train`] runs a spec in such a directory (fresh, resumed or
//! forced); [`plan_file`] reads per-layer multiplier plans; the CLI's
//! `approxtrain train` is a thin layer over these.
//!
//! The modules stack without cycles, each using only those above it:
//! - [`spec`]: what a run is, its [`Task`] (classifier or language model)
//!   told apart once from the network's name; [`plan_file`], [`metrics`];
//! - [`model`]: the network or Transformer of a spec, plans resolved;
//!   [`run_dir`]: the run directory's files, where a run starts, and the
//!   training loop with the recorder it writes through;
//! - [`run`] (classifier epochs) and [`lm`] (language-model steps): each
//!   task's period of training for that loop; [`eval`], [`lm_eval`], [`sensitivity`],
//!   [`energy`]: inference and costs of trained runs; [`checkpoint_eval`]:
//!   `approxtrain eval` of either task over [`eval`] and [`lm_eval`];
//! - [`opstats`]: operand statistics of a layer; [`report`]: tables;
//!   [`figure`]: every figure (the font, colours, the image writer, the
//!   heat map of a table); [`plot`]: a folder's summary, figures and report;
//!   [`sweep`]: many runs; [`mod@bench`]: timed training.
//!
//! Every file is written whole (temp file + rename, [`atomic`]), so an
//! interrupted run leaves the files of its last completed epoch.

pub mod atomic;
pub mod bench;
pub mod checkpoint_eval;
pub mod device;
pub mod energy;
pub mod error;
pub mod eval;
pub mod figure;
pub mod identity;
pub mod lm;
pub mod lm_eval;
pub mod metrics;
pub mod model;
pub mod opstats;
pub mod options;
pub mod plan_file;
pub mod plot;
pub mod report;
pub mod run;
pub mod run_dir;
pub mod sensitivity;
pub mod spec;
pub mod sweep;

pub use error::{ExperimentError, Result};
pub use metrics::{MetricsRow, METRICS_HEADER};
pub use plan_file::PlanFile;
pub use spec::{RunFile, RunSpec, RunState, RunStatus, Task};
