// Included by build.rs and by tests/build_script.rs: when the build says
// that it uses the committed bindings.

/// The model ABI header, relative to the package.
const ABI_HEADER: &str = "multipliers/approx_model.h";
/// The committed bindgen output, used where libclang is missing.
const COMMITTED_BINDINGS: &str = "src/bindings.rs";

/// The warning for a build that uses the committed bindings because bindgen
/// could not run (`why`), given when the header and the bindings were last
/// modified. Using them is the normal case on a machine without libclang and
/// says nothing; only a header changed after the bindings were generated
/// (the bindings may be stale) is worth a warning, with what to do.
fn committed_bindings_warning(
    header_modified: Option<std::time::SystemTime>,
    bindings_modified: Option<std::time::SystemTime>,
    why: &str,
) -> Option<String> {
    match (header_modified, bindings_modified) {
        (Some(header), Some(bindings)) if header > bindings => Some(format!(
            "{ABI_HEADER} changed after {COMMITTED_BINDINGS} was generated, and bindgen cannot \
             refresh it ({why}); install libclang (or set LIBCLANG_PATH) and build again"
        )),
        _ => None,
    }
}
