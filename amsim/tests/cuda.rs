//! The CUDA engine against the CPU engine.
//!
//! - Without a GPU: every kernel compiles with NVRTC (needs only
//!   libnvrtc). When NVRTC is missing the test prints why and passes, unless
//!   `APPROXTRAIN_REQUIRE_NVRTC=1` (set by CI, which installs it) makes that
//!   a failure.
//! - With a GPU: AMSim GEMM, batched GEMM and the three convolution products
//!   (the input gradient of strided layers by phases included)
//!   are bit-exact with the CPU engine (NaN payloads aside) on random shapes,
//!   odd sizes, every table width 1..=11, with and without special values,
//!   dot products over several accumulation blocks;
//!   `fp32` (cuBLAS) and `bf16` agree within a rounding bound; out of memory
//!   is an error. Without a GPU these print why they are skipped, unless
//!   `APPROXTRAIN_REQUIRE_GPU=1` (set by scripts/gpu-check.sh) makes that a
//!   failure.
//!
//! Inputs are random with a fresh seed, printed; set `APPROXTRAIN_TEST_SEED`
//! to replay.

mod support;

use std::sync::Arc;

use amsim::batched::{gemm_batched, BatchedMut, BatchedRef};
use amsim::conv::{conv2d_forward, conv2d_grad_input, conv2d_grad_weight, Conv2dShape};
use amsim::cuda::{self, CudaEngine};
use amsim::gemm::{gemm, MatMut, MatRef};
use amsim::{Lut, Multiplier};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{mitchell, random_conv_shape, same_bits, skewed, test_rng, ConvShapeBounds};

fn required(var: &str) -> bool {
    std::env::var(var).map(|v| v == "1").unwrap_or(false)
}

/// The GPU engine, or `None` with the reason printed (a failure when
/// `APPROXTRAIN_REQUIRE_GPU=1`).
fn engine(test: &str) -> Option<Arc<CudaEngine>> {
    match CudaEngine::global() {
        Ok(e) => {
            eprintln!("{test}: running on {} ({})", e.device_name(), e.arch());
            Some(e)
        }
        Err(e) if required("APPROXTRAIN_REQUIRE_GPU") => {
            panic!("{test}: APPROXTRAIN_REQUIRE_GPU=1 but the GPU engine is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED {test}: no usable GPU ({e})");
            None
        }
    }
}

