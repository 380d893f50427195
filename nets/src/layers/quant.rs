//! Integer quantization of dense and convolution layers whose forward
//! product has an integer multiplier: `int8:MODEL` (`amsim::Multiplier::Int8`,
//! 8-bit codes through a 256 x 256 table) or `int12:MODEL` / `int16:MODEL`
//! (`amsim::Multiplier::IntWide`, `n`-bit integers through a 4096 x 4096
//! table or the model itself, `amsim::int_wide`).
//!
//! The tables below are for 8 bits; an `n`-bit model takes the same scheme
//! with the `n`-bit ranges: symmetric integers `-(2^(n-1)-1)..=2^(n-1)-1`
//! (scale `max / (2^(n-1)-1)`), asymmetric ones over `2^n` levels (scale
//! `(hi - lo) / (2^n - 1)`, from `-2^(n-1)` for a signed model, from 0 for
//! an unsigned one). The 8-bit engine takes codes (the integers' bytes),
//! the wide one the integers, summed exactly in `i64`.
//!
//! A real value `v` of a tensor with scale `s` and zero point `z` becomes
//! the integer `q = clamp(round(v / s) + z, qmin, qmax)` (ties away from
//! zero), whose byte is the table's operand code, and stands for
//! `(q - z)·s` (its *fake-quantized* value):
//!
//! | tensor | scheme | `qmin..=qmax` | `z` | `s` |
//! |---|---|---|---|---|
//! | weights | symmetric, per output channel or per tensor | -127..=127 | 0 | `max|w| / 127` |
//! | activations (`sym`) | symmetric, per tensor | -127..=127 | 0 | `max(|lo|, |hi|) / 127` |
//! | activations (`asym`), signed model | asymmetric, per tensor | -128..=127 | `-128 - round(lo / s)` | `(hi - lo) / 255` |
//! | activations (`asym`), unsigned model | asymmetric, per tensor | 0..=255 | `-round(lo / s)` | `(hi - lo) / 255` |
//! | output gradients | symmetric, per tensor, from the batch | -127..=127 | 0 | `max|dy| / 127` |
//!
//! A signed model takes the two's-complement codes as they are. An
//! unsigned model takes an asymmetric activation's code (0..=255) as it is
//! and a symmetric tensor's integer in sign-magnitude: its magnitude goes
//! through the model and the signs are applied to the product
//! (`amsim::IntLut::with_signs`), as a signed multiplier built around an
//! unsigned array does. (Offsetting signed values by 128 instead would put
//! every small value at the middle of the unsigned range, where the
//! approximate models err by the most.) The activation
//! range `[lo, hi]` always contains 0 (so that 0, and the padding, is
//! exact). It comes from running statistics in training (the first batch's
//! min and max, then an exponential moving average with weight
//! [`RANGE_MOMENTUM`] on each new batch), from calibration
//! ([`QuantState::set_calibration`]: min and max over all calibration
//! batches, the way post-training quantization sets it), or, in an
//! evaluation before either, from the batch itself.
//!
//! Products: the table's products of the codes with the zero points taken
//! out (`amsim::int_gemm::offset_product`), summed exactly in `i32`, then
//! scaled by the two scales (per output channel for per-channel weights).
//!
//! Gradients, by the plan's `dx`/`dw` roles:
//! - a float multiplier (`fwd=int8:M,dx=fp32,dw=fp32`): straight-through
//!   estimation, the float products of the fake-quantized operands
//!   (`dx = dy·ŵᵀ`, `dW = x̂ᵀ·dy`), with `dx` zero where the input was
//!   clipped by its range;
//! - an `int8:` multiplier: `dy` quantized as in the table above and the
//!   product through that table (weights per tensor for `dx`, whose sum
//!   runs over output channels), the same clipping of `dx`.
//!
//! A plan with an `int8:` gradient needs an `int8:` forward (the gradient
//! products reuse its activation range); a float forward with one is an
//! error naming the layer.

use amsim::conv::{conv2d_grad_input, conv2d_grad_weight, Conv2dShape};
use amsim::gemm::{gemm, MatMut, MatRef};
use amsim::int_conv::{int_conv2d_forward, int_conv2d_grad_input, int_conv2d_grad_weight};
use amsim::int_gemm::{int_gemm_offset, transpose_codes, IntOperand};
use amsim::int_wide::{wide_gemm, WideOperand};
use amsim::int_wide_conv::{wide_conv2d_forward, wide_conv2d_grad_input, wide_conv2d_grad_weight};
use amsim::{IntLut, IntScheme, Multiplier, MultiplierPlan, WideIntMul};
use rayon::prelude::*;
use std::sync::Arc;

use crate::{NetError, Result};

/// Weight of a new batch's min and max in the running activation range.
pub const RANGE_MOMENTUM: f32 = 0.1;

/// The quantization of one tensor (or one output channel of weights).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    /// Real value of one step.
    pub scale: f32,
    /// Integer that stands for 0 (an operand value of the table).
    pub zero: i32,
    /// Smallest integer.
    pub qmin: i32,
    /// Largest integer.
    pub qmax: i32,
}

