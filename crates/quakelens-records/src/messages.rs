//! Message bodies on the derived topics: Arrow IPC streams (zstd-compressed buffers), one
//! self-describing batch per message. See `proto/README.md` for the contracts.

use std::io::Cursor;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray,
    MapArray, MapBuilder, MapFieldNames, RecordBatch, StringArray, StringBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::ipc::CompressionType;

use crate::{
    property, CatalogRow, CnnShapRecord, ForestShapRecord, LakeFormat, MagnitudeRecord, Part,
    ScoreRecord, SourceAttributes, WindowKey, WindowRecord,
};

/// Schema metadata key naming the message kind and version.
pub const KIND: &str = "quakelens.message";

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("not an Arrow IPC stream: {0}")]
    Ipc(#[from] arrow::error::ArrowError),
    #[error("corrupt Arrow IPC stream (the reader gave up: {0})")]
    Corrupt(String),
    #[error("message kind {found:?}, expected {expected}")]
    Kind {
        found: Option<String>,
        expected: &'static str,
    },
    #[error("column {0} missing or of the wrong type")]
    Column(String),
    #[error("row {row}: {what} is null")]
    Null { row: usize, what: String },
    #[error("row {row}: {reason}")]
    Invalid { row: usize, reason: String },
    #[error("schema metadata {key}: {reason}")]
    Metadata { key: &'static str, reason: String },
}

fn encode(kind: &str, fields: Vec<Field>, columns: Vec<ArrayRef>) -> Vec<u8> {
    encode_with(kind, &[], fields, columns)
}

/// As [`encode`], with more schema metadata.
fn encode_with(
    kind: &str,
    metadata: &[(&str, String)],
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
) -> Vec<u8> {
    let mut meta: std::collections::HashMap<String, String> =
        [(KIND.to_string(), kind.to_string())].into();
    meta.extend(metadata.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let schema = Arc::new(Schema::new(fields).with_metadata(meta));
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .expect("columns are built from the schema they are paired with");
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .expect("zstd is compiled in");
    let mut out = Vec::new();
    {
        let mut w = StreamWriter::try_new_with_options(&mut out, &schema, options)
            .expect("writing to memory");
        w.write(&batch).expect("writing to memory");
        w.finish().expect("writing to memory");
    }
    out
}

fn decode(bytes: &[u8], expected: &'static str) -> Result<Vec<RecordBatch>, MessageError> {
    Ok(read_stream(bytes, expected)?.1)
}

/// The stream's schema metadata and batches, after checking it is an `expected` message.
fn read_stream(
    bytes: &[u8],
    expected: &'static str,
) -> Result<(std::collections::HashMap<String, String>, Vec<RecordBatch>), MessageError> {
    with_reader(bytes, |reader| {
        let metadata = reader.schema().metadata().clone();
        let found = metadata.get(KIND).cloned();
        if found.as_deref() != Some(expected) {
            return Err(MessageError::Kind { found, expected });
        }
        Ok((metadata, reader.collect::<Result<Vec<_>, _>>()?))
    })
}

/// Opens `bytes` as an Arrow IPC stream and hands the reader to `read`, the one way every
/// decoder reads bytes from the network. The framing is checked first ([`check_framing`]), and
/// a panic inside arrow-ipc 59 (it panics on some corrupt streams, e.g. a buffer said to lie
/// past the message's body: found by fuzzing) is the message's error: a message must never stop
/// a service.
fn with_reader<T>(
    bytes: &[u8],
    read: impl FnOnce(StreamReader<Cursor<&[u8]>>) -> Result<T, MessageError>,
) -> Result<T, MessageError> {
    check_framing(bytes)?;
    let guarded = || read(StreamReader::try_new(Cursor::new(bytes), None)?);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(guarded)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        Err(MessageError::Corrupt(why.to_string()))
    })
}

/// The most a message may decompress to. The largest real message, 8 windows with their
/// spectrograms and waveforms, is under 1 MiB.
pub const MAX_DECODED_BYTES: u64 = 256 << 20;

/// Refuses a stream whose lengths would make the Arrow reader allocate more than the message
/// holds, before the reader sees it: a message header or body said to run past the bytes (the
/// reader allocates the declared length before reading), or compressed buffers announcing more
/// than [`MAX_DECODED_BYTES`] in all (a compressed buffer names its decompressed length in its
/// first 8 bytes and is allocated that much). Both found by fuzzing: an 8 kB message could ask
/// for exabytes, and a failed allocation aborts the process, which no error handling catches.
fn check_framing(bytes: &[u8]) -> Result<(), MessageError> {
    let corrupt = |what: &str| MessageError::Corrupt(what.to_string());
    let i32_at = |at: usize| -> Result<i32, MessageError> {
        let b = bytes
            .get(at..at + 4)
            .ok_or_else(|| corrupt("stream cut short"))?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (mut at, mut declared) = (0usize, 0u64);
    while at < bytes.len() {
        let mut len = i32_at(at)?;
        at += 4;
        if len == -1 {
            len = i32_at(at)?;
            at += 4;
        }
        if len == 0 {
            break;
        }
        let len = usize::try_from(len).map_err(|_| corrupt("negative message length"))?;
        let header = bytes
            .get(at..at.saturating_add(len))
            .ok_or_else(|| corrupt("message header past the end"))?;
        at += len;
        let message = arrow::ipc::root_as_message(header)
            .map_err(|e| MessageError::Corrupt(format!("message header: {e}")))?;
        let body_len =
            usize::try_from(message.bodyLength()).map_err(|_| corrupt("negative body length"))?;
        let body = bytes
            .get(at..at.saturating_add(body_len))
            .ok_or_else(|| corrupt("message body past the end"))?;
        at += body_len;
        let batch = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        let Some(batch) = batch.filter(|b| b.compression().is_some()) else {
            continue;
        };
        for buffer in batch.buffers().iter().flatten() {
            if buffer.length() < 8 {
                continue;
            }
            let start = usize::try_from(buffer.offset()).map_err(|_| corrupt("buffer offset"))?;
            let head = body
                .get(start..start.saturating_add(8))
                .ok_or_else(|| corrupt("buffer past the message body"))?;
            let n = i64::from_le_bytes(head.try_into().expect("8 bytes"));
            declared = declared.saturating_add(n.max(0) as u64);
            if declared > MAX_DECODED_BYTES {
                return Err(MessageError::Corrupt(format!(
                    "its buffers would decompress to more than {MAX_DECODED_BYTES} bytes"
                )));
            }
        }
    }
    Ok(())
}

struct Columns<'a>(&'a RecordBatch);

