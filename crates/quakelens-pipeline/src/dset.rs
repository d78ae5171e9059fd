//! Input stage for Laurenti et al.'s D-set layout, what the study's users hold: per station
//! `<STA>_waveforms_pre.hdf5` / `<STA>_waveforms_post.hdf5` (one `(3, 2500)` float64 dataset per
//! trace, named by `trace_name`: 25 s at 100 Hz, P at 5 s) and `<STA>_attributes_pre.csv` /
//! `_post.csv` (trace_name, source_magnitude, p_travel_sec, …). `pre` = foreshock (label 0),
//! `post` = aftershock (label 1). Traces are already P-aligned windows, so they skip the trigger
//! and go straight to the transform stage.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use quakelens_lake::{SourceAttributes, WindowRecord};
use quakelens_signal::stream::{ChannelOrder, StationKey};
use quakelens_signal::window::{fnv1a, Window};
use quakelens_signal::TARGET_RATE_HZ;

/// Samples per D-set trace (25 s at 100 Hz).
pub const DSET_SAMPLES: usize = 2500;

#[derive(Debug, thiserror::Error)]
pub enum DsetError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}: no <STA>_waveforms_pre.hdf5 / _post.hdf5 files")]
    Empty(String),
}

/// One trace's catalogue row.
#[derive(Clone, Debug, Default)]
struct Attributes(HashMap<String, String>);

impl Attributes {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.get(key)?
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
    }

    fn source(&self) -> SourceAttributes {
        SourceAttributes {
            p_travel_sec: self.number("p_travel_sec"),
            s_travel_sec: self.number("s_travel_sec"),
            source_depth_km: self.number("source_depth_km"),
            source_latitude: self.number("source_latitude"),
            source_longitude: self.number("source_longitude"),
            receiver_latitude: self.number("receiver_latitude"),
            receiver_longitude: self.number("receiver_longitude"),
        }
    }
}

/// Windows read from a D-set directory, with their labels, and what was skipped.
#[derive(Debug, Default)]
pub struct DsetBatch {
    pub windows: Vec<Window>,
    /// Per window: (label, magnitude, event id, catalogue attributes).
    pub labels: Vec<(i32, Option<f64>, String, SourceAttributes)>,
    /// `file: trace: reason` for traces not used (fewer than 3 rows, wrong length, NaN, …).
    pub skipped: Vec<String>,
    pub files: usize,
}

impl DsetBatch {
    /// Attaches labels and catalogue attributes to the transformed records (same order).
    pub fn label(&self, records: &mut [WindowRecord], offset: usize) {
        for (r, (label, magnitude, event, source)) in records.iter_mut().zip(&self.labels[offset..])
        {
            r.label = Some(*label);
            r.magnitude = *magnitude;
            r.event_id = Some(event.clone());
            r.source = *source;
        }
    }
}

fn read_attributes(path: &Path) -> Result<HashMap<String, Attributes>, DsetError> {
    let err = |reason: String| DsetError::File {
        path: path.display().to_string(),
        reason,
    };
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or_else(|| err("empty CSV".into()))?
        .split(',')
        .map(|h| h.trim().to_string())
        .collect();
    if !header.iter().any(|h| h == "trace_name") {
        return Err(err("no trace_name column".into()));
    }
    let mut out = HashMap::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != header.len() {
            return Err(err(format!(
                "line {}: {} fields, header has {}",
                i + 2,
                cells.len(),
                header.len()
            )));
        }
        let row: HashMap<String, String> = header
            .iter()
            .cloned()
            .zip(cells.iter().map(|c| c.trim().to_string()))
            .collect();
        out.insert(row["trace_name"].clone(), Attributes(row));
    }
    Ok(out)
}

