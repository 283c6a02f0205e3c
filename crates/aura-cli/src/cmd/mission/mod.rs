//! `aura mission`, `aura approvals`, `aura approve`, `aura reject`, `aura operator` and
//! `aura replay`: missions through a running node, and the people who approve them.
//!
//! One file per command group: `submit`, `show` (list and show), `watch`, `control`
//! (cancel, pause, resume, retry, stuck), `prune`, `approve` (approvals, approve, reject),
//! `operator` and `replay`. The command line itself is declared here, in one place, so
//! that `aura mission --help` reads as one list.

mod approve;
mod control;
mod operator;
mod prune;
mod replay;
mod show;
mod submit;
mod watch;

use std::time::Duration;

use serde_json::Value;

use crate::client::{Client, NodeArgs};
use crate::home::Home;
use crate::output::Output;

use super::{decode, print_as};

pub(crate) use approve::{AnswerArgs, ApprovalsArgs, Approver, answer, approvals};
pub(crate) use operator::{OperatorArgs, operator};
pub(crate) use replay::{ReplayArgs, replay};
use submit::SubmitArgs;
pub(crate) use watch::read_entry;

#[derive(Debug, clap::Args)]
pub(crate) struct MissionArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    command: MissionCommand,
}

#[derive(Debug, clap::Subcommand)]
enum MissionCommand {
    /// Submit a mission, from a TOML or JSON file or from flags
    ///
    /// A file holds the same fields as the flags: agent, objective, tools, timeout_secs,
    /// and optionally level, workspace, reasoner, max_steps, max_tokens, network, and
    /// `steps` / `tool_steps` (retry policies and step timeouts, see docs/missions.md).
    Submit(Box<SubmitArgs>),
    /// List missions
    List {
        /// Only missions in this state (submitted, authorized, running, escalated, ...)
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show a mission and its state history
    Show {
        id: String,
        /// Include the conversation
        #[arg(long)]
        full: bool,
    },
    /// Follow a mission live until it ends
    Watch { id: String },
    /// Cancel a mission; its completed steps are undone first
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Pause a mission: no step starts until it is resumed (its deadline still runs)
    Pause {
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused mission
    Resume { id: String },
    /// Run a mission's waiting retries now instead of at their due time
    Retry { id: String },
    /// List missions that need a look: escalated too long, retrying, or paused
    Stuck {
        /// An escalation counts as stuck after this long (e.g. 30m, 2h, 1d)
        #[arg(long, value_name = "AGE", default_value = "1h", value_parser = parse_age)]
        escalated_for: Duration,
    },
    /// Prune the records of old finished missions, keeping their hashes
    ///
    /// Completed, failed and cancelled missions whose last change is older than the given
    /// age lose the bodies of their ledger entries, except each one's submission and final
    /// transition; the entries keep their hashes, so the ledger still verifies. The
    /// missions stay listed, marked pruned, and can no longer be replayed. Needs an
    /// operator key for all namespaces.
    Prune {
        /// How long ago a mission must have ended: a number and a unit (s, m, h, d or w),
        /// like 30d or 12h
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Duration,
        /// Show what would be pruned and change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// An age like `30d`: whole units of seconds, minutes, hours, days or weeks.
pub(crate) fn parse_age(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not an age; use a number and a unit (s, m, h, d, w), like 30d");
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(unit_at);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit_secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{s}` is too long an age"))
}

pub(crate) async fn mission(home: &Home, out: &Output, args: MissionArgs) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    match args.command {
        MissionCommand::Submit(s) => submit::submit(&client, out, *s).await,
        MissionCommand::List {
            state,
            agent,
            limit,
        } => show::list(&client, out, state, agent, limit).await,
        MissionCommand::Show { id, full } => show::show(&client, out, &id, full).await,
        MissionCommand::Watch { id } => watch::watch(&client, out, &id).await,
        MissionCommand::Prune {
            older_than,
            dry_run,
        } => prune::prune(&client, out, older_than, dry_run).await,
        MissionCommand::Cancel { id, reason } => control::cancel(&client, out, &id, reason).await,
        MissionCommand::Pause { id, reason } => control::pause(&client, out, &id, reason).await,
        MissionCommand::Resume { id } => control::resume(&client, out, &id).await,
        MissionCommand::Retry { id } => control::retry(&client, out, &id).await,
        MissionCommand::Stuck { escalated_for } => {
            control::stuck(&client, out, escalated_for).await
        }
    }
}

/// One line for a mission, as `aura mission list` prints it (the automatons use it).
pub(crate) fn describe_one_line(m: &aura_node::wire::MissionView) -> String {
    show::one_line(m)
}

/// Follows a mission live until it ends, as `aura mission watch` does.
pub(crate) async fn watch_mission(client: &Client, out: &Output, id: &str) -> anyhow::Result<()> {
    watch::watch(client, out, id).await
}

/// A mission as the node answered it, described for people (the TUI's detail pane): the
/// same text as `aura mission show`, or the one line saying why it could not be read.
pub(crate) fn describe(raw: &Value) -> String {
    match decode::<aura_node::wire::MissionView>(raw) {
        Ok(m) => show::describe(&m),
        Err(e) => format!("{e:#}"),
    }
}
