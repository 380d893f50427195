//! AMSim: simulation of approximate floating-point multipliers.
//!
//! A multiplier model is a plain function `fn(f32, f32, u32) -> f32` (see
//! [`ModelFn`]); `amsim` never sees C. The model is tabulated once over all
//! pairs of truncated mantissas ([`Lut`]), and every product of the matrix
//! products and convolutions in this crate goes through [`product`] or a
//! kernel that is bit-exact with it.
//!
//! The arithmetic is normative and specified in `DESIGN.md` ("The
//! arithmetic"); [`product::amsim_mul`] is its executable definition.

pub mod accumulate;
pub mod batched;
pub mod bench;
pub mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_direct;
pub mod cuda;
pub mod engine;
pub mod error;
pub mod gemm;
pub mod int_conv;
#[cfg(target_arch = "x86_64")]
mod int_expand;
pub mod int_gemm;
pub mod int_lut;
pub mod int_metrics;
pub mod int_wide;
pub mod int_wide_conv;
pub mod lut;
pub mod lut_file;
pub mod metrics;
pub mod model;
pub mod multiplier;
pub mod nd;
pub mod product;
pub mod spec;
pub mod timing;
pub mod verify;

pub use error::{AmsimError, Result};

/// A seed for the random inputs of a test (this workspace's tests use it):
/// `$APPROXTRAIN_TEST_SEED` when set, else taken from the clock. Printed
/// with the test's name so that a failure can be replayed.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("APPROXTRAIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: APPROXTRAIN_TEST_SEED={seed} replays it");
    seed
}
pub use int_lut::IntLut;
pub use int_wide::WideIntMul;
pub use lut::{Lut, MAX_LUT_BITS};
pub use model::{IntModelFn, IntModelInfo, ModelFn, ModelInfo, WideIntModelFn, WideIntModelInfo};
pub use multiplier::{IntScheme, Multiplier, MultiplierPlan, Role};
pub use spec::{MultiplierSpec, PlanSpec};
