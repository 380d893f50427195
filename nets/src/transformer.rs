//! A decoder-only Transformer for character-level language modelling
//! (GPT-2 layout: Radford et al. 2019, "Language Models are Unsupervised
//! Multitask Learners", with the pre-LN blocks of its section 2.3), in which
//! every product goes through a multiplier plan.
//!
//! Shapes: token ids `[N, T]` (T ≤ context), width C, vocabulary V.
//!
//! ```text
//! x0 = tok_emb[ids] + pos[t]                       [N, T, C]  (lookups, FP32 adds)
//! for each block i (`block{i}`):
//!   h = x + attn(ln1(x))                           CausalSelfAttention: qkv, proj on
//!                                                  fwd/dx/dw; Q·Kᵀ on attn_qk, A·V on attn_av
//!   x = h + fc2(gelu(fc1(ln2(h))))                 Dense C -> 4C -> C (`block{i}.mlp.fc1/fc2`)
//! logits = ln_f(x)·Eᵀ (tied head, E = tok_emb)     [N·T, V]   (`head`)
//!       or ln_f(x)·W_head + b_head (untied)
//! ```
//!
//! Backward runs the same graph in reverse; a residual connection adds the
//! gradient of its branch to the gradient that skips it. The tied head's
//! products follow DESIGN.md's operand table with the table `E` as the
//! weight: forward `(h, Eᵀ)`, input gradient `(dlogits, E)`, weight gradient
//! `(h, dlogits)`, which gives `dEᵀ [C, V]`, transposed into `E`'s gradient
//! on top of the embedding lookup's own. The head's products, like every
//! other product of the model, run on the CUDA engine when one is in use
//! ([`crate::device`]).
//!
//! Positions are learned (a second embedding table, GPT-2) or the fixed
//! sinusoids of Vaswani et al. 2017, section 3.5:
//! `PE[t, 2i] = sin(t / 10000^(2i/C))`, `PE[t, 2i+1] = cos(t / 10000^(2i/C))`.
//!
//! Names a plan can be given to ([`Transformer::plan_names`]): `block{i}`
//! (every product of the block), `block{i}.attn` (the Q/K/V and output
//! projections and, through the plan's `attn_qk` / `attn_av` roles, the
//! score products), `block{i}.mlp.fc1`, `block{i}.mlp.fc2`, and `head`.

use amsim::gemm::{MatMut, MatRef};
use amsim::MultiplierPlan;

use crate::device::gemm;
use crate::init::Init;
use crate::layers::quant::{quantized, QuantState};
use crate::layers::{
    CausalSelfAttention, Dense, Embedding, Gelu, Layer, LayerNorm, MacCounts, Param,
};
use crate::planned::PlannedModel;
use crate::rng::{rng_for, Purpose};
use crate::{NetError, Result, Tensor};

/// The network name used in checkpoints and run files.
pub const TRANSFORMER_NAME: &str = "transformer";

/// Standard deviation of the token and position embeddings (GPT-2).
pub const EMBEDDING_STD: f32 = 0.02;

/// How positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// A learned `[context, C]` table.
    Learned,
    /// Fixed sinusoids (no parameters).
    Sinusoidal,
}

impl Positions {
    /// `learned` or `sinusoidal`.
    pub fn name(self) -> &'static str {
        match self {
            Positions::Learned => "learned",
            Positions::Sinusoidal => "sinusoidal",
        }
    }

    /// Parse [`Positions::name`].
    pub fn parse(s: &str) -> Result<Positions> {
        match s {
            "learned" => Ok(Positions::Learned),
            "sinusoidal" => Ok(Positions::Sinusoidal),
            _ => Err(NetError::Config(format!(
                "unknown position encoding '{s}'; expected learned or sinusoidal"
            ))),
        }
    }
}

