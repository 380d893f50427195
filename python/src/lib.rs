//! `approxtrain._native`: the Python extension module over the `amsim` engine
//! and the C models compiled by the `approxtrain` package.
//!
//! Arrays cross the boundary as NumPy arrays, become `ndarray` views (the
//! `numpy` crate; no copy) and go to `amsim::nd`, which maps their strides
//! onto the engine's views. The GIL is released while the engine runs. The
//! Python package (`pysrc/approxtrain`) re-exports these functions and adds
//! `approxtrain.torch` on top.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use amsim::nd::{self, ConvParams, Engine};
use amsim::spec::Resolver;
use amsim::{AmsimError, Lut, MultiplierPlan, MultiplierSpec, PlanSpec, Role};
use ndarray::Dimension;
use numpy::{
    PyArray, PyArray2, PyArray3, PyArray4, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// Specs resolved against the compiled models, each table built once per
/// process and shared (as the CLI's resolver does within a run).
static RESOLVER: LazyLock<Resolver<'static>> = LazyLock::new(|| {
    amsim::model::register_int_models(approxtrain::models::INT_MODELS);
    amsim::model::register_wide_int_models(approxtrain::models::WIDE_INT_MODELS);
    Resolver::new(approxtrain::models::MODELS)
});

/// The Python exception of an engine error: a missing file is
/// `FileNotFoundError`, another I/O failure `OSError`, everything else (a
/// bad spec, shape, model name or LUT file) `ValueError`. The message is the
/// engine's one line.
fn py_err(e: AmsimError) -> PyErr {
    match &e {
        AmsimError::Io { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(e.to_string())
        }
        AmsimError::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// Run `f` on a rayon pool of `threads` workers (`None`: the global pool,
/// one worker per core), as the CLI's `--threads` does. Pools are kept per
/// size for the life of the process.
fn with_threads<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> PyResult<R> {
    static POOLS: LazyLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let Some(n) = threads else {
        return Ok(f());
    };
    experiments::options::check_threads(n)
        .map_err(|e| PyValueError::new_err(e.to_string().replace("--threads ", "threads=")))?;
    let pool = {
        let mut pools = POOLS.lock().expect("thread pool cache lock");
        match pools.get(&n) {
            Some(p) => p.clone(),
            None => {
                let p = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map(Arc::new)
                    .map_err(|e| PyOSError::new_err(format!("cannot start {n} threads: {e}")))?;
                pools.insert(n, p.clone());
                p
            }
        }
    };
    Ok(pool.install(f))
}

/// A read-only `ndim`-dimensional float32 NumPy array, or a one-line
/// `TypeError` (not an array, another dtype) or `ValueError` (other
/// dimensions, an array being written elsewhere) naming the argument.
fn f32_array<'py, D: Dimension>(
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArray<'py, f32, D>> {
    let Ok(untyped) = obj.cast::<PyUntypedArray>() else {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected a numpy.ndarray of float32, got {}",
            obj.get_type().name()?
        )));
    };
    let dtype = untyped.dtype();
    if !dtype.is_equiv_to(&numpy::dtype::<f32>(obj.py())) {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected float32, got {dtype}; convert with {name}.astype(numpy.float32)"
        )));
    }
    let want = D::NDIM.unwrap_or(untyped.ndim());
    if untyped.ndim() != want {
        return Err(PyValueError::new_err(format!(
            "{name}: expected a {want}-D array, got shape {:?}",
            untyped.shape()
        )));
    }
    let typed = obj.cast::<PyArray<f32, D>>()?;
    typed.try_readonly().map_err(|e| {
        PyValueError::new_err(format!(
            "{name}: cannot read the array while it is being written: {e}"
        ))
    })
}

/// A multiplier argument: a `Multiplier` or a spec string such as `"mbm:7"`.
fn multiplier_arg(obj: &Bound<'_, PyAny>) -> PyResult<amsim::Multiplier> {
    if let Ok(m) = obj.cast::<Multiplier>() {
        return Ok(m.get().inner.clone());
    }
    if let Ok(s) = obj.extract::<String>() {
        let spec: MultiplierSpec = s.parse().map_err(py_err)?;
        return RESOLVER.resolve(&spec).map_err(py_err);
    }
    if let Ok(l) = obj.cast::<PyLut>() {
        return Ok(amsim::Multiplier::Lut(l.get().inner.clone()));
    }
    Err(PyTypeError::new_err(format!(
        "mult: expected a Multiplier, a Lut or a spec string such as \"mbm:7\", got {}",
        obj.get_type().name()?
    )))
}

