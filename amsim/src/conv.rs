//! 2-D convolution (cross-correlation, as in every DNN framework) with every
//! product through a [`Multiplier`]: forward, input gradient and weight
//! gradient.
//!
//! Layouts: `x` is `[N, C_in, H, W]`, `w` is `[C_out, C_in / groups, KH, KW]`,
//! `y` is `[N, C_out, OH, OW]`, all dense row-major.
//!
//! # Definition
//!
//! Each output element is ONE dot product over the terms below, taken in
//! increasing index order and summed in FP32 in blocks of
//! [`ACC_BLOCK`](crate::accumulate::ACC_BLOCK) consecutive terms: each block
//! from `+0.0`, then the block sums in order from `+0.0`
//! ([`BlockedSum`], DESIGN.md, "The arithmetic"). Within group `g`
//! (`c = g*C_in/groups + cl`, `o = g*C_out/groups + ol`):
//! - forward `y[n,o,oh,ow] = sum_(cl,kh,kw) mul(xp(n,c,oh*s-p+kh*d, ow*s-p+kw*d), w[o,cl,kh,kw])`
//!   where `xp` is `x` extended by `+0.0` outside the image (the padding);
//! - input gradient `dx[n,c,ih,iw] = sum_(ol,kh,kw) mul(dyp(n,o,u/s_h,v/s_w), w[o,cl,kh,kw])`
//!   with `u = ih+p_h-kh*d_h` and `v = iw+p_w-kw*d_w`, over the taps
//!   `(ol, kh, kw)` for which `u` is a multiple of `s_h` AND `v` a multiple
//!   of `s_w` (negative multiples included) and over no others: a tap that
//!   falls between the strided output positions is not a product at all.
//!   `dyp(n,o,oh,ow)` is `dy[n,o,oh,ow]` inside the output and `+0.0`
//!   outside it (the padding of the transposed convolution). At stride 1
//!   every tap is a term; at stride 2 about a quarter of them are. An element
//!   with no term at all (e.g. an odd row of a 1x1 stride-2 projection) is
//!   the empty sum, `+0.0`;
//! - weight gradient `dw[o,cl,kh,kw] = sum_(n,oh,ow) mul(xp(n,c,oh*s-p+kh*d, ow*s-p+kw*d), dy[n,o,oh,ow])`.
//!
//! The taps that fall into the padding ARE terms, products with `+0.0`
//! (for the input gradient: the padding of the transposed convolution; the
//! taps between its strided positions are not terms, see above). For
//! finite operands such a product is a signed zero, and adding a signed
//! zero to a block sum that started at `+0.0` never changes it (the sum is
//! never `-0.0`); when the other operand is infinite or NaN, `0 * inf`
//! makes the element NaN. Each such term still counts as one of the terms
//! of its block, so the block boundaries fall at fixed tap positions: for
//! more than `ACC_BLOCK` terms, leaving the zero terms out would regroup the
//! others and change the rounding. Including them is what lets the lowered
//! GEMMs below agree with the definition bit for bit for every input,
//! special values included. (Before this definition the input gradient also
//! counted the taps between the strided positions as products with `+0.0`,
//! so an infinite weight at such a tap made the element NaN; it no longer
//! does.)
//!
//! Operand order follows DESIGN.md: activation first in the forward and
//! weight-gradient products, output gradient first in the input gradient.
//! The `*_reference` functions are the nested-loop definitions.
//!
//! # Lowering to GEMM
//!
//! The fast functions lower each product to [`gemm`], one call per group
//! (and phase), whose `k` runs over the same terms in the same order, so
//! each element is the same blocked sum (the GEMM blocks its `k` at the same
//! multiples of [`ACC_BLOCK`](crate::accumulate::ACC_BLOCK)):
//! - forward: `Y_g = im2col(x)_g · W_gᵀ` with rows `(n, oh, ow)` and
//!   `k = (cl, kh, kw)`; `W_gᵀ` is a strided view of `w` (no copy);
//! - input gradient, by phases (a polyphase decomposition of the transposed
//!   convolution): the input positions split into `s_h * s_w` phases
//!   `(ph, pw) = ((ih + p_h) mod s_h, (iw + p_w) mod s_w)`. Within a phase
//!   the terms of every element come from the same kernel taps, the `kh`
//!   with `kh*d_h ≡ ph (mod s_h)` and the `kw` with `kw*d_w ≡ pw (mod s_w)`
//!   (each an arithmetic progression, see [`AxisPhase`]), and the output
//!   position they read moves by one when the input position moves by one
//!   stride. So each phase is one GEMM per group,
//!   `dX_(g,phase) = dycol(dy)_(g,phase) · Wt_(g,phase)`, with rows
//!   `(n, ih, iw)` of the phase and `k = (ol, kh, kw)` over the phase's taps
//!   in increasing order (the definition's order with the non-terms left
//!   out); `dycol` gathers `dyp` (runs of consecutive `dy` columns, `+0.0`
//!   outside the output) and `Wt_(g,phase)[(ol,kh,kw), cl] = w[o,cl,kh,kw]`
//!   is a small repacked copy of the phase's weights. The phase results are
//!   scattered into `dx`; a phase without taps (possible when `s > k*d`, e.g.
//!   a 1x1 stride-2 projection, where only one phase of four has any) is
//!   written as `+0.0`. At stride 1 there is one phase: the im2col of the
//!   padded `dy`;
//! - weight gradient: `dW_gᵀ = im2col(x)_gᵀ · dYᵀ_g` with `k = (n, oh, ow)`
//!   over the whole batch, where `dYᵀ` is `dy` transposed to
//!   `[C_out, N*OH*OW]`. This `k` is long and the output small, so the
//!   engine may split `k` across threads at block boundaries (the block sums
//!   are added in order afterwards: the same bits at any thread count).
//!
//! The column matrices are stored transposed (`[k][rows]`, so each tap is a
//! run of copied input rows) and read through transposed views.
//! Forward and input gradient process the batch in chunks of images (rows
//! are independent) so that the column buffer (of one phase) stays near
//! [`COL_CHUNK_ELEMS`]; the weight gradient needs the whole batch's columns
//! (about 75 MB for a batch of 128 on ResNet-20's first stage). Column and
//! output buffers are kept per thread and reused between calls.

// The workspace's rust-version (1.80) predates `usize::is_multiple_of`.
#![allow(clippy::manual_is_multiple_of)]

use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;

use crate::accumulate::BlockedSum;
use crate::gemm::{gemm, MatMut, MatRef};
use crate::{AmsimError, Lut, Multiplier, Result};

/// Target size, in `f32` elements, of the column buffer of one chunk of
/// images in the forward pass and the input gradient (8 MiB: small enough
/// to stay in a server's last-level cache between the im2col and the GEMM
/// that reads it, large enough for a GEMM of thousands of rows; not tuned).
pub const COL_CHUNK_ELEMS: usize = 1 << 21;

/// The geometry of a 2-D convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conv2dShape {
    /// Batch size N.
    pub batch: usize,
    /// Input channels C_in.
    pub in_channels: usize,
    /// Input height H.
    pub in_h: usize,
    /// Input width W.
    pub in_w: usize,
    /// Output channels C_out.
    pub out_channels: usize,
    /// Kernel height KH.
    pub kernel_h: usize,
    /// Kernel width KW.
    pub kernel_w: usize,
    /// Stride (vertical, horizontal).
    pub stride: (usize, usize),
    /// Zero padding (vertical, horizontal) on each side.
    pub padding: (usize, usize),
    /// Dilation (vertical, horizontal).
    pub dilation: (usize, usize),
    /// Groups (`in_channels` for depthwise).
    pub groups: usize,
}

