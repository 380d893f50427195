//! Causal multi-head self-attention (Vaswani et al., 2017, "Attention Is
//! All You Need", arXiv:1706.03762, with the causal mask of GPT-2).
//!
//! Shapes: `x [N, T, C]`, `H` heads of `d = C / H`, `B = N·H`;
//! `W_qkv [C, 3C]`, `b_qkv [3C]`, `W_o [C, C]`, `b_o [C]`; `y [N, T, C]`.
//! Per-head stacks are head-major `[B, T, d]`; `S`, `A` are `[B, T, T]`.
//!
//! ```text
//! forward:
//!   [Q K V] = x·W_qkv + b_qkv     plan.forward,  operands x, W_qkv  (a Dense)
//!   S  = Q·Kᵀ                     plan.attn_qk,  operands Q, Kᵀ
//!   A  = softmax_j(S[t, j] / sqrt(d)) over j ≤ t;  A[t, j > t] = 0   (FP32)
//!   Yh = A·V                      plan.attn_av,  operands A, V
//!   y  = Yh·W_o + b_o             plan.forward,  operands Yh, W_o   (a Dense)
//! backward (A and Q play the activation, V and Kᵀ the weight of
//! DESIGN.md's operand table):
//!   dA  = dYh·Vᵀ                  plan.attn_av,  operands dYh, V    (input gradient)
//!   dV  = Aᵀ·dYh                  plan.attn_av,  operands A, dYh    (weight gradient)
//!   dS  = A·(dA - Σ_j A·dA) / sqrt(d)                                (FP32)
//!   dQ  = dS·K                    plan.attn_qk,  operands dS, K     (input gradient)
//!   dKᵀ = Qᵀ·dS                   plan.attn_qk,  operands Q, dS     (weight gradient)
//!   and the projections' gradients as in Dense (plan.grad_input, plan.grad_weight).
//! ```
//!
//! The 1/sqrt(d) scale, the mask and the softmax are plain FP32, like other
//! activations; softmax sums run in index order, with
//! [`crate::fastmath::exp`]. Scores above the diagonal
//! are computed and then masked, so every product of `Q·Kᵀ` and `A·V` is a
//! full batched GEMM through [`gemm_batched`], which runs on the CUDA engine
//! when one is in use ([`crate::device`]) and on the CPU otherwise. An
//! integer multiplier (`int8:`, `int12:`, `int16:`) in `attn_qk`/`attn_av`
//! quantizes both operands of each of its products per tensor (see
//! [`product`]) and sums the model's products exactly (`i32` for 8 bits,
//! `i64` for 12 and 16) on the CPU.

use amsim::batched::{BatchedMut, BatchedRef};
use amsim::int_gemm::int_gemm_offset;
use amsim::int_lut::IntLut;
use amsim::int_wide::{wide_gemm, WideIntMul};
use amsim::{Multiplier, MultiplierPlan};
use rand::Rng;
use rayon::prelude::*;

use super::quant::{QuantParams, QuantState};
use super::{split_batch, Dense, Layer, MacCounts, Param};
use crate::device::gemm_batched;
use crate::init::Init;
use crate::{NetError, Result, Tensor};

/// Causal multi-head self-attention with fused Q/K/V and output projections.
#[derive(Debug, Clone)]
pub struct CausalSelfAttention {
    name: String,
    dim: usize,
    heads: usize,
    plan: MultiplierPlan,
    /// `[Q K V] = x·W_qkv + b_qkv`, `[N·T, C] -> [N·T, 3C]`.
    pub qkv: Dense,
    /// `y = Yh·W_o + b_o`, `[N·T, C] -> [N·T, C]`.
    pub proj: Dense,
    /// Backward cache: `Q`, `K`, `V` head-major, each `[B, T, d]`.
    cache_q: Vec<f32>,
    cache_k: Vec<f32>,
    cache_v: Vec<f32>,
    /// Backward cache: the attention weights `A [B, T, T]` (zero above the
    /// diagonal).
    cache_att: Vec<f32>,
    /// Backward cache: `(N, T)` of the last training forward.
    cache_batch_seq: (usize, usize),
    /// For `int8:` products: the tables for the operands' codings.
    quant: QuantState,
}

