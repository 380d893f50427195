//! Inference of a trained network under other multiplier plans
//! (`approxtrain eval`).
//!
//! A checkpoint is named by its run directory (which holds `run.toml` and
//! `checkpoint.bin`) or by a checkpoint file inside one: `run.toml` says
//! which network, dataset and plan the weights were trained with, the
//! checkpoint holds the weights. Evaluation builds the network of the run's
//! spec with the plan asked for, copies the weights in
//! ([`nets::checkpoint::Checkpoint::apply_weights`]) and measures test loss and accuracy.
//! Only the forward products run in evaluation, so only the `fwd` role of a
//! plan matters.
//!
//! A plan with an `int8:` forward is post-training quantization: the
//! activation ranges of its quantized layers are calibrated first on the
//! first [`CALIBRATION_IMAGES`] training images of the dataset (min and max
//! over them; see `nets::layers::quant`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use amsim::spec::Resolver;
use amsim::{ModelInfo, PlanSpec};
use nets::data::{resolve_dataset_dir, ImageDataset, Split};
use nets::optim::{Optimizer, OptimizerConfig};
use nets::schedule::LrSchedule;
use nets::train::{EvalStats, Trainer};

use crate::atomic::write_atomic;
use crate::error::{ExperimentError, Result};
use crate::model::{network_for_spec, plan_names};
use crate::plan_file::{check_layer_names, PlanFile};
use crate::run_dir::LoadedCheckpoint;
use crate::spec::RunSpec;

/// A multiplier plan to evaluate: the default plan of every layer and
/// per-layer plans, as strings in the form of [`RunSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPlan {
    /// Label for tables and CSV (the spec, or the plan file's name).
    pub label: String,
    /// Plan of every layer not in `layers`.
    pub multiplier: String,
    /// Per-layer plans.
    pub layers: BTreeMap<String, String>,
}

impl EvalPlan {
    /// `spec` with this plan in place of its own.
    pub fn applied_to(&self, spec: &RunSpec) -> RunSpec {
        let mut spec = spec.clone();
        spec.multiplier = self.multiplier.clone();
        spec.layers = self.layers.clone();
        spec
    }

    /// One plan for every layer (`mbm:7`, `fwd=mbm:7,dx=fp32,dw=fp32`).
    pub fn uniform(spec: &PlanSpec) -> EvalPlan {
        EvalPlan {
            label: spec.to_string(),
            multiplier: spec.to_string(),
            layers: BTreeMap::new(),
        }
    }

    /// The plan a plan file describes on top of the plan of the run `spec`
    /// (what `eval --plan` evaluates), its layer names checked against the
    /// run's network: a classifier's layers, or a Transformer's plan names
    /// ([`plan_names`], which depend on its number of blocks).
    pub fn from_file_for_spec(
        file: &PlanFile,
        spec: &RunSpec,
        models: &[ModelInfo],
    ) -> Result<EvalPlan> {
        file.check_models(models)?;
        check_layer_names(
            file.layers.keys(),
            &plan_names(spec)?,
            &spec.net,
            &format!("plan file {}", file.path.display()),
        )?;
        let resolved = file.resolve(&spec.plan()?);
        Ok(EvalPlan {
            label: file
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| file.path.display().to_string()),
            multiplier: resolved.default.to_string(),
            layers: resolved
                .layers
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        })
    }

    /// The plans asked of a checkpoint trained with `spec`: one per
    /// multiplier plan in `uniform` (models and widths checked against
    /// `models`) and per plan file in `files` (applied on top of the run's
    /// plan), or the run's own plan when both are empty.
    pub fn asked(
        uniform: &[PlanSpec],
        files: &[PathBuf],
        spec: &RunSpec,
        models: &[ModelInfo],
    ) -> Result<Vec<EvalPlan>> {
        let mut plans = Vec::new();
        for plan in uniform {
            Resolver::new(models).resolve_plan(plan)?;
            plans.push(EvalPlan::uniform(plan));
        }
        for path in files {
            let file = PlanFile::read(path)?;
            plans.push(EvalPlan::from_file_for_spec(&file, spec, models)?);
        }
        if plans.is_empty() {
            plans.push(EvalPlan::of_run(spec));
        }
        Ok(plans)
    }

    /// The plan recorded in a run spec (what the checkpoint was trained with).
    pub fn of_run(spec: &RunSpec) -> EvalPlan {
        EvalPlan {
            label: spec.plan_label(),
            multiplier: spec.multiplier.clone(),
            layers: spec.layers.clone(),
        }
    }
}

