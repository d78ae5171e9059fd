//! Training and scoring data read back from the lake, and the split by event.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, Int32Array, MapArray, StringArray};
use arrow::datatypes::{DataType, Float32Type, TimeUnit, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use quakelens_lake::{CatalogRow, KeyRef, Keyed, Lake, SourceAttributes};
use quakelens_signal::features::FeatureSet;
use quakelens_signal::window::fnv1a;

use crate::forest::{InputMap, InputSource};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("reading the lake: {0}")]
    Query(#[from] quakelens_lake::QueryError),
    #[error("lake column {column}: {reason}")]
    Column { column: String, reason: String },
    #[error("the lake has no windows yet")]
    NoWindows,
    #[error("the lake at {0} stores no waveforms, which waveform models need: make a lake for them with `quakelens run --waveforms` (into a new --lake)")]
    NoWaveforms(String),
}

/// One window as the models see it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Example {
    pub window_id: String,
    pub station: String,
    pub network: String,
    pub location: String,
    pub band: String,
    pub start_ns: i64,
    /// Event id when catalogued, else the window id: the unit of the train/test split.
    pub group: String,
    pub label: Option<i32>,
    pub magnitude: Option<f64>,
    pub ttf_s: Option<f64>,
    /// Empty unless requested.
    pub spectrogram: Vec<f32>,
    /// The window's samples, `[channel][sample]`; empty unless requested.
    pub waveform: Vec<f32>,
    /// The forest inputs asked for, in their order; NaN = missing.
    pub inputs: Vec<f64>,
    /// The window's catalogue row (read when an input or a caller needs it).
    pub catalog: CatalogRow,
}

impl Keyed for Example {
    fn key(&self) -> KeyRef<'_> {
        KeyRef {
            window_id: &self.window_id,
            network: &self.network,
            station: &self.station,
            location: &self.location,
            band: &self.band,
            start_ns: self.start_ns,
        }
    }
}

/// What to read.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub spectrograms: bool,
    /// The raw samples (only lakes made with `--waveforms` have them).
    pub waveforms: bool,
    /// Forest inputs to read into `inputs`: waveform features of the lake's set, catalogue
    /// attributes, or catalogue columns.
    pub inputs: Vec<String>,
    /// Read every window's catalogue row into `catalog`.
    pub catalog: bool,
    pub only_labelled: bool,
    /// Extra SQL condition on `w` (windows) / `f` (features), e.g. `w.day = '2024-03-01'`.
    pub filter: Option<String>,
}

/// The feature set of the lake's `features` table.
pub fn lake_feature_set(lake: &Lake) -> Result<FeatureSet, DatasetError> {
    lake.format()
        .map(|f| f.features)
        .ok_or(DatasetError::NoWindows)
}

/// Reads the selected windows, ordered by window id (deterministic).
pub async fn load_examples(lake: &Lake, sel: &Selection) -> Result<Vec<Example>, DatasetError> {
    let set = lake_feature_set(lake)?;
    if sel.waveforms && lake.format().is_some_and(|f| f.waveform.is_none()) {
        return Err(DatasetError::NoWaveforms(lake.location().to_string()));
    }
    let map = InputMap::new(&sel.inputs, set);
    let needs_features = map
        .sources
        .iter()
        .any(|s| matches!(s, InputSource::Feature(_)));
    let needs_catalog = sel.catalog
        || map
            .sources
            .iter()
            .any(|s| matches!(s, InputSource::Catalog(_)));
    let mut cols = vec![
        "w.window_id".to_string(),
        "w.network".into(),
        "w.station".into(),
        "w.location".into(),
        "w.band".into(),
        "w.start_time".into(),
        "w.event_id".into(),
        "w.label".into(),
        "w.magnitude".into(),
        "w.ttf_s".into(),
    ];
    cols.extend(
        SourceAttributes::COLUMNS
            .iter()
            .map(|c| format!("w.\"{c}\"")),
    );
    if needs_catalog {
        cols.push("w.catalog".into());
    }
    if sel.spectrograms {
        cols.push("w.spectrogram".into());
    }
    if sel.waveforms {
        cols.push("w.waveform".into());
    }
    let names = set.column_names();
    if needs_features {
        cols.extend(names.iter().map(|n| format!("f.\"{n}\"")));
    }
    let join = if needs_features {
        " JOIN features f ON w.window_id = f.window_id AND w.day = f.day AND w.stream = f.stream"
    } else {
        ""
    };
    let mut conditions = Vec::new();
    if sel.only_labelled {
        conditions.push("w.label IS NOT NULL".to_string());
    }
    if let Some(f) = &sel.filter {
        conditions.push(format!("({f})"));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {} FROM windows w{join}{filter} ORDER BY w.window_id",
        cols.join(", ")
    );
    let batches = lake.sql(&sql).await?;
    let mut out = Vec::new();
    for b in &batches {
        append(
            b,
            sel,
            &map,
            needs_features.then_some(&names[..]),
            needs_catalog,
            &mut out,
        )?;
    }
    Ok(out)
}

