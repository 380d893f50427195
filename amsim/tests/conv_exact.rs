//! The GEMM-lowered convolution products against their nested-loop
//! definitions: bit-exact for AMSim multipliers (tables and direct models),
//! within 1e-5 of the accumulated magnitude for native FP32, over random
//! geometries (stride, padding, dilation, groups incl. depthwise, 1x1 / 3x3
//! / 5x5 and rectangular kernels, rectangular inputs) and special values.

mod support;

use std::sync::Arc;

use amsim::conv::{
    conv2d_forward, conv2d_forward_reference, conv2d_grad_input, conv2d_grad_input_reference,
    conv2d_grad_weight, conv2d_grad_weight_reference, Conv2dShape,
};
use amsim::{Lut, Multiplier};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{random_conv_shape, same_bits, skewed_truncated, test_rng, ConvShapeBounds};

fn lut(bits: u32) -> Multiplier {
    Multiplier::Lut(Arc::new(
        Lut::build("skewed", skewed_truncated, bits).expect("skewed is a valid model"),
    ))
}

/// Random values of mixed magnitude and sign, with some zeros and
/// subnormals (which AMSim flushes).
fn values(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| match rng.gen_range(0..40) {
            0 => 0.0,
            1 => -0.0,
            2 => f32::MIN_POSITIVE / 8.0,
            _ => rng.gen_range(-2.0f32..2.0) * 2f32.powi(rng.gen_range(-6..6)),
        })
        .collect()
}

/// Geometries small enough for the nested-loop references.
const SHAPES: ConvShapeBounds = ConvShapeBounds {
    batch: 3,
    channels: (3, 4),
    group_channels: (2, 2),
    extra_size: 6,
};

/// A random geometry within [`SHAPES`] and random operands `x`, `w`, `dy`
/// for it.
fn random_case(rng: &mut ChaCha8Rng) -> (Conv2dShape, Vec<f32>, Vec<f32>, Vec<f32>) {
    let s = random_conv_shape(rng, &SHAPES);
    let x = values(rng, s.x_len());
    let w = values(rng, s.w_len());
    let dy = values(rng, s.y_len());
    (s, x, w, dy)
}

