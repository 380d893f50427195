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
//! product at a time). The engines lower to integer GEMMs
//! ([`int_gemm_offset`]) on im2col codes; integer sums in any order give
//! the same bits, so every arrangement is bit-exact with the references:
//! - forward and input gradient, *position-major* (where the expansion
//!   engine runs and a group has at least `MIN_POSITION_CHANNELS` output
//!   channels): the output positions `(n, oh, ow)` of chunks of images are
//!   the GEMM's rows (thousands of them, so each expansion of the weights
//!   serves many rows), then a scatter to NCHW or a col2im;
//! - otherwise *channel-major*, one GEMM per image and group: output
//!   channels (forward) or taps (input gradient) on the rows, the image's
//!   positions on the columns, the table transposed so that the weights are
//!   the first operand and the output comes out in NCHW (the gather loop);
//! - weight gradient: chunks of images in parallel, each summing
//!   `T'[dy][x_col]` over its positions by the gather loop's step, the
//!   terms whose output gradient is its zero code (most of them behind a
//!   ReLU and a max pool) once for all channels; partial sums added.

use rayon::prelude::*;

use crate::conv::{forward_terms, grad_input_terms, grad_weight_terms, tap, Conv2dShape};
use crate::int_gemm::{self, int_gemm_offset, offset_product, transpose_codes, IntOperand};
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
    forward_terms(
        s,
        || 0i32,
        |acc, xi, wi| {
            let xv = xi.map_or(x.zero, |i| x.codes[i]);
            *acc = acc.wrapping_add(offset_product(lut, xv, x, w.codes[wi], w));
        },
        |yi, acc| y[yi] = acc,
    );
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
    grad_input_terms(
        s,
        || 0i32,
        |acc, dyi, wi| {
            // Positions outside the output are no terms here.
            if let Some(i) = dyi {
                *acc = acc.wrapping_add(offset_product(lut, dy.codes[i], dy, w.codes[wi], w));
            }
        },
        |xi, acc| dx[xi] = acc,
    );
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
    grad_weight_terms(
        s,
        || 0i32,
        |acc, xi, dyi| {
            let xv = xi.map_or(x.zero, |i| x.codes[i]);
            *acc = acc.wrapping_add(offset_product(lut, xv, x, dy.codes[dyi], dy));
        },
        |wi, acc| dw[wi] = acc,
    );
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

/// Output positions per GEMM of the position-major engines: enough rows
/// that each expansion of the weights serves thousands of them, few enough
/// that a chunk's columns (`rows x kc` codes) stay a few MiB.
const CHUNK_ROWS: usize = 65536;

/// Images per chunk of the position-major engines: whole images, about
/// [`CHUNK_ROWS`] positions, the batch split into chunks of equal size.
fn images_per_chunk(batch: usize, plane: usize) -> usize {
    let per = (CHUNK_ROWS / plane.max(1)).clamp(1, batch.max(1));
    batch.div_ceil(batch.div_ceil(per)).max(1)
}

/// For each kernel column `kw`: the output columns `lo..hi` whose tap `kw`
/// reads an input column (they are consecutive; the rest read padding).
fn valid_output_cols(s: &Conv2dShape) -> Vec<(usize, usize)> {
    (0..s.kernel_w)
        .map(|kw| {
            let reads = |ow: usize| tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w);
            let ow_n = s.out_w();
            let lo = (0..ow_n).find(|&ow| reads(ow).is_some()).unwrap_or(ow_n);
            let hi = (lo..ow_n).find(|&ow| reads(ow).is_none()).unwrap_or(ow_n);
            (lo, hi)
        })
        .collect()
}

/// The input column that output column `ow` reads through tap `kw` (a
/// column of [`valid_output_cols`]).
#[inline]
fn input_col(s: &Conv2dShape, ow: usize, kw: usize) -> usize {
    ow * s.stride.1 + kw * s.dilation.1 - s.padding.1
}

