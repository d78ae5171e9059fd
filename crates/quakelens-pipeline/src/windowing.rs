//! Windowing stage: station assembly and window cutting, incrementally, one station at a time.
//!
//! Each station's data is cut in fixed chunks of the absolute 100 Hz grid. A chunk is cut once
//! every component has data past its end plus a tail (or when the stream ends). Its onsets come
//! from a streaming picker that each sample passes through once; the picker restarts from rest
//! at a fixed warm-up before every trigger epoch of the grid, so the windows depend on the data
//! alone, not on how it arrived: the embedded run (all files at once) and the `windower` service
//! (record by record from Kafka, restarted anywhere) produce the same rows. Memory per station
//! stays bounded by the next chunk's window span.

use std::collections::{BTreeMap, BTreeSet};

use std::collections::VecDeque;

use quakelens_signal::assembly::{assemble, Assembly, AssemblyStats};
use quakelens_signal::miniseed::Trace;
use quakelens_signal::picker::{Pick, Picker};
use quakelens_signal::stream::{ChannelId, ChannelOrder, Component, StationKey};
use quakelens_signal::trigger::TriggerConfig;
use quakelens_signal::window::{
    cut_at, event_candidates, sliding_candidates, DropReason, DroppedWindow, Window, WindowMode,
};
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

/// Chunk and trigger geometry on the 100 Hz grid (samples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Windows are anchored (onset or start) in `[k·chunk, (k+1)·chunk)`.
    pub chunk: i64,
    /// Trigger warm-up before an epoch: two LTA lengths settle the STA/LTA, and onsets up to
    /// `post_s` before the epoch decide merges. A multiple of `chunk`.
    pub warmup: i64,
    /// Data after a chunk: the longest window tail (the onset's peak ratio is taken within it).
    pub tail: i64,
    /// Samples before the onset in an event window.
    pub pre: i64,
    /// The picker restarts from rest at the warm-up before every multiple of `epoch` (a
    /// multiple of `chunk`): onsets in `[e·epoch, (e+1)·epoch)` come from the picker started at
    /// `e·epoch − warmup`, so they depend on the data alone, not on when it arrived or where a
    /// restart replayed it from.
    pub epoch: i64,
    /// Data beyond a piece's edges that its assembly sees, so resampling's edge effects stay
    /// outside the samples used.
    pub margin: i64,
}

/// Trigger epoch length (s): each picker runs `(epoch + warm-up + tail) / epoch` ≈ 1.17 times
/// over the data, and a restart replays at most one epoch plus the warm-up.
const EPOCH_S: f64 = 300.0;
/// Assembly margin (s): above the resampling filter's half length for 20–200 Hz recordings.
const MARGIN_S: f64 = 1.0;

impl ChunkPlan {
    /// The plan for `mode` with chunks of `chunk_s` seconds. Shorter chunks cut windows sooner
    /// after their end (latency ≈ one chunk).
    pub fn new(mode: &WindowMode, chunk_s: f64) -> Self {
        let samples = |s: f64| (s * TARGET_RATE_HZ).round() as i64;
        let chunk = samples(chunk_s).max(1);
        let whole_chunks =
            |n: i64| n.div_euclid(chunk) * chunk + if n % chunk == 0 { 0 } else { chunk };
        let margin = samples(MARGIN_S);
        match mode {
            WindowMode::Event {
                trigger,
                pre_s,
                post_s,
            } => {
                let (warmup, tail) = (
                    whole_chunks(2 * samples(trigger.lta_s) + samples(*post_s)),
                    samples(*post_s),
                );
                Self {
                    chunk,
                    warmup,
                    tail,
                    pre: samples(*pre_s),
                    epoch: whole_chunks(samples(EPOCH_S).max(2 * (warmup + tail))),
                    margin,
                }
            }
            WindowMode::Sliding { length_s, .. } => Self {
                chunk,
                warmup: 0,
                tail: samples(*length_s),
                pre: 0,
                epoch: chunk,
                margin,
            },
        }
    }

    pub fn for_config(cfg: &PipelineConfig) -> Self {
        Self::new(&cfg.mode, cfg.chunk_s)
    }

