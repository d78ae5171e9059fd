//! The keys the sink wrote recently, per table, so an upstream stage that restarted and sent
//! the same rows again (windows re-cut, windows re-scored, tasks redone) adds nothing twice.
//! Replays of the sink's own input are recognised from the Delta log instead (see `mod.rs`);
//! this covers duplicates that arrive as new messages. Keys are kept for a horizon of arrival
//! time in hourly buckets of 64-bit hashes, so memory is bounded by the rate, not the uptime.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use quakelens_signal::window::fnv1a;

/// A row's identity in its table: the window, and for model outputs the model.
pub fn key_hash(window_id: &str, model_hash: &str) -> u64 {
    fnv1a(window_id.bytes().chain([0]).chain(model_hash.bytes()))
}

/// Hashes of the keys written in the last `horizon`, in buckets of `bucket` each.
#[derive(Debug)]
pub struct RecentKeys {
    horizon: Duration,
    bucket: Duration,
    buckets: VecDeque<(Instant, HashSet<u64>)>,
}

impl RecentKeys {
    pub fn new(horizon: Duration) -> Self {
        Self {
            horizon,
            bucket: (horizon / 6).max(Duration::from_secs(1)),
            buckets: VecDeque::new(),
        }
    }

    pub fn contains(&self, key: u64) -> bool {
        self.buckets.iter().any(|(_, set)| set.contains(&key))
    }

    /// Records `key` as written at `now`, dropping buckets older than the horizon.
    pub fn insert(&mut self, key: u64, now: Instant) {
        while self
            .buckets
            .front()
            .is_some_and(|(start, _)| now.duration_since(*start) > self.horizon + self.bucket)
        {
            self.buckets.pop_front();
        }
        match self.buckets.back_mut() {
            Some((start, set)) if now.duration_since(*start) < self.bucket => {
                set.insert(key);
            }
            _ => self.buckets.push_back((now, HashSet::from([key]))),
        }
    }

    /// Keys held now (for the bounded-memory test and the health answer).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|(_, s)| s.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_remembered_for_the_horizon_then_forgotten() {
        let mut r = RecentKeys::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let a = key_hash("w1", "");
        let b = key_hash("w1", "sha256:m");
        assert_ne!(a, b);
        r.insert(a, t0);
        assert!(r.contains(a) && !r.contains(b));
        r.insert(b, t0 + Duration::from_secs(30));
        assert!(r.contains(a) && r.contains(b));
        // Long after: both buckets are gone, and memory does not grow with the keys seen.
        for i in 0..10_000u64 {
            r.insert(i, t0 + Duration::from_secs(200 + i / 100));
        }
        assert!(!r.contains(a) && !r.contains(b));
        assert!(r.len() <= 7 * 1_000, "{} keys held", r.len());
    }
}
