//! `aura automaton`: Aura's built-in automatons. Each is a mission template plus the
//! policy in force, not engine code: this module only writes the template (the objective
//! that tells the reasoner how to work, the tools it may use, its budget) and submits it
//! as `aura mission submit` would, so Cedar judges it, the ledger records every step and
//! `aura replay` reproduces it. `--print-template` writes the template for
//! `aura schedule create --template` instead (docs/automatons.md).
//!
//! - `dev-loop`: plan, edit files, run the tests with `cmd.run` in a cell, read the
//!   failures, iterate until green or the step budget is spent.
//! - `tasks`: a task runner; one mission per task, one after the other, stopping at the
//!   first that does not complete unless `--keep-going`.

use std::time::{Duration, Instant};

use aura_node::wire::MissionView;
use serde_json::{Value, json};

use crate::client::{Client, NodeArgs};
use crate::hinted;
use crate::home::Home;
use crate::output::Output;

use super::decode;
use super::mission::{describe_one_line, watch_mission};

#[derive(Debug, clap::Args)]
pub(crate) struct AutomatonArgs {
    #[command(flatten)]
    node: NodeArgs,
    #[command(subcommand)]
    command: AutomatonCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AutomatonCommand {
    /// A dev loop: edit files and run the tests in a cell until they pass
    ///
    /// One mission with the tools fs.list, fs.read, fs.write, cmd.run and mission.finish
    /// and an objective that asks the reasoner to run the test command, read the failures,
    /// edit and run again until the tests pass or the step budget (--max-steps) is spent.
    /// The workspace should hold the project (--workspace).
    DevLoop(DevLoopArgs),
    /// A task runner: one mission per task, in order
    ///
    /// Each task becomes the objective of its own mission (same tools and budget); the next
    /// starts when the previous ends. A task that does not complete stops the run, unless
    /// --keep-going.
    Tasks(TasksArgs),
}

/// What every automaton's missions share.
#[derive(Debug, clap::Args)]
struct Common {
    /// The agent that carries it out
    #[arg(long)]
    agent: Option<String>,
    /// A named workspace of the agent's namespace
    #[arg(long)]
    workspace: Option<String>,
    /// A configured reasoner (default: the node's)
    #[arg(long)]
    reasoner: Option<String>,
    /// Authority level (default: the agent's)
    #[arg(long)]
    level: Option<String>,
    /// Seconds until each mission times out
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 1800)]
    timeout_secs: u64,
    /// Print the mission template (JSON, for `aura schedule create --template`) and
    /// submit nothing
    #[arg(long)]
    print_template: bool,
}

#[derive(Debug, clap::Args)]
struct DevLoopArgs {
    #[command(flatten)]
    common: Common,
    /// What to achieve, in words
    #[arg(long, default_value = "Make the tests pass.")]
    objective: String,
    /// The command that runs the tests, in the workspace (exit code 0 means green)
    #[arg(long = "test", value_name = "COMMAND")]
    test: String,
    /// The step budget: reasoner turns before the loop gives up
    #[arg(long, default_value_t = 24)]
    max_steps: u32,
    /// Follow the mission until it ends
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, clap::Args)]
struct TasksArgs {
    #[command(flatten)]
    common: Common,
    /// A task (repeat, in order)
    #[arg(long = "task", value_name = "TEXT", required = true)]
    tasks: Vec<String>,
    /// A tool every task may use (repeat; default: fs.list, fs.read, fs.write,
    /// mission.finish)
    #[arg(long = "tool", value_name = "TOOL")]
    tools: Vec<String>,
    /// Reasoner turns per task
    #[arg(long, default_value_t = 16)]
    max_steps: u32,
    /// Go on with the next task when one does not complete
    #[arg(long)]
    keep_going: bool,
}

/// The dev loop's tools: the files, the tests in a cell, and the way out.
const DEV_LOOP_TOOLS: [&str; 5] = [
    "fs.list",
    "fs.read",
    "fs.write",
    "cmd.run",
    "mission.finish",
];
const TASK_TOOLS: [&str; 4] = ["fs.list", "fs.read", "fs.write", "mission.finish"];

/// The dev loop's template: the objective says how to work; policy says what is allowed
/// (commands at L2, in a cell, without network, by the default policy).
fn dev_loop_template(a: &DevLoopArgs) -> Value {
    let objective = format!(
        "{}\n\nWork as a dev loop. Run the tests with cmd.run: `{}` (in the workspace, which \
         is the working directory). If they fail, read the failure, read the files it points \
         to with fs.read (fs.list shows what there is), fix them with fs.write, and run the \
         tests again. Repeat until the command exits 0, then call mission.finish with what \
         you changed. Change only what the failure calls for.",
        a.objective.trim(),
        a.test.trim()
    );
    template(
        &a.common,
        &objective,
        &DEV_LOOP_TOOLS.map(String::from),
        a.max_steps,
    )
}

