//! Per-layer sensitivity of a trained network to an approximate multiplier
//! (`approxtrain sensitivity`), and a greedy per-layer plan.
//!
//! The analysis moves *items* onto an approximate multiplier `A`: a
//! classifier's layers with products (their forward products), or the
//! finest parts of a Transformer (per block the projections, the score
//! products `Q·Kᵀ` and `A·V`, the two MLP layers, and the head; see
//! [`transformer_items`]). With the run's own plan as the
//! baseline, for every item:
//! - *only this*: the item on `A`, everything else on the baseline;
//! - *all but this*: every other item on `A`, this one on the baseline.
//!
//! Harm is measured against the baseline ([`Harm`]): the test-accuracy
//! drop in percentage points for classifiers, the validation-loss rise in
//! nats per character for language models (the loss sees every
//! probability, where a small model's next-character accuracy moves in
//! coarse steps). The greedy search takes the items in order of least harm
//! (smallest only-this harm first, ties by larger forward MAC count) and
//! moves each onto `A` when the harm of the plan so far plus that item
//! stays within the budget (`--max-drop` or `--max-rise`); an item that
//! would break the budget is skipped and the next one tried. The result is
//! a plan file ([`plan_file_text`]) that `eval --plan` and `train --plan`
//! read.
//!
//! Only forward products run in evaluation, so items are moved with the
//! forward roles (`fwd`, or `attn_qk` / `attn_av`) set to `A` and keep the
//! baseline's gradient multipliers.
//!
//! Shares of multiplies are forward multiply-accumulates per image
//! ([`nets::Network::macs_per_layer`]) or per validation window. Energy per
//! multiply is [`crate::energy::multiply_energy_pj`]: the FP32 reference
//! figure, and a model's declared power x delay; without figures no energy
//! is reported.

use std::collections::BTreeMap;

use amsim::{ModelInfo, MultiplierSpec, PlanSpec, Role};

use crate::energy::multiply_energy_pj;
use crate::error::{ExperimentError, Result};
use crate::eval::{EvalPlan, EvalResult, Evaluator};
use crate::model::network_for_spec;
use crate::spec::RunSpec;

/// How the harm of a plan is measured against the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harm {
    /// Test-accuracy drop, percentage points (classifiers).
    AccuracyDrop,
    /// Validation-loss rise, nats per character (language models).
    LossRise,
}

impl Harm {
    /// The harm of `r` against `baseline`, in [`Harm::unit`].
    pub fn of(self, baseline: &EvalResult, r: &EvalResult) -> f64 {
        match self {
            Harm::AccuracyDrop => 100.0 * (baseline.accuracy as f64 - r.accuracy as f64),
            Harm::LossRise => r.loss as f64 - baseline.loss as f64,
        }
    }

    /// The budget's command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Harm::AccuracyDrop => "--max-drop",
            Harm::LossRise => "--max-rise",
        }
    }

    /// The unit of harm.
    pub fn unit(self) -> &'static str {
        match self {
            Harm::AccuracyDrop => "points",
            Harm::LossRise => "nats/char",
        }
    }

    /// `drop` or `rise`.
    pub fn word(self) -> &'static str {
        match self {
            Harm::AccuracyDrop => "drop",
            Harm::LossRise => "rise",
        }
    }

    /// The measured quantity of a result, as a short phrase.
    pub fn describe(self, r: &EvalResult) -> String {
        match self {
            Harm::AccuracyDrop => format!("accuracy {:6.2}%", 100.0 * r.accuracy),
            Harm::LossRise => format!(
                "loss {:.4} nats/char, accuracy {:6.2}%",
                r.loss,
                100.0 * r.accuracy
            ),
        }
    }

    /// The bar chart's y axis.
    pub(crate) fn axis(self) -> &'static str {
        match self {
            Harm::AccuracyDrop => "test accuracy drop vs baseline (percentage points)",
            Harm::LossRise => "validation loss rise (nats/char)",
        }
    }
}

