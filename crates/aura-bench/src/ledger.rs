//! The ledger benchmarks (issue: foundation).
//!
//! - Durable append throughput: `writers` tasks append ~300-byte entries concurrently
//!   through group commit; the peer is raw SQLite inserting the same rows, already
//!   encoded, into the same table with the same durability (WAL, synchronous=FULL) and
//!   the same transaction sizes that group commit formed — the ceiling for any design
//!   that stores entries this way.
//! - Single-writer commit latency: one caller, one entry at a time.
//! - Verification throughput over a ledger of `entries` entries (the store, and an
//!   exported bundle).
//! - Inclusion and consistency proofs at that size: generation and verification times.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aura_core::door::{Entropy as _, SeededEntropy, SystemClock};
use aura_core::keystore::Signer;
use aura_core::{AgentId, Timestamp};
use aura_ledger::entry::Kind;
use aura_store::sqlite::Options;
use aura_store::{NewEntry, Seq, SqliteStore, Store as _, Verification};
use rusqlite::params;

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Size of the ledger for the verification and proof benchmarks
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Concurrent writers in the throughput benchmark
    #[arg(long, default_value_t = 64)]
    writers: u64,
    /// Entries each writer puts in one append call (repeat for several rows)
    #[arg(long, default_values_t = [1, 8, 32])]
    batch: Vec<u64>,
    /// Entries appended in each throughput run
    #[arg(long, default_value_t = 400_000)]
    appends: u64,
    /// Where to put the databases [default: a temporary directory]
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

const BODY_LEN: usize = 220; // + 81 bytes of entry header and kind = ~300 bytes encoded

fn entry(agent: AgentId, body: &[u8]) -> NewEntry {
    NewEntry {
        agent,
        seq: Seq::Next,
        kind: Kind::new("note").unwrap_or_else(|_| unreachable!("valid kind")),
        recorded_at: Timestamp::from_secs(1_800_000_000),
        body: body.to_vec(),
    }
}

fn agent(i: u64) -> AgentId {
    let mut b = [0u8; 16];
    b[0] = 1;
    b[8..].copy_from_slice(&i.to_be_bytes());
    AgentId::from_bytes(b)
}

fn open(path: &std::path::Path, signer: &Arc<Signer>) -> anyhow::Result<SqliteStore> {
    Ok(SqliteStore::open(
        path,
        signer.clone(),
        Arc::new(SystemClock),
        Options::default(),
    )?)
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let signer = Arc::new(Signer::ephemeral("node", &SeededEntropy::new(1))?);
    let rng = SeededEntropy::new(2);
    let mut body = vec![0u8; BODY_LEN];
    rng.fill(&mut body);
    let body: Arc<[u8]> = body.into();

    println!("## Ledger (entries of ~300 bytes)\n");
    println!(
        "machine: {} cores; {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );

    // 1. Durable append throughput, and the raw SQLite ceiling at the same commit sizes.
    println!(
        "| durable appends, {} writers | Aura entries/s | raw SQLite entries/s | Aura / raw | commits | entries per commit |",
        args.writers
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (run, &batch) in args.batch.iter().enumerate() {
        let (aura_rate, commits, group) = aura_appends(
            &dir.join(format!("append{run}.db")),
            &signer,
            &args,
            batch,
            &body,
        )
        .await?;
        let per_commit = group.round().max(1.0) as u64;
        let raw_rate = raw_sqlite(
            &dir.join(format!("raw{run}.db")),
            args.appends,
            per_commit,
            &body,
        )?;
        println!(
            "| {batch} per call | {aura_rate:.0} | {raw_rate:.0} | {:.2} | {commits} | {group:.1} |",
            aura_rate / raw_rate
        );
    }
    println!();

    // 2. Single-writer commit latency.
    let store = open(&dir.join("latency.db"), &signer)?;
    let mut samples = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let t = Instant::now();
        store.append(vec![entry(agent(0), &body)]).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    store.close();
    println!("| single writer, one entry per commit | p50 | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| Aura commit latency (fsync included) | {} | {} |\n",
        fmt_duration(percentile(&samples, 50.0)),
        fmt_duration(percentile(&samples, 99.0))
    );

    // 3. Verification at `entries`.
    let path = dir.join("big.db");
    let store = open(&path, &signer)?;
    let t = Instant::now();
    let mut n = 0;
    while n < args.entries {
        let size = 10_000.min(args.entries - n);
        let batch = (0..size)
            .map(|i| entry(agent((n + i) % 1000), &body))
            .collect();
        store.append(batch).await?;
        n += size;
    }
    eprintln!("built {} entries in {:?}", args.entries, t.elapsed());
    store.close();
    let store = SqliteStore::open_read_only(&path, Options::default())?;
    let t = Instant::now();
    let outcome = store.verify(Box::new(|_| {})).await?;
    let verify_time = t.elapsed();
    if let Verification::Failed(f) = outcome {
        anyhow::bail!("the benchmark ledger does not verify: {f}");
    }
    let bundle = dir.join("big.bundle");
    let file = std::fs::File::create(&bundle)?;
    store
        .export(
            Box::new(std::io::BufWriter::with_capacity(1 << 20, file)),
            Box::new(|_| {}),
        )
        .await?;
    let t = Instant::now();
    let reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&bundle)?);
    aura_ledger::bundle::verify_bundle(reader, &signer.public_key())
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    let bundle_time = t.elapsed();
    let bundle_mb = std::fs::metadata(&bundle)?.len() as f64 / 1e6;
    println!(
        "| verify {} entries (chains, tree, every checkpoint signature) | time | entries/s |",
        args.entries
    );
    println!("|---|---:|---:|");
    println!(
        "| the store (SQLite, plus its tiles and heads) | {:.2} s | {:.0} |",
        verify_time.as_secs_f64(),
        args.entries as f64 / verify_time.as_secs_f64()
    );
    println!(
        "| an exported bundle ({bundle_mb:.0} MB) | {:.2} s | {:.0} |\n",
        bundle_time.as_secs_f64(),
        args.entries as f64 / bundle_time.as_secs_f64()
    );

    // 4. Proofs at `entries`.
    let key = signer.public_key();
    let size = store.tree_size().await?;
    let (mut gen_samples, mut check_samples) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let index = rng.u64() % size;
        let t = Instant::now();
        let p = store.inclusion_proof(index, None).await?;
        gen_samples.push(t.elapsed());
        let t = Instant::now();
        p.verify(&key).map_err(|e| anyhow::anyhow!("{e}"))?;
        check_samples.push(t.elapsed());
    }
    gen_samples.sort();
    check_samples.sort();
    let checkpoints = store.checkpoints(0, usize::MAX).await?;
    let (mut cgen, mut ccheck) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        let old = checkpoints[(rng.u64() % checkpoints.len() as u64) as usize]
            .checkpoint
            .tree_size;
        let t = Instant::now();
        let p = store.consistency_proof(old, None).await?;
        cgen.push(t.elapsed());
        let t = Instant::now();
        p.verify(&key).map_err(|e| anyhow::anyhow!("{e}"))?;
        ccheck.push(t.elapsed());
    }
    cgen.sort();
    ccheck.sort();
    println!(
        "| proofs at {size} entries | generate p50 | generate p99 | verify p50 | verify p99 |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| inclusion (entry + path + signed checkpoint) | {} | {} | {} | {} |",
        fmt_duration(percentile(&gen_samples, 50.0)),
        fmt_duration(percentile(&gen_samples, 99.0)),
        fmt_duration(percentile(&check_samples, 50.0)),
        fmt_duration(percentile(&check_samples, 99.0))
    );
    println!(
        "| consistency (two signed checkpoints + path) | {} | {} | {} | {} |",
        fmt_duration(percentile(&cgen, 50.0)),
        fmt_duration(percentile(&cgen, 99.0)),
        fmt_duration(percentile(&ccheck, 50.0)),
        fmt_duration(percentile(&ccheck, 99.0))
    );
    Ok(())
}