fn engine(reference: bool) -> Engine {
    if reference {
        Engine::Reference
    } else {
        Engine::Fast
    }
}

/// A multiplier: what every product of a matrix product or convolution goes
/// through. `Multiplier("mbm:7")`, `Multiplier("fp32")`,
/// `Multiplier("lut:MBM_7.bin")`, `Multiplier(Lut.build("mbm", 7))`.
#[pyclass(module = "approxtrain", frozen)]
struct Multiplier {
    inner: amsim::Multiplier,
}

#[pymethods]
impl Multiplier {
    #[new]
    fn new(spec: &Bound<'_, PyAny>) -> PyResult<Self> {
        Ok(Multiplier {
            inner: multiplier_arg(spec)?,
        })
    }

    /// The canonical spec (`fp32`, `bf16`, `mbm:7`, `direct:mbm:23`).
    #[getter]
    fn spec(&self) -> String {
        self.inner.label()
    }

    /// The product of two floats under this multiplier (the scalar
    /// reference).
    fn mul(&self, a: f32, b: f32) -> f32 {
        self.inner.mul(a, b)
    }

    fn __repr__(&self) -> String {
        format!("Multiplier('{}')", self.inner.label())
    }

    fn __str__(&self) -> String {
        self.inner.label()
    }
}

/// A multiplier plan: one multiplier for each product of a layer, as the
/// CLI's `--multiplier` takes it: `Plan("mbm:7")` (every role) or
/// `Plan("fwd=mbm:7,dx=fp32,dw=mbm:7")`.
#[pyclass(module = "approxtrain", frozen)]
struct Plan {
    spec: PlanSpec,
    inner: MultiplierPlan,
}

impl Plan {
    fn of(spec: PlanSpec) -> PyResult<Self> {
        let inner = RESOLVER.resolve_plan(&spec).map_err(py_err)?;
        Ok(Plan { spec, inner })
    }

    fn role(&self, role: Role) -> Multiplier {
        Multiplier {
            inner: self.inner.get(role).clone(),
        }
    }
}

#[pymethods]
impl Plan {
    #[new]
    fn new(spec: &str) -> PyResult<Self> {
        Plan::of(spec.parse().map_err(py_err)?)
    }

    /// The forward product's multiplier.
    #[getter]
    fn fwd(&self) -> Multiplier {
        self.role(Role::Forward)
    }
    /// The input gradient's multiplier.
    #[getter]
    fn dx(&self) -> Multiplier {
        self.role(Role::GradInput)
    }
    /// The weight gradient's multiplier.
    #[getter]
    fn dw(&self) -> Multiplier {
        self.role(Role::GradWeight)
    }
    /// Attention's Q·Kᵀ multiplier.
    #[getter]
    fn attn_qk(&self) -> Multiplier {
        self.role(Role::AttnQk)
    }
    /// Attention's A·V multiplier.
    #[getter]
    fn attn_av(&self) -> Multiplier {
        self.role(Role::AttnAv)
    }

    fn __repr__(&self) -> String {
        format!("Plan('{}')", self.spec)
    }

    fn __str__(&self) -> String {
        self.spec.to_string()
    }
}

/// Read a plan file (the TOML of the CLI's `--plan`) on top of `base`:
/// returns `(default_plan, {layer_name: plan})`. Every model the file names
/// is checked; errors name the file and key.
#[pyfunction]
#[pyo3(signature = (path, base = "fp32"))]
fn load_plan_file(py: Python<'_>, path: PathBuf, base: &str) -> PyResult<(Plan, Py<PyDict>)> {
    let base: PlanSpec = base.parse().map_err(py_err)?;
    let file = experiments::PlanFile::read(&path).map_err(|e| match e {
        experiments::ExperimentError::Io { .. } => PyFileNotFoundError::new_err(e.to_string()),
        e => PyValueError::new_err(e.to_string()),
    })?;
    file.check_models(approxtrain::models::MODELS)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let resolved = file.resolve(&base);
    let layers = PyDict::new(py);
    for (name, spec) in resolved.layers {
        layers.set_item(name, Plan::of(spec)?)?;
    }
    Ok((Plan::of(resolved.default)?, layers.unbind()))
}

