//! `waveforms.raw` → `windows`: decodes miniSEED records, cuts windows station by station
//! (see [`crate::windowing`]), computes spectrograms and features, labels them when a catalogue
//! is given, and publishes Arrow IPC batches keyed by station.
//!
//! Offsets: a record's offset is stored only once no station buffer needs its samples any more
//! and every window cut from it is acknowledged, so a crash replays exactly the data the buffers
//! held (from the start of its trigger epoch's warm-up). A station first seen after a restart is
//! marked resumed (the `windower.progress` topic knows it) and skips the chunks of an epoch
//! whose warm-up was not replayed: their windows are already out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use quakelens_lake::{Keyed, WindowRecord};
use quakelens_signal::miniseed::{decode_record_logged, split_records, Frame, Trace};
use quakelens_signal::stream::{ChannelId, StationKey};
use quakelens_signal::TARGET_PERIOD_NS;
use quakelens_synth::read_catalog;
use quakelens_transport::topics::{header, WAVEFORMS_RAW, WINDOWER_PROGRESS, WINDOWS};
use quakelens_transport::{Incoming, Outgoing, Position, Transport};

use super::{dead_letter, Stage, StageError, StageMetrics, Stop};
use crate::config::PipelineConfig;
use crate::labels::Labeller;
use crate::messages::encode_windows;
use crate::transform::WindowTransformer;
use crate::windowing::{
    component_station, dedup_in_order, station_of, ChunkPlan, Flush, StationWindower, Windowed,
};

const STAGE: &str = "windower";

/// Windower settings.
#[derive(Clone, Debug)]
pub struct WindowerConfig {
    pub pipeline: PipelineConfig,
    /// Windows per `windows` message (keeps messages well under the broker's size limit).
    pub windows_per_message: usize,
    /// Records read per batch.
    pub batch: usize,
    /// A station silent this long (wall time) has the chunks its data already covers cut, even
    /// while a component lags (see [`Flush::Idle`]).
    pub idle_flush: Duration,
    /// A station that sent nothing for `idle_flush` (wall time) and whose newest sample is this
    /// far (data time) behind the network's clock (the median of the stations' newest samples)
    /// is ended as its end-of-stream marker would end it, and its buffers freed: a network
    /// whose stations come and go holds the buffers of the stations live now, and of every
    /// other station only its name (as the progress topic does). Data time, so a replay at any speed evicts at the same point; the
    /// median and the wall-time silence, so one station's wrong clock ends no other station.
    pub evict_after: Duration,
}

impl WindowerConfig {
    pub fn new(pipeline: PipelineConfig) -> Self {
        Self {
            pipeline,
            windows_per_message: 8,
            batch: 2000,
            idle_flush: Duration::from_secs(30),
            evict_after: Duration::from_secs(3600),
        }
    }
}

struct Station {
    windower: StationWindower,
    partition: (String, i32),
    /// (offset, grid end) of each buffered record, oldest first.
    records: VecDeque<(i64, i64)>,
    last_data: Instant,
    /// When its last record arrived (idle flushes do not move it).
    last_record: Instant,
    announced: bool,
    /// Newest sample time pushed (ns), and late samples not yet reported, for the metrics.
    data_end_ns: i64,
    late: usize,
}

/// Totals of a windower run: counters, and the first [`super::LISTED`] names of what was
/// dropped or unassembled, so they stay the same size however long it runs (every item goes to
/// the log and the dead letters).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WindowerTotals {
    pub windows: u64,
    pub dropped: u64,
    pub unassembled: u64,
    pub merged_onsets: u64,
    pub skipped_chunks: u64,
    pub late_samples: u64,
    /// Stations ended because their data fell `evict_after` behind the network's.
    pub evicted: u64,
    /// Reads of the whole `windower.progress` topic (start-up, then stations new to this
    /// windower).
    pub progress_reloads: u64,
    /// Stations that started buffering (again after an end).
    pub stations: u64,
    /// Windows with filled gaps, with a constant (dead) channel, and labelled from the
    /// catalogue.
    pub with_filled_gaps: u64,
    pub with_flat_channels: u64,
    pub labelled: u64,
    /// What assembly repaired: resampled and snapped segments, overlaps dropped.
    pub assembly: quakelens_signal::assembly::AssemblyStats,
    /// The first [`super::LISTED`] unassembled streams and dropped windows, for a run's report.
    pub unassembled_listed: Vec<String>,
    pub dropped_listed: Vec<String>,
}

