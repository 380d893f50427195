//! `approxtrain bench`.

/// `approxtrain bench ...`
#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// Time GEMM.
    Gemm,
}

/// Run `bench`.
pub fn run(_c: BenchCommand) -> anyhow::Result<()> {
    anyhow::bail!("bench: not available yet")
}
