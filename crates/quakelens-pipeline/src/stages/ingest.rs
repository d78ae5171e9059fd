//! Files → `waveforms.raw`: every miniSEED record as one message, key `NET.STA.LOC.CHA`,
//! partitioned by station (NET.STA.LOC + band) so a station's three components stay together and
//! in order. Replays at full speed or paced to real time; ends each station with an
//! end-of-stream marker so the windower cuts the last chunk. Bytes that are not a record go to
//! `dead-letter` with the file and offset.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use quakelens_signal::miniseed::{decode_record, split_records, Frame};
use quakelens_transport::topics::{header, DEAD_LETTER, WAVEFORMS_RAW};
use quakelens_transport::{partition_for, Outgoing, Transport};

use super::{stopped, StageError, Stop};
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
    pub seconds: f64,
}

struct Item {
    start_ns: i64,
    /// When the record's last sample was recorded: a live feed cannot deliver it earlier.
    end_ns: i64,
    key: String,
    station: String,
    bytes: Vec<u8>,
}

/// Reads all inputs, sorts records by start time (stable: file order within a channel) and
/// publishes them.
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
    let mut items = Vec::new();
    let mut dead = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file)
            .map_err(|e| StageError::Input(format!("{}: {e}", file.display())))?;
        let source = file.display().to_string();
        for frame in split_records(&bytes) {
            let (offset, len, problem) = match frame {
                Frame::Record { offset, len } => {
                    let body = &bytes[offset..offset + len];
                    match decode_record(body) {
                        Ok(r) => {
                            let station =
                                r.id.split_component()
                                    .map(|(k, _)| k.to_string())
                                    .unwrap_or_else(|| r.id.to_string());
                            let span = r.samples.len() as f64 / r.sample_rate.max(1e-9);
                            items.push(Item {
                                start_ns: r.start_ns,
                                end_ns: r.start_ns + (span * 1e9) as i64,
                                key: r.id.to_string(),
                                station,
                                bytes: body.to_vec(),
                            });
                            continue;
                        }
                        Err(reason) => (offset, len, reason),
                    }
                }
                Frame::Bad {
                    offset,
                    len,
                    reason,
                } => (offset, len, reason),
            };
            tracing::warn!("{source} @ byte {offset}: {problem}");
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
    }
    report.dead_letters = dead.len();
    t.send(dead).await?;
    items.sort_by_key(|i| i.start_ns);
    let first_ns = items.iter().map(|i| i.end_ns).min().unwrap_or(0);
    let wall0 = Instant::now();
    let mut last_of_station: std::collections::BTreeMap<String, String> = Default::default();
    let batch_size = cfg.batch.max(1);
    let mut i = 0;
    while i < items.len() && !stopped(&stop) {
        let mut j = i;
        match cfg.pace {
            Pace::Max => j = (i + batch_size).min(items.len()),
            Pace::RealTime(speed) => {
                let speed = speed.max(1e-9);
                let now_ns = (wall0.elapsed().as_secs_f64() * speed * 1e9) as i64;
                while j < items.len() && j - i < batch_size && items[j].end_ns - first_ns <= now_ns
                {
                    j += 1;
                }
                if j == i {
                    let due = (items[i].end_ns - first_ns) as f64 / 1e9 / speed;
                    let wait = (due - wall0.elapsed().as_secs_f64()).max(0.0);
                    tokio::time::sleep(Duration::from_secs_f64(wait.min(0.5))).await;
                    continue;
                }
            }
            Pace::Wall => {
                let now_ns = super::now_ns();
                while j < items.len() && j - i < batch_size && items[j].end_ns <= now_ns {
                    j += 1;
                }
                if j == i {
                    let wait = (items[i].end_ns - now_ns) as f64 / 1e9;
                    tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.0, 0.5))).await;
                    continue;
                }
            }
        }
        let batch: Vec<Outgoing> = items[i..j]
            .iter()
            .map(|it| {
                last_of_station.insert(it.station.clone(), it.key.clone());
                Outgoing::new(WAVEFORMS_RAW, it.key.as_bytes(), it.bytes.clone())
                    .to_partition(partition_for(it.station.as_bytes(), partitions))
            })
            .collect();
        report.records += batch.len();
        t.send(batch).await?;
        i = j;
    }
    let stations: BTreeSet<&String> = last_of_station.keys().collect();
    report.stations = stations.len();
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

#[cfg(test)]
mod tests {
    use quakelens_synth::{pack_channel, Encoding};
    use quakelens_transport::memory::MemoryBroker;
    use quakelens_transport::topics;

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
}
