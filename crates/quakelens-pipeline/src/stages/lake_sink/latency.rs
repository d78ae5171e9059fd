//! Window-end → in-lake latencies in a fixed set of logarithmic buckets: percentiles for
//! `/healthz` in constant memory, however long the sink runs.

use std::sync::{Arc, Mutex};

/// Buckets per factor of 10 (1 % resolution needs ~230; 100 keeps each within ~2.3 %).
const PER_DECADE: f64 = 100.0;
/// The smallest latency resolved (s); anything below lands in the first bucket.
const FLOOR_S: f64 = 1e-3;
/// Decades covered above the floor: 1 ms … 10⁶ s.
const DECADES: usize = 9;
const BUCKETS: usize = DECADES * PER_DECADE as usize + 1;

/// Percentiles of window-end → in-lake latencies (s).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LatencySummary {
    pub n: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// A latency histogram shared between the sink and its health endpoint.
#[derive(Clone, Debug)]
pub struct Latencies(Arc<Mutex<Histogram>>);

#[derive(Debug)]
struct Histogram {
    counts: Vec<u64>,
    n: u64,
    max: f64,
}

impl Default for Latencies {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Histogram {
            counts: vec![0; BUCKETS],
            n: 0,
            max: 0.0,
        })))
    }
}

fn bucket(seconds: f64) -> usize {
    // At or below the floor, or NaN: the first bucket.
    if seconds.is_nan() || seconds <= FLOOR_S {
        return 0;
    }
    (((seconds / FLOOR_S).log10() * PER_DECADE).ceil() as usize).min(BUCKETS - 1)
}

/// The upper edge of bucket `b` (s).
fn edge(b: usize) -> f64 {
    FLOOR_S * 10f64.powf(b as f64 / PER_DECADE)
}

impl Latencies {
    pub fn record(&self, seconds: f64) {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let b = bucket(seconds);
        h.counts[b] += 1;
        h.n += 1;
        if seconds > h.max {
            h.max = seconds;
        }
    }

    /// p50 and p99 as the upper edge of the bucket holding them (at most 2.3 % high).
    pub fn summary(&self) -> LatencySummary {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if h.n == 0 {
            return LatencySummary::default();
        }
        let at = |q: f64| {
            let rank = ((h.n as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            for (b, &c) in h.counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return edge(b).min(h.max);
                }
            }
            h.max
        };
        LatencySummary {
            n: h.n,
            p50: at(0.5),
            p99: at(0.99),
            max: h.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_bucket_and_memory_is_fixed() {
        let l = Latencies::default();
        assert_eq!(l.summary().n, 0);
        for i in 1..=10_000 {
            l.record(i as f64 / 1000.0); // 1 ms … 10 s, uniform
        }
        let s = l.summary();
        assert_eq!(s.n, 10_000);
        assert!((s.p50 - 5.0).abs() / 5.0 < 0.025, "{s:?}");
        assert!((s.p99 - 9.9).abs() / 9.9 < 0.025, "{s:?}");
        assert_eq!(s.max, 10.0);
        for _ in 0..100_000 {
            l.record(0.5);
        }
        assert_eq!(l.0.lock().unwrap().counts.len(), BUCKETS);
        l.record(-1.0);
        l.record(f64::NAN);
        l.record(1e12);
        assert_eq!(l.summary().n, 110_003);
    }
}
