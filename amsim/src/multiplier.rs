//! Resolved multipliers and per-layer multiplier plans.

use std::fmt;
use std::sync::Arc;

use crate::product::{amsim_mul, bf16_mul, direct_mul};
use crate::{IntLut, Lut, ModelFn, WideIntMul};

/// How a layer quantizes the operands of an integer product (see
/// `nets::layers::quant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IntScheme {
    /// Weights: one scale per output channel (else one for the tensor).
    pub per_channel: bool,
    /// Activations: asymmetric, with a zero point (else symmetric).
    pub asymmetric: bool,
}

/// A multiplier ready to use: what every product of a GEMM or convolution
/// goes through.
#[derive(Clone)]
pub enum Multiplier {
    /// Native IEEE FP32 product (the exact baseline).
    Fp32,
    /// Operands rounded to bfloat16 (nearest even), exact product.
    Bf16,
    /// AMSim through a lookup table.
    Lut(Arc<Lut>),
    /// The model called for every product (slow; verification).
    Direct {
        /// Model name.
        name: String,
        /// The model.
        func: ModelFn,
        /// Mantissa bits passed to the model.
        bits: u32,
    },
    /// An 8-bit integer model's table: the layer quantizes its operands to
    /// 8-bit codes, sums the table's products exactly in `i32` and scales
    /// the sums back. Dense, convolution and attention layers do so; a float
    /// product given this multiplier is an error ([`Multiplier::float_only`]).
    Int8 {
        /// The table.
        lut: Arc<IntLut>,
        /// How the layer quantizes the operands.
        scheme: IntScheme,
    },
    /// A 12- or 16-bit integer model (`int12:`, `int16:`): as
    /// [`Multiplier::Int8`] with `bits`-bit operands, exact `i64` sums, and
    /// the products from a 4096 x 4096 table (12 bits) or the model called
    /// for each (16 bits).
    IntWide {
        /// The model.
        mul: Arc<WideIntMul>,
        /// How the layer quantizes the operands.
        scheme: IntScheme,
    },
}

impl Multiplier {
    /// The product of `a` and `b` under this multiplier: the scalar
    /// reference for every engine.
    #[inline]
    pub fn mul(&self, a: f32, b: f32) -> f32 {
        match self {
            Multiplier::Fp32 => a * b,
            Multiplier::Bf16 => bf16_mul(a, b),
            Multiplier::Lut(lut) => amsim_mul(a, b, lut),
            Multiplier::Direct { func, bits, .. } => direct_mul(a, b, *func, *bits),
            // Operands already on the integer grid (unit scale): rounded to
            // the nearest integer and clamped to the operand range.
            Multiplier::Int8 { lut, .. } => {
                let r = lut.operand_range();
                let code = |v: f32| (v.round() as i32).clamp(*r.start(), *r.end());
                lut.mul(code(a), code(b)) as f32
            }
            Multiplier::IntWide { mul, .. } => {
                let r = mul.operand_range();
                let code = |v: f32| (v.round() as i32).clamp(*r.start(), *r.end());
                mul.mul(code(a), code(b)) as f32
            }
        }
    }

    /// An error for a float product (GEMM, convolution, attention) given an
    /// integer multiplier: those need the operands quantized by a layer.
    pub fn float_only(&self, what: &str) -> crate::Result<()> {
        match self {
            Multiplier::Int8 { .. } | Multiplier::IntWide { .. } => Err(crate::AmsimError::Other(format!(
                "{}: {what} multiplies floats; integer multipliers quantize their operands in the dense, convolution and attention layers only (give this product a float multiplier, e.g. fp32)",
                self.label()
            ))),
            _ => Ok(()),
        }
    }

    /// The canonical spec string (`fp32`, `bf16`, `mbm:7`, `direct:mbm:23`).
    pub fn label(&self) -> String {
        match self {
            Multiplier::Fp32 => "fp32".into(),
            Multiplier::Bf16 => "bf16".into(),
            Multiplier::Lut(l) => format!("{}:{}", l.model_name(), l.bits()),
            Multiplier::Direct { name, bits, .. } => format!("direct:{name}:{bits}"),
            Multiplier::Int8 { lut, scheme } => {
                int_label(8, lut.model_name(), lut.signed(), *scheme)
            }
            Multiplier::IntWide { mul, scheme } => {
                int_label(mul.bits(), mul.model_name(), mul.signed(), *scheme)
            }
        }
    }
}

