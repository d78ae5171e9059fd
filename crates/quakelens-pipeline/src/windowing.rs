//! Windowing stage: station assembly and window cutting, incrementally, one station at a time.
//!
//! Each station's data is cut in fixed chunks of the absolute 100 Hz grid. A chunk is
//! processed once every component has data past its end plus a tail (or when the stream ends),
//! with a fixed amount of context before it, so the windows do not depend on how the data
//! arrived: the embedded run (all files at once) and the `windower` service (record by record
//! from Kafka) produce the same rows. Memory per station stays bounded by context + chunk + tail.

use std::collections::{BTreeMap, BTreeSet};

use quakelens_signal::assembly::{assemble, AssemblyStats};
use quakelens_signal::miniseed::Trace;
use quakelens_signal::stream::{ChannelId, ChannelOrder, Component, StationKey};
use quakelens_signal::window::{cut_windows_in, DropReason, DroppedWindow, Window, WindowMode};
use quakelens_signal::{TARGET_PERIOD_NS, TARGET_RATE_HZ};

use crate::config::PipelineConfig;

/// Windows and the accounting of everything that did not become a window.
#[derive(Debug, Default)]
pub struct Windowed {
    pub windows: Vec<Window>,
    pub streams: usize,
    pub unassembled: Vec<String>,
    pub dropped: Vec<DroppedWindow>,
    pub merged_onsets: usize,
    /// Chunks not cut again after a restart because their context was not replayed (their
    /// windows were emitted before the restart).
    pub skipped_chunks: usize,
    pub stats: AssemblyStats,
}

impl Windowed {
    pub(crate) fn absorb(&mut self, other: Windowed) {
        self.windows.extend(other.windows);
        self.streams += other.streams;
        self.unassembled.extend(other.unassembled);
        self.dropped.extend(other.dropped);
        self.merged_onsets += other.merged_onsets;
        self.skipped_chunks += other.skipped_chunks;
        self.stats += &other.stats;
    }
}

/// Chunk geometry on the 100 Hz grid (samples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Windows are anchored (onset or start) in `[k·chunk, (k+1)·chunk)`.
    pub chunk: i64,
    /// Context before a chunk: trigger warm-up and the event-merge horizon.
    pub context: i64,
    /// Data after a chunk: the longest window tail.
    pub tail: i64,
}

impl ChunkPlan {
    /// The plan for `mode` with chunks of `chunk_s` seconds. Shorter chunks cut windows sooner
    /// after their end (latency ≈ one chunk) at the price of recomputing the context per chunk.
    pub fn new(mode: &WindowMode, chunk_s: f64) -> Self {
        let samples = |s: f64| (s * TARGET_RATE_HZ).round() as i64;
        let chunk = samples(chunk_s).max(1);
        match mode {
            WindowMode::Event {
                trigger, post_s, ..
            } => Self {
                chunk,
                // Two LTA lengths settle the recursive STA/LTA; onsets up to post_s before the
                // chunk decide merges, and they need their own warm-up.
                context: 2 * samples(trigger.lta_s) + samples(*post_s),
                // The window after the onset; the trigger's peak ratio is taken within it.
                tail: samples(*post_s),
            },
            WindowMode::Sliding { length_s, .. } => Self {
                chunk,
                context: 0,
                tail: samples(*length_s),
            },
        }
    }

    pub fn for_config(cfg: &PipelineConfig) -> Self {
        Self::new(&cfg.mode, cfg.chunk_s)
    }

    /// Grid span `[start, end)` that chunk `k` is cut from.
    fn span(&self, k: i64) -> (i64, i64) {
        (
            k * self.chunk - self.context,
            (k + 1) * self.chunk + self.tail,
        )
    }
}

fn grid_of(ns: i64) -> i64 {
    (ns as f64 / TARGET_PERIOD_NS as f64).round() as i64
}

/// Grid index just past a trace's last sample.
fn end_grid(t: &Trace) -> i64 {
    grid_of(t.next_ns())
}