#[test]
fn nvrtc_compiles_every_kernel() {
    if !cuda::nvrtc_available() {
        assert!(
            !required("APPROXTRAIN_REQUIRE_NVRTC"),
            "APPROXTRAIN_REQUIRE_NVRTC=1 but libnvrtc.so cannot be loaded (check LD_LIBRARY_PATH)"
        );
        eprintln!("SKIPPED nvrtc_compiles_every_kernel: libnvrtc.so not found (CI installs the nvidia-cuda-nvrtc-cu12 wheel)");
        return;
    }
    for arch in ["compute_80", "compute_90"] {
        let ptx = cuda::compile_kernels(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let text = ptx.to_src();
        for name in cuda::KERNEL_NAMES {
            assert!(
                text.contains(&format!(".entry {name}(")),
                "{arch}: kernel {name} missing from the PTX"
            );
        }
    }
}

#[test]
fn a_kernel_that_does_not_compile_is_an_error() {
    if !cuda::nvrtc_available() {
        eprintln!("SKIPPED a_kernel_that_does_not_compile_is_an_error: libnvrtc.so not found");
        return;
    }
    let err = cuda::compile_kernels("compute_1").unwrap_err().to_string();
    assert!(err.contains("NVRTC"), "{err}");
}

fn lut(rng: &mut ChaCha8Rng, bits: u32) -> Multiplier {
    let l = if rng.gen() {
        Lut::build("mitchell", mitchell, bits)
    } else {
        Lut::build("skewed", skewed, bits)
    };
    Multiplier::Lut(Arc::new(l.unwrap()))
}

/// Mostly normal values of moderate exponent; at rate `special` NaN,
/// infinities, signed zeros, subnormals and extreme exponents.
fn value(rng: &mut ChaCha8Rng, special: f64) -> f32 {
    let sign = if rng.gen() { 0x8000_0000u32 } else { 0 };
    let frac = rng.gen::<u32>() & 0x007f_ffff;
    if rng.gen_bool(special) {
        let bits = match rng.gen_range(0..8) {
            0 => 0x7fc0_0000 | frac,
            1 => 0x7f80_0000,
            2 => 0,
            3 => frac.max(1),
            4 => (rng.gen_range(245..=254u32) << 23) | frac,
            5 => (rng.gen_range(1..=12u32) << 23) | frac,
            6 => (rng.gen_range(40..=80u32) << 23) | frac,
            _ => (rng.gen_range(170..=200u32) << 23) | frac,
        };
        f32::from_bits(sign | bits)
    } else if rng.gen_bool(0.05) {
        // Exact zeros (ReLU outputs) stay on the fast path.
        f32::from_bits(sign)
    } else {
        f32::from_bits(sign | (rng.gen_range(117..=137u32) << 23) | frac)
    }
}

fn values(rng: &mut ChaCha8Rng, n: usize, special: f64) -> Vec<f32> {
    (0..n).map(|_| value(rng, special)).collect()
}

fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same_bits(*g, *w),
            "{what}: element {i}: GPU {g:e} ({:#010x}) vs CPU {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Within a rounding bound of the accumulated magnitude.
fn assert_close(what: &str, got: &[f32], want: &[f32], scale: &[f32], tol: f32) {
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!(
            (g - w).abs() <= tol * s.max(1e-30),
            "{what}: element {i}: GPU {g} vs CPU {w} (scale {s})"
        );
    }
}

fn dim(rng: &mut ChaCha8Rng, max: usize) -> usize {
    match rng.gen_range(0..8) {
        0 => 1,
        1 => rng.gen_range(127..=130),
        2 => rng.gen_range(15..=17),
        _ => rng.gen_range(1..=max),
    }
}

/// A `rows x cols` matrix, row- or column-major, sometimes padded.
fn layout(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> (usize, usize, usize) {
    let pad = if rng.gen_bool(0.3) {
        rng.gen_range(1..4)
    } else {
        0
    };
    let (rs, cs) = if rng.gen() {
        (cols + pad, 1)
    } else {
        (1, rows + pad)
    };
    let len = if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    };
    (rs, cs, len)
}

#[test]
fn gemm_is_bit_exact_with_the_cpu_for_every_width() {
    let Some(eng) = engine("gemm_is_bit_exact_with_the_cpu_for_every_width") else {
        return;
    };
    let mut rng = test_rng();
    for bits in 1..=11u32 {
        for case in 0..6 {
            let mult = lut(&mut rng, bits);
            let special = if case % 2 == 0 { 0.0 } else { 0.03 };
            let (m, n, k) = (dim(&mut rng, 300), dim(&mut rng, 300), dim(&mut rng, 400));
            let (ars, acs, alen) = layout(&mut rng, m, k);
            let (brs, bcs, blen) = layout(&mut rng, k, n);
            let (crs, ccs, clen) = layout(&mut rng, m, n);
            let a = values(&mut rng, alen, special);
            let b = values(&mut rng, blen, special);
            let c0 = values(&mut rng, clen, special);
            let accumulate = rng.gen();
            let av = MatRef::new(&a, m, k, ars, acs).unwrap();
            let bv = MatRef::new(&b, k, n, brs, bcs).unwrap();
            let mut want = c0.clone();
            gemm(
                &mult,
                av,
                bv,
                MatMut::new(&mut want, m, n, crs, ccs).unwrap(),
                accumulate,
            )
            .unwrap();
            let mut got = c0.clone();
            eng.gemm(
                &mult,
                av,
                bv,
                MatMut::new(&mut got, m, n, crs, ccs).unwrap(),
                accumulate,
            )
            .unwrap();
            assert_same(
                &format!(
                    "{} {m}x{n}x{k} special {special} accumulate {accumulate}",
                    mult.label()
                ),
                &got,
                &want,
            );
        }
    }
}