    /// The epoch whose onsets chunk `k` anchors.
    fn epoch_of(&self, k: i64) -> i64 {
        (k * self.chunk).div_euclid(self.epoch)
    }

    /// Where epoch `e`'s picker starts.
    fn epoch_start(&self, e: i64) -> i64 {
        e * self.epoch - self.warmup
    }

    /// Whether chunk `k` of a station whose replay after a restart begins at grid index `h` was
    /// cut before the restart. The replay begins at the oldest record the last run still
    /// needed (see [`StationWindower::retained_from`]): the warm-up of the epoch it was in. So
    /// a replay that begins late in an epoch (in its last warm-up, margin and one warm-up
    /// more for the record's length) without covering that epoch's start means the epoch was
    /// done; anywhere else the station's data really begins at `h`, and its picker starts
    /// there as it did in the last run.
    fn finished_before(&self, k: i64, h: i64) -> bool {
        let e = self.epoch_of(k);
        let late_in_epoch = (e + 1) * self.epoch - h <= 2 * self.warmup + self.margin;
        h > self.epoch_start(e) - self.margin && late_in_epoch
    }

    /// How far the picker must be fed before chunk `k` is cut: past the chunk's window tail,
    /// rounded up to a whole piece.
    fn trigger_needed(&self, k: i64) -> i64 {
        self.piece_end((k + 1) * self.chunk + self.tail - 1)
    }

    /// The end of the piece of `chunk` samples that holds grid index `at`, rounded up.
    fn piece_end(&self, at: i64) -> i64 {
        (at.div_euclid(self.chunk) + 1) * self.chunk
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

/// The station stream over grid span `[a, b)`, assembled from `traces` seen `margin` beyond it.
fn assemble_span(traces: &[Trace], a: i64, b: i64, margin: i64, order: ChannelOrder) -> Assembly {
    let clipped: Vec<Trace> = traces
        .iter()
        .filter_map(|t| clip(t, a - margin, b + margin))
        .collect();
    if clipped.is_empty() {
        return Assembly::default();
    }
    assemble(&clipped, order)
}

/// How far [`StationWindower::advance`] cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Flush {
    /// Chunks every component has data for, window tails included.
    No,
    /// The station was silent for a while: chunks whose span the newest data of any component
    /// covers (a dead component does not hold the others back; the trigger counts it as
    /// silence there), then chunks near the end whose windows are all whole already. A chunk
    /// with a window whose tail has not arrived stays uncut, with every chunk after it: a
    /// lagging feed that resumes loses no onset.
    Idle,
    /// No more data will come: everything that is there, incomplete windows reported as dropped.
    End,
}

/// What the trigger front reads its pieces from.
#[derive(Clone, Copy)]
struct FeedSource<'a> {
    traces: &'a [Trace],
    trigger: &'a TriggerConfig,
    plan: &'a ChunkPlan,
    order: ChannelOrder,
}

/// The pickers of a station and how far they have been fed.
#[derive(Clone, Debug, Default)]
struct TriggerFront {
    /// Grid index up to which the data was fed.
    fed_to: i64,
    /// One picker per epoch whose span `[start, end + tail)` holds `fed_to`, oldest first.
    pickers: VecDeque<(i64, Picker)>,
    /// Samples fed to pickers so far (each picker counted), to check the cost.
    fed_samples: u64,
}

impl TriggerFront {
    fn at_epoch(plan: &ChunkPlan, e: i64) -> Self {
        Self {
            fed_to: plan.epoch_start(e),
            pickers: VecDeque::new(),
            fed_samples: 0,
        }
    }

    fn picker(&mut self, e: i64) -> Option<&mut Picker> {
        self.pickers
            .iter_mut()
            .find(|(pe, _)| *pe == e)
            .map(|(_, p)| p)
    }

