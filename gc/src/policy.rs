//! Which points a retention policy keeps (DESIGN.md section 9).
//!
//! Kept: every point of the PITR window; for each of keep-hourly/daily/weekly/monthly
//! N, the newest point of each of the N newest hours (days, ISO weeks, months; UTC)
//! that hold a point, counted over all points as restic and borg count them; points
//! carrying a pinned marker; points held by a lease; and the newest point (the head).

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Utc};
use tidemark_format::{LeaseRecord, RetentionPolicy};

/// What the policy needs to know of a point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointInfo {
    /// Its seq.
    pub seq: u64,
    /// Its time, unix nanoseconds.
    pub time: i64,
    /// Names of its markers.
    pub markers: Vec<String>,
}

const HOUR_NS: i64 = 3_600_000_000_000;

/// The calendar buckets of the coarser rules.
#[derive(Clone, Copy, Debug)]
enum Bucket {
    Hour,
    Day,
    Week,
    Month,
}

impl Bucket {
    fn of(self, t: i64) -> i64 {
        let date = DateTime::<Utc>::from_timestamp_nanos(t).date_naive();
        match self {
            Bucket::Hour => t.div_euclid(HOUR_NS),
            Bucket::Day => i64::from(date.num_days_from_ce()),
            Bucket::Week => {
                let w = date.iso_week();
                i64::from(w.year()) * 100 + i64::from(w.week())
            }
            Bucket::Month => i64::from(date.year()) * 100 + i64::from(date.month()),
        }
    }
}

/// The seqs of `points` (ascending by seq) that `policy` and `leases` keep at `now`.
pub fn retained_points(
    points: &[PointInfo],
    policy: &RetentionPolicy,
    leases: &[LeaseRecord],
    now: i64,
) -> BTreeSet<u64> {
    let mut keep = BTreeSet::new();
    let Some(head) = points.last() else {
        return keep;
    };
    keep.insert(head.seq);
    let window = i64::try_from(policy.pitr_window_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000_000);
    let window_start = now.saturating_sub(window);
    for p in points {
        let in_window = p.time >= window_start;
        let pinned = p.markers.iter().any(|m| policy.pinned.contains(m));
        let leased = leases.iter().any(|l| l.holds(p.seq));
        if in_window || pinned || leased {
            keep.insert(p.seq);
        }
    }
    let rules = [
        (Bucket::Hour, policy.hourly),
        (Bucket::Day, policy.daily),
        (Bucket::Week, policy.weekly),
        (Bucket::Month, policy.monthly),
    ];
    for (bucket, count) in rules {
        let mut seen = 0u32;
        let mut last = None;
        // Newest first: the first point met in a bucket is its newest.
        for p in points.iter().rev() {
            if seen >= count {
                break;
            }
            let b = bucket.of(p.time);
            if last != Some(b) {
                last = Some(b);
                seen += 1;
                keep.insert(p.seq);
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64, hours: i64) -> PointInfo {
        PointInfo {
            seq,
            time: hours * HOUR_NS,
            markers: vec![],
        }
    }

    fn none() -> RetentionPolicy {
        RetentionPolicy {
            pitr_window_secs: 0,
            hourly: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
            pinned: vec![],
        }
    }

    #[test]
    fn head_is_always_kept() {
        let pts = [at(1, 0), at(2, 1)];
        assert_eq!(
            retained_points(&pts, &none(), &[], 100 * HOUR_NS),
            [2].into()
        );
        assert!(retained_points(&[], &none(), &[], 0).is_empty());
    }

    #[test]
    fn window_hourly_pins_and_leases() {
        // Four points an hour for ten hours: seq = 4h + k.
        let mut pts = Vec::new();
        for h in 0..10 {
            for k in 0..4 {
                let mut p = at(h as u64 * 4 + k + 1, h);
                p.time += k as i64 * HOUR_NS / 4;
                pts.push(p);
            }
        }
        let now = 10 * HOUR_NS;
        let mut pol = none();
        pol.pitr_window_secs = 3600;
        let kept = retained_points(&pts, &pol, &[], now);
        assert_eq!(kept, (37..=40).collect(), "the last hour, whole");
        pol.hourly = 3;
        let kept = retained_points(&pts, &pol, &[], now);
        // Newest of hours 9, 8 and 7.
        assert!(kept.is_superset(&[40, 36, 32].into()));
        assert!(!kept.contains(&28) && !kept.contains(&31));
        pts[2].markers.push("golden".into());
        pol.pinned.push("golden".into());
        let lease = LeaseRecord {
            site: "b".into(),
            holder: "restore-1".into(),
            seq: 10,
            onwards: false,
            epoch: 0,
            expires: i64::MAX,
        };
        let kept = retained_points(&pts, &pol, &[lease], now);
        assert!(kept.contains(&3) && kept.contains(&10) && !kept.contains(&11));
    }

    #[test]
    fn daily_weekly_monthly_count_buckets_with_points() {
        // One point a day for 100 days.
        let pts: Vec<_> = (0..100).map(|d| at(d as u64 + 1, d * 24)).collect();
        let now = 100 * 24 * HOUR_NS;
        let mut pol = none();
        pol.daily = 5;
        assert_eq!(retained_points(&pts, &pol, &[], now), (96..=100).collect());
        let mut pol = none();
        pol.monthly = 2;
        // 1970-01-01 + 99 days = 1970-04-10: newest of April and of March (day 89 = Mar 31).
        assert_eq!(retained_points(&pts, &pol, &[], now), [90, 100].into());
        let mut pol = none();
        pol.weekly = 1;
        assert_eq!(retained_points(&pts, &pol, &[], now), [100].into());
    }
}
