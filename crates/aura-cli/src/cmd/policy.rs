//! `aura policy`: validate policy files, decide hypothetical requests, and print the
//! default set and the schema. Nothing here changes the data directory.
//!
//! The policies in force are Aura's defaults, then `<home>/policies/*.cedar` in name
//! order, then any `--policies` files, merged (a policy id used twice is refused).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use aura_core::{AgentId, MissionId};
use aura_identity::{
    ApprovalId, Level, Namespace, OperatorName, Subject, Verdict, VerifiedApproval,
};
use aura_policy::{
    Context, Decision, MAX_POLICY_FILE, PolicyInfo, PolicySet, Principal, Problem, Request,
    Resource, decide, request_digest,
};
use serde::Serialize;

use crate::hinted;
use crate::home::Home;
use crate::output::{Output, count};

/// The largest request file `check --request` reads.
const MAX_REQUEST_FILE: u64 = 1024 * 1024;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Check policy files against Aura's schema; print every problem as FILE:LINE:COLUMN: REASON
    #[command(
        after_help = "Exit code 1 if any file has a problem. The files are also checked \
against the defaults and each other for duplicate policy ids."
    )]
    Validate {
        /// Policy files (Cedar)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Decide a hypothetical request and show the deciding policies
    #[command(after_help = "Examples:
  aura policy check --agent-level L2 --namespace team-a --action fs.write --path notes/x.md
  aura policy check --agent-level L2 --namespace team-a --action fs.delete --path old.md --approval-level L3
  aura policy check --action http.fetch --host docs.example.com --policies team-a.cedar
  aura policy check --request request.json --json")]
    Check(Box<CheckArgs>),
    /// List the policies in force: the defaults, then <home>/policies/*.cedar
    List {
        /// More policy files, loaded after those in the data directory
        #[arg(long = "policies", value_name = "FILE", num_args = 1..)]
        policies: Vec<PathBuf>,
    },
    /// Print Aura's default policy set
    ShowDefaults,
    /// Print Aura's Cedar schema
    Schema,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// A whole request as JSON (`-` reads standard input) instead of the flags below
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "action", "agent", "path", "command", "host", "model", "mission", "to_agent",
        "resource_namespace", "destructive", "in_cell", "in_mission", "extra",
    ])]
    request: Option<PathBuf>,

    /// The action: a tool such as fs.write, or a lifecycle action such as mission.submit
    #[arg(long, required_unless_present = "request")]
    action: Option<String>,
    /// The agent's authority level
    #[arg(long, value_name = "LEVEL", default_value = "L1")]
    agent_level: Level,
    /// The agent's namespace
    #[arg(long, default_value = Namespace::DEFAULT)]
    namespace: Namespace,
    /// The agent's id [default: a placeholder]
    #[arg(long, value_name = "ID")]
    agent: Option<AgentId>,

    /// Resource: a workspace-relative path (fs.*)
    #[arg(long, group = "resource", help_heading = "Resource (one of)")]
    path: Option<String>,
    /// Resource: a command line (cmd.run)
    #[arg(long, group = "resource", help_heading = "Resource (one of)")]
    command: Option<String>,
    /// The command's cell gets a network
    #[arg(long, requires = "command", help_heading = "Resource (one of)")]
    network: bool,
    /// Resource: a host (http.fetch)
    #[arg(long, group = "resource", help_heading = "Resource (one of)")]
    host: Option<String>,
    /// The host's port
    #[arg(long, default_value_t = 443, help_heading = "Resource (one of)")]
    port: u16,
    /// The host's scheme
    #[arg(long, default_value = "https", help_heading = "Resource (one of)")]
    scheme: String,
    /// Resource: a model package name (model.use)
    #[arg(long, group = "resource", help_heading = "Resource (one of)")]
    model: Option<String>,
    /// The model package's digest
    #[arg(
        long,
        default_value = "unspecified",
        help_heading = "Resource (one of)"
    )]
    digest: String,
    /// Resource: a mission (mission.*, record.read)
    #[arg(
        long,
        value_name = "ID",
        group = "resource",
        help_heading = "Resource (one of)"
    )]
    mission: Option<MissionId>,
    /// Resource: another agent (agent.send, record.read)
    #[arg(
        long,
        value_name = "ID",
        group = "resource",
        help_heading = "Resource (one of)"
    )]
    to_agent: Option<AgentId>,
    /// The namespace the resource belongs to [default: the agent's]
    #[arg(long, value_name = "NAMESPACE", help_heading = "Resource (one of)")]
    resource_namespace: Option<Namespace>,

    /// The tool declares the call destructive
    #[arg(long, help_heading = "Context")]
    destructive: bool,
    /// The call runs inside a cell
    #[arg(long, help_heading = "Context")]
    in_cell: bool,
    /// The mission the request is made for
    #[arg(long, value_name = "ID", help_heading = "Context")]
    in_mission: Option<MissionId>,
    /// KEY=VALUE in context.extra; VALUE is JSON if it parses, else a string (repeatable)
    #[arg(long, value_name = "KEY=VALUE", help_heading = "Context")]
    extra: Vec<String>,
    /// Decide as if a person at this level had approved the request
    #[arg(long, value_name = "LEVEL", help_heading = "Context")]
    approval_level: Option<Level>,

    /// More policy files, loaded after the defaults and <home>/policies/*.cedar
    #[arg(long = "policies", value_name = "FILE", num_args = 1..)]
    policies: Vec<PathBuf>,
}

