//! 2-D convolutions through an 8-bit integer table: the three products of
//! a convolution layer (forward, input gradient, weight gradient) on 8-bit
//! codes, each a sum of [`offset_product`]s (the table's product with the
//! operands' zero points taken out) in wrapping `i32`.
//!
//! Shapes and layouts are [`Conv2dShape`]'s (NCHW, `W [C_out, C_in/groups,
//! KH, KW]`); operand order as DESIGN.md's (the first operand indexes the
//! table's rows):
//!
//! | product | first operand | second operand | terms |
//! |---|---|---|---|
//! | forward `y` | x (the zero point in the padding) | w | every tap |
//! | input gradient `dx` | dy | w | the taps `(o, kh, kw)` that meet an output position |
//! | weight gradient `dw` | x (the zero point in the padding) | dy | every output position |
//!
//! A padding tap is a product of the activation's zero point, as a
//! hardware array fed the zero-point code computes it. The input gradient
//! has no padding terms: a transposed convolution's taps that fall outside
//! the output are not computed (unlike the float definition, which adds a
//! product with `+0.0`; an integer table's `T[0][w]` need not be 0).
//!
//! The `*_reference` functions are the definition (nested loops, one
//! product at a time). The engines lower to [`int_gemm_offset`]: im2col of
//! an image as codes, then one GEMM per group (the forward and input
//! gradient with the table transposed, so that the weights are the GEMM's
//! first operand and the output comes out in NCHW); integer sums in any
//! order give the same bits, so the engines are bit-exact with the
//! references.

use rayon::prelude::*;

use crate::conv::{back_tap, tap, Conv2dShape};
use crate::int_gemm::{int_gemm_offset, offset_product, transpose_codes, IntOperand};
use crate::int_lut::IntLut;
use crate::Result;

/// Forward `y = conv(x, w)`, nested loops (the definition).
pub fn int_conv2d_forward_reference(
    lut: &IntLut,
    s: &Conv2dShape,
    x: IntOperand,
    w: IntOperand,
    y: &mut [i32],
) -> Result<()> {
    s.check_buffers(x.codes.len(), w.codes.len(), y.len())?;
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    for n in 0..s.batch {
        for o in 0..s.out_channels {
            let g = o / opg;
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut acc = 0i32;
                    for cl in 0..cpg {
                        let c = g * cpg + cl;
                        for kh in 0..s.kernel_h {
                            let ih = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h);
                            for kw in 0..s.kernel_w {
                                let iw = tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w);
                                let xv = match (ih, iw) {
                                    (Some(ih), Some(iw)) => {
                                        x.codes
                                            [((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw]
                                    }
                                    _ => x.zero,
                                };
                                let wv =
                                    w.codes[((o * cpg + cl) * s.kernel_h + kh) * s.kernel_w + kw];
                                acc = acc.wrapping_add(offset_product(lut, xv, x, wv, w));
                            }
                        }
                    }
                    y[((n * s.out_channels + o) * oh_n + oh) * ow_n + ow] = acc;
                }
            }
        }
    }
    Ok(())
}