#[test]
fn long_dot_products_are_bit_exact_with_the_cpu() {
    // k over several accumulation blocks (1024 terms), with the small tiles
    // (few outputs, the weight-gradient case) and the big ones (enough
    // outputs for twice as many 128 x 128 tiles as an H200 has SMs).
    let Some(eng) = engine("long_dot_products_are_bit_exact_with_the_cpu") else {
        return;
    };
    let mut rng = test_rng();
    let cases = [
        (16, 144, 1023, 0.0),
        (16, 144, 1024, 0.03),
        (33, 70, 1025, 0.0),
        (20, 9, 2500, 0.03),
        (64, 576, 3 * 1024 + 5, 0.0),
        (2304, 2304, 2500, 0.001),
    ];
    for (m, n, k, special) in cases {
        let mult = lut(&mut rng, 7);
        let (ars, acs, alen) = layout(&mut rng, m, k);
        let (brs, bcs, blen) = layout(&mut rng, k, n);
        let a = values(&mut rng, alen, special);
        let b = values(&mut rng, blen, special);
        let c0 = values(&mut rng, m * n, special);
        let accumulate = rng.gen();
        let av = MatRef::new(&a, m, k, ars, acs).unwrap();
        let bv = MatRef::new(&b, k, n, brs, bcs).unwrap();
        let mut want = c0.clone();
        gemm(
            &mult,
            av,
            bv,
            MatMut::row_major(&mut want, m, n).unwrap(),
            accumulate,
        )
        .unwrap();
        let mut got = c0.clone();
        eng.gemm(
            &mult,
            av,
            bv,
            MatMut::row_major(&mut got, m, n).unwrap(),
            accumulate,
        )
        .unwrap();
        assert_same(
            &format!(
                "{} {m}x{n}x{k} special {special} accumulate {accumulate}",
                mult.label()
            ),
            &got,
            &want,
        );
    }
    // 1.0 then 2^-25s: the plain sequential sum stays 1.0, the blocked sum
    // (block sums 1.0, 2^-15, 2^-15, 5 * 2^-25) is 1 + 2^-14 + 2^-23.
    let k = 3 * 1024 + 5;
    let mut a = vec![2f32.powi(-25); k];
    a[0] = 1.0;
    let b = vec![1.0f32; k];
    let mult = Multiplier::Lut(Arc::new(Lut::build("mitchell", mitchell, 7).unwrap()));
    let mut got = [0.0f32];
    eng.gemm(
        &mult,
        MatRef::row_major(&a, 1, k).unwrap(),
        MatRef::row_major(&b, k, 1).unwrap(),
        MatMut::row_major(&mut got, 1, 1).unwrap(),
        false,
    )
    .unwrap();
    assert_eq!(got[0], 1.0 + 2f32.powi(-14) + 2f32.powi(-23));
}

