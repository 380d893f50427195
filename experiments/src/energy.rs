//! Energy of the multiplies of a run, where the hardware figures exist.
//!
//! A C model may declare the power (mW) and delay (ns) of its circuit
//! (`multipliers/approx_model.h`); their product is its energy per multiply
//! in picojoules (the power-delay product, the usual figure of merit of
//! approximate multipliers: one multiply per delay period), as
//! [`amsim::ModelInfo::energy_pj`] computes it. The exact baseline is
//! [`FP32_MULTIPLY_PJ`]. A run's energy per image is then, over its layers
//! and the three products of each (forward, input gradient, weight
//! gradient),
//!
//! ```text
//! E_train = sum over layers l, roles r of MACs(l, r) * E(plan(l, r))
//! E_infer = sum over layers l of MACs(l, forward) * E(plan(l, forward))
//! ```
//!
//! with `MACs(l, r)` from [`nets::Network::macs_per_layer`] (the counts of
//! `metrics.csv`'s `macs` column, per image). Only the multiplies are
//! counted: additions, memory traffic and the table look-ups of the
//! simulation itself are not hardware costs of the multiplier. A plan with
//! any product whose multiplier declares no figure (`bf16`, a model without
//! figures, a `lut:` file) has no energy: a partial sum would understate it.
//!
//! Figures from different sources (process node, voltage, synthesis flow)
//! do not compare; a designer declaring a model's figures should take them
//! from the same flow as the FP32 reference, or compare ratios only.

use std::path::Path;

use amsim::{ModelInfo, MultiplierSpec, PlanSpec, Role};
use nets::layers::MacCounts;

use crate::error::Result;
use crate::model::fp32_network;
use crate::run_dir::read_vocab;
use crate::spec::{RunSpec, Task, TransformerSpec};

/// Energy of one IEEE FP32 multiply, picojoules: M. Horowitz, "Computing's
/// energy problem (and what we can do about it)", ISSCC 2014, doi
/// 10.1109/ISSCC.2014.6757323, table of energy per operation at 45 nm and
/// 0.9 V ("FP Mult 32 bit: 3.7 pJ").
pub const FP32_MULTIPLY_PJ: f64 = 3.7;

/// Energy of one multiply with `m`, picojoules, where a figure exists:
/// [`FP32_MULTIPLY_PJ`] for `fp32`, the declared figure of the model for
/// `MODEL:BITS` and `direct:MODEL` (the same circuit) and of an `int8:`
/// model, `None` otherwise.
pub fn multiply_energy_pj(m: &MultiplierSpec, models: &[ModelInfo]) -> Option<f64> {
    match m {
        MultiplierSpec::Fp32 => Some(FP32_MULTIPLY_PJ),
        MultiplierSpec::Model { name, .. } | MultiplierSpec::Direct { name, .. } => models
            .iter()
            .find(|info| info.name == name)
            .and_then(|info| info.energy_pj()),
        MultiplierSpec::Int { bits: 8, name, .. } => amsim::model::int_registry()
            .iter()
            .find(|info| info.name == name)
            .and_then(|info| info.energy_pj()),
        MultiplierSpec::Int { name, .. } => amsim::model::wide_int_registry()
            .iter()
            .find(|info| info.name == name)
            .and_then(|info| info.energy_pj()),
        MultiplierSpec::Bf16 | MultiplierSpec::LutFile(_) => None,
    }
}

/// The per-layer plan of `name`, else of the names it is inside
/// (`block0.mlp.fc1`, then `block0.mlp`, then `block0`).
fn plan_of<'a>(name: &str, per_layer: &'a [(String, PlanSpec)]) -> Option<&'a PlanSpec> {
    let mut name = name;
    loop {
        if let Some((_, p)) = per_layer.iter().find(|(layer, _)| layer == name) {
            return Some(p);
        }
        name = &name[..name.rfind('.')?];
    }
}

