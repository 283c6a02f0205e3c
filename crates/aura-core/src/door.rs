//! The one door for nondeterminism: the clock and randomness.
//!
//! Code that needs the time or random bytes takes a [`Clock`] or an [`Entropy`] instead of
//! calling the operating system, so that tests can pin them and the kernel can be fed
//! recorded values on replay. `clippy.toml` forbids `SystemTime::now` and the OS random
//! functions everywhere else.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::time::Timestamp;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The operating system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods, reason = "this is the clock door")]
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp::from_nanos(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A clock that only moves when told to, for tests and replay.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicU64::new(start.as_nanos()))
    }

    pub fn set(&self, t: Timestamp) {
        self.0.store(t.as_nanos(), Ordering::SeqCst);
    }

    pub fn advance(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// A source of random bytes.
pub trait Entropy: Send + Sync + fmt::Debug {
    fn fill(&self, buf: &mut [u8]);

    fn u64(&self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    fn array<const N: usize>(&self) -> [u8; N]
    where
        Self: Sized,
    {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }
}

/// The operating system's CSPRNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    #[allow(clippy::disallowed_methods, reason = "this is the randomness door")]
    fn fill(&self, buf: &mut [u8]) {
        // getrandom fails only if the kernel has no entropy source at all; there is no
        // safe way to continue without one.
        if let Err(e) = getrandom::fill(buf) {
            panic!("the operating system's random number generator failed: {e}");
        }
    }
}

/// A deterministic stream from a seed, for tests and reproducible runs. Never used for
/// keys outside tests.
pub struct SeededEntropy(Mutex<ChaCha20Rng>);

impl fmt::Debug for SeededEntropy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SeededEntropy")
    }
}

impl SeededEntropy {
    pub fn new(seed: u64) -> Self {
        SeededEntropy(Mutex::new(ChaCha20Rng::seed_from_u64(seed)))
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, buf: &mut [u8]) {
        // A poisoned lock only means another thread panicked mid-fill; the generator
        // state is still a valid ChaCha state.
        let mut rng = self.0.lock().unwrap_or_else(|e| e.into_inner());
        rng.fill_bytes(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_secs(10));
        assert_eq!(c.now(), Timestamp::from_secs(10));
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now(), Timestamp::from_secs(15));
    }

    #[test]
    fn seeded_entropy_is_reproducible() {
        let a = SeededEntropy::new(7);
        let b = SeededEntropy::new(7);
        assert_eq!(a.u64(), b.u64());
        assert_ne!(a.u64(), SeededEntropy::new(8).u64());
    }

    #[test]
    fn system_clock_is_after_2024() {
        assert!(SystemClock.now() > Timestamp::from_secs(1_704_067_200));
    }
}