/// The part of `t` whose samples fall in grid span `[a, b)`.
fn clip(t: &Trace, a: i64, b: i64) -> Option<Trace> {
    let period = t.period_ns();
    let index_at = |grid: i64| -> usize {
        let ns = grid
            .saturating_mul(TARGET_PERIOD_NS)
            .saturating_sub(t.start_ns) as f64;
        // Samples within half a grid step of the boundary belong to the later side.
        ((ns - 0.5 * TARGET_PERIOD_NS as f64) / period)
            .ceil()
            .clamp(0.0, t.samples.len() as f64) as usize
    };
    let (i0, i1) = (index_at(a), index_at(b));
    if i0 >= i1 {
        return None;
    }
    Some(Trace {
        id: t.id.clone(),
        start_ns: t.start_ns + (i0 as f64 * period).round() as i64,
        sample_rate: t.sample_rate,
        samples: t.samples[i0..i1].to_vec(),
    })
}

/// How far [`StationWindower::advance`] cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flush {
    /// Chunks every component has data for, window tails included.
    No,
    /// The station was silent for a while: chunks whose span the newest data of any component
    /// covers (a dead component does not hold the others back), then chunks near the end whose
    /// windows are all whole already. A chunk with a window whose tail has not arrived stays
    /// uncut, with every chunk after it: a lagging feed that resumes loses no onset.
    Idle,
    /// No more data will come: everything that is there, incomplete windows reported as dropped.
    End,
}

/// Whether chunk `k`, cut from data ending at `data_end` (`cut`), anchors a window whose data has
/// not all arrived.
fn waits_for_data(
    mode: &WindowMode,
    plan: &ChunkPlan,
    k: i64,
    data_end: i64,
    cut: &Windowed,
) -> bool {
    match mode {
        // Onsets are known only by cutting; one whose window does not fit is reported as
        // outside the data.
        WindowMode::Event { .. } => cut
            .dropped
            .iter()
            .any(|d| d.reason == DropReason::OutsideData),
        // Grid starts whose window does not fit are not candidates at all: the chunk's last
        // start tells.
        WindowMode::Sliding { step_s, .. } => {
            let step = ((step_s * TARGET_RATE_HZ).round() as i64).max(1);
            let last = ((k + 1) * plan.chunk - 1).div_euclid(step) * step;
            last >= k * plan.chunk && last + plan.tail > data_end
        }
    }
}

/// One station's buffered data and progress.
pub struct StationWindower {
    key: StationKey,
    traces: Vec<Trace>,
    next_chunk: Option<i64>,
    /// First grid index received in this process: chunks needing earlier context were cut
    /// before a restart (if `resumed`) and are skipped.
    history_start: Option<i64>,
    resumed: bool,
}

impl StationWindower {
    pub fn new(key: StationKey, resumed: bool) -> Self {
        Self {
            key,
            traces: Vec::new(),
            next_chunk: None,
            history_start: None,
            resumed,
        }
    }

    pub fn key(&self) -> &StationKey {
        &self.key
    }

    /// Adds a record or trace, joining it to a contiguous predecessor of the same channel.
    /// Data for chunks already cut (late records) is ignored and counted.
    pub fn push(&mut self, trace: Trace, plan: &ChunkPlan) -> usize {
        if trace.samples.is_empty() {
            return 0;
        }
        let start = grid_of(trace.start_ns);
        self.history_start = Some(self.history_start.map_or(start, |h| h.min(start)));
        if self.next_chunk.is_none() {
            self.next_chunk = Some(start.div_euclid(plan.chunk));
        }
        let cut_until = self.next_chunk.unwrap_or(0) * plan.chunk - plan.context;
        if end_grid(&trace) <= cut_until {
            return trace.samples.len();
        }
        let joinable = self.traces.iter_mut().rev().find(|t| {
            t.id == trace.id
                && (t.sample_rate - trace.sample_rate).abs() <= 1e-4 * t.sample_rate
                && ((trace.start_ns - t.next_ns()).abs() as f64) <= 0.5 * t.period_ns()
        });
        match joinable {
            Some(t) => t.samples.extend_from_slice(&trace.samples),
            None => self.traces.push(trace),
        }
        0
    }

