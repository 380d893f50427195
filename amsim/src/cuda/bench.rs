//! `bench gemm` and `bench conv` on the GPU: the same rows as
//! [`crate::bench`], timed on device-resident data (transfers excluded),
//! with cuBLAS SGEMM (TF32 off) as the FP32 baseline for GEMM.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::CudaEngine;
use crate::bench::{
    random_values, time_median, BenchOptions, ConvBenchRow, ConvProduct, GemmBenchRow, INPUT_SEED,
};
use crate::conv::Conv2dShape;
use crate::{AmsimError, Multiplier, Result};

/// Time row-major `C = A·B` on the GPU for FP32 (cuBLAS) and each of
/// `mults`. `threads` in the rows is 0 (not a CPU measurement).
pub fn bench_gemm_cuda(
    eng: &CudaEngine,
    mults: &[Multiplier],
    m: usize,
    n: usize,
    k: usize,
    opts: BenchOptions,
) -> Result<Vec<GemmBenchRow>> {
    if m == 0 || n == 0 || k == 0 {
        return Err(AmsimError::shape(format!(
            "bench gemm: m, n and k must be at least 1 (got {m}, {n}, {k})"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(INPUT_SEED);
    let a = eng.upload(&random_values(&mut rng, m * k))?;
    let b = eng.upload(&random_values(&mut rng, k * n))?;
    let mut c = eng.alloc(m * n)?;
    let mut run = |mult: &Multiplier, opts: BenchOptions| {
        time_median(opts, || {
            eng.gemm_dev(mult, m, n, k, &a, false, &b, false, &mut c, false)?;
            eng.synchronize()
        })
    };
    check_device_mult(mults)?;
    let fp32 = run(&Multiplier::Fp32, opts)?;
    let macs = (m * n * k) as f64;
    mults
        .iter()
        .map(|mult| {
            let seconds = match mult {
                Multiplier::Fp32 => fp32,
                _ => run(mult, opts)?,
            };
            Ok(GemmBenchRow {
                multiplier: mult.label(),
                m,
                n,
                k,
                threads: 0,
                repeats: opts.repeats,
                seconds,
                gmacs: macs / seconds / 1e9,
                ratio_vs_fp32: seconds / fp32,
            })
        })
        .collect()
}

fn check_device_mult(mults: &[Multiplier]) -> Result<()> {
    for m in mults {
        if let Multiplier::Direct { name, .. } = m {
            return Err(AmsimError::Cuda(format!(
                "direct:{name} runs on the CPU only; use a table ({name}:BITS) with --device cuda"
            )));
        }
    }
    Ok(())
}

/// Time the three products of `shape` on the GPU for FP32 and each of
/// `mults` (FP32: the lowered GEMMs through cuBLAS).
pub fn bench_conv_cuda(
    eng: &CudaEngine,
    mults: &[Multiplier],
    shape: &Conv2dShape,
    opts: BenchOptions,
) -> Result<Vec<ConvBenchRow>> {
    shape.validate()?;
    if shape.macs() == 0 {
        return Err(AmsimError::shape(
            "bench conv: the layer has no multiply-accumulates".to_string(),
        ));
    }
    check_device_mult(mults)?;
    let mut rng = ChaCha8Rng::seed_from_u64(INPUT_SEED);
    let x = eng.upload(&random_values(&mut rng, shape.x_len()))?;
    let w = eng.upload(&random_values(&mut rng, shape.w_len()))?;
    let dy = eng.upload(&random_values(&mut rng, shape.y_len()))?;
    let mut y = eng.alloc(shape.y_len())?;
    let mut dx = eng.alloc(shape.x_len())?;
    let mut dw = eng.alloc(shape.w_len())?;
    let mut run = |mult: &Multiplier, product: ConvProduct| {
        time_median(opts, || {
            match product {
                ConvProduct::Forward => eng.conv2d_forward_dev(mult, shape, &x, &w, &mut y)?,
                ConvProduct::GradInput => {
                    eng.conv2d_grad_input_dev(mult, shape, &dy, &w, &mut dx)?
                }
                ConvProduct::GradWeight => {
                    eng.conv2d_grad_weight_dev(mult, shape, &x, &dy, &mut dw)?
                }
            }
            eng.synchronize()
        })
    };
    let mut fp32 = [0.0f64; 3];
    for (t, p) in fp32.iter_mut().zip(ConvProduct::ALL) {
        *t = run(&Multiplier::Fp32, p)?;
    }
    let macs = shape.macs() as f64;
    let mut rows = Vec::new();
    for mult in mults {
        for (i, product) in ConvProduct::ALL.into_iter().enumerate() {
            let seconds = match mult {
                Multiplier::Fp32 => fp32[i],
                _ => run(mult, product)?,
            };
            rows.push(ConvBenchRow {
                multiplier: mult.label(),
                shape: *shape,
                product,
                threads: 0,
                repeats: opts.repeats,
                seconds,
                gmacs: macs / seconds / 1e9,
                ratio_vs_fp32: seconds / fp32[i],
            });
        }
    }
    Ok(rows)
}