/// Input gradient `dx` from `dy` and `w`, nested loops (the definition:
/// the taps that meet an output position).
pub fn int_conv2d_grad_input_reference(
    lut: &IntLut,
    s: &Conv2dShape,
    dy: IntOperand,
    w: IntOperand,
    dx: &mut [i32],
) -> Result<()> {
    s.check_buffers(dx.len(), w.codes.len(), dy.codes.len())?;
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    for n in 0..s.batch {
        for c in 0..s.in_channels {
            let (g, cl) = (c / cpg, c % cpg);
            for ih in 0..s.in_h {
                for iw in 0..s.in_w {
                    let mut acc = 0i32;
                    for ol in 0..opg {
                        let o = g * opg + ol;
                        for kh in 0..s.kernel_h {
                            let Some(Some(oh)) =
                                back_tap(ih, kh, s.stride.0, s.padding.0, s.dilation.0, oh_n)
                            else {
                                continue;
                            };
                            for kw in 0..s.kernel_w {
                                let Some(Some(ow)) =
                                    back_tap(iw, kw, s.stride.1, s.padding.1, s.dilation.1, ow_n)
                                else {
                                    continue;
                                };
                                let dyv =
                                    dy.codes[((n * s.out_channels + o) * oh_n + oh) * ow_n + ow];
                                let wv =
                                    w.codes[((o * cpg + cl) * s.kernel_h + kh) * s.kernel_w + kw];
                                acc = acc.wrapping_add(offset_product(lut, dyv, dy, wv, w));
                            }
                        }
                    }
                    dx[((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw] = acc;
                }
            }
        }
    }
    Ok(())
}

/// Weight gradient `dw` from `x` and `dy`, nested loops (the definition).
pub fn int_conv2d_grad_weight_reference(
    lut: &IntLut,
    s: &Conv2dShape,
    x: IntOperand,
    dy: IntOperand,
    dw: &mut [i32],
) -> Result<()> {
    s.check_buffers(x.codes.len(), dw.len(), dy.codes.len())?;
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    for o in 0..s.out_channels {
        let c0 = (o / opg) * cpg;
        for cl in 0..cpg {
            for kh in 0..s.kernel_h {
                for kw in 0..s.kernel_w {
                    let mut acc = 0i32;
                    for n in 0..s.batch {
                        for oh in 0..oh_n {
                            let ih = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h);
                            for ow in 0..ow_n {
                                let iw = tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w);
                                let xv = match (ih, iw) {
                                    (Some(ih), Some(iw)) => {
                                        x.codes[((n * s.in_channels + c0 + cl) * s.in_h + ih)
                                            * s.in_w
                                            + iw]
                                    }
                                    _ => x.zero,
                                };
                                let dyv =
                                    dy.codes[((n * s.out_channels + o) * oh_n + oh) * ow_n + ow];
                                acc = acc.wrapping_add(offset_product(lut, xv, x, dyv, dy));
                            }
                        }
                    }
                    dw[((o * cpg + cl) * s.kernel_h + kh) * s.kernel_w + kw] = acc;
                }
            }
        }
    }
    Ok(())
}

/// im2col of image `n` as codes: row `(c, kh, kw)` over all channels (group
/// `g` is the row block `g*kc..(g+1)*kc`), column `(oh, ow)`, `pad` in the
/// padding.
fn im2col_codes(s: &Conv2dShape, x: &[u8], n: usize, pad: u8, col: &mut [u8]) {
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let plane = oh_n * ow_n;
    let image = &x[n * s.in_channels * s.in_h * s.in_w..][..s.in_channels * s.in_h * s.in_w];
    for c in 0..s.in_channels {
        let channel = &image[c * s.in_h * s.in_w..][..s.in_h * s.in_w];
        for kh in 0..s.kernel_h {
            for kw in 0..s.kernel_w {
                let row = (c * s.kernel_h + kh) * s.kernel_w + kw;
                let dst = &mut col[row * plane..][..plane];
                for oh in 0..oh_n {
                    let ih = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h);
                    for ow in 0..ow_n {
                        let iw = tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w);
                        dst[oh * ow_n + ow] = match (ih, iw) {
                            (Some(ih), Some(iw)) => channel[ih * s.in_w + iw],
                            _ => pad,
                        };
                    }
                }
            }
        }
    }
}

/// The geometry's per-group sizes: input channels, output channels, taps
/// per output (`kc`) and output positions per image.
fn group_sizes(s: &Conv2dShape) -> (usize, usize, usize, usize) {
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    (
        cpg,
        opg,
        cpg * s.kernel_h * s.kernel_w,
        s.out_h() * s.out_w(),
    )
}

/// Forward pass lowered to [`int_gemm_offset`]; bit-exact with
/// [`int_conv2d_forward_reference`]. Images run in parallel.
pub fn int_conv2d_forward(
    lut: &IntLut,
    s: &Conv2dShape,
    x: IntOperand,
    w: IntOperand,
    y: &mut [i32],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(x.codes.len(), w.codes.len(), y.len())?;
    let (_, opg, kc, plane) = group_sizes(s);
    if y.is_empty() {
        return Ok(());
    }
    // y[o][p] = sum_k T[x_col[k][p]][w[o][k]] = sum_k T'[w[o][k]][x_col[k][p]].
    let lut_t = lut.transposed();
    y.par_chunks_mut(s.out_channels * plane)
        .enumerate()
        .try_for_each(|(n, y_image)| {
            let mut col = vec![0u8; s.groups * kc * plane];
            im2col_codes(s, x.codes, n, x.zero, &mut col);
            for g in 0..s.groups {
                int_gemm_offset(
                    &lut_t,
                    w.with_codes(&w.codes[g * opg * kc..][..opg * kc]),
                    x.with_codes(&col[g * kc * plane..][..kc * plane]),
                    &mut y_image[g * opg * plane..][..opg * plane],
                    opg,
                    plane,
                    kc,
                )?;
            }
            Ok(())
        })
}