impl Conv2dShape {
    /// A square-kernel convolution with stride 1, no padding or dilation and
    /// one group; adjust the public fields for the rest.
    pub fn new(
        batch: usize,
        in_channels: usize,
        in_h: usize,
        in_w: usize,
        out_channels: usize,
        kernel: usize,
    ) -> Self {
        Conv2dShape {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            kernel_h: kernel,
            kernel_w: kernel,
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }

    /// Output height OH.
    pub fn out_h(&self) -> usize {
        out_size(
            self.in_h,
            self.kernel_h,
            self.stride.0,
            self.padding.0,
            self.dilation.0,
        )
    }

    /// Output width OW.
    pub fn out_w(&self) -> usize {
        out_size(
            self.in_w,
            self.kernel_w,
            self.stride.1,
            self.padding.1,
            self.dilation.1,
        )
    }

    /// Elements of `x`.
    pub fn x_len(&self) -> usize {
        self.batch * self.in_channels * self.in_h * self.in_w
    }

    /// Elements of `w`.
    pub fn w_len(&self) -> usize {
        self.out_channels * (self.in_channels / self.groups.max(1)) * self.kernel_h * self.kernel_w
    }

    /// Elements of `y`.
    pub fn y_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h() * self.out_w()
    }

    /// Multiply-accumulates of one forward pass (the same for each gradient).
    pub fn macs(&self) -> u64 {
        self.y_len() as u64
            * (self.in_channels / self.groups.max(1) * self.kernel_h * self.kernel_w) as u64
    }

    /// Check the geometry itself.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(AmsimError::shape(format!("conv2d: {m}")));
        if self.stride.0 == 0 || self.stride.1 == 0 {
            return err("stride must be at least 1".into());
        }
        if self.dilation.0 == 0 || self.dilation.1 == 0 {
            return err("dilation must be at least 1".into());
        }
        if self.groups == 0
            || self.in_channels % self.groups != 0
            || self.out_channels % self.groups != 0
        {
            return err(format!(
                "groups {} must divide in_channels {} and out_channels {}",
                self.groups, self.in_channels, self.out_channels
            ));
        }
        if self.kernel_h == 0 || self.kernel_w == 0 {
            return err("kernel must be at least 1x1".into());
        }
        let eff_h = self.dilation.0 * (self.kernel_h - 1) + 1;
        let eff_w = self.dilation.1 * (self.kernel_w - 1) + 1;
        if eff_h > self.in_h + 2 * self.padding.0 || eff_w > self.in_w + 2 * self.padding.1 {
            return err(format!(
                "a {}x{} kernel (dilated {}x{}) does not fit a {}x{} input padded by {:?}",
                self.kernel_h, self.kernel_w, eff_h, eff_w, self.in_h, self.in_w, self.padding
            ));
        }
        Ok(())
    }

    /// Check the geometry and the lengths of the three buffers.
    pub fn check_buffers(&self, x: usize, w: usize, y: usize) -> Result<()> {
        self.validate()?;
        for (name, got, want) in [
            ("x", x, self.x_len()),
            ("w", w, self.w_len()),
            ("y", y, self.y_len()),
        ] {
            if got != want {
                return Err(AmsimError::shape(format!(
                    "conv2d: {name} has {got} elements, the shape needs {want}"
                )));
            }
        }
        Ok(())
    }
}

fn out_size(input: usize, kernel: usize, stride: usize, pad: usize, dil: usize) -> usize {
    let eff = dil * (kernel.max(1) - 1) + 1;
    let padded = input + 2 * pad;
    if padded < eff || stride == 0 {
        0
    } else {
        (padded - eff) / stride + 1
    }
}

/// Input coordinate of output coordinate `o` through tap `k`, if inside
/// (`None` is the zero padding).
#[inline]
pub(crate) fn tap(
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    size: usize,
) -> Option<usize> {
    let pos = (o * stride + k * dil) as isize - pad as isize;
    (pos >= 0 && (pos as usize) < size).then_some(pos as usize)
}

/// The output coordinate whose gradient is a term of input coordinate `i`
/// through tap `k` of the input gradient: `None` when `i + pad - k*dil` is
/// no multiple of the stride (no term at all), `Some(None)` when it is one
/// outside the output (a term with `+0.0`, the padding), else
/// `Some(Some(o))`.
#[inline]
pub(crate) fn back_tap(
    i: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    out: usize,
) -> Option<Option<usize>> {
    let pos = (i + pad) as isize - (k * dil) as isize;
    if pos.rem_euclid(stride as isize) != 0 {
        return None;
    }
    let o = pos.div_euclid(stride as isize);
    Some((o >= 0 && (o as usize) < out).then_some(o as usize))
}

/// The terms of the forward product in the definition's order, for the
/// references of every multiplier kind: for each output element (index
/// `yi` into `y`, in increasing order) a fresh accumulator `new()`, then
/// `add(&mut acc, xi, wi)` for each tap `(cl, kh, kw)` in increasing order,
/// with `xi` the index into `x` (`None` in the padding) and `wi` into `w`,
/// then `finish(yi, acc)`.
pub(crate) fn forward_terms<A>(
    s: &Conv2dShape,
    new: impl Fn() -> A,
    mut add: impl FnMut(&mut A, Option<usize>, usize),
    mut finish: impl FnMut(usize, A),
) {
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    for n in 0..s.batch {
        for o in 0..s.out_channels {
            let g = o / opg;
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut acc = new();
                    for cl in 0..cpg {
                        let c = g * cpg + cl;
                        for kh in 0..s.kernel_h {
                            let ih = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h);
                            for kw in 0..s.kernel_w {
                                let iw = tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w);
                                let xi = match (ih, iw) {
                                    (Some(ih), Some(iw)) => {
                                        Some(((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw)
                                    }
                                    _ => None,
                                };
                                let wi = ((o * cpg + cl) * s.kernel_h + kh) * s.kernel_w + kw;
                                add(&mut acc, xi, wi);
                            }
                        }
                    }
                    finish(((n * s.out_channels + o) * oh_n + oh) * ow_n + ow, acc);
                }
            }
        }
    }
}

