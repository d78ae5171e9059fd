//! `quakelens lake optimize|vacuum|convert|files`: keeping a lake healthy for years, and moving
//! an old plain-Parquet lake to Delta tables. (`quakelens lake` without a subcommand is the
//! lake sink service, see `serve.rs`.)

use std::time::Duration;

use anyhow::bail;
use clap::{Args, Subcommand};

use quakelens_lake::{LakeLocation, Table};
use quakelens_signal::spectrogram::SpectrogramInput;

use super::{parse_lake, runtime, DEFAULT_LAKE};

#[derive(Subcommand, Debug)]
pub enum LakeCommand {
    /// Compact each partition's small files into files of --target-mib (one commit per table;
    /// readers see every row exactly once before, during and after).
    Optimize(OptimizeArgs),
    /// Delete files no snapshot younger than --retain references (compacted-away files and
    /// the leftovers of killed writers).
    Vacuum(VacuumArgs),
    /// Rewrite a lake of the old plain-Parquet layout (lake.json) as Delta tables, checking
    /// every table's row count.
    Convert(ConvertArgs),
    /// Live files and versions per table.
    Files(FilesArgs),
}

#[derive(Args, Debug)]
pub struct Where {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    /// Only these tables (repeatable; default: all).
    #[arg(long = "table", value_parser = parse_table)]
    tables: Vec<Table>,
}

fn parse_table(s: &str) -> Result<Table, String> {
    Table::from_name(s).ok_or_else(|| {
        format!(
            "unknown table {s:?}: one of {}",
            Table::ALL.map(|t| t.name()).join(", ")
        )
    })
}

#[derive(Args, Debug)]
pub struct OptimizeArgs {
    #[command(flatten)]
    at: Where,
    /// Size the compacted files aim at.
    #[arg(long, default_value_t = 128)]
    target_mib: u64,
}

#[derive(Args, Debug)]
pub struct VacuumArgs {
    #[command(flatten)]
    at: Where,
    /// How long replaced files are kept for readers of older snapshots, e.g. 168h, 7d, 30m
    /// (Delta's default is 7 days; shorter breaks time travel and very long queries).
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    retain: Duration,
    /// Only list what would be deleted.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
    /// What the old lake's spectrograms are (its manifest did not say): `log` unless it was
    /// written with --image, then e.g. `log+png+norm(0.2181,0.2217,0.2066/0.2255,0.2262,0.2207)`.
    #[arg(long, default_value = "log")]
    input: String,
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    #[arg(long, env = "QUAKELENS_LAKE", default_value = DEFAULT_LAKE, value_parser = parse_lake)]
    lake: LakeLocation,
}

/// `90s`, `30m`, `12h`, `7d` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 30m, 12h, 7d)"))?;
    let seconds = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use s, m, h or d)"
            ))
        }
    };
    if !(value >= 0.0 && value.is_finite()) {
        return Err(format!("{s:?}: a duration is not negative"));
    }
    Ok(Duration::from_secs_f64(value * seconds))
}

pub fn run(cmd: LakeCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match cmd {
            LakeCommand::Optimize(a) => {
                if a.target_mib == 0 {
                    bail!("--target-mib must be at least 1");
                }
                let report =
                    quakelens_lake::optimize(&a.at.lake, &a.at.tables, a.target_mib << 20).await?;
                for r in &report {
                    println!(
                        "{:<12} {} files → {} ({} compacted into {}){}",
                        r.table,
                        r.files_before,
                        r.files_after,
                        r.files_removed,
                        r.files_added,
                        r.version
                            .map(|v| format!(", version {v}"))
                            .unwrap_or_default()
                    );
                }
            }
            LakeCommand::Vacuum(a) => {
                let report =
                    quakelens_lake::vacuum(&a.at.lake, &a.at.tables, a.retain, a.dry_run).await?;
                for r in &report {
                    println!(
                        "{:<12} {} files {}",
                        r.table,
                        r.files_deleted,
                        if r.dry_run {
                            "would be deleted"
                        } else {
                            "deleted"
                        }
                    );
                }
            }
            LakeCommand::Convert(a) => {
                let input: SpectrogramInput = a.input.parse().map_err(anyhow::Error::msg)?;
                let report = quakelens_lake::convert_old_lake(&a.lake, input).await?;
                for r in &report {
                    println!(
                        "{:<12} {} rows in {} Parquet files → {} rows in the Delta table",
                        r.table, r.rows_before, r.files_before, r.rows_after
                    );
                }
                println!("converted {} to Delta tables", a.lake);
            }
            LakeCommand::Files(a) => {
                for (table, files) in quakelens_lake::file_counts(&a.lake).await? {
                    println!("{:<12} {files} files", table.name());
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("7 weeks").is_err());
        assert!(parse_duration("-1h").is_err());
    }
}