impl WindowerTotals {
    fn count(&mut self, w: &Windowed, windows: usize) {
        self.windows += windows as u64;
        self.dropped += w.dropped.len() as u64;
        self.unassembled += w.unassembled.len() as u64;
        self.merged_onsets += w.merged_onsets as u64;
        self.skipped_chunks += w.skipped_chunks as u64;
        self.assembly += &w.stats;
        for u in &w.unassembled {
            super::list_first(&mut self.unassembled_listed, u.clone());
        }
        for d in &w.dropped {
            super::list_first(&mut self.dropped_listed, d.to_string());
        }
    }
}

/// The windower's state between batches.
pub struct WindowerStage {
    cfg: WindowerConfig,
    plan: ChunkPlan,
    transformer: WindowTransformer,
    labeller: Option<Labeller>,
    stations: HashMap<StationKey, Station>,
    /// Next offset per input partition.
    consumed: BTreeMap<(String, i32), i64>,
    known: BTreeSet<String>,
    /// Stations looked up in the progress topic since its last reload and not buffered (their
    /// records did not decode): they do not trigger another reload. Cleared at each reload, so
    /// it holds at most one reload's worth of keys.
    looked_up: HashSet<StationKey>,
    /// Stations this windower ended (marker or eviction) and has not seen since: their next
    /// data is a new start, not a replay after a restart. At most one entry per station.
    ended: HashSet<StationKey>,
    pub totals: WindowerTotals,
}

impl WindowerStage {
    pub fn new(cfg: WindowerConfig) -> Result<Self, StageError> {
        let labeller = match &cfg.pipeline.catalog {
            Some(path) => Some(Labeller::new(
                read_catalog(path)?,
                cfg.pipeline.label_tolerance_s,
            )),
            None => None,
        };
        Ok(Self {
            plan: ChunkPlan::for_config(&cfg.pipeline),
            transformer: WindowTransformer::for_config(&cfg.pipeline),
            labeller,
            cfg,
            stations: HashMap::new(),
            consumed: BTreeMap::new(),
            known: BTreeSet::new(),
            looked_up: HashSet::new(),
            ended: HashSet::new(),
            totals: WindowerTotals::default(),
        })
    }

    /// Learns which stations were cut before, then runs until `stop` and commits.
    pub async fn run<T: Transport>(
        &mut self,
        t: &T,
        stop: Stop,
        metrics: &StageMetrics,
    ) -> Result<(), StageError> {
        self.reload_progress(t).await?;
        super::run(self, t, stop, metrics).await
    }

    async fn reload_progress<T: Transport>(&mut self, t: &T) -> Result<(), StageError> {
        self.totals.progress_reloads += 1;
        self.looked_up.clear();
        for m in t.read_all(WINDOWER_PROGRESS).await? {
            if let Some(k) = m.key_str() {
                self.known.insert(k.to_string());
            }
        }
        tracing::info!(
            stations = self.known.len(),
            "stations processed before (progress topic)"
        );
        Ok(())
    }
}

impl Stage for WindowerStage {
    fn batch_size(&self) -> usize {
        self.cfg.batch
    }

