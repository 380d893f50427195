//! The products of this crate on [`ndarray`] views: GEMM, batched GEMM and
//! the three convolution products.
//!
//! These are the same engines as [`gemm`], [`gemm_batched`] and
//! [`crate::conv`], reached through `ndarray` arrays instead of slices and
//! strides; the Python package goes NumPy array -> `ndarray` view -> here.
//! Nothing is copied: a view's strides become the engine's strides, so a
//! transposed or Fortran-ordered matrix costs nothing. The engine reads a
//! view through one slice of the memory it covers, so a view must be
//! contiguous in some axis order (no gaps between its elements: C order,
//! Fortran order or any permutation of the axes) with non-negative strides;
//! the convolutions need C order (`[N, C, H, W]` dense row-major). Other
//! views are an error that says so (`as_standard_layout()` makes a copy
//! that fits, `numpy.ascontiguousarray` in Python).

use ndarray::{ArrayBase, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut2, ArrayViewMut3};
use ndarray::{ArrayViewMut4, Data, Dimension};

use crate::batched::{gemm_batched, gemm_batched_reference, BatchedMut, BatchedRef};
use crate::conv::{self, Conv2dShape};
use crate::gemm::{gemm, gemm_reference, MatMut, MatRef};
use crate::{AmsimError, Multiplier, Result};

/// Which implementation runs a product: the fast engine or the scalar
/// reference that defines its bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// The fast engine ([`gemm`], [`gemm_batched`], `conv2d_*`).
    #[default]
    Fast,
    /// The nested-loop definitions (`*_reference`): slow, for checking.
    Reference,
}

/// The strides of `a` as `usize`, or an error naming `what` for a negative
/// one.
fn strides<S: Data<Elem = f32>, D: Dimension>(
    what: &str,
    a: &ArrayBase<S, D>,
) -> Result<Vec<usize>> {
    a.strides()
        .iter()
        .zip(a.shape())
        .map(|(&s, &len)| {
            if len <= 1 {
                // The stride of an axis of length 0 or 1 is never used.
                Ok(0)
            } else {
                usize::try_from(s).map_err(|_| {
                    AmsimError::shape(format!(
                        "{what}: negative stride {s} (reversed views are not supported; make a contiguous copy: as_standard_layout() in ndarray, numpy.ascontiguousarray in NumPy)"
                    ))
                })
            }
        })
        .collect()
}

fn not_contiguous(what: &str) -> AmsimError {
    AmsimError::shape(format!(
        "{what}: the view has gaps between its elements (a sliced or broadcast array); the engine reads contiguous C- or F-ordered views only; make a contiguous copy: as_standard_layout() in ndarray, numpy.ascontiguousarray in NumPy"
    ))
}

/// The memory of a read view (from its first element) and its strides.
fn read_parts<'a, D: Dimension>(
    what: &str,
    a: &ArrayBase<ndarray::ViewRepr<&'a f32>, D>,
) -> Result<(&'a [f32], Vec<usize>)> {
    let st = strides(what, a)?;
    let data = a
        .to_slice_memory_order()
        .ok_or_else(|| not_contiguous(what))?;
    Ok((data, st))
}

/// The memory of a write view (from its first element) and its strides.
fn write_parts<'a, D: Dimension>(
    what: &str,
    a: ArrayBase<ndarray::ViewRepr<&'a mut f32>, D>,
) -> Result<(&'a mut [f32], Vec<usize>)> {
    let st = strides(what, &a)?;
    let data = a
        .into_slice_memory_order()
        .ok_or_else(|| not_contiguous(what))?;
    Ok((data, st))
}

/// A read view in C order, as the convolutions need it.
fn dense<'a, D: Dimension>(
    what: &str,
    a: &ArrayBase<ndarray::ViewRepr<&'a f32>, D>,
) -> Result<&'a [f32]> {
    a.to_slice().ok_or_else(|| {
        AmsimError::shape(format!(
            "{what}: the convolutions read dense C-ordered (row-major) arrays; make a C-ordered copy: as_standard_layout() in ndarray, numpy.ascontiguousarray in NumPy"
        ))
    })
}