/// A multiplier's lookup table: `Lut.build("mbm", 7)`, `Lut.load(path)`
/// (native `.lut` or ApproxTrain `NAME_m.bin`).
#[pyclass(name = "Lut", module = "approxtrain", frozen)]
struct PyLut {
    inner: Arc<Lut>,
}

#[pymethods]
impl PyLut {
    /// Tabulate a compiled model at `bits` mantissa bits.
    #[staticmethod]
    fn build(model: &str, bits: u32) -> PyResult<Self> {
        let spec = MultiplierSpec::Model {
            name: model.to_string(),
            bits,
        };
        match RESOLVER.resolve(&spec).map_err(py_err)? {
            amsim::Multiplier::Lut(inner) => Ok(PyLut { inner }),
            other => Err(PyValueError::new_err(format!(
                "{model}:{bits} resolved to {other}, not a table"
            ))),
        }
    }

    /// Read a table file: native (`approxtrain lut build`) or ApproxTrain
    /// `.bin` (`NAME_m.bin`).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        Ok(PyLut {
            inner: Arc::new(amsim::lut_file::read(&path).map_err(py_err)?),
        })
    }

    /// Write the table: `format="native"` (default) or `"approxtrain"`
    /// (ApproxTrain's `.bin`, widths up to 7).
    #[pyo3(signature = (path, format = "native"))]
    fn save(&self, path: PathBuf, format: &str) -> PyResult<()> {
        match format {
            "native" => amsim::lut_file::write_native(&self.inner, &path),
            "approxtrain" => amsim::lut_file::write_approxtrain(&self.inner, &path),
            other => {
                return Err(PyValueError::new_err(format!(
                    "format '{other}': expected \"native\" or \"approxtrain\""
                )))
            }
        }
        .map_err(py_err)
    }

    /// Mantissa bits per operand.
    #[getter]
    fn bits(&self) -> u32 {
        self.inner.bits()
    }

    /// The model's name.
    #[getter]
    fn model(&self) -> String {
        self.inner.model_name().to_string()
    }

    /// The table as a `(2^bits, 2^bits)` float32 array, `L[i][j]`.
    fn table<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let n = 1usize << self.inner.bits();
        let arr = ndarray::Array2::from_shape_vec((n, n), self.inner.table().to_vec())
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyArray2::from_owned_array(py, arr))
    }

    fn __repr__(&self) -> String {
        format!(
            "Lut('{}', bits={})",
            self.inner.model_name(),
            self.inner.bits()
        )
    }
}

/// The compiled models: a list of dicts with `name`, `description`,
/// `min_bits`, `max_bits` and the declared `area_um2`, `power_mw`,
/// `delay_ns` (0 where not declared).
#[pyfunction]
fn models(py: Python<'_>) -> PyResult<Vec<Py<PyDict>>> {
    approxtrain::models::MODELS
        .iter()
        .map(|m| {
            let d = PyDict::new(py);
            d.set_item("name", m.name)?;
            d.set_item("description", m.description)?;
            d.set_item("min_bits", m.min_bits)?;
            d.set_item("max_bits", m.max_bits)?;
            d.set_item("area_um2", m.area_um2)?;
            d.set_item("power_mw", m.power_mw)?;
            d.set_item("delay_ns", m.delay_ns)?;
            Ok(d.unbind())
        })
        .collect()
}

/// Error metrics of a model at `bits` (exhaustive up to the table limit,
/// else `samples` pairs drawn with `seed`), or of a `Lut`: a dict with the
/// fields of `approxtrain characterize`.
#[pyfunction]
#[pyo3(signature = (model, bits = None, samples = 1_000_000, seed = 0))]
fn characterize(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    bits: Option<u32>,
    samples: u64,
    seed: u64,
) -> PyResult<Py<PyDict>> {
    let c = if let Ok(lut) = model.cast::<PyLut>() {
        let lut = lut.get().inner.clone();
        py.detach(|| amsim::metrics::characterize_lut(&lut))
    } else {
        let name: String = model.extract().map_err(|_| {
            PyTypeError::new_err("model: expected a model name such as \"mbm\" or a Lut")
        })?;
        let bits = bits.ok_or_else(|| {
            PyValueError::new_err(format!("characterize('{name}'): give bits=, e.g. bits=7"))
        })?;
        let info = approxtrain::models::find(&name).map_err(py_err)?;
        py.detach(|| amsim::metrics::characterize_model(info.name, info.func, bits, samples, seed))
            .map_err(py_err)?
    };
    let d = PyDict::new(py);
    d.set_item("model", &c.model)?;
    d.set_item("bits", c.bits)?;
    d.set_item("pairs", c.pairs)?;
    d.set_item("exhaustive", c.exhaustive)?;
    d.set_item("error_rate", c.error_rate)?;
    d.set_item("mean_error", c.mean_error)?;
    d.set_item("mean_abs_error", c.mean_abs_error)?;
    d.set_item("mean_relative_error", c.mean_relative_error)?;
    d.set_item("mred", c.mred)?;
    d.set_item("max_relative_error", c.max_relative_error)?;
    d.set_item("max_relative_error_at", c.max_relative_error_at)?;
    d.set_item("rms_relative_error", c.rms_relative_error)?;
    d.set_item("std_relative_error", c.std_relative_error)?;
    d.set_item("within_one_ulp", c.within_one_ulp)?;
    Ok(d.unbind())
}

