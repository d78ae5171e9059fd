//! Labelling stage: attach catalogue events (class, magnitude) to the windows that saw them.

use std::collections::HashMap;

use quakelens_lake::{Keyed, WindowRecord};
use quakelens_synth::CatalogEvent;

/// Catalogue events by station, sorted by P time.
pub struct Labeller {
    by_station: HashMap<String, Vec<CatalogEvent>>,
    tolerance_ns: i64,
}

impl Labeller {
    pub fn new(events: Vec<CatalogEvent>, tolerance_s: f64) -> Self {
        let mut by_station: HashMap<String, Vec<CatalogEvent>> = HashMap::new();
        for e in events {
            by_station.entry(e.station.clone()).or_default().push(e);
        }
        for list in by_station.values_mut() {
            list.sort_by_key(|e| e.p_ns);
        }
        Self {
            by_station,
            tolerance_ns: (tolerance_s * 1e9) as i64,
        }
    }

    /// The event a window belongs to: for event windows, the catalogued P nearest the trigger
    /// onset within the tolerance; for sliding windows, a P inside the window.
    pub fn find(&self, r: &WindowRecord) -> Option<&CatalogEvent> {
        let list = self.by_station.get(&r.key().stream())?;
        match r.onset_ns {
            Some(onset) => list
                .iter()
                .filter(|e| (e.p_ns - onset).abs() <= self.tolerance_ns)
                .min_by_key(|e| (e.p_ns - onset).abs()),
            None => list
                .iter()
                .find(|e| e.p_ns >= r.start_ns && e.p_ns < r.end_ns),
        }
    }

    /// Labels records in place; returns how many matched an event.
    pub fn label(&self, records: &mut [WindowRecord]) -> usize {
        let mut matched = 0;
        for r in records.iter_mut() {
            if let Some(e) = self.find(r).cloned() {
                r.event_id = Some(e.event_id);
                r.label = Some(e.class.label());
                r.magnitude = Some(e.magnitude);
                matched += 1;
            }
        }
        matched
    }
}