fn assert_bit_exact(what: &str, s: &Conv2dShape, mult: &Multiplier, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            same_bits(*g, *w),
            "{what} with {mult} on {s:?}: element {i} is {g:e} ({:#010x}), the reference gives {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Run the three fast products and their references on the same inputs
/// and compare with `check(what, got, want)`.
fn compare_all(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    mut check: impl FnMut(&str, &[f32], &[f32]),
) {
    let mut got = vec![f32::NAN; s.y_len()];
    let mut want = vec![f32::NAN; s.y_len()];
    conv2d_forward(mult, s, x, w, &mut got).unwrap();
    conv2d_forward_reference(mult, s, x, w, &mut want).unwrap();
    check("forward", &got, &want);

    let mut got = vec![f32::NAN; s.x_len()];
    let mut want = vec![f32::NAN; s.x_len()];
    conv2d_grad_input(mult, s, dy, w, &mut got).unwrap();
    conv2d_grad_input_reference(mult, s, dy, w, &mut want).unwrap();
    check("grad_input", &got, &want);

    let mut got = vec![f32::NAN; s.w_len()];
    let mut want = vec![f32::NAN; s.w_len()];
    conv2d_grad_weight(mult, s, x, dy, &mut got).unwrap();
    conv2d_grad_weight_reference(mult, s, x, dy, &mut want).unwrap();
    check("grad_weight", &got, &want);
}

/// [`compare_all`] with [`assert_bit_exact`] on each product.
fn assert_products_bit_exact(mult: &Multiplier, s: &Conv2dShape, x: &[f32], w: &[f32], dy: &[f32]) {
    compare_all(mult, s, x, w, dy, |what, got, want| {
        assert_bit_exact(what, s, mult, got, want)
    });
}

#[test]
fn lut_conv_products_match_reference_bit_exactly() {
    let mut rng = test_rng();
    let mults: Vec<Multiplier> = [2, 5, 7, 10].into_iter().map(lut).collect();
    for case in 0..150 {
        let (s, x, w, dy) = random_case(&mut rng);
        let mult = &mults[case % mults.len()];
        assert_products_bit_exact(mult, &s, &x, &w, &dy);
    }
}

#[test]
fn direct_conv_products_match_reference_bit_exactly() {
    let mut rng = test_rng();
    let mult = Multiplier::Direct {
        name: "skewed".into(),
        func: skewed_truncated,
        bits: 12,
    };
    for _ in 0..30 {
        let (s, x, w, dy) = random_case(&mut rng);
        assert_products_bit_exact(&mult, &s, &x, &w, &dy);
    }
}

#[test]
fn batches_larger_than_one_chunk_match_reference_bit_exactly() {
    // Enough images that forward and input gradient run in several chunks
    // (the column buffer of one chunk is capped at COL_CHUNK_ELEMS).
    let mut rng = test_rng();
    let mut s = Conv2dShape::new(0, 4, 40, 36, 3, 3);
    s.padding = (1, 1);
    let per_image = s.out_h() * s.out_w() * s.in_channels * 9;
    s.batch = amsim::conv::COL_CHUNK_ELEMS / per_image + 3;
    let mult = lut(6);
    let x = values(&mut rng, s.x_len());
    let w = values(&mut rng, s.w_len());
    let dy = values(&mut rng, s.y_len());
    assert_products_bit_exact(&mult, &s, &x, &w, &dy);
}

#[test]
fn dot_products_over_several_blocks_match_reference_bit_exactly() {
    // Longer than one accumulation block (1024 terms): the weight gradient
    // of a batch of 4 over a 24x24 output (k = 2304, split across threads
    // at block boundaries), and the forward and input gradient of a layer
    // with 120 -> 118 channels and 3x3 taps (k = 1080 and 1062). The same
    // bits at 1 to 3 threads.
    let mut rng = test_rng();
    let mut wide = Conv2dShape::new(4, 3, 24, 24, 5, 3);
    wide.padding = (1, 1);
    let mut deep = Conv2dShape::new(1, 120, 6, 6, 118, 3);
    deep.padding = (1, 1);
    for (i, s) in [wide, deep].into_iter().enumerate() {
        let mult = lut([7, 10][i]);
        let mut x = values(&mut rng, s.x_len());
        let w = values(&mut rng, s.w_len());
        let dy = values(&mut rng, s.y_len());
        // One infinite activation: NaN or infinite sums where it meets the
        // other operand's zeros and non-zeros.
        let at = rng.gen_range(0..x.len());
        x[at] = f32::INFINITY;
        for threads in 1..=3 {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| assert_products_bit_exact(&mult, &s, &x, &w, &dy));
        }
    }
}

/// |fast - reference| <= 1e-5 * sum_k |term_k| for each element: the
/// FP32 engine may sum in another order or fuse multiply-adds, and that is
/// the error such reorderings can make on these sizes.
#[test]
fn fp32_conv_products_match_reference_within_tolerance() {
    let mut rng = test_rng();
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    for _ in 0..60 {
        let (s, x, w, dy) = random_case(&mut rng);
        // The reference on absolute values bounds each element's terms.
        let mut mags: Vec<Vec<f32>> = Vec::new();
        compare_all(
            &Multiplier::Fp32,
            &s,
            &abs(&x),
            &abs(&w),
            &abs(&dy),
            |_, _, want| mags.push(want.to_vec()),
        );
        let mut idx = 0;
        compare_all(&Multiplier::Fp32, &s, &x, &w, &dy, |what, got, want| {
            for (i, ((g, r), m)) in got.iter().zip(want).zip(&mags[idx]).enumerate() {
                let tol = 1e-5 * m + f32::MIN_POSITIVE;
                assert!(
                    (g - r).abs() <= tol,
                    "{what} fp32 on {s:?}: element {i} is {g:e}, the reference gives {r:e} (tolerance {tol:e})"
                );
            }
            idx += 1;
        });
    }
}

