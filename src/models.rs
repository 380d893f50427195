//! Registry of the C multiplier models in `multipliers/`.
//!
//! `build.rs` compiles every `multipliers/NAME.c` and generates, from the
//! convention of `multipliers/approx_model.h`, the `extern "C"` declarations,
//! a safe wrapper `fn(f32, f32, u32) -> f32` per model and [`MODELS`], the
//! slice that `amsim`'s resolver and `approxtrain models` read. A `.c` file
//! dropped into `multipliers/` appears here after the next `cargo build`.

use std::ffi::CStr;

/// The Rust view of `multipliers/approx_model.h`, produced by bindgen at
/// build time where libclang is available and otherwise the committed copy
/// `src/bindings.rs` (kept identical by a test).
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]
pub mod abi {
    include!(concat!(env!("OUT_DIR"), "/approx_model_abi.rs"));
}

include!(concat!(env!("OUT_DIR"), "/model_registry.rs"));

/// Find a registered model by name; the error lists the known names.
pub fn find(name: &str) -> amsim::Result<&'static amsim::ModelInfo> {
    amsim::model::find(MODELS, name)
}

/// A model's C info record as compiled into the library, read through the
/// ABI at run time. [`MODELS`] is built from the same record read from the
/// source by `build.rs`; comparing the two catches a record the build script
/// misread.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledInfo {
    /// `.name`.
    pub name: String,
    /// `.description`.
    pub description: String,
    /// `.min_bits`.
    pub min_bits: u32,
    /// `.max_bits`.
    pub max_bits: u32,
    /// `.area_um2`.
    pub area_um2: f64,
    /// `.power_mw`.
    pub power_mw: f64,
    /// `.delay_ns`.
    pub delay_ns: f64,
}

impl CompiledInfo {
    /// The fields of a registry entry in the same form, for comparison.
    pub fn of(info: &amsim::ModelInfo) -> CompiledInfo {
        CompiledInfo {
            name: info.name.to_string(),
            description: info.description.to_string(),
            min_bits: info.min_bits,
            max_bits: info.max_bits,
            area_um2: info.area_um2,
            power_mw: info.power_mw,
            delay_ns: info.delay_ns,
        }
    }
}

/// The compiled C info records, in the order of [`MODELS`].
pub fn compiled_info_records() -> Vec<CompiledInfo> {
    raw_info_records()
        .into_iter()
        .map(|r| CompiledInfo {
            name: c_string(r.name),
            description: c_string(r.description),
            min_bits: r.min_bits,
            max_bits: r.max_bits,
            area_um2: r.area_um2,
            power_mw: r.power_mw,
            delay_ns: r.delay_ns,
        })
        .collect()
}

/// A C string of an info record (a null pointer reads as empty).
fn c_string(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: info records hold pointers to string literals: NUL-terminated
    // and alive for the whole program.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Find a registered 12- or 16-bit integer model by name; the error lists
/// the known names.
pub fn find_wide_int(name: &str) -> amsim::Result<&'static amsim::WideIntModelInfo> {
    amsim::model::find_wide_int(WIDE_INT_MODELS, name)
}

/// Find a registered integer model by name; the error lists the known names.
pub fn find_int(name: &str) -> amsim::Result<&'static amsim::IntModelInfo> {
    amsim::model::find_int(INT_MODELS, name)
}

/// An integer model's C info record as compiled into the library (its
/// fields that [`INT_MODELS`] carries), for comparison with what `build.rs`
/// read from the source.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledIntInfo {
    /// `.description`.
    pub description: String,
    /// `.area_um2`.
    pub area_um2: f64,
    /// `.power_mw`.
    pub power_mw: f64,
    /// `.delay_ns`.
    pub delay_ns: f64,
}

impl CompiledIntInfo {
    /// The fields of a registry entry in the same form, for comparison.
    pub fn of(info: &amsim::IntModelInfo) -> CompiledIntInfo {
        CompiledIntInfo {
            description: info.description.to_string(),
            area_um2: info.area_um2,
            power_mw: info.power_mw,
            delay_ns: info.delay_ns,
        }
    }

    /// The same for a 12- or 16-bit model.
    pub fn of_wide(info: &amsim::WideIntModelInfo) -> CompiledIntInfo {
        CompiledIntInfo {
            description: info.description.to_string(),
            area_um2: info.area_um2,
            power_mw: info.power_mw,
            delay_ns: info.delay_ns,
        }
    }
}

/// The compiled C records of the integer models, in the order of
/// [`INT_MODELS`], with `.name` (empty when the record leaves it out);
/// `None` for a model without a record.
pub fn compiled_int_info_records() -> Vec<Option<(String, CompiledIntInfo)>> {
    raw_int_info_records()
        .into_iter()
        .map(|r| {
            r.map(|r| {
                (
                    c_string(r.name),
                    CompiledIntInfo {
                        description: c_string(r.description),
                        area_um2: r.area_um2,
                        power_mw: r.power_mw,
                        delay_ns: r.delay_ns,
                    },
                )
            })
        })
        .collect()
}

/// The compiled C records of the 12- and 16-bit integer models, in the
/// order of [`WIDE_INT_MODELS`], as [`compiled_int_info_records`].
pub fn compiled_wide_int_info_records() -> Vec<Option<(String, CompiledIntInfo)>> {
    raw_wide_int_info_records()
        .into_iter()
        .map(|r| {
            r.map(|r| {
                (
                    c_string(r.name),
                    CompiledIntInfo {
                        description: c_string(r.description),
                        area_um2: r.area_um2,
                        power_mw: r.power_mw,
                        delay_ns: r.delay_ns,
                    },
                )
            })
        })
        .collect()
}