    /// Grid index up to which every component has data (`None` until all three have some).
    fn watermark(&self, order: ChannelOrder) -> Option<i64> {
        let mut ends: [Option<i64>; 3] = [None; 3];
        for t in &self.traces {
            let Some(c) =
                t.id.split_component()
                    .and_then(|(_, code)| Component::from_code(code))
            else {
                continue;
            };
            let slot = &mut ends[order.index_of(c)];
            *slot = Some(slot.map_or(end_grid(t), |e| e.max(end_grid(t))));
        }
        Some(ends[0]?.min(ends[1]?).min(ends[2]?))
    }

    fn data_end(&self) -> Option<i64> {
        self.traces.iter().map(end_grid).max()
    }

    /// Oldest grid index still needed; records ending before it may be committed.
    pub fn retained_from(&self, plan: &ChunkPlan) -> Option<i64> {
        self.next_chunk.map(|k| plan.span(k).0)
    }

    /// Cuts every chunk that `flush` says is ready.
    pub fn advance(&mut self, cfg: &PipelineConfig, plan: &ChunkPlan, flush: Flush) -> Windowed {
        let mut out = Windowed::default();
        let (Some(data_end), Some(mut k)) = (self.data_end(), self.next_chunk) else {
            return out;
        };
        // Chunk k is complete when its whole span is covered: (k+1)·chunk + tail ≤ the end of
        // the data (of every component; of any, once idle).
        let complete = match flush {
            Flush::No => match self.watermark(cfg.order) {
                Some(w) => w - plan.tail,
                None => return out,
            },
            Flush::Idle | Flush::End => data_end - plan.tail,
        };
        loop {
            // Chunks whose span holds no data cut nothing: jump to the first one that holds the
            // next buffered sample, so a record far ahead in time (a wrong clock, a crafted
            // header) costs one step, not one per second in between.
            if let Some(next) = self.first_sample_from(plan.span(k).0) {
                k = k.max((next - plan.tail).div_euclid(plan.chunk));
            }
            let started = k * plan.chunk < data_end;
            if (k + 1) * plan.chunk <= complete || (flush == Flush::End && started) {
                self.cut_chunk(k, cfg, plan, &mut out);
            } else if flush == Flush::Idle && started {
                // A chunk near the end of an idle station: cut only if every window it anchors
                // is already whole, else wait; more data may still come.
                let mut trial = Windowed::default();
                self.cut_chunk(k, cfg, plan, &mut trial);
                if waits_for_data(&cfg.mode, plan, k, data_end, &trial) {
                    break;
                }
                out.absorb(trial);
            } else {
                break;
            }
            k += 1;
            self.next_chunk = Some(k);
            self.trim(plan.span(k).0);
        }
        out
    }

    /// Grid index of the first buffered sample at or after `from`.
    fn first_sample_from(&self, from: i64) -> Option<i64> {
        self.traces
            .iter()
            .filter(|t| end_grid(t) > from)
            .map(|t| grid_of(t.start_ns).max(from))
            .min()
    }

    fn cut_chunk(&self, k: i64, cfg: &PipelineConfig, plan: &ChunkPlan, out: &mut Windowed) {
        let (a, b) = plan.span(k);
        if self.resumed && self.history_start.is_some_and(|h| h > a) {
            out.skipped_chunks += 1;
            return;
        }
        let clipped: Vec<Trace> = self.traces.iter().filter_map(|t| clip(t, a, b)).collect();
        if clipped.is_empty() {
            return;
        }
        let asm = assemble(&clipped, cfg.order);
        out.unassembled
            .extend(asm.unassembled.iter().map(|u| u.to_string()));
        if !asm.streams.is_empty() {
            out.streams = 1;
        }
        for stream in &asm.streams {
            out.stats += &stream.stats;
            let core = k * plan.chunk..(k + 1) * plan.chunk;
            let cut = cut_windows_in(stream, &cfg.mode, cfg.gaps, core);
            out.windows.extend(cut.windows);
            out.dropped.extend(cut.dropped);
            out.merged_onsets += cut.merged_onsets;
        }
    }