#[test]
fn special_values_propagate_identically_including_padding_taps() {
    // Infinite and NaN weights meet the zero padding (0 * inf = NaN), so
    // fast and reference agree only if both include padding taps the same
    // way (the module doc's definition).
    let mut rng = test_rng();
    let specials = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0, -0.0, 1e-42];
    let mult = lut(7);
    for _ in 0..40 {
        let mut s = random_conv_shape(&mut rng, &SHAPES);
        // At least one padding tap per axis (more padding keeps the shape valid).
        s.padding = (s.padding.0.max(1), s.padding.1.max(1));
        s.validate().unwrap();
        let mut x = values(&mut rng, s.x_len());
        let mut w = values(&mut rng, s.w_len());
        let mut dy = values(&mut rng, s.y_len());
        for v in [&mut x, &mut w, &mut dy] {
            let len = v.len();
            let i = rng.gen_range(0..len);
            v[i] = specials[rng.gen_range(0..specials.len())];
        }
        let wi = rng.gen_range(0..w.len());
        w[wi] = f32::INFINITY;
        assert_products_bit_exact(&mult, &s, &x, &w, &dy);
    }
    // A single padded 3x3 layer with an infinite weight: the border outputs
    // see that weight through a padding tap and are NaN in both.
    let mut s = Conv2dShape::new(1, 1, 3, 3, 1, 3);
    s.padding = (1, 1);
    let x = vec![1.0f32; 9];
    let mut w = vec![0.5f32; 9];
    w[0] = f32::INFINITY;
    let mut y = vec![0.0f32; 9];
    conv2d_forward(&mult, &s, &x, &w, &mut y).unwrap();
    assert!(y[0].is_nan(), "top-left output reads padding through w[0]");
    assert_eq!(y[4], f32::INFINITY, "centre output reads x through w[0]");
}

#[test]
fn bad_shapes_and_buffer_lengths_are_errors() {
    let mult = lut(4);
    let s = Conv2dShape::new(2, 4, 8, 8, 6, 3);
    let (x, w, y) = (
        vec![0.5f32; s.x_len()],
        vec![0.5f32; s.w_len()],
        vec![0.5f32; s.y_len()],
    );
    let mut short = vec![0.0f32; 3];
    assert!(conv2d_forward(&mult, &s, &x, &w, &mut short).is_err());
    assert!(conv2d_forward(&mult, &s, &x[1..], &w, &mut y.clone()).is_err());
    assert!(conv2d_grad_input(&mult, &s, &y, &w[1..], &mut x.clone()).is_err());
    assert!(conv2d_grad_input(&mult, &s, &y, &w, &mut short).is_err());
    assert!(conv2d_grad_weight(&mult, &s, &x, &y[1..], &mut w.clone()).is_err());
    assert!(conv2d_grad_weight(&mult, &s, &x, &y, &mut short).is_err());

    let mut bad = Vec::new();
    let mut g = s;
    g.groups = 3; // does not divide 4 input channels
    bad.push(g);
    let mut g = s;
    g.stride = (0, 1);
    bad.push(g);
    let mut g = s;
    g.dilation = (1, 0);
    bad.push(g);
    let mut g = s;
    g.kernel_h = 11; // larger than the padded input
    bad.push(g);
    for b in bad {
        let err = conv2d_forward(&mult, &b, &x, &w, &mut y.clone()).unwrap_err();
        assert!(err.to_string().starts_with("shape error: conv2d:"), "{err}");
        assert!(conv2d_grad_input(&mult, &b, &y, &w, &mut x.clone()).is_err());
        assert!(conv2d_grad_weight(&mult, &b, &x, &y, &mut w.clone()).is_err());
    }
}

#[test]
fn degenerate_shapes_give_empty_sums() {
    // A zero-sized input with padding still has outputs: sums over padding
    // taps only, which are +0.0 for finite weights.
    let mult = lut(5);
    let mut s = Conv2dShape::new(2, 3, 0, 2, 2, 1);
    s.padding = (1, 0);
    let x: Vec<f32> = Vec::new();
    let w = vec![1.5f32; s.w_len()];
    let mut y = vec![f32::NAN; s.y_len()];
    assert_eq!(s.y_len(), 2 * 2 * 2 * 2);
    conv2d_forward(&mult, &s, &x, &w, &mut y).unwrap();
    assert!(y.iter().all(|v| v.to_bits() == 0), "{y:?}");
    let mut dw = vec![f32::NAN; s.w_len()];
    let dy = vec![1.0f32; s.y_len()];
    conv2d_grad_weight(&mult, &s, &x, &dy, &mut dw).unwrap();
    assert!(dw.iter().all(|v| v.to_bits() == 0), "{dw:?}");
    // Batch 0: every product is empty; the weight gradient is +0.0.
    let s0 = Conv2dShape::new(0, 2, 4, 4, 3, 3);
    let mut dw0 = vec![f32::NAN; s0.w_len()];
    conv2d_grad_weight(&mult, &s0, &[], &[], &mut dw0).unwrap();
    assert!(dw0.iter().all(|v| v.to_bits() == 0));
    conv2d_forward(&mult, &s0, &[], &dw0, &mut []).unwrap();
    conv2d_grad_input(&mult, &s0, &[], &dw0, &mut []).unwrap();
}
