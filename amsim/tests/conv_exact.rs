//! The GEMM-lowered convolution products against their nested-loop
//! definitions: bit-exact for AMSim multipliers (tables and direct models,
//! at 1 and 2 threads), within 1e-5 of the accumulated magnitude for native
//! FP32, over random geometries (stride 1 to 3 incl. strides larger than the
//! kernel, padding up to 3, dilation, groups incl. depthwise, 1x1 / 3x3 /
//! 5x5 and rectangular kernels, rectangular inputs) and special values; and
//! what the definition of the strided input gradient says about the taps
//! between the strided positions (not products) and the padding (products
//! with `+0.0`).

mod support;

use std::sync::Arc;

use amsim::conv::{
    conv2d_forward, conv2d_forward_reference, conv2d_grad_input, conv2d_grad_input_reference,
    conv2d_grad_weight, conv2d_grad_weight_reference, Conv2dShape,
};
use amsim::{Lut, Multiplier};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use support::{mbm, random_conv_shape, same_bits, skewed_truncated, test_rng, ConvShapeBounds};

fn lut(bits: u32) -> Multiplier {
    Multiplier::Lut(Arc::new(
        Lut::build("skewed", skewed_truncated, bits).expect("skewed is a valid model"),
    ))
}

fn mbm_lut(bits: u32) -> Multiplier {
    Multiplier::Lut(Arc::new(
        Lut::build("mbm", mbm, bits).expect("mbm is a valid model"),
    ))
}

/// Run `f` on a pool of `threads` worker threads.
fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("a thread pool")
        .install(f)
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

/// [`values`] with about `rate` of them replaced by NaN, +-inf, +-0 or a
/// subnormal.
fn with_specials(rng: &mut ChaCha8Rng, len: usize, rate: f64) -> Vec<f32> {
    let mut v = values(rng, len);
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        f32::MIN_POSITIVE / 4.0,
        -1e-42,
    ];
    for x in v.iter_mut() {
        if rng.gen_bool(rate) {
            *x = specials[rng.gen_range(0..specials.len())];
        }
    }
    v
}

#[test]
fn strided_grad_input_matches_reference_bit_exactly_at_one_and_two_threads() {
    // The phase lowering against the nested-loop definition over random
    // geometries with at least one stride above 1, special values in dy and
    // in w, two table widths and both thread counts.
    let mut rng = test_rng();
    let mults = [mbm_lut(7), lut(4)];
    for case in 0..160 {
        let mut s = random_conv_shape(&mut rng, &SHAPES);
        if s.stride == (1, 1) {
            s.stride = (rng.gen_range(2..=3), rng.gen_range(1..=3));
        }
        s.validate().unwrap();
        let mult = &mults[case % mults.len()];
        let rate = [0.0, 0.02, 0.1][case % 3];
        let w = with_specials(&mut rng, s.w_len(), rate);
        let dy = with_specials(&mut rng, s.y_len(), rate);
        let mut want = vec![f32::NAN; s.x_len()];
        conv2d_grad_input_reference(mult, &s, &dy, &w, &mut want).unwrap();
        for threads in [1, 2] {
            let mut got = vec![f32::NAN; s.x_len()];
            on_threads(threads, || conv2d_grad_input(mult, &s, &dy, &w, &mut got)).unwrap();
            assert_bit_exact(
                &format!("grad_input at {threads} thread(s)"),
                &s,
                mult,
                &got,
                &want,
            );
        }
    }
}

