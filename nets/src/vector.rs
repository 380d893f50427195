//! Elementwise loops compiled for the widest vectors the CPU has.
//!
//! The crate is built for the baseline x86-64 (SSE2), where LLVM keeps
//! many of the batch-norm and reduction loops 4 lanes wide or scalar.
//! [`widened!`] defines a function whose body is also compiled with AVX2
//! and with AVX-512 enabled, and picks the widest at run time. Rust never
//! contracts `a * b + c` into a fused multiply-add and a loop keeps its
//! order of operations, so every version gives the same bits; only the
//! speed changes.
//!
//! Written here rather than with a multiversioning crate: the macro is a
//! dozen lines, and the functions it wraps call `#[inline(always)]` generic
//! helpers (such as the channel sums) that must be inlined into each
//! version to be widened with it.

/// Define `fn NAME(ARGS) -> RET { BODY }` compiled three times (baseline,
/// AVX2, AVX-512F), dispatching on the CPU at run time. Arguments are plain
/// `name: Type` pairs; no generics. The versions live in a module `NAME`
/// beside the function (`NAME::baseline` is the portable one, for tests).
macro_rules! widened {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $crate::vector::widened! { $(#[$meta])* $vis fn $name($($arg: $ty),*) -> () $body }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        #[allow(clippy::unused_unit)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features the version enables.
                    return unsafe { $name::avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: as above.
                    return unsafe { $name::avx2($($arg),*) };
                }
            }
            $name::baseline($($arg),*)
        }

        #[allow(clippy::too_many_arguments, clippy::unused_unit, unused_imports)]
        mod $name {
            use super::*;

            #[inline(always)]
            pub(super) fn baseline($($arg: $ty),*) -> $ret $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,avx")]
            pub(super) unsafe fn avx512($($arg: $ty),*) -> $ret {
                baseline($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,avx")]
            pub(super) unsafe fn avx2($($arg: $ty),*) -> $ret {
                baseline($($arg),*)
            }
        }
    };
}
pub(crate) use widened;
