//! Multiplier models as `amsim` sees them: a plain function and its metadata.

/// A functional model of a floating-point multiplier:
/// `model(a, b, bits)` returns the approximate product of `a` and `b`, both in
/// [1, 2), when the hardware keeps `bits` fraction bits of each operand. The
/// model truncates its inputs to `bits` itself (so it may be called with full
/// 23-bit mantissas in `direct` mode). For inputs in [1, 2) it must return a
/// normal float in [1, 4).
pub type ModelFn = fn(f32, f32, u32) -> f32;

/// A registered model: the function and what a designer declared about it.
#[derive(Debug, Clone, Copy)]
pub struct ModelInfo {
    /// Short name used in multiplier specs (`mbm`, `mitchell`, ...).
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Smallest supported mantissa width.
    pub min_bits: u32,
    /// Largest supported mantissa width (up to 23 for `direct` mode).
    pub max_bits: u32,
    /// Optional hardware figures (0 or negative means "not declared").
    pub area_um2: f64,
    /// Power in milliwatts.
    pub power_mw: f64,
    /// Delay in nanoseconds.
    pub delay_ns: f64,
    /// The model itself.
    pub func: ModelFn,
}

impl ModelInfo {
    /// Energy per multiply in picojoules (power x delay), when both are
    /// declared.
    pub fn energy_pj(&self) -> Option<f64> {
        energy_pj(self.power_mw, self.delay_ns)
    }

    /// Whether the model declares support for `bits`.
    pub fn supports_bits(&self, bits: u32) -> bool {
        (self.min_bits..=self.max_bits).contains(&bits)
    }
}

/// Find a model by name in a registry slice.
pub fn find<'a>(models: &'a [ModelInfo], name: &str) -> crate::Result<&'a ModelInfo> {
    models
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| crate::AmsimError::UnknownModel {
            name: name.to_string(),
            known: models.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })
}

/// A functional model of an 8-bit integer multiplier: `model(a, b)` is the
/// approximate product of two operand values, both in -128..=127 for a
/// signed model or 0..=255 for an unsigned one. The result must fit the
/// model's 16-bit product ([`IntModelInfo::product_range`]).
pub type IntModelFn = fn(i32, i32) -> i32;

/// A registered integer model (`multipliers/NAME.c` in EvoApprox's form).
#[derive(Debug, Clone, Copy)]
pub struct IntModelInfo {
    /// Name used in `int8:NAME` specs; equals the C function's name.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Signed (`int16_t NAME(int8_t, int8_t)`) or unsigned
    /// (`uint16_t NAME(uint8_t, uint8_t)`) operands.
    pub signed: bool,
    /// Optional hardware figures (0 means "not declared").
    pub area_um2: f64,
    /// Power in milliwatts.
    pub power_mw: f64,
    /// Delay in nanoseconds.
    pub delay_ns: f64,
    /// The model itself.
    pub func: IntModelFn,
}

impl IntModelInfo {
    /// The operand values of the model: -128..=127 or 0..=255.
    pub fn operand_range(&self) -> std::ops::RangeInclusive<i32> {
        operand_range(self.signed)
    }

    /// The values a product may take: its 16-bit result type.
    pub fn product_range(&self) -> std::ops::RangeInclusive<i32> {
        product_range(self.signed)
    }

    /// Energy per multiply in picojoules (power x delay), when both are
    /// declared.
    pub fn energy_pj(&self) -> Option<f64> {
        energy_pj(self.power_mw, self.delay_ns)
    }
}

/// The 8-bit operand values: -128..=127 (signed) or 0..=255.
pub fn operand_range(signed: bool) -> std::ops::RangeInclusive<i32> {
    if signed {
        -128..=127
    } else {
        0..=255
    }
}

/// The 16-bit product values: `int16_t` (signed) or `uint16_t`.
pub fn product_range(signed: bool) -> std::ops::RangeInclusive<i32> {
    if signed {
        i32::from(i16::MIN)..=i32::from(i16::MAX)
    } else {
        0..=i32::from(u16::MAX)
    }
}

/// Find an integer model by name; the error lists the known names.
pub fn find_int<'a>(models: &'a [IntModelInfo], name: &str) -> crate::Result<&'a IntModelInfo> {
    models
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| crate::AmsimError::UnknownModel {
            name: name.to_string(),
            known: models.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })
}

/// The integer models `int8:NAME` specs resolve against: the program
/// registers its compiled C models once ([`register_int_models`]); a
/// library user that registers none resolves no integer spec.
static INT_REGISTRY: std::sync::OnceLock<&'static [IntModelInfo]> = std::sync::OnceLock::new();