/// The input gradient as it was defined before the strided taps were left
/// out: every tap `(ol, kh, kw)` a product, `+0.0` from `dy` zero-dilated by
/// the stride and padded, summed plainly (the test keeps to <= 1024 terms).
fn grad_input_zero_dilated(mult: &Multiplier, s: &Conv2dShape, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let (cpg, opg) = (s.in_channels / s.groups, s.out_channels / s.groups);
    let dilated = |i: usize, k: usize, st: usize, p: usize, d: usize, out: usize| {
        let u = (i + p) as isize - (k * d) as isize;
        (u >= 0 && u.rem_euclid(st as isize) == 0 && (u as usize / st) < out)
            .then(|| u as usize / st)
    };
    let mut dx = vec![0.0f32; s.x_len()];
    for n in 0..s.batch {
        for c in 0..s.in_channels {
            let (g, cl) = (c / cpg, c % cpg);
            for ih in 0..s.in_h {
                for iw in 0..s.in_w {
                    let mut acc = 0.0f32;
                    for ol in 0..opg {
                        let o = g * opg + ol;
                        for kh in 0..s.kernel_h {
                            for kw in 0..s.kernel_w {
                                let oh =
                                    dilated(ih, kh, s.stride.0, s.padding.0, s.dilation.0, oh_n);
                                let ow =
                                    dilated(iw, kw, s.stride.1, s.padding.1, s.dilation.1, ow_n);
                                let d = match (oh, ow) {
                                    (Some(oh), Some(ow)) => {
                                        dy[((n * s.out_channels + o) * oh_n + oh) * ow_n + ow]
                                    }
                                    _ => 0.0,
                                };
                                let wv = w[((o * cpg + cl) * s.kernel_h + kh) * s.kernel_w + kw];
                                acc += mult.mul(d, wv);
                            }
                        }
                    }
                    dx[((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw] = acc;
                }
            }
        }
    }
    dx
}

#[test]
fn strided_grad_input_of_finite_operands_equals_the_zero_dilated_transposed_convolution() {
    // Leaving out the taps between the strided positions leaves out only
    // products with +0.0, which change no sum of finite terms: for finite
    // operands the new definition gives the old one's bits.
    let mut rng = test_rng();
    let mult = lut(7);
    for _ in 0..80 {
        let mut s = random_conv_shape(&mut rng, &SHAPES);
        if s.stride == (1, 1) {
            s.stride = (2, rng.gen_range(1..=3));
        }
        let w = values(&mut rng, s.w_len());
        let dy = values(&mut rng, s.y_len());
        let want = grad_input_zero_dilated(&mult, &s, &dy, &w);
        let mut reference = vec![f32::NAN; s.x_len()];
        conv2d_grad_input_reference(&mult, &s, &dy, &w, &mut reference).unwrap();
        assert_bit_exact("grad_input reference", &s, &mult, &reference, &want);
        let mut got = vec![f32::NAN; s.x_len()];
        conv2d_grad_input(&mult, &s, &dy, &w, &mut got).unwrap();
        assert_bit_exact("grad_input", &s, &mult, &got, &want);
    }
}

#[test]
fn taps_between_strided_positions_are_not_products_but_padding_taps_are() {
    // One channel, 3x3 kernel, stride 2, padding 1, 4x4 input: 2x2 output.
    // Input row ih is reached through kernel row kh iff ih + 1 - kh is even:
    // odd rows through kh = 0 and 2 only, even rows through kh = 1 only
    // (same for columns). An infinite centre weight sits between the
    // strided positions for every odd (ih, iw): those elements stay finite
    // (the zero-dilated definition made them 0 * inf = NaN). w[0][1] = inf
    // reaches row 3 through kh = 0 at output row (3 + 1 - 0) / 2 = 2, which
    // is outside the 2-row output: a padding term, so (3, 0) and (3, 2) are
    // NaN, while (1, 0) reads dy[1][0] through it and is infinite.
    let mut s = Conv2dShape::new(1, 1, 4, 4, 1, 3);
    s.stride = (2, 2);
    s.padding = (1, 1);
    assert_eq!((s.out_h(), s.out_w()), (2, 2));
    let dy = [1.5f32, -0.75, 0.5, 2.0];
    let mut w = [
        0.25f32,
        0.5,
        -1.25,
        0.75,
        f32::INFINITY,
        1.5,
        -0.5,
        1.75,
        0.125,
    ];
    for mult in [mbm_lut(7), Multiplier::Fp32] {
        for fast in [false, true] {
            let mut dx = vec![f32::NAN; 16];
            if fast {
                conv2d_grad_input(&mult, &s, &dy, &w, &mut dx).unwrap();
            } else {
                conv2d_grad_input_reference(&mult, &s, &dy, &w, &mut dx).unwrap();
            }
            let what = format!("{mult} {}", if fast { "lowered" } else { "reference" });
            // dx[1][1]: taps (kh, kw) in {0, 2}^2 read dy[(2 - kh)/2][(2 - kw)/2]
            // (bit for bit for the table; native FP32 may fuse).
            let m = |d: f32, k: usize| mult.mul(d, w[k]);
            let want11 = ((m(dy[3], 0) + m(dy[2], 2)) + m(dy[1], 6)) + m(dy[0], 8);
            if matches!(mult, Multiplier::Lut(_)) {
                assert_eq!(dx[5].to_bits(), want11.to_bits(), "{what}: dx[1][1]");
            } else {
                assert!(
                    (dx[5] - want11).abs() <= 1e-5 * want11.abs(),
                    "{what}: dx[1][1]"
                );
            }
            for (ih, iw) in [(1, 3), (3, 1), (3, 3)] {
                assert!(
                    dx[ih * 4 + iw].is_finite(),
                    "{what}: dx[{ih}][{iw}] = {}",
                    dx[ih * 4 + iw]
                );
            }
            // Even (ih, iw) are reached through the centre tap only.
            assert_eq!(dx[0], f32::INFINITY, "{what}: dx[0][0] = dy[0][0] * inf");
            assert_eq!(
                dx[2],
                f32::NEG_INFINITY,
                "{what}: dx[0][2] = dy[0][1] * inf"
            );
        }
    }
    w[1] = f32::INFINITY;
    for fast in [false, true] {
        let mult = mbm_lut(7);
        let mut dx = vec![0.0f32; 16];
        if fast {
            conv2d_grad_input(&mult, &s, &dy, &w, &mut dx).unwrap();
        } else {
            conv2d_grad_input_reference(&mult, &s, &dy, &w, &mut dx).unwrap();
        }
        assert!(
            dx[12].is_nan() && dx[14].is_nan(),
            "padding term 0 * inf in row 3: {dx:?}"
        );
        assert_eq!(
            dx[4],
            f32::INFINITY,
            "dx[1][0] reads dy[1][0] = 0.5 through w[0][1] = inf"
        );
        assert!(
            dx[5].is_finite() && dx[7].is_finite(),
            "row 1, odd columns: {dx:?}"
        );
    }
}

#[test]
fn one_by_one_stride_two_projection_gradient_is_zero_off_the_strided_grid() {
    // A ResNet option-B shortcut: 1x1, stride 2, no padding. Only even
    // (ih, iw) have terms; the others are empty sums, +0.0, even with
    // infinite and NaN weights (under the zero-dilated definition they were
    // NaN). On the grid: the plain dot product over the output channels.
    let mut rng = test_rng();
    let mut s = Conv2dShape::new(3, 4, 7, 6, 5, 1);
    s.stride = (2, 2);
    let mut w = values(&mut rng, s.w_len());
    w[2] = f32::INFINITY;
    w[7] = f32::NAN;
    let dy = values(&mut rng, s.y_len());
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    assert_eq!((oh_n, ow_n), (4, 3));
    let mult = mbm_lut(7);
    let mut want = vec![f32::NAN; s.x_len()];
    conv2d_grad_input_reference(&mult, &s, &dy, &w, &mut want).unwrap();
    for threads in [1, 2] {
        let mut got = vec![f32::NAN; s.x_len()];
        on_threads(threads, || conv2d_grad_input(&mult, &s, &dy, &w, &mut got)).unwrap();
        assert_bit_exact("grad_input", &s, &mult, &got, &want);
    }
    for n in 0..s.batch {
        for c in 0..s.in_channels {
            for ih in 0..s.in_h {
                for iw in 0..s.in_w {
                    let v = want[((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw];
                    if ih % 2 == 1 || iw % 2 == 1 {
                        assert_eq!(v.to_bits(), 0, "dx[{n},{c},{ih},{iw}] off the grid");
                        continue;
                    }
                    let (oh, ow) = (ih / 2, iw / 2);
                    let sum = (0..s.out_channels).fold(0.0f32, |acc, o| {
                        acc + mult.mul(
                            dy[((n * s.out_channels + o) * oh_n + oh) * ow_n + ow],
                            w[o * s.in_channels + c],
                        )
                    });
                    assert!(same_bits(v, sum), "dx[{n},{c},{ih},{iw}] = {v}, want {sum}");
                }
            }
        }
    }
}

#[test]
fn strides_larger_than_the_dilated_kernel_leave_phases_without_taps() {
    // Stride 3 over a 2x1 kernel: the phases (ih + p) mod 3 == 2 have no
    // tap and give +0.0; dilation 2 with stride 2 puts every tap in phase 0
    // along that axis. Both with padding as large as the kernel.
    let mut rng = test_rng();
    let mult = lut(5);
    let mut a = Conv2dShape::new(2, 3, 8, 7, 4, 1);
    a.kernel_h = 2;
    a.stride = (3, 3);
    a.padding = (2, 1);
    let mut b = Conv2dShape::new(2, 2, 9, 8, 4, 3);
    b.stride = (2, 2);
    b.dilation = (2, 2);
    b.padding = (3, 3);
    b.groups = 2;
    // A 1x1 input with padding 1 under a 1x1 stride-2 kernel: the input's
    // only phase has no tap.
    let mut c = Conv2dShape::new(1, 3, 1, 1, 2, 1);
    c.stride = (2, 2);
    c.padding = (1, 1);
    for s in [a, b, c] {
        s.validate().unwrap();
        let w = with_specials(&mut rng, s.w_len(), 0.05);
        let dy = with_specials(&mut rng, s.y_len(), 0.05);
        let mut want = vec![f32::NAN; s.x_len()];
        conv2d_grad_input_reference(&mult, &s, &dy, &w, &mut want).unwrap();
        let mut got = vec![f32::NAN; s.x_len()];
        conv2d_grad_input(&mult, &s, &dy, &w, &mut got).unwrap();
        assert_bit_exact("grad_input", &s, &mult, &got, &want);
        let plane = s.in_h * s.in_w;
        let empty = want
            .iter()
            .enumerate()
            .filter(|(i, v)| {
                let (ih, iw) = ((i % plane) / s.in_w, i % s.in_w);
                let no_h = (0..s.kernel_h).all(|k| {
                    (ih + s.padding.0 + 3 * s.stride.0 - k * s.dilation.0) % s.stride.0 != 0
                });
                let no_w = (0..s.kernel_w).all(|k| {
                    (iw + s.padding.1 + 3 * s.stride.1 - k * s.dilation.1) % s.stride.1 != 0
                });
                if no_h || no_w {
                    assert_eq!(v.to_bits(), 0, "{s:?}: element {i} has no term");
                }
                no_h || no_w
            })
            .count();
        assert!(empty > 0, "{s:?}: some elements have no term");
    }
}

#[test]
fn grad_input_with_more_than_1024_terms_per_element_sums_in_blocks() {
    // 300 output channels through a 3x3 stride-2 kernel: the elements of
    // phase (0, 0) have 300 * 2 * 2 = 1200 terms, more than one block of
    // 1024, so the lowering must add the two block sums like the reference.
    let mut rng = test_rng();
    let mut s = Conv2dShape::new(1, 2, 5, 5, 300, 3);
    s.stride = (2, 2);
    s.padding = (1, 1);
    let mult = mbm_lut(7);
    let w = values(&mut rng, s.w_len());
    let dy = values(&mut rng, s.y_len());
    let mut want = vec![f32::NAN; s.x_len()];
    conv2d_grad_input_reference(&mult, &s, &dy, &w, &mut want).unwrap();
    let mut got = vec![f32::NAN; s.x_len()];
    conv2d_grad_input(&mult, &s, &dy, &w, &mut got).unwrap();
    assert_bit_exact("grad_input", &s, &mult, &got, &want);
}

/// Stride-1 native FP32 and bf16 layers the size of ResNet-20's and LeNet-5's (more
/// channels than a micro-tile, rows not a multiple of the vector width, more
/// images than one weight-gradient group), which take the direct kernels on
/// CPUs with AVX2 and FMA: within the tolerance of
/// [`fp32_conv_products_match_reference_within_tolerance`], with NaN
/// exactly where the reference has NaN (an infinite weight meets the zero
/// padding), and the same bits at 1 and 2 threads.
#[test]
fn fp32_stride_one_layers_match_reference_and_do_not_depend_on_threads() {
    let mut rng = test_rng();
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    // (batch, in, out, size, kernel, padding)
    let layers = [
        (6, 16, 16, 10, 3, 1),
        (9, 3, 13, 12, 3, 1),
        (5, 1, 6, 12, 5, 2),
        (7, 6, 16, 14, 5, 0),
        (3, 32, 7, 8, 3, 1),
        (2, 5, 3, 9, 1, 0),
        (4, 4, 8, 11, 3, 2),
    ];
    for (case, &(batch, cin, cout, size, kernel, pad)) in layers.iter().enumerate() {
        for mult in [Multiplier::Fp32, Multiplier::Bf16] {
            let mut s = Conv2dShape::new(batch, cin, size, size + case % 3, cout, kernel);
            s.padding = (pad, pad);
            s.validate().unwrap();
            let x = values(&mut rng, s.x_len());
            let mut w = values(&mut rng, s.w_len());
            let dy = values(&mut rng, s.y_len());
            let mut mags: Vec<Vec<f32>> = Vec::new();
            compare_all(&mult, &s, &abs(&x), &abs(&w), &abs(&dy), |_, _, want| {
                mags.push(want.to_vec())
            });
            let mut idx = 0;
            compare_all(&mult, &s, &x, &w, &dy, |what, got, want| {
                for (i, ((g, r), m)) in got.iter().zip(want).zip(&mags[idx]).enumerate() {
                    let tol = 1e-5 * m + f32::MIN_POSITIVE;
                    assert!(
                    (g - r).abs() <= tol,
                    "{what} {mult} on {s:?}: element {i} is {g:e}, the reference gives {r:e} (tolerance {tol:e})"
                );
                }
                idx += 1;
            });
            let runs: Vec<Vec<Vec<f32>>> = [1, 2]
                .iter()
                .map(|&t| {
                    on_threads(t, || {
                        let mut out = Vec::new();
                        compare_all(&mult, &s, &x, &w, &dy, |_, got, _| out.push(got.to_vec()));
                        out
                    })
                })
                .collect();
            for (p, (one, two)) in runs[0].iter().zip(&runs[1]).enumerate() {
                assert!(
                    one.iter().zip(two).all(|(a, b)| same_bits(*a, *b)),
                    "product {p} with {mult} on {s:?} differs between 1 and 2 threads"
                );
            }
            // An infinite weight: NaN where the reference has NaN, nowhere else.
            let wi = rng.gen_range(0..w.len());
            w[wi] = f32::INFINITY;
            compare_all(&mult, &s, &x, &w, &dy, |what, got, want| {
                for (i, (g, r)) in got.iter().zip(want).enumerate() {
                    assert_eq!(
                    g.is_nan(),
                    r.is_nan(),
                    "{what} {mult} on {s:?} with w[{wi}] = inf: element {i} is {g:e}, the reference gives {r:e}"
                );
                }
            });
        }
    }
}
