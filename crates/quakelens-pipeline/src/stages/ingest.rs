//! Files → `waveforms.raw`: every miniSEED record as one message, key `NET.STA.LOC.CHA`,
//! partitioned by station (NET.STA.LOC + band) so a station's three components stay together and
//! in order. Replays at full speed or paced to real time; ends each station with an
//! end-of-stream marker so the windower cuts the last chunk. Bytes that are not a record go to
//! `dead-letter` with the file and offset.
//!
//! Records go out in time order across all files with bounded read-ahead: a first pass learns
//! each file's earliest record (and dead-letters what is not a record); a file is indexed
//! only when the replay reaches that time, and dropped once sent. So memory follows the files
//! that overlap the replay's present (stations × file span, 32 bytes per record of them), not
//! the archive, and record bytes are read from disk as they are sent.

use std::collections::{BTreeMap, BinaryHeap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quakelens_signal::miniseed::{decode_record, split_records, Frame};
use quakelens_transport::topics::{header, DEAD_LETTER, WAVEFORMS_RAW};
use quakelens_transport::{partition_for, Outgoing, Transport};

use super::{list_first, stopped, StageError, Stop};
use crate::ingest::collect_inputs;

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the broker takes it.
    Max,
    /// Each record sent when its last sample is due, the first record's end mapped to the
    /// start of the replay, sped up by this factor (1 = real time).
    RealTime(f64),
    /// Each record sent when the wall clock reaches its last sample (data stamped "now", as a
    /// live feed); records already in the past go at once.
    Wall,
}

#[derive(Clone, Debug)]
pub struct IngestConfig {
    pub inputs: Vec<PathBuf>,
    pub pace: Pace,
    /// Send end-of-stream markers after the last record of each station.
    pub end_markers: bool,
    /// Records per send.
    pub batch: usize,
}

/// What a replay sent.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct IngestReport {
    pub files: usize,
    pub records: usize,
    pub dead_letters: usize,
    pub stations: usize,
    /// Files with no usable record, with the reason (the first thousand).
    pub failed_files: Vec<String>,
    /// Bytes that were not a record: `file @ byte N: reason` (the first thousand).
    pub warnings: Vec<String>,
    /// Most files indexed at once and the records they held: the replay's read-ahead.
    pub most_open_files: usize,
    pub most_indexed_records: usize,
    pub seconds: f64,
}

/// A record of an indexed file: where its bytes are and when its samples are.
#[derive(Clone, Copy)]
struct Indexed {
    start_ns: i64,
    end_ns: i64,
    offset: u64,
    len: u32,
    /// Into the file's channels.
    channel: u32,
}

/// A file whose records are being sent.
struct OpenFile {
    path: PathBuf,
    records: Vec<Indexed>,
    /// (key, station) of each channel in the file.
    channels: Vec<(String, String)>,
    /// Records not yet sent.
    left: usize,
    /// A block of the file read ahead: (offset, bytes).
    block: (u64, Vec<u8>),
}

/// Bytes read from a file at once.
const BLOCK: usize = 64 << 10;

impl OpenFile {
    /// Reads and indexes every record of `path` (bad frames were dead-lettered by the scan).
    fn index(path: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(path)?;
        let mut records = Vec::new();
        let mut channels: Vec<(String, String)> = Vec::new();
        for frame in split_records(&bytes) {
            let Frame::Record { offset, len } = frame else {
                continue;
            };
            let Ok(r) = decode_record(&bytes[offset..offset + len]) else {
                continue;
            };
            let key = r.id.to_string();
            let channel = match channels.iter().position(|(k, _)| *k == key) {
                Some(c) => c,
                None => {
                    let station =
                        r.id.split_component()
                            .map(|(k, _)| k.to_string())
                            .unwrap_or_else(|| key.clone());
                    channels.push((key, station));
                    channels.len() - 1
                }
            };
            let span = r.samples.len() as f64 / r.sample_rate.max(1e-9);
            records.push(Indexed {
                start_ns: r.start_ns,
                end_ns: r.start_ns + (span * 1e9) as i64,
                offset: offset as u64,
                len: len as u32,
                channel: channel as u32,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            left: records.len(),
            records,
            channels,
            block: (0, Vec::new()),
        })
    }

    /// The bytes of record `i`, from the block read ahead or a new block.
    fn bytes(&mut self, i: usize) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let r = self.records[i];
        let (at, block) = &self.block;
        let within = r.offset >= *at && r.offset + r.len as u64 <= at + block.len() as u64;
        if !within {
            let file = std::fs::File::open(&self.path)?;
            let size = file.metadata()?.len();
            let want = (BLOCK as u64)
                .max(r.len as u64)
                .min(size.saturating_sub(r.offset));
            let mut buf = vec![0; want as usize];
            file.read_exact_at(&mut buf, r.offset)?;
            self.block = (r.offset, buf);
        }
        let start = (r.offset - self.block.0) as usize;
        Ok(self.block.1[start..start + r.len as usize].to_vec())
    }
}

