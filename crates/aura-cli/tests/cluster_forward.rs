//! Forwarding in a cluster, through the real binaries: two `aura serve` processes on one
//! throwaway PostgreSQL, each with its own API keys. A client holding a key on node A
//! only submits, follows and cancels missions of an agent node B runs (A forwards them to
//! B over the node-to-node channel, with a node token signed by A's key); listings on
//! either node show every mission; forged, expired, replayed and misdirected node tokens
//! are refused. Inference: a model installed only on B, asked of A, is served by B (its
//! receipt is B's), streamed too, within the regions the request allows; with B killed,
//! the request fails with a clear error.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aura_core::NodeId;
use aura_core::keystore::{KeyName, Keystore, Signer};
use aura_node::node_token::{self, Claims};
use serde_json::{Value, json};
use support::{Aura, Node};

/// Short leases, so that a killed node's heartbeat goes stale within seconds.
const LEASE_MS: u64 = 1500;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The scripts of the two reasoners: `demo`'s turns write a note and finish, after a
/// second; `slow`'s write a note and go on, two seconds each, so that its missions run
/// until they are cancelled.
fn write_scripts(dir: &Path) -> [std::path::PathBuf; 2] {
    let script = |name: &str, finish: bool, delay_ms: u64| {
        let mut text = String::new();
        for i in 0..200 {
            let mut calls = vec![json!({
                "name": "fs_write",
                "arguments": {"path": format!("{name}{i}.txt"), "content": "x"},
            })];
            if finish {
                calls.push(
                    json!({"name": "mission_finish", "arguments": {"summary": "wrote a note"}}),
                );
            }
            let turn = json!({"content": "a note", "tool_calls": calls, "delay_ms": delay_ms});
            text.push_str(&turn.to_string());
            text.push('\n');
        }
        let path = dir.join(format!("{name}.jsonl"));
        std::fs::write(&path, text).unwrap();
        path
    };
    [script("demo", true, 1000), script("slow", false, 2000)]
}

/// The `aura.toml` tables of the scripted reasoners `demo` and `slow`.
fn scripted(scripts: &[std::path::PathBuf; 2]) -> String {
    let [demo, slow] = scripts;
    format!(
        "[reasoners.demo]\nprovider = \"scripted\"\npath = \"{}\"\n\n[reasoners.slow]\nprovider = \"scripted\"\npath = \"{}\"\n\n",
        demo.display(),
        slow.display()
    )
}

