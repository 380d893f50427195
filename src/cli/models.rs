//! `approxtrain models`.

/// Options of `approxtrain models`.
#[derive(clap::Args)]
pub struct ModelsArgs {}

/// List the registered models.
pub fn run(_args: ModelsArgs) -> anyhow::Result<()> {
    for m in approxtrain::models::MODELS {
        println!("{:<10} {}", m.name, m.description);
    }
    Ok(())
}
