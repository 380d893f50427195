//! The build script's notice about the committed bindings: silent in the
//! normal case, a warning when the header changed after the bindings.

// The build script's own file: only the warning function is used here.
#![allow(dead_code)]
include!("../build/committed_bindings.rs");

use std::time::{Duration, SystemTime};

#[test]
fn committed_bindings_warn_only_when_the_header_is_newer() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let why = "libclang not available: couldn't find any valid shared libraries";
    assert_eq!(committed_bindings_warning(Some(t), Some(t), why), None);
    let older_header = t - Duration::from_secs(60);
    assert_eq!(
        committed_bindings_warning(Some(older_header), Some(t), why),
        None
    );
    assert_eq!(committed_bindings_warning(None, Some(t), why), None);
    let newer_header = t + Duration::from_secs(60);
    let w = committed_bindings_warning(Some(newer_header), Some(t), why).unwrap();
    assert!(
        w.contains(ABI_HEADER) && w.contains(COMMITTED_BINDINGS) && w.contains("libclang"),
        "{w}"
    );
    assert_eq!(w.lines().count(), 1, "{w}");
}
