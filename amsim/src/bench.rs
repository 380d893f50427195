//! The benchmark harness behind `approxtrain bench`: times [`gemm`] and the
//! three convolution products for each multiplier against native FP32 in the
//! same run, and returns one row per measurement (printing is the caller's
//! business).
//!
//! Each measurement runs `warmup` untimed calls, then `repeats` timed calls,
//! and reports the median. A `direct` multiplier calls the model for every
//! product and is orders of magnitude slower, so it is timed once, with no
//! warm-up, at the size asked for (its row says `repeats = 1`).
//! Inputs are uniform in [-1, 1) from a fixed seed, so runs are comparable.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::conv::{conv2d_forward, conv2d_grad_input, conv2d_grad_weight, Conv2dShape};
use crate::gemm::{gemm, MatMut, MatRef};
use crate::{AmsimError, Multiplier, Result};

/// Seed of the benchmark inputs.
pub(crate) const INPUT_SEED: u64 = 0x00a1_b2c3;

/// How many times to run each measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BenchOptions {
    /// Untimed calls before timing.
    pub warmup: usize,
    /// Timed calls; the median is reported (at least 1).
    pub repeats: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            warmup: 1,
            repeats: 5,
        }
    }
}

impl BenchOptions {
    /// The options used for `mult`: a `direct` multiplier runs once.
    pub fn for_multiplier(&self, mult: &Multiplier) -> BenchOptions {
        match mult {
            Multiplier::Direct { .. } => BenchOptions {
                warmup: 0,
                repeats: 1,
            },
            _ => BenchOptions {
                warmup: self.warmup,
                repeats: self.repeats.max(1),
            },
        }
    }
}

/// One GEMM measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmBenchRow {
    /// Multiplier spec (`fp32`, `mbm:7`, ...).
    pub multiplier: String,
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Columns of A, rows of B.
    pub k: usize,
    /// Worker threads (`rayon::current_num_threads()`).
    pub threads: usize,
    /// Timed calls behind the median.
    pub repeats: usize,
    /// Median seconds per call.
    pub seconds: f64,
    /// Billions of multiply-accumulates per second.
    pub gmacs: f64,
    /// `seconds` over the FP32 median of the same run.
    pub ratio_vs_fp32: f64,
}

/// The three products of a convolution layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConvProduct {
    /// `y` from `x` and `w`.
    Forward,
    /// `dx` from `dy` and `w`.
    GradInput,
    /// `dw` from `x` and `dy`.
    GradWeight,
}

impl ConvProduct {
    /// All three, in layer order.
    pub const ALL: [ConvProduct; 3] = [
        ConvProduct::Forward,
        ConvProduct::GradInput,
        ConvProduct::GradWeight,
    ];

    /// `forward`, `grad_input` or `grad_weight`.
    pub fn key(self) -> &'static str {
        match self {
            ConvProduct::Forward => "forward",
            ConvProduct::GradInput => "grad_input",
            ConvProduct::GradWeight => "grad_weight",
        }
    }
}

/// One convolution measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvBenchRow {
    /// Multiplier spec.
    pub multiplier: String,
    /// The layer geometry.
    pub shape: Conv2dShape,
    /// Which product was timed.
    pub product: ConvProduct,
    /// Worker threads (`rayon::current_num_threads()`).
    pub threads: usize,
    /// Timed calls behind the median.
    pub repeats: usize,
    /// Median seconds per call.
    pub seconds: f64,
    /// Billions of (useful) multiply-accumulates per second:
    /// [`Conv2dShape::macs`] over `seconds`.
    pub gmacs: f64,
    /// `seconds` over the FP32 median of the same product in the same run.
    pub ratio_vs_fp32: f64,
}

/// Named layer shapes for `bench conv --shape` and the criterion benches.
pub const CONV_SHAPE_NAMES: &[&str] = &[
    "lenet5-conv1",
    "lenet5-conv2",
    "resnet20-layer1",
    "resnet20-layer2",
    "resnet20-layer3",
    "resnet20-down2",
    "resnet20-down3",
    "resnet20-shortcut2",
];

