//! Lakes in the old layout (plain hive-partitioned Parquet under a local directory with a
//! `lake.json` manifest, schema version 2) are refused by every reader and writer, with the
//! command that converts them: [`convert_old_lake`] rewrites each table as a Delta table of the
//! current schema, checks the row counts, then swaps the directories.
//!
//! The conversion writes into `<lake>/.convert/` first; the old tables move to `<lake>/.old/`
//! only once every table converted and counted right, so an interrupted conversion leaves the
//! old lake as it was (and a rerun starts over).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float32Builder, Int32Array, ListBuilder, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float32Type, TimeUnit};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use quakelens_signal::features::FeatureSet;
use quakelens_signal::spectrogram::SpectrogramInput;

use crate::error::LakeError;
use crate::location::LakeLocation;
use crate::schema::{parse_shape, LakeFormat, Table};
use crate::tables::Tables;

/// The old layout's manifest.
const MANIFEST: &str = "lake.json";

fn manifest_path(location: &LakeLocation) -> Option<PathBuf> {
    let dir = location.local_dir()?;
    let path = dir.join(MANIFEST);
    path.is_file().then_some(path)
}

/// Refuses a lake in the old layout with a message that names the command converting it.
pub(crate) fn refuse_old_layout(location: &LakeLocation) -> Result<(), LakeError> {
    if manifest_path(location).is_some() {
        return Err(LakeError::OldLayout {
            location: location.to_string(),
        });
    }
    Ok(())
}

/// Rows per table before and after a conversion.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Converted {
    pub table: String,
    pub rows_before: usize,
    pub rows_after: usize,
    pub files_before: usize,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> LakeError + '_ {
    move |error| LakeError::Io {
        path: path.display().to_string(),
        error,
    }
}

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            parquet_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
}

/// Converts the old-layout lake at `location` in place. `input` says what its spectrograms
/// are (the old manifest did not record it: `log` unless the lake was written with `--image`).
pub async fn convert_old_lake(
    location: &LakeLocation,
    input: SpectrogramInput,
) -> Result<Vec<Converted>, LakeError> {
    let Some(manifest) = manifest_path(location) else {
        return Err(LakeError::Location {
            location: location.to_string(),
            reason: format!("no {MANIFEST} here: not a lake in the old layout"),
        });
    };
    let root = location
        .local_dir()
        .expect("a manifest is only found on local disk");
    let text = std::fs::read_to_string(&manifest).map_err(io(&manifest))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| LakeError::Location {
        location: location.to_string(),
        reason: format!("{MANIFEST}: {e}"),
    })?;
    let version = json["schema_version"].as_u64().unwrap_or(0);
    if version != 2 {
        return Err(LakeError::Incompatible {
            location: location.to_string(),
            table: MANIFEST.into(),
            reason: format!("old-layout schema version {version}; this build converts version 2"),
        });
    }
    let shape = json["spectrogram_shape"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_u64().unwrap_or(0).to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .and_then(|s| parse_shape(&s))
        .ok_or_else(|| LakeError::Location {
            location: location.to_string(),
            reason: format!("{MANIFEST}: no spectrogram_shape"),
        })?;
    // The old lake's features are the physical set (its names).
    let format = LakeFormat {
        shape,
        input,
        features: FeatureSet::Physical,
        waveform: None,
    };
    let staging = root.join(".convert");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let target = LakeLocation::local(&staging).map_err(io(&staging))?;
    let mut tables = Tables::new(target, format);
    let mut report = Vec::new();
    for table in Table::ALL {
        let dir = root.join(table.name());
        let mut files = Vec::new();
        parquet_files(&dir, &mut files);
        if files.is_empty() {
            continue;
        }
        let ctx = SessionContext::new();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![
                ("day".to_string(), DataType::Utf8),
                ("stream".to_string(), DataType::Utf8),
            ]);
        let url = format!("{}/", dir.display());
        let convert_err = |reason: String| LakeError::Batch {
            table: table.name().into(),
            reason,
        };
        ctx.register_listing_table("old", &url, options, None, None)
            .await
            .map_err(|e| convert_err(e.to_string()))?;
        let df = ctx
            .sql("SELECT * FROM old")
            .await
            .map_err(|e| convert_err(e.to_string()))?;
        let mut stream = df
            .execute_stream()
            .await
            .map_err(|e| convert_err(e.to_string()))?;
        let schema = table.schema(&format);
        let (mut before, mut after) = (0, 0);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| convert_err(e.to_string()))?;
            before += batch.num_rows();
            let new = upgrade(table, &batch, &schema, &format).map_err(convert_err)?;
            after += tables.append(table, Some(new), &[]).await?.rows;
        }
        if before != after {
            return Err(convert_err(format!("{before} rows read, {after} written")));
        }
        report.push(Converted {
            table: table.name().into(),
            rows_before: before,
            rows_after: after,
            files_before: files.len(),
        });
    }
    // Every table converted and counted: swap.
    let old = root.join(".old");
    std::fs::create_dir_all(&old).map_err(io(&old))?;
    for c in &report {
        let from = root.join(&c.table);
        std::fs::rename(&from, old.join(&c.table)).map_err(io(&from))?;
        let new = staging.join(&c.table);
        std::fs::rename(&new, &from).map_err(io(&new))?;
    }
    std::fs::rename(&manifest, old.join(MANIFEST)).map_err(io(&manifest))?;
    std::fs::remove_dir_all(&old).map_err(io(&old))?;
    std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    Ok(report)
}

