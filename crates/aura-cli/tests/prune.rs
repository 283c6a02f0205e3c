//! `aura mission prune` against `aura serve`: an old finished mission loses its bulky
//! record but stays listed, marked pruned; the ledger still verifies, here and as an
//! export; replaying it says it was pruned; bad ages are usage errors.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::{Aura, Node, start};

/// A node with the demo's scripted reasoner.
fn serve(aura: &Aura) -> Node {
    aura.init();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../demo/summarise.jsonl");
    let config = format!(
        "[reasoners.demo]\nprovider = \"scripted\"\npath = \"{}\"\n",
        script.display()
    );
    start(aura, &config, "demo")
}

fn at(aura: &Aura, node: &Node, args: &[&str]) -> support::Out {
    let mut c = aura.cmd(args);
    c.env("AURA_NODE", &node.url);
    aura.run_with(c, None)
}

fn wait_for(aura: &Aura, node: &Node, id: &str, state: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let m = at(aura, node, &["--json", "mission", "show", id])
            .ok()
            .json();
        if m["state"] == state {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "mission {id} never reached {state}: {m}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The demo mission, escalated on its delete and then cancelled: a finished mission with
/// a record of turns, effects and a compensation.
fn cancelled_mission(aura: &Aura, node: &Node) -> String {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../demo/workspace");
    let ws = aura.home().join("workspaces/default/project");
    std::fs::create_dir_all(&ws).unwrap();
    for name in ["plan.md", "notes.md", "build.log"] {
        std::fs::copy(demo.join(name), ws.join(name)).unwrap();
    }
    let agent = at(
        aura,
        node,
        &["--json", "agent", "create", "w", "--level", "L2"],
    )
    .ok()
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut args = vec![
        "--json",
        "mission",
        "submit",
        "--agent",
        &agent,
        "--objective",
        "summarise and clean up",
        "--timeout",
        "600",
        "--workspace",
        "project",
    ];
    for tool in [
        "fs.list",
        "fs.read",
        "fs.write",
        "fs.delete",
        "mission.finish",
    ] {
        args.extend(["--tool", tool]);
    }
    let id = at(aura, node, &args).ok().json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for(aura, node, &id, "escalated");
    at(aura, node, &["mission", "cancel", &id]).ok();
    wait_for(aura, node, &id, "cancelled");
    id
}

#[test]
fn an_old_mission_is_pruned_stays_listed_and_the_ledger_still_verifies() {
    let aura = Aura::new();
    let node = serve(&aura);
    let id = cancelled_mission(&aura, &node);

    // A dry run names it and changes nothing.
    let dry = at(
        &aura,
        &node,
        &[
            "--json",
            "mission",
            "prune",
            "--older-than",
            "0s",
            "--dry-run",
        ],
    )
    .ok()
    .json();
    assert_eq!(dry["missions"], serde_json::json!([id]), "{dry}");
    assert!(dry["entries"].as_u64().unwrap() > 0, "{dry}");
    let shown = at(&aura, &node, &["--json", "mission", "show", &id])
        .ok()
        .json();
    assert_eq!(shown["pruned"], false);

    // A week's age spares it.
    let spared = at(&aura, &node, &["mission", "prune", "--older-than", "1w"]).ok();
    assert!(
        spared.stdout.starts_with("nothing to prune"),
        "{}",
        spared.stdout
    );

    let done = at(&aura, &node, &["mission", "prune", "--older-than", "0s"]).ok();
    assert!(
        done.stdout.starts_with("pruned 1 mission: "),
        "{}",
        done.stdout
    );
    assert!(done.stdout.contains(&id), "{}", done.stdout);
    let shown = at(&aura, &node, &["--json", "mission", "show", &id])
        .ok()
        .json();
    assert_eq!(
        (&shown["pruned"], &shown["state"]),
        (&serde_json::json!(true), &serde_json::json!("cancelled"))
    );

    // Pruning again is a no-op.
    let again = at(
        &aura,
        &node,
        &["--json", "mission", "prune", "--older-than", "0s"],
    )
    .ok()
    .json();
    assert_eq!(again["missions"], serde_json::json!([]));

    let replay = at(&aura, &node, &["replay", &id]).one_line_error(1);
    assert!(replay.stderr.contains("was pruned"), "{}", replay.stderr);

    let verified = at(&aura, &node, &["ledger", "verify"]).ok();
    assert!(verified.stdout.contains("pruned)"), "{}", verified.stdout);
    let bundle = aura.home().join("export.bundle");
    at(
        &aura,
        &node,
        &["ledger", "export", "-o", bundle.to_str().unwrap()],
    )
    .ok();
    let offline = at(
        &aura,
        &node,
        &["ledger", "verify", "--bundle", bundle.to_str().unwrap()],
    )
    .ok();
    assert!(offline.stdout.contains("pruned)"), "{}", offline.stdout);
}

#[test]
fn bad_ages_are_usage_errors() {
    let aura = Aura::new();
    aura.init();
    for age in ["30", "30x", "d", "-1d", "99999999999999999999w", "1.5h"] {
        // `=` so that `-1d` reaches the age parser rather than clap's flag parsing.
        let out = aura
            .run(&["mission", "prune", &format!("--older-than={age}")])
            .one_line_error(2);
        assert!(
            out.stderr.contains("not an age") || out.stderr.contains("too long an age"),
            "{age}: {}",
            out.stderr
        );
    }
}
