//! Input stage for the study's D-set, laid out as its users hold it: files
//! `<STA>_waveforms_pre.hdf5` / `<STA>_waveforms_post.hdf5` anywhere below the dataset folder
//! (the study keeps one folder per station, `dataset/NRCA/NRCA_waveforms_pre.hdf5`), one
//! `(3, 2500)` float64 dataset per trace named by `trace_name` (25 s at 100 Hz, P at 5 s), and
//! beside each the attributes file of the same name with `waveforms` → `attributes` and
//! `.hdf5` → `.csv`. `pre` = foreshock (label 0), `post` = aftershock (label 1).
//!
//! Rows stay in the file's order: channel i of the spectrogram and the features is row i, as in
//! the study. Which component each row is (given with `--dset-rows`) is recorded in
//! `channel_order`, never used to reorder. Every column of a trace's attributes row lands in the
//! window's catalogue, so the study's forest inputs can be formed from the lake.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use quakelens_lake::{CatalogRow, SourceAttributes, WindowRecord};
use quakelens_signal::stream::{ChannelOrder, StationKey};
use quakelens_signal::window::{fnv1a, Window};
use quakelens_signal::TARGET_RATE_HZ;

/// Samples per D-set trace (25 s at 100 Hz).
pub const DSET_SAMPLES: usize = 2500;
/// Rows per D-set trace.
pub const DSET_ROWS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum DsetError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error(
        "{0}: no <STA>_waveforms_pre.hdf5 / <STA>_waveforms_post.hdf5 files in it or below it"
    )]
    Empty(String),
}

/// One trace's attributes row: every column, as text.
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

    fn catalog(&self) -> CatalogRow {
        let mut row: CatalogRow = self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        row.sort();
        row
    }
}

/// What the file says about one trace, attached to its window after the transform.
#[derive(Clone, Debug)]
pub struct TraceLabel {
    pub label: i32,
    pub magnitude: Option<f64>,
    /// `source_id`, else the trace name: the unit of the split.
    pub event: String,
    pub source: SourceAttributes,
    pub catalog: CatalogRow,
}

/// Windows read from a D-set directory, with their labels, and what was skipped.
#[derive(Debug, Default)]
pub struct DsetBatch {
    pub windows: Vec<Window>,
    /// Per window, in the same order.
    pub labels: Vec<TraceLabel>,
    /// `file: trace: reason` for traces not used (not (3, 2500), NaN, unreadable, …).
    pub skipped: Vec<String>,
    pub files: usize,
}

impl DsetBatch {
    /// Attaches labels and catalogue rows to the transformed records (same order), and the
    /// time to failure (`source_origin_time` − `mainshock_ns`, s) where the row has an origin.
    pub fn label(&self, records: &mut [WindowRecord], offset: usize, mainshock_ns: i64) {
        for (r, t) in records.iter_mut().zip(&self.labels[offset..]) {
            r.label = Some(t.label);
            r.magnitude = t.magnitude;
            r.event_id = Some(t.event.clone());
            r.source = t.source;
            r.catalog = t.catalog.clone();
            r.ttf_s = ttf_s(&r.catalog, mainshock_ns);
        }
    }
}

/// Seconds from the mainshock to the row's `source_origin_time` (`None` without one).
fn ttf_s(catalog: &CatalogRow, mainshock_ns: i64) -> Option<f64> {
    let text = quakelens_lake::catalog_value(catalog, quakelens_models::ttf::ORIGIN_COLUMN)?;
    let origin = quakelens_signal::time::parse_utc(text)?;
    Some((origin - mainshock_ns) as f64 / 1e9)
}

/// Splits CSV text into rows of fields (RFC 4180: quoted fields may hold commas, quotes as
/// `""` and line breaks).
fn csv_records(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows.retain(|r| !(r.len() == 1 && r[0].trim().is_empty()));
    rows
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
    let mut records = csv_records(text.trim_start_matches('\u{feff}')).into_iter();
    let header: Vec<String> = records
        .next()
        .ok_or_else(|| err("empty CSV".into()))?
        .into_iter()
        .map(|h| h.trim().to_string())
        .collect();
    if !header.iter().any(|h| h == "trace_name") {
        return Err(err("no trace_name column".into()));
    }
    let mut out = HashMap::new();
    for (i, cells) in records.enumerate() {
        if cells.len() != header.len() {
            return Err(err(format!(
                "record {}: {} fields, the header has {}",
                i + 1,
                cells.len(),
                header.len()
            )));
        }
        let row: HashMap<String, String> = header
            .iter()
            .cloned()
            .zip(cells.into_iter().map(|c| c.trim().to_string()))
            .collect();
        out.insert(row["trace_name"].clone(), Attributes(row));
    }
    Ok(out)
}

/// A waveform file of the D-set: its station, class and attributes file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DsetFile {
    station: String,
    label: i32,
    waveforms: PathBuf,
    attributes: PathBuf,
}

