//! Trying a turn again: exponential backoff with jitter, `Retry-After`, and the total
//! deadline.
//!
//! Waits go through the context's [`Sleep`](crate::Sleep) and jitter through its
//! [`Entropy`](aura_core::door::Entropy), so tests can check each wait exactly. The
//! deadline is measured on tokio's monotonic clock: it bounds the turn, and nothing
//! about it is recorded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::config::RetryPolicy;
use crate::error::TimeoutKind;
use crate::{Context, Delta, DeltaSink, Error, Request, Turn};

/// The wait before the attempt after failed attempt number `failed` (counted from 1),
/// before any `Retry-After`: see [`RetryPolicy`].
pub fn backoff(policy: &RetryPolicy, failed: u32, entropy: &dyn aura_core::door::Entropy) -> Duration {
    let exponent = i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX);
    let max = policy.max_interval.as_secs_f64();
    let base = (policy.initial_interval.as_secs_f64() * policy.multiplier.powi(exponent)).min(max);
    // A uniform draw in [0, 1) from the top 53 bits, so every value is exact in f64.
    let unit = (entropy.u64() >> 11) as f64 / (1u64 << 53) as f64;
    let factor = 1.0 + policy.jitter * (2.0 * unit - 1.0);
    let wait = (base * factor).clamp(0.0, max);
    Duration::try_from_secs_f64(wait).unwrap_or(policy.max_interval)
}

/// One attempt at a turn, made by a provider.
#[async_trait]
pub(crate) trait Attempt: Send + Sync {
    async fn attempt(&self, request: &Request, emit: &DeltaSink<'_>) -> Result<Turn, Error>;
}

/// Runs attempts under a retry policy and a total deadline.
#[derive(Debug, Clone)]
pub(crate) struct Retrier {
    pub(crate) policy: RetryPolicy,
    pub(crate) total: Duration,
    pub(crate) context: Context,
}

impl Retrier {
    pub(crate) async fn run(
        &self,
        op: &dyn Attempt,
        request: &Request,
        deltas: Option<&DeltaSink<'_>>,
    ) -> Result<Turn, Error> {
        let deadline = Instant::now() + self.total;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let emitted = AtomicBool::new(false);
            let emit = |d: Delta| {
                emitted.store(true, Ordering::Relaxed);
                if let Some(sink) = deltas {
                    sink(d);
                }
            };
            let outcome = tokio::time::timeout_at(deadline, op.attempt(request, &emit)).await;
            let error = match outcome {
                Ok(Ok(mut turn)) => {
                    turn.attempts = attempt;
                    return Ok(turn);
                }
                Ok(Err(e)) => e,
                Err(_) => Error::Timeout(TimeoutKind::Total),
            };
            let give_up = |error: Error| {
                if attempt > 1 {
                    Error::RetriesExhausted {
                        attempts: attempt,
                        last: Box::new(error),
                    }
                } else {
                    error
                }
            };
            if matches!(error, Error::Timeout(TimeoutKind::Total))
                || !error.is_retryable()
                || attempt >= self.policy.max_attempts
            {
                return Err(give_up(error));
            }
            let wait = match error.retry_after() {
                // Waiting longer than the cap inside a step is wrong, and so is calling
                // again before the provider said to: end the turn and let the engine
                // schedule the step later.
                Some(asked) if asked > self.policy.max_retry_after => return Err(give_up(error)),
                Some(asked) => asked,
                None => backoff(&self.policy, attempt, self.context.entropy.as_ref()),
            };
            if Instant::now() + wait >= deadline {
                return Err(give_up(error));
            }
            self.context.sleep.sleep(wait).await;
            if emitted.load(Ordering::Relaxed) {
                if let Some(sink) = deltas {
                    sink(Delta::Reset {
                        attempt: attempt + 1,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aura_core::door::SeededEntropy;

    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_without_jitter() {
        let policy = RetryPolicy {
            initial_interval: Duration::from_millis(100),
            multiplier: 3.0,
            max_interval: Duration::from_secs(1),
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let e = SeededEntropy::new(1);
        let waits: Vec<u128> = (1..=5).map(|n| backoff(&policy, n, &e).as_millis()).collect();
        assert_eq!(waits, [100, 300, 900, 1000, 1000]);
        assert_eq!(backoff(&policy, u32::MAX, &e), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_in_its_band_and_is_reproducible() {
        let policy = RetryPolicy {
            initial_interval: Duration::from_secs(1),
            jitter: 0.25,
            ..RetryPolicy::default()
        };
        let a = SeededEntropy::new(9);
        let b = SeededEntropy::new(9);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let w = backoff(&policy, 1, &a);
            assert_eq!(w, backoff(&policy, 1, &b));
            assert!(w >= Duration::from_millis(750) && w <= Duration::from_millis(1250), "{w:?}");
            seen.insert(w.as_millis() / 50);
        }
        assert!(seen.len() >= 8, "jitter hardly spreads: {seen:?}");
    }
}