/// Input gradient lowered to [`int_gemm_offset`] (the column gradient of
/// each image, then col2im); bit-exact with
/// [`int_conv2d_grad_input_reference`].
pub fn int_conv2d_grad_input(
    lut: &IntLut,
    s: &Conv2dShape,
    dy: IntOperand,
    w: IntOperand,
    dx: &mut [i32],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(dx.len(), w.codes.len(), dy.codes.len())?;
    let (_, opg, kc, plane) = group_sizes(s);
    if dx.is_empty() {
        return Ok(());
    }
    // col[k][p] = sum_o T[dy[o][p]][w[o][k]] = sum_o T'[wᵀ[k][o]][dy[o][p]].
    let lut_t = lut.transposed();
    let w_t: Vec<Vec<u8>> = (0..s.groups)
        .map(|g| transpose_codes(&w.codes[g * opg * kc..][..opg * kc], opg, kc))
        .collect();
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    dx.par_chunks_mut(s.in_channels * s.in_h * s.in_w)
        .enumerate()
        .try_for_each(|(n, dx_image)| {
            let dy_image = &dy.codes[n * s.out_channels * plane..][..s.out_channels * plane];
            let mut col = vec![0i32; kc * plane];
            dx_image.fill(0);
            for (g, w_t) in w_t.iter().enumerate() {
                int_gemm_offset(
                    &lut_t,
                    w.with_codes(w_t),
                    dy.with_codes(&dy_image[g * opg * plane..][..opg * plane]),
                    &mut col,
                    kc,
                    plane,
                    opg,
                )?;
                // col2im: each column term goes to the input position its
                // tap reads (none for a padding position).
                for (k, col_row) in col.chunks_exact(plane).enumerate() {
                    let (c, kh, kw) = (
                        g * (kc / (s.kernel_h * s.kernel_w)) + k / (s.kernel_h * s.kernel_w),
                        (k / s.kernel_w) % s.kernel_h,
                        k % s.kernel_w,
                    );
                    let channel = &mut dx_image[c * s.in_h * s.in_w..][..s.in_h * s.in_w];
                    for oh in 0..oh_n {
                        let Some(ih) = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h)
                        else {
                            continue;
                        };
                        for ow in 0..ow_n {
                            if let Some(iw) =
                                tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w)
                            {
                                let d = &mut channel[ih * s.in_w + iw];
                                *d = d.wrapping_add(col_row[oh * ow_n + ow]);
                            }
                        }
                    }
                }
            }
            Ok(())
        })
}

