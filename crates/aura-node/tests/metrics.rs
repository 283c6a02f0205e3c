//! `GET /metrics` after a scripted workload, through a real socket: it parses with
//! prometheus-client's text-format parser (installed by `scripts/setup-python.sh`), and its
//! counters are what the ledger shows. The only test in this binary, so the process-wide
//! registry counts this node's work alone (nextest runs tests in processes of their own
//! anyway).

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use aura_kernel::{Event, Outcome, Recorded};
use serde_json::{Value, json};

/// Three missions' turns, taken in order: a write that works, then finish; a read of a file
/// that is not there (a failed call), then finish; a call to a tool the mission was not
/// given (refused by the engine: a deny), then finish.
const SCRIPT: &str = r#"{"content": "", "tool_calls": [{"name": "fs_write", "arguments": {"path": "a.txt", "content": "hi"}}]}
{"content": "done", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "wrote"}}]}
{"content": "", "tool_calls": [{"name": "fs_read", "arguments": {"path": "missing.txt"}}]}
{"content": "done", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "read"}}]}
{"content": "", "tool_calls": [{"name": "fs_delete", "arguments": {"path": "a.txt"}}]}
{"content": "done", "tool_calls": [{"name": "mission_finish", "arguments": {"summary": "done"}}]}
"#;

