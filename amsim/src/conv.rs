//! 2-D convolution (cross-correlation, as in every DNN framework) with every
//! product through a [`Multiplier`]: forward, input gradient and weight
//! gradient.
//!
//! Layouts: `x` is `[N, C_in, H, W]`, `w` is `[C_out, C_in / groups, KH, KW]`,
//! `y` is `[N, C_out, OH, OW]`, all dense row-major.
//!
//! Each output element is one dot product accumulated in FP32 from `+0.0` in
//! increasing index order, terms that fall into the padding (or between the
//! strided taps) left out:
//! - forward `y[n,o,oh,ow] = sum_(c,kh,kw) mul(x[n,c,ih,iw], w[o,c,kh,kw])`
//!   with `ih = oh*s - p + kh*d`;
//! - input gradient `dx[n,c,ih,iw] = sum_(o,kh,kw) mul(dy[n,o,oh,ow], w[o,c,kh,kw])`
//!   over the `(oh, ow)` that reach `(ih, iw)` through tap `(kh, kw)`;
//! - weight gradient `dw[o,c,kh,kw] = sum_(n,oh,ow) mul(x[n,c,ih,iw], dy[n,o,oh,ow])`.
//!
//! Operand order follows DESIGN.md: activation first in the forward and
//! weight-gradient products, output gradient first in the input gradient.
//! The `*_reference` functions are the nested-loop definitions.

use crate::{AmsimError, Multiplier, Result};

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

/// Input coordinate of output coordinate `o` through tap `k`, if inside.
#[inline]
fn tap(o: usize, k: usize, stride: usize, pad: usize, dil: usize, size: usize) -> Option<usize> {
    let pos = (o * stride + k * dil) as isize - pad as isize;
    (pos >= 0 && (pos as usize) < size).then_some(pos as usize)
}

/// Forward pass, nested loops (the definition).
pub fn conv2d_forward_reference(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) -> Result<()> {
    s.check_buffers(x.len(), w.len(), y.len())?;
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    for n in 0..s.batch {
        for o in 0..s.out_channels {
            let g = o / opg;
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let mut acc = 0.0f32;
                    for cl in 0..cpg {
                        let c = g * cpg + cl;
                        for kh in 0..s.kernel_h {
                            let Some(ih) =
                                tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h)
                            else {
                                continue;
                            };
                            for kw in 0..s.kernel_w {
                                let Some(iw) =
                                    tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w)
                                else {
                                    continue;
                                };
                                let xv = x[((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw];
                                let wv = w[((o * cpg + cl) * s.kernel_h + kh) * s.kernel_w + kw];
                                acc += mult.mul(xv, wv);
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

/// Output coordinate that reaches input coordinate `i` through tap `k`.
#[inline]
fn back_tap(
    i: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    out: usize,
) -> Option<usize> {
    let pos = (i + pad) as isize - (k * dil) as isize;
    if pos < 0 || pos as usize % stride != 0 {
        return None;
    }
    let o = pos as usize / stride;
    (o < out).then_some(o)
}

/// Input gradient `dx` from `dy` and `w`, nested loops (the definition).
/// `dx` is overwritten.
pub fn conv2d_grad_input_reference(
    mult: &Multiplier,
    s: &Conv2dShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    s.check_buffers(dx.len(), w.len(), dy.len())?;
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    for n in 0..s.batch {
        for c in 0..s.in_channels {
            let g = c / cpg;
            let cl = c % cpg;
            for ih in 0..s.in_h {
                for iw in 0..s.in_w {
                    let mut acc = 0.0f32;
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
                                let dyv = dy[((n * s.out_channels + o) * oh_n + oh) * ow_n + ow];
                                let wv = w[((o * cpg + cl) * s.kernel_h + kh) * s.kernel_w + kw];
                                acc += mult.mul(dyv, wv);
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
/// `dw` is overwritten.
pub fn conv2d_grad_weight_reference(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<()> {
    s.check_buffers(x.len(), dw.len(), dy.len())?;
    let (oh_n, ow_n) = (s.out_h(), s.out_w());
    let cpg = s.in_channels / s.groups;
    let opg = s.out_channels / s.groups;
    for o in 0..s.out_channels {
        let g = o / opg;
        for cl in 0..cpg {
            let c = g * cpg + cl;
            for kh in 0..s.kernel_h {
                for kw in 0..s.kernel_w {
                    let mut acc = 0.0f32;
                    for n in 0..s.batch {
                        for oh in 0..oh_n {
                            let Some(ih) =
                                tap(oh, kh, s.stride.0, s.padding.0, s.dilation.0, s.in_h)
                            else {
                                continue;
                            };
                            for ow in 0..ow_n {
                                let Some(iw) =
                                    tap(ow, kw, s.stride.1, s.padding.1, s.dilation.1, s.in_w)
                                else {
                                    continue;
                                };
                                let xv = x[((n * s.in_channels + c) * s.in_h + ih) * s.in_w + iw];
                                let dyv = dy[((n * s.out_channels + o) * oh_n + oh) * ow_n + ow];
                                acc += mult.mul(xv, dyv);
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

/// Forward pass (fast engine; bit-exact with the reference for AMSim).
pub fn conv2d_forward(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    y: &mut [f32],
) -> Result<()> {
    conv2d_forward_reference(mult, s, x, w, y)
}

/// Input gradient (fast engine; bit-exact with the reference for AMSim).
pub fn conv2d_grad_input(
    mult: &Multiplier,
    s: &Conv2dShape,
    dy: &[f32],
    w: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    conv2d_grad_input_reference(mult, s, dy, w, dx)
}

/// Weight gradient (fast engine; bit-exact with the reference for AMSim).
pub fn conv2d_grad_weight(
    mult: &Multiplier,
    s: &Conv2dShape,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<()> {
    conv2d_grad_weight_reference(mult, s, x, dy, dw)
}
