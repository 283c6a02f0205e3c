//! `aura mission`, `aura approvals`, `aura approve`, `aura reject`, `aura operator` and
//! `aura replay`: missions through a running node, and the people who approve them.

use std::path::PathBuf;
use std::time::Duration;

use aura_core::door::{Clock as _, OsEntropy, SystemClock};
use aura_core::keystore::KeyName;
use aura_core::{MissionId, Timestamp};
use aura_identity::{Answers, Approval, ApprovalId, Credential, Signed, Verdict};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::hinted;
use crate::home::Home;
use crate::output::Output;

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
fn parse_age(s: &str) -> Result<Duration, String> {
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

#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// A mission file (TOML, or JSON if it ends in .json)
    file: Option<PathBuf>,
    /// The agent that carries it out
    #[arg(long)]
    agent: Option<String>,
    #[arg(long)]
    objective: Option<String>,
    /// A tool it may use (repeat)
    #[arg(long = "tool", value_name = "TOOL")]
    tools: Vec<String>,
    /// Seconds until it times out
    #[arg(long = "timeout", value_name = "SECS")]
    timeout_secs: Option<u64>,
    /// Authority level (default: the agent's)
    #[arg(long)]
    level: Option<String>,
    /// A named workspace of the namespace
    #[arg(long)]
    workspace: Option<String>,
    /// A configured reasoner (default: the node's)
    #[arg(long)]
    reasoner: Option<String>,
    #[arg(long)]
    max_steps: Option<u32>,
    /// Follow the mission until it ends
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MissionFile {
    agent: Option<String>,
    objective: Option<String>,
    #[serde(default)]
    tools: Vec<String>,
    timeout_secs: Option<u64>,
    level: Option<String>,
    workspace: Option<String>,
    reasoner: Option<String>,
    max_steps: Option<u32>,
    max_tokens: Option<u64>,
    #[serde(default)]
    network: Vec<String>,
    /// Retry policy and step timeouts, checked by the node.
    steps: Option<Value>,
    tool_steps: Option<Value>,
}

pub(crate) async fn mission(home: &Home, out: &Output, args: MissionArgs) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    match args.command {
        MissionCommand::Submit(s) => submit(&client, out, *s).await,
        MissionCommand::List {
            state,
            agent,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if let Some(s) = state {
                query.push(format!("state={s}"));
            }
            if let Some(a) = agent {
                query.push(format!("agent={a}"));
            }
            let missions: Vec<Value> = client
                .get(&format!("/v1/missions?{}", query.join("&")))
                .await?;
            out.print(&missions, || {
                if missions.is_empty() {
                    return "no missions\n".into();
                }
                missions
                    .iter()
                    .map(|m| format!("{}\n", one_line(m)))
                    .collect()
            })
        }
        MissionCommand::Show { id, full } => {
            let detail = if full { "?detail=full" } else { "" };
            let m: Value = client.get(&format!("/v1/missions/{id}{detail}")).await?;
            out.print(&m, || describe(&m))
        }
        MissionCommand::Watch { id } => watch(&client, out, &id).await,
        MissionCommand::Prune {
            older_than,
            dry_run,
        } => prune(&client, out, older_than, dry_run).await,
        MissionCommand::Cancel { id, reason } => {
            let m: Value = client
                .post(
                    &format!("/v1/missions/{id}/cancel"),
                    &json!({ "reason": reason }),
                )
                .await?;
            out.print(&m, || describe(&m))
        }
        MissionCommand::Pause { id, reason } => {
            let m: Value = client
                .post(
                    &format!("/v1/missions/{id}/pause"),
                    &json!({ "reason": reason }),
                )
                .await?;
            out.print(&m, || format!("paused {}\n", one_line(&m)))
        }
        MissionCommand::Resume { id } => {
            let m: Value = client
                .post(&format!("/v1/missions/{id}/resume"), &json!({}))
                .await?;
            out.print(&m, || format!("resumed {}\n", one_line(&m)))
        }
        MissionCommand::Retry { id } => {
            let m: Value = client
                .post(&format!("/v1/missions/{id}/retry"), &json!({}))
                .await?;
            out.print(&m, || format!("retrying now {}\n", one_line(&m)))
        }
        MissionCommand::Stuck { escalated_for } => {
            let stuck: Value = client
                .get(&format!(
                    "/v1/missions/stuck?escalated_for_secs={}",
                    escalated_for.as_secs()
                ))
                .await?;
            out.print(&stuck, || describe_stuck(&stuck))
        }
    }
}