/// The terms of the input gradient in the definition's order (see
/// [`forward_terms`]): for each element `dxi` of `dx`, the taps `(ol, kh,
/// kw)` of its group that meet a strided output position, as `add(&mut
/// acc, dyi, wi)` with `dyi` the index into `dy`, `None` where that
/// position lies outside the output (the padding of the transposed
/// convolution).
pub(crate) fn grad_input_terms<A>(
    s: &Conv2dShape,
    new: impl Fn() -> A,
    mut add: impl FnMut(&mut A, Option<usize>, usize),
    mut finish: impl FnMut(usize, A),
) {
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    for n in 0..s.batch {
        for c in 0..s.in_channels {
            let (g, cl) = (c / cpg, c % cpg);
            for ih in 0..s.in_h {
                for iw in 0..s.in_w {
                    let mut acc = new();
                    for ol in 0..opg {
                        let o = g * opg + ol;
                        for kh in 0..s.kernel_h {
                            let Some(oh) =
                                back_tap(ih, kh, s.stride.0, s.padding.0, s.dilation.0, oh_n)
                            else {
                                continue;
                            };
                            for kw in 0..s.kernel_w {
                                let Some(ow) =
                                    back_tap(iw, kw, s.stride.1, s.padding.1, s.dilation.1, ow_n)
                                else {
                                    continue;
                                };
                                let dyi = match (oh, ow) {
                                    (Some(oh), Some(ow)) => {
                                        Some(((n * s.out_channels + o) * oh_n + oh) * ow_n + ow)
                                    }
                                    _ => None,
                                };
                                let wi = ((o * cpg + cl) * s.kernel_h + kh) * s.kernel_w + kw;
                                add(&mut acc, dyi, wi);
                            }
                        }
                    }
                    finish(((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw, acc);
                }
            }
        }
    }
}

/// The terms of the weight gradient in the definition's order (see
/// [`forward_terms`]): for each element `dwi` of `dw`, the output positions
/// `(n, oh, ow)` of the whole batch, as `add(&mut acc, xi, dyi)` with `xi`
/// the index into `x` (`None` in the padding) and `dyi` into `dy`.
pub(crate) fn grad_weight_terms<A>(
    s: &Conv2dShape,
    new: impl Fn() -> A,
    mut add: impl FnMut(&mut A, Option<usize>, usize),
    mut finish: impl FnMut(usize, A),
) {
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    for o in 0..s.out_channels {
        let g = o / opg;
        for cl in 0..cpg {
            let c = g * cpg + cl;
            for kh in 0..s.kernel_h {
                for kw in 0..s.kernel_w {
                    let mut acc = new();
                    for n in 0..s.batch {
                        for oh in 0..oh_n {
                            let ih = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h);
                            for ow in 0..ow_n {
                                let iw = tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w);
                                let xi = match (ih, iw) {
                                    (Some(ih), Some(iw)) => {
                                        Some(((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw)
                                    }
                                    _ => None,
                                };
                                let dyi = ((n * s.out_channels + o) * oh_n + oh) * ow_n + ow;
                                add(&mut acc, xi, dyi);
                            }
                        }
                    }
                    finish(((o * cpg + cl) * s.kernel_h + kh) * s.kernel_w + kw, acc);
                }
            }
        }
    }
}

/// Forward pass, nested loops (the definition; padding taps are products
/// with `+0.0`, see the module doc).
pub fn conv2d_forward_reference(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) -> Result<()> {
    s.check_buffers(x.len(), w.len(), y.len())?;
    forward_terms(
        s,
        BlockedSum::new,
        |acc, xi, wi| acc.add(mult.mul(xi.map_or(0.0, |i| x[i]), w[wi])),
        |yi, acc| y[yi] = acc.finish(),
    );
    Ok(())
}

/// Input gradient `dx` from `dy` and `w`, nested loops (the definition:
/// the taps `(o, kh, kw)` of the group that meet the strided output
/// positions, with `+0.0` where such a position lies outside the output;
/// blocked accumulation). `dx` is overwritten.
pub fn conv2d_grad_input_reference(
    mult: &Multiplier,
    s: &Conv2dShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    s.check_buffers(dx.len(), w.len(), dy.len())?;
    grad_input_terms(
        s,
        BlockedSum::new,
        |acc, dyi, wi| acc.add(mult.mul(dyi.map_or(0.0, |i| dy[i]), w[wi])),
        |xi, acc| dx[xi] = acc.finish(),
    );
    Ok(())
}

/// Weight gradient `dw` from `x` and `dy`, nested loops (the definition;
/// padding taps are products with `+0.0`). `dw` is overwritten.
pub fn conv2d_grad_weight_reference(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<()> {
    s.check_buffers(x.len(), dw.len(), dy.len())?;
    grad_weight_terms(
        s,
        BlockedSum::new,
        |acc, xi, dyi| acc.add(mult.mul(xi.map_or(0.0, |i| x[i]), dy[dyi])),
        |wi, acc| dw[wi] = acc.finish(),
    );
    Ok(())
}

thread_local! {
    /// Column and output buffers kept between calls on this thread.
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers a thread keeps at most (a convolution uses two at a time).
const MAX_POOLED: usize = 2;

/// A buffer taken from this thread's pool and put back on drop. The vector
/// is moved out rather than borrowed across the GEMM: while this call waits
/// for rayon, the same thread may run another convolution, which then simply
/// allocates its own buffer.
pub(crate) struct Scratch(Vec<f32>);

impl Scratch {
    pub(crate) fn take() -> Self {
        Scratch(
            SCRATCH
                .try_with(|p| p.borrow_mut().pop())
                .ok()
                .flatten()
                .unwrap_or_default(),
        )
    }

    /// No buffer yet: [`Scratch::slice`] takes one from the pool when it
    /// is first needed (a path that may not need one leaves the pool's
    /// buffers to the calls that do).
    pub(crate) fn lazy() -> Self {
        Scratch(Vec::new())
    }

    /// The first `len` elements; their contents are left over from earlier
    /// calls, so every user overwrites all of them.
    pub(crate) fn slice(&mut self, len: usize) -> &mut [f32] {
        if self.0.capacity() == 0 {
            *self = Scratch::take();
        }
        if self.0.len() < len {
            self.0.resize(len, 0.0);
        }
        &mut self.0[..len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() > 0 {
            let _ = SCRATCH.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < MAX_POOLED {
                    p.push(v);
                }
            });
        }
    }
}

/// Images per chunk so that a chunk's column buffer stays near
/// [`COL_CHUNK_ELEMS`] (at least one image).
fn images_per_chunk(per_image: usize, batch: usize) -> usize {
    (COL_CHUNK_ELEMS / per_image.max(1)).clamp(1, batch.max(1))
}

/// The outputs `lo..hi` for which `inside(o)` holds, for a predicate that
/// holds on one contiguous run of `0..n` (or nowhere: `lo == hi`).
fn inside_span(n: usize, inside: impl Fn(usize) -> bool) -> (usize, usize) {
    let lo = (0..n).find(|&o| inside(o)).unwrap_or(n);
    let hi = (lo..n).find(|&o| !inside(o)).unwrap_or(n);
    (lo, hi)
}

/// An operand of a native convolution as its products see it: `x` itself
/// for `fp32`; for `bf16`, a copy rounded to bfloat16 in `buf` (a product of
/// two bfloat16 values is exact in `f32`, so the fused multiply-adds of the
/// FP32 kernels then compute the `bf16` products).
fn native_operand<'a>(mult: &Multiplier, x: &'a [f32], buf: &'a mut Scratch) -> &'a [f32] {
    if !matches!(mult, Multiplier::Bf16) {
        return x;
    }
    let _lowering = crate::timing::span(crate::timing::Op::Lowering);
    let d = buf.slice(x.len());
    d.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(d, s)| {
            for (d, s) in d.iter_mut().zip(s) {
                *d = crate::engine::native::round_bf16_bits(*s);
            }
        });
    d
}

/// Whether a native (`fp32` or `bf16`) convolution goes to the direct
/// kernels (`conv_direct`: stride 1, one group, AVX2 + FMA) instead of
/// im2col and the SGEMM. AMSim products always take the lowering.
fn direct_native(mult: &Multiplier, s: &Conv2dShape) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // `APPROXTRAIN_NO_DIRECT_CONV` (any value) keeps the lowering, to
        // compare the two (read once).
        static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let off = *OFF.get_or_init(|| std::env::var_os("APPROXTRAIN_NO_DIRECT_CONV").is_some());
        matches!(mult, Multiplier::Fp32 | Multiplier::Bf16)
            && !off
            && crate::conv_direct::applies(s)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (mult, s);
        false
    }
}

