//! `aura image`: image models in this process (`generate`); `aura image train` joins it
//! from the img-train branch as `train.rs`.

pub(crate) mod generate;

use crate::home::Home;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Make images with an installed image model; each image leaves a signed receipt
    Generate(generate::Args),
}

pub(crate) async fn run(home: &Home, out: &Output, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Generate(args) => generate::run(home, out, args).await,
    }
}