/// A part of the network the analysis moves onto the approximate
/// multiplier as one piece.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityItem {
    /// Name in tables (`conv2`, `block0.attn_qk`).
    pub name: String,
    /// The plan name it is set through (`conv2`, `block0.attn`).
    pub layer: String,
    /// The plan roles it covers (`fwd`, `attn_qk` or `attn_av`).
    pub roles: Vec<Role>,
    /// Forward multiply-accumulates per image or window.
    pub forward_macs: u64,
}

/// The finest non-overlapping parts of a Transformer that a plan can put
/// on a multiplier, with their forward multiply-accumulates per window of
/// `t` positions (width `c`, vocabulary `v`), in model order. Per block:
/// - `block{i}.attn`: the Q/K/V and output projections (`fwd` of the
///   plan name `block{i}.attn`), `3tc² + tc²`;
/// - `block{i}.attn_qk`: the scores `Q·Kᵀ` (its `attn_qk` role), `t²c`;
/// - `block{i}.attn_av`: `A·V` (its `attn_av` role), `t²c`;
/// - `block{i}.mlp.fc1`, `block{i}.mlp.fc2`: `4tc²` each;
///
/// and `head`, `tcv`. The counts are those of
/// [`nets::transformer::Transformer::macs_per_sequence`], split by part.
pub fn transformer_items(layers: usize, c: usize, t: usize, v: usize) -> Vec<SensitivityItem> {
    let (c, t, v) = (c as u64, t as u64, v as u64);
    let item = |name: String, layer: String, role: Role, macs: u64| SensitivityItem {
        name,
        layer,
        roles: vec![role],
        forward_macs: macs,
    };
    let mut items = Vec::new();
    for i in 0..layers {
        let attn = format!("block{i}.attn");
        items.push(item(
            attn.clone(),
            attn.clone(),
            Role::Forward,
            4 * t * c * c,
        ));
        items.push(item(
            format!("block{i}.attn_qk"),
            attn.clone(),
            Role::AttnQk,
            t * t * c,
        ));
        items.push(item(
            format!("block{i}.attn_av"),
            attn,
            Role::AttnAv,
            t * t * c,
        ));
        for fc in ["fc1", "fc2"] {
            let name = format!("block{i}.mlp.{fc}");
            items.push(item(name.clone(), name, Role::Forward, 4 * t * c * c));
        }
    }
    items.push(item("head".into(), "head".into(), Role::Forward, t * c * v));
    items
}

/// A trained network with its evaluation data: what the analysis needs.
pub trait PlanEvaluator {
    /// How harm is measured.
    fn harm(&self) -> Harm;
    /// The spec of the run (its plan is the baseline).
    fn run_spec(&self) -> &RunSpec;
    /// The items to move, in network order.
    fn items(&self, models: &[ModelInfo]) -> Result<Vec<SensitivityItem>>;
    /// Evaluate the trained weights under `plan`.
    fn evaluate(&self, plan: &EvalPlan, models: &[ModelInfo]) -> Result<EvalResult>;
    /// What the MAC counts are per (`image`, `window`).
    fn mac_unit(&self) -> &'static str;
}

impl PlanEvaluator for Evaluator {
    fn harm(&self) -> Harm {
        Harm::AccuracyDrop
    }

    fn run_spec(&self) -> &RunSpec {
        &self.spec
    }

    /// Every layer with products, its forward products.
    fn items(&self, models: &[ModelInfo]) -> Result<Vec<SensitivityItem>> {
        let network = network_for_spec(&self.spec, models)?;
        Ok(network
            .macs_per_layer()
            .into_iter()
            .map(|(name, m)| SensitivityItem {
                layer: name.clone(),
                name,
                roles: vec![Role::Forward],
                forward_macs: m.forward,
            })
            .collect())
    }

    fn evaluate(&self, plan: &EvalPlan, models: &[ModelInfo]) -> Result<EvalResult> {
        Evaluator::evaluate(self, plan, models)
    }

    fn mac_unit(&self) -> &'static str {
        "image"
    }
}

/// The two measurements of one item.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSensitivity {
    /// Item name ([`SensitivityItem::name`]).
    pub layer: String,
    /// Forward multiply-accumulates per image or window in this item.
    pub forward_macs: u64,
    /// Only this item's forward products approximate.
    pub only_this: EvalResult,
    /// Every item but this one approximate.
    pub all_but_this: EvalResult,
}

