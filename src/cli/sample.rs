//! `approxtrain sample`: generate text with a trained `--net transformer`
//! run, with its own multiplier plan or another one (inference-only
//! experiments). The work is [`experiments::lm::Sampler`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use experiments::eval::EvalPlan;
use experiments::lm::Sampler;
use experiments::PlanFile;

/// Options of `approxtrain sample`.
#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  approxtrain sample --checkpoint runs/lm-fp32 --prompt 'ROMEO.' --tokens 300
  approxtrain sample --checkpoint runs/lm-fp32 --prompt 'ROMEO.' --tokens 300 --multiplier mbm:7 --seed 2
  approxtrain sample --checkpoint runs/lm-mbm7 --prompt 'To be' --tokens 200 --temperature 0   # greedy

The prompt and the generated characters go to standard output.")]
pub struct SampleArgs {
    /// Run directory of a transformer run (or a checkpoint file in one).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Text to continue; every character must be in the training text's vocabulary.
    #[arg(long, value_name = "TEXT")]
    prompt: String,
    /// Characters to generate.
    #[arg(long, value_name = "N", default_value_t = 200)]
    tokens: usize,
    /// Multiplier plan for generation (fp32, bf16, mbm:7, fwd=..,attn_qk=..) [default: the run's own plan].
    #[arg(long, value_name = "SPEC", conflicts_with = "plan")]
    multiplier: Option<String>,
    /// Per-layer plan file for generation (as for train).
    #[arg(long, value_name = "FILE")]
    plan: Option<PathBuf>,
    /// Softmax temperature; 0 takes the most likely character each time.
    #[arg(long, value_name = "T", default_value_t = 0.8)]
    temperature: f32,
    /// Seed of the sampling stream.
    #[arg(long, value_name = "S", default_value_t = 1)]
    seed: u64,
}

/// Run `sample`.
pub fn run(a: SampleArgs) -> anyhow::Result<()> {
    let models = approxtrain::models::MODELS;
    let plan = match (&a.multiplier, &a.plan) {
        (Some(m), _) => {
            let plan: amsim::PlanSpec = m.parse()?;
            Some((plan.to_string(), BTreeMap::new()))
        }
        (None, Some(path)) => {
            let file = PlanFile::read(path)?;
            let spec = experiments::run_dir::load_checkpoint(&a.checkpoint)?
                .run
                .spec;
            // Layers the file leaves alone keep the run's own plan.
            let plan = EvalPlan::from_file_for_spec(&file, &spec, models)?;
            Some((plan.multiplier, plan.layers))
        }
        (None, None) => None,
    };
    let mut sampler = Sampler::load(&a.checkpoint, plan, models)?;
    let text = sampler.sample(&a.prompt, a.tokens, a.temperature, a.seed)?;
    println!("{}{text}", a.prompt);
    Ok(())
}
