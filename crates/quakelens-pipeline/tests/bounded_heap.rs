//! A windower that runs for days holds the same heap on the last day as on the first: what it
//! keeps is bounded by the stations live now × trigger context, never by uptime nor by how many
//! stations it has seen come and go. The stage runs as the
//! `windower` service runs it (records in, windows out, positions stored) on a feed made in
//! memory, with a transport that drops what it is sent, and every allocation is counted.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use quakelens_pipeline::metrics::Metrics;
use quakelens_pipeline::stages::windower::{WindowerConfig, WindowerStage};
use quakelens_pipeline::stages::Stage;
use quakelens_pipeline::PipelineConfig;
use quakelens_signal::miniseed::{split_records, Frame};
use quakelens_synth::{pack_channel, Encoding, Rng};
use quakelens_transport::topics::{DEAD_LETTER, WAVEFORMS_RAW, WINDOWS};
use quakelens_transport::{
    partition_for, Incoming, Outgoing, Position, Revoked, Transport, TransportError,
};

mod support;

#[global_allocator]
static ALLOCATOR: support::heap::Counting = support::heap::Counting;

/// A broker that keeps nothing: it counts what it is sent and remembers the latest positions.
#[derive(Default)]
struct Discard {
    windows: AtomicU64,
    dead: AtomicU64,
    stored: Mutex<BTreeMap<i32, i64>>,
}

