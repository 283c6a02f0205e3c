//! How long to wait before trying again: exponential backoff with jitter drawn from the
//! entropy door. The loop that uses it (with `Retry-After` and the total deadline) is
//! in the HTTP providers' `Retrier`.

use std::time::Duration;

use crate::config::RetryPolicy;

/// The wait before the attempt after failed attempt number `failed` (counted from 1),
/// before any `Retry-After`: see [`RetryPolicy`].
pub fn backoff(
    policy: &RetryPolicy,
    failed: u32,
    entropy: &dyn aura_core::door::Entropy,
) -> Duration {
    let exponent = i32::try_from(failed.saturating_sub(1)).unwrap_or(i32::MAX);
    let max = policy.max_interval.as_secs_f64();
    let base = (policy.initial_interval.as_secs_f64() * policy.multiplier.powi(exponent)).min(max);
    // A uniform draw in [0, 1) from the top 53 bits, so every value is exact in f64.
    let unit = (entropy.u64() >> 11) as f64 / (1u64 << 53) as f64;
    let factor = 1.0 + policy.jitter * (2.0 * unit - 1.0);
    let wait = (base * factor).clamp(0.0, max);
    Duration::try_from_secs_f64(wait).unwrap_or(policy.max_interval)
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
        let waits: Vec<u128> = (1..=5)
            .map(|n| backoff(&policy, n, &e).as_millis())
            .collect();
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
            assert!(
                w >= Duration::from_millis(750) && w <= Duration::from_millis(1250),
                "{w:?}"
            );
            seen.insert(w.as_millis() / 50);
        }
        assert!(seen.len() >= 8, "jitter hardly spreads: {seen:?}");
    }
}