impl Columns<'_> {
    fn get<T: 'static>(&self, name: &str) -> Result<&T, MessageError> {
        self.0
            .column_by_name(name)
            .and_then(|c| c.as_any().downcast_ref::<T>())
            .ok_or_else(|| MessageError::Column(name.to_string()))
    }
    fn text(&self, name: &str, row: usize) -> Result<String, MessageError> {
        let c = self.get::<StringArray>(name)?;
        if c.is_null(row) {
            return Err(MessageError::Null {
                row,
                what: name.into(),
            });
        }
        Ok(c.value(row).to_string())
    }
    fn opt_text(&self, name: &str, row: usize) -> Result<Option<String>, MessageError> {
        let c = self.get::<StringArray>(name)?;
        Ok((!c.is_null(row)).then(|| c.value(row).to_string()))
    }
    fn i64(&self, name: &str, row: usize) -> Result<Option<i64>, MessageError> {
        let c = self.get::<Int64Array>(name)?;
        Ok((!c.is_null(row)).then(|| c.value(row)))
    }
    fn i32(&self, name: &str, row: usize) -> Result<Option<i32>, MessageError> {
        let c = self.get::<Int32Array>(name)?;
        Ok((!c.is_null(row)).then(|| c.value(row)))
    }
    fn f64(&self, name: &str, row: usize) -> Result<Option<f64>, MessageError> {
        let c = self.get::<Float64Array>(name)?;
        Ok((!c.is_null(row)).then(|| c.value(row)))
    }
}

fn required<T>(v: Option<T>, row: usize, what: &str) -> Result<T, MessageError> {
    v.ok_or_else(|| MessageError::Null {
        row,
        what: what.into(),
    })
}

fn utf8<'a>(rows: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(rows))
}

fn list<T: arrow::datatypes::ArrowPrimitiveType>(
    values: Vec<T::Native>,
    lengths: impl Iterator<Item = usize>,
) -> ArrayRef {
    let field = Arc::new(Field::new("item", T::DATA_TYPE, false));
    Arc::new(ListArray::new(
        field,
        OffsetBuffer::from_lengths(lengths),
        Arc::new(arrow::array::PrimitiveArray::<T>::from_iter_values(values)),
        None,
    ))
}

fn key_fields() -> Vec<Field> {
    vec![
        Field::new("window_id", DataType::Utf8, false),
        Field::new("network", DataType::Utf8, false),
        Field::new("station", DataType::Utf8, false),
        Field::new("location", DataType::Utf8, false),
        Field::new("band", DataType::Utf8, false),
        Field::new("start_ns", DataType::Int64, false),
    ]
}

fn key_columns<'a>(keys: impl Iterator<Item = &'a WindowKey> + Clone) -> Vec<ArrayRef> {
    vec![
        utf8(keys.clone().map(|k| k.window_id.as_str())),
        utf8(keys.clone().map(|k| k.network.as_str())),
        utf8(keys.clone().map(|k| k.station.as_str())),
        utf8(keys.clone().map(|k| k.location.as_str())),
        utf8(keys.clone().map(|k| k.band.as_str())),
        Arc::new(Int64Array::from_iter_values(keys.map(|k| k.start_ns))),
    ]
}

fn key_at(c: &Columns<'_>, row: usize) -> Result<WindowKey, MessageError> {
    Ok(WindowKey {
        window_id: c.text("window_id", row)?,
        network: c.text("network", row)?,
        station: c.text("station", row)?,
        location: c.text("location", row)?,
        band: c.text("band", row)?,
        start_ns: required(c.i64("start_ns", row)?, row, "start_ns")?,
    })
}

const WINDOWS_KIND: &str = "windows/v2";
const SCORES_KIND: &str = "scores/v2";
const MAGNITUDES_KIND: &str = "magnitudes/v1";

/// The format a windows message's windows were made with, as schema metadata (the lake's
/// table property keys).
fn format_metadata(format: &LakeFormat) -> Vec<(&'static str, String)> {
    let [c, h, w] = format.shape;
    vec![
        (property::SPECTROGRAM_SHAPE, format!("{c},{h},{w}")),
        (property::SPECTROGRAM, format.input.to_string()),
        (property::FEATURE_SET, format.features.to_string()),
    ]
    .into_iter()
    .chain(
        format
            .waveform
            .map(|[c, n]| (property::WAVEFORM_SHAPE, format!("{c},{n}"))),
    )
    .collect()
}

fn format_of(meta: &std::collections::HashMap<String, String>) -> Result<LakeFormat, MessageError> {
    let get = |key: &'static str| {
        meta.get(key).ok_or(MessageError::Metadata {
            key,
            reason: "missing".into(),
        })
    };
    let shape =
        crate::parse_shape(get(property::SPECTROGRAM_SHAPE)?).ok_or(MessageError::Metadata {
            key: property::SPECTROGRAM_SHAPE,
            reason: "not C,H,W".into(),
        })?;
    let input = get(property::SPECTROGRAM)?
        .parse()
        .map_err(|reason| MessageError::Metadata {
            key: property::SPECTROGRAM,
            reason,
        })?;
    let features =
        get(property::FEATURE_SET)?
            .parse()
            .map_err(|reason| MessageError::Metadata {
                key: property::FEATURE_SET,
                reason,
            })?;
    let waveform = match meta.get(property::WAVEFORM_SHAPE) {
        Some(text) => Some(
            crate::parse_waveform_shape(text).ok_or(MessageError::Metadata {
                key: property::WAVEFORM_SHAPE,
                reason: "not C,N".into(),
            })?,
        ),
        None => None,
    };
    Ok(LakeFormat {
        shape,
        input,
        features,
        waveform,
    })
}

fn catalog_array(rows: &[WindowRecord]) -> ArrayRef {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    };
    let mut b = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for r in rows {
        for (k, v) in &r.catalog {
            b.keys().append_value(k);
            b.values().append_value(v);
        }
        b.append(!r.catalog.is_empty())
            .expect("keys and values are appended in pairs");
    }
    Arc::new(b.finish())
}