/// Register the integer models for `int8:NAME` specs (the first
/// registration stands; later ones with the same slice are no-ops). Float
/// models are handed to each [`crate::spec::Resolver`] instead; integer
/// ones are global because every caller of this program has the same
/// compiled set and the float registry's many paths need not carry a
/// second slice.
pub fn register_int_models(models: &'static [IntModelInfo]) {
    let _ = INT_REGISTRY.set(models);
}

/// The registered integer models (empty before [`register_int_models`]).
pub fn int_registry() -> &'static [IntModelInfo] {
    INT_REGISTRY.get().copied().unwrap_or(&[])
}

/// A functional model of a 12- or 16-bit integer multiplier: `model(a, b)`
/// is the approximate product of two operand values of its width (for `n`
/// bits: `-2^(n-1)..=2^(n-1)-1` signed, `0..=2^n-1` unsigned), as the
/// model's `int32_t` or `uint32_t` (hence `i64`, which holds both).
pub type WideIntModelFn = fn(i32, i32) -> i64;

/// A registered 12- or 16-bit integer model (`multipliers/NAME.c` in
/// EvoApprox's form `int32_t NAME(int16_t, int16_t)` or `uint32_t
/// NAME(uint16_t, uint16_t)`, the width the first number in the name).
#[derive(Debug, Clone, Copy)]
pub struct WideIntModelInfo {
    /// Name used in `int12:NAME` / `int16:NAME` specs; the C function's name.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Operand width: 12 or 16.
    pub bits: u32,
    /// Signed or unsigned operands.
    pub signed: bool,
    /// Optional hardware figures (0 means "not declared").
    pub area_um2: f64,
    /// Power in milliwatts.
    pub power_mw: f64,
    /// Delay in nanoseconds.
    pub delay_ns: f64,
    /// The model itself.
    pub func: WideIntModelFn,
}

impl WideIntModelInfo {
    /// The operand values of the model.
    pub fn operand_range(&self) -> std::ops::RangeInclusive<i32> {
        wide_operand_range(self.bits, self.signed)
    }

    /// The values a product may take: the `2·bits`-bit range of its sign.
    pub fn product_range(&self) -> std::ops::RangeInclusive<i64> {
        wide_product_range(self.bits, self.signed)
    }

    /// Energy per multiply in picojoules (power x delay), when both are
    /// declared.
    pub fn energy_pj(&self) -> Option<f64> {
        energy_pj(self.power_mw, self.delay_ns)
    }
}

/// The operand values of a `bits`-bit integer model (any width 2..=16).
pub fn wide_operand_range(bits: u32, signed: bool) -> std::ops::RangeInclusive<i32> {
    if signed {
        -(1 << (bits - 1))..=(1 << (bits - 1)) - 1
    } else {
        0..=(1 << bits) - 1
    }
}

/// The products of a `bits`-bit integer model: the `2·bits`-bit range of
/// its sign (for 16 bits, `int32_t` or `uint32_t`).
pub fn wide_product_range(bits: u32, signed: bool) -> std::ops::RangeInclusive<i64> {
    if signed {
        -(1i64 << (2 * bits - 1))..=(1i64 << (2 * bits - 1)) - 1
    } else {
        0..=(1i64 << (2 * bits)) - 1
    }
}

/// Find a 12- or 16-bit integer model by name; the error lists the known
/// names.
pub fn find_wide_int<'a>(
    models: &'a [WideIntModelInfo],
    name: &str,
) -> crate::Result<&'a WideIntModelInfo> {
    models
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| crate::AmsimError::UnknownModel {
            name: name.to_string(),
            known: models.iter().map(|m| m.name).collect::<Vec<_>>().join(", "),
        })
}

/// The 12- and 16-bit models `int12:NAME` and `int16:NAME` specs resolve
/// against (registered once, as [`register_int_models`]).
static WIDE_INT_REGISTRY: std::sync::OnceLock<&'static [WideIntModelInfo]> =
    std::sync::OnceLock::new();

/// Register the 12- and 16-bit integer models (the first registration
/// stands).
pub fn register_wide_int_models(models: &'static [WideIntModelInfo]) {
    let _ = WIDE_INT_REGISTRY.set(models);
}

/// The registered 12- and 16-bit integer models (empty before
/// [`register_wide_int_models`]).
pub fn wide_int_registry() -> &'static [WideIntModelInfo] {
    WIDE_INT_REGISTRY.get().copied().unwrap_or(&[])
}

/// Energy per multiply in picojoules (power x delay), when both figures
/// are declared (positive).
fn energy_pj(power_mw: f64, delay_ns: f64) -> Option<f64> {
    (power_mw > 0.0 && delay_ns > 0.0).then_some(power_mw * delay_ns)
}