/// `im2col` of images `n0..` of `x` into `col` (as many images as `col`
/// holds), stored transposed: row `(c, kh, kw)` over all channels (so group
/// `g` is the row block `g*kc..(g+1)*kc`), column `(nl, oh, ow)`, `+0.0` in
/// the padding. This layout makes each `(kh, kw)` tap a run of copies of
/// input rows (contiguous at stride 1), and the GEMMs read it through
/// transposed views.
fn im2col(s: &Conv2dShape, x: &[f32], n0: usize, col: &mut [f32]) {
    let _lowering = crate::timing::span(crate::timing::Op::Lowering);
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let (kh_n, kw_n) = (s.kernel_h, s.kernel_w);
    let rows = col.len() / (s.in_channels * kh_n * kw_n);
    let plane = s.in_h * s.in_w;
    let (sw, pw, dw) = (s.stride.1, s.padding.1, s.dilation.1);
    col.par_chunks_mut(rows)
        .enumerate()
        .for_each(|(kidx, dst_row)| {
            let (c, kh, kw) = (kidx / (kh_n * kw_n), (kidx / kw_n) % kh_n, kidx % kw_n);
            let (lo, hi) = inside_span(ow_n, |ow| tap(ow, kw, sw, pw, dw, s.in_w).is_some());
            // Input column of output column `lo` (when the run is not empty).
            let iw0 = (lo * sw + kw * dw).saturating_sub(pw);
            for (r, dst) in dst_row.chunks_exact_mut(ow_n).enumerate() {
                let (nl, oh) = (r / oh_n, r % oh_n);
                let Some(ih) = tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h) else {
                    dst.fill(0.0);
                    continue;
                };
                let xr = &x[((n0 + nl) * s.in_channels + c) * plane + ih * s.in_w..][..s.in_w];
                dst[..lo].fill(0.0);
                dst[hi..].fill(0.0);
                if lo == hi {
                    continue;
                }
                if sw == 1 {
                    dst[lo..hi].copy_from_slice(&xr[iw0..iw0 + (hi - lo)]);
                } else {
                    for (j, d) in dst[lo..hi].iter_mut().enumerate() {
                        *d = xr[iw0 + j * sw];
                    }
                }
            }
        });
}

/// One phase of the input gradient along one axis (module doc, "Lowering
/// to GEMM"): the input coordinates `first + i*stride` for `i < count`,
/// whose terms come through the kernel taps `tap0 + t*tap_step` for
/// `t < taps`; the term of coordinate `i` through tap `t` reads output
/// coordinate `i + out_offset(t)` (`+0.0` outside the output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AxisPhase {
    /// First input coordinate of the phase.
    pub first: usize,
    /// Input coordinates in the phase (`0` when the input is narrower than
    /// the stride and the phase is empty).
    pub count: usize,
    /// First kernel tap with terms in this phase.
    pub tap0: usize,
    /// Distance between consecutive taps: `stride / gcd(stride, dilation)`.
    pub tap_step: usize,
    /// Taps with terms in this phase (`0` when none: then every element
    /// of the phase is an empty sum).
    pub taps: usize,
    stride: usize,
    pad: usize,
    dil: usize,
}

impl AxisPhase {
    /// The `stride` phases of an axis of `size` input coordinates, phase
    /// `ph` holding the coordinates `i` with `(i + pad) mod stride == ph`
    /// and the taps `k` with `k*dil mod stride == ph`.
    pub fn all(
        size: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        dil: usize,
    ) -> Vec<AxisPhase> {
        (0..stride)
            .map(|ph| {
                let first = (ph + stride - pad % stride) % stride;
                let count = if first < size {
                    (size - first).div_ceil(stride)
                } else {
                    0
                };
                // k*dil ≡ ph (mod stride) holds for an arithmetic
                // progression of k with step stride / gcd(stride, dil).
                let taps: Vec<usize> = (0..kernel).filter(|k| k * dil % stride == ph).collect();
                let tap0 = taps.first().copied().unwrap_or(0);
                let tap_step = taps.get(1).map_or(1, |k1| k1 - tap0);
                AxisPhase {
                    first,
                    count,
                    tap0,
                    tap_step,
                    taps: taps.len(),
                    stride,
                    pad,
                    dil,
                }
            })
            .collect()
    }

    /// Kernel tap number `t` of the phase.
    #[inline]
    pub fn tap(&self, t: usize) -> usize {
        self.tap0 + t * self.tap_step
    }

    /// The output coordinate read by the phase's first input coordinate
    /// through tap number `t` (an exact division: the phase is chosen so).
    #[inline]
    pub fn out_offset(&self, t: usize) -> isize {
        ((self.first + self.pad) as isize - (self.tap(t) * self.dil) as isize)
            / self.stride as isize
    }
}

/// The columns of one input-gradient phase `(hp, wp)` for images `n0..` of
/// `dy` into `col` (as many images as `col` holds), stored transposed like
/// [`im2col`]: row `(o, th, tw)` over all output channels and the phase's
/// taps, column `(nl, i, j)` over the phase's input positions, holding
/// `dyp` of the module doc. Each row of a tap is a run of consecutive `dy`
/// columns, `+0.0` outside the output.
fn dy2col_phase(
    s: &Conv2dShape,
    dy: &[f32],
    n0: usize,
    hp: &AxisPhase,
    wp: &AxisPhase,
    col: &mut [f32],
) {
    let _lowering = crate::timing::span(crate::timing::Op::Lowering);
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let (nh, nw) = (hp.count, wp.count);
    let rows = col.len() / (s.out_channels * hp.taps * wp.taps);
    let oplane = oh_n * ow_n;
    col.par_chunks_mut(rows)
        .enumerate()
        .for_each(|(kidx, dst_row)| {
            let (o, th, tw) = (
                kidx / (hp.taps * wp.taps),
                (kidx / wp.taps) % hp.taps,
                kidx % wp.taps,
            );
            let (bh, bw) = (hp.out_offset(th), wp.out_offset(tw));
            // Phase columns j whose output column j + bw is inside the output.
            let lo = (-bw).clamp(0, nw as isize) as usize;
            let hi = (ow_n as isize - bw).clamp(lo as isize, nw as isize) as usize;
            for (nl, dst_image) in dst_row.chunks_exact_mut(nh * nw).enumerate() {
                let dy_plane = &dy[((n0 + nl) * s.out_channels + o) * oplane..][..oplane];
                for (i, dst) in dst_image.chunks_exact_mut(nw).enumerate() {
                    let oh = i as isize + bh;
                    if oh < 0 || oh >= oh_n as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let dr = &dy_plane[oh as usize * ow_n..][..ow_n];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if lo < hi {
                        let ow0 = (lo as isize + bw) as usize;
                        dst[lo..hi].copy_from_slice(&dr[ow0..ow0 + (hi - lo)]);
                    }
                }
            }
        });
}

/// Write the phases' GEMM outputs into the chunk's `[nl][c][ih][iw]` part
/// of `dst`, one plane at a time (so each plane is written while it is in
/// cache, not once per phase). `phases[p]` is the phase's axes and where its
/// output starts in `src`, laid out `[c][(nl, i, j)]` there, going to the
/// positions `(first_h + i*s_h, first_w + j*s_w)`; `None` writes `+0.0`
/// there (a phase without taps: empty sums).
fn scatter_phases(
    s: &Conv2dShape,
    phases: &[(&AxisPhase, &AxisPhase, Option<usize>)],
    src: &[f32],
    dst: &mut [f32],
) {
    let _lowering = crate::timing::span(crate::timing::Op::Lowering);
    let (plane, channels) = (s.in_h * s.in_w, s.in_channels);
    let nc = dst.len() / (channels * plane);
    let (sh, sw) = s.stride;
    dst.par_chunks_mut(plane).enumerate().for_each(|(p, d)| {
        let (nl, c) = (p / channels, p % channels);
        for &(hp, wp, at) in phases {
            let (nh, nw) = (hp.count, wp.count);
            let rows = nc * nh * nw;
            let Some(at) = at else {
                for i in 0..nh {
                    let drow = &mut d[(hp.first + i * sh) * s.in_w + wp.first..];
                    drow.iter_mut().step_by(sw).take(nw).for_each(|v| *v = 0.0);
                }
                continue;
            };
            let src = &src[at + c * rows + nl * nh * nw..][..nh * nw];
            if sh == 1 && sw == 1 {
                // The one phase covers the whole plane.
                d.copy_from_slice(src);
                continue;
            }
            for (i, srow) in src.chunks_exact(nw).enumerate() {
                let drow = &mut d[(hp.first + i * sh) * s.in_w + wp.first..];
                for (v, x) in drow.iter_mut().step_by(sw).zip(srow) {
                    *v = *x;
                }
            }
        }
    });
}

