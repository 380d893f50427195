//! Quick timing of the GEMM engine: each multiplier against native FP32 in
//! the same process (best of a few runs: the least disturbed by other load), for iterating on the kernels.
//!
//! `cargo run --release -p amsim --example gemm_speed -- [M N K] [threads] [reps]`
//!
//! The numbers worth comparing are the ratios printed on one run; absolute
//! times move with whatever else the machine is doing. Benchmarks proper are
//! the criterion bench `benches/gemm.rs` and `approxtrain bench gemm`.

use std::sync::Arc;
use std::time::Instant;

use amsim::engine::Isa;
use amsim::gemm::{gemm, gemm_lut_with_isa, MatMut, MatRef};
use amsim::{Lut, Multiplier};

/// Mitchell's logarithmic multiplier, truncated to `bits` fraction bits.
fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let s = (a - 1.0) + (b - 1.0);
    let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
    f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
}

fn min_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[0]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (m, n, k) = match args.as_slice() {
        [m, n, k, ..] => (*m, *n, *k),
        _ => (1024, 1024, 1024),
    };
    let threads = args.get(3).copied().unwrap_or(2);
    let reps = args.get(4).copied().unwrap_or(5);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    // Values of the spread seen in training (exponents around 2^0).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
    };
    let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
    let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
    let mut c = vec![0.0f32; m * n];
    let av = MatRef::row_major(&a, m, k).unwrap();
    let bv = MatRef::row_major(&b, k, n).unwrap();
    eprintln!(
        "{m}x{k} by {k}x{n}, {threads} thread(s), isa {:?}, best of {reps}",
        Isa::detect()
    );
    let mut time = |mult: &Multiplier, isa: Option<Isa>| {
        pool.install(|| {
            min_secs(reps, || {
                let cv = MatMut::row_major(&mut c, m, n).unwrap();
                match (mult, isa) {
                    (Multiplier::Lut(l), Some(isa)) => {
                        gemm_lut_with_isa(isa, l, av, bv, cv, false).unwrap()
                    }
                    _ => gemm(mult, av, bv, cv, false).unwrap(),
                }
            })
        })
    };
    let fp32 = time(&Multiplier::Fp32, None);
    let gflops = 2.0 * (m * n * k) as f64 / fp32 / 1e9;
    println!("fp32       {:9.3} ms  ({gflops:.1} GFLOP/s)", fp32 * 1e3);
    let bf16 = time(&Multiplier::Bf16, None);
    println!(
        "bf16       {:9.3} ms  {:6.2}x fp32",
        bf16 * 1e3,
        bf16 / fp32
    );
    let only: Option<u32> = std::env::var("BITS").ok().and_then(|v| v.parse().ok());
    for bits in [4u32, 7, 8, 10, 11] {
        if only.is_some_and(|o| o != bits) {
            continue;
        }
        let lut = Multiplier::Lut(Arc::new(Lut::build("mitchell", mitchell, bits).unwrap()));
        let t = time(&lut, None);
        println!(
            "mitchell:{bits:<2} {:9.3} ms  {:6.2}x fp32",
            t * 1e3,
            t / fp32
        );
        if std::env::var("ALL_ISA").is_ok() {
            for isa in [Isa::Avx2, Isa::Portable] {
                let t = time(&lut, Some(isa));
                println!("  {isa:?} {:9.3} ms  {:6.2}x fp32", t * 1e3, t / fp32);
            }
        }
    }
}
