//! The CUDA engine: AMSim GEMM, batched GEMM and the three convolution
//! products on an NVIDIA GPU, bit-exact with the CPU engine.
//!
//! Libraries are loaded at run time through `cudarc` (dynamic loading), so
//! the crate builds on machines without CUDA; [`CudaEngine::new`] checks the
//! driver, NVRTC, cuBLAS and the GPU up front and names what is missing.
//! The kernels (`kernels.cu`) are compiled by NVRTC for the device's
//! architecture once per process.
//!
//! Bit-exactness: every output element is one dot product, one AMSim
//! product per term, summed in blocks of
//! [`ACC_BLOCK`](crate::accumulate::ACC_BLOCK) consecutive `k` (each from
//! `+0.0` in increasing `k`, then the block sums in order from `+0.0`),
//! exactly as [`crate::gemm::gemm_reference`]: the kernel's k tiles divide
//! the block, and it keeps the running total of the finished blocks beside
//! the current block's sums. The fast path of the
//! kernel computes a product as `(L * sa) * sb` with `sa`, `sb` the operands'
//! powers of two, which is exact (and equal to the composed product) when
//! every operand of the tile is zero or has a biased exponent in `[64, 190]`
//! and the table holds values in `[1, 4)`; other tiles run an exact
//! emulation of [`crate::product::amsim_mul`]. The one difference from the
//! CPU is the payload of a NaN result (the GPU returns the canonical NaN).
//!
//! `fp32` runs through cuBLAS SGEMM with TF32 off where the strides allow
//! it (compared with the CPU with a tolerance, like the CPU's own SGEMM),
//! `bf16` through the kernel with operands rounded to bfloat16; `direct`
//! multipliers are CPU-only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod bench;

use cudarc::cublas::sys as blas_sys;
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute_enum};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
    LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::batched::{BatchedMut, BatchedRef};
use crate::conv::{AxisPhase, Conv2dShape};
use crate::gemm::{check_gemm_shapes, MatMut, MatRef};
use crate::{AmsimError, Lut, Multiplier, Result};

/// The kernel source, compiled by NVRTC at run time.
pub const KERNEL_SOURCE: &str = include_str!("kernels.cu");

/// Every kernel entry point of [`KERNEL_SOURCE`].
pub const KERNEL_NAMES: [&str; 14] = [
    "gemm_lut_smem_big",
    "gemm_lut_gmem_big",
    "gemm_fp32_big",
    "gemm_bf16_big",
    "gemm_lut_smem_small",
    "gemm_lut_gmem_small",
    "gemm_fp32_small",
    "gemm_bf16_small",
    "im2col_t",
    "dy2col_phase_t",
    "weight_phase_t",
    "phase_to_nchw",
    "nchw_swap",
    "int_gemm_lut",
];

/// Table widths whose (row-padded) table is staged in shared memory; wider
/// tables are read from global memory through the read-only cache.
pub const MAX_SMEM_TABLE_BITS: u32 = 7;

/// Tile sizes of the two kernel variants (see `kernels.cu`).
const BIG_TILE: usize = 128;
const SMALL_TILE: usize = 16;
const THREADS: u32 = 256;

fn cuda_err(what: &str, e: impl std::fmt::Display) -> AmsimError {
    let msg = e.to_string();
    if msg.contains("OUT_OF_MEMORY") {
        AmsimError::Cuda(format!(
            "{what}: out of GPU memory ({msg}); use a smaller batch or model"
        ))
    } else {
        AmsimError::Cuda(format!("{what}: {msg}"))
    }
}

/// Where to get NVRTC when it is missing.
const NVRTC_HINT: &str = "install the CUDA toolkit, or `pip install nvidia-cuda-nvrtc-cu12` and add its lib directory (python3 -c 'import nvidia.cuda_nvrtc as m, os; print(os.path.join(m.__path__[0], \"lib\"))') to LD_LIBRARY_PATH";

/// Whether the NVRTC library can be loaded (no GPU needed).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Whether the CUDA driver library can be loaded.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Compile [`KERNEL_SOURCE`] with NVRTC for a virtual architecture such as
/// `compute_90`. Needs only the NVRTC library, no GPU: the CI check that
/// every kernel compiles.
pub fn compile_kernels(arch: &str) -> Result<Ptx> {
    if !nvrtc_available() {
        return Err(AmsimError::Cuda(format!(
            "the NVRTC library (libnvrtc.so) was not found; {NVRTC_HINT}"
        )));
    }
    let opts = CompileOptions {
        ftz: Some(false),
        prec_div: Some(true),
        prec_sqrt: Some(true),
        fmad: Some(false),
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some("amsim_kernels.cu".into()),
        ..Default::default()
    };
    compile_ptx_with_opts(KERNEL_SOURCE, opts).map_err(|e| {
        AmsimError::Cuda(format!(
            "NVRTC could not compile kernels.cu for {arch}: {e}"
        ))
    })
}

/// Time and bytes spent moving data between host and device.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransferStats {
    /// Bytes copied host to device.
    pub h2d_bytes: u64,
    /// Bytes copied device to host.
    pub d2h_bytes: u64,
    /// Wall time of those copies alone (each first waits for queued
    /// kernels, then for the copy).
    pub time: Duration,
}

/// A buffer of `f32` in device memory.
pub struct DeviceBuffer {
    buf: CudaSlice<f32>,
}

impl DeviceBuffer {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == 0
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({} f32)", self.buf.len())
    }
}

/// A strided matrix stack inside a device buffer: what a kernel launch
/// reads or writes. Built by [`CudaEngine`] methods after a bounds check.
#[derive(Debug, Clone, Copy)]
struct DevMat {
    ptr: u64,
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
    bs: usize,
}