    /// Idle flushes run on empty batches too.
    async fn step<T: Transport>(
        &mut self,
        t: &T,
        batch: Vec<Incoming>,
        metrics: &StageMetrics,
    ) -> Result<(), StageError> {
        for (topic, partition) in t.take_revoked() {
            self.looked_up.clear();
            self.stations
                .retain(|_, s| s.partition != (topic.clone(), partition));
            self.consumed.remove(&(topic, partition));
        }
        let new: HashSet<StationKey> = batch
            .iter()
            .filter_map(|m| m.key_str())
            .filter_map(|k| k.parse::<ChannelId>().ok())
            .filter_map(|id| component_station(&id))
            .filter(|s| {
                !self.stations.contains_key(s)
                    && !self.looked_up.contains(s)
                    && !self.known.contains(&s.to_string())
            })
            .collect();
        if !new.is_empty() {
            // New stations (start-up or a rebalance): learn which were processed before.
            self.reload_progress(t).await?;
            self.looked_up = new;
        }
        let mut dead = Vec::new();
        let mut touched: BTreeMap<StationKey, Flush> = BTreeMap::new();
        for m in &batch {
            self.consumed
                .insert((m.topic.clone(), m.partition), m.offset + 1);
            let (stations, problem) = self.accept(m);
            for (key, flush) in stations {
                let f = touched.entry(key).or_insert(Flush::No);
                *f = (*f).max(flush);
            }
            if let Some(reason) = problem {
                dead.push(dead_letter(STAGE, m, &reason));
            }
        }
        let idle = self.cfg.idle_flush;
        let evict_before = self
            .network_clock_ns()
            .saturating_sub(self.cfg.evict_after.as_nanos().min(i64::MAX as u128) as i64);
        for (key, s) in &self.stations {
            // A station in this batch is sending, however far behind its data is.
            let sending = touched.contains_key(key);
            if !sending && s.data_end_ns < evict_before && s.last_record.elapsed() >= idle {
                self.totals.evicted += 1;
                tracing::info!(station = %key, "no data for {:?} of the network's time: station ended", self.cfg.evict_after);
                touched.insert(key.clone(), Flush::End);
            } else if !sending && s.last_data.elapsed() >= idle {
                touched.insert(key.clone(), Flush::Idle);
            }
        }
        let mut windowed = Windowed::default();
        let mut finished = Vec::new();
        let mut announce = Vec::new();
        for (key, flush) in touched {
            let Some(s) = self.stations.get_mut(&key) else {
                continue;
            };
            let station = key.to_string();
            metrics.station_seen(&station, s.data_end_ns);
            metrics.late_samples(&station, std::mem::take(&mut s.late));
            let before = s.windower.retained_from(&self.plan);
            let w = s.windower.advance(&self.cfg.pipeline, &self.plan, flush);
            if s.windower.retained_from(&self.plan) != before && !s.announced {
                s.announced = true;
                if !self.known.contains(&key.to_string()) {
                    announce.push(key.to_string());
                }
            }
            windowed.absorb(w);
            match flush {
                // The station is done until new data arrives.
                Flush::End => finished.push(key),
                Flush::Idle => s.last_data = Instant::now(),
                Flush::No => {}
            }
        }
        for key in finished {
            self.stations.remove(&key);
            self.ended.insert(key);
        }
        metrics.records_failed.inc_by(windowed.dropped.len() as u64);
        for d in &windowed.dropped {
            tracing::warn!("dropped window: {d}");
        }
        if windowed.skipped_chunks > 0 {
            tracing::info!(
                chunks = windowed.skipped_chunks,
                "resumed stations: chunks cut before the restart were not cut again"
            );
        }
        dedup_in_order(&mut windowed.unassembled);
        for u in &windowed.unassembled {
            tracing::warn!("{u}");
        }
        let mut records = self.transform(&windowed.windows);
        let mut out = self.messages(&mut records);
        metrics.records_out.inc_by(records.len() as u64);
        for r in &records {
            metrics.window_cut(&r.key().stream(), r.gap_runs, r.filled_samples, r.resampled);
        }
        metrics.dead_lettered(dead.len());
        out.extend(dead);
        t.send(out).await?;
        if !announce.is_empty() {
            let progress = announce
                .iter()
                .map(|k| Outgoing::new(WINDOWER_PROGRESS, k.as_bytes(), b"seen".to_vec()))
                .collect();
            t.send(progress).await?;
            self.known.extend(announce);
        }
        t.store(&self.safe_positions())?;
        self.totals.count(&windowed, records.len());
        self.totals.with_filled_gaps += records.iter().filter(|r| r.gap_runs > 0).count() as u64;
        self.totals.with_flat_channels +=
            records.iter().filter(|r| r.flat_channels > 0).count() as u64;
        Ok(())
    }
}