/// A write view in C order.
fn dense_mut<'a, D: Dimension>(
    what: &str,
    a: ArrayBase<ndarray::ViewRepr<&'a mut f32>, D>,
) -> Result<&'a mut [f32]> {
    a.into_slice().ok_or_else(|| {
        AmsimError::shape(format!(
            "{what}: the convolutions write dense C-ordered (row-major) arrays"
        ))
    })
}

fn mat_ref<'a>(what: &str, a: &ArrayView2<'a, f32>) -> Result<MatRef<'a>> {
    let (data, st) = read_parts(what, a)?;
    MatRef::new(data, a.nrows(), a.ncols(), st[0], st[1])
}

/// `C = A·B (+ C)` on `ndarray` views: [`gemm`] (or [`gemm_reference`])
/// with the views' strides. `A` is `m x k`, `B` `k x n`, `C` `m x n`.
pub fn gemm_nd(
    engine: Engine,
    mult: &Multiplier,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    c: ArrayViewMut2<f32>,
    accumulate: bool,
) -> Result<()> {
    let a = mat_ref("A", &a)?;
    let b = mat_ref("B", &b)?;
    let (rows, cols) = c.dim();
    let (data, st) = write_parts("C", c)?;
    let c = MatMut::new(data, rows, cols, st[0], st[1])?;
    match engine {
        Engine::Fast => gemm(mult, a, b, c, accumulate),
        Engine::Reference => gemm_reference(mult, a, b, c, accumulate),
    }
}

fn batched_ref<'a>(what: &str, a: &ArrayView3<'a, f32>) -> Result<BatchedRef<'a>> {
    let (data, st) = read_parts(what, a)?;
    let (b, r, c) = a.dim();
    BatchedRef::new(data, b, r, c, st[0], st[1], st[2])
}

/// `C[i] = A[i]·B[i] (+ C[i])` on `ndarray` views: [`gemm_batched`] (or its
/// reference) with the views' strides. `A` is `[batch, m, k]`, `B`
/// `[batch, k, n]`, `C` `[batch, m, n]`.
pub fn gemm_batched_nd(
    engine: Engine,
    mult: &Multiplier,
    a: ArrayView3<f32>,
    b: ArrayView3<f32>,
    c: ArrayViewMut3<f32>,
    accumulate: bool,
) -> Result<()> {
    let a = batched_ref("A", &a)?;
    let b = batched_ref("B", &b)?;
    let (batch, rows, cols) = c.dim();
    let (data, st) = write_parts("C", c)?;
    let c = BatchedMut::new(data, batch, rows, cols, st[0], st[1], st[2])?;
    match engine {
        Engine::Fast => gemm_batched(mult, a, b, c, accumulate),
        Engine::Reference => gemm_batched_reference(mult, a, b, c, accumulate),
    }
}

/// Stride, padding, dilation and groups of a convolution: what its arrays'
/// shapes do not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvParams {
    /// Stride (vertical, horizontal).
    pub stride: (usize, usize),
    /// Zero padding (vertical, horizontal) on each side.
    pub padding: (usize, usize),
    /// Dilation (vertical, horizontal).
    pub dilation: (usize, usize),
    /// Groups.
    pub groups: usize,
}

