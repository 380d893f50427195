//! The error type of the network crate. Messages are one line and name the
//! offending layer, value or file.

use std::path::PathBuf;

use amsim::AmsimError;

use crate::data::DataError;

/// Everything that can go wrong while building, running or training a
/// network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A GEMM or convolution in `amsim` rejected its operands.
    #[error(transparent)]
    Amsim(#[from] AmsimError),

    /// A dataset could not be loaded.
    #[error(transparent)]
    Data(#[from] DataError),

    /// A tensor whose shape does not fit the layer or operation.
    #[error("shape error: {0}")]
    Shape(String),

    /// A layer name that the network does not have.
    #[error("network '{net}' has no layer '{name}'; its layers with multipliers are: {valid}")]
    UnknownLayer {
        /// The network's name.
        net: String,
        /// The name asked for.
        name: String,
        /// The names that exist, comma separated.
        valid: String,
    },

    /// A network name that [`crate::model::Network::by_name`] does not know.
    #[error("unknown network '{name}'; known networks: {known}")]
    UnknownNetwork {
        /// The name asked for.
        name: String,
        /// The known names, comma separated.
        known: String,
    },

    /// An invalid hyper-parameter or configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The training loss became NaN or infinite: training has diverged. The
    /// caller records this and stops; the parameters are those after the
    /// last finite step.
    #[error("training diverged: loss is {loss} at epoch {epoch}, batch {batch}; try a smaller learning rate")]
    NonFiniteLoss {
        /// Zero-based epoch.
        epoch: usize,
        /// Zero-based batch within the epoch.
        batch: usize,
        /// The offending loss value.
        loss: f32,
    },

    /// A checkpoint file that is malformed or does not match the network.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// An I/O error on a named file.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message, not a separate source, so that a
        /// printed error chain says it once).
        error: std::io::Error,
    },
}

/// Result with [`NetError`].
pub type Result<T, E = NetError> = std::result::Result<T, E>;

impl NetError {
    /// Shorthand for a shape error.
    pub fn shape(msg: impl Into<String>) -> Self {
        NetError::Shape(msg.into())
    }
}
