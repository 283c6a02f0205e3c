//! The container entrypoint (`deploy/aura-entrypoint.sh`), run as the compose file runs
//! it but as plain processes on a real PostgreSQL: three nodes start on one empty database;
//! the first creates the cluster, the other two publish their keys and wait; the one-shot
//! `enroll` admits them with the first node's cluster key; all three serve, each with the
//! operator API key it created, and refuse callers without one.

#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Aura;

fn entrypoint() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/aura-entrypoint.sh")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The entrypoint with `args`, for the node `name` whose data directory is `home`.
fn entry(home: &Path, shared: &Path, store: &str, name: &str, args: &[&str]) -> Command {
    let mut c = Command::new("sh");
    c.arg(entrypoint())
        .args(args)
        .env("AURA_BIN", support::bin())
        .env("AURA_HOME", home)
        .env("AURA_STORE", store)
        .env("AURA_NAME", name)
        .env("AURA_REGION", if name == "a" { "eu" } else { "us" })
        .env("AURA_ENROLL_DIR", shared.join("enroll"))
        .env("AURA_SECRETS_DIR", shared.join("secrets"))
        .env_remove("AURA_PASSPHRASE")
        .stdin(Stdio::null());
    c
}

/// Kills a node's process group member when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `aura agent list` on `node` answers with `key`.
fn wait_serving(aura: &Aura, node: &str, key: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(secret) = std::fs::read_to_string(key) {
            let mut c = aura.cmd(&["--json", "agent", "list"]);
            c.env("AURA_NODE", node).env("AURA_API_KEY", secret.trim());
            if aura.run_with(c, None).code == 0 {
                return secret.trim().to_owned();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{node} did not serve within a minute"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_entrypoint_starts_three_nodes_that_enroll_and_serve_with_their_own_keys() {
    let Some(store) = support::postgres_url() else {
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    let nodes: Vec<(&str, Aura, String)> = ["a", "b", "c"]
        .into_iter()
        .map(|n| (n, Aura::new(), format!("127.0.0.1:{}", free_port())))
        .collect();
    let serve = |(name, aura, listen): &(&str, Aura, String)| {
        let mut c = entry(&aura.home(), shared.path(), &store, name, &["serve"]);
        c.env("AURA_LISTEN", listen)
            .env("AURA_ADVERTISE", format!("http://{listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Running(c.spawn().unwrap())
    };

    // The first node creates the cluster and serves; the others wait to be enrolled.
    let _a = serve(&nodes[0]);
    let key_of = |n: &str| shared.path().join("secrets").join(format!("{n}.key"));
    let a_url = format!("http://{}", nodes[0].2);
    wait_serving(&nodes[0].1, &a_url, &key_of("a"));
    let mut waiting: Vec<Running> = nodes[1..].iter().map(serve).collect();
    let start = Instant::now();
    while !(shared.path().join("enroll/b.pub").is_file()
        && shared.path().join("enroll/c.pub").is_file())
    {
        assert!(start.elapsed() < Duration::from_secs(60), "keys published");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    for w in &mut waiting {
        assert!(
            w.0.try_wait().unwrap().is_none(),
            "a member waits, not exits"
        );
    }
    let b_url = format!("http://{}", nodes[1].2);
    let mut c = nodes[1].1.cmd(&["--json", "agent", "list"]);
    c.env("AURA_NODE", &b_url);
    assert_ne!(
        nodes[1].1.run_with(c, None).code,
        0,
        "an unenrolled node does not serve"
    );

    // The one-shot enroll, with the first node's data directory (its cluster key).
    let out = entry(&nodes[0].1.home(), shared.path(), &store, "a", &["enroll"])
        .env("AURA_ENROLL_EXPECT", "3")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // All three serve, each with its own operator key; a caller without one is refused.
    for (name, aura, listen) in &nodes {
        let node = format!("http://{listen}");
        wait_serving(aura, &node, &key_of(name));
        let mut c = aura.cmd(&["agent", "list"]);
        c.env("AURA_NODE", &node).env_remove("AURA_API_KEY");
        aura.run_with(c, None).one_line_error(1);
    }
    let listed = nodes[0]
        .1
        .run(&["--json", "cluster", "nodes", "--store", &store])
        .ok()
        .json();
    let regions: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["region"].as_str().unwrap())
        .collect();
    assert_eq!(regions.len(), 3, "{listed}");
    assert_eq!(
        regions.iter().filter(|r| **r == "us").count(),
        2,
        "{listed}"
    );
    // Each node advertises the URL it was given, for the others' redirects.
    let toml = std::fs::read_to_string(nodes[1].1.home().join("aura.toml")).unwrap();
    assert!(
        toml.contains(&format!("advertise = \"http://{}\"", nodes[1].2)),
        "{toml}"
    );
    // A secret file is the operator's only copy: nobody else may read it.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(key_of("b")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "secret mode {mode:o}");
}
