//! Nodes sharing one PostgreSQL store, through the real binaries: `aura init --store`
//! creates the cluster on the first node and leaves the second waiting for enrollment;
//! `aura cluster enroll` admits it; both run `aura serve` on the one database at once;
//! the cluster's export verifies with the cluster key alone.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use support::{Aura, Node, serve};

fn at(aura: &Aura, node: &Node, args: &[&str]) -> support::Out {
    let mut c = aura.cmd(args);
    c.env("AURA_NODE", &node.url);
    aura.run_with(c, None)
}

#[test]
fn two_nodes_join_one_cluster_and_its_export_verifies_with_the_cluster_key() {
    let Some(url) = support::postgres_url() else {
        return;
    };
    let (a, b) = (Aura::new(), Aura::new());
    let first = a
        .run(&["--json", "init", "--store", &url, "--region", "eu"])
        .ok()
        .json();
    assert_eq!(first["cluster"]["created"], true, "{first}");
    assert_eq!(first["cluster"]["enrolled"], true, "{first}");
    let cluster_key = first["cluster"]["cluster_key"].as_str().unwrap().to_owned();
    let second = b.run(&["--json", "init", "--store", &url]).ok().json();
    assert_eq!(second["cluster"]["created"], false, "{second}");
    assert_eq!(second["cluster"]["enrolled"], false, "{second}");
    assert_eq!(second["cluster"]["cluster_key"], cluster_key.as_str());

    // Not enrolled yet: the node refuses to start, saying what to do.
    let refused = b
        .run(&["serve", "--listen", "127.0.0.1:0"])
        .one_line_error(1);
    assert!(
        refused.stderr.contains("not enrolled"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("aura cluster enroll"),
        "{}",
        refused.stderr
    );

    let b_key = second["public_key"].as_str().unwrap();
    a.run(&["cluster", "enroll", b_key, "--region", "us"]).ok();
    // Enrolling twice changes nothing.
    a.run(&["cluster", "enroll", b_key]).ok();
    // Only the holder of the cluster key enrolls.
    b.run(&["cluster", "enroll", b_key]).one_line_error(1);

    let ((node_a, _), (node_b, _)) = (serve(&a), serve(&b));
    std::thread::scope(|s| {
        for (aura, node, prefix) in [(&a, &node_a, "a"), (&b, &node_b, "b")] {
            s.spawn(move || {
                for i in 0..4 {
                    at(
                        aura,
                        node,
                        &["--json", "agent", "create", &format!("{prefix}{i}")],
                    )
                    .ok();
                }
            });
        }
    });
    drop((node_a, node_b));

    let nodes = a.run(&["--json", "cluster", "nodes"]).ok().json();
    let regions: Vec<&str> = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["eu", "us"]);
    b.run(&["cluster", "verify"]).ok();
    // The SQLite ledger commands say where the ledger is instead of making an empty one.
    let local = a.run(&["ledger", "verify"]).one_line_error(1);
    assert!(local.stderr.contains("aura cluster"), "{}", local.stderr);
    assert!(!a.home().join("ledger.db").exists());
    let status = b.run(&["--json", "cluster", "status"]).ok().json();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 2, "{status}");
    assert_eq!(status["shards"].as_array().unwrap().len(), 64, "{status}");
    assert_eq!(status["cluster_key"], cluster_key.as_str());
    let human = b.run(&["cluster", "status"]).ok().stdout;
    assert!(
        human.contains("region eu") && human.contains("region us"),
        "{human}"
    );
    let file = a.dir.path().join("cluster.bundle");
    let exported = a
        .run(&["--json", "cluster", "export", "-o", file.to_str().unwrap()])
        .ok()
        .json();
    assert_eq!(exported["cluster_key"], cluster_key.as_str());
    assert!(exported["entries"].as_u64().unwrap() >= 2 + 8, "{exported}");
    let file = file.to_str().unwrap();
    Aura::new()
        .run(&[
            "ledger",
            "verify",
            "--bundle",
            file,
            "--public-key",
            &cluster_key,
        ])
        .ok();
    // A node's own key is not the log's trust root.
    let a_key = first["public_key"].as_str().unwrap();
    Aura::new()
        .run(&["ledger", "verify", "--bundle", file, "--public-key", a_key])
        .one_line_error(3);
}