impl QuantParams {
    /// Symmetric 8-bit quantization of values up to `max_abs` in magnitude.
    pub fn symmetric(max_abs: f32) -> QuantParams {
        QuantParams::symmetric_bits(max_abs, 8)
    }

    /// Symmetric `bits`-bit quantization (integers `-(2^(bits-1)-1)..=
    /// 2^(bits-1)-1`) of values up to `max_abs` in magnitude.
    pub fn symmetric_bits(max_abs: f32, bits: u32) -> QuantParams {
        let qmax = (1 << (bits - 1)) - 1;
        QuantParams {
            scale: step(max_abs / qmax as f32),
            zero: 0,
            qmin: -qmax,
            qmax,
        }
    }

    /// Asymmetric 8-bit quantization of `[lo, hi]` (widened to contain 0)
    /// for a model with `signed` operands.
    pub fn asymmetric(lo: f32, hi: f32, signed: bool) -> QuantParams {
        QuantParams::asymmetric_bits(lo, hi, signed, 8)
    }

    /// Asymmetric `bits`-bit quantization of `[lo, hi]` (widened to contain
    /// 0) over `2^bits` levels, for a model with `signed` operands.
    pub fn asymmetric_bits(lo: f32, hi: f32, signed: bool, bits: u32) -> QuantParams {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let levels = (1i32 << bits) - 1;
        let scale = step((hi - lo) / levels as f32);
        let qmin = if signed { -(1 << (bits - 1)) } else { 0 };
        let zero = (qmin - (lo / scale).round() as i32).clamp(qmin, qmin + levels);
        QuantParams {
            scale,
            zero,
            qmin,
            qmax: qmin + levels,
        }
    }

    /// Whether the integers are two's complement codes (else unsigned).
    pub fn signed(&self) -> bool {
        self.qmin < 0
    }

    /// `codes` as an operand of an integer product.
    pub fn operand<'a>(&self, codes: &'a [u8]) -> IntOperand<'a> {
        IntOperand::new(codes, self.zero as u8, self.signed())
    }

    /// Integers `values` as an operand of a 12- or 16-bit product.
    pub fn wide_operand<'a>(&self, values: &'a [i32]) -> WideOperand<'a> {
        WideOperand::new(values, self.zero)
    }

    /// The integer of `v`.
    #[inline]
    pub fn quantize(&self, v: f32) -> i32 {
        round_steps(v / self.scale)
            .saturating_add(self.zero)
            .clamp(self.qmin, self.qmax)
    }

    /// The table code of `v` (the integer's byte).
    #[inline]
    pub fn code(&self, v: f32) -> u8 {
        self.quantize(v) as u8
    }

    /// The value `v` stands for after quantization.
    #[inline]
    pub fn fake(&self, v: f32) -> f32 {
        (self.quantize(v) - self.zero) as f32 * self.scale
    }

    /// Whether `v` lies inside the representable range (its gradient
    /// passes straight through).
    #[inline]
    pub fn inside(&self, v: f32) -> bool {
        let t = v / self.scale;
        let q = round_steps(t).saturating_add(self.zero);
        !t.is_nan() && q >= self.qmin && q <= self.qmax
    }
}

/// Steps beyond which every value lies outside any range of up to 16 bits:
/// a number of steps is clamped to it before rounding, which keeps the
/// rounding exact (an `f32` of magnitude up to 2^16 has its fraction to
/// 2^-7) and changes no clamped integer (zero points and ranges lie in
/// -32768..=65535, so `±65536 + zero` is outside every range).
const STEP_LIMIT: f32 = 65536.0;

/// `t` rounded to the nearest integer, ties away from zero, as
/// `f32::round` does (NaN gives 0, as `round(NaN) as i32`), for `|t| <=`
/// [`STEP_LIMIT`]; larger magnitudes give `±STEP_LIMIT`. Written with a
/// truncating conversion and the exact fraction `t - trunc(t)` because
/// `f32::round` is a libm call per element on the baseline x86-64 target,
/// while these operations vectorize.
#[inline]
fn round_steps(t: f32) -> i32 {
    let t = t.clamp(-STEP_LIMIT, STEP_LIMIT);
    let whole = t as i32;
    let frac = t - whole as f32;
    whole + (frac >= 0.5) as i32 - (frac <= -0.5) as i32
}

/// A usable step: a positive normal float (all-zero tensors get 1).
fn step(s: f32) -> f32 {
    if s.is_normal() && s > 0.0 {
        s
    } else {
        1.0
    }
}

/// Elements per parallel job of the elementwise loops: long enough that
/// the loop inside a job vectorizes and the job overhead vanishes.
const CHUNK: usize = 16384;

/// Lanes of the running extrema in [`max_abs`] and [`min_max`]: the
/// compiler keeps them in vector registers (a single running `max` is a
/// chain of dependent scalar operations).
const LANES: usize = 16;

/// Largest magnitude (NaN-free inputs assumed; NaN is skipped by `max`).
fn max_abs(v: &[f32]) -> f32 {
    v.par_chunks(CHUNK)
        .map(|chunk| {
            let mut m = [0.0f32; LANES];
            let (lanes, rest) = chunk.as_chunks::<LANES>();
            for x in lanes {
                for (m, x) in m.iter_mut().zip(x) {
                    *m = m.max(x.abs());
                }
            }
            rest.iter().chain(&m).fold(0.0f32, |a, x| a.max(x.abs()))
        })
        .reduce(|| 0.0, f32::max)
}

