//! CNN explanations that arrive in parts (a large budget split over several tasks) wait here
//! until their window is complete; then their values are added up into one row set. The lake
//! sink keeps its committed positions before every part it holds, so a sink that dies loses
//! nothing: the replay brings the held parts back.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use quakelens_explain::image::Part;
use quakelens_lake::CnnShapRecord;

/// Where a held part came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One window's parts so far.
#[derive(Debug)]
pub struct Waiting {
    pub count: usize,
    pub parts: BTreeMap<usize, (CnnShapRecord, Origin)>,
    since: Instant,
}

/// Parts by (window, model).
#[derive(Debug)]
pub struct PartsBuffer {
    waiting: HashMap<(String, String), Waiting>,
    /// How long a window may wait for its last part before its parts are given up on.
    pub timeout: Duration,
}

impl Default for PartsBuffer {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            timeout: Duration::from_secs(600),
        }
    }
}

impl PartsBuffer {
    /// Adds `part` of a window; returns the whole window's explanation once every part is in.
    /// A part that contradicts the ones before it (count, length, outputs) is an error.
    pub fn add(
        &mut self,
        record: CnnShapRecord,
        part: Part,
        origin: Origin,
    ) -> Result<Option<CnnShapRecord>, String> {
        let key = (record.key.window_id.clone(), record.model_hash.clone());
        let waiting = self.waiting.entry(key.clone()).or_insert_with(|| Waiting {
            count: part.count,
            parts: BTreeMap::new(),
            since: Instant::now(),
        });
        if let Some((first, _)) = waiting.parts.values().next() {
            let same = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1.0);
            let problem = if waiting.count != part.count {
                Some(format!(
                    "{} parts, earlier parts said {}",
                    part.count, waiting.count
                ))
            } else if first.values.len() != record.values.len() {
                Some(format!(
                    "{} values, earlier parts had {}",
                    record.values.len(),
                    first.values.len()
                ))
            } else if !same(first.output, record.output)
                || !same(first.base_value, record.base_value)
            {
                Some(format!(
                    "output {} / base {}, earlier parts had {} / {}",
                    record.output, record.base_value, first.output, first.base_value
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                return Err(format!(
                    "window {} part {} of {}: {p}",
                    key.0, part.index, part.count
                ));
            }
        }
        // A part delivered twice (a redone task) keeps its first copy.
        waiting.parts.entry(part.index).or_insert((record, origin));
        if waiting.parts.len() < waiting.count {
            return Ok(None);
        }
        let done = self.waiting.remove(&key).expect("present");
        Ok(Some(add_parts(
            done.parts.into_values().map(|(r, _)| r).collect(),
        )))
    }

    /// Drops the windows with a part from `topic`/`partition` (another consumer owns it now
    /// and replays them).
    pub fn forget_partition(&mut self, topic: &str, partition: i32) {
        self.waiting.retain(|_, w| {
            !w.parts
                .values()
                .any(|(_, o)| o.topic == topic && o.partition == partition)
        });
    }

    /// The earliest offset of a held part per (topic, partition): nothing from there on may be
    /// committed yet.
    pub fn held(&self) -> BTreeMap<(String, i32), i64> {
        let mut out: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for w in self.waiting.values() {
            for (_, o) in w.parts.values() {
                let e = out
                    .entry((o.topic.clone(), o.partition))
                    .or_insert(o.offset);
                *e = (*e).min(o.offset);
            }
        }
        out
    }

    /// Windows that waited longer than the timeout, removed.
    pub fn expired(&mut self) -> Vec<Waiting> {
        let timeout = self.timeout;
        let keys: Vec<_> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.since.elapsed() > timeout)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter().filter_map(|k| self.waiting.remove(k)).collect()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// A window's explanation from its parts (in part order): the sum of their values, each part
/// holding its own items' shares. Also used in one process (`quakelens explain --parts`), so
/// both give the same numbers.
pub fn add_parts(parts: Vec<CnnShapRecord>) -> CnnShapRecord {
    let mut parts = parts.into_iter();
    let mut whole = parts.next().expect("a window has at least one part");
    let mut sum: Vec<f64> = whole.values.iter().map(|&v| v as f64).collect();
    for p in parts {
        for (s, v) in sum.iter_mut().zip(&p.values) {
            *s += *v as f64;
        }
    }
    whole.values = sum.into_iter().map(|v| v as f32).collect();
    whole
}

#[cfg(test)]
mod tests {
    use super::*;
    use quakelens_lake::WindowKey;

    fn record(window: &str, values: Vec<f32>) -> CnnShapRecord {
        CnnShapRecord {
            key: WindowKey {
                window_id: window.into(),
                network: "XX".into(),
                station: "S".into(),
                location: "".into(),
                band: "HH".into(),
                start_ns: 0,
            },
            model_hash: "m".into(),
            method: "partition".into(),
            target: "margin".into(),
            budget: 4000,
            seed: 0,
            output: 2.0,
            base_value: -1.0,
            values,
            batch: None,
        }
    }

    fn at(offset: i64) -> Origin {
        Origin {
            topic: "shap.results".into(),
            partition: 1,
            offset,
        }
    }

    #[test]
    fn a_window_completes_with_its_last_part_and_holds_commits_until_then() {
        let mut b = PartsBuffer::default();
        let p = |index| Part { index, count: 3 };
        assert!(b
            .add(record("w", vec![1.0, 0.0]), p(2), at(10))
            .unwrap()
            .is_none());
        assert!(b
            .add(record("v", vec![5.0, 5.0]), p(0), at(11))
            .unwrap()
            .is_none());
        assert!(b
            .add(record("w", vec![0.5, 0.5]), p(0), at(12))
            .unwrap()
            .is_none());
        // The same part again (a redone task) changes nothing.
        assert!(b
            .add(record("w", vec![9.0, 9.0]), p(0), at(13))
            .unwrap()
            .is_none());
        assert_eq!(b.held()[&("shap.results".to_string(), 1)], 10);
        let whole = b
            .add(record("w", vec![0.0, 2.0]), p(1), at(14))
            .unwrap()
            .unwrap();
        assert_eq!(whole.values, vec![1.5, 2.5]);
        assert_eq!(b.len(), 1);
        assert_eq!(b.held()[&("shap.results".to_string(), 1)], 11);
        // Partition 2's windows stay when partition 1 goes to another sink.
        b.forget_partition("shap.results", 2);
        assert_eq!(b.len(), 1);
        b.forget_partition("shap.results", 1);
        assert!(b.is_empty() && b.held().is_empty());
    }

    #[test]
    fn contradicting_parts_are_refused_and_stale_windows_expire() {
        let mut b = PartsBuffer::default();
        b.add(
            record("w", vec![1.0, 0.0]),
            Part { index: 0, count: 2 },
            at(1),
        )
        .unwrap();
        let err = b
            .add(
                record("w", vec![1.0, 0.0]),
                Part { index: 1, count: 4 },
                at(2),
            )
            .unwrap_err();
        assert!(err.contains("4 parts, earlier parts said 2"), "{err}");
        let mut other = record("w", vec![1.0, 0.0]);
        other.output = 7.0;
        let err = b
            .add(other, Part { index: 1, count: 2 }, at(3))
            .unwrap_err();
        assert!(err.contains("output 7"), "{err}");
        assert!(b.expired().is_empty());
        b.timeout = Duration::ZERO;
        std::thread::sleep(Duration::from_millis(2));
        let gone = b.expired();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].parts.len(), 1);
        assert!(b.is_empty());
    }
}
