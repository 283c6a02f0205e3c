//! `aura image`: image models in this process: `generate` (any installed image model,
//! hosted as the node hosts it) and `train` (Aura's own image model, or LoRA adapters).

pub(crate) mod generate;
pub(crate) mod pull;
pub(crate) mod train;

use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Make images with an installed image model; each image leaves a signed receipt
    Generate(generate::Args),
    /// Train Aura's own image model (on the emoji, or a folder), or LoRA adapters with --lora;
    /// the run's provenance is signed into the ledger
    Train(train::Args),
}

pub(crate) async fn run(home: &Home, out: &Output, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Generate(args) => generate::run(home, out, args).await,
        Command::Train(args) => train::run(home, out, args).await,
    }
}