/// Smallest and largest value.
fn min_max(v: &[f32]) -> (f32, f32) {
    v.par_chunks(CHUNK)
        .map(|chunk| {
            let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
            let (lanes, rest) = chunk.as_chunks::<LANES>();
            for x in lanes {
                for ((lo, hi), &x) in lo.iter_mut().zip(&mut hi).zip(x) {
                    *lo = lo.min(x);
                    *hi = hi.max(x);
                }
            }
            let lo = rest.iter().chain(&lo).fold(f32::INFINITY, |a, &x| a.min(x));
            let hi = rest
                .iter()
                .chain(&hi)
                .fold(f32::NEG_INFINITY, |a, &x| a.max(x));
            (lo, hi)
        })
        .reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |a, b| (a.0.min(b.0), a.1.max(b.1)),
        )
}

/// `out[i] = f(v[i])`, in parallel jobs of [`CHUNK`] elements.
fn map_into<T: Sync, U: Send>(out: &mut [U], v: &[T], f: impl Fn(&T) -> U + Sync) {
    out.par_chunks_mut(CHUNK)
        .zip(v.par_chunks(CHUNK))
        .for_each(|(out, v)| {
            for (o, x) in out.iter_mut().zip(v) {
                *o = f(x);
            }
        });
}

/// Codes of `v` under `p`.
fn codes(v: &[f32], p: &QuantParams) -> Vec<u8> {
    let mut out = vec![0u8; v.len()];
    map_into(&mut out, v, |&x| p.code(x));
    out
}

/// Integers of `v` under `p` (the operands of a 12- or 16-bit product).
fn ints(v: &[f32], p: &QuantParams) -> Vec<i32> {
    let mut out = vec![0i32; v.len()];
    map_into(&mut out, v, |&x| p.quantize(x));
    out
}

/// Fake-quantized values of `v` under `p`.
fn fake(v: &[f32], p: &QuantParams) -> Vec<f32> {
    let mut out = vec![0.0f32; v.len()];
    map_into(&mut out, v, |&x| p.fake(x));
    out
}

/// Per-output-channel (or one, per tensor) symmetric quantization of
/// weights laid out `[C_out, rest]` (`per_row`) or `[rest, C_out]`
/// (`!per_row`, a dense layer's `W [IN, OUT]`).
#[derive(Debug, Clone)]
struct WeightQuant {
    params: Vec<QuantParams>,
    out: usize,
    rows_are_outputs: bool,
}

impl WeightQuant {
    fn new(w: &[f32], out: usize, rows_are_outputs: bool, per_channel: bool, bits: u32) -> Self {
        let params = if per_channel {
            (0..out)
                .map(|o| {
                    let m = if rows_are_outputs {
                        let len = w.len() / out;
                        max_abs(&w[o * len..][..len])
                    } else {
                        w.iter()
                            .skip(o)
                            .step_by(out)
                            .fold(0.0f32, |m, x| m.max(x.abs()))
                    };
                    QuantParams::symmetric_bits(m, bits)
                })
                .collect()
        } else {
            vec![QuantParams::symmetric_bits(max_abs(w), bits)]
        };
        WeightQuant {
            params,
            out,
            rows_are_outputs,
        }
    }

    /// The params of element `i`.
    #[inline]
    fn of(&self, i: usize, len: usize) -> &QuantParams {
        if self.params.len() == 1 {
            return &self.params[0];
        }
        let o = if self.rows_are_outputs {
            i / (len / self.out)
        } else {
            i % self.out
        };
        &self.params[o]
    }

    fn codes(&self, w: &[f32]) -> Vec<u8> {
        (0..w.len())
            .map(|i| self.of(i, w.len()).code(w[i]))
            .collect()
    }

    fn ints(&self, w: &[f32]) -> Vec<i32> {
        (0..w.len())
            .map(|i| self.of(i, w.len()).quantize(w[i]))
            .collect()
    }

    fn fake(&self, w: &[f32]) -> Vec<f32> {
        (0..w.len())
            .map(|i| self.of(i, w.len()).fake(w[i]))
            .collect()
    }

    /// The scale of output channel `o`.
    fn scale(&self, o: usize) -> f32 {
        self.params[if self.params.len() == 1 { 0 } else { o }].scale
    }
}

/// What a layer keeps for int8 quantization: the activation range and the
/// input quantization of the last training forward.
#[derive(Debug, Clone, Default)]
pub struct QuantState {
    /// The activation range `[lo, hi]`, once observed.
    range: Option<(f32, f32)>,
    /// Widen the range over every evaluation batch (calibration).
    calibrating: bool,
    /// Backward cache: the input quantization of the last training forward.
    cache_x: Option<QuantParams>,
    /// Backward cache: the input's codes under `cache_x` (the weight
    /// gradient reuses them when it quantizes the input the same way).
    cache_x_codes: Vec<u8>,
    /// Tables for operand codings: the model's table (kept, so that its
    /// address is never reused while it is a key), the two codings, the
    /// table for them.
    tables: Vec<(Arc<IntLut>, bool, bool, Arc<IntLut>)>,
}