    /// Feeds the stream up to grid index `to` in pieces of whole chunks (the last one may end at
    /// `to` when `partial`), each assembled with the plan's margin, so that every run over the
    /// same data assembles the same pieces. Each piece goes to every epoch's picker whose span
    /// holds it.
    fn feed(&mut self, to: i64, partial: bool, source: &FeedSource, out: &mut Windowed) {
        let FeedSource {
            traces,
            trigger,
            plan,
            order,
        } = *source;
        while self.fed_to < to {
            let at = self.fed_to;
            let end = match plan.piece_end(at) {
                e if e <= to => e,
                _ if partial => to,
                _ => break,
            };
            let newest = (at + plan.warmup).div_euclid(plan.epoch);
            if self.picker(newest).is_none() {
                let picker = Picker::new(trigger, plan.tail as usize, at);
                self.pickers.push_back((newest, picker));
            }
            let asm = assemble_span(traces, at, end, plan.margin, order);
            out.unassembled
                .extend(asm.unassembled.iter().map(|u| u.to_string()));
            let n = (end - at) as usize;
            let mut piece: [Vec<f64>; 3] = std::array::from_fn(|_| vec![f64::NAN; n]);
            if let Some(stream) = asm.streams.first() {
                out.streams = 1;
                // The stream may begin or end anywhere in the margins, on either side of the
                // piece: only the grid span both cover is copied.
                for (dst, src) in piece.iter_mut().zip(&stream.channels) {
                    let lo = at.max(stream.first_index);
                    let hi = end.min(stream.first_index + src.len() as i64);
                    if lo < hi {
                        let (d, s) = ((lo - at) as usize, (lo - stream.first_index) as usize);
                        let len = (hi - lo) as usize;
                        dst[d..d + len].copy_from_slice(&src[s..s + len]);
                    }
                }
            }
            let [a, b, c] = &piece;
            for (e, p) in self.pickers.iter_mut() {
                if at < (*e + 1) * plan.epoch + plan.tail {
                    p.feed([a, b, c]);
                    if !asm.streams.is_empty() {
                        self.fed_samples += n as u64;
                    }
                }
            }
            self.fed_to = end;
        }
    }

    fn finish(&mut self) {
        self.pickers.iter_mut().for_each(|(_, p)| p.finish());
    }
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
        WindowMode::Sliding { .. } => {
            let step = mode.sliding_step().unwrap_or(1);
            let last = ((k + 1) * plan.chunk - 1).div_euclid(step) * step;
            last >= k * plan.chunk && last + plan.tail > data_end
        }
    }
}

/// One station's buffered data, trigger state and progress.
pub struct StationWindower {
    key: StationKey,
    traces: Vec<Trace>,
    next_chunk: Option<i64>,
    /// First grid index received in this process: chunks needing earlier data were cut
    /// before a restart (if `resumed`) and are skipped.
    history_start: Option<i64>,
    resumed: bool,
    front: Option<TriggerFront>,
}

impl StationWindower {
    pub fn new(key: StationKey, resumed: bool) -> Self {
        Self {
            key,
            traces: Vec::new(),
            next_chunk: None,
            history_start: None,
            resumed,
            front: None,
        }
    }

    pub fn key(&self) -> &StationKey {
        &self.key
    }

    /// Oldest grid index the next cuts read: the trigger's next piece and the next chunk's
    /// windows, each with its assembly margin.
    fn needed_from(&self, plan: &ChunkPlan) -> Option<i64> {
        let k = self.next_chunk?;
        let fed = self
            .front
            .as_ref()
            .map_or(plan.epoch_start(plan.epoch_of(k)), |f| f.fed_to);
        Some(fed.min(k * plan.chunk - plan.pre) - plan.margin)
    }

