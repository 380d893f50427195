//! The approxtrain CLI package: the C multiplier models compiled by
//! `build.rs` and their registry.
pub mod fetch;
pub mod models;
