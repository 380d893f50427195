//! The one error type of the crate. Messages are one line, name the offending
//! value or file, and where possible say what to do next.

use std::path::PathBuf;

/// Everything that can go wrong in `amsim`.
#[derive(Debug, thiserror::Error)]
pub enum AmsimError {
    /// A table width outside the supported range.
    #[error("bit width {bits} is out of range: LUT widths are 1..={max}")]
    BitsOutOfRange { bits: u32, max: u32 },

    /// A model returned something that is not a normal float in [1, 4) for a
    /// normal input pair while its table was being built.
    #[error("model '{model}' at {bits} bits returned {value:e} for the pair ({a}, {b}) (table index [{ta}][{tb}]); a model must return a normal float in [1, 4) for inputs in [1, 2)")]
    BadModelOutput {
        model: String,
        bits: u32,
        ta: u32,
        tb: u32,
        a: f32,
        b: f32,
        value: f32,
    },

    /// An integer model returned a product outside its 16-bit result type
    /// while its table was being built.
    #[error("integer model '{model}' returned {value} for the operands ({a}, {b}); an {kind} model's product must lie in {lo}..={hi} (its 16-bit result type)")]
    BadIntModelOutput {
        model: String,
        kind: &'static str,
        a: i32,
        b: i32,
        value: i32,
        lo: i32,
        hi: i32,
    },

    /// A model name that the registry does not know.
    #[error("unknown multiplier model '{name}'; known models: {known}")]
    UnknownModel { name: String, known: String },

    /// A malformed multiplier specification string.
    #[error("invalid multiplier spec '{spec}': {reason}")]
    BadSpec { spec: String, reason: String },

    /// A LUT file that cannot be read or is malformed.
    #[error("LUT file {}: {reason}", path.display())]
    BadLutFile { path: PathBuf, reason: String },

    /// An I/O error on a named file.
    /// (The OS error is in the message, not a separate source, so that a
    /// printed error chain says it once.)
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },

    /// Operands whose shapes or strides do not fit together or overrun their
    /// buffers.
    #[error("shape error: {0}")]
    Shape(String),

    /// The CUDA engine: a missing driver, library or GPU, a kernel that
    /// does not compile, a failed launch, device memory exhausted.
    #[error("CUDA: {0}")]
    Cuda(String),

    /// Anything else, with its own message.
    #[error("{0}")]
    Other(String),
}

/// Result with [`AmsimError`].
pub type Result<T, E = AmsimError> = std::result::Result<T, E>;

impl AmsimError {
    /// Shorthand for a shape error.
    pub fn shape(msg: impl Into<String>) -> Self {
        AmsimError::Shape(msg.into())
    }
}