/// The size and options of a [`Transformer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransformerConfig {
    /// Vocabulary size V.
    pub vocab: usize,
    /// Longest sequence T the model takes (positions 0..context).
    pub context: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Width C.
    pub width: usize,
    /// Attention heads H (must divide C).
    pub heads: usize,
    /// Position encoding.
    pub positions: Positions,
    /// Whether the output head reuses the token embedding.
    pub tied_head: bool,
}

impl TransformerConfig {
    /// Check the sizes; the message names the option that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(NetError::Config(m));
        if self.vocab == 0 {
            return bad("the vocabulary is empty".into());
        }
        if self.context == 0 || self.layers == 0 || self.width == 0 || self.heads == 0 {
            return bad(format!(
                "context, layers, width and heads must be at least 1 (got context {}, layers {}, \
                 width {}, heads {})",
                self.context, self.layers, self.width, self.heads
            ));
        }
        if self.width % self.heads != 0 {
            return bad(format!(
                "--heads {} does not divide --width {}: each head needs width / heads channels",
                self.heads, self.width
            ));
        }
        if self.positions == Positions::Sinusoidal && self.width % 2 != 0 {
            return bad(format!(
                "sinusoidal positions need an even --width, got {}",
                self.width
            ));
        }
        Ok(())
    }
}

/// One pre-LN block: `h = x + attn(ln1(x))`, `y = h + fc2(gelu(fc1(ln2(h))))`.
#[derive(Debug, Clone)]
struct Block {
    name: String,
    ln1: LayerNorm,
    attn: CausalSelfAttention,
    ln2: LayerNorm,
    fc1: Dense,
    gelu: Gelu,
    fc2: Dense,
}

impl Block {
    fn new(
        name: &str,
        c: usize,
        heads: usize,
        plan: &MultiplierPlan,
        seed: u64,
        index: u64,
    ) -> Result<Block> {
        let mut rng = rng_for(seed, Purpose::Init, &[index]);
        Ok(Block {
            name: name.to_string(),
            ln1: LayerNorm::new(&format!("{name}.ln1"), c),
            attn: CausalSelfAttention::new(
                &format!("{name}.attn"),
                c,
                heads,
                plan.clone(),
                &mut rng,
            )?,
            ln2: LayerNorm::new(&format!("{name}.ln2"), c),
            fc1: Dense::new(
                &format!("{name}.mlp.fc1"),
                c,
                4 * c,
                plan.clone(),
                Init::GlorotUniform,
                &mut rng,
            ),
            gelu: Gelu::new(&format!("{name}.mlp.gelu")),
            fc2: Dense::new(
                &format!("{name}.mlp.fc2"),
                4 * c,
                c,
                plan.clone(),
                Init::GlorotUniform,
                &mut rng,
            ),
        })
    }

    /// `x [N, T, C] -> [N, T, C]`.
    fn forward(&mut self, x: &Tensor, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let (n, t, c) = (x.shape[0], x.shape[1], x.shape[2]);
        let a = self.attn.forward(&self.ln1.forward(x, train)?, train)?;
        let mut h = x.clone();
        add_into(&mut h.data, &a.data);
        let m = self.ln2.forward(&h, train)?.reshape(&[n * t, c])?;
        let m = self.fc1.forward(&m, train)?;
        let m = self.gelu.forward(&m, train)?;
        let m = self.fc2.forward(&m, train)?;
        add_into(&mut h.data, &m.data);
        Ok(h)
    }

