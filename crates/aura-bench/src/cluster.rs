//! `aura-bench cluster`: durable appends to the PostgreSQL store shared by 1, 2 and 3
//! nodes, beside pgbench doing the same inserts in transactions of the same size.
//!
//! The benchmark starts a throwaway PostgreSQL server of its own with PostgreSQL's
//! default durability (fsync and full page writes on; aura-store's `TestCluster::durable`),
//! and for each node count makes a fresh cluster database: the cluster key initialises
//! it, each node's key is enrolled by a `node.joined` entry, and each node opens its own
//! `PgStore` with the shard-lease fence on, holding the leases of its share of the 64
//! shards, as `aura serve` does. `writers` tasks (one per agent, the agents spread over
//! the nodes by the shard each hashes to) append ~300-byte entries through their node's
//! group commit; every append is answered only once durable under a signed checkpoint.
//!
//! The peer is pgbench on a database of its own holding the same `entries` table and the
//! same one-row sequencer: each transaction locks the sequencer row, inserts as many rows
//! of the same size as Aura's commits held on average, and moves the sequencer on, with
//! one client per node (each node has one writer connection). It is the ceiling for any
//! design that stores the log this way; Aura's own costs on top are the fence (a shard
//! row read `FOR SHARE`), the per-agent heads, the signed checkpoint row, the Merkle
//! tiles, and hashing and signing. Aura and pgbench alternate (A, B, A, B) over
//! `rounds`. Latency is per append call for Aura and per transaction for pgbench (from
//! its per-transaction log).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aura_core::door::{SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, Timestamp};
use aura_ledger::entry::Kind;
use aura_store::postgres::testing::{TestCluster, bin_dir};
use aura_store::postgres::{Options, PgStore, SHARDS, shard_of};
use aura_store::{NewEntry, Seq, Store as _};

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Node counts to measure, one row each (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    nodes: Vec<usize>,
    /// Concurrent writers (one agent each), spread over the nodes by shard
    #[arg(long, default_value_t = 64)]
    writers: u64,
    /// Entries appended per run
    #[arg(long, default_value_t = 20_000)]
    appends: u64,
    /// Rounds, each running Aura and then pgbench for every node count
    #[arg(long, default_value_t = 2)]
    rounds: u32,
}

/// Bytes of each entry's body: with the entry header, about 300 bytes encoded, as in
/// `aura-bench ledger`.
const BODY_LEN: usize = 220;
/// Bytes of the peer's `raw` column: the encoded size of Aura's entries.
const RAW_LEN: usize = 301;

fn agent(i: u64) -> AgentId {
    let mut b = [0u8; 16];
    b[0] = 2;
    b[8..].copy_from_slice(&i.to_be_bytes());
    AgentId::from_bytes(b)
}

/// One side's figures for one node count.
struct Side {
    entries_per_s: f64,
    latencies: Vec<Duration>,
    /// Entries per commit (Aura's group commit; the peer is given the same).
    per_commit: f64,
}

