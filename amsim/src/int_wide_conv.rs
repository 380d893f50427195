//! 2-D convolutions through a 12- or 16-bit integer multiplier
//! ([`WideIntMul`]): the three products of a convolution layer on integer
//! values, each a sum of [`offset_product`]s in exact `i64` (the bound of
//! [`crate::int_wide`] holds: every sum has at most [`crate::int_wide::MAX_K`]
//! terms, checked).
//!
//! The terms are the 8-bit engine's ([`crate::int_conv`]), with the same
//! operand order (the first operand is the model's first):
//!
//! | product | first operand | second operand | terms |
//! |---|---|---|---|
//! | forward `y` | x (the zero point in the padding) | w | every tap |
//! | input gradient `dx` | dy | w | the taps that meet an output position |
//! | weight gradient `dw` | x (the zero point in the padding) | dy | every output position |
//!
//! The `*_reference` functions are the definition (nested loops, one
//! product at a time). The engines lower to [`wide_gemm`] on im2col values
//! (rows: output positions for the forward and the input gradient, taps
//! for the weight gradient, all in parallel); integer sums in any order
//! give the same bits, so they are bit-exact with the references. The
//! input gradient's GEMM forms the column gradient of every (position,
//! tap) and col2im adds only the entries that land inside the input: the
//! same terms as the reference's.

use rayon::prelude::*;

use crate::conv::{forward_terms, grad_input_terms, grad_weight_terms, tap, Conv2dShape};
use crate::int_wide::{check_k, offset_product, wide_gemm, WideIntMul, WideOperand};
use crate::Result;

/// Forward `y = conv(x, w)`, nested loops (the definition).
pub fn wide_conv2d_forward_reference(
    mul: &WideIntMul,
    s: &Conv2dShape,
    x: WideOperand,
    w: WideOperand,
    y: &mut [i64],
) -> Result<()> {
    s.check_buffers(x.values.len(), w.values.len(), y.len())?;
    check_k((s.in_channels / s.groups) * s.kernel_h * s.kernel_w)?;
    forward_terms(
        s,
        || 0i64,
        |acc, xi, wi| {
            let xv = xi.map_or(x.zero, |i| x.values[i]);
            *acc += offset_product(mul, xv, x.zero, w.values[wi], w.zero);
        },
        |yi, acc| y[yi] = acc,
    );
    Ok(())
}

/// Input gradient `dx` from `dy` and `w`, nested loops (the definition:
/// the taps that meet an output position).
pub fn wide_conv2d_grad_input_reference(
    mul: &WideIntMul,
    s: &Conv2dShape,
    dy: WideOperand,
    w: WideOperand,
    dx: &mut [i64],
) -> Result<()> {
    s.check_buffers(dx.len(), w.values.len(), dy.values.len())?;
    check_k((s.out_channels / s.groups) * s.kernel_h * s.kernel_w)?;
    grad_input_terms(
        s,
        || 0i64,
        |acc, dyi, wi| {
            // Positions outside the output are no terms here.
            if let Some(i) = dyi {
                *acc += offset_product(mul, dy.values[i], dy.zero, w.values[wi], w.zero);
            }
        },
        |xi, acc| dx[xi] = acc,
    );
    Ok(())
}

/// Weight gradient `dw` from `x` and `dy`, nested loops (the definition).
pub fn wide_conv2d_grad_weight_reference(
    mul: &WideIntMul,
    s: &Conv2dShape,
    x: WideOperand,
    dy: WideOperand,
    dw: &mut [i64],
) -> Result<()> {
    s.check_buffers(x.values.len(), dw.len(), dy.values.len())?;
    check_k(s.batch * s.out_h() * s.out_w())?;
    grad_weight_terms(
        s,
        || 0i64,
        |acc, xi, dyi| {
            let xv = xi.map_or(x.zero, |i| x.values[i]);
            *acc += offset_product(mul, xv, x.zero, dy.values[dyi], dy.zero);
        },
        |wi, acc| dw[wi] = acc,
    );
    Ok(())
}

