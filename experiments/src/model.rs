//! The models of a run spec: a classifier's [`Network`] or the
//! [`Transformer`] (both [`PlannedModel`]s), built with the spec's plans
//! resolved against the C-model registry, the names a plan file may address
//! in them, and the optimizer.
//! Training, evaluation, sensitivity and energy all build models here.

use amsim::spec::Resolver;
use amsim::{ModelInfo, MultiplierPlan};
use nets::model::Network;
use nets::optim::{Optimizer, OptimizerConfig};
use nets::transformer::{Positions, Transformer};
use nets::PlannedModel;

use crate::error::{ExperimentError, Result};
use crate::plan_file::check_layer_names;
use crate::spec::{net_names, OptimizerKind, RunSpec, Task, DATASETS};

/// The names a plan (per-layer plan, plan file) may address in the model of
/// `spec`: a classifier's layers and blocks ([`layer_names`]) or a
/// Transformer's blocks and parts ([`transformer_plan_names`]).
pub fn plan_names(spec: &RunSpec) -> Result<Vec<String>> {
    match spec.task() {
        Task::Classifier => layer_names(&spec.net),
        Task::LanguageModel => transformer_plan_names(spec),
    }
}

/// Per-sample input shape and classes of a dataset the CLI trains on.
pub fn dataset_shape(dataset: &str) -> Result<(Vec<usize>, usize)> {
    match dataset {
        "mnist" | "fashion-mnist" => Ok((vec![1, 28, 28], 10)),
        "cifar10" => Ok((vec![3, 32, 32], 10)),
        _ => Err(ExperimentError::UnknownDataset {
            name: dataset.to_string(),
            valid: DATASETS.join(", "),
        }),
    }
}

/// Names of the layers of `net` that take a multiplier plan (what a plan
/// file may name), in order: `Network::plan_names`, so ResNet blocks
/// (`s1b1`) and their inner convolutions (`s1b1.conv1`).
pub fn layer_names(net: &str) -> Result<Vec<String>> {
    if !net_names().any(|n| n == net) {
        return Err(ExperimentError::UnknownNet {
            name: net.to_string(),
            valid: net_names().collect::<Vec<_>>().join(", "),
        });
    }
    let home = if net.starts_with("resnet") {
        "cifar10"
    } else {
        "mnist"
    };
    Ok(fp32_network(net, home, 0)?.plan_names())
}

/// The classifier `net` for the images of `dataset`, every layer on
/// `fp32`, weights from `seed`.
pub fn fp32_network(net: &str, dataset: &str, seed: u64) -> Result<Network> {
    let (shape, classes) = dataset_shape(dataset)?;
    let plan = MultiplierPlan::uniform(amsim::Multiplier::Fp32);
    Ok(Network::by_name(net, &shape, classes, plan, seed)?)
}

/// The network of `spec` with its plans resolved against `models` (every
/// layer on the default plan, the per-layer plans applied), weights
/// initialised from the spec's seed.
pub fn network_for_spec(spec: &RunSpec, models: &[ModelInfo]) -> Result<Network> {
    // Built once on fp32, which tells the layer names the plans are checked
    // against; the plans are then set (they do not change the weights).
    let mut network = fp32_network(&spec.net, &spec.dataset, spec.seed)?;
    let (default_plan, layer_plans) = resolve_plans(spec, models, &network.plan_names())?;
    network.set_plan(&default_plan);
    network.set_plans_by_name(layer_plans)?;
    Ok(network)
}

/// Resolve the run's plans and check per-layer names against the network.
fn resolve_plans(
    spec: &RunSpec,
    models: &[ModelInfo],
    layer_names: &[String],
) -> Result<(amsim::MultiplierPlan, Vec<(String, amsim::MultiplierPlan)>)> {
    let resolver = Resolver::new(models);
    let (default, per_layer) = spec.plans()?;
    check_layer_names(spec.layers.keys(), layer_names, &spec.net, "run spec")?;
    let mut layers = Vec::new();
    for (name, plan) in per_layer {
        layers.push((name, resolver.resolve_plan(&plan)?));
    }
    Ok((resolver.resolve_plan(&default)?, layers))
}

/// The optimizer of `spec`.
pub fn optimizer(spec: &RunSpec) -> Result<Optimizer> {
    let o = &spec.optimizer;
    let config = match o.kind {
        OptimizerKind::Sgd => OptimizerConfig::Sgd {
            momentum: o.momentum as f32,
            nesterov: o.nesterov,
            weight_decay: o.weight_decay as f32,
        },
        OptimizerKind::Adam => OptimizerConfig::Adam {
            beta1: o.beta1 as f32,
            beta2: o.beta2 as f32,
            eps: o.eps as f32,
            weight_decay: o.weight_decay as f32,
            decoupled: true,
        },
    };
    Ok(Optimizer::new(config)?)
}

/// Names a plan file may give a plan to in the model of `spec`.
pub fn transformer_plan_names(spec: &RunSpec) -> Result<Vec<String>> {
    let t = spec.transformer_spec();
    let mut small = t.clone();
    // The names depend on the number of blocks only.
    (small.width, small.heads, small.context) = (2, 1, 1);
    small.positions = Positions::Learned.name().into();
    let model = Transformer::new(
        small.config(1)?,
        MultiplierPlan::uniform(amsim::Multiplier::Fp32),
        0,
    )?;
    Ok(model.plan_names())
}

/// The model of `spec` for `vocab` characters, plans resolved against
/// `models`, weights from the spec's seed.
pub fn transformer_for_spec(
    spec: &RunSpec,
    vocab: usize,
    models: &[ModelInfo],
) -> Result<Transformer> {
    let t = spec.transformer_spec();
    let (default_plan, layer_plans) = resolve_plans(spec, models, &transformer_plan_names(spec)?)?;
    let mut model = Transformer::new(t.config(vocab)?, default_plan, spec.seed)?;
    model.set_plans_by_name(layer_plans)?;
    Ok(model)
}