/// Whether some product of `spec` goes through a model that declares a
/// figure: only then is an energy table worth computing and showing
/// (`fp32` alone has nothing to compare with).
pub fn declares_energy(spec: &RunSpec, models: &[ModelInfo]) -> bool {
    let Ok((default, layers)) = spec.plans() else {
        return false;
    };
    std::iter::once(&default)
        .chain(layers.iter().map(|(_, p)| p))
        .any(|plan| {
            Role::ALL.iter().any(|&role| {
                !matches!(plan.get(role), MultiplierSpec::Fp32)
                    && multiply_energy_pj(plan.get(role), models).is_some()
            })
        })
}

/// Multiplies and their energy for one image of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunEnergy {
    /// Multiply-accumulates per training image, by role; an inference
    /// (test) image takes the `forward` ones.
    pub macs: MacCounts,
    /// Energy of the multiplies of one training image (forward, input
    /// gradient, weight gradient) with the run's plan, microjoules; `None`
    /// when a multiplier of the plan declares no figure.
    pub train_image_uj: Option<f64>,
    /// The same with `fp32` everywhere.
    pub fp32_train_image_uj: f64,
    /// Energy of the multiplies of one inference image with the plan, µJ.
    pub inference_image_uj: Option<f64>,
    /// The same with `fp32` everywhere.
    pub fp32_inference_image_uj: f64,
}

/// Multiply-accumulates of a group of products that share their
/// multipliers: those of one name a plan can be given to, by pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Products {
    /// The name whose plan forms them (a layer, a ResNet block, a
    /// Transformer's `block0.attn`); a name without a plan of its own
    /// takes that of the name before its last `.` (`block0.mlp.fc1` that of
    /// `block0`), then the default plan.
    pub layer: String,
    /// Multiply-accumulates of the forward, input-gradient and
    /// weight-gradient passes.
    pub macs: MacCounts,
    /// `None` for a layer's own products, each pass on its role (`fwd`,
    /// `dx`, `dw`); `Some(role)` for attention's score products, every pass
    /// on that role (`attn_qk`, `attn_av`).
    pub role: Option<Role>,
}

/// The products of one training example of the run `spec` in `run_dir`:
/// an image of a classifier's dataset ([`nets::Network::macs_per_layer`]),
/// or a window of a language model's context, whose vocabulary is the
/// run's `vocab.txt`.
pub fn products_of_run(spec: &RunSpec, run_dir: &Path) -> Result<Vec<Products>> {
    if spec.task() == Task::LanguageModel {
        let vocab = read_vocab(run_dir)?.len();
        return Ok(products_per_window(&spec.transformer_spec(), vocab));
    }
    Ok(macs_per_layer(spec)?
        .into_iter()
        .map(|(layer, macs)| Products {
            layer,
            macs,
            role: None,
        })
        .collect())
}

/// The products of one training window of the model `t` with a vocabulary
/// of `vocab` characters, by plan name, each counted in all three passes
/// as [`nets::transformer::Transformer::macs_per_sequence`] counts them: per block the Q/K/V
/// and output projections (`block{i}.attn`, `4tc²`), the scores `Q·Kᵀ`
/// (role `attn_qk`) and `A·V` (role `attn_av`, `t²c` each), the MLP
/// (`block{i}.mlp.fc1`, `block{i}.mlp.fc2`, `4tc²` each); then the head
/// (`tcv`).
pub fn products_per_window(t: &TransformerSpec, vocab: usize) -> Vec<Products> {
    let (c, w, v) = (t.width as u64, t.context as u64, vocab as u64);
    let every_pass = |n: u64| MacCounts {
        forward: n,
        grad_input: n,
        grad_weight: n,
    };
    let products = |layer: String, n: u64, role: Option<Role>| Products {
        layer,
        macs: every_pass(n),
        role,
    };
    let mut out = Vec::new();
    for i in 0..t.layers {
        let attn = format!("block{i}.attn");
        out.push(products(attn.clone(), 4 * w * c * c, None));
        out.push(products(attn.clone(), w * w * c, Some(Role::AttnQk)));
        out.push(products(attn, w * w * c, Some(Role::AttnAv)));
        for fc in ["fc1", "fc2"] {
            out.push(products(format!("block{i}.mlp.{fc}"), 4 * w * c * c, None));
        }
    }
    out.push(products("head".into(), w * c * v, None));
    out
}

