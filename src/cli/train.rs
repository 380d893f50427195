//! `approxtrain train`.

/// Options of `approxtrain train`.
#[derive(clap::Args)]
pub struct TrainArgs {}

/// Run `train`.
pub fn run(_a: TrainArgs) -> anyhow::Result<()> {
    anyhow::bail!("train: not available yet")
}