/// The integer multiplier of an integer spec.
#[derive(Clone, Copy)]
enum IntMul<'a> {
    /// `int8:`: a 256 x 256 table on 8-bit codes.
    Lut(&'a Arc<IntLut>),
    /// `int12:`, `int16:`: `n`-bit integers.
    Wide(&'a Arc<WideIntMul>),
}

impl IntMul<'_> {
    /// Operand width.
    fn bits(&self) -> u32 {
        match self {
            IntMul::Lut(_) => 8,
            IntMul::Wide(m) => m.bits(),
        }
    }

    /// Whether the model's operands are signed.
    fn signed(&self) -> bool {
        match self {
            IntMul::Lut(l) => l.signed(),
            IntMul::Wide(m) => m.signed(),
        }
    }
}

/// The integer multiplier and scheme of `m`, if it is an integer one.
fn int_mul(m: &Multiplier) -> Option<(IntMul<'_>, IntScheme)> {
    match m {
        Multiplier::Int8 { lut, scheme } => Some((IntMul::Lut(lut), *scheme)),
        Multiplier::IntWide { mul, scheme } => Some((IntMul::Wide(mul), *scheme)),
        _ => None,
    }
}

/// The int8 table and scheme of `m`, if it is an `int8:` multiplier.
fn int8(m: &Multiplier) -> Option<(&Arc<IntLut>, IntScheme)> {
    match m {
        Multiplier::Int8 { lut, scheme } => Some((lut, *scheme)),
        _ => None,
    }
}

/// The 12- or 16-bit model of `m`, if it is an `int12:`/`int16:` multiplier.
fn int_wide(m: &Multiplier) -> Option<&Arc<WideIntMul>> {
    match m {
        Multiplier::IntWide { mul, .. } => Some(mul),
        _ => None,
    }
}

/// Whether `plan` quantizes the layer (an integer forward); an error naming
/// `layer` for integer gradients under a float forward.
pub fn quantized(layer: &str, plan: &MultiplierPlan) -> Result<bool> {
    if int_mul(&plan.forward).is_some() {
        return Ok(true);
    }
    for m in [&plan.grad_input, &plan.grad_weight] {
        if int_mul(m).is_some() {
            return Err(NetError::Config(format!(
                "{layer}: {} gradients need an integer forward product (e.g. fwd={m},dx={m},dw={m}); the forward is {}",
                m, plan.forward
            )));
        }
    }
    Ok(false)
}

impl QuantState {
    /// Start (`true`) or end calibration: while on, evaluation forwards
    /// set the activation range to the min and max over all their batches.
    pub fn set_calibration(&mut self, on: bool) {
        if on {
            self.range = None;
        }
        self.calibrating = on;
    }

    /// `lut` for operands quantized as `a` and `b` (built once per layer).
    pub(crate) fn table(
        &mut self,
        lut: &Arc<IntLut>,
        a: &QuantParams,
        b: &QuantParams,
    ) -> Arc<IntLut> {
        let (sa, sb) = (a.signed(), b.signed());
        let found = self
            .tables
            .iter()
            .find(|(l, x, y, _)| Arc::ptr_eq(l, lut) && (*x, *y) == (sa, sb));
        if let Some((.., t)) = found {
            return t.clone();
        }
        let t = Arc::new(lut.with_signs(sa, sb));
        self.tables.push((lut.clone(), sa, sb, t.clone()));
        t
    }

    /// How many operand-coding tables this state has built.
    #[cfg(test)]
    pub(crate) fn tables_built(&self) -> usize {
        self.tables.len()
    }

    /// The activation range for a forward of `x`, updating the observed
    /// range (training: running statistics; calibration: min/max).
    fn observe(&mut self, x: &[f32], train: bool) -> (f32, f32) {
        let (lo, hi) = min_max(x);
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
        let range = match (self.range, train, self.calibrating) {
            (None, true, _) | (None, false, true) => (lo, hi),
            (Some((l, h)), true, _) => {
                (l + RANGE_MOMENTUM * (lo - l), h + RANGE_MOMENTUM * (hi - h))
            }
            (Some((l, h)), false, true) => (l.min(lo), h.max(hi)),
            (Some(r), false, false) => return r,
            (None, false, false) => return (lo, hi),
        };
        self.range = Some(range);
        range
    }

    /// The activation quantization for `mul` and `scheme` of the range.
    fn act_params(range: (f32, f32), mul: IntMul, scheme: IntScheme) -> QuantParams {
        if scheme.asymmetric {
            QuantParams::asymmetric_bits(range.0, range.1, mul.signed(), mul.bits())
        } else {
            QuantParams::symmetric_bits(range.0.abs().max(range.1.abs()), mul.bits())
        }
    }

    /// The input's quantization for this forward (kept for backward when
    /// training).
    fn forward_params(
        &mut self,
        x: &[f32],
        mul: IntMul,
        scheme: IntScheme,
        train: bool,
    ) -> QuantParams {
        let p = Self::act_params(self.observe(x, train), mul, scheme);
        self.cache_x = train.then_some(p);
        p
    }