impl WindowerStage {
    /// Takes one message (one or more miniSEED records, or an end-of-stream marker) into the
    /// station buffers. Returns the stations touched and, when some bytes were unusable, why.
    fn accept(&mut self, m: &Incoming) -> (Vec<(StationKey, Flush)>, Option<String>) {
        if m.topic != WAVEFORMS_RAW {
            return (Vec::new(), Some(format!("unexpected topic {}", m.topic)));
        }
        if m.header(header::END_OF_STREAM).is_some() {
            return match end_of_stream_station(m) {
                Ok(key) => (vec![(key, Flush::End)], None),
                Err(why) => (Vec::new(), Some(why)),
            };
        }
        let Some(payload) = m.payload.as_deref().filter(|p| !p.is_empty()) else {
            return (Vec::new(), Some("empty message (no payload)".into()));
        };
        let mut touched = Vec::new();
        let mut problems = Vec::new();
        let frames = split_records(payload);
        let total = frames.len();
        for frame in frames {
            let (offset, len) = match frame {
                Frame::Record { offset, len } => (offset, len),
                Frame::Bad { offset, reason, .. } => {
                    problems.push(format!("byte {offset}: {reason}"));
                    continue;
                }
            };
            match self.push_record(m, &payload[offset..offset + len]) {
                Ok(key) => touched.push((key, Flush::No)),
                Err(why) => problems.push(format!("byte {offset}: {why}")),
            }
        }
        let problem = (!problems.is_empty()).then(|| {
            let used = touched.len();
            format!(
                "{} of {total} records unusable ({used} used): {}",
                total - used,
                problems.join("; ")
            )
        });
        (touched, problem)
    }

    fn push_record(&mut self, m: &Incoming, bytes: &[u8]) -> Result<StationKey, String> {
        let (record, _log) = decode_record_logged(bytes);
        let record = record.map_err(|e| format!("not a miniSEED record: {e}"))?;
        let trace = Trace {
            id: record.id,
            start_ns: record.start_ns,
            sample_rate: record.sample_rate,
            samples: record.samples,
        };
        let key = station_of(&trace)?;
        let end = ((trace.next_ns() as f64) / TARGET_PERIOD_NS as f64).round() as i64;
        // A station ended here starts afresh; one known from the progress topic alone was
        // cut by an earlier run and may be a replay.
        let resumed = !self.ended.remove(&key) && self.known.contains(&key.to_string());
        if !self.stations.contains_key(&key) {
            self.totals.stations += 1;
        }
        let s = self.stations.entry(key.clone()).or_insert_with(|| Station {
            windower: StationWindower::new(key.clone(), resumed),
            partition: (m.topic.clone(), m.partition),
            records: VecDeque::new(),
            last_data: Instant::now(),
            last_record: Instant::now(),
            announced: false,
            data_end_ns: i64::MIN,
            late: 0,
        });
        (s.last_data, s.last_record) = (Instant::now(), Instant::now());
        s.data_end_ns = s.data_end_ns.max(trace.next_ns());
        let late = s.windower.push(trace, &self.plan);
        s.late += late;
        self.totals.late_samples += late as u64;
        s.records.push_back((m.offset, end));
        Ok(key)
    }

