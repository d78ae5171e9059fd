//! Station assembly: channels of one sensor become one 3-component stream on a 100 Hz grid.
//!
//! Policy (documented in the README, counted in [`AssemblyStats`]):
//! - Channels are grouped by NET.STA.LOC + band/instrument code; components Z/N/E or Z/1/2.
//!   A group without all three components produces no stream and is reported.
//! - Segments at other rates are resampled to 100 Hz (`resample_poly`, anti-alias FIR) one
//!   contiguous segment at a time; a rate with no rational ratio to 100 Hz is reported.
//! - Every segment is placed on the absolute grid `k · 10 ms` since the epoch, its start snapped
//!   to the nearest grid point (≤ 5 ms shift, counted when non-zero).
//! - Overlaps: the sample that arrived first wins; overlapping samples are counted.
//! - Gaps stay marked (NaN) here; the window cutter decides per window (see `window`).

use std::collections::BTreeMap;

use crate::miniseed::Trace;
use crate::resample::{rational_ratio, resample_poly};
use crate::stream::{ChannelId, ChannelOrder, Component, StationKey};
use crate::{TARGET_PERIOD_NS, TARGET_RATE_HZ};

/// Counters of what assembly had to repair or could not use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssemblyStats {
    /// Segments that were resampled to 100 Hz.
    pub resampled_segments: u64,
    /// Segments whose start was snapped onto the 10 ms grid.
    pub snapped_segments: u64,
    /// Samples dropped because another segment already covered that grid point.
    pub overlap_samples: u64,
}

impl std::ops::AddAssign<&AssemblyStats> for AssemblyStats {
    fn add_assign(&mut self, other: &AssemblyStats) {
        self.resampled_segments += other.resampled_segments;
        self.snapped_segments += other.snapped_segments;
        self.overlap_samples += other.overlap_samples;
    }
}

/// One sensor's three components on a shared 100 Hz grid; `NaN` marks missing samples.
#[derive(Clone, Debug)]
pub struct StationStream {
    pub key: StationKey,
    /// Grid index (units of 10 ms since the epoch) of the first sample.
    pub first_index: i64,
    /// Samples in channel order; all three have the same length.
    pub channels: [Vec<f64>; 3],
    pub order: ChannelOrder,
    /// Native rate of the recordings before resampling (the highest, if they differ).
    pub source_rate: f64,
    pub stats: AssemblyStats,
}

impl StationStream {
    pub fn len(&self) -> usize {
        self.channels[0].len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Time of sample `i`, ns since the epoch.
    pub fn time_ns(&self, i: usize) -> i64 {
        (self.first_index + i as i64) * TARGET_PERIOD_NS
    }

    pub fn resampled(&self) -> bool {
        self.stats.resampled_segments > 0
    }
}

/// Why some channels did not become part of a stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Unassembled {
    /// The channel code is not a 3-component orientation (e.g. hydrophone, LOG).
    NotAComponent(ChannelId),
    /// The sensor lacks one or more of its three components.
    Incomplete { key: StationKey, present: String },
    /// A segment's rate cannot be brought to 100 Hz by a rational factor.
    UnsupportedRate { id: ChannelId, rate: f64 },
}

impl std::fmt::Display for Unassembled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotAComponent(id) => write!(f, "{id}: not a Z/N/E or Z/1/2 component, ignored"),
            Self::Incomplete { key, present } => {
                write!(
                    f,
                    "{key}: only components [{present}] present, need 3; no windows"
                )
            }
            Self::UnsupportedRate { id, rate } => {
                write!(
                    f,
                    "{id}: {rate} Hz has no rational ratio to 100 Hz; segment ignored"
                )
            }
        }
    }
}

/// Result of assembling a set of traces.
#[derive(Clone, Debug, Default)]
pub struct Assembly {
    pub streams: Vec<StationStream>,
    pub unassembled: Vec<Unassembled>,
}

/// A segment already at 100 Hz, positioned on the grid.
struct GridSegment {
    first_index: i64,
    samples: Vec<f64>,
}

/// Brings one trace to the 100 Hz grid.
fn to_grid(trace: &Trace, stats: &mut AssemblyStats) -> Result<GridSegment, Unassembled> {
    let samples = if (trace.sample_rate - TARGET_RATE_HZ).abs() <= 1e-6 * TARGET_RATE_HZ {
        trace.samples.clone()
    } else {
        let (up, down) = rational_ratio(trace.sample_rate, TARGET_RATE_HZ).ok_or_else(|| {
            Unassembled::UnsupportedRate {
                id: trace.id.clone(),
                rate: trace.sample_rate,
            }
        })?;
        stats.resampled_segments += 1;
        resample_poly(&trace.samples, up, down)
    };
    let exact = trace.start_ns as f64 / TARGET_PERIOD_NS as f64;
    let first_index = exact.round() as i64;
    if first_index * TARGET_PERIOD_NS != trace.start_ns {
        stats.snapped_segments += 1;
    }
    Ok(GridSegment {
        first_index,
        samples,
    })
}

