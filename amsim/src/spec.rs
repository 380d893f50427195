//! Multiplier spec strings, as users write them, and their resolution.
//!
//! | spec | meaning |
//! |---|---|
//! | `fp32` | native FP32 product |
//! | `bf16` | operands rounded to bfloat16, exact product |
//! | `MODEL:BITS` | the model tabulated at BITS mantissa bits (`mbm:7`) |
//! | `lut:PATH` | a table read from a file (native or ApproxTrain `.bin`) |
//! | `direct:MODEL[:BITS]` | the model called for every product (default 23 bits) |
//! | `int8:MODEL[:OPT...]` | an 8-bit integer model's table on quantized operands |
//! | `int8:PATH.ilut[:OPT...]` | the same with an integer table read from a file (`approxtrain lut build --model M`) |
//! | `int12:MODEL[:OPT...]` | a 12-bit integer model's 4096 x 4096 table on quantized operands |
//! | `int16:MODEL[:OPT...]` | a 16-bit integer model, called for every product |
//!
//! An integer spec's options say how a layer quantizes its operands:
//! `per-channel` (default) or `per-tensor` weight scales, `sym` or `asym`
//! activations (default: `sym` for a signed model, `asym` for an unsigned
//! one); see `nets::layers::quant`. Integer models take no bit width: the
//! prefix is the width, and a model of another width is an error naming
//! the right prefix.
//!
//! A plan is either one spec for every product or comma-separated
//! `ROLE=SPEC` pairs with roles `fwd`, `dx`, `dw`, `attn_qk`, `attn_av`
//! (`fwd=mbm:7,dx=fp32,dw=mbm:7`); roles left out take the forward spec
//! (attention) or `fp32` when no forward spec is given either.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::lut::{check_bits, MAX_LUT_BITS};
use crate::model::{find, find_int, find_wide_int, int_registry, wide_int_registry};
use crate::multiplier::IntScheme;
use crate::{
    AmsimError, IntLut, Lut, ModelInfo, Multiplier, MultiplierPlan, Result, Role, WideIntMul,
};

/// The largest width `direct` mode accepts (the full FP32 fraction).
pub const MAX_DIRECT_BITS: u32 = 23;

/// A parsed, not yet resolved, multiplier spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MultiplierSpec {
    /// `fp32`
    Fp32,
    /// `bf16`
    Bf16,
    /// `MODEL:BITS`
    Model {
        /// Model name.
        name: String,
        /// Table width.
        bits: u32,
    },
    /// `lut:PATH`
    LutFile(PathBuf),
    /// `direct:MODEL[:BITS]`
    Direct {
        /// Model name.
        name: String,
        /// Mantissa bits handed to the model.
        bits: u32,
    },
    /// `int8:MODEL[:OPT...]`, `int12:MODEL[:OPT...]`, `int16:MODEL[:OPT...]`
    Int {
        /// Operand width: 8, 12 or 16.
        bits: u32,
        /// Integer model name, or (8 bits) the path of a table file (`.ilut`).
        name: String,
        /// `per-tensor` weight scales (else one per output channel).
        per_tensor: bool,
        /// `asym` (`Some(true)`) or `sym` (`Some(false)`) activations;
        /// `None`: the model's default.
        asymmetric: Option<bool>,
    },
}

/// The options an integer spec takes, for messages.
const INT_OPTIONS: &str = "per-channel, per-tensor, sym, asym";

/// The operand widths of integer specs (`int8:`, `int12:`, `int16:`).
pub const INT_WIDTHS: [u32; 3] = [8, 12, 16];