    fn transform(&mut self, windows: &[quakelens_signal::window::Window]) -> Vec<WindowRecord> {
        if windows.is_empty() {
            return Vec::new();
        }
        let mut records =
            tokio::task::block_in_place(|| self.transformer.transform(windows, || {}));
        if let Some(l) = &self.labeller {
            let n = l.label(&mut records) as u64;
            self.totals.labelled += n;
        }
        records
    }

    /// Windows grouped by station (stable, so each station's windows keep their order), at most
    /// `windows_per_message` a message. Sorts `records` in place instead of copying them.
    fn messages(&self, records: &mut [WindowRecord]) -> Vec<Outgoing> {
        let station = |r: &WindowRecord| r.key().stream();
        let format = self.cfg.pipeline.format();
        records.sort_by_cached_key(station);
        let mut out = Vec::new();
        for rows in records.chunk_by(|a, b| station(a) == station(b)) {
            let key = station(&rows[0]);
            for chunk in rows.chunks(self.cfg.windows_per_message.max(1)) {
                let end = chunk.iter().map(|r| r.end_ns).max().unwrap_or(0);
                out.push(
                    Outgoing::new(WINDOWS, key.as_bytes(), encode_windows(chunk, &format))
                        .header(header::WINDOW_END_NS, end.to_string()),
                );
            }
        }
        out
    }

    /// Per partition: the oldest record a station buffer still needs, else everything read.
    fn safe_positions(&mut self) -> Vec<Position> {
        let mut safe = self.consumed.clone();
        for s in self.stations.values_mut() {
            let keep_from = s.windower.retained_from(&self.plan).unwrap_or(i64::MAX);
            while s.records.front().is_some_and(|&(_, end)| end <= keep_from) {
                s.records.pop_front();
            }
            if let Some(&(offset, _)) = s.records.front() {
                let e = safe.entry(s.partition.clone()).or_insert(offset);
                *e = (*e).min(offset);
            }
        }
        safe.into_iter()
            .map(|((topic, partition), offset)| Position {
                topic,
                partition,
                offset,
            })
            .collect()
    }

    /// The network's data time: the (upper) median of the held stations' newest samples, which
    /// one station with a clock far ahead cannot move.
    fn network_clock_ns(&self) -> i64 {
        let mut ends: Vec<i64> = self.stations.values().map(|s| s.data_end_ns).collect();
        if ends.is_empty() {
            return i64::MIN;
        }
        let mid = ends.len() / 2;
        *ends.select_nth_unstable(mid).1
    }

    /// Stations with buffers (memory accounting).
    pub fn stations_held(&self) -> usize {
        self.stations.len()
    }

    /// Samples held in station buffers (memory accounting).
    pub fn buffered_samples(&self) -> usize {
        self.stations
            .values()
            .map(|s| s.windower.buffered_samples())
            .sum()
    }
}

fn end_of_stream_station(m: &Incoming) -> Result<StationKey, String> {
    let id: ChannelId = m
        .key_str()
        .ok_or("end-of-stream marker without a NET.STA.LOC.CHA key")?
        .parse()
        .map_err(|e| format!("end-of-stream key: {e}"))?;
    component_station(&id).ok_or_else(|| format!("end-of-stream key {id} names no component"))
}

#[cfg(test)]
mod tests {
    use quakelens_transport::memory::MemoryBroker;
    use quakelens_transport::topics;

    use super::*;