/// Extent in elements of `batch` strided `rows x cols` matrices.
fn extent(batch: usize, rows: usize, cols: usize, rs: usize, cs: usize, bs: usize) -> usize {
    if batch == 0 || rows == 0 || cols == 0 {
        0
    } else {
        (batch - 1) * bs + (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// Convolution geometry as the kernels take it (`ConvGeom` in kernels.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ConvGeom {
    n: i32,
    c: i32,
    h: i32,
    w: i32,
    o: i32,
    kh: i32,
    kw: i32,
    sh: i32,
    sw: i32,
    ph: i32,
    pw: i32,
    dh: i32,
    dw: i32,
    oh: i32,
    ow: i32,
    groups: i32,
}

// SAFETY: plain `repr(C)` integers, the same layout as the CUDA struct.
unsafe impl DeviceRepr for ConvGeom {}

impl ConvGeom {
    fn of(s: &Conv2dShape) -> Result<ConvGeom> {
        let i = |v: usize| {
            i32::try_from(v).map_err(|_| {
                AmsimError::shape(format!("convolution dimension {v} too large for the GPU"))
            })
        };
        Ok(ConvGeom {
            n: i(s.batch)?,
            c: i(s.in_channels)?,
            h: i(s.in_h)?,
            w: i(s.in_w)?,
            o: i(s.out_channels)?,
            kh: i(s.kernel_h)?,
            kw: i(s.kernel_w)?,
            sh: i(s.stride.0)?,
            sw: i(s.stride.1)?,
            ph: i(s.padding.0)?,
            pw: i(s.padding.1)?,
            dh: i(s.dilation.0)?,
            dw: i(s.dilation.1)?,
            oh: i(s.out_h())?,
            ow: i(s.out_w())?,
            groups: i(s.groups)?,
        })
    }
}

/// One phase of the input gradient as the kernels take it (`ConvPhase` in
/// kernels.cu; [`AxisPhase`] per axis).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct ConvPhase {
    ih0: i32,
    nh: i32,
    iw0: i32,
    nw: i32,
    kh0: i32,
    kh_step: i32,
    nkh: i32,
    kw0: i32,
    kw_step: i32,
    nkw: i32,
}

// SAFETY: plain `repr(C)` integers, the same layout as the CUDA struct.
unsafe impl DeviceRepr for ConvPhase {}

impl ConvPhase {
    fn of(h: &AxisPhase, w: &AxisPhase) -> Result<ConvPhase> {
        let i = |v: usize| {
            i32::try_from(v).map_err(|_| {
                AmsimError::shape(format!("convolution dimension {v} too large for the GPU"))
            })
        };
        Ok(ConvPhase {
            ih0: i(h.first)?,
            nh: i(h.count)?,
            iw0: i(w.first)?,
            nw: i(w.count)?,
            kh0: i(h.tap0)?,
            kh_step: i(h.tap_step)?,
            nkh: i(h.taps)?,
            kw0: i(w.tap0)?,
            kw_step: i(w.tap_step)?,
            nkw: i(w.taps)?,
        })
    }
}

/// A table on the device.
struct DeviceLut {
    lut: Arc<Lut>,
    table: CudaSlice<f32>,
    bits: u32,
    /// Every entry is a normal float in `[1, 4)`: the fast path is exact.
    fast_ok: bool,
}

/// One GPU with its compiled kernels, a stream, cuBLAS and the tables
/// uploaded so far.
pub struct CudaEngine {
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    blas: blas_sys::cublasHandle_t,
    luts: Mutex<Vec<DeviceLut>>,
    name: String,
    arch: String,
    sm_count: usize,
    transfers: Mutex<TransferStats>,
}

// SAFETY: the cuBLAS handle is used only through `&self` methods that hold
// no state besides the handle, always on the engine's one stream; cuBLAS
// handles may be used from any thread as long as calls do not overlap,
// which the `blas_lock` below guarantees.
unsafe impl Send for CudaEngine {}
unsafe impl Sync for CudaEngine {}

static BLAS_LOCK: Mutex<()> = Mutex::new(());

static GLOBAL: OnceLock<std::result::Result<Arc<CudaEngine>, String>> = OnceLock::new();

impl std::fmt::Debug for CudaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaEngine({}, {})", self.name, self.arch)
    }
}

impl CudaEngine {
    /// The engine on GPU 0, created on first use and shared by the process.
    pub fn global() -> Result<Arc<CudaEngine>> {
        GLOBAL
            .get_or_init(|| CudaEngine::new(0).map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| AmsimError::Cuda(e.trim_start_matches("CUDA: ").to_string()))
    }