/// One batched product of the layer: [`gemm_batched`] for a float
/// multiplier. For an `int8:` multiplier both operands are quantized per
/// tensor, symmetric, from their own largest magnitude (attention has no
/// weights, and its operands' ranges move with every batch: dynamic
/// quantization, the same in training and evaluation), the products summed
/// exactly in `i32` through the table ([`int_gemm_offset`]), and the sums
/// scaled back by the two steps. The gradient products of an `int8:` role
/// go through the table the same way (the quantized gradients of the
/// module doc's operand pairs).
fn product(
    quant: &mut QuantState,
    mult: &Multiplier,
    a: BatchedRef,
    b: BatchedRef,
    c: BatchedMut,
) -> Result<()> {
    match mult {
        Multiplier::Int8 { lut, .. } => {
            let _span = amsim::timing::span(amsim::timing::Op::Quantize);
            amsim::batched::check_batched_shapes(&a, &b, &c)?;
            let (qa, pa) = quantize_batched(&a, 8, |p, v| p.code(v));
            let (qb, pb) = quantize_batched(&b, 8, |p, v| p.code(v));
            let table = quant.table(lut, &pa, &pb);
            int8_batched(&table, (&qa, pa), (&qb, pb), c)
        }
        Multiplier::IntWide { mul, .. } => {
            let _span = amsim::timing::span(amsim::timing::Op::Quantize);
            amsim::batched::check_batched_shapes(&a, &b, &c)?;
            let (qa, pa) = quantize_batched(&a, mul.bits(), |p, v| p.quantize(v));
            let (qb, pb) = quantize_batched(&b, mul.bits(), |p, v| p.quantize(v));
            wide_batched(mul, (&qa, pa), (&qb, pb), c)
        }
        _ => gemm_batched(mult, a, b, c, false),
    }
}

/// [`int8_batched`] for a 12- or 16-bit model: the operands' integers,
/// exact `i64` sums.
fn wide_batched(
    mul: &WideIntMul,
    (qa, pa): (&[i32], QuantParams),
    (qb, pb): (&[i32], QuantParams),
    mut c: BatchedMut,
) -> Result<()> {
    let (batch, m, n) = (c.batch(), c.rows(), c.cols());
    let k = qa.len() / (batch * m).max(1);
    if (c.batch_stride(), c.row_stride(), c.col_stride()) != (m * n, n, 1) {
        return Err(NetError::shape(
            "integer batched product: the output must be row-major",
        ));
    }
    let step = pa.scale * pb.scale;
    let mut sums = vec![0i64; batch * m * n];
    for (i, acc) in sums.chunks_mut((m * n).max(1)).enumerate() {
        wide_gemm(
            mul,
            pa.wide_operand(&qa[i * m * k..][..m * k]),
            pb.wide_operand(&qb[i * k * n..][..k * n]),
            acc,
            m,
            n,
            k,
        )?;
    }
    c.data_mut()[..batch * m * n]
        .par_chunks_mut(n.max(1))
        .zip(sums.par_chunks(n.max(1)))
        .for_each(|(o, s)| {
            for (o, &s) in o.iter_mut().zip(s) {
                *o = s as f32 * step;
            }
        });
    Ok(())
}

/// `C_i = A_i · B_i` for every batch `i` through `table`, from the two
/// operands' codes (row-major per batch) and quantizations; `c` row-major.
fn int8_batched(
    table: &IntLut,
    (qa, pa): (&[u8], QuantParams),
    (qb, pb): (&[u8], QuantParams),
    mut c: BatchedMut,
) -> Result<()> {
    let (batch, m, n) = (c.batch(), c.rows(), c.cols());
    let k = qa.len() / (batch * m).max(1);
    if (c.batch_stride(), c.row_stride(), c.col_stride()) != (m * n, n, 1) {
        return Err(NetError::shape(
            "int8 batched product: the output must be row-major",
        ));
    }
    let step = pa.scale * pb.scale;
    let mut sums = vec![0i32; batch * m * n];
    sums.par_chunks_mut((m * n).max(1))
        .enumerate()
        .try_for_each(|(i, acc)| {
            int_gemm_offset(
                table,
                pa.operand(&qa[i * m * k..][..m * k]),
                pb.operand(&qb[i * k * n..][..k * n]),
                acc,
                m,
                n,
                k,
            )
        })?;
    c.data_mut()[..batch * m * n]
        .par_chunks_mut(n.max(1))
        .zip(sums.par_chunks(n.max(1)))
        .for_each(|(o, s)| {
            for (o, &s) in o.iter_mut().zip(s) {
                *o = s as f32 * step;
            }
        });
    Ok(())
}

