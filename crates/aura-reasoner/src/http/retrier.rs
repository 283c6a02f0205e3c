//! Trying a turn again: the retry loop of the HTTP providers, with backoff, the
//! provider's `Retry-After`, and the total deadline.
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
use crate::retry::backoff;
use crate::{Context, Delta, DeltaSink, Error, Request, Turn};

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
            if emitted.load(Ordering::Relaxed)
                && let Some(sink) = deltas
            {
                sink(Delta::Reset {
                    attempt: attempt + 1,
                });
            }
        }
    }
}
