//! The policy benchmark (issue 3): decision latency with 200 policies loaded.
//!
//! Aura's figure is [`aura_policy::decide`] end to end: checking the request, building the
//! Cedar entities and context, evaluating, and (for escalations) evaluating once more with
//! a hypothetical approval. The peer is Cedar's own `Authorizer::is_authorized` on the very
//! request and entities that `decide` builds first, prepared before the clock starts: what
//! any Cedar-based engine must pay at least. The ratio is the cost of Aura's request
//! building and escalation logic on top of Cedar.
//!
//! Aura evaluates only the policies whose scope matches the request (see aura-policy's
//! `slice` module); a third column shows Cedar alone on that slice, so that both costs,
//! Cedar's and Aura's own, are visible.
//!
//! The 200 policies are the default set plus generated ones of the kinds operators write:
//! per-namespace permits for paths and hosts, forbids for secret paths, escalations for
//! production paths, and custom tools gated on a ticket tag.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use aura_core::{AgentId, MissionId};
use aura_identity::{Level, Namespace};
use aura_policy::{Context, Outcome, PolicySet, Principal, Request, Resource, decide};
use cedar_policy::Authorizer;

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Policies loaded in all (the defaults plus generated ones)
    #[arg(long, default_value_t = 200)]
    policies: usize,
    /// Timed decisions per kind of request
    #[arg(long, default_value_t = 50_000)]
    iterations: usize,
}

const NAMESPACES: usize = 20;

/// Policies of the kinds operators write, `count` of them, spread over 20 namespaces.
fn generated(count: usize) -> String {
    let mut text = String::new();
    for i in 0..count {
        // Every namespace gets every kind: policy i is kind i % 5 for namespace
        // (i / 5) % 20, numbered n within that namespace and kind.
        let ns = (i / 5) % NAMESPACES;
        let n = i / (5 * NAMESPACES);
        let policy = match i % 5 {
            0 => format!(
                r#"@id("gen.{i}.write-project")
permit (principal in Aura::Namespace::"team-{ns}", action == Aura::Action::"fs.write", resource is Aura::Path)
when {{ principal in Aura::Level::"L2" && resource.path like "project-{n}/*" }};"#
            ),
            1 => format!(
                r#"@id("gen.{i}.no-secrets")
forbid (principal in Aura::Namespace::"team-{ns}", action in Aura::Action::"fs", resource is Aura::Path)
when {{ resource.path like "secrets-{n}/*" }};"#
            ),
            2 => format!(
                r#"@id("gen.{i}.prod-escalates")
@escalate("{level}")
forbid (principal in Aura::Namespace::"team-{ns}", action == Aura::Action::"fs.write", resource is Aura::Path)
when {{ resource.path like "prod-{n}/*" }}
unless {{ context has approval && context.approval.level >= {lvl} }};"#,
                level = if n.is_multiple_of(2) { "L3" } else { "L4" },
                lvl = if n.is_multiple_of(2) { 3 } else { 4 },
            ),
            3 => format!(
                r#"@id("gen.{i}.fetch-api")
permit (principal in Aura::Namespace::"team-{ns}", action == Aura::Action::"http.fetch", resource is Aura::Host)
when {{ resource.scheme == "https" && resource.host == "api-{n}.team-{ns}.example.com" && resource.port == 443 }};"#
            ),
            _ => format!(
                r#"@id("gen.{i}.deploy")
permit (principal in Aura::Namespace::"team-{ns}", action == Aura::Action::"tool.custom", resource is Aura::Command)
when {{ principal in Aura::Level::"L3" && context.tool == "deploy-{n}" &&
        context.extra.hasTag("ticket") && context.extra.getTag("ticket") like "CHG-*" }};"#
            ),
        };
        text.push_str(&policy);
        text.push_str("\n\n");
    }
    text
}

fn request(level: Level, action: &str, resource: Resource) -> Request {
    Request {
        principal: Principal {
            agent: AgentId::from_bytes([7; 16]),
            level,
            namespace: ns("team-3"),
        },
        action: action.to_owned(),
        resource,
        context: Context {
            mission: Some(MissionId::from_bytes([9; 16])),
            ..Context::default()
        },
    }
}

fn ns(s: &str) -> Namespace {
    Namespace::new(s).unwrap_or_else(|_| Namespace::default_namespace())
}

