//! Crash safety: `aura ledger append --stream` is killed with SIGKILL at random moments
//! (200 kills across these tests). After every kill, each entry the process had
//! acknowledged is in the ledger with the hash it was acknowledged with, and the whole
//! ledger verifies; the next run (the restart) carries on from there.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::Stdio;
use std::time::Duration;

use aura_core::AgentId;
use aura_core::door::{Entropy as _, SeededEntropy};
use aura_store::sqlite::Options;
use aura_store::{EntryRef, SqliteStore, Store as _, Verification};
use support::Aura;

/// Acknowledged entries: (agent, seq) -> hash.
type Acked = HashMap<(String, u64), String>;

fn agent_id(i: u64) -> String {
    format!("agent_{i:026}")
}

/// Runs one append process for about `run_ms`, kills it, and returns what it acknowledged.
fn run_and_kill(
    a: &Aura,
    rng: &SeededEntropy,
    agents: u64,
    run_ms: u64,
    burst: u64,
) -> Vec<(String, u64, String)> {
    let mut cmd = a.cmd(&["--json", "ledger", "append", "--stream", "--batch", "64"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let seed = rng.u64();
    let writer = std::thread::spawn(move || {
        let rng = SeededEntropy::new(seed);
        let mut n = 0u64;
        loop {
            let size = 1 + rng.u64() % burst;
            let mut chunk = String::new();
            for _ in 0..size {
                let agent = agent_id(rng.u64() % agents);
                chunk.push_str(&format!(
                    "{{\"agent\":\"{agent}\",\"kind\":\"note\",\"body\":{{\"n\":{n}}}}}\n"
                ));
                n += 1;
            }
            if stdin.write_all(chunk.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_micros(500 + rng.u64() % 1500));
        }
    });
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // A line cut short by the kill is not an acknowledgement.
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            acks.push((
                v["agent"].as_str().unwrap().to_owned(),
                v["seq"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_owned(),
            ));
        }
        acks
    });
    std::thread::sleep(Duration::from_millis(run_ms));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acks = reader.join().unwrap();
    writer.join().unwrap();
    acks
}

/// Every entry in `acked` is present with its hash, and the whole ledger verifies.
fn check(a: &Aura, acked: &Acked, rt: &tokio::runtime::Runtime) -> u64 {
    rt.block_on(async {
        let store =
            SqliteStore::open_read_only(a.home().join("ledger.db"), Options::default()).unwrap();
        for ((agent, seq), hash) in acked {
            let agent: AgentId = agent.parse().unwrap();
            let e = store.entry(EntryRef::AgentSeq(agent, *seq)).await.unwrap();
            let e = e.unwrap_or_else(|| panic!("acknowledged entry {agent}:{seq} is lost"));
            assert_eq!(
                &e.hash.to_hex(),
                hash,
                "acknowledged entry {agent}:{seq} changed"
            );
        }
        match store.verify(Box::new(|_| {})).await.unwrap() {
            Verification::Ok(s) => s.entries,
            Verification::Failed(f) => panic!("the ledger does not verify after a crash: {f}"),
        }
    })
}

fn torture(seed: u64, kills: u32, agents: u64, burst: u64) {
    let a = Aura::new();
    a.init();
    let rng = SeededEntropy::new(seed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut acked: Acked = HashMap::new();
    let mut total_acks = 0;
    let mut entries = 0;
    for kill in 0..kills {
        // Kill anywhere from during start-up to well into the appending.
        let run_ms = 2 + rng.u64() % 60;
        let mut new: Acked = HashMap::new();
        for (agent, seq, hash) in run_and_kill(&a, &rng, agents, run_ms, burst) {
            total_acks += 1;
            let key = (agent.clone(), seq);
            assert!(
                !acked.contains_key(&key) && new.insert(key, hash).is_none(),
                "{agent}:{seq} acknowledged twice (kill {kill})"
            );
        }
        // The entries acknowledged before earlier kills were checked then; the ledger's
        // verification covers them again through the hash chains.
        entries = check(&a, &new, &rt);
        acked.extend(new);
        assert!(entries >= acked.len() as u64);
    }
    // And once more, every acknowledgement of the whole run.
    check(&a, &acked, &rt);
    eprintln!("seed {seed}: {kills} kills, {total_acks} acknowledged, {entries} entries");
    // Some runs must have got far enough to acknowledge entries, or the test proves nothing.
    assert!(
        total_acks > kills as usize,
        "only {total_acks} acknowledgements in {kills} runs (seed {seed})"
    );
    // The real binary agrees.
    a.run(&["ledger", "verify"]).ok();
}

#[test]
fn sigkill_one_agent_small_bursts() {
    torture(1, 50, 1, 4);
}

#[test]
fn sigkill_many_agents_small_bursts() {
    torture(2, 50, 16, 4);
}

#[test]
fn sigkill_many_agents_large_bursts() {
    torture(3, 50, 64, 200);
}

#[test]
fn sigkill_few_agents_mixed_bursts() {
    torture(4, 50, 3, 40);
}
