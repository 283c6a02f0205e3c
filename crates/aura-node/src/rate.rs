//! Request rate limits: a token bucket per API key for authenticated requests, and one per
//! source network (an IPv4 address, an IPv6 /64) for everything else.
//!
//! Only a key whose secret verified gets its key's bucket: a request that merely names a
//! key id (with a forged secret, or an id that does not exist) is an unauthenticated one
//! and spends its address's tokens, so nobody can use up, or lock out, a key they do not
//! hold. Both tables are bounded ([`MAX_TRACKED`]): a bucket that has filled up again is
//! the same as no bucket and is forgotten first, then the least recently used ones, so
//! requests from ever-new addresses cannot grow the node's memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// The most callers each table remembers at once.
pub(crate) const MAX_TRACKED: usize = 10_000;

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Bucket {
    /// An API key whose secret verified, by its id.
    Key(String),
    /// A source network: an IPv4 address, or the /64 of an IPv6 address (one host
    /// usually holds a whole /64, so counting single IPv6 addresses would count nothing).
    Net(IpAddr),
}

impl Bucket {
    pub(crate) fn of_address(ip: IpAddr) -> Bucket {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Bucket::Net(IpAddr::V4(v4)),
            IpAddr::V6(v6) => Bucket::Net(IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            ))),
        }
    }
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    keys: Mutex<Table<String>>,
    nets: Mutex<Table<IpAddr>>,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        Self::with_capacity(per_second, burst, MAX_TRACKED)
    }

    fn with_capacity(per_second: u32, burst: u32, capacity: usize) -> Self {
        RateLimiter {
            rate: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            keys: Mutex::new(Table::new(capacity)),
            nets: Mutex::new(Table::new(capacity)),
        }
    }

    /// Takes one token from `who`'s bucket; `Err(seconds)` says how long until one is
    /// available.
    ///
    /// Uses the monotonic clock: rate limiting is not recorded and never replayed, so it
    /// does not go through the clock door.
    pub(crate) fn check(&self, who: &Bucket) -> Result<(), u64> {
        self.check_at(who, Instant::now())
    }

    fn check_at(&self, who: &Bucket, now: Instant) -> Result<(), u64> {
        match who {
            Bucket::Key(id) => {
                let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
                keys.take(id, now, self.rate, self.burst)
            }
            Bucket::Net(net) => {
                let mut nets = self.nets.lock().unwrap_or_else(|e| e.into_inner());
                nets.take(net, now, self.rate, self.burst)
            }
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> (usize, usize) {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let nets = self.nets.lock().unwrap_or_else(|e| e.into_inner());
        (keys.buckets.len(), nets.buckets.len())
    }
}

/// Buckets by caller: tokens left and when they were last counted.
#[derive(Debug)]
struct Table<K> {
    capacity: usize,
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(capacity: usize) -> Self {
        Table {
            capacity: capacity.max(2),
            buckets: HashMap::new(),
        }
    }

    fn take(&mut self, who: &K, now: Instant, rate: f64, burst: f64) -> Result<(), u64> {
        if !self.buckets.contains_key(who) && self.buckets.len() >= self.capacity {
            self.make_room(now, rate, burst);
        }
        let (tokens, at) = self.buckets.entry(who.clone()).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Forgets the buckets that have filled up again (a full bucket is what a new caller
    /// gets anyway); if that frees too little, the least recently used half. Halving
    /// keeps the cost of a full table amortised: the next sweep is `capacity / 2` new
    /// callers away.
    fn make_room(&mut self, now: Instant, rate: f64, burst: f64) {
        self.buckets.retain(|_, (tokens, at)| {
            *tokens + now.saturating_duration_since(*at).as_secs_f64() * rate < burst
        });
        if self.buckets.len() > self.capacity / 2 {
            let mut times: Vec<Instant> = self.buckets.values().map(|(_, at)| *at).collect();
            let keep = self.capacity / 2;
            let cut = times.len() - keep;
            let (_, nth, _) = times.select_nth_unstable(cut);
            let cutoff = *nth;
            self.buckets.retain(|_, (_, at)| *at > cutoff);
        }
        // A flood that has passed should not leave its high-water mark allocated.
        self.buckets.shrink_to(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Bucket {
        Bucket::Key(s.to_owned())
    }

    #[test]
    fn a_burst_is_allowed_then_limited() {
        let r = RateLimiter::new(1, 3);
        assert!(r.check(&key("a")).is_ok() && r.check(&key("a")).is_ok());
        assert!(r.check(&key("a")).is_ok());
        assert_eq!(r.check(&key("a")), Err(1));
        assert!(r.check(&key("b")).is_ok());
    }

    /// Regression: requests naming ever-new fake key ids each got a bucket of their own,
    /// kept until 100,000 of them piled up (the node grew from 148 to 270 MB and never gave
    /// it back). Now no table holds more than its capacity, whatever arrives.
    #[test]
    fn ever_new_callers_never_grow_the_tables_past_their_capacity() {
        let r = RateLimiter::with_capacity(1, 5, 1000);
        let start = Instant::now();
        for i in 0..50_000u32 {
            let now = start + std::time::Duration::from_micros(u64::from(i));
            let ip = IpAddr::from(i.to_be_bytes());
            let _ = r.check_at(&Bucket::of_address(ip), now);
            let _ = r.check_at(&key(&format!("k{i}")), now);
            let (keys, nets) = r.tracked();
            assert!(keys <= 1000 && nets <= 1000, "{keys} keys, {nets} nets");
        }
    }

    /// An address that keeps asking is remembered while a flood of others passes: the
    /// oldest buckets go first.
    #[test]
    fn eviction_spares_the_recently_used() {
        let r = RateLimiter::with_capacity(1, 2, 100);
        let start = Instant::now();
        let me = Bucket::of_address("192.0.2.1".parse().unwrap());
        let mut now = start;
        assert!(r.check_at(&me, now).is_ok() && r.check_at(&me, now).is_ok());
        for i in 0..1000u32 {
            now = start + std::time::Duration::from_micros(u64::from(i) + 1);
            let _ = r.check_at(
                &Bucket::of_address(IpAddr::from((i + 1000).to_be_bytes())),
                now,
            );
            if i % 10 == 0 {
                // Still empty: it was not forgotten (and refilled) by the sweeps.
                assert!(r.check_at(&me, now).is_err(), "at {i}");
            }
        }
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket_and_v4_mapped_is_v4() {
        let a = Bucket::of_address("2001:db8:1:2::1".parse().unwrap());
        let b = Bucket::of_address("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = Bucket::of_address("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            Bucket::of_address("::ffff:192.0.2.7".parse().unwrap()),
            Bucket::of_address("192.0.2.7".parse().unwrap())
        );
        assert_ne!(
            Bucket::of_address("::".parse().unwrap()),
            Bucket::of_address("0.0.0.0".parse().unwrap())
        );
    }
}