/// Parse the part of an `intBITS:` spec after the prefix.
fn parse_int(spec: &str, bits: u32, rest: &str) -> Result<MultiplierSpec> {
    let mut parts = rest.split(':');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err(bad(
            spec,
            format!("int{bits}: needs an integer model, e.g. int{bits}:exact{bits}s (list them with `approxtrain models`)"),
        ));
    }
    if is_table_file(name) {
        if bits != 8 {
            return Err(bad(
                spec,
                format!("table files are 8-bit (int8:{name}); int{bits}: takes a model name"),
            ));
        }
    } else {
        check_name(spec, name)?;
    }
    let (mut per_tensor, mut asymmetric) = (None, None);
    for opt in parts {
        let (slot, value) = match opt {
            "per-channel" => (&mut per_tensor, false),
            "per-tensor" => (&mut per_tensor, true),
            "sym" => (&mut asymmetric, false),
            "asym" => (&mut asymmetric, true),
            _ if opt.parse::<u32>().is_ok() => {
                return Err(bad(
                    spec,
                    format!("integer models take no bit width ('{opt}'); options: {INT_OPTIONS}"),
                ))
            }
            _ => {
                return Err(bad(
                    spec,
                    format!("unknown int{bits} option '{opt}'; options: {INT_OPTIONS}"),
                ))
            }
        };
        if slot.replace(value).is_some() {
            return Err(bad(
                spec,
                format!("option '{opt}' conflicts with an earlier one"),
            ));
        }
    }
    Ok(MultiplierSpec::Int {
        bits,
        name: name.to_string(),
        per_tensor: per_tensor.unwrap_or(false),
        asymmetric,
    })
}

/// Whether the model part of an `int8:` spec names a table file
/// (`int8:PATH.ilut`) rather than a registered model.
fn is_table_file(name: &str) -> bool {
    name.ends_with(".ilut")
}

fn bad(spec: &str, reason: impl Into<String>) -> AmsimError {
    AmsimError::BadSpec {
        spec: spec.to_string(),
        reason: reason.into(),
    }
}

fn parse_bits(spec: &str, s: &str, max: u32) -> Result<u32> {
    let bits: u32 = s.parse().map_err(|_| {
        bad(
            spec,
            format!("'{s}' is not a bit width (expected a number 1..={max})"),
        )
    })?;
    if !(1..=max).contains(&bits) {
        return Err(bad(
            spec,
            format!("bit width {bits} is out of range 1..={max}"),
        ));
    }
    Ok(bits)
}

fn check_name(spec: &str, name: &str) -> Result<()> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad(
            spec,
            format!("'{name}' is not a model name (letters, digits and '_')"),
        ));
    }
    Ok(())
}

impl FromStr for MultiplierSpec {
    type Err = AmsimError;

    fn from_str(s: &str) -> Result<Self> {
        let spec = s.trim();
        match spec {
            "" => return Err(bad(s, "empty spec (try fp32, bf16 or mbm:7)")),
            "fp32" => return Ok(MultiplierSpec::Fp32),
            "bf16" => return Ok(MultiplierSpec::Bf16),
            _ => {}
        }
        if let Some(path) = spec.strip_prefix("lut:") {
            if path.is_empty() {
                return Err(bad(s, "lut: needs a file path, e.g. lut:mbm7.lut"));
            }
            return Ok(MultiplierSpec::LutFile(PathBuf::from(path)));
        }
        for bits in INT_WIDTHS {
            if let Some(rest) = spec.strip_prefix(&format!("int{bits}:")) {
                return parse_int(s, bits, rest);
            }
        }
        if let Some(rest) = spec.strip_prefix("direct:") {
            let mut parts = rest.split(':');
            let name = parts.next().unwrap_or_default();
            check_name(s, name)?;
            let bits = match parts.next() {
                Some(b) => parse_bits(s, b, MAX_DIRECT_BITS)?,
                None => MAX_DIRECT_BITS,
            };
            if parts.next().is_some() {
                return Err(bad(s, "expected direct:MODEL or direct:MODEL:BITS"));
            }
            return Ok(MultiplierSpec::Direct {
                name: name.to_string(),
                bits,
            });
        }
        let Some((name, bits)) = spec.split_once(':') else {
            return Err(bad(
                s,
                "expected fp32, bf16, MODEL:BITS, lut:PATH or direct:MODEL[:BITS]",
            ));
        };
        check_name(s, name)?;
        if bits.contains(':') {
            return Err(bad(s, "expected MODEL:BITS"));
        }
        let bits = parse_bits(s, bits, MAX_LUT_BITS)?;
        Ok(MultiplierSpec::Model {
            name: name.to_string(),
            bits,
        })
    }
}