/// An old batch in the current schema: ns timestamps to µs, fixed-size spectrograms to lists,
/// new columns filled (flat channels counted from the spectrogram, no catalogue, the scores'
/// logits and probabilities from the two-class columns, CNN explanations of the margin).
fn upgrade(
    table: Table,
    batch: &RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
    format: &LakeFormat,
) -> Result<RecordBatch, String> {
    let n = batch.num_rows();
    let col = |name: &str| -> Result<ArrayRef, String> {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| format!("old table lacks column {name}"))
    };
    let mut columns = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let c: ArrayRef = match (table, name) {
            (Table::Windows, "flat_channels") => flat_channels(&col("spectrogram")?, format)?,
            (Table::Windows, "ttf_s") => arrow::array::new_null_array(field.data_type(), n),
            (Table::Windows, "catalog") => arrow::array::new_null_array(field.data_type(), n),
            (Table::Windows, "spectrogram") => {
                if format.input.scaling == Default::default() && has_negative(&col("spectrogram")?)
                {
                    return Err("the spectrograms hold negative values, so they are not log1p(PSD): this lake was written with --image; pass its input with --input".into());
                }
                cast(&col("spectrogram")?, field.data_type()).map_err(|e| e.to_string())?
            }
            (Table::Scores, "logits") => {
                pair_list(&col("logit_foreshock")?, &col("logit_aftershock")?, false)?
            }
            (Table::Scores, "probabilities") => {
                pair_list(&col("p_aftershock")?, &col("p_aftershock")?, true)?
            }
            (Table::Scores, "predicted_index") => {
                let p = col("predicted_class")?;
                let p = p
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .cloned()
                    .or_else(|| {
                        cast(&p, &DataType::Utf8)
                            .ok()
                            .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
                    })
                    .ok_or("predicted_class is not text")?;
                Arc::new(Int32Array::from_iter_values(
                    (0..n).map(|i| (p.value(i) == "aftershock") as i32),
                ))
            }
            (Table::CnnShap, "target") => Arc::new(StringArray::from_iter_values(
                std::iter::repeat_n("margin", n),
            )),
            _ => {
                let c = col(name)?;
                match field.data_type() {
                    DataType::Timestamp(TimeUnit::Microsecond, _) => {
                        let us = cast(&c, &DataType::Timestamp(TimeUnit::Microsecond, None))
                            .map_err(|e| e.to_string())?;
                        let us = us
                            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                            .clone();
                        Arc::new(TimestampMicrosecondArray::from(us).with_timezone("UTC"))
                    }
                    t => cast(&c, t).map_err(|e| e.to_string())?,
                }
            }
        };
        columns.push(c);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

fn spectrogram_values(c: &ArrayRef) -> Result<Vec<Vec<f32>>, String> {
    let list = cast(
        c,
        &DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
    )
    .map_err(|e| e.to_string())?;
    let list = list.as_list::<i32>();
    Ok((0..list.len())
        .map(|i| {
            let v = list.value(i);
            v.as_primitive::<Float32Type>().values().to_vec()
        })
        .collect())
}

fn has_negative(c: &ArrayRef) -> bool {
    spectrogram_values(c).is_ok_and(|rows| rows.iter().any(|r| r.iter().any(|&v| v < 0.0)))
}

/// Channels whose stored values are all equal (a flat PSD stays flat through every scaling).
fn flat_channels(c: &ArrayRef, format: &LakeFormat) -> Result<ArrayRef, String> {
    let per = format.shape[1] * format.shape[2];
    let rows = spectrogram_values(c)?;
    Ok(Arc::new(Int32Array::from_iter_values(rows.iter().map(
        |r| {
            r.chunks(per.max(1))
                .filter(|ch| ch.iter().all(|&v| v == ch[0]))
                .count() as i32
        },
    ))))
}

/// `[a, b]` per row; with `complement`, `[1 − a, b]` (probabilities from P(aftershock)).
fn pair_list(a: &ArrayRef, b: &ArrayRef, complement: bool) -> Result<ArrayRef, String> {
    let a = a.as_any().downcast_ref::<Float32Array>().ok_or("not f32")?;
    let b = b.as_any().downcast_ref::<Float32Array>().ok_or("not f32")?;
    let mut builder = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
        "element",
        DataType::Float32,
        true,
    )));
    for i in 0..a.len() {
        let first = if complement {
            1.0 - a.value(i)
        } else {
            a.value(i)
        };
        builder.values().append_slice(&[first, b.value(i)]);
        builder.append(true);
    }
    Ok(Arc::new(builder.finish()))
}
