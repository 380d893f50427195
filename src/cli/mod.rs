//! One module per subcommand.
pub mod bench;
pub mod data;
pub mod eval;
pub mod lut;
pub mod models;
pub mod plot;
pub mod sample;
pub mod sensitivity;
pub mod stats;
pub mod sweep;
pub mod train;