/// The codes of a batched operand, row-major `[batch][rows][cols]`, and
/// their symmetric per-tensor `bits`-bit quantization (largest magnitude to
/// `2^(bits-1) - 1`); `code` turns a value into a code (a byte for the
/// 8-bit engine, the integer for the wide one).
fn quantize_batched<T: Copy + Default + Send>(
    x: &BatchedRef,
    bits: u32,
    code: impl Fn(&QuantParams, f32) -> T + Sync,
) -> (Vec<T>, QuantParams) {
    let (rows, cols) = (x.rows(), x.cols());
    let (bs, rs, cs, data) = (x.batch_stride(), x.row_stride(), x.col_stride(), x.data());
    // Row `ir` (batch `ir / rows`) of the operand, element by element.
    let row = move |ir: usize| {
        let base = (ir / rows) * bs + (ir % rows) * rs;
        (0..cols).map(move |j| data[base + j * cs])
    };
    let max_abs = (0..x.batch() * rows)
        .into_par_iter()
        .map(|ir| row(ir).fold(0.0f32, |m, v| m.max(v.abs())))
        .reduce(|| 0.0, f32::max);
    let p = QuantParams::symmetric_bits(max_abs, bits);
    let mut codes = vec![T::default(); x.batch() * rows * cols];
    codes
        .par_chunks_mut(cols.max(1))
        .enumerate()
        .for_each(|(ir, out)| {
            for (o, v) in out.iter_mut().zip(row(ir)) {
                *o = code(&p, v);
            }
        });
    (codes, p)
}

impl CausalSelfAttention {
    /// A layer over `dim` channels with `heads` heads (`dim` divisible by
    /// `heads`); projection weights Glorot-uniform, biases zero.
    pub fn new<R: Rng + ?Sized>(
        name: &str,
        dim: usize,
        heads: usize,
        plan: MultiplierPlan,
        rng: &mut R,
    ) -> Result<CausalSelfAttention> {
        if dim == 0 || heads == 0 || dim % heads != 0 {
            return Err(NetError::Config(format!(
                "{name}: {dim} channels do not split into {heads} heads"
            )));
        }
        let qkv = Dense::new(
            &format!("{name}.qkv"),
            dim,
            3 * dim,
            plan.clone(),
            Init::GlorotUniform,
            rng,
        );
        let proj = Dense::new(
            &format!("{name}.proj"),
            dim,
            dim,
            plan.clone(),
            Init::GlorotUniform,
            rng,
        );
        Ok(CausalSelfAttention {
            name: name.to_string(),
            dim,
            heads,
            plan,
            qkv,
            proj,
            cache_q: Vec::new(),
            cache_k: Vec::new(),
            cache_v: Vec::new(),
            cache_att: Vec::new(),
            cache_batch_seq: (0, 0),
            quant: QuantState::default(),
        })
    }

    /// Channels C.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Heads H.
    pub fn heads(&self) -> usize {
        self.heads
    }

    fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
}

/// Copy column block `part` of a `[N·T, stride]` matrix into a head-major
/// `[N·H, T, d]` stack (`stride` = 3C and `part` 0, 1, 2 for Q, K, V of
/// `qkv`; `stride` = C and `part` 0 for `Yh`).
fn split_heads(
    m: &[f32],
    (n, t, c, h): (usize, usize, usize, usize),
    stride: usize,
    part: usize,
) -> Vec<f32> {
    let d = c / h;
    let mut out = vec![0.0f32; n * h * t * d];
    for b in 0..n * h {
        let (ni, hi) = (b / h, b % h);
        for ti in 0..t {
            let src = (ni * t + ti) * stride + part * c + hi * d;
            let dst = (b * t + ti) * d;
            out[dst..dst + d].copy_from_slice(&m[src..src + d]);
        }
    }
    out
}

