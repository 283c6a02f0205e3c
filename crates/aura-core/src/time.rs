//! Timestamps: nanoseconds since the Unix epoch, shown as RFC 3339 in UTC.
//!
//! A timestamp is a value, not a reading of the clock; readings come only from
//! [`crate::door::Clock`].

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Nanoseconds since 1970-01-01T00:00:00Z. Unsigned: Aura records nothing before 1970,
/// and u64 nanoseconds last until the year 2554.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);

    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000_000))
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_sub(nanos))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// RFC 3339 with millisecond precision, for people.
    pub fn to_rfc3339_millis(self) -> String {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(self.0)).to_string()
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with nanosecond precision: lossless.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = UNIX_EPOCH + Duration::from_nanos(self.0);
        write!(f, "{}", humantime::format_rfc3339_nanos(t))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 UTC time (like 2026-01-02T03:04:05Z) or a number of unix seconds")]
pub struct ParseTimestampError;

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    /// Accepts RFC 3339 in UTC, or an integer number of seconds since the epoch.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(secs) = s.parse::<u64>() {
            return Ok(Timestamp::from_secs(secs));
        }
        let t = humantime::parse_rfc3339_weak(s).map_err(|_| ParseTimestampError)?;
        let d = t
            .duration_since(UNIX_EPOCH)
            .map_err(|_| ParseTimestampError)?;
        u64::try_from(d.as_nanos())
            .map(Timestamp)
            .map_err(|_| ParseTimestampError)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        let t = Timestamp::from_nanos(1_790_000_000_123_456_789);
        assert_eq!(t.to_string(), "2026-09-21T14:13:20.123456789Z");
        assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
        assert_eq!(
            "1790000000".parse::<Timestamp>(),
            Ok(Timestamp::from_secs(1_790_000_000))
        );
        assert!("yesterday".parse::<Timestamp>().is_err());
    }
}