/// Starts `aura serve` on the cluster's database, its log in `<dir>/serve.log`, with
/// these `aura.toml` tables (reasoners) besides `[store]`.
fn serve(aura: &Aura, url: &str, reasoner: &str) -> Node {
    std::fs::write(
        aura.home().join("aura.toml"),
        format!("{reasoner}[store]\nurl = \"{url}\"\nlease_ms = {LEASE_MS}\n"),
    )
    .unwrap();
    let log = std::fs::File::create(aura.dir.path().join("serve.log")).unwrap();
    let mut child = aura
        .cmd(&["--json", "serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let url = format!("http://{}", ready["listening"].as_str().unwrap());
    Node { child, url }
}

/// Two nodes' data directories on one database: a in region `eu` (holding the cluster
/// key), b enrolled in `us`; each with an operator key of its own.
struct Pair {
    url: String,
    a: Aura,
    b: Aura,
    key_a: String,
    key_b: String,
    id_a: String,
    id_b: String,
}

fn pair() -> Option<Pair> {
    let url = support::postgres_url()?;
    let (a, b) = (Aura::new(), Aura::new());
    a.run(&["init", "--store", &url, "--region", "eu"]).ok();
    let key = b.run(&["--json", "init", "--store", &url]).ok().json()["public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    a.run(&["cluster", "enroll", &key, "--region", "us"]).ok();
    let secret = |aura: &Aura, name: &str| {
        aura.run(&["--json", "apikey", "create", name, "--role", "operator"])
            .ok()
            .json()["secret"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let id = |aura: &Aura| {
        aura.run(&["--json", "key", "show"]).ok().json()["node_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    Some(Pair {
        key_a: secret(&a, "client"),
        key_b: secret(&b, "admin"),
        id_a: id(&a),
        id_b: id(&b),
        url,
        a,
        b,
    })
}

/// An HTTP answer.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// Sends a request; `key` goes as a bearer token, `headers` as they are.
fn call(
    method: &str,
    url: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Reply {
    runtime().block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let r = req.send().await.unwrap();
        Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    })
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The cluster's status as `aura cluster status --json` on `aura` has it.
fn status(aura: &Aura) -> Value {
    aura.run(&["--json", "cluster", "status"]).ok().json()
}

/// Waits until both nodes hold their half of the shards.
fn wait_spread(p: &Pair) {
    wait_until(
        "the shards spread over both nodes",
        Duration::from_secs(60),
        || {
            let st = status(&p.a);
            st["nodes"].as_array().unwrap().iter().all(|n| {
                n["shards"]
                    .as_array()
                    .is_some_and(|s| (28..=36).contains(&s.len()))
            })
        },
    );
}

fn create_agent(node: &Node, key: &str, name: &str) -> String {
    let r = call(
        "POST",
        &format!("{}/v1/agents", node.url),
        Some(key),
        &[],
        Some(&json!({"name": name, "level": "L2", "namespace": "default"})),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    r.json()["id"].as_str().unwrap().to_owned()
}

fn mission_for(agent: &str, reasoner: &str) -> Value {
    json!({
        "agent": agent,
        "objective": "write a note",
        "tools": ["fs.write", "mission.finish"],
        "timeout_secs": 600,
        "reasoner": reasoner,
    })
}

fn mission_state(node: &Node, key: &str, id: &str) -> String {
    let r = call(
        "GET",
        &format!("{}/v1/missions/{id}", node.url),
        Some(key),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["state"].as_str().unwrap().to_owned()
}

fn listed(node: &Node, key: &str, what: &str) -> Vec<String> {
    let r = call(
        "GET",
        &format!("{}/v1/{what}", node.url),
        Some(key),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A node token from `signer` for a request to node `to`.
fn token(
    signer: &Signer,
    to: &str,
    method: &str,
    path: &str,
    edit: impl FnOnce(&mut Claims),
) -> String {
    let caller = aura_node::Caller {
        key: None,
        name: "test".into(),
        role: aura_node::Role::Operator,
        namespaces: None,
        agent: None,
    };
    let to: NodeId = to.parse().unwrap();
    let mut claims = Claims::new(signer, to, method, path, b"", &caller);
    edit(&mut claims);
    claims.sign(signer).unwrap()
}

#[test]
fn a_client_of_one_node_runs_and_cancels_missions_on_another_and_lists_them_anywhere() {
    let Some(p) = pair() else {
        return;
    };
    let scripts = write_scripts(p.a.dir.path());
    let node_a = serve(&p.a, &p.url, &scripted(&scripts));
    let node_b = serve(&p.b, &p.url, &scripted(&scripts));
    wait_spread(&p);

    let on_b = create_agent(&node_b, &p.key_b, "worker-b");
    let on_a = create_agent(&node_a, &p.key_a, "worker-a");
    // The client's key is a's: b does not know it.
    let r = call(
        "GET",
        &format!("{}/v1/missions", node_b.url),
        Some(&p.key_a),
        &[],
        None,
    );
    assert_eq!(r.status, 401, "{}", r.text);

    // A mission for b's agent, submitted to a with a's key: a forwards it, b runs it.
    let r = call(
        "POST",
        &format!("{}/v1/missions", node_a.url),
        Some(&p.key_a),
        &[],
        Some(&mission_for(&on_b, "demo")),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("aura-served-by").as_deref(), Some(p.id_b.as_str()));
    let done = r.json()["id"].as_str().unwrap().to_owned();
    // Read through a, from the database: it completes.
    wait_until("b's mission completes", Duration::from_secs(90), || {
        mission_state(&node_a, &p.key_a, &done) == "completed"
    });

    // Another, which runs until it is cancelled through a.
    let r = call(
        "POST",
        &format!("{}/v1/missions", node_a.url),
        Some(&p.key_a),
        &[],
        Some(&mission_for(&on_b, "slow")),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    let cancelled = r.json()["id"].as_str().unwrap().to_owned();
    let r = call(
        "POST",
        &format!("{}/v1/missions/{cancelled}/cancel", node_a.url),
        Some(&p.key_a),
        &[],
        Some(&json!({"reason": "changed my mind"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("aura-served-by").as_deref(), Some(p.id_b.as_str()));
    wait_until("the mission is cancelled", Duration::from_secs(60), || {
        mission_state(&node_a, &p.key_a, &cancelled) == "cancelled"
    });

    // One on a's own agent, served by a itself.
    let r = call(
        "POST",
        &format!("{}/v1/missions", node_a.url),
        Some(&p.key_a),
        &[],
        Some(&mission_for(&on_a, "demo")),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("aura-served-by"), None);
    let local = r.json()["id"].as_str().unwrap().to_owned();

    // Listings on either node show every mission and agent of the cluster.
    for (node, key) in [(&node_a, &p.key_a), (&node_b, &p.key_b)] {
        let missions = listed(node, key, "missions");
        for id in [&done, &cancelled, &local] {
            assert!(missions.contains(id), "{} lists {missions:?}", node.url);
        }
        let agents = listed(node, key, "agents");
        for id in [&on_a, &on_b] {
            assert!(agents.contains(id), "{} lists {agents:?}", node.url);
        }
        // Each node reads the missions of the other's agents from the database.
        mission_state(node, key, &local);
        mission_state(node, key, &done);
    }
}

#[test]
fn node_tokens_that_do_not_hold_are_refused() {
    let Some(p) = pair() else {
        return;
    };
    // b alone: it checks a's tokens against the keys enrolled in the database.
    let node_b = serve(&p.b, &p.url, "");
    let a_key = Keystore::new(p.a.home().join("keys"))
        .signer(&KeyName::node(), None)
        .unwrap();
    let missions = format!("{}/v1/missions", node_b.url);
    let send =
        |token: &str, url: &str| call("GET", url, None, &[(node_token::HEADER, token)], None);

    // A token a signed for this very request is good, once.
    let good = token(&a_key, &p.id_b, "GET", "/v1/missions", |_| {});
    let r = send(&good, &missions);
    assert_eq!(r.status, 200, "{}", r.text);
    let r = send(&good, &missions);
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("used before"), "{}", r.text);

    // One check per way a token can fail: what to change, what b must say.
    let forger = Signer::from_seed_bytes("node", &[9; 32]).unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            token(&forger, &p.id_b, "GET", "/v1/missions", |_| {}),
            "/v1/missions",
            "not enrolled",
        ),
        (
            token(&a_key, &p.id_b, "GET", "/v1/missions", |c| {
                c.issued_at_ms -= 120_000;
            }),
            "/v1/missions",
            "expired",
        ),
        (
            token(&a_key, &p.id_a, "GET", "/v1/missions", |_| {}),
            "/v1/missions",
            "for another node",
        ),
        (
            token(&a_key, &p.id_b, "GET", "/v1/missions", |_| {}),
            "/v1/agents",
            "covers another request",
        ),
        ("not-a-token".to_owned(), "/v1/missions", "malformed"),
    ];
    for (token, path, says) in cases {
        let r = send(&token, &format!("{}{path}", node_b.url));
        assert_eq!(r.status, 401, "{says}: {}", r.text);
        assert_eq!(r.json()["error"]["type"], "authentication_error");
        assert!(r.text.contains(says), "{says}: {}", r.text);
    }
}

#[test]
fn a_model_held_only_by_b_is_served_by_b_and_fails_clearly_once_b_is_gone() {
    let Some(p) = pair() else {
        return;
    };
    let minilm = aura_model::pull::cache_dir().unwrap().join("minilm");
    assert!(
        minilm.join("model.safetensors").is_file(),
        "MiniLM is not in {}; run ./scripts/fetch-models.sh",
        minilm.display()
    );
    p.b.run(&[
        "model",
        "import",
        minilm.to_str().unwrap(),
        "--name",
        "minilm",
    ])
    .ok();
    p.b.run(&["model", "pull", "smollm2"]).ok();
    // a runs missions with a local reasoner on SmolLM2, which only b holds.
    let node_a = serve(
        &p.a,
        &p.url,
        "[reasoners.small]\nprovider = \"local\"\nmodel = \"smollm2\"\nmax_tokens = 8\n\n",
    );
    let mut node_b = serve(&p.b, &p.url, "");
    wait_until("b advertises its models", Duration::from_secs(60), || {
        status(&p.a)["nodes"].as_array().unwrap().iter().any(|n| {
            n["node_id"] == p.id_b.as_str()
                && n["models"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m.as_str().unwrap().starts_with("minilm@")))
        })
    });
    let embeddings = format!("{}/v1/embeddings", node_a.url);
    let ask = json!({"model": "minilm", "input": "a cat on a mat"});

    let r = call("POST", &embeddings, Some(&p.key_a), &[], Some(&ask));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("aura-served-by").as_deref(), Some(p.id_b.as_str()));
    let receipt = r.header("x-aura-receipt").unwrap();
    assert_eq!(r.json()["data"][0]["object"], "embedding");
    // The receipt is b's: b lists it among those it signed, a does not.
    let receipts = |node: &Node, key: &str| {
        let r = call(
            "GET",
            &format!("{}/v1/receipts", node.url),
            Some(key),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r.json()["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(receipts(&node_b, &p.key_b).contains(&receipt));
    assert!(!receipts(&node_a, &p.key_a).contains(&receipt));

    // Streamed, from b through a.
    let r = call(
        "POST",
        &format!("{}/v1/chat/completions", node_a.url),
        Some(&p.key_a),
        &[],
        Some(&json!({
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 3,
            "stream": true,
        })),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("aura-served-by").as_deref(), Some(p.id_b.as_str()));
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        r.headers
    );
    assert!(r.text.contains("chat.completion.chunk"), "{}", r.text);
    assert!(r.text.trim_end().ends_with("data: [DONE]"), "{}", r.text);

    // Only nodes in the allowed regions serve: b is in `us`.
    let r = call(
        "POST",
        &embeddings,
        Some(&p.key_a),
        &[("aura-regions", "eu")],
        Some(&ask),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert!(r.text.contains("in region eu"), "{}", r.text);
    let r = call(
        "POST",
        &embeddings,
        Some(&p.key_a),
        &[("aura-regions", "us, ap")],
        Some(&ask),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    // A mission of a's agent, whose local reasoner's model only b holds: its turns run on
    // b, which signs their receipts.
    let before = receipts(&node_b, &p.key_b).len();
    let agent = create_agent(&node_a, &p.key_a, "thinker");
    let r = call(
        "POST",
        &format!("{}/v1/missions", node_a.url),
        Some(&p.key_a),
        &[],
        Some(&json!({
            "agent": agent,
            "objective": "say hello",
            "tools": ["mission.finish"],
            "timeout_secs": 600,
            "max_steps": 1,
            "reasoner": "small",
        })),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("aura-served-by"), None);
    let mission = r.json()["id"].as_str().unwrap().to_owned();
    // A mission that ended without a turn on b says why (its record and a's log).
    let start = Instant::now();
    while receipts(&node_b, &p.key_b).len() <= before {
        let r = call(
            "GET",
            &format!("{}/v1/missions/{mission}?detail=full", node_a.url),
            Some(&p.key_a),
            &[],
            None,
        );
        let ended = r.json()["state"] == "failed";
        if ended || start.elapsed() > Duration::from_secs(180) {
            let log = std::fs::read_to_string(p.a.dir.path().join("serve.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "the mission's turn did not run on b: {}\na's log, last lines first:\n{}",
                r.text,
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The mission is a's, read on a.
    mission_state(&node_a, &p.key_a, &mission);

    // b dies: at once the request fails as unreachable (b's heartbeat is still fresh; or,
    // on a pooled connection b's death cut, as failed) or as held by no live node; once
    // its heartbeat is stale, as held by no live node.
    node_b.child.kill().unwrap();
    node_b.child.wait().unwrap();
    // Reaped: its pid is no longer ours to signal when the guard drops.
    std::mem::forget(node_b);
    let r = call("POST", &embeddings, Some(&p.key_a), &[], Some(&ask));
    let code = r.json()["error"]["code"].as_str().unwrap().to_owned();
    assert!(
        (r.status == 503 && code == "node_unreachable")
            || (r.status == 502 && code == "forward_failed")
            || (r.status == 404 && code == "model_not_found"),
        "{}: {}",
        r.status,
        r.text
    );
    std::thread::sleep(Duration::from_millis(LEASE_MS * 2));
    let r = call("POST", &embeddings, Some(&p.key_a), &[], Some(&ask));
    assert_eq!(r.status, 404, "{}", r.text);
    assert!(
        r.text
            .contains("no live node of this cluster holds the model `minilm`"),
        "{}",
        r.text
    );
}

/// A mission's boundary (`regions`) with two labelled nodes, a in `eu` and b in `us`: a
/// mission bounded to `eu` for the agent b runs is refused by b (forwarded there by a),
/// and nothing of it is recorded; bounded to `us`, the same agent's mission runs on b;
/// bounded to `eu`, a's agent's mission runs on a, even submitted through b.
#[test]
fn a_mission_whose_boundary_excludes_a_node_s_region_never_runs_there() {
    let Some(p) = pair() else {
        return;
    };
    let scripts = write_scripts(p.a.dir.path());
    let node_a = serve(&p.a, &p.url, &scripted(&scripts));
    let node_b = serve(&p.b, &p.url, &scripted(&scripts));
    wait_spread(&p);
    let on_b = create_agent(&node_b, &p.key_b, "worker-us");
    let on_a = create_agent(&node_a, &p.key_a, "worker-eu");
    let bounded = |agent: &str, regions: &[&str]| {
        let mut m = mission_for(agent, "demo");
        m["regions"] = json!(regions);
        m
    };
    let missions_of = |agent: &str| {
        let r = call(
            "GET",
            &format!("{}/v1/missions?agent={agent}", node_a.url),
            Some(&p.key_a),
            &[],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text);
        r.json().as_array().unwrap().len()
    };

    // Bounded to eu, for b's agent (b is in us): refused by b, through a.
    let r = call(
        "POST",
        &format!("{}/v1/missions", node_a.url),
        Some(&p.key_a),
        &[],
        Some(&bounded(&on_b, &["eu"])),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.header("aura-served-by").as_deref(), Some(p.id_b.as_str()));
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("may run only in region eu; this node is in region us")
            && message.contains("hint:"),
        "{message}"
    );
    assert_eq!(missions_of(&on_b), 0, "a refused mission was recorded");
    // A malformed boundary is refused before anything runs.
    let r = call(
        "POST",
        &format!("{}/v1/missions", node_a.url),
        Some(&p.key_a),
        &[],
        Some(&bounded(&on_b, &["us", "us"])),
    );
    assert_eq!(r.status, 400, "{}", r.text);

    // Bounded to us: b runs it to the end.
    let r = call(
        "POST",
        &format!("{}/v1/missions", node_a.url),
        Some(&p.key_a),
        &[],
        Some(&bounded(&on_b, &["us"])),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("aura-served-by").as_deref(), Some(p.id_b.as_str()));
    assert_eq!(r.json()["regions"], json!(["us"]));
    let in_us = r.json()["id"].as_str().unwrap().to_owned();
    wait_until("the us mission completes", Duration::from_secs(90), || {
        mission_state(&node_a, &p.key_a, &in_us) == "completed"
    });

    // Bounded to eu, for a's agent, submitted to b: b forwards it, a runs it.
    let r = call(
        "POST",
        &format!("{}/v1/missions", node_b.url),
        Some(&p.key_b),
        &[],
        Some(&bounded(&on_a, &["eu", "ap"])),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.header("aura-served-by").as_deref(), Some(p.id_a.as_str()));
    let in_eu = r.json()["id"].as_str().unwrap().to_owned();
    wait_until("the eu mission completes", Duration::from_secs(90), || {
        mission_state(&node_b, &p.key_b, &in_eu) == "completed"
    });
}

/// Sends `n` embeddings requests for `model` with the request ids `<prefix>0`… (four at
/// a time); returns, in order, each answer's status and the model that served it.
fn embed_many(node: &Node, key: &str, model: &str, prefix: &str, n: usize) -> Vec<(u16, String)> {
    runtime().block_on(async {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("{}/v1/embeddings", node.url);
        let body = json!({"model": model, "input": "a cat"}).to_string();
        let ask = |i: usize| {
            let req = client
                .post(&url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .header("x-request-id", format!("{prefix}{i}"))
                .body(body.clone());
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let served = r
                    .headers()
                    .get("aura-model")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = r.bytes().await;
                (status, served)
            }
        };
        let mut out = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(4) {
            let answers = futures_util::future::join_all(chunk.iter().map(|i| ask(*i))).await;
            out.extend(answers);
        }
        out
    })
}

/// A canary alias on one node: `emb` sends 10% of requests to `minilm-canary` (MiniLM
/// imported a second time), chosen by request id. Over 1,000 requests the split is within
/// 5 points of 10%, each request on the side its id gives; once the canary's package
/// fails its hash, its requests fail, the alias rolls back to `minilm` after its window,
/// the rollback is in the node's ledger, and it holds after a restart.
#[test]
fn a_canary_alias_takes_its_share_and_rolls_back_when_its_package_fails() {
    let aura = Aura::new();
    aura.init();
    let minilm = aura_model::pull::cache_dir().unwrap().join("minilm");
    assert!(
        minilm.join("model.safetensors").is_file(),
        "MiniLM is not in {}; run ./scripts/fetch-models.sh",
        minilm.display()
    );
    for name in ["minilm", "minilm-canary"] {
        aura.run(&["model", "import", minilm.to_str().unwrap(), "--name", name])
            .ok();
    }
    let key = aura
        .run(&["--json", "apikey", "create", "ops", "--role", "operator"])
        .ok()
        .json()["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(
        aura.home().join("aura.toml"),
        "[aliases.emb]\nmodel = \"minilm\"\ncanary = \"minilm-canary\"\ncanary_percent = 10\nrollback_error_percent = 50\nrollback_window = 8\n",
    )
    .unwrap();
    let (node, _) = support::serve(&aura);

    let answers = embed_many(&node, &key, "emb", "req-", 1000);
    let mut canary = 0;
    for (i, (status, served)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "request {i}");
        let expect = if aura_node::canary::canary_bucket("emb", &format!("req-{i}")) < 1000 {
            canary += 1;
            "minilm-canary"
        } else {
            "minilm"
        };
        assert_eq!(served, expect, "request {i}");
    }
    assert!(
        (50..=150).contains(&canary),
        "{canary} of 1,000 to the canary"
    );
    // A model's own name is not an alias: served as it is, no `aura-model`.
    let plain = embed_many(&node, &key, "minilm", "plain-", 4);
    assert!(
        plain.iter().all(|(s, m)| *s == 200 && m.is_empty()),
        "{plain:?}"
    );

    // The canary's package is damaged: its requests fail, until the alias rolls back.
    let weights = aura
        .home()
        .join("models/minilm-canary/files/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    let tmp = weights.with_extension("tampered");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, &weights).unwrap();
    let answers = embed_many(&node, &key, "emb", "after-", 400);
    let failed: Vec<usize> = (0..answers.len())
        .filter(|i| answers[*i].0 != 200)
        .collect();
    assert!(
        failed.len() >= 5 && failed.len() <= 8,
        "the canary failed {} times before it rolled back: {failed:?}",
        failed.len()
    );
    for i in &failed {
        assert_eq!(answers[*i].1, "minilm-canary", "{:?}", answers[*i]);
    }
    // After the rollback every request is the stable model's, canary side or not.
    let last = *failed.last().unwrap();
    assert!(
        answers[last + 1..]
            .iter()
            .all(|(s, m)| *s == 200 && m == "minilm"),
        "{:?}",
        &answers[last + 1..]
    );
    let rollbacks = || {
        let entries = aura
            .run(&[
                "--json", "ledger", "show", "--agent", "node", "--limit", "100000",
            ])
            .ok()
            .json();
        entries
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "model.alias.rolled_back")
            .map(|e| e["body"].clone())
            .collect::<Vec<_>>()
    };
    let recorded = rollbacks();
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["alias"], "emb");
    assert_eq!(recorded[0]["canary"], "minilm-canary");
    assert_eq!(recorded[0]["model"], "minilm");
    assert_eq!(recorded[0]["window"], 8);
    assert!(recorded[0]["errors"].as_u64().unwrap() >= 5, "{recorded:?}");

    // Restarted, the node remembers: the canary's side goes to the stable model.
    drop(node);
    let (node, _) = support::serve(&aura);
    let answers = embed_many(&node, &key, "emb", "req-", 200);
    assert!(
        answers.iter().all(|(s, m)| *s == 200 && m == "minilm"),
        "{answers:?}"
    );
    assert_eq!(rollbacks().len(), 1);
}
