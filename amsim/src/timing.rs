//! A process-wide clock of the time spent in AMSim products, for
//! `approxtrain bench train`'s "share of time in products".
//!
//! Off by default; [`set_enabled`] turns it on. The entry points of the
//! matrix products and convolutions ([`crate::gemm::gemm`],
//! [`crate::conv::conv2d_forward`], [`crate::conv::conv2d_grad_input`],
//! [`crate::conv::conv2d_grad_weight`]) hold a [`ProductTimer`] while they
//! run. The clock counts wall time during which at least one product call
//! is in flight, so nested calls (a convolution lowered to GEMM) and calls
//! from several threads at once are counted once, and the share
//! `product_nanos / wall time` stays within [0, 1]. When disabled a timer
//! costs one relaxed atomic load.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// Product calls in flight.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// When the outermost call in flight started, in ns since [`origin`].
static STARTED: AtomicU64 = AtomicU64::new(0);
/// Accumulated ns with at least one call in flight.
static TOTAL: AtomicU64 = AtomicU64::new(0);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    origin().elapsed().as_nanos() as u64
}

/// Turn the clock on or off (it keeps its total).
pub fn set_enabled(on: bool) {
    origin();
    ENABLED.store(on, Ordering::SeqCst);
}

/// Nanoseconds counted so far.
pub fn product_nanos() -> u64 {
    TOTAL.load(Ordering::SeqCst)
}

/// Reset the total to zero.
pub fn reset() {
    TOTAL.store(0, Ordering::SeqCst);
}

/// Counts while alive (when the clock is enabled at creation).
#[must_use = "the timer counts until it is dropped"]
pub struct ProductTimer {
    armed: bool,
}

impl ProductTimer {
    /// Start timing one product call.
    #[inline]
    pub fn start() -> ProductTimer {
        if !ENABLED.load(Ordering::Relaxed) {
            return ProductTimer { armed: false };
        }
        if ACTIVE.fetch_add(1, Ordering::SeqCst) == 0 {
            STARTED.store(now_ns(), Ordering::SeqCst);
        }
        ProductTimer { armed: true }
    }
}

impl Drop for ProductTimer {
    fn drop(&mut self) {
        if self.armed && ACTIVE.fetch_sub(1, Ordering::SeqCst) == 1 {
            let started = STARTED.load(Ordering::SeqCst);
            TOTAL.fetch_add(now_ns().saturating_sub(started), Ordering::SeqCst);
        }
    }
}