    /// `dy [N, T, C] -> dx [N, T, C]`, filling the block's gradients.
    fn backward(&mut self, dy: &Tensor) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let (n, t, c) = (dy.shape[0], dy.shape[1], dy.shape[2]);
        let missing =
            |who: &str| NetError::shape(format!("{}: no input gradient from {who}", self.name));
        let d = self
            .fc2
            .backward(&dy.clone().reshape(&[n * t, c])?, true)?
            .ok_or_else(|| missing("fc2"))?;
        let d = self
            .gelu
            .backward(&d, true)?
            .ok_or_else(|| missing("gelu"))?;
        let d = self.fc1.backward(&d, true)?.ok_or_else(|| missing("fc1"))?;
        let d = self
            .ln2
            .backward(&d.reshape(&[n, t, c])?, true)?
            .ok_or_else(|| missing("ln2"))?;
        // dh = dy (skip) + the MLP branch's gradient.
        let mut dh = dy.clone();
        add_into(&mut dh.data, &d.data);
        let d = self
            .attn
            .backward(&dh, true)?
            .ok_or_else(|| missing("attn"))?;
        let d = self.ln1.backward(&d, true)?.ok_or_else(|| missing("ln1"))?;
        add_into(&mut dh.data, &d.data);
        Ok(dh)
    }

    fn params(&self) -> Vec<&Param> {
        let mut p = self.ln1.params();
        p.extend(self.attn.params());
        p.extend(self.ln2.params());
        p.extend(self.fc1.params());
        p.extend(self.fc2.params());
        p
    }

    fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = self.ln1.params_mut();
        p.extend(self.attn.params_mut());
        p.extend(self.ln2.params_mut());
        p.extend(self.fc1.params_mut());
        p.extend(self.fc2.params_mut());
        p
    }

    /// Products of one sequence of `t` positions.
    fn macs(&self, t: usize) -> MacCounts {
        let mut m = self.attn.macs(&[t, self.attn.dim()]);
        for fc in [&self.fc1, &self.fc2] {
            let per = fc.macs(&[fc.in_features()]);
            m += MacCounts {
                forward: per.forward * t as u64,
                grad_input: per.grad_input * t as u64,
                grad_weight: per.grad_weight * t as u64,
            };
        }
        m
    }
}

/// `acc += v`, elementwise.
fn add_into(acc: &mut [f32], v: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(v) {
        *a += b;
    }
}

/// The output head.
// One per model: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Head {
    /// `logits = h·Eᵀ` with the token embedding `E`; the cache holds `h`.
    Tied {
        plan: MultiplierPlan,
        cache_h: Vec<f32>,
        /// The int8 quantization of `h` (an `int8:` plan quantizes the
        /// head as a dense layer with weights `Eᵀ`).
        quant: QuantState,
    },
    /// `logits = h·W + b`.
    Untied(Dense),
}

/// The character-level language model. See the module documentation.
#[derive(Debug, Clone)]
pub struct Transformer {
    config: TransformerConfig,
    tok_emb: Embedding,
    /// The learned position table (`None` with sinusoids).
    pos_emb: Option<Embedding>,
    /// The sinusoid table `[context, C]` (empty for learned positions).
    pos_fixed: Vec<f32>,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Head,
    /// Backward cache: `(N, T)` of the last training forward.
    cache_batch_seq: (usize, usize),
}

