//! A hierarchical navigable small world graph (Malkov and Yashunin, 2016) over unit
//! vectors, scored by cosine similarity, deterministic given the insertion order: a node's
//! level comes from a hash of its position (no random generator), and every heap orders
//! ties by node number, so the same vectors inserted in the same order give the same graph
//! and the same answers on every machine and thread count.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// How the graph is built and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Links per node above level 0 (twice as many at level 0).
    pub m: usize,
    /// Candidates kept while inserting.
    pub ef_construction: usize,
    /// Candidates kept while searching (at least `k`).
    pub ef_search: usize,
    /// Mixed into the level hash; changing it changes the graph.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
            seed: 0x6175_7261_6d65_6d30,
        }
    }
}

/// A scored node: ordered by distance, then by node number, so that ties never depend on
/// the heap's history.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Near {
    dist: f32,
    node: u32,
}

impl Eq for Near {}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.node.cmp(&other.node))
    }
}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The index: vectors (normalised on insertion) and their links, level by level.
#[derive(Debug, Clone)]
pub struct Hnsw {
    dim: usize,
    options: Options,
    vectors: Vec<f32>,
    /// `links[node][level]`: the node's neighbours at that level.
    links: Vec<Vec<Vec<u32>>>,
    removed: Vec<bool>,
    entry: Option<u32>,
}

/// Scales `v` to unit length (a zero vector stays zero and matches nothing).
pub fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Sixteen running sums in a fixed order, folded in a fixed tree: the compiler keeps
    // them in four independent SIMD registers (one dependent add chain would wait on the
    // adder's latency every step), and the result is the same on every machine because
    // the order never depends on the CPU (Rust never fuses the multiply and the add).
    const LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut s = [0.0f32; LANES];
    let mut a_chunks = a.chunks_exact(LANES);
    let mut b_chunks = b.chunks_exact(LANES);
    for (x, y) in (&mut a_chunks).zip(&mut b_chunks) {
        for j in 0..LANES {
            s[j] += x[j] * y[j];
        }
    }
    let mut tail = 0.0;
    for (x, y) in a_chunks.remainder().iter().zip(b_chunks.remainder()) {
        tail += x * y;
    }
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            s[j] += s[j + width];
        }
        width /= 2;
    }
    s[0] + tail
}