/// The inverse of [`split_heads`]: write a head-major `[N·H, T, d]` stack
/// into column block `part` of a `[N·T, stride]` matrix.
fn merge_heads(
    heads: &[f32],
    out: &mut [f32],
    (n, t, c, h): (usize, usize, usize, usize),
    stride: usize,
    part: usize,
) {
    let d = c / h;
    for b in 0..n * h {
        let (ni, hi) = (b / h, b % h);
        for ti in 0..t {
            let dst = (ni * t + ti) * stride + part * c + hi * d;
            let src = (b * t + ti) * d;
            out[dst..dst + d].copy_from_slice(&heads[src..src + d]);
        }
    }
}

impl Layer for CausalSelfAttention {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> String {
        format!(
            "CausalSelfAttention({} channels, {} heads)",
            self.dim, self.heads
        )
    }

    fn output_shape(&self, sample: &[usize]) -> Result<Vec<usize>> {
        match sample {
            [t, c] if *c == self.dim => Ok(vec![*t, *c]),
            _ => Err(NetError::shape(format!(
                "{}: expected a sample [T, {}], got shape {sample:?}",
                self.name, self.dim
            ))),
        }
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Attention);
        let (n, sample) = split_batch(&self.name, x)?;
        self.output_shape(sample)?;
        let (t, c, h, d) = (sample[0], self.dim, self.heads, self.head_dim());
        let b = n * h;
        let qkv = self.qkv.forward(&x.clone().reshape(&[n * t, c])?, train)?;
        let shape = (n, t, c, h);
        let q = split_heads(&qkv.data, shape, 3 * c, 0);
        let k = split_heads(&qkv.data, shape, 3 * c, 1);
        let v = split_heads(&qkv.data, shape, 3 * c, 2);

