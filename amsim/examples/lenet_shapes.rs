//! Timing of the small GEMMs of LeNet training (batch 128) in the layouts
//! that `conv.rs` and the dense layer pass to the engine, each against
//! native FP32 in the same process (best of a few runs), for tuning the
//! engine's plan on small shapes.
//!
//! `cargo run --release -p amsim --example lenet_shapes -- [NAME-FILTER]`;
//! with `CHECK=1` each shape is also compared with the scalar reference bit
//! for bit. Compare the ratios of one run: the absolute times move with
//! other load on the machine.
use std::sync::Arc;
use std::time::Instant;

use amsim::gemm::{gemm, gemm_reference, MatMut, MatRef};
use amsim::{Lut, Multiplier};

fn mitchell(a: f32, b: f32, bits: u32) -> f32 {
    let s = (a - 1.0) + (b - 1.0);
    let q = if s < 1.0 { 1.0 + s } else { 2.0 * s };
    f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
}

fn main() {
    let reps = 7;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 4.0
    };
    let lut = Multiplier::Lut(Arc::new(Lut::build("mitchell", mitchell, 7).unwrap()));
    // (name, m, n, k, a col-major?, b col-major?, c col-major?)
    let shapes = [
        ("conv1 fwd", 100352, 6, 25, true, true, true),
        ("conv1 gw", 25, 6, 100352, false, true, true),
        ("conv2 fwd", 12800, 16, 150, true, true, true),
        ("conv2 gi", 25088, 6, 400, true, false, true),
        ("conv2 gw", 150, 16, 12800, false, true, true),
        ("fc1 fwd", 128, 300, 784, false, false, false),
        ("fc1 dw", 784, 300, 128, true, false, false),
        ("fc2 fwd", 128, 100, 300, false, false, false),
        ("fc2 dw", 300, 100, 128, true, false, false),
        ("fc2 dx", 128, 300, 100, false, true, false),
        ("l5fc1 fwd", 128, 120, 400, false, false, false),
        ("l5fc1 dw", 400, 120, 128, true, false, false),
        ("l5fc1 dx", 128, 400, 120, false, true, false),
        ("l5fc2 fwd", 128, 84, 120, false, false, false),
        ("l5fc2 dw", 120, 84, 128, true, false, false),
        ("l5fc2 dx", 128, 120, 84, false, true, false),
    ];
    let filter = std::env::args().nth(1);
    for (name, m, n, k, acm, bcm, ccm) in shapes {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
        let mut c = vec![0.0f32; m * n];
        let av = if acm {
            MatRef::new(&a, m, k, 1, m)
        } else {
            MatRef::new(&a, m, k, k, 1)
        }
        .unwrap();
        let bv = if bcm {
            MatRef::new(&b, k, n, 1, k)
        } else {
            MatRef::new(&b, k, n, n, 1)
        }
        .unwrap();
        let (crs, ccs) = if ccm { (1, m) } else { (n, 1) };
        let mut time = |mult: &Multiplier| {
            let mut best = f64::MAX;
            for _ in 0..reps {
                let s = Instant::now();
                gemm(
                    mult,
                    av,
                    bv,
                    MatMut::new(&mut c, m, n, crs, ccs).unwrap(),
                    false,
                )
                .unwrap();
                best = best.min(s.elapsed().as_secs_f64());
            }
            best
        };
        let f = time(&Multiplier::Fp32);
        let l = time(&lut);
        if std::env::var("CHECK").is_ok() {
            let mut r = vec![0.0f32; m * n];
            gemm_reference(
                &lut,
                av,
                bv,
                MatMut::new(&mut r, m, n, crs, ccs).unwrap(),
                false,
            )
            .unwrap();
            gemm(
                &lut,
                av,
                bv,
                MatMut::new(&mut c, m, n, crs, ccs).unwrap(),
                false,
            )
            .unwrap();
            let bad = r
                .iter()
                .zip(&c)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
            println!("{name}: {bad} mismatches");
        }
        println!(
            "{name:10} fp32 {:8.3} ms  lut {:8.3} ms  {:5.2}x",
            f * 1e3,
            l * 1e3,
            l / f
        );
    }
}