fn catalog_at(c: &Columns<'_>, row: usize) -> Result<CatalogRow, MessageError> {
    let m = c.get::<MapArray>("catalog")?;
    if m.is_null(row) {
        return Ok(Vec::new());
    }
    let entries = m.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    let mut out: CatalogRow = (0..entries.len())
        .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
        .collect();
    out.sort();
    Ok(out)
}

/// Encodes windows (with spectrograms and features) of `format` as one message.
pub fn encode_windows(rows: &[WindowRecord], format: &LakeFormat) -> Vec<u8> {
    let keys: Vec<WindowKey> = rows.iter().map(WindowKey::of).collect();
    let mut fields = key_fields();
    let mut columns = key_columns(keys.iter());
    let f64s = |f: fn(&WindowRecord) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Float64Array>())
    };
    let mut extra: Vec<(Field, ArrayRef)> = vec![
        (
            Field::new("end_ns", DataType::Int64, false),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.end_ns))),
        ),
        (
            Field::new("onset_ns", DataType::Int64, true),
            Arc::new(rows.iter().map(|r| r.onset_ns).collect::<Int64Array>()),
        ),
        (
            Field::new("mode", DataType::Utf8, false),
            utf8(rows.iter().map(|r| r.mode.as_str())),
        ),
        (
            Field::new("trigger_ratio", DataType::Float64, true),
            f64s(|r| r.trigger_ratio),
        ),
        (
            Field::new("sample_rate", DataType::Float64, false),
            f64s(|r| Some(r.sample_rate)),
        ),
        (
            Field::new("source_rate", DataType::Float64, false),
            f64s(|r| Some(r.source_rate)),
        ),
        (
            Field::new("resampled", DataType::Boolean, false),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.resampled))
                    .collect::<BooleanArray>(),
            ),
        ),
        (
            Field::new("gap_runs", DataType::Int32, false),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.gap_runs),
            )),
        ),
        (
            Field::new("filled_samples", DataType::Int32, false),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.filled_samples),
            )),
        ),
        (
            Field::new("flat_channels", DataType::Int32, false),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|r| r.flat_channels),
            )),
        ),
        (
            Field::new("channel_order", DataType::Utf8, false),
            utf8(rows.iter().map(|r| r.channel_order.as_str())),
        ),
        (
            Field::new("event_id", DataType::Utf8, true),
            Arc::new(
                rows.iter()
                    .map(|r| r.event_id.as_deref())
                    .collect::<StringArray>(),
            ),
        ),
        (
            Field::new("label", DataType::Int32, true),
            Arc::new(rows.iter().map(|r| r.label).collect::<Int32Array>()),
        ),
        (
            Field::new("magnitude", DataType::Float64, true),
            f64s(|r| r.magnitude),
        ),
        (
            Field::new("ttf_s", DataType::Float64, true),
            f64s(|r| r.ttf_s),
        ),
    ];
    for (i, name) in SourceAttributes::COLUMNS.iter().enumerate() {
        extra.push((
            Field::new(*name, DataType::Float64, true),
            Arc::new(
                rows.iter()
                    .map(|r| r.source.values()[i])
                    .collect::<Float64Array>(),
            ),
        ));
    }
    let catalog = catalog_array(rows);
    extra.push((
        Field::new("catalog", catalog.data_type().clone(), true),
        catalog,
    ));
    extra.push((
        Field::new(
            "spectrogram",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
        list::<arrow::datatypes::Float32Type>(
            rows.iter()
                .flat_map(|r| r.spectrogram.iter().copied())
                .collect(),
            rows.iter().map(|r| r.spectrogram.len()),
        ),
    ));
    extra.push((
        Field::new(
            "features",
            DataType::List(Arc::new(Field::new("item", DataType::Float64, false))),
            false,
        ),
        list::<arrow::datatypes::Float64Type>(
            rows.iter()
                .flat_map(|r| r.features.iter().copied())
                .collect(),
            rows.iter().map(|r| r.features.len()),
        ),
    ));
    if format.waveform.is_some() {
        extra.push((
            Field::new(
                "waveform",
                DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
                false,
            ),
            list::<arrow::datatypes::Float32Type>(
                rows.iter()
                    .flat_map(|r| r.waveform.iter().copied())
                    .collect(),
                rows.iter().map(|r| r.waveform.len()),
            ),
        ));
    }
    for (f, c) in extra {
        fields.push(f);
        columns.push(c);
    }
    encode_with(WINDOWS_KIND, &format_metadata(format), fields, columns)
}

fn list_values<T: arrow::datatypes::ArrowPrimitiveType>(
    c: &Columns<'_>,
    name: &str,
    row: usize,
) -> Result<Vec<T::Native>, MessageError> {
    let l = c.get::<ListArray>(name)?;
    let v = l.value(row);
    let p = v
        .as_any()
        .downcast_ref::<arrow::array::PrimitiveArray<T>>()
        .ok_or_else(|| MessageError::Column(name.to_string()))?;
    Ok(p.values().to_vec())
}