/// The files' records merged into one time-ordered stream: by start time, ties in file order
/// and then record order (what a stable sort of every record would give).
struct Merge {
    /// Files not yet indexed, by (earliest start, input order), the next last.
    waiting: Vec<(i64, usize, PathBuf)>,
    open: BTreeMap<usize, OpenFile>,
    /// (start, file, record) of every unsent record of the open files, smallest first.
    heap: BinaryHeap<std::cmp::Reverse<(i64, usize, usize)>>,
    most_open: usize,
    most_indexed: usize,
}

/// A record ready to send.
struct Next {
    key: String,
    station: String,
    bytes: Vec<u8>,
}

impl Merge {
    fn new(mut files: Vec<(i64, usize, PathBuf)>) -> Self {
        files.sort_by_key(|f| std::cmp::Reverse((f.0, f.1)));
        Self {
            waiting: files,
            open: BTreeMap::new(),
            heap: BinaryHeap::new(),
            most_open: 0,
            most_indexed: 0,
        }
    }

    /// Opens files until the smallest unsent record cannot be preceded by one not yet read.
    fn settle(&mut self) -> Result<(), StageError> {
        loop {
            let Some((first, idx, _)) = self.waiting.last() else {
                return Ok(());
            };
            let ready = self
                .heap
                .peek()
                .is_some_and(|std::cmp::Reverse(h)| (h.0, h.1) < (*first, *idx));
            if ready {
                return Ok(());
            }
            let (_, idx, path) = self.waiting.pop().expect("checked");
            let file = OpenFile::index(&path)
                .map_err(|e| StageError::Input(format!("{}: {e}", path.display())))?;
            for (i, r) in file.records.iter().enumerate() {
                self.heap.push(std::cmp::Reverse((r.start_ns, idx, i)));
            }
            if file.left > 0 {
                self.open.insert(idx, file);
            }
            self.most_open = self.most_open.max(self.open.len());
            self.most_indexed = self.most_indexed.max(self.heap.len());
        }
    }

    /// The end time of the next record, without taking it.
    fn peek_end(&mut self) -> Result<Option<i64>, StageError> {
        self.settle()?;
        Ok(self
            .heap
            .peek()
            .map(|std::cmp::Reverse((_, f, i))| self.open[f].records[*i].end_ns))
    }