/// Where `scripts/setup-python.sh` installed prometheus-client (it prints the directory).
fn python_libs() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/setup-python.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The samples of `text` as prometheus-client's parser reads them: (name, labels) → value.
fn parse(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let parser = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/parse_metrics.py");
    let mut child = Command::new("python3")
        .arg(parser)
        .env("PYTHONPATH", python_libs())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus-client could not parse /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let s: Value = serde_json::from_str(l).unwrap();
            let labels = s["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            (
                (s["name"].as_str().unwrap().to_owned(), labels),
                s["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_match_the_ledger_after_a_scripted_workload() {
    let n = support::start_scripted(SCRIPT).await;
    let a = n.agent_a.to_string();
    // Three missions, one after another (the script's turns are shared); each is held for
    // an approval by the test policy, approved, and runs to its end.
    for _ in 0..3 {
        let mission = json!({"agent": a, "objective": "work", "tools": ["fs.write", "fs.read", "mission.finish"], "timeout_secs": 600});
        let r = n
            .call("POST", "/v1/missions", Some("operator"), Some(mission))
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let request = r.body["escalation"]["request"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let answer = support::approval(&n, &id, request);
        let r = n
            .call(
                "POST",
                &format!("/v1/approvals/{id}"),
                Some("approver_a"),
                Some(answer),
            )
            .await;
        assert!(r.status < 300, "{:?}", r.body);
        let mut state = String::new();
        for _ in 0..500 {
            let m = n
                .call("GET", &format!("/v1/missions/{id}"), Some("operator"), None)
                .await;
            state = m.body["state"].as_str().unwrap_or_default().to_owned();
            if ["completed", "failed", "cancelled"].contains(&state.as_str()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            ["completed", "failed"].contains(&state.as_str()),
            "mission {id} ended {state}"
        );
    }
    // Requests the HTTP counter must show: one refused without a key, one to a route that
    // does not exist (counted under `unmatched`, never its path).
    assert_eq!(n.call("GET", "/metrics", None, None).await.status, 401);
    assert_eq!(
        n.call("GET", "/no/such/route/123", Some("operator"), None)
            .await
            .status,
        404
    );

    // What the ledger shows.
    let mut transitions: BTreeMap<String, f64> = BTreeMap::new();
    let mut decisions: BTreeMap<&str, f64> = BTreeMap::new();
    let mut calls: BTreeMap<(String, String), f64> = BTreeMap::new();
    let entries = n.engine.store().entries(0, 100_000).await.unwrap();
    for e in &entries {
        if !e.entry.kind.as_str().starts_with("mission.") {
            continue;
        }
        let r = Recorded::from_body(&e.entry.body).unwrap();
        match r.event {
            Event::Transition { to, .. } => {
                *transitions.entry(to.as_str().into()).or_default() += 1.0;
            }
            Event::Judged { decision } | Event::Decided { decision, .. } => {
                let effect = match decision.outcome {
                    Outcome::Permit => "permit",
                    Outcome::Deny => "deny",
                    Outcome::Escalate { .. } => "escalate",
                };
                *decisions.entry(effect).or_default() += 1.0;
            }
            Event::Effect { effect, .. } => {
                let outcome = if effect.ok {
                    "ok".to_owned()
                } else {
                    effect.error_kind.clone().unwrap_or_else(|| "failed".into())
                };
                *calls.entry((effect.tool.clone(), outcome)).or_default() += 1.0;
            }
            _ => {}
        }
    }
    // The workload did what it was meant to: a call that worked, one that failed, a deny,
    // escalations and permits.
    assert!(
        calls.contains_key(&("fs.write".into(), "ok".into())),
        "{calls:?}"
    );
    assert!(
        calls.keys().any(|(t, o)| t == "fs.read" && o != "ok"),
        "{calls:?}"
    );
    assert!(decisions.contains_key("deny"), "{decisions:?}");
    assert!(decisions.contains_key("escalate"), "{decisions:?}");
    assert!(decisions.contains_key("permit"), "{decisions:?}");

    let r = n
        .http
        .get(format!("{}/metrics", n.url))
        .bearer_auth(&n.keys["operator"])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let samples = parse(&text);
    let family = |name: &str| -> BTreeMap<BTreeMap<String, String>, f64> {
        samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    };

    let want: BTreeMap<_, _> = transitions
        .iter()
        .map(|(s, v)| (labels(&[("state", s)]), *v))
        .collect();
    assert_eq!(family("aura_mission_transitions_total"), want, "{text}");
    let want: BTreeMap<_, _> = decisions
        .iter()
        .map(|(e, v)| (labels(&[("effect", e)]), *v))
        .collect();
    assert_eq!(family("aura_policy_decisions_total"), want, "{text}");
    let want: BTreeMap<_, _> = calls
        .iter()
        .map(|((t, o), v)| (labels(&[("tool", t), ("outcome", o)]), *v))
        .collect();
    assert_eq!(family("aura_tool_calls_total"), want, "{text}");
    // Missions by state: every state shown, the three missions where the ledger left them.
    let missions = family("aura_missions");
    assert_eq!(missions.len(), 8, "{text}");
    let ended: f64 = ["completed", "failed"]
        .iter()
        .map(|s| missions[&labels(&[("state", s)])])
        .sum();
    assert_eq!(ended, 3.0, "{text}");
    // Every commit of the workload was timed; steps too.
    let commits = samples[&(
        "aura_store_commit_seconds_count".to_owned(),
        labels(&[("outcome", "ok")]),
    )];
    assert!(
        commits >= entries.len() as f64 / 10.0 && commits > 0.0,
        "{text}"
    );
    assert!(
        samples[&(
            "aura_kernel_step_seconds_count".to_owned(),
            labels(&[("work", "step")])
        )] >= 6.0
    );
    // HTTP by route template and status: the mission reads are one series under their
    // template, whatever the ids; the refusal and the unknown route are counted too.
    let http = family("aura_http_requests_total");
    let polls = http
        .iter()
        .find(|(l, _)| {
            l["route"] == "/v1/missions/{id}" && l["method"] == "GET" && l["status"] == "200"
        })
        .map(|(_, v)| *v)
        .unwrap_or_default();
    assert!(polls >= 3.0, "{text}");
    assert!(
        http.keys()
            .all(|l| !l["route"].contains("mis_") && !l["route"].contains("123")),
        "a raw path became a label: {text}"
    );
    assert_eq!(
        http[&labels(&[("route", "/metrics"), ("method", "GET"), ("status", "401")])],
        1.0,
        "{text}"
    );
    assert_eq!(
        http[&labels(&[("route", "unmatched"), ("method", "GET"), ("status", "404")])],
        1.0,
        "{text}"
    );
}