/// Decodes a windows message: the format its windows were made with, and the windows.
pub fn decode_windows(bytes: &[u8]) -> Result<(LakeFormat, Vec<WindowRecord>), MessageError> {
    let (metadata, batches) = read_stream(bytes, WINDOWS_KIND)?;
    let format = format_of(&metadata)?;
    let mut out = Vec::new();
    for batch in batches {
        let c = Columns(&batch);
        for row in 0..batch.num_rows() {
            let key = key_at(&c, row)?;
            let attrs: Vec<Option<f64>> = SourceAttributes::COLUMNS
                .iter()
                .map(|n| c.f64(n, row))
                .collect::<Result<_, _>>()?;
            out.push(WindowRecord {
                window_id: key.window_id,
                network: key.network,
                station: key.station,
                location: key.location,
                band: key.band,
                start_ns: key.start_ns,
                end_ns: required(c.i64("end_ns", row)?, row, "end_ns")?,
                onset_ns: c.i64("onset_ns", row)?,
                mode: c.text("mode", row)?,
                trigger_ratio: c.f64("trigger_ratio", row)?,
                sample_rate: required(c.f64("sample_rate", row)?, row, "sample_rate")?,
                source_rate: required(c.f64("source_rate", row)?, row, "source_rate")?,
                resampled: c.get::<BooleanArray>("resampled")?.value(row),
                gap_runs: required(c.i32("gap_runs", row)?, row, "gap_runs")?,
                filled_samples: required(c.i32("filled_samples", row)?, row, "filled_samples")?,
                flat_channels: required(c.i32("flat_channels", row)?, row, "flat_channels")?,
                channel_order: c.text("channel_order", row)?,
                event_id: c.opt_text("event_id", row)?,
                label: c.i32("label", row)?,
                magnitude: c.f64("magnitude", row)?,
                ttf_s: c.f64("ttf_s", row)?,
                catalog: catalog_at(&c, row)?,
                source: SourceAttributes {
                    p_travel_sec: attrs[0],
                    s_travel_sec: attrs[1],
                    source_depth_km: attrs[2],
                    source_latitude: attrs[3],
                    source_longitude: attrs[4],
                    receiver_latitude: attrs[5],
                    receiver_longitude: attrs[6],
                },
                spectrogram: list_values::<arrow::datatypes::Float32Type>(&c, "spectrogram", row)?,
                features: list_values::<arrow::datatypes::Float64Type>(&c, "features", row)?,
                waveform: match format.waveform {
                    Some(_) => list_values::<arrow::datatypes::Float32Type>(&c, "waveform", row)?,
                    None => Vec::new(),
                },
            });
        }
    }
    for (row, r) in out.iter().enumerate() {
        if r.spectrogram.len() != format.spectrogram_len() {
            return Err(MessageError::Invalid {
                row,
                reason: format!(
                    "{} spectrogram values, the message's shape {:?} has {}",
                    r.spectrogram.len(),
                    format.shape,
                    format.spectrogram_len()
                ),
            });
        }
        if r.waveform.len() != format.waveform_len() {
            return Err(MessageError::Invalid {
                row,
                reason: format!(
                    "{} waveform samples, the message's waveform shape {:?} has {}",
                    r.waveform.len(),
                    format.waveform,
                    format.waveform_len()
                ),
            });
        }
        if r.features.len() != quakelens_signal::features::FEATURES_PER_WINDOW {
            return Err(MessageError::Invalid {
                row,
                reason: format!(
                    "{} features, a window has {}",
                    r.features.len(),
                    quakelens_signal::features::FEATURES_PER_WINDOW
                ),
            });
        }
    }
    Ok((format, out))
}

fn f32_list_values(c: &Columns<'_>, name: &str, row: usize) -> Result<Vec<f32>, MessageError> {
    list_values::<arrow::datatypes::Float32Type>(c, name, row)
}

fn string_lists<'a>(lists: impl Iterator<Item = &'a [String]>) -> ArrayRef {
    let mut b = arrow::array::ListBuilder::new(StringBuilder::new());
    for l in lists {
        for v in l {
            b.values().append_value(v);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

/// Encodes CNN scores as one message.
pub fn encode_scores(rows: &[ScoreRecord]) -> Vec<u8> {
    let mut fields = key_fields();
    let mut columns = key_columns(rows.iter().map(|r| &r.key));
    let classes = string_lists(rows.iter().map(|r| r.classes.as_slice()));
    fields.extend([
        Field::new("model_kind", DataType::Utf8, false),
        Field::new("model_hash", DataType::Utf8, false),
        Field::new(
            "logits",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
        Field::new(
            "probabilities",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
        Field::new("classes", classes.data_type().clone(), false),
        Field::new("scored_ns", DataType::Int64, false),
    ]);
    columns.extend([
        utf8(rows.iter().map(|r| r.model_kind.as_str())),
        utf8(rows.iter().map(|r| r.model_hash.as_str())),
        list::<arrow::datatypes::Float32Type>(
            rows.iter().flat_map(|r| r.logits.iter().copied()).collect(),
            rows.iter().map(|r| r.logits.len()),
        ),
        list::<arrow::datatypes::Float32Type>(
            rows.iter()
                .flat_map(|r| r.probabilities.iter().copied())
                .collect(),
            rows.iter().map(|r| r.probabilities.len()),
        ),
        classes,
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.scored_ns),
        )),
    ]);
    encode(SCORES_KIND, fields, columns)
}

pub fn decode_scores(bytes: &[u8]) -> Result<Vec<ScoreRecord>, MessageError> {
    let mut out = Vec::new();
    for batch in decode(bytes, SCORES_KIND)? {
        let c = Columns(&batch);
        let classes = c.get::<ListArray>("classes")?;
        for row in 0..batch.num_rows() {
            let names = classes.value(row);
            let names = names
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| MessageError::Column("classes".into()))?;
            let r = ScoreRecord {
                key: key_at(&c, row)?,
                model_kind: c.text("model_kind", row)?,
                model_hash: c.text("model_hash", row)?,
                logits: f32_list_values(&c, "logits", row)?,
                probabilities: f32_list_values(&c, "probabilities", row)?,
                classes: (0..names.len())
                    .map(|i| names.value(i).to_string())
                    .collect(),
                scored_ns: required(c.i64("scored_ns", row)?, row, "scored_ns")?,
            };
            if r.logits.is_empty()
                || r.logits.len() != r.probabilities.len()
                || r.logits.len() != r.classes.len()
            {
                return Err(MessageError::Invalid {
                    row,
                    reason: format!(
                        "{} logits, {} probabilities and {} classes",
                        r.logits.len(),
                        r.probabilities.len(),
                        r.classes.len()
                    ),
                });
            }
            out.push(r);
        }
    }
    Ok(out)
}

/// Encodes forest magnitudes as one message.
pub fn encode_magnitudes(rows: &[MagnitudeRecord]) -> Vec<u8> {
    let mut fields = key_fields();
    let mut columns = key_columns(rows.iter().map(|r| &r.key));
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("magnitude", DataType::Float64, false),
        Field::new("scored_ns", DataType::Int64, false),
    ]);
    columns.extend([
        utf8(rows.iter().map(|r| r.model_hash.as_str())),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.magnitude),
        )) as ArrayRef,
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.scored_ns),
        )),
    ]);
    encode(MAGNITUDES_KIND, fields, columns)
}

pub fn decode_magnitudes(bytes: &[u8]) -> Result<Vec<MagnitudeRecord>, MessageError> {
    let mut out = Vec::new();
    for batch in decode(bytes, MAGNITUDES_KIND)? {
        let c = Columns(&batch);
        for row in 0..batch.num_rows() {
            out.push(MagnitudeRecord {
                key: key_at(&c, row)?,
                model_hash: c.text("model_hash", row)?,
                magnitude: required(c.f64("magnitude", row)?, row, "magnitude")?,
                scored_ns: required(c.i64("scored_ns", row)?, row, "scored_ns")?,
            });
        }
    }
    Ok(out)
}

