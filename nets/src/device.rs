//! Where the layers' products run: the CPU engine (default) or the CUDA
//! engine, chosen once per process with [`use_cuda`].
//!
//! With CUDA, convolution and dense layers run their three products on the
//! GPU. A layer uploads its input once in the forward pass and keeps it on
//! the device for the weight gradient; the weights go up once per forward
//! pass (the optimizer runs on the CPU) and serve the input gradient too;
//! the output gradient goes up once for both backward products. Outputs
//! and gradients come back for the CPU-side layers (normalisation,
//! activations, pooling, loss) and the optimizer.
//!
//! The Transformer's products outside dense layers go through [`gemm`]
//! and [`gemm_batched`], which run on whichever engine is in use: the six
//! batched score products of attention (`Q·Kᵀ`, `A·V` and their
//! gradients) and the three products of the tied output head. These take
//! host memory: each call uploads its operands (and the output only when it
//! accumulates into it) and brings the result back, so nothing of theirs
//! stays on the device between forward and backward (the Q/K/V and output
//! projections and the MLP are dense layers and keep their inputs there as
//! above). Operands keep their roles and the `k` order, so AMSim and bf16
//! results are bit-identical to the CPU's; `fp32` runs through cuBLAS and
//! may differ in the last bits. Transfers are counted by the engine
//! ([`amsim::cuda::CudaEngine::transfer_stats`]).

use std::sync::{Arc, RwLock};

use amsim::batched::{BatchedMut, BatchedRef};
use amsim::cuda::CudaEngine;
use amsim::gemm::{MatMut, MatRef};
use amsim::Multiplier;

use crate::Result;

static ENGINE: RwLock<Option<Arc<CudaEngine>>> = RwLock::new(None);

/// Run products on `engine` from now on (`None`: back to the CPU).
pub fn use_cuda(engine: Option<Arc<CudaEngine>>) {
    *ENGINE.write().unwrap_or_else(|p| p.into_inner()) = engine;
}

/// The CUDA engine in use, if any.
pub fn cuda() -> Option<Arc<CudaEngine>> {
    ENGINE.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// `C = A·B (+ C)` on the CUDA engine when one is in use
/// ([`CudaEngine::gemm`]), on the CPU engine otherwise
/// ([`amsim::gemm::gemm`]); bit-identical for AMSim and bf16 multipliers.
/// An engine error (no memory, a `direct` multiplier) comes back as
/// [`crate::NetError::Amsim`] with the engine's message.
pub fn gemm(mult: &Multiplier, a: MatRef, b: MatRef, c: MatMut, accumulate: bool) -> Result<()> {
    match cuda() {
        Some(eng) => eng.gemm(mult, a, b, c, accumulate)?,
        None => amsim::gemm::gemm(mult, a, b, c, accumulate)?,
    }
    Ok(())
}

/// Batched `C[i] = A[i]·B[i] (+ C[i])` on the CUDA engine when one is in
/// use ([`CudaEngine::gemm_batched`]), on the CPU engine otherwise
/// ([`amsim::batched::gemm_batched`]); bit-identical for AMSim and bf16
/// multipliers. Errors as in [`gemm`].
pub fn gemm_batched(
    mult: &Multiplier,
    a: BatchedRef,
    b: BatchedRef,
    c: BatchedMut,
    accumulate: bool,
) -> Result<()> {
    match cuda() {
        Some(eng) => eng.gemm_batched(mult, a, b, c, accumulate)?,
        None => amsim::batched::gemm_batched(mult, a, b, c, accumulate)?,
    }
    Ok(())
}

/// What a layer keeps on the device between its forward and backward
/// passes (input and weights). A clone of a layer starts without it, so a
/// cloned layer needs its own training forward before a backward.
#[derive(Debug, Default)]
pub struct GpuCache(pub Option<(amsim::cuda::DeviceBuffer, amsim::cuda::DeviceBuffer)>);

impl Clone for GpuCache {
    fn clone(&self) -> Self {
        GpuCache(None)
    }
}