#[test]
fn native_gemms_agree_within_rounding() {
    let Some(eng) = engine("native_gemms_agree_within_rounding") else {
        return;
    };
    let mut rng = test_rng();
    for mult in [Multiplier::Fp32, Multiplier::Bf16] {
        for _ in 0..4 {
            let (m, n, k) = (dim(&mut rng, 200), dim(&mut rng, 200), dim(&mut rng, 300));
            let (ars, acs, alen) = layout(&mut rng, m, k);
            let (brs, bcs, blen) = layout(&mut rng, k, n);
            let a = values(&mut rng, alen, 0.0);
            let b = values(&mut rng, blen, 0.0);
            let av = MatRef::new(&a, m, k, ars, acs).unwrap();
            let bv = MatRef::new(&b, k, n, brs, bcs).unwrap();
            let mut want = vec![0.0; m * n];
            gemm(
                &mult,
                av,
                bv,
                MatMut::row_major(&mut want, m, n).unwrap(),
                false,
            )
            .unwrap();
            let mut got = vec![0.0; m * n];
            eng.gemm(
                &mult,
                av,
                bv,
                MatMut::row_major(&mut got, m, n).unwrap(),
                false,
            )
            .unwrap();
            let abs: Vec<f32> = a.iter().map(|v| v.abs()).collect();
            let babs: Vec<f32> = b.iter().map(|v| v.abs()).collect();
            let mut scale = vec![0.0; m * n];
            gemm(
                &Multiplier::Fp32,
                MatRef::new(&abs, m, k, ars, acs).unwrap(),
                MatRef::new(&babs, k, n, brs, bcs).unwrap(),
                MatMut::row_major(&mut scale, m, n).unwrap(),
                false,
            )
            .unwrap();
            assert_close(
                &format!("{} {m}x{n}x{k}", mult.label()),
                &got,
                &want,
                &scale,
                1e-5,
            );
        }
    }
}

#[test]
fn batched_gemm_is_bit_exact_with_the_cpu() {
    let Some(eng) = engine("batched_gemm_is_bit_exact_with_the_cpu") else {
        return;
    };
    let mut rng = test_rng();
    for case in 0..12 {
        let bits = rng.gen_range(1..=11);
        let mult = lut(&mut rng, bits);
        let special = if case % 3 == 0 { 0.03 } else { 0.0 };
        let batch = rng.gen_range(1..=9);
        let (m, n, k) = (dim(&mut rng, 70), dim(&mut rng, 70), dim(&mut rng, 150));
        // A row-major, B transposed (as attention's Q·Kᵀ), C dense.
        let a = values(&mut rng, batch * m * k, special);
        let b = values(&mut rng, batch * n * k, special);
        let av = BatchedRef::row_major(&a, batch, m, k).unwrap();
        let bv = BatchedRef::row_major(&b, batch, n, k).unwrap().t();
        let accumulate = rng.gen();
        let c0 = values(&mut rng, batch * m * n, special);
        let mut want = c0.clone();
        gemm_batched(
            &mult,
            av,
            bv,
            BatchedMut::row_major(&mut want, batch, m, n).unwrap(),
            accumulate,
        )
        .unwrap();
        let mut got = c0.clone();
        eng.gemm_batched(
            &mult,
            av,
            bv,
            BatchedMut::row_major(&mut got, batch, m, n).unwrap(),
            accumulate,
        )
        .unwrap();
        assert_same(
            &format!("{} batch {batch} {m}x{n}x{k}", mult.label()),
            &got,
            &want,
        );
    }
}

/// Geometries of the convolution parity test: larger than the CPU tests',
/// which compare with nested loops.
const SHAPES: ConvShapeBounds = ConvShapeBounds {
    batch: 5,
    channels: (5, 9),
    group_channels: (3, 3),
    extra_size: 12,
};