impl Transformer {
    /// A model of `config` with every product on `plan`; weights from
    /// `seed` (one stream per block, so the sizes of other blocks do not
    /// change a block's weights).
    pub fn new(config: TransformerConfig, plan: MultiplierPlan, seed: u64) -> Result<Transformer> {
        config.validate()?;
        let c = config.width;
        let tok_emb = Embedding::new(
            "tok_emb",
            config.vocab,
            c,
            EMBEDDING_STD,
            &mut rng_for(seed, Purpose::Init, &[0]),
        );
        let (pos_emb, pos_fixed) = match config.positions {
            Positions::Learned => (
                Some(Embedding::new(
                    "pos_emb",
                    config.context,
                    c,
                    EMBEDDING_STD,
                    &mut rng_for(seed, Purpose::Init, &[1]),
                )),
                Vec::new(),
            ),
            Positions::Sinusoidal => (None, sinusoids(config.context, c)),
        };
        let blocks = (0..config.layers)
            .map(|i| {
                Block::new(
                    &format!("block{i}"),
                    c,
                    config.heads,
                    &plan,
                    seed,
                    2 + i as u64,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let head = if config.tied_head {
            Head::Tied {
                plan,
                cache_h: Vec::new(),
                quant: QuantState::default(),
            }
        } else {
            Head::Untied(Dense::new(
                "head",
                c,
                config.vocab,
                plan,
                Init::GlorotUniform,
                &mut rng_for(seed, Purpose::Init, &[2 + config.layers as u64]),
            ))
        };
        Ok(Transformer {
            config,
            tok_emb,
            pos_emb,
            pos_fixed,
            blocks,
            ln_f: LayerNorm::new("ln_f", c),
            head,
            cache_batch_seq: (0, 0),
        })
    }

    /// The model's size and options.
    pub fn config(&self) -> &TransformerConfig {
        &self.config
    }

    /// `transformer`: the name checkpoints record.
    pub fn name(&self) -> &str {
        TRANSFORMER_NAME
    }

    /// Logits `[N·T, V]` of ids `[N, T]` (row-major, `ids.len() = N·T`); the
    /// row of position `(n, t)` scores the token that follows it. With
    /// `train`, layers keep what [`Transformer::backward`] needs.
    pub fn forward(&mut self, ids: &[u32], n: usize, t: usize, train: bool) -> Result<Tensor> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let (c, v) = (self.config.width, self.config.vocab);
        if t == 0 || t > self.config.context {
            return Err(NetError::shape(format!(
                "a sequence of {t} tokens does not fit the model's context of {}",
                self.config.context
            )));
        }
        let mut x = self.tok_emb.forward_ids(ids, n, t, train)?;
        match &mut self.pos_emb {
            Some(pos) => {
                let pos_ids: Vec<u32> = (0..n).flat_map(|_| 0..t as u32).collect();
                let p = pos.forward_ids(&pos_ids, n, t, train)?;
                add_into(&mut x.data, &p.data);
            }
            None => {
                for row in x.data.chunks_exact_mut(t * c) {
                    add_into(row, &self.pos_fixed[..t * c]);
                }
            }
        }
        for b in &mut self.blocks {
            x = b.forward(&x, train)?;
        }
        let h = self.ln_f.forward(&x, train)?.reshape(&[n * t, c])?;
        let logits = match &mut self.head {
            Head::Untied(d) => d.forward(&h, train)?,
            Head::Tied {
                plan,
                cache_h,
                quant,
            } if quantized("head", plan)? => {
                let mut y = Tensor::zeros(&[n * t, v]);
                let et = transpose(&self.tok_emb.table.value, v, c);
                quant.dense_forward(plan, &h.data, &et, &mut y.data, n * t, c, v, train)?;
                if train {
                    *cache_h = h.data;
                }
                y
            }
            Head::Tied { plan, cache_h, .. } => {
                let mut y = Tensor::zeros(&[n * t, v]);
                gemm(
                    &plan.forward,
                    MatRef::row_major(&h.data, n * t, c)?,
                    MatRef::row_major(&self.tok_emb.table.value, v, c)?.t(),
                    MatMut::row_major(&mut y.data, n * t, v)?,
                    false,
                )?;
                if train {
                    *cache_h = h.data;
                }
                y
            }
        };
        if train {
            self.cache_batch_seq = (n, t);
        }
        Ok(logits)
    }

    /// Back-propagate `dlogits [N·T, V]` through the last training forward
    /// pass, overwriting every parameter's gradient.
    pub fn backward(&mut self, dlogits: &Tensor) -> Result<()> {
        let _span = amsim::timing::span(amsim::timing::Op::Residual);
        let (n, t) = self.cache_batch_seq;
        let (c, v) = (self.config.width, self.config.vocab);
        if dlogits.shape != [n * t, v] || n * t == 0 {
            return Err(NetError::shape(format!(
                "transformer: backward expected dlogits [{}, {v}] (after a training forward), got {:?}",
                n * t,
                dlogits.shape
            )));
        }
        // The tied head's table gradient, as dEᵀ [C, V]; added to the
        // lookup's gradient once that is known.
        let mut tied_grad_t = Vec::new();
        let dh = match &mut self.head {
            Head::Untied(d) => d
                .backward(dlogits, true)?
                .ok_or_else(|| NetError::shape("head: no input gradient"))?,
            Head::Tied {
                plan,
                cache_h,
                quant,
            } if quantized("head", plan)? => {
                // A dense layer with W = Eᵀ [C, V]: dW = dEᵀ, dx = dh.
                tied_grad_t = vec![0.0f32; c * v];
                let et = transpose(&self.tok_emb.table.value, v, c);
                let dh = quant
                    .dense_backward(
                        "head",
                        plan,
                        cache_h,
                        &et,
                        &dlogits.data,
                        &mut tied_grad_t,
                        n * t,
                        c,
                        v,
                        true,
                    )?
                    .ok_or_else(|| NetError::shape("head: no input gradient"))?;
                Tensor {
                    shape: vec![n * t, c],
                    data: dh,
                }
            }
            Head::Tied { plan, cache_h, .. } => {
                // dEᵀ [C, V] = hᵀ [C, N·T] · dlogits [N·T, V]
                tied_grad_t = vec![0.0f32; c * v];
                gemm(
                    &plan.grad_weight,
                    MatRef::row_major(cache_h, n * t, c)?.t(),
                    MatRef::row_major(&dlogits.data, n * t, v)?,
                    MatMut::row_major(&mut tied_grad_t, c, v)?,
                    false,
                )?;
                // dh [N·T, C] = dlogits [N·T, V] · E [V, C]
                let mut dh = Tensor::zeros(&[n * t, c]);
                gemm(
                    &plan.grad_input,
                    MatRef::row_major(&dlogits.data, n * t, v)?,
                    MatRef::row_major(&self.tok_emb.table.value, v, c)?,
                    MatMut::row_major(&mut dh.data, n * t, c)?,
                    false,
                )?;
                dh
            }
        };
        let mut g = self
            .ln_f
            .backward(&dh.reshape(&[n, t, c])?, true)?
            .ok_or_else(|| NetError::shape("ln_f: no input gradient"))?;
        for b in self.blocks.iter_mut().rev() {
            g = b.backward(&g)?;
        }
        self.tok_emb.backward(&g, false)?;
        if let Some(pos) = &mut self.pos_emb {
            pos.backward(&g, false)?;
        }
        if !tied_grad_t.is_empty() {
            let grad = &mut self.tok_emb.table.grad;
            for ci in 0..c {
                for vi in 0..v {
                    grad[vi * c + ci] += tied_grad_t[ci * v + vi];
                }
            }
        }
        Ok(())
    }

    /// All trainable parameters in a fixed order: embeddings, blocks in
    /// order, final LayerNorm, untied head.
    pub fn params(&self) -> Vec<&Param> {
        let mut p = self.tok_emb.params();
        if let Some(pos) = &self.pos_emb {
            p.extend(pos.params());
        }
        for b in &self.blocks {
            p.extend(b.params());
        }
        p.extend(self.ln_f.params());
        if let Head::Untied(d) = &self.head {
            p.extend(d.params());
        }
        p
    }

    /// [`Transformer::params`], mutably, in the same order.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut p = self.tok_emb.params_mut();
        if let Some(pos) = &mut self.pos_emb {
            p.extend(pos.params_mut());
        }
        for b in &mut self.blocks {
            p.extend(b.params_mut());
        }
        p.extend(self.ln_f.params_mut());
        if let Head::Untied(d) = &mut self.head {
            p.extend(d.params_mut());
        }
        p
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.len()).sum()
    }

