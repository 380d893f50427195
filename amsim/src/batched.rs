//! Batched matrix products `C[b] = A[b]·B[b] (+ C[b])` for `b` in
//! `0..batch`, as attention needs them: `Q·Kᵀ` and `A·V` over
//! `[batch*heads, T, d]` tensors.
//!
//! Each operand is a stack of equally shaped strided matrices: element
//! `(b, i, j)` is `data[b * batch_stride + i * row_stride + j * col_stride]`,
//! so a transposed stack is a swap of strides and a shared operand is a
//! batch stride of 0. Each `C[b]` is exactly [`gemm`] of its slices (the
//! same dot products in the same order, so bit-exact with
//! [`gemm_reference`] for AMSim multipliers); the batch runs in parallel.
//! Every slice is checked to lie inside its buffer, and the output slices to
//! be disjoint, before any work starts.

use rayon::prelude::*;

use crate::gemm::{gemm, gemm_reference, MatMut, MatRef};
use crate::{AmsimError, Multiplier, Result};

/// One past the last element a `rows x cols` slice with these strides
/// touches (0 for an empty slice).
fn extent(
    what: &str,
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
) -> Result<usize> {
    if rows == 0 || cols == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(row_stride)
        .and_then(|r| {
            (cols - 1)
                .checked_mul(col_stride)
                .and_then(|c| r.checked_add(c))
        })
        .and_then(|last| last.checked_add(1))
        .ok_or_else(|| AmsimError::shape(format!("{what}: strides overflow")))
}

/// Check that all `batch` slices of `extent` elements, `batch_stride`
/// apart, stay inside a buffer of `len`.
fn check_batch(
    what: &str,
    len: usize,
    batch: usize,
    batch_stride: usize,
    extent: usize,
) -> Result<()> {
    if batch == 0 || extent == 0 {
        return Ok(());
    }
    let end = (batch - 1)
        .checked_mul(batch_stride)
        .and_then(|s| s.checked_add(extent))
        .ok_or_else(|| AmsimError::shape(format!("{what}: batch stride overflows")))?;
    if end > len {
        return Err(AmsimError::shape(format!(
            "{what}: {batch} slices {batch_stride} apart, each reaching {extent} elements, need {end} elements but the buffer has {len}"
        )));
    }
    Ok(())
}

/// A read-only stack of `batch` strided `rows x cols` matrices.
#[derive(Debug, Clone, Copy)]
pub struct BatchedRef<'a> {
    data: &'a [f32],
    batch: usize,
    rows: usize,
    cols: usize,
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> BatchedRef<'a> {
    /// A stack with explicit strides; an error if any slice overruns `data`.
    /// Slices may overlap (a batch stride of 0 shares one matrix).
    pub fn new(
        data: &'a [f32],
        batch: usize,
        rows: usize,
        cols: usize,
        batch_stride: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        let ext = extent("batched matrix", rows, cols, row_stride, col_stride)?;
        check_batch("batched matrix", data.len(), batch, batch_stride, ext)?;
        Ok(BatchedRef {
            data,
            batch,
            rows,
            cols,
            batch_stride,
            row_stride,
            col_stride,
        })
    }

    /// A dense `[batch, rows, cols]` row-major stack.
    pub fn row_major(data: &'a [f32], batch: usize, rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, batch, rows, cols, rows * cols, cols, 1)
    }

    /// Every slice transposed (no copy).
    pub fn t(self) -> Self {
        BatchedRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Number of matrices.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Elements between consecutive slices.
    pub fn batch_stride(&self) -> usize {
        self.batch_stride
    }

    /// Elements between consecutive rows of a slice.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Elements between consecutive columns of a slice.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// The buffer the slices live in.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }
    /// Rows of each matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns of each matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Slice `b` as a matrix view.
    pub fn get(&self, b: usize) -> Result<MatRef<'a>> {
        if b >= self.batch {
            return Err(AmsimError::shape(format!(
                "batch index {b} out of range 0..{}",
                self.batch
            )));
        }
        // An empty slice may start past the end; it reads nothing.
        let start = (b * self.batch_stride).min(self.data.len());
        MatRef::new(
            &self.data[start..],
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }
}

