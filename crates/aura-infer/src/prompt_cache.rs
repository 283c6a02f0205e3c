//! The prompt (prefix) cache: the KV state of recent sequences on one loaded model, so
//! that a request whose prompt begins like an earlier one (a conversation re-sending its
//! whole history every turn) prefills only the tokens after the shared prefix.
//!
//! # Why it cannot change a result
//!
//! A position's keys and values depend only on the token ids at that position and before
//! it: every kernel's summation order is fixed per output value, whatever the number of
//! tokens in the batch, where the chunk starts or the thread count (the chunking tests in
//! `transformer.rs` and `tests/smollm2.rs` check it bit for bit). So the first `n`
//! positions of any cached sequence whose first `n` token ids equal the prompt's are
//! exactly what prefilling those `n` tokens would compute, and the logits, tokens and
//! expert counts that follow are identical with and without the cache. Matching is by
//! whole token ids, never by text; the cache belongs to one [`Model`](crate::Model) (one
//! set of weights, one kernel variant, one dtype), so nothing is ever shared across
//! models, packages or settings that change the computation. The cache is not an input:
//! receipts do not mention it.
//!
//! # Shape
//!
//! A short list of entries, each an immutable `Arc` (the token ids and their KV state),
//! most recently used last, bounded by a budget in bytes (capacity of the KV vectors,
//! counted honestly) and by [`MAX_ENTRIES`]. A lookup scans the list for the longest
//! common prefix (at most the prompt's length minus one: the last prompt token is always
//! computed, which yields its logits without storing any) and copies that prefix out under
//! no lock, so concurrent requests share an entry read-only and never write it. An
//! insertion replaces the entries its sequence extends (a conversation's previous turn),
//! is skipped when an entry already extends it, and evicts the least recently used
//! entries until the budget holds. A list rather than a radix tree: with a few dozen
//! entries of a few thousand tokens the scan costs microseconds next to one forward pass,
//! and copying a prefix out is simpler than sharing tree nodes between live sequences.
//!
//! While a request copies from an entry that is evicted meanwhile, the entry lives until
//! the copy ends, so memory can briefly exceed the budget by the entries being read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::transformer::KvCache;

/// The budget a model's prompt cache gets unless its loader says otherwise: 256 MiB,
/// about 5,700 tokens of SmolLM2-135M's state (46 KiB per token) or 1,000 tokens of a
/// 7B Llama's (256 KiB per token).
pub const DEFAULT_PROMPT_CACHE_BYTES: usize = 256 << 20;

/// The most entries kept, whatever the budget: bounds the lookup's scan.
pub(crate) const MAX_ENTRIES: usize = 64;

/// What a model's prompt cache has done since the model was loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PromptCacheStats {
    /// Lookups that reused at least one token.
    pub hits: u64,
    /// Lookups that reused none (or found the cache disabled).
    pub misses: u64,
    /// Prompt tokens reused rather than computed, summed over hits.
    pub tokens_reused: u64,
    /// Sequences stored.
    pub inserts: u64,
    /// Entries dropped to keep within the budget.
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// The budget in bytes (0: disabled).
    pub budget: u64,
}

/// One cached sequence: its token ids and their KV state (`kv.len == tokens.len()`).
#[derive(Debug)]
struct Entry {
    tokens: Vec<u32>,
    kv: KvCache,
    bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Least recently used first.
    entries: Vec<Arc<Entry>>,
    bytes: usize,
}

/// A model's prompt cache (see the module documentation).
#[derive(Debug)]
pub(crate) struct PromptCache {
    budget: usize,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
    tokens_reused: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
}

