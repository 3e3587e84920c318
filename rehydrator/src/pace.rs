//! Throttling of pack reads: a pacer shared by every read of one restore spaces the
//! reads so that the bytes fetched do not exceed a rate on average.
//!
//! Each read reserves its bytes: it may start when every earlier reservation has had
//! its share of time, and it pushes that instant on by its own share. Idle time earns
//! no credit, so nothing bursts beyond the one read that starts at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{RestoreError, Result};

/// Longest single sleep: a cancelled restore stops waiting within this time even when
/// the rate is low and the reads are large.
const CANCEL_POLL: Duration = Duration::from_millis(100);

/// Spaces reads of a restore to `bytes_per_sec` on average.
#[derive(Debug)]
pub(crate) struct Pacer {
    bytes_per_sec: u64,
    /// When the next reservation may start.
    next: Mutex<Instant>,
}

impl Pacer {
    /// A pacer of `bytes_per_sec` (not zero: a rate of nothing would never finish).
    pub fn new(bytes_per_sec: u64) -> Result<Self> {
        if bytes_per_sec == 0 {
            return Err(RestoreError::Invalid(
                "max_bytes_per_sec must be at least 1".into(),
            ));
        }
        Ok(Pacer {
            bytes_per_sec,
            next: Mutex::new(Instant::now()),
        })
    }

    /// Reserves `bytes` and returns the instant they may be fetched.
    fn reserve(&self, bytes: u64) -> Instant {
        let share = Duration::from_nanos(
            u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_sec))
                .unwrap_or(u64::MAX),
        );
        // A poisoned lock only means another reader panicked; the instant is still valid.
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let at = (*next).max(Instant::now());
        *next = at + share;
        at
    }

    /// Waits until `bytes` may be fetched; fails as cancelled as soon as `cancelled` is
    /// set.
    pub async fn wait(&self, bytes: u64, cancelled: &AtomicBool) -> Result<()> {
        let at = self.reserve(bytes);
        loop {
            if cancelled.load(Ordering::Relaxed) {
                return Err(RestoreError::Cancelled);
            }
            let now = Instant::now();
            if now >= at {
                return Ok(());
            }
            tokio::time::sleep((at - now).min(CANCEL_POLL)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_spaced_by_their_share() {
        let p = Pacer::new(1000).expect("pacer");
        let first = p.reserve(500);
        let second = p.reserve(500);
        let third = p.reserve(10);
        assert_eq!(second - first, Duration::from_millis(500));
        assert_eq!(third - second, Duration::from_millis(500));
        assert!(Pacer::new(0).is_err());
    }

    #[tokio::test]
    async fn a_cancelled_wait_stops_early() {
        let p = Pacer::new(1).expect("pacer");
        let cancelled = AtomicBool::new(false);
        p.wait(1_000_000, &cancelled)
            .await
            .expect("first read starts at once");
        // The next read would wait 11 days; a cancelled restore does not.
        cancelled.store(true, Ordering::Relaxed);
        assert!(matches!(
            p.wait(1, &cancelled).await,
            Err(RestoreError::Cancelled)
        ));
    }
}