/// A mutable stack of `batch` strided `rows x cols` matrices whose slices
/// do not overlap (so they can be written in parallel).
#[derive(Debug)]
pub struct BatchedMut<'a> {
    data: &'a mut [f32],
    batch: usize,
    rows: usize,
    cols: usize,
    batch_stride: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> BatchedMut<'a> {
    /// A mutable stack with explicit strides; an error if a slice overruns
    /// `data`, if elements of one slice alias, or if slices overlap (the
    /// batch stride must be at least the span of one slice).
    pub fn new(
        data: &'a mut [f32],
        batch: usize,
        rows: usize,
        cols: usize,
        batch_stride: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Result<Self> {
        let ext = extent("batched output", rows, cols, row_stride, col_stride)?;
        check_batch("batched output", data.len(), batch, batch_stride, ext)?;
        if batch > 1 && batch_stride < ext {
            return Err(AmsimError::shape(format!(
                "batched output: slices of {ext} elements {batch_stride} apart overlap (the batch stride must be at least {ext})"
            )));
        }
        if batch > 0 && ext > 0 {
            // Aliasing inside one slice.
            MatMut::new(&mut data[..ext], rows, cols, row_stride, col_stride)?;
        }
        Ok(BatchedMut {
            data,
            batch,
            rows,
            cols,
            batch_stride,
            row_stride,
            col_stride,
        })
    }

    /// A dense `[batch, rows, cols]` row-major stack.
    pub fn row_major(data: &'a mut [f32], batch: usize, rows: usize, cols: usize) -> Result<Self> {
        Self::new(data, batch, rows, cols, rows * cols, cols, 1)
    }

    /// Number of matrices.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Elements between consecutive slices.
    pub fn batch_stride(&self) -> usize {
        self.batch_stride
    }

    /// Elements between consecutive rows of a slice.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Elements between consecutive columns of a slice.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// The buffer the slices live in, mutably.
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.data
    }
    /// Rows of each matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns of each matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The slices as disjoint mutable views, in batch order (empty when the
    /// slices are empty).
    fn views(&mut self) -> Result<Vec<MatMut<'_>>> {
        let ext = extent(
            "batched output",
            self.rows,
            self.cols,
            self.row_stride,
            self.col_stride,
        )?;
        if self.batch == 0 || ext == 0 {
            return Ok(Vec::new());
        }
        let (rows, cols, rs, cs) = (self.rows, self.cols, self.row_stride, self.col_stride);
        if self.batch == 1 {
            return Ok(vec![MatMut::new(&mut *self.data, rows, cols, rs, cs)?]);
        }
        // batch_stride >= ext >= 1 (checked in `new`), so chunks of the
        // batch stride hold one slice each.
        self.data
            .chunks_mut(self.batch_stride)
            .take(self.batch)
            .map(|chunk| MatMut::new(chunk, rows, cols, rs, cs))
            .collect()
    }
}

/// Check that the three stacks fit together (`C[i] = A[i]·B[i]`): an
/// error naming the sizes otherwise.
pub fn check_batched_shapes(a: &BatchedRef, b: &BatchedRef, c: &BatchedMut) -> Result<()> {
    if a.batch != b.batch || a.batch != c.batch {
        return Err(AmsimError::shape(format!(
            "batched gemm: batch sizes differ (A {}, B {}, C {})",
            a.batch, b.batch, c.batch
        )));
    }
    if a.cols != b.rows || a.rows != c.rows || b.cols != c.cols {
        return Err(AmsimError::shape(format!(
            "batched gemm: cannot multiply {}x{} by {}x{} into {}x{}",
            a.rows, a.cols, b.rows, b.cols, c.rows, c.cols
        )));
    }
    Ok(())
}

/// `C[b] = A[b]·B[b] (+ C[b])` for every `b`, in parallel over the batch,
/// each slice through [`gemm`].
///
/// With a table and at least [`ITEMS_PER_THREAD`] slices per thread, each
/// slice runs as one job on the thread that takes it (the engine's
/// `lut_gemm_single_thread`) instead of being cut again into jobs for the
/// whole pool: the items of attention (`[128, 32] x [32, 128]` and the
/// like) are too small for a split to pay, and each job of a split packs the
/// first operand and expands the second again. Same sums either way.
pub fn gemm_batched(
    mult: &Multiplier,
    a: BatchedRef,
    b: BatchedRef,
    mut c: BatchedMut,
    accumulate: bool,
) -> Result<()> {
    let _timer = crate::timing::ProductTimer::start();
    check_batched_shapes(&a, &b, &c)?;
    // Every view is built (and checked) before any product starts.
    let c_views = c.views()?;
    let a_views = (0..c_views.len())
        .map(|i| a.get(i))
        .collect::<Result<Vec<_>>>()?;
    let b_views = (0..c_views.len())
        .map(|i| b.get(i))
        .collect::<Result<Vec<_>>>()?;
    if let Multiplier::Lut(lut) = mult {
        if c_views.len() >= ITEMS_PER_THREAD * rayon::current_num_threads() {
            // Shapes were checked above, for every slice at once.
            c_views
                .into_par_iter()
                .zip(a_views)
                .zip(b_views)
                .for_each(|((ci, ai), bi)| {
                    crate::engine::lut_gemm_single_thread(lut, ai, bi, ci, accumulate)
                });
            return Ok(());
        }
    }
    c_views
        .into_par_iter()
        .zip(a_views)
        .zip(b_views)
        .try_for_each(|((ci, ai), bi)| gemm(mult, ai, bi, ci, accumulate))
}

/// Slices per pool thread from which [`gemm_batched`] runs each slice of a
/// table product on a single thread (fewer, larger slices are cut into jobs
/// for the whole pool, as by [`gemm`]).
pub const ITEMS_PER_THREAD: usize = 2;

/// The definition of [`gemm_batched`]: [`gemm_reference`] slice by slice.
pub fn gemm_batched_reference(
    mult: &Multiplier,
    a: BatchedRef,
    b: BatchedRef,
    mut c: BatchedMut,
    accumulate: bool,
) -> Result<()> {
    check_batched_shapes(&a, &b, &c)?;
    for (i, ci) in c.views()?.into_iter().enumerate() {
        gemm_reference(mult, a.get(i)?, b.get(i)?, ci, accumulate)?;
    }
    Ok(())
}