    /// Open GPU `ordinal`: checks the driver library, a GPU, NVRTC and
    /// cuBLAS, then compiles the kernels for the GPU's architecture.
    pub fn new(ordinal: usize) -> Result<CudaEngine> {
        if !driver_available() {
            return Err(AmsimError::Cuda(
                "no NVIDIA driver: the CUDA driver library (libcuda.so) was not found; --device cuda needs a machine with an NVIDIA GPU and its driver".into(),
            ));
        }
        let count = CudaContext::device_count().map_err(|e| {
            AmsimError::Cuda(format!("the NVIDIA driver found no usable GPU ({e})"))
        })?;
        if count <= 0 {
            return Err(AmsimError::Cuda(
                "no GPU: the NVIDIA driver is installed but reports no CUDA device".into(),
            ));
        }
        if ordinal >= count as usize {
            return Err(AmsimError::Cuda(format!(
                "GPU {ordinal} requested but only {count} found"
            )));
        }
        if !nvrtc_available() {
            return Err(AmsimError::Cuda(format!(
                "the NVRTC library (libnvrtc.so) was not found; {NVRTC_HINT}"
            )));
        }
        // SAFETY: only tries to dlopen the library.
        if !unsafe { blas_sys::is_culib_present() } {
            return Err(AmsimError::Cuda(
                "the cuBLAS library (libcublas.so) was not found; install the CUDA toolkit or `pip install nvidia-cublas-cu12` and add its lib directory to LD_LIBRARY_PATH".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err("opening the GPU", e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| cuda_err("reading the compute capability", e))?;
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| cuda_err("reading the SM count", e))? as usize;
        let smem_optin = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| cuda_err("reading the shared memory size", e))?;
        let arch = format!("compute_{major}{minor}");
        let ptx = compile_kernels(&arch)?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| cuda_err("loading the compiled kernels", e))?;
        let mut funcs = HashMap::new();
        for name in KERNEL_NAMES {
            let f = module
                .load_function(name)
                .map_err(|e| cuda_err(&format!("kernel {name}"), e))?;
            if name.starts_with("gemm_lut_smem") {
                f.set_attribute(
                    CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem_optin.min(smem_table_bytes(MAX_SMEM_TABLE_BITS) as i32 + 1024),
                )
                .map_err(|e| cuda_err(&format!("configuring kernel {name}"), e))?;
            }
            funcs.insert(name, f);
        }
        let stream = ctx.default_stream();
        let mut handle: blas_sys::cublasHandle_t = std::ptr::null_mut();
        // SAFETY: plain cuBLAS handle creation and configuration on our
        // stream; the handle is destroyed in Drop.
        unsafe {
            check_blas(
                blas_sys::cublasCreate_v2(&mut handle),
                "creating the cuBLAS handle",
            )?;
            check_blas(
                blas_sys::cublasSetStream_v2(handle, stream.cu_stream() as _),
                "binding cuBLAS to the stream",
            )?;
            // Plain FP32 SGEMM: no TF32 tensor-core rounding of the inputs.
            check_blas(
                blas_sys::cublasSetMathMode(handle, blas_sys::cublasMath_t::CUBLAS_DEFAULT_MATH),
                "setting the cuBLAS math mode",
            )?;
        }
        Ok(CudaEngine {
            stream,
            funcs,
            blas: handle,
            luts: Mutex::new(Vec::new()),
            name,
            arch,
            sm_count,
            transfers: Mutex::new(TransferStats::default()),
        })
    }

    /// The GPU's name (`NVIDIA H100 80GB HBM3`).
    pub fn device_name(&self) -> &str {
        &self.name
    }