    /// Drops samples before grid index `from`: whole traces at once, the front of a trace only
    /// once it is at least as long as the rest (so a day-long trace is copied O(1) times, not
    /// once per chunk; the buffer stays within twice what the next chunk needs).
    fn trim(&mut self, from: i64) {
        self.traces.retain(|t| end_grid(t) > from);
        for t in &mut self.traces {
            let dead = (from - grid_of(t.start_ns)).max(0) as f64 * t.sample_rate / TARGET_RATE_HZ;
            if dead >= 0.5 * t.samples.len() as f64 {
                if let Some(kept) = clip(t, from, i64::MAX) {
                    *t = kept;
                }
            }
        }
    }

    /// Samples buffered (all channels), for memory accounting.
    pub fn buffered_samples(&self) -> usize {
        self.traces.iter().map(|t| t.samples.len()).sum()
    }
}

/// Station key of a channel, or why it cannot be part of a 3-component stream.
pub fn station_of(trace: &Trace) -> Result<StationKey, String> {
    component_station(&trace.id)
        .ok_or_else(|| format!("{}: not a Z/N/E or Z/1/2 component, ignored", trace.id))
}

/// The station a channel is a component of; `None` for channels that are not one (`BDH`, `LOG`).
pub fn component_station(id: &ChannelId) -> Option<StationKey> {
    match id.split_component() {
        Some((key, code)) if Component::from_code(code).is_some() => Some(key),
        _ => None,
    }
}

/// Windows of a finite set of traces (the embedded run): every station pushed, then flushed.
pub fn window_traces(traces: Vec<Trace>, cfg: &PipelineConfig) -> Windowed {
    let plan = ChunkPlan::for_config(cfg);
    let mut stations: BTreeMap<StationKey, StationWindower> = BTreeMap::new();
    let mut out = Windowed::default();
    let mut not_components = BTreeSet::new();
    for trace in traces {
        match station_of(&trace) {
            Ok(key) => {
                stations
                    .entry(key.clone())
                    .or_insert_with(|| StationWindower::new(key, false))
                    .push(trace, &plan);
            }
            Err(why) => {
                not_components.insert(why);
            }
        }
    }
    let results: Vec<Windowed> = {
        use rayon::prelude::*;
        let mut list: Vec<StationWindower> = stations.into_values().collect();
        list.par_iter_mut()
            .map(|s| {
                let mut w = s.advance(cfg, &plan, Flush::End);
                // An incomplete station reports the same problem for every chunk: once is enough.
                dedup_in_order(&mut w.unassembled);
                w
            })
            .collect()
    };
    for r in results {
        out.absorb(r);
    }
    out.unassembled.extend(not_components);
    out.windows
        .sort_by(|a, b| (&a.station, a.start_ns).cmp(&(&b.station, b.start_ns)));
    out
}

