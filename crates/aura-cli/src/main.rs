//! `aura`: one binary for Aura's node, ledger, keys and tools.
//!
//! Every subcommand prints for people by default and JSON with `--json`; errors are one
//! line on stderr, then a `hint:` where the user can do something. Exit codes: 0 success,
//! 1 error, 2 usage, 3 verification failed (the data is bad, not the command).

#![forbid(unsafe_code)]

mod client;
mod cmd;
mod home;
mod output;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::Output;

/// Aura: governed, sandboxed, signed and replayable AI agents and models.
#[derive(Debug, Parser)]
#[command(name = "aura", version, propagate_version = true, max_term_width = 100)]
#[command(after_help = "The data directory holds the node's keys and ledger. \
Start with `aura init`, then see `aura ledger --help`.")]
struct Cli {
    /// Data directory [default: ~/.aura]
    #[arg(
        long,
        global = true,
        env = "AURA_HOME",
        hide_env_values = true,
        value_name = "DIR"
    )]
    home: Option<PathBuf>,

    /// Print machine-readable JSON instead of text for people
    #[arg(long, global = true)]
    json: bool,

    /// Read key passphrases from this file (first line) instead of asking
    #[arg(long, global = true, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the data directory, the node's key and its ledger
    Init(cmd::init::Args),
    /// Show and create keys
    #[command(subcommand)]
    Key(cmd::key::Command),
    /// Append to, read, verify, export and prove the signed ledger
    #[command(subcommand)]
    Ledger(cmd::ledger::Command),
    /// Run this node: agents and missions behind the HTTP API
    Serve(cmd::serve::Args),
    /// The nodes sharing one PostgreSQL store: enroll, list, status, verify, export
    #[command(subcommand)]
    Cluster(cmd::cluster::Command),
    /// Talk to an installed model in this process; every answer leaves a signed receipt
    Chat(cmd::chat::Args),
    /// Create agents, message them, read their records (through a running node)
    Agent(cmd::agent::Args),
    /// Manage the API keys the node accepts
    #[command(subcommand)]
    Apikey(cmd::apikey::Command),
    /// Submit, list, follow and cancel missions (through a running node)
    Mission(cmd::mission::MissionArgs),
    /// List the escalations waiting for a person
    Approvals(cmd::mission::ApprovalsArgs),
    /// Approve an escalated mission with your signed approval
    Approve(cmd::mission::AnswerArgs),
    /// Reject an escalated mission with your signed answer
    Reject(cmd::mission::AnswerArgs),
    /// A terminal UI for operators: missions live, approvals, events (keys: ?)
    Tui(cmd::tui::TuiArgs),
    /// Enroll the people whose signed approvals count
    Operator(cmd::mission::OperatorArgs),
    /// Replay a mission (or every mission of an agent) from the ledger, checking every state hash
    Replay(cmd::mission::ReplayArgs),
    /// Try a reasoner configuration: send a prompt, see the turn
    #[command(subcommand)]
    Reasoner(cmd::reasoner::Command),
    /// Import, fetch, verify, list and remove signed model packages
    #[command(subcommand)]
    Model(cmd::model::Command),
    /// Make images with an installed image model, or train Aura's own (and LoRA adapters)
    #[command(subcommand)]
    Image(cmd::image::Command),
    /// Issue, install, list and check model licenses
    #[command(subcommand)]
    License(cmd::license::Command),
    /// List and verify inference receipts and settlement statements
    #[command(subcommand)]
    Receipts(cmd::receipts::Command),
    /// Sign statements of what each licensor is owed for a time window
    Settle(cmd::receipts::SettleArgs),
    /// Validate policy files and decide hypothetical requests
    #[command(subcommand)]
    Policy(cmd::policy::Command),
    /// Run a command in a hardened cell here, or manage a running node's cells
    #[command(subcommand)]
    Cell(cmd::cell::Command),
    /// Make the certificates of the node's gRPC cell API (mTLS)
    #[command(subcommand)]
    Pki(cmd::pki::Command),
    /// Serve Aura to MCP clients (Model Context Protocol) with an API key's role
    #[command(subcommand)]
    Mcp(cmd::mcp::Command),
    /// Submit missions on a schedule: cron in a time zone, or every so often
    Schedule(cmd::schedule::ScheduleArgs),
    /// Run a built-in automaton (a dev loop, a task runner) as missions
    Automaton(cmd::automaton::AutomatonArgs),
    /// Store, search, list and forget memories of a namespace (through a running node)
    Memory(cmd::memory::Args),
}