/// im2col of images `n0..` (as many as `col` holds), group `g`,
/// position-major: row `(n, oh, ow)`, column `(cl, kh, kw)` over the
/// group's channels, `pad` in the padding. Each tap is copied along an
/// output row (a strided store per element, no per-element tests). Images
/// run in parallel.
fn im2col_rows(s: &Conv2dShape, x: &[u8], n0: usize, g: usize, pad: u8, col: &mut [u8]) {
    let (cpg, _, kc, plane) = group_sizes(s);
    let ow_n = s.out_w();
    let image_len = s.in_channels * s.in_h * s.in_w;
    let cols = valid_output_cols(s);
    col.par_chunks_mut(plane * kc)
        .enumerate()
        .for_each(|(i, col_image)| {
            col_image.fill(pad);
            let image = &x[(n0 + i) * image_len..][..image_len];
            for cl in 0..cpg {
                let channel = &image[(g * cpg + cl) * s.in_h * s.in_w..][..s.in_h * s.in_w];
                for kh in 0..s.kernel_h {
                    for oh in 0..s.out_h() {
                        let Some(ih) = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h)
                        else {
                            continue;
                        };
                        let src = &channel[ih * s.in_w..][..s.in_w];
                        let dst = &mut col_image[oh * ow_n * kc..][..ow_n * kc];
                        for (kw, &(lo, hi)) in cols.iter().enumerate() {
                            if lo >= hi {
                                continue;
                            }
                            let k = (cl * s.kernel_h + kh) * s.kernel_w + kw;
                            let taps = dst[lo * kc + k..].iter_mut().step_by(kc);
                            let reads = src[input_col(s, lo, kw)..].iter().step_by(s.stride.1);
                            for (d, &v) in taps.zip(reads).take(hi - lo) {
                                *d = v;
                            }
                        }
                    }
                }
            }
        });
}

/// Least output channels per group for the position-major engines: with
/// fewer, the forward's GEMM fills under half of each 16-column panel and
/// the input gradient's sums are too short to pay for their expansions,
/// and the channel-major arrangement measured faster (LeNet-5's first
/// layer, 6 channels: 1.4 against 1.9 ms at batch 32 on the 2-core Xeon;
/// its second, 16 channels: 2.4 against 1.5 ms the other way).
const MIN_POSITION_CHANNELS: usize = 8;

/// The images per chunk of the position-major engines, if they run: their
/// GEMMs (chunks of [`images_per_chunk`] images, one row per output
/// position) reach the expansion engine and the layer has at least
/// [`MIN_POSITION_CHANNELS`] output channels per group. `None`: the
/// channel-major engines run.
fn position_chunk(s: &Conv2dShape) -> Option<usize> {
    let plane = s.out_h() * s.out_w();
    let per = images_per_chunk(s.batch, plane);
    (s.out_channels / s.groups >= MIN_POSITION_CHANNELS && int_gemm::expands(per * plane))
        .then_some(per)
}

/// Forward pass lowered to [`int_gemm_offset`]; bit-exact with
/// [`int_conv2d_forward_reference`]. Where `position_chunk` says so, the
/// output positions of chunks of images are the GEMM's rows
/// (`y[(n, p)][o] = sum_k x_col[(n, p)][k] · wᵀ[k][o]`, then scattered to
/// NCHW): a convolution has few output channels but many positions, and an
/// expansion of the weights is shared by every row. Otherwise (the gather
/// loop) the channels are the rows and each image's positions the columns.
pub fn int_conv2d_forward(
    lut: &IntLut,
    s: &Conv2dShape,
    x: IntOperand,
    w: IntOperand,
    y: &mut [i32],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(x.codes.len(), w.codes.len(), y.len())?;
    if y.is_empty() {
        return Ok(());
    }
    match position_chunk(s) {
        Some(per) => forward_by_positions(lut, s, x, w, y, per),
        None => forward_by_channels(lut, s, x, w, y),
    }
}

/// The forward with rows `(n, oh, ow)`, `per` images per GEMM.
fn forward_by_positions(
    lut: &IntLut,
    s: &Conv2dShape,
    x: IntOperand,
    w: IntOperand,
    y: &mut [i32],
    per: usize,
) -> Result<()> {
    let (_, opg, kc, plane) = group_sizes(s);
    let w_t: Vec<Vec<u8>> = (0..s.groups)
        .map(|g| transpose_codes(&w.codes[g * opg * kc..][..opg * kc], opg, kc))
        .collect();
    let image_len = s.out_channels * plane;
    let mut col = vec![0u8; per * plane * kc];
    let mut sums = vec![0i32; per * plane * opg];
    for n0 in (0..s.batch).step_by(per) {
        let images = per.min(s.batch - n0);
        let rows = images * plane;
        let (col, sums) = (&mut col[..rows * kc], &mut sums[..rows * opg]);
        for (g, w_t) in w_t.iter().enumerate() {
            im2col_rows(s, x.codes, n0, g, x.zero, col);
            int_gemm_offset(
                lut,
                x.with_codes(col),
                w.with_codes(w_t),
                sums,
                rows,
                opg,
                kc,
            )?;
            y[n0 * image_len..][..images * image_len]
                .par_chunks_mut(image_len)
                .zip(sums.par_chunks(plane * opg))
                .for_each(|(y_image, sums)| {
                    for ol in 0..opg {
                        let y_channel = &mut y_image[(g * opg + ol) * plane..][..plane];
                        for (p, v) in y_channel.iter_mut().enumerate() {
                            *v = sums[p * opg + ol];
                        }
                    }
                });
        }
    }
    Ok(())
}

