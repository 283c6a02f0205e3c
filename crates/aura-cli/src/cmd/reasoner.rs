//! `aura reasoner`: try a reasoner configuration by hand, outside any mission.
//!
//! Missions name their reasoner in their own declaration (the mission commands belong to
//! the kernel); this command is for checking that a configuration reaches its provider,
//! that the key works and what the model answers, before a mission depends on it.

use std::io::Write as _;
use std::path::PathBuf;

use aura_reasoner::{Config, Context, Delta, Message, Request, Turn};

use crate::hinted;
use crate::output::Output;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Send one prompt through a reasoner configuration and show the turn
    #[command(
        after_help = "The configuration is a TOML (or .json) file such as:\n\n  \
provider = \"openai\"\n  base_url = \"http://127.0.0.1:8000/v1\"\n  model = \"qwen2.5-7b-instruct\"\n\n\
API keys are read from the environment variable named by api_key_env. \
See docs/reasoners.md for every provider and option."
    )]
    Test {
        /// The reasoner configuration file
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// A system prompt to send before the prompt
        #[arg(long, value_name = "TEXT")]
        system: Option<String>,
        /// The most tokens to generate
        #[arg(long, value_name = "N")]
        max_tokens: Option<u32>,
        /// The prompt
        prompt: String,
    },
}

pub(crate) async fn run(out: &Output, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Test {
            config,
            system,
            max_tokens,
            prompt,
        } => {
            let config = Config::load(&config).map_err(reasoner_error)?;
            let reasoner =
                aura_reasoner::build(&config, &Context::system()).map_err(reasoner_error)?;
            let mut messages = Vec::new();
            if let Some(system) = system {
                messages.push(Message::system(system));
            }
            messages.push(Message::user(prompt));
            let mut request = Request::new(messages);
            request.max_tokens = max_tokens;

            // People see the text as it streams; programs get the finished turn.
            let stream_text = |d: Delta| match d {
                Delta::Text(t) => {
                    let mut stdout = std::io::stdout().lock();
                    let _ = write!(stdout, "{t}");
                    let _ = stdout.flush();
                }
                Delta::Reset { attempt } => {
                    eprintln!("\n(attempt {attempt}: the text so far is discarded)");
                }
                Delta::ToolCallStarted { .. } | Delta::ToolCallArguments { .. } => {}
            };
            let sink: Option<&aura_reasoner::DeltaSink<'_>> = if out.is_json() {
                None
            } else {
                Some(&stream_text)
            };
            let turn = reasoner
                .turn(&request, sink)
                .await
                .map_err(reasoner_error)?;
            out.print(&turn, || summary(&turn))
        }
    }
}

/// What follows the streamed text: tool calls, then one line of accounting.
fn summary(turn: &Turn) -> String {
    let mut text = String::from(if turn.content.is_empty() { "" } else { "\n\n" });
    for call in &turn.tool_calls {
        text.push_str(&format!(
            "tool call  {} {} ({})\n",
            call.name, call.arguments, call.id
        ));
    }
    let tokens = if turn.usage.reported {
        format!(
            "{} prompt + {} completion tokens",
            turn.usage.prompt_tokens, turn.usage.completion_tokens
        )
    } else {
        "usage not reported".to_owned()
    };
    let finish = serde_json::to_value(&turn.finish)
        .map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
        .unwrap_or_default();
    text.push_str(&format!(
        "finish {finish} · {tokens} · {} {} · {} attempt{}\n",
        turn.provider,
        turn.model,
        turn.attempts,
        if turn.attempts == 1 { "" } else { "s" }
    ));
    text
}

fn reasoner_error(e: aura_reasoner::Error) -> anyhow::Error {
    match e.hint() {
        Some(hint) => hinted(e.to_string(), hint),
        None => anyhow::Error::new(e),
    }
}