/// The layer shape called `name` at batch `batch`:
/// - `lenet5-conv1`: 1 -> 6 channels, 5x5, padding 2, on 28x28;
/// - `lenet5-conv2`: 6 -> 16, 5x5, on 14x14;
/// - `resnet20-layer1/2/3`: 16 -> 16 on 32x32, 32 -> 32 on 16x16,
///   64 -> 64 on 8x8, all 3x3 padding 1 (He et al., 2016, CIFAR ResNets);
/// - `resnet20-down2/3`: the 3x3 stride-2 convolutions that open stages 2
///   and 3 (16 -> 32 on 32x32, 32 -> 64 on 16x16);
/// - `resnet20-shortcut2`: a 1x1 stride-2 projection shortcut, 16 -> 32 on
///   32x32.
pub fn named_conv_shape(name: &str, batch: usize) -> Result<Conv2dShape> {
    let padded = |mut s: Conv2dShape, stride: usize, pad: usize| {
        s.stride = (stride, stride);
        s.padding = (pad, pad);
        s
    };
    let s = match name {
        "lenet5-conv1" => padded(Conv2dShape::new(batch, 1, 28, 28, 6, 5), 1, 2),
        "lenet5-conv2" => Conv2dShape::new(batch, 6, 14, 14, 16, 5),
        "resnet20-layer1" => padded(Conv2dShape::new(batch, 16, 32, 32, 16, 3), 1, 1),
        "resnet20-layer2" => padded(Conv2dShape::new(batch, 32, 16, 16, 32, 3), 1, 1),
        "resnet20-layer3" => padded(Conv2dShape::new(batch, 64, 8, 8, 64, 3), 1, 1),
        "resnet20-down2" => padded(Conv2dShape::new(batch, 16, 32, 32, 32, 3), 2, 1),
        "resnet20-down3" => padded(Conv2dShape::new(batch, 32, 16, 16, 64, 3), 2, 1),
        "resnet20-shortcut2" => padded(Conv2dShape::new(batch, 16, 32, 32, 32, 1), 2, 0),
        _ => {
            return Err(AmsimError::Other(format!(
                "unknown layer shape '{name}'; known shapes: {}",
                CONV_SHAPE_NAMES.join(", ")
            )))
        }
    };
    Ok(s)
}