/// `(station, class label, waveform file, attribute file)` for every D-set file pair in `dir`.
fn discover(dir: &Path) -> Result<Vec<(String, i32, PathBuf, PathBuf)>, DsetError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DsetError::File {
        path: dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut found = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        for (suffix, label, part) in [
            ("_waveforms_pre.hdf5", 0, "pre"),
            ("_waveforms_post.hdf5", 1, "post"),
        ] {
            if let Some(station) = name.strip_suffix(suffix) {
                let attrs = dir.join(format!("{station}_attributes_{part}.csv"));
                found.push((station.to_string(), label, e.path(), attrs));
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(DsetError::Empty(dir.display().to_string()));
    }
    Ok(found)
}

/// Reads every trace of a D-set directory. `rows` is the component order of the datasets'
/// three rows (the study's files are E, N, Z); windows come out in `order`.
pub fn read_dset(
    dir: &Path,
    rows: ChannelOrder,
    order: ChannelOrder,
) -> Result<DsetBatch, DsetError> {
    let mut batch = DsetBatch::default();
    for (station, label, h5, csv) in discover(dir)? {
        batch.files += 1;
        let attrs = read_attributes(&csv)?;
        let shown = h5.display().to_string();
        let file_err = |reason: String| DsetError::File {
            path: shown.clone(),
            reason,
        };
        let file = hdf5_metno::File::open(&h5).map_err(|e| file_err(e.to_string()))?;
        let mut names = file.member_names().map_err(|e| file_err(e.to_string()))?;
        names.sort();
        for name in names {
            let skip = |reason: String| format!("{shown}: {name}: {reason}");
            let ds = match file.dataset(&name) {
                Ok(ds) => ds,
                Err(e) => {
                    batch.skipped.push(skip(format!("not a dataset ({e})")));
                    continue;
                }
            };
            let shape = ds.shape();
            if shape.len() != 2 || shape[0] < 3 {
                batch
                    .skipped
                    .push(skip(format!("shape {shape:?}, need (3, {DSET_SAMPLES})")));
                continue;
            }
            if shape[1] != DSET_SAMPLES {
                batch
                    .skipped
                    .push(skip(format!("{} samples, need {DSET_SAMPLES}", shape[1])));
                continue;
            }
            let values: Vec<f64> = match ds.read_raw::<f64>() {
                Ok(v) => v,
                Err(e) => {
                    batch.skipped.push(skip(format!("unreadable ({e})")));
                    continue;
                }
            };
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                batch
                    .skipped
                    .push(skip(format!("non-finite sample at {i}")));
                continue;
            }
            let a = attrs.get(&name).cloned().unwrap_or_default();
            let key = StationKey {
                network: a.get("station_network_code").unwrap_or("XX").to_string(),
                station: a.get("station_code").unwrap_or(&station).to_string(),
                location: a.get("station_location_code").unwrap_or("").to_string(),
                band: a.get("station_channels").unwrap_or("HH").to_string(),
            };
            let mut data: [Vec<f64>; 3] = Default::default();
            for (row, &component) in rows.0.iter().enumerate() {
                let at = order.index_of(component);
                data[at] = values[row * DSET_SAMPLES..(row + 1) * DSET_SAMPLES].to_vec();
            }
            let start_ns = a
                .get("trace_start_time")
                .and_then(quakelens_signal::time::parse_ns)
                .unwrap_or(0);
            let onset_ns = a
                .get("trace_P_arrival_sample")
                .and_then(|s| s.parse::<f64>().ok())
                .map(|p| start_ns + (p * 1e9 / TARGET_RATE_HZ) as i64)
                .or(Some(start_ns + 5_000_000_000));
            batch.windows.push(Window {
                // Trace names are unique in the D-set; start times may be absent.
                id: format!("{:016x}", fnv1a(format!("dset|{name}").bytes())),
                station: key,
                start_ns,
                data,
                order,
                mode: "dset",
                onset_ns,
                trigger_ratio: None,
                gap_runs: 0,
                filled_samples: 0,
                source_rate: TARGET_RATE_HZ,
                resampled: false,
            });
            let event = a
                .get("source_id")
                .map(str::to_string)
                .unwrap_or_else(|| name.clone());
            batch
                .labels
                .push((label, a.number("source_magnitude"), event, a.source()));
        }
    }
    Ok(batch)
}
