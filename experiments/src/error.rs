//! The one error type of the crate. Messages are one line and name the
//! offending value or file.

use std::path::PathBuf;

/// Everything that can go wrong while setting up, running or resuming an
/// experiment.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// An I/O error on a named file or directory.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (in the message, not a separate source, so
        /// that a printed error chain says it once).
        error: std::io::Error,
    },

    /// A file that exists but cannot be parsed.
    #[error("{}: {reason}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A plan file with a malformed multiplier spec under `key`.
    #[error("plan file {}: key '{key}': {error}", path.display())]
    BadPlanKey {
        /// The plan file.
        path: PathBuf,
        /// The TOML key holding the bad spec (`layers.fc3.dx`).
        key: String,
        /// Why the spec is malformed (in the message, not a separate source).
        error: amsim::AmsimError,
    },

    /// A per-layer plan for a layer the network does not have.
    #[error("{origin}: layer '{layer}' does not exist in {net}; its layers are: {valid}")]
    UnknownLayer {
        /// Where the layer name came from (a plan file, run.toml).
        origin: String,
        /// The unknown layer name.
        layer: String,
        /// The network.
        net: String,
        /// Comma-separated valid layer names.
        valid: String,
    },

    /// A network name that is not known.
    #[error("unknown net '{name}'; valid nets: {valid}")]
    UnknownNet {
        /// The name given.
        name: String,
        /// Comma-separated valid names.
        valid: String,
    },

    /// A dataset name that is not known.
    #[error("unknown dataset '{name}'; valid datasets: {valid}")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// Comma-separated valid names.
        valid: String,
    },

    /// A run specification that is inconsistent (zero epochs, bad optimizer
    /// settings, ...).
    #[error("invalid run spec: {0}")]
    BadSpec(String),

    /// The output directory holds a run with a different specification.
    #[error("{}: holds a different run ({differences}); choose another output directory, or delete this one", dir.display())]
    SpecMismatch {
        /// The run directory.
        dir: PathBuf,
        /// Which fields differ, `field: old -> new`.
        differences: String,
    },

    /// `--resume` on a directory without a resumable run.
    #[error("{}: nothing to resume: {reason}", dir.display())]
    NotResumable {
        /// The run directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },

    /// A run directory another process holds ([`crate::run_dir::lock_run_dir`]).
    #[error("{}: another process is using this run directory ({owner}); wait for it to end, or choose another directory", dir.display())]
    Locked {
        /// The run directory.
        dir: PathBuf,
        /// Who holds it (`pid N`).
        owner: String,
    },

    /// `--resume` of a run whose data, tables, checkpoint or code are not
    /// those it was recorded with.
    #[error("{}: the run was recorded with other inputs: {changes}; resume anyway (recording the new ones) with --resume {} --force, or start a new run in another directory", dir.display(), dir.display())]
    RunChanged {
        /// The run directory.
        dir: PathBuf,
        /// What changed, `what: old -> new`, separated by `; `.
        changes: String,
    },

    /// An error of the simulator (bad multiplier spec, missing model, ...).
    #[error(transparent)]
    Amsim(#[from] amsim::AmsimError),

    /// An error of the networks crate (shapes, checkpoints).
    #[error(transparent)]
    Nets(#[from] nets::NetError),

    /// A dataset that cannot be found or read.
    #[error(transparent)]
    Data(#[from] nets::data::DataError),

    /// Anything else, with its own message.
    #[error("{0}")]
    Other(String),
}

/// Result with [`ExperimentError`].
pub type Result<T, E = ExperimentError> = std::result::Result<T, E>;

impl ExperimentError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        ExperimentError::Io {
            path: path.into(),
            error,
        }
    }
}
