//! Writing a query's answer: a text table for people (long lists abbreviated), CSV, JSON, an
//! Arrow IPC stream or a Parquet file; the one implementation behind `quakelens sql` and the
//! SQL service. Encoding is bounded too: it works in chunks of rows, stops at a byte limit
//! (marking the answer truncated, never cutting a row), and gives up at a deadline or when
//! cancelled (a timed-out or disconnected request), so no answer can pin a core.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::query::Answer;

/// Rows encoded between two checks of the deadline, the cancel flag and the byte budget.
const CHUNK_ROWS: usize = 256;
/// List values a table cell shows before "… (N values)".
const LIST_HEAD: usize = 3;

/// The answer formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerFormat {
    /// An ASCII table; lists show their first values and their length.
    Table,
    Csv,
    /// An array of objects.
    Json,
    /// An Arrow IPC stream.
    Arrow,
    /// A Parquet file.
    Parquet,
}

impl AnswerFormat {
    pub const ALL: [AnswerFormat; 5] = [
        AnswerFormat::Table,
        AnswerFormat::Csv,
        AnswerFormat::Json,
        AnswerFormat::Arrow,
        AnswerFormat::Parquet,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AnswerFormat::Table => "table",
            AnswerFormat::Csv => "csv",
            AnswerFormat::Json => "json",
            AnswerFormat::Arrow => "arrow",
            AnswerFormat::Parquet => "parquet",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            AnswerFormat::Table => "text/plain; charset=utf-8",
            AnswerFormat::Csv => "text/csv; charset=utf-8",
            AnswerFormat::Json => "application/json",
            AnswerFormat::Arrow => "application/vnd.apache.arrow.stream",
            AnswerFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

impl fmt::Display for AnswerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AnswerFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(AnswerFormat::Table),
            _ => AnswerFormat::ALL
                .into_iter()
                .find(|f| f.name() == s)
                .ok_or_else(|| {
                    format!("unknown format {s:?}: use table, csv, json, arrow or parquet")
                }),
        }
    }
}

/// Bounds on writing one answer.
#[derive(Clone, Debug, Default)]
pub struct EncodeLimits {
    /// Bytes the encoded answer may hold (Parquet: checked before each chunk of rows against
    /// the encoder's size so far plus the chunk's estimate, so the file may end near the limit).
    pub max_bytes: Option<usize>,
    /// When to give up.
    pub deadline: Option<Instant>,
    /// Set by whoever no longer wants the answer.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// An encoded answer.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub rows: usize,
    /// The byte limit cut it (rows were left out at the end).
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("writing the answer took past the time limit")]
    Timeout,
    #[error("the answer was no longer wanted")]
    Cancelled,
    #[error("the answer cannot be written as {format}: {reason}")]
    Format {
        format: AnswerFormat,
        reason: String,
    },
}

/// Chunks of at most [`CHUNK_ROWS`] rows, in order.
fn chunks(batches: &[RecordBatch]) -> impl Iterator<Item = RecordBatch> + '_ {
    batches.iter().flat_map(|b| {
        (0..b.num_rows())
            .step_by(CHUNK_ROWS)
            .map(move |o| b.slice(o, CHUNK_ROWS.min(b.num_rows() - o)))
    })
}

struct Budget<'a> {
    limits: &'a EncodeLimits,
    format: AnswerFormat,
}

impl Budget<'_> {
    fn check(&self) -> Result<(), EncodeError> {
        if self
            .limits
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(EncodeError::Cancelled);
        }
        if self.limits.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(EncodeError::Timeout);
        }
        Ok(())
    }

    fn fits(&self, bytes: usize) -> bool {
        self.limits.max_bytes.is_none_or(|m| bytes <= m)
    }

    fn err(&self, e: impl fmt::Display) -> EncodeError {
        EncodeError::Format {
            format: self.format,
            reason: e.to_string(),
        }
    }
}

/// Writes `answer` as `format` within `limits`. A row limit already cut the answer if
/// `answer.truncated`; the result is truncated if either limit cut it.
pub fn encode(
    answer: &Answer,
    format: AnswerFormat,
    limits: &EncodeLimits,
) -> Result<Encoded, EncodeError> {
    let budget = Budget { limits, format };
    budget.check()?;
    let mut out = match format {
        AnswerFormat::Table => table(&answer.schema, &answer.batches, &budget),
        AnswerFormat::Csv => csv(&answer.batches, &budget),
        AnswerFormat::Json => json(&answer.batches, &budget),
        AnswerFormat::Arrow => ipc(&answer.schema, &answer.batches, &budget),
        AnswerFormat::Parquet => parquet(&answer.schema, &answer.batches, &budget),
    }?;
    out.truncated |= answer.truncated;
    Ok(out)
}

