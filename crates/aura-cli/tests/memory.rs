//! Memory through the real binary (docs/memory.md): `aura serve` with MiniLM imported as
//! `minilm` and a scripted reasoner whose missions store a fact and find it again, find
//! nothing of another agent's memory, recall their own past missions, and are denied a
//! shared space no policy opens; then an operator stores, searches, lists and forgets
//! with `aura memory`, and every write is in the ledger, which still verifies.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Aura, Node, start};

/// Runs a command against the node.
fn at(aura: &Aura, node: &Node, args: &[&str]) -> support::Out {
    let mut c = aura.cmd(args);
    c.env("AURA_NODE", &node.url);
    aura.run_with(c, None)
}

/// Waits until the mission has ended and checks it completed. A scripted turn whose
/// `expect` does not hold fails the mission, so a completed mission is one whose every
/// tool result said what the script expected. Generous: embedding on two loaded cores.
fn completed(aura: &Aura, node: &Node, id: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let m = at(aura, node, &["--json", "mission", "show", id])
            .ok()
            .json();
        match m["state"].as_str() {
            Some("completed") => return m,
            Some("failed" | "cancelled") => panic!("mission {id} ended: {m}"),
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "mission {id} never completed: {m}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn create_agent(aura: &Aura, node: &Node, name: &str) -> String {
    let agent = at(
        aura,
        node,
        &["--json", "agent", "create", name, "--level", "L1"],
    )
    .ok()
    .json();
    agent["id"].as_str().unwrap().to_owned()
}

fn submit(aura: &Aura, node: &Node, agent: &str, objective: &str, tools: &[&str]) -> String {
    let mut args = vec![
        "--json",
        "mission",
        "submit",
        "--agent",
        agent,
        "--objective",
        objective,
        "--timeout",
        "600",
    ];
    for t in tools {
        args.extend_from_slice(&["--tool", t]);
    }
    let submitted = at(aura, node, &args).ok().json();
    submitted["id"].as_str().unwrap().to_owned()
}

/// A scripted turn calling one tool; `expect` is what the previous tool result holds.
fn turn(tool: &str, arguments: &serde_json::Value, expect: Option<&str>) -> String {
    let mut t = json!({"content": "Working on it.", "tool_calls": [{"name": tool, "arguments": arguments}]});
    if let Some(e) = expect {
        t["expect"] = json!({"last_tool_result_contains": e});
    }
    t.to_string()
}

/// Imports MiniLM as `minilm` from the cache `scripts/fetch-models.sh` fills.
fn import_minilm(aura: &Aura) {
    let minilm = aura_model::pull::cache_dir().unwrap().join("minilm");
    assert!(
        minilm.join("model.safetensors").is_file(),
        "MiniLM is not in {}; run ./scripts/fetch-models.sh",
        minilm.display()
    );
    aura.run(&[
        "model",
        "import",
        minilm.to_str().unwrap(),
        "--name",
        "minilm",
    ])
    .ok();
}

fn node_with_minilm(aura: &Aura, script: &[String]) -> (Node, tempfile::TempDir) {
    aura.init();
    import_minilm(aura);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.jsonl");
    std::fs::write(&path, script.join("\n") + "\n").unwrap();
    let config = format!(
        "[reasoners.demo]\nprovider = \"scripted\"\npath = \"{}\"\n",
        path.display()
    );
    (start(aura, &config, "demo"), dir)
}

const FACT: &str = "The launch code word is marmalade.";

#[test]
fn missions_store_and_find_their_own_memories_and_recall_their_past_missions() {
    let aura = Aura::new();
    let script = [
        // Mission 1 (agent a): store a fact, then find it by meaning.
        turn(
            "memory_store",
            &json!({"text": FACT, "id": "codeword"}),
            None,
        ),
        turn(
            "memory_search",
            &json!({"query": "what is the code word for the launch?", "k": 3}),
            Some("text_sha256"),
        ),
        turn(
            "mission_finish",
            &json!({"summary": "remembered the launch code word"}),
            Some("marmalade"),
        ),
        // Mission 2 (agent b, same namespace): a's memory is not b's.
        turn("memory_search", &json!({"query": "launch code word"}), None),
        turn(
            "mission_finish",
            &json!({"summary": "found nothing"}),
            Some("\"memories\":[]"),
        ),
        // Mission 3 (agent a): recall its own past missions.
        turn(
            "memory_recall",
            &json!({"query": "the launch code word"}),
            None,
        ),
        turn(
            "mission_finish",
            &json!({"summary": "recalled"}),
            Some("remembered the launch code word"),
        ),
        // Mission 4 (agent a): a shared space no policy opens is denied.
        turn(
            "memory_search",
            &json!({"query": "deploys", "space": "handbook"}),
            None,
        ),
        turn(
            "mission_finish",
            &json!({"summary": "denied"}),
            Some("denied by policy"),
        ),
    ];
    let (node, _script) = node_with_minilm(&aura, &script);
    let a = create_agent(&aura, &node, "a");
    let b = create_agent(&aura, &node, "b");
    let m1 = submit(
        &aura,
        &node,
        &a,
        "Remember the launch code word",
        &["memory.store", "memory.search", "mission.finish"],
    );
    completed(&aura, &node, &m1);
    let m2 = submit(
        &aura,
        &node,
        &b,
        "Look for the launch code word",
        &["memory.search", "mission.finish"],
    );
    completed(&aura, &node, &m2);
    let m3 = submit(
        &aura,
        &node,
        &a,
        "What did I do before?",
        &["memory.recall", "mission.finish"],
    );
    completed(&aura, &node, &m3);
    let m4 = submit(
        &aura,
        &node,
        &a,
        "Read the handbook",
        &["memory.search", "mission.finish"],
    );
    completed(&aura, &node, &m4);

    // The write is in a's record: its effect names the id and the text's SHA-256, and
    // no vector.
    let record = at(
        &aura,
        &node,
        &["--json", "agent", "record", &a, "--limit", "1000"],
    )
    .ok()
    .stdout;
    let sha = aura_core::hash::Hash::sha256(FACT.as_bytes()).to_hex();
    assert!(record.contains(&sha), "the effect names the text's hash");
    assert!(record.contains("codeword"));
    assert!(!record.contains("\"vector\""), "no vector is recorded");

    // The operator sees a's own memory, and the episodes made of its missions.
    let own = at(
        &aura,
        &node,
        &["--json", "memory", "list", "--space", &format!("agent:{a}")],
    )
    .ok()
    .json();
    assert_eq!(own["memories"][0]["id"], "codeword", "{own}");
    assert_eq!(own["memories"][0]["text_sha256"], sha.as_str());
    let episodes = at(
        &aura,
        &node,
        &[
            "--json",
            "memory",
            "list",
            "--space",
            &format!("episodes:{a}"),
        ],
    )
    .ok()
    .json();
    assert_eq!(episodes["memories"][0]["id"], m1.as_str(), "{episodes}");
    let b_own = at(
        &aura,
        &node,
        &["--json", "memory", "list", "--space", &format!("agent:{b}")],
    )
    .ok()
    .json();
    assert_eq!(b_own["memories"], json!([]), "{b_own}");
    drop(node);
    aura.run(&["ledger", "verify"]).ok();
}

#[test]
fn operators_store_search_list_and_forget_with_aura_memory() {
    let aura = Aura::new();
    // The reasoner is never asked: operators reach memory without missions.
    let unused = [turn("mission_finish", &json!({"summary": "unused"}), None)];
    let (node, _script) = node_with_minilm(&aura, &unused);
    let space = ["--namespace", "team-a", "--space", "shared:handbook"];
    let with = |args: &[&str]| {
        let mut all: Vec<&str> = Vec::new();
        let (flags, rest): (Vec<&str>, Vec<&str>) =
            args.iter().copied().partition(|a| *a == "--json");
        all.extend(flags);
        all.extend(rest.iter().take(2));
        all.extend(space);
        all.extend(rest.iter().skip(2));
        at(&aura, &node, &all)
    };
    let stored = with(&[
        "--json",
        "memory",
        "store",
        "Deploys happen on Tuesdays after lunch.",
        "--id",
        "deploys",
    ])
    .ok()
    .json();
    assert_eq!(stored["id"], "deploys", "{stored}");
    assert!(stored["entry"].as_u64().is_some(), "recorded: {stored}");
    with(&[
        "memory",
        "store",
        "The office cat is called Pixel.",
        "--kind",
        "document",
    ])
    .ok();
    let found = with(&["memory", "search", "what day do we deploy?", "-k", "1"])
        .ok()
        .stdout;
    assert!(
        found.contains("deploys") && found.contains("Tuesdays"),
        "{found}"
    );
    let listed = with(&["--json", "memory", "list"]).ok().json();
    assert_eq!(listed["memories"].as_array().unwrap().len(), 2, "{listed}");
    // Another namespace's space of the same name holds nothing of team-a's.
    let other = at(
        &aura,
        &node,
        &[
            "--json",
            "memory",
            "search",
            "--namespace",
            "team-b",
            "--space",
            "shared:handbook",
            "deploys",
        ],
    )
    .ok()
    .json();
    assert_eq!(other["memories"], json!([]), "{other}");
    // The same id again is a conflict, with a hint; nothing changes.
    let again = with(&[
        "memory",
        "store",
        "Deploys happen on Fridays.",
        "--id",
        "deploys",
    ])
    .one_line_error(1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    with(&["memory", "forget", "deploys"]).ok();
    let listed = with(&["--json", "memory", "list"]).ok().json();
    assert_eq!(listed["memories"].as_array().unwrap().len(), 1, "{listed}");
    let gone = with(&["memory", "forget", "deploys"]).one_line_error(1);
    assert!(gone.stderr.contains("no memory"), "{}", gone.stderr);
    // Episodes are read-only; a space that is not one is refused.
    let a = create_agent(&aura, &node, "a");
    at(
        &aura,
        &node,
        &["memory", "store", "--space", &format!("episodes:{a}"), "x"],
    )
    .one_line_error(1);
    at(&aura, &node, &["memory", "list", "--space", "nonsense"]).one_line_error(1);
    drop(node);
    let verified = aura.run(&["--json", "ledger", "verify"]).ok().json();
    assert_eq!(verified["ok"], true, "{verified}");
    // The store and the forget are entries of the node's own stream.
    let entries = aura
        .run(&[
            "--json", "ledger", "show", "--agent", "node", "--limit", "1000",
        ])
        .ok()
        .stdout;
    assert!(entries.contains("memory.stored") && entries.contains("memory.forgotten"));
}

/// Two nodes of a cluster on one PostgreSQL database: a memory stored through one is
/// found through the other, and forgotten through the other, it is gone from the first.
#[test]
fn a_memory_stored_on_one_node_of_a_cluster_is_found_on_another() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let (a, b) = (Aura::new(), Aura::new());
    a.run(&["--json", "init", "--store", &url]).ok();
    let second = b.run(&["--json", "init", "--store", &url]).ok().json();
    a.run(&["cluster", "enroll", second["public_key"].as_str().unwrap()])
        .ok();
    import_minilm(&a);
    import_minilm(&b);
    let ((node_a, _), (node_b, _)) = (support::serve(&a), support::serve(&b));
    let space = ["--namespace", "team-a", "--space", "shared:handbook"];
    let on = |aura: &Aura, node: &Node, command: &str, rest: &[&str]| {
        let mut args = vec!["--json", "memory", command];
        args.extend(space);
        args.extend_from_slice(rest);
        at(aura, node, &args).ok().json()
    };
    on(
        &a,
        &node_a,
        "store",
        &["Deploys happen on Tuesdays after lunch.", "--id", "deploys"],
    );
    on(
        &a,
        &node_a,
        "store",
        &["The office cat is called Pixel.", "--id", "cat"],
    );
    let found = on(
        &b,
        &node_b,
        "search",
        &["what day do we deploy?", "-k", "1"],
    );
    assert_eq!(found["memories"][0]["id"], "deploys", "{found}");
    on(&b, &node_b, "forget", &["deploys"]);
    let listed = on(&a, &node_a, "list", &[]);
    assert_eq!(listed["memories"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["memories"][0]["id"], "cat", "{listed}");
}
