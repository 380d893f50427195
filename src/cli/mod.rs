//! One module per subcommand.
pub mod bench;
pub mod data;
pub mod lut;
pub mod models;
pub mod plot;
pub mod sweep;
pub mod train;