/// Copy a chunk's GEMM output, laid out `[channel][nl][spatial]`, into the
/// chunk's `[nl][channel][spatial]` part of `dst`.
fn scatter_images(src: &[f32], dst: &mut [f32], channels: usize, spatial: usize) {
    let _lowering = crate::timing::span(crate::timing::Op::Lowering);
    let rows = dst.len() / channels;
    dst.par_chunks_mut(spatial).enumerate().for_each(|(i, d)| {
        let (nl, ch) = (i / channels, i % channels);
        d.copy_from_slice(&src[ch * rows + nl * spatial..][..spatial]);
    });
}

/// Output columns (output channels of the forward pass, input channels of
/// the input gradient) up to which the stride-1 AMSim products take the
/// planes path (two 16-column panels).
const PLANES_MAX_COLS: usize = 32;

/// Output columns from which the planes path pays (see [`PLANES_MAX_COLS`]).
const PLANES_MIN_COLS: usize = 4;

/// The table and kernels with which an AMSim product of `cols` output
/// columns (output channels of the forward pass, input channels of the
/// input gradient) takes the planes path, if it does.
fn planes_kernels(mult: &Multiplier, cols: usize) -> Option<(crate::engine::Isa, &Arc<Lut>)> {
    let Multiplier::Lut(lut) = mult else {
        return None;
    };
    // Wider outputs amortize the lowering's copies and packing over their
    // column panels, and the planes path computes the rows of the padding
    // columns too: measured on a Zen 3 (batch 128, 7 bits), ResNet-20's
    // 16- and 32-channel layers ran 1.2-1.5x faster here, its 64-channel
    // layer (8x8 images, a fifth of the rows wasted) 1.4x slower; the
    // input gradient of LeNet-5's first layer (one column of a 16-lane
    // panel) 1.2x slower.
    if !(PLANES_MIN_COLS..=PLANES_MAX_COLS).contains(&cols) {
        return None;
    }
    crate::engine::planes::planes_isa(lut).map(|isa| (isa, lut))
}

/// The zero-padded planes of a stride-1 layer's input and the offset of
/// every tap `(c, kh, kw)` in an image's planes, in tap order (`None` when
/// the batch's planes would not be addressable with `u32`).
fn input_planes(s: &Conv2dShape) -> Option<(crate::engine::planes::PlaneGeom, Vec<u32>)> {
    let (ph, pw) = s.padding;
    let (dh, dw) = s.dilation;
    let (hp, wp) = (s.in_h + 2 * ph, s.in_w + 2 * pw);
    if s.batch * s.in_channels * hp * wp > u32::MAX as usize {
        return None;
    }
    let mut koff = Vec::with_capacity(s.in_channels * s.kernel_h * s.kernel_w);
    for c in 0..s.in_channels {
        for kh in 0..s.kernel_h {
            for kw in 0..s.kernel_w {
                koff.push((c * hp * wp + kh * dh * wp + kw * dw) as u32);
            }
        }
    }
    let geom = crate::engine::planes::PlaneGeom {
        planes: s.batch * s.in_channels,
        h: s.in_h,
        w: s.in_w,
        hp,
        wp,
        top: s.padding.0,
        left: s.padding.1,
    };
    Some((geom, koff))
}

/// The forward pass of an AMSim multiplier at stride 1 on pre-split padded
/// planes instead of im2col (`engine::planes`), with the kernels of `isa`
/// (`Avx2`, or any other for the portable ones): one group, `k` within one
/// accumulation block, and every product on the engine's fused path.
/// Returns `false`, having written nothing, where that does not hold.
pub(crate) fn planes_forward(
    isa: crate::engine::Isa,
    lut: &Arc<Lut>,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) -> Result<bool> {
    use crate::engine::planes::{planes_product, PlanesProduct};
    if s.groups != 1 || s.stride != (1, 1) {
        return Ok(false);
    }
    let k = s.in_channels * s.kernel_h * s.kernel_w;
    let Some((geom, koff)) = input_planes(s) else {
        return Ok(false);
    };
    if k > crate::accumulate::ACC_BLOCK {
        return Ok(false);
    }
    let p = PlanesProduct {
        geom,
        channels: s.in_channels,
        koff: &koff,
        out_h: s.out_h(),
        out_w: s.out_w(),
    };
    // B[(c, kh, kw)][o] = w[o, c, kh, kw]: Wᵀ as a strided view.
    let b = MatRef::new(w, k, s.out_channels, 1, k)?;
    Ok(planes_product(isa, lut, &p, x, b, y))
}