    /// Keep the input's codes of a training forward for backward.
    fn keep_codes(&mut self, codes: Vec<u8>, train: bool) {
        self.cache_x_codes = if train { codes } else { Vec::new() };
    }

    /// The codes of the input `x` under `p`: those of the training forward
    /// when it quantized `x` the same way (as it does unless the range
    /// moved in between; taken from the cache), else computed.
    fn take_input_codes(&mut self, x: &[f32], p: &QuantParams) -> Vec<u8> {
        if self.cache_x.as_ref() == Some(p) && self.cache_x_codes.len() == x.len() {
            std::mem::take(&mut self.cache_x_codes)
        } else {
            codes(x, p)
        }
    }

    fn cached(&self, layer: &str) -> Result<QuantParams> {
        self.cache_x.ok_or_else(|| {
            NetError::shape(format!(
                "{layer}: backward before a quantized training forward"
            ))
        })
    }

    /// Dense forward products `y [N, OUT] = x [N, IN] · W [IN, OUT]`
    /// through the forward multiplier (no bias).
    #[allow(clippy::too_many_arguments)]
    pub fn dense_forward(
        &mut self,
        plan: &MultiplierPlan,
        x: &[f32],
        w: &[f32],
        y: &mut [f32],
        n: usize,
        inf: usize,
        outf: usize,
        train: bool,
    ) -> Result<()> {
        let _span = amsim::timing::span(amsim::timing::Op::Quantize);
        let (mul, scheme) = int_mul(&plan.forward).expect("quantized forward");
        let px = self.forward_params(x, mul, scheme, train);
        let wq = WeightQuant::new(w, outf, false, scheme.per_channel, mul.bits());
        let pw = wq.params[0];
        match mul {
            IntMul::Lut(lut) => {
                let table = self.table(lut, &px, &pw);
                let (xc, wc) = (codes(x, &px), wq.codes(w));
                let mut acc = vec![0i32; n * outf];
                int_gemm_offset(
                    &table,
                    px.operand(&xc),
                    pw.operand(&wc),
                    &mut acc,
                    n,
                    outf,
                    inf,
                )?;
                self.keep_codes(xc, train);
                scale_dense(y, &acc, outf, |o| px.scale * wq.scale(o));
            }
            IntMul::Wide(m) => {
                let (xv, wv) = (ints(x, &px), wq.ints(w));
                let mut acc = vec![0i64; n * outf];
                wide_gemm(
                    m,
                    px.wide_operand(&xv),
                    pw.wide_operand(&wv),
                    &mut acc,
                    n,
                    outf,
                    inf,
                )?;
                scale_dense(y, &acc, outf, |o| px.scale * wq.scale(o));
            }
        }
        Ok(())
    }

    /// Dense backward: `dW [IN, OUT]` (overwritten) and, when asked,
    /// `dx [N, IN]`, by the plan's gradient multipliers (module doc).
    #[allow(clippy::too_many_arguments)]
    pub fn dense_backward(
        &mut self,
        layer: &str,
        plan: &MultiplierPlan,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        n: usize,
        inf: usize,
        outf: usize,
        need_input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let _span = amsim::timing::span(amsim::timing::Op::Quantize);
        let px = self.cached(layer)?;
        let (fwd, scheme) = int_mul(&plan.forward).expect("quantized forward");
        let wbits = fwd.bits();
        // dy's 8-bit quantization, shared by the two gradient products.
        let mut dy_codes: Option<(QuantParams, Vec<u8>)> = None;
        // dW [IN, OUT] = xᵀ [IN, N] · dy [N, OUT]
        if let Some((lut, _)) = int8(&plan.grad_weight) {
            let pxw = Self::act_params(self.range_or(px), IntMul::Lut(lut), scheme);
            let (pdy, dyc) = dy_codes.get_or_insert_with(|| dy_quant(dy));
            let (pdy, dyc) = (*pdy, std::mem::take(dyc));
            let xt = transpose_codes(&self.take_input_codes(x, &pxw), n, inf);
            self.int_product(lut, (&xt, pxw), (&dyc, pdy), dw, |t, a, b, acc| {
                int_gemm_offset(t, a, b, acc, inf, outf, n)
            })?;
            dy_codes = Some((pdy, dyc));
        } else if let Some(m) = int_wide(&plan.grad_weight) {
            let pxw = Self::act_params(self.range_or(px), IntMul::Wide(m), scheme);
            let pdy = QuantParams::symmetric_bits(max_abs(dy), m.bits());
            let xt = transpose_codes(&ints(x, &pxw), n, inf);
            wide_product((&xt, pxw), (&ints(dy, &pdy), pdy), dw, |a, b, acc| {
                wide_gemm(m, a, b, acc, inf, outf, n)
            })?;
        } else {
            let x_fake = fake(x, &px);
            gemm(
                &plan.grad_weight,
                MatRef::row_major(&x_fake, n, inf)?.t(),
                MatRef::row_major(dy, n, outf)?,
                MatMut::row_major(dw, inf, outf)?,
                false,
            )?;
        }
        if !need_input_grad {
            return Ok(None);
        }
        // dx [N, IN] = dy [N, OUT] · Wᵀ [OUT, IN]
        let mut dx = vec![0.0; n * inf];
        if let Some((lut, _)) = int8(&plan.grad_input) {
            let pw = QuantParams::symmetric(max_abs(w));
            let (pdy, dyc) = dy_codes.unwrap_or_else(|| dy_quant(dy));
            let wt = transpose_codes(&codes(w, &pw), inf, outf);
            self.int_product(lut, (&dyc, pdy), (&wt, pw), &mut dx, |t, a, b, acc| {
                int_gemm_offset(t, a, b, acc, n, inf, outf)
            })?;
        } else if let Some(m) = int_wide(&plan.grad_input) {
            let pw = QuantParams::symmetric_bits(max_abs(w), m.bits());
            let pdy = QuantParams::symmetric_bits(max_abs(dy), m.bits());
            let wt = transpose_codes(&ints(w, &pw), inf, outf);
            wide_product((&ints(dy, &pdy), pdy), (&wt, pw), &mut dx, |a, b, acc| {
                wide_gemm(m, a, b, acc, n, inf, outf)
            })?;
        } else {
            let wq = WeightQuant::new(w, outf, false, scheme.per_channel, wbits);
            let w_fake = wq.fake(w);
            gemm(
                &plan.grad_input,
                MatRef::row_major(dy, n, outf)?,
                MatRef::row_major(&w_fake, inf, outf)?.t(),
                MatMut::row_major(&mut dx, n, inf)?,
                false,
            )?;
        }
        clip_gradient(&mut dx, x, &px);
        Ok(Some(dx))
    }