impl Transport for Discard {
    async fn send(&self, batch: Vec<Outgoing>) -> Result<(), TransportError> {
        for m in batch {
            match m.topic.as_str() {
                WINDOWS => self.windows.fetch_add(1, Ordering::Relaxed),
                DEAD_LETTER => self.dead.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
        }
        Ok(())
    }

    async fn recv(&self, _max: usize, _wait: Duration) -> Result<Vec<Incoming>, TransportError> {
        Ok(Vec::new())
    }

    fn store(&self, positions: &[Position]) -> Result<(), TransportError> {
        let mut stored = self.stored.lock().unwrap();
        for p in positions {
            stored.insert(p.partition, p.offset);
        }
        Ok(())
    }

    async fn commit(&self) -> Result<(), TransportError> {
        Ok(())
    }

    fn take_revoked(&self) -> Revoked {
        Vec::new()
    }

    fn partitions(&self, _topic: &str) -> Result<i32, TransportError> {
        Ok(PARTITIONS)
    }

    async fn read_all(&self, _topic: &str) -> Result<Vec<Incoming>, TransportError> {
        Ok(Vec::new())
    }
}

const PARTITIONS: i32 = 6;
const STATIONS: usize = 6;
const RATE: usize = 100;
/// Data per feeding round (s).
const SLICE_S: usize = 600;
/// Samples in a 512-byte integer record (64 bytes of header and blockette 1000).
const RECORD_SAMPLES: usize = 112;
/// An event every this many seconds at each station.
const EVENT_EVERY_S: usize = 120;

/// Stations `0..PERMANENT` send all day; the others are replaced by new ones every hour (a
/// network with temporary deployments, or stations dropping out and others coming in).
const PERMANENT: usize = 3;

/// The key (`NET.STA.LOC.BAND`) of station slot `s` at `t_s` seconds into the feed.
fn station(s: usize, t_s: usize) -> String {
    if s < PERMANENT {
        format!("XX.S{s:02}..HH")
    } else {
        format!("XX.R{:02}{s}..HH", t_s / 3600)
    }
}

/// A station's feed: noise plus a local event every two minutes, packed in 512-byte records.
struct Feed {
    rng: Rng,
    next_offset: BTreeMap<i32, i64>,
}

impl Feed {
    /// The records of every station for the slice starting at `t0_s`, interleaved in time as a
    /// network feed delivers them.
    fn slice(&mut self, t0_s: usize) -> Vec<Incoming> {
        let n = SLICE_S * RATE;
        let mut per_channel: Vec<(String, i32, Vec<Vec<u8>>)> = Vec::new();
        for s in 0..STATIONS {
            let station = station(s, t0_s);
            let partition = partition_for(station.as_bytes(), PARTITIONS);
            let (net, sta) = station.split_once('.').unwrap();
            let sta = sta.trim_end_matches("..HH");
            for comp in ['Z', 'N', 'E'] {
                let samples: Vec<i32> = (0..n)
                    .map(|i| {
                        let t = t0_s as f64 + i as f64 / RATE as f64;
                        // Each station's events come 7 s after the previous station's.
                        let since = (t - 7.0 * s as f64).rem_euclid(EVENT_EVERY_S as f64) - 60.0;
                        let event = if (0.0..20.0).contains(&since) {
                            3000.0
                                * (-since / 3.0).exp()
                                * (2.0 * std::f64::consts::PI * 6.0 * since).sin()
                        } else {
                            0.0
                        };
                        (20.0 * self.rng.normal() + event) as i32
                    })
                    .collect();
                let sid = format!("FDSN:{net}_{sta}__H_H_{comp}");
                let start_ns = (1_709_251_200 + t0_s as i64) * 1_000_000_000;
                let bytes = pack_channel(&sid, start_ns, &samples, 512, Encoding::Int32).unwrap();
                let records = split_records(&bytes)
                    .into_iter()
                    .map(|f| match f {
                        Frame::Record { offset, len } => bytes[offset..offset + len].to_vec(),
                        Frame::Bad { reason, .. } => panic!("packed a bad record: {reason}"),
                    })
                    .collect();
                per_channel.push((format!("{station}{comp}"), partition, records));
            }
        }
        let longest = per_channel.iter().map(|c| c.2.len()).max().unwrap_or(0);
        let mut out = Vec::new();
        for j in 0..longest {
            for (key, partition, records) in &per_channel {
                let Some(record) = records.get(j) else {
                    continue;
                };
                let offset = self.next_offset.entry(*partition).or_insert(0);
                out.push(Incoming {
                    topic: WAVEFORMS_RAW.into(),
                    partition: *partition,
                    offset: *offset,
                    key: Some(key.as_bytes().to_vec()),
                    payload: Some(record.clone()),
                    headers: Vec::new(),
                    timestamp_ms: None,
                });
                *offset += 1;
            }
        }
        out
    }
}

use support::heap::live_mib;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windower_fed_for_a_day_holds_the_heap_it_held_after_an_hour() {
    let hours = 24;
    let slices = hours * 3600 / SLICE_S;
    let t = Discard::default();
    let metrics = Metrics::new();
    let counters = metrics.stage("windower");
    let mut cfg = WindowerConfig::new(PipelineConfig::new(None));
    // A live station sends every batch; one that stopped is silent in wall time from its next
    // slice on, so eviction waits for the hour of data time (the default) alone.
    cfg.idle_flush = Duration::from_millis(500);
    let mut stage = WindowerStage::new(cfg).unwrap();
    let mut feed = Feed {
        rng: Rng::new(7),
        next_offset: BTreeMap::new(),
    };
    let mut heap = Vec::with_capacity(slices);
    let mut buffered = Vec::with_capacity(slices);
    let mut held = Vec::with_capacity(slices);
    for k in 0..slices {
        let records = feed.slice(k * SLICE_S);
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let batch: Vec<Incoming> = records.by_ref().take(2000).collect();
            stage.step(&t, batch, &counters).await.unwrap();
        }
        heap.push(live_mib());
        buffered.push(stage.buffered_samples());
        held.push(stage.stations_held());
    }
    let windows = stage.totals.windows;
    // Every event but those whose window is still open at the end: the stage is really working.
    let events = (STATIONS * hours * 3600 / EVENT_EVERY_S) as u64;
    assert!(
        windows + STATIONS as u64 >= events && windows <= events,
        "{windows} windows of {events} events"
    );
    assert_eq!(t.dead.load(Ordering::Relaxed), 0);
    assert!(t.windows.load(Ordering::Relaxed) > 0);
    // Each hour's rotating stations are ended an hour of data time after they stopped: the
    // permanent ones, this hour's and the last hour's are held (and the hour before while the
    // wall-time silence runs out), never more.
    let rotating = STATIONS - PERMANENT;
    assert!(
        stage.totals.evicted >= (rotating * (hours - 3)) as u64,
        "{} stations evicted",
        stage.totals.evicted
    );
    let most_held = held.iter().max().copied().unwrap_or(0);
    assert!(
        most_held <= PERMANENT + 3 * rotating,
        "{most_held} stations held; per slice {held:?}"
    );
    // Positions move with the data: what a restart would replay is one trigger epoch and its
    // warm-up (330 s) of each live station, with room for the records they begin and end in. A
    // station that stopped still needs its last epoch until it is ended, so a partition holding
    // the last hour's stations replays that hour too: bounded by the eviction, not by uptime.
    let stored = t.stored.lock().unwrap().clone();
    let (now_s, last_hour_s) = (hours * 3600 - 1, (hours - 1) * 3600 - 1);
    let records_per_station = |s: usize| 3 * (s * RATE / RECORD_SAMPLES + 2);
    for (p, next) in &feed.next_offset {
        let in_p = |t_s: usize| {
            (0..STATIONS)
                .filter(|&s| t_s == now_s || s >= PERMANENT)
                .filter(|&s| partition_for(station(s, t_s).as_bytes(), PARTITIONS) == *p)
                .count()
        };
        let (live, stopped) = (in_p(now_s), in_p(last_hour_s));
        let span_s = if stopped > 0 { 3600 + 360 } else { 360 };
        let kept = (next - stored.get(p).copied().unwrap_or(0)) as usize;
        let bound = (live + stopped) * records_per_station(span_s);
        assert!(
            kept <= bound,
            "partition {p}: {kept} records to replay, bound {bound}"
        );
    }
    // The heap after the first hour is the heap from then on.
    let settled = 3600 / SLICE_S;
    let early = heap[settled..2 * settled]
        .iter()
        .copied()
        .fold(f64::MIN, f64::max);
    let late = heap[slices - settled..]
        .iter()
        .copied()
        .fold(f64::MIN, f64::max);
    assert!(
        late <= early * 1.1 + 1.0,
        "heap grew with uptime: {early:.1} MiB in the second hour, {late:.1} MiB in the last; \
         per slice: {heap:.1?}"
    );
    eprintln!(
        "{windows} windows; heap {early:.1} MiB in the second hour, {late:.1} MiB in the last"
    );
    let most = buffered.iter().max().copied().unwrap_or(0);
    let bound = (PERMANENT + 3 * rotating) * 3 * (300 + 30 + 20 + 10 + SLICE_S) * RATE * 2;
    assert!(most <= bound, "{most} samples buffered, bound {bound}");
}