/// An error that knows what the user could do about it.
#[derive(Debug)]
pub(crate) struct Hinted {
    pub(crate) message: String,
    pub(crate) hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// Builds an error with a hint.
pub(crate) fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// Verification found bad data: exit code 3 rather than 1.
#[derive(Debug)]
pub(crate) struct VerificationFailed(pub(crate) String);

impl std::fmt::Display for VerificationFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for VerificationFailed {}

/// The hint for an error, from the first error in its chain that has one.
pub(crate) fn hint_for(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|e| {
        if let Some(h) = e.downcast_ref::<Hinted>() {
            return Some(h.hint.clone());
        }
        if let Some(k) = e.downcast_ref::<aura_core::keystore::Error>() {
            return k.hint();
        }
        if let Some(s) = e.downcast_ref::<aura_store::Error>() {
            return home::store_hint(s);
        }
        None
    })
}

/// Parses the command line; usage errors become one line and a hint, exit code 2.
fn parse_cli() -> Result<Cli, ExitCode> {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => Ok(cli),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            Err(ExitCode::from(2))
        }
        Err(e) => {
            let text = e.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("error: invalid arguments");
            eprintln!("{first}");
            let tip = lines.find_map(|l| l.strip_prefix("tip: "));
            let usage = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Usage: "))
                .unwrap_or("aura");
            // "aura ledger [OPTIONS] <COMMAND>" -> "aura ledger --help".
            let command: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect();
            match tip {
                Some(tip) => eprintln!("hint: {tip}"),
                None => eprintln!("hint: see `{} --help`", command.join(" ")),
            }
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let out = Output::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli, &out));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the message and its causes, each once.
            let mut line = String::new();
            for cause in err.chain() {
                let text = cause.to_string();
                if !text.is_empty() && !line.contains(&text) {
                    if !line.is_empty() {
                        line.push_str(": ");
                    }
                    line.push_str(&text);
                }
            }
            eprintln!("error: {line}");
            if let Some(hint) = hint_for(&err) {
                eprintln!("hint: {hint}");
            }
            if err.chain().any(|e| e.is::<VerificationFailed>()) {
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn run(cli: Cli, out: &Output) -> anyhow::Result<()> {
    let home = home::Home::locate(cli.home, cli.passphrase_file)?;
    match cli.command {
        Command::Init(args) => cmd::init::run(&home, out, args).await,
        Command::Key(c) => cmd::key::run(&home, out, c),
        Command::Ledger(c) => cmd::ledger::run(&home, out, c).await,
        Command::Serve(args) => cmd::serve::run(&home, out, args).await,
        Command::Cluster(c) => cmd::cluster::run(&home, out, c).await,
        Command::Chat(args) => cmd::chat::run(&home, out, args).await,
        Command::Agent(args) => cmd::agent::run(&home, out, args).await,
        Command::Apikey(c) => cmd::apikey::run(&home, out, c),
        Command::Mission(args) => cmd::mission::mission(&home, out, args).await,
        Command::Approvals(args) => cmd::mission::approvals(&home, out, args).await,
        Command::Approve(args) => {
            cmd::mission::answer(&home, out, args, aura_identity::Verdict::Approve).await
        }
        Command::Reject(args) => {
            cmd::mission::answer(&home, out, args, aura_identity::Verdict::Reject).await
        }
        Command::Tui(args) => cmd::tui::run(&home, args).await,
        Command::Operator(args) => cmd::mission::operator(&home, out, args).await,
        Command::Replay(args) => cmd::mission::replay(&home, out, args).await,
        Command::Reasoner(c) => cmd::reasoner::run(out, c).await,
        Command::Model(c) => cmd::model::run(&home, out, c),
        Command::Image(c) => cmd::image::run(&home, out, c).await,
        Command::License(c) => cmd::license::run(&home, out, c).await,
        Command::Receipts(c) => cmd::receipts::run(&home, out, c).await,
        Command::Settle(args) => cmd::receipts::settle(&home, out, args).await,
        Command::Policy(c) => cmd::policy::run(&home, out, c),
        Command::Cell(c) => cmd::cell::run(&home, out, c).await,
        Command::Pki(c) => cmd::pki::run(&home, out, c),
        Command::Mcp(c) => cmd::mcp::run(&home, c).await,
        Command::Schedule(args) => cmd::schedule::run(&home, out, args).await,
        Command::Automaton(args) => cmd::automaton::run(&home, out, args).await,
        Command::Memory(args) => cmd::memory::run(&home, out, args).await,
    }
}
