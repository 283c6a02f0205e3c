//! `aura-bench memory`: semantic memory's search latency (p50, p99) at 10,000 and 100,000
//! vectors, the HNSW index (aura-memory) against exact search (every vector scored) on the
//! same vectors and queries, with the index's recall@10 against exact search.
//!
//! The vectors are seeded random unit vectors of 384 dimensions (MiniLM-L6-v2's): no
//! structure at all, the hardest case for a graph index (real embeddings are clustered;
//! `crates/aura-memory/tests/recall.rs` measures both kinds). The two searches alternate
//! round by round (index, exact, index, exact...), so a change in the machine's load falls
//! on both. Each search is timed alone, single-threaded, as one `memory.search` runs.

use std::time::{Duration, Instant};

use aura_memory::{Hnsw, Options};

use crate::{fmt_duration, percentile};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Vectors in the index, one measurement per size (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sizes: Vec<usize>,
    /// Queries per round (seeded, apart from the indexed vectors)
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Rounds: each runs every query on the index and then on exact search
    #[arg(long, default_value_t = 4)]
    rounds: u32,
    /// Dimensions of each vector
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Candidates kept while searching the index (the recall/latency lever)
    #[arg(long, default_value_t = Options::default().ef_search)]
    ef_search: usize,
    /// The seed of the vectors
    #[arg(long, default_value_t = 17)]
    seed: u64,
}

/// SplitMix64 with Gaussian draws (Box-Muller): unit vectors uniform on the sphere.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                let (u, w) = (self.uniform(), self.uniform());
                ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos()) as f32
            })
            .collect();
        aura_memory::hnsw::normalize(&mut v);
        v
    }
}

/// One size's figures.
struct Row {
    size: usize,
    build: Duration,
    index: Vec<Duration>,
    exact: Vec<Duration>,
    recall: f64,
}

fn measure(args: &Args, size: usize) -> Row {
    let mut g = Gen(args.seed ^ size as u64);
    let options = Options {
        ef_search: args.ef_search,
        ..Options::default()
    };
    let mut index = Hnsw::new(args.dim, options);
    let started = Instant::now();
    for _ in 0..size {
        index.insert(&g.unit(args.dim));
    }
    let build = started.elapsed();
    let queries: Vec<Vec<f32>> = (0..args.queries).map(|_| g.unit(args.dim)).collect();
    let mut found = 0usize;
    for q in &queries {
        let exact: Vec<u32> = index.exact(q, 10).into_iter().map(|h| h.0).collect();
        found += index
            .search(q, 10)
            .into_iter()
            .filter(|h| exact.contains(&h.0))
            .count();
    }
    let recall = found as f64 / (queries.len() * 10).max(1) as f64;
    let (mut on_index, mut on_exact) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds {
        for q in &queries {
            let t = Instant::now();
            std::hint::black_box(index.search(q, 10));
            on_index.push(t.elapsed());
        }
        for q in &queries {
            let t = Instant::now();
            std::hint::black_box(index.exact(q, 10));
            on_exact.push(t.elapsed());
        }
    }
    on_index.sort_unstable();
    on_exact.sort_unstable();
    Row {
        size,
        build,
        index: on_index,
        exact: on_exact,
        recall,
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.sizes.is_empty() || args.sizes.contains(&0) || args.queries == 0 || args.rounds == 0 {
        anyhow::bail!("sizes, queries and rounds must be at least 1");
    }
    println!("## Memory search: HNSW index vs exact search\n");
    println!(
        "{} random unit vectors of {} dimensions per size (seed {}), {} queries x {} rounds, \
         k = 10, ef_search {}; one thread; load average at start {}\n",
        args.sizes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        args.dim,
        args.seed,
        args.queries,
        args.rounds,
        args.ef_search,
        std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into()),
    );
    println!(
        "| vectors | HNSW p50 | HNSW p99 | exact p50 | exact p99 | p50 speed-up | recall@10 | index build |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &size in &args.sizes {
        let row = measure(args, size);
        let (i50, i99) = (percentile(&row.index, 50.0), percentile(&row.index, 99.0));
        let (e50, e99) = (percentile(&row.exact, 50.0), percentile(&row.exact, 99.0));
        println!(
            "| {} | {} | {} | {} | {} | {:.1}x | {:.3} | {:.1} s |",
            row.size,
            fmt_duration(i50),
            fmt_duration(i99),
            fmt_duration(e50),
            fmt_duration(e99),
            e50.as_secs_f64() / i50.as_secs_f64().max(1e-9),
            row.recall,
            row.build.as_secs_f64(),
        );
    }
    Ok(())
}