        // S = Q·Kᵀ
        let mut att = vec![0.0f32; b * t * t];
        product(
            &mut self.quant,
            &self.plan.attn_qk,
            BatchedRef::row_major(&q, b, t, d)?,
            BatchedRef::row_major(&k, b, t, d)?.t(),
            BatchedMut::row_major(&mut att, b, t, t)?,
        )?;
        // A = causal softmax of S / sqrt(d), row by row.
        let scale = 1.0 / (d as f32).sqrt();
        if t > 0 {
            att.par_chunks_mut(t).enumerate().for_each(|(r, row)| {
                let ti = r % t;
                let (live, masked) = row.split_at_mut(ti + 1);
                for s in live.iter_mut() {
                    *s *= scale;
                }
                // Subtracting the row maximum keeps exp finite.
                let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for s in live.iter_mut() {
                    *s = crate::fastmath::exp(*s - max);
                }
                let mut sum = 0.0f32;
                for &s in live.iter() {
                    sum += s;
                }
                for s in live.iter_mut() {
                    *s /= sum;
                }
                masked.fill(0.0);
            });
        }
        // Yh = A·V
        let mut yh_heads = vec![0.0f32; b * t * d];
        product(
            &mut self.quant,
            &self.plan.attn_av,
            BatchedRef::row_major(&att, b, t, t)?,
            BatchedRef::row_major(&v, b, t, d)?,
            BatchedMut::row_major(&mut yh_heads, b, t, d)?,
        )?;
        let mut yh = Tensor::zeros(&[n * t, c]);
        merge_heads(&yh_heads, &mut yh.data, shape, c, 0);
        let y = self.proj.forward(&yh, train)?;
        if train {
            self.cache_q = q;
            self.cache_k = k;
            self.cache_v = v;
            self.cache_att = att;
            self.cache_batch_seq = (n, t);
        }
        y.reshape(&[n, t, c])
    }

    fn backward(&mut self, dy: &Tensor, need_input_grad: bool) -> Result<Option<Tensor>> {
        let _span = amsim::timing::span(amsim::timing::Op::Attention);
        let (n, t) = self.cache_batch_seq;
        let (c, h, d) = (self.dim, self.heads, self.head_dim());
        let b = n * h;
        if dy.shape != [n, t, c] {
            return Err(NetError::shape(format!(
                "{}: backward expected dy [{n}, {t}, {c}] (after a training forward), got {:?}",
                self.name, dy.shape
            )));
        }
        let dyh = self
            .proj
            .backward(&dy.clone().reshape(&[n * t, c])?, true)?
            .ok_or_else(|| NetError::shape(format!("{}: no gradient from proj", self.name)))?;
        let shape = (n, t, c, h);
        let dyh_heads = split_heads(&dyh.data, shape, c, 0);

        // dA = dYh·Vᵀ, dV = Aᵀ·dYh
        let mut datt = vec![0.0f32; b * t * t];
        product(
            &mut self.quant,
            &self.plan.attn_av,
            BatchedRef::row_major(&dyh_heads, b, t, d)?,
            BatchedRef::row_major(&self.cache_v, b, t, d)?.t(),
            BatchedMut::row_major(&mut datt, b, t, t)?,
        )?;
        let mut dv = vec![0.0f32; b * t * d];
        product(
            &mut self.quant,
            &self.plan.attn_av,
            BatchedRef::row_major(&self.cache_att, b, t, t)?.t(),
            BatchedRef::row_major(&dyh_heads, b, t, d)?,
            BatchedMut::row_major(&mut dv, b, t, d)?,
        )?;
        // dS = A·(dA - Σ_j A·dA) / sqrt(d), in place in datt; zero where
        // masked because A is.
        let scale = 1.0 / (d as f32).sqrt();
        if t > 0 {
            datt.par_chunks_mut(t)
                .zip(self.cache_att.par_chunks(t))
                .for_each(|(ds, a)| {
                    let dot: f32 = ds.iter().zip(a).map(|(&g, &p)| g * p).sum();
                    for (g, &p) in ds.iter_mut().zip(a) {
                        *g = p * (*g - dot) * scale;
                    }
                });
        }
        // dQ = dS·K, dKᵀ = Qᵀ·dS
        let mut dq = vec![0.0f32; b * t * d];
        product(
            &mut self.quant,
            &self.plan.attn_qk,
            BatchedRef::row_major(&datt, b, t, t)?,
            BatchedRef::row_major(&self.cache_k, b, t, d)?,
            BatchedMut::row_major(&mut dq, b, t, d)?,
        )?;
        let mut dkt = vec![0.0f32; b * d * t];
        product(
            &mut self.quant,
            &self.plan.attn_qk,
            BatchedRef::row_major(&self.cache_q, b, t, d)?.t(),
            BatchedRef::row_major(&datt, b, t, t)?,
            BatchedMut::row_major(&mut dkt, b, d, t)?,
        )?;
        // Q is the first operand, so the product gives dKᵀ [B, d, T];
        // transpose it to the head-major layout of dK [B, T, d].
        let mut dk = vec![0.0f32; b * t * d];
        for bi in 0..b {
            for ti in 0..t {
                for di in 0..d {
                    dk[(bi * t + ti) * d + di] = dkt[(bi * d + di) * t + ti];
                }
            }
        }
        let mut dqkv = Tensor::zeros(&[n * t, 3 * c]);
        for (part, g) in [&dq, &dk, &dv].into_iter().enumerate() {
            merge_heads(g, &mut dqkv.data, shape, 3 * c, part);
        }
        let dx = self.qkv.backward(&dqkv, need_input_grad)?;
        dx.map(|dx| dx.reshape(&[n, t, c])).transpose()
    }

    fn params(&self) -> Vec<&Param> {
        let mut p = self.qkv.params();
        p.extend(self.proj.params());
        p
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = self.qkv.params_mut();
        p.extend(self.proj.params_mut());
        p
    }

    fn plan(&self) -> Option<&MultiplierPlan> {
        Some(&self.plan)
    }

    fn set_plan(&mut self, plan: MultiplierPlan) -> bool {
        self.qkv.set_plan(plan.clone());
        self.proj.set_plan(plan.clone());
        self.plan = plan;
        true
    }

    /// Projection products per role as in [`Dense`], per position; the
    /// score products counted by analogy: `Q·Kᵀ` and `A·V` as forward,
    /// `dA` and `dQ` as input gradient, `dV` and `dKᵀ` as weight gradient
    /// (each `T²·C` per sample, masked entries included).
    fn macs(&self, sample: &[usize]) -> MacCounts {
        let t = sample.first().copied().unwrap_or(0) as u64;
        let c = self.dim as u64;
        let per_role = t * (3 * c * c + c * c) + 2 * t * t * c;
        MacCounts {
            forward: per_role,
            grad_input: per_role,
            grad_weight: per_role,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amsim::int_lut::operand_value;
    use amsim::IntScheme;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::sync::Arc;

    /// A table near the exact products (random errors within the model's
    /// product range), for a signed or an unsigned model.
    fn noisy_table(rng: &mut ChaCha8Rng, signed: bool) -> IntLut {
        let table = (0..65536usize)
            .map(|k| {
                let p = operand_value(k >> 8, signed) * operand_value(k & 255, signed);
                let e = rng.gen_range(-40..=40);
                if signed {
                    (p + e).clamp(-32768, 32767)
                } else {
                    (p + e).clamp(0, 65535)
                }
            })
            .collect();
        IntLut::from_table("noisy", signed, table).expect("a valid table")
    }

    /// An `int8:` batched product follows its definition: each operand
    /// quantized per tensor, symmetric, from its own largest magnitude;
    /// each output the sum of the table's products of the two codes' values
    /// (two's complement on both sides, an unsigned model in sign-magnitude
    /// through `IntLut::with_signs`), times the two steps; through a
    /// transposed view as the layer's `Q·Kᵀ` uses, for a signed and an
    /// unsigned model.
    #[test]
    fn int8_batched_products_follow_the_definition() {
        let seed = amsim::test_seed("int8_batched_products_follow_the_definition");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for signed in [true, false] {
            let lut = Arc::new(noisy_table(&mut rng, signed));
            let coded = lut.with_signs(true, true);
            let mult = Multiplier::Int8 {
                lut: lut.clone(),
                scheme: IntScheme {
                    per_channel: false,
                    asymmetric: false,
                },
            };
            let mut quant = QuantState::default();
            for _ in 0..6 {
                let (batch, m, k, n) = (
                    rng.gen_range(1..4),
                    rng.gen_range(1..10),
                    rng.gen_range(1..40),
                    rng.gen_range(1..10),
                );
                let a: Vec<f32> = (0..batch * m * k)
                    .map(|_| rng.gen_range(-3.0..3.0))
                    .collect();
                // B stored [batch][n][k] and read transposed.
                let bt: Vec<f32> = (0..batch * n * k)
                    .map(|_| rng.gen_range(-0.5..0.5))
                    .collect();
                let mut c = vec![0.0f32; batch * m * n];
                product(
                    &mut quant,
                    &mult,
                    BatchedRef::row_major(&a, batch, m, k).unwrap(),
                    BatchedRef::row_major(&bt, batch, n, k).unwrap().t(),
                    BatchedMut::row_major(&mut c, batch, m, n).unwrap(),
                )
                .unwrap();
                let biggest = |v: &[f32]| v.iter().fold(0.0f32, |x, y| x.max(y.abs()));
                let (pa, pb) = (
                    QuantParams::symmetric(biggest(&a)),
                    QuantParams::symmetric(biggest(&bt)),
                );
                for i in 0..batch {
                    for r in 0..m {
                        for j in 0..n {
                            let sum: i64 = (0..k)
                                .map(|p| {
                                    let x = pa.quantize(a[(i * m + r) * k + p]);
                                    let y = pb.quantize(bt[(i * n + j) * k + p]);
                                    coded.mul(x, y) as i64
                                })
                                .sum();
                            let want = sum as f32 * (pa.scale * pb.scale);
                            let got = c[(i * m + r) * n + j];
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "signed {signed}, batch {i} of [{m}x{k}]·[{k}x{n}], element ({r}, {j}): {got} vs {want} (seed {seed})"
                            );
                        }
                    }
                }
            }
            assert_eq!(quant.tables_built(), 1, "one coded table per model");
        }
    }
}