/// One step of the greedy search.
#[derive(Debug, Clone, PartialEq)]
pub struct GreedyStep {
    /// The item tried.
    pub layer: String,
    /// The plan so far with this item added.
    pub result: EvalResult,
    /// Whether the item stayed approximate (harm within budget).
    pub accepted: bool,
}

/// Everything `approxtrain sensitivity` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct SensitivityReport {
    /// The approximate multiplier.
    pub approx: MultiplierSpec,
    /// How harm is measured.
    pub harm: Harm,
    /// What the MAC counts are per (`image`, `window`).
    pub mac_unit: &'static str,
    /// The baseline plan (the run's own).
    pub baseline_plan: EvalPlan,
    /// The baseline's result.
    pub baseline: EvalResult,
    /// Every item's forward products approximate.
    pub all_approx: EvalResult,
    /// Per item, sorted by least harm first.
    pub layers: Vec<LayerSensitivity>,
    /// The greedy search, in the order tried.
    pub greedy: Vec<GreedyStep>,
    /// The harm budget, in [`Harm::unit`].
    pub budget: f64,
    /// The items the greedy plan makes approximate, in network order.
    pub chosen: Vec<String>,
    /// The chosen items, in network order.
    pub chosen_items: Vec<SensitivityItem>,
    /// Forward MACs per image or window, all items.
    pub total_forward_macs: u64,
    /// Forward MACs on the approximate multiplier in the greedy plan.
    pub chosen_forward_macs: u64,
    /// The greedy plan's result (the baseline when no item was chosen).
    pub chosen_result: EvalResult,
    /// Energy per multiply of the approximate multiplier, pJ, when its
    /// model declares power and delay.
    pub approx_energy_pj: Option<f64>,
    /// Energy per multiply of the baseline's forward multiplier, pJ, when
    /// known.
    pub baseline_energy_pj: Option<f64>,
}

impl SensitivityReport {
    /// Share of forward multiplies moved onto the approximate multiplier.
    pub fn mac_share(&self) -> f64 {
        self.chosen_forward_macs as f64 / self.total_forward_macs.max(1) as f64
    }

    /// Harm of a result against the baseline, in [`Harm::unit`].
    pub fn harm_of(&self, r: &EvalResult) -> f64 {
        self.harm.of(&self.baseline, r)
    }

    /// Forward multiply energy of the greedy plan relative to the baseline,
    /// when both multipliers declare energy figures.
    pub fn energy_ratio(&self) -> Option<f64> {
        let (a, b) = (self.approx_energy_pj?, self.baseline_energy_pj?);
        let total = self.total_forward_macs as f64;
        let moved = self.chosen_forward_macs as f64;
        Some((moved * a + (total - moved) * b) / (total * b))
    }
}

/// The plan in effect for `layer` in `plan`: its own, else that of the
/// nearest enclosing name (`block0` for `block0.mlp.fc1`), else the
/// default; a plan name's plan applies to everything under it.
fn effective_plan(plan: &EvalPlan, layer: &str) -> String {
    let mut name = layer;
    loop {
        if let Some(p) = plan.layers.get(name) {
            return p.clone();
        }
        match name.rsplit_once('.') {
            Some((outer, _)) => name = outer,
            None => return plan.multiplier.clone(),
        }
    }
}

/// The plan of `base` with the forward roles of `items` on `approx`.
fn with_approx_items(
    label: String,
    base: &EvalPlan,
    approx: &MultiplierSpec,
    items: &[&SensitivityItem],
) -> Result<EvalPlan> {
    let mut plan = base.clone();
    plan.label = label;
    for item in items {
        let mut p: PlanSpec = effective_plan(&plan, &item.layer).parse()?;
        for role in &item.roles {
            p.set(*role, approx.clone());
        }
        plan.layers.insert(item.layer.clone(), p.to_string());
    }
    Ok(plan)
}

