//! `approxtrain lut`, `characterize` and `verify`.

/// `approxtrain lut ...`
#[derive(clap::Subcommand)]
pub enum LutCommand {
    /// Build a native LUT file.
    Build,
}

/// Options of `approxtrain characterize`.
#[derive(clap::Args)]
pub struct CharacterizeArgs {}

/// Options of `approxtrain verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {}

/// Run `lut`.
pub fn run_lut(_c: LutCommand) -> anyhow::Result<()> {
    anyhow::bail!("lut: not available yet")
}
/// Run `characterize`.
pub fn run_characterize(_a: CharacterizeArgs) -> anyhow::Result<()> {
    anyhow::bail!("characterize: not available yet")
}
/// Run `verify`.
pub fn run_verify(_a: VerifyArgs) -> anyhow::Result<()> {
    anyhow::bail!("verify: not available yet")
}
