//! The product clock of `amsim::timing`. In its own test binary, as one
//! test: the clock is process-wide, and product calls of tests running at
//! the same time would be counted too.

use std::time::{Duration, Instant};

use amsim::gemm::{gemm, MatMut, MatRef};
use amsim::timing::{product_nanos, reset, set_enabled, ProductTimer};
use amsim::Multiplier;

/// Nested timers count their span once (the total grows by at least the
/// sleep inside them and by no more than the wall time around them), and a
/// GEMM call is counted while the clock is on and not while it is off.
#[test]
fn product_clock_counts_nested_spans_once_and_only_while_enabled() {
    reset();
    let t0 = Instant::now();
    set_enabled(true);
    {
        let _outer = ProductTimer::start();
        let _inner = ProductTimer::start();
        std::thread::sleep(Duration::from_millis(20));
    }
    set_enabled(false);
    let counted = product_nanos();
    let span = t0.elapsed().as_nanos() as u64;
    assert!(counted >= 20_000_000, "counted {counted} ns");
    assert!(counted <= span, "counted {counted} ns of a {span} ns span");

    let (m, k, n) = (64, 64, 64);
    let a = vec![1.0f32; m * k];
    let b = vec![0.5f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let mut call = || {
        gemm(
            &Multiplier::Fp32,
            MatRef::row_major(&a, m, k).unwrap(),
            MatRef::row_major(&b, k, n).unwrap(),
            MatMut::row_major(&mut c, m, n).unwrap(),
            false,
        )
        .unwrap()
    };
    reset();
    call();
    assert_eq!(product_nanos(), 0, "counted while disabled");
    set_enabled(true);
    call();
    set_enabled(false);
    assert!(product_nanos() > 0, "a GEMM call was not counted");
    assert_eq!(c[0], 32.0);
}
