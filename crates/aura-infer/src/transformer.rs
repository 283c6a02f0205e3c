//! The decoder-only transformer of the Llama family (Llama, Mistral, Qwen2, SmolLM2) and
//! its Mixtral-style mixture-of-experts variant, on the engine's own deterministic
//! kernels, with a per-request KV cache.
//!
//! Every value a token's forward pass produces depends only on that token, its position
//! and the cache before it: prompts may be fed in chunks of any size and requests run
//! beside each other without changing a bit (the determinism tests check this).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels;
use crate::matrix::{Compute, Matrix};

/// Hyper-parameters of a Llama-family model, read from GGUF metadata or config.json.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) architecture: String,
    pub(crate) n_layer: usize,
    pub(crate) dim: usize,
    pub(crate) n_head: usize,
    pub(crate) n_kv_head: usize,
    pub(crate) head_dim: usize,
    pub(crate) ffn_dim: usize,
    pub(crate) vocab: usize,
    pub(crate) eps: f32,
    pub(crate) rope_theta: f32,
    pub(crate) context_length: usize,
    pub(crate) n_expert: usize,
    pub(crate) n_expert_used: usize,
}

impl Config {
    /// Rejects hyper-parameters that are inconsistent or absurd before any allocation is
    /// sized from them (model files are untrusted).
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::model(m));
        if self.n_layer == 0 || self.n_layer > 1024 {
            return bad(format!("block count {} out of range", self.n_layer));
        }
        if self.n_head == 0 || self.n_kv_head == 0 || !self.n_head.is_multiple_of(self.n_kv_head) {
            return bad(format!(
                "{} heads cannot share {} kv heads",
                self.n_head, self.n_kv_head
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) || self.head_dim > 1024 {
            return bad(format!("head dimension {} out of range", self.head_dim));
        }
        if self.dim == 0 || self.dim > 65536 || self.ffn_dim == 0 || self.ffn_dim > 1 << 20 {
            return bad(format!(
                "dimensions {}/{} out of range",
                self.dim, self.ffn_dim
            ));
        }
        if self.vocab == 0 || self.vocab > 1 << 24 {
            return bad(format!("vocabulary of {} out of range", self.vocab));
        }
        if self.context_length == 0 {
            return bad("context length 0".into());
        }
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(self.eps) || !positive(self.rope_theta) {
            return bad("norm epsilon or rope base not a positive number".into());
        }
        if self.n_expert > 0
            && (self.n_expert_used == 0
                || self.n_expert_used > self.n_expert
                || self.n_expert > 1024)
        {
            return bad(format!(
                "{} of {} experts per token",
                self.n_expert_used, self.n_expert
            ));
        }
        Ok(())
    }
}

/// A feed-forward block: dense SwiGLU, or a router over SwiGLU experts.
#[derive(Debug)]
pub(crate) enum Ffn {
    Dense {
        gate: Matrix,
        up: Matrix,
        down: Matrix,
    },
    Moe {
        router: Matrix,
        experts: Vec<Expert>,
        top_k: usize,
    },
}

/// One expert's SwiGLU weights.
#[derive(Debug)]
pub(crate) struct Expert {
    pub(crate) gate: Matrix,
    pub(crate) up: Matrix,
    pub(crate) down: Matrix,
}

/// One transformer block.
#[derive(Debug)]
pub(crate) struct Layer {
    pub(crate) attn_norm: Vec<f32>,
    pub(crate) wq: Matrix,
    pub(crate) wk: Matrix,
    pub(crate) wv: Matrix,
    pub(crate) wo: Matrix,
    /// Qwen2 has biases on q, k and v.
    pub(crate) bq: Option<Vec<f32>>,
    pub(crate) bk: Option<Vec<f32>>,
    pub(crate) bv: Option<Vec<f32>>,
    pub(crate) ffn_norm: Vec<f32>,
    pub(crate) ffn: Ffn,
}

/// All weights of a model. Rotary embeddings use the "half" pairing (element `i` with
/// `i + head_dim / 2`); GGUF files of the `llama` architecture store q and k rows
/// interleaved for the other pairing, and the loader puts them back.
#[derive(Debug)]
pub(crate) struct Transformer {
    pub(crate) config: Config,
    pub(crate) embed: Matrix,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Vec<f32>,
    /// None when the output projection is tied to the embedding.
    pub(crate) output: Option<Matrix>,
    /// `inv_freq[i] = theta^(-2i / head_dim)`.
    inv_freq: Vec<f64>,
}