    /// The architecture the kernels were compiled for (`compute_90`).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Wait for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("synchronizing", e))
    }

    /// Transfers counted so far.
    pub fn transfer_stats(&self) -> TransferStats {
        *self.transfers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reset the transfer counters.
    pub fn reset_transfer_stats(&self) {
        *self.transfers.lock().unwrap_or_else(|p| p.into_inner()) = TransferStats::default();
    }

    fn count(&self, h2d: usize, d2h: usize, t: Duration) {
        let mut s = self.transfers.lock().unwrap_or_else(|p| p.into_inner());
        s.h2d_bytes += (h2d * 4) as u64;
        s.d2h_bytes += (d2h * 4) as u64;
        s.time += t;
    }

    /// A zeroed device buffer of `len` elements.
    pub fn alloc(&self, len: usize) -> Result<DeviceBuffer> {
        let buf = self
            .stream
            .alloc_zeros::<f32>(len.max(1))
            .map_err(|e| cuda_err(&format!("allocating {} MiB", (len * 4) >> 20), e))?;
        Ok(DeviceBuffer { buf })
    }

    /// Copy `host` to a new device buffer.
    pub fn upload(&self, host: &[f32]) -> Result<DeviceBuffer> {
        let mut d = self.alloc(host.len())?;
        self.upload_into(host, &mut d)?;
        Ok(d)
    }

    /// Copy `host` into the start of `dst` (which must be large enough).
    pub fn upload_into(&self, host: &[f32], dst: &mut DeviceBuffer) -> Result<()> {
        if host.len() > dst.len() {
            return Err(AmsimError::shape(format!(
                "upload of {} elements into a device buffer of {}",
                host.len(),
                dst.len()
            )));
        }
        if host.is_empty() {
            return Ok(());
        }
        // Queued kernels finish first, so that the time counted is the
        // copy's alone.
        self.synchronize()?;
        let t = Instant::now();
        let mut view = dst.buf.slice_mut(..host.len());
        self.stream
            .memcpy_htod(host, &mut view)
            .map_err(|e| cuda_err("copying to the GPU", e))?;
        self.synchronize()?;
        self.count(host.len(), 0, t.elapsed());
        Ok(())
    }

    /// Copy the first `host.len()` elements of `src` to `host`.
    pub fn download(&self, src: &DeviceBuffer, host: &mut [f32]) -> Result<()> {
        if host.len() > src.len() {
            return Err(AmsimError::shape(format!(
                "download of {} elements from a device buffer of {}",
                host.len(),
                src.len()
            )));
        }
        if host.is_empty() {
            return Ok(());
        }
        self.synchronize()?;
        let t = Instant::now();
        let view = src.buf.slice(..host.len());
        self.stream
            .memcpy_dtoh(&view, host)
            .map_err(|e| cuda_err("copying from the GPU", e))?;
        self.synchronize()?;
        self.count(0, host.len(), t.elapsed());
        Ok(())
    }

    fn ptr(&self, b: &DeviceBuffer) -> u64 {
        let (p, _sync) = b.buf.device_ptr(&self.stream);
        p
    }

    fn ptr_mut(&self, b: &mut DeviceBuffer) -> u64 {
        let (p, _sync) = b.buf.device_ptr_mut(&self.stream);
        p
    }

    /// A bounds-checked strided view of `b` starting at element `offset`.
    #[allow(clippy::too_many_arguments)]
    fn view(
        &self,
        what: &str,
        ptr: u64,
        len: usize,
        offset: usize,
        batch: usize,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
        bs: usize,
    ) -> Result<DevMat> {
        let ext = extent(batch, rows, cols, rs, cs, bs);
        if offset + ext > len {
            return Err(AmsimError::shape(format!(
                "{what}: {batch} x {rows} x {cols} at offset {offset} with strides ({bs}, {rs}, {cs}) needs {} elements, the device buffer has {len}",
                offset + ext
            )));
        }
        Ok(DevMat {
            ptr: ptr + 4 * offset as u64,
            rows,
            cols,
            rs,
            cs,
            bs,
        })
    }

    /// The device copy of `lut`, uploaded on first use.
    fn lut_on_device(&self, lut: &Arc<Lut>) -> Result<(u64, u32, bool)> {
        let mut luts = self.luts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = luts.iter().find(|d| Arc::ptr_eq(&d.lut, lut)) {
            let (p, _s) = d.table.device_ptr(&self.stream);
            return Ok((p, d.bits, d.fast_ok));
        }
        let fast_ok = lut
            .table()
            .iter()
            .all(|&l| l.is_normal() && (1.0..4.0).contains(&l));
        let t = Instant::now();
        let table = self
            .stream
            .clone_htod(lut.table())
            .map_err(|e| cuda_err("uploading the table", e))?;
        self.count(lut.table().len(), 0, t.elapsed());
        let p = {
            let (p, _s) = table.device_ptr(&self.stream);
            p
        };
        luts.push(DeviceLut {
            lut: lut.clone(),
            table,
            bits: lut.bits(),
            fast_ok,
        });
        Ok((p, lut.bits(), fast_ok))
    }

    /// Launch `C = A·B (+ C)` on `batch` matrix triples.
    #[allow(clippy::too_many_arguments)]
    fn launch_gemm(
        &self,
        mult: &Multiplier,
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a: DevMat,
        b: DevMat,
        c: DevMat,
        accumulate: bool,
    ) -> Result<()> {
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 && accumulate {
            // Empty dot products add +0.0: C is unchanged.
            return Ok(());
        }
        // With k = 0 the kernel only writes +0.0 and reads no operand or
        // table: run the table-free bf16 variant whatever the multiplier.
        let mult = if k == 0 { &Multiplier::Bf16 } else { mult };
        if matches!(mult, Multiplier::Fp32)
            && self.try_cublas(batch, m, n, k, a, b, c, accumulate)?
        {
            return Ok(());
        }
        let (table, bits, fast_ok) = match mult {
            Multiplier::Lut(lut) => self.lut_on_device(lut)?,
            Multiplier::Fp32 | Multiplier::Bf16 => (0u64, 1u32, false),
            Multiplier::Int8 { .. } | Multiplier::IntWide { .. } => {
                mult.float_only("a float GEMM on the GPU")?;
                unreachable!("float_only refuses integer multipliers")
            }
            Multiplier::Direct { name, .. } => {
                return Err(AmsimError::Cuda(format!(
                    "direct:{name} calls the C model for every product and runs on the CPU only; use a table ({name}:BITS) with --device cuda"
                )))
            }
        };
        let big_tiles = m.div_ceil(BIG_TILE) * n.div_ceil(BIG_TILE) * batch;
        let small = big_tiles < 2 * self.sm_count;
        let tile = if small { SMALL_TILE } else { BIG_TILE };
        let kind = match mult {
            Multiplier::Lut(_) if bits <= MAX_SMEM_TABLE_BITS => "lut_smem",
            Multiplier::Lut(_) => "lut_gmem",
            Multiplier::Bf16 => "bf16",
            _ => "fp32",
        };
        let fname = format!("gemm_{kind}_{}", if small { "small" } else { "big" });
        let f = &self.funcs[fname.as_str()];
        let gx = n.div_ceil(tile);
        let gy = m.div_ceil(tile);
        if gy > 65_535 || batch > 65_535 || gx > i32::MAX as usize {
            return Err(AmsimError::shape(format!(
                "GEMM of {batch} x {m} x {n} is too large for one launch"
            )));
        }
        let shared = if kind == "lut_smem" {
            smem_table_bytes(bits) as u32
        } else {
            0
        };
        let cfg = LaunchConfig {
            grid_dim: (gx as u32, gy as u32, batch as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: shared,
        };
        let (mi, ni, ki) = (to_i32(m)?, to_i32(n)?, to_i32(k)?);
        let l = |v: usize| v as i64;
        let (rsa, csa, bsa) = (l(a.rs), l(a.cs), l(a.bs));
        let (rsb, csb, bsb) = (l(b.rs), l(b.cs), l(b.bs));
        let (rsc, csc, bsc) = (l(c.rs), l(c.cs), l(c.bs));
        let acc = accumulate as i32;
        let bits_i = bits as i32;
        let fast = fast_ok as i32;
        let mut lb = self.stream.launch_builder(f);
        lb.arg(&mi).arg(&ni).arg(&ki);
        lb.arg(&a.ptr).arg(&rsa).arg(&csa).arg(&bsa);
        lb.arg(&b.ptr).arg(&rsb).arg(&csb).arg(&bsb);
        lb.arg(&c.ptr).arg(&rsc).arg(&csc).arg(&bsc);
        lb.arg(&acc).arg(&table).arg(&bits_i).arg(&fast);
        // SAFETY: the argument list matches GEMM_ARGS in kernels.cu, and
        // every view was bounds-checked against its buffer.
        unsafe { lb.launch(cfg) }.map_err(|e| cuda_err(&format!("launching {fname}"), e))?;
        Ok(())
    }

    /// `fp32` through cuBLAS when every matrix has a unit stride in one
    /// direction (cuBLAS's column-major-with-leading-dimension layouts).
    /// Returns `false` when the layout does not fit (the kernel runs).
    #[allow(clippy::too_many_arguments)]
    fn try_cublas(
        &self,
        batch: usize,
        m: usize,
        n: usize,
        k: usize,
        a: DevMat,
        b: DevMat,
        c: DevMat,
        accumulate: bool,
    ) -> Result<bool> {
        use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        // A matrix as cuBLAS sees it: column-major (op N, ld = cs) when its
        // row stride is 1, or the transpose of a column-major one (op T,
        // ld = rs) when its column stride is 1.
        let lay = |x: &DevMat| -> Option<(blas_sys::cublasOperation_t, usize)> {
            if x.rs == 1 && x.cs >= x.rows.max(1) {
                Some((CUBLAS_OP_N, x.cs))
            } else if x.cs == 1 && x.rs >= x.cols.max(1) {
                Some((CUBLAS_OP_T, x.rs))
            } else {
                None
            }
        };
        let (Some(la), Some(lb), Some(lc)) = (lay(&a), lay(&b), lay(&c)) else {
            return Ok(false);
        };
        if k == 0 {
            return Ok(false);
        }
        let beta = if accumulate { 1.0f32 } else { 0.0 };
        let alpha = 1.0f32;
        let flip = |op| {
            if op == CUBLAS_OP_N {
                CUBLAS_OP_T
            } else {
                CUBLAS_OP_N
            }
        };
        // C column-major: C = op(A) op(B). C row-major: Cᵀ = op(B)ᵀ op(A)ᵀ.
        let (opx, ldx, px, bsx, opy, ldy, py, bsy, mm, nn) = if lc.0 == CUBLAS_OP_N {
            (la.0, la.1, a.ptr, a.bs, lb.0, lb.1, b.ptr, b.bs, m, n)
        } else {
            (
                flip(lb.0),
                lb.1,
                b.ptr,
                b.bs,
                flip(la.0),
                la.1,
                a.ptr,
                a.bs,
                n,
                m,
            )
        };
        let ldc = lc.1;
        let i = to_i32;
        let _g = BLAS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: pointers and leading dimensions describe the bounds-checked
        // views; the handle is bound to our stream.
        let st = unsafe {
            blas_sys::cublasSgemmStridedBatched(
                self.blas,
                opx,
                opy,
                i(mm)?,
                i(nn)?,
                i(k)?,
                &alpha,
                px as *const f32,
                i(ldx)?,
                bsx as i64,
                py as *const f32,
                i(ldy)?,
                bsy as i64,
                &beta,
                c.ptr as *mut f32,
                i(ldc)?,
                c.bs as i64,
                i(batch)?,
            )
        };
        check_blas(st, "cuBLAS SGEMM")?;
        Ok(true)
    }

    /// The device copy of a host-memory output `C` (its span `host`, a
    /// `batch x m x n` view with strides `(rs, cs, bs)`). Its values go up
    /// when the product accumulates, or when the view has gaps (elements of
    /// the span it does not cover must come back unchanged); a contiguous
    /// row- or column-major C that is overwritten needs only a zeroed
    /// buffer, which saves a transfer as large as the result (attention
    /// scores are the largest products of a Transformer step).
    fn output_buffer(
        &self,
        host: &[f32],
        batch: usize,
        m: usize,
        n: usize,
        (rs, cs, bs): (usize, usize, usize),
        accumulate: bool,
    ) -> Result<DeviceBuffer> {
        let whole = batch <= 1 || bs == m * n;
        let contiguous = whole && ((cs == 1 && rs == n) || (rs == 1 && cs == m));
        if !accumulate && contiguous && host.len() == batch * m * n {
            self.alloc(host.len())
        } else {
            self.upload(host)
        }
    }

    /// Host-memory `C = A·B (+ C)` on the GPU: uploads, runs, downloads.
    /// Bit-exact with [`crate::gemm::gemm`] for AMSim multipliers.
    pub fn gemm(
        &self,
        mult: &Multiplier,
        a: MatRef,
        b: MatRef,
        mut c: MatMut,
        accumulate: bool,
    ) -> Result<()> {
        let _timer = crate::timing::ProductTimer::start();
        check_gemm_shapes(&a, &b, &c)?;
        let (m, n, k) = (a.rows(), b.cols(), a.cols());
        let ea = extent(1, m, k, a.row_stride(), a.col_stride(), 0);
        let eb = extent(1, k, n, b.row_stride(), b.col_stride(), 0);
        let ec = extent(1, m, n, c.row_stride(), c.col_stride(), 0);
        let da = self.upload(&a.data()[..ea])?;
        let db = self.upload(&b.data()[..eb])?;
        let (crs, ccs) = (c.row_stride(), c.col_stride());
        let mut dc = self.output_buffer(&c.data_mut()[..ec], 1, m, n, (crs, ccs, 0), accumulate)?;
        let av = self.view(
            "A",
            self.ptr(&da),
            da.len(),
            0,
            1,
            m,
            k,
            a.row_stride(),
            a.col_stride(),
            0,
        )?;
        let bv = self.view(
            "B",
            self.ptr(&db),
            db.len(),
            0,
            1,
            k,
            n,
            b.row_stride(),
            b.col_stride(),
            0,
        )?;
        let cp = self.ptr_mut(&mut dc);
        let cv = self.view("C", cp, dc.len(), 0, 1, m, n, crs, ccs, 0)?;
        self.launch_gemm(mult, 1, m, n, k, av, bv, cv, accumulate)?;
        self.download(&dc, &mut c.data_mut()[..ec])
    }

    /// Host-memory batched GEMM on the GPU; bit-exact with
    /// [`crate::batched::gemm_batched`] for AMSim multipliers.
    pub fn gemm_batched(
        &self,
        mult: &Multiplier,
        a: BatchedRef,
        b: BatchedRef,
        mut c: BatchedMut,
        accumulate: bool,
    ) -> Result<()> {
        let _timer = crate::timing::ProductTimer::start();
        let batch = a.batch();
        if b.batch() != batch
            || c.batch() != batch
            || a.cols() != b.rows()
            || c.rows() != a.rows()
            || c.cols() != b.cols()
        {
            return Err(AmsimError::shape(format!(
                "batched GEMM: A is {} x {} x {}, B is {} x {} x {}, C is {} x {} x {}",
                a.batch(),
                a.rows(),
                a.cols(),
                b.batch(),
                b.rows(),
                b.cols(),
                c.batch(),
                c.rows(),
                c.cols()
            )));
        }
        let (m, n, k) = (a.rows(), b.cols(), a.cols());
        let ea = extent(
            batch,
            m,
            k,
            a.row_stride(),
            a.col_stride(),
            a.batch_stride(),
        );
        let eb = extent(
            batch,
            k,
            n,
            b.row_stride(),
            b.col_stride(),
            b.batch_stride(),
        );
        let (crs, ccs, cbs) = (c.row_stride(), c.col_stride(), c.batch_stride());
        let ec = extent(batch, m, n, crs, ccs, cbs);
        let da = self.upload(&a.data()[..ea])?;
        let db = self.upload(&b.data()[..eb])?;
        let mut dc = self.output_buffer(
            &c.data_mut()[..ec],
            batch,
            m,
            n,
            (crs, ccs, cbs),
            accumulate,
        )?;
        let av = self.view(
            "A",
            self.ptr(&da),
            da.len(),
            0,
            batch,
            m,
            k,
            a.row_stride(),
            a.col_stride(),
            a.batch_stride(),
        )?;
        let bv = self.view(
            "B",
            self.ptr(&db),
            db.len(),
            0,
            batch,
            k,
            n,
            b.row_stride(),
            b.col_stride(),
            b.batch_stride(),
        )?;
        let cp = self.ptr_mut(&mut dc);
        let cv = self.view("C", cp, dc.len(), 0, batch, m, n, crs, ccs, cbs)?;
        self.launch_gemm(mult, batch, m, n, k, av, bv, cv, accumulate)?;
        self.download(&dc, &mut c.data_mut()[..ec])
    }

    /// Grid for a grid-stride loop over `total` elements.
    fn grid(&self, total: usize) -> LaunchConfig {
        let blocks = total
            .div_ceil(THREADS as usize)
            .min(self.sm_count * 32)
            .max(1);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Launch one of the lowering kernels `(ConvGeom, const float*, float*)`.
    fn launch_lowering(
        &self,
        name: &str,
        total: usize,
        g: ConvGeom,
        src: u64,
        dst: u64,
    ) -> Result<()> {
        if total == 0 {
            return Ok(());
        }
        let mut lb = self.stream.launch_builder(&self.funcs[name]);
        lb.arg(&g).arg(&src).arg(&dst);
        // SAFETY: the arguments match the kernel; callers size `dst` for
        // `total` elements and `src` for the geometry.
        unsafe { lb.launch(self.grid(total)) }
            .map_err(|e| cuda_err(&format!("launching {name}"), e))?;
        Ok(())
    }

    /// Forward convolution on device buffers; bit-exact with
    /// [`crate::conv::conv2d_forward`] for AMSim multipliers.
    pub fn conv2d_forward_dev(
        &self,
        mult: &Multiplier,
        s: &Conv2dShape,
        x: &DeviceBuffer,
        w: &DeviceBuffer,
        y: &mut DeviceBuffer,
    ) -> Result<()> {
        let _timer = crate::timing::ProductTimer::start();
        s.check_buffers(
            x.len().min(s.x_len()),
            w.len().min(s.w_len()),
            y.len().min(s.y_len()),
        )?;
        let g = ConvGeom::of(s)?;
        let (cpg, opg) = (s.in_channels / s.groups, s.out_channels / s.groups);
        let kc = cpg * s.kernel_h * s.kernel_w;
        let spatial = s.out_h() * s.out_w();
        let rows = s.batch * spatial;
        if s.y_len() == 0 {
            return Ok(());
        }
        let mut col = self.alloc(rows * s.groups * kc)?;
        let mut out = self.alloc(s.y_len())?;
        let xp = self.ptr(x);
        let colp = self.ptr_mut(&mut col);
        self.launch_lowering("im2col_t", rows * s.groups * kc, g, xp, colp)?;
        // Per group: A = col (rows x kc, column-major), B = wᵀ (kc x opg),
        // C = out as [o][rows].
        let av = self.view(
            "columns",
            colp,
            col.len(),
            0,
            s.groups,
            rows,
            kc,
            1,
            rows,
            kc * rows,
        )?;
        let bv = self.view(
            "weights",
            self.ptr(w),
            w.len(),
            0,
            s.groups,
            kc,
            opg,
            1,
            kc,
            opg * kc,
        )?;
        let outp = self.ptr_mut(&mut out);
        let cv = self.view(
            "output",
            outp,
            out.len(),
            0,
            s.groups,
            rows,
            opg,
            1,
            rows,
            opg * rows,
        )?;
        self.launch_gemm(mult, s.groups, rows, opg, kc, av, bv, cv, false)?;
        let yp = self.ptr_mut(y);
        self.nchw_swap(s.batch, s.out_channels, spatial, outp, yp, false)
    }

    fn nchw_swap(
        &self,
        n: usize,
        ch: usize,
        spatial: usize,
        src: u64,
        dst: u64,
        inverse: bool,
    ) -> Result<()> {
        let (ni, ci, sp, inv) = (to_i32(n)?, to_i32(ch)?, spatial as i64, inverse as i32);
        let total = n * ch * spatial;
        if total == 0 {
            return Ok(());
        }
        let mut lb = self.stream.launch_builder(&self.funcs["nchw_swap"]);
        lb.arg(&ni).arg(&ci).arg(&sp).arg(&src).arg(&dst).arg(&inv);
        // SAFETY: the arguments match the kernel; both buffers hold `total`
        // elements.
        unsafe { lb.launch(self.grid(total)) }.map_err(|e| cuda_err("launching nchw_swap", e))?;
        Ok(())
    }

    /// Launch one of the phase kernels `(ConvGeom, ConvPhase, const float*,
    /// float*)` of the input gradient.
    fn launch_phase(
        &self,
        name: &str,
        total: usize,
        g: ConvGeom,
        p: ConvPhase,
        src: u64,
        dst: u64,
    ) -> Result<()> {
        if total == 0 {
            return Ok(());
        }
        let mut lb = self.stream.launch_builder(&self.funcs[name]);
        lb.arg(&g).arg(&p).arg(&src).arg(&dst);
        // SAFETY: the arguments match the kernel; callers size `dst` and
        // `src` for the geometry and phase (`src` may be null for
        // phase_to_nchw, which then writes zeros).
        unsafe { lb.launch(self.grid(total)) }
            .map_err(|e| cuda_err(&format!("launching {name}"), e))?;
        Ok(())
    }

    /// Input gradient on device buffers, one GEMM per phase as on the CPU
    /// (`crate::conv`, "Lowering to GEMM"); bit-exact with
    /// [`crate::conv::conv2d_grad_input`] for AMSim multipliers.
    pub fn conv2d_grad_input_dev(
        &self,
        mult: &Multiplier,
        s: &Conv2dShape,
        dy: &DeviceBuffer,
        w: &DeviceBuffer,
        dx: &mut DeviceBuffer,
    ) -> Result<()> {
        let _timer = crate::timing::ProductTimer::start();
        s.check_buffers(
            dx.len().min(s.x_len()),
            w.len().min(s.w_len()),
            dy.len().min(s.y_len()),
        )?;
        let g = ConvGeom::of(s)?;
        let (cpg, opg) = (s.in_channels / s.groups, s.out_channels / s.groups);
        if s.x_len() == 0 {
            return Ok(());
        }
        let hps = AxisPhase::all(s.in_h, s.kernel_h, s.stride.0, s.padding.0, s.dilation.0);
        let wps = AxisPhase::all(s.in_w, s.kernel_w, s.stride.1, s.padding.1, s.dilation.1);
        let phases: Vec<(&AxisPhase, &AxisPhase)> = hps
            .iter()
            .flat_map(|hp| wps.iter().map(move |wp| (hp, wp)))
            .filter(|(hp, wp)| hp.count * wp.count > 0)
            .collect();
        // Buffers for the largest phase, reused by the others.
        let (mut col_len, mut wt_len, mut out_len) = (0, 0, 0);
        for (hp, wp) in &phases {
            let (rows, kp) = (s.batch * hp.count * wp.count, opg * hp.taps * wp.taps);
            col_len = col_len.max(rows * s.groups * kp);
            wt_len = wt_len.max(s.groups * kp * cpg);
            out_len = out_len.max(rows * s.in_channels);
        }
        let mut col = self.alloc(col_len)?;
        let mut wt = self.alloc(wt_len)?;
        let mut out = self.alloc(out_len)?;
        let (dyp, w_ptr) = (self.ptr(dy), self.ptr(w));
        let (colp, wtp, outp) = (
            self.ptr_mut(&mut col),
            self.ptr_mut(&mut wt),
            self.ptr_mut(&mut out),
        );
        let dxp = self.ptr_mut(dx);
        for (hp, wp) in phases {
            let p = ConvPhase::of(hp, wp)?;
            let rows = s.batch * hp.count * wp.count;
            let kp = opg * hp.taps * wp.taps;
            if kp == 0 {
                // No taps reach this phase: its elements are empty sums.
                self.launch_phase("phase_to_nchw", rows * s.in_channels, g, p, 0, dxp)?;
                continue;
            }
            self.launch_phase("dy2col_phase_t", rows * s.groups * kp, g, p, dyp, colp)?;
            self.launch_phase("weight_phase_t", s.groups * kp * cpg, g, p, w_ptr, wtp)?;
            // Per group: A = columns (rows x kp, column-major), B = the
            // phase's weights (kp x cpg, row-major), C = out as [c][rows].
            let av = self.view(
                "columns",
                colp,
                col.len(),
                0,
                s.groups,
                rows,
                kp,
                1,
                rows,
                kp * rows,
            )?;
            let bv = self.view(
                "weights",
                wtp,
                wt.len(),
                0,
                s.groups,
                kp,
                cpg,
                cpg,
                1,
                kp * cpg,
            )?;
            let cv = self.view(
                "output",
                outp,
                out.len(),
                0,
                s.groups,
                rows,
                cpg,
                1,
                rows,
                cpg * rows,
            )?;
            self.launch_gemm(mult, s.groups, rows, cpg, kp, av, bv, cv, false)?;
            self.launch_phase("phase_to_nchw", rows * s.in_channels, g, p, outp, dxp)?;
        }
        Ok(())
    }

    /// Weight gradient on device buffers; bit-exact with
    /// [`crate::conv::conv2d_grad_weight`] for AMSim multipliers.
    pub fn conv2d_grad_weight_dev(
        &self,
        mult: &Multiplier,
        s: &Conv2dShape,
        x: &DeviceBuffer,
        dy: &DeviceBuffer,
        dw: &mut DeviceBuffer,
    ) -> Result<()> {
        let _timer = crate::timing::ProductTimer::start();
        s.check_buffers(
            x.len().min(s.x_len()),
            dw.len().min(s.w_len()),
            dy.len().min(s.y_len()),
        )?;
        let g = ConvGeom::of(s)?;
        let opg = s.out_channels / s.groups;
        let kc = (s.in_channels / s.groups) * s.kernel_h * s.kernel_w;
        let spatial = s.out_h() * s.out_w();
        let rows = s.batch * spatial;
        if s.w_len() == 0 {
            return Ok(());
        }
        let dwp = self.ptr_mut(dw);
        let cv = self.view(
            "weight gradient",
            dwp,
            dw.len(),
            0,
            s.groups,
            kc,
            opg,
            1,
            kc,
            opg * kc,
        )?;
        if rows == 0 {
            let z = DevMat {
                ptr: 0,
                rows: 0,
                cols: 0,
                rs: 0,
                cs: 0,
                bs: 0,
            };
            return self.launch_gemm(mult, s.groups, kc, opg, 0, z, z, cv, false);
        }
        let mut col = self.alloc(rows * s.groups * kc)?;
        let mut dyt = self.alloc(s.y_len())?;
        let (xp, dyp) = (self.ptr(x), self.ptr(dy));
        let (colp, dytp) = (self.ptr_mut(&mut col), self.ptr_mut(&mut dyt));
        self.launch_lowering("im2col_t", rows * s.groups * kc, g, xp, colp)?;
        self.nchw_swap(s.batch, s.out_channels, spatial, dyp, dytp, true)?;
        // Per group: A = colᵀ (kc x rows), B = dYᵀ (rows x opg), C = dwᵀ.
        let av = self.view(
            "columns",
            colp,
            col.len(),
            0,
            s.groups,
            kc,
            rows,
            rows,
            1,
            kc * rows,
        )?;
        let bv = self.view(
            "output gradient",
            dytp,
            dyt.len(),
            0,
            s.groups,
            rows,
            opg,
            1,
            rows,
            opg * rows,
        )?;
        self.launch_gemm(mult, s.groups, kc, opg, rows, av, bv, cv, false)
    }

    /// Host-memory forward convolution on the GPU.
    pub fn conv2d_forward(
        &self,
        mult: &Multiplier,
        s: &Conv2dShape,
        x: &[f32],
        w: &[f32],
        y: &mut [f32],
    ) -> Result<()> {
        s.check_buffers(x.len(), w.len(), y.len())?;
        let (dx, dw) = (self.upload(x)?, self.upload(w)?);
        let mut dy = self.alloc(y.len())?;
        self.conv2d_forward_dev(mult, s, &dx, &dw, &mut dy)?;
        self.download(&dy, y)
    }

    /// Host-memory input gradient on the GPU.
    pub fn conv2d_grad_input(
        &self,
        mult: &Multiplier,
        s: &Conv2dShape,
        dy: &[f32],
        w: &[f32],
        dx: &mut [f32],
    ) -> Result<()> {
        s.check_buffers(dx.len(), w.len(), dy.len())?;
        let (ddy, dw) = (self.upload(dy)?, self.upload(w)?);
        let mut ddx = self.alloc(dx.len())?;
        self.conv2d_grad_input_dev(mult, s, &ddy, &dw, &mut ddx)?;
        self.download(&ddx, dx)
    }

    /// Host-memory weight gradient on the GPU.
    pub fn conv2d_grad_weight(
        &self,
        mult: &Multiplier,
        s: &Conv2dShape,
        x: &[f32],
        dy: &[f32],
        dw: &mut [f32],
    ) -> Result<()> {
        s.check_buffers(x.len(), dw.len(), dy.len())?;
        let (dx, ddy) = (self.upload(x)?, self.upload(dy)?);
        let mut ddw = self.alloc(dw.len())?;
        self.conv2d_grad_weight_dev(mult, s, &dx, &ddy, &mut ddw)?;
        self.download(&ddw, dw)
    }

    /// Row-major `C[m x n] = A[m x k] · B[k x n] (+ C)` on device buffers
    /// (`bt`: B is stored as its transpose, `[n x k]` row-major; `at`: A is
    /// stored as `[k x m]`). For dense layers.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_dev(
        &self,
        mult: &Multiplier,
        m: usize,
        n: usize,
        k: usize,
        a: &DeviceBuffer,
        at: bool,
        b: &DeviceBuffer,
        bt: bool,
        c: &mut DeviceBuffer,
        accumulate: bool,
    ) -> Result<()> {
        let _timer = crate::timing::ProductTimer::start();
        let (ars, acs) = if at { (1, m) } else { (k, 1) };
        let (brs, bcs) = if bt { (1, k) } else { (n, 1) };
        let av = self.view("A", self.ptr(a), a.len(), 0, 1, m, k, ars, acs, 0)?;
        let bv = self.view("B", self.ptr(b), b.len(), 0, 1, k, n, brs, bcs, 0)?;
        let cp = self.ptr_mut(c);
        let cv = self.view("C", cp, c.len(), 0, 1, m, n, n, 1, 0)?;
        self.launch_gemm(mult, 1, m, n, k, av, bv, cv, accumulate)
    }
}

impl Drop for CudaEngine {
    fn drop(&mut self) {
        // SAFETY: the handle was created in `new` and is not used after.
        unsafe {
            let _ = blas_sys::cublasDestroy_v2(self.blas);
        }
    }
}

fn check_blas(st: blas_sys::cublasStatus_t, what: &str) -> Result<()> {
    if st == blas_sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else if st == blas_sys::cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED {
        Err(AmsimError::Cuda(format!("{what}: out of GPU memory")))
    } else {
        Err(AmsimError::Cuda(format!("{what} failed: {st:?}")))
    }
}

fn to_i32(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| AmsimError::shape(format!("dimension {v} too large for the GPU")))
}

/// Bytes of dynamic shared memory for a row-padded table of `bits`.
fn smem_table_bytes(bits: u32) -> usize {
    let n = 1usize << bits;
    n * (n + 1) * 4
}
