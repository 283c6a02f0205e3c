//! `aura chat`: talk to an installed model in this process, streaming its answer as it is
//! written. The model is opened the way the node opens it (verified against its signed
//! manifest, licensed for this node) and every answer leaves a signed usage receipt in
//! the ledger, so the node must not be running on the same data directory.
//!
//! One line of input is one message; `/reset` forgets the conversation, `/exit` (or the
//! end of input) ends the chat. With `--json` each answer is one JSON line. With
//! `--agent` the chat goes through a running node instead (`chat_agent.rs`).

use std::io::{BufRead as _, Write as _};
use std::sync::Arc;

use aura_reasoner::{Delta, Finish, LocalConfig, Message, Request};
use aura_store::Store;
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::Output;
use aura_host::{DEFAULT_MODEL, Metering, ModelHost, is_installed};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The installed model package to talk to (see `aura model list`)
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: String,
    /// A system message that opens the conversation
    #[arg(long)]
    system: Option<String>,
    /// The most tokens an answer may have
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Sampling temperature; 0 is greedy (the same answer every time)
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// The seed of sampled answers (answers are reproducible for a given seed)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads for the model's work (answers do not depend on it) [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
    /// Talk to an agent through the running node instead: each message is a mission of
    /// the agent, and the conversation lives in the ledger (it survives restarts)
    #[arg(long, value_name = "AGENT")]
    agent: Option<String>,
    /// With --agent: the conversation to start or continue
    #[arg(long, value_name = "NAME", default_value = "default")]
    conversation: String,
    /// With --agent: a reasoner configured on the node (default: the node's)
    #[arg(long, value_name = "NAME")]
    reasoner: Option<String>,
    /// With --agent: seconds each message's mission may take
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 300)]
    timeout_secs: u64,
    #[command(flatten)]
    node: crate::client::NodeArgs,
}

#[derive(Serialize)]
struct Answer<'a> {
    content: &'a str,
    finish: &'a Finish,
    prompt_tokens: u64,
    completion_tokens: u64,
}

pub(crate) async fn run(home: &Home, out: &Output, args: Args) -> anyhow::Result<()> {
    if let Some(agent) = args.agent {
        let chat = super::chat_agent::AgentChat {
            node: args.node,
            agent,
            conversation: args.conversation,
            reasoner: args.reasoner,
            timeout_secs: args.timeout_secs,
        };
        return super::chat_agent::run(home, out, &chat).await;
    }
    home.require_init()?;
    if !(0.0..=2.0).contains(&args.temperature) {
        return Err(hinted(
            format!("temperature {} is out of range", args.temperature),
            "use a value from 0 (greedy) to 2",
        ));
    }
    if !is_installed(home.dir(), &args.model) {
        return Err(hinted(
            format!("no model package `{}` is installed", args.model),
            if args.model == DEFAULT_MODEL {
                "fetch it with `aura model pull smollm2`".to_owned()
            } else {
                "see `aura model list`, or import one with `aura model import`".to_owned()
            },
        ));
    }
    let (store, signer) = home.open_store_and_signer()?;
    let store: Arc<dyn Store> = Arc::new(store);
    let metering = Metering::open(store, signer)
        .await
        .map_err(anyhow::Error::msg)?;
    let models = Arc::new(ModelHost::new(home.dir(), metering, args.threads)).reasoners();
    let reasoner = models
        .open(&LocalConfig {
            model: args.model.clone().into(),
            name: None,
            threads: args.threads,
            max_tokens: Some(args.max_tokens),
        })
        .map_err(|e| {
            hinted(
                e.to_string(),
                "see `aura model verify` and `aura license list`",
            )
        })?;

    let interactive = !out.is_json() && std::io::IsTerminal::is_terminal(&std::io::stdin());
    if interactive {
        eprintln!(
            "chatting with `{}` (deterministic{}); /reset forgets, /exit or Ctrl-D ends",
            args.model,
            if args.temperature == 0.0 {
                ", greedy"
            } else {
                ", seeded"
            }
        );
    }
    let mut history: Vec<Message> = args.system.iter().map(Message::system).collect();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" => break,
            "/reset" => {
                history.truncate(usize::from(args.system.is_some()));
                continue;
            }
            _ => {}
        }
        history.push(Message::user(text));
        let request = Request {
            max_tokens: Some(args.max_tokens),
            temperature: Some(args.temperature),
            seed: Some(args.seed),
            ..Request::new(history.clone())
        };
        let stream_text = !out.is_json();
        let sink = |d: Delta| {
            if let (true, Delta::Text(t)) = (stream_text, d) {
                let mut stdout = std::io::stdout().lock();
                // A closed stdout ends the chat at the next line; nothing to do here.
                let _ = write!(stdout, "{t}").and_then(|()| stdout.flush());
            }
        };
        let turn = match reasoner.turn(&request, Some(&sink)).await {
            Ok(turn) => turn,
            Err(e) => {
                // The message stays out of the conversation, so the next one starts clean.
                history.pop();
                return Err(hinted(
                    format!("the model could not answer: {e}"),
                    "see `aura license list` and `aura model verify`",
                ));
            }
        };
        if out.is_json() {
            out.line(
                &Answer {
                    content: &turn.content,
                    finish: &turn.finish,
                    prompt_tokens: turn.usage.prompt_tokens,
                    completion_tokens: turn.usage.completion_tokens,
                },
                String::new,
            )?;
        } else {
            println!();
        }
        history.push(Message::assistant(turn.content, Vec::new()));
    }
    Ok(())
}