/// Groups traces into 3-component station streams (see the module docs for the policy).
pub fn assemble(traces: &[Trace], order: ChannelOrder) -> Assembly {
    let mut out = Assembly::default();
    // key -> component -> traces (in input order)
    let mut groups: BTreeMap<StationKey, BTreeMap<usize, Vec<&Trace>>> = BTreeMap::new();
    for trace in traces {
        let Some((key, code)) = trace.id.split_component() else {
            out.unassembled
                .push(Unassembled::NotAComponent(trace.id.clone()));
            continue;
        };
        let Some(component) = Component::from_code(code) else {
            out.unassembled
                .push(Unassembled::NotAComponent(trace.id.clone()));
            continue;
        };
        groups
            .entry(key)
            .or_default()
            .entry(order.index_of(component))
            .or_default()
            .push(trace);
    }
    for (key, comps) in groups {
        if comps.len() < 3 {
            let present: String = comps.keys().map(|&i| order.0[i].letter()).collect();
            out.unassembled
                .push(Unassembled::Incomplete { key, present });
            continue;
        }
        let mut stats = AssemblyStats::default();
        let mut segments: [Vec<GridSegment>; 3] = Default::default();
        let mut source_rate: f64 = 0.0;
        for (&ci, list) in &comps {
            for trace in list {
                match to_grid(trace, &mut stats) {
                    Ok(seg) => {
                        source_rate = source_rate.max(trace.sample_rate);
                        segments[ci].push(seg);
                    }
                    Err(why) => out.unassembled.push(why),
                }
            }
        }
        let all: Vec<&GridSegment> = segments.iter().flatten().collect();
        let (Some(first), Some(end)) = (
            all.iter().map(|s| s.first_index).min(),
            all.iter()
                .map(|s| s.first_index + s.samples.len() as i64)
                .max(),
        ) else {
            continue;
        };
        let len = (end - first) as usize;
        let mut channels: [Vec<f64>; 3] = [
            vec![f64::NAN; len],
            vec![f64::NAN; len],
            vec![f64::NAN; len],
        ];
        for (ci, segs) in segments.iter().enumerate() {
            for seg in segs {
                let offset = (seg.first_index - first) as usize;
                for (i, &v) in seg.samples.iter().enumerate() {
                    let slot = &mut channels[ci][offset + i];
                    if slot.is_nan() {
                        *slot = v;
                    } else {
                        stats.overlap_samples += 1;
                    }
                }
            }
        }
        out.streams.push(StationStream {
            key,
            first_index: first,
            channels,
            order,
            source_rate,
            stats,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(cha: &str, start_ns: i64, rate: f64, n: usize, value: f64) -> Trace {
        Trace {
            id: ChannelId::new("XX", "STA", "00", cha),
            start_ns,
            sample_rate: rate,
            samples: vec![value; n],
        }
    }

    #[test]
    fn builds_ordered_streams_with_gaps_and_overlaps() {
        let traces = vec![
            trace("HHZ", 0, 100.0, 100, 3.0),
            trace("HHN", 0, 100.0, 100, 1.0),
            trace("HHE", 0, 100.0, 40, 2.0),
            trace("HHE", 600_000_000, 100.0, 40, 2.0), // 20-sample gap, 40..60
            trace("HHE", 900_000_000, 100.0, 20, 9.0), // overlaps 90..100 by 10
        ];
        let asm = assemble(&traces, ChannelOrder::default());
        assert!(asm.unassembled.is_empty(), "{:?}", asm.unassembled);
        let s = &asm.streams[0];
        assert_eq!(s.key.to_string(), "XX.STA.00.HH");
        assert_eq!(s.len(), 110);
        assert_eq!(s.channels[0][0], 1.0); // N first
        assert_eq!(s.channels[1][0], 2.0); // then E
        assert_eq!(s.channels[2][0], 3.0); // then Z
        assert!(s.channels[1][40..60].iter().all(|v| v.is_nan()));
        assert_eq!(s.channels[1][95], 2.0, "first arrival wins");
        assert_eq!(s.channels[1][105], 9.0);
        assert_eq!(s.stats.overlap_samples, 10);
    }

    #[test]
    fn resamples_snaps_and_reports() {
        let traces = vec![
            trace("EHZ", 3_600_000, 125.0, 1250, 1.0),
            trace("EH1", 3_600_000, 125.0, 1250, 1.0),
            trace("EH2", 3_600_000, 125.0, 1250, 1.0),
            trace("BHZ", 0, 20.0, 10, 1.0),
            trace("HDH", 0, 100.0, 10, 1.0),
            trace("LHZ", 0, 99.973, 10, 1.0),
            trace("LHN", 0, 100.0, 10, 1.0),
            trace("LHE", 0, 100.0, 10, 1.0),
        ];
        let asm = assemble(&traces, ChannelOrder::default());
        let eh = asm.streams.iter().find(|s| s.key.band == "EH").unwrap();
        assert_eq!(eh.len(), 1000);
        assert_eq!(eh.stats.resampled_segments, 3);
        assert_eq!(eh.stats.snapped_segments, 3);
        assert_eq!(eh.source_rate, 125.0);
        assert!(eh.resampled());
        let msgs: Vec<String> = asm.unassembled.iter().map(|u| u.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("XX.STA.00.BH") && m.contains("[Z]")),
            "{msgs:?}"
        );
        assert!(msgs.iter().any(|m| m.contains("HDH")), "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("99.973")), "{msgs:?}");
    }
}