/// Run the sensitivity analysis of `evaluator`'s network under `approx`
/// with a harm budget of `budget` ([`Harm::unit`]); `progress` gets a line
/// per evaluation.
pub fn sensitivity(
    evaluator: &dyn PlanEvaluator,
    approx: &MultiplierSpec,
    budget: f64,
    models: &[ModelInfo],
    progress: &mut dyn FnMut(&str),
) -> Result<SensitivityReport> {
    let harm = evaluator.harm();
    if !(budget.is_finite() && budget >= 0.0) {
        return Err(ExperimentError::Other(format!(
            "{} must be a number of {} >= 0, got {budget}",
            harm.flag(),
            harm.unit()
        )));
    }
    crate::plan_file::check_model(approx, models)?;
    let base = EvalPlan::of_run(evaluator.run_spec());
    let items = evaluator.items(models)?;
    let all: Vec<&SensitivityItem> = items.iter().collect();
    let mut eval = |plan: &EvalPlan| -> Result<EvalResult> {
        let r = evaluator.evaluate(plan, models)?;
        progress(&format!(
            "{:<40} {}  ({:.1} s)",
            plan.label,
            harm.describe(&r),
            r.seconds
        ));
        Ok(r)
    };
    let mut baseline_plan = base.clone();
    baseline_plan.label = format!("baseline ({})", base.label);
    let baseline = eval(&baseline_plan)?;
    let all_approx = eval(&with_approx_items(
        format!("all items fwd={approx}"),
        &base,
        approx,
        &all,
    )?)?;
    let mut layers = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let only_this = eval(&with_approx_items(
            format!("only {}", item.name),
            &base,
            approx,
            &[item],
        )?)?;
        let others: Vec<&SensitivityItem> = all
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, it)| *it)
            .collect();
        let all_but_this = eval(&with_approx_items(
            format!("all but {}", item.name),
            &base,
            approx,
            &others,
        )?)?;
        layers.push(LayerSensitivity {
            layer: item.name.clone(),
            forward_macs: item.forward_macs,
            only_this,
            all_but_this,
        });
    }
    layers.sort_by(|a, b| {
        harm.of(&baseline, &a.only_this)
            .total_cmp(&harm.of(&baseline, &b.only_this))
            .then(b.forward_macs.cmp(&a.forward_macs))
    });
    let by_name = |name: &str| {
        items
            .iter()
            .find(|i| i.name == name)
            .expect("layers come from items")
    };
    let mut chosen: Vec<&SensitivityItem> = Vec::new();
    let mut greedy = Vec::new();
    let mut chosen_result = baseline.clone();
    for l in &layers {
        let mut trial = chosen.clone();
        trial.push(by_name(&l.layer));
        let result = eval(&with_approx_items(
            format!("greedy + {}", l.layer),
            &base,
            approx,
            &trial,
        )?)?;
        // A harm of exactly the budget is accepted (up to f32 rounding of
        // the measured values).
        let accepted = harm.of(&baseline, &result) <= budget + 1e-9;
        if accepted {
            chosen = trial;
            chosen_result = result.clone();
        }
        greedy.push(GreedyStep {
            layer: l.layer.clone(),
            result,
            accepted,
        });
    }
    let chosen_items: Vec<SensitivityItem> = items
        .iter()
        .filter(|i| chosen.iter().any(|c| c.name == i.name))
        .cloned()
        .collect();
    let base_plan: PlanSpec = base.multiplier.parse()?;
    Ok(SensitivityReport {
        approx: approx.clone(),
        harm,
        mac_unit: evaluator.mac_unit(),
        baseline_plan: base,
        baseline,
        all_approx,
        layers,
        greedy,
        budget,
        chosen: chosen_items.iter().map(|i| i.name.clone()).collect(),
        total_forward_macs: items.iter().map(|i| i.forward_macs).sum(),
        chosen_forward_macs: chosen_items.iter().map(|i| i.forward_macs).sum(),
        chosen_items,
        chosen_result,
        approx_energy_pj: multiply_energy_pj(approx, models),
        baseline_energy_pj: multiply_energy_pj(base_plan.get(Role::Forward), models),
    })
}

