//! Where the layers' products run: the CPU engine (default) or the CUDA
//! engine, chosen once per process with [`use_cuda`].
//!
//! With CUDA, convolution and dense layers run their three products on the
//! GPU. A layer uploads its input once in the forward pass and keeps it on
//! the device for the weight gradient; the weights go up once per forward
//! pass (the optimizer runs on the CPU) and serve the input gradient too;
//! the output gradient goes up once for both backward products. Outputs
//! and gradients come back for the CPU-side layers (normalisation,
//! activations, pooling, loss) and the optimizer. Transfers are counted by
//! the engine ([`amsim::cuda::CudaEngine::transfer_stats`]).

use std::sync::{Arc, RwLock};

use amsim::cuda::CudaEngine;

static ENGINE: RwLock<Option<Arc<CudaEngine>>> = RwLock::new(None);

/// Run products on `engine` from now on (`None`: back to the CPU).
pub fn use_cuda(engine: Option<Arc<CudaEngine>>) {
    *ENGINE.write().unwrap_or_else(|p| p.into_inner()) = engine;
}

/// The CUDA engine in use, if any.
pub fn cuda() -> Option<Arc<CudaEngine>> {
    ENGINE.read().unwrap_or_else(|p| p.into_inner()).clone()
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