/// One line per stuck mission: id, state, why, since.
fn describe_stuck(stuck: &Value) -> String {
    let rows = stuck.as_array().map(Vec::as_slice).unwrap_or_default();
    if rows.is_empty() {
        return "no mission is stuck\n".into();
    }
    let mut text = String::new();
    for s in rows {
        let why = &s["why"];
        let detail = match why["kind"].as_str().unwrap_or("?") {
            "escalated" => format!(
                "escalated: `{}` waits for approval at {}",
                why["action"].as_str().unwrap_or("?"),
                why["level"].as_str().unwrap_or("?")
            ),
            "retrying" => format!(
                "retrying {} after {} attempt(s){}{}",
                why["call"].as_str().unwrap_or("the reasoner's turn"),
                why["attempts"],
                why["last_error"]
                    .as_str()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default(),
                why["retry_at"]
                    .as_str()
                    .map(|t| format!(" (next at {t})"))
                    .unwrap_or_default()
            ),
            other => other.to_owned(),
        };
        text.push_str(&format!(
            "{}  {:<11} since {}  {detail}\n",
            s["mission"].as_str().unwrap_or("?"),
            s["state"].as_str().unwrap_or("?"),
            s["since"].as_str().unwrap_or("?"),
        ));
    }
    text.push_str("hint: `aura mission retry ID` runs a waiting retry now; `aura mission resume ID` resumes a paused one\n");
    text
}

async fn prune(
    client: &Client,
    out: &Output,
    older_than: Duration,
    dry_run: bool,
) -> anyhow::Result<()> {
    let r: Value = client
        .post(
            "/v1/missions/prune",
            &json!({ "older_than_secs": older_than.as_secs(), "dry_run": dry_run }),
        )
        .await?;
    out.print(&r, || {
        let missions: Vec<&str> = r["missions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let cutoff = r["older_than"].as_str().unwrap_or("?");
        if missions.is_empty() {
            return format!("nothing to prune: no unpruned mission ended before {cutoff}\n");
        }
        let n = missions.len() as u64;
        let entries = r["entries"].as_u64().unwrap_or(0);
        let bytes = r["bytes_freed"].as_u64().unwrap_or(0);
        let mut text = format!(
            "{} {}: {} {}, {} bytes of bodies; each keeps its submission and final transition\n",
            if dry_run { "would prune" } else { "pruned" },
            crate::output::count(n, "mission", "missions"),
            crate::output::count(entries, "entry", "entries"),
            if dry_run { "would lose their bodies" } else { "lost their bodies" },
            bytes,
        );
        for m in missions {
            text.push_str(&format!("  {m}\n"));
        }
        if !dry_run {
            text.push_str(
                "the ledger still verifies; the file gives the space back after `VACUUM` (docs/ledger.md)\n",
            );
        }
        text
    })
}

async fn submit(client: &Client, out: &Output, s: SubmitArgs) -> anyhow::Result<()> {
    let mut f = match &s.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let parsed = if path.extension().is_some_and(|e| e == "json") {
                serde_json::from_str::<MissionFile>(&text).map_err(|e| e.to_string())
            } else {
                toml::from_str::<MissionFile>(&text)
                    .map_err(|e| e.to_string().trim().replace('\n', " "))
            };
            parsed.map_err(|e| {
                hinted(
                    format!("{} is not a mission file: {e}", path.display()),
                    "see `aura mission submit --help`",
                )
            })?
        }
        None => MissionFile {
            agent: None,
            objective: None,
            tools: Vec::new(),
            timeout_secs: None,
            level: None,
            workspace: None,
            reasoner: None,
            max_steps: None,
            max_tokens: None,
            network: Vec::new(),
            steps: None,
            tool_steps: None,
        },
    };
    // Flags override the file.
    f.agent = s.agent.or(f.agent);
    f.objective = s.objective.or(f.objective);
    if !s.tools.is_empty() {
        f.tools = s.tools;
    }
    f.timeout_secs = s.timeout_secs.or(f.timeout_secs);
    f.level = s.level.or(f.level);
    f.workspace = s.workspace.or(f.workspace);
    f.reasoner = s.reasoner.or(f.reasoner);
    f.max_steps = s.max_steps.or(f.max_steps);
    let missing = |what: &str| {
        hinted(
            format!("the mission needs {what}"),
            "give it in the file or as a flag; see `aura mission submit --help`",
        )
    };
    let body = json!({
        "agent": f.agent.ok_or_else(|| missing("an agent (--agent)"))?,
        "objective": f.objective.ok_or_else(|| missing("an objective (--objective)"))?,
        "tools": if f.tools.is_empty() { return Err(missing("at least one tool (--tool)")) } else { f.tools },
        "timeout_secs": f.timeout_secs.ok_or_else(|| missing("a timeout (--timeout SECS)"))?,
        "level": f.level,
        "workspace": f.workspace,
        "reasoner": f.reasoner,
        "max_steps": f.max_steps,
        "max_tokens": f.max_tokens,
        "network": f.network,
        "steps": f.steps,
        "tool_steps": f.tool_steps.unwrap_or_else(|| json!({})),
    });
    let m: Value = client.post("/v1/missions", &body).await?;
    if s.watch {
        if !out.is_json() {
            println!("submitted {}", m["id"].as_str().unwrap_or("?"));
        }
        return watch(client, out, m["id"].as_str().unwrap_or_default()).await;
    }
    out.print(&m, || format!("submitted {}\n", one_line(&m)))
}