/// The input gradient of an AMSim multiplier at stride 1 on pre-split
/// padded planes of `dy` (see [`planes_forward`]): the forward product on
/// `dy` padded by `(K - 1) * d - p`, with the taps `(o, kh, kw)` in
/// increasing order reading the flipped positions, and the weights
/// `B[(o, kh, kw)][c] = w[o, c, kh, kw]`.
pub(crate) fn planes_grad_input(
    isa: crate::engine::Isa,
    lut: &Arc<Lut>,
    s: &Conv2dShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> Result<bool> {
    use crate::engine::planes::{planes_product, PlaneGeom, PlanesProduct};
    if s.groups != 1 || s.stride != (1, 1) {
        return Ok(false);
    }
    let (ph, pw) = s.padding;
    let (dh, dw) = s.dilation;
    let (reach_h, reach_w) = ((s.kernel_h - 1) * dh, (s.kernel_w - 1) * dw);
    if ph > reach_h || pw > reach_w {
        // Output positions beyond the input's reach: not the shifted-window
        // form (the lowering handles it).
        return Ok(false);
    }
    let (top, left) = (reach_h - ph, reach_w - pw);
    let (oh, ow) = (s.out_h(), s.out_w());
    let (hp, wp) = (oh + 2 * top, ow + 2 * left);
    debug_assert_eq!((hp, wp), (s.in_h + reach_h, s.in_w + reach_w));
    let khw = s.kernel_h * s.kernel_w;
    let k = s.out_channels * khw;
    if k > crate::accumulate::ACC_BLOCK || s.batch * s.out_channels * hp * wp > u32::MAX as usize {
        return Ok(false);
    }
    let mut koff = Vec::with_capacity(k);
    for o in 0..s.out_channels {
        for kh in 0..s.kernel_h {
            for kw in 0..s.kernel_w {
                let (fh, fw) = (s.kernel_h - 1 - kh, s.kernel_w - 1 - kw);
                koff.push((o * hp * wp + fh * dh * wp + fw * dw) as u32);
            }
        }
    }
    let cin = s.in_channels;
    let mut wt = vec![0.0f32; k * cin];
    for o in 0..s.out_channels {
        for c in 0..cin {
            for t in 0..khw {
                wt[(o * khw + t) * cin + c] = w[(o * cin + c) * khw + t];
            }
        }
    }
    let p = PlanesProduct {
        geom: PlaneGeom {
            planes: s.batch * s.out_channels,
            h: oh,
            w: ow,
            hp,
            wp,
            top,
            left,
        },
        channels: s.out_channels,
        koff: &koff,
        out_h: s.in_h,
        out_w: s.in_w,
    };
    let b = MatRef::new(&wt, k, cin, cin, 1)?;
    Ok(planes_product(isa, lut, &p, dy, b, dx))
}

/// `dYᵀ[o][(n, oh, ow)]` of the output gradient `dy` (NCHW) into `dyt`,
/// the right operand of the weight gradient (`out_channels x batch * out_h
/// * out_w`).
fn transpose_dy(s: &Conv2dShape, dy: &[f32], dyt: &mut [f32]) {
    let _lowering = crate::timing::span(crate::timing::Op::Lowering);
    let spatial = s.out_h() * s.out_w();
    dyt.par_chunks_mut(spatial).enumerate().for_each(|(i, d)| {
        let (o, n) = (i / s.batch, i % s.batch);
        d.copy_from_slice(&dy[(n * s.out_channels + o) * spatial..][..spatial]);
    });
}

/// Taps (rows of the weight gradient, `in_channels * kernel_h * kernel_w`)
/// from which the planes path takes an AMSim weight gradient: each output
/// position expands its output gradient into `2^bits` rows per 16-column
/// panel, which only pays when enough taps share it.
const PLANES_DW_MIN_TAPS: usize = 64;

/// The weight gradient of an AMSim multiplier at stride 1 on pre-split
/// padded planes of `x` (`engine::planes::planes_weight_product`): the taps
/// `(c, kh, kw)` are the rows, read in place at the forward pass's tap
/// offsets plus each output position's offset, so nothing is copied per
/// tap. Returns `false`, having written nothing, where the path does not
/// apply (groups, stride, narrow layers, products off the fused path).
fn planes_grad_weight(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<bool> {
    let Multiplier::Lut(lut) = mult else {
        return Ok(false);
    };
    let taps = s.in_channels * s.kernel_h * s.kernel_w;
    // Narrow outputs take direct lookups (see the engine), any number of
    // taps; wider ones expand the output gradient, which needs enough taps.
    if s.out_channels > crate::engine::NR / 2 && taps < PLANES_DW_MIN_TAPS {
        return Ok(false);
    }
    match crate::engine::planes::planes_isa(lut) {
        Some(isa) => planes_grad_weight_with(isa, lut, s, x, dy, dw),
        None => Ok(false),
    }
}

/// [`planes_grad_weight`] with the kernels of `isa`, for any number of
/// taps and output channels (one group, stride 1).
pub(crate) fn planes_grad_weight_with(
    isa: crate::engine::Isa,
    lut: &Arc<Lut>,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<bool> {
    use crate::engine::planes::{planes_weight_product, PlanesWeightGrad};
    if s.groups != 1 || s.stride != (1, 1) {
        return Ok(false);
    }
    let Some((geom, koff)) = input_planes(s) else {
        return Ok(false);
    };
    let (wp, image) = (geom.wp, s.in_channels * geom.hp * geom.wp);
    let (oh, ow) = (s.out_h(), s.out_w());
    let mut pos = Vec::with_capacity(s.batch * oh * ow);
    for n in 0..s.batch {
        for y in 0..oh {
            pos.extend((0..ow).map(|xo| (n * image + y * wp + xo) as u32));
        }
    }
    let rows = s.batch * oh * ow;
    let mut dyt_buf = Scratch::take();
    let dyt = dyt_buf.slice(s.out_channels * rows);
    transpose_dy(s, dy, dyt);
    let b = MatRef::new(dyt, rows, s.out_channels, 1, rows)?;
    let p = PlanesWeightGrad {
        geom,
        koff: &koff,
        pos: &pos,
    };
    Ok(planes_weight_product(isa, lut, &p, x, b, dw))
}

/// Forward pass lowered to GEMM (see the module doc); bit-exact with
/// [`conv2d_forward_reference`] for AMSim multipliers.
pub fn conv2d_forward(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(x.len(), w.len(), y.len())?;
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    let kc = cpg * s.kernel_h * s.kernel_w;
    if y.is_empty() {
        return Ok(());
    }
    if kc == 0 {
        // Empty dot products.
        y.fill(0.0);
        return Ok(());
    }
    if direct_native(mult, s) {
        let (mut xb, mut wb) = (Scratch::lazy(), Scratch::lazy());
        let (x, w) = (
            native_operand(mult, x, &mut xb),
            native_operand(mult, w, &mut wb),
        );
        #[cfg(target_arch = "x86_64")]
        crate::conv_direct::forward(s, x, w, y);
        let _ = (x, w);
        return Ok(());
    }
    if let Some((isa, lut)) = planes_kernels(mult, s.out_channels) {
        if planes_forward(isa, lut, s, x, w, y)? {
            return Ok(());
        }
    }
    let kcols = s.groups * kc;
    let spatial = s.out_h() * s.out_w();
    let chunk = images_per_chunk(spatial * kcols, s.batch);
    let (mut col_buf, mut out_buf) = (Scratch::take(), Scratch::take());
    for n0 in (0..s.batch).step_by(chunk) {
        let nc = chunk.min(s.batch - n0);
        let rows = nc * spatial;
        let col = col_buf.slice(rows * kcols);
        im2col(s, x, n0, col);
        let col = &*col;
        let y_chunk = &mut y[n0 * s.out_channels * spatial..][..nc * s.out_channels * spatial];
        // One image's output is already laid out [o][oh, ow]: write it in place.
        let out = if nc == 1 {
            &mut *y_chunk
        } else {
            out_buf.slice(s.out_channels * rows)
        };
        out.par_chunks_mut(opg * rows)
            .enumerate()
            .try_for_each(|(g, out_g)| {
                let a = MatRef::new(&col[g * kc * rows..], rows, kc, 1, rows)?;
                let b = MatRef::new(&w[g * opg * kc..], kc, opg, 1, kc)?;
                let c = MatMut::new(out_g, rows, opg, 1, rows)?;
                gemm(mult, a, b, c, false)
            })?;
        if nc > 1 {
            scatter_images(
                out_buf.slice(s.out_channels * rows),
                y_chunk,
                s.out_channels,
                spatial,
            );
        }
    }
    Ok(())
}

/// Input gradient lowered to GEMMs by phases (see the module doc);
/// bit-exact with [`conv2d_grad_input_reference`] for AMSim multipliers.
/// `dx` is overwritten.
pub fn conv2d_grad_input(
    mult: &Multiplier,
    s: &Conv2dShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(dx.len(), w.len(), dy.len())?;
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    let khw = s.kernel_h * s.kernel_w;
    if dx.is_empty() {
        return Ok(());
    }
    if opg * khw == 0 {
        dx.fill(0.0);
        return Ok(());
    }
    if direct_native(mult, s) {
        let (mut db, mut wb) = (Scratch::lazy(), Scratch::lazy());
        let (dy, w) = (
            native_operand(mult, dy, &mut db),
            native_operand(mult, w, &mut wb),
        );
        #[cfg(target_arch = "x86_64")]
        crate::conv_direct::grad_input(s, dy, w, dx);
        let _ = (dy, w);
        return Ok(());
    }
    if let Some((isa, lut)) = planes_kernels(mult, s.in_channels) {
        if planes_grad_input(isa, lut, s, dy, w, dx)? {
            return Ok(());
        }
    }
    let plane = s.in_h * s.in_w;
    let hps = AxisPhase::all(s.in_h, s.kernel_h, s.stride.0, s.padding.0, s.dilation.0);
    let wps = AxisPhase::all(s.in_w, s.kernel_w, s.stride.1, s.padding.1, s.dilation.1);
    let phases: Vec<(&AxisPhase, &AxisPhase)> = hps
        .iter()
        .flat_map(|hp| wps.iter().map(move |wp| (hp, wp)))
        .filter(|(hp, wp)| hp.count * wp.count > 0)
        .collect();
    // Wt[phase][g][(ol, th, tw)][cl] = w[g*opg + ol, cl, tap_h(th), tap_w(tw)]:
    // each phase's weights as the k x C_in/groups right operand of each
    // group (small; rebuilt per call). A tap belongs to one phase per axis,
    // so this holds each weight at most once.
    let lowering = crate::timing::span(crate::timing::Op::Lowering);
    let mut wt = Vec::with_capacity(w.len());
    let mut wt_at = Vec::with_capacity(phases.len());
    for (hp, wp) in &phases {
        wt_at.push(wt.len());
        for g in 0..s.groups {
            for ol in 0..opg {
                for th in 0..hp.taps {
                    for tw in 0..wp.taps {
                        let t = hp.tap(th) * s.kernel_w + wp.tap(tw);
                        let o = g * opg + ol;
                        wt.extend((0..cpg).map(|cl| w[(o * cpg + cl) * khw + t]));
                    }
                }
            }
        }
    }
    drop(lowering);
    // Images per chunk: the largest phase's columns stay near the target.
    let per_image = phases
        .iter()
        .map(|(hp, wp)| hp.count * wp.count * s.out_channels * hp.taps * wp.taps)
        .max()
        .unwrap_or(0);
    let chunk = images_per_chunk(per_image, s.batch);
    // Per image, where each phase's outputs start (the phases partition the
    // plane, so a chunk's outputs take as much room as its part of dx).
    let out_at: Vec<usize> = phases
        .iter()
        .scan(0, |at, (hp, wp)| {
            let here = *at;
            *at += hp.count * wp.count;
            Some(here)
        })
        .collect();
    // One image and one phase (stride 1, or an input no larger than the
    // stride) with taps: the output is already laid out [c][ih, iw]:
    // written in place.
    let in_place =
        |nc: usize| nc == 1 && phases.len() == 1 && opg * phases[0].0.taps * phases[0].1.taps > 0;
    let (mut col_buf, mut out_buf) = (Scratch::take(), Scratch::take());
    for n0 in (0..s.batch).step_by(chunk) {
        let nc = chunk.min(s.batch - n0);
        let dx_chunk = &mut dx[n0 * s.in_channels * plane..][..nc * s.in_channels * plane];
        let out_all = if in_place(nc) {
            &mut *dx_chunk
        } else {
            out_buf.slice(s.in_channels * nc * plane)
        };
        for ((hp, wp), (&wt_off, &at)) in phases.iter().zip(wt_at.iter().zip(&out_at)) {
            let kp = opg * hp.taps * wp.taps;
            if kp == 0 {
                continue;
            }
            let rows = nc * hp.count * wp.count;
            let col = col_buf.slice(rows * s.groups * kp);
            dy2col_phase(s, dy, n0, hp, wp, col);
            let col = &*col;
            let out = &mut out_all[s.in_channels * nc * at..][..s.in_channels * rows];
            let wt_p = &wt[wt_off..];
            out.par_chunks_mut(cpg * rows)
                .enumerate()
                .try_for_each(|(g, out_g)| {
                    let a = MatRef::new(&col[g * kp * rows..], rows, kp, 1, rows)?;
                    let b = MatRef::new(&wt_p[g * kp * cpg..], kp, cpg, cpg, 1)?;
                    let c = MatMut::new(out_g, rows, cpg, 1, rows)?;
                    gemm(mult, a, b, c, false)
                })?;
        }
        if !in_place(nc) {
            let placed: Vec<(&AxisPhase, &AxisPhase, Option<usize>)> = phases
                .iter()
                .zip(&out_at)
                .map(|(&(hp, wp), &at)| {
                    let has_taps = opg * hp.taps * wp.taps > 0;
                    (hp, wp, has_taps.then_some(s.in_channels * nc * at))
                })
                .collect();
            let out_all = &*out_buf.slice(s.in_channels * nc * plane);
            scatter_phases(s, &placed, out_all, dx_chunk);
        }
    }
    Ok(())
}

/// Weight gradient lowered to GEMM (see the module doc); bit-exact with
/// [`conv2d_grad_weight_reference`] for AMSim multipliers. `dw` is
/// overwritten.
pub fn conv2d_grad_weight(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    s.check_buffers(x.len(), dw.len(), dy.len())?;
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    let kc = cpg * s.kernel_h * s.kernel_w;
    let spatial = s.out_h() * s.out_w();
    let rows = s.batch * spatial;
    if dw.is_empty() {
        return Ok(());
    }
    if rows == 0 {
        dw.fill(0.0);
        return Ok(());
    }
    if direct_native(mult, s) {
        let (mut xb, mut db) = (Scratch::lazy(), Scratch::lazy());
        let (x, dy) = (
            native_operand(mult, x, &mut xb),
            native_operand(mult, dy, &mut db),
        );
        #[cfg(target_arch = "x86_64")]
        crate::conv_direct::grad_weight(s, x, dy, dw);
        let _ = (x, dy);
        return Ok(());
    }
    if planes_grad_weight(mult, s, x, dy, dw)? {
        return Ok(());
    }
    let kcols = s.groups * kc;
    let (mut col_buf, mut dyt_buf) = (Scratch::take(), Scratch::take());
    let col = col_buf.slice(rows * kcols);
    im2col(s, x, 0, col);
    // Each group's right operand as a column-major view of dYᵀ with unit
    // row stride.
    let dyt = dyt_buf.slice(s.out_channels * rows);
    transpose_dy(s, dy, dyt);
    let (col, dyt) = (&*col, &*dyt);
    dw.par_chunks_mut(opg * kc)
        .enumerate()
        .try_for_each(|(g, dw_g)| {
            let a = MatRef::new(&col[g * kc * rows..], kc, rows, rows, 1)?;
            let b = MatRef::new(&dyt[g * opg * rows..], rows, opg, 1, rows)?;
            let c = MatMut::new(dw_g, kc, opg, 1, kc)?;
            gemm(mult, a, b, c, false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mitchell's product on truncated fractions, skewed by the first
    /// operand so that a swapped operand order would show.
    fn skewed(a: f32, b: f32, bits: u32) -> f32 {
        let s = (a - 1.0) + (b - 1.0);
        let q = if s < 1.0 { 1.0 + s } else { 2.0 * s } * (1.0 - (a - 1.0) / 64.0);
        let q = q.max(1.0);
        f32::from_bits(q.to_bits() & !((1u32 << (23 - bits)) - 1))
    }

    fn random_values(rng: &mut impl rand::Rng, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| match rng.gen_range(0..30) {
                0 => 0.0,
                1 => -0.0,
                2 => f32::MIN_POSITIVE / 4.0,
                _ => rng.gen_range(-2.0f32..2.0) * 2f32.powi(rng.gen_range(-8..8)),
            })
            .collect()
    }

    /// Assert that `got` equals `want` bit for bit (`what` names the case).
    fn same_bits(got: &[f32], want: &[f32], what: impl Fn() -> String) {
        for (i, (g, r)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), r.to_bits(), "{}: element {i}", what());
        }
    }

    /// The kernels the planes tests run (portable, and AVX2 + FMA where the
    /// CPU has them; a skip says so) and skewed tables of 3, 5, 7 and 8 bits.
    fn planes_kernels_and_tables(tag: &str) -> (Vec<crate::engine::Isa>, Vec<Arc<Lut>>) {
        use crate::engine::Isa;
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            isas.push(Isa::Avx2);
        } else {
            eprintln!("{tag}: no AVX2 + FMA on this CPU; the AVX2 kernels are not tested");
        }
        let luts = [3, 5, 7, 8]
            .into_iter()
            .map(|b| Arc::new(Lut::build("skewed", skewed, b).unwrap()))
            .collect();
        (isas, luts)
    }

    /// The planes path of the weight gradient (stride 1, one group) equals
    /// the definition bit for bit with the AVX2 and the portable kernels:
    /// one to three 16-column panels, taps from 1 to several hundred,
    /// dilation, padding, and batches whose positions cross accumulation
    /// blocks inside an image and at image boundaries (block sums added in
    /// order); a call with a NaN or an infinity on either side is declined
    /// without writing.
    #[test]
    fn planes_weight_gradient_matches_the_definition_or_declines() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(crate::test_seed("planes_dw"));
        let (isas, luts) = planes_kernels_and_tables("planes_dw");
        let mut taken = 0;
        let mut several_blocks = 0;
        for case in 0..40 {
            let kernel = rng.gen_range(1..=5);
            let mut s = Conv2dShape::new(
                rng.gen_range(1..=6),
                rng.gen_range(1..=12),
                rng.gen_range(1..=24),
                rng.gen_range(1..=24),
                [1, 5, 9, 16, 17, 32, 40][rng.gen_range(0..7)],
                kernel,
            );
            s.kernel_w = rng.gen_range(1..=5);
            s.dilation = (rng.gen_range(1..=2), rng.gen_range(1..=2));
            s.padding = (rng.gen_range(0..=kernel), rng.gen_range(0..=s.kernel_w));
            if s.validate().is_err() || s.out_h() == 0 || s.out_w() == 0 {
                continue;
            }
            let lut = &luts[case % luts.len()];
            let mult = Multiplier::Lut(lut.clone());
            let mut x = random_values(&mut rng, s.x_len());
            let mut dy = random_values(&mut rng, s.y_len());
            let special = case % 7 == 3;
            if special {
                if case % 2 == 0 {
                    let i = rng.gen_range(0..x.len());
                    x[i] = f32::INFINITY;
                } else {
                    let j = rng.gen_range(0..dy.len());
                    dy[j] = f32::NAN;
                }
            }
            let mut want = vec![0.0; s.w_len()];
            conv2d_grad_weight_reference(&mult, &s, &x, &dy, &mut want).unwrap();
            let positions = s.batch * s.out_h() * s.out_w();
            for &isa in &isas {
                let mut dw = vec![f32::NAN; s.w_len()];
                let done = planes_grad_weight_with(isa, lut, &s, &x, &dy, &mut dw).unwrap();
                assert_eq!(done, !special, "grad_weight {s:?}");
                if done {
                    taken += 1;
                    several_blocks += usize::from(positions > crate::accumulate::ACC_BLOCK);
                    same_bits(&dw, &want, || {
                        format!("{isa:?} grad_weight {s:?} bits {}", lut.bits())
                    });
                } else {
                    assert!(dw.iter().all(|v| v.is_nan()), "a declined call wrote");
                }
            }
        }
        assert!(
            taken >= 30 && several_blocks >= 5,
            "too few cases took the path: {taken}, over one block: {several_blocks}"
        );
    }

    /// The planes path (forward and input gradient at stride 1) equals the
    /// definitions bit for bit with the AVX2 and the portable kernels, on
    /// shapes with one, two and odd numbers of 16-column panels, several
    /// jobs, dilation, padding wider than the kernel's reach (input
    /// gradient: declined) and `k` up to one accumulation block; operands
    /// off the fused path and `k` over a block are declined, leaving the
    /// output untouched.
    #[test]
    fn planes_path_matches_the_definitions_or_declines() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(crate::test_seed("planes_path"));
        let (isas, luts) = planes_kernels_and_tables("planes_path");
        let mut taken = [0usize; 2];
        for case in 0..60 {
            let kernel = rng.gen_range(1..=5);
            let mut s = Conv2dShape::new(
                rng.gen_range(1..=4),
                rng.gen_range(1..=12),
                rng.gen_range(1..=20),
                rng.gen_range(1..=20),
                [1, 5, 16, 17, 32, 40][rng.gen_range(0..6)],
                kernel,
            );
            s.kernel_w = rng.gen_range(1..=5);
            s.dilation = (rng.gen_range(1..=2), rng.gen_range(1..=2));
            s.padding = (rng.gen_range(0..=kernel), rng.gen_range(0..=s.kernel_w));
            if case % 10 == 0 {
                // Over one accumulation block (declined).
                s.in_channels = 50;
                s.out_channels = 50;
                s.kernel_h = 5;
                s.kernel_w = 5;
            }
            if s.validate().is_err() || s.out_h() == 0 || s.out_w() == 0 {
                continue;
            }
            let lut = &luts[case % luts.len()];
            let mult = Multiplier::Lut(lut.clone());
            let mut x = random_values(&mut rng, s.x_len());
            let w = random_values(&mut rng, s.w_len());
            let mut dy = random_values(&mut rng, s.y_len());
            let special = case % 7 == 3;
            if special {
                let (i, j) = (rng.gen_range(0..x.len()), rng.gen_range(0..dy.len()));
                x[i] = f32::INFINITY;
                dy[j] = f32::NAN;
            }
            let mut want_y = vec![0.0; s.y_len()];
            conv2d_forward_reference(&mult, &s, &x, &w, &mut want_y).unwrap();
            let mut want_dx = vec![0.0; s.x_len()];
            conv2d_grad_input_reference(&mult, &s, &dy, &w, &mut want_dx).unwrap();
            let k_fwd = s.in_channels * s.kernel_h * s.kernel_w;
            let k_dx = s.out_channels * s.kernel_h * s.kernel_w;
            let reach = (
                (s.kernel_h - 1) * s.dilation.0,
                (s.kernel_w - 1) * s.dilation.1,
            );
            for &isa in &isas {
                let mut y = vec![f32::NAN; s.y_len()];
                let done = planes_forward(isa, lut, &s, &x, &w, &mut y).unwrap();
                assert_eq!(
                    done,
                    !special && k_fwd <= crate::accumulate::ACC_BLOCK,
                    "forward {s:?}"
                );
                if done {
                    taken[0] += 1;
                    same_bits(&y, &want_y, || {
                        format!("{isa:?} forward {s:?} bits {}", lut.bits())
                    });
                } else {
                    assert!(y.iter().all(|v| v.is_nan()), "a declined call wrote");
                }
                let mut dx = vec![f32::NAN; s.x_len()];
                let done = planes_grad_input(isa, lut, &s, &dy, &w, &mut dx).unwrap();
                let applies = !special
                    && k_dx <= crate::accumulate::ACC_BLOCK
                    && s.padding.0 <= reach.0
                    && s.padding.1 <= reach.1;
                assert_eq!(done, applies, "grad_input {s:?}");
                if done {
                    taken[1] += 1;
                    same_bits(&dx, &want_dx, || {
                        format!("{isa:?} grad_input {s:?} bits {}", lut.bits())
                    });
                } else {
                    assert!(dx.iter().all(|v| v.is_nan()), "a declined call wrote");
                }
            }
        }
        assert!(
            taken[0] >= 20 && taken[1] >= 10,
            "too few cases took the path: {taken:?}"
        );
    }

    #[test]
    fn axis_phases_partition_coordinates_and_taps_by_the_definition() {
        for (size, kernel, stride, pad, dil) in [
            (7, 3, 2, 1, 1),
            (8, 5, 3, 2, 2),
            (9, 3, 2, 3, 2),
            (5, 1, 2, 0, 1),
            (6, 2, 3, 2, 1),
            (10, 5, 4, 0, 3),
            (1, 3, 3, 1, 1),
        ] {
            let out = out_size(size, kernel, stride, pad, dil);
            let phases = AxisPhase::all(size, kernel, stride, pad, dil);
            let mut seen = vec![0; size];
            for (ph, p) in phases.iter().enumerate() {
                let taps: Vec<usize> = (0..p.taps).map(|t| p.tap(t)).collect();
                let want: Vec<usize> = (0..kernel).filter(|k| k * dil % stride == ph).collect();
                assert_eq!(
                    taps, want,
                    "phase {ph} of {size}/{kernel}/{stride}/{pad}/{dil}"
                );
                for i in 0..p.count {
                    let ih = p.first + i * stride;
                    seen[ih] += 1;
                    for k in 0..kernel {
                        let term = back_tap(ih, k, stride, pad, dil, out);
                        let t = taps.iter().position(|&tk| tk == k);
                        assert_eq!(term.is_some(), t.is_some(), "tap {k} of input {ih}");
                        if let (Some(term), Some(t)) = (term, t) {
                            let o = i as isize + p.out_offset(t);
                            let inside = (0..out as isize).contains(&o);
                            assert_eq!(term, inside.then_some(o as usize), "tap {k} of {ih}");
                        }
                    }
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "each coordinate in one phase");
        }
    }
}