impl Default for ConvParams {
    fn default() -> Self {
        ConvParams {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl ConvParams {
    /// The geometry of a convolution of an `x` of shape `[N, C_in, H, W]`
    /// with a `w` of shape `[C_out, C_in / groups, KH, KW]`, checked.
    pub fn shape(&self, x: [usize; 4], w: [usize; 4]) -> Result<Conv2dShape> {
        let s = Conv2dShape {
            batch: x[0],
            in_channels: x[1],
            in_h: x[2],
            in_w: x[3],
            out_channels: w[0],
            kernel_h: w[2],
            kernel_w: w[3],
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        };
        s.validate()?;
        if w[1] * self.groups != x[1] {
            return Err(AmsimError::shape(format!(
                "conv2d: the weight has {} input channels per group, the input {} channels in {} groups (needs {})",
                w[1],
                x[1],
                self.groups,
                x[1] / self.groups
            )));
        }
        Ok(s)
    }
}

fn check_dim(what: &str, got: &[usize], want: [usize; 4]) -> Result<()> {
    if got != want {
        return Err(AmsimError::shape(format!(
            "conv2d: {what} has shape {got:?}, the convolution needs {want:?}"
        )));
    }
    Ok(())
}

fn dims4(a: &[usize]) -> [usize; 4] {
    [a[0], a[1], a[2], a[3]]
}

/// Forward convolution `y = conv(x, w)` on `ndarray` views: `x`
/// `[N, C_in, H, W]`, `w` `[C_out, C_in / groups, KH, KW]`, `y`
/// `[N, C_out, OH, OW]` (overwritten), all C-ordered.
pub fn conv2d_forward_nd(
    engine: Engine,
    mult: &Multiplier,
    p: &ConvParams,
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    y: ArrayViewMut4<f32>,
) -> Result<()> {
    let s = p.shape(dims4(x.shape()), dims4(w.shape()))?;
    check_dim(
        "y",
        y.shape(),
        [s.batch, s.out_channels, s.out_h(), s.out_w()],
    )?;
    let (x, w) = (dense("x", &x)?, dense("w", &w)?);
    let y = dense_mut("y", y)?;
    match engine {
        Engine::Fast => conv::conv2d_forward(mult, &s, x, w, y),
        Engine::Reference => conv::conv2d_forward_reference(mult, &s, x, w, y),
    }
}

/// Input gradient `dx` of a convolution on `ndarray` views: `dy`
/// `[N, C_out, OH, OW]`, `w` `[C_out, C_in / groups, KH, KW]`, `dx`
/// `[N, C_in, H, W]` (overwritten; its shape gives the input's), all
/// C-ordered.
pub fn conv2d_grad_input_nd(
    engine: Engine,
    mult: &Multiplier,
    p: &ConvParams,
    dy: ArrayView4<f32>,
    w: ArrayView4<f32>,
    dx: ArrayViewMut4<f32>,
) -> Result<()> {
    let s = p.shape(dims4(dx.shape()), dims4(w.shape()))?;
    check_dim(
        "dy",
        dy.shape(),
        [s.batch, s.out_channels, s.out_h(), s.out_w()],
    )?;
    let (dy, w) = (dense("dy", &dy)?, dense("w", &w)?);
    let dx = dense_mut("dx", dx)?;
    match engine {
        Engine::Fast => conv::conv2d_grad_input(mult, &s, dy, w, dx),
        Engine::Reference => conv::conv2d_grad_input_reference(mult, &s, dy, w, dx),
    }
}

/// Weight gradient `dw` of a convolution on `ndarray` views: `x`
/// `[N, C_in, H, W]`, `dy` `[N, C_out, OH, OW]`, `dw`
/// `[C_out, C_in / groups, KH, KW]` (overwritten; its shape gives the
/// kernel's), all C-ordered.
pub fn conv2d_grad_weight_nd(
    engine: Engine,
    mult: &Multiplier,
    p: &ConvParams,
    x: ArrayView4<f32>,
    dy: ArrayView4<f32>,
    dw: ArrayViewMut4<f32>,
) -> Result<()> {
    let s = p.shape(dims4(x.shape()), dims4(dw.shape()))?;
    check_dim(
        "dy",
        dy.shape(),
        [s.batch, s.out_channels, s.out_h(), s.out_w()],
    )?;
    let (x, dy) = (dense("x", &x)?, dense("dy", &dy)?);
    let dw = dense_mut("dw", dw)?;
    match engine {
        Engine::Fast => conv::conv2d_grad_weight(mult, &s, x, dy, dw),
        Engine::Reference => conv::conv2d_grad_weight_reference(mult, &s, x, dy, dw),
    }
}