/// Aura: `writers` tasks each appending `batch` entries per call. Returns entries/s,
/// commits and entries per commit.
async fn aura_appends(
    path: &std::path::Path,
    signer: &Arc<Signer>,
    args: &Args,
    batch: u64,
    body: &Arc<[u8]>,
) -> anyhow::Result<(f64, u64, f64)> {
    let store = open(path, signer)?;
    let done = Arc::new(AtomicU64::new(0));
    let per_writer = args.appends / args.writers / batch;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let store = store.clone();
        let body = body.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_writer {
                let entries = (0..batch).map(|_| entry(agent(w), &body)).collect();
                store.append(entries).await?;
                done.fetch_add(batch, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed();
    let appended = done.load(Ordering::Relaxed);
    let commits = store.checkpoints(0, usize::MAX).await?.len() as u64;
    store.close();
    Ok((
        appended as f64 / elapsed.as_secs_f64(),
        commits,
        appended as f64 / commits as f64,
    ))
}

/// Raw SQLite: the same encoded rows into the same table and index, WAL and
/// synchronous=FULL, `per_commit` rows per transaction. No hashing, no signing.
fn raw_sqlite(
    path: &std::path::Path,
    rows: u64,
    per_commit: u64,
    body: &[u8],
) -> anyhow::Result<f64> {
    let mut conn = rusqlite::Connection::open(path)?;
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.pragma_update(
        None,
        "wal_autocheckpoint",
        aura_store::sqlite::WAL_AUTOCHECKPOINT_PAGES,
    )?;
    conn.execute_batch(
        "CREATE TABLE entries (idx INTEGER PRIMARY KEY, agent BLOB NOT NULL, seq INTEGER NOT NULL, hash BLOB NOT NULL, raw BLOB NOT NULL);
         CREATE UNIQUE INDEX entries_by_agent ON entries (agent, seq);",
    )?;
    // Pre-encode rows shaped like Aura's (agents spread as in the append benchmark).
    let raw: Vec<u8> = [&[0u8; 81][..], body].concat();
    let hash = [7u8; 32];
    let start = Instant::now();
    let mut idx = 0u64;
    let mut seqs = vec![0u64; 64];
    while idx < rows {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO entries (idx, agent, seq, hash, raw) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for _ in 0..per_commit.min(rows - idx) {
                let a = (idx % 64) as usize;
                seqs[a] += 1;
                stmt.execute(params![
                    idx as i64,
                    agent(a as u64).as_bytes(),
                    seqs[a] as i64,
                    hash,
                    raw
                ])?;
                idx += 1;
            }
        }
        tx.commit()?;
    }
    let elapsed: Duration = start.elapsed();
    Ok(rows as f64 / elapsed.as_secs_f64())
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into())
}