#[test]
fn convolution_products_are_bit_exact_with_the_cpu() {
    let Some(eng) = engine("convolution_products_are_bit_exact_with_the_cpu") else {
        return;
    };
    let mut rng = test_rng();
    let mut shapes: Vec<Conv2dShape> = (0..24)
        .map(|_| random_conv_shape(&mut rng, &SHAPES))
        .collect();
    // The input gradient's phase lowering: a stride-2 ResNet downsampling
    // layer, its 1x1 stride-2 projection shortcut (three phases of four
    // without taps), stride 3 over a 2x3 kernel (stride larger than the
    // kernel) and dilation 2 with stride 2 (every tap in one phase), grouped.
    let strided = |mut s: Conv2dShape, stride, padding, dilation, groups| {
        s.stride = stride;
        s.padding = padding;
        s.dilation = dilation;
        s.groups = groups;
        s.validate().unwrap();
        s
    };
    shapes.push(strided(
        Conv2dShape::new(4, 16, 16, 16, 32, 3),
        (2, 2),
        (1, 1),
        (1, 1),
        1,
    ));
    shapes.push(strided(
        Conv2dShape::new(4, 16, 16, 16, 32, 1),
        (2, 2),
        (0, 0),
        (1, 1),
        1,
    ));
    let mut rect = Conv2dShape::new(3, 6, 13, 11, 9, 2);
    rect.kernel_w = 3;
    shapes.push(strided(rect, (3, 3), (2, 1), (1, 1), 3));
    shapes.push(strided(
        Conv2dShape::new(2, 8, 12, 10, 8, 3),
        (2, 2),
        (3, 2),
        (2, 2),
        8,
    ));
    // A weight gradient over more than one accumulation block
    // (k = 4 * 24 * 24 = 2304).
    shapes.push(Conv2dShape::new(4, 6, 26, 26, 8, 3));
    // One ResNet-like layer, large enough for the big tiles (its weight
    // gradient sums over 8 * 32 * 32 = 8192 terms).
    let mut big = Conv2dShape::new(8, 16, 32, 32, 32, 3);
    big.padding = (1, 1);
    shapes.push(big);
    for (i, s) in shapes.iter().enumerate() {
        let bits = if i == shapes.len() - 1 {
            7
        } else {
            rng.gen_range(1..=11)
        };
        let mult = lut(&mut rng, bits);
        let special = if i % 4 == 3 { 0.03 } else { 0.0 };
        let x = values(&mut rng, s.x_len(), special);
        let w = values(&mut rng, s.w_len(), special);
        let dy = values(&mut rng, s.y_len(), special);
        let what = format!("{} {s:?}", mult.label());
        let (mut want, mut got) = (vec![0.0; s.y_len()], vec![1.0; s.y_len()]);
        conv2d_forward(&mult, s, &x, &w, &mut want).unwrap();
        eng.conv2d_forward(&mult, s, &x, &w, &mut got).unwrap();
        assert_same(&format!("forward {what}"), &got, &want);
        let (mut want, mut got) = (vec![0.0; s.x_len()], vec![1.0; s.x_len()]);
        conv2d_grad_input(&mult, s, &dy, &w, &mut want).unwrap();
        eng.conv2d_grad_input(&mult, s, &dy, &w, &mut got).unwrap();
        assert_same(&format!("input gradient {what}"), &got, &want);
        let (mut want, mut got) = (vec![0.0; s.w_len()], vec![1.0; s.w_len()]);
        conv2d_grad_weight(&mult, s, &x, &dy, &mut want).unwrap();
        eng.conv2d_grad_weight(&mult, s, &x, &dy, &mut got).unwrap();
        assert_same(&format!("weight gradient {what}"), &got, &want);
    }
}

#[test]
fn out_of_memory_is_an_error() {
    let Some(eng) = engine("out_of_memory_is_an_error") else {
        return;
    };
    // 4 TiB: more than any GPU holds.
    let err = eng.alloc(1usize << 40).unwrap_err().to_string();
    assert!(err.contains("out of GPU memory"), "{err}");
    // The engine still works afterwards.
    let d = eng.upload(&[1.0, 2.0]).unwrap();
    let mut back = [0.0f32; 2];
    eng.download(&d, &mut back).unwrap();
    assert_eq!(back, [1.0, 2.0]);
}

#[test]
fn direct_multipliers_are_refused_on_the_gpu() {
    let Some(eng) = engine("direct_multipliers_are_refused_on_the_gpu") else {
        return;
    };
    let mult = Multiplier::Direct {
        name: "mitchell".into(),
        func: mitchell,
        bits: 7,
    };
    let a = [1.5f32; 4];
    let mut c = [0.0f32; 4];
    let err = eng
        .gemm(
            &mult,
            MatRef::row_major(&a, 2, 2).unwrap(),
            MatRef::row_major(&a, 2, 2).unwrap(),
            MatMut::row_major(&mut c, 2, 2).unwrap(),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("CPU only"), "{err}");
}
