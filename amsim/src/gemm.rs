//! Matrix products `C = A·B (+ C)` with every product through a
//! [`Multiplier`].
//!
//! Operands are strided views ([`MatRef`], [`MatMut`]), so a transpose is a
//! swap of strides and costs no copy. Each element of `C` is the dot product
//! `sum_k mul(A[i][k], B[k][j])` accumulated in FP32 in blocks of
//! [`ACC_BLOCK`](crate::accumulate::ACC_BLOCK) consecutive `k` (each block
//! in increasing `k` from `+0.0`, with no fused multiply-add of the rounded
//! product; then the block sums in order from `+0.0`, see
//! [`crate::accumulate`]); with `accumulate` the old `C[i][j]` is added to
//! that sum afterwards. [`gemm_reference`] is the plain-loop definition.

use crate::accumulate::BlockedSum;
use crate::{engine, AmsimError, Multiplier, Result};

/// A read-only strided matrix view: element `(i, j)` is
/// `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A mutable strided matrix view.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Check that a `rows x cols` view with these strides stays inside `len`.
fn check_view(
    what: &str,
    len: usize,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = (rows - 1)
        .checked_mul(row_stride)
        .and_then(|r| {
            (cols - 1)
                .checked_mul(col_stride)
                .and_then(|c| r.checked_add(c))
        })
        .ok_or_else(|| AmsimError::shape(format!("{what}: strides overflow")))?;
    if last >= len {
        return Err(AmsimError::shape(format!(
            "{what}: a {rows}x{cols} view with strides ({row_stride}, {col_stride}) reaches element {last} of a buffer of {len}"
        )));
    }
    Ok(())
}

impl<'a> MatRef<'a> {
    /// A view with explicit strides; an error if it overruns `data`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        check_view("matrix", data.len(), rows, cols, row_stride, col_stride)?;
        Ok(MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A dense row-major view; an error if `data` is too short.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transposed view (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row stride in elements.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }
    /// Column stride in elements.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }
    /// The underlying buffer.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Element `(i, j)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

impl<'a> MatMut<'a> {
    /// A mutable view with explicit strides; an error if it overruns `data`
    /// or if distinct elements would alias.
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        check_view("output", data.len(), rows, cols, row_stride, col_stride)?;
        let aliases = (rows > 1 && row_stride == 0)
            || (cols > 1 && col_stride == 0)
            || (rows > 1 && cols > 1 && row_stride == col_stride);
        if aliases {
            return Err(AmsimError::shape(format!(
                "output: strides ({row_stride}, {col_stride}) make distinct elements of a {rows}x{cols} matrix alias"
            )));
        }
        Ok(MatMut {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        })
    }

    /// A dense row-major mutable view.
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Row stride in elements.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }
    /// Column stride in elements.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }
    /// The underlying buffer.
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.data
    }

    /// A shorter-lived mutable view of the same matrix.
    pub fn reborrow(&mut self) -> MatMut<'_> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }

    /// Element `(i, j)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }

    /// Mutable element `(i, j)`.
    #[inline]
    pub fn at_mut(&mut self, i: usize, j: usize) -> &mut f32 {
        &mut self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// Check that `A (m x k)`, `B (k x n)` and `C (m x n)` fit together.
pub fn check_gemm_shapes(a: &MatRef, b: &MatRef, c: &MatMut) -> Result<()> {
    if a.cols() != b.rows() || a.rows() != c.rows() || b.cols() != c.cols() {
        return Err(AmsimError::shape(format!(
            "cannot multiply {}x{} by {}x{} into {}x{}",
            a.rows(),
            a.cols(),
            b.rows(),
            b.cols(),
            c.rows(),
            c.cols()
        )));
    }
    Ok(())
}

/// The scalar reference: plain loops, one [`Multiplier::mul`] per product,
/// summed in blocks of [`crate::accumulate::ACC_BLOCK`] terms.
pub fn gemm_reference(
    mult: &Multiplier,
    a: MatRef,
    b: MatRef,
    mut c: MatMut,
    accumulate: bool,
) -> Result<()> {
    check_gemm_shapes(&a, &b, &c)?;
    for i in 0..a.rows() {
        for j in 0..b.cols() {
            let mut sum = BlockedSum::new();
            for p in 0..a.cols() {
                sum.add(mult.mul(a.at(i, p), b.at(p, j)));
            }
            let acc = sum.finish();
            let out = c.at_mut(i, j);
            *out = if accumulate { *out + acc } else { acc };
        }
    }
    Ok(())
}

/// `C = A·B (+ C)`: the fast engine for every multiplier kind, bit-exact with
/// [`gemm_reference`] for AMSim multipliers.
///
/// `fp32` and `bf16` run an optimised SGEMM (compared with the reference with
/// a tolerance), `direct` a parallel loop over the model, and a table the
/// AMSim engine of [`crate::engine`]. Threads come from the current rayon
/// pool; the result does not depend on their number.
pub fn gemm(mult: &Multiplier, a: MatRef, b: MatRef, c: MatMut, accumulate: bool) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    check_gemm_shapes(&a, &b, &c)?;
    match mult {
        Multiplier::Fp32 => engine::native::sgemm(a, b, c, accumulate),
        Multiplier::Bf16 => engine::native::bf16_gemm(a, b, c, accumulate),
        Multiplier::Direct { func, bits, .. } => {
            engine::native::direct_gemm(*func, *bits, a, b, c, accumulate)
        }
        Multiplier::Lut(lut) => engine::lut_gemm(lut, a, b, c, accumulate),
        Multiplier::Int8 { .. } | Multiplier::IntWide { .. } => mult.float_only("a float GEMM")?,
    }
    Ok(())
}

/// [`gemm`] for a table with the micro-kernels of a chosen instruction set
/// (the portable ones where the CPU lacks it): for tests and benchmarks that
/// compare kernels.
pub fn gemm_lut_with_isa(
    isa: engine::Isa,
    lut: &std::sync::Arc<crate::Lut>,
    a: MatRef,
    b: MatRef,
    c: MatMut,
    accumulate: bool,
) -> Result<()> {
    check_gemm_shapes(&a, &b, &c)?;
    engine::lut_gemm_isa(isa, lut, a, b, c, accumulate);
    Ok(())
}
