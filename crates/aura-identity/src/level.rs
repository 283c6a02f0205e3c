//! Authority levels and namespaces.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An authority level. Higher levels include lower ones: an L3 agent may do what an L2
/// agent may (policy writes `principal in Level::"L2"` for "at least L2").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    L1 = 1,
    L2 = 2,
    L3 = 3,
    L4 = 4,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::L1, Level::L2, Level::L3, Level::L4];

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    pub fn from_u8(v: u8) -> Option<Level> {
        match v {
            1 => Some(Level::L1),
            2 => Some(Level::L2),
            3 => Some(Level::L3),
            4 => Some(Level::L4),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::L1 => "L1",
            Level::L2 => "L2",
            Level::L3 => "L3",
            Level::L4 => "L4",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an authority level (L1, L2, L3 or L4)")]
pub struct InvalidLevel(pub String);

impl FromStr for Level {
    type Err = InvalidLevel;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "L1" | "l1" | "1" => Ok(Level::L1),
            "L2" | "l2" | "2" => Ok(Level::L2),
            "L3" | "l3" | "3" => Ok(Level::L3),
            "L4" | "l4" | "4" => Ok(Level::L4),
            other => Err(InvalidLevel(other.to_owned())),
        }
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A namespace: 1-63 of `a-z`, `0-9` and `-`, starting with a letter or digit. Agents,
/// missions, records and workspaces belong to exactly one; nothing crosses between them
/// unless policy says so.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a valid namespace: use 1-63 of a-z, 0-9 and '-', starting with a letter or digit"
)]
pub struct InvalidNamespace(pub String);

impl Namespace {
    pub const DEFAULT: &'static str = "default";

    pub fn new(s: &str) -> Result<Self, InvalidNamespace> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if ok {
            Ok(Namespace(s.to_owned()))
        } else {
            Err(InvalidNamespace(s.to_owned()))
        }
    }

    pub fn default_namespace() -> Self {
        Namespace(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Namespace {
    type Err = InvalidNamespace;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Namespace::new(s)
    }
}

impl Serialize for Namespace {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Namespace {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Namespace::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_order_and_parse() {
        assert!(Level::L1 < Level::L2 && Level::L3 < Level::L4);
        for l in Level::ALL {
            assert_eq!(l.as_str().parse::<Level>(), Ok(l));
            assert_eq!(Level::from_u8(l.as_u8()), Some(l));
        }
        assert!("L5".parse::<Level>().is_err());
        assert_eq!(Level::from_u8(0), None);
    }

    #[test]
    fn namespaces_are_validated() {
        for good in ["default", "team-a", "9", "a-b-c"] {
            assert!(Namespace::new(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "A", "a_b", "a/b", "a b", &"a".repeat(64)] {
            assert!(Namespace::new(bad).is_err(), "{bad:?}");
        }
    }
}