/// The im2col of image `n`, group `g` of `x`: `[positions, taps]`
/// (`taps = (c_local, kh, kw)`), `pad` where a tap falls in the padding.
fn im2col(s: &Conv2dShape, x: &[i32], pad: i32, n: usize, g: usize) -> Vec<i32> {
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let taps = cpg * s.kernel_h * s.kernel_w;
    let mut col = vec![pad; oh_n * ow_n * taps];
    col.par_chunks_mut(taps.max(1))
        .enumerate()
        .for_each(|(pos, row)| {
            let (oh, ow) = (pos / ow_n, pos % ow_n);
            for cl in 0..cpg {
                let c = g * cpg + cl;
                for kh in 0..s.kernel_h {
                    let Some(ih) = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h)
                    else {
                        continue;
                    };
                    for kw in 0..s.kernel_w {
                        if let Some(iw) = tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w)
                        {
                            row[(cl * s.kernel_h + kh) * s.kernel_w + kw] =
                                x[((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw];
                        }
                    }
                }
            }
        });
    col
}

/// The weights of group `g` as `[taps, out_channels / groups]` (the
/// transpose of their `[o_local, taps]` layout).
fn weights_by_tap(s: &Conv2dShape, w: &[i32], g: usize) -> Vec<i32> {
    let opg = s.out_channels / s.groups;
    let taps = s.in_channels / s.groups * s.kernel_h * s.kernel_w;
    let mut out = vec![0; taps * opg];
    for ol in 0..opg {
        for t in 0..taps {
            out[t * opg + ol] = w[(g * opg + ol) * taps + t];
        }
    }
    out
}

/// Output gradients of image `n`, group `g` as `[positions, o_local]`.
fn dy_by_position(s: &Conv2dShape, dy: &[i32], n: usize, g: usize) -> Vec<i32> {
    let opg = s.out_channels / s.groups;
    let plane = s.out_h() * s.out_w();
    let mut out = vec![0; plane * opg];
    for ol in 0..opg {
        let src = &dy[(n * s.out_channels + g * opg + ol) * plane..][..plane];
        for (pos, &v) in src.iter().enumerate() {
            out[pos * opg + ol] = v;
        }
    }
    out
}

/// Forward pass lowered to [`wide_gemm`] per image and group
/// (`y[pos][o] = sum_t x_col[pos][t] · w[t][o]`, output positions on the
/// rows), scattered to NCHW; bit-exact with
/// [`wide_conv2d_forward_reference`].
pub fn wide_conv2d_forward(
    mul: &WideIntMul,
    s: &Conv2dShape,
    x: WideOperand,
    w: WideOperand,
    y: &mut [i64],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(x.values.len(), w.values.len(), y.len())?;
    let opg = s.out_channels / s.groups;
    let taps = s.in_channels / s.groups * s.kernel_h * s.kernel_w;
    let plane = s.out_h() * s.out_w();
    for g in 0..s.groups {
        let wt = weights_by_tap(s, w.values, g);
        for n in 0..s.batch {
            let col = im2col(s, x.values, x.zero, n, g);
            let mut out = vec![0i64; plane * opg];
            wide_gemm(
                mul,
                WideOperand::new(&col, x.zero),
                WideOperand::new(&wt, w.zero),
                &mut out,
                plane,
                opg,
                taps,
            )?;
            for ol in 0..opg {
                let dst = &mut y[(n * s.out_channels + g * opg + ol) * plane..][..plane];
                for (pos, d) in dst.iter_mut().enumerate() {
                    *d = out[pos * opg + ol];
                }
            }
        }
    }
    Ok(())
}

