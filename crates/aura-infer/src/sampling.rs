//! Choosing the next token: repetition penalty, greedy or temperature sampling with top-k
//! and top-p, from a ChaCha20 stream seeded per request. Every step is a sequential
//! computation with ties broken by token id, so the same logits, parameters and seed
//! always choose the same token.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How to choose tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// 0 chooses the most likely token (greedy); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens.
    pub top_k: Option<u32>,
    /// Keep the smallest set of most likely tokens whose probability reaches p.
    pub top_p: Option<f32>,
    /// Divides positive logits (multiplies negative ones) of tokens already in the
    /// context; 1 leaves them unchanged.
    pub repetition_penalty: Option<f32>,
    /// Seeds the request's ChaCha20 stream.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: None,
            seed: 0,
        }
    }
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidRequest(m.to_owned()));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature must be a number >= 0");
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("top_p must be in (0, 1]");
        }
        if self.top_k == Some(0) {
            return bad("top_k must be at least 1");
        }
        if let Some(r) = self.repetition_penalty
            && !(r.is_finite() && r > 0.0)
        {
            return bad("repetition_penalty must be a number > 0");
        }
        Ok(())
    }
}

/// A request's sampler: its parameters and its random stream.
pub(crate) struct Sampler {
    params: Sampling,
    rng: ChaCha20Rng,
}

impl Sampler {
    pub(crate) fn new(params: Sampling) -> Self {
        let rng = ChaCha20Rng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Applies the repetition penalty to `logits` in place for every distinct token of
    /// `context`.
    pub(crate) fn penalize(&self, logits: &mut [f32], context: &[u32], seen: &mut Vec<bool>) {
        let Some(penalty) = self.params.repetition_penalty else {
            return;
        };
        if penalty == 1.0 {
            return;
        }
        seen.clear();
        seen.resize(logits.len(), false);
        for &t in context {
            let t = t as usize;
            if t < logits.len() && !seen[t] {
                seen[t] = true;
                let l = &mut logits[t];
                *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            }
        }
    }

    /// Chooses a token from (penalised, masked) logits. Masked tokens are -inf.
    /// Returns None when every token is masked.
    pub(crate) fn choose(&mut self, logits: &[f32]) -> Option<u32> {
        if self.params.temperature == 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / f64::from(self.params.temperature);
        // Candidates ordered by logit, then id: the order every later step walks in.
        let mut cands: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| **l > f32::NEG_INFINITY && !l.is_nan())
            .map(|(i, l)| (i as u32, *l))
            .collect();
        if cands.is_empty() {
            return None;
        }
        cands.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = self.params.top_k {
            cands.truncate(k as usize);
        }
        let max = f64::from(cands[0].1);
        let mut probs: Vec<f64> = cands
            .iter()
            .map(|(_, l)| ((f64::from(*l) - max) * inv_t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        for p in &mut probs {
            *p /= total;
        }
        if let Some(top_p) = self.params.top_p {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= f64::from(top_p) {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            cands.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        // 53 random bits → a uniform number in [0, 1), scaled to the kept mass.
        let u = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) * total;
        let mut acc = 0.0;
        for ((id, _), p) in cands.iter().zip(&probs) {
            acc += p;
            if u < acc {
                return Some(*id);
            }
        }
        cands.last().map(|(id, _)| *id)
    }
}

/// The index of the largest finite-or-infinite logit, the lowest index on ties; None if
/// every logit is -inf or NaN.
pub(crate) fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        if l.is_nan() || l == f32::NEG_INFINITY {
            continue;
        }
        if best.is_none_or(|(_, b)| l > b) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// `log_softmax(logits)[i]` for every i, computed sequentially in f64.
pub(crate) fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let sum: f64 = logits
        .iter()
        .map(|l| (f64::from(*l) - f64::from(max)).exp())
        .sum();
    let lse = f64::from(max) + sum.ln();
    logits
        .iter()
        .map(|l| (f64::from(*l) - lse) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_lowest_index_among_equal_maxima() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), Some(1));
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), None);
    }

    #[test]
    fn the_same_seed_draws_the_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let params = Sampling {
            temperature: 0.8,
            top_k: Some(40),
            top_p: Some(0.9),
            seed: 7,
            ..Sampling::default()
        };
        let draw = |p: &Sampling| {
            let mut s = Sampler::new(p.clone());
            (0..50)
                .map(|_| s.choose(&logits).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        let other = Sampling { seed: 8, ..params };
        assert_ne!(draw(&params), draw(&other));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.1, 2.0, 1.9, -1.0];
        let mut s = Sampler::new(Sampling {
            temperature: 5.0,
            top_k: Some(1),
            seed: 3,
            ..Sampling::default()
        });
        for _ in 0..20 {
            assert_eq!(s.choose(&logits), Some(1));
        }
    }

    #[test]
    fn masked_tokens_are_never_drawn() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, 0.0];
        let mut s = Sampler::new(Sampling {
            temperature: 1.0,
            seed: 1,
            ..Sampling::default()
        });
        for _ in 0..100 {
            let t = s.choose(&logits).unwrap();
            assert!(t == 1 || t == 3);
        }
    }

    #[test]
    fn repetition_penalty_lowers_seen_tokens() {
        let s = Sampler::new(Sampling {
            repetition_penalty: Some(2.0),
            ..Sampling::default()
        });
        let mut logits = vec![4.0, -4.0, 4.0];
        s.penalize(&mut logits, &[0, 1, 0], &mut Vec::new());
        assert_eq!(logits, vec![2.0, -8.0, 4.0]);
    }

    #[test]
    fn bad_parameters_are_refused() {
        for bad in [
            Sampling {
                temperature: -1.0,
                ..Sampling::default()
            },
            Sampling {
                temperature: f32::NAN,
                ..Sampling::default()
            },
            Sampling {
                top_p: Some(0.0),
                ..Sampling::default()
            },
            Sampling {
                top_k: Some(0),
                ..Sampling::default()
            },
            Sampling {
                repetition_penalty: Some(0.0),
                ..Sampling::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
