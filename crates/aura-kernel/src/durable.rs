//! How steps are retried and timed: retry policies, step timeouts, and the failure kinds
//! of an attempt.
//!
//! A **step** here is one unit of work the engine runs for a mission and may have to run
//! again: a reasoner turn, or one permitted tool call. Each try is an **attempt**. Tool
//! attempts are recorded before they run (`mission.attempt`), so after a crash the record
//! says which call was in flight; every failed attempt is recorded with its kind and when
//! the next one is due (`mission.attempt_failed`), so retries survive restarts too.
//!
//! The kernel computes when the next attempt is due ([`StepPolicy::retry_at`]) and refuses
//! a recorded failure whose due time differs, so a replay checks the backoff as well.
//! There is no jitter: the backoff is a pure function of the policy and the attempt
//! number, which keeps replays exact (one node retries its own missions, so there is no
//! herd to spread out).

use std::time::Duration;

use aura_core::Timestamp;
use serde::{Deserialize, Serialize};

/// Failure kinds the engine itself records for an attempt, besides tool error kinds
/// (`timeout`, `network`, `io`, `internal`, ...).
pub mod kinds {
    /// The node stopped (or was killed) while the attempt ran.
    pub const INTERRUPTED: &str = "interrupted";
    /// The attempt ran longer than its start-to-close timeout.
    pub const START_TO_CLOSE: &str = "start_to_close_timeout";
    /// The attempt waited longer than its schedule-to-start timeout before it could start.
    /// Never retried: waiting again cannot make it start sooner.
    pub const SCHEDULE_TO_START: &str = "schedule_to_start_timeout";
    /// The attempt stopped heartbeating.
    pub const HEARTBEAT: &str = "heartbeat_timeout";
    /// The reasoner failed to answer (an error from its provider).
    pub const REASONER: &str = "reasoner";
    /// A cancel or the mission's deadline stopped the attempt. Never retried.
    pub const STOPPED: &str = "stopped";
}

/// How failed attempts of a step are retried: exponential backoff from
/// `initial_interval_ms`, multiplied by `multiplier_percent`/100 after each failure, never
/// above `max_interval_ms`, for at most `max_attempts` attempts in all (0: no limit).
///
/// The defaults (1 s, ×2, 60 s, 5 attempts) sit between Temporal's (1 s ×2 capped at
/// 100 s, unlimited attempts), Restate's (50 ms ×2 capped at 60 s) and DBOS's (3 attempts,
/// ×2): an agent's mission has a deadline and a person waiting, so it gives up after a
/// bounded number of attempts rather than retrying until the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    pub initial_interval_ms: u64,
    /// The backoff coefficient in percent: 200 doubles the interval after each failure.
    pub multiplier_percent: u32,
    pub max_interval_ms: u64,
    /// Attempts in all, the first included; 0 retries until the mission's deadline.
    pub max_attempts: u32,
    /// Failure kinds that are never retried (e.g. `network`), besides those that never are
    /// (`schedule_to_start_timeout`, `stopped`).
    pub non_retryable: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval_ms: 1_000,
            multiplier_percent: 200,
            max_interval_ms: 60_000,
            max_attempts: 5,
            non_retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// How long to wait after the `attempt`-th attempt (1-based) failed with `kind`, or
    /// `None` if no further attempt will be made.
    pub fn backoff(&self, attempt: u32, kind: &str) -> Option<Duration> {
        if kind == kinds::SCHEDULE_TO_START
            || kind == kinds::STOPPED
            || self.non_retryable.iter().any(|k| k == kind)
            || (self.max_attempts != 0 && attempt >= self.max_attempts)
        {
            return None;
        }
        let mut ms = self.initial_interval_ms;
        for _ in 1..attempt {
            if ms >= self.max_interval_ms {
                break;
            }
            ms = ms.saturating_mul(u64::from(self.multiplier_percent)) / 100;
        }
        Some(Duration::from_millis(ms.min(self.max_interval_ms)))
    }

    fn validate(&self) -> Result<(), String> {
        if !(100..=1_000).contains(&self.multiplier_percent) {
            return Err("a retry multiplier_percent is 100-1000".into());
        }
        if self.max_interval_ms < self.initial_interval_ms {
            return Err("a retry max_interval_ms is at least its initial_interval_ms".into());
        }
        if self.max_interval_ms > MAX_TIMEOUT_MS {
            return Err("a retry interval is at most 7 days".into());
        }
        if self.non_retryable.len() > 32 || self.non_retryable.iter().any(|k| k.len() > 64) {
            return Err("a retry policy's non_retryable list is out of bounds".into());
        }
        Ok(())
    }
}