    /// Adds a record or trace, joining it to a contiguous predecessor of the same channel.
    /// Data before what the next cuts read (late records) is ignored and counted.
    pub fn push(&mut self, trace: Trace, plan: &ChunkPlan) -> usize {
        if trace.samples.is_empty() {
            return 0;
        }
        let start = grid_of(trace.start_ns);
        self.history_start = Some(self.history_start.map_or(start, |h| h.min(start)));
        if self.next_chunk.is_none() {
            self.next_chunk = Some(start.div_euclid(plan.chunk));
        }
        if self
            .needed_from(plan)
            .is_some_and(|from| end_grid(&trace) <= from)
        {
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

    /// Oldest grid index a restart must replay to cut the next chunk as this run does (the
    /// start of its epoch's picker); records ending before it may be committed.
    pub fn retained_from(&self, plan: &ChunkPlan) -> Option<i64> {
        let k = self.next_chunk?;
        Some(plan.epoch_start(plan.epoch_of(k)) - plan.margin)
    }

    /// Cuts every chunk that `flush` says is ready.
    pub fn advance(&mut self, cfg: &PipelineConfig, plan: &ChunkPlan, flush: Flush) -> Windowed {
        let mut out = Windowed::default();
        let (Some(data_end), Some(mut k)) = (self.data_end(), self.next_chunk) else {
            return out;
        };
        // Chunk k is complete when the data reaches past its tail (and the margin): of every
        // component, or of any once idle.
        let covered = match flush {
            Flush::No => match self.watermark(cfg.order) {
                Some(w) => w - plan.margin,
                None => return out,
            },
            Flush::Idle => data_end - plan.margin,
            Flush::End => data_end,
        };
        loop {
            // Chunks with no data near them cut nothing: jump to the first one that can see
            // the next buffered sample, so a record far ahead in time (a wrong clock, a crafted
            // header) costs one step, not one per second in between.
            if let Some(next) = self.first_sample_from(k * plan.chunk - plan.warmup) {
                k = k.max((next - plan.tail).div_euclid(plan.chunk));
            }
            self.next_chunk = Some(k);
            let started = k * plan.chunk < data_end;
            let need = plan.trigger_needed(k);
            if need <= covered || (flush == Flush::End && started) {
                self.cut_chunk(k, cfg, plan, flush == Flush::End, &mut out);
            } else if flush == Flush::Idle && started {
                // A chunk near the end of an idle station: cut only if every window it anchors
                // is already whole, else wait; more data may still come. The trial does not
                // move the trigger: it goes on from where the complete data ends.
                let kept = self.front.clone();
                let mut trial = Windowed::default();
                self.cut_chunk(k, cfg, plan, true, &mut trial);
                self.front = kept;
                if waits_for_data(&cfg.mode, plan, k, data_end, &trial) {
                    break;
                }
                out.absorb(trial);
            } else {
                break;
            }
            k += 1;
            self.next_chunk = Some(k);
            if let Some(from) = self.needed_from(plan) {
                self.trim(from);
            }
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

    /// Cuts chunk `k` into `out`; with `to_end`, from whatever data there is (windows not
    /// whole are reported).
    fn cut_chunk(
        &mut self,
        k: i64,
        cfg: &PipelineConfig,
        plan: &ChunkPlan,
        to_end: bool,
        out: &mut Windowed,
    ) {
        let core = k * plan.chunk..(k + 1) * plan.chunk;
        let mut picked = Vec::new();
        if let WindowMode::Event { trigger, .. } = &cfg.mode {
            let picks = self.picks_in(k, trigger, cfg, plan, to_end, out);
            if self.resumed
                && self
                    .history_start
                    .is_some_and(|h| plan.finished_before(k, h))
            {
                out.skipped_chunks += 1;
                return;
            }
            let (candidates, merged) = event_candidates(&picks, plan.pre, core.clone());
            out.merged_onsets += merged;
            if candidates.is_empty() {
                return;
            }
            picked = candidates;
        }
        let (a, b) = (core.start - plan.pre, core.end + plan.tail);
        let asm = assemble_span(&self.traces, a, b, plan.margin, cfg.order);
        out.unassembled
            .extend(asm.unassembled.iter().map(|u| u.to_string()));
        for stream in &asm.streams {
            out.streams = 1;
            out.stats += &stream.stats;
            let candidates = match cfg.mode.sliding_step() {
                // Grid starts within the data whose window fits in it.
                Some(step) => {
                    let first = stream.first_index.max(core.start);
                    let end = (stream.first_index + stream.len() as i64).min(b);
                    sliding_candidates(step, cfg.mode.window_samples(), first..core.end, end)
                }
                None => picked.clone(),
            };
            let cut = cut_at(stream, &cfg.mode, cfg.gaps, &candidates);
            out.windows.extend(cut.windows);
            out.dropped.extend(cut.dropped);
        }
    }

    /// The onsets of chunk `k`: its epoch's picker fed past the chunk's tail (to the end of
    /// the data with `to_end`), so every onset in it has its whole peak window.
    fn picks_in(
        &mut self,
        k: i64,
        trigger: &TriggerConfig,
        cfg: &PipelineConfig,
        plan: &ChunkPlan,
        to_end: bool,
        out: &mut Windowed,
    ) -> Vec<Pick> {
        let e = plan.epoch_of(k);
        let data_end = self.data_end().unwrap_or(i64::MIN);
        // First chunk, or a jump past whole epochs: that epoch's picker starts from rest.
        if self
            .front
            .as_ref()
            .is_none_or(|f| f.fed_to < plan.epoch_start(e))
        {
            self.front = Some(TriggerFront::at_epoch(plan, e));
        }
        let Some(front) = self.front.as_mut() else {
            return Vec::new();
        };
        front.pickers.retain(|(pe, _)| *pe >= e);
        let need = plan.trigger_needed(k);
        let source = FeedSource {
            traces: &self.traces,
            trigger,
            plan,
            order: cfg.order,
        };
        if to_end {
            front.feed(need.min(data_end), true, &source, out);
            if front.fed_to >= data_end {
                front.finish();
            }
        } else {
            front.feed(need, false, &source, out);
        }
        front
            .picker(e)
            .map(|p| p.take(k * plan.chunk, (k + 1) * plan.chunk))
            .unwrap_or_default()
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

    /// Records of the three components, interleaved as a live feed sends them: `per` samples
    /// each, one component `lag` records behind the others.
    fn feed_order(traces: &[Trace], per: usize, lag: usize) -> Vec<Trace> {
        let per_channel: Vec<Vec<Trace>> = traces.iter().map(|t| records(t, per)).collect();
        let n = per_channel[0].len();
        let mut out = Vec::new();
        for i in 0..n + lag {
            for (c, ch) in per_channel.iter().enumerate() {
                let j = if c == 2 { i.checked_sub(lag) } else { Some(i) };
                if let Some(r) = j.and_then(|j| ch.get(j)) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// Pushes `records` into `station`, cutting as the data becomes complete, then to the end.
    fn stream_through(
        station: &mut StationWindower,
        records: &[Trace],
        cfg: &PipelineConfig,
        end: bool,
    ) -> Vec<Window> {
        let plan = ChunkPlan::for_config(cfg);
        let mut out = Windowed::default();
        for r in records {
            station.push(r.clone(), &plan);
            out.absorb(station.advance(cfg, &plan, Flush::No));
        }
        if end {
            out.absorb(station.advance(cfg, &plan, Flush::End));
        }
        out.windows
    }

    /// Ten minutes crossing two trigger epochs, with onsets on both sides of each boundary.
    fn across_epochs() -> Vec<Trace> {
        // Epochs start every 300 s: at grid 1_000_200 s and 1_000_500 s, i.e. samples 20,000
        // and 50,000 of this data.
        station_traces(
            1_000_000,
            60_000,
            &[9_000, 19_700, 20_400, 31_000, 49_900, 53_000],
        )
    }

    #[test]
    fn record_sizes_and_interleavings_give_the_same_windows() {
        let cfg = PipelineConfig::new(None);
        let traces = across_epochs();
        let key = station_of(&traces[0]).unwrap();
        let all = window_traces(traces.clone(), &cfg).windows;
        assert!(all.len() >= 5, "{}", all.len());
        for (per, lag) in [(100, 0), (412, 3), (1_000, 0), (2_048, 1), (64, 40)] {
            let mut station = StationWindower::new(key.clone(), false);
            let streamed = stream_through(&mut station, &feed_order(&traces, per, lag), &cfg, true);
            assert_eq!(streamed, all, "{per}-sample records, lag {lag}");
        }
    }

    /// Data that begins between the grid's chunks, within a piece's assembly margin after one
    /// (the stream then starts past that piece's end), for chunks shorter and longer than it.
    #[test]
    fn data_starting_off_the_chunk_grid_is_cut_whatever_the_chunk() {
        for (chunk_s, offset_ns) in [(0.5, 730_000_000), (1.0, 1_370_000_000), (2.0, 40_000_000)] {
            let mut cfg = PipelineConfig::new(None);
            cfg.chunk_s = chunk_s;
            let mut traces = station_traces(1_000_012, 30_000, &[9_000, 21_000]);
            for t in &mut traces {
                t.start_ns += offset_ns;
            }
            let key = station_of(&traces[0]).unwrap();
            let all = window_traces(traces.clone(), &cfg).windows;
            assert_eq!(all.len(), 2, "chunk {chunk_s} s");
            let mut station = StationWindower::new(key, false);
            let streamed = stream_through(&mut station, &feed_order(&traces, 50, 1), &cfg, true);
            assert_eq!(streamed, all, "chunk {chunk_s} s");
        }
    }

    #[test]
    fn a_restart_anywhere_gives_the_same_rows() {
        let cfg = PipelineConfig::new(None);
        let plan = ChunkPlan::for_config(&cfg);
        let traces = across_epochs();
        let key = station_of(&traces[0]).unwrap();
        let sequence = feed_order(&traces, 412, 2);
        let mut once = StationWindower::new(key.clone(), false);
        let uninterrupted = stream_through(&mut once, &sequence, &cfg, true);
        let by_id: BTreeMap<&str, &Window> =
            uninterrupted.iter().map(|w| (w.id.as_str(), w)).collect();
        for crash in [0.1, 0.33, 0.5, 0.62, 0.75, 0.95] {
            let at = (crash * sequence.len() as f64) as usize;
            let mut first = StationWindower::new(key.clone(), false);
            let mut got = stream_through(&mut first, &sequence[..at], &cfg, false);
            // The stage commits the oldest record ending after `retained_from`; a restart
            // replays from there, as a station the progress topic knows.
            let keep = first.retained_from(&plan).unwrap();
            let from = sequence[..at]
                .iter()
                .position(|r| end_grid(r) > keep)
                .unwrap_or(at);
            let mut again = StationWindower::new(key.clone(), true);
            got.extend(stream_through(&mut again, &sequence[from..], &cfg, true));
            let ids: BTreeSet<&str> = got.iter().map(|w| w.id.as_str()).collect();
            assert_eq!(
                ids,
                by_id.keys().copied().collect(),
                "crash after {at} records"
            );
            for w in &got {
                let same = by_id[w.id.as_str()];
                assert_eq!(
                    (w.onset_ns, w.trigger_ratio),
                    (same.onset_ns, same.trigger_ratio),
                    "crash after {at} records"
                );
                assert!(w == same, "crash after {at} records: the samples differ");
            }
        }
    }

    #[test]
    fn each_sample_goes_through_the_trigger_about_once() {
        let cfg = PipelineConfig::new(None);
        let plan = ChunkPlan::for_config(&cfg);
        let traces = across_epochs();
        let mut station = StationWindower::new(station_of(&traces[0]).unwrap(), false);
        stream_through(&mut station, &feed_order(&traces, 412, 0), &cfg, true);
        let fed = station.front.as_ref().map_or(0, |f| f.fed_samples);
        // Epoch overlap: (epoch + warm-up + tail) / epoch; cutting each chunk from its own
        // context, as before, fed 51 times the data.
        let bound = 60_000.0 * (plan.epoch + plan.warmup + plan.tail) as f64 / plan.epoch as f64;
        assert!(
            (fed as f64) <= bound * 1.05,
            "{fed} samples fed for 60,000 (bound {bound})"
        );
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
        assert_eq!(
            station.next_chunk.map(|k| k * plan.chunk),
            Some(1_000_000 * 100 + 12_000)
        );
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
        // Data from 1_000_170 s, where the warm-up of the epoch at 1_000_200 s begins, as
        // a replay from a last run's retained position does.
        let traces = station_traces(1_000_170, 40_000, &[]);
        let key = station_of(&traces[0]).unwrap();
        let mut fresh = StationWindower::new(key.clone(), false);
        let mut resumed = StationWindower::new(key, true);
        for t in &traces {
            fresh.push(t.clone(), &plan);
            resumed.push(t.clone(), &plan);
        }
        assert_eq!(fresh.advance(&cfg, &plan, Flush::End).skipped_chunks, 0);
        let r = resumed.advance(&cfg, &plan, Flush::End);
        // The epoch that began at 999_900 s was done: its last 30 chunks are skipped; the next
        // epoch has its warm-up replayed.
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