    fn message(offset: i64, key: &str) -> Incoming {
        Incoming {
            topic: WAVEFORMS_RAW.into(),
            partition: 0,
            offset,
            key: Some(key.as_bytes().to_vec()),
            payload: Some(b"not a miniSEED record".to_vec()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// `seconds` of station `sta`'s three components from `start_s` (Unix s) in 512-byte
    /// records, quiet but for a local event at `event_s`, from offset `first` on.
    fn feed(sta: &str, start_s: i64, seconds: usize, event_s: f64, first: i64) -> Vec<Incoming> {
        use quakelens_synth::{pack_channel, Encoding, Rng};
        let mut rng = Rng::new(start_s as u64);
        let mut out = Vec::new();
        for comp in ['Z', 'N', 'E'] {
            let samples: Vec<i32> = (0..seconds * 100)
                .map(|i| {
                    let since = start_s as f64 + i as f64 / 100.0 - event_s;
                    let event = if (0.0..20.0).contains(&since) {
                        3000.0
                            * (-since / 3.0).exp()
                            * (2.0 * std::f64::consts::PI * 6.0 * since).sin()
                    } else {
                        0.0
                    };
                    (20.0 * rng.normal() + event) as i32
                })
                .collect();
            let sid = format!("FDSN:XX_{sta}__H_H_{comp}");
            let bytes = pack_channel(
                &sid,
                start_s * 1_000_000_000,
                &samples,
                512,
                Encoding::Int32,
            )
            .unwrap();
            for frame in split_records(&bytes) {
                let Frame::Record { offset, len } = frame else {
                    panic!("packed a bad record")
                };
                let mut m = message(first + out.len() as i64, &format!("XX.{sta}..HH{comp}"));
                m.payload = Some(bytes[offset..offset + len].to_vec());
                out.push(m);
            }
        }
        out
    }

    fn end_marker(offset: i64) -> Incoming {
        let mut m = message(offset, "XX.S00..HHZ");
        m.payload = None;
        m.headers = vec![(header::END_OF_STREAM.into(), b"1".to_vec())];
        m
    }

    /// A known station whose data begins late in a trigger epoch looks like a replay after a
    /// restart (its chunks there were cut before); one this windower ended itself does not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_station_ended_here_starts_afresh_when_its_data_returns() {
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let producer = broker.transport(&[]);
        let progress = Outgoing::new(WINDOWER_PROGRESS, "XX.S00..HH", b"seen".to_vec());
        producer.send(vec![progress]).await.unwrap();
        let t = broker.transport(&[WAVEFORMS_RAW]);
        let metrics = StageMetrics::detached(STAGE);
        let mut stage = WindowerStage::new(WindowerConfig::new(PipelineConfig::new(None))).unwrap();
        // 50 s before an epoch boundary (epochs are 300 s of the absolute grid).
        let epoch = 1_709_251_200;
        let mut batch = feed("S00", epoch + 250, 80, (epoch + 270) as f64, 0);
        batch.push(end_marker(batch.len() as i64));
        let next = batch.len() as i64;
        stage.step(&t, batch, &metrics).await.unwrap();
        assert_eq!(stage.totals.progress_reloads, 1);
        assert_eq!(
            stage.totals.windows, 0,
            "taken for a replay: the known limitation"
        );
        assert!(stage.totals.skipped_chunks > 0);
        let skipped = stage.totals.skipped_chunks;
        // The same station again, after its end, late in a later epoch: cut as a new start.
        let mut batch = feed("S00", epoch + 1150, 80, (epoch + 1170) as f64, next);
        batch.push(end_marker(next + batch.len() as i64));
        stage.step(&t, batch, &metrics).await.unwrap();
        assert_eq!(stage.totals.windows, 1);
        assert_eq!(stage.totals.skipped_chunks, skipped);
        assert_eq!(stage.stations_held(), 0);
        assert!(broker.messages(topics::DEAD_LETTER).is_empty());
    }

    /// A station that stopped is ended (its windows cut, its buffers freed) once the others
    /// are an hour of data time ahead; a station whose clock runs hours ahead ends none of the
    /// others, whether they are still sending or briefly silent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_station_is_ended_an_hour_behind_but_a_wrong_clock_ends_none() {
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let t = broker.transport(&[WAVEFORMS_RAW]);
        let metrics = StageMetrics::detached(STAGE);
        let start = 1_709_251_200;
        let stage_with = |idle_flush: Duration| {
            let mut cfg = WindowerConfig::new(PipelineConfig::new(None));
            cfg.idle_flush = idle_flush;
            WindowerStage::new(cfg).unwrap()
        };
        let both = |first: i64| {
            let mut b = feed("S00", start, 80, (start + 40) as f64, first);
            let n = b.len() as i64;
            b.extend(feed("S01", start, 80, (start + 45) as f64, first + n));
            b
        };

        // Both still sending (the silence guard has not run out): nothing is ended.
        let mut stage = stage_with(Duration::from_secs(3600));
        let batch = both(0);
        let next = batch.len() as i64;
        stage.step(&t, batch, &metrics).await.unwrap();
        let ahead = feed("S01", start + 7200, 2, 0.0, next);
        stage.step(&t, ahead, &metrics).await.unwrap();
        assert_eq!((stage.totals.evicted, stage.stations_held()), (0, 2));

        // S00 stops; S01 goes on an hour later: S00 is ended with its event cut.
        let mut stage = stage_with(Duration::ZERO);
        let batch = both(0);
        let next = batch.len() as i64;
        stage.step(&t, batch, &metrics).await.unwrap();
        let later = feed("S01", start + 3700, 80, (start + 3740) as f64, next);
        stage.step(&t, later, &metrics).await.unwrap();
        assert_eq!(stage.totals.evicted, 1);
        assert_eq!(stage.stations_held(), 1);
        // Every event a window, nothing dropped by the ending.
        assert_eq!((stage.totals.windows, stage.totals.dropped), (3, 0));

        // Three stations, one with a clock two hours ahead, the other two silent for a batch
        // and no silence guard: the network's clock is their median, so nothing is ended.
        let mut stage = stage_with(Duration::ZERO);
        let mut batch = both(0);
        let n = batch.len() as i64;
        batch.extend(feed("S02", start, 80, 0.0, n));
        let next = batch.len() as i64;
        stage.step(&t, batch, &metrics).await.unwrap();
        let ahead = feed("S02", start + 7200, 2, 0.0, next);
        stage.step(&t, ahead, &metrics).await.unwrap();
        assert_eq!((stage.totals.evicted, stage.stations_held()), (0, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn undecodable_and_non_component_channels_do_not_reread_progress_every_batch() {
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let t = broker.transport(&[WAVEFORMS_RAW]);
        let metrics = StageMetrics::detached(STAGE);
        let mut stage = WindowerStage::new(WindowerConfig::new(PipelineConfig::new(None))).unwrap();
        // A state-of-health channel is no component: never a station, never a reload.
        for offset in 0..3 {
            let batch = vec![message(offset, "XX.STA..BDH")];
            stage.step(&t, batch, &metrics).await.unwrap();
        }
        assert_eq!(stage.totals.progress_reloads, 0);
        // A component whose records do not decode: looked up once, not once per batch.
        for offset in 3..6 {
            let batch = vec![message(offset, "XX.NEW..HHZ")];
            stage.step(&t, batch, &metrics).await.unwrap();
        }
        assert_eq!(stage.totals.progress_reloads, 1);
        // Another new station is looked up again.
        let batch = vec![message(6, "XX.OTHER..HHZ")];
        stage.step(&t, batch, &metrics).await.unwrap();
        assert_eq!(stage.totals.progress_reloads, 2);
        // Every message is a dead letter, and every offset is stored.
        assert_eq!(broker.messages(topics::DEAD_LETTER).len(), 7);
        assert_eq!(
            t.stored().get(&(WAVEFORMS_RAW.to_string(), 0)),
            Some(&7),
            "{:?}",
            t.stored()
        );
        assert_eq!(stage.totals.windows, 0);
    }
}
