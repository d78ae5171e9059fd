//! Training and scoring data read back from the lake, and the split by event.

use arrow::array::{
    Array, FixedSizeListArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use quakelens_lake::{KeyRef, Keyed, Lake, SourceAttributes};
use quakelens_signal::window::fnv1a;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("reading the lake: {0}")]
    Query(#[from] quakelens_lake::QueryError),
    #[error("lake column {column}: {reason}")]
    Column { column: String, reason: String },
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
    /// Empty unless requested.
    pub spectrogram: Vec<f32>,
    /// Named numeric inputs (waveform features, then catalogue attributes); NaN = null.
    pub inputs: Vec<f64>,
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
    /// Columns of `features` or catalogue columns of `windows` to read into `inputs`.
    pub inputs: Vec<String>,
    pub only_labelled: bool,
    /// Extra SQL condition on `w` (windows) / `f` (features), e.g. `w.day = '2024-03-01'`.
    pub filter: Option<String>,
}

/// The 69 waveform features (`features` table).
pub fn waveform_inputs() -> Vec<String> {
    quakelens_signal::features::column_names()
}

/// Waveform features plus every catalogue attribute.
pub fn waveform_and_catalog_inputs() -> Vec<String> {
    let mut v = waveform_inputs();
    v.extend(SourceAttributes::COLUMNS.iter().map(|c| c.to_string()));
    v
}

fn qualified(input: &str) -> Result<String, DatasetError> {
    if SourceAttributes::COLUMNS.contains(&input) {
        Ok(format!("w.\"{input}\""))
    } else if waveform_inputs().iter().any(|c| c == input) {
        Ok(format!("f.\"{input}\""))
    } else {
        Err(DatasetError::Column {
            column: input.into(),
            reason: "not a waveform feature or catalogue attribute of the lake".into(),
        })
    }
}

/// Reads the selected windows, ordered by window id (deterministic).
pub async fn load_examples(lake: &Lake, sel: &Selection) -> Result<Vec<Example>, DatasetError> {
    let mut cols = vec![
        "w.window_id".to_string(),
        "w.network".into(),
        "w.station".into(),
        "w.location".into(),
        "w.band".into(),
        "CAST(w.start_time AS BIGINT) AS start_ns".into(),
        "w.event_id".into(),
        "w.label".into(),
        "w.magnitude".into(),
    ];
    if sel.spectrograms {
        cols.push("w.spectrogram".into());
    }
    for (i, input) in sel.inputs.iter().enumerate() {
        cols.push(format!(
            "CAST({} AS DOUBLE) AS input_{i}",
            qualified(input)?
        ));
    }
    let join = if sel
        .inputs
        .iter()
        .any(|c| !SourceAttributes::COLUMNS.contains(&c.as_str()))
    {
        " JOIN features f ON w.window_id = f.window_id"
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
        append(b, sel, &mut out)?;
    }
    Ok(out)
}

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Result<&'a T, DatasetError> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| DatasetError::Column {
            column: name.into(),
            reason: "missing or of an unexpected type".into(),
        })
}

/// A text column as `Utf8` whatever string type DataFusion chose (it reads Parquet strings as
/// `Utf8View`).
fn text(b: &RecordBatch, name: &str) -> Result<StringArray, DatasetError> {
    let err = |reason: String| DatasetError::Column {
        column: name.into(),
        reason,
    };
    let c = b
        .column_by_name(name)
        .ok_or_else(|| err("missing".into()))?;
    let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
        .map_err(|e| err(e.to_string()))?;
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| err("not text".into()))
}

fn append(b: &RecordBatch, sel: &Selection, out: &mut Vec<Example>) -> Result<(), DatasetError> {
    let text = |name: &str| text(b, name);
    let (ids, net, sta, loc, band, event) = (
        text("window_id")?,
        text("network")?,
        text("station")?,
        text("location")?,
        text("band")?,
        text("event_id")?,
    );
    let start = col::<Int64Array>(b, "start_ns")?;
    let label = col::<Int32Array>(b, "label")?;
    let magnitude = col::<Float64Array>(b, "magnitude")?;
    let spectrograms = if sel.spectrograms {
        Some(col::<FixedSizeListArray>(b, "spectrogram")?)
    } else {
        None
    };
    let inputs: Vec<&Float64Array> = (0..sel.inputs.len())
        .map(|i| col::<Float64Array>(b, &format!("input_{i}")))
        .collect::<Result<_, _>>()?;
    for r in 0..b.num_rows() {
        let opt_f = |a: &Float64Array| (!a.is_null(r)).then(|| a.value(r));
        let spectrogram = match spectrograms {
            Some(list) => {
                let v = list.value(r);
                let v = v.as_any().downcast_ref::<Float32Array>().ok_or_else(|| {
                    DatasetError::Column {
                        column: "spectrogram".into(),
                        reason: "items are not f32".into(),
                    }
                })?;
                v.values().to_vec()
            }
            None => Vec::new(),
        };
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
            start_ns: start.value(r),
            label: (!label.is_null(r)).then(|| label.value(r)),
            magnitude: opt_f(magnitude),
            spectrogram,
            inputs: inputs
                .iter()
                .map(|a| opt_f(a).unwrap_or(f64::NAN))
                .collect(),
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
        let h = fnv1a(self.seed.to_le_bytes().into_iter().chain(group.bytes()));
        // SplitMix64's finaliser spreads FNV's low-entropy high bits.
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let u = (z >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.test {
            Split::Test
        } else if u < self.test + self.valid {
            Split::Valid
        } else {
            Split::Train
        }
    }
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