/// Removes repeated lines, keeping the first of each.
pub fn dedup_in_order(lines: &mut Vec<String>) {
    let mut seen = BTreeSet::new();
    lines.retain(|l| seen.insert(l.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use quakelens_signal::stream::ChannelId;

    /// Deterministic noise with a loud 6 s burst starting at each of `bursts` (sample indices).
    fn noise_trace(cha: &str, start_s: i64, n: usize, bursts: &[usize]) -> Trace {
        let samples = (0..n)
            .map(|i| {
                let base = ((i * 7919 + cha.len() * 31) % 101) as f64 - 50.0;
                if bursts.iter().any(|&b| (b..b + 600).contains(&i)) {
                    base * 40.0
                } else {
                    base
                }
            })
            .collect();
        Trace {
            id: ChannelId::new("XX", "STA", "", cha),
            start_ns: start_s * 1_000_000_000,
            sample_rate: 100.0,
            samples,
        }
    }

    /// The three components of one station, from the same noise and bursts.
    fn station_traces(start_s: i64, n: usize, bursts: &[usize]) -> Vec<Trace> {
        ["HHZ", "HHN", "HHE"]
            .iter()
            .map(|c| noise_trace(c, start_s, n, bursts))
            .collect()
    }

    fn records(t: &Trace, per: usize) -> Vec<Trace> {
        t.samples
            .chunks(per)
            .enumerate()
            .map(|(i, c)| Trace {
                id: t.id.clone(),
                start_ns: t.start_ns + (i * per) as i64 * TARGET_PERIOD_NS,
                sample_rate: t.sample_rate,
                samples: c.to_vec(),
            })
            .collect()
    }

    #[test]
    fn record_by_record_equals_all_at_once() {
        let cfg = PipelineConfig::new(None);
        // Two events 220 s apart: two windows, each cut from its own chunk.
        let traces = station_traces(1_000_000, 60_000, &[9_000, 31_000]);
        let batch = window_traces(traces.clone(), &cfg);
        assert_eq!(batch.windows.len(), 2, "{:?}", batch.dropped);

        // Interleaved records, cut as the watermark advances, with trimming in between.
        let plan = ChunkPlan::for_config(&cfg);
        let key = station_of(&traces[0]).unwrap();
        let mut station = StationWindower::new(key, false);
        let mut streamed = Windowed::default();
        let per_channel: Vec<Vec<Trace>> = traces.iter().map(|t| records(t, 412)).collect();
        for i in 0..per_channel[0].len() {
            for ch in &per_channel {
                station.push(ch[i].clone(), &plan);
            }
            streamed.absorb(station.advance(&cfg, &plan, Flush::No));
            // Context + chunk + tail is 7,500 samples a channel; trimming keeps at most twice that.
            assert!(
                station.buffered_samples() < 3 * 15_500,
                "memory stays bounded"
            );
        }
        streamed.absorb(station.advance(&cfg, &plan, Flush::End));
        assert_eq!(streamed.windows, batch.windows);
    }

    #[test]
    fn an_idle_flush_keeps_onsets_whose_tail_has_not_arrived() {
        let cfg = PipelineConfig::new(None);
        let plan = ChunkPlan::for_config(&cfg);
        let traces = station_traces(1_000_000, 12_000, &[6_000]);
        let all = window_traces(traces.clone(), &cfg);
        assert_eq!(all.windows.len(), 1, "{:?}", all.dropped);

        // A live feed stalls 10 s after the onset (its window needs 20), and the station is
        // flushed as idle; then the feed resumes where it stopped.
        let key = station_of(&traces[0]).unwrap();
        let mut station = StationWindower::new(key, false);
        let mut streamed = Windowed::default();
        let split = 7_000;
        for t in &traces {
            station.push(
                clip(t, grid_of(t.start_ns), grid_of(t.start_ns) + split).unwrap(),
                &plan,
            );
        }
        streamed.absorb(station.advance(&cfg, &plan, Flush::No));
        streamed.absorb(station.advance(&cfg, &plan, Flush::Idle));
        assert!(streamed.windows.is_empty() && streamed.dropped.is_empty());
        for t in &traces {
            station.push(
                clip(t, grid_of(t.start_ns) + split, i64::MAX).unwrap(),
                &plan,
            );
        }
        streamed.absorb(station.advance(&cfg, &plan, Flush::No));
        streamed.absorb(station.advance(&cfg, &plan, Flush::End));
        assert_eq!(streamed.windows, all.windows);
        assert!(streamed.dropped.is_empty(), "{:?}", streamed.dropped);
    }

    #[test]
    fn an_idle_flush_cuts_the_sliding_windows_that_fit_and_waits_for_the_next() {
        let mut cfg = PipelineConfig::new(None);
        cfg.mode = WindowMode::Sliding {
            length_s: 25.0,
            step_s: 5.0,
        };
        let plan = ChunkPlan::for_config(&cfg);
        let traces = station_traces(1_000_000, 3_500, &[]);
        let key = station_of(&traces[0]).unwrap();
        let mut station = StationWindower::new(key, false);
        let (first, rest) = (1_000_000 * 100, 1_000_000 * 100 + 3_000);
        for t in &traces {
            station.push(clip(t, first, rest).unwrap(), &plan);
        }
        // 30 s of data: the windows at 0 and 5 s are whole, the one at 10 s waits for data.
        let seconds = |w: &Windowed| -> Vec<i64> {
            w.windows
                .iter()
                .map(|w| w.start_ns / 1_000_000_000 - 1_000_000)
                .collect()
        };
        let idle = station.advance(&cfg, &plan, Flush::Idle);
        assert_eq!(seconds(&idle), [0, 5]);
        for t in &traces {
            station.push(clip(t, rest, i64::MAX).unwrap(), &plan);
        }
        let end = station.advance(&cfg, &plan, Flush::End);
        assert_eq!(seconds(&end), [10]);
    }

    #[test]
    fn an_idle_flush_cuts_past_a_dead_component() {
        let cfg = PipelineConfig::new(None);
        let plan = ChunkPlan::for_config(&cfg);
        let traces = station_traces(1_000_000, 12_000, &[4_000]);
        let key = station_of(&traces[0]).unwrap();
        let mut station = StationWindower::new(key, false);
        // HHE stops after 30 s; the others go on.
        for t in &traces {
            let end = if t.id.channel == "HHE" { 3_000 } else { 12_000 };
            station.push(
                clip(t, grid_of(t.start_ns), grid_of(t.start_ns) + end).unwrap(),
                &plan,
            );
        }
        let held = station.advance(&cfg, &plan, Flush::No);
        assert!(held.windows.is_empty() && held.dropped.is_empty());
        let idle = station.advance(&cfg, &plan, Flush::Idle);
        // The onset's chunk is cut now: its window lacks a component and is reported, not held.
        assert!(
            !idle.unassembled.is_empty() || !idle.dropped.is_empty(),
            "{idle:?}"
        );
        // And it went on to the end of the live components' data: no window there waits.
        let next = station.retained_from(&plan).unwrap() + plan.context;
        assert_eq!(next, 1_000_000 * 100 + 12_000);
    }

    #[test]
    fn a_record_decades_ahead_is_reached_in_one_step() {
        let cfg = PipelineConfig::new(None);
        let plan = ChunkPlan::for_config(&cfg);
        let key = station_of(&noise_trace("HHZ", 0, 1, &[])).unwrap();
        let mut station = StationWindower::new(key, false);
        for c in ["HHZ", "HHN", "HHE"] {
            station.push(noise_trace(c, 1_000_000, 6_000, &[]), &plan);
            // The same channel, stamped 50 years later.
            station.push(
                noise_trace(c, 1_000_000 + 50 * 365 * 86_400, 6_000, &[]),
                &plan,
            );
        }
        let started = std::time::Instant::now();
        let cut = station.advance(&cfg, &plan, Flush::End);
        assert!(cut.windows.is_empty());
        // 1.6 billion one-second chunks in between, skipped rather than visited.
        assert!(
            started.elapsed().as_secs_f64() < 5.0,
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_resumed_station_skips_chunks_without_context() {
        let cfg = PipelineConfig::new(None);
        let plan = ChunkPlan::for_config(&cfg);
        let traces = station_traces(1_000_007, 20_000, &[]);
        let key = station_of(&traces[0]).unwrap();
        let mut fresh = StationWindower::new(key.clone(), false);
        let mut resumed = StationWindower::new(key, true);
        for t in &traces {
            fresh.push(t.clone(), &plan);
            resumed.push(t.clone(), &plan);
        }
        assert_eq!(fresh.advance(&cfg, &plan, Flush::End).skipped_chunks, 0);
        let r = resumed.advance(&cfg, &plan, Flush::End);
        // Data starts at 1_000_007 s: the chunks of the first 30 s (the context) are skipped.
        assert_eq!(r.skipped_chunks, 30);
    }

    #[test]
    fn clip_keeps_grid_samples_in_span() {
        let t = noise_trace("HHZ", 10, 1000, &[]);
        let c = clip(&t, 1005, 1010).unwrap();
        assert_eq!(c.samples, t.samples[5..10].to_vec());
        assert_eq!(grid_of(c.start_ns), 1005);
        assert!(clip(&t, 0, 1000).is_none());
    }
}