pub(crate) fn run(home: &Home, out: &Output, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Validate { files } => validate(out, &files),
        Command::Check(args) => check(home, out, &args),
        Command::List { policies } => list(home, out, &policies),
        Command::ShowDefaults => raw(out, "defaults", PolicySet::defaults_text()),
        Command::Schema => raw(out, "schema", PolicySet::schema_text()),
    }
}

fn raw(out: &Output, key: &str, text: &str) -> anyhow::Result<()> {
    let value = BTreeMap::from([(key, text)]);
    out.print(&value, || text.to_owned())
}

/// Reads a policy file as text, refusing what is too large or not UTF-8 before reading
/// all of it.
fn read_policy_file(path: &Path) -> anyhow::Result<String> {
    let file = fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(MAX_POLICY_FILE as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() > MAX_POLICY_FILE {
        return Err(hinted(
            format!("{} is larger than {MAX_POLICY_FILE} bytes", path.display()),
            "split it into several policy files",
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        hinted(
            format!("{} is not UTF-8 text", path.display()),
            "policy files are Cedar text in UTF-8",
        )
    })
}

/// The policy files in `<home>/policies`, by name, with the names they are known by.
fn home_policy_files(home: &Home) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let dir = home.dir().join("policies");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "cedar") && path.is_file() {
            let name = format!(
                "policies/{}",
                path.file_name().unwrap_or_default().to_string_lossy()
            );
            files.push((name, path));
        }
    }
    files.sort();
    Ok(files)
}

fn refused(e: &aura_policy::LoadError) -> anyhow::Error {
    let file = e.problems.first().map_or("", |p| p.file.as_str());
    hinted(
        format!("the policies were refused: {e}"),
        format!("run `aura policy validate {file}` to see every problem"),
    )
}

/// The defaults, `<home>/policies/*.cedar` and `extra`, merged.
pub(crate) fn load(home: &Home, extra: &[PathBuf]) -> anyhow::Result<PolicySet> {
    let mut files = home_policy_files(home)?;
    files.extend(extra.iter().map(|p| (p.display().to_string(), p.clone())));
    let mut set = PolicySet::defaults();
    for (name, path) in files {
        let text = read_policy_file(&path)?;
        let parsed = PolicySet::parse(&name, &text).map_err(|e| refused(&e))?;
        set = set.merge(parsed).map_err(|e| refused(&e))?;
    }
    Ok(set)
}