/// Single-row slices of `chunk`, for when the whole chunk does not fit.
fn single_rows(chunk: &RecordBatch) -> impl Iterator<Item = RecordBatch> + '_ {
    (0..chunk.num_rows()).map(|r| chunk.slice(r, 1))
}

fn csv(batches: &[RecordBatch], b: &Budget) -> Result<Encoded, EncodeError> {
    let (mut bytes, mut rows) = (Vec::new(), 0);
    let encode = |part: &RecordBatch, header: bool| -> Result<Vec<u8>, EncodeError> {
        let mut w = arrow::csv::WriterBuilder::new()
            .with_header(header)
            .build(Vec::new());
        w.write(part).map_err(|e| b.err(e))?;
        Ok(w.into_inner())
    };
    for chunk in chunks(batches) {
        b.check()?;
        let part = encode(&chunk, rows == 0)?;
        if b.fits(bytes.len() + part.len()) {
            bytes.extend_from_slice(&part);
            rows += chunk.num_rows();
            continue;
        }
        // The chunk does not fit whole: as many of its rows as do.
        for row in single_rows(&chunk) {
            let part = encode(&row, rows == 0)?;
            if !b.fits(bytes.len() + part.len()) {
                break;
            }
            bytes.extend_from_slice(&part);
            rows += 1;
        }
        return Ok(Encoded {
            bytes,
            rows,
            truncated: true,
        });
    }
    Ok(Encoded {
        bytes,
        rows,
        truncated: false,
    })
}

fn json(batches: &[RecordBatch], b: &Budget) -> Result<Encoded, EncodeError> {
    let (mut bytes, mut rows) = (b"[".to_vec(), 0);
    for chunk in chunks(batches) {
        b.check()?;
        let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
        w.write(&chunk).map_err(|e| b.err(e))?;
        w.finish().map_err(|e| b.err(e))?;
        let lines = w.into_inner();
        // One object per line, joined by commas into the array (which closes with one byte).
        for object in lines.split(|&c| c == b'\n').filter(|l| !l.is_empty()) {
            if !b.fits(bytes.len() + object.len() + 2) {
                bytes.push(b']');
                return Ok(Encoded {
                    bytes,
                    rows,
                    truncated: true,
                });
            }
            if rows > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(object);
            rows += 1;
        }
    }
    bytes.push(b']');
    Ok(Encoded {
        bytes,
        rows,
        truncated: false,
    })
}

fn ipc(schema: &SchemaRef, batches: &[RecordBatch], b: &Budget) -> Result<Encoded, EncodeError> {
    let mut w =
        arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema).map_err(|e| b.err(e))?;
    let (mut rows, mut truncated) = (0, false);
    // Writes `part` if the stream still fits with it (and the 8-byte end marker); a stream is
    // a sequence of messages, so taking the last one back leaves a valid stream.
    let put = |w: &mut arrow::ipc::writer::StreamWriter<Vec<u8>>,
               part: &RecordBatch|
     -> Result<bool, EncodeError> {
        let before = w.get_ref().len();
        w.write(part).map_err(|e| b.err(e))?;
        if b.fits(w.get_ref().len() + 8) {
            return Ok(true);
        }
        w.get_mut().truncate(before);
        Ok(false)
    };
    'chunks: for chunk in chunks(batches) {
        b.check()?;
        if put(&mut w, &chunk)? {
            rows += chunk.num_rows();
            continue;
        }
        truncated = true;
        for row in single_rows(&chunk) {
            if !put(&mut w, &row)? {
                break 'chunks;
            }
            rows += 1;
        }
        break;
    }
    w.finish().map_err(|e| b.err(e))?;
    Ok(Encoded {
        bytes: w.into_inner().map_err(|e| b.err(e))?,
        rows,
        truncated,
    })
}