fn path(p: &str) -> Resource {
    Resource::Path {
        namespace: ns("team-3"),
        path: p.to_owned(),
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    let defaults = PolicySet::defaults();
    let extra = args.policies.saturating_sub(defaults.len());
    let text = generated(extra);
    let started = Instant::now();
    let user = PolicySet::parse("generated.cedar", &text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let load_time = started.elapsed();
    let set = defaults.merge(user).map_err(|e| anyhow::anyhow!("{e}"))?;

    let mut deploy = request(
        Level::L3,
        "deploy-0",
        Resource::Command {
            namespace: ns("team-3"),
            command: "deploy web".to_owned(),
            network: false,
        },
    );
    deploy
        .context
        .extra
        .insert("ticket".to_owned(), "CHG-1234".into());
    let cases: Vec<(&str, Request, Outcome)> = vec![
        (
            "PERMIT: fs.write of a project file at L2",
            request(Level::L2, "fs.write", path("project-0/src/main.rs")),
            Outcome::Permit,
        ),
        (
            "PERMIT: custom tool with a ticket tag at L3",
            deploy,
            Outcome::Permit,
        ),
        (
            "DENY: fs.read of a secret at L4",
            request(Level::L4, "fs.read", path("secrets-0/key")),
            Outcome::Deny,
        ),
        (
            "DENY: http.fetch of an unlisted host",
            request(
                Level::L2,
                "http.fetch",
                Resource::Host {
                    host: "elsewhere.example.com".to_owned(),
                    port: 443,
                    scheme: "https".to_owned(),
                },
            ),
            Outcome::Deny,
        ),
        (
            "ESCALATE: fs.write to production at L2",
            request(Level::L2, "fs.write", path("prod-0/app.toml")),
            Outcome::Escalate { level: Level::L3 },
        ),
    ];

    println!("## Policy ({} policies loaded)\n", set.len());
    println!(
        "machine: {} cores; {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        crate::ledger::cpu_model()
    );
    println!(
        "Loading and validating the {} generated policies took {}.\n",
        extra,
        fmt_duration(load_time)
    );
    println!(
        "| decision, {} policies loaded | Aura decide p50 | p99 | Cedar is_authorized, all policies, p50 | p99 | Aura / Cedar (p50) | Cedar on Aura's slice p50 (policies) |",
        set.len()
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let authorizer = Authorizer::new();
    let mut table = String::new();
    let mut cpu_table = String::new();
    for (name, req, expected) in &cases {
        let d = decide(&set, req);
        anyhow::ensure!(
            d.outcome == *expected,
            "{name}: expected {expected}, got {} ({})",
            d.outcome,
            d.reason
        );
        let parts = aura_policy::cedar_parts(&set, req).map_err(|e| anyhow::anyhow!("{e}"))?;
        let cedar_set = set.cedar_policies();
        let slice = &*parts.slice;

        // Interleave the three so that noise from other processes hits them alike.
        let mut aura = Vec::with_capacity(args.iterations);
        let mut cedar = Vec::with_capacity(args.iterations);
        let mut sliced = Vec::with_capacity(args.iterations);
        for _ in 0..args.iterations / 10 {
            std::hint::black_box(decide(&set, req));
            std::hint::black_box(authorizer.is_authorized(
                &parts.request,
                cedar_set,
                &parts.entities,
            ));
            std::hint::black_box(authorizer.is_authorized(&parts.request, slice, &parts.entities));
        }
        for _ in 0..args.iterations {
            let t = Instant::now();
            std::hint::black_box(decide(
                std::hint::black_box(&set),
                std::hint::black_box(req),
            ));
            aura.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(authorizer.is_authorized(
                std::hint::black_box(&parts.request),
                cedar_set,
                &parts.entities,
            ));
            cedar.push(t.elapsed());
            let t = Instant::now();
            std::hint::black_box(authorizer.is_authorized(
                std::hint::black_box(&parts.request),
                slice,
                &parts.entities,
            ));
            sliced.push(t.elapsed());
        }
        aura.sort_unstable();
        cedar.sort_unstable();
        sliced.sort_unstable();
        let (a50, a99) = (percentile(&aura, 50.0), percentile(&aura, 99.0));
        let (c50, c99) = (percentile(&cedar, 50.0), percentile(&cedar, 99.0));
        // Mean CPU time, each in a loop of its own: on a shared machine wall-clock
        // percentiles include time spent waiting for a CPU, and this does not.
        let n = (args.iterations / 5).max(1);
        let aura_cpu = cpu_per_call(n, || {
            std::hint::black_box(decide(
                std::hint::black_box(&set),
                std::hint::black_box(req),
            ));
        });
        let cedar_cpu = cpu_per_call(n, || {
            std::hint::black_box(authorizer.is_authorized(
                std::hint::black_box(&parts.request),
                cedar_set,
                &parts.entities,
            ));
        });
        if let (Some(a), Some(c)) = (aura_cpu, cedar_cpu) {
            let _ = writeln!(
                cpu_table,
                "| {name} | {} | {} | {:.2} |",
                fmt_duration(a),
                fmt_duration(c),
                ratio(a, c)
            );
        }
        let _ = writeln!(
            table,
            "| {name} | {} | {} | {} | {} | {:.2} | {} ({}) |",
            fmt_duration(a50),
            fmt_duration(a99),
            fmt_duration(c50),
            fmt_duration(c99),
            ratio(a50, c50),
            fmt_duration(percentile(&sliced, 50.0)),
            slice.policies().count()
        );
    }
    print!("{table}");
    println!();
    if !cpu_table.is_empty() {
        println!(
            "| mean CPU time per call (excludes waiting for a CPU) | Aura decide | Cedar is_authorized, all policies | Aura / Cedar |"
        );
        println!("|---|---:|---:|---:|");
        print!("{cpu_table}");
        println!();
    }
    Ok(())
}

/// This thread's CPU time so far, from the scheduler's statistics (Linux).
fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

/// The mean CPU time of `f` over `n` calls.
fn cpu_per_call(n: usize, mut f: impl FnMut()) -> Option<Duration> {
    let start = thread_cpu_time()?;
    for _ in 0..n {
        f();
    }
    let spent = thread_cpu_time()?.checked_sub(start)?;
    Some(spent / u32::try_from(n).unwrap_or(u32::MAX))
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generated policies load against Aura's schema, so the benchmark measures what
    /// it says.
    #[test]
    fn generated_policies_load() {
        let set = PolicySet::parse("generated.cedar", &generated(189));
        assert!(set.is_ok_and(|s| s.len() == 189 && s.warnings().is_empty()));
    }
}