#[derive(Serialize)]
struct FileReport {
    file: String,
    policies: usize,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

fn validate(out: &Output, files: &[PathBuf]) -> anyhow::Result<()> {
    let mut reports = Vec::new();
    // Later files are checked against the defaults and the earlier files for duplicate
    // ids, as the node would merge them.
    let mut merged = PolicySet::defaults();
    for path in files {
        let name = path.display().to_string();
        let text = read_policy_file(path)?;
        let mut report = FileReport {
            file: name.clone(),
            policies: 0,
            problems: Vec::new(),
            warnings: Vec::new(),
        };
        match PolicySet::parse(&name, &text) {
            Ok(set) => {
                report.policies = set.len();
                report.warnings = set.warnings().to_vec();
                match merged.clone().merge(set) {
                    Ok(m) => merged = m,
                    Err(e) => report.problems = e.problems,
                }
            }
            Err(e) => report.problems = e.problems,
        }
        reports.push(report);
    }
    let problems: usize = reports.iter().map(|r| r.problems.len()).sum();
    out.print(&reports, || {
        let mut text = String::new();
        for r in &reports {
            for p in &r.problems {
                text.push_str(&format!("{p}\n"));
            }
            for w in &r.warnings {
                text.push_str(&format!(
                    "{}:{}:{}: warning: {}\n",
                    w.file, w.line, w.column, w.reason
                ));
            }
            if r.problems.is_empty() {
                text.push_str(&format!(
                    "ok: {} ({})\n",
                    r.file,
                    count(r.policies as u64, "policy", "policies")
                ));
            }
        }
        text
    })?;
    if problems > 0 {
        let bad = reports.iter().filter(|r| !r.problems.is_empty()).count();
        return Err(hinted(
            format!(
                "{} in {}",
                count(problems as u64, "problem", "problems"),
                count(bad as u64, "policy file", "policy files")
            ),
            "fix each FILE:LINE:COLUMN above; docs/policy.md describes the schema",
        ));
    }
    Ok(())
}

/// A placeholder agent for hypothetical requests.
const PLACEHOLDER_AGENT: AgentId =
    AgentId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

fn request_from_flags(args: &CheckArgs) -> anyhow::Result<Request> {
    let action = args.action.clone().unwrap_or_default();
    let ns = args
        .resource_namespace
        .clone()
        .unwrap_or_else(|| args.namespace.clone());
    let resource = if let Some(path) = &args.path {
        Resource::Path {
            namespace: ns,
            path: path.clone(),
        }
    } else if let Some(command) = &args.command {
        Resource::Command {
            namespace: ns,
            command: command.clone(),
            network: args.network,
        }
    } else if let Some(host) = &args.host {
        Resource::Host {
            host: host.clone(),
            port: args.port,
            scheme: args.scheme.clone(),
        }
    } else if let Some(model) = &args.model {
        Resource::Model {
            name: model.clone(),
            digest: args.digest.clone(),
        }
    } else if let Some(id) = args.mission {
        Resource::Mission { namespace: ns, id }
    } else if let Some(id) = args.to_agent {
        Resource::Agent { namespace: ns, id }
    } else {
        return Err(hinted(
            "the request names no resource",
            "pass one of --path, --command, --host, --model, --mission or --to-agent",
        ));
    };
    let mut extra = serde_json::Map::new();
    for item in &args.extra {
        let Some((key, value)) = item.split_once('=') else {
            return Err(hinted(
                format!("--extra `{item}` is not KEY=VALUE"),
                "write --extra ticket=CHG-42",
            ));
        };
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_owned()));
        extra.insert(key.to_owned(), value);
    }
    Ok(Request {
        principal: Principal {
            agent: args.agent.unwrap_or(PLACEHOLDER_AGENT),
            level: args.agent_level,
            namespace: args.namespace.clone(),
        },
        action,
        resource,
        context: Context {
            mission: args.in_mission,
            destructive: args.destructive,
            in_cell: args.in_cell,
            approval: None,
            extra,
            node_region: None,
            regions: None,
        },
    })
}