impl fmt::Display for MultiplierSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MultiplierSpec::Fp32 => f.write_str("fp32"),
            MultiplierSpec::Bf16 => f.write_str("bf16"),
            MultiplierSpec::Model { name, bits } => write!(f, "{name}:{bits}"),
            MultiplierSpec::LutFile(p) => write!(f, "lut:{}", p.display()),
            MultiplierSpec::Direct { name, bits } => write!(f, "direct:{name}:{bits}"),
            MultiplierSpec::Int {
                bits,
                name,
                per_tensor,
                asymmetric,
            } => {
                write!(f, "int{bits}:{name}")?;
                if *per_tensor {
                    f.write_str(":per-tensor")?;
                }
                match asymmetric {
                    Some(true) => f.write_str(":asym"),
                    Some(false) => f.write_str(":sym"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Resolves specs to multipliers against a model registry, building each
/// table once and sharing it.
pub struct Resolver<'a> {
    models: &'a [ModelInfo],
    cache: Mutex<HashMap<MultiplierSpec, Arc<Lut>>>,
    int_cache: Mutex<HashMap<String, Arc<IntLut>>>,
    /// 12-bit tables (64 MiB each) and 16-bit models, by name.
    wide_cache: Mutex<HashMap<String, Arc<WideIntMul>>>,
}

/// The operand width of the registered integer model `name` (8, 12 or
/// 16), if there is one.
fn int_model_width(name: &str) -> Option<u32> {
    if find_int(int_registry(), name).is_ok() {
        return Some(8);
    }
    find_wide_int(wide_int_registry(), name)
        .ok()
        .map(|m| m.bits)
}

impl<'a> Resolver<'a> {
    /// A resolver over `models`.
    pub fn new(models: &'a [ModelInfo]) -> Self {
        Resolver {
            models,
            cache: Mutex::new(HashMap::new()),
            int_cache: Mutex::new(HashMap::new()),
            wide_cache: Mutex::new(HashMap::new()),
        }
    }

    /// The registry this resolver uses.
    pub fn models(&self) -> &'a [ModelInfo] {
        self.models
    }

    /// The float model `name`; for the name of an integer model, an error
    /// that says how to use it.
    fn find_float(&self, spec: &MultiplierSpec, name: &str) -> Result<&'a ModelInfo> {
        find(self.models, name).map_err(|e| {
            match int_model_width(name) {
                Some(w) => bad(
                    &spec.to_string(),
                    format!("'{name}' is a {w}-bit integer model: use int{w}:{name} (integer models take no bit width and have no direct mode)"),
                ),
                None => e,
            }
        })
    }

    /// The table of integer model `name` (or of the table file `name`,
    /// `PATH.ilut`), built or read once.
    fn int_table(&self, spec: &MultiplierSpec, name: &str) -> Result<Arc<IntLut>> {
        if let Some(lut) = self.int_cache.lock().expect("cache lock").get(name) {
            return Ok(lut.clone());
        }
        if is_table_file(name) {
            let lut = Arc::new(IntLut::read(std::path::Path::new(name))?);
            self.int_cache
                .lock()
                .expect("cache lock")
                .insert(name.to_string(), lut.clone());
            return Ok(lut);
        }
        let info = find_int(int_registry(), name).map_err(|e| self.not_int(spec, 8, name, e))?;
        let lut = Arc::new(IntLut::of(info)?);
        self.int_cache
            .lock()
            .expect("cache lock")
            .insert(name.to_string(), lut.clone());
        Ok(lut)
    }

    /// The error for `intBITS:name` when `name` is no `bits`-bit integer
    /// model: the prefix to use for a model of another kind, else `e` (the
    /// list of known names).
    fn not_int(&self, spec: &MultiplierSpec, bits: u32, name: &str, e: AmsimError) -> AmsimError {
        if find(self.models, name).is_ok() {
            return bad(
                &spec.to_string(),
                format!("'{name}' is a floating-point model: use {name}:BITS (int{bits}: takes a {bits}-bit integer model)"),
            );
        }
        match int_model_width(name) {
            Some(w) => bad(
                &spec.to_string(),
                format!("'{name}' is a {w}-bit integer model: use int{w}:{name} (int{bits}: takes a {bits}-bit one)"),
            ),
            None => e,
        }
    }

    /// The registered `bits`-bit model `name` (12 or 16 bits); an error
    /// naming the right prefix for a model of another kind.
    fn find_wide(
        &self,
        spec: &MultiplierSpec,
        bits: u32,
        name: &str,
    ) -> Result<&'static crate::WideIntModelInfo> {
        find_wide_int(wide_int_registry(), name)
            .ok()
            .filter(|m| m.bits == bits)
            .ok_or_else(|| {
                let known = wide_int_registry()
                    .iter()
                    .filter(|m| m.bits == bits)
                    .map(|m| m.name)
                    .collect::<Vec<_>>()
                    .join(", ");
                self.not_int(
                    spec,
                    bits,
                    name,
                    AmsimError::UnknownModel {
                        name: name.to_string(),
                        known,
                    },
                )
            })
    }

    /// The 12- or 16-bit model `name` (a 12-bit one tabulated), built once.
    fn wide_int(&self, spec: &MultiplierSpec, bits: u32, name: &str) -> Result<Arc<WideIntMul>> {
        if let Some(m) = self.wide_cache.lock().expect("cache lock").get(name) {
            return Ok(m.clone());
        }
        let m = Arc::new(WideIntMul::of(self.find_wide(spec, bits, name)?)?);
        self.wide_cache
            .lock()
            .expect("cache lock")
            .insert(name.to_string(), m.clone());
        Ok(m)
    }

    /// Check that an integer spec names a model of its width (or, for
    /// `int8:`, a readable table file) without building a 12-bit table or
    /// calling a 16-bit model; other specs are not checked here.
    pub fn check_int(&self, spec: &MultiplierSpec) -> Result<()> {
        match spec {
            MultiplierSpec::Int { bits: 8, .. } => self.resolve(spec).map(|_| ()),
            MultiplierSpec::Int { bits, name, .. } => self.find_wide(spec, *bits, name).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Resolve one spec.
    pub fn resolve(&self, spec: &MultiplierSpec) -> Result<Multiplier> {
        match spec {
            MultiplierSpec::Int {
                bits: 8,
                name,
                per_tensor,
                asymmetric,
            } => {
                let lut = self.int_table(spec, name)?;
                let scheme = IntScheme {
                    per_channel: !per_tensor,
                    asymmetric: asymmetric.unwrap_or(!lut.signed()),
                };
                Ok(Multiplier::Int8 { lut, scheme })
            }
            MultiplierSpec::Int {
                bits,
                name,
                per_tensor,
                asymmetric,
            } => {
                let mul = self.wide_int(spec, *bits, name)?;
                let scheme = IntScheme {
                    per_channel: !per_tensor,
                    asymmetric: asymmetric.unwrap_or(!mul.signed()),
                };
                Ok(Multiplier::IntWide { mul, scheme })
            }
            MultiplierSpec::Fp32 => Ok(Multiplier::Fp32),
            MultiplierSpec::Bf16 => Ok(Multiplier::Bf16),
            MultiplierSpec::Direct { name, bits } => {
                let info = self.find_float(spec, name)?;
                Ok(Multiplier::Direct {
                    name: info.name.to_string(),
                    func: info.func,
                    bits: *bits,
                })
            }
            MultiplierSpec::Model { .. } | MultiplierSpec::LutFile(_) => {
                if let Some(lut) = self.cache.lock().expect("cache lock").get(spec) {
                    return Ok(Multiplier::Lut(lut.clone()));
                }
                let lut = match spec {
                    MultiplierSpec::Model { name, bits } => {
                        let info = self.find_float(spec, name)?;
                        check_bits(*bits)?;
                        if !info.supports_bits(*bits) {
                            return Err(bad(
                                &spec.to_string(),
                                format!(
                                    "model '{}' supports {}..={} bits",
                                    info.name, info.min_bits, info.max_bits
                                ),
                            ));
                        }
                        Lut::build(info.name, info.func, *bits)?
                    }
                    MultiplierSpec::LutFile(path) => crate::lut_file::read(path)?,
                    _ => unreachable!("matched above"),
                };
                let lut = Arc::new(lut);
                self.cache
                    .lock()
                    .expect("cache lock")
                    .insert(spec.clone(), lut.clone());
                Ok(Multiplier::Lut(lut))
            }
        }
    }

    /// Resolve a plan.
    pub fn resolve_plan(&self, plan: &PlanSpec) -> Result<MultiplierPlan> {
        let mut out = MultiplierPlan::uniform(self.resolve(&plan.forward)?);
        for role in [
            Role::GradInput,
            Role::GradWeight,
            Role::AttnQk,
            Role::AttnAv,
        ] {
            out.set(role, self.resolve(plan.get(role))?);
        }
        Ok(out)
    }
}

/// A parsed multiplier plan: one spec per role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSpec {
    /// Forward product.
    pub forward: MultiplierSpec,
    /// Input gradient.
    pub grad_input: MultiplierSpec,
    /// Weight gradient.
    pub grad_weight: MultiplierSpec,
    /// Attention Q·Kᵀ.
    pub attn_qk: MultiplierSpec,
    /// Attention A·V.
    pub attn_av: MultiplierSpec,
}