/// The per-request state: keys and values of every position so far, per layer.
///
/// Position `p`'s keys and values depend only on the tokens at positions `0..=p` (never
/// on later tokens, on how the tokens were chunked or on the thread count), so the first
/// `n` positions of a cache are exactly the cache of its first `n` tokens: that is what
/// lets the prompt cache ([`crate::prompt_cache`]) hand a new request a prefix of an
/// earlier request's state ([`KvCache::prefix`]).
#[derive(Clone, Debug)]
pub(crate) struct KvCache {
    /// Per layer: `len × n_kv_head × head_dim` keys, then the same for values.
    pub(crate) keys: Vec<Vec<f32>>,
    pub(crate) values: Vec<Vec<f32>>,
    pub(crate) len: usize,
    /// Tokens routed to each expert, summed over layers (empty for dense models).
    pub(crate) expert_tokens: Vec<u64>,
    /// Per position, per expert: in how many layers that position's token was routed to
    /// the expert (`len × n_expert`; empty for dense models). Kept so that a prefix of the
    /// cache also has its exact expert counts, which receipts carry.
    pub(crate) routed: Vec<u32>,
}

impl KvCache {
    /// The cache of the first `n` positions (`n <= self.len`): a copy, so the original
    /// (shared by the prompt cache) is never written.
    pub(crate) fn prefix(&self, n: usize) -> KvCache {
        debug_assert!(n <= self.len);
        let n = n.min(self.len);
        let per_position = |layer: &Vec<f32>| layer.len().checked_div(self.len).unwrap_or(0);
        let cut = |layers: &[Vec<f32>]| -> Vec<Vec<f32>> {
            layers
                .iter()
                .map(|l| l[..n * per_position(l)].to_vec())
                .collect()
        };
        let experts = self.expert_tokens.len();
        let routed = self.routed[..n * experts].to_vec();
        let mut expert_tokens = vec![0u64; experts];
        for row in routed.chunks_exact(experts.max(1)) {
            for (total, &r) in expert_tokens.iter_mut().zip(row) {
                *total += u64::from(r);
            }
        }
        KvCache {
            keys: cut(&self.keys),
            values: cut(&self.values),
            len: n,
            expert_tokens,
            routed,
        }
    }

    /// Releases spare capacity (the vectors grew by doubling while the sequence was fed),
    /// so that what the prompt cache holds is what it counts.
    pub(crate) fn shrink_to_fit(&mut self) {
        for l in self.keys.iter_mut().chain(self.values.iter_mut()) {
            l.shrink_to_fit();
        }
        self.routed.shrink_to_fit();
    }

    /// Bytes of memory the cache holds (capacity, not length: what it really costs).
    pub(crate) fn bytes(&self) -> usize {
        let floats: usize = self
            .keys
            .iter()
            .chain(self.values.iter())
            .map(Vec::capacity)
            .sum();
        floats * 4 + self.routed.capacity() * 4 + self.expert_tokens.len() * 8
    }

    /// SHA-256 over the cache's contents: length, then every layer's keys and values as
    /// little-endian f32 bits, then the routing counts. Two caches with equal digests hold
    /// the same state bit for bit (the determinism tests compare them).
    pub(crate) fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update((self.len as u64).to_le_bytes());
        for layer in self.keys.iter().chain(self.values.iter()) {
            h.update((layer.len() as u64).to_le_bytes());
            for v in layer {
                h.update(v.to_bits().to_le_bytes());
            }
        }
        for r in &self.routed {
            h.update(r.to_le_bytes());
        }
        h.finalize().into()
    }
}

