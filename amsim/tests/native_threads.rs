//! Native `fp32` / `bf16` GEMM runs on the current rayon pool and nowhere
//! else: inside a one-thread pool (what `approxtrain --threads 1` sets up)
//! it starts no thread of its own, whatever `MATMUL_NUM_THREADS` says.
//!
//! One test in its own test binary, so that no other test starts threads
//! while this one counts the process's threads (Linux, `/proc/self/task`).

#![cfg(target_os = "linux")]

use amsim::gemm::{gemm, MatMut, MatRef};
use amsim::Multiplier;

/// Threads of this process.
fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists the threads")
        .count()
}

#[test]
fn native_gemm_in_a_one_thread_pool_starts_no_threads() {
    // A threaded SGEMM that read this variable instead of the pool would
    // start two workers.
    std::env::set_var("MATMUL_NUM_THREADS", "2");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let before = threads_now();
    // Large enough for any SGEMM to thread: a square product and a long
    // weight-gradient-like one (split along k).
    let shapes = [(512, 512, 512), (144, 16, 65_536)];
    for mult in [Multiplier::Fp32, Multiplier::Bf16] {
        for (m, n, k) in shapes {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
            let mut c = vec![0.0f32; m * n];
            pool.install(|| {
                gemm(
                    &mult,
                    MatRef::row_major(&a, m, k).unwrap(),
                    MatRef::row_major(&b, k, n).unwrap(),
                    MatMut::row_major(&mut c, m, n).unwrap(),
                    false,
                )
                .unwrap()
            });
            // Exact in FP32 (small integers): the product really ran.
            let want: f32 = (0..k).map(|p| a[p] * b[p * n]).sum();
            assert_eq!(c[0], want, "{mult} {m}x{k}x{n}: C[0][0]");
        }
    }
    let after = threads_now();
    assert_eq!(
        after,
        before,
        "the native GEMM started {} thread(s) outside the one-thread pool",
        after as isize - before as isize
    );
    // The count does see a new thread (so the check above can fail).
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || rx.recv().ok());
    assert_eq!(threads_now(), before + 1, "a spawned thread is counted");
    drop(tx);
    t.join().unwrap();
}
