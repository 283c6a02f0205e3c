//! `aura schedule`: durable schedules on a running node, each submitting a mission from
//! its template at the instants of a cron expression in a time zone, or every so often
//! (docs/automatons.md).

use std::path::PathBuf;
use std::time::Duration;

use aura_engine::schedule::View;
use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::hinted;
use crate::home::Home;
use crate::output::Output;

use super::mission::parse_age;
use super::print_as;

#[derive(Debug, clap::Args)]
pub(crate) struct ScheduleArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    command: ScheduleCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ScheduleCommand {
    /// Create a schedule: a mission template and when to submit it
    ///
    /// The template takes the fields of `aura mission submit` (objective, tools, timeout and
    /// the optional ones), from flags or from a JSON or TOML file (`--template`; `aura
    /// automaton ... --print-template` writes one). The trigger is a cron expression read in
    /// a time zone (`--cron "0 9 * * MON-FRI" --tz Europe/Paris`) or an interval
    /// (`--every 15m`). Instants missed while the node was down are skipped, or caught up
    /// once with `--missed catch-up-once`.
    Create(Box<CreateArgs>),
    /// List schedules
    List,
    /// Show a schedule: its template, trigger, next instant and what it has done
    Show { id: String },
    /// Delete a schedule; the missions it submitted carry on
    Delete { id: String },
    /// Pause a schedule: nothing fires until it is resumed (nor counts as missed)
    Pause { id: String },
    /// Resume a paused schedule from now
    Resume { id: String },
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The agent whose missions it submits
    #[arg(long)]
    agent: String,
    /// A name for people
    #[arg(long, default_value = "")]
    name: String,
    /// A cron expression (minute hour day-of-month month day-of-week, or @daily, ...)
    #[arg(
        long,
        value_name = "EXPR",
        conflicts_with = "every",
        required_unless_present = "every"
    )]
    cron: Option<String>,
    /// The time zone the cron expression is read in (an IANA name)
    #[arg(long, value_name = "ZONE", default_value = "UTC")]
    tz: String,
    /// An interval instead: a number and a unit (s, m, h, d or w), like 15m
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    every: Option<Duration>,
    /// What happens to instants missed while the node was down
    #[arg(long, default_value = "skip", value_parser = ["skip", "catch-up-once"])]
    missed: String,
    /// Create it paused
    #[arg(long)]
    paused: bool,
    /// The mission template from a file (JSON, or TOML unless it ends in .json); flags
    /// override its fields
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
    #[arg(long)]
    objective: Option<String>,
    /// A tool the missions may use (repeat)
    #[arg(long = "tool", value_name = "TOOL")]
    tools: Vec<String>,
    /// Seconds until each mission times out
    #[arg(long = "timeout", value_name = "SECS")]
    timeout_secs: Option<u64>,
    /// Authority level (default: the agent's)
    #[arg(long)]
    level: Option<String>,
    /// A named workspace, so that every mission works on the same files
    #[arg(long)]
    workspace: Option<String>,
    /// A configured reasoner (default: the node's)
    #[arg(long)]
    reasoner: Option<String>,
    #[arg(long)]
    max_steps: Option<u32>,
}

pub(crate) async fn run(home: &Home, out: &Output, args: ScheduleArgs) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    match args.command {
        ScheduleCommand::Create(c) => create(&client, out, *c).await,
        ScheduleCommand::List => {
            let all: Value = client.get("/v1/schedules?limit=1000").await?;
            print_as(out, &all, |all: Vec<View>| {
                if all.is_empty() {
                    return "no schedules\n".into();
                }
                all.iter().map(|v| format!("{}\n", one_line(v))).collect()
            })
        }
        ScheduleCommand::Show { id } => {
            let v: Value = client.get(&format!("/v1/schedules/{id}")).await?;
            print_as(out, &v, |v: View| describe(&v))
        }
        ScheduleCommand::Delete { id } => {
            let v: Value = client.delete(&format!("/v1/schedules/{id}")).await?;
            print_as(out, &v, |v: View| format!("deleted {}\n", one_line(&v)))
        }
        ScheduleCommand::Pause { id } => {
            let v: Value = client
                .post(&format!("/v1/schedules/{id}/pause"), &json!({}))
                .await?;
            print_as(out, &v, |v: View| format!("paused {}\n", one_line(&v)))
        }
        ScheduleCommand::Resume { id } => {
            let v: Value = client
                .post(&format!("/v1/schedules/{id}/resume"), &json!({}))
                .await?;
            print_as(out, &v, |v: View| format!("resumed {}\n", one_line(&v)))
        }
    }
}