/// The forward with rows `o` and columns `(oh, ow)`, one GEMM per image
/// and group (the table transposed, so that the weights are the first
/// operand). Images run in parallel.
fn forward_by_channels(
    lut: &IntLut,
    s: &Conv2dShape,
    x: IntOperand,
    w: IntOperand,
    y: &mut [i32],
) -> Result<()> {
    let (_, opg, kc, plane) = group_sizes(s);
    // y[o][p] = sum_k T[x_col[k][p]][w[o][k]] = sum_k T'[w[o][k]][x_col[k][p]].
    let lut_t = lut.transposed();
    y.par_chunks_mut(s.out_channels * plane)
        .enumerate()
        .try_for_each(|(n, y_image)| {
            let mut col = vec![0u8; s.groups * kc * plane];
            im2col_codes(s, x.codes, n, x.zero, &mut col);
            for g in 0..s.groups {
                int_gemm_offset(
                    lut_t,
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

/// Input gradient lowered to [`int_gemm_offset`] (the column gradient,
/// then col2im); bit-exact with [`int_conv2d_grad_input_reference`]. As
/// for the forward, the GEMM's rows are the output positions of chunks of
/// images where `position_chunk` says so (`col[(n, p)][k] = sum_o
/// dyᵀ[(n, p)][o] · w[o][k]`), else the taps `k` of one image.
pub fn int_conv2d_grad_input(
    lut: &IntLut,
    s: &Conv2dShape,
    dy: IntOperand,
    w: IntOperand,
    dx: &mut [i32],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(dx.len(), w.codes.len(), dy.codes.len())?;
    if dx.is_empty() {
        return Ok(());
    }
    match position_chunk(s) {
        Some(per) => grad_input_by_positions(lut, s, dy, w, dx, per),
        None => grad_input_by_channels(lut, s, dy, w, dx),
    }
}

/// Add the column gradient of one image and group (`col_row(oh, ow, k)`:
/// tap `k` of output position `(oh, ow)`) to the input positions the taps
/// read (none for a padding tap).
fn col2im(
    s: &Conv2dShape,
    g: usize,
    dx_image: &mut [i32],
    col_row: impl Fn(usize, usize, usize) -> i32,
) {
    let (cpg, _, _, _) = group_sizes(s);
    let cols = valid_output_cols(s);
    for cl in 0..cpg {
        let channel = &mut dx_image[(g * cpg + cl) * s.in_h * s.in_w..][..s.in_h * s.in_w];
        for kh in 0..s.kernel_h {
            for oh in 0..s.out_h() {
                let Some(ih) = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h) else {
                    continue;
                };
                let dst = &mut channel[ih * s.in_w..][..s.in_w];
                for (kw, &(lo, hi)) in cols.iter().enumerate() {
                    if lo >= hi {
                        continue;
                    }
                    let k = (cl * s.kernel_h + kh) * s.kernel_w + kw;
                    let reads = dst[input_col(s, lo, kw)..].iter_mut().step_by(s.stride.1);
                    for (ow, d) in (lo..hi).zip(reads) {
                        *d = d.wrapping_add(col_row(oh, ow, k));
                    }
                }
            }
        }
    }
}

/// The input gradient with rows `(n, oh, ow)`, `per` images per GEMM.
fn grad_input_by_positions(
    lut: &IntLut,
    s: &Conv2dShape,
    dy: IntOperand,
    w: IntOperand,
    dx: &mut [i32],
    per: usize,
) -> Result<()> {
    let (_, opg, kc, plane) = group_sizes(s);
    let ow_n = s.out_w();
    let (x_image, y_image) = (s.in_channels * s.in_h * s.in_w, s.out_channels * plane);
    let mut dy_t = vec![0u8; per * plane * opg];
    let mut col = vec![0i32; per * plane * kc];
    dx.par_iter_mut().for_each(|d| *d = 0);
    for n0 in (0..s.batch).step_by(per) {
        let images = per.min(s.batch - n0);
        let rows = images * plane;
        let (dy_t, col) = (&mut dy_t[..rows * opg], &mut col[..rows * kc]);
        for g in 0..s.groups {
            // dyᵀ of the group: row (n, p), column o.
            dy_t.par_chunks_mut(plane * opg)
                .enumerate()
                .for_each(|(i, t)| {
                    for ol in 0..opg {
                        let src = &dy.codes[(n0 + i) * y_image + (g * opg + ol) * plane..][..plane];
                        for (p, &v) in src.iter().enumerate() {
                            t[p * opg + ol] = v;
                        }
                    }
                });
            int_gemm_offset(
                lut,
                dy.with_codes(dy_t),
                w.with_codes(&w.codes[g * opg * kc..][..opg * kc]),
                col,
                rows,
                kc,
                opg,
            )?;
            dx[n0 * x_image..][..images * x_image]
                .par_chunks_mut(x_image)
                .zip(col.par_chunks(plane * kc))
                .for_each(|(dx_image, col)| {
                    col2im(s, g, dx_image, |oh, ow, k| col[(oh * ow_n + ow) * kc + k]);
                });
        }
    }
    Ok(())
}

/// The input gradient with rows `k` and columns `(oh, ow)`, one GEMM per
/// image and group (the table transposed). Images run in parallel.
fn grad_input_by_channels(
    lut: &IntLut,
    s: &Conv2dShape,
    dy: IntOperand,
    w: IntOperand,
    dx: &mut [i32],
) -> Result<()> {
    let (_, opg, kc, plane) = group_sizes(s);
    // col[k][p] = sum_o T[dy[o][p]][w[o][k]] = sum_o T'[wᵀ[k][o]][dy[o][p]].
    let lut_t = lut.transposed();
    let w_t: Vec<Vec<u8>> = (0..s.groups)
        .map(|g| transpose_codes(&w.codes[g * opg * kc..][..opg * kc], opg, kc))
        .collect();
    let ow_n = s.out_w();
    dx.par_chunks_mut(s.in_channels * s.in_h * s.in_w)
        .enumerate()
        .try_for_each(|(n, dx_image)| {
            let dy_image = &dy.codes[n * s.out_channels * plane..][..s.out_channels * plane];
            let mut col = vec![0i32; kc * plane];
            dx_image.fill(0);
            for (g, w_t) in w_t.iter().enumerate() {
                int_gemm_offset(
                    lut_t,
                    w.with_codes(w_t),
                    dy.with_codes(&dy_image[g * opg * plane..][..opg * plane]),
                    &mut col,
                    kc,
                    plane,
                    opg,
                )?;
                col2im(s, g, dx_image, |oh, ow, k| col[k * plane + oh * ow_n + ow]);
            }
            Ok(())
        })
}

/// Weight gradient through the gather loop's step
/// (`int_gemm::add_table_terms`) and the zero-point corrections of
/// [`int_gemm_offset`]; bit-exact with [`int_conv2d_grad_weight_reference`].
/// The sum over images and positions is split into chunks of images that
/// run in parallel (each: the position-major columns of its images, and
/// per group `dw[o][k] += sum_(n, p) T'[dy[o][(n, p)]][x_col[(n, p)][k]]`
/// with the table transposed, so that the output comes out in `dw`'s
/// layout, the terms whose `dy` is the zero code summed once for all
/// channels), and the partial sums are added (integer sums: any split
/// gives the same bits).
pub fn int_conv2d_grad_weight(
    lut: &IntLut,
    s: &Conv2dShape,
    x: IntOperand,
    dy: IntOperand,
    dw: &mut [i32],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(x.codes.len(), dw.len(), dy.codes.len())?;
    if dw.is_empty() {
        return Ok(());
    }
    let plane = s.out_h() * s.out_w();
    // At least one chunk per thread, and chunks of at most CHUNK_ROWS rows.
    let chunks = rayon::current_num_threads()
        .max((s.batch * plane).div_ceil(CHUNK_ROWS))
        .clamp(1, s.batch.max(1));
    grad_weight_in_chunks(lut, s, x, dy, dw, s.batch.div_ceil(chunks).max(1))
}

/// The weight gradient with `per` images per chunk.
fn grad_weight_in_chunks(
    lut: &IntLut,
    s: &Conv2dShape,
    x: IntOperand,
    dy: IntOperand,
    dw: &mut [i32],
    per: usize,
) -> Result<()> {
    let (_, opg, kc, plane) = group_sizes(s);
    let y_image = s.out_channels * plane;
    let lut_t = lut.transposed();
    // The gather loop's columns are the taps: a whole number of vectors of
    // 16 (padding taps of code 0 whose sums are dropped) keeps the loop off
    // its scalar remainder.
    let kp = kc.next_multiple_of(16);
    // sums[o][k] = sum_(n, p) T'[dy[o][(n, p)]][x_col[(n, p)][k]]
    //            = sum_(n, p) T'[z][x_col..] + sum_(dy != z) D[dy][x_col..]
    // with D[d] = T'[d] - T'[z] and z the code of dy's zero: most of an
    // output gradient behind a ReLU and a max pool is exactly 0, so the
    // first sum is taken once for all output channels and the second only
    // over the other codes (wrapping sums: the same bits).
    let tt = lut_t.table();
    let z = dy.zero;
    let zero_row = &tt[z as usize * 256..][..256];
    let diff: Vec<i32> = tt
        .chunks_exact(256)
        .flat_map(|row| row.iter().zip(zero_row).map(|(&t, &t0)| t.wrapping_sub(t0)))
        .collect();
    let starts: Vec<usize> = (0..s.batch).step_by(per).collect();
    let partials = starts
        .into_par_iter()
        .map(|n0| {
            let images = per.min(s.batch - n0);
            let rows = images * plane;
            let mut col = vec![0u8; rows * kc];
            let mut col_padded = vec![0u8; if kp > kc { rows * kp } else { 0 }];
            let mut dy_g = vec![0u8; opg * rows];
            let mut sums = vec![0i32; opg * kp];
            let mut base = vec![0i32; kp];
            let mut part = vec![0i32; dw.len()];
            for g in 0..s.groups {
                im2col_rows(s, x.codes, n0, g, x.zero, &mut col);
                let col = if kp > kc {
                    for (padded, row) in col_padded.chunks_exact_mut(kp).zip(col.chunks_exact(kc)) {
                        padded[..kc].copy_from_slice(row);
                    }
                    &col_padded
                } else {
                    &col
                };
                // dy of the group: row o, column (n, p).
                for ol in 0..opg {
                    for i in 0..images {
                        dy_g[ol * rows + i * plane..][..plane].copy_from_slice(
                            &dy.codes[(n0 + i) * y_image + (g * opg + ol) * plane..][..plane],
                        );
                    }
                }
                base.fill(0);
                int_gemm::add_table_terms(tt, col.chunks_exact(kp).map(|r| (z, r)), &mut base);
                for (ol, c_row) in sums.chunks_exact_mut(kp).enumerate() {
                    c_row.copy_from_slice(&base);
                    let terms = dy_g[ol * rows..][..rows]
                        .iter()
                        .zip(col.chunks_exact(kp))
                        .filter(|&(&d, _)| d != z)
                        .map(|(&d, r)| (d, r));
                    int_gemm::add_table_terms(&diff, terms, c_row);
                }
                int_gemm::take_out_zero_points(
                    dy.with_codes(&dy_g),
                    x.with_codes(col),
                    &mut sums,
                    kp,
                    rows,
                );
                for (part, sums) in part[g * opg * kc..][..opg * kc]
                    .chunks_exact_mut(kc)
                    .zip(sums.chunks_exact(kp))
                {
                    part.copy_from_slice(&sums[..kc]);
                }
            }
            Ok(part)
        })
        .collect::<Result<Vec<Vec<i32>>>>()?;
    dw.fill(0);
    for part in &partials {
        for (d, &v) in dw.iter_mut().zip(part) {
            *d = d.wrapping_add(v);
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

    /// Every arrangement of the engines (position-major with chunks of one,
    /// two and all images; channel-major) against the references, on
    /// shapes whose position-major GEMMs take the expansion engine (at
    /// least `int_expand::MIN_ROWS` rows, on CPUs with AVX-512F) and shapes
    /// that do not; groups, stride 2, dilation, asymmetric zero points and
    /// output gradients mostly at their zero point.
    #[test]
    fn int_conv2d_engine_arrangements_match_the_references_bit_exactly() {
        let seed = test_seed("int_conv2d_engine_arrangements_match_the_references_bit_exactly");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let shape = |batch, c, hw: (usize, usize), o, k, stride, pad, groups, dil| {
            let mut s = Conv2dShape::new(batch, c, hw.0, hw.1, o, k);
            (s.stride, s.padding, s.groups, s.dilation) = (stride, pad, groups, dil);
            s
        };
        let shapes = [
            // LeNet-5's first layer: 1 -> 6 channels, 5x5, padding 2.
            shape(3, 1, (28, 28), 6, 5, (1, 1), (2, 2), 1, (1, 1)),
            // Stride 2 and groups: 12 x 12 = 144 positions per image.
            shape(4, 4, (24, 23), 6, 3, (2, 2), (1, 1), 2, (1, 1)),
            // Depthwise-like, dilated, asymmetric padding and strides.
            shape(3, 3, (20, 17), 3, 3, (1, 2), (2, 0), 3, (2, 1)),
            // More output channels than a panel of 16, k over a block of 16.
            shape(2, 5, (16, 16), 37, 4, (1, 1), (1, 2), 1, (1, 1)),
            // Too few positions for the expansion engine.
            shape(2, 2, (6, 5), 4, 3, (2, 1), (1, 1), 2, (1, 1)),
        ];
        for (case, s) in shapes.into_iter().enumerate() {
            s.validate().unwrap();
            let lut = random_lut(&mut rng, case % 2 == 1);
            let x = codes(&mut rng, s.x_len());
            let w = codes(&mut rng, s.w_len());
            let mut dy = codes(&mut rng, s.y_len());
            // Output gradients mostly at their zero point (as behind a ReLU
            // and a max pool) in every other case.
            let dy_zero: u8 = rng.gen();
            if case % 2 == 0 {
                for d in &mut dy {
                    if rng.gen_range(0..4) != 0 {
                        *d = dy_zero;
                    }
                }
            }
            let (xo, wo, dyo) = (
                IntOperand::new(&x, rng.gen(), rng.gen()),
                IntOperand::new(&w, if case == 0 { 0 } else { rng.gen() }, rng.gen()),
                IntOperand::new(&dy, dy_zero, rng.gen()),
            );
            let plane = s.out_h() * s.out_w();
            let what = |how: &str| {
                format!(
                    "seed {seed}, case {case} ({how}, {} rows per image, zero points {} {} {}): {s:?}",
                    plane, xo.zero, wo.zero, dyo.zero
                )
            };
            let mut y_ref = vec![0; s.y_len()];
            int_conv2d_forward_reference(&lut, &s, xo, wo, &mut y_ref).unwrap();
            let mut dx_ref = vec![0; s.x_len()];
            int_conv2d_grad_input_reference(&lut, &s, dyo, wo, &mut dx_ref).unwrap();
            let mut dw_ref = vec![0; s.w_len()];
            int_conv2d_grad_weight_reference(&lut, &s, xo, dyo, &mut dw_ref).unwrap();
            for per in [1, 2, s.batch] {
                let how = format!("{per} images per chunk");
                let mut y = vec![3; s.y_len()];
                forward_by_positions(&lut, &s, xo, wo, &mut y, per).unwrap();
                assert_eq!(y, y_ref, "forward, {}", what(&how));
                let mut dx = vec![3; s.x_len()];
                grad_input_by_positions(&lut, &s, dyo, wo, &mut dx, per).unwrap();
                assert_eq!(dx, dx_ref, "input gradient, {}", what(&how));
                let mut dw = vec![3; s.w_len()];
                grad_weight_in_chunks(&lut, &s, xo, dyo, &mut dw, per).unwrap();
                assert_eq!(dw, dw_ref, "weight gradient, {}", what(&how));
            }
            let mut y = vec![3; s.y_len()];
            forward_by_channels(&lut, &s, xo, wo, &mut y).unwrap();
            assert_eq!(y, y_ref, "forward, {}", what("by channels"));
            let mut dx = vec![3; s.x_len()];
            grad_input_by_channels(&lut, &s, dyo, wo, &mut dx).unwrap();
            assert_eq!(dx, dx_ref, "input gradient, {}", what("by channels"));
            // And the public engines, whichever arrangement they pick.
            let how = format!("dispatch, by positions: {}", position_chunk(&s).is_some());
            int_conv2d_forward(&lut, &s, xo, wo, &mut y).unwrap();
            assert_eq!(y, y_ref, "forward, {}", what(&how));
            int_conv2d_grad_input(&lut, &s, dyo, wo, &mut dx).unwrap();
            assert_eq!(dx, dx_ref, "input gradient, {}", what(&how));
            let mut dw = vec![3; s.w_len()];
            int_conv2d_grad_weight(&lut, &s, xo, dyo, &mut dw).unwrap();
            assert_eq!(dw, dw_ref, "weight gradient, {}", what(&how));
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
