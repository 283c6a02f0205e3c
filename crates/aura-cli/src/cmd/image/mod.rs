//! `aura image`: Aura's own image model. This branch brings `train`; the hosting side
//! (`generate`, the studio) lives beside it in the same enum.

pub(crate) mod pull;
pub(crate) mod train;

use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Train Aura's own image model (on the emoji, or a folder), or LoRA adapters with --lora;
    /// the run's provenance is signed into the ledger
    Train(train::Args),
}

pub(crate) async fn run(home: &Home, out: &Output, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Train(args) => train::run(home, out, args).await,
    }
}