fn parquet(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    b: &Budget,
) -> Result<Encoded, EncodeError> {
    let mut w = parquet::arrow::ArrowWriter::try_new(Vec::new(), schema.clone(), None)
        .map_err(|e| b.err(e))?;
    let (mut rows, mut truncated) = (0usize, false);
    'batches: for batch in batches {
        // Before anything is encoded, a row's in-memory size stands in for its encoded size.
        let memory_per_row = batch.get_array_memory_size() / batch.num_rows().max(1);
        for offset in (0..batch.num_rows()).step_by(CHUNK_ROWS) {
            b.check()?;
            let chunk = batch.slice(offset, CHUNK_ROWS.min(batch.num_rows() - offset));
            let size = w.bytes_written() + w.in_progress_size();
            let per_row = size.checked_div(rows).unwrap_or(memory_per_row).max(1);
            if !b.fits(size + per_row * chunk.num_rows()) {
                // As many of the chunk's rows as the estimate says fit.
                let room = b
                    .limits
                    .max_bytes
                    .unwrap_or(usize::MAX)
                    .saturating_sub(size);
                let fit = (room / per_row).min(chunk.num_rows());
                if fit > 0 {
                    w.write(&chunk.slice(0, fit)).map_err(|e| b.err(e))?;
                    rows += fit;
                }
                truncated = true;
                break 'batches;
            }
            w.write(&chunk).map_err(|e| b.err(e))?;
            rows += chunk.num_rows();
        }
    }
    Ok(Encoded {
        bytes: w.into_inner().map_err(|e| b.err(e))?,
        rows,
        truncated,
    })
}

/// A cell as text: lists abbreviated to their first values and length, nulls empty.
fn cell(column: &dyn Array, row: usize, options: &FormatOptions) -> Result<String, String> {
    if column.is_null(row) {
        return Ok(String::new());
    }
    let list: Option<Arc<dyn Array>> = match column.data_type() {
        DataType::List(_) => Some(column.as_list::<i32>().value(row)),
        DataType::LargeList(_) => Some(column.as_list::<i64>().value(row)),
        DataType::FixedSizeList(_, _) => Some(column.as_fixed_size_list().value(row)),
        _ => None,
    };
    match list {
        Some(values) => {
            let f = ArrayFormatter::try_new(values.as_ref(), options).map_err(|e| e.to_string())?;
            let head: Vec<String> = (0..values.len().min(LIST_HEAD))
                .map(|i| f.value(i).to_string())
                .collect();
            Ok(if values.len() > LIST_HEAD {
                format!("[{}, … ({} values)]", head.join(", "), values.len())
            } else {
                format!("[{}]", head.join(", "))
            })
        }
        None => {
            let f = ArrayFormatter::try_new(column, options).map_err(|e| e.to_string())?;
            Ok(f.value(row).to_string())
        }
    }
}