/// `len` values uniform in [-1, 1).
pub(crate) fn random_values(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Median seconds of `opts.repeats` timed calls of `f` after `opts.warmup`
/// untimed ones.
pub(crate) fn time_median(opts: BenchOptions, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..opts.warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(opts.repeats);
    for _ in 0..opts.repeats.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    Ok(if times.len() % 2 == 1 {
        times[mid]
    } else {
        0.5 * (times[mid - 1] + times[mid])
    })
}

/// Time `C = A·B` (`m x k` by `k x n`, row-major) for FP32 and each of
/// `mults`; one row per multiplier, in order.
pub fn bench_gemm(
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
    let a = random_values(&mut rng, m * k);
    let b = random_values(&mut rng, k * n);
    let mut c = vec![0.0f32; m * n];
    let mut run = |mult: &Multiplier, opts: BenchOptions| {
        time_median(opts, || {
            gemm(
                mult,
                MatRef::row_major(&a, m, k)?,
                MatRef::row_major(&b, k, n)?,
                MatMut::row_major(&mut c, m, n)?,
                false,
            )
        })
    };
    let fp32 = run(&Multiplier::Fp32, opts.for_multiplier(&Multiplier::Fp32))?;
    let threads = rayon::current_num_threads();
    let macs = (m * n * k) as f64;
    mults
        .iter()
        .map(|mult| {
            let o = opts.for_multiplier(mult);
            let seconds = match mult {
                Multiplier::Fp32 => fp32,
                _ => run(mult, o)?,
            };
            Ok(GemmBenchRow {
                multiplier: mult.label(),
                m,
                n,
                k,
                threads,
                repeats: o.repeats,
                seconds,
                gmacs: macs / seconds / 1e9,
                ratio_vs_fp32: seconds / fp32,
            })
        })
        .collect()
}

/// Time `C = A·B` (`m x k` by `k x n` 8-bit codes, `i32` sums) through
/// each integer table, on uniformly random codes; `fp32_seconds` is the FP32
/// median of the same run ([`bench_gemm`]'s `fp32` row), the base of the
/// ratio. One row per table, labelled `int8:MODEL`.
pub fn bench_int_gemm(
    luts: &[crate::IntLut],
    m: usize,
    n: usize,
    k: usize,
    opts: BenchOptions,
    fp32_seconds: f64,
) -> Result<Vec<GemmBenchRow>> {
    let mut rng = ChaCha8Rng::seed_from_u64(INPUT_SEED);
    let a: Vec<u8> = (0..m * k).map(|_| rng.gen()).collect();
    let b: Vec<u8> = (0..k * n).map(|_| rng.gen()).collect();
    let mut c = vec![0i32; m * n];
    let threads = rayon::current_num_threads();
    let macs = (m * n * k) as f64;
    luts.iter()
        .map(|lut| {
            let seconds = time_median(opts, || {
                crate::int_gemm::int_gemm(lut, &a, &b, &mut c, m, n, k)
            })?;
            Ok(GemmBenchRow {
                multiplier: format!("int8:{}", lut.model_name()),
                m,
                n,
                k,
                threads,
                repeats: opts.repeats.max(1),
                seconds,
                gmacs: macs / seconds / 1e9,
                ratio_vs_fp32: seconds / fp32_seconds,
            })
        })
        .collect()
}

/// Time [`crate::int_wide::wide_gemm`] through each 12- or 16-bit model on
/// uniformly random integers of its operand range (the first operand with a
/// zero point of 3, as an asymmetric activation, the second symmetric);
/// `fp32_seconds` is the FP32 median of the same run. Rows labelled
/// `intBITS:MODEL`, in the order given.
pub fn bench_wide_int_gemm(
    muls: &[crate::WideIntMul],
    m: usize,
    n: usize,
    k: usize,
    opts: BenchOptions,
    fp32_seconds: f64,
) -> Result<Vec<GemmBenchRow>> {
    use crate::int_wide::{wide_gemm, WideOperand};
    let threads = rayon::current_num_threads();
    let macs = (m * n * k) as f64;
    muls.iter()
        .map(|mul| {
            let mut rng = ChaCha8Rng::seed_from_u64(INPUT_SEED);
            let r = mul.operand_range();
            let mut values = |len: usize| {
                (0..len)
                    .map(|_| rng.gen_range(r.clone()))
                    .collect::<Vec<i32>>()
            };
            let (a, b) = (values(m * k), values(k * n));
            let mut c = vec![0i64; m * n];
            let seconds = time_median(opts, || {
                wide_gemm(
                    mul,
                    WideOperand::new(&a, 3),
                    WideOperand::new(&b, 0),
                    &mut c,
                    m,
                    n,
                    k,
                )
            })?;
            Ok(GemmBenchRow {
                multiplier: format!("int{}:{}", mul.bits(), mul.model_name()),
                m,
                n,
                k,
                threads,
                repeats: opts.repeats.max(1),
                seconds,
                gmacs: macs / seconds / 1e9,
                ratio_vs_fp32: seconds / fp32_seconds,
            })
        })
        .collect()
}

/// Time the three products of the convolution `shape` through each integer
/// table ([`crate::int_conv`]) on uniformly random codes, the activation
/// with a zero point of 3 (asymmetric, as a ReLU output is quantized), the
/// weights and output gradients symmetric; `fp32_seconds` are the FP32
/// medians of the same run ([`bench_conv`]'s `fp32` rows, in
/// [`ConvProduct::ALL`] order), the bases of the ratios. Rows labelled
/// `int8:MODEL`, in table order, then product order.
pub fn bench_int_conv(
    luts: &[crate::IntLut],
    shape: &Conv2dShape,
    opts: BenchOptions,
    fp32_seconds: [f64; 3],
) -> Result<Vec<ConvBenchRow>> {
    use crate::int_conv::{int_conv2d_forward, int_conv2d_grad_input, int_conv2d_grad_weight};
    use crate::int_gemm::IntOperand;
    shape.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(INPUT_SEED);
    let mut codes = |len: usize| (0..len).map(|_| rng.gen()).collect::<Vec<u8>>();
    let (x, w, dy) = (
        codes(shape.x_len()),
        codes(shape.w_len()),
        codes(shape.y_len()),
    );
    let mut y = vec![0i32; shape.y_len()];
    let mut dx = vec![0i32; shape.x_len()];
    let mut dw = vec![0i32; shape.w_len()];
    let threads = rayon::current_num_threads();
    let macs = shape.macs() as f64;
    let mut rows = Vec::with_capacity(luts.len() * 3);
    for lut in luts {
        let signed = lut.signed();
        let (xo, wo, dyo) = (
            IntOperand::new(&x, 3, signed),
            IntOperand::new(&w, 0, signed),
            IntOperand::new(&dy, 0, signed),
        );
        for (i, product) in ConvProduct::ALL.into_iter().enumerate() {
            let seconds = time_median(opts, || match product {
                ConvProduct::Forward => int_conv2d_forward(lut, shape, xo, wo, &mut y),
                ConvProduct::GradInput => int_conv2d_grad_input(lut, shape, dyo, wo, &mut dx),
                ConvProduct::GradWeight => int_conv2d_grad_weight(lut, shape, xo, dyo, &mut dw),
            })?;
            rows.push(ConvBenchRow {
                multiplier: format!("int8:{}", lut.model_name()),
                shape: *shape,
                product,
                threads,
                repeats: opts.repeats.max(1),
                seconds,
                gmacs: macs / seconds / 1e9,
                ratio_vs_fp32: seconds / fp32_seconds[i],
            });
        }
    }
    Ok(rows)
}

/// [`bench_int_conv`] for 12- and 16-bit models
/// ([`crate::int_wide_conv`]): random integers of each model's operand
/// range, the activation with a zero point of 3. Rows labelled
/// `intBITS:MODEL`, in the order given, then product order.
pub fn bench_wide_int_conv(
    muls: &[crate::WideIntMul],
    shape: &Conv2dShape,
    opts: BenchOptions,
    fp32_seconds: [f64; 3],
) -> Result<Vec<ConvBenchRow>> {
    use crate::int_wide::WideOperand;
    use crate::int_wide_conv::{
        wide_conv2d_forward, wide_conv2d_grad_input, wide_conv2d_grad_weight,
    };
    shape.validate()?;
    let mut y = vec![0i64; shape.y_len()];
    let mut dx = vec![0i64; shape.x_len()];
    let mut dw = vec![0i64; shape.w_len()];
    let threads = rayon::current_num_threads();
    let macs = shape.macs() as f64;
    let mut rows = Vec::with_capacity(muls.len() * 3);
    for mul in muls {
        let mut rng = ChaCha8Rng::seed_from_u64(INPUT_SEED);
        let r = mul.operand_range();
        let mut values = |len: usize| {
            (0..len)
                .map(|_| rng.gen_range(r.clone()))
                .collect::<Vec<i32>>()
        };
        let (x, w, dy) = (
            values(shape.x_len()),
            values(shape.w_len()),
            values(shape.y_len()),
        );
        let (xo, wo, dyo) = (
            WideOperand::new(&x, 3),
            WideOperand::new(&w, 0),
            WideOperand::new(&dy, 0),
        );
        for (i, product) in ConvProduct::ALL.into_iter().enumerate() {
            let seconds = time_median(opts, || match product {
                ConvProduct::Forward => wide_conv2d_forward(mul, shape, xo, wo, &mut y),
                ConvProduct::GradInput => wide_conv2d_grad_input(mul, shape, dyo, wo, &mut dx),
                ConvProduct::GradWeight => wide_conv2d_grad_weight(mul, shape, xo, dyo, &mut dw),
            })?;
            rows.push(ConvBenchRow {
                multiplier: format!("int{}:{}", mul.bits(), mul.model_name()),
                shape: *shape,
                product,
                threads,
                repeats: opts.repeats.max(1),
                seconds,
                gmacs: macs / seconds / 1e9,
                ratio_vs_fp32: seconds / fp32_seconds[i],
            });
        }
    }
    Ok(rows)
}

/// Time the three products of the convolution `shape` for FP32 and each of
/// `mults`; rows in multiplier order, then [`ConvProduct::ALL`] order.
pub fn bench_conv(
    mults: &[Multiplier],
    shape: &Conv2dShape,
    opts: BenchOptions,
) -> Result<Vec<ConvBenchRow>> {
    shape.validate()?;
    if shape.macs() == 0 {
        return Err(AmsimError::shape(format!(
            "bench conv: the layer has no multiply-accumulates (batch {}, {} -> {} channels)",
            shape.batch, shape.in_channels, shape.out_channels
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(INPUT_SEED);
    let x = random_values(&mut rng, shape.x_len());
    let w = random_values(&mut rng, shape.w_len());
    let dy = random_values(&mut rng, shape.y_len());
    let mut y = vec![0.0f32; shape.y_len()];
    let mut dx = vec![0.0f32; shape.x_len()];
    let mut dw = vec![0.0f32; shape.w_len()];
    let mut run = |mult: &Multiplier, product: ConvProduct, opts: BenchOptions| {
        time_median(opts, || match product {
            ConvProduct::Forward => conv2d_forward(mult, shape, &x, &w, &mut y),
            ConvProduct::GradInput => conv2d_grad_input(mult, shape, &dy, &w, &mut dx),
            ConvProduct::GradWeight => conv2d_grad_weight(mult, shape, &x, &dy, &mut dw),
        })
    };
    let base = opts.for_multiplier(&Multiplier::Fp32);
    let mut fp32 = [0.0f64; 3];
    for (t, p) in fp32.iter_mut().zip(ConvProduct::ALL) {
        *t = run(&Multiplier::Fp32, p, base)?;
    }
    let threads = rayon::current_num_threads();
    let macs = shape.macs() as f64;
    let mut rows = Vec::with_capacity(mults.len() * 3);
    for mult in mults {
        let o = opts.for_multiplier(mult);
        for (i, product) in ConvProduct::ALL.into_iter().enumerate() {
            let seconds = match mult {
                Multiplier::Fp32 => fp32[i],
                _ => run(mult, product, o)?,
            };
            rows.push(ConvBenchRow {
                multiplier: mult.label(),
                shape: *shape,
                product,
                threads,
                repeats: o.repeats,
                seconds,
                gmacs: macs / seconds / 1e9,
                ratio_vs_fp32: seconds / fp32[i],
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_shapes_are_valid_with_the_documented_output_sizes() {
        let expect = [
            ("lenet5-conv1", 6, 28),
            ("lenet5-conv2", 16, 10),
            ("resnet20-layer1", 16, 32),
            ("resnet20-layer2", 32, 16),
            ("resnet20-layer3", 64, 8),
            ("resnet20-down2", 32, 16),
            ("resnet20-down3", 64, 8),
            ("resnet20-shortcut2", 32, 16),
        ];
        assert_eq!(expect.len(), CONV_SHAPE_NAMES.len());
        for (name, out_c, out_hw) in expect {
            let s = named_conv_shape(name, 3).unwrap();
            s.validate().unwrap();
            assert_eq!((s.batch, s.out_channels), (3, out_c), "{name}");
            assert_eq!((s.out_h(), s.out_w()), (out_hw, out_hw), "{name}");
        }
        let err = named_conv_shape("resnet21-layer1", 1).unwrap_err();
        assert!(err.to_string().contains("resnet20-layer1"), "{err}");
    }

    #[test]
    fn rows_follow_multiplier_and_product_order_with_fp32_as_baseline() {
        let direct = Multiplier::Direct {
            name: "exact".into(),
            func: |a, b, _| a * b,
            bits: 23,
        };
        let mults = [Multiplier::Bf16, Multiplier::Fp32, direct];
        let opts = BenchOptions {
            warmup: 0,
            repeats: 3,
        };
        let rows = bench_gemm(&mults, 5, 4, 3, opts).unwrap();
        let labels: Vec<_> = rows.iter().map(|r| r.multiplier.as_str()).collect();
        assert_eq!(labels, ["bf16", "fp32", "direct:exact:23"]);
        assert_eq!(rows[1].ratio_vs_fp32, 1.0);
        assert_eq!(
            rows.iter().map(|r| r.repeats).collect::<Vec<_>>(),
            [3, 3, 1]
        );
        for r in &rows {
            assert!(r.seconds > 0.0 && r.gmacs > 0.0, "{r:?}");
            assert!((r.gmacs - 60.0 / r.seconds / 1e9).abs() <= 1e-9 * r.gmacs);
        }
        assert!(bench_gemm(&mults, 0, 4, 3, opts).is_err());

        let shape = named_conv_shape("lenet5-conv2", 1).unwrap();
        let rows = bench_conv(&mults[..2], &shape, opts).unwrap();
        fn keys(rows: &[ConvBenchRow]) -> Vec<(&str, &str)> {
            rows.iter()
                .map(|r| (r.multiplier.as_str(), r.product.key()))
                .collect()
        }
        assert_eq!(
            keys(&rows),
            [
                ("bf16", "forward"),
                ("bf16", "grad_input"),
                ("bf16", "grad_weight"),
                ("fp32", "forward"),
                ("fp32", "grad_input"),
                ("fp32", "grad_weight"),
            ]
        );
        assert!(rows[3..].iter().all(|r| r.ratio_vs_fp32 == 1.0));
        let empty = named_conv_shape("lenet5-conv2", 0).unwrap();
        assert!(bench_conv(&mults[..2], &empty, opts).is_err());

        // Integer tables: three rows each, the ratios against the given
        // FP32 medians.
        let exact = crate::IntLut::build("exact8s", true, |a, b| a * b).unwrap();
        let rows = bench_int_conv(&[exact], &shape, opts, [2.0, 4.0, 8.0]).unwrap();
        assert_eq!(
            keys(&rows),
            [
                ("int8:exact8s", "forward"),
                ("int8:exact8s", "grad_input"),
                ("int8:exact8s", "grad_weight"),
            ]
        );
        for (r, fp32) in rows.iter().zip([2.0, 4.0, 8.0]) {
            assert!(r.seconds > 0.0 && r.repeats == 3, "{r:?}");
            assert_eq!(r.ratio_vs_fp32, r.seconds / fp32, "{r:?}");
        }
    }
}