    /// Convolution forward products `y = conv(x, W)` through the forward
    /// multiplier (no bias).
    pub fn conv_forward(
        &mut self,
        plan: &MultiplierPlan,
        s: &Conv2dShape,
        x: &[f32],
        w: &[f32],
        y: &mut [f32],
        train: bool,
    ) -> Result<()> {
        let _span = amsim::timing::span(amsim::timing::Op::Quantize);
        let (mul, scheme) = int_mul(&plan.forward).expect("quantized forward");
        let px = self.forward_params(x, mul, scheme, train);
        let wq = WeightQuant::new(w, s.out_channels, true, scheme.per_channel, mul.bits());
        let pw = wq.params[0];
        let scale = |o: usize| px.scale * wq.scale(o);
        match mul {
            IntMul::Lut(lut) => {
                let table = self.table(lut, &px, &pw);
                let (xc, wc) = (codes(x, &px), wq.codes(w));
                let mut acc = vec![0i32; y.len()];
                int_conv2d_forward(&table, s, px.operand(&xc), pw.operand(&wc), &mut acc)?;
                self.keep_codes(xc, train);
                scale_nchw(y, &acc, s, scale);
            }
            IntMul::Wide(m) => {
                let (xv, wv) = (ints(x, &px), wq.ints(w));
                let mut acc = vec![0i64; y.len()];
                wide_conv2d_forward(m, s, px.wide_operand(&xv), pw.wide_operand(&wv), &mut acc)?;
                scale_nchw(y, &acc, s, scale);
            }
        }
        Ok(())
    }

    /// Convolution backward: `dW` (overwritten) and, when asked, `dx`, by
    /// the plan's gradient multipliers (module doc).
    #[allow(clippy::too_many_arguments)]
    pub fn conv_backward(
        &mut self,
        layer: &str,
        plan: &MultiplierPlan,
        s: &Conv2dShape,
        x: &[f32],
        w: &[f32],
        dy: &[f32],
        dw: &mut [f32],
        need_input_grad: bool,
    ) -> Result<Option<Vec<f32>>> {
        let _span = amsim::timing::span(amsim::timing::Op::Quantize);
        let px = self.cached(layer)?;
        let (fwd, scheme) = int_mul(&plan.forward).expect("quantized forward");
        let wbits = fwd.bits();
        // dy's 8-bit quantization, shared by the two gradient products.
        let mut dy_codes: Option<(QuantParams, Vec<u8>)> = None;
        if let Some((lut, _)) = int8(&plan.grad_weight) {
            let pxw = Self::act_params(self.range_or(px), IntMul::Lut(lut), scheme);
            let (pdy, dyc) = dy_codes.get_or_insert_with(|| dy_quant(dy));
            let (pdy, dyc) = (*pdy, std::mem::take(dyc));
            let xc = self.take_input_codes(x, &pxw);
            self.int_product(lut, (&xc, pxw), (&dyc, pdy), dw, |t, a, b, acc| {
                int_conv2d_grad_weight(t, s, a, b, acc)
            })?;
            dy_codes = Some((pdy, dyc));
        } else if let Some(m) = int_wide(&plan.grad_weight) {
            let pxw = Self::act_params(self.range_or(px), IntMul::Wide(m), scheme);
            let pdy = QuantParams::symmetric_bits(max_abs(dy), m.bits());
            wide_product(
                (&ints(x, &pxw), pxw),
                (&ints(dy, &pdy), pdy),
                dw,
                |a, b, acc| wide_conv2d_grad_weight(m, s, a, b, acc),
            )?;
        } else {
            let x_fake = fake(x, &px);
            conv2d_grad_weight(&plan.grad_weight, s, &x_fake, dy, dw)?;
        }
        if !need_input_grad {
            return Ok(None);
        }
        let mut dx = vec![0.0; x.len()];
        if let Some((lut, _)) = int8(&plan.grad_input) {
            let pw = QuantParams::symmetric(max_abs(w));
            let (pdy, dyc) = dy_codes.unwrap_or_else(|| dy_quant(dy));
            let wc = codes(w, &pw);
            self.int_product(lut, (&dyc, pdy), (&wc, pw), &mut dx, |t, a, b, acc| {
                int_conv2d_grad_input(t, s, a, b, acc)
            })?;
        } else if let Some(m) = int_wide(&plan.grad_input) {
            let pw = QuantParams::symmetric_bits(max_abs(w), m.bits());
            let pdy = QuantParams::symmetric_bits(max_abs(dy), m.bits());
            wide_product(
                (&ints(dy, &pdy), pdy),
                (&ints(w, &pw), pw),
                &mut dx,
                |a, b, acc| wide_conv2d_grad_input(m, s, a, b, acc),
            )?;
        } else {
            let wq = WeightQuant::new(w, s.out_channels, true, scheme.per_channel, wbits);
            conv2d_grad_input(&plan.grad_input, s, dy, &wq.fake(w), &mut dx)?;
        }
        clip_gradient(&mut dx, x, &px);
        Ok(Some(dx))
    }