/// `intBITS:MODEL` and the options that differ from the defaults.
fn int_label(bits: u32, model: &str, signed: bool, scheme: IntScheme) -> String {
    let mut s = format!("int{bits}:{model}");
    if !scheme.per_channel {
        s.push_str(":per-tensor");
    }
    // The activation scheme only when it is not the model's default (sym
    // for signed, asym for unsigned).
    if scheme.asymmetric == signed {
        s.push_str(if scheme.asymmetric { ":asym" } else { ":sym" });
    }
    s
}

impl fmt::Debug for Multiplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Multiplier({})", self.label())
    }
}

impl fmt::Display for Multiplier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// The product a multiplier is used for inside a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Forward pass (activation x weight).
    Forward,
    /// Input gradient (output gradient x weight).
    GradInput,
    /// Weight gradient (activation x output gradient).
    GradWeight,
    /// Attention scores Q·Kᵀ.
    AttnQk,
    /// Attention-weighted values A·V.
    AttnAv,
}

impl Role {
    /// All roles, in plan order.
    pub const ALL: [Role; 5] = [
        Role::Forward,
        Role::GradInput,
        Role::GradWeight,
        Role::AttnQk,
        Role::AttnAv,
    ];

    /// The key used in plan strings and files.
    pub fn key(self) -> &'static str {
        match self {
            Role::Forward => "fwd",
            Role::GradInput => "dx",
            Role::GradWeight => "dw",
            Role::AttnQk => "attn_qk",
            Role::AttnAv => "attn_av",
        }
    }

    /// Parse a plan key.
    pub fn from_key(key: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.key() == key)
    }
}

/// One multiplier for each product of a layer: forward, input gradient and
/// weight gradient (and, for attention, the two score products).
#[derive(Debug, Clone)]
pub struct MultiplierPlan {
    /// Forward product.
    pub forward: Multiplier,
    /// Input-gradient product.
    pub grad_input: Multiplier,
    /// Weight-gradient product.
    pub grad_weight: Multiplier,
    /// Attention Q·Kᵀ (forward and both its gradients).
    pub attn_qk: Multiplier,
    /// Attention A·V (forward and both its gradients).
    pub attn_av: Multiplier,
}

impl MultiplierPlan {
    /// The same multiplier for every product.
    pub fn uniform(m: Multiplier) -> Self {
        MultiplierPlan {
            forward: m.clone(),
            grad_input: m.clone(),
            grad_weight: m.clone(),
            attn_qk: m.clone(),
            attn_av: m,
        }
    }

    /// The multiplier for `role`.
    pub fn get(&self, role: Role) -> &Multiplier {
        match role {
            Role::Forward => &self.forward,
            Role::GradInput => &self.grad_input,
            Role::GradWeight => &self.grad_weight,
            Role::AttnQk => &self.attn_qk,
            Role::AttnAv => &self.attn_av,
        }
    }

    /// Replace the multiplier for `role`.
    pub fn set(&mut self, role: Role, m: Multiplier) {
        match role {
            Role::Forward => self.forward = m,
            Role::GradInput => self.grad_input = m,
            Role::GradWeight => self.grad_weight = m,
            Role::AttnQk => self.attn_qk = m,
            Role::AttnAv => self.attn_av = m,
        }
    }

    /// `fwd=..,dx=..,dw=..` (attention keys only when they differ from the
    /// forward multiplier), or the single spec when all are the same.
    pub fn label(&self) -> String {
        let labels: Vec<String> = Role::ALL.iter().map(|r| self.get(*r).label()).collect();
        if labels.iter().all(|l| *l == labels[0]) {
            return labels[0].clone();
        }
        let mut parts: Vec<String> = Vec::new();
        for (r, l) in Role::ALL.iter().zip(&labels) {
            let is_attn = matches!(r, Role::AttnQk | Role::AttnAv);
            if !is_attn || *l != labels[0] {
                parts.push(format!("{}={}", r.key(), l));
            }
        }
        parts.join(",")
    }
}
