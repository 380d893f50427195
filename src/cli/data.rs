//! `approxtrain data`.

/// `approxtrain data ...`
#[derive(clap::Subcommand)]
pub enum DataCommand {
    /// Download a dataset's public files.
    Fetch,
}

/// Run `data`.
pub fn run(_c: DataCommand) -> anyhow::Result<()> {
    anyhow::bail!("data: not available yet")
}