fn column_err(name: &str, reason: impl Into<String>) -> DatasetError {
    DatasetError::Column {
        column: name.into(),
        reason: reason.into(),
    }
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, DatasetError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| column_err(name, "missing or of an unexpected type"))
}

/// A text column as `Utf8` whatever string type DataFusion chose (it reads Parquet strings as
/// `Utf8View`).
fn text(b: &RecordBatch, name: &str) -> Result<StringArray, DatasetError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| column_err(name, "missing"))?;
    let c =
        arrow::compute::cast(c, &DataType::Utf8).map_err(|e| column_err(name, e.to_string()))?;
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| column_err(name, "not text"))
}

/// A timestamp column in ns since the epoch, whatever unit it is stored in.
fn nanos(b: &RecordBatch, name: &str) -> Result<Vec<i64>, DatasetError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| column_err(name, "missing"))?;
    let c = arrow::compute::cast(c, &DataType::Timestamp(TimeUnit::Nanosecond, None))
        .map_err(|e| column_err(name, e.to_string()))?;
    Ok(c.as_primitive::<TimestampNanosecondType>()
        .values()
        .to_vec())
}

fn float64(b: &RecordBatch, name: &str) -> Result<Float64Array, DatasetError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| column_err(name, "missing"))?;
    let c =
        arrow::compute::cast(c, &DataType::Float64).map_err(|e| column_err(name, e.to_string()))?;
    Ok(c.as_primitive::<arrow::datatypes::Float64Type>().clone())
}

/// A list-of-float column as `List<Float32>`, whatever list type DataFusion read it as.
fn f32_lists(b: &RecordBatch, name: &str) -> Result<arrow::array::ArrayRef, DatasetError> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| column_err(name, "missing"))?;
    arrow::compute::cast(
        c,
        &DataType::List(Arc::new(arrow::datatypes::Field::new(
            "item",
            DataType::Float32,
            true,
        ))),
    )
    .map_err(|e| column_err(name, e.to_string()))
}

fn catalog_rows(b: &RecordBatch) -> Result<Vec<CatalogRow>, DatasetError> {
    let m = col::<MapArray>(b, "catalog")?;
    let mut out = Vec::with_capacity(m.len());
    for r in 0..m.len() {
        if m.is_null(r) {
            out.push(Vec::new());
            continue;
        }
        let e = m.value(r);
        let keys = arrow::compute::cast(e.column(0), &DataType::Utf8)
            .map_err(|x| column_err("catalog", x.to_string()))?;
        let values = arrow::compute::cast(e.column(1), &DataType::Utf8)
            .map_err(|x| column_err("catalog", x.to_string()))?;
        let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
        let mut row: CatalogRow = (0..e.len())
            .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
            .collect();
        row.sort();
        out.push(row);
    }
    Ok(out)
}