    /// The integer product `product(table, a, b, sums)` of the codes `a`
    /// (quantized as `pa`) and `b` (as `pb`) through `lut`'s table for
    /// their codings, scaled back into `out` (one scale each: a gradient
    /// product's operands are quantized per tensor).
    fn int_product(
        &mut self,
        lut: &Arc<IntLut>,
        (a, pa): (&[u8], QuantParams),
        (b, pb): (&[u8], QuantParams),
        out: &mut [f32],
        product: impl FnOnce(&IntLut, IntOperand, IntOperand, &mut [i32]) -> amsim::Result<()>,
    ) -> Result<()> {
        let table = self.table(lut, &pa, &pb);
        let mut sums = vec![0i32; out.len()];
        product(&table, pa.operand(a), pb.operand(b), &mut sums)?;
        scale_into(out, &sums, pa.scale * pb.scale);
        Ok(())
    }

    /// The observed range, else the one `p` represents.
    fn range_or(&self, p: QuantParams) -> (f32, f32) {
        self.range.unwrap_or((
            (p.qmin - p.zero) as f32 * p.scale,
            (p.qmax - p.zero) as f32 * p.scale,
        ))
    }
}

/// The symmetric per-tensor quantization of output gradients, and their
/// codes.
fn dy_quant(dy: &[f32]) -> (QuantParams, Vec<u8>) {
    let p = QuantParams::symmetric(max_abs(dy));
    (p, codes(dy, &p))
}

/// An exact integer sum (`i32` of the 8-bit engine, `i64` of the wide
/// one) as the nearest `f32`.
trait IntSum: Copy + Send + Sync {
    fn to_f32(self) -> f32;
}