/// The number of leading token ids `a` and `b` share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PromptCache {
    /// A cache holding at most `budget` bytes; 0 disables it.
    pub(crate) fn new(budget: usize) -> Self {
        PromptCache {
            budget,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            tokens_reused: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while the lock was held can only have happened between whole updates
        // of the list (nothing in it panics midway), so the list is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The KV state of the longest cached prefix of `prompt`, at most `prompt.len() - 1`
    /// tokens (copied: the caller owns it), or None when nothing matches.
    pub(crate) fn lookup(&self, prompt: &[u32]) -> Option<KvCache> {
        let limit = prompt.len().saturating_sub(1);
        let found = if self.budget == 0 || limit == 0 {
            None
        } else {
            let mut inner = self.lock();
            let best = inner
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (common_prefix(&e.tokens, prompt).min(limit), i))
                // The longest; among equals, the most recently used (the later index).
                .max()
                .filter(|&(n, _)| n > 0);
            best.map(|(n, i)| {
                let entry = inner.entries.remove(i);
                inner.entries.push(entry.clone());
                (entry, n)
            })
        };
        match found {
            Some((entry, n)) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                self.tokens_reused.fetch_add(n as u64, Ordering::Relaxed);
                // Copied outside the lock: other requests look up and insert meanwhile.
                Some(entry.kv.prefix(n))
            }
            None => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Stores the state of the sequence `tokens` (`kv.len == tokens.len()`).
    pub(crate) fn insert(&self, tokens: Vec<u32>, mut kv: KvCache) {
        if self.budget == 0 || tokens.is_empty() || kv.len != tokens.len() {
            return;
        }
        kv.shrink_to_fit();
        let bytes = kv.bytes() + tokens.len() * 4 + std::mem::size_of::<Entry>();
        if bytes > self.budget {
            return;
        }
        let mut inner = self.lock();
        // Already covered: an entry holds this sequence or one extending it.
        if let Some(i) = inner
            .entries
            .iter()
            .position(|e| e.tokens.len() >= tokens.len() && e.tokens.starts_with(&tokens))
        {
            let entry = inner.entries.remove(i);
            inner.entries.push(entry);
            return;
        }
        // Superseded: entries this sequence extends (the same conversation's earlier
        // turns) are dropped, since every prefix of theirs is a prefix of this one.
        let mut freed = 0;
        inner.entries.retain(|e| {
            let keep = !tokens.starts_with(&e.tokens);
            if !keep {
                freed += e.bytes;
            }
            keep
        });
        inner.bytes -= freed;
        while !inner.entries.is_empty()
            && (inner.bytes + bytes > self.budget || inner.entries.len() >= MAX_ENTRIES)
        {
            let evicted = inner.entries.remove(0);
            inner.bytes -= evicted.bytes;
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        inner.bytes += bytes;
        inner.entries.push(Arc::new(Entry { tokens, kv, bytes }));
        self.inserts.fetch_add(1, Ordering::Relaxed);
    }

    /// Drops every entry.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.bytes = 0;
    }

    pub(crate) fn stats(&self) -> PromptCacheStats {
        let (entries, bytes) = {
            let inner = self.lock();
            (inner.entries.len() as u64, inner.bytes as u64)
        };
        PromptCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            tokens_reused: self.tokens_reused.load(Ordering::Relaxed),
            inserts: self.inserts.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries,
            bytes,
            budget: self.budget as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake state for `tokens`: one layer whose "key" at each position is the token id,
    /// so a prefix copy can be checked value by value.
    fn state(tokens: &[u32]) -> KvCache {
        let keys: Vec<f32> = tokens.iter().map(|&t| t as f32).collect();
        KvCache {
            values: vec![keys.iter().map(|k| -k).collect()],
            keys: vec![keys],
            len: tokens.len(),
            expert_tokens: Vec::new(),
            routed: Vec::new(),
        }
    }

    fn cache_with(budget: usize, seqs: &[&[u32]]) -> PromptCache {
        let c = PromptCache::new(budget);
        for s in seqs {
            c.insert(s.to_vec(), state(s));
        }
        c
    }

    #[test]
    fn the_longest_prefix_is_reused_and_never_the_last_prompt_token() {
        let c = cache_with(1 << 20, &[&[1, 2, 3], &[1, 2, 7, 8, 9]]);
        let kv = c.lookup(&[1, 2, 7, 8, 5]).unwrap();
        assert_eq!((kv.len, kv.keys[0].clone()), (4, vec![1.0, 2.0, 7.0, 8.0]));
        assert_eq!(kv.values[0], vec![-1.0, -2.0, -7.0, -8.0]);
        // The whole prompt is cached: all but its last token are reused.
        assert_eq!(c.lookup(&[1, 2, 3]).unwrap().len, 2);
        assert!(c.lookup(&[9, 1, 2]).is_none());
        assert!(
            c.lookup(&[1]).is_none(),
            "a one-token prompt reuses nothing"
        );
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.tokens_reused), (2, 2, 6));
    }

    #[test]
    fn a_growing_conversation_keeps_one_entry() {
        let c = cache_with(1 << 20, &[&[1, 2], &[1, 2, 3, 4], &[1, 2, 3, 4, 5, 6]]);
        assert_eq!(c.stats().entries, 1);
        // A sequence an entry already extends adds nothing.
        c.insert(vec![1, 2, 3], state(&[1, 2, 3]));
        assert_eq!(c.stats().entries, 1);
        assert_eq!(c.lookup(&[1, 2, 3, 4, 5, 6, 7]).unwrap().len, 6);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used_and_zero_disables() {
        let mut probe = state(&[0; 100]);
        probe.shrink_to_fit();
        let size = probe.bytes() + 400 + std::mem::size_of::<Entry>();
        let seq = |k: u32| -> Vec<u32> { (0..100).map(|i| k * 1000 + i).collect() };
        let c = PromptCache::new(2 * size);
        c.insert(seq(1), state(&seq(1)));
        c.insert(seq(2), state(&seq(2)));
        // Touch 1, so 2 is the least recently used when 3 arrives.
        assert!(c.lookup(&seq(1)).is_some());
        c.insert(seq(3), state(&seq(3)));
        let s = c.stats();
        assert_eq!((s.entries, s.evictions), (2, 1));
        assert!(s.bytes <= s.budget);
        assert!(c.lookup(&seq(2)).is_none());
        assert!(c.lookup(&seq(1)).is_some() && c.lookup(&seq(3)).is_some());
        // An entry larger than the whole budget is not stored.
        let small = PromptCache::new(size / 2);
        small.insert(seq(1), state(&seq(1)));
        assert_eq!(small.stats().entries, 0);
        let off = cache_with(0, &[&[1, 2, 3]]);
        assert!(off.lookup(&[1, 2, 3, 4]).is_none());
        assert_eq!(off.stats().entries, 0);
    }

    #[test]
    fn mismatched_state_is_refused() {
        let c = PromptCache::new(1 << 20);
        c.insert(vec![1, 2, 3], state(&[1, 2]));
        c.insert(Vec::new(), state(&[]));
        assert_eq!(c.stats().entries, 0);
    }

    proptest::proptest! {
        /// Whatever the inserts and lookups, a lookup hands back only the prompt's own
        /// leading tokens (never its last), the longest any held entry shares with it, and
        /// the cache stays within its budget and entry count.
        #[test]
        fn lookups_return_the_longest_held_prefix_within_the_budget(
            ops in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(0u32..4, 0..24)),
                1..60,
            ),
            budget in 0usize..6000,
        ) {
            let c = PromptCache::new(budget);
            for (insert, seq) in ops {
                if insert {
                    c.insert(seq.clone(), state(&seq));
                } else {
                    let held: Vec<Vec<u32>> =
                        c.lock().entries.iter().map(|e| e.tokens.clone()).collect();
                    let best = held
                        .iter()
                        .map(|t| common_prefix(t, &seq).min(seq.len().saturating_sub(1)))
                        .max()
                        .unwrap_or(0);
                    let got = c.lookup(&seq).map_or(0, |kv| {
                        let ids: Vec<u32> = kv.keys[0].iter().map(|&k| k as u32).collect();
                        assert_eq!(ids, seq[..kv.len]);
                        kv.len
                    });
                    proptest::prop_assert_eq!(got, best);
                }
                let s = c.stats();
                proptest::prop_assert!(s.bytes <= s.budget && s.entries <= MAX_ENTRIES as u64);
            }
        }
    }

    #[test]
    fn concurrent_lookups_and_inserts_stay_consistent() {
        let c = Arc::new(PromptCache::new(1 << 16));
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let c = c.clone();
                s.spawn(move || {
                    for i in 0..200u32 {
                        let seq: Vec<u32> = (0..(i % 30 + 2)).map(|j| (t + j) % 5).collect();
                        if let Some(kv) = c.lookup(&seq) {
                            // A reused prefix is always the prompt's own tokens.
                            let ids: Vec<u32> = kv.keys[0].iter().map(|&k| k as u32).collect();
                            assert_eq!(ids, seq[..kv.len]);
                        }
                        c.insert(seq.clone(), state(&seq));
                    }
                });
            }
        });
        let s = c.stats();
        assert!(s.bytes <= s.budget && s.entries <= MAX_ENTRIES as u64);
    }
}