fn append(
    b: &RecordBatch,
    sel: &Selection,
    map: &InputMap,
    feature_names: Option<&[String]>,
    with_catalog: bool,
    out: &mut Vec<Example>,
) -> Result<(), DatasetError> {
    let text = |name: &str| text(b, name);
    let (ids, net, sta, loc, band, event) = (
        text("window_id")?,
        text("network")?,
        text("station")?,
        text("location")?,
        text("band")?,
        text("event_id")?,
    );
    let start = nanos(b, "start_time")?;
    let label = col::<Int32Array>(b, "label")?;
    let magnitude = float64(b, "magnitude")?;
    let ttf = float64(b, "ttf_s")?;
    let attrs: Vec<Float64Array> = SourceAttributes::COLUMNS
        .iter()
        .map(|c| float64(b, c))
        .collect::<Result<_, _>>()?;
    let catalogs = if with_catalog {
        catalog_rows(b)?
    } else {
        vec![Vec::new(); b.num_rows()]
    };
    let features: Vec<Float64Array> = match feature_names {
        Some(names) => names
            .iter()
            .map(|n| float64(b, n))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let spectrograms = sel
        .spectrograms
        .then(|| f32_lists(b, "spectrogram"))
        .transpose()?;
    let waveforms = sel
        .waveforms
        .then(|| f32_lists(b, "waveform"))
        .transpose()?;
    let opt = |a: &Float64Array, r: usize| (!a.is_null(r)).then(|| a.value(r));
    let row_of = |lists: &Option<arrow::array::ArrayRef>, r: usize| match lists {
        Some(list) => list
            .as_list::<i32>()
            .value(r)
            .as_primitive::<Float32Type>()
            .values()
            .to_vec(),
        None => Vec::new(),
    };
    for (r, catalog) in catalogs.into_iter().enumerate() {
        let spectrogram = row_of(&spectrograms, r);
        let waveform = row_of(&waveforms, r);
        let source = SourceAttributes::from_values(std::array::from_fn(|k| opt(&attrs[k], r)));
        let row_features: Vec<f64> = features
            .iter()
            .map(|a| opt(a, r).unwrap_or(f64::NAN))
            .collect();
        let (inputs, _) = map.row_of(&row_features, &source, &catalog);
        let window_id = ids.value(r).to_string();
        out.push(Example {
            group: if event.is_null(r) {
                window_id.clone()
            } else {
                event.value(r).to_string()
            },
            window_id,
            network: net.value(r).into(),
            station: sta.value(r).into(),
            location: loc.value(r).into(),
            band: band.value(r).into(),
            start_ns: start[r],
            label: (!label.is_null(r)).then(|| label.value(r)),
            magnitude: opt(&magnitude, r),
            ttf_s: opt(&ttf, r),
            spectrogram,
            waveform,
            inputs,
            catalog,
        });
    }
    Ok(())
}

/// Which part of the data a window belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Split {
    Train,
    Valid,
    Test,
}

/// Splits by group (event), never by window, so no event sits on both sides; stable when data
/// is added because each group's side depends only on its id and the seed.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitPlan {
    pub seed: u64,
    pub valid: f64,
    pub test: f64,
}

impl Default for SplitPlan {
    fn default() -> Self {
        Self {
            seed: 7,
            valid: 0.15,
            test: 0.15,
        }
    }
}

impl SplitPlan {
    pub fn assign(&self, group: &str) -> Split {
        let u = (keyed_hash(self.seed, group) >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.test {
            Split::Test
        } else if u < self.test + self.valid {
            Split::Valid
        } else {
            Split::Train
        }
    }
}

/// A well-spread 64-bit hash of `key` under `seed`: FNV-1a of the seed's little-endian bytes and
/// the key, then SplitMix64's finaliser (FNV alone leaves the high bits low in entropy). Orders
/// and splits built on it depend only on each key and the seed, so they are stable when data
/// is added and easy to reproduce outside quakelens.
pub fn keyed_hash(seed: u64, key: &str) -> u64 {
    let mut z = fnv1a(seed.to_le_bytes().into_iter().chain(key.bytes()));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_by_group_and_roughly_proportional() {
        let plan = SplitPlan::default();
        let mut counts = [0usize; 3];
        for i in 0..10_000 {
            let s = plan.assign(&format!("ev{i:06}"));
            assert_eq!(s, plan.assign(&format!("ev{i:06}")));
            counts[s as usize] += 1;
        }
        assert!((6700..7300).contains(&counts[0]), "{counts:?}");
        assert!((1300..1700).contains(&counts[1]), "{counts:?}");
        assert!((1300..1700).contains(&counts[2]), "{counts:?}");
    }
}
