//! Failover of a cluster, through the real binaries: three `aura serve` processes on one
//! PostgreSQL database, with short shard leases, run missions on agents spread over the
//! shards. One node is killed with SIGKILL: once its leases expire the others take its
//! shards, replay its agents and finish its missions. Another is stopped with SIGSTOP past
//! its lease and resumed: it notices its leases are gone and stops its agents, and the
//! store's epoch fence refuses anything it still tries to write. Afterwards a checker reads
//! the database: every mission terminal and completed, every record replaying, per-agent
//! sequences gapless, leaf indices unique and gapless, and the ledger verifying with the
//! cluster key.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use aura_core::AgentId;
use aura_store::Store as _;
use aura_store::postgres::testing::TestCluster;
use aura_store::postgres::{Options, PgStore};
use support::{Aura, Node};

/// Short leases, so the test sees several failovers in seconds.
const LEASE_MS: u64 = 1500;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A script of turns that fit any mission in any order (a node's missions share its
/// script): each writes a note and finishes, after a pause as long as a small model's
/// turn, so that missions are still running when a node fails.
fn write_script(path: &Path) {
    let mut text = String::new();
    for i in 0..2000 {
        let turn = serde_json::json!({
            "content": "a note, then done",
            "tool_calls": [
                {"name": "fs_write", "arguments": {"path": format!("note{i}.txt"), "content": "x"}},
                {"name": "mission_finish", "arguments": {"summary": "wrote a note"}},
            ],
            "delay_ms": 500,
        });
        text.push_str(&turn.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// Starts `aura serve` with this node's `aura.toml`, its log in `<dir>/serve.log`.
fn serve(aura: &Aura, url: &str, script: &Path) -> Node {
    std::fs::write(
        aura.home().join("aura.toml"),
        format!(
            "[reasoners.demo]\nprovider = \"scripted\"\npath = \"{}\"\n\n[store]\nurl = \"{url}\"\nlease_ms = {LEASE_MS}\n",
            script.display()
        ),
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
    let ready: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    let url = format!("http://{}", ready["listening"].as_str().unwrap());
    Node { child, url }
}

fn at(aura: &Aura, node: &Node, args: &[&str]) -> support::Out {
    let mut c = aura.cmd(args);
    c.env("AURA_NODE", &node.url);
    aura.run_with(c, None)
}

fn signal(node: &Node, sig: i32) {
    let pid = i32::try_from(node.child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Creates `n` agents through `node` (each lands in a shard the node holds) and submits
/// `per_agent` missions to each; returns the agents' and the missions' ids.
fn missions_on(aura: &Aura, node: &Node, n: usize, per_agent: usize) -> (Vec<String>, Vec<String>) {
    let mut agents = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let agent = at(
            aura,
            node,
            &[
                "--json",
                "agent",
                "create",
                &format!("w{i}"),
                "--level",
                "L2",
            ],
        )
        .ok()
        .json()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for _ in 0..per_agent {
            ids.push(submit(aura, node, &agent));
        }
        agents.push(agent);
    }
    (agents, ids)
}

/// `GET path` on `node` over a plain socket (no redirect followed): the status and the
/// `aura-served-by` header (the node that served a forwarded request).
fn get_raw(node: &Node, path: &str) -> (u16, Option<String>) {
    use std::io::{Read as _, Write as _};
    let addr = node.url.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    socket.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let location = answer
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("aura-served-by: "))
        .map(str::to_owned);
    (status, location)
}

fn submit(aura: &Aura, node: &Node, agent: &str) -> String {
    at(
        aura,
        node,
        &[
            "--json",
            "mission",
            "submit",
            "--agent",
            agent,
            "--objective",
            "write two notes",
            "--timeout",
            "600",
            "--tool",
            "fs.write",
            "--tool",
            "mission.finish",
        ],
    )
    .ok()
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What the checker found in the database.
struct Checked {
    /// Every mission's state, by id.
    states: BTreeMap<String, String>,
}

/// Reads the whole database and checks the ledger's invariants; returns the missions'
/// states as their records replay.
fn check(url: &str) -> Checked {
    runtime().block_on(async {
        let store = PgStore::open_read_only(url, Options::default())
            .await
            .unwrap();
        let size = store.tree_size().await.unwrap();
        // Leaf indices: unique and gapless, 0 to the tree's size.
        let all = store.entries(0, usize::MAX).await.unwrap();
        assert!(all.len() as u64 >= size, "the log lost entries");
        for (i, e) in all.iter().enumerate() {
            assert_eq!(
                e.entry.index, i as u64,
                "leaf indices have a gap or a repeat"
            );
        }
        let mut states = BTreeMap::new();
        for head in store.heads().await.unwrap() {
            let entries = store
                .agent_entries(head.agent, 1, usize::MAX)
                .await
                .unwrap();
            // Per-agent sequences: gapless, each once, ending at the head.
            for (i, e) in entries.iter().enumerate() {
                assert_eq!(
                    e.entry.seq,
                    i as u64 + 1,
                    "{}'s stream has a gap",
                    head.agent
                );
            }
            // The nodes keep writing while the checker reads: the stream may have grown
            // since its head was read, never shrunk.
            assert!(
                entries.len() as u64 >= head.seq,
                "{}'s stream lost entries",
                head.agent
            );
            if head.agent == AgentId::NODE {
                continue;
            }
            let mut records: BTreeMap<aura_core::MissionId, Vec<(u64, aura_kernel::Recorded)>> =
                BTreeMap::new();
            for e in &entries {
                if e.entry.kind.as_str().starts_with("mission.") {
                    let r = aura_kernel::Recorded::from_body(e.body().unwrap()).unwrap();
                    records
                        .entry(r.mission)
                        .or_default()
                        .push((e.entry.index, r));
                }
            }
            for (id, recs) in records {
                // A record that replays has no step recorded twice and no outcome without
                // its attempt.
                let mission = aura_kernel::replay(recs.iter().map(|(i, r)| (*i, r)))
                    .unwrap_or_else(|d| panic!("mission {id} does not replay: {d:?}"));
                let state = serde_json::to_value(mission.state).unwrap();
                states.insert(id.to_string(), state.as_str().unwrap().to_owned());
            }
        }
        match store.verify(Box::new(|_| {})).await.unwrap() {
            aura_store::Verification::Ok(_) => {}
            aura_store::Verification::Failed(f) => panic!("the ledger does not verify: {f}"),
        }
        Checked { states }
    })
}

/// Waits until every mission in `ids` is terminal in the database; panics with the
/// others after `within`.
fn wait_terminal(url: &str, ids: &[String], within: Duration) -> Checked {
    let start = Instant::now();
    loop {
        let checked = check(url);
        let open: Vec<_> = ids
            .iter()
            .filter(|id| {
                !matches!(
                    checked.states.get(*id).map(String::as_str),
                    Some("completed" | "failed" | "cancelled")
                )
            })
            .collect();
        if open.is_empty() {
            return checked;
        }
        assert!(
            start.elapsed() < within,
            "missions never finished: {:?}",
            open.iter()
                .map(|id| (id, checked.states.get(*id)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The shards each node holds now, by node id.
fn owners(aura: &Aura) -> BTreeMap<String, usize> {
    let status = aura.run(&["--json", "cluster", "status"]).ok().json();
    let mut held = BTreeMap::new();
    for s in status["shards"].as_array().unwrap() {
        if s["expires_in_ms"].is_u64()
            && let Some(owner) = s["owner"].as_str()
        {
            *held.entry(owner.to_owned()).or_default() += 1;
        }
    }
    held
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node_id(aura: &Aura) -> String {
    aura.run(&["--json", "key", "show"]).ok().json()["node_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_killed_node_s_missions_finish_elsewhere_and_a_paused_node_is_fenced() {
    let Some(cluster) = TestCluster::get() else {
        return;
    };
    let url = runtime().block_on(cluster.database());
    let (a, b, c) = (Aura::new(), Aura::new(), Aura::new());
    a.run(&["init", "--store", &url, "--region", "eu"]).ok();
    for other in [&b, &c] {
        let key = other.run(&["--json", "init", "--store", &url]).ok().json()["public_key"]
            .as_str()
            .unwrap()
            .to_owned();
        a.run(&["cluster", "enroll", &key, "--region", "us"]).ok();
    }
    let script = a.dir.path().join("script.jsonl");
    write_script(&script);
    let (ida, idb, idc) = (node_id(&a), node_id(&b), node_id(&c));

    let node_a = serve(&a, &url, &script);
    let node_b = serve(&b, &url, &script);
    let node_c = serve(&c, &url, &script);
    // The shards spread: each node holds about a third once all three have joined.
    wait_until(
        "the shards spread over three nodes",
        Duration::from_secs(20),
        || {
            let held = owners(&a);
            [&ida, &idb, &idc]
                .iter()
                .all(|n| held.get(*n).is_some_and(|k| (18..=24).contains(k)))
        },
    );
    let status = a.run(&["--json", "cluster", "status"]).ok().json();
    let live = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["heartbeat_ms"].as_u64().is_some_and(|ms| ms < LEASE_MS))
        .count();
    assert_eq!(live, 3, "{status}");

    let mut all = Vec::new();
    all.extend(missions_on(&b, &node_b, 3, 3).1);
    let (c_agents, on_c) = missions_on(&c, &node_c, 3, 3);
    all.extend(on_c);
    // Any node answers for any agent: b forwards a request for c's agent to c.
    let path = format!("/v1/agents/{}", c_agents[0]);
    let (status, served_by) = get_raw(&node_b, &path);
    assert_eq!(status, 200);
    assert_eq!(served_by.as_deref(), Some(idc.as_str()));
    let shown = at(&b, &node_b, &["--json", "agent", "show", &c_agents[0]])
        .ok()
        .json();
    assert_eq!(shown["id"], c_agents[0].as_str(), "{shown}");
    // A's last, so that they are still running when it dies.
    let (_, on_a) = missions_on(&a, &node_a, 3, 4);
    all.extend(on_a.iter().cloned());
    let before = check(&url);
    let running_on_a = on_a
        .iter()
        .filter(|id| {
            !matches!(
                before.states.get(*id).map(String::as_str),
                Some("completed" | "failed" | "cancelled")
            )
        })
        .count();
    assert!(
        running_on_a > 0,
        "a's missions all finished before it was killed"
    );
    signal(&node_a, libc::SIGKILL);
    let killed = Instant::now();
    wait_until("b and c take a's shards", Duration::from_secs(60), || {
        let held = owners(&b);
        !held.contains_key(&ida) && held.values().sum::<usize>() == 64
    });
    let taken = killed.elapsed();
    assert!(
        taken < Duration::from_millis(LEASE_MS * 4),
        "a's shards were taken {taken:?} after its death"
    );
    let checked = wait_terminal(&url, &all, Duration::from_secs(60));
    for id in &all {
        assert_eq!(checked.states[id], "completed", "mission {id}");
    }
    drop(node_a);

    // SIGSTOP: b sleeps past its lease with missions in flight; c takes every shard.
    let (_, more) = missions_on(&b, &node_b, 3, 3);
    let before = check(&url);
    assert!(
        more.iter()
            .any(|id| before.states.get(id).map(String::as_str) != Some("completed")),
        "b's missions all finished before it was paused"
    );
    signal(&node_b, libc::SIGSTOP);
    wait_until("c takes b's shards", Duration::from_secs(60), || {
        let held = owners(&c);
        held.get(&idc) == Some(&64)
    });
    let log = b.dir.path().join("serve.log");
    let logged = std::fs::read_to_string(&log).unwrap().len();
    signal(&node_b, libc::SIGCONT);
    // b notices at once that its leases are gone, and stops its agents.
    wait_until("b says it lost its leases", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap()[logged..].contains("lost the leases")
    });
    let checked = wait_terminal(&url, &more, Duration::from_secs(60));
    for id in &more {
        assert_eq!(checked.states[id], "completed", "mission {id}");
    }
    // b rejoins: the shards spread over b and c again.
    wait_until("b takes its share again", Duration::from_secs(20), || {
        let held = owners(&c);
        held.get(&idb).is_some_and(|k| (28..=36).contains(k))
    });
    drop((node_b, node_c));
    // A clean stop gives the leases back at once.
    let held = owners(&a);
    assert!(held.is_empty(), "leases left after a clean stop: {held:?}");
    check(&url);
    a.run(&["cluster", "verify"]).ok();
}
