//! `aura-bench memory`: semantic memory's search latency (p50, p99) at 10,000 and 100,000
//! vectors, the HNSW index (aura-memory) against exact search (every vector scored) on the
//! same vectors and queries, with the index's recall@10 against exact search.
//!
//! Two kinds of seeded vectors of 384 dimensions (MiniLM-L6-v2's) are measured: clustered
//! ones shaped like sentence embeddings (200 topics, each vector its topic's centre plus
//! wide noise: the generator of `crates/aura-memory/tests/recall.rs`, whose recall goal is
//! 0.95), and random unit vectors with no structure at all, the hardest case for a graph
//! index, whose recall is a floor rather than what agents see. The two searches alternate
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
    /// Which vectors: `clustered` (shaped like sentence embeddings), `random` (no
    /// structure: the floor of the index's recall), or both (comma-separated)
    #[arg(long, value_delimiter = ',', default_value = "clustered,random")]
    data: Vec<Data>,
}

/// The shape of the benchmark's vectors.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Data {
    /// 200 topic centres, each vector a centre plus noise 1.5 times as large
    Clustered,
    /// Uniform on the sphere
    Random,
}

impl Data {
    fn name(self) -> &'static str {
        match self {
            Data::Clustered => "clustered",
            Data::Random => "random",
        }
    }
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

    fn gauss(&mut self) -> f32 {
        let (u, w) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos()) as f32
    }

    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim).map(|_| self.gauss()).collect();
        aura_memory::hnsw::normalize(&mut v);
        v
    }
}

/// Draws the vectors of one kind: `count` of them, after the topic centres for clustered
/// data (drawn first, from the same generator, so queries share the indexed topics).
struct Draw {
    seeds: Gen,
    data: Data,
    dim: usize,
    centres: Vec<Vec<f32>>,
}

impl Draw {
    fn new(seed: u64, data: Data, dim: usize) -> Draw {
        let mut seeds = Gen(seed);
        let centres = match data {
            Data::Clustered => (0..200)
                .map(|_| (0..dim).map(|_| seeds.gauss()).collect())
                .collect(),
            Data::Random => Vec::new(),
        };
        Draw {
            seeds,
            data,
            dim,
            centres,
        }
    }

    fn next(&mut self) -> Vec<f32> {
        match self.data {
            Data::Random => self.seeds.unit(self.dim),
            Data::Clustered => {
                let c = (self.seeds.next() % self.centres.len() as u64) as usize;
                let mut v: Vec<f32> = (0..self.dim)
                    .map(|i| self.centres[c][i] + 1.5 * self.seeds.gauss())
                    .collect();
                aura_memory::hnsw::normalize(&mut v);
                v
            }
        }
    }
}

/// One size's figures.
struct Row {
    size: usize,
    data: Data,
    build: Duration,
    index: Vec<Duration>,
    exact: Vec<Duration>,
    recall: f64,
}

fn measure(args: &Args, size: usize, data: Data) -> Row {
    let mut g = Draw::new(args.seed ^ size as u64, data, args.dim);
    let options = Options {
        ef_search: args.ef_search,
        ..Options::default()
    };
    let mut index = Hnsw::new(args.dim, options);
    let started = Instant::now();
    for _ in 0..size {
        index.insert(&g.next());
    }
    let build = started.elapsed();
    let queries: Vec<Vec<f32>> = (0..args.queries).map(|_| g.next()).collect();
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
        data,
        build,
        index: on_index,
        exact: on_exact,
        recall,
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<()> {
    if args.sizes.is_empty()
        || args.sizes.contains(&0)
        || args.queries == 0
        || args.rounds == 0
        || args.data.is_empty()
    {
        anyhow::bail!("sizes, queries, rounds and data must each be given, and at least 1");
    }
    println!("## Memory search: HNSW index vs exact search\n");
    println!(
        "{} unit vectors of {} dimensions per size (seed {}), {} queries x {} rounds, \
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
        crate::load_average(),
    );
    println!(
        "| vectors | data | HNSW p50 | HNSW p99 | exact p50 | exact p99 | p50 speed-up | recall@10 | index build |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for &size in &args.sizes {
        for &data in &args.data {
            print_row(&measure(args, size, data));
        }
    }
    Ok(())
}

/// Prints one size and kind of vectors as a table row.
fn print_row(row: &Row) {
    let (i50, i99) = (percentile(&row.index, 50.0), percentile(&row.index, 99.0));
    let (e50, e99) = (percentile(&row.exact, 50.0), percentile(&row.exact, 99.0));
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.1}x | {:.3} | {:.1} s |",
        row.size,
        row.data.name(),
        fmt_duration(i50),
        fmt_duration(i99),
        fmt_duration(e50),
        fmt_duration(e99),
        e50.as_secs_f64() / i50.as_secs_f64().max(1e-9),
        row.recall,
        row.build.as_secs_f64(),
    );
}