    /// The plan of one of [`Transformer::plan_names`] (for a block, that of
    /// its attention).
    pub fn plan_by_name(&self, name: &str) -> Result<&MultiplierPlan> {
        if name == "head" {
            return Ok(match &self.head {
                Head::Untied(d) => d.plan().expect("a dense layer has a plan"),
                Head::Tied { plan, .. } => plan,
            });
        }
        for b in &self.blocks {
            match name.strip_prefix(b.name.as_str()) {
                Some("") | Some(".attn") => {
                    return Ok(b.attn.plan().expect("attention has a plan"))
                }
                Some(".mlp.fc1") => return Ok(b.fc1.plan().expect("a dense layer has a plan")),
                Some(".mlp.fc2") => return Ok(b.fc2.plan().expect("a dense layer has a plan")),
                _ => {}
            }
        }
        Err(NetError::UnknownLayer {
            net: TRANSFORMER_NAME.into(),
            name: name.to_string(),
            valid: self.plan_names().join(", "),
        })
    }

    /// Multiply-accumulates per role of one training sequence of `t`
    /// positions (an evaluation sequence costs `forward` only): the blocks'
    /// projections, score products and MLPs, and the head.
    pub fn macs_per_sequence(&self, t: usize) -> MacCounts {
        let mut m = MacCounts::default();
        for b in &self.blocks {
            m += b.macs(t);
        }
        let head = (t * self.config.width * self.config.vocab) as u64;
        m += MacCounts {
            forward: head,
            grad_input: head,
            grad_weight: head,
        };
        m
    }