impl IntSum for i32 {
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

impl IntSum for i64 {
    #[inline]
    fn to_f32(self) -> f32 {
        self as f32
    }
}

/// `out = acc · scale`.
fn scale_into<T: IntSum>(out: &mut [f32], acc: &[T], scale: f32) {
    map_into(out, acc, |&a| a.to_f32() * scale);
}

/// `y [rows, outf] = acc · scale(o)` for output column `o`.
fn scale_dense<T: IntSum>(y: &mut [f32], acc: &[T], outf: usize, scale: impl Fn(usize) -> f32) {
    for (y_row, a_row) in y.chunks_exact_mut(outf).zip(acc.chunks_exact(outf)) {
        for (o, (y, &a)) in y_row.iter_mut().zip(a_row).enumerate() {
            *y = a.to_f32() * scale(o);
        }
    }
}

/// `y [N, C_out, OH, OW] = acc · scale(o)` for output channel `o`.
fn scale_nchw<T: IntSum>(
    y: &mut [f32],
    acc: &[T],
    s: &Conv2dShape,
    scale: impl Fn(usize) -> f32 + Sync,
) {
    let plane = s.out_h() * s.out_w();
    y.par_chunks_mut(plane)
        .zip(acc.par_chunks(plane))
        .enumerate()
        .for_each(|(i, (y, a))| {
            let k = scale(i % s.out_channels);
            for (y, &a) in y.iter_mut().zip(a) {
                *y = a.to_f32() * k;
            }
        });
}

/// The 12- or 16-bit product `product(a, b, sums)` of the integers `a`
/// (quantized as `pa`) and `b` (as `pb`), scaled back into `out` (one
/// scale each: a gradient product's operands are quantized per tensor).
fn wide_product(
    (a, pa): (&[i32], QuantParams),
    (b, pb): (&[i32], QuantParams),
    out: &mut [f32],
    product: impl FnOnce(WideOperand, WideOperand, &mut [i64]) -> amsim::Result<()>,
) -> Result<()> {
    let mut sums = vec![0i64; out.len()];
    product(pa.wide_operand(a), pb.wide_operand(b), &mut sums)?;
    scale_into(out, &sums, pa.scale * pb.scale);
    Ok(())
}

/// Straight-through estimation with clipping: no gradient where the input
/// lay outside its quantization range.
fn clip_gradient(dx: &mut [f32], x: &[f32], p: &QuantParams) {
    dx.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(dx, x)| {
            for (d, &v) in dx.iter_mut().zip(x) {
                if !p.inside(v) {
                    *d = 0.0;
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn quantization_round_trips_grid_values_and_keeps_zero_exact() {
        let seed = amsim::test_seed("quantization_round_trips_grid_values_and_keeps_zero_exact");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for signed in [true, false] {
            let (lo, hi) = (-rng.gen_range(0.0..3.0f32), rng.gen_range(0.1..3.0f32));
            for (p, width) in [
                (QuantParams::symmetric(hi.max(-lo)), 254),
                (QuantParams::asymmetric(lo, hi, signed), 255),
            ] {
                assert_eq!(p.fake(0.0), 0.0, "seed {seed}: {p:?}");
                assert_eq!(p.qmax - p.qmin, width, "{p:?}");
                let codes = if p.signed() { -128..=127 } else { 0..=255 };
                assert!(codes.contains(&p.qmin) && codes.contains(&p.qmax), "{p:?}");
                assert!(p.signed() || (!signed && width == 255), "{p:?}");
                for _ in 0..1000 {
                    let q = rng.gen_range(p.qmin..=p.qmax);
                    let v = (q - p.zero) as f32 * p.scale;
                    assert_eq!(p.quantize(v), q, "seed {seed}: {p:?} {v}");
                    let u = rng.gen_range(lo..hi);
                    assert!(
                        (p.fake(u) - u).abs() <= p.scale * 0.5001,
                        "seed {seed}: {p:?} {u}"
                    );
                }
                assert_eq!(p.quantize(1e9), p.qmax);
                assert_eq!(p.quantize(-1e9), p.qmin);
                assert!(!p.inside(1e9) && p.inside(0.0));
            }
        }
    }

    #[test]
    fn quantization_rounds_as_f32_round_does_ties_away_from_zero() {
        let seed = amsim::test_seed("quantization_rounds_as_f32_round_does_ties_away_from_zero");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        // The definition: round(v / s) + z (ties away from zero), clamped.
        let want = |p: &QuantParams, v: f32| {
            ((v / p.scale).round() as i32)
                .saturating_add(p.zero)
                .clamp(p.qmin, p.qmax)
        };
        let want_inside = |p: &QuantParams, v: f32| {
            let q = (v / p.scale).round() + p.zero as f32;
            q >= p.qmin as f32 && q <= p.qmax as f32
        };
        let params = [
            QuantParams::symmetric(1.0),
            QuantParams::asymmetric(-0.3, 2.0, true),
            QuantParams::asymmetric(-1.7, 0.4, false),
        ];
        let special = [
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e30,
            -1e30,
            f32::MIN_POSITIVE,
        ];
        for p in &params {
            let mut values: Vec<f32> = special.to_vec();
            for _ in 0..20000 {
                // Ties (k + 0.5 steps), their neighbours and anything.
                let k = rng.gen_range(-300..300) as f32 + 0.5;
                let tie = k * p.scale;
                values.extend([
                    tie,
                    f32::from_bits(tie.to_bits() + 1),
                    f32::from_bits(tie.to_bits() - 1),
                    rng.gen_range(-1e6f32..1e6),
                    rng.gen_range(-3.0f32..3.0),
                ]);
            }
            for v in values {
                assert_eq!(p.quantize(v), want(p, v), "seed {seed}: {p:?} {v:e}");
                assert_eq!(p.inside(v), want_inside(p, v), "seed {seed}: {p:?} {v:e}");
            }
        }
    }

    #[test]
    fn per_channel_weights_take_the_scale_of_their_output_channel() {
        // W [IN = 2, OUT = 3] (a dense layer's layout): column o is channel o.
        let w = [1.0, -0.5, 0.25, -2.0, 0.1, 0.0];
        let q = WeightQuant::new(&w, 3, false, true, 8);
        assert_eq!(q.scale(0), 2.0 / 127.0);
        assert_eq!(q.scale(1), 0.5 / 127.0);
        assert_eq!(q.scale(2), 0.25 / 127.0);
        assert_eq!(q.codes(&w), [64, 129, 127, 129, 25, 0]);
        let q = WeightQuant::new(&w, 3, true, true, 8);
        // Rows are outputs: [1, -0.5], [0.25, -2], [0.1, 0].
        assert_eq!(q.scale(1), 2.0 / 127.0);
        assert_eq!(q.scale(0), 1.0 / 127.0);
        assert_eq!(q.codes(&w)[..2], [127, 192]);
        let q = WeightQuant::new(&w, 3, false, false, 8);
        assert_eq!(q.params.len(), 1);
        assert_eq!(q.codes(&w)[3], 129, "-2 is -127, two's complement");
    }
}