fn one_line(m: &Value) -> String {
    format!(
        "{}  {:<12} {}  {}",
        m["id"].as_str().unwrap_or("?"),
        m["state"].as_str().unwrap_or("?"),
        m["agent"].as_str().unwrap_or("?"),
        m["objective"]
            .as_str()
            .unwrap_or("?")
            .chars()
            .take(60)
            .collect::<String>()
    )
}

pub(crate) fn describe(m: &Value) -> String {
    let mut text = format!(
        "mission    {}\nagent      {}\nnamespace  {}\nstate      {}\nobjective  {}\ntools      {}\nauthority  {}\nsteps      {} ({} tokens)\n",
        m["id"].as_str().unwrap_or("?"),
        m["agent"].as_str().unwrap_or("?"),
        m["namespace"].as_str().unwrap_or("?"),
        m["state"].as_str().unwrap_or("?"),
        m["objective"].as_str().unwrap_or("?"),
        m["tools"]
            .as_array()
            .map(|t| t
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default(),
        m["level"].as_str().unwrap_or("?"),
        m["steps"],
        m["tokens"],
    );
    if let Some(s) = m["summary"].as_str() {
        text.push_str(&format!("summary    {s}\n"));
    }
    if let Some(r) = m["reason"].as_str() {
        text.push_str(&format!("reason     {r}\n"));
    }
    if m["paused"].as_bool() == Some(true) {
        text.push_str("paused     resume with: aura mission resume ID\n");
    }
    for c in m["calls"].as_array().into_iter().flatten() {
        if let Some(error) = c["last_error"].as_str() {
            text.push_str(&format!(
                "call       {} `{}`: {} attempt(s), last failed: {error}{}\n",
                c["call"]["id"].as_str().unwrap_or("?"),
                c["call"]["name"].as_str().unwrap_or("?"),
                c["attempts"],
                c["retry_at"]
                    .as_str()
                    .map(|t| format!("; next at {t}"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(e) = m["escalation"].as_object() {
        text.push_str(&format!(
            "waiting    for approval at {} of `{}` {}\n           approve with: aura approve {} --as NAME\n",
            e["level"].as_str().unwrap_or("?"),
            e["action"].as_str().unwrap_or("?"),
            e["arguments"],
            m["id"].as_str().unwrap_or("?")
        ));
    }
    text.push_str("history\n");
    for c in m["history"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "  {}  {} -> {}  {}\n",
            c["at"].as_str().unwrap_or("?"),
            c["from"].as_str().unwrap_or("?"),
            c["to"].as_str().unwrap_or("?"),
            c["reason"].as_str().unwrap_or("")
        ));
    }
    text
}

/// Prints a mission's events as they happen, from its start, until it ends.
async fn watch(client: &Client, out: &Output, id: &str) -> anyhow::Result<()> {
    let mission: MissionId = id.parse().map_err(|_| {
        hinted(
            format!("`{id}` is not a mission id"),
            "`aura mission list` shows them",
        )
    })?;
    let mut ws = client.events(&format!("mission={mission}&from=0")).await?;
    while let Some(msg) = ws.next().await {
        let msg = msg.map_err(|e| anyhow::anyhow!("the event stream broke: {e}"))?;
        let tokio_tungstenite::tungstenite::Message::Text(text) = msg else {
            continue;
        };
        let event: Value = serde_json::from_str(&text)?;
        if out.is_json() {
            println!("{event}");
        } else if event["type"] == "entry"
            && let Some(line) = narrate(&event)
        {
            // Text deltas are not printed for people: they race the recorded entries on
            // the stream, and each turn's text is shown whole once it is recorded.
            // `--json` passes them through for programs that want them.
            println!("{line}");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        if event["kind"] == "mission.transition" {
            let to = event["body"]["event"]["to"].as_str().unwrap_or("");
            let reason = event["body"]["event"]["reason"].as_str().unwrap_or("");
            match to {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(hinted(
                        format!("mission {mission} {to}: {reason}"),
                        format!("`aura mission show {mission}` shows its whole record"),
                    ));
                }
                "escalated" if !out.is_json() => {
                    println!(
                        "   waiting for a person: `aura approvals` lists it; `aura approve {mission} --as NAME` or `aura reject {mission} --as NAME` answers it"
                    );
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// One line for a mission event, for people.
pub(crate) fn narrate(e: &Value) -> Option<String> {
    let ev = &e["body"]["event"];
    let seq = &e["seq"];
    Some(match e["kind"].as_str()? {
        "mission.submitted" => format!(
            "#{seq} submitted: {}",
            ev["spec"]["objective"].as_str().unwrap_or("")
        ),
        "mission.judged" => format!(
            "#{seq} policy on the declaration: {} {}",
            ev["decision"]["outcome"].as_str().unwrap_or("?"),
            ids(&ev["decision"]["deciding"])
        ),
        "mission.transition" => format!(
            "#{seq} -> {} ({})",
            ev["to"].as_str().unwrap_or("?"),
            ev["reason"].as_str().unwrap_or("")
        ),
        "mission.turn" => {
            let calls: Vec<String> = ev["turn"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{}({})", c["name"].as_str().unwrap_or("?"), c["arguments"]))
                .collect();
            let content = ev["turn"]["content"].as_str().unwrap_or("").trim();
            format!(
                "#{seq} reasoner: {}{}",
                if content.is_empty() {
                    String::new()
                } else {
                    format!("{content} ")
                },
                calls.join(", ")
            )
        }
        "mission.decided" => {
            let d = &ev["decision"];
            let outcome = match d["outcome"].as_str().unwrap_or("?") {
                "escalate" => format!("escalate to {}", d["level"].as_str().unwrap_or("?")),
                other => other.to_owned(),
            };
            let errors = d["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            format!(
                "#{seq} policy on {} ({}): {outcome} {}{}",
                d["action"].as_str().unwrap_or("?"),
                ev["call_id"].as_str().unwrap_or(""),
                ids(&d["deciding"]),
                if errors.is_empty() {
                    String::new()
                } else {
                    format!(" — {errors}")
                }
            )
        }
        "mission.effect" => {
            let f = &ev["effect"];
            if f["ok"] == true {
                let mut out = f["output"].to_string();
                if out.chars().count() > 100 {
                    out = out.chars().take(99).collect::<String>() + "…";
                }
                format!("#{seq} {} ok: {out}", f["tool"].as_str().unwrap_or("?"))
            } else {
                format!(
                    "#{seq} {} failed: {}",
                    f["tool"].as_str().unwrap_or("?"),
                    f["error"].as_str().unwrap_or("")
                )
            }
        }
        "mission.approved" => format!(
            "#{seq} approved by {} at {}",
            ev["approver"].as_str().unwrap_or("?"),
            ev["level"].as_str().unwrap_or("?")
        ),
        "mission.rejected" => format!(
            "#{seq} rejected by {}: {}",
            ev["approver"].as_str().unwrap_or("?"),
            ev["reason"].as_str().unwrap_or("")
        ),
        "mission.cancel_requested" => format!(
            "#{seq} cancel requested by {}: {}",
            ev["by"].as_str().unwrap_or("?"),
            ev["reason"].as_str().unwrap_or("")
        ),
        "mission.timed_out" => format!("#{seq} timed out"),
        "mission.compensated" => format!(
            "#{seq} undid {}: {}",
            ev["call_id"].as_str().unwrap_or("?"),
            if ev["ok"] == true {
                "ok".to_owned()
            } else {
                ev["error"].as_str().unwrap_or("failed").to_owned()
            }
        ),
        "mission.message" => format!(
            "#{seq} message from {}: {}",
            ev["from"].as_str().unwrap_or("?"),
            ev["body"]
        ),
        // A first attempt and heartbeats are bookkeeping; retries are news.
        "mission.attempt" if ev["attempt"].as_u64() == Some(1) => return None,
        "mission.heartbeat" => return None,
        "mission.attempt" => format!(
            "#{seq} retrying {} (attempt {})",
            ev["call_id"].as_str().unwrap_or("?"),
            ev["attempt"]
        ),
        "mission.attempt_failed" => format!(
            "#{seq} {} attempt {} failed: {}: {}{}",
            ev["call_id"].as_str().unwrap_or("the reasoner's turn"),
            ev["attempt"],
            ev["kind"].as_str().unwrap_or("?"),
            ev["error"].as_str().unwrap_or(""),
            ev["retry_at"].as_str().map_or_else(
                || "; giving up".to_owned(),
                |t| format!("; next attempt at {t}")
            )
        ),
        "mission.paused" => format!(
            "#{seq} paused by {}: {}",
            ev["by"].as_str().unwrap_or("?"),
            ev["reason"].as_str().unwrap_or("")
        ),
        "mission.resumed" => format!("#{seq} resumed by {}", ev["by"].as_str().unwrap_or("?")),
        "mission.retry_requested" => format!(
            "#{seq} retry now, asked by {}",
            ev["by"].as_str().unwrap_or("?")
        ),
        other => format!("#{seq} {other}"),
    })
}

fn ids(v: &Value) -> String {
    let list: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if list.is_empty() {
        String::new()
    } else {
        format!("[{}]", list.join(", "))
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ApprovalsArgs {
    #[command(flatten)]
    node: NodeArgs,
}

pub(crate) async fn approvals(
    home: &Home,
    out: &Output,
    args: ApprovalsArgs,
) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    let pending: Vec<Value> = client.get("/v1/approvals").await?;
    out.print(&pending, || {
        if pending.is_empty() {
            return "nothing is waiting for approval\n".into();
        }
        pending
            .iter()
            .map(|p| {
                let e = &p["escalation"];
                format!(
                    "{}  needs {} for `{}` {}\n    objective: {}\n    approve: aura approve {} --as NAME   reject: aura reject {} --as NAME --reason WHY\n",
                    p["mission"].as_str().unwrap_or("?"),
                    e["level"].as_str().unwrap_or("?"),
                    e["action"].as_str().unwrap_or("?"),
                    e["arguments"],
                    p["objective"].as_str().unwrap_or(""),
                    p["mission"].as_str().unwrap_or("?"),
                    p["mission"].as_str().unwrap_or("?"),
                )
            })
            .collect()
    })
}

#[derive(Debug, clap::Args)]
pub(crate) struct AnswerArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The mission waiting for approval
    mission: String,
    /// The approver: a key in this data directory, enrolled with `aura operator enroll`
    #[arg(long = "as", value_name = "NAME")]
    approver: String,
    /// Why (recorded in the ledger)
    #[arg(long)]
    reason: Option<String>,
    /// How long the approval stays valid, in seconds
    #[arg(long, default_value_t = 600)]
    valid_secs: u64,
}

pub(crate) async fn answer(
    home: &Home,
    out: &Output,
    args: AnswerArgs,
    verdict: Verdict,
) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    let approver = Approver::load(home, &args.approver)?;
    let (answers, m) = approver
        .answer(
            &client,
            &args.mission,
            verdict,
            args.reason,
            Duration::from_secs(args.valid_secs),
        )
        .await?;
    out.print(&m, || {
        format!(
            "{} {} of {}: mission is now {}\n",
            match verdict {
                Verdict::Approve => "approved",
                Verdict::Reject => "rejected",
            },
            answers,
            args.mission,
            m["state"].as_str().unwrap_or("?")
        )
    })
}

/// A person who answers escalations: their key in this data directory and the credential
/// `aura operator enroll` gave it. Loaded once, so that `aura tui` asks for a passphrase
/// (if the key is sealed) before it takes over the terminal.
pub(crate) struct Approver {
    credential: Signed<Credential>,
    key: aura_core::keystore::Signer,
}

impl Approver {
    pub(crate) fn load(home: &Home, name: &str) -> anyhow::Result<Approver> {
        let name = KeyName::new(name)?;
        let credential = read_credential(home, &name)?;
        let key = home.signer(&name)?;
        if credential.statement.key != key.public_key() {
            return Err(hinted(
                format!("the credential of `{name}` is for another key"),
                format!("enroll again: aura operator enroll {name} --level L3"),
            ));
        }
        Ok(Approver { credential, key })
    }

    /// Signs an approval or rejection of what `mission` waits for and sends it; returns
    /// the escalation it answered and the mission as the node has it afterwards.
    pub(crate) async fn answer(
        &self,
        client: &Client,
        mission: &str,
        verdict: Verdict,
        reason: Option<String>,
        valid: Duration,
    ) -> anyhow::Result<(Answers, Value)> {
        let mission_id: MissionId = mission.parse().map_err(|_| {
            hinted(
                format!("`{mission}` is not a mission id"),
                "`aura approvals` lists what waits",
            )
        })?;
        let m: Value = client.get(&format!("/v1/missions/{mission_id}")).await?;
        let Some(esc) = m["escalation"].as_object() else {
            return Err(hinted(
                format!(
                    "mission {mission} is {}, not waiting for approval",
                    m["state"].as_str().unwrap_or("?")
                ),
                "`aura approvals` lists what waits",
            ));
        };
        let request = esc["request"]
            .as_str()
            .unwrap_or_default()
            .parse()
            .map_err(|_| anyhow::anyhow!("the node sent a malformed request digest"))?;
        // The approval names the very escalation it answers (the declaration, or one call
        // of one turn), so that it cannot answer a later one of the same request.
        let answers: Answers = serde_json::from_value(esc["answers"].clone()).map_err(|_| {
            hinted(
                "the node did not say which escalation is waiting",
                "the node is older than this `aura`; upgrade it",
            )
        })?;
        let now: Timestamp = SystemClock.now();
        let reason = reason.unwrap_or_else(|| match verdict {
            Verdict::Approve => "approved".into(),
            Verdict::Reject => "rejected".into(),
        });
        let approval = Approval {
            id: ApprovalId::generate(&SystemClock, &OsEntropy),
            mission: mission_id,
            answers: Some(answers.clone()),
            request,
            verdict,
            reason,
            issued_at: now,
            expires_at: now.saturating_add(valid),
            approver: self.key.public_key(),
        };
        let signed =
            Signed::sign(approval, &self.key).map_err(|e| anyhow::anyhow!("cannot sign: {e}"))?;
        let after = client
            .post(
                &format!("/v1/approvals/{mission_id}"),
                &json!({ "approval": signed, "credential": self.credential }),
            )
            .await?;
        Ok((answers, after))
    }
}

fn credential_path(home: &Home, name: &KeyName) -> PathBuf {
    home.dir().join("credentials").join(format!("{name}.json"))
}

fn read_credential(home: &Home, name: &KeyName) -> anyhow::Result<Signed<Credential>> {
    let path = credential_path(home, name);
    let text = std::fs::read(&path).map_err(|_| {
        hinted(
            format!("`{name}` has no credential here"),
            format!("enroll first: aura operator enroll {name} --level L3 --namespace default"),
        )
    })?;
    serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("{} is unreadable: {e}", path.display()))
}

#[derive(Debug, clap::Args)]
pub(crate) struct OperatorArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    command: OperatorCommand,
}

#[derive(Debug, clap::Subcommand)]
enum OperatorCommand {
    /// Give a person a credential so their signed approvals count; makes their key if needed
    Enroll {
        /// The person's key name in this data directory
        name: String,
        /// The level their approvals count at
        #[arg(long, default_value = "L3")]
        level: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Seal a new key with a passphrase
        #[arg(long)]
        encrypt: bool,
    },
}

pub(crate) async fn operator(home: &Home, out: &Output, args: OperatorArgs) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    match args.command {
        OperatorCommand::Enroll {
            name,
            level,
            namespace,
            encrypt,
        } => {
            let key_name = KeyName::new(&name)?;
            let ks = home.keystore();
            let public_key = match ks.public_key(&key_name) {
                Ok(k) => k,
                Err(aura_core::keystore::Error::NotFound { .. }) => {
                    let pass = if encrypt {
                        Some(home.passphrase(&name, true)?)
                    } else {
                        None
                    };
                    ks.create(&key_name, pass.as_ref(), &OsEntropy)?
                }
                Err(e) => return Err(e.into()),
            };
            let cred: Signed<Credential> = client
                .post("/v1/credentials/operators", &json!({ "name": name, "public_key": public_key, "level": level, "namespace": namespace }))
                .await?;
            let path = credential_path(home, &key_name);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, serde_json::to_vec_pretty(&cred)?)?;
            out.print(&cred, || {
                format!(
                    "enrolled `{name}` at {} in namespace {}; credential saved to {}\n",
                    cred.statement.level,
                    cred.statement.namespace,
                    path.display()
                )
            })
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// A mission id, or an agent id (replays every mission of the agent)
    id: String,
}

pub(crate) async fn replay(home: &Home, out: &Output, args: ReplayArgs) -> anyhow::Result<()> {
    let client = Client::new(home, &args.node)?;
    let missions: Vec<String> = if args.id.starts_with("agent_") {
        let list: Vec<Value> = client
            .get(&format!("/v1/missions?agent={}&limit=1000", args.id))
            .await?;
        list.iter()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect()
    } else {
        vec![args.id.clone()]
    };
    let mut results = Vec::new();
    let mut diverged = 0;
    for id in &missions {
        let r: Value = client.get(&format!("/v1/missions/{id}/replay")).await?;
        if r["ok"] != true {
            diverged += 1;
        }
        results.push(json!({ "mission": id, "replay": r }));
    }
    out.print(&results, || {
        results
            .iter()
            .map(|r| {
                let rep = &r["replay"];
                if rep["ok"] == true {
                    format!(
                        "{}  ok: every state hash reproduced ({}, {})\n",
                        r["mission"].as_str().unwrap_or("?"),
                        rep["state"].as_str().unwrap_or("?"),
                        &rep["state_hash"].as_str().unwrap_or("")
                            [..12.min(rep["state_hash"].as_str().unwrap_or("").len())]
                    )
                } else {
                    format!(
                        "{}  DIVERGED: {}\n",
                        r["mission"].as_str().unwrap_or("?"),
                        rep["divergence"].as_str().unwrap_or("?")
                    )
                }
            })
            .collect()
    })?;
    if diverged > 0 {
        return Err(crate::VerificationFailed(format!(
            "{diverged} of {} missions do not replay",
            missions.len()
        ))
        .into());
    }
    Ok(())
}