/// A plan name as a TOML key: bare when it may be (`conv1`), quoted when
/// it holds a dot or another character a bare key may not (`"block0.attn"`).
fn toml_key(name: &str) -> String {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// The greedy plan as a plan file: the baseline's default plan, the
/// baseline's own per-layer plans, and the forward roles of every chosen
/// item on `A` (a layer that inherits a plan other than the default from
/// an enclosing name gets that plan first, so the file describes exactly
/// the plan that was measured). A comment block records where it came from
/// and what it measured.
pub fn plan_file_text(report: &SensitivityReport, checkpoint: &str) -> String {
    let harm = report.harm;
    let mut s = String::new();
    s.push_str(&format!(
        "# Written by approxtrain sensitivity --checkpoint {checkpoint} --multiplier {} {} {}\n",
        report.approx,
        harm.flag(),
        report.budget
    ));
    let (base, this) = match harm {
        Harm::AccuracyDrop => (
            format!("accuracy {:.2}%", 100.0 * report.baseline.accuracy),
            format!("{:.2}%", 100.0 * report.chosen_result.accuracy),
        ),
        Harm::LossRise => (
            format!("validation loss {:.4} nats/char", report.baseline.loss),
            format!("{:.4}", report.chosen_result.loss),
        ),
    };
    s.push_str(&format!(
        "# baseline {base}, this plan {this} ({} {:.4} {});\n",
        harm.word(),
        report.harm_of(&report.chosen_result),
        harm.unit()
    ));
    s.push_str(&format!(
        "# forward multiplies on {}: {:.1}% ({} of {} per {})\n",
        report.approx,
        100.0 * report.mac_share(),
        report.chosen_forward_macs,
        report.total_forward_macs,
        report.mac_unit
    ));
    s.push_str(&format!(
        "multiplier = \"{}\"\n",
        report.baseline_plan.multiplier
    ));
    let mut layers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &report.baseline_plan.layers {
        layers.insert(k.clone(), format!("multiplier = \"{v}\"\n"));
    }
    for item in &report.chosen_items {
        let inherited = effective_plan(&report.baseline_plan, &item.layer);
        let entry = layers.entry(item.layer.clone()).or_insert_with(|| {
            if inherited == report.baseline_plan.multiplier {
                String::new()
            } else {
                format!("multiplier = \"{inherited}\"\n")
            }
        });
        for role in &item.roles {
            entry.push_str(&format!("{} = \"{}\"\n", role.key(), report.approx));
        }
    }
    for (name, body) in layers {
        s.push_str(&format!("\n[layers.{}]\n{body}", toml_key(&name)));
    }
    s
}

/// Header of the sensitivity CSV: the item, its MACs, and per measurement
/// the metric and its harm (accuracy and drop in points for classifiers,
/// loss and rise in nats/char for language models).
pub fn sensitivity_csv_header(report: &SensitivityReport) -> Vec<String> {
    let (metric, harm) = match report.harm {
        Harm::AccuracyDrop => ("accuracy", "drop_points"),
        Harm::LossRise => ("loss", "rise_nats"),
    };
    let mut h = vec![
        "layer".to_string(),
        format!("forward_macs_per_{}", report.mac_unit),
        "mac_share".to_string(),
    ];
    for which in ["only_this", "all_but_this"] {
        h.push(format!("{which}_{metric}"));
        h.push(format!("{which}_{harm}"));
    }
    h.push("greedy_chosen".to_string());
    h
}

/// The sensitivity table as CSV bytes (rows sorted by least harm first).
pub fn sensitivity_csv(report: &SensitivityReport) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let err = |e: csv::Error| ExperimentError::Other(format!("sensitivity CSV: {e}"));
    w.write_record(sensitivity_csv_header(report))
        .map_err(err)?;
    let metric = |r: &EvalResult| match report.harm {
        Harm::AccuracyDrop => r.accuracy.to_string(),
        Harm::LossRise => r.loss.to_string(),
    };
    let digits = match report.harm {
        Harm::AccuracyDrop => 2,
        Harm::LossRise => 6,
    };
    for l in &report.layers {
        w.write_record([
            l.layer.clone(),
            l.forward_macs.to_string(),
            format!(
                "{:.6}",
                l.forward_macs as f64 / report.total_forward_macs.max(1) as f64
            ),
            metric(&l.only_this),
            format!("{:.digits$}", report.harm_of(&l.only_this)),
            metric(&l.all_but_this),
            format!("{:.digits$}", report.harm_of(&l.all_but_this)),
            report.chosen.contains(&l.layer).to_string(),
        ])
        .map_err(err)?;
    }
    w.into_inner()
        .map_err(|e| ExperimentError::Other(format!("sensitivity CSV: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan_file::PlanFile;
    use rand::{Rng, SeedableRng};

    fn result(label: &str) -> EvalResult {
        EvalResult {
            label: label.into(),
            plan: String::new(),
            loss: 2.0,
            accuracy: 0.5,
            samples: 1,
            seconds: 0.0,
        }
    }

    /// The plan file of a greedy result describes exactly the plan that
    /// was measured, for every plan name of a two-block Transformer, when
    /// the baseline has its own per-block plans (which items inside the
    /// block inherit) and a random subset of items is chosen.
    #[test]
    fn plan_file_resolves_to_the_measured_plan_of_the_chosen_items() {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        eprintln!("seed = {seed}");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let items = transformer_items(2, 8, 4, 5);
        let names: Vec<String> = {
            let mut n: Vec<String> = items.iter().map(|i| i.layer.clone()).collect();
            n.extend(["block0".to_string(), "block1".to_string()]);
            n.dedup();
            n
        };
        let base = EvalPlan {
            label: "run".into(),
            multiplier: "fp32".into(),
            layers: [
                ("block1".to_string(), "bf16".to_string()),
                ("head".to_string(), "fwd=fp32,dx=bf16,dw=bf16".to_string()),
            ]
            .into_iter()
            .collect(),
        };
        let approx: MultiplierSpec = "mitchell:2".parse().unwrap();
        for _ in 0..8 {
            let chosen: Vec<&SensitivityItem> =
                items.iter().filter(|_| rng.gen_bool(0.5)).collect();
            let measured = with_approx_items("m".into(), &base, &approx, &chosen).unwrap();
            let report = SensitivityReport {
                approx: approx.clone(),
                harm: Harm::LossRise,
                mac_unit: "window",
                baseline_plan: base.clone(),
                baseline: result("b"),
                all_approx: result("a"),
                layers: Vec::new(),
                greedy: Vec::new(),
                budget: 0.05,
                chosen: chosen.iter().map(|i| i.name.clone()).collect(),
                chosen_items: chosen.iter().map(|i| (*i).clone()).collect(),
                total_forward_macs: 1,
                chosen_forward_macs: 0,
                chosen_result: result("c"),
                approx_energy_pj: None,
                baseline_energy_pj: None,
            };
            let text = plan_file_text(&report, "RUN");
            let file = PlanFile::parse(std::path::Path::new("plan.toml"), &text).unwrap();
            let resolved = file.resolve(&"fp32".parse().unwrap());
            let from_file = EvalPlan {
                label: "f".into(),
                multiplier: resolved.default.to_string(),
                layers: resolved
                    .layers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            };
            for name in &names {
                let want: PlanSpec = effective_plan(&measured, name).parse().unwrap();
                let got: PlanSpec = effective_plan(&from_file, name).parse().unwrap();
                assert_eq!(got, want, "{name} in\n{text}");
            }
        }
    }

    /// Harm is the accuracy drop in points or the loss rise in nats.
    #[test]
    fn harm_is_accuracy_drop_in_points_or_loss_rise_in_nats() {
        let base = result("b");
        let mut r = result("r");
        r.accuracy = 0.4;
        r.loss = 2.25;
        assert!((Harm::AccuracyDrop.of(&base, &r) - 10.0).abs() < 1e-5);
        assert!((Harm::LossRise.of(&base, &r) - 0.25).abs() < 1e-9);
        assert_eq!(toml_key("conv1"), "conv1");
        assert_eq!(toml_key("block0.attn"), "\"block0.attn\"");
    }
}