/// Input gradient lowered to [`wide_gemm`] per image and group (the
/// column gradient `col[pos][t] = sum_o dy[pos][o] · w[o][t]`, then
/// col2im); bit-exact with [`wide_conv2d_grad_input_reference`].
pub fn wide_conv2d_grad_input(
    mul: &WideIntMul,
    s: &Conv2dShape,
    dy: WideOperand,
    w: WideOperand,
    dx: &mut [i64],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(dx.len(), w.values.len(), dy.values.len())?;
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    let taps = cpg * s.kernel_h * s.kernel_w;
    let plane = oh_n * ow_n;
    dx.fill(0);
    for g in 0..s.groups {
        // w of the group, [o_local, taps], as stored.
        let wg = &w.values[g * opg * taps..][..opg * taps];
        for n in 0..s.batch {
            let dyp = dy_by_position(s, dy.values, n, g);
            let mut col = vec![0i64; plane * taps];
            wide_gemm(
                mul,
                WideOperand::new(&dyp, dy.zero),
                WideOperand::new(wg, w.zero),
                &mut col,
                plane,
                taps,
                opg,
            )?;
            // col2im: each (position, tap) that lands inside the input.
            for pos in 0..plane {
                let (oh, ow) = (pos / ow_n, pos % ow_n);
                for cl in 0..cpg {
                    let c = g * cpg + cl;
                    for kh in 0..s.kernel_h {
                        let Some(ih) = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h)
                        else {
                            continue;
                        };
                        for kw in 0..s.kernel_w {
                            if let Some(iw) =
                                tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w)
                            {
                                dx[((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw] +=
                                    col[pos * taps + (cl * s.kernel_h + kh) * s.kernel_w + kw];
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// Weight gradient lowered to one [`wide_gemm`] per group over all images
/// (`dwᵀ[t][o] = sum_(n, pos) x_colᵀ[t][(n, pos)] · dy[(n, pos)][o]`, the
/// taps on the rows), transposed into `dw`; bit-exact with
/// [`wide_conv2d_grad_weight_reference`].
pub fn wide_conv2d_grad_weight(
    mul: &WideIntMul,
    s: &Conv2dShape,
    x: WideOperand,
    dy: WideOperand,
    dw: &mut [i64],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(x.values.len(), dw.len(), dy.values.len())?;
    let opg = s.out_channels / s.groups;
    let taps = s.in_channels / s.groups * s.kernel_h * s.kernel_w;
    let plane = s.out_h() * s.out_w();
    let rows = s.batch * plane;
    for g in 0..s.groups {
        // x_colᵀ [taps, (n, pos)] and dy [(n, pos), o_local].
        let mut xt = vec![0i32; taps * rows];
        let mut dyr = Vec::with_capacity(rows * opg);
        for n in 0..s.batch {
            let col = im2col(s, x.values, x.zero, n, g);
            for (pos, row) in col.chunks_exact(taps.max(1)).enumerate() {
                for (t, &v) in row.iter().enumerate() {
                    xt[t * rows + n * plane + pos] = v;
                }
            }
            dyr.extend(dy_by_position(s, dy.values, n, g));
        }
        let mut out = vec![0i64; taps * opg];
        wide_gemm(
            mul,
            WideOperand::new(&xt, x.zero),
            WideOperand::new(&dyr, dy.zero),
            &mut out,
            taps,
            opg,
            rows,
        )?;
        for ol in 0..opg {
            for t in 0..taps {
                dw[(g * opg + ol) * taps + t] = out[t * opg + ol];
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::int_wide::tests::{random_values, scrambled_models};
    use crate::metrics::tests::test_seed;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random_shape(rng: &mut ChaCha8Rng) -> Conv2dShape {
        let groups = [1, 1, 2, 3][rng.gen_range(0..4)];
        let mut s = Conv2dShape {
            batch: rng.gen_range(1..4),
            in_channels: groups * rng.gen_range(1..4),
            in_h: rng.gen_range(1..9),
            in_w: rng.gen_range(1..9),
            out_channels: groups * rng.gen_range(1..4),
            kernel_h: rng.gen_range(1..4),
            kernel_w: rng.gen_range(1..4),
            stride: (rng.gen_range(1..3), rng.gen_range(1..3)),
            padding: (rng.gen_range(0..3), rng.gen_range(0..3)),
            dilation: (rng.gen_range(1..3), rng.gen_range(1..3)),
            groups,
        };
        // Keep the output non-empty.
        s.in_h = s.in_h.max((s.kernel_h - 1) * s.dilation.0 + 1);
        s.in_w = s.in_w.max((s.kernel_w - 1) * s.dilation.1 + 1);
        s
    }

    #[test]
    fn wide_convolutions_match_their_references_bit_exactly() {
        let seed = test_seed("wide_convolutions_match_their_references_bit_exactly");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let models = scrambled_models();
        for case in 0..40 {
            let mul = &models[case % models.len()];
            let s = random_shape(&mut rng);
            s.validate().unwrap();
            let x = random_values(&mut rng, mul, s.x_len());
            let w = random_values(&mut rng, mul, s.w_len());
            let dy = random_values(&mut rng, mul, s.y_len());
            let r = mul.operand_range();
            let zx = if case % 2 == 0 {
                0
            } else {
                rng.gen_range(r.clone())
            };
            let zdy = if case % 3 == 0 { 0 } else { rng.gen_range(r) };
            let (xo, wo, dyo) = (
                WideOperand::new(&x, zx),
                WideOperand::new(&w, 0),
                WideOperand::new(&dy, zdy),
            );
            let what = format!("seed {seed}, case {case}: {mul:?} {s:?}");

            let (mut want, mut got) = (vec![0; s.y_len()], vec![9; s.y_len()]);
            wide_conv2d_forward_reference(mul, &s, xo, wo, &mut want).unwrap();
            wide_conv2d_forward(mul, &s, xo, wo, &mut got).unwrap();
            assert_eq!(got, want, "forward, {what}");

            let (mut want, mut got) = (vec![0; s.x_len()], vec![9; s.x_len()]);
            wide_conv2d_grad_input_reference(mul, &s, dyo, wo, &mut want).unwrap();
            wide_conv2d_grad_input(mul, &s, dyo, wo, &mut got).unwrap();
            assert_eq!(got, want, "input gradient, {what}");

            let (mut want, mut got) = (vec![0; s.w_len()], vec![9; s.w_len()]);
            wide_conv2d_grad_weight_reference(mul, &s, xo, dyo, &mut want).unwrap();
            wide_conv2d_grad_weight(mul, &s, xo, dyo, &mut got).unwrap();
            assert_eq!(got, want, "weight gradient, {what}");
        }
    }

    #[test]
    fn wide_convolution_forward_of_an_exact_model_is_the_integer_convolution() {
        // 1 x 1 x 3 x 3 image, 2 x 2 kernel, padding 1: corner output is
        // x[0][0]·w[1][1] plus three padding taps of the zero point 5,
        // which are zero after the correction: (7 - 5)·(-3).
        let exact = crate::WideIntMul::new("exact12s", 12, true, |a, b| i64::from(a * b)).unwrap();
        let s = Conv2dShape {
            batch: 1,
            in_channels: 1,
            in_h: 3,
            in_w: 3,
            out_channels: 1,
            kernel_h: 2,
            kernel_w: 2,
            stride: (1, 1),
            padding: (1, 1),
            dilation: (1, 1),
            groups: 1,
        };
        let x = [7, 5, 5, 5, 5, 5, 5, 5, 5];
        let w = [1000, 1000, 1000, -3];
        let mut y = vec![0; s.y_len()];
        wide_conv2d_forward(
            &exact,
            &s,
            WideOperand::new(&x, 5),
            WideOperand::new(&w, 0),
            &mut y,
        )
        .unwrap();
        assert_eq!(y[0], -6);
        assert_eq!(y[1], 2 * 1000, "x[0][0] under w[1][0]");
    }
}