const FOREST_SHAP_TASKS_KIND: &str = "shap-tasks/forest/v1";
const FOREST_SHAP_KIND: &str = "forest-shap/v1";
/// Schema metadata key of the feature names a forest-shap message's values follow (JSON list).
const FEATURES: &str = "quakelens.features";

/// One window's forest inputs to explain, for the model that estimated its magnitude.
#[derive(Clone, Debug, PartialEq)]
pub struct ForestShapTask {
    pub key: WindowKey,
    pub model_hash: String,
    /// The window's last sample (ns), for the window-end → explained latency.
    pub end_ns: i64,
    /// The forest's inputs, in its feature order.
    pub inputs: Vec<f64>,
}

/// Encodes forest explanation tasks (`shap.tasks`).
pub fn encode_forest_shap_tasks(tasks: &[ForestShapTask]) -> Vec<u8> {
    let mut fields = key_fields();
    let mut columns = key_columns(tasks.iter().map(|t| &t.key));
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("end_ns", DataType::Int64, false),
        Field::new(
            "inputs",
            DataType::List(Arc::new(Field::new("item", DataType::Float64, false))),
            false,
        ),
    ]);
    columns.extend([
        utf8(tasks.iter().map(|t| t.model_hash.as_str())),
        Arc::new(Int64Array::from_iter_values(tasks.iter().map(|t| t.end_ns))) as ArrayRef,
        list::<arrow::datatypes::Float64Type>(
            tasks
                .iter()
                .flat_map(|t| t.inputs.iter().copied())
                .collect(),
            tasks.iter().map(|t| t.inputs.len()),
        ),
    ]);
    encode(FOREST_SHAP_TASKS_KIND, fields, columns)
}

pub fn decode_forest_shap_tasks(bytes: &[u8]) -> Result<Vec<ForestShapTask>, MessageError> {
    let mut out = Vec::new();
    for batch in decode(bytes, FOREST_SHAP_TASKS_KIND)? {
        let c = Columns(&batch);
        for row in 0..batch.num_rows() {
            out.push(ForestShapTask {
                key: key_at(&c, row)?,
                model_hash: c.text("model_hash", row)?,
                end_ns: required(c.i64("end_ns", row)?, row, "end_ns")?,
                inputs: list_values::<arrow::datatypes::Float64Type>(&c, "inputs", row)?,
            });
        }
    }
    Ok(out)
}

/// Encodes forest explanations (`shap.results`); `features` names the values.
pub fn encode_forest_shap(rows: &[ForestShapRecord], features: &[String]) -> Vec<u8> {
    let mut fields = key_fields();
    let mut columns = key_columns(rows.iter().map(|r| &r.key));
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("base_value", DataType::Float64, false),
        Field::new(
            "values",
            DataType::List(Arc::new(Field::new("item", DataType::Float64, false))),
            false,
        ),
    ]);
    columns.extend([
        utf8(rows.iter().map(|r| r.model_hash.as_str())),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.base_value),
        )) as ArrayRef,
        list::<arrow::datatypes::Float64Type>(
            rows.iter().flat_map(|r| r.values.iter().copied()).collect(),
            rows.iter().map(|r| r.values.len()),
        ),
    ]);
    let names = serde_json::to_string(features).expect("strings serialise");
    encode_with(FOREST_SHAP_KIND, &[(FEATURES, names)], fields, columns)
}

/// Decodes forest explanations and the feature names their values follow.
pub fn decode_forest_shap(
    bytes: &[u8],
) -> Result<(Vec<ForestShapRecord>, Vec<String>), MessageError> {
    let (metadata, batches) = read_stream(bytes, FOREST_SHAP_KIND)?;
    let names = metadata
        .get(FEATURES)
        .and_then(|j| serde_json::from_str::<Vec<String>>(j).ok())
        .ok_or_else(|| MessageError::Column(FEATURES.to_string()))?;
    let mut out = Vec::new();
    for batch in batches {
        let c = Columns(&batch);
        for row in 0..batch.num_rows() {
            let values = list_values::<arrow::datatypes::Float64Type>(&c, "values", row)?;
            if values.len() != names.len() {
                return Err(MessageError::Column(format!(
                    "values (row {row} has {}, the message names {} features)",
                    values.len(),
                    names.len()
                )));
            }
            out.push(ForestShapRecord {
                key: key_at(&c, row)?,
                model_hash: c.text("model_hash", row)?,
                base_value: required(c.f64("base_value", row)?, row, "base_value")?,
                values,
            });
        }
    }
    Ok((out, names))
}

const CNN_SHAP_TASKS_KIND: &str = "shap-tasks/cnn/v2";
const CNN_SHAP_KIND: &str = "cnn-shap/v2";

/// The kind a message names in its schema metadata (`None` when it is not Arrow IPC).
pub fn message_kind(bytes: &[u8]) -> Option<String> {
    with_reader(bytes, |reader| {
        Ok(reader.schema().metadata().get(KIND).cloned())
    })
    .ok()
    .flatten()
}

/// Whether a `shap.tasks` message holds CNN tasks (else forest tasks are expected).
pub fn is_cnn_task(bytes: &[u8]) -> bool {
    message_kind(bytes).as_deref() == Some(CNN_SHAP_TASKS_KIND)
}

/// Whether a `shap.results` message holds CNN explanations.
pub fn is_cnn_result(bytes: &[u8]) -> bool {
    message_kind(bytes).as_deref() == Some(CNN_SHAP_KIND)
}

/// One window's spectrogram to explain, for the CNN that scored it; `part` says which share of
/// the window's coalitions (the whole window unless an explainer split a large budget).
#[derive(Clone, Debug, PartialEq)]
pub struct CnnShapTask {
    pub key: WindowKey,
    pub model_hash: String,
    /// The output to explain: `margin` or `top-class` (see `score::ExplainTarget`).
    pub target: String,
    pub end_ns: i64,
    pub spectrogram: Vec<f32>,
    pub part: Part,
}

fn part_fields() -> [Field; 2] {
    [
        Field::new("part", DataType::Int32, false),
        Field::new("parts", DataType::Int32, false),
    ]
}