/// The ASCII table (the layout of arrow's `pretty_format_batches`), as many rows as fit.
fn table(schema: &SchemaRef, batches: &[RecordBatch], b: &Budget) -> Result<Encoded, EncodeError> {
    let options = FormatOptions::default();
    let header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    // Per column, the most bytes a cell has beyond its characters ("…" is three bytes): a
    // padded cell takes at most width + extra bytes.
    let mut extra: Vec<usize> = header.iter().map(|h| h.len() - h.chars().count()).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut truncated = false;
    // Bytes of one line at most, and of the table if it ended with `n` rows.
    let line = |widths: &[usize], extra: &[usize]| {
        widths
            .iter()
            .zip(extra)
            .map(|(w, e)| w + e + 3)
            .sum::<usize>()
            + 2
    };
    'chunks: for chunk in chunks(batches) {
        b.check()?;
        for r in 0..chunk.num_rows() {
            let cells: Vec<String> = chunk
                .columns()
                .iter()
                .map(|c| cell(c.as_ref(), r, &options))
                .collect::<Result<_, _>>()
                .map_err(|e| b.err(e))?;
            let (mut wider, mut more) = (widths.clone(), extra.clone());
            for ((w, e), c) in wider.iter_mut().zip(more.iter_mut()).zip(&cells) {
                let chars = c.chars().count();
                *w = (*w).max(chars);
                *e = (*e).max(c.len() - chars);
            }
            // Header, three rules and the rows.
            if !b.fits(line(&wider, &more) * (rows.len() + 5)) {
                truncated = true;
                break 'chunks;
            }
            (widths, extra) = (wider, more);
            rows.push(cells);
        }
    }
    let rule: String = std::iter::once("+".to_string())
        .chain(widths.iter().map(|w| format!("{}+", "-".repeat(w + 2))))
        .collect();
    let row = |cells: &[String]| -> String {
        let mut s = String::from("|");
        for (c, w) in cells.iter().zip(&widths) {
            s.push_str(&format!(" {c:<w$} |"));
        }
        s
    };
    let mut text = String::with_capacity(line(&widths, &extra) * (rows.len() + 5));
    for l in [&rule, &row(&header), &rule] {
        text.push_str(l);
        text.push('\n');
    }
    for r in &rows {
        text.push_str(&row(r));
        text.push('\n');
    }
    text.push_str(&rule);
    text.push('\n');
    Ok(Encoded {
        bytes: text.into_bytes(),
        rows: rows.len(),
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int64Array, ListArray, StringArray};
    use arrow::datatypes::{Field, Float32Type, Schema};

    fn answer(rows: usize, values: usize) -> Answer {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new(
                "spectrogram",
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
                false,
            ),
        ]));
        let lists = ListArray::from_iter_primitive::<Float32Type, _, _>(
            (0..rows).map(|r| Some((0..values).map(move |v| Some((r * 10 + v) as f32)))),
        );
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|r| (r % 2 == 0).then(|| format!("w{r}"))),
                )),
                Arc::new(lists),
            ],
        )
        .unwrap();
        Answer {
            schema,
            batches: vec![batch],
            truncated: false,
        }
    }

    #[test]
    fn tables_abbreviate_long_lists_and_look_like_arrows() {
        let a = answer(2, 5000);
        let t = String::from_utf8(
            encode(&a, AnswerFormat::Table, &EncodeLimits::default())
                .unwrap()
                .bytes,
        )
        .unwrap();
        assert!(
            t.contains("| 0  | w0   | [0.0, 1.0, 2.0, … (5000 values)]"),
            "{t}"
        );
        assert!(t.lines().all(|l| l.len() < 200), "{t}");
        // Short answers render as arrow's pretty printer does.
        let small = answer(2, 2);
        let ours = String::from_utf8(
            encode(&small, AnswerFormat::Table, &EncodeLimits::default())
                .unwrap()
                .bytes,
        )
        .unwrap();
        let arrows = arrow::util::pretty::pretty_format_batches(&small.batches)
            .unwrap()
            .to_string();
        assert_eq!(ours.trim_end(), arrows.trim_end());
        let _ = Float32Array::from(vec![0.0f32]);
    }

    #[test]
    fn every_format_stops_whole_rows_at_the_byte_limit() {
        let a = answer(2000, 50);
        // CSV holds no lists: its answer is the scalar columns.
        let scalars = {
            let b = a.batches[0].project(&[0, 1]).unwrap();
            Answer {
                schema: b.schema(),
                batches: vec![b],
                truncated: false,
            }
        };
        for format in AnswerFormat::ALL {
            let a = if format == AnswerFormat::Csv {
                &scalars
            } else {
                &a
            };
            let whole = encode(a, format, &EncodeLimits::default()).unwrap();
            assert!(!whole.truncated && whole.rows == 2000, "{format}");
            let max = whole.bytes.len() / 3;
            let cut = encode(
                a,
                format,
                &EncodeLimits {
                    max_bytes: Some(max),
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(
                cut.truncated && cut.rows > 0 && cut.rows < 2000,
                "{format}: {} rows",
                cut.rows
            );
            if format != AnswerFormat::Parquet {
                assert!(
                    cut.bytes.len() <= max,
                    "{format}: {} > {max}",
                    cut.bytes.len()
                );
            }
        }
        // Still valid: the cut JSON parses, the cut Arrow stream reads back.
        let limits = EncodeLimits {
            max_bytes: Some(20_000),
            ..Default::default()
        };
        let json = encode(&a, AnswerFormat::Json, &limits).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&json.bytes).unwrap();
        assert_eq!(parsed.as_array().unwrap().len(), json.rows);
        let ipc = encode(&a, AnswerFormat::Arrow, &limits).unwrap();
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc.bytes), None)
                .unwrap();
        let read: usize = reader.map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(read, ipc.rows);
    }

    #[test]
    fn a_deadline_or_a_cancel_stops_the_encoding() {
        let a = answer(10, 5);
        let past = EncodeLimits {
            deadline: Some(Instant::now()),
            ..Default::default()
        };
        assert!(matches!(
            encode(&a, AnswerFormat::Csv, &past),
            Err(EncodeError::Timeout)
        ));
        let flag = Arc::new(AtomicBool::new(true));
        let cancelled = EncodeLimits {
            cancel: Some(flag),
            ..Default::default()
        };
        assert!(matches!(
            encode(&a, AnswerFormat::Json, &cancelled),
            Err(EncodeError::Cancelled)
        ));
        assert_eq!("text".parse::<AnswerFormat>(), Ok(AnswerFormat::Table));
        assert!("xml"
            .parse::<AnswerFormat>()
            .unwrap_err()
            .contains("parquet"));
    }
}