/// `a @ b` with every product through `mult`: `a` `(m, k)`, `b` `(k, n)`,
/// float32, C- or F-ordered (a transpose is free); returns `(m, n)`.
#[pyfunction]
#[pyo3(signature = (a, b, mult, *, threads = None, reference = false))]
fn matmul<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    mult: &Bound<'py, PyAny>,
    threads: Option<usize>,
    reference: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let mult = multiplier_arg(mult)?;
    let (a, b) = (
        f32_array::<ndarray::Ix2>("a", a)?,
        f32_array::<ndarray::Ix2>("b", b)?,
    );
    let (av, bv) = (a.as_array(), b.as_array());
    let out = PyArray2::<f32>::zeros(py, [av.nrows(), bv.ncols()], false);
    {
        let mut c = out.readwrite();
        let cv = c.as_array_mut();
        py.detach(|| {
            with_threads(threads, || {
                nd::gemm_nd(engine(reference), &mult, av, bv, cv, false)
            })
        })?
        .map_err(py_err)?;
    }
    Ok(out)
}

/// Batched `a[i] @ b[i]`: `a` `(batch, m, k)`, `b` `(batch, k, n)`, float32
/// with any axis order; returns `(batch, m, n)`.
#[pyfunction]
#[pyo3(signature = (a, b, mult, *, threads = None, reference = false))]
fn bmm<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    mult: &Bound<'py, PyAny>,
    threads: Option<usize>,
    reference: bool,
) -> PyResult<Bound<'py, PyArray3<f32>>> {
    let mult = multiplier_arg(mult)?;
    let (a, b) = (
        f32_array::<ndarray::Ix3>("a", a)?,
        f32_array::<ndarray::Ix3>("b", b)?,
    );
    let (av, bv) = (a.as_array(), b.as_array());
    let (batch, m, _) = av.dim();
    let out = PyArray3::<f32>::zeros(py, [batch, m, bv.dim().2], false);
    {
        let mut c = out.readwrite();
        let cv = c.as_array_mut();
        py.detach(|| {
            with_threads(threads, || {
                nd::gemm_batched_nd(engine(reference), &mult, av, bv, cv, false)
            })
        })?
        .map_err(py_err)?;
    }
    Ok(out)
}

/// An `int` or a pair `(vertical, horizontal)`, as PyTorch takes stride,
/// padding and dilation.
#[derive(FromPyObject)]
enum Pair {
    One(usize),
    Two((usize, usize)),
}

impl Pair {
    fn get(&self) -> (usize, usize) {
        match *self {
            Pair::One(v) => (v, v),
            Pair::Two(p) => p,
        }
    }
}

fn conv_params(stride: Pair, padding: Pair, dilation: Pair, groups: usize) -> ConvParams {
    ConvParams {
        stride: stride.get(),
        padding: padding.get(),
        dilation: dilation.get(),
        groups,
    }
}

fn shape4(name: &str, t: &Bound<'_, PyTuple>) -> PyResult<[usize; 4]> {
    let v: Vec<usize> = t.extract()?;
    v.try_into().map_err(|v: Vec<usize>| {
        PyValueError::new_err(format!(
            "{name}: expected 4 sizes (N, C, H, W), got {}",
            v.len()
        ))
    })
}

/// One of the `amsim::nd` convolution products.
type NdConv = fn(
    Engine,
    &amsim::Multiplier,
    &ConvParams,
    ndarray::ArrayView4<f32>,
    ndarray::ArrayView4<f32>,
    ndarray::ArrayViewMut4<f32>,
) -> amsim::Result<()>;