/// Test loss and accuracy of one plan.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    /// [`EvalPlan::label`].
    pub label: String,
    /// The full plan (`RunSpec::plan_label` form).
    pub plan: String,
    /// Mean test loss (nats).
    pub loss: f32,
    /// Test accuracy in [0, 1].
    pub accuracy: f32,
    /// Test images evaluated.
    pub samples: usize,
    /// Wall-clock seconds of the evaluation.
    pub seconds: f64,
}

/// Training images that calibrate the activation ranges of `int8:` layers
/// before an evaluation (post-training quantization).
pub const CALIBRATION_IMAGES: usize = 1024;

/// Whether some layer of `spec`'s plan has an `int8:` forward product.
pub fn quantizes(spec: &RunSpec) -> Result<bool> {
    let int8 = |p: &PlanSpec| matches!(p.forward, amsim::MultiplierSpec::Int { .. });
    if int8(&spec.plan()?) {
        return Ok(true);
    }
    for plan in spec.layers.values() {
        if int8(&plan.parse::<PlanSpec>()?) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A trained network and its test set, ready to evaluate plans.
pub struct Evaluator {
    /// Where the weights come from.
    pub source: LoadedCheckpoint,
    /// The spec networks are built from (the run's, with the dataset and
    /// data directory asked for).
    pub spec: RunSpec,
    /// The test images.
    pub test_set: ImageDataset,
    /// Where they came from (a folder or the shipped subset).
    pub data_source: String,
    /// A notice about the data source, if any (the shipped subset).
    pub data_notice: Option<String>,
    /// The calibration images, loaded by the first `int8:` plan.
    calibration: std::sync::OnceLock<ImageDataset>,
}

impl Evaluator {
    /// Load the test set for `source`: its run's dataset unless `dataset`
    /// names another one of the same image shape, from `data_dir` (else the
    /// run's own data directory and the usual fall-backs), the first
    /// `test_limit` images when given.
    pub fn new(
        source: LoadedCheckpoint,
        dataset: Option<&str>,
        data_dir: Option<&Path>,
        test_limit: Option<usize>,
    ) -> Result<Evaluator> {
        let mut spec = source.run.spec.clone();
        if let Some(d) = dataset {
            spec.dataset = d.to_string();
        }
        if let Some(d) = data_dir {
            spec.data_dir = Some(d.to_path_buf());
        }
        if test_limit == Some(0) {
            return Err(ExperimentError::BadSpec(
                "--test-limit must be at least 1".into(),
            ));
        }
        spec.test_limit = test_limit;
        spec.init = None;
        spec.validate()?;
        let location = resolve_dataset_dir(spec.data_dir.as_deref(), &spec.dataset)?;
        let test_set = location.load_images(Split::Test, test_limit)?;
        Ok(Evaluator {
            source,
            spec,
            test_set,
            data_source: location.describe(),
            data_notice: location.notice.clone(),
            calibration: std::sync::OnceLock::new(),
        })
    }

    /// The first [`CALIBRATION_IMAGES`] training images (loaded once).
    fn calibration_set(&self) -> Result<&ImageDataset> {
        if let Some(set) = self.calibration.get() {
            return Ok(set);
        }
        let location = resolve_dataset_dir(self.spec.data_dir.as_deref(), &self.spec.dataset)?;
        let set = location.load_images(Split::Train, Some(CALIBRATION_IMAGES))?;
        Ok(self.calibration.get_or_init(|| set))
    }

    /// Evaluate the trained weights under `plan`.
    pub fn evaluate(&self, plan: &EvalPlan, models: &[ModelInfo]) -> Result<EvalResult> {
        let build = |spec: &RunSpec| {
            let mut network = network_for_spec(spec, models)?;
            self.source
                .checkpoint
                .apply_weights(&self.source.checkpoint_path, &mut network)?;
            if quantizes(spec)? {
                network.calibrate(
                    self.calibration_set()?,
                    CALIBRATION_IMAGES,
                    spec.eval_batch_size,
                )?;
            }
            Ok(network)
        };
        evaluate_plan(plan, &self.spec, build, |network, spec| {
            // The optimizer and schedule are never used: evaluation does not
            // train.
            let mut trainer = Trainer::new(
                network,
                Optimizer::new(OptimizerConfig::sgd())?,
                LrSchedule::constant(1.0),
                spec.seed,
            )?;
            Ok(trainer.evaluate(&self.test_set, spec.eval_batch_size)?)
        })
    }
}

/// The result of `plan` applied to `base` (checked): `build` makes the
/// model of the spec it is given with the trained weights, `score`
/// evaluates it (timed). The evaluation of either task.
pub(crate) fn evaluate_plan<M>(
    plan: &EvalPlan,
    base: &RunSpec,
    build: impl FnOnce(&RunSpec) -> Result<M>,
    score: impl FnOnce(M, &RunSpec) -> Result<EvalStats>,
) -> Result<EvalResult> {
    let spec = plan.applied_to(base);
    spec.validate()?;
    let model = build(&spec)?;
    let started = Instant::now();
    let stats = score(model, &spec)?;
    Ok(EvalResult {
        label: plan.label.clone(),
        plan: spec.plan_label(),
        loss: stats.loss,
        accuracy: stats.accuracy,
        samples: stats.samples,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Header of the evaluation CSV.
pub const EVAL_CSV_HEADER: [&str; 9] = [
    "checkpoint",
    "net",
    "dataset",
    "label",
    "plan",
    "samples",
    "test_loss",
    "test_accuracy",
    "seconds",
];

/// Write evaluation results as CSV, whole; an existing file is an error
/// unless `overwrite`.
pub fn write_eval_csv(
    path: &Path,
    evaluator: &Evaluator,
    results: &[EvalResult],
    overwrite: bool,
) -> Result<()> {
    let records = results.iter().map(|r| {
        vec![
            evaluator.source.checkpoint_path.display().to_string(),
            evaluator.spec.net.clone(),
            evaluator.spec.dataset.clone(),
            r.label.clone(),
            r.plan.clone(),
            r.samples.to_string(),
            r.loss.to_string(),
            r.accuracy.to_string(),
            format!("{:.3}", r.seconds),
        ]
    });
    write_csv(path, overwrite, &EVAL_CSV_HEADER, records)
}

/// Write `header` and `records` as CSV at `path`, whole; an existing file
/// is an error unless `overwrite`.
pub(crate) fn write_csv(
    path: &Path,
    overwrite: bool,
    header: &[&str],
    records: impl IntoIterator<Item = Vec<String>>,
) -> Result<()> {
    refuse_existing(path, overwrite)?;
    let err =
        |e: &dyn std::fmt::Display| ExperimentError::Other(format!("{}: {e}", path.display()));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).map_err(|e| err(&e))?;
    for record in records {
        w.write_record(&record).map_err(|e| err(&e))?;
    }
    let bytes = w.into_inner().map_err(|e| err(&e))?;
    write_atomic(path, &bytes)
}

/// An error if `path` exists and may not be replaced.
pub fn refuse_existing(path: &Path, overwrite: bool) -> Result<()> {
    if path.exists() && !overwrite {
        return Err(ExperimentError::BadFile {
            path: path.to_path_buf(),
            reason: "already exists; choose another file or pass --force to replace it".into(),
        });
    }
    Ok(())
}