impl Transformer {
    pub(crate) fn new(
        config: Config,
        embed: Matrix,
        layers: Vec<Layer>,
        norm: Vec<f32>,
        output: Option<Matrix>,
    ) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let check = |m: &Matrix, rows: usize, cols: usize, what: &str| {
            if m.rows != rows || m.cols != cols {
                Err(Error::model(format!(
                    "{what} is {}x{}, expected {rows}x{cols}",
                    m.rows, m.cols
                )))
            } else {
                Ok(())
            }
        };
        let vec_len = |v: &[f32], n: usize, what: &str| {
            if v.len() != n {
                Err(Error::model(format!(
                    "{what} has {} values, expected {n}",
                    v.len()
                )))
            } else {
                Ok(())
            }
        };
        check(&embed, c.vocab, c.dim, "token embedding")?;
        if let Some(o) = &output {
            check(o, c.vocab, c.dim, "output projection")?;
        }
        vec_len(&norm, c.dim, "output norm")?;
        if layers.len() != c.n_layer {
            return Err(Error::model(format!(
                "{} layers, expected {}",
                layers.len(),
                c.n_layer
            )));
        }
        let (q, kv) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        for (i, l) in layers.iter().enumerate() {
            let name = |s: &str| format!("layer {i} {s}");
            vec_len(&l.attn_norm, c.dim, &name("attention norm"))?;
            vec_len(&l.ffn_norm, c.dim, &name("ffn norm"))?;
            check(&l.wq, q, c.dim, &name("q"))?;
            check(&l.wk, kv, c.dim, &name("k"))?;
            check(&l.wv, kv, c.dim, &name("v"))?;
            check(&l.wo, c.dim, q, &name("output"))?;
            for (b, n, w) in [
                (&l.bq, q, "q bias"),
                (&l.bk, kv, "k bias"),
                (&l.bv, kv, "v bias"),
            ] {
                if let Some(b) = b {
                    vec_len(b, n, &name(w))?;
                }
            }
            match &l.ffn {
                Ffn::Dense { gate, up, down } => {
                    check(gate, c.ffn_dim, c.dim, &name("ffn gate"))?;
                    check(up, c.ffn_dim, c.dim, &name("ffn up"))?;
                    check(down, c.dim, c.ffn_dim, &name("ffn down"))?;
                }
                Ffn::Moe {
                    router,
                    experts,
                    top_k,
                } => {
                    if experts.len() != c.n_expert || *top_k != c.n_expert_used {
                        return Err(Error::model(name("expert count disagrees with the config")));
                    }
                    check(router, c.n_expert, c.dim, &name("router"))?;
                    for (e, x) in experts.iter().enumerate() {
                        check(
                            &x.gate,
                            c.ffn_dim,
                            c.dim,
                            &name(&format!("expert {e} gate")),
                        )?;
                        check(&x.up, c.ffn_dim, c.dim, &name(&format!("expert {e} up")))?;
                        check(
                            &x.down,
                            c.dim,
                            c.ffn_dim,
                            &name(&format!("expert {e} down")),
                        )?;
                    }
                }
            }
        }
        let half = c.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| f64::from(c.rope_theta).powf(-(2.0 * i as f64) / c.head_dim as f64))
            .collect();
        Ok(Self {
            config,
            embed,
            layers,
            norm,
            output,
            inv_freq,
        })
    }

    pub(crate) fn new_cache(&self) -> KvCache {
        KvCache {
            keys: vec![Vec::new(); self.config.n_layer],
            values: vec![Vec::new(); self.config.n_layer],
            len: 0,
            expert_tokens: vec![0; self.config.n_expert],
            routed: Vec::new(),
        }
    }

    /// Size of all weights in bytes.
    pub(crate) fn size_bytes(&self) -> usize {
        let mut n = self.embed.size_bytes() + self.output.as_ref().map_or(0, Matrix::size_bytes);
        for l in &self.layers {
            n += l.wq.size_bytes() + l.wk.size_bytes() + l.wv.size_bytes() + l.wo.size_bytes();
            n += match &l.ffn {
                Ffn::Dense { gate, up, down } => {
                    gate.size_bytes() + up.size_bytes() + down.size_bytes()
                }
                Ffn::Moe {
                    router, experts, ..
                } => {
                    router.size_bytes()
                        + experts
                            .iter()
                            .map(|e| e.gate.size_bytes() + e.up.size_bytes() + e.down.size_bytes())
                            .sum::<usize>()
                }
            };
        }
        n
    }

    /// Runs `tokens` (at positions `cache.len..`) through the model, extends the cache,
    /// and returns the logits of the last token.
    pub(crate) fn forward(
        &self,
        cx: &Compute,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let t = tokens.len();
        if t == 0 {
            return Err(Error::InvalidRequest("no tokens to process".into()));
        }
        if cache.len + t > c.context_length {
            return Err(Error::InvalidRequest(format!(
                "{} tokens exceed the context length of {}",
                cache.len + t,
                c.context_length
            )));
        }
        let mut x = vec![0.0f32; t * c.dim];
        for (row, &tok) in x.chunks_exact_mut(c.dim).zip(tokens) {
            if tok as usize >= c.vocab {
                return Err(Error::InvalidRequest(format!(
                    "token id {tok} is outside the vocabulary of {}",
                    c.vocab
                )));
            }
            self.embed.row_into(tok as usize, row);
        }
        let (qd, kvd) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        let mut h = vec![0.0f32; t * c.dim];
        let mut q = vec![0.0f32; t * qd];
        let mut k = vec![0.0f32; t * kvd];
        let mut v = vec![0.0f32; t * kvd];
        let mut attn = vec![0.0f32; t * qd];
        let mut o = vec![0.0f32; t * c.dim];
        let pos0 = cache.len;
        let rope = self.rope_table(pos0, t);
        // Per new token, per expert: layers that routed it there (MoE models only).
        let mut routed = vec![0u32; t * c.n_expert];
        for (li, layer) in self.layers.iter().enumerate() {
            rms_norm(cx, &x, &layer.attn_norm, c.eps, &mut h);
            layer.wq.matmul(cx, &h, t, &mut q);
            layer.wk.matmul(cx, &h, t, &mut k);
            layer.wv.matmul(cx, &h, t, &mut v);
            add_bias(&mut q, layer.bq.as_deref());
            add_bias(&mut k, layer.bk.as_deref());
            add_bias(&mut v, layer.bv.as_deref());
            self.rope(&mut q, c.n_head, &rope);
            self.rope(&mut k, c.n_kv_head, &rope);
            cache.keys[li].extend_from_slice(&k);
            cache.values[li].extend_from_slice(&v);
            self.attention(
                cx,
                &q,
                &cache.keys[li],
                &cache.values[li],
                pos0,
                t,
                &mut attn,
            );
            layer.wo.matmul(cx, &attn, t, &mut o);
            add_in_place(&mut x, &o);
            rms_norm(cx, &x, &layer.ffn_norm, c.eps, &mut h);
            match &layer.ffn {
                Ffn::Dense { gate, up, down } => swiglu(cx, gate, up, down, &h, t, &mut o),
                Ffn::Moe {
                    router,
                    experts,
                    top_k,
                } => {
                    self.moe(cx, router, experts, *top_k, &h, t, &mut o, &mut routed);
                }
            }
            add_in_place(&mut x, &o);
        }
        cache.len += t;
        for row in routed.chunks_exact(c.n_expert.max(1)) {
            for (total, &r) in cache.expert_tokens.iter_mut().zip(row) {
                *total += u64::from(r);
            }
        }
        cache.routed.extend_from_slice(&routed);
        // Only the last token's logits are needed to continue.
        let last = &x[(t - 1) * c.dim..];
        let mut normed = vec![0.0f32; c.dim];
        rms_norm(cx, last, &self.norm, c.eps, &mut normed);
        let mut logits = vec![0.0f32; c.vocab];
        self.output
            .as_ref()
            .unwrap_or(&self.embed)
            .matmul(cx, &normed, 1, &mut logits);
        Ok(logits)
    }

    /// cos and sin of every rotary angle for positions `pos0..pos0 + t`, computed once
    /// per forward pass and shared by all layers and heads.
    fn rope_table(&self, pos0: usize, t: usize) -> Vec<(f32, f32)> {
        let mut table = Vec::with_capacity(t * self.inv_freq.len());
        for ti in 0..t {
            let pos = (pos0 + ti) as f64;
            for f in &self.inv_freq {
                let angle = pos * f;
                table.push((angle.cos() as f32, angle.sin() as f32));
            }
        }
        table
    }

    /// Rotary position embedding, "half" pairing, on `t` tokens of `heads` heads each.
    fn rope(&self, xs: &mut [f32], heads: usize, table: &[(f32, f32)]) {
        let hd = self.config.head_dim;
        let half = hd / 2;
        for (tok, angles) in xs
            .chunks_exact_mut(heads * hd)
            .zip(table.chunks_exact(half))
        {
            for head in tok.chunks_exact_mut(hd) {
                let (lo, hi) = head.split_at_mut(half);
                for ((a, b), (cos, sin)) in lo.iter_mut().zip(hi.iter_mut()).zip(angles) {
                    let (x, y) = (*a, *b);
                    *a = x * cos - y * sin;
                    *b = x * sin + y * cos;
                }
            }
        }
    }

    /// Causal attention of `t` new queries (positions `pos0..pos0 + t`) over the cache,
    /// parallel over (token, head) pairs; each pair is one sequential computation.
    #[allow(
        clippy::too_many_arguments,
        reason = "the attention inputs are all distinct"
    )]
    fn attention(
        &self,
        cx: &Compute,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        pos0: usize,
        t: usize,
        out: &mut [f32],
    ) {
        let c = &self.config;
        let hd = c.head_dim;
        let group = c.n_head / c.n_kv_head;
        let kvd = c.n_kv_head * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let variant = cx.variant;
        let task = |(index, o): (usize, &mut [f32])| {
            let (ti, head) = (index / c.n_head, index % c.n_head);
            let kvh = head / group;
            let qv = &q[(ti * c.n_head + head) * hd..][..hd];
            let n = pos0 + ti + 1;
            let mut scores: Vec<f32> = (0..n)
                .map(|s| kernels::dot_f32(variant, qv, &keys[s * kvd + kvh * hd..][..hd]) * scale)
                .collect();
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            let mut sum = 0.0f32;
            for s in &mut scores {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv = 1.0 / sum;
            o.fill(0.0);
            for (s, p) in scores.iter().enumerate() {
                let p = p * inv;
                let vv = &values[s * kvd + kvh * hd..][..hd];
                for (oi, vi) in o.iter_mut().zip(vv) {
                    *oi += p * vi;
                }
            }
        };
        if t * (pos0 + t) * c.n_head < 4096 {
            out.chunks_exact_mut(hd).enumerate().for_each(task);
        } else {
            cx.install(|| out.par_chunks_exact_mut(hd).enumerate().for_each(task));
        }
    }

    /// The mixture-of-experts block: per token the router's `top_k` experts (ties to the
    /// lower index), weighted by the softmax of their router logits, summed in rank order.
    /// `routed[token × experts + e]` counts the tokens each expert served.
    #[allow(
        clippy::too_many_arguments,
        reason = "the block's inputs are all distinct"
    )]
    fn moe(
        &self,
        cx: &Compute,
        router: &Matrix,
        experts: &[Expert],
        top_k: usize,
        h: &[f32],
        t: usize,
        out: &mut [f32],
        routed: &mut [u32],
    ) {
        let c = &self.config;
        let ne = experts.len();
        let mut logits = vec![0.0f32; t * ne];
        router.matmul(cx, h, t, &mut logits);
        // choices[token] = [(expert, weight); top_k] in rank order.
        let mut choices: Vec<Vec<(usize, f32)>> = Vec::with_capacity(t);
        for row in logits.chunks_exact(ne) {
            let mut order: Vec<usize> = (0..ne).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            order.truncate(top_k);
            let max = row[order[0]];
            let exps: Vec<f32> = order.iter().map(|&e| (row[e] - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            choices.push(
                order
                    .iter()
                    .zip(&exps)
                    .map(|(&e, x)| (e, x / sum))
                    .collect(),
            );
        }
        // results[token][rank] = the expert's output for that token.
        let mut results = vec![vec![Vec::<f32>::new(); top_k]; t];
        for (e, expert) in experts.iter().enumerate() {
            let mut picked = Vec::new();
            for (ti, ch) in choices.iter().enumerate() {
                if let Some(rank) = ch.iter().position(|(x, _)| *x == e) {
                    picked.push((ti, rank));
                }
            }
            if picked.is_empty() {
                continue;
            }
            for (ti, _) in &picked {
                routed[ti * ne + e] += 1;
            }
            let xs: Vec<f32> = picked
                .iter()
                .flat_map(|(ti, _)| &h[ti * c.dim..(ti + 1) * c.dim])
                .copied()
                .collect();
            let mut ys = vec![0.0f32; picked.len() * c.dim];
            swiglu(
                cx,
                &expert.gate,
                &expert.up,
                &expert.down,
                &xs,
                picked.len(),
                &mut ys,
            );
            for ((ti, rank), y) in picked.iter().zip(ys.chunks_exact(c.dim)) {
                results[*ti][*rank] = y.to_vec();
            }
        }
        for (ti, o) in out.chunks_exact_mut(c.dim).enumerate() {
            o.fill(0.0);
            for (rank, (_, w)) in choices[ti].iter().enumerate() {
                for (oi, yi) in o.iter_mut().zip(&results[ti][rank]) {
                    *oi += w * yi;
                }
            }
        }
    }
}

/// `out = x / rms(x) * weight`, per row of `weight.len()` values.
fn rms_norm(cx: &Compute, x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = kernels::dot_f32(cx.variant, row, row) / d as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((oi, xi), wi) in o.iter_mut().zip(row).zip(weight) {
            *oi = xi * scale * wi;
        }
    }
}

fn add_bias(xs: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in xs.chunks_exact_mut(b.len()) {
            add_in_place(row, b);
        }
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `out = down(silu(gate(h)) * up(h))` for `t` tokens.
fn swiglu(
    cx: &Compute,
    gate: &Matrix,
    up: &Matrix,
    down: &Matrix,
    h: &[f32],
    t: usize,
    out: &mut [f32],
) {
    let mut g = vec![0.0f32; t * gate.rows];
    let mut u = vec![0.0f32; t * up.rows];
    gate.matmul(cx, h, t, &mut g);
    up.matmul(cx, h, t, &mut u);
    for (gi, ui) in g.iter_mut().zip(&u) {
        *gi = *gi / (1.0 + (-*gi).exp()) * ui;
    }
    down.matmul(cx, &g, t, out);
}

#[cfg(test)]
mod tests;