fn template(c: &Common, objective: &str, tools: &[String], max_steps: u32) -> Value {
    let mut t = json!({
        "objective": objective,
        "tools": tools,
        "timeout_secs": c.timeout_secs,
        "max_steps": max_steps,
    });
    for (key, value) in [
        ("workspace", &c.workspace),
        ("reasoner", &c.reasoner),
        ("level", &c.level),
    ] {
        if let Some(v) = value {
            t[key] = json!(v);
        }
    }
    t
}

/// The declaration `POST /v1/missions` takes: the template and the agent.
fn declaration(c: &Common, template: &Value) -> anyhow::Result<Value> {
    let agent = c.agent.clone().ok_or_else(|| {
        hinted(
            "the automaton needs an agent (--agent)",
            "`aura agent list` shows the agents; --print-template needs none",
        )
    })?;
    let mut body = template.clone();
    body["agent"] = json!(agent);
    Ok(body)
}

pub(crate) async fn run(home: &Home, out: &Output, args: AutomatonArgs) -> anyhow::Result<()> {
    match args.command {
        AutomatonCommand::DevLoop(a) => {
            let t = dev_loop_template(&a);
            if a.common.print_template {
                return out.print(&t, || serde_json::to_string_pretty(&t).unwrap_or_default());
            }
            let client = Client::new(home, &args.node)?;
            let m: Value = client
                .post("/v1/missions", &declaration(&a.common, &t)?)
                .await?;
            let view = decode::<MissionView>(&m)?;
            if a.watch {
                if !out.is_json() {
                    println!("dev loop {}", view.id);
                }
                return watch_mission(&client, out, &view.id.to_string()).await;
            }
            out.print(&m, || format!("dev loop {}\n", describe_one_line(&view)))
        }
        AutomatonCommand::Tasks(a) => {
            let tools: Vec<String> = if a.tools.is_empty() {
                TASK_TOOLS.map(String::from).to_vec()
            } else {
                a.tools.clone()
            };
            if a.common.print_template {
                let all: Vec<Value> = a
                    .tasks
                    .iter()
                    .map(|task| template(&a.common, task, &tools, a.max_steps))
                    .collect();
                return out.print(&all, || {
                    serde_json::to_string_pretty(&all).unwrap_or_default()
                });
            }
            let client = Client::new(home, &args.node)?;
            tasks(&client, out, &a, &tools).await
        }
    }
}

/// Runs the tasks one after the other, each as its own mission.
async fn tasks(
    client: &Client,
    out: &Output,
    a: &TasksArgs,
    tools: &[String],
) -> anyhow::Result<()> {
    let mut done: Vec<Value> = Vec::new();
    let mut failed = 0usize;
    for (i, task) in a.tasks.iter().enumerate() {
        let t = template(&a.common, task, tools, a.max_steps);
        let m: Value = client
            .post("/v1/missions", &declaration(&a.common, &t)?)
            .await?;
        let id = decode::<MissionView>(&m)?.id.to_string();
        let end = until_ended(client, &id, a.common.timeout_secs).await?;
        let view = decode::<MissionView>(&end)?;
        if !out.is_json() {
            println!(
                "task {}/{}: {}",
                i + 1,
                a.tasks.len(),
                describe_one_line(&view)
            );
        }
        let completed = view.state.as_str() == "completed";
        done.push(end);
        if !completed {
            failed += 1;
            if !a.keep_going {
                if out.is_json() {
                    out.print(&done, String::new)?;
                }
                return Err(hinted(
                    format!(
                        "task {} of {} ended {}: {}; {} left undone",
                        i + 1,
                        a.tasks.len(),
                        view.state.as_str(),
                        view.reason.clone().unwrap_or_default(),
                        a.tasks.len() - i - 1
                    ),
                    format!(
                        "`aura mission show {}` says why; --keep-going runs the rest anyway",
                        view.id
                    ),
                ));
            }
        }
    }
    if out.is_json() {
        out.print(&done, String::new)?;
    }
    if failed > 0 {
        return Err(hinted(
            format!("{failed} of {} tasks did not complete", a.tasks.len()),
            "`aura mission list` shows them",
        ));
    }
    Ok(())
}

/// Polls a mission until it is completed, failed or cancelled (its deadline bounds the
/// wait; an escalated mission waits for a person, as `aura mission watch` does).
pub(crate) async fn until_ended(
    client: &Client,
    id: &str,
    timeout_secs: u64,
) -> anyhow::Result<Value> {
    let give_up = Instant::now() + Duration::from_secs(timeout_secs.saturating_add(30));
    loop {
        let m: Value = client.get(&format!("/v1/missions/{id}")).await?;
        if matches!(
            m["state"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return Ok(m);
        }
        if Instant::now() > give_up {
            return Err(hinted(
                format!("mission {id} had not ended after its deadline"),
                format!("`aura mission show {id}` says where it stands"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