/// SplitMix64: the level hash.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Hnsw {
    pub fn new(dim: usize, options: Options) -> Hnsw {
        Hnsw {
            dim,
            options: Options {
                m: options.m.max(2),
                ef_construction: options.ef_construction.max(1),
                ef_search: options.ef_search.max(1),
                seed: options.seed,
            },
            vectors: Vec::new(),
            links: Vec::new(),
            removed: Vec::new(),
            entry: None,
        }
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Nodes inserted, removed ones included.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    fn vector(&self, node: u32) -> &[f32] {
        let i = node as usize * self.dim;
        &self.vectors[i..i + self.dim]
    }

    fn dist(&self, q: &[f32], node: u32) -> f32 {
        1.0 - dot(q, self.vector(node))
    }

    fn level_of(&self, node: u32) -> usize {
        let u = (mix(self.options.seed ^ u64::from(node)) >> 11) as f64 / (1u64 << 53) as f64;
        let ml = 1.0 / (self.options.m as f64).ln();
        // 1 - u lies in (0, 1], so its logarithm is finite.
        ((-(1.0 - u).ln()) * ml).floor().min(16.0) as usize
    }

    fn max_links(&self, level: usize) -> usize {
        if level == 0 {
            self.options.m * 2
        } else {
            self.options.m
        }
    }

    /// Inserts `vector` (of the index's dimension; normalised here) and returns its node
    /// number, which is its position in insertion order.
    pub fn insert(&mut self, vector: &[f32]) -> u32 {
        let mut v = vector.to_vec();
        v.resize(self.dim, 0.0);
        normalize(&mut v);
        let node = self.links.len() as u32;
        let level = self.level_of(node);
        self.vectors.extend_from_slice(&v);
        self.links.push(vec![Vec::new(); level + 1]);
        self.removed.push(false);
        let Some(entry) = self.entry else {
            self.entry = Some(node);
            return node;
        };
        let top = self.links[entry as usize].len() - 1;
        let mut eps = vec![Near {
            dist: self.dist(&v, entry),
            node: entry,
        }];
        for lc in (level + 1..=top).rev() {
            eps = self.search_layer(&v, &eps, 1, lc);
        }
        for lc in (0..=level.min(top)).rev() {
            let found = self.search_layer(&v, &eps, self.options.ef_construction, lc);
            let chosen = self.select(&found, self.options.m);
            self.links[node as usize][lc] = chosen.iter().map(|n| n.node).collect();
            for n in &chosen {
                self.link(n.node, node, lc);
            }
            eps = found;
        }
        if level > top {
            self.entry = Some(node);
        }
        node
    }

    /// Adds `to` to `from`'s links at `level`, pruning them with the heuristic when full.
    fn link(&mut self, from: u32, to: u32, level: usize) {
        let max = self.max_links(level);
        let mut list = std::mem::take(&mut self.links[from as usize][level]);
        list.push(to);
        if list.len() > max {
            let base = self.vector(from).to_vec();
            let mut scored: Vec<Near> = list
                .iter()
                .map(|&n| Near {
                    dist: self.dist(&base, n),
                    node: n,
                })
                .collect();
            scored.sort();
            list = self.select(&scored, max).iter().map(|n| n.node).collect();
        }
        self.links[from as usize][level] = list;
    }

    /// The neighbour-selection heuristic: closest first, keeping a candidate only if it is
    /// closer to the base than to every neighbour kept so far (which keeps links spread
    /// out), then filling up with the closest of those skipped. `sorted` is nearest first.
    fn select(&self, sorted: &[Near], m: usize) -> Vec<Near> {
        let mut kept: Vec<Near> = Vec::with_capacity(m);
        let mut skipped = Vec::new();
        for c in sorted {
            if kept.len() >= m {
                break;
            }
            let cv = self.vector(c.node);
            if kept
                .iter()
                .all(|k| 1.0 - dot(cv, self.vector(k.node)) > c.dist)
            {
                kept.push(*c);
            } else {
                skipped.push(*c);
            }
        }
        for c in skipped {
            if kept.len() >= m {
                break;
            }
            kept.push(c);
        }
        kept
    }

    /// The `ef` nearest nodes to `q` reachable at `level` from `eps`, nearest first.
    fn search_layer(&self, q: &[f32], eps: &[Near], ef: usize, level: usize) -> Vec<Near> {
        let mut visited = vec![false; self.links.len()];
        // Candidates: nearest first (a min-heap through Reverse); results: farthest first.
        let mut candidates = BinaryHeap::new();
        let mut results: BinaryHeap<Near> = BinaryHeap::new();
        for e in eps {
            if !std::mem::replace(&mut visited[e.node as usize], true) {
                candidates.push(std::cmp::Reverse(*e));
                results.push(*e);
            }
        }
        while results.len() > ef {
            results.pop();
        }
        while let Some(std::cmp::Reverse(c)) = candidates.pop() {
            if results.peek().is_some_and(|f| c.dist > f.dist) && results.len() >= ef {
                break;
            }
            let Some(links) = self.links[c.node as usize].get(level) else {
                continue;
            };
            for &n in links {
                if std::mem::replace(&mut visited[n as usize], true) {
                    continue;
                }
                let near = Near {
                    dist: self.dist(q, n),
                    node: n,
                };
                if results.len() < ef || results.peek().is_some_and(|f| near < *f) {
                    candidates.push(std::cmp::Reverse(near));
                    results.push(near);
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        results.into_sorted_vec()
    }

    /// Marks a node removed: it is never returned again (the graph still routes through it,
    /// so the answers for others do not change).
    pub fn remove(&mut self, node: u32) {
        if let Some(r) = self.removed.get_mut(node as usize) {
            *r = true;
        }
    }

    /// The `k` nodes most similar to `query`, most similar first, with their cosine
    /// similarity.
    pub fn search(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        if k == 0 {
            return Vec::new();
        }
        let mut q = query.to_vec();
        q.resize(self.dim, 0.0);
        normalize(&mut q);
        let top = self.links[entry as usize].len() - 1;
        let mut eps = vec![Near {
            dist: self.dist(&q, entry),
            node: entry,
        }];
        for lc in (1..=top).rev() {
            eps = self.search_layer(&q, &eps, 1, lc);
        }
        // Removed nodes take places in the candidate list, so it is widened by how many
        // there are (up to a bound) to still find `k` live ones.
        let removed = self.removed.iter().filter(|r| **r).count();
        let ef = self.options.ef_search.max(k) + removed.min(self.options.ef_search * 4);
        self.search_layer(&q, &eps, ef, 0)
            .into_iter()
            .filter(|n| !self.removed[n.node as usize])
            .take(k)
            .map(|n| (n.node, 1.0 - n.dist))
            .collect()
    }

    /// The exact answer, by scoring every live node: what the graph is measured against.
    pub fn exact(&self, query: &[f32], k: usize) -> Vec<(u32, f32)> {
        let mut q = query.to_vec();
        q.resize(self.dim, 0.0);
        normalize(&mut q);
        let mut all: Vec<Near> = (0..self.links.len() as u32)
            .filter(|n| !self.removed[*n as usize])
            .map(|n| Near {
                dist: self.dist(&q, n),
                node: n,
            })
            .collect();
        // Only the k nearest need ordering: select them first (linear), then sort those.
        // `Near`'s order is total (distance, then node), so the answer is the full sort's.
        if k < all.len() {
            all.select_nth_unstable(k);
            all.truncate(k);
        }
        all.sort();
        all.into_iter()
            .take(k)
            .map(|n| (n.node, 1.0 - n.dist))
            .collect()
    }
}