/// A convolution product of two named 4-D operands, run into a new array.
struct ConvProduct<'a, 'py> {
    run: NdConv,
    operands: [(&'static str, &'a Bound<'py, PyAny>); 2],
    threads: Option<usize>,
    reference: bool,
}

impl<'py> ConvProduct<'_, 'py> {
    /// Check the operands, allocate the output (its shape from
    /// `out_shape(a.shape, b.shape)`) and run the product without the GIL.
    fn run(
        self,
        py: Python<'py>,
        mult: &Bound<'py, PyAny>,
        p: ConvParams,
        out_shape: impl FnOnce(&[usize], &[usize]) -> PyResult<[usize; 4]>,
    ) -> PyResult<Bound<'py, PyArray4<f32>>> {
        let mult = multiplier_arg(mult)?;
        let [(a_name, a), (b_name, b)] = self.operands;
        let (a, b) = (
            f32_array::<ndarray::Ix4>(a_name, a)?,
            f32_array::<ndarray::Ix4>(b_name, b)?,
        );
        let (av, bv) = (a.as_array(), b.as_array());
        let out = PyArray4::<f32>::zeros(py, out_shape(av.shape(), bv.shape())?, false);
        {
            let mut o = out.readwrite();
            let ov = o.as_array_mut();
            let (run, engine) = (self.run, engine(self.reference));
            py.detach(|| with_threads(self.threads, || run(engine, &mult, &p, av, bv, ov)))?
                .map_err(py_err)?;
        }
        Ok(out)
    }
}

/// Forward 2-D convolution (cross-correlation): `x` `(N, C_in, H, W)`, `w`
/// `(C_out, C_in / groups, KH, KW)`, C-ordered float32; returns
/// `(N, C_out, OH, OW)`. No bias.
#[pyfunction]
#[pyo3(signature = (x, w, mult, *, stride = Pair::One(1), padding = Pair::One(0), dilation = Pair::One(1), groups = 1, threads = None, reference = false))]
#[allow(clippy::too_many_arguments)]
fn conv2d<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    mult: &Bound<'py, PyAny>,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: usize,
    threads: Option<usize>,
    reference: bool,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let p = conv_params(stride, padding, dilation, groups);
    let product = ConvProduct {
        run: nd::conv2d_forward_nd,
        operands: [("x", x), ("w", w)],
        threads,
        reference,
    };
    product.run(py, mult, p, |x, w| {
        let s = p.shape(nd_dims(x), nd_dims(w)).map_err(py_err)?;
        Ok([s.batch, s.out_channels, s.out_h(), s.out_w()])
    })
}

fn nd_dims(s: &[usize]) -> [usize; 4] {
    [s[0], s[1], s[2], s[3]]
}

/// Input gradient of [`conv2d`]: `dy` `(N, C_out, OH, OW)`, `w`
/// `(C_out, C_in / groups, KH, KW)`; `input_shape` is `x`'s
/// `(N, C_in, H, W)`. Products `mul(dy, w)`.
#[pyfunction]
#[pyo3(signature = (dy, w, mult, input_shape, *, stride = Pair::One(1), padding = Pair::One(0), dilation = Pair::One(1), groups = 1, threads = None, reference = false))]
#[allow(clippy::too_many_arguments)]
fn conv2d_grad_input<'py>(
    py: Python<'py>,
    dy: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    mult: &Bound<'py, PyAny>,
    input_shape: &Bound<'py, PyTuple>,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: usize,
    threads: Option<usize>,
    reference: bool,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let p = conv_params(stride, padding, dilation, groups);
    let shape = shape4("input_shape", input_shape)?;
    let product = ConvProduct {
        run: nd::conv2d_grad_input_nd,
        operands: [("dy", dy), ("w", w)],
        threads,
        reference,
    };
    product.run(py, mult, p, |_, _| Ok(shape))
}