/// Per-role multiply-accumulates of each layer of the classifier `spec`'s
/// network for one image of its dataset.
pub fn macs_per_layer(spec: &RunSpec) -> Result<Vec<(String, MacCounts)>> {
    Ok(fp32_network(&spec.net, &spec.dataset, spec.seed)?.macs_per_layer())
}

/// The energy of `spec`'s multiplies per image, from the per-layer
/// counts `layers` of its network ([`macs_per_layer`]; see the module docs).
pub fn energy_of_layers(
    layers: &[(String, MacCounts)],
    spec: &RunSpec,
    models: &[ModelInfo],
) -> Result<RunEnergy> {
    let products: Vec<Products> = layers
        .iter()
        .map(|(layer, macs)| Products {
            layer: layer.clone(),
            macs: *macs,
            role: None,
        })
        .collect();
    energy_of_products(&products, spec, models)
}

/// The energy of `spec`'s multiplies per training example (image or
/// window), from its products ([`products_of_run`]; see the module docs).
pub fn energy_of_products(
    products: &[Products],
    spec: &RunSpec,
    models: &[ModelInfo],
) -> Result<RunEnergy> {
    let (default, per_layer) = spec.plans()?;
    let mut macs = MacCounts::default();
    let mut train_pj = Some(0.0);
    let mut infer_pj = Some(0.0);
    for p in products {
        let m = &p.macs;
        macs += *m;
        let plan = plan_of(&p.layer, &per_layer).unwrap_or(&default);
        let energy = |role: Role| multiply_energy_pj(plan.get(role), models);
        let counts = [
            (Role::Forward, m.forward),
            (Role::GradInput, m.grad_input),
            (Role::GradWeight, m.grad_weight),
        ];
        for (pass, n) in counts {
            if n == 0 {
                continue;
            }
            let e = energy(p.role.unwrap_or(pass));
            train_pj = train_pj.zip(e).map(|(sum, e)| sum + n as f64 * e);
            if pass == Role::Forward {
                infer_pj = infer_pj.zip(e).map(|(sum, e)| sum + n as f64 * e);
            }
        }
    }
    let uj = |pj: f64| pj * 1e-6;
    Ok(RunEnergy {
        macs,
        train_image_uj: train_pj.map(uj),
        fp32_train_image_uj: uj(macs.total() as f64 * FP32_MULTIPLY_PJ),
        inference_image_uj: infer_pj.map(uj),
        fp32_inference_image_uj: uj(macs.forward as f64 * FP32_MULTIPLY_PJ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nets::PlannedModel;

    fn model(name: &'static str, power_mw: f64, delay_ns: f64) -> ModelInfo {
        fn product(a: f32, b: f32, _bits: u32) -> f32 {
            a * b
        }
        ModelInfo {
            name,
            description: "test model with declared figures",
            min_bits: 1,
            max_bits: 23,
            area_um2: 0.0,
            power_mw,
            delay_ns,
            func: product,
        }
    }

    fn counts(forward: u64, grad_input: u64, grad_weight: u64) -> MacCounts {
        MacCounts {
            forward,
            grad_input,
            grad_weight,
        }
    }

    #[test]
    fn energy_is_macs_per_role_times_the_energy_of_each_roles_multiplier() {
        // 2 mW x 0.5 ns = 1 pJ per multiply for "cheap".
        let models = [model("cheap", 2.0, 0.5), model("silent", 0.0, 0.0)];
        let layers = vec![
            ("conv1".to_string(), counts(100, 0, 100)),
            ("fc1".to_string(), counts(10, 10, 10)),
        ];
        let mut spec = RunSpec::with_defaults("lenet5", "mnist");
        spec.multiplier = "fwd=cheap:7,dx=fp32,dw=cheap:7".into();
        let e = energy_of_layers(&layers, &spec, &models).unwrap();
        assert_eq!(e.macs, counts(110, 10, 110));
        // forward 110 x 1 + dx 10 x 3.7 + dw 110 x 1 pJ.
        let expect = (110.0 + 10.0 * FP32_MULTIPLY_PJ + 110.0) * 1e-6;
        assert!((e.train_image_uj.unwrap() - expect).abs() < 1e-15, "{e:?}");
        assert!((e.inference_image_uj.unwrap() - 110e-6).abs() < 1e-15);
        assert!((e.fp32_train_image_uj - 230.0 * FP32_MULTIPLY_PJ * 1e-6).abs() < 1e-15);
        assert!((e.fp32_inference_image_uj - 110.0 * FP32_MULTIPLY_PJ * 1e-6).abs() < 1e-15);
        assert!(declares_energy(&spec, &models));

        // A per-layer plan overrides the default for its layer only.
        spec.layers.insert("fc1".into(), "fp32".into());
        let e = energy_of_layers(&layers, &spec, &models).unwrap();
        let expect = (100.0 + 100.0 + 30.0 * FP32_MULTIPLY_PJ) * 1e-6;
        assert!((e.train_image_uj.unwrap() - expect).abs() < 1e-15, "{e:?}");

        // A training product on a multiplier without figures: no training
        // energy (a partial sum would understate it); inference has one.
        spec.layers.clear();
        spec.multiplier = "fwd=cheap:7,dx=bf16,dw=cheap:7".into();
        let e = energy_of_layers(&layers, &spec, &models).unwrap();
        assert_eq!(e.train_image_uj, None);
        assert!((e.inference_image_uj.unwrap() - 110e-6).abs() < 1e-15);
        assert!(declares_energy(&spec, &models));

        // No figure anywhere: no energy at all.
        for plan in ["silent:7", "mbm:7", "fwd=bf16,dx=silent:7,dw=mbm:7"] {
            spec.layers.clear();
            spec.multiplier = plan.into();
            let e = energy_of_layers(&layers, &spec, &models).unwrap();
            assert_eq!(
                (e.train_image_uj, e.inference_image_uj),
                (None, None),
                "{plan}"
            );
            assert!(!declares_energy(&spec, &models), "{plan}");
        }
        // fp32 has its figure but declares nothing to compare.
        spec.multiplier = "fp32".into();
        let e = energy_of_layers(&layers, &spec, &models).unwrap();
        assert_eq!(e.train_image_uj, Some(e.fp32_train_image_uj));
        assert!(!declares_energy(&spec, &models));
    }

    /// The products of a window add up to the model's own count, pass by
    /// pass, and name only plan names of the model.
    #[test]
    fn products_per_window_cover_every_product_once() {
        for (layers, width, heads, context, vocab) in [(1, 16, 2, 16, 11), (3, 24, 4, 9, 40)] {
            let t = TransformerSpec {
                layers,
                width,
                heads,
                context,
                ..TransformerSpec::default()
            };
            let model = nets::transformer::Transformer::new(
                t.config(vocab).unwrap(),
                amsim::MultiplierPlan::uniform(amsim::Multiplier::Fp32),
                1,
            )
            .unwrap();
            let products = products_per_window(&t, vocab);
            let mut sum = nets::layers::MacCounts::default();
            for p in &products {
                sum += p.macs;
            }
            assert_eq!(sum, model.macs_per_sequence(context));
            let names = model.plan_names();
            assert!(products.iter().all(|p| names.contains(&p.layer)));
        }
    }

    #[test]
    fn direct_mode_uses_the_models_figure_and_lut_files_have_none() {
        let models = [model("cheap", 4.0, 0.25)];
        let direct: MultiplierSpec = "direct:cheap:7".parse().unwrap();
        assert_eq!(multiply_energy_pj(&direct, &models), Some(1.0));
        let file: MultiplierSpec = "lut:cheap7.lut".parse().unwrap();
        assert_eq!(multiply_energy_pj(&file, &models), None);
        assert_eq!(
            multiply_energy_pj(&MultiplierSpec::Fp32, &[]),
            Some(FP32_MULTIPLY_PJ)
        );
    }
}