/// Aura: `nodes` stores on a fresh cluster database, `writers` agents appending.
async fn aura(server: &TestCluster, args: &Args, nodes: usize) -> anyhow::Result<Side> {
    let url = server.database().await;
    let clock = Arc::new(SystemClock);
    let cluster = Arc::new(Signer::ephemeral("cluster", &SeededEntropy::new(1))?);
    PgStore::init_cluster(&url, cluster.public_key()).await?;
    let mut stores = Vec::new();
    for n in 0..nodes {
        let node = Arc::new(Signer::ephemeral(
            &format!("node-{n}"),
            &SeededEntropy::new(100 + n as u64),
        )?);
        PgStore::enroll(
            &url,
            cluster.clone(),
            node.public_key(),
            "bench",
            clock.clone(),
        )
        .await?;
        let options = Options {
            fenced: true,
            ..Options::default()
        };
        let store = PgStore::open(&url, node, clock.clone(), options).await?;
        // Node n leases every shard whose number is n modulo the node count.
        for shard in (0..SHARDS).filter(|s| *s as usize % nodes == n) {
            if store
                .acquire(shard, Duration::from_secs(3600))
                .await?
                .is_none()
            {
                anyhow::bail!("node {n} could not lease shard {shard}");
            }
        }
        stores.push(store);
    }
    let commits_before = stores[0].checkpoints(0, usize::MAX).await?.len();
    let mut body = vec![0u8; BODY_LEN];
    aura_core::door::Entropy::fill(&SeededEntropy::new(2), &mut body);
    let body: Arc<[u8]> = body.into();
    let per_writer = args.appends / args.writers;
    let kind = Kind::new("note")?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let a = agent(w);
        let store = stores[shard_of(a) as usize % nodes].clone();
        let (body, kind) = (body.clone(), kind.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer as usize);
            for _ in 0..per_writer {
                let t = Instant::now();
                store
                    .append(vec![NewEntry {
                        agent: a,
                        seq: Seq::Next,
                        kind: kind.clone(),
                        recorded_at: Timestamp::from_secs(1_800_000_000),
                        body: body.to_vec(),
                    }])
                    .await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let commits = stores[0].checkpoints(0, usize::MAX).await?.len() - commits_before;
    latencies.sort_unstable();
    let appended = per_writer * args.writers;
    Ok(Side {
        entries_per_s: appended as f64 / elapsed.as_secs_f64(),
        latencies,
        per_commit: appended as f64 / commits.max(1) as f64,
    })
}

/// The peer's schema: Aura's `entries` table and one-row sequencer, nothing else.
const PEER_SCHEMA: &str = "
CREATE TABLE log (id SMALLINT PRIMARY KEY CHECK (id = 1), tree_size BIGINT NOT NULL);
INSERT INTO log VALUES (1, 0);
CREATE TABLE entries (
    idx BIGINT PRIMARY KEY, agent BYTEA NOT NULL, seq BIGINT NOT NULL,
    hash BYTEA NOT NULL, raw BYTEA NOT NULL, pruned BOOLEAN NOT NULL DEFAULT false,
    UNIQUE (agent, seq));
";

/// pgbench: `clients` connections, transactions of `batch` rows, `total` rows in all.
async fn pgbench(
    server: &TestCluster,
    bin: &Path,
    work: &Path,
    clients: usize,
    batch: u64,
    total: u64,
) -> anyhow::Result<Side> {
    let url = server.database().await;
    let db = url
        .split('?')
        .next()
        .and_then(|u| u.rsplit_once('/'))
        .map(|(_, db)| db)
        .ok_or_else(|| anyhow::anyhow!("no database name in {url}"))?
        .to_owned();
    let host = server.socket_dir().display().to_string();
    let psql = Command::new(bin.join("psql"))
        .args([
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            &host,
            "-U",
            "postgres",
            "-d",
            &db,
        ])
        .args(["-c", PEER_SCHEMA])
        .output()?;
    if !psql.status.success() {
        anyhow::bail!(
            "psql could not make the peer's tables: {}",
            String::from_utf8_lossy(&psql.stderr).trim()
        );
    }
    let script = work.join("append.sql");
    std::fs::write(
        &script,
        format!(
            "BEGIN;\n\
             SELECT tree_size AS size FROM log WHERE id = 1 FOR UPDATE \\gset\n\
             INSERT INTO entries (idx, agent, seq, hash, raw) \
             SELECT :size + i, decode(lpad(to_hex((:size + i) % {writers}), 32, '0'), 'hex'), :size + i, \
             decode(repeat('07', 32), 'hex'), decode(repeat('ab', {RAW_LEN}), 'hex') \
             FROM generate_series(1, {batch}) AS i;\n\
             UPDATE log SET tree_size = :size + {batch} WHERE id = 1;\n\
             COMMIT;\n",
            writers = 64,
        ),
    )?;
    let logs = work.join(format!("pgbench-{clients}"));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs)?;
    let per_client = (total / batch / clients as u64).max(1);
    let start = Instant::now();
    let out = Command::new(bin.join("pgbench"))
        .current_dir(&logs)
        .args(["-n", "-h", &host, "-U", "postgres", "-f"])
        .arg(&script)
        .args(["-c", &clients.to_string(), "-j", &clients.to_string()])
        .args(["-t", &per_client.to_string(), "-l", &db])
        .output()?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        anyhow::bail!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // pgbench's own figure excludes its connection set-up; prefer it when printed.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tps = stdout
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|t| t.parse::<f64>().ok())
        .unwrap_or(per_client as f64 * clients as f64 / elapsed.as_secs_f64());
    // Per-transaction log lines: client, transaction number, latency in µs, ...
    let mut latencies = Vec::new();
    for file in std::fs::read_dir(&logs)? {
        for line in std::fs::read_to_string(file?.path())?.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                latencies.push(Duration::from_micros(us));
            }
        }
    }
    latencies.sort_unstable();
    Ok(Side {
        entries_per_s: tps * batch as f64,
        latencies,
        per_commit: batch as f64,
    })
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.nodes.is_empty()
        || args.nodes.iter().any(|n| *n == 0 || *n > SHARDS as usize)
        || args.writers == 0
        || args.appends < args.writers
        || args.rounds == 0
    {
        anyhow::bail!(
            "nodes must each be 1 to {SHARDS}, writers and rounds at least 1, and appends at least writers"
        );
    }
    let Some(bin) = bin_dir() else {
        anyhow::bail!(
            "PostgreSQL's binaries are not installed (looked in AURA_PG_BIN and /usr/lib/postgresql/*/bin); install Debian's postgresql package"
        );
    };
    let Some(server) = TestCluster::durable() else {
        anyhow::bail!("the PostgreSQL server did not start");
    };
    let work = tempfile::tempdir()?;
    // pgbench's per-transaction logs land in the work directory; the server's user must
    // not need to reach it (pgbench runs as this user, over the socket).
    let work_dir: PathBuf = work.path().to_owned();

    println!("## Cluster: durable appends on PostgreSQL, 1 to 3 nodes, vs pgbench\n");
    println!(
        "{} writers, {} entries of ~300 bytes per run, {} rounds (Aura then pgbench, per node count); \
         PostgreSQL {} with its default durability; load average at start {}\n",
        args.writers,
        args.appends,
        args.rounds,
        bin.parent()
            .and_then(|p| p.file_name())
            .map_or_else(|| "?".into(), |v| v.to_string_lossy().into_owned()),
        crate::load_average(),
    );
    println!(
        "| nodes | round | Aura entries/s | pgbench entries/s | Aura / pgbench | entries per commit | Aura append p50 | p99 | pgbench tx p50 | p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for round in 1..=args.rounds {
        for &nodes in &args.nodes {
            let a = aura(&server, &args, nodes).await?;
            let batch = a.per_commit.round().max(1.0) as u64;
            let b = pgbench(&server, &bin, &work_dir, nodes, batch, args.appends).await?;
            println!(
                "| {nodes} | {round} | {:.0} | {:.0} | {:.2} | {:.1} | {} | {} | {} | {} |",
                a.entries_per_s,
                b.entries_per_s,
                a.entries_per_s / b.entries_per_s,
                a.per_commit,
                fmt_duration(percentile(&a.latencies, 50.0)),
                fmt_duration(percentile(&a.latencies, 99.0)),
                fmt_duration(percentile(&b.latencies, 50.0)),
                fmt_duration(percentile(&b.latencies, 99.0)),
            );
        }
    }
    println!("\nload average at the end: {}", crate::load_average());
    Ok(())
}