/// Weight gradient of [`conv2d`]: `x` `(N, C_in, H, W)`, `dy`
/// `(N, C_out, OH, OW)`; `weight_shape` is `w`'s
/// `(C_out, C_in / groups, KH, KW)`. Products `mul(x, dy)`.
#[pyfunction]
#[pyo3(signature = (x, dy, mult, weight_shape, *, stride = Pair::One(1), padding = Pair::One(0), dilation = Pair::One(1), groups = 1, threads = None, reference = false))]
#[allow(clippy::too_many_arguments)]
fn conv2d_grad_weight<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    dy: &Bound<'py, PyAny>,
    mult: &Bound<'py, PyAny>,
    weight_shape: &Bound<'py, PyTuple>,
    stride: Pair,
    padding: Pair,
    dilation: Pair,
    groups: usize,
    threads: Option<usize>,
    reference: bool,
) -> PyResult<Bound<'py, PyArray4<f32>>> {
    let p = conv_params(stride, padding, dilation, groups);
    let shape = shape4("weight_shape", weight_shape)?;
    let product = ConvProduct {
        run: nd::conv2d_grad_weight_nd,
        operands: [("x", x), ("dy", dy)],
        threads,
        reference,
    };
    product.run(py, mult, p, |_, _| Ok(shape))
}

/// A parameter's name, values and gradient.
type NamedParam<'py> = (
    String,
    Bound<'py, PyArray<f32, ndarray::IxDyn>>,
    Bound<'py, PyArray<f32, ndarray::IxDyn>>,
);

/// The CLI's LeNet-5 (`approxtrain train --net lenet5`, initialised with
/// `seed`) on one batch: `x` `(N, 1, 28, 28)` forward with `plan`, then
/// `dlogits` `(N, 10)` backward. Returns `(logits, params)` with `params` a
/// list of `(name, value, grad)` in the network's order and layout (dense
/// weights `[IN, OUT]`, convolution weights `[OUT, IN, KH, KW]`): what a
/// model written in PyTorch is checked against.
#[pyfunction]
fn lenet5_reference<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    dlogits: &Bound<'py, PyAny>,
    plan: &Bound<'py, PyAny>,
    seed: u64,
) -> PyResult<(Bound<'py, PyArray2<f32>>, Vec<NamedParam<'py>>)> {
    let plan = match plan.cast::<Plan>() {
        Ok(p) => p.get().inner.clone(),
        Err(_) => Plan::new(&plan.extract::<String>()?)?.inner,
    };
    let x = f32_array::<ndarray::Ix4>("x", x)?;
    let dl = f32_array::<ndarray::Ix2>("dlogits", dlogits)?;
    let to_tensor = |name: &str, a: ndarray::ArrayViewD<f32>| {
        nets::Tensor::from_vec(a.shape(), a.iter().copied().collect())
            .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
    };
    let xt = to_tensor("x", x.as_array().into_dyn())?;
    let dlt = to_tensor("dlogits", dl.as_array().into_dyn())?;
    let (logits, params) = py
        .detach(|| -> nets::Result<_> {
            let mut net = nets::Network::lenet5(plan, seed);
            let logits = net.forward(&xt, true)?;
            net.backward(&dlt)?;
            let params: Vec<_> = net
                .params()
                .into_iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        p.shape.clone(),
                        p.value.clone(),
                        p.grad.clone(),
                    )
                })
                .collect();
            Ok((logits, params))
        })
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let array = |shape: &[usize], v: Vec<f32>| {
        ndarray::ArrayD::from_shape_vec(shape, v)
            .map(|a| PyArray::from_owned_array(py, a))
            .map_err(|e| PyValueError::new_err(e.to_string()))
    };
    let logits = ndarray::Array2::from_shape_vec((logits.shape[0], logits.shape[1]), logits.data)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let params = params
        .into_iter()
        .map(|(name, shape, value, grad)| Ok((name, array(&shape, value)?, array(&shape, grad)?)))
        .collect::<PyResult<Vec<_>>>()?;
    Ok((PyArray2::from_owned_array(py, logits), params))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Multiplier>()?;
    m.add_class::<Plan>()?;
    m.add_class::<PyLut>()?;
    m.add_function(wrap_pyfunction!(models, m)?)?;
    m.add_function(wrap_pyfunction!(characterize, m)?)?;
    m.add_function(wrap_pyfunction!(load_plan_file, m)?)?;
    m.add_function(wrap_pyfunction!(matmul, m)?)?;
    m.add_function(wrap_pyfunction!(bmm, m)?)?;
    m.add_function(wrap_pyfunction!(conv2d, m)?)?;
    m.add_function(wrap_pyfunction!(conv2d_grad_input, m)?)?;
    m.add_function(wrap_pyfunction!(conv2d_grad_weight, m)?)?;
    m.add_function(wrap_pyfunction!(lenet5_reference, m)?)?;
    Ok(())
}