fn part_columns<'a>(parts: impl Iterator<Item = &'a Part> + Clone) -> [ArrayRef; 2] {
    [
        Arc::new(Int32Array::from_iter_values(
            parts.clone().map(|p| p.index as i32),
        )),
        Arc::new(Int32Array::from_iter_values(parts.map(|p| p.count as i32))),
    ]
}

/// The part a row names.
fn part_at(c: &Columns, row: usize) -> Result<Part, MessageError> {
    let index = required(c.i32("part", row)?, row, "part")?;
    let count = required(c.i32("parts", row)?, row, "parts")?;
    if count < 1 || index < 0 || index >= count {
        return Err(MessageError::Invalid {
            row,
            reason: format!("part {index} of {count} does not exist"),
        });
    }
    Ok(Part {
        index: index as usize,
        count: count as usize,
    })
}

pub fn encode_cnn_shap_tasks(tasks: &[CnnShapTask]) -> Vec<u8> {
    let mut fields = key_fields();
    let mut columns = key_columns(tasks.iter().map(|t| &t.key));
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("end_ns", DataType::Int64, false),
        Field::new(
            "spectrogram",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
    ]);
    fields.extend(part_fields());
    columns.extend([
        utf8(tasks.iter().map(|t| t.model_hash.as_str())),
        Arc::new(Int64Array::from_iter_values(tasks.iter().map(|t| t.end_ns))) as ArrayRef,
        list::<arrow::datatypes::Float32Type>(
            tasks
                .iter()
                .flat_map(|t| t.spectrogram.iter().copied())
                .collect(),
            tasks.iter().map(|t| t.spectrogram.len()),
        ),
    ]);
    columns.extend(part_columns(tasks.iter().map(|t| &t.part)));
    fields.push(Field::new("target", DataType::Utf8, false));
    columns.push(utf8(tasks.iter().map(|t| t.target.as_str())));
    encode(CNN_SHAP_TASKS_KIND, fields, columns)
}

pub fn decode_cnn_shap_tasks(bytes: &[u8]) -> Result<Vec<CnnShapTask>, MessageError> {
    let mut out = Vec::new();
    for batch in decode(bytes, CNN_SHAP_TASKS_KIND)? {
        let c = Columns(&batch);
        for row in 0..batch.num_rows() {
            out.push(CnnShapTask {
                key: key_at(&c, row)?,
                model_hash: c.text("model_hash", row)?,
                target: c.text("target", row)?,
                end_ns: required(c.i64("end_ns", row)?, row, "end_ns")?,
                spectrogram: list_values::<arrow::datatypes::Float32Type>(&c, "spectrogram", row)?,
                part: part_at(&c, row)?,
            });
        }
    }
    Ok(out)
}

/// CNN explanations, each of the whole window or of one [`Part`] (whose values the lake sink
/// adds up once every part is in).
pub fn encode_cnn_shap(rows: &[(CnnShapRecord, Part)]) -> Vec<u8> {
    let parts: Vec<Part> = rows.iter().map(|(_, p)| *p).collect();
    let rows: Vec<&CnnShapRecord> = rows.iter().map(|(r, _)| r).collect();
    let mut fields = key_fields();
    let mut columns = key_columns(rows.iter().map(|r| &r.key));
    fields.extend([
        Field::new("model_hash", DataType::Utf8, false),
        Field::new("method", DataType::Utf8, false),
        Field::new("target", DataType::Utf8, false),
        Field::new("budget", DataType::Int32, false),
        Field::new("seed", DataType::Int64, false),
        Field::new("output", DataType::Float64, false),
        Field::new("base_value", DataType::Float64, false),
        Field::new(
            "values",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, false))),
            false,
        ),
    ]);
    columns.extend([
        utf8(rows.iter().map(|r| r.model_hash.as_str())),
        utf8(rows.iter().map(|r| r.method.as_str())),
        utf8(rows.iter().map(|r| r.target.as_str())),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.budget))) as ArrayRef,
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.seed))),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.output),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.base_value),
        )),
        list::<arrow::datatypes::Float32Type>(
            rows.iter().flat_map(|r| r.values.iter().copied()).collect(),
            rows.iter().map(|r| r.values.len()),
        ),
    ]);
    fields.extend(part_fields());
    columns.extend(part_columns(parts.iter()));
    encode(CNN_SHAP_KIND, fields, columns)
}

pub fn decode_cnn_shap(bytes: &[u8]) -> Result<Vec<(CnnShapRecord, Part)>, MessageError> {
    let mut out = Vec::new();
    for batch in decode(bytes, CNN_SHAP_KIND)? {
        let c = Columns(&batch);
        for row in 0..batch.num_rows() {
            let part = part_at(&c, row)?;
            out.push((
                CnnShapRecord {
                    key: key_at(&c, row)?,
                    model_hash: c.text("model_hash", row)?,
                    method: c.text("method", row)?,
                    target: c.text("target", row)?,
                    budget: required(c.i32("budget", row)?, row, "budget")?,
                    seed: required(c.i64("seed", row)?, row, "seed")?,
                    output: required(c.f64("output", row)?, row, "output")?,
                    base_value: required(c.f64("base_value", row)?, row, "base_value")?,
                    values: list_values::<arrow::datatypes::Float32Type>(&c, "values", row)?,
                    // Workers explain one window at a time.
                    batch: None,
                },
                part,
            ));
        }
    }
    Ok(out)
}

/// Schema of a windows message (documentation and tests).
pub fn windows_message_schema(format: &LakeFormat) -> SchemaRef {
    let empty = encode_windows(&[], format);
    StreamReader::try_new(Cursor::new(empty), None)
        .map(|r| r.schema())
        .expect("an empty message decodes")
}

/// Runs every decoder the services apply to bytes from the broker on `bytes`, and says how
/// many accepted them: what the fuzz target and its corpus replay call.
pub fn decode_with_every_decoder(bytes: &[u8]) -> usize {
    let _ = message_kind(bytes);
    [
        decode_windows(bytes).is_ok(),
        decode_scores(bytes).is_ok(),
        decode_magnitudes(bytes).is_ok(),
        decode_forest_shap_tasks(bytes).is_ok(),
        decode_forest_shap(bytes).is_ok(),
        decode_cnn_shap_tasks(bytes).is_ok(),
        decode_cnn_shap(bytes).is_ok(),
    ]
    .into_iter()
    .filter(|&ok| ok)
    .count()
}