    /// A summary: configuration and parameter count.
    pub fn summary(&self) -> String {
        let c = &self.config;
        format!(
            "transformer: {} layers, width {}, {} heads, context {}, vocabulary {}, {} positions, \
             {} head; {} parameters",
            c.layers,
            c.width,
            c.heads,
            c.context,
            c.vocab,
            c.positions.name(),
            if c.tied_head { "tied" } else { "untied" },
            self.num_params()
        )
    }
}

impl PlannedModel for Transformer {
    /// Every name a plan can be given to, in order (see the module
    /// documentation).
    fn plan_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for b in &self.blocks {
            names.push(b.name.clone());
            names.push(format!("{}.attn", b.name));
            names.push(format!("{}.mlp.fc1", b.name));
            names.push(format!("{}.mlp.fc2", b.name));
        }
        names.push("head".into());
        names
    }

    /// Set the plan of one of [`Transformer::plan_names`]; an error listing
    /// the valid names otherwise.
    fn set_plan_by_name(&mut self, name: &str, plan: MultiplierPlan) -> Result<()> {
        if name == "head" {
            match &mut self.head {
                Head::Untied(d) => {
                    d.set_plan(plan);
                }
                Head::Tied { plan: p, .. } => *p = plan,
            }
            return Ok(());
        }
        for b in &mut self.blocks {
            let Some(rest) = name.strip_prefix(b.name.as_str()) else {
                continue;
            };
            match rest {
                "" => {
                    b.attn.set_plan(plan.clone());
                    b.fc1.set_plan(plan.clone());
                    b.fc2.set_plan(plan);
                }
                ".attn" => {
                    b.attn.set_plan(plan);
                }
                ".mlp.fc1" => {
                    b.fc1.set_plan(plan);
                }
                ".mlp.fc2" => {
                    b.fc2.set_plan(plan);
                }
                _ => continue,
            }
            return Ok(());
        }
        Err(NetError::UnknownLayer {
            net: TRANSFORMER_NAME.into(),
            name: name.to_string(),
            valid: self.plan_names().join(", "),
        })
    }

    fn macs_per_example(&self) -> MacCounts {
        self.macs_per_sequence(self.config.context)
    }
}

/// The sinusoid table `[context, C]` (C even) of Vaswani et al. 2017,
/// section 3.5, computed in f64.
fn sinusoids(context: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; context * c];
    for t in 0..context {
        for i in 0..c / 2 {
            let angle = t as f64 / 10000f64.powf(2.0 * i as f64 / c as f64);
            out[t * c + 2 * i] = angle.sin() as f32;
            out[t * c + 2 * i + 1] = angle.cos() as f32;
        }
    }
    out
}

/// `[rows, cols]` row-major into `[cols, rows]`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; x.len()];
    for r in 0..rows {
        for (cc, &v) in x[r * cols..][..cols].iter().enumerate() {
            t[cc * rows + r] = v;
        }
    }
    t
}