/// The longest any step timeout or retry interval may be: a week.
const MAX_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;

/// How one kind of step is retried and timed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StepPolicy {
    pub retry: RetryPolicy,
    /// The longest one attempt may run; `None`: only the tool's own limits and the
    /// mission's deadline bound it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_to_close_ms: Option<u64>,
    /// The longest an attempt may wait to start once it is due (behind other work, or
    /// while the node was down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_to_start_ms: Option<u64>,
    /// The longest a running attempt may go without a heartbeat. Tools that heartbeat
    /// (`cmd.run`) and reasoners (each piece of streamed text) are held to it; a tool that
    /// never heartbeats must not be given one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
}

impl StepPolicy {
    /// When the next attempt is due after the `attempt`-th failed at `at` with `kind`.
    pub fn retry_at(&self, attempt: u32, kind: &str, at: Timestamp) -> Option<Timestamp> {
        self.retry
            .backoff(attempt, kind)
            .map(|d| at.saturating_add(d))
    }

    pub fn start_to_close(&self) -> Option<Duration> {
        self.start_to_close_ms.map(Duration::from_millis)
    }

    pub fn schedule_to_start(&self) -> Option<Duration> {
        self.schedule_to_start_ms.map(Duration::from_millis)
    }

    pub fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat_ms.map(Duration::from_millis)
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        self.retry.validate()?;
        for (name, ms) in [
            ("start_to_close_ms", self.start_to_close_ms),
            ("schedule_to_start_ms", self.schedule_to_start_ms),
            ("heartbeat_ms", self.heartbeat_ms),
        ] {
            if let Some(ms) = ms
                && !(1..=MAX_TIMEOUT_MS).contains(&ms)
            {
                return Err(format!("{name} is 1 ms to 7 days"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests fail loudly")]

    use super::*;

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap_and_stops_at_max_attempts() {
        let p = RetryPolicy::default();
        let secs: Vec<_> = (1..=5)
            .map(|n| p.backoff(n, "io").map(|d| d.as_millis()))
            .collect();
        assert_eq!(secs, [Some(1000), Some(2000), Some(4000), Some(8000), None]);
        let capped = RetryPolicy {
            max_attempts: 0,
            max_interval_ms: 5_000,
            ..RetryPolicy::default()
        };
        assert_eq!(capped.backoff(4, "io"), Some(Duration::from_secs(5)));
        assert_eq!(
            capped.backoff(1_000_000, "io"),
            Some(Duration::from_secs(5))
        );
        let flat = RetryPolicy {
            multiplier_percent: 100,
            ..RetryPolicy::default()
        };
        assert_eq!(flat.backoff(4, "io"), Some(Duration::from_secs(1)));
    }

    #[test]
    fn some_kinds_are_never_retried() {
        let p = RetryPolicy {
            non_retryable: vec!["network".into()],
            ..RetryPolicy::default()
        };
        assert_eq!(p.backoff(1, "network"), None);
        assert_eq!(p.backoff(1, kinds::SCHEDULE_TO_START), None);
        assert_eq!(p.backoff(1, kinds::STOPPED), None);
        assert!(p.backoff(1, kinds::INTERRUPTED).is_some());
    }

    #[test]
    fn policies_out_of_bounds_are_refused() {
        let bad = [
            RetryPolicy {
                multiplier_percent: 50,
                ..RetryPolicy::default()
            },
            RetryPolicy {
                max_interval_ms: 10,
                ..RetryPolicy::default()
            },
        ];
        for retry in bad {
            assert!(
                StepPolicy {
                    retry,
                    ..StepPolicy::default()
                }
                .validate()
                .is_err()
            );
        }
        let zero = StepPolicy {
            heartbeat_ms: Some(0),
            ..StepPolicy::default()
        };
        assert!(zero.validate().is_err());
        assert!(StepPolicy::default().validate().is_ok());
    }
}