#[cfg(test)]
mod tests {
    use super::fixtures::{format, window};
    use super::*;

    #[test]
    fn cnn_shap_tasks_and_results_round_trip() {
        let key = WindowKey {
            window_id: "w2".into(),
            network: "XX".into(),
            station: "B".into(),
            location: "".into(),
            band: "HH".into(),
            start_ns: 7,
        };
        let tasks = vec![CnnShapTask {
            key: key.clone(),
            model_hash: "sha256:c".into(),
            target: "top-class".into(),
            end_ns: 9,
            spectrogram: vec![0.5; 12],
            part: Part { index: 1, count: 3 },
        }];
        let bytes = encode_cnn_shap_tasks(&tasks);
        assert!(is_cnn_task(&bytes) && !is_cnn_result(&bytes));
        assert_eq!(decode_cnn_shap_tasks(&bytes).unwrap(), tasks);
        // A part that cannot exist is refused, by row.
        let mut bad = tasks.clone();
        bad[0].part = Part { index: 3, count: 3 };
        let err = decode_cnn_shap_tasks(&encode_cnn_shap_tasks(&bad)).unwrap_err();
        assert!(err.to_string().contains("part 3 of 3"), "{err}");
        let rows = vec![CnnShapRecord {
            key,
            model_hash: "sha256:c".into(),
            method: "partition".into(),
            target: "logit:aftershock".into(),
            budget: 1000,
            seed: 0,
            output: 1.5,
            base_value: -0.5,
            values: vec![0.25; 12],
            batch: None,
        }];
        let rows: Vec<(CnnShapRecord, Part)> = rows
            .into_iter()
            .map(|r| (r, Part { index: 0, count: 2 }))
            .collect();
        let bytes = encode_cnn_shap(&rows);
        assert!(is_cnn_result(&bytes) && message_kind(b"junk").is_none());
        assert_eq!(decode_cnn_shap(&bytes).unwrap(), rows);
    }

    #[test]
    fn forest_shap_tasks_and_results_round_trip() {
        let key = WindowKey {
            window_id: "w1".into(),
            network: "XX".into(),
            station: "A".into(),
            location: "00".into(),
            band: "HH".into(),
            start_ns: 5,
        };
        let tasks = vec![ForestShapTask {
            key: key.clone(),
            model_hash: "sha256:f".into(),
            end_ns: 25,
            inputs: vec![1.0, -2.5, 3.25],
        }];
        assert_eq!(
            decode_forest_shap_tasks(&encode_forest_shap_tasks(&tasks)).unwrap(),
            tasks
        );
        let rows = vec![ForestShapRecord {
            key,
            model_hash: "sha256:f".into(),
            base_value: 2.0,
            values: vec![0.5, -0.25, 0.125],
        }];
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let bytes = encode_forest_shap(&rows, &names);
        assert_eq!(
            decode_forest_shap(&bytes).unwrap(),
            (rows.clone(), names.clone())
        );
        // A results message is not a task message, and values must match the names.
        assert!(decode_forest_shap_tasks(&bytes).is_err());
        let short = encode_forest_shap(&rows, &names[..2]);
        assert!(decode_forest_shap(&short)
            .unwrap_err()
            .to_string()
            .contains("3, the message names 2"));
    }

    #[test]
    fn windows_round_trip_with_their_format_and_compress() {
        let rows: Vec<WindowRecord> = (0..4).map(window).collect();
        let bytes = encode_windows(&rows, &format());
        assert_eq!(decode_windows(&bytes).unwrap(), (format(), rows.clone()));
        let raw = rows.len() * (3 * 33 * 153 * 4 + 69 * 8);
        assert!(bytes.len() < raw, "{} >= {raw}", bytes.len());
        assert_eq!(
            windows_message_schema(&format()).fields().len(),
            6 + 15 + 7 + 3
        );
        // Windows whose spectrograms do not have the shape the message names are refused.
        let mut small = format();
        small.shape = [3, 33, 100];
        let err = decode_windows(&encode_windows(&rows, &small)).unwrap_err();
        assert!(err.to_string().contains("[3, 33, 100]"), "{err}");
    }

    #[test]
    fn windows_for_waveform_models_carry_their_samples() {
        let with = LakeFormat {
            waveform: Some([3, 2500]),
            ..format()
        };
        let mut rows: Vec<WindowRecord> = (0..3).map(window).collect();
        for (i, r) in rows.iter_mut().enumerate() {
            r.waveform = (0..7500)
                .map(|k| (k as f32 * 0.01).sin() * i as f32)
                .collect();
        }
        let bytes = encode_windows(&rows, &with);
        assert_eq!(decode_windows(&bytes).unwrap(), (with, rows.clone()));
        assert_eq!(
            windows_message_schema(&with).fields().len(),
            windows_message_schema(&format()).fields().len() + 1
        );
        // Samples missing from one window, or of another length, are refused naming the row.
        rows[1].waveform.truncate(2500);
        let err = decode_windows(&encode_windows(&rows, &with)).unwrap_err();
        assert!(
            err.to_string().contains("2500 waveform samples") && err.to_string().contains("row 1"),
            "{err}"
        );
    }

    #[test]
    fn scores_and_magnitudes_round_trip() {
        let key = WindowKey::of(&window(0));
        let s = vec![ScoreRecord {
            key: key.clone(),
            model_kind: "quakelens-cnn".into(),
            model_hash: "sha256:ab".into(),
            logits: vec![-1.0, 2.0],
            probabilities: vec![0.05, 0.95],
            classes: vec!["foreshock".into(), "aftershock".into()],
            scored_ns: 7,
        }];
        assert_eq!(decode_scores(&encode_scores(&s)).unwrap(), s);
        let mut bad = s.clone();
        bad[0].classes.pop();
        assert!(decode_scores(&encode_scores(&bad)).is_err());
        let m = vec![MagnitudeRecord {
            key,
            model_hash: "sha256:cd".into(),
            magnitude: 2.5,
            scored_ns: 8,
        }];
        assert_eq!(decode_magnitudes(&encode_magnitudes(&m)).unwrap(), m);
    }