/// Reads a template file: the fields of a mission declaration without the agent.
pub(crate) fn read_template(path: &std::path::Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let parsed: Result<Value, String> = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str::<toml::Value>(&text)
            .map_err(|e| e.to_string().trim().replace('\n', " "))
            .and_then(|t| serde_json::to_value(t).map_err(|e| e.to_string()))
    };
    let value = parsed.map_err(|e| {
        hinted(
            format!("{} is not a mission template: {e}", path.display()),
            "see `aura schedule create --help`",
        )
    })?;
    if !value.is_object() {
        return Err(hinted(
            format!(
                "{} is not a mission template: not a table of fields",
                path.display()
            ),
            "see `aura schedule create --help`",
        ));
    }
    Ok(value)
}

async fn create(client: &Client, out: &Output, c: CreateArgs) -> anyhow::Result<()> {
    let mut template = match &c.template {
        Some(path) => read_template(path)?,
        None => json!({}),
    };
    let set = |t: &mut Value, key: &str, value: Value| {
        if !value.is_null() {
            t[key] = value;
        }
    };
    set(&mut template, "objective", json!(c.objective));
    if !c.tools.is_empty() {
        set(&mut template, "tools", json!(c.tools));
    }
    set(&mut template, "timeout_secs", json!(c.timeout_secs));
    set(&mut template, "level", json!(c.level));
    set(&mut template, "workspace", json!(c.workspace));
    set(&mut template, "reasoner", json!(c.reasoner));
    set(&mut template, "max_steps", json!(c.max_steps));
    for (key, what) in [
        ("objective", "an objective (--objective)"),
        ("tools", "at least one tool (--tool)"),
        ("timeout_secs", "a timeout (--timeout SECS)"),
    ] {
        if template.get(key).is_none_or(Value::is_null) {
            return Err(hinted(
                format!("the schedule's mission needs {what}"),
                "give it as a flag or in --template; see `aura schedule create --help`",
            ));
        }
    }
    let trigger = match (&c.cron, c.every) {
        (Some(expr), _) => json!({"kind": "cron", "expr": expr, "zone": c.tz}),
        (None, Some(every)) => json!({"kind": "every", "secs": every.as_secs()}),
        (None, None) => {
            return Err(hinted(
                "the schedule needs a trigger",
                "give --cron EXPR (with --tz ZONE) or --every AGE",
            ));
        }
    };
    let body = json!({
        "agent": c.agent,
        "name": c.name,
        "template": template,
        "trigger": trigger,
        "missed": c.missed,
        "paused": c.paused,
    });
    let v: Value = client.post("/v1/schedules", &body).await?;
    print_as(out, &v, |v: View| format!("created {}\n", one_line(&v)))
}

fn one_line(v: &View) -> String {
    let s = &v.schedule;
    let next = match (v.enabled, v.next_due) {
        (false, _) => "paused".to_owned(),
        (true, Some(t)) => format!("next {t}"),
        (true, None) => "no next instant".to_owned(),
    };
    format!(
        "{}  {}  {}  {}  {}",
        s.id,
        s.agent,
        s.trigger.describe(),
        next,
        if s.name.is_empty() {
            s.template.objective.chars().take(40).collect::<String>()
        } else {
            s.name.clone()
        }
    )
}

fn describe(v: &View) -> String {
    let s = &v.schedule;
    let missed = match s.missed {
        aura_engine::Missed::Skip => "skip",
        aura_engine::Missed::CatchUpOnce => "catch-up-once",
    };
    let mut text = format!(
        "schedule   {}\nname       {}\nagent      {}\nnamespace  {}\ntrigger    {}\nmissed     {}\nstate      {}\nnext       {}\nlast       {}\nfired      {} (last mission {})\nskipped    {}\nobjective  {}\ntools      {}\ntimeout    {} s\ncreated    {} by {}\n",
        s.id,
        s.name,
        s.agent,
        s.namespace,
        s.trigger.describe(),
        missed,
        if v.enabled { "enabled" } else { "paused" },
        v.next_due.map_or("-".to_owned(), |t| t.to_string()),
        v.last_due.map_or("-".to_owned(), |t| t.to_string()),
        v.fired,
        v.last_mission.map_or("-".to_owned(), |m| m.to_string()),
        v.skipped,
        s.template.objective,
        s.template.tools.join(", "),
        s.template.timeout_secs,
        s.created_at,
        s.created_by,
    );
    if let Some(w) = &s.template.workspace {
        text.push_str(&format!("workspace  {w}\n"));
    }
    text
}