impl PlanSpec {
    /// The same spec for every role.
    pub fn uniform(spec: MultiplierSpec) -> Self {
        PlanSpec {
            forward: spec.clone(),
            grad_input: spec.clone(),
            grad_weight: spec.clone(),
            attn_qk: spec.clone(),
            attn_av: spec,
        }
    }

    /// The spec for `role`.
    pub fn get(&self, role: Role) -> &MultiplierSpec {
        match role {
            Role::Forward => &self.forward,
            Role::GradInput => &self.grad_input,
            Role::GradWeight => &self.grad_weight,
            Role::AttnQk => &self.attn_qk,
            Role::AttnAv => &self.attn_av,
        }
    }

    /// Replace the spec for `role`.
    pub fn set(&mut self, role: Role, spec: MultiplierSpec) {
        match role {
            Role::Forward => self.forward = spec,
            Role::GradInput => self.grad_input = spec,
            Role::GradWeight => self.grad_weight = spec,
            Role::AttnQk => self.attn_qk = spec,
            Role::AttnAv => self.attn_av = spec,
        }
    }
}

impl FromStr for PlanSpec {
    type Err = AmsimError;

    fn from_str(s: &str) -> Result<Self> {
        if !s.contains('=') {
            return Ok(PlanSpec::uniform(s.parse()?));
        }
        let mut given: Vec<(Role, MultiplierSpec)> = Vec::new();
        for part in s.split(',') {
            let Some((key, value)) = part.split_once('=') else {
                return Err(bad(
                    s,
                    format!("'{part}' is not ROLE=SPEC (roles: fwd, dx, dw, attn_qk, attn_av)"),
                ));
            };
            let key = key.trim();
            let role = Role::from_key(key).ok_or_else(|| {
                bad(
                    s,
                    format!("unknown role '{key}' (roles: fwd, dx, dw, attn_qk, attn_av)"),
                )
            })?;
            if given.iter().any(|(r, _)| *r == role) {
                return Err(bad(s, format!("role '{key}' given twice")));
            }
            given.push((role, value.parse()?));
        }
        let lookup = |r: Role| given.iter().find(|(g, _)| *g == r).map(|(_, v)| v.clone());
        let forward = lookup(Role::Forward).unwrap_or(MultiplierSpec::Fp32);
        let mut plan = PlanSpec::uniform(MultiplierSpec::Fp32);
        plan.forward = forward.clone();
        plan.grad_input = lookup(Role::GradInput).unwrap_or(MultiplierSpec::Fp32);
        plan.grad_weight = lookup(Role::GradWeight).unwrap_or(MultiplierSpec::Fp32);
        plan.attn_qk = lookup(Role::AttnQk).unwrap_or_else(|| forward.clone());
        plan.attn_av = lookup(Role::AttnAv).unwrap_or(forward);
        Ok(plan)
    }
}

impl fmt::Display for PlanSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all = Role::ALL.map(|r| self.get(r).to_string());
        if all.iter().all(|x| *x == all[0]) {
            return f.write_str(&all[0]);
        }
        let mut parts = Vec::new();
        for (r, v) in Role::ALL.iter().zip(&all) {
            let is_attn = matches!(r, Role::AttnQk | Role::AttnAv);
            if !is_attn || *v != all[0] {
                parts.push(format!("{}={}", r.key(), v));
            }
        }
        f.write_str(&parts.join(","))
    }
}