    /// A compressed buffer whose declared size is changed to exabytes is refused before the
    /// reader allocates it; the real size passes.
    #[test]
    fn a_message_announcing_a_huge_decompressed_buffer_is_refused() {
        let bytes = encode_windows(&[window(1)], &format());
        assert!(check_framing(&bytes).is_ok());
        // The spectrogram's values are the largest buffer: find its declared length (the
        // first 8 bytes of a compressed buffer) by the value it must have.
        let values = (3 * 33 * 153 * 4) as i64;
        let at = bytes
            .windows(8)
            .position(|w| i64::from_le_bytes(w.try_into().unwrap()) == values)
            .expect("the spectrogram buffer's declared length");
        let mut bomb = bytes.clone();
        bomb[at..at + 8].copy_from_slice(&(1i64 << 60).to_le_bytes());
        let err = decode_windows(&bomb).unwrap_err().to_string();
        assert!(err.contains("would decompress to more than"), "{err}");
    }

    #[test]
    fn wrong_or_corrupt_messages_are_errors() {
        let scores = encode_scores(&[]);
        let err = decode_windows(&scores).unwrap_err().to_string();
        assert!(
            err.contains("scores/v2") && err.contains("windows/v2"),
            "{err}"
        );
        assert!(decode_windows(b"garbage").is_err());
        let mut cut = encode_windows(&[window(1)], &format());
        cut.truncate(cut.len() / 2);
        assert!(decode_windows(&cut).is_err());
    }
}

/// Sample records for tests (here and, with the `fixtures` feature, in other crates).
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures {
    use crate::{LakeFormat, SourceAttributes, WindowRecord};

    /// A window of the study's shape; `i` makes its id, times and values distinct.
    pub fn window(i: usize) -> WindowRecord {
        WindowRecord {
            window_id: format!("{i:016x}"),
            network: "XX".into(),
            station: "STA".into(),
            location: "".into(),
            band: "HH".into(),
            start_ns: 1_000 + i as i64,
            end_ns: 2_000,
            onset_ns: i.is_multiple_of(2).then_some(1_500),
            mode: "event".into(),
            trigger_ratio: Some(4.5),
            sample_rate: 100.0,
            source_rate: 125.0,
            resampled: true,
            gap_runs: 1,
            filled_samples: 3,
            flat_channels: i as i32 % 2,
            channel_order: "NEZ".into(),
            event_id: Some("ev1".into()),
            label: Some(1),
            magnitude: None,
            ttf_s: Some(-3600.0 * i as f64),
            source: SourceAttributes {
                p_travel_sec: Some(3.5),
                ..Default::default()
            },
            catalog: if i == 0 {
                Vec::new()
            } else {
                vec![
                    ("source_id".into(), format!("ev{i}")),
                    ("trace_name".into(), "t".into()),
                ]
            },
            spectrogram: (0..3 * 33 * 153)
                .map(|v| v as f32 * 0.5 + i as f32)
                .collect(),
            features: (0..69).map(|v| v as f64 - i as f64).collect(),
            waveform: Vec::new(),
        }
    }

    pub fn format() -> LakeFormat {
        LakeFormat {
            shape: [3, 33, 153],
            input: quakelens_signal::spectrogram::SpectrogramInput::study_image(
                quakelens_signal::spectrogram::Power::Log,
            ),
            features: quakelens_signal::features::FeatureSet::Study,
            waveform: None,
        }
    }

    /// One small valid message of every kind (tiny spectrogram and waveform shapes), the
    /// fuzzers' seeds: `(kind, bytes)`.
    pub fn seed_messages() -> Vec<(&'static str, Vec<u8>)> {
        use super::*;
        use crate::{
            CnnShapRecord, ForestShapRecord, MagnitudeRecord, Part, ScoreRecord, WindowKey,
        };
        let small = LakeFormat {
            shape: [1, 2, 3],
            ..format()
        };
        let mut w = window(1);
        w.spectrogram = vec![0.25, 0.5, 0.75, 1.0, 1.25, 1.5];
        let with_samples = LakeFormat {
            waveform: Some([3, 2]),
            ..small
        };
        let mut sampled = w.clone();
        sampled.waveform = vec![1.0, -1.0, 2.0, -2.0, 3.0, -3.0];
        let key = WindowKey::of(&w);
        let names: Vec<String> = ["rms", "peak"].map(String::from).to_vec();
        vec![
            ("windows", encode_windows(std::slice::from_ref(&w), &small)),
            (
                "windows-with-samples",
                encode_windows(&[sampled], &with_samples),
            ),
            (
                "scores",
                encode_scores(&[ScoreRecord {
                    key: key.clone(),
                    model_kind: "quakelens-cnn".into(),
                    model_hash: "sha256:ab".into(),
                    logits: vec![-1.0, 2.0],
                    probabilities: vec![0.05, 0.95],
                    classes: vec!["foreshock".into(), "aftershock".into()],
                    scored_ns: 7,
                }]),
            ),
            (
                "magnitudes",
                encode_magnitudes(&[MagnitudeRecord {
                    key: key.clone(),
                    model_hash: "sha256:cd".into(),
                    magnitude: 2.5,
                    scored_ns: 8,
                }]),
            ),
            (
                "forest-shap-tasks",
                encode_forest_shap_tasks(&[ForestShapTask {
                    key: key.clone(),
                    model_hash: "sha256:f".into(),
                    end_ns: 25,
                    inputs: vec![1.0, -2.5],
                }]),
            ),
            (
                "forest-shap",
                encode_forest_shap(
                    &[ForestShapRecord {
                        key: key.clone(),
                        model_hash: "sha256:f".into(),
                        base_value: 2.0,
                        values: vec![0.5, -0.25],
                    }],
                    &names,
                ),
            ),
            (
                "cnn-shap-tasks",
                encode_cnn_shap_tasks(&[CnnShapTask {
                    key: key.clone(),
                    model_hash: "sha256:c".into(),
                    target: "margin".into(),
                    end_ns: 9,
                    spectrogram: w.spectrogram.clone(),
                    part: Part { index: 1, count: 2 },
                }]),
            ),
            (
                "cnn-shap",
                encode_cnn_shap(&[(
                    CnnShapRecord {
                        key,
                        model_hash: "sha256:c".into(),
                        method: "partition".into(),
                        target: "logit:aftershock".into(),
                        budget: 100,
                        seed: 0,
                        output: 1.5,
                        base_value: -0.5,
                        values: vec![0.25; 6],
                        batch: None,
                    },
                    Part::WHOLE,
                )]),
            ),
        ]
    }
}
