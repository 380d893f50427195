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
        (self.power_mw > 0.0 && self.delay_ns > 0.0).then_some(self.power_mw * self.delay_ns)
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