/// Every D-set waveform file in or below `dir`, sorted by path.
fn discover(dir: &Path) -> Result<Vec<DsetFile>, DsetError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| DsetError::File {
            path: d.display().to_string(),
            reason: e.to_string(),
        })?;
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            for (suffix, label) in [("_waveforms_pre.hdf5", 0), ("_waveforms_post.hdf5", 1)] {
                if let Some(station) = name.strip_suffix(suffix) {
                    let attributes = path.with_file_name(
                        name.replacen("waveforms", "attributes", 1)
                            .replace(".hdf5", ".csv"),
                    );
                    found.push(DsetFile {
                        station: station.to_string(),
                        label,
                        waveforms: path.clone(),
                        attributes,
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| a.waveforms.cmp(&b.waveforms));
    if found.is_empty() {
        return Err(DsetError::Empty(dir.display().to_string()));
    }
    Ok(found)
}

/// Reads every trace below a D-set directory. `rows` names the component of each dataset row
/// (recorded, not used to reorder).
pub fn read_dset(dir: &Path, rows: ChannelOrder) -> Result<DsetBatch, DsetError> {
    let mut batch = DsetBatch::default();
    for file in discover(dir)? {
        batch.files += 1;
        let attrs = read_attributes(&file.attributes)?;
        let shown = file.waveforms.display().to_string();
        let file_err = |reason: String| DsetError::File {
            path: shown.clone(),
            reason,
        };
        let h5 = hdf5_metno::File::open(&file.waveforms).map_err(|e| file_err(e.to_string()))?;
        let mut names = h5.member_names().map_err(|e| file_err(e.to_string()))?;
        names.sort();
        for name in names {
            let skip = |reason: String| format!("{shown}: {name}: {reason}");
            let ds = match h5.dataset(&name) {
                Ok(ds) => ds,
                Err(e) => {
                    batch.skipped.push(skip(format!("not a dataset ({e})")));
                    continue;
                }
            };
            let shape = ds.shape();
            if shape != [DSET_ROWS, DSET_SAMPLES] {
                batch.skipped.push(skip(format!(
                    "shape {shape:?}, a D-set trace is ({DSET_ROWS}, {DSET_SAMPLES})"
                )));
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
                batch.skipped.push(skip(format!(
                    "non-finite sample at row {}, sample {}",
                    i / DSET_SAMPLES,
                    i % DSET_SAMPLES
                )));
                continue;
            }
            let a = attrs.get(&name).cloned().unwrap_or_default();
            let key = StationKey {
                network: a
                    .get("station_network_code")
                    .or(a.get("network_code"))
                    .unwrap_or("XX")
                    .to_string(),
                station: a
                    .get("station_code")
                    .or(a.get("receiver_name"))
                    .unwrap_or(&file.station)
                    .to_string(),
                location: a.get("station_location_code").unwrap_or("").to_string(),
                band: a.get("station_channels").unwrap_or("HH").to_string(),
            };
            let data: [Vec<f64>; 3] = std::array::from_fn(|row| {
                values[row * DSET_SAMPLES..(row + 1) * DSET_SAMPLES].to_vec()
            });
            let start_ns = a
                .get("trace_start_time")
                .and_then(quakelens_signal::time::parse_ns)
                .unwrap_or(0);
            let onset_ns = a
                .number("trace_P_arrival_sample")
                .map(|p| start_ns + (p * 1e9 / TARGET_RATE_HZ) as i64)
                .or(Some(start_ns + 5_000_000_000));
            batch.windows.push(Window {
                // Trace names are unique in the D-set; start times may be absent.
                id: format!("{:016x}", fnv1a(format!("dset|{name}").bytes())),
                station: key,
                start_ns,
                data,
                order: rows,
                mode: "dset",
                onset_ns,
                trigger_ratio: None,
                gap_runs: 0,
                filled_samples: 0,
                source_rate: TARGET_RATE_HZ,
                resampled: false,
            });
            batch.labels.push(TraceLabel {
                label: file.label,
                magnitude: a.number("source_magnitude"),
                event: a
                    .get("source_id")
                    .map(str::to_string)
                    .unwrap_or_else(|| name.clone()),
                source: a.source(),
                catalog: a.catalog(),
            });
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_may_be_quoted() {
        let rows = csv_records("a,b,c\r\n1,\"x, y\",\"say \"\"hi\"\"\"\n2,,\"multi\nline\"\n\n");
        assert_eq!(
            rows,
            vec![
                vec!["a", "b", "c"],
                vec!["1", "x, y", "say \"hi\""],
                vec!["2", "", "multi\nline"],
            ]
        );
    }

    #[test]
    fn files_are_found_below_the_folder_with_their_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let station = dir.path().join("dataset/NRCA");
        std::fs::create_dir_all(&station).unwrap();
        for name in [
            "NRCA_waveforms_pre.hdf5",
            "NRCA_waveforms_post.hdf5",
            "notes.txt",
        ] {
            std::fs::write(station.join(name), b"").unwrap();
        }
        let found = discover(dir.path()).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].label, 1);
        assert_eq!(found[0].station, "NRCA");
        assert_eq!(found[1].attributes, station.join("NRCA_attributes_pre.csv"));
        let empty = tempfile::tempdir().unwrap();
        let err = discover(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no <STA>_waveforms_pre.hdf5"), "{err}");
    }
}