fn request_from_file(path: &Path) -> anyhow::Result<Request> {
    let mut text = String::new();
    let what = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_REQUEST_FILE + 1)
            .read_to_string(&mut text)
            .context("cannot read the request from standard input")?;
        "standard input".to_owned()
    } else {
        fs::File::open(path)
            .and_then(|f| f.take(MAX_REQUEST_FILE + 1).read_to_string(&mut text))
            .with_context(|| format!("cannot read {}", path.display()))?;
        path.display().to_string()
    };
    if text.len() as u64 > MAX_REQUEST_FILE {
        return Err(hinted(
            format!("the request in {what} is larger than {MAX_REQUEST_FILE} bytes"),
            "a request is one small JSON object",
        ));
    }
    serde_json::from_str(&text).map_err(|e| {
        hinted(
            format!("the request in {what} is not valid: {e}"),
            "see docs/policy.md for the request format, or `aura policy check --json` for an example",
        )
    })
}

#[derive(Serialize)]
struct Deciding<'a> {
    id: &'a str,
    source: &'a str,
    line: u32,
    effect: aura_policy::Effect,
    #[serde(skip_serializing_if = "Option::is_none")]
    escalate: Option<Level>,
}

#[derive(Serialize)]
struct Checked<'a> {
    #[serde(flatten)]
    decision: &'a Decision,
    deciding_policies: Vec<Deciding<'a>>,
    request_digest: String,
    policies_loaded: usize,
    request: &'a Request,
}

fn check(home: &Home, out: &Output, args: &CheckArgs) -> anyhow::Result<()> {
    let mut request = match &args.request {
        Some(path) => request_from_file(path)?,
        None => request_from_flags(args)?,
    };
    let policies = load(home, &args.policies)?;
    let digest = request_digest(&request);
    if let Some(level) = args.approval_level {
        // A hypothetical approval: `check` answers "what if", it proves nothing. Real
        // approvals are signed and verified before the node decides with them.
        request.context.approval = Some(VerifiedApproval {
            id: ApprovalId::from_bytes([0; 16]),
            verdict: Verdict::Approve,
            approver: Subject::Operator(
                OperatorName::new("hypothetical").map_err(|e| anyhow::anyhow!("{e}"))?,
            ),
            level,
            request: digest,
        });
    }
    let decision = decide(&policies, &request);
    let deciding: Vec<Deciding<'_>> = decision
        .deciding
        .iter()
        .map(|id| match policies.policy(id) {
            Some(PolicyInfo {
                source,
                line,
                effect,
                escalate,
                ..
            }) => Deciding {
                id,
                source,
                line: *line,
                effect: *effect,
                escalate: *escalate,
            },
            // The namespace check in `decide` names the rule it enforces even when
            // the loaded set has no policy of that id.
            None => Deciding {
                id,
                source: "built in",
                line: 0,
                effect: aura_policy::Effect::Forbid,
                escalate: None,
            },
        })
        .collect();
    let checked = Checked {
        decision: &decision,
        deciding_policies: deciding,
        request_digest: digest.to_hex(),
        policies_loaded: policies.len(),
        request: &request,
    };
    out.print(&checked, || {
        let mut text = format!("{}\n", decision.outcome);
        for d in &checked.deciding_policies {
            if d.line > 0 {
                text.push_str(&format!("  {}  ({}:{})\n", d.id, d.source, d.line));
            } else {
                text.push_str(&format!("  {}  ({})\n", d.id, d.source));
            }
        }
        text.push_str(&format!("{}\n", decision.reason));
        for e in &decision.errors {
            if !decision.reason.contains(e.as_str()) {
                text.push_str(&format!("error: {e}\n"));
            }
        }
        text
    })
}

fn list(home: &Home, out: &Output, extra: &[PathBuf]) -> anyhow::Result<()> {
    let policies = load(home, extra)?;
    out.print(&policies.policies(), || {
        let width = policies
            .policies()
            .iter()
            .map(|p| p.id.len())
            .max()
            .unwrap_or(0);
        let mut text = String::new();
        for p in policies.policies() {
            let effect = match (p.effect, p.escalate) {
                (aura_policy::Effect::Permit, _) => "permit".to_owned(),
                (aura_policy::Effect::Forbid, None) => "forbid".to_owned(),
                (aura_policy::Effect::Forbid, Some(l)) => format!("escalate to {l}"),
            };
            text.push_str(&format!(
                "{:<width$}  {:<14} {}:{}\n",
                p.id, effect, p.source, p.line
            ));
        }
        text
    })
}
