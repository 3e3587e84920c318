//! Naming points: `latest`, a seq, an RFC 3339 time, `marker:NAME`, `last-good`.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rocksdb::{Direction, IteratorMode};

use crate::{keys, Index, IndexError, Result};

/// How a user names a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointSpec {
    /// The newest point.
    Latest,
    /// A point by seq.
    Seq(u64),
    /// The newest point at or before a time (unix ns).
    Time(i64),
    /// The newest point carrying a marker.
    Marker(String),
    /// The newest point carrying a known-good marker.
    LastGood,
}

impl FromStr for PointSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "latest" {
            return Ok(PointSpec::Latest);
        }
        if s == "last-good" {
            return Ok(PointSpec::LastGood);
        }
        if let Some(name) = s.strip_prefix("marker:") {
            return Ok(PointSpec::Marker(name.to_owned()));
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(PointSpec::Seq)
                .map_err(|e| format!("seq {s:?}: {e}"));
        }
        parse_time(s).map(PointSpec::Time).map_err(|_| {
            format!("point {s:?}: expected latest, last-good, a seq number, marker:NAME or an RFC 3339 time")
        })
    }
}

impl std::fmt::Display for PointSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PointSpec::Latest => write!(f, "latest"),
            PointSpec::LastGood => write!(f, "last-good"),
            PointSpec::Seq(s) => write!(f, "{s}"),
            PointSpec::Time(t) => write!(f, "{}", format_time(*t)),
            PointSpec::Marker(m) => write!(f, "marker:{m}"),
        }
    }
}

/// Parses an RFC 3339 time to unix nanoseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    let t = DateTime::parse_from_rfc3339(s).map_err(|e| e.to_string())?;
    t.timestamp_nanos_opt()
        .ok_or_else(|| "time out of range".to_owned())
}

/// Formats unix nanoseconds as RFC 3339 (UTC, with the precision needed).
pub fn format_time(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub(crate) fn resolve(index: &Index, domain: &str, spec: &PointSpec) -> Result<u64> {
    index.require_domain(domain)?;
    let none = || IndexError::NoSuchPoint(format!("{spec} in domain {domain}"));
    let head = keys::domain_head(domain);
    let last_key_at_or_before = |cf: &str, key: Vec<u8>| -> Result<Option<Box<[u8]>>> {
        let mut it = index
            .db
            .iterator_cf(index.cf(cf), IteratorMode::From(&key, Direction::Reverse));
        match it.next() {
            Some(item) => {
                let (k, _) = item?;
                Ok(k.starts_with(&head).then_some(k))
            }
            None => Ok(None),
        }
    };
    match spec {
        PointSpec::Latest => index.last_seq(domain)?.ok_or_else(none),
        PointSpec::Seq(s) => index
            .segment(domain, *s)?
            .filter(|m| m.is_point())
            .map(|m| m.seq)
            .ok_or_else(none),
        PointSpec::Time(t) => {
            let k = last_key_at_or_before("times", keys::time(domain, *t, u64::MAX))?
                .ok_or_else(none)?;
            keys::be_u64(&k[head.len() + 8..]).ok_or_else(|| IndexError::Corrupt("time key".into()))
        }
        PointSpec::Marker(name) => {
            let prefix = keys::marker(domain, name, 0);
            let prefix = &prefix[..prefix.len() - 8];
            let k = last_key_at_or_before("markers", keys::marker(domain, name, u64::MAX))?
                .ok_or_else(none)?;
            if !k.starts_with(prefix) {
                return Err(none());
            }
            keys::be_u64(&k[prefix.len()..]).ok_or_else(|| IndexError::Corrupt("marker key".into()))
        }
        PointSpec::LastGood => {
            let k = last_key_at_or_before("good", keys::seq(domain, u64::MAX))?.ok_or_else(none)?;
            keys::be_u64(&k[head.len()..]).ok_or_else(|| IndexError::Corrupt("good key".into()))
        }
    }
}
