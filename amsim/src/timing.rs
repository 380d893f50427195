//! Two clocks for `approxtrain bench train`.
//!
//! The product clock ("share of time in products"): off by default;
//! [`set_enabled`] turns it on. The entry points of the matrix products and
//! convolutions ([`crate::gemm::gemm`], [`crate::batched::gemm_batched`],
//! [`crate::conv::conv2d_forward`], [`crate::conv::conv2d_grad_input`],
//! [`crate::conv::conv2d_grad_weight`]) hold a [`ProductTimer`] while they
//! run. The clock counts wall time during which at least one product call
//! is in flight, so nested calls (a convolution lowered to GEMM) and calls
//! from several threads at once are counted once, and the share
//! `product_nanos / wall time` stays within [0, 1]. When disabled a timer
//! costs one relaxed atomic load.
//!
//! The per-operation profile (`bench train --profile`): [`span`]s opened on
//! the thread that drives training ([`profile_thread`]) charge their
//! exclusive wall time to an [`Op`]; a product call is a span of
//! [`Op::Products`], and layers open spans around their own work.

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
    _span: Span,
}

impl ProductTimer {
    /// Start timing one product call.
    #[inline]
    pub fn start() -> ProductTimer {
        let _span = span(Op::Products);
        if !ENABLED.load(Ordering::Relaxed) {
            return ProductTimer {
                armed: false,
                _span,
            };
        }
        if ACTIVE.fetch_add(1, Ordering::SeqCst) == 0 {
            STARTED.store(now_ns(), Ordering::SeqCst);
        }
        ProductTimer { armed: true, _span }
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

/// What a span of a training step spends its time on, for the per-operation
/// breakdown of `approxtrain bench train --profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Matrix products and convolutions, minus their lowering.
    Products,
    /// Lowering a convolution to GEMM: column matrices, repacked weights,
    /// scattering the outputs back into images.
    Lowering,
    /// Bias additions and bias gradients of dense and convolution layers.
    Bias,
    /// Integer quantization of weights, activations and gradients, and the
    /// scaling of integer sums back to floats (quantized layers).
    Quantize,
    /// Batch norm and layer norm, forward and backward.
    Norm,
    /// ReLU and GELU, forward and backward.
    Activation,
    /// Max, average and global average pooling.
    Pooling,
    /// Residual additions, shortcuts, embeddings, reshapes.
    Residual,
    /// Attention outside its products: head reshapes, scale, mask, softmax.
    Attention,
    /// Softmax cross-entropy and its gradient.
    Loss,
    /// The optimizer step (and gradient clipping).
    Optimizer,
    /// Waiting for the next batch.
    Data,
}

impl Op {
    /// Every operation, in the order of the breakdown table.
    pub const ALL: [Op; 12] = [
        Op::Products,
        Op::Lowering,
        Op::Bias,
        Op::Quantize,
        Op::Norm,
        Op::Activation,
        Op::Pooling,
        Op::Residual,
        Op::Attention,
        Op::Loss,
        Op::Optimizer,
        Op::Data,
    ];

    /// The name in the breakdown table.
    pub fn name(self) -> &'static str {
        match self {
            Op::Products => "products",
            Op::Lowering => "lowering",
            Op::Bias => "bias",
            Op::Quantize => "quantize",
            Op::Norm => "norm",
            Op::Activation => "activation",
            Op::Pooling => "pooling",
            Op::Residual => "residual",
            Op::Attention => "attention",
            Op::Loss => "loss",
            Op::Optimizer => "optimizer",
            Op::Data => "data",
        }
    }
}

/// Exclusive nanoseconds per [`Op`] on the profiled thread.
static OP_NANOS: [AtomicU64; Op::ALL.len()] = [const { AtomicU64::new(0) }; Op::ALL.len()];

thread_local! {
    /// Whether this thread records spans, the open spans (innermost last)
    /// and when the innermost one last started or resumed.
    static PROFILE: std::cell::RefCell<ThreadProfile> =
        const { std::cell::RefCell::new(ThreadProfile { on: false, stack: Vec::new(), mark: 0 }) };
}

struct ThreadProfile {
    on: bool,
    stack: Vec<Op>,
    mark: u64,
}

impl ThreadProfile {
    /// Charge the time since the last mark to the innermost open span.
    fn charge(&mut self, now: u64) {
        if let Some(&op) = self.stack.last() {
            OP_NANOS[op as usize].fetch_add(now.saturating_sub(self.mark), Ordering::Relaxed);
        }
        self.mark = now;
    }
}

/// Record spans on the calling thread (the one that drives training) from
/// now on, or stop. Spans opened on other threads (inside a parallel loop)
/// are never recorded, so nothing is counted twice.
pub fn profile_thread(on: bool) {
    origin();
    PROFILE.with(|p| {
        let mut p = p.borrow_mut();
        p.on = on;
        p.stack.clear();
        p.mark = now_ns();
    });
}

/// Reset the per-operation totals to zero.
pub fn reset_profile() {
    for n in &OP_NANOS {
        n.store(0, Ordering::Relaxed);
    }
}

/// Exclusive seconds per operation so far, in [`Op::ALL`] order: the time
/// inside a span minus the time inside the spans opened within it.
pub fn profile() -> Vec<(Op, f64)> {
    Op::ALL
        .iter()
        .map(|&op| {
            (
                op,
                OP_NANOS[op as usize].load(Ordering::Relaxed) as f64 * 1e-9,
            )
        })
        .collect()
}

/// Open a span of `op`; it closes when dropped. Costs one thread-local
/// lookup when the thread is not profiled.
#[inline]
pub fn span(op: Op) -> Span {
    let armed = PROFILE
        .try_with(|p| {
            let mut p = p.borrow_mut();
            if !p.on {
                return false;
            }
            p.charge(now_ns());
            p.stack.push(op);
            true
        })
        .unwrap_or(false);
    Span { armed }
}

/// An open span (see [`span`]).
#[must_use = "the span counts until it is dropped"]
pub struct Span {
    armed: bool,
}

impl Drop for Span {
    fn drop(&mut self) {
        if self.armed {
            let _ = PROFILE.try_with(|p| {
                let mut p = p.borrow_mut();
                p.charge(now_ns());
                p.stack.pop();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_spans_count_exclusive_time_on_the_profiled_thread_only() {
        reset_profile();
        profile_thread(true);
        {
            let _outer = span(Op::Norm);
            std::thread::sleep(std::time::Duration::from_millis(20));
            {
                let _inner = span(Op::Products);
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
            // A span on another thread is not recorded.
            std::thread::spawn(|| {
                let _s = span(Op::Loss);
                std::thread::sleep(std::time::Duration::from_millis(10));
            })
            .join()
            .unwrap();
        }
        profile_thread(false);
        let got: std::collections::HashMap<&str, f64> = profile()
            .into_iter()
            .map(|(op, s)| (op.name(), s))
            .collect();
        assert!(got["products"] >= 0.030, "{got:?}");
        assert!(
            got["norm"] >= 0.030 && got["norm"] < got["products"] + 0.2,
            "{got:?}"
        );
        assert_eq!(got["loss"], 0.0, "{got:?}");
        // Exclusive: the outer span does not include the inner one twice.
        let total: f64 = got.values().sum();
        assert!(total < 0.5, "{got:?}");
    }
}