    fn next(&mut self) -> Result<Option<Next>, StageError> {
        self.settle()?;
        let Some(std::cmp::Reverse((_, f, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let file = self.open.get_mut(&f).expect("open while it has records");
        let bytes = file
            .bytes(i)
            .map_err(|e| StageError::Input(format!("{}: {e}", file.path.display())))?;
        let r = file.records[i];
        let (key, station) = file.channels[r.channel as usize].clone();
        file.left -= 1;
        if file.left == 0 {
            self.open.remove(&f);
        }
        Ok(Some(Next {
            key,
            station,
            bytes,
        }))
    }
}

/// First pass over one file: its earliest record, with what is not a record dead-lettered.
/// `None` when it holds no record (the reason is in the report).
async fn scan<T: Transport>(
    t: &T,
    path: &Path,
    report: &mut IngestReport,
) -> Result<Option<i64>, StageError> {
    let source = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("{source}: {e}");
            list_first(&mut report.failed_files, format!("{source}: {e}"));
            return Ok(None);
        }
    };
    let mut first: Option<i64> = None;
    let mut dead = Vec::new();
    let mut last_problem = None;
    for frame in split_records(&bytes) {
        let (offset, len, problem) = match frame {
            Frame::Record { offset, len } => match decode_record(&bytes[offset..offset + len]) {
                Ok(r) => {
                    first = Some(first.map_or(r.start_ns, |f| f.min(r.start_ns)));
                    continue;
                }
                Err(reason) => (offset, len, reason),
            },
            Frame::Bad {
                offset,
                len,
                reason,
            } => (offset, len, reason),
        };
        let warning = format!("{source} @ byte {offset}: {problem}");
        tracing::warn!("{warning}");
        list_first(&mut report.warnings, warning);
        last_problem = Some(problem.clone());
        dead.push(
            Outgoing::new(
                DEAD_LETTER,
                source.clone(),
                bytes[offset..offset + len].to_vec(),
            )
            .header(header::ERROR, problem)
            .header(header::STAGE, "ingest")
            .header(header::ORIGIN, format!("{source}@{offset}")),
        );
    }
    report.dead_letters += dead.len();
    t.send(dead).await?;
    if first.is_none() {
        let why = last_problem.unwrap_or_else(|| "empty file".into());
        list_first(
            &mut report.failed_files,
            format!("{source}: no miniSEED record decoded ({why})"),
        );
    }
    Ok(first)
}

/// Sends every record of the inputs in time order (see the module docs), paced as `cfg` says.
pub async fn replay<T: Transport>(
    t: &T,
    cfg: &IngestConfig,
    stop: Stop,
) -> Result<IngestReport, StageError> {
    let started = Instant::now();
    let files = collect_inputs(&cfg.inputs).map_err(|e| StageError::Input(e.to_string()))?;
    let partitions = t.partitions(WAVEFORMS_RAW)?;
    let mut report = IngestReport {
        files: files.len(),
        ..Default::default()
    };
    let mut spans = Vec::new();
    for (i, file) in files.iter().enumerate() {
        if let Some(first) = scan(t, file, &mut report).await? {
            spans.push((first, i, file.clone()));
        }
    }
    let mut merge = Merge::new(spans);
    let mut first_end: Option<i64> = None;
    let wall0 = Instant::now();
    let mut last_of_station: BTreeMap<String, String> = Default::default();
    let batch_size = cfg.batch.max(1);
    let mut batch = Vec::with_capacity(batch_size);
    while !stopped(&stop) {
        let Some(end_ns) = merge.peek_end()? else {
            break;
        };
        let due = match cfg.pace {
            Pace::Max => true,
            Pace::RealTime(speed) => {
                let first = *first_end.get_or_insert(end_ns);
                let speed = speed.max(1e-9);
                let wait = (end_ns - first) as f64 / 1e9 / speed - wall0.elapsed().as_secs_f64();
                wait <= 0.0 || pause(t, &mut batch, &mut report, wait).await?
            }
            Pace::Wall => {
                let wait = (end_ns - super::now_ns()) as f64 / 1e9;
                wait <= 0.0 || pause(t, &mut batch, &mut report, wait).await?
            }
        };
        if !due {
            continue;
        }
        let r = merge.next()?.expect("peeked");
        batch.push(
            Outgoing::new(WAVEFORMS_RAW, r.key.as_bytes(), r.bytes)
                .to_partition(partition_for(r.station.as_bytes(), partitions)),
        );
        last_of_station.insert(r.station, r.key);
        if batch.len() >= batch_size {
            flush(t, &mut batch, &mut report).await?;
        }
    }
    flush(t, &mut batch, &mut report).await?;
    report.stations = last_of_station.len();
    report.most_open_files = merge.most_open;
    report.most_indexed_records = merge.most_indexed;
    if cfg.end_markers && !stopped(&stop) {
        let markers = last_of_station
            .iter()
            .map(|(station, key)| {
                Outgoing::new(WAVEFORMS_RAW, key.as_bytes(), Vec::new())
                    .header(header::END_OF_STREAM, "1")
                    .to_partition(partition_for(station.as_bytes(), partitions))
            })
            .collect();
        t.send(markers).await?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

async fn flush<T: Transport>(
    t: &T,
    batch: &mut Vec<Outgoing>,
    report: &mut IngestReport,
) -> Result<(), StageError> {
    if !batch.is_empty() {
        report.records += batch.len();
        t.send(std::mem::take(batch)).await?;
    }
    Ok(())
}

/// Sends what is due and waits (at most 0.5 s) for the next record's time; `false`: check again.
async fn pause<T: Transport>(
    t: &T,
    batch: &mut Vec<Outgoing>,
    report: &mut IngestReport,
    wait: f64,
) -> Result<bool, StageError> {
    flush(t, batch, report).await?;
    tokio::time::sleep(Duration::from_secs_f64(wait.min(0.5))).await;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use quakelens_synth::{pack_channel, Encoding};
    use quakelens_transport::memory::MemoryBroker;
    use quakelens_transport::topics;
    use std::collections::BTreeSet;

    use super::*;

    /// `seconds` of a ramp on `NET_STA__H_H_cha` from `t0_s`, as 512-byte records.
    fn records(station: &str, cha: char, t0_s: i64, seconds: usize) -> Vec<u8> {
        let samples: Vec<i32> = (0..seconds * 100).map(|i| i as i32 % 1000).collect();
        let sid = format!("FDSN:XX_{station}__H_H_{cha}");
        pack_channel(&sid, t0_s * 1_000_000_000, &samples, 512, Encoding::Int32).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_go_out_in_time_order_by_station_with_junk_dead_lettered_and_end_markers() {
        let dir = tempfile::tempdir().unwrap();
        // Station A's vertical in two files, junk between its records; B starts 3 s later.
        let mut a = records("A", 'Z', 1_700_000_000, 20);
        let junk = vec![0x5a_u8; 700];
        a.splice(1024..1024, junk.iter().copied());
        std::fs::write(dir.path().join("a_z.mseed"), &a).unwrap();
        std::fs::write(
            dir.path().join("a_n.mseed"),
            records("A", 'N', 1_700_000_000, 20),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b_z.mseed"),
            records("B", 'Z', 1_700_000_003, 20),
        )
        .unwrap();
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let t = broker.transport(&[]);
        let (_keep, stop) = tokio::sync::watch::channel(false);
        let cfg = IngestConfig {
            inputs: vec![dir.path().to_path_buf()],
            pace: Pace::Max,
            end_markers: true,
            batch: 7,
        };
        let report = replay(&t, &cfg, stop).await.unwrap();
        // Junk between records loses none of them.
        let per_file = (20 * 100_usize).div_ceil(112);
        assert_eq!(report.files, 3);
        assert_eq!(report.stations, 2);
        assert_eq!(report.dead_letters, 1);
        assert_eq!(report.records, 3 * per_file, "{report:?}");

        let dead = broker.messages(DEAD_LETTER);
        assert_eq!(dead.len(), 1);
        let origin = String::from_utf8_lossy(dead[0].header(header::ORIGIN).unwrap()).into_owned();
        assert!(origin.ends_with("a_z.mseed@1024"), "{origin}");
        assert_eq!(dead[0].payload.as_deref(), Some(&junk[..]));

        // Every record once, each station in one partition, in time order there, then its end
        // marker.
        let sent = broker.messages(WAVEFORMS_RAW);
        let mut ended = BTreeSet::new();
        let mut starts: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
        let mut partitions = BTreeSet::new();
        for m in &sent {
            let key = m.key_str().unwrap();
            let station = key[..key.len() - 1].to_string();
            assert!(
                !ended.contains(&station),
                "{key} after its station's end marker"
            );
            partitions.insert((station.clone(), m.partition));
            if m.header(header::END_OF_STREAM).is_some() {
                ended.insert(station);
            } else {
                let start = decode_record(m.payload.as_deref().unwrap())
                    .unwrap()
                    .start_ns;
                starts.entry(m.partition).or_default().push(start);
            }
        }
        assert_eq!(starts.values().map(Vec::len).sum::<usize>(), report.records);
        assert!(
            starts.values().all(|s| s.is_sorted()),
            "records out of time order"
        );
        assert_eq!(ended.len(), 2, "{ended:?}");
        assert_eq!(
            partitions.len(),
            2,
            "one partition per station: {partitions:?}"
        );
    }

    /// Ten files, five consecutive 20 s pieces of two channels: read in time order, at most
    /// the files of one period are indexed at once, and the order is the one a sort of every
    /// record would give.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_files_of_the_present_are_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000;
        for k in 0..5 {
            for cha in ['Z', 'N'] {
                let name = format!("a_{cha}_{k}.mseed");
                std::fs::write(dir.path().join(name), records("A", cha, t0 + 20 * k, 20)).unwrap();
            }
        }
        // A bad file among them is reported, not fatal.
        std::fs::write(dir.path().join("junk.mseed"), vec![0u8; 300]).unwrap();
        let broker = MemoryBroker::new();
        for (t, p) in topics::ALL {
            broker.create_topic(t, p);
        }
        let t = broker.transport(&[]);
        let (_keep, stop) = tokio::sync::watch::channel(false);
        let cfg = IngestConfig {
            inputs: vec![dir.path().to_path_buf()],
            pace: Pace::Max,
            end_markers: false,
            batch: 16,
        };
        let report = replay(&t, &cfg, stop).await.unwrap();
        let per_file = (20 * 100_usize).div_ceil(112);
        assert_eq!(report.records, 10 * per_file);
        assert_eq!(report.failed_files.len(), 1, "{report:?}");
        assert!(report.failed_files[0].contains("junk.mseed"), "{report:?}");
        assert!(report.most_open_files <= 3, "{report:?}");
        assert!(report.most_indexed_records <= 3 * per_file, "{report:?}");
        let sent: Vec<(i64, String)> = broker
            .messages(WAVEFORMS_RAW)
            .iter()
            .map(|m| {
                let r = decode_record(m.payload.as_deref().unwrap()).unwrap();
                (r.start_ns, m.key_str().unwrap().to_string())
            })
            .collect();
        let mut sorted = sent.clone();
        // Stable by start: within a start time, the N file (earlier in the directory) first.
        sorted.sort_by_key(|(s, k)| (*s, !k.ends_with('N')));
        assert_eq!(sent, sorted);
    }
}
