//! Registry of the C multiplier models in `multipliers/`.
pub static MODELS: &[amsim::ModelInfo] = &[];
