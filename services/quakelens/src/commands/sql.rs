//! `quakelens sql`: DataFusion over the lake, answered in the SQL service's formats (the same
//! encoders): a text table for a terminal, or CSV, JSON, Arrow IPC or Parquet for a script,
//! to stdout or a file; optionally as of an older table version or time.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use quakelens_lake::{encode, AnswerFormat, AsOf, EncodeLimits, Lake, LakeLocation, QueryLimits};

use super::{parse_lake, DEFAULT_LAKE};

#[derive(Args, Debug)]
pub struct SqlArgs {
    /// The SQL statement, e.g. "SELECT count(*) FROM windows".
    query: String,
    /// The lake: a directory or s3://bucket/prefix.
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    /// table (lists abbreviated), csv, json, arrow (IPC stream) or parquet.
    #[arg(long, default_value = "table", value_parser = |s: &str| s.parse::<AnswerFormat>())]
    format: AnswerFormat,
    /// Write the answer here instead of stdout (needed for arrow and parquet on a terminal).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Read every table as of this Delta version.
    #[arg(long, conflicts_with = "as_of")]
    version: Option<i64>,
    /// Read every table as of this time (RFC 3339, e.g. 2024-06-01T00:00:00Z).
    #[arg(long)]
    as_of: Option<String>,
    /// Seconds the query and its answer may take (default: no limit).
    #[arg(long)]
    timeout: Option<f64>,
    /// Rows at most (default: all).
    #[arg(long)]
    max_rows: Option<usize>,
}

fn as_of(args: &SqlArgs) -> anyhow::Result<Option<AsOf>> {
    if let Some(v) = args.version {
        anyhow::ensure!(v >= 0, "--version must be 0 or more");
        return Ok(Some(AsOf::Version(v)));
    }
    let Some(t) = &args.as_of else {
        return Ok(None);
    };
    let at = chrono::DateTime::parse_from_rfc3339(t)
        .with_context(|| format!("--as-of {t:?} is not an RFC 3339 time"))?;
    let ns = at
        .timestamp_nanos_opt()
        .with_context(|| format!("--as-of {t:?} is out of range"))?;
    Ok(Some(AsOf::Time(ns)))
}

pub fn run(args: SqlArgs) -> anyhow::Result<()> {
    let binary = matches!(args.format, AnswerFormat::Arrow | AnswerFormat::Parquet);
    if binary && args.output.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        bail!(
            "--format {} is binary: give --output FILE (or redirect stdout)",
            args.format
        );
    }
    let timeout = args
        .timeout
        .map(|t| {
            anyhow::ensure!(t > 0.0 && t.is_finite(), "--timeout must be positive");
            Ok(Duration::from_secs_f64(t))
        })
        .transpose()?;
    let as_of = as_of(&args)?;
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(async {
        let limits = QueryLimits {
            timeout,
            max_rows: args.max_rows,
            ..QueryLimits::default()
        };
        let lake = Lake::open_with(&args.lake, limits, as_of).await?;
        anyhow::Ok(lake.query(&args.query).await?)
    })?;
    let limits = EncodeLimits {
        deadline: timeout.map(|t| started + t),
        ..EncodeLimits::default()
    };
    let written = encode(&answer, args.format, &limits)?;
    match &args.output {
        Some(path) => std::fs::write(path, &written.bytes)
            .with_context(|| format!("writing {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&written.bytes)?;
            out.flush()?;
        }
    }
    if written.truncated {
        eprintln!(
            "sql: the answer was cut at {} rows (--max-rows)",
            written.rows
        );
    }
    if let Some(path) = &args.output {
        eprintln!(
            "sql: {} rows as {} to {} ({} bytes)",
            written.rows,
            args.format,
            path.display(),
            written.bytes.len()
        );
    }
    Ok(())
}