/// Weight gradient lowered to one [`int_gemm_offset`] per group over the
/// whole batch (`dwᵀ = x_col · dyᵀ`, the sum running over images and
/// positions); bit-exact with [`int_conv2d_grad_weight_reference`].
pub fn int_conv2d_grad_weight(
    lut: &IntLut,
    s: &Conv2dShape,
    x: IntOperand,
    dy: IntOperand,
    dw: &mut [i32],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(x.codes.len(), dw.len(), dy.codes.len())?;
    let (_, opg, kc, plane) = group_sizes(s);
    if dw.is_empty() {
        return Ok(());
    }
    let np = s.batch * plane;
    // Columns of all images side by side: row (c, kh, kw), column (n, p).
    let mut col = vec![0u8; s.groups * kc * np];
    let rows = s.groups * kc;
    let mut per_image: Vec<Vec<u8>> = (0..s.batch)
        .into_par_iter()
        .map(|n| {
            let mut c = vec![0u8; rows * plane];
            im2col_codes(s, x.codes, n, x.zero, &mut c);
            c
        })
        .collect();
    for (n, c) in per_image.iter_mut().enumerate() {
        for r in 0..rows {
            col[r * np + n * plane..][..plane].copy_from_slice(&c[r * plane..][..plane]);
        }
    }
    drop(per_image);
    let mut dw_t = vec![0i32; kc * opg];
    for g in 0..s.groups {
        // dyᵀ of the group: row (n, p), column o.
        let mut dy_t = vec![0u8; np * opg];
        for n in 0..s.batch {
            for ol in 0..opg {
                let src = &dy.codes[(n * s.out_channels + g * opg + ol) * plane..][..plane];
                for (p, &v) in src.iter().enumerate() {
                    dy_t[(n * plane + p) * opg + ol] = v;
                }
            }
        }
        int_gemm_offset(
            lut,
            x.with_codes(&col[g * kc * np..][..kc * np]),
            dy.with_codes(&dy_t),
            &mut dw_t,
            kc,
            opg,
            np,
        )?;
        for ol in 0..opg {
            for k in 0..kc {
                dw[(g * opg + ol) * kc + k] = dw_t[k * opg + ol];
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_seed;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_shape(rng: &mut ChaCha8Rng) -> Conv2dShape {
        let groups = [1, 1, 2, 3][rng.gen_range(0..4)];
        let kernel = rng.gen_range(1..4);
        let mut s = Conv2dShape::new(
            rng.gen_range(1..4),
            groups * rng.gen_range(1..4),
            rng.gen_range(kernel..9),
            rng.gen_range(kernel..9),
            groups * rng.gen_range(1..4),
            kernel,
        );
        s.kernel_w = rng.gen_range(1..=kernel);
        s.stride = (rng.gen_range(1..3), rng.gen_range(1..3));
        s.padding = (rng.gen_range(0..2), rng.gen_range(0..3));
        s.dilation = (rng.gen_range(1..3), 1);
        s.groups = groups;
        s
    }

    fn random_lut(rng: &mut ChaCha8Rng, signed: bool) -> IntLut {
        let range = crate::model::product_range(signed);
        let table = (0..65536).map(|_| rng.gen_range(range.clone())).collect();
        IntLut::from_table("random", signed, table).unwrap()
    }

    fn codes(rng: &mut ChaCha8Rng, len: usize) -> Vec<u8> {
        (0..len).map(|_| rng.gen()).collect()
    }

    #[test]
    fn int_conv2d_products_match_their_references_bit_exactly() {
        let seed = test_seed("int_conv2d_products_match_their_references_bit_exactly");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cases = 0;
        while cases < 40 {
            let s = random_shape(&mut rng);
            if s.validate().is_err() || s.y_len() == 0 {
                continue;
            }
            cases += 1;
            let lut = random_lut(&mut rng, cases % 2 == 0);
            let x = codes(&mut rng, s.x_len());
            let w = codes(&mut rng, s.w_len());
            let dy = codes(&mut rng, s.y_len());
            // Each operand with its own zero point and coding.
            let (xo, wo, dyo) = (
                IntOperand::new(&x, rng.gen(), rng.gen()),
                IntOperand::new(&w, rng.gen(), rng.gen()),
                IntOperand::new(&dy, rng.gen(), rng.gen()),
            );
            let what = format!("seed {seed}, case {cases}: {s:?}");

            let mut want = vec![0; s.y_len()];
            int_conv2d_forward_reference(&lut, &s, xo, wo, &mut want).unwrap();
            let mut got = vec![3; s.y_len()];
            int_conv2d_forward(&lut, &s, xo, wo, &mut got).unwrap();
            assert_eq!(got, want, "forward, {what}");

            let mut want = vec![0; s.x_len()];
            int_conv2d_grad_input_reference(&lut, &s, dyo, wo, &mut want).unwrap();
            let mut got = vec![3; s.x_len()];
            int_conv2d_grad_input(&lut, &s, dyo, wo, &mut got).unwrap();
            assert_eq!(got, want, "input gradient, {what}");

            let mut want = vec![0; s.w_len()];
            int_conv2d_grad_weight_reference(&lut, &s, xo, dyo, &mut want).unwrap();
            let mut got = vec![3; s.w_len()];
            int_conv2d_grad_weight(&lut, &s, xo, dyo, &mut got).unwrap();
            assert_eq!(got, want, "weight gradient, {what}");
        }
    }

    /// With the exact table and zero points 0, the integer forward is the
    /// float convolution of the operand values (exact in f32 here).
    #[test]
    fn int_conv2d_forward_with_the_exact_table_is_the_convolution_of_the_values() {
        let seed =
            test_seed("int_conv2d_forward_with_the_exact_table_is_the_convolution_of_the_values");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let exact = IntLut::build("exact", true, |a, b| a * b).unwrap();
        let mut s = Conv2dShape::new(2, 3, 7, 6, 4, 3);
        s.padding = (1, 1);
        s.stride = (2, 1);
        let (x, w) = (codes(&mut rng, s.x_len()), codes(&mut rng, s.w_len()));
        let mut got = vec![0; s.y_len()];
        int_conv2d_forward(
            &exact,
            &s,
            IntOperand::new(&x, 0, true),
            IntOperand::new(&w, 0, true),
            &mut got,
        )
        .unwrap();
        let as_f32 = |v: &[u8]| v.iter().map(|&c| c as i8 as f32).collect::<Vec<f32>>();
        let mut want = vec![0.0; s.y_len()];
        crate::conv::conv2d_forward_reference(
            &crate::Multiplier::Fp32,
            &s,
            &as_f32(&x),
            &as_f32(&w),
            &mut want,
        )
        .unwrap();
        let got: Vec<f32> = got.iter().map(|&v| v as f32).collect();
        assert_eq!(got, want, "seed {seed}");
    }
}
